/* pkstore: the store's packed layer format (docs/packed-format.md, "The
 * store's packed layers").
 *
 *   STORE/chunks/                 the chunk store every packed layer shares
 *   STORE/layers/<hex>/layer.pk   the layer's metadata file (strata-fs mounts it)
 *   STORE/layers/<hex>/tar-split  what rebuilds the layer's tar byte for byte
 *                                 from layer.pk: headers, padding, order
 *   STORE/layers/<hex>/layer.json as for dir layers, plus "format":"packed"
 *   STORE/layers/<hex>/blob       kept only when the rebuilt tar could not be
 *                                 made to match the DiffID (export uses it)
 *
 * Which format new layers take: $STRATA_STORE_FORMAT (packed or dir), else
 * PKSTORE_DEFAULT. Stores may mix both; `strata system migrate` converts.
 */
#ifndef STRATA_PKSTORE_H
#define STRATA_PKSTORE_H

#include "layer.h"
#include "packed.h"
#include "store.h"

#include <stdbool.h>
#include <stdint.h>

/* New layers are packed unless $STRATA_STORE_FORMAT=dir. */
#define PKSTORE_DEFAULT_PACKED true

/* Whether new layers are packed (reports a bad $STRATA_STORE_FORMAT once). */
bool pkstore_packed(void);

/* ---------------------------------------------------------- tar-split */

struct ts_writer;
/* Record a tar stream into the file fd (the caller keeps and closes it);
 * piece: the chunk size of the packed layer the bodies are checked with. */
int ts_writer_new(int fd, uint32_t piece, struct ts_writer **out);
int ts_feed(struct ts_writer *w, const void *buf, size_t len);
/* Flush the record (and fsync it); returns the number of referenced bodies
 * or -errno. The writer stays valid for ts_refs until ts_writer_free. */
int ts_finish(struct ts_writer *w);
void ts_writer_free(struct ts_writer *w);
/* The referenced bodies: path in the layer, size, and the XXH3-128 of each
 * piece (keys[first .. first + pieces)), in tar order. */
struct ts_ref {
	char *path;
	uint64_t size;
	size_t first;
};
void ts_refs(const struct ts_writer *w, const struct ts_ref **refs, size_t *n, const uint8_t (**keys)[16]);

/* A packed layer mapped read-only for the tools' own walks of its records
 * (system df, the import's check); pk_open must have accepted the file. */
struct pkmap {
	void *map;
	size_t size;
	const struct pk_super *sb;
};
int pkmap_open(const char *path, struct pkmap *m);
void pkmap_close(struct pkmap *m);
/* Section i's records and their count (bounds checked at pkmap_open). */
const void *pkmap_sec(const struct pkmap *m, int i, size_t *count);

/* Rebuild the tar from the record fd and layer l into sink (or, with sink
 * NULL, only check the record's structure and checksum, and with l given
 * that every referenced file is in the layer with its size). Every
 * body read from the layer is checked against the hash recorded at import.
 * *tar_size (or NULL) receives the bytes produced. what names the layer in
 * messages; NULL: report nothing (the import's own check). */
typedef int (*ts_sink)(void *ctx, const void *buf, size_t len);
int ts_regen(int fd, struct pk_layer *l, ts_sink sink, void *ctx, const char *what, uint64_t *tar_size);

/* ---------------------------------------------------------- store */

/* The tap that makes an import write a packed layer; unlocked: the caller
 * does not hold the store lock (pk_write then takes it shared, so a GC
 * never runs in the middle). */
struct pkstore_import;
int pkstore_import_new(struct store *s, bool unlocked, struct pkstore_import **out, struct layer_tap *tap);
void pkstore_import_free(struct pkstore_import *pi);

/* "STORE/chunks" (malloc'd). */
char *pkstore_chunks(struct store *s);
/* A stored layer: 1 packed, 0 dir, -errno. */
int pkstore_layer_is_packed(struct store *s, const char *diffid);
/* Open a packed layer's record and metadata for export. */
int pkstore_open_layer(struct store *s, const char *diffid, struct pk_layer **l, int *tsfd);

/* A packed layer's tree as a directory fd, unpacked into this process's
 * tmp/ (gone at store_close): what store_layer_dirfd and lower_fd give the
 * readers that need a real tree (commit's renamed directories, COPY --from);
 * layers, diff and commit's lookups read packed layers in place. */
int pkstore_layer_tree(struct store *s, const char *diffid);

/* Free chunks no layer uses (the caller holds the store's exclusive lock).
 * Quiet when the store has no chunk store. */
int pkstore_gc(struct store *s, struct pk_gc_stats *st);

/* Whether the packed layer holds every body the record references, by the
 * chunk keys in its metadata (no chunk is read): 1 yes, 0 no, -errno. */
int pkstore_check_refs(const char *pkpath, const struct ts_writer *w);
/* Rebuild the tar and compare it with diffid: 1 equal, 0 not (or the record
 * or layer is unusable), -ENOMEM. */
int pkstore_verify(const char *pkpath, int tsfd, const char *diffid, const char *what);
/* Pack dir/diff (relative to the store) into dir/layer.pk, check the
 * record dir/tar-split against the DiffID, then drop dir/blob (or, when it
 * does not match, the record) and dir/diff. dfd: the store's fd for dir. */
int pkstore_pack_layer(struct store *s, int dfd, const char *dir, const char *diffid, bool unlocked,
		       const struct ts_writer *w, const char *what);
/* Mark layer.json of the layer at dfd packed; tar: "tar-split" or "blob". */
int pkstore_set_format(int dfd, const char *tar);

#endif
