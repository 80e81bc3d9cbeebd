/* pkgc: free the chunks no live layer uses.
 *
 * Mark then sweep, under the store's exclusive lock: writers hold the shared
 * lock from their first chunk until their layer file is in place, so while
 * the GC runs no layer is half written, and every object that is not named
 * by one of the live layers is garbage. Objects are removed one unlink at a
 * time; a GC killed anywhere has removed only garbage.
 */
#include "pkint.h"

#include "err.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct mark {
	uint8_t key[16];
	uint16_t suffix, form;
	bool used;
};

struct set {
	struct mark *m;
	size_t n, cap;
};

static size_t set_slot(const struct set *s, const uint8_t key[16], uint16_t suffix, uint16_t form)
{
	uint64_t h;
	memcpy(&h, key, 8);
	h ^= suffix * 0x9e3779b97f4a7c15ull ^ form;
	size_t i = h & (s->cap - 1);
	while (s->m[i].used &&
	       (s->m[i].suffix != suffix || s->m[i].form != form || memcmp(s->m[i].key, key, 16)))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int set_add(struct set *s, const struct pk_chunk *c)
{
	if ((s->n + 1) * 2 > s->cap) {
		struct set t = { .cap = s->cap ? s->cap * 2 : 4096 };
		if (!(t.m = calloc(t.cap, sizeof *t.m)))
			return -ENOMEM;
		for (size_t i = 0; i < s->cap; i++)
			if (s->m[i].used) {
				t.m[set_slot(&t, s->m[i].key, s->m[i].suffix, s->m[i].form)] = s->m[i];
				t.n++;
			}
		free(s->m);
		*s = t;
	}
	size_t i = set_slot(s, c->key, c->suffix, c->form);
	if (!s->m[i].used) {
		memcpy(s->m[i].key, c->key, 16);
		s->m[i].suffix = c->suffix;
		s->m[i].form = c->form;
		s->m[i].used = true;
		s->n++;
	}
	return 0;
}

static bool set_has(const struct set *s, const struct pk_chunk *c)
{
	return s->cap && s->m[set_slot(s, c->key, c->suffix, c->form)].used;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Parse "ab" + "cdef...[-N].ext" back into an object name: 0 or -EINVAL
 * (not an object: left alone). */
static int parse(const char *dir, const char *name, struct pk_chunk *c)
{
	char full[80];
	if (snprintf(full, sizeof full, "%s%s", dir, name) >= (int)sizeof full)
		return -EINVAL;
	memset(c, 0, sizeof *c);
	for (int i = 0; i < 16; i++) {
		int hi = hexval(full[2 * i]), lo = hi < 0 ? -1 : hexval(full[2 * i + 1]);
		if (lo < 0)
			return -EINVAL;
		c->key[i] = hi << 4 | lo;
	}
	const char *p = full + 32;
	if (*p == '-') {
		char *end;
		unsigned long n = strtoul(p + 1, &end, 10);
		if (end == p + 1 || n == 0 || n >= PK_MAX_SUFFIX)
			return -EINVAL;
		c->suffix = n;
		p = end;
	}
	if (!strcmp(p, ".lz4"))
		c->form = PK_FORM_LZ4;
	else if (!strcmp(p, ".raw"))
		c->form = PK_FORM_RAW;
	else
		return -EINVAL;
	char back[64];
	pk_object_name(c, back);
	return strcmp(back + 3, name) ? -EINVAL : 0;
}

int pk_gc(const char *chunks, char *const *live, int n_live, struct pk_gc_stats *st)
{
	return pk_gc_nowait(chunks, live, n_live, false, st);
}

int pk_gc_nowait(const char *chunks, char *const *live, int n_live, bool nowait, struct pk_gc_stats *st)
{
	struct pk_gc_stats s = { 0 };
	struct set set = { 0 };
	struct pk_store *store = NULL;
	int r = pk_store_open(chunks, false, &store);
	if (r < 0)
		return r;
	if ((r = nowait ? pk_store_trylock_ex(store) : pk_store_lock(store, true)) < 0)
		goto out;

	/* Mark. */
	for (int i = 0; i < n_live; i++) {
		struct pk_layer *l;
		r = pk_open(live[i], chunks, NULL, &l);
		if (r < 0) {
			serr(r, "collect garbage in", chunks, "live layer %s cannot be read: nothing removed", live[i]);
			goto out;
		}
		for (uint32_t k = 0; k < pk_chunk_count(l) && r == 0; k++)
			r = set_add(&set, pk_chunk_at(l, k));
		pk_close(l);
		if (r < 0)
			goto out;
		s.live_layers++;
	}

	/* Sweep. */
	int dfd = pk_store_dirfd(store);
	for (int b = 0; b < 256; b++) {
		char sub[3];
		snprintf(sub, sizeof sub, "%02x", b);
		int fd = openat(dfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			serr(r, "collect garbage in", chunks, "open %s", sub);
			goto out;
		}
		DIR *d = fdopendir(fd);
		if (!d) {
			close(fd);
			r = -ENOMEM;
			goto out;
		}
		struct dirent *de;
		while ((de = readdir(d))) {
			struct pk_chunk c;
			if (de->d_name[0] == '.' || parse(sub, de->d_name, &c) < 0)
				continue;
			if (set_has(&set, &c)) {
				s.kept++;
				continue;
			}
			struct stat fst;
			off_t size = fstatat(fd, de->d_name, &fst, AT_SYMLINK_NOFOLLOW) == 0 ? fst.st_size : 0;
			if (unlinkat(fd, de->d_name, 0) == 0) {
				s.removed++;
				s.removed_bytes += size;
			} else if (errno != ENOENT) {
				r = -errno;
				serr(r, "remove chunk", de->d_name, "in store %s", chunks);
				closedir(d);
				goto out;
			}
		}
		closedir(d);
		/* a fan-out directory left empty goes too (writers make them
		 * as needed), so a store returns to what it was */
		unlinkat(dfd, sub, AT_REMOVEDIR);
	}
	/* Temporary files: with the lock held exclusively, no writer is alive. */
	int tfd = openat(dfd, "tmp", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = tfd >= 0 ? fdopendir(tfd) : NULL;
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && unlinkat(tfd, de->d_name, 0) == 0)
				s.tmp_removed++;
		closedir(d);
	} else if (tfd >= 0)
		close(tfd);
	r = 0;
out:
	free(set.m);
	pk_store_close(store);
	if (st)
		*st = s;
	return r;
}
