/* readdir.c: a merged directory's listing (overlayfs's readdir.c). Layers
 * are read top to bottom; a name seen above hides the same name below;
 * whiteouts hide names below them and never show; an opaque directory ends
 * the walk (that is already reflected in the node's layer list). The
 * listing is cached on the node until the directory changes. */
#include "fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>


static uint64_t hname(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

/* A readdir cookie's hash: seeded per mount, so names in a hostile layer
 * cannot be chosen to collide (a collision at a buffer boundary could hide
 * an entry from a listing). */
uint64_t cookie_hash(struct sfs *fs, const char *name)
{
	uint64_t s = __atomic_load_n(&fs->cookie_seed, __ATOMIC_RELAXED);
	if (!s) {
		if (getrandom(&s, sizeof s, 0) != sizeof s)
			s = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL;
		s |= 1;
		__atomic_store_n(&fs->cookie_seed, s, __ATOMIC_RELAXED);
	}
	uint64_t h = hname(name) ^ s;
	/* a finaliser (splitmix64's), so every bit depends on every byte */
	h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
	h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
	return h ^ (h >> 31);
}

static int ns_grow(struct nameset *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 64;
	char **ns = calloc(ncap, sizeof *ns);
	if (!ns)
		return -ENOMEM;
	for (size_t i = 0; i < s->cap; i++)
		if (s->slot[i]) {
			size_t j = hname(s->slot[i]) & (ncap - 1);
			while (ns[j])
				j = (j + 1) & (ncap - 1);
			ns[j] = s->slot[i];
		}
	free(s->slot);
	s->slot = ns;
	s->cap = ncap;
	return 0;
}

bool ns_has(const struct nameset *s, const char *name)
{
	if (!s->cap)
		return false;
	for (size_t j = hname(name) & (s->cap - 1); s->slot[j]; j = (j + 1) & (s->cap - 1))
		if (!strcmp(s->slot[j], name))
			return true;
	return false;
}

/* Adds a copy of name; returns 1 if added, 0 if present, -ENOMEM. */
int ns_add(struct nameset *s, const char *name)
{
	if ((s->n + 1) * 2 > s->cap && ns_grow(s) < 0)
		return -ENOMEM;
	size_t j = hname(name) & (s->cap - 1);
	for (; s->slot[j]; j = (j + 1) & (s->cap - 1))
		if (!strcmp(s->slot[j], name))
			return 0;
	if (!(s->slot[j] = strdup(name)))
		return -ENOMEM;
	s->n++;
	return 1;
}

void ns_free(struct nameset *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->slot[i]);
	free(s->slot);
}

void dircache_put(struct dircache *dc)
{
	if (__atomic_sub_fetch(&dc->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (size_t i = 0; i < dc->n; i++)
		free(dc->ents[i].name);
	free(dc->ents);
	free(dc);
}

static int push(struct sfs *fs, struct dircache *dc, size_t *cap, const char *name, uint64_t ino, mode_t type)
{
	if (dc->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 32;
		struct dentry_rec *ne = realloc(dc->ents, nc * sizeof *ne);
		if (!ne)
			return -ENOMEM;
		dc->ents = ne;
		*cap = nc;
	}
	if (!(dc->ents[dc->n].name = strdup(name)))
		return -ENOMEM;
	dc->ents[dc->n].ino = ino;
	dc->ents[dc->n].type = type;
	/* 63 bits (offsets are signed), above the 1 and 2 of "." and ".." */
	uint64_t c = cookie_hash(fs, name) >> 1;
	dc->ents[dc->n].cookie = c < 3 ? c + 3 : c;
	dc->n++;
	return 0;
}

static mode_t dt_to_mode(unsigned char t)
{
	return t == DT_UNKNOWN ? 0 : (mode_t)DTTOIF(t);
}

/* Read one layer of the directory into the listing. */
static int read_layer(struct sfs *fs, int dfd, uint32_t layer, struct nameset *seen, struct nameset *pending,
		      struct dircache *dc, size_t *cap, struct nameset *own, struct wa_batch *ahead)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	int r = 0;

	if (fd < 0)
		return -errno;
	if (!(d = fdopendir(fd))) {
		close(fd);
		return -errno;
	}
	while ((errno = 0, de = readdir(d))) {
		const char *name = de->d_name;
		const char *target;
		struct stat st, *stp = NULL;

		if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2])))
			continue;
		if (own && ns_add(own, name) < 0) {
			ns_free(own);
			own->slot = NULL;
			own->cap = own->n = 0;
			own = NULL;
		}
		if (de->d_type == DT_DIR)
			wa_batch_add(ahead, name, de->d_ino);
		if (de->d_type == DT_CHR || de->d_type == DT_UNKNOWN) {
			if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
				stp = &st;
		}
		switch (wh_classify(name, stp, &target)) {
		case WH_OCI:
			/* hides the name in the layers below, not in this one */
			if (!ns_has(seen, target) && (r = ns_add(pending, target)) < 0)
				goto out;
			continue;
		case WH_CHARDEV:
			if ((r = ns_add(seen, name)) < 0)
				goto out;
			continue;
		case WH_OPQ:
		case WH_RESERVED:
			continue;
		case WH_NONE:
			break;
		}
		r = ns_add(seen, name);
		if (r < 0)
			goto out;
		if (r == 0)
			continue;  /* shadowed by a layer above */
		struct stat tmp = { .st_ino = de->d_ino };
		mode_t type = stp ? (stp->st_mode & S_IFMT) : dt_to_mode(de->d_type);
		if ((r = push(fs, dc, cap, name, layer_ino(fs, layer, &tmp), type)) < 0)
			goto out;
	}
	r = errno ? -errno : 0;
out:
	closedir(d);
	return r < 0 ? r : 0;
}

/* read_layer(fs) of a packed layer's directory DIR: whiteouts are entries
 * of their own there, whichever encoding the source used. */
static int read_layer_pk(struct sfs *fs, uint32_t layer, uint32_t dir, struct nameset *seen, struct dircache *dc,
			 size_t *cap, struct nameset *own)
{
	const struct lower *lo = &fs->layers[layer].lo;
	struct lower_dirent e;
	uint64_t off = 0;
	int r;

	while ((r = lower_readdir(lo, dir, &off, &e)) > 0) {
		if (own && ns_add(own, e.name) < 0) {
			ns_free(own);
			own->slot = NULL;
			own->cap = own->n = 0;
			own = NULL;
		}
		/* a whiteout hides the name below; a name is shown once, from
		 * the topmost layer that has it */
		r = ns_add(seen, e.name);
		if (r < 0)
			return r;
		if (r == 0 || e.kind == LOWER_WHITEOUT)
			continue;
		struct stat tmp = { .st_ino = e.ino, .st_dev = lo->dev };
		if ((r = push(fs, dc, cap, e.name, layer_ino(fs, layer, &tmp), e.type)) < 0)
			return r;
	}
	return r;
}

static void ns_merge(struct nameset *into, struct nameset *from)
{
	for (size_t i = 0; i < from->cap; i++)
		if (from->slot[i])
			ns_add(into, from->slot[i]);
	ns_free(from);
	memset(from, 0, sizeof *from);
}

/* Keep the names a complete listing of one lower layer gathered (own, may
 * be NULL) for later lookups, unless the listing failed, found nothing, or
 * another thread kept its own first. */
static void keep_names(struct dlayer *dl, struct nameset *own, int r)
{
	struct nameset *expected = NULL;

	if (!own)
		return;
	if (r < 0 || !own->slot ||
	    !__atomic_compare_exchange_n(&dl->names, &expected, own, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		ns_free(own);
		free(own);
	}
}

static int cookie_cmp(const void *a, const void *b)
{
	const struct dentry_rec *x = a, *y = b;
	/* equal cookies (a 63-bit hash collision) keep a fixed order */
	return x->cookie < y->cookie ? -1 : x->cookie > y->cookie ? 1 : strcmp(x->name, y->name);
}

size_t dir_seek(const struct dircache *dc, uint64_t off)
{
	size_t lo = 0, hi = dc->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (dc->ents[mid].cookie <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int dir_listing(struct sfs *fs, struct node *dir, struct dircache **out)
{
	return dir_listing_ahead(fs, dir, out, WA_OFF);
}

int dir_listing_ahead(struct sfs *fs, struct node *dir, struct dircache **out, enum wa_mode ahead)
{
	struct dircache *dc;
	uint64_t version;
	size_t cap = 0;
	int r = 0;

	pthread_mutex_lock(&fs->table_lock);
	version = dir->version;
	if (dir->dcache && dir->dcache->version == version) {
		dc = dir->dcache;
		__atomic_add_fetch(&dc->refs, 1, __ATOMIC_ACQ_REL);
		pthread_mutex_unlock(&fs->table_lock);
		*out = dc;
		return 0;
	}
	pthread_mutex_unlock(&fs->table_lock);

	dc = calloc(1, sizeof *dc);
	if (!dc)
		return -ENOMEM;
	dc->refs = 1;
	dc->version = version;

	struct nameset seen = { 0 }, pending = { 0 };
	dl_rdlock(fs, dir);
	for (unsigned i = 0; i < dir->ndl && r == 0; i++) {
		bool tmp;
		bool pk = layer_packed(fs, dir->dl[i].layer);
		int dfd = pk ? -1 : node_dlfd(fs, dir, i, &tmp);
		if (pk) {
			struct nameset *own = NULL;
			if (!__atomic_load_n(&dir->dl[i].names, __ATOMIC_ACQUIRE))
				own = calloc(1, sizeof *own);
			r = read_layer_pk(fs, dir->dl[i].layer, dir->dl[i].pino, &seen, dc, &cap, own);
			keep_names(&dir->dl[i], own, r);
			ns_merge(&seen, &pending);
			continue;
		}
		if (dfd < 0) {
			r = dfd;
			break;
		}
		/* a lower layer never changes: keep its names for lookups */
		struct nameset *own = NULL;
		if (!is_upper(fs, dir->dl[i].layer) && !__atomic_load_n(&dir->dl[i].names, __ATOMIC_ACQUIRE))
			own = calloc(1, sizeof *own);
		struct wa_batch b;
		wa_batch_begin(fs, &b, dfd, ahead, dir->ino, dir->dl[i].layer);
		r = read_layer(fs, dfd, dir->dl[i].layer, &seen, &pending, dc, &cap, own, &b);
		wa_batch_end(&b);
		if (tmp)
			close(dfd);
		keep_names(&dir->dl[i], own, r);
		ns_merge(&seen, &pending);
	}
	pthread_rwlock_unlock(dir->dl_lock);
	ns_free(&seen);
	ns_free(&pending);
	if (r < 0) {
		dircache_put(dc);
		return r;
	}
	if (dc->n > 1)
		qsort(dc->ents, dc->n, sizeof *dc->ents, cookie_cmp);

	pthread_mutex_lock(&fs->table_lock);
	if (dir->version == version && !dir->dcache) {
		dir->dcache = dc;
		dc->refs++;
	}
	pthread_mutex_unlock(&fs->table_lock);
	*out = dc;
	return 0;
}

int dir_is_empty(struct sfs *fs, struct node *dir)
{
	struct dircache *dc;
	int r = dir_listing(fs, dir, &dc);
	if (r < 0)
		return r;
	r = dc->n == 0;
	dircache_put(dc);
	return r;
}

int dl_has(struct node *dir, unsigned i, const char *name)
{
	const struct nameset *ns = __atomic_load_n(&dir->dl[i].names, __ATOMIC_ACQUIRE);
	if (!ns)
		return -1;
	return ns_has(ns, name);
}

void dl_free_names(struct dlayer *dl, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (dl[i].names) {
			ns_free(dl[i].names);
			free(dl[i].names);
			dl[i].names = NULL;
		}
}
