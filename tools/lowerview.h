/* lowerview: questions about the merged view of an image's read-only
 * layers, answered one directory at a time, so what a container changed
 * can be read without walking the whole image. Whiteouts and opaque
 * directories are interpreted through fs/whiteout.h for directory layers
 * and through the pk_* queries (pack/packed.h) for packed ones. */
#ifndef STRATA_LOWERVIEW_H
#define STRATA_LOWERVIEW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct store;
struct pk_attr;
struct pk_layer;
struct lower_packed;

struct lowerview {
	/* Layer root dirs, top first. With lowerview_open_packed a packed
	 * layer's is -1 until lower_fd unpacks it: read it through lower_*. */
	int *fds;
	size_t n;
	struct lower_packed *pk;   /* packed layers read in place, or NULL */
};

/* Open an image's layers (diff_ids as the config lists them, bottom
 * first) as a view; lowerview_close releases it. Every fds[i] is a
 * directory: packed layers are unpacked into the store's tmp/ (for callers
 * that read the trees themselves). */
int lowerview_open(struct store *s, json_t *diff_ids, struct lowerview *lv);
/* The same, reading packed layers in place (nothing is unpacked unless
 * lower_fd asks for a layer's tree). */
int lowerview_open_packed(struct store *s, json_t *diff_ids, struct lowerview *lv);
void lowerview_close(struct lowerview *lv);

/* A stored layer opened for reading: *fd its tree (a directory layer) or
 * *pk its packed metadata (pk_close it); the other is -1 / NULL. */
int lower_layer_open(struct store *s, const char *diffid, int *fd, struct pk_layer **pk);

/* The root directory of layer i, a packed layer unpacked on first use
 * (owned by the view, do not close). -errno on failure (reported). */
int lower_fd(const struct lowerview *lv, size_t layer);
/* lstat of path ("a/b", "" for the root) in layer i: 0 or -errno. A packed
 * layer answers from its metadata (ctime is the mtime). */
int lower_stat(const struct lowerview *lv, size_t layer, const char *path, struct stat *st);
/* getxattr of path in layer i (no symlink followed): its size, -ENODATA,
 * -ERANGE when buf is too small, or -errno. */
ssize_t lower_getxattr(const struct lowerview *lv, size_t layer, const char *path, const char *name,
		       void *buf, size_t size);
/* A readable fd (offset 0) with the contents of regular file path of layer
 * i: the file itself, or for a packed layer an unnamed copy in the store's
 * tmp/. -errno on failure. */
int lower_open_file(const struct lowerview *lv, size_t layer, const char *path);

/* Does path ("a/b", no leading '/') exist in layers [start, n)? On true,
 * *layer (if given) is the top-most layer that holds it. */
bool lower_lookup(const struct lowerview *lv, size_t start, const char *path, size_t *layer);

/* The merged entries of directory path ("" for the root) over layers
 * [start, n): sorted names, each with the top-most layer holding it.
 * Free with lower_list_free. */
struct lower_entry {
	char *name;
	size_t layer;
};
int lower_list(const struct lowerview *lv, size_t start, const char *path,
	       struct lower_entry **out, size_t *n);
void lower_list_free(struct lower_entry *e, size_t n);

/* A packed layer's attributes as a struct stat (st_ino: the layer's inode
 * number, ctime: the mtime, st_blocks: not known, 0). */
void lower_pk_stat(const struct pk_attr *a, struct stat *st);
/* Walk path ("a/b", "" for the root) down packed layer l without merge
 * rules: its inode number, or -ENOENT / -ENOTDIR / -errno. */
int lower_pk_resolve(const struct pk_layer *l, const char *path, uint32_t *ino);

#endif
