/* pkwrite: pack a directory into a packed layer.
 *
 * The tree is walked from the source's fd with openat(O_NOFOLLOW) and
 * fstatat(AT_SYMLINK_NOFOLLOW), never by path, so a symlink in the source
 * cannot lead the walk out of it; each file opened is checked to be the one
 * that was listed. The main thread reads; chunks are hashed, compressed and
 * stored on worker threads. The records are built in memory and written as
 * one file at the end, after every new chunk is on disk.
 */
#include "pkwint.h"
#include "pkhash.h"

#include "err.h"
#include "whiteout.h"

#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define WAKE_BATCH 4        /* queued chunks that wake a worker */

int pk_grow(void *arr, size_t *cap, size_t need, size_t sz, size_t first)
{
	if (need <= *cap)
		return 0;
	size_t c = *cap ? *cap : first;
	while (c < need)
		c *= 2;
	/* arr points to a pointer of another type: copied, not cast */
	void *old, *p;
	memcpy(&old, arr, sizeof old);
	if (!(p = realloc(old, c * sz)))
		return -ENOMEM;
	memcpy(arr, &p, sizeof p);
	*cap = c;
	return 0;
}

int vec_grow(struct vec *v, size_t more)
{
	return pk_grow(&v->p, &v->cap, v->n + more, v->sz, 64);
}

static int fail(struct w *w, int r, const char *op, const char *rel, const char *hint)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s%s%s", w->src, rel[0] ? "/" : "", rel);
	serr(r, op, path, "%s", hint ? hint : "the layer is not written");
	return r;
}

/* ---------------------------------------------------------------- strings */

int add_bytes(struct vec *v, const void *p, size_t n, uint64_t *off)
{
	if (v->n + n > UINT32_MAX)
		return -EFBIG;
	int r = vec_grow(v, n);
	if (r < 0)
		return r;
	*off = v->n;
	if (n)
		memcpy((char *)v->p + v->n, p, n);
	v->n += n;
	return 0;
}

/* ---------------------------------------------------------------- chunks */

/* A chunk is the same as another when it is stored in the same place: two
 * packs may each hold a chunk of one key and suffix (writers run side by
 * side), with different bytes when one is forged. */
static uint32_t *cmap_slot(struct w *w, const struct pk_chunk *c, const struct pk_loc *loc)
{
	uint64_t h;
	memcpy(&h, c->key, 8);
	h ^= c->suffix * 0x9e3779b97f4a7c15ull ^ c->form ^ loc->off;
	for (size_t i = h & (w->cmap_cap - 1);; i = (i + 1) & (w->cmap_cap - 1)) {
		uint32_t v = w->cmap[i];
		if (!v)
			return &w->cmap[i];
		const struct pk_chunk *o = &VEC_AT(w->chk, struct pk_chunk, v - 1);
		const struct pk_loc *ol = &VEC_AT(w->loc, struct pk_loc, v - 1);
		if (o->suffix == c->suffix && o->form == c->form && ol->pack == loc->pack && ol->off == loc->off &&
		    !memcmp(o->key, c->key, 16))
			return &w->cmap[i];
	}
}

/* The CHUNKS index of c, added when new. Called with mu held. */
int chunk_index(struct w *w, const struct pk_chunk *c, const struct pk_loc *loc, uint32_t *idx)
{
	if ((w->chk.n + 1) * 2 > w->cmap_cap) {
		size_t cap = w->cmap_cap ? w->cmap_cap * 2 : 1024;
		uint32_t *old = w->cmap;
		size_t ocap = w->cmap_cap;
		w->cmap = calloc(cap, sizeof *w->cmap);
		if (!w->cmap) {
			w->cmap = old;
			return -ENOMEM;
		}
		w->cmap_cap = cap;
		for (size_t i = 0; i < ocap; i++)
			if (old[i])
				*cmap_slot(w, &VEC_AT(w->chk, struct pk_chunk, old[i] - 1),
					   &VEC_AT(w->loc, struct pk_loc, old[i] - 1)) = old[i];
		free(old);
	}
	uint32_t *s = cmap_slot(w, c, loc);
	if (!*s) {
		if (w->chk.n >= PK_HOLE - 1)
			return -EFBIG;
		int r = vec_grow(&w->chk, 1);
		if (r == 0)
			r = vec_grow(&w->loc, 1);
		if (r < 0)
			return r;
		VEC_AT(w->chk, struct pk_chunk, w->chk.n) = *c;
		VEC_AT(w->loc, struct pk_loc, w->loc.n++) = *loc;
		*s = ++w->chk.n;
	}
	*idx = *s - 1;
	return 0;
}

static void process(struct w *w, struct job *j)
{
	uint8_t key[16];
	struct pk_chunk c;
	struct pk_loc loc;
	pk_key(j->buf, j->len, key);
	int r = pk_store_put(w->store, key, j->buf, j->len, &c, &loc);
	pthread_mutex_lock(&w->mu);
	uint32_t idx;
	if (r == 0)
		r = chunk_index(w, &c, &loc, &idx);
	if (r == 0) {
		struct pk_extent *e = &VEC_AT(w->ext, struct pk_extent, j->ext);
		e->chunk = idx;
		e->holes = j->holes;
	} else if (!w->err)
		w->err = r;
	pthread_mutex_unlock(&w->mu);
	free(j);
}

static void *worker(void *arg)
{
	struct w *w = arg;
	for (;;) {
		pthread_mutex_lock(&w->mu);
		while (!w->qn && !w->done) {
			w->idle++;
			pthread_cond_wait(&w->more, &w->mu);
			w->idle--;
		}
		if (!w->qn) {
			pthread_mutex_unlock(&w->mu);
			return NULL;
		}
		struct job *j = w->q[w->qhead];
		w->qhead = (w->qhead + 1) % w->qcap;
		w->qn--;
		if (w->full)
			pthread_cond_signal(&w->room);
		/* after a failure (reported once, by the store) the layer is
		 * not written: the chunks still queued are dropped */
		bool skip = w->err != 0;
		pthread_mutex_unlock(&w->mu);
		if (skip)
			free(j);
		else
			process(w, j);
	}
}

int submit(struct w *w, struct job *j)
{
	if (!w->nth) {
		process(w, j);
		return w->err;
	}
	pthread_mutex_lock(&w->mu);
	while (w->qn == w->qcap) {
		pthread_cond_broadcast(&w->more);
		w->full = true;
		pthread_cond_wait(&w->room, &w->mu);
		w->full = false;
	}
	w->q[(w->qhead + w->qn) % w->qcap] = j;
	w->qn++;
	int r = w->err;
	/* wake a sleeping worker once a few jobs wait, and the reader only
	 * when it waits for room: the reader of a tree of small files is
	 * slower than the workers, and a wake-up per chunk (two futex calls)
	 * was a twentieth of the time of packing */
	if (w->idle && w->qn >= WAKE_BATCH)
		pthread_cond_signal(&w->more);
	pthread_mutex_unlock(&w->mu);
	return r;
}

void stop_workers(struct w *w)
{
	pthread_mutex_lock(&w->mu);
	w->done = true;
	pthread_cond_broadcast(&w->more);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->nth; i++)
		pthread_join(w->th[i], NULL);
	w->nth = 0;
}

/* ---------------------------------------------------------------- inodes */

/* Mark the 4 KiB blocks of [a, b) in per-chunk hole masks; a hole reaching
 * the end of the file takes the last partial block too. */
static void mark_holes(uint16_t *m, uint32_t chunk, uint64_t a, uint64_t b, uint64_t size)
{
	uint64_t first = (a + PK_BLOCK - 1) / PK_BLOCK;
	uint64_t end = b >= size ? (size + PK_BLOCK - 1) / PK_BLOCK : b / PK_BLOCK;
	uint32_t per = chunk / PK_BLOCK;
	for (uint64_t k = first; k < end; k++)
		m[k / per] |= (uint16_t)(1u << (k % per));
}

static int file_chunks(struct w *w, int fd, struct pk_inode *ino_rec, uint64_t size, uint64_t nblocks,
		       const char *rel)
{
	uint64_t n = size / w->chunk + (size % w->chunk != 0);
	_cleanup_free_ uint16_t *holes = calloc(n, sizeof *holes);
	if (!holes)
		return fail(w, -ENOMEM, "pack", rel, NULL);
	/* A file with as many 512-byte blocks allocated as its size needs has
	 * no hole: two lseeks per file spared (an eighth of the system calls
	 * of packing a tree). A file that grew since its stat is read whole. */
	for (uint64_t pos = 0; nblocks * 512 < size && pos < size;) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				mark_holes(holes, w->chunk, pos, size, size);
			break;   /* else: no hole support, read it all */
		}
		if ((uint64_t)d > pos)
			mark_holes(holes, w->chunk, pos, d, size);
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0 || (uint64_t)h <= (uint64_t)d)
			break;
		pos = h;
	}
	pthread_mutex_lock(&w->mu);
	int r = vec_grow(&w->ext, n);
	uint64_t first = w->ext.n;
	if (r == 0) {
		for (uint64_t i = 0; i < n; i++)
			VEC_AT(w->ext, struct pk_extent, first + i) = (struct pk_extent){ PK_HOLE, 0xffff, 0 };
		w->ext.n += n;
	}
	pthread_mutex_unlock(&w->mu);
	if (r < 0)
		return fail(w, r, "pack", rel, NULL);
	ino_rec->data = first;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t len = size - i * w->chunk > w->chunk ? w->chunk : size - i * w->chunk;
		uint16_t all = block_mask(len);
		if ((holes[i] & all) == all) {
			w->st.holes++;
			continue;
		}
		struct job *j = malloc(sizeof *j + len);
		if (!j)
			return fail(w, -ENOMEM, "pack", rel, NULL);
		j->ext = first + i;
		j->len = len;
		j->holes = holes[i] & all;
		r = io_read_full(fd, j->buf, len, (int64_t)(i * w->chunk), -ENODATA);
		if (r < 0) {
			free(j);
			return fail(w, r == -ENODATA ? -EIO : r, "read", rel,
				    r == -ENODATA ? "the file shrank while it was packed" : NULL);
		}
		w->st.chunks++;
		r = submit(w, j);
		if (r < 0)
			return r;   /* reported by the store */
	}
	return 0;
}

int xattr_cmp(const void *a, const void *b, void *strs)
{
	const struct pk_xattr *x = a, *y = b;
	const char *s = strs;
	int c = memcmp(s + x->name_off, s + y->name_off, x->name_len < y->name_len ? x->name_len : y->name_len);
	return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* The xattr calls on a /proc/self/fd/N/NAME path (not followed), or on fd
 * itself when path is NULL. */
static ssize_t x_list(int fd, const char *path, char *buf, size_t size)
{
	return path ? llistxattr(path, buf, size) : flistxattr(fd, buf, size);
}

static ssize_t x_get(int fd, const char *path, const char *name, void *buf, size_t size)
{
	return path ? lgetxattr(path, name, buf, size) : fgetxattr(fd, name, buf, size);
}

/* Read the xattrs of the file, sorted by name. Sets the directory's opaque
 * flags. */
static int add_xattrs(struct w *w, int fd, const char *path, struct pk_inode *rec, const char *rel)
{
	ssize_t n = x_list(fd, path, NULL, 0);
	if (n < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))
		return 0;
	_cleanup_free_ char *list = NULL;
	for (int tries = 0; n > 0 && tries < 4; tries++) {
		free(list);
		list = malloc(n);
		if (!list)
			return -ENOMEM;
		n = x_list(fd, path, list, n);
		if (n >= 0 || errno != ERANGE)
			break;
		n = x_list(fd, path, NULL, 0);
	}
	if (n < 0)
		return fail(w, -errno, "list xattrs of", rel, NULL);
	rec->xattr_first = w->xat.n;
	_cleanup_free_ char *val = NULL;
	for (char *name = list; name < list + n; name += strlen(name) + 1) {
		ssize_t vl = x_get(fd, path, name, NULL, 0);
		if (vl < 0 && errno == ENODATA)
			continue;     /* gone meanwhile */
		if (vl < 0)
			return fail(w, -errno, "read xattr of", rel, name);
		free(val);
		val = malloc(vl ? vl : 1);
		if (!val)
			return -ENOMEM;
		vl = x_get(fd, path, name, val, vl);
		if (vl < 0)
			return fail(w, -errno, "read xattr of", rel, name);
		if (S_ISDIR(rec->mode) && vl == 1 && val[0] == 'y') {
			if (!strcmp(name, "trusted.overlay.opaque"))
				rec->flags |= PK_INO_OPQ_TRUSTED;
			else if (!strcmp(name, "user.overlay.opaque"))
				rec->flags |= PK_INO_OPQ_USER;
			else if (!strcmp(name, "user.fuseoverlayfs.opaque"))
				rec->flags |= PK_INO_OPQ_FUSE;
		}
		uint64_t noff, voff;
		int r = vec_grow(&w->xat, 1);
		if (r == 0)
			r = add_bytes(&w->str, name, strlen(name), &noff);
		if (r == 0)
			r = add_bytes(&w->str, val, vl, &voff);
		if (r < 0)
			return fail(w, r, "pack", rel, NULL);
		VEC_AT(w->xat, struct pk_xattr, w->xat.n++) = (struct pk_xattr){
			.name_off = noff, .value_off = voff, .name_len = strlen(name), .value_len = vl };
		rec->xattr_count++;
	}
	if (rec->xattr_count > 1)
		qsort_r(&VEC_AT(w->xat, struct pk_xattr, rec->xattr_first), rec->xattr_count,
			sizeof(struct pk_xattr), xattr_cmp, w->str.p);
	return 0;
}

static struct hl *hl_slot(struct w *w, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ dev;
	for (size_t i = h & (w->hl_cap - 1);; i = (i + 1) & (w->hl_cap - 1))
		if (!w->hl[i].pk || (w->hl[i].dev == dev && w->hl[i].ino == ino))
			return &w->hl[i];
}

static int hl_grow(struct w *w)
{
	if ((w->hl_n + 1) * 2 <= w->hl_cap)
		return 0;
	size_t ocap = w->hl_cap;
	struct hl *old = w->hl;
	w->hl_cap = ocap ? ocap * 2 : 256;
	w->hl = calloc(w->hl_cap, sizeof *w->hl);
	if (!w->hl) {
		w->hl = old;
		w->hl_cap = ocap;
		return -ENOMEM;
	}
	for (size_t i = 0; i < ocap; i++)
		if (old[i].pk)
			*hl_slot(w, old[i].dev, old[i].ino) = old[i];
	free(old);
	return 0;
}

static int new_inode(struct w *w, const struct stat *st, uint32_t parent, uint32_t *out)
{
	if (w->ino.n >= UINT32_MAX - 1)
		return -EFBIG;
	int r = vec_grow(&w->ino, 1);
	if (r < 0)
		return r;
	struct pk_inode *i = &VEC_AT(w->ino, struct pk_inode, w->ino.n);
	memset(i, 0, sizeof *i);
	i->mode = st->st_mode;
	i->uid = st->st_uid;
	i->gid = st->st_gid;
	i->nlink = 1;
	i->parent = parent;
	i->mtime_sec = st->st_mtim.tv_sec;
	i->mtime_nsec = st->st_mtim.tv_nsec;
	i->atime_sec = st->st_atim.tv_sec;
	i->atime_nsec = st->st_atim.tv_nsec;
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
		i->data = st->st_rdev;
	*out = w->ino.n++;
	w->st.inodes++;
	return 0;
}

#define INO(w, n) (&VEC_AT((w)->ino, struct pk_inode, (n)))

/* ---------------------------------------------------------------- walk */

struct item {
	struct dent d;       /* first: dents_sort() sorts items by it */
	char *name;          /* as in the source */
	struct stat st;
};

static int dent_cmp(const void *a, const void *b)
{
	const struct dent *x = a, *y = b;
	int c = memcmp(x->key, y->key, x->klen < y->klen ? x->klen : y->klen);
	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

void dent_classify(struct w *w, uint32_t dino, struct dent *d, const char *name, size_t nlen,
		   const struct stat *st)
{
	const char *target = NULL;
	d->name = d->key = name;
	d->nlen = d->klen = nlen;
	switch (wh_classify(name, st, &target)) {
	case WH_OPQ:
		INO(w, dino)->flags |= PK_INO_OPQ_MARKER;
		/* fall through */
	case WH_RESERVED:
		d->kind = PK_ENT_HIDDEN;
		break;
	case WH_OCI:
		d->kind = PK_ENT_WHITEOUT;
		d->flags = PK_ENTF_WH_OCI;
		d->key = target;
		d->klen = strlen(target);
		break;
	case WH_CHARDEV:
		d->kind = PK_ENT_WHITEOUT;
		d->flags = PK_ENTF_WH_CHARDEV;
		break;
	case WH_NONE:
		break;
	}
}

int dents_sort(void *items, size_t n, size_t sz)
{
	char *base = items;
#define DENT(i) ((struct dent *)(base + (i) * sz))
	if (n > 1)
		qsort(items, n, sz, dent_cmp);
	bool again = false;
	for (size_t i = 0; i + 1 < n; i++)
		if (!dent_cmp(DENT(i), DENT(i + 1))) {
			struct dent *o = (DENT(i)->flags & PK_ENTF_WH_OCI) ? DENT(i) : DENT(i + 1);
			(o == DENT(i) ? DENT(i + 1) : DENT(i))->wh_beside = true;
			o->kind = PK_ENT_HIDDEN;
			o->flags = 0;
			o->key = o->name;
			o->klen = o->nlen;
			again = true;
		}
	if (again)
		qsort(items, n, sz, dent_cmp);
	for (size_t i = 0; i + 1 < n; i++)
		if (!dent_cmp(DENT(i), DENT(i + 1)))
			return -EINVAL;
#undef DENT
	return 0;
}

static void free_items(struct item *it, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(it[i].name);
	free(it);
}

static int walk_dir(struct w *w, int dfd, uint32_t dino, const char *rel, int depth);

static int child(struct w *w, int dfd, uint32_t dino, struct item *it, const char *crel, int depth,
		 uint32_t *out)
{
	const struct stat *st = &it->st;
	char proc[64 + NAME_MAX];
	int r;

	if (!S_ISDIR(st->st_mode) && st->st_nlink > 1) {
		if ((r = hl_grow(w)) < 0)
			return fail(w, r, "pack", crel, NULL);
		struct hl *h = hl_slot(w, st->st_dev, st->st_ino);
		if (h->pk) {
			INO(w, h->pk)->nlink++;
			*out = h->pk;
			return 0;
		}
	}
	uint32_t n;
	if ((r = new_inode(w, st, dino, &n)) < 0)
		return fail(w, r, "pack", crel, NULL);
	*out = n;
	if (!S_ISDIR(st->st_mode) && st->st_nlink > 1) {
		struct hl *h = hl_slot(w, st->st_dev, st->st_ino);
		*h = (struct hl){ st->st_dev, st->st_ino, n };
		w->hl_n++;
	}
	/* Regular files and directories are opened (and checked to be what was
	 * listed) before their xattrs are read, through the fd: a walk of
	 * /proc/self/fd/N/NAME per file was a tenth of the time of packing a
	 * tree of small files. */
	_cleanup_close_ int fd = -1;
	if (S_ISREG(st->st_mode)) {
		fd = openat(dfd, it->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NOATIME);
		if (fd < 0 && errno == EPERM)
			fd = openat(dfd, it->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			return fail(w, -errno, "open", crel, NULL);
	} else if (S_ISDIR(st->st_mode)) {
		if (depth + 1 >= MAX_DEPTH)
			return fail(w, -ELOOP, "pack", crel, "directories nested too deep");
		fd = openat(dfd, it->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return fail(w, -errno, "open directory", crel, NULL);
	}
	if (fd >= 0) {
		struct stat fst;
		if (fstat(fd, &fst) < 0 || fst.st_ino != st->st_ino || fst.st_dev != st->st_dev)
			return fail(w, -ESTALE, S_ISDIR(st->st_mode) ? "open directory" : "open", crel,
				    "it was replaced while it was packed");
	}
	snprintf(proc, sizeof proc, "/proc/self/fd/%d/%s", dfd, it->name);
	struct pk_inode tmp = *INO(w, n);
	r = add_xattrs(w, fd, fd >= 0 ? NULL : proc, &tmp, crel);
	*INO(w, n) = tmp;
	if (r < 0)
		return r;

	if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX];
		ssize_t len = readlinkat(dfd, it->name, target, sizeof target);
		if (len < 0)
			return fail(w, -errno, "read symlink", crel, NULL);
		if (len == 0 || len >= (ssize_t)sizeof target)
			return fail(w, -ENAMETOOLONG, "read symlink", crel, NULL);
		uint64_t off;
		if ((r = add_bytes(&w->str, target, len, &off)) < 0)
			return fail(w, r, "pack", crel, NULL);
		INO(w, n)->data = off;
		INO(w, n)->size = len;
	} else if (S_ISREG(st->st_mode)) {
		uint64_t size = st->st_size;
		INO(w, n)->size = size;
		w->st.files++;
		w->st.bytes_in += size;
		if (size <= w->inline_max) {
			_cleanup_free_ char *buf = malloc(size ? size : 1);
			if (!buf)
				return fail(w, -ENOMEM, "pack", crel, NULL);
			if ((r = io_read_full(fd, buf, size, 0, -ENODATA)) < 0)
				return fail(w, r == -ENODATA ? -EIO : r, "read", crel,
					    r == -ENODATA ? "the file shrank while it was packed" : NULL);
			uint64_t off;
			if ((r = add_bytes(&w->dat, buf, size, &off)) < 0)
				return fail(w, r, "pack", crel, NULL);
			INO(w, n)->flags |= PK_INO_INLINE;
			INO(w, n)->data = off;
			w->st.inline_bytes += size;
		} else {
			struct pk_inode rec = *INO(w, n);
			r = file_chunks(w, fd, &rec, size, (uint64_t)st->st_blocks, crel);
			INO(w, n)->data = rec.data;
			if (r < 0)
				return r;
		}
	} else if (S_ISDIR(st->st_mode)) {
		w->st.dirs++;
		return walk_dir(w, fd, n, crel, depth + 1);
	}
	return 0;
}

static int walk_dir(struct w *w, int dfd, uint32_t dino, const char *rel, int depth)
{
	struct item *it = NULL;
	size_t n = 0, cap = 0;
	int r = 0;
	{
		int fd2 = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		DIR *d = fd2 >= 0 ? fdopendir(fd2) : NULL;
		if (!d) {
			r = -errno;
			if (fd2 >= 0)
				close(fd2);
			return fail(w, r, "read directory", rel, NULL);
		}
		struct dirent *de;
		errno = 0;
		while ((de = readdir(d))) {
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 16;
				struct item *p = realloc(it, cap * sizeof *it);
				if (!p) {
					r = -ENOMEM;
					break;
				}
				it = p;
			}
			struct item *x = &it[n];
			memset(x, 0, sizeof *x);
			if (!(x->name = strdup(de->d_name))) {
				r = -ENOMEM;
				break;
			}
			n++;
			if (fstatat(dfd, x->name, &x->st, AT_SYMLINK_NOFOLLOW) < 0) {
				r = -errno;
				break;
			}
			errno = 0;
		}
		if (!r && errno)
			r = -errno;
		closedir(d);
	}
	if (r < 0) {
		free_items(it, n);
		return fail(w, r, "read directory", rel, NULL);
	}

	for (size_t i = 0; i < n; i++)
		dent_classify(w, dino, &it[i].d, it[i].name, strlen(it[i].name), &it[i].st);
	if (dents_sort(it, n, sizeof *it) < 0) {
		free_items(it, n);
		return fail(w, -EINVAL, "pack", rel, "two entries map to one name");
	}

	if ((r = vec_grow(&w->ent, n)) < 0) {
		free_items(it, n);
		return fail(w, r, "pack", rel, NULL);
	}
	uint64_t first = w->ent.n;
	w->ent.n += n;
	INO(w, dino)->data = first;
	INO(w, dino)->size = n;
	uint32_t subdirs = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		struct item *x = &it[i];
		uint64_t noff;
		if ((r = add_bytes(&w->str, x->d.key, x->d.klen, &noff)) < 0) {
			fail(w, r, "pack", rel, NULL);
			break;
		}
		char crel[PATH_MAX];
		if ((size_t)snprintf(crel, sizeof crel, "%s%s%s", rel, rel[0] ? "/" : "", x->name) >= sizeof crel) {
			r = fail(w, -ENAMETOOLONG, "pack", rel, "path too long");
			break;
		}
		uint32_t cino = 0;
		r = child(w, dfd, dino, x, crel, depth, &cino);
		if (r == 0 && x->d.wh_beside && S_ISDIR(x->st.st_mode))
			INO(w, cino)->flags |= PK_INO_OPQ_WHBESIDE;
		VEC_AT(w->ent, struct pk_entry, first + i) = (struct pk_entry){
			.name_off = noff, .name_len = x->d.klen, .kind = x->d.kind, .flags = x->d.flags, .ino = cino };
		if (S_ISDIR(x->st.st_mode))
			subdirs++;
	}
	INO(w, dino)->nlink = 2 + subdirs;
	free_items(it, n);
	return r;
}

/* ---------------------------------------------------------------- output */

int write_meta(struct w *w, const char *dest, const char *chunks_rec)
{
	struct pk_super sb;
	memset(&sb, 0, sizeof sb);
	memcpy(sb.magic, PK_MAGIC, 8);
	sb.version = PK_VERSION;
	sb.super_size = sizeof sb;
	sb.chunk_size = w->chunk;
	sb.inline_max = w->inline_max;
	sb.root_ino = PK_ROOT_INO;
	sb.inode_count = w->ino.n;
	/* a layer of loose objects is what strata wrote before packs */
	bool packs = !pk_store_loose(w->store);
	if (packs)
		sb.incompat |= PK_INCOMPAT_PACKS;
	uint64_t off;
	int r = add_bytes(&w->str, chunks_rec, strlen(chunks_rec), &off);
	if (r < 0)
		return r;
	sb.chunks_off = off;
	sb.chunks_len = strlen(chunks_rec);

	struct vec *v[PK_SEC_COUNT] = { &w->ino, &w->ent, &w->xat, &w->ext, &w->chk, &w->str, &w->dat, &w->loc };
	uint64_t pos = (sizeof sb + 63) & ~63ull;
	for (int i = 0; i < PK_SEC_COUNT; i++) {
		struct pk_section *s = &sb.sec[i];
		if (i == PK_SEC_LOCS && !packs)
			continue;
		s->off = pos;
		s->rec_size = v[i]->sz;
		s->count = v[i]->n;
		s->size = (uint64_t)v[i]->n * v[i]->sz;
		s->xxh3 = pk_xxh3_64(v[i]->p ? v[i]->p : "", s->size);
		pos = (pos + s->size + 63) & ~63ull;
	}
	sb.file_size = pos;
	sb.super_xxh3 = 0;
	sb.super_xxh3 = XXH3_64bits(&sb, sizeof sb);

	char tmp[PATH_MAX];
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dest, (long)getpid()) >= sizeof tmp)
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		r = -errno;
		serr(r, "create", tmp, "check that the destination directory exists and is writable");
		return r;
	}
	static const char zero[64];
	r = io_write_full(fd, &sb, sizeof sb, -1);
	uint64_t at = sizeof sb;
	for (int i = 0; i < PK_SEC_COUNT && r == 0; i++) {
		if (i == PK_SEC_LOCS && !packs)
			continue;
		r = io_write_full(fd, zero, sb.sec[i].off - at, -1);
		if (r == 0)
			r = io_write_full(fd, v[i]->p, sb.sec[i].size, -1);
		at = sb.sec[i].off + sb.sec[i].size;
	}
	if (r == 0)
		r = io_write_full(fd, zero, pos - at, -1);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && rename(tmp, dest) < 0)
		r = -errno;
	if (r < 0) {
		serr(r, "write packed layer", dest, "check the destination and free space");
		unlink(tmp);
		return r;
	}
	char dcopy[PATH_MAX];
	snprintf(dcopy, sizeof dcopy, "%s", dest);
	_cleanup_close_ int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0)
		fsync(dfd);
	w->st.meta_size = pos;
	return 0;
}

void w_free(struct w *w)
{
	free(w->ino.p);
	free(w->ent.p);
	free(w->xat.p);
	free(w->ext.p);
	free(w->chk.p);
	free(w->loc.p);
	free(w->str.p);
	free(w->dat.p);
	free(w->hl);
	free(w->cmap);
	free(w->q);
	free(w->th);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->more);
	pthread_cond_destroy(&w->room);
}

int w_opts(struct w *w, const struct pk_write_opts *o)
{
	w->chunk = o && o->chunk_size ? o->chunk_size : PK_CHUNK_DEFAULT;
	if (!pk_chunk_size_ok(w->chunk)) {
		serr(-EINVAL, "pack", w->src, "chunk size %u: a chunk size is a power of two from %u to %u bytes",
		     w->chunk, PK_CHUNK_MIN, PK_CHUNK_MAX);
		return -EINVAL;
	}
	/* an inline file lives in the metadata: never more than a chunk */
	w->inline_max = o && o->inline_max ? o->inline_max : PK_INLINE_DEFAULT;
	if (w->inline_max > w->chunk)
		w->inline_max = w->chunk;
	return 0;
}

void w_init(struct w *w)
{
	memset(w, 0, sizeof *w);
	w->ino.sz = sizeof(struct pk_inode);
	w->ent.sz = sizeof(struct pk_entry);
	w->xat.sz = sizeof(struct pk_xattr);
	w->ext.sz = sizeof(struct pk_extent);
	w->chk.sz = sizeof(struct pk_chunk);
	w->loc.sz = sizeof(struct pk_loc);
	w->str.sz = 1;
	w->dat.sz = 1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->more, NULL);
	pthread_cond_init(&w->room, NULL);
}

int start_workers(struct w *w, int nth)
{
	if (nth <= 0)
		nth = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (nth <= 1)
		return 0;
	w->qcap = 16 * nth + 2;   /* 64 KiB each */
	w->q = calloc(w->qcap, sizeof *w->q);
	w->th = calloc(nth, sizeof *w->th);
	if (!w->q || !w->th)
		return -ENOMEM;
	for (int i = 0; i < nth; i++) {
		if (pthread_create(&w->th[i], NULL, worker, w))
			break;
		w->nth++;
	}
	return 0;
}

int pk_write(const char *src, const char *dest, const struct pk_write_opts *o, struct pk_write_stats *st)
{
	struct w w;
	w_init(&w);
	w.src = src;
	char chunks[PATH_MAX], rec[2 * PATH_MAX + 2];
	int r = w_opts(&w, o);
	if (r < 0) {
		w_free(&w);
		return r;
	}
	if (o && o->chunks) {
		snprintf(chunks, sizeof chunks, "%s", o->chunks);
	} else {
		char d[PATH_MAX];
		snprintf(d, sizeof d, "%s", dest);
		snprintf(chunks, sizeof chunks, "%s/chunks", dirname(d));
	}
	_cleanup_close_ int root = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0) {
		r = -errno;
		serr(r, "open source directory", src, NULL);
		w_free(&w);
		return r;
	}
	/* The store's real path, before it exists: its parent's, plus its name. */
	char real_src[PATH_MAX], real_chunks[2 * PATH_MAX + 2], cp[PATH_MAX], cb[PATH_MAX], parent[PATH_MAX];
	snprintf(cp, sizeof cp, "%s", chunks);
	snprintf(cb, sizeof cb, "%s", chunks);
	if (!realpath(dirname(cp), parent) || !realpath(src, real_src)) {
		r = -errno;
		serr(r, "resolve chunk store", chunks, "its parent directory must exist");
		goto out;
	}
	snprintf(real_chunks, sizeof real_chunks, "%s/%s", strcmp(parent, "/") ? parent : "", basename(cb));
	size_t sl = strlen(real_src);
	if (!strncmp(real_chunks, real_src, sl) && (real_chunks[sl] == '/' || real_chunks[sl] == 0 || sl == 1)) {
		r = -EINVAL;
		serr(r, "pack", src, "the chunk store %s is inside it: put DEST or --chunks elsewhere", real_chunks);
		goto out;
	}
	if (o && o->chunks)
		snprintf(rec, sizeof rec, "%s", real_chunks);
	else
		strcpy(rec, "chunks");
	r = pk_store_open(chunks, true, &w.store);
	if (r == 0)
		r = pk_store_lock(w.store, false);
	if (r < 0)
		goto out;

	if ((r = start_workers(&w, o ? o->threads : 0)) < 0) {
		serr(r, "pack", src, "start compressing threads");
		goto out;
	}

	struct stat rst;
	uint32_t zero, rino;
	struct stat none = { .st_mode = 0 };
	if ((r = new_inode(&w, &none, 0, &zero)) < 0 || fstat(root, &rst) < 0 ||
	    (r = new_inode(&w, &rst, 0, &rino)) < 0) {
		r = r < 0 ? r : -errno;
		serr(r, "pack", src, NULL);
		goto out;
	}
	w.st.inodes = 1;
	w.st.dirs = 1;
	struct pk_inode tmp = *INO(&w, rino);
	r = add_xattrs(&w, root, NULL, &tmp, "");
	*INO(&w, rino) = tmp;
	if (r == 0)
		r = walk_dir(&w, root, rino, "", 0);
	stop_workers(&w);
	if (r == 0)
		r = w.err;
	if (r < 0)
		goto out;
	/* Every chunk the layer names is on disk before the layer is. */
	r = pk_store_sync(w.store);
	if (r == 0)
		r = write_meta(&w, dest, rec);
out:
	stop_workers(&w);
	if (w.store) {
		struct pk_store_stats ss;
		pk_store_stats(w.store, &ss);
		w.st.chunks_new = ss.created;
		w.st.stored_new = ss.stored_bytes;
	}
	pk_store_close(w.store);
	if (st)
		*st = w.st;
	w_free(&w);
	return r;
}
