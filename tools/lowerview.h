/* lowerview: questions about the merged view of an image's read-only
 * layers, answered one directory at a time, so what a container changed
 * can be read without walking the whole image. Whiteouts and opaque
 * directories are interpreted through fs/whiteout.h. */
#ifndef STRATA_LOWERVIEW_H
#define STRATA_LOWERVIEW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct store;

struct lowerview {
	int *fds;           /* layer root dirs, top first */
	size_t n;
};

/* Open an image's layers (diff_ids as the config lists them, bottom
 * first) as a view; lowerview_close releases it. */
int lowerview_open(struct store *s, json_t *diff_ids, struct lowerview *lv);
void lowerview_close(struct lowerview *lv);

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

#endif
