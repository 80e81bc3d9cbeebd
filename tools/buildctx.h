/* buildctx: the build context of `strata build` and the trees COPY and ADD
 * read: which context files .containerignore/.dockerignore leave out,
 * COPY sources with wildcards, a content hash of what a step copies (its
 * cache key), and the copy itself into a staging tree that becomes the
 * step's layer.
 *
 * Nothing is read outside the context: every path is walked from the
 * context's directory fd one component at a time, and symlinks in the
 * context are copied as symlinks, never followed. */
#ifndef STRATA_BUILDCTX_H
#define STRATA_BUILDCTX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <xxhash.h>

#include "lowerview.h"

struct hashmemo;

struct bctx {
	int fd;                 /* the context directory */
	struct hashmemo *memo;  /* remembered file hashes, or NULL */
	char *path;
	char **pat;             /* ignore patterns, cleaned */
	bool *neg;              /* pattern starts with '!' */
	size_t npat;
};

int bctx_open(const char *path, struct bctx *c);
void bctx_close(struct bctx *c);
/* Is the context path rel ("a/b") left out of the build? */
bool bctx_ignored(const struct bctx *c, const char *rel);

/* A COPY source, which may hold *, ? and [...], as context paths (sorted).
 * No match is an error naming the source. */
int bctx_glob(const struct bctx *c, const char *src, char ***out, size_t *n);

/* Feed what a copy of context path rel would produce (names, types,
 * modes, sizes, contents, link targets; ignored entries left out) into h.
 * A file's content goes in as its XXH3-128, which the memo (when loaded)
 * gives without reading the file when its stat stamps are unchanged. */
int bctx_hash(const struct bctx *c, const char *rel, XXH3_state_t *h);

/* The memo of file hashes from an earlier build of this context: data is
 * what bctx_memo_dump gave then (NULL, or anything damaged: an empty
 * memo). Call before the first bctx_hash. */
int bctx_memo_load(struct bctx *c, const void *data, size_t len);
/* The memo to keep for the next build: 1 with *data (malloc'd) when it
 * changed, 0 when what was loaded is still exact (nothing to write). */
int bctx_memo_dump(const struct bctx *c, void **data, size_t *len);

/* How copied entries are owned and moded in the staging tree. */
struct copy_opts {
	uid_t uid;
	gid_t gid;
	int mode;               /* --chmod, or -1: keep the source's */
	bool rootless;          /* owners other than 0 go to the override xattr */
};

/* Copy context path rel (a file, a symlink or a directory's contents when
 * contents is set) to dstdir/dstname in the staging tree. */
int bctx_copy(const struct bctx *c, const char *rel, int dstdir, const char *dstname, bool contents,
	      const struct copy_opts *o);

/* The same from an image's merged layers (COPY --from): path ("a/b"). */
int lower_copy(const struct lowerview *lv, const char *path, int dstdir, const char *dstname,
	       bool contents, const struct copy_opts *o);
/* Is path a directory in the merged view (1), something else (0), absent (-ENOENT)? */
int lower_is_dir(const struct lowerview *lv, const char *path);

/* Make the directories of path ("a/b/c", all of them) in the staging tree
 * stagefd, each with the owner, mode and times the image below gives it
 * (lv may be NULL), or 0755 owned by o's owner when the image has none.
 * Returns an fd of the last directory. */
int stage_mkdirs(int stagefd, const char *path, const struct lowerview *lv, const struct copy_opts *o);

/* Is context path rel a tar archive libarchive reads (any compression)? */
bool bctx_is_tar(const struct bctx *c, const char *rel);

/* Unpack a local tar archive (ADD), compressed or not, under dstdir. 1 when
 * the file is no archive libarchive knows (then ADD copies it as is). */
int bctx_untar(const struct bctx *c, const char *rel, int dstdir, const struct copy_opts *o);

#endif
