/* unpack: extract a layer tar into a directory, safely.
 *
 * Every entry is resolved relative to the layer's root fd and never leaves
 * it: absolute names and ".." are refused, parents are opened with
 * openat2(RESOLVE_BENEATH) so a symlink planted by an earlier entry cannot
 * redirect a write outside, and final components are created with
 * O_EXCL|O_NOFOLLOW. OCI whiteouts (".wh.NAME", ".wh..wh..opq") are kept as
 * they are: strata-fs reads them. Quirks real producers write are accepted:
 * missing parents (created 0755), a directory entry after its contents or its
 * opaque marker, hard links within the layer.
 *
 * In a rootless store files cannot carry other owners: each entry's owner
 * and mode go to the user.containers.override_stat xattr instead
 * ("UID:GID:0MODE", as containers-storage and fuse-overlayfs write it).
 */
#ifndef STRATA_UNPACK_H
#define STRATA_UNPACK_H

#include <stdbool.h>
#include <stddef.h>

struct archive;

#define OVERRIDE_STAT_XATTR "user.containers.override_stat"

struct unpack_opts {
	bool rootless;          /* keep owners in the xattr instead of chown */
	const char *what;       /* names the layer in error messages */
};

/* Extract every entry of a (opened for reading, any tar) under rootfd.
 * Reports the first failure with serr() and returns -errno. */
int unpack_archive(struct archive *a, int rootfd, const struct unpack_opts *o);

/* Is xattr name overlay bookkeeping a layer must not carry? A redirect,
 * metacopy or origin planted by an archive would make strata-fs read
 * another path's data; an opaque flag keeps its meaning as the OCI marker
 * file. Both importers drop these. */
bool overlay_private(const char *name);

/* Device nodes a rootless import leaves out of a layer (a rootless store
 * cannot hold them; podman leaves them out too, and containers get /dev
 * from the runtime), by path: to say once what was left out, and to leave
 * out hard links to them as well. */
struct skipped_devs {
	char **path;
	size_t n;
};
int skipped_add(struct skipped_devs *d, const char *path);   /* 0 or -ENOMEM */
bool skipped_has(const struct skipped_devs *d, const char *path);
/* The one line that tells the user (what: the layer). */
void skipped_report(const struct skipped_devs *d, const char *what);
void skipped_free(struct skipped_devs *d);

/* Normalise a tar member name: strip "./" and duplicate slashes; refuse
 * absolute names and ".." components (-EPERM). "" is the layer root. */
int clean_member_path(const char *in, char *out, size_t outlen);

#endif
