#include "lowerview.h"

#include "err.h"
#include "fsutil.h"
#include "whiteout.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

static int find(struct lower_entry *e, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(e[i].name, name))
			return (int)i;
	return -1;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct lower_entry *)a)->name, ((const struct lower_entry *)b)->name);
}

int lower_list(const struct lowerview *lv, size_t start, const char *path,
	       struct lower_entry **out, size_t *n)
{
	struct lower_entry *e = NULL;
	size_t cnt = 0;
	char **hidden = NULL;
	size_t nh = 0;
	int r = 0;

	for (size_t l = start; l < lv->n; l++) {
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
		size_t nh_before = nh;
		for (size_t i = 0; i < k; i++) {
			struct stat sb;
			const char *target;
			if (fstatat(dfd, names[i], &sb, AT_SYMLINK_NOFOLLOW) < 0)
				continue;
			enum wh_kind kind = wh_classify(names[i], &sb, &target);
			if (kind == WH_OPQ || kind == WH_RESERVED)
				continue;
			const char *name = kind == WH_OCI ? target : names[i];
			bool hid = false;
			for (size_t h = 0; h < nh_before && !hid; h++)
				hid = !strcmp(hidden[h], name);
			if (hid || find(e, cnt, name) >= 0)
				continue;
			if (kind != WH_NONE) {
				/* Hides the name in the layers below only. */
				char **nhid = realloc(hidden, (nh + 1) * sizeof *nhid);
				if (!nhid)
					continue;
				hidden = nhid;
				hidden[nh++] = strdup(name);
				continue;
			}
			struct lower_entry *ne = realloc(e, (cnt + 1) * sizeof *ne);
			if (!ne)
				continue;
			e = ne;
			e[cnt].name = strdup(name);
			e[cnt].layer = l;
			cnt++;
		}
		free_names(names, k);
		bool opaque = wh_dir_is_opaque(dfd, true) > 0;
		close(dfd);
		if (opaque)
			break;
	}
	for (size_t h = 0; h < nh; h++)
		free(hidden[h]);
	free(hidden);
	if (cnt)
		qsort(e, cnt, sizeof *e, cmp_entry);
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
