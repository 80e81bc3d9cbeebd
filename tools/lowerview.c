#include "lowerview.h"

#include "err.h"
#include "fsutil.h"
#include "io.h"
#include "packed.h"
#include "pkstore.h"
#include "store.h"
#include "whiteout.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

/* Packed layers of a view, read through pk_* (top first, as fds). */
struct lower_packed {
	struct store *s;
	char **diffids;           /* to unpack a layer when lower_fd asks */
	struct pk_layer **l;      /* NULL for a directory layer */
};

int lower_layer_open(struct store *s, const char *diffid, int *fd, struct pk_layer **pk)
{
	char rel[128];
	*fd = -1;
	*pk = NULL;
	if (!digest_valid(diffid))
		return -EINVAL;
	/* A directory layer (stored or pending) is read as a tree, as before. */
	if (store_layer_relpath(s, diffid, rel, sizeof rel - 8) == 0) {
		strcat(rel, "/diff");
		int d = openat(s->fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (d >= 0) {
			*fd = d;
			return 0;
		}
	}
	if (pkstore_layer_is_packed(s, diffid) == 1) {
		char p[PATH_MAX];
		_cleanup_free_ char *chunks = pkstore_chunks(s);
		if (!chunks)
			return -ENOMEM;
		snprintf(p, sizeof p, "%s/layers/%s/layer.pk", s->root, digest_hex(diffid));
		return pk_open(p, chunks, NULL, pk);
	}
	int d = store_layer_dirfd(s, diffid);
	if (d < 0)
		return d;
	*fd = d;
	return 0;
}

static int view_open(struct store *s, json_t *ids, struct lowerview *lv, bool packed)
{
	size_t n = json_array_size(ids);
	lv->n = 0;
	lv->pk = NULL;
	lv->fds = calloc(n + 1, sizeof *lv->fds);
	if (!lv->fds)
		return -ENOMEM;
	if (packed) {
		lv->pk = calloc(1, sizeof *lv->pk);
		if (lv->pk) {
			lv->pk->s = s;
			lv->pk->diffids = calloc(n + 1, sizeof *lv->pk->diffids);
			lv->pk->l = calloc(n + 1, sizeof *lv->pk->l);
		}
		if (!lv->pk || !lv->pk->diffids || !lv->pk->l) {
			lowerview_close(lv);
			return -ENOMEM;
		}
	}
	for (size_t i = n; i-- > 0;) {
		const char *d = json_string_value(json_array_get(ids, i));
		int fd = -1, r;
		if (packed) {
			r = lower_layer_open(s, d, &fd, &lv->pk->l[lv->n]);
			if (r == 0 && !(lv->pk->diffids[lv->n] = strdup(d)))
				r = -ENOMEM;
		} else {
			r = fd = store_layer_dirfd(s, d);
		}
		if (r < 0) {
			serr(r, "open layer", d, "the store is damaged; import the image again");
			lv->fds[lv->n++] = fd;
			lowerview_close(lv);
			return r;
		}
		lv->fds[lv->n++] = fd;
	}
	return 0;
}

int lowerview_open(struct store *s, json_t *ids, struct lowerview *lv)
{
	return view_open(s, ids, lv, false);
}

int lowerview_open_packed(struct store *s, json_t *ids, struct lowerview *lv)
{
	return view_open(s, ids, lv, true);
}

void lowerview_close(struct lowerview *lv)
{
	for (size_t i = 0; i < lv->n; i++) {
		if (lv->fds[i] >= 0)
			close(lv->fds[i]);
		if (lv->pk) {
			if (lv->pk->l[i])
				pk_close(lv->pk->l[i]);
			free(lv->pk->diffids[i]);
		}
	}
	if (lv->pk) {
		free(lv->pk->l);
		free(lv->pk->diffids);
		free(lv->pk);
	}
	free(lv->fds);
	lv->fds = NULL;
	lv->pk = NULL;
	lv->n = 0;
}

static struct pk_layer *pk_of(const struct lowerview *lv, size_t layer)
{
	return lv->pk ? lv->pk->l[layer] : NULL;
}

int lower_fd(const struct lowerview *lv, size_t layer)
{
	if (layer >= lv->n)
		return -EINVAL;
	if (lv->fds[layer] >= 0 || !pk_of(lv, layer))
		return lv->fds[layer];
	/* What reads a tree through fds (a renamed directory copied whole by
	 * commit) gets the packed layer unpacked once, for this command. */
	int fd = pkstore_layer_tree(lv->pk->s, lv->pk->diffids[layer]);
	if (fd < 0) {
		serr(fd, "unpack layer", lv->pk->diffids[layer], "the store is damaged; `strata system check` tells more");
		return fd;
	}
	lv->fds[layer] = fd;
	return fd;
}

void lower_pk_stat(const struct pk_attr *a, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_nlink = a->nlink;
	st->st_rdev = a->rdev;
	st->st_size = S_ISDIR(a->mode) ? 4096 : (off_t)a->size;
	st->st_mtim = a->mtime;
	st->st_atim = a->atime;
	st->st_ctim = a->mtime;
}

int lower_pk_resolve(const struct pk_layer *l, const char *path, uint32_t *ino)
{
	uint32_t cur = pk_root(l);
	const char *p = path;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		if (len) {
			struct pk_attr a;
			struct pk_dirent e;
			int r = pk_getattr(l, cur, &a);
			if (r < 0)
				return r;
			if (!S_ISDIR(a.mode))
				return -ENOTDIR;
			r = pk_lookup(l, cur, p, len, &e);
			if (r < 0)
				return r;
			if (r != PK_FOUND)
				return -ENOENT;
			cur = e.ino;
		}
		p += len;
		while (*p == '/')
			p++;
	}
	*ino = cur;
	return 0;
}

int lower_stat(const struct lowerview *lv, size_t layer, const char *path, struct stat *st)
{
	struct pk_layer *l = pk_of(lv, layer);
	if (l) {
		uint32_t ino;
		struct pk_attr a;
		int r = lower_pk_resolve(l, path, &ino);
		if (r == 0 && (r = pk_getattr(l, ino, &a)) == 0)
			lower_pk_stat(&a, st);
		return r;
	}
	if (layer >= lv->n || lv->fds[layer] < 0)
		return -EINVAL;
	int r = *path ? fstatat(lv->fds[layer], path, st, AT_SYMLINK_NOFOLLOW) : fstat(lv->fds[layer], st);
	return r < 0 ? -errno : 0;
}

ssize_t lower_getxattr(const struct lowerview *lv, size_t layer, const char *path, const char *name,
		       void *buf, size_t size)
{
	struct pk_layer *l = pk_of(lv, layer);
	if (l) {
		uint32_t ino;
		int r = lower_pk_resolve(l, path, &ino);
		return r < 0 ? r : pk_getxattr(l, ino, name, buf, size);
	}
	if (layer >= lv->n || lv->fds[layer] < 0)
		return -EINVAL;
	_cleanup_close_ int fd = open_beneath(lv->fds[layer], path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
	if (fd < 0)
		return fd;
	ssize_t n = fgetxattr(fd, name, buf, size);
	return n < 0 ? -errno : n;
}

int lower_open_file(const struct lowerview *lv, size_t layer, const char *path)
{
	struct pk_layer *l = pk_of(lv, layer);
	if (!l) {
		if (layer >= lv->n || lv->fds[layer] < 0)
			return -EINVAL;
		return open_beneath(lv->fds[layer], path, O_RDONLY | O_NOFOLLOW, 0);
	}
	uint32_t ino;
	struct pk_attr a;
	int r = lower_pk_resolve(l, path, &ino);
	if (r < 0 || (r = pk_getattr(l, ino, &a)) < 0)
		return r;
	if (!S_ISREG(a.mode))
		return -ELOOP;   /* what open(O_NOFOLLOW) of a non-file would give a reader here */
	/* An unnamed file in the store's tmp/ (the data may be large; memory
	 * only where the store's file system has no O_TMPFILE). */
	_cleanup_close_ int fd = openat(lv->pk->s->fd, "tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && (fd = memfd_create("strata-lower", MFD_CLOEXEC)) < 0)
		return -errno;
	_cleanup_free_ char *buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < a.size;) {
		size_t want = a.size - off < (1 << 20) ? (size_t)(a.size - off) : (size_t)1 << 20;
		ssize_t n = pk_read(l, ino, off, want, buf);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		if ((r = io_write_full(fd, buf, (size_t)n, -1)) < 0)
			return r;
		off += (uint64_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	int out = fd;
	fd = -1;
	return out;
}

/* ---- one layer's answer ---- */

/* In a directory layer: 1 found, 0 absent (look below), -1 hidden (stop). */
static int in_dir_layer(int rootfd, const char *path)
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

/* The same in a packed layer, with the merge rules of pk_lookup (either
 * whiteout encoding, every opaque marker); *ino: the object found. */
static int in_pk_layer(const struct pk_layer *l, const char *path, uint32_t *ino)
{
	uint32_t cur = pk_root(l);
	const char *p = path;
	while (*p == '/')
		p++;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t len = slash ? (size_t)(slash - p) : strlen(p);
		struct pk_dirent e;
		int r = pk_lookup(l, cur, p, len, &e);
		if (r < 0 || r == PK_WHITEOUT)
			return -1;
		if (r == PK_ABSENT)
			return pk_is_opaque(l, cur) > 0 ? -1 : 0;
		cur = e.ino;
		p += len;
		while (*p == '/')
			p++;
		if (*p) {
			struct pk_attr a;
			if (pk_getattr(l, cur, &a) < 0 || !S_ISDIR(a.mode))
				return -1;    /* a non-directory here shadows the rest */
		}
	}
	*ino = cur;
	return 1;
}

static int in_layer(const struct lowerview *lv, size_t layer, const char *path, uint32_t *ino)
{
	struct pk_layer *l = pk_of(lv, layer);
	return l ? in_pk_layer(l, path, ino) : in_dir_layer(lv->fds[layer], path);
}

bool lower_lookup(const struct lowerview *lv, size_t start, const char *path, size_t *layer)
{
	for (size_t l = start; l < lv->n; l++) {
		uint32_t ino;
		int r = in_layer(lv, l, path, &ino);
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

struct cands {
	struct cand *v;
	size_t n, cap;
};

static int add_cand(struct cands *c, const char *name, size_t len, size_t layer, bool whiteout)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct cand *nv = realloc(c->v, cap * sizeof *nv);
		if (!nv)
			return -ENOMEM;
		c->v = nv;
		c->cap = cap;
	}
	if (!(c->v[c->n].name = strndup(name, len)))
		return -ENOMEM;
	c->v[c->n].layer = layer;
	c->v[c->n].whiteout = whiteout;
	c->n++;
	return 0;
}

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	int r = strcmp(x->name, y->name);
	if (r)
		return r;
	return x->layer < y->layer ? -1 : x->layer > y->layer;
}

/* Layer l's names of directory path: 1 when it is opaque (stop), 0 to go
 * on below, -1 when nothing below counts, -errno. */
static int gather_dir(const struct lowerview *lv, size_t l, const char *path, struct cands *c)
{
	int dfd = open_beneath(lv->fds[l], path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (dfd < 0)
		return -1;    /* a non-directory: nothing under it */
	char **names;
	size_t k;
	int r = list_sorted(dfd, &names, &k);
	if (r < 0) {
		close(dfd);
		return -1;
	}
	for (size_t i = 0; i < k && r == 0; i++) {
		struct stat sb;
		const char *target;
		if (fstatat(dfd, names[i], &sb, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		enum wh_kind kind = wh_classify(names[i], &sb, &target);
		if (kind == WH_OPQ || kind == WH_RESERVED)
			continue;
		const char *nm = kind == WH_OCI ? target : names[i];
		r = add_cand(c, nm, strlen(nm), l, kind != WH_NONE);
	}
	free_names(names, k);
	bool opaque = wh_dir_is_opaque(dfd, true) > 0;
	close(dfd);
	return r < 0 ? r : opaque;
}

static int gather_pk(const struct pk_layer *pl, uint32_t dir, size_t l, struct cands *c)
{
	struct pk_attr a;
	if (pk_getattr(pl, dir, &a) < 0 || !S_ISDIR(a.mode))
		return -1;
	struct pk_dirent e;
	int r;
	for (uint64_t off = 0; (r = pk_readdir(pl, dir, off, &e)) > 0; off++) {
		/* Hidden entries are bookkeeping (opaque markers, a ".wh.NAME"
		 * beside the NAME that replaced it): never names of the view. */
		if (e.kind == PK_ENT_HIDDEN)
			continue;
		if ((r = add_cand(c, e.name, e.name_len, l, e.kind == PK_ENT_WHITEOUT)) < 0)
			return r;
	}
	if (r < 0)
		return -1;
	return pk_is_opaque(pl, dir) > 0;
}

int lower_list(const struct lowerview *lv, size_t start, const char *path,
	       struct lower_entry **out, size_t *n)
{
	struct cands c = { 0 };
	int r = 0;

	/* Gather every name of every layer down to an opaque one, then keep
	 * for each name its top-most occurrence, unless that is a whiteout. */
	for (size_t l = start; l < lv->n; l++) {
		uint32_t ino = 0;
		int st = in_layer(lv, l, path, &ino);
		if (st < 0)
			break;
		if (st == 0)
			continue;
		struct pk_layer *pl = pk_of(lv, l);
		int g = pl ? gather_pk(pl, ino, l, &c) : gather_dir(lv, l, path, &c);
		if (g == -ENOMEM) {
			r = g;
			break;
		}
		if (g != 0)
			break;
	}
	if (c.n)
		qsort(c.v, c.n, sizeof *c.v, cmp_cand);
	struct lower_entry *e = calloc(c.n + 1, sizeof *e);
	size_t cnt = 0;
	for (size_t i = 0; i < c.n; i++) {
		bool first = i == 0 || strcmp(c.v[i - 1].name, c.v[i].name);
		if (e && r == 0 && first && !c.v[i].whiteout) {
			e[cnt].name = c.v[i].name;
			e[cnt].layer = c.v[i].layer;
			cnt++;
		} else {
			free(c.v[i].name);
		}
	}
	free(c.v);
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
