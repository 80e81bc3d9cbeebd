/* lower.h: a lower layer's objects, read the same way whether the layer is
 * a directory or a packed layer file (docs/packed-format.md).
 *
 * A directory layer's object is (dirfd, name) as everywhere in strata-fs
 * ("." for the directory dirfd itself); a packed layer's is its inode
 * number in the layer's metadata file. The operations that exist in both
 * worlds (stat, xattrs, readlink) take a struct lref and do the right thing
 * for either; those that only a packed layer needs (lookup by inode, its
 * listing, reads of its chunked files, copy of its data) take the inode.
 *
 * Nothing here depends on the mount's state: a struct lower is one layer,
 * and the callers in fs/ keep one per lower layer of the stack.
 */
#ifndef STRATA_FS_LOWER_H
#define STRATA_FS_LOWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "packed.h"

/* The device number of packed layer idx's objects: makedev(LOWER_PK_MAJOR,
 * idx), a major number no block device driver registers, so no real layer
 * shares it. */
#define LOWER_PK_MAJOR 4094u

struct lower {
	struct pk_layer *pk;  /* a packed layer, or NULL: a directory layer */
	int fd;               /* a directory layer's root (O_RDONLY|O_DIRECTORY), else -1 */
	dev_t dev;            /* st_dev shown for its objects */
};

/* A lower object: dirfd + name in a directory layer, ino in a packed one. */
struct lref {
	int dirfd;
	const char *name;
	uint32_t ino;
};

/* Is path a packed layer metadata file (a regular file starting with the
 * format's magic)? A directory is not; anything unreadable is not. */
bool lower_is_packed_file(const char *path);

/* Open a packed layer's metadata file as lower layer number idx of a
 * stack, its decompressed chunks going through cache (one per daemon):
 * refused with a message naming the file when it is truncated or corrupt.
 * Its objects get a device number of their own (idx in it) so their inode
 * numbers never mix with another layer's. */
int lower_open_packed(const char *path, unsigned idx, struct pk_cache *cache, struct lower *lo);
void lower_close(struct lower *lo);

static inline bool lower_packed(const struct lower *lo)
{
	return lo && lo->pk;
}

/* The root directory's inode of a packed layer. */
uint32_t lower_root(const struct lower *lo);

enum { LOWER_ABSENT = 0, LOWER_FOUND = 1, LOWER_WHITEOUT = 2 };
/* NAME in packed directory dir: LOWER_FOUND (*st, *child filled),
 * LOWER_WHITEOUT (deleted in this layer: the layers below must not show
 * it), LOWER_ABSENT, or -errno. */
int lower_lookup(const struct lower *lo, uint32_t dir, const char *name, struct stat *st,
		 uint32_t *child);
/* Is directory dir opaque (any encoding)? 1, 0, -errno. */
int lower_opaque(const struct lower *lo, uint32_t dir);
/* An absolute path ("/a/b") of directories from a packed layer's root:
 * 0 with *ino, -ENOENT (absent, whited out, or not a directory), -errno. */
int lower_walk(const struct lower *lo, const char *path, uint32_t *ino);

/* lstat(2) of the object. */
int lower_stat(const struct lower *lo, const struct lref *r, struct stat *st);
/* getxattr/listxattr semantics (size 0 asks the size): bytes or -errno. */
ssize_t lower_getxattr(const struct lower *lo, const struct lref *r, const char *key, void *buf,
		       size_t size);
ssize_t lower_listxattr(const struct lower *lo, const struct lref *r, char *buf, size_t size);
/* readlink(2): bytes (not NUL-terminated, truncated at size) or -errno. */
ssize_t lower_readlink(const struct lower *lo, const struct lref *r, char *buf, size_t size);

/* The entries of packed directory dir, one at a time from *off (0 at the
 * start; advanced): 1 with the entry (name NUL-terminated in name, kind
 * LOWER_FOUND or LOWER_WHITEOUT, type S_IFMT bits, ino), 0 at the end,
 * -errno. Hidden bookkeeping entries are skipped. */
struct lower_dirent {
	char name[256];
	int kind;
	mode_t type;
	uint32_t ino;
};
int lower_readdir(const struct lower *lo, uint32_t dir, uint64_t *off, struct lower_dirent *e);

/* Read a packed layer's regular file: bytes (short only at its end) or
 * -errno (-EIO for a damaged chunk, logged). */
ssize_t lower_pread(const struct lower *lo, uint32_t ino, void *buf, size_t len, uint64_t off);
/* The same read in place, no copy (pk_read_pieces): pieces valid until
 * lower_read_done. */
ssize_t lower_read_pieces(const struct lower *lo, uint32_t ino, uint64_t off, size_t len, struct pk_piece *p,
			  size_t max, size_t *np);
void lower_read_done(const struct lower *lo, struct pk_piece *p, size_t np);
/* Decompress [off, off + len) of the file into the shared cache, ahead of
 * a sequential reader. */
int lower_prefetch(const struct lower *lo, uint32_t ino, uint64_t off, uint64_t len);
/* Where progcache keeps a packed layer's programs decompressed: the
 * layer file's path with this appended. */
#define LOWER_PROGS_SUFFIX ".progs"
/* A read-only descriptor of the decompressed copy of packed file ino when
 * it is a program or library and the layer keeps those (pk_prog_fd), else
 * -errno: read it packed. */
int lower_prog_fd(const struct lower *lo, uint32_t ino);
/* lseek(2) of a packed regular file, SEEK_DATA and SEEK_HOLE included:
 * the offset or -errno (-ENXIO past the last data). */
off_t lower_seek(const struct lower *lo, uint32_t ino, off_t off, int whence);
/* Copy the first limit bytes (at most the file) of the file's data into dst
 * (a regular file without data there) keeping its holes (4 KiB blocks),
 * and set dst's size to them: 0 or -errno. */
int lower_copy_data(const struct lower *lo, uint32_t ino, int dst, uint64_t limit);
/* Copy the xattrs of a packed object a copy-up keeps (not the overlay and
 * strata markers) onto dstfd, or onto dname in ddir when dstfd is -1;
 * an xattr the upper refuses (ENOTSUP, EPERM) is skipped. 0 or -errno. */
int lower_copy_xattrs(const struct lower *lo, uint32_t ino, int dstfd, int ddir, const char *dname);

#endif
