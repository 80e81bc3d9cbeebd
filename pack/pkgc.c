/* pkgc: free the chunks no live layer uses.
 *
 * Mark then sweep, under the store's exclusive lock: writers hold the shared
 * lock from their first chunk until their layer file is in place, so while
 * the GC runs no layer is half written, and every chunk that is not named
 * by one of the live layers is garbage.
 *
 * Loose objects are removed one unlink at a time. A pack cannot shrink
 * without moving the chunks that live, which immutable layer files locate
 * by offset: its index is rewritten with the live chunks only (into place
 * by rename), and only then are the bytes of the others punched out
 * (fallocate), leaving holes. A pack in which nothing lives goes whole,
 * index first; a pack without an index is a dead writer's and goes too. A
 * GC killed anywhere has freed only garbage, and the next one finishes.
 */
#include "pkint.h"

#include "err.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

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

/* ---------------------------------------------------------------- packs */

/* A live chunk of a pack, as a live layer names it. */
struct live {
	uint64_t pack, off;
	struct pk_chunk c;
};

struct lives {
	struct live *v;
	size_t n, cap;
};

static int lives_add(struct lives *l, const struct pk_chunk *c, const struct pk_loc *loc)
{
	if (pk_grow(&l->v, &l->cap, l->n + 1, sizeof *l->v, 4096) < 0)
		return -ENOMEM;
	l->v[l->n++] = (struct live){ loc->pack, loc->off, *c };
	return 0;
}

static int live_cmp(const void *a, const void *b)
{
	const struct live *x = a, *y = b;
	if (x->pack != y->pack)
		return x->pack < y->pack ? -1 : 1;
	return (x->off > y->off) - (x->off < y->off);
}

/* The records of the index of pack id: count, or -EINVAL when it is not a
 * sound index, -errno. */
static ssize_t read_index(int pdfd, uint64_t id, struct pk_idx_ent **out)
{
	char name[32];
	snprintf(name, sizeof name, "%016llx.idx", (unsigned long long)id);
	_cleanup_close_ int fd = openat(pdfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	struct pk_idx_head h;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < sizeof h ||
	    ((uint64_t)st.st_size - sizeof h) % sizeof(struct pk_idx_ent) || pread(fd, &h, sizeof h, 0) != sizeof h ||
	    memcmp(h.magic, PK_IDX_MAGIC, 8) || h.version != PK_IDX_VERSION ||
	    h.rec_size != sizeof(struct pk_idx_ent) || h.pack != id ||
	    h.count != ((uint64_t)st.st_size - sizeof h) / sizeof(struct pk_idx_ent))
		return -EINVAL;
	struct pk_idx_ent *e = malloc(h.count ? h.count * sizeof *e : 1);
	if (!e)
		return -ENOMEM;
	size_t want = h.count * sizeof *e;
	if (pread(fd, e, want, sizeof h) != (ssize_t)want) {
		free(e);
		return -EINVAL;
	}
	uint64_t sum = h.xxh3;
	h.xxh3 = 0;
	XXH3_state_t xs;
	XXH3_64bits_reset(&xs);
	XXH3_64bits_update(&xs, &h, sizeof h);
	XXH3_64bits_update(&xs, e, want);
	if (XXH3_64bits_digest(&xs) != sum) {
		free(e);
		return -EINVAL;
	}
	*out = e;
	return (ssize_t)h.count;
}

/* Punch every byte of pack fd past its header that none of the n live
 * chunks (sorted by offset) covers: 0, -EOPNOTSUPP, -errno. */
static int punch_dead(int fd, const struct live *v, size_t n)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	uint64_t size = st.st_size, at = sizeof(struct pk_pack_head);
	for (size_t i = 0; i <= n; i++) {
		uint64_t start = i < n ? v[i].off : size;
		if (start > size)
			start = size;
		if (start > at && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at,
					    (off_t)(start - at)) < 0)
			return -errno;
		if (i < n) {
			uint64_t end = v[i].off + v[i].c.slen;
			if (end < v[i].off)
				end = size;
			if (end > at)
				at = end;
		}
	}
	return 0;
}

/* Free the dead chunks of the packs; lv: the live chunks, sorted. */
static int sweep_packs(struct pk_store *store, const char *chunks, struct lives *lv, struct pk_gc_stats *s)
{
	int dfd = pk_store_dirfd(store);
	_cleanup_close_ int pdfd = openat(dfd, "packs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pdfd < 0)
		return errno == ENOENT ? 0 : -errno;
	int lfd = dup(pdfd);
	DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
	if (!d) {
		if (lfd >= 0)
			close(lfd);
		return -ENOMEM;
	}
	/* every pack, by a pack or an index file; temporary files go */
	uint64_t *ids = NULL;
	size_t nid = 0, cap = 0;
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d))) {
		uint64_t id = pk_pack_id(de->d_name, "pack");
		if (!id)
			id = pk_pack_id(de->d_name, "idx");
		if (!id) {
			if (strstr(de->d_name, ".tmp") && unlinkat(pdfd, de->d_name, 0) == 0)
				s->tmp_removed++;
			continue;
		}
		if (pk_grow(&ids, &cap, nid + 1, sizeof *ids, 64) < 0) {
			r = -ENOMEM;
			break;
		}
		ids[nid++] = id;
	}
	closedir(d);
	static bool said_punch;
	for (size_t k = 0; k < nid && r == 0; k++) {
		uint64_t id = ids[k];
		bool dup_id = false;
		for (size_t j = 0; j < k; j++)
			dup_id |= ids[j] == id;
		if (dup_id)
			continue;
		char pname[32], iname[32];
		snprintf(pname, sizeof pname, "%016llx.pack", (unsigned long long)id);
		snprintf(iname, sizeof iname, "%016llx.idx", (unsigned long long)id);
		/* this pack's live chunks: a run of lv */
		struct live key = { .pack = id };
		size_t lo = 0, hi = lv->n;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (live_cmp(&lv->v[mid], &key) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		size_t end = lo;
		while (end < lv->n && lv->v[end].pack == id)
			end++;
		const struct live *v = lv->v + lo;
		size_t nl = end - lo;

		struct stat pst;
		bool has_pack = fstatat(pdfd, pname, &pst, AT_SYMLINK_NOFOLLOW) == 0;
		_cleanup_free_ struct pk_idx_ent *e = NULL;
		ssize_t ne = read_index(pdfd, id, &e);
		if (ne == -ENOMEM) {
			r = -ENOMEM;
			break;
		}
		bool has_idx = ne != -ENOENT;
		if (!has_pack) {
			if (nl)
				serr(0, "collect garbage in", chunks, "pack %s is missing, and live layers use it: `strata system check` names them", pname);
			else if (has_idx && unlinkat(pdfd, iname, 0) == 0)
				s->tmp_removed++;
			continue;
		}
		if (!nl) {
			/* nothing lives: the index first, so a GC killed
			 * between the two leaves a pack without an index,
			 * which the next one removes as a dead writer's */
			if (has_idx && unlinkat(pdfd, iname, 0) < 0 && errno != ENOENT) {
				r = -errno;
				serr(r, "remove pack index", iname, "in store %s", chunks);
				break;
			}
			if (unlinkat(pdfd, pname, 0) < 0 && errno != ENOENT) {
				r = -errno;
				serr(r, "remove pack", pname, "in store %s", chunks);
				break;
			}
			s->packs_removed++;
			if (ne > 0) {
				s->removed += (uint64_t)ne;
				for (ssize_t i = 0; i < ne; i++)
					s->removed_bytes += e[i].slen;
			} else
				s->removed_bytes += (uint64_t)pst.st_blocks * 512;
			continue;
		}
		if (!has_idx)
			serr(0, "collect garbage in", chunks, "pack %s has no index, yet live layers use it: its index is written again",
			     pname);
		else if (ne < 0)
			serr(0, "collect garbage in", chunks, "the index of pack %s is corrupt: written again from the live layers",
			     pname);
		/* The new index: the live chunks, each once. */
		_cleanup_free_ struct pk_idx_ent *ni = calloc(nl, sizeof *ni);
		if (!ni) {
			r = -ENOMEM;
			break;
		}
		size_t nn = 0;
		for (size_t i = 0; i < nl; i++) {
			if (nn && ni[nn - 1].off == v[i].off)
				continue;
			/* a record a writer would refuse would cost the whole
			 * index (its bytes are kept all the same) */
			if (v[i].c.slen > PK_STORED_MAX || v[i].c.ulen > PK_CHUNK_MAX || v[i].c.form > PK_FORM_LZ4 ||
			    v[i].c.suffix >= PK_MAX_SUFFIX || v[i].off < sizeof(struct pk_pack_head))
				continue;
			struct pk_idx_ent *x = &ni[nn++];
			memcpy(x->key, v[i].c.key, 16);
			x->off = v[i].off;
			x->slen = v[i].c.slen;
			x->ulen = v[i].c.ulen;
			x->form = v[i].c.form;
			x->suffix = v[i].c.suffix;
		}
		s->kept += nn;
		uint64_t dead = 0, dead_bytes = 0;
		if (ne > 0)
			for (ssize_t i = 0; i < ne; i++) {
				/* an entry is dead when no live chunk starts at its offset */
				size_t a = 0, b = nn;
				while (a < b) {
					size_t m = (a + b) / 2;
					if (ni[m].off < e[i].off)
						a = m + 1;
					else
						b = m;
				}
				if (a == nn || ni[a].off != e[i].off) {
					dead++;
					dead_bytes += e[i].slen;
				}
			}
		if (ne < 0 || dead || (uint64_t)ne != nn) {
			/* ni is sorted by offset; pk_write_index sorts it by key */
			int w = pk_write_index(dfd, id, ni, nn);
			if (w < 0) {
				r = w;
				serr(r, "rewrite pack index", iname, "in store %s; nothing of the pack freed", chunks);
				break;
			}
		}
		/* Then the bytes, every time: a GC killed after the index was
		 * rewritten left them, and punching a hole again costs nothing. */
		_cleanup_close_ int fd = openat(pdfd, pname, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
		int pr = fd < 0 ? -errno : punch_dead(fd, v, nl);
		if (pr == -EOPNOTSUPP || pr == -ENOSYS) {
			if (!said_punch)
				serr(pr, "free dead chunks of packs in", chunks,
				     "the file system cannot punch holes: their bytes stay on disk until every chunk of a pack is dead");
			said_punch = true;
		} else if (pr < 0 && fd < 0 && pr == -EACCES) {
			/* a pack is 0444: as its owner, make it writable for the punch */
			if (fchmodat(pdfd, pname, 0644, 0) == 0) {
				fd = openat(pdfd, pname, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
				pr = fd < 0 ? -errno : punch_dead(fd, v, nl);
				fchmodat(pdfd, pname, 0444, 0);
			}
		}
		if (pr < 0 && pr != -EOPNOTSUPP && pr != -ENOSYS) {
			r = pr;
			serr(r, "free dead chunks of pack", pname, "in store %s", chunks);
			break;
		}
		if (dead) {
			s->removed += dead;
			s->removed_bytes += dead_bytes;
			s->packs_punched++;
		}
	}
	free(ids);
	return r;
}

int pk_gc(const char *chunks, char *const *live, int n_live, struct pk_gc_stats *st)
{
	return pk_gc_nowait(chunks, live, n_live, false, st);
}

int pk_gc_nowait(const char *chunks, char *const *live, int n_live, bool nowait, struct pk_gc_stats *st)
{
	struct pk_gc_stats s = { 0 };
	struct set set = { 0 };
	struct lives lv = { 0 };
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
		for (uint32_t k = 0; k < pk_chunk_count(l) && r == 0; k++) {
			const struct pk_loc *loc = pk_loc_at(l, k);
			r = loc ? lives_add(&lv, pk_chunk_at(l, k), loc) : set_add(&set, pk_chunk_at(l, k));
		}
		pk_close(l);
		if (r < 0)
			goto out;
		s.live_layers++;
	}

	/* Sweep: the packs, then the loose objects. */
	if (lv.n)
		qsort(lv.v, lv.n, sizeof *lv.v, live_cmp);
	if ((r = sweep_packs(store, chunks, &lv, &s)) < 0) {
		if (r == -ENOMEM)
			serr(r, "collect garbage in", chunks, NULL);
		goto out;
	}
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
	free(lv.v);
	pk_store_close(store);
	if (st)
		*st = s;
	return r;
}
