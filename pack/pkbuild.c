/* pkbuild: a packed layer from entries fed one at a time (pk_build_*), as
 * an import reads them from a tar: no tree on disk.
 *
 * Entries arrive in archive order, with the quirks real tars have (parents
 * after their children or missing, a path listed twice, hard links), so
 * the tree is kept in memory and serialised at the end in the order
 * pk_write walks a directory: the same sections as packing the unpacked
 * tree would give. File contents do not wait: each 64 KiB piece goes to the
 * compressing workers as soon as it is read, and only the extents' slots
 * are kept.
 */
#include "pkwint.h"

#include "err.h"
#include "whiteout.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define MAX_HOPS 40          /* symlinks followed in one path, as the kernel */
#define MAX_FILE (16ull << 40) /* ext4's largest file: a bound on a hostile header */

struct bx {
	char *name;
	void *val;
	uint32_t len;
};

struct bent;

struct pk_bnode {
	struct pk_build_attr a;
	uint32_t flags;              /* PK_INO_INLINE */
	uint64_t data;               /* regular: first extent or offset in DATA */
	char *target;                /* symlink */
	struct bx *xa;
	uint32_t nxa;
	struct pk_bnode *parent;     /* directories: where ".." leads */
	struct bent **ents;          /* directories: entries in arrival order */
	size_t n, cap;
	uint32_t pk;                 /* inode number, once serialised */
	struct pk_bnode *all;        /* every node, for freeing */
};

struct bent {
	struct pk_bnode *dir, *node; /* node NULL: removed */
	char *name;
	size_t len;
	uint64_t hash;
};

struct pk_build {
	struct w w;
	char dest[PATH_MAX], rec[2 * PATH_MAX + 2];
	struct pk_build_attr dirs;
	struct pk_bnode *root, *all;
	struct bent **ht;            /* (dir, name) -> entry */
	size_t ht_n, ht_cap;
	/* the regular file being fed */
	struct pk_bnode *cur;
	uint64_t data_end;
	unsigned char *ibuf;
	struct job *job;
	uint64_t job_idx;
	uint32_t job_fill;
	uint16_t job_touched;
	bool failed;
};

/* ---------------------------------------------------------------- tree */

static uint64_t ent_hash(const struct pk_bnode *dir, const char *name, size_t len)
{
	return XXH3_64bits_withSeed(name, len, (uint64_t)(uintptr_t)dir);
}

static struct bent **ht_slot(struct pk_build *b, const struct pk_bnode *dir, const char *name, size_t len,
			     uint64_t h)
{
	for (size_t i = h & (b->ht_cap - 1);; i = (i + 1) & (b->ht_cap - 1)) {
		struct bent *e = b->ht[i];
		if (!e || (e->hash == h && e->dir == dir && e->len == len && !memcmp(e->name, name, len)))
			return &b->ht[i];
	}
}

static struct bent *find(struct pk_build *b, const struct pk_bnode *dir, const char *name, size_t len)
{
	if (!b->ht_cap)
		return NULL;
	return *ht_slot(b, dir, name, len, ent_hash(dir, name, len));
}

static struct pk_bnode *new_node(struct pk_build *b, const struct pk_build_attr *a)
{
	struct pk_bnode *n = calloc(1, sizeof *n);
	if (!n)
		return NULL;
	n->a = *a;
	n->all = b->all;
	b->all = n;
	return n;
}

/* The entry NAME of dir, made (empty) when absent. */
static int entry(struct pk_build *b, struct pk_bnode *dir, const char *name, size_t len, struct bent **out)
{
	if (len == 0 || len > NAME_MAX || memchr(name, '/', len))
		return -EINVAL;
	if ((b->ht_n + 1) * 2 > b->ht_cap) {
		size_t cap = b->ht_cap ? b->ht_cap * 2 : 1024;
		struct bent **old = b->ht;
		size_t ocap = b->ht_cap;
		if (!(b->ht = calloc(cap, sizeof *b->ht))) {
			b->ht = old;
			return -ENOMEM;
		}
		b->ht_cap = cap;
		for (size_t i = 0; i < ocap; i++)
			if (old[i])
				*ht_slot(b, old[i]->dir, old[i]->name, old[i]->len, old[i]->hash) = old[i];
		free(old);
	}
	uint64_t h = ent_hash(dir, name, len);
	struct bent **s = ht_slot(b, dir, name, len, h);
	if (*s) {
		*out = *s;
		return 0;
	}
	if (dir->n == dir->cap) {
		size_t cap = dir->cap ? dir->cap * 2 : 8;
		struct bent **p = realloc(dir->ents, cap * sizeof *p);
		if (!p)
			return -ENOMEM;
		dir->ents = p;
		dir->cap = cap;
	}
	struct bent *e = calloc(1, sizeof *e);
	if (!e || !(e->name = malloc(len + 1))) {
		free(e);
		return -ENOMEM;
	}
	memcpy(e->name, name, len);
	e->name[len] = 0;
	e->len = len;
	e->dir = dir;
	e->hash = h;
	dir->ents[dir->n++] = e;
	*s = e;
	b->ht_n++;
	*out = e;
	return 0;
}

/* The directory at path[0..len) from dir, following symlinks that stay
 * inside the layer (as openat2(RESOLVE_BENEATH) does for the unpacker):
 * -EXDEV for one that leads out, -ELOOP, -ENOTDIR, -ENOENT (missing
 * directories are made when create). */
static int walk(struct pk_build *b, struct pk_bnode *dir, const char *path, size_t len, bool create, int *hops,
		struct pk_bnode **out)
{
	const char *p = path, *end = path + len;
	while (p < end) {
		const char *c = p;
		while (p < end && *p != '/')
			p++;
		size_t n = (size_t)(p - c);
		if (p < end)
			p++;
		if (n == 0 || (n == 1 && c[0] == '.'))
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.') {
			if (dir == b->root)
				return -EXDEV;
			dir = dir->parent;
			continue;
		}
		struct bent *e = find(b, dir, c, n);
		struct pk_bnode *x = e ? e->node : NULL;
		if (!x) {
			if (!create)
				return -ENOENT;
			int r = entry(b, dir, c, n, &e);
			if (r < 0)
				return r;
			if (!(x = new_node(b, &b->dirs)))
				return -ENOMEM;
			x->parent = dir;
			e->node = x;
		} else if (S_ISLNK(x->a.mode)) {
			if (++*hops > MAX_HOPS)
				return -ELOOP;
			if (x->target[0] == '/')
				return -EXDEV;
			int r = walk(b, dir, x->target, strlen(x->target), false, hops, &x);
			if (r < 0)
				return r;
		}
		if (!S_ISDIR(x->a.mode))
			return -ENOTDIR;
		dir = x;
	}
	*out = dir;
	return 0;
}

/* The parent directory of path and its last component. */
static int parent_of(struct pk_build *b, const char *path, bool create, struct pk_bnode **dir, const char **name)
{
	const char *slash = strrchr(path, '/');
	int hops = 0;
	*name = slash ? slash + 1 : path;
	if (!**name)
		return -EINVAL;
	return walk(b, b->root, path, slash ? (size_t)(slash - path) : 0, create, &hops, dir);
}

static void unlink_node(struct bent *e)
{
	e->node = NULL;
}

/* ---------------------------------------------------------------- data */

static int flush_job(struct pk_build *b)
{
	struct job *j = b->job;
	if (!j)
		return 0;
	b->job = NULL;
	uint64_t size = b->cur->a.size;
	uint32_t chunk = b->w.chunk;
	uint32_t len = size - b->job_idx * chunk > chunk ? chunk : (uint32_t)(size - b->job_idx * chunk);
	if (b->job_fill < len)
		memset(j->buf + b->job_fill, 0, len - b->job_fill);
	uint16_t all = block_mask(len);
	j->ext = b->cur->data + b->job_idx;
	j->len = len;
	j->holes = (uint16_t)(~b->job_touched & all);
	b->w.st.chunks++;
	return submit(&b->w, j);
}

/* The extents' slots (all holes until data comes) or the inline buffer. */
static int file_begin(struct pk_build *b, struct pk_bnode *n)
{
	uint64_t size = n->a.size;
	b->cur = n;
	b->data_end = 0;
	b->job_idx = UINT64_MAX;
	if (size <= b->w.inline_max) {
		n->flags |= PK_INO_INLINE;
		b->ibuf = calloc(1, size ? size : 1);
		return b->ibuf ? 0 : -ENOMEM;
	}
	if (size > MAX_FILE)
		return -EFBIG;
	uint64_t cnt = size / b->w.chunk + (size % b->w.chunk != 0);
	pthread_mutex_lock(&b->w.mu);
	int r = vec_grow(&b->w.ext, cnt);
	uint64_t first = b->w.ext.n;
	if (r == 0) {
		for (uint64_t i = 0; i < cnt; i++)
			VEC_AT(b->w.ext, struct pk_extent, first + i) = (struct pk_extent){ PK_HOLE, 0xffff, 0 };
		b->w.ext.n += cnt;
	}
	pthread_mutex_unlock(&b->w.mu);
	n->data = first;
	return r;
}

bool pk_build_failed(const struct pk_build *b)
{
	return b->failed;
}

static int file_end(struct pk_build *b)
{
	struct pk_bnode *n = b->cur;
	if (!n)
		return 0;
	int r = flush_job(b);
	if (r < 0)
		b->failed = true;
	b->w.st.files++;
	b->w.st.bytes_in += n->a.size;
	if (n->flags & PK_INO_INLINE) {
		uint64_t off;
		if (r == 0)
			r = add_bytes(&b->w.dat, b->ibuf, n->a.size, &off);
		n->data = off;
		b->w.st.inline_bytes += n->a.size;
		free(b->ibuf);
		b->ibuf = NULL;
	} else {
		uint64_t cnt = n->a.size / b->w.chunk + (n->a.size % b->w.chunk != 0);
		b->w.st.holes += cnt;   /* less the chunks submitted, below */
	}
	b->cur = NULL;
	return r;
}

int pk_build_data(struct pk_build *b, uint64_t off, const void *buf, size_t len)
{
	struct pk_bnode *n = b->cur;
	const unsigned char *p = buf;
	if (!n)
		return -EINVAL;
	if (off < b->data_end || off > n->a.size || len > n->a.size - off) {
		b->failed = true;
		return -EINVAL;
	}
	if (n->flags & PK_INO_INLINE) {
		memcpy(b->ibuf + off, p, len);
		b->data_end = off + len;
		return 0;
	}
	while (len) {
		uint64_t idx = off / b->w.chunk;
		uint32_t in = off % b->w.chunk;
		if (idx != b->job_idx) {
			int r = flush_job(b);
			if (r < 0) {
				b->failed = true;
				return r;   /* reported by the store */
			}
			if (!(b->job = malloc(sizeof *b->job + b->w.chunk))) {
				b->failed = true;
				serr(-ENOMEM, "pack", b->dest, "the layer is not written");
				return -ENOMEM;
			}
			b->job_idx = idx;
			b->job_fill = 0;
			b->job_touched = 0;
		}
		uint32_t k = len < b->w.chunk - in ? (uint32_t)len : b->w.chunk - in;
		if (in > b->job_fill)
			memset(b->job->buf + b->job_fill, 0, in - b->job_fill);
		memcpy(b->job->buf + in, p, k);
		b->job_fill = in + k;
		for (uint32_t blk = in / PK_BLOCK; blk < (in + k + PK_BLOCK - 1) / PK_BLOCK; blk++)
			b->job_touched |= (uint16_t)(1u << blk);
		off += k;
		p += k;
		len -= k;
	}
	b->data_end = off;
	return 0;
}

/* ---------------------------------------------------------------- entries */

int pk_build_add(struct pk_build *b, const char *path, const struct pk_build_attr *a, const char *symlink,
		 struct pk_bnode **out)
{
	int r = file_end(b);
	if (r < 0)
		return r;
	if (!path[0]) {
		if (!S_ISDIR(a->mode))
			return -EINVAL;
		b->root->a = *a;
		*out = b->root;
		return 0;
	}
	if (S_ISLNK(a->mode) && (!symlink || !symlink[0] || strlen(symlink) >= PATH_MAX))
		return -EINVAL;
	struct pk_bnode *dir;
	const char *name;
	struct bent *e;
	if ((r = parent_of(b, path, true, &dir, &name)) < 0 || (r = entry(b, dir, name, strlen(name), &e)) < 0)
		return r;
	if (e->node && S_ISDIR(e->node->a.mode) && S_ISDIR(a->mode)) {
		/* a directory stays a directory: the later entry's attributes */
		e->node->a = *a;
		*out = e->node;
		return 0;
	}
	unlink_node(e);
	struct pk_bnode *n = new_node(b, a);
	if (!n || (symlink && S_ISLNK(a->mode) && !(n->target = strdup(symlink))))
		return -ENOMEM;
	if (S_ISDIR(a->mode))
		n->parent = dir;
	else
		n->a.size = S_ISREG(a->mode) ? a->size : 0;
	e->node = n;
	*out = n;
	if (S_ISREG(a->mode) && (r = file_begin(b, n)) < 0) {
		b->cur = NULL;
		b->failed = true;
	}
	return r;
}

int pk_build_remove(struct pk_build *b, const char *path)
{
	struct pk_bnode *dir;
	const char *name;
	int r = file_end(b);
	if (r == 0)
		r = parent_of(b, path, true, &dir, &name);
	if (r < 0)
		return r;
	struct bent *e = find(b, dir, name, strlen(name));
	if (e)
		unlink_node(e);
	return 0;
}

int pk_build_link(struct pk_build *b, const char *path, const char *target)
{
	struct pk_bnode *dir, *tdir;
	const char *name, *tname;
	struct bent *e, *t;
	int r = file_end(b);
	if (r == 0)
		r = parent_of(b, path, true, &dir, &name);
	if (r == 0)
		r = entry(b, dir, name, strlen(name), &e);
	if (r < 0)
		return r;
	unlink_node(e);   /* as a later member replaces an earlier one */
	if ((r = parent_of(b, target, false, &tdir, &tname)) < 0)
		return r;
	t = find(b, tdir, tname, strlen(tname));
	if (!t || !t->node || S_ISDIR(t->node->a.mode))
		return -ENOENT;
	e->node = t->node;
	return 0;
}

int pk_build_lookup(struct pk_build *b, const char *path)
{
	struct pk_bnode *dir;
	const char *name;
	int r = parent_of(b, path, false, &dir, &name);
	if (r < 0)
		return r == -ENOENT ? 0 : r;
	struct bent *e = find(b, dir, name, strlen(name));
	return e && e->node;
}

int pk_build_xattr(struct pk_build *b, struct pk_bnode *n, const char *name, const void *val, size_t len)
{
	(void)b;
	if (!name[0] || strlen(name) > 255 || len > 65536)
		return -EINVAL;
	void *v = malloc(len ? len : 1);
	if (!v)
		return -ENOMEM;
	memcpy(v, val, len);
	for (uint32_t i = 0; i < n->nxa; i++)
		if (!strcmp(n->xa[i].name, name)) {
			free(n->xa[i].val);
			n->xa[i].val = v;
			n->xa[i].len = (uint32_t)len;
			return 0;
		}
	struct bx *p = realloc(n->xa, (n->nxa + 1) * sizeof *p);
	char *nm = strdup(name);
	if (p)
		n->xa = p;
	if (!p || !nm) {
		free(v);
		free(nm);
		return -ENOMEM;
	}
	n->xa[n->nxa++] = (struct bx){ nm, v, (uint32_t)len };
	return 0;
}

/* ---------------------------------------------------------------- output */

#define INO(w, n) (&VEC_AT((w)->ino, struct pk_inode, (n)))

static int new_ino(struct w *w, const struct pk_bnode *x, uint32_t parent, uint32_t *out)
{
	if (w->ino.n >= UINT32_MAX - 1)
		return -EFBIG;
	int r = vec_grow(&w->ino, 1);
	if (r < 0)
		return r;
	struct pk_inode *i = INO(w, w->ino.n);
	memset(i, 0, sizeof *i);
	if (x) {
		i->mode = x->a.mode;
		i->uid = x->a.uid;
		i->gid = x->a.gid;
		i->nlink = 1;
		i->parent = parent;
		i->mtime_sec = x->a.mtime.tv_sec;
		i->mtime_nsec = x->a.mtime.tv_nsec;
		i->atime_sec = x->a.atime.tv_sec;
		i->atime_nsec = x->a.atime.tv_nsec;
		i->flags = x->flags;
		if (S_ISCHR(x->a.mode) || S_ISBLK(x->a.mode))
			i->data = x->a.rdev;
	}
	*out = w->ino.n++;
	w->st.inodes++;
	return 0;
}

static int put_xattrs(struct w *w, const struct pk_bnode *x, uint32_t ino)
{
	struct pk_inode *rec = INO(w, ino);
	rec->xattr_first = w->xat.n;
	rec->xattr_count = 0;
	uint32_t flags = 0;
	for (uint32_t i = 0; i < x->nxa; i++) {
		const struct bx *a = &x->xa[i];
		if (S_ISDIR(x->a.mode) && a->len == 1 && *(const char *)a->val == 'y') {
			if (!strcmp(a->name, "trusted.overlay.opaque"))
				flags |= PK_INO_OPQ_TRUSTED;
			else if (!strcmp(a->name, "user.overlay.opaque"))
				flags |= PK_INO_OPQ_USER;
			else if (!strcmp(a->name, "user.fuseoverlayfs.opaque"))
				flags |= PK_INO_OPQ_FUSE;
		}
		uint64_t noff, voff;
		int r = vec_grow(&w->xat, 1);
		if (r == 0)
			r = add_bytes(&w->str, a->name, strlen(a->name), &noff);
		if (r == 0)
			r = add_bytes(&w->str, a->val, a->len, &voff);
		if (r < 0)
			return r;
		VEC_AT(w->xat, struct pk_xattr, w->xat.n++) = (struct pk_xattr){
			.name_off = noff, .value_off = voff, .name_len = strlen(a->name), .value_len = a->len };
	}
	rec = INO(w, ino);
	rec->xattr_count = x->nxa;
	rec->flags |= flags;
	if (x->nxa > 1)
		qsort_r(&VEC_AT(w->xat, struct pk_xattr, rec->xattr_first), x->nxa, sizeof(struct pk_xattr),
			xattr_cmp, w->str.p);
	return 0;
}

struct item {
	struct dent d;       /* first: dents_sort() sorts items by it */
	const struct bent *e;
};

static int ser_dir(struct pk_build *b, struct pk_bnode *d, uint32_t dino, int depth);

static int ser_child(struct pk_build *b, struct pk_bnode *x, uint32_t dino, int depth, uint32_t *out)
{
	struct w *w = &b->w;
	int r;
	if (x->pk) {   /* a hard link: the inode is there already */
		INO(w, x->pk)->nlink++;
		*out = x->pk;
		return 0;
	}
	uint32_t n;
	if ((r = new_ino(w, x, dino, &n)) < 0)
		return r;
	x->pk = n;
	*out = n;
	if ((r = put_xattrs(w, x, n)) < 0)
		return r;
	if (S_ISLNK(x->a.mode)) {
		uint64_t off;
		size_t len = strlen(x->target);
		if ((r = add_bytes(&w->str, x->target, len, &off)) < 0)
			return r;
		INO(w, n)->data = off;
		INO(w, n)->size = len;
	} else if (S_ISREG(x->a.mode)) {
		INO(w, n)->size = x->a.size;
		INO(w, n)->data = x->data;
	} else if (S_ISDIR(x->a.mode)) {
		if (depth + 1 >= MAX_DEPTH)
			return -ELOOP;
		w->st.dirs++;
		return ser_dir(b, x, n, depth + 1);
	}
	return 0;
}

/* One directory, as pk_write's walk_dir does it: classify the names, sort
 * them, let NAME win over a ".wh.NAME" beside it. */
static int ser_dir(struct pk_build *b, struct pk_bnode *d, uint32_t dino, int depth)
{
	struct w *w = &b->w;
	size_t n = 0;
	struct item *it = calloc(d->n ? d->n : 1, sizeof *it);
	if (!it)
		return -ENOMEM;
	for (size_t i = 0; i < d->n; i++) {
		const struct bent *e = d->ents[i];
		if (!e->node)
			continue;
		struct item *x = &it[n++];
		struct stat st = { .st_mode = e->node->a.mode, .st_rdev = (dev_t)e->node->a.rdev };
		x->e = e;
		dent_classify(w, dino, &x->d, e->name, e->len, &st);
	}
	int r = dents_sort(it, n, sizeof *it);   /* -EINVAL: two entries map to one name */
	if (r == 0)
		r = vec_grow(&w->ent, n);
	if (r < 0) {
		free(it);
		return r;
	}
	uint64_t first = w->ent.n;
	w->ent.n += n;
	INO(w, dino)->data = first;
	INO(w, dino)->size = n;
	uint32_t subdirs = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		struct item *x = &it[i];
		struct pk_bnode *node = x->e->node;
		uint64_t noff;
		uint32_t cino = 0;
		if ((r = add_bytes(&w->str, x->d.key, x->d.klen, &noff)) < 0)
			break;
		r = ser_child(b, node, dino, depth, &cino);
		if (r == 0 && x->d.wh_beside && S_ISDIR(node->a.mode))
			INO(w, cino)->flags |= PK_INO_OPQ_WHBESIDE;
		VEC_AT(w->ent, struct pk_entry, first + i) = (struct pk_entry){
			.name_off = noff, .name_len = x->d.klen, .kind = x->d.kind, .flags = x->d.flags, .ino = cino };
		if (S_ISDIR(node->a.mode))
			subdirs++;
	}
	INO(w, dino)->nlink = 2 + subdirs;
	free(it);
	return r;
}

/* ---------------------------------------------------------------- life */

int pk_build_new(const char *dest, const struct pk_write_opts *o, const struct pk_build_attr *dirs,
		 struct pk_build **out)
{
	struct pk_build *b = calloc(1, sizeof *b);
	if (!b)
		return -ENOMEM;
	w_init(&b->w);
	b->w.src = dest;
	b->dirs = *dirs;
	b->dirs.mode = S_IFDIR | (dirs->mode & 07777);
	b->dirs.size = 0;
	int r = w_opts(&b->w, o);   /* reported */
	char chunks[PATH_MAX];
	if (snprintf(b->dest, sizeof b->dest, "%s", dest) >= (int)sizeof b->dest)
		r = -ENAMETOOLONG;
	if (o && o->chunks) {
		char cp[PATH_MAX], cb[PATH_MAX], parent[PATH_MAX] = "";
		snprintf(chunks, sizeof chunks, "%s", o->chunks);
		snprintf(cp, sizeof cp, "%s", chunks);
		snprintf(cb, sizeof cb, "%s", chunks);
		if (r == 0 && !realpath(dirname(cp), parent)) {
			r = -errno;
			serr(r, "resolve chunk store", chunks, "its parent directory must exist");
		}
		snprintf(b->rec, sizeof b->rec, "%s/%s", strcmp(parent, "/") ? parent : "", basename(cb));
	} else {
		char d[PATH_MAX];
		snprintf(d, sizeof d, "%s", dest);
		snprintf(chunks, sizeof chunks, "%s/chunks", dirname(d));
		strcpy(b->rec, "chunks");
	}
	if (r == 0 && !(b->root = new_node(b, &b->dirs)))
		r = -ENOMEM;
	if (r == 0)
		b->root->parent = b->root;
	if (r == 0)
		r = pk_store_open(chunks, true, &b->w.store);
	if (r == 0)
		r = pk_store_lock(b->w.store, false);
	if (r == 0 && (r = start_workers(&b->w, o ? o->threads : 0)) < 0)
		serr(r, "pack", dest, "start compressing threads");
	if (r < 0) {
		pk_build_free(b);
		return r;
	}
	*out = b;
	return 0;
}

int pk_build_finish(struct pk_build *b, struct pk_write_stats *st)
{
	struct w *w = &b->w;
	int r = file_end(b);
	stop_workers(w);
	if (r == 0)
		r = w->err;
	if (r < 0 || b->failed)
		return r < 0 ? r : -EIO;   /* reported where it failed */
	w->st.holes -= w->st.chunks < w->st.holes ? w->st.chunks : w->st.holes;
	uint32_t zero, rino;
	if ((r = new_ino(w, NULL, 0, &zero)) == 0 && (r = new_ino(w, b->root, 0, &rino)) == 0) {
		b->root->pk = rino;
		w->st.inodes = 1;
		w->st.dirs = 1;
		r = put_xattrs(w, b->root, rino);
	}
	if (r == 0)
		r = ser_dir(b, b->root, rino, 0);
	if (r < 0) {
		serr(r, "pack", b->dest, r == -ELOOP ? "directories nested too deep" :
		     r == -EINVAL ? "two entries of a directory map to one name" : "the layer is not written");
		return r;
	}
	/* Every chunk the layer names is on disk before the layer is. */
	r = pk_store_sync(w->store);
	if (r == 0)
		r = write_meta(w, b->dest, b->rec);
	if (st) {
		struct pk_store_stats ss;
		pk_store_stats(w->store, &ss);
		*st = w->st;
		st->chunks_new = ss.created;
		st->stored_new = ss.stored_bytes;
	}
	return r;
}

void pk_build_free(struct pk_build *b)
{
	if (!b)
		return;
	stop_workers(&b->w);
	free(b->job);
	free(b->ibuf);
	for (struct pk_bnode *n = b->all, *next; n; n = next) {
		next = n->all;
		for (size_t i = 0; i < n->n; i++) {
			free(n->ents[i]->name);
			free(n->ents[i]);
		}
		for (uint32_t i = 0; i < n->nxa; i++) {
			free(n->xa[i].name);
			free(n->xa[i].val);
		}
		free(n->xa);
		free(n->ents);
		free(n->target);
		free(n);
	}
	free(b->ht);
	pk_store_close(b->w.store);   /* drops the writers' lock */
	b->w.store = NULL;
	w_free(&b->w);
	free(b);
}
