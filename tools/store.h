/* store: where strata keeps images, layers and containers.
 *
 *   STORE/lock                  flock: shared for readers, exclusive for writers
 *   STORE/layers/<hex>/         one per DiffID, stored once whoever uses it:
 *        layer.pk               the packed layer (the default format,
 *                               docs/packed-format.md)
 *        tar-split              what rebuilds its tar byte for byte (export)
 *        layer.pk.progs/        programs containers started from it, kept
 *                               decompressed by strata-fs (progcache)
 *        diff/, blob            a directory layer instead (STRATA_STORE_FORMAT
 *                               =dir): the unpacked tree (OCI whiteouts kept
 *                               as is) and the blob it came from
 *        layer.json             {diff_id, digest, media_type, size, tar_size}
 *   STORE/chunks/               the chunk store every packed layer shares:
 *                               packs/<id>.pack and .idx, its lock
 *   STORE/images/<hex>.json     image config, exact bytes, named by digest
 *   STORE/tags.json             {"name:tag": "sha256:..."}
 *   STORE/containers/<id>/      container.json, upper/, work/
 *   STORE/build-cache/<key>     strata build: the image a step made, by the
 *                               step's cache key (gc keeps those images)
 *   STORE/tmp/<owner>/          work in progress of one strata process,
 *                               which holds a flock on <owner> while it
 *                               lives; renamed into place when complete, so
 *                               a killed import leaves nothing visible.
 *
 * Whatever a killed strata leaves (tmp/ owners nobody holds, containers/<id>
 * directories that never got their container.json, NAME.tmp.PID files of
 * a dead PID) is removed by the next command that gets the exclusive lock,
 * readers included when the lock is free (store_open).
 */
#ifndef STRATA_STORE_H
#define STRATA_STORE_H

#include "digest.h"

#include <jansson.h>
#include <stdbool.h>

struct pending_layer {
	char tmpname[64];
	char diffid[DIGEST_BUF];
};

struct store {
	char *root;
	/* Layers unpacked by this import, held in tmp/ until the whole image
	 * is verified, so a bad last layer leaves no trace of the first. */
	struct pending_layer *pending;
	size_t npending;
	int fd;           /* the store root */
	int lockfd;
	int ownfd;        /* tmp/<owner>, flocked while this process lives */
	char owner[40];   /* "tmp/<owner>" once made */
	unsigned seq;
	bool rootless;    /* not root: owners live in xattrs */
};

/* Pick the store: explicit > $STRATA_STORE > /var/lib/strata (root) or
 * ~/.local/share/strata. Creates the layout; takes the lock and removes
 * what killed strata processes left behind (store_clean). */
int store_open(struct store *s, const char *root, bool exclusive);
void store_close(struct store *s);

/* Give up the store lock while reading input that may be slow or never
 * end (an import), and take it again (exclusive to commit). Work under
 * tmp/ stays safe from cleaners meanwhile: its owner directory is flocked. */
int store_unlock(struct store *s);
int store_relock(struct store *s, bool exclusive);

/* Around a commit that makes several things visible in turn (layers, a
 * config, a tag), under the exclusive lock: a marker that makes the next
 * command run store_gc should this process die before the end. */
int store_commit_begin(struct store *s);
void store_commit_end(struct store *s);

/* Remove leftovers of dead strata processes; the caller holds the
 * exclusive lock. Cheap: a few directory listings, and per container one
 * stat, or (full, as writers do) one listing. */
void store_clean(struct store *s, bool full);

/* A fresh directory under STORE/tmp/<owner>; returns its fd and its name
 * relative to the store. */
int store_mktemp(struct store *s, char name[64]);

/* "name" -> "name:latest"; returns malloc'd. */
char *ref_normalize(const char *ref);

/* Layers. */
bool store_has_layer(struct store *s, const char *diffid);
/* Open layers/<hex>/diff (O_PATH dir fd). */
int store_layer_dirfd(struct store *s, const char *diffid);
char *store_layer_path(struct store *s, const char *diffid);   /* .../diff */
int store_layer_info(struct store *s, const char *diffid, json_t **info);
/* Hold a completed tmp/<tmpname> (diff/, blob, layer.json) for
 * store_commit_pending, which moves each to layers/<hex> (an existing layer
 * of the same DiffID wins); store_drop_pending discards them. */
int store_add_pending(struct store *s, const char *tmpname, const char *diffid);
int store_commit_pending(struct store *s);
void store_drop_pending(struct store *s);
/* The pending or stored directory of a layer, relative to the store fd. */
int store_layer_relpath(struct store *s, const char *diffid, char *buf, size_t len);

/* Images. */
int store_put_image(struct store *s, const char *config, size_t len, char digest[DIGEST_BUF]);
/* Resolve NAME[:TAG], a full digest or a unique hex prefix (>= 6). */
int store_resolve(struct store *s, const char *ref, char digest[DIGEST_BUF]);
int store_load_config(struct store *s, const char *digest, json_t **config, char **raw, size_t *rawlen);
/* Config and its validated rootfs.diff_ids (borrowed from *config). */
int store_load_image(struct store *s, const char *digest, json_t **config, json_t **ids);
/* The config's rootfs.diff_ids, validated. Borrowed from config. */
int config_diff_ids(json_t *config, const char *what, json_t **ids);

/* Tags (the caller holds the exclusive lock to save). */
int store_tags(struct store *s, json_t **tags);
int store_save_tags(struct store *s, json_t *tags);
int store_set_tag(struct store *s, const char *ref, const char *digest);

/* Remove images not tagged and not used by a container, then layers no
 * image uses. */
int store_gc(struct store *s);

#endif
