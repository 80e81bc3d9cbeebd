/* node.c: the inode table. A node is what the kernel holds a nodeid for;
 * it lives while the kernel or an operation references it and is freed on
 * the last FORGET, so memory follows the kernel's cache, not the tree. */
#include "fs.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void ctab_del(struct node *n);
static void ctab_add(struct node *n);

struct node *node_new(struct node *parent, const char *name, mode_t type)
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
		node_ref(parent);
		n->parent = parent;
	}
	return n;
}

fuse_ino_t node_id(struct node *n)
{
	return n == SFS->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

struct node *node_get(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? SFS->root : (struct node *)(uintptr_t)ino;
}

static void node_free(struct node *n)
{
	for (unsigned i = 0; i < n->ndl; i++)
		if (n->dl[i].fd >= 0) {
			close(n->dl[i].fd);
			__atomic_fetch_sub(&SFS->fd_used, 1, __ATOMIC_RELAXED);
		}
	if (n->pathfd >= 0)
		close(n->pathfd);
	dl_free_names(n->dl, n->ndl);
	if (n->dcache)
		dircache_put(n->dcache);
	free(n->dl);
	free(n->redirect);
	free(n->name);
	pthread_mutex_destroy(&n->lock);
	if (n->dl_lock) {
		pthread_rwlock_destroy(n->dl_lock);
		free(n->dl_lock);
	}
	free(n);
}

void node_ref(struct node *n)
{
	pthread_mutex_lock(&SFS->table_lock);
	n->refs++;
	pthread_mutex_unlock(&SFS->table_lock);
}

/* Called with table_lock held; frees n (and walks up) when unreferenced. */
static void maybe_free_locked(struct node *n, struct node **to_free, unsigned *nfree)
{
	while (n && n != SFS->root && n->refs == 0 && n->nlookup == 0) {
		struct node *p = n->parent;
		if (n->hashed)
			node_hash_del(n);
		ctab_del(n);
		SFS->nnodes--;
		to_free[(*nfree)++] = n;
		n->parent = NULL;
		if (!p)
			break;
		p->refs--;
		n = p;
		if (*nfree >= 64)
			break;  /* the rest stays; freed on its own last reference */
	}
}

static void release_locked_and_free(struct node *n)
{
	struct node *to_free[64];
	unsigned nfree = 0;

	maybe_free_locked(n, to_free, &nfree);
	pthread_mutex_unlock(&SFS->table_lock);
	for (unsigned i = 0; i < nfree; i++)
		node_free(to_free[i]);
}

void node_unref(struct node *n)
{
	pthread_mutex_lock(&SFS->table_lock);
	n->refs--;
	release_locked_and_free(n);
}

void node_forget(struct node *n, uint64_t nlookup)
{
	pthread_mutex_lock(&SFS->table_lock);
	n->nlookup = nlookup > n->nlookup ? 0 : n->nlookup - nlookup;
	release_locked_and_free(n);
}

void node_set_name(struct node *n, struct node *parent, const char *name)
{
	char *nn = strdup(name);
	struct node *oldp;
	char *oldname;

	if (!nn)
		return;  /* keeps the old name: operations fail with ENOENT, not worse */
	node_ref(parent);
	pthread_mutex_lock(&SFS->table_lock);
	ctab_del(n);
	oldp = n->parent;
	oldname = n->name;
	n->parent = parent;
	n->name = nn;
	n->detached = false;
	if (!n->deleted)
		ctab_add(n);
	pthread_mutex_unlock(&SFS->table_lock);
	free(oldname);
	if (oldp)
		node_unref(oldp);
}

/* ---- live nodes by (parent, name): one nodeid per name --------------- */

static size_t cslot(const struct node *parent, const char *name)
{
	uint64_t h = (uint64_t)(uintptr_t)parent * 0x9E3779B97F4A7C15ULL;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 0x100000001B3ULL;
	return (size_t)(h ^ (h >> 29)) & (SFS->csize - 1);
}

/* table_lock held */
static void ctab_del(struct node *n)
{
	if (!n->in_ctab)
		return;
	struct node **pp = &SFS->ctab[cslot(n->parent, n->name)];
	for (; *pp; pp = &(*pp)->cnext)
		if (*pp == n) {
			*pp = n->cnext;
			break;
		}
	n->in_ctab = false;
	n->cnext = NULL;
}

/* table_lock held */
static void ctab_add(struct node *n)
{
	if (n->in_ctab || !n->parent)
		return;
	size_t s = cslot(n->parent, n->name);
	n->cnext = SFS->ctab[s];
	SFS->ctab[s] = n;
	n->in_ctab = true;
}

/* table_lock held by the caller */
struct node *node_child_find(struct node *parent, const char *name)
{
	for (struct node *n = SFS->ctab[cslot(parent, name)]; n; n = n->cnext)
		if (n->parent == parent && !strcmp(n->name, name) && !n->deleted && !n->detached)
			return n;
	return NULL;
}

/* table_lock held by the caller */
void node_child_add(struct node *n)
{
	ctab_add(n);
}

/* ---- hard links: one node per upper inode with several names -------- */

static size_t hslot(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ULL ^ (uint64_t)dev;
	return (size_t)(h >> 20) & (SFS->hsize - 1);
}

struct node *node_hash_find(dev_t dev, ino_t ino)
{
	for (struct node *n = SFS->htab[hslot(dev, ino)]; n; n = n->hnext)
		if (n->rdev_real == dev && n->rino_real == ino && !n->deleted)
			return n;
	return NULL;
}

void node_hash_add(struct node *n, dev_t dev, ino_t ino)
{
	if (n->hashed)
		node_hash_del(n);
	n->rdev_real = dev;
	n->rino_real = ino;
	size_t s = hslot(dev, ino);
	n->hnext = SFS->htab[s];
	SFS->htab[s] = n;
	n->hashed = true;
}

void node_hash_del(struct node *n)
{
	struct node **pp = &SFS->htab[hslot(n->rdev_real, n->rino_real)];
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
void node_keep_path(struct node *n)
{
	struct loc l;

	if (n->pathfd < 0 && !n->deleted && loc_get(n, &l) == 0) {
		int fd = openat(l.dirfd, l.name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		int expected = -1;
		if (fd >= 0 && !__atomic_compare_exchange_n(&n->pathfd, &expected, fd, false,
							    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			close(fd);
		loc_put(&l);
	}
}

void node_mark_deleted(struct node *n)
{
	if (n->deleted)
		return;
	node_keep_path(n);
	pthread_mutex_lock(&SFS->table_lock);
	n->deleted = true;
	if (n->hashed)
		node_hash_del(n);
	ctab_del(n);
	pthread_mutex_unlock(&SFS->table_lock);
}

/* One name of a hard-linked object went away, others remain: reach the
 * object through a kept fd until a lookup finds it under another name. */
void node_detach(struct node *n)
{
	struct loc l;

	if (n->pathfd < 0 && loc_get(n, &l) == 0) {
		n->pathfd = openat(l.dirfd, l.name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		loc_put(&l);
	}
	pthread_mutex_lock(&SFS->table_lock);
	ctab_del(n);
	n->detached = true;
	pthread_mutex_unlock(&SFS->table_lock);
}

void node_drop_listing(struct node *dir, struct dircache *dc)
{
	pthread_mutex_lock(&SFS->table_lock);
	bool mine = dir->dcache == dc;
	if (mine)
		dir->dcache = NULL;
	pthread_mutex_unlock(&SFS->table_lock);
	if (mine)
		dircache_put(dc);
}

void node_dir_changed(struct node *dir)
{
	struct dircache *old;
	bool kcached;

	pthread_mutex_lock(&SFS->table_lock);
	dir->version++;
	old = dir->dcache;
	dir->dcache = NULL;
	kcached = dir->kcached;
	dir->kcached = false;
	pthread_mutex_unlock(&SFS->table_lock);
	if (old)
		dircache_put(old);
	/* The kernel checks its cached listing against the directory's mtime,
	 * which two changes within one clock tick leave equal: drop it. */
	if (kcached && SFS->se)
		fuse_lowlevel_notify_inval_inode(SFS->se, node_id(dir), 0, 0);
}

/* ---- paths inside layers -------------------------------------------- */

/* Path of `n` from the root of layer `layer`, relative ("." for the root).
 * Lower layers see a renamed directory at its redirect. */
static int node_path_in(struct node *n, uint32_t layer, char *buf, size_t len)
{
	const char *parts[512];
	unsigned np = 0;
	const char *prefix = NULL;
	size_t k = 0;

	pthread_mutex_lock(&SFS->table_lock);
	for (struct node *c = n; c && c != SFS->root; c = c->parent) {
		if (!is_upper(layer) && c->redirect) {
			prefix = c->redirect;
			break;
		}
		if (np == 512) {
			pthread_mutex_unlock(&SFS->table_lock);
			return -ENAMETOOLONG;
		}
		parts[np++] = c->name;
	}
	if (prefix) {
		while (*prefix == '/')
			prefix++;
		k = snprintf(buf, len, "%s", prefix);
	}
	for (unsigned i = np; i-- > 0;) {
		int w = snprintf(buf + k, k < len ? len - k : 0, "%s%s", k ? "/" : "", parts[i]);
		k += w;
	}
	pthread_mutex_unlock(&SFS->table_lock);
	if (k >= len)
		return -ENAMETOOLONG;
	if (k == 0)
		snprintf(buf, len, ".");
	return 0;
}

int node_lower_path(struct node *n, char *buf, size_t len)
{
	/* the path lower layers know this node by: any layer index below upper */
	return node_path_in(n, SFS->has_upper ? 1 : 0, buf, len);
}

/* Open a directory inside a layer, never leaving it and never following
 * a symlink: lower layers are untrusted input. */
static int open_beneath(int rootfd, const char *path)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	int fd = (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
	return fd < 0 ? -errno : fd;
}

int node_dlfd(struct node *dir, unsigned i, bool *tmp)
{
	char path[PATH_MAX];
	int fd = __atomic_load_n(&dir->dl[i].fd, __ATOMIC_ACQUIRE);
	uint32_t layer = dir->dl[i].layer;

	*tmp = false;
	if (fd >= 0)
		return fd;
	int r = node_path_in(dir, layer, path, sizeof path);
	if (r < 0)
		return r;
	fd = open_beneath(SFS->layers[layer].fd, path);
	if (fd < 0)
		return fd;
	if (__atomic_add_fetch(&SFS->fd_used, 1, __ATOMIC_RELAXED) <= SFS->fd_budget) {
		int expected = -1;
		if (__atomic_compare_exchange_n(&dir->dl[i].fd, &expected, fd, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return fd;
		close(fd);
		__atomic_fetch_sub(&SFS->fd_used, 1, __ATOMIC_RELAXED);
		return expected;
	}
	__atomic_fetch_sub(&SFS->fd_used, 1, __ATOMIC_RELAXED);
	*tmp = true;
	return fd;
}

int node_upperfd(struct node *dir)
{
	bool tmp;
	if (!SFS->has_upper || !dir->ndl || dir->dl[0].layer != 0)
		return -1;
	int fd = node_dlfd(dir, 0, &tmp);
	if (fd >= 0 && tmp) {
		/* must be cached for callers that do not close it: force it */
		int expected = -1;
		if (__atomic_compare_exchange_n(&dir->dl[0].fd, &expected, fd, false,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			__atomic_fetch_add(&SFS->fd_used, 1, __ATOMIC_RELAXED);
			return fd;
		}
		close(fd);
		return expected;
	}
	return fd;
}

void node_set_dlayers(struct node *dir, struct dlayer *dl, unsigned n)
{
	if (dir == SFS->root)
		root_settle();  /* or it would cut the new list */
	for (unsigned i = 0; i < n; i++) {
		if (dl[i].fd < 0)
			continue;
		/* beyond the budget only the top layer keeps its fd; the others
		 * are opened again when used */
		if (i > 0 && __atomic_load_n(&SFS->fd_used, __ATOMIC_RELAXED) >= SFS->fd_budget) {
			close(dl[i].fd);
			dl[i].fd = -1;
			continue;
		}
		__atomic_fetch_add(&SFS->fd_used, 1, __ATOMIC_RELAXED);
	}
	pthread_rwlock_wrlock(dir->dl_lock);
	struct dlayer *old = dir->dl;
	unsigned oldn = dir->ndl;
	dir->dl = dl;
	dir->ndl = n;
	dir->layer = n ? dl[0].layer : 0;
	pthread_rwlock_unlock(dir->dl_lock);
	for (unsigned i = 0; i < oldn; i++)
		if (old[i].fd >= 0) {
			close(old[i].fd);
			__atomic_fetch_sub(&SFS->fd_used, 1, __ATOMIC_RELAXED);
		}
	dl_free_names(old, oldn);
	free(old);
}

/* ---- locating a node's object ---------------------------------------- */

int loc_get(struct node *n, struct loc *l)
{
	l->tmp = false;
	l->layer = n->layer;
	if (S_ISDIR(n->type) && !n->deleted && n->ndl) {
		bool tmp;
		pthread_rwlock_rdlock(n->dl_lock);
		l->layer = n->dl[0].layer;
		int fd = node_dlfd(n, 0, &tmp);
		pthread_rwlock_unlock(n->dl_lock);
		if (fd < 0)
			return fd;
		l->dirfd = fd;
		l->tmp = tmp;
		strcpy(l->name, ".");
		l->nofollow = AT_SYMLINK_NOFOLLOW;
		return 0;
	}
	if (n->deleted || n->detached || !n->parent) {
		if (n == SFS->root) {
			/* the root: its own directory in its top layer */
			bool tmp;
			int fd = node_dlfd(n, 0, &tmp);
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
	return loc_get_layer(n, UINT32_MAX, l);
}

int loc_get_layer(struct node *n, uint32_t layer, struct loc *l)
{
	struct node *p;
	l->tmp = false;
	pthread_mutex_lock(&SFS->table_lock);
	p = n->parent;
	if (!p) {
		pthread_mutex_unlock(&SFS->table_lock);
		return -ENOENT;
	}
	p->refs++;
	snprintf(l->name, sizeof l->name, "%s", n->name);
	if (layer == UINT32_MAX)
		layer = n->layer;
	l->layer = layer;
	pthread_mutex_unlock(&SFS->table_lock);

	int r = -ENOENT;
	dl_rdlock(p);
	for (unsigned i = 0; i < p->ndl; i++) {
		if (p->dl[i].layer != layer)
			continue;
		bool tmp;
		int fd = node_dlfd(p, i, &tmp);
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
	node_unref(p);
	return r;
}

void loc_put(struct loc *l)
{
	if (l->tmp && l->dirfd >= 0)
		close(l->dirfd);
	l->tmp = false;
}
