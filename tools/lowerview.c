#include "lowerview.h"

#include "err.h"
#include "fsutil.h"
#include "store.h"
#include "whiteout.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int lowerview_open(struct store *s, json_t *ids, struct lowerview *lv)
{
	size_t n = json_array_size(ids);
	lv->n = 0;
	lv->fds = calloc(n + 1, sizeof *lv->fds);
	if (!lv->fds)
		return -ENOMEM;
	for (size_t i = n; i-- > 0;) {
		const char *d = json_string_value(json_array_get(ids, i));
		int fd = store_layer_dirfd(s, d);
		if (fd < 0) {
			serr(fd, "open layer", d, "the store is damaged; import the image again");
			lowerview_close(lv);
			return fd;
		}
		lv->fds[lv->n++] = fd;
	}
	return 0;
}

void lowerview_close(struct lowerview *lv)
{
	for (size_t i = 0; i < lv->n; i++)
		close(lv->fds[i]);
	free(lv->fds);
	lv->fds = NULL;
	lv->n = 0;
}

/* In one layer: 1 found, 0 absent (look below), -1 hidden (stop). */
static int in_layer(int rootfd, const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	int dfd = dup(rootfd), res = 0;
	char *save, *comp = strtok_r(buf, "/", &save);
	if (!comp) {
		close(dfd);
		return 1;    /* the root is in every layer */
	}
	while (comp && dfd >= 0) {
		char *next = strtok_r(NULL, "/", &save);
		struct stat sb;
		if (wh_exists(dfd, comp) > 0) {
			res = -1;
			break;
		}
		if (fstatat(dfd, comp, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
			/* Absent here: an opaque parent hides the layers below. */
			int ofd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (ofd >= 0 && wh_dir_is_opaque(ofd, true) > 0)
				res = -1;
			if (ofd >= 0)
				close(ofd);
			break;
		}
		if (!next) {
			res = 1;
			break;
		}
		if (!S_ISDIR(sb.st_mode)) {
			res = -1;    /* a non-directory here shadows the rest */
			break;
		}
		int nfd = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dfd);
		dfd = nfd;
		comp = next;
	}
	if (dfd >= 0)
		close(dfd);
	return res;
}

bool lower_lookup(const struct lowerview *lv, size_t start, const char *path, size_t *layer)
{
	for (size_t l = start; l < lv->n; l++) {
		int r = in_layer(lv->fds[l], path);
		if (r > 0) {
			if (layer)
				*layer = l;
			return true;
		}
		if (r < 0)
			return false;
	}
	return false;
}

struct cand {
	char *name;
	size_t layer;
	bool whiteout;
};

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int r = strcmp(x->name, y->name);
	if (r)
		return r;
	return x->layer < y->layer ? -1 : x->layer > y->layer;
}

int lower_list(const struct lowerview *lv, size_t start, const char *path,
	       struct lower_entry **out, size_t *n)
{
	struct cand *cs = NULL;
	size_t nc = 0, cap = 0;
	int r = 0;

	/* Gather every name of every layer down to an opaque one, then keep
	 * for each name its top-most occurrence, unless that is a whiteout. */
	for (size_t l = start; l < lv->n && r == 0; l++) {
		int st = in_layer(lv->fds[l], path);
		if (st < 0)
			break;
		if (st == 0)
			continue;
		int dfd = open_beneath(lv->fds[l], path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
		if (dfd < 0)
			break;    /* a non-directory: nothing under it */
		char **names;
		size_t k;
		if ((r = list_sorted(dfd, &names, &k)) < 0) {
			close(dfd);
			break;
		}
		for (size_t i = 0; i < k && r == 0; i++) {
			struct stat sb;
			const char *target;
			if (fstatat(dfd, names[i], &sb, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			enum wh_kind kind = wh_classify(names[i], &sb, &target);
			if (kind == WH_OPQ || kind == WH_RESERVED)
				continue;
			if (nc == cap) {
				cap = cap ? cap * 2 : 64;
				struct cand *ncs = realloc(cs, cap * sizeof *ncs);
				if (!ncs) {
					r = -ENOMEM;
					break;
				}
				cs = ncs;
			}
			cs[nc].name = strdup(kind == WH_OCI ? target : names[i]);
			cs[nc].layer = l;
			cs[nc].whiteout = kind != WH_NONE;
			if (!cs[nc].name) {
				r = -ENOMEM;
				break;
			}
			nc++;
		}
		free_names(names, k);
		bool opaque = wh_dir_is_opaque(dfd, true) > 0;
		close(dfd);
		if (opaque)
			break;
	}
	if (nc)
		qsort(cs, nc, sizeof *cs, cmp_cand);
	struct lower_entry *e = calloc(nc + 1, sizeof *e);
	size_t cnt = 0;
	for (size_t i = 0; i < nc; i++) {
		bool first = i == 0 || strcmp(cs[i - 1].name, cs[i].name);
		if (e && r == 0 && first && !cs[i].whiteout) {
			e[cnt].name = cs[i].name;
			e[cnt].layer = cs[i].layer;
			cnt++;
		} else {
			free(cs[i].name);
		}
	}
	free(cs);
	if (!e)
		r = -ENOMEM;
	if (r < 0) {
		lower_list_free(e, cnt);
		e = NULL;
		cnt = 0;
	}
	*out = e;
	*n = cnt;
	return r;
}

void lower_list_free(struct lower_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(e[i].name);
	free(e);
}
