/* node.c: the inode table. A node is what the kernel holds a nodeid for;
 * it lives while the kernel or an operation references it and is freed on
 * the last FORGET, so memory follows the kernel's cache, not the tree. */
#include "fs.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void ctab_del(struct sfs *fs, struct node *n);
static void ctab_add(struct sfs *fs, struct node *n);

struct node *node_new(struct sfs *fs, struct node *parent, const char *name, mode_t type)
{
	struct node *n = calloc(1, sizeof *n);

	if (!n)
		return NULL;
	n->name = strdup(name ? name : "");
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->type = type;
	n->pathfd = -1;
	n->data_layer = -1;
	pthread_mutex_init(&n->lock, NULL);
	if (S_ISDIR(type)) {
		if (!(n->dl_lock = malloc(sizeof *n->dl_lock))) {
			free(n->name);
			free(n);
			return NULL;
		}
		pthread_rwlock_init(n->dl_lock, NULL);
	}
	if (parent) {
		node_ref(fs, parent);
		n->parent = parent;
	}
	return n;
}

fuse_ino_t node_id(struct sfs *fs, struct node *n)
{
	return n == fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

struct node *node_get(struct sfs *fs, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? fs->root : (struct node *)(uintptr_t)ino;
}

static void node_free(struct sfs *fs, struct node *n)
{
	for (unsigned i = 0; i < n->ndl; i++)
		if (n->dl[i].fd >= 0) {
			close(n->dl[i].fd);
			__atomic_fetch_sub(&fs->fd_used, 1, __ATOMIC_RELAXED);
		}
	if (n->pathfd >= 0)
		close(n->pathfd);
	dl_free_names(n->dl, n->ndl);
	if (n->dcache)
		dircache_put(n->dcache);
	free(n->dl);
	free(n->redirect);
	lower_at_free(n->lat, n->nlat);
	free(n->name);
	pthread_mutex_destroy(&n->lock);
	if (n->dl_lock) {
		pthread_rwlock_destroy(n->dl_lock);
		free(n->dl_lock);
	}
	free(n);
}

void node_ref(struct sfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	n->refs++;
	pthread_mutex_unlock(&fs->table_lock);
}

/* Called with table_lock held, which it releases: frees n when nothing
 * references it, then each ancestor n held the last reference to. A deep
 * chain (rm -rf of a deep tree) goes whole, in batches freed without the
 * lock; the next ancestor keeps its child's reference across a batch, so
 * no one else frees it meanwhile. */
static void release_locked_and_free(struct sfs *fs, struct node *n)
{
	struct node *to_free[64];
	unsigned nfree = 0;

	while (n && n != fs->root && n->refs == 0 && n->nlookup == 0) {
		struct node *p = n->parent;
		if (n->hashed)
			node_hash_del(fs, n);
		ctab_del(fs, n);
		fs->nnodes--;
		to_free[nfree++] = n;
		n->parent = NULL;
		if (!p)
			break;
		if (nfree == sizeof to_free / sizeof *to_free) {
			pthread_mutex_unlock(&fs->table_lock);
			for (unsigned i = 0; i < nfree; i++)
				node_free(fs, to_free[i]);
			nfree = 0;
			pthread_mutex_lock(&fs->table_lock);
		}
		p->refs--;
		n = p;
	}
	pthread_mutex_unlock(&fs->table_lock);
	for (unsigned i = 0; i < nfree; i++)
		node_free(fs, to_free[i]);
}

void node_unref(struct sfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	n->refs--;
	release_locked_and_free(fs, n);
}

void node_forget(struct sfs *fs, struct node *n, uint64_t nlookup)
{
	pthread_mutex_lock(&fs->table_lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	release_locked_and_free(fs, n);
}

void node_set_name(struct sfs *fs, struct node *n, struct node *parent, const char *name)
{
	char *nn = strdup(name);
	struct node *oldp;
	char *oldname;

	if (!nn)
		return;  /* keeps the old name: operations fail with ENOENT, not worse */
	node_ref(fs, parent);
	pthread_mutex_lock(&fs->table_lock);
	ctab_del(fs, n);
	oldp = n->parent;
	oldname = n->name;
	n->parent = parent;
	n->name = nn;
	__atomic_store_n(&n->detached, false, __ATOMIC_RELEASE);
	if (!node_deleted(n))
		ctab_add(fs, n);
	pthread_mutex_unlock(&fs->table_lock);
	free(oldname);
	if (oldp)
		node_unref(fs, oldp);
}

/* ---- live nodes by (parent, name): one nodeid per name --------------- */

static size_t cslot(struct sfs *fs, const struct node *parent, const char *name)
{
	uint64_t h = (uint64_t)(uintptr_t)parent * 0x9E3779B97F4A7C15ULL;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001B3ULL;
	return (size_t)(h ^ (h >> 29)) & (fs->csize - 1);
}

/* table_lock held */
static void ctab_del(struct sfs *fs, struct node *n)
{
	if (!n->in_ctab)
		return;
	struct node **pp = &fs->ctab[cslot(fs, n->parent, n->name)];
	for (; *pp; pp = &(*pp)->cnext)
		if (*pp == n) {
			*pp = n->cnext;
			break;
		}
	n->in_ctab = false;
	n->cnext = NULL;
}

/* table_lock held */
static void ctab_add(struct sfs *fs, struct node *n)
{
	if (n->in_ctab || !n->parent)
		return;
	size_t s = cslot(fs, n->parent, n->name);
	n->cnext = fs->ctab[s];
	fs->ctab[s] = n;
	n->in_ctab = true;
}

/* table_lock held by the caller */
struct node *node_child_find(struct sfs *fs, struct node *parent, const char *name)
{
	for (struct node *n = fs->ctab[cslot(fs, parent, name)]; n; n = n->cnext)
		if (n->parent == parent && !strcmp(n->name, name) && !node_deleted(n) && !node_detached(n))
			return n;
	return NULL;
}

/* table_lock held by the caller */
void node_child_add(struct sfs *fs, struct node *n)
{
	ctab_add(fs, n);
}

/* ---- hard links: one node per upper inode with several names -------- */

static size_t hslot(struct sfs *fs, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ULL ^ (uint64_t)dev;
	return (size_t)(h >> 20) & (fs->hsize - 1);
}

struct node *node_hash_find(struct sfs *fs, dev_t dev, ino_t ino)
{
	for (struct node *n = fs->htab[hslot(fs, dev, ino)]; n; n = n->hnext)
		if (n->rdev_real == dev && n->rino_real == ino && !node_deleted(n))
			return n;
	return NULL;
}

void node_hash_add(struct sfs *fs, struct node *n, dev_t dev, ino_t ino)
{
	if (n->hashed)
		node_hash_del(fs, n);
	n->rdev_real = dev;
	n->rino_real = ino;
	size_t s = hslot(fs, dev, ino);
	n->hnext = fs->htab[s];
	fs->htab[s] = n;
	n->hashed = true;
}

void node_hash_del(struct sfs *fs, struct node *n)
{
	struct node **pp = &fs->htab[hslot(fs, n->rdev_real, n->rino_real)];
	for (; *pp; pp = &(*pp)->hnext)
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	n->hashed = false;
	n->hnext = NULL;
}

/* The object is gone from the merged view. Keep a handle on an upper
 * object so that processes holding it open (or a cwd in it) go on working. */
void node_keep_path(struct sfs *fs, struct node *n)
{
	struct loc l;

	if (n->pathfd < 0 && !node_deleted(n) && loc_get(fs, n, &l) == 0) {
		if (l.pino) {
			/* packed: its inode number is its handle for good */
			__atomic_store_n(&n->pk_ino, l.pino, __ATOMIC_RELEASE);
			loc_put(&l);
			return;
		}
		int fd = openat(l.dirfd, l.name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		int expected = -1;
		if (fd >= 0 && !__atomic_compare_exchange_n(&n->pathfd, &expected, fd, false,
							    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			close(fd);
		loc_put(&l);
	}
}

void node_mark_deleted(struct sfs *fs, struct node *n)
{
	if (node_deleted(n))
		return;
	node_keep_path(fs, n);
	pthread_mutex_lock(&fs->table_lock);
	__atomic_store_n(&n->deleted, true, __ATOMIC_RELEASE);
	if (n->hashed)
		node_hash_del(fs, n);
	/* it stays in the (parent, name) table, which lookups skip it in,
	 * until freed: the kernel may hold it to the end (its FORGET lost at
	 * unmount), and then it is still reachable, not a leak */
	pthread_mutex_unlock(&fs->table_lock);
}

/* One name of a hard-linked object went away, others remain: reach the
 * object through a kept fd until a lookup finds it under another name. */
void node_detach(struct sfs *fs, struct node *n)
{
	struct loc l;

	if (n->pathfd < 0 && loc_get(fs, n, &l) == 0) {
		if (l.pino)
			__atomic_store_n(&n->pk_ino, l.pino, __ATOMIC_RELEASE);
		else
			n->pathfd = openat(l.dirfd, l.name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		loc_put(&l);
	}
	pthread_mutex_lock(&fs->table_lock);
	ctab_del(fs, n);
	__atomic_store_n(&n->detached, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&fs->table_lock);
}

void node_drop_listing(struct sfs *fs, struct node *dir, struct dircache *dc)
{
	pthread_mutex_lock(&fs->table_lock);
	bool mine = dir->dcache == dc;
	if (mine)
		dir->dcache = NULL;
	pthread_mutex_unlock(&fs->table_lock);
	if (mine)
		dircache_put(dc);
}

void node_dir_changed(struct sfs *fs, struct node *dir)
{
	struct dircache *old;
	bool kcached;

	pthread_mutex_lock(&fs->table_lock);
	dir->version++;
	old = dir->dcache;
	dir->dcache = NULL;
	kcached = dir->kcached;
	dir->kcached = false;
	pthread_mutex_unlock(&fs->table_lock);
	if (old)
		dircache_put(old);
	/* The kernel checks its cached listing against the directory's mtime,
	 * which two changes within one clock tick leave equal: drop it. */
	if (kcached && fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, node_id(fs, dir), 0, 0);
}

/* ---- where a directory is in each layer ------------------------------ */

void lower_at_free(struct lower_at *lat, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free(lat[i].path);
	free(lat);
}

/* table_lock held: n's place in lower layer `layer`, NULL: at its name */
static const char *lower_at_of(const struct node *n, uint32_t layer)
{
	for (unsigned i = 0; i < n->nlat; i++)
		if (n->lat[i].layer == layer)
			return n->lat[i].path;
	return NULL;
}

void node_set_lower_at(struct sfs *fs, struct node *dir, struct lower_at *lat, unsigned n)
{
	pthread_mutex_lock(&fs->table_lock);
	struct lower_at *old = dir->lat;
	unsigned oldn = dir->nlat;
	dir->lat = lat;
	dir->nlat = n;
	pthread_mutex_unlock(&fs->table_lock);
	lower_at_free(old, oldn);
}

/* Names collected walking up the tree, deepest first. */
struct names {
	char **v;
	size_t n, cap;
};

static int names_push(struct names *s, const char *name)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char **v = realloc(s->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	if (!(s->v[s->n] = strdup(name)))
		return -ENOMEM;
	s->n++;
	return 0;
}

static void names_free(struct names *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof *s);
}

/* PREFIX (NULL: none) then the names from the top down, '/'-separated,
 * "/" when both are empty. */
static char *names_join(const char *prefix, const struct names *s)
{
	size_t len = prefix ? strlen(prefix) : 0;
	for (size_t i = 0; i < s->n; i++)
		len += strlen(s->v[i]) + 1;
	char *out = malloc(len + 2);
	if (!out)
		return NULL;
	size_t k = prefix ? (size_t)sprintf(out, "%s", prefix) : 0;
	for (size_t i = s->n; i-- > 0;)
		k += (size_t)sprintf(out + k, "/%s", s->v[i]);
	if (k == 0)
		strcpy(out, "/");
	return out;
}

/* One step down inside a layer: a directory, never through a symlink (the
 * layers are untrusted input). */
static int open_step(int dirfd, const char *name)
{
	if (!*name || !strcmp(name, ".") || !strcmp(name, "..") || strchr(name, '/'))
		return -EINVAL;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* A directory at absolute PATH ("/a/b") of a layer, one component at a time. */
static int open_in_layer(struct sfs *fs, uint32_t layer, const char *path)
{
	int fd = openat(fs->layers[layer].fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char name[NAME_MAX + 1];

	if (fd < 0)
		return -errno;
	for (const char *p = path;;) {
		while (*p == '/')
			p++;
		if (!*p)
			return fd;
		const char *e = strchrnul(p, '/');
		int nfd = -ENAMETOOLONG;
		if ((size_t)(e - p) <= NAME_MAX) {
			memcpy(name, p, (size_t)(e - p));
			name[e - p] = '\0';
			nfd = open_step(fd, name);
		}
		close(fd);
		if (nfd < 0)
			return nfd;
		fd = nfd;
		p = e;
	}
}

/* Open dir's directory in `layer` again (a new fd, the caller's). From the
 * nearest ancestor that still holds an fd for that layer (or that layer's
 * root, or an absolute place recorded for a renamed directory), one openat
 * per component: no path string, so no limit on depth. Ancestors are
 * referenced while walked: a rename elsewhere may drop them. */
static int node_open_in(struct sfs *fs, struct node *dir, uint32_t layer)
{
	struct names names = { 0 };
	struct node **held = NULL;
	size_t nheld = 0;
	char *abs = NULL;
	int base = -1, r = 0;
	bool lower = !is_upper(fs, layer);

	for (struct node *cur = dir;;) {
		pthread_mutex_lock(&fs->table_lock);
		const char *at = lower ? lower_at_of(cur, layer) : NULL;
		struct node *p = cur->parent;
		if (at && at[0] == '/') {
			abs = strdup(at);
			r = abs ? 0 : -ENOMEM;
		} else if (!p) {
			/* the root; a node cut loose from the tree has no place */
			abs = cur == fs->root ? strdup("/") : NULL;
			r = cur != fs->root ? -ENOENT : abs ? 0 : -ENOMEM;
		} else {
			struct node **h = nheld % 64 ? held : realloc(held, (nheld + 64) * sizeof *h);
			r = h ? names_push(&names, at ? at : cur->name) : -ENOMEM;
			if (h)
				held = h;
			if (r == 0) {
				p->refs++;
				held[nheld++] = p;
			}
		}
		pthread_mutex_unlock(&fs->table_lock);
		if (r < 0 || abs)
			break;
		/* does the parent hold an fd for this layer? */
		pthread_rwlock_rdlock(p->dl_lock);
		int pfd = -1;
		bool has = false;
		for (unsigned j = 0; j < p->ndl; j++)
			if (p->dl[j].layer == layer) {
				has = true;
				pfd = __atomic_load_n(&p->dl[j].fd, __ATOMIC_ACQUIRE);
				break;
			}
		if (pfd >= 0) {
			/* fds of a list are closed only under its write lock */
			base = open_step(pfd, names.v[names.n - 1]);
			free(names.v[--names.n]);
		}
		pthread_rwlock_unlock(p->dl_lock);
		if (!has)
			r = -ENOENT;   /* the parent is not in that layer (any more) */
		else if (pfd >= 0 && base < 0)
			r = base;
		if (r < 0 || pfd >= 0)
			break;
		cur = p;
	}
	if (r == 0 && abs && (base = open_in_layer(fs, layer, abs)) < 0)
		r = base;
	while (r == 0 && names.n > 0) {
		int fd = open_step(base, names.v[names.n - 1]);
		free(names.v[--names.n]);
		close(base);
		base = fd;
		if (fd < 0)
			r = fd;
	}
	names_free(&names);
	free(abs);
	for (size_t i = 0; i < nheld; i++)
		node_unref(fs, held[i]);
	free(held);
	if (r < 0 && base >= 0)
		close(base);
	return r < 0 ? r : base;
}

int node_redirect_path(struct sfs *fs, struct node *dir, char **out)
{
	struct names names = { 0 };
	char *prefix = NULL;
	int r = 0;

	pthread_mutex_lock(&fs->table_lock);
	for (struct node *c = dir; c && c != fs->root && r == 0; c = c->parent) {
		if (c->redirect && c->redirect[0] == '/') {
			r = (prefix = strdup(c->redirect)) ? 0 : -ENOMEM;
			break;
		}
		r = names_push(&names, c->redirect ? c->redirect : c->name);
	}
	pthread_mutex_unlock(&fs->table_lock);
	if (r == 0 && !(*out = names_join(prefix, &names)))
		r = -ENOMEM;
	names_free(&names);
	free(prefix);
	return r;
}

/* table_lock held: dir's place in lower layer `layer` from that layer's root */
static char *path_in_lower(struct sfs *fs, struct node *dir, uint32_t layer)
{
	struct names names = { 0 };
	const char *prefix = NULL;
	char *out = NULL;

	for (struct node *c = dir; c && c != fs->root; c = c->parent) {
		const char *at = lower_at_of(c, layer);
		if (at && at[0] == '/') {
			prefix = at;
			break;
		}
		if (names_push(&names, at ? at : c->name) < 0)
			goto out;
	}
	out = names_join(prefix && strcmp(prefix, "/") ? prefix : NULL, &names);
out:
	names_free(&names);
	return out;
}

int node_pin_lower(struct sfs *fs, struct node *dir, struct lower_at **lat, unsigned *n)
{
	unsigned k = 0;
	pthread_rwlock_rdlock(dir->dl_lock);
	struct lower_at *v = calloc(dir->ndl ? dir->ndl : 1, sizeof *v);
	for (unsigned i = 0; v && i < dir->ndl; i++)
		if (!is_upper(fs, dir->dl[i].layer))
			v[k++].layer = dir->dl[i].layer;
	pthread_rwlock_unlock(dir->dl_lock);
	if (!v)
		return -ENOMEM;
	pthread_mutex_lock(&fs->table_lock);
	for (unsigned i = 0; i < k; i++) {
		if (!(v[i].path = path_in_lower(fs, dir, v[i].layer))) {
			pthread_mutex_unlock(&fs->table_lock);
			lower_at_free(v, i);
			return -ENOMEM;
		}
	}
	pthread_mutex_unlock(&fs->table_lock);
	*lat = v;
	*n = k;
	return 0;
}

int node_dlfd(struct sfs *fs, struct node *dir, unsigned i, bool *tmp)
{
	int fd = __atomic_load_n(&dir->dl[i].fd, __ATOMIC_ACQUIRE);
	uint32_t layer = dir->dl[i].layer;

	*tmp = false;
	if (fd >= 0)
		return fd;
	if (layer_packed(fs, layer))
		return -EBADF;   /* no fd: callers read packed layers by inode (dl[i].pino) */
	fd = node_open_in(fs, dir, layer);
	if (fd < 0)
		return fd;
	if (__atomic_add_fetch(&fs->fd_used, 1, __ATOMIC_RELAXED) <= fs->fd_budget) {
		int expected = -1;
		if (__atomic_compare_exchange_n(&dir->dl[i].fd, &expected, fd, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return fd;
		close(fd);
		__atomic_fetch_sub(&fs->fd_used, 1, __ATOMIC_RELAXED);
		return expected;
	}
	__atomic_fetch_sub(&fs->fd_used, 1, __ATOMIC_RELAXED);
	*tmp = true;
	return fd;
}

int node_upperfd(struct sfs *fs, struct node *dir)
{
	bool tmp;
	if (!fs->has_upper || !dir->ndl || dir->dl[0].layer != 0)
		return -1;
	int fd = node_dlfd(fs, dir, 0, &tmp);
	if (fd >= 0 && tmp) {
		/* must be cached for callers that do not close it: force it */
		int expected = -1;
		if (__atomic_compare_exchange_n(&dir->dl[0].fd, &expected, fd, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			__atomic_fetch_add(&fs->fd_used, 1, __ATOMIC_RELAXED);
			return fd;
		}
		close(fd);
		return expected;
	}
	return fd;
}

void node_set_dlayers(struct sfs *fs, struct node *dir, struct dlayer *dl, unsigned n)
{
	if (dir == fs->root)
		root_settle(fs);  /* or it would cut the new list */
	for (unsigned i = 0; i < n; i++) {
		if (dl[i].fd < 0)
			continue;
		/* beyond the budget only the top layer keeps its fd; the others
		 * are opened again when used */
		if (i > 0 && __atomic_load_n(&fs->fd_used, __ATOMIC_RELAXED) >= fs->fd_budget) {
			close(dl[i].fd);
			dl[i].fd = -1;
			continue;
		}
		__atomic_fetch_add(&fs->fd_used, 1, __ATOMIC_RELAXED);
	}
	pthread_rwlock_wrlock(dir->dl_lock);
	struct dlayer *old = dir->dl;
	unsigned oldn = dir->ndl;
	dir->dl = dl;
	__atomic_store_n(&dir->ndl, n, __ATOMIC_RELEASE);  /* present_stat reads it unlocked */
	dir->layer = n ? dl[0].layer : 0;
	pthread_rwlock_unlock(dir->dl_lock);
	for (unsigned i = 0; i < oldn; i++)
		if (old[i].fd >= 0) {
			close(old[i].fd);
			__atomic_fetch_sub(&fs->fd_used, 1, __ATOMIC_RELAXED);
		}
	dl_free_names(old, oldn);
	free(old);
}

/* ---- locating a node's object ---------------------------------------- */

int loc_get(struct sfs *fs, struct node *n, struct loc *l)
{
	l->tmp = false;
	l->pino = 0;
	/* a directory's layer list and top layer change under its dl_lock
	 * (copy-up, rename): read them under it */
	if (S_ISDIR(n->type) && !node_deleted(n)) {
		bool tmp;
		pthread_rwlock_rdlock(n->dl_lock);
		if (!n->ndl) {
			l->layer = node_layer(n);
			pthread_rwlock_unlock(n->dl_lock);
			goto not_listed;
		}
		l->layer = n->dl[0].layer;
		if (layer_packed(fs, l->layer)) {
			l->pino = n->dl[0].pino;
			pthread_rwlock_unlock(n->dl_lock);
			l->dirfd = -1;
			strcpy(l->name, ".");
			l->nofollow = AT_SYMLINK_NOFOLLOW;
			return 0;
		}
		int fd = node_dlfd(fs, n, 0, &tmp);
		pthread_rwlock_unlock(n->dl_lock);
		if (fd < 0)
			return fd;
		l->dirfd = fd;
		l->tmp = tmp;
		strcpy(l->name, ".");
		l->nofollow = AT_SYMLINK_NOFOLLOW;
		return 0;
	}
	l->layer = node_layer(n);
not_listed:
	if (node_deleted(n) || node_detached(n) || !n->parent) {
		uint32_t pk = __atomic_load_n(&n->pk_ino, __ATOMIC_ACQUIRE);
		if (pk && n != fs->root && layer_packed(fs, l->layer)) {
			/* a packed object unlinked from the view: still there */
			l->pino = pk;
			l->dirfd = -1;
			strcpy(l->name, ".");
			l->nofollow = AT_SYMLINK_NOFOLLOW;
			return 0;
		}
		if (n == fs->root) {
			/* the root: its own directory in its top layer */
			bool tmp;
			if (layer_packed(fs, n->dl[0].layer)) {
				l->layer = n->dl[0].layer;
				l->pino = n->dl[0].pino;
				l->dirfd = -1;
				strcpy(l->name, ".");
				l->nofollow = AT_SYMLINK_NOFOLLOW;
				return 0;
			}
			int fd = node_dlfd(fs, n, 0, &tmp);
			if (fd < 0)
				return fd;
			l->dirfd = fd;
			l->tmp = tmp;
			strcpy(l->name, ".");
			l->nofollow = AT_SYMLINK_NOFOLLOW;
			return 0;
		}
		if (n->pathfd < 0)
			return -ENOENT;
		l->dirfd = AT_FDCWD;
		snprintf(l->name, sizeof l->name, "/proc/self/fd/%d", n->pathfd);
		l->nofollow = 0;
		return 0;
	}
	return loc_get_layer(fs, n, UINT32_MAX, l);
}

int loc_get_layer(struct sfs *fs, struct node *n, uint32_t layer, struct loc *l)
{
	struct node *p;
	l->tmp = false;
	l->pino = 0;
	pthread_mutex_lock(&fs->table_lock);
	p = n->parent;
	if (!p) {
		pthread_mutex_unlock(&fs->table_lock);
		return -ENOENT;
	}
	p->refs++;
	snprintf(l->name, sizeof l->name, "%s", n->name);
	if (layer == UINT32_MAX)
		layer = node_layer(n);
	l->layer = layer;
	pthread_mutex_unlock(&fs->table_lock);

	int r = -ENOENT;
	dl_rdlock(fs, p);
	for (unsigned i = 0; i < p->ndl; i++) {
		if (p->dl[i].layer != layer)
			continue;
		bool tmp;
		if (layer_packed(fs, layer)) {
			uint32_t pdir = p->dl[i].pino;
			pthread_rwlock_unlock(p->dl_lock);
			r = pk_child(fs, layer, pdir, l->name, &l->pino);
			l->dirfd = -1;
			l->nofollow = AT_SYMLINK_NOFOLLOW;
			node_unref(fs, p);
			return r;
		}
		int fd = node_dlfd(fs, p, i, &tmp);
		if (fd < 0) {
			r = fd;
			break;
		}
		l->dirfd = fd;
		l->tmp = tmp;
		l->nofollow = AT_SYMLINK_NOFOLLOW;
		r = 0;
		break;
	}
	pthread_rwlock_unlock(p->dl_lock);
	node_unref(fs, p);
	return r;
}

int pk_child(struct sfs *fs, uint32_t layer, uint32_t pino, const char *name, uint32_t *child)
{
	struct stat st;
	int r = lower_lookup(&fs->layers[layer].lo, pino, name, &st, child);
	return r < 0 ? r : r == LOWER_FOUND ? 0 : -ENOENT;
}

static const struct lower *loc_lower(struct sfs *fs, const struct loc *l, struct lref *r)
{
	r->dirfd = l->dirfd;
	r->name = l->name;
	r->ino = l->pino;
	return &fs->layers[l->layer].lo;
}

int loc_stat(struct sfs *fs, const struct loc *l, struct stat *st)
{
	struct lref r;
	const struct lower *lo = loc_lower(fs, l, &r);
	if (l->pino)
		return lower_stat(lo, &r, st);
	return fstatat(l->dirfd, l->name, st, l->nofollow) < 0 ? -errno : 0;
}

ssize_t loc_xa_get(struct sfs *fs, const struct loc *l, const char *key, void *buf, size_t sz)
{
	struct lref r;
	const struct lower *lo = loc_lower(fs, l, &r);
	if (l->pino)
		return lower_getxattr(lo, &r, key, buf, sz);
	return xa_get(l->dirfd, l->name, key, buf, sz);
}

ssize_t loc_xa_list(struct sfs *fs, const struct loc *l, char *buf, size_t sz)
{
	struct lref r;
	const struct lower *lo = loc_lower(fs, l, &r);
	if (l->pino)
		return lower_listxattr(lo, &r, buf, sz);
	return xa_list(l->dirfd, l->name, buf, sz);
}

ssize_t loc_readlink(struct sfs *fs, const struct loc *l, char *buf, size_t sz)
{
	struct lref r;
	const struct lower *lo = loc_lower(fs, l, &r);
	if (l->pino)
		return lower_readlink(lo, &r, buf, sz);
	ssize_t n = readlinkat(l->dirfd, l->name, buf, sz);
	return n < 0 ? -errno : n;
}

void loc_put(struct loc *l)
{
	if (l->tmp && l->dirfd >= 0)
		close(l->dirfd);
	l->tmp = false;
}
