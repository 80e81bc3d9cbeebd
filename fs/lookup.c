/* lookup.c: find a name through the layer stack (overlayfs's namei): the
 * topmost layer that has the name decides; whiteouts end the search;
 * directories merge with the same directory in the layers below until one
 * is opaque or a non-directory hides the rest.
 *
 * A directory renamed in a layer carries overlay.redirect, where the layers
 * below hold it: a bare name (in its parent's directory there) or a path
 * from their roots. Redirects are followed in every layer, as kernel
 * overlayfs follows them (redirect_dir=on or follow): what the layers below
 * are asked for changes from there on, and after an absolute one the search
 * goes on from the root's layers, one component at a time, with whiteouts,
 * opaque directories and redirects met on the way applied as on any lookup.
 * Where each lower layer held the directory is kept with its node
 * (struct lower_at), for opening it again later. */
#include "fs.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void lookup_res_free(struct lookup_res *res)
{
	for (unsigned i = 0; i < res->ndl; i++)
		if (res->dl[i].fd >= 0)
			close(res->dl[i].fd);
	free(res->dl);
	free(res->redirect);
	lower_at_free(res->lat, res->nlat);
	res->dl = NULL;
	res->ndl = 0;
	res->redirect = NULL;
	res->lat = NULL;
	res->nlat = 0;
}

static int oci_whiteout_in(int dirfd, const char *name)
{
	char wh[WH_PREFIX_LEN + NAME_MAX + 1];
	struct stat st;

	if (snprintf(wh, sizeof wh, WH_PREFIX "%s", name) >= (int)sizeof wh || strlen(wh) > NAME_MAX)
		return 0;
	return fstatat(dirfd, wh, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int add_dl(struct lookup_res *res, uint32_t layer, int fd, uint32_t pino)
{
	struct dlayer *n = realloc(res->dl, (res->ndl + 1) * sizeof *n);
	if (!n) {
		close(fd);
		return -ENOMEM;
	}
	res->dl = n;
	res->dl[res->ndl].layer = layer;
	res->dl[res->ndl].fd = fd;
	res->dl[res->ndl].pino = pino;
	res->dl[res->ndl].names = NULL;
	res->ndl++;
	return 0;
}

static int open_subdir(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* A directory found in a layer above the bottom: does it end the merge? */
static int dir_stops_merge(int fd, int parentfd, const char *name)
{
	int r = wh_dir_is_opaque(fd, true);
	if (r != 0)
		return r;
	/* OCI: ".wh.NAME" beside a re-created NAME in the same layer deletes
	 * the lower NAME before adding this one: an opaque directory. */
	return oci_whiteout_in(parentfd, name);
}

static void upper_file_marks(struct sfs *fs, struct lookup_res *res, int dirfd, const char *name)
{
	char list[4096], buf[64];

	if (!S_ISREG(res->st.st_mode) && !fs->privileged) {
		uint64_t ino = origin_in_parent_get(dirfd, name);
		if (ino)
			res->ino = ino;
		return;
	}
	ssize_t n = xa_list(dirfd, name, list, sizeof list);
	bool has_origin = false;

	/* one listxattr answers both questions for the common upper file
	 * that carries no xattrs at all */
	if (n == 0 || (n < 0 && n != -ERANGE))
		return;
	if (n < 0) {
		has_origin = true;   /* too many to list here: ask directly */
		res->metacopy = S_ISREG(res->st.st_mode) &&
			xa_get(dirfd, name, wh_xattr_metacopy(&fs->whp), buf, sizeof buf) >= 0;
	} else {
		for (char *k = list; k < list + n; k += strlen(k) + 1) {
			if (S_ISREG(res->st.st_mode) && !strcmp(k, wh_xattr_metacopy(&fs->whp)))
				res->metacopy = true;
			else if (!strcmp(k, fs->xa_origin))
				has_origin = true;
		}
	}
	if (!has_origin)
		return;
	n = xa_get(dirfd, name, fs->xa_origin, buf, sizeof buf - 1);
	if (n > 0) {
		buf[n] = '\0';
		char *end;
		unsigned long long v = strtoull(buf, &end, 16);
		if (*end == '\0' && v)
			res->ino = v;
	}
}

enum { ASK_LAYER, ABSENT, HIDDEN };

/* What a listed lower directory already says about NAME from memory:
 * ABSENT (look further down), HIDDEN (an OCI whiteout ends the search), or
 * ASK_LAYER when it holds the name or has not been listed yet. */
static int known_absence(struct node *dir, unsigned i, const char *name)
{
	if (dl_has(dir, i, name) != 0)
		return ASK_LAYER;
	char wh[WH_PREFIX_LEN + NAME_MAX + 1];
	snprintf(wh, sizeof wh, WH_PREFIX "%s", name);
	return dl_has(dir, i, wh) == 1 ? HIDDEN : ABSENT;
}

/* One lookup on its way down the layers (the kernel's ovl_lookup_data). */
struct walk {
	/* what the next layer is asked for: a name in the merged directory's
	 * directory there, or "/a/b" from the layer's root */
	char loc[PATH_MAX];
	bool stop;            /* the layers below contribute nothing */
	bool is_dir;          /* a directory is found: only directories merge */
	bool redirected;      /* loc comes from a redirect */
	char *upper_redirect; /* the upper directory's redirect, as stored */
};

/* A redirect on a directory met in `layer`, whose component and all that
 * follows it in w->loc is TAIL long, POST being what follows: the layers
 * below hold it elsewhere. 0 (w->loc rewritten, or no redirect), or -errno:
 * -EINVAL for a malformed one, as kernel overlayfs. */
static int follow_redirect(struct sfs *fs, struct walk *w, int fd, uint32_t pino, uint32_t layer, size_t tail,
			   const char *post)
{
	char red[PATH_MAX], loc[PATH_MAX];
	struct lref lr = { .dirfd = fd, .name = ".", .ino = pino };
	ssize_t n = lower_getxattr(&fs->layers[layer].lo, &lr, wh_xattr_redirect(&fs->whp), red,
				   sizeof red - 1);

	if (n == -ENODATA || n == -ENOTSUP)
		return 0;
	if (n == -ERANGE)
		return -ENAMETOOLONG;
	if (n < 0)
		return (int)n;
	red[n] = '\0';
	if (red[0] == '/') {
		/* no empty component: "//", a trailing '/', "/" itself */
		for (const char *p = red; *p; p++)
			if (p[0] == '/' && (p[1] == '/' || p[1] == '\0'))
				return -EINVAL;
	} else if (!red[0] || strchr(red, '/')) {
		return -EINVAL;
	}
	if (is_upper(fs, layer) && !post[0] && !(w->upper_redirect = strdup(red)))
		return -ENOMEM;
	size_t keep = strlen(w->loc) - tail;
	int k;
	if (red[0] == '/') {
		k = snprintf(loc, sizeof loc, "%s%s", red, post);
		/* below an opaque directory on the way, an absolute redirect
		 * still leads on */
		w->stop = false;
	} else {
		k = snprintf(loc, sizeof loc, "%.*s%s%s", (int)keep, w->loc, red, post);
	}
	if (k >= (int)sizeof loc)
		return -ENAMETOOLONG;
	memcpy(w->loc, loc, (size_t)k + 1);
	w->redirected = true;
	return 0;
}

/* Component COMP of directory DIRFD in LAYER; FINAL: the object looked up,
 * else a directory on an absolute walk; TAIL, POST: as follow_redirect().
 * 1 found (*fdp: the directory opened, or -1 for a non-directory in *st),
 * 0 nothing here (w->stop set where that hides the layers below), -errno. */
static int look_step(struct sfs *fs, struct walk *w, int dirfd, const char *comp, uint32_t layer, bool final,
		     size_t tail, const char *post, struct stat *st, int *fdp)
{
	/* nothing below the bottom layer: no marker to ask for */
	bool bottom = layer + 1 >= fs->nlayers;

	*fdp = -1;
	if (strlen(comp) > NAME_MAX)
		return 0;
	if (!strcmp(comp, ".") || !strcmp(comp, ".."))
		return -EACCES;   /* only a redirect names them; the kernel refuses too */
	if (fstatat(dirfd, comp, st, AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		if (e != ENOENT && e != ENOTDIR)
			return -e;
		/* a whiteout in the bottom layer would hide nothing */
		if (!bottom && oci_whiteout_in(dirfd, comp))
			w->stop = true;
		return 0;
	}
	if (wh_is_chardev(st)) {
		w->stop = true;
		return 0;
	}
	if (!S_ISDIR(st->st_mode)) {
		w->stop = true;   /* hides what is below; on the way, ends the walk */
		return final && !w->is_dir;
	}
	int fd = open_subdir(dirfd, comp);
	if (fd < 0 && final && w->is_dir) {
		w->stop = true;   /* a lower part that cannot be read ends the merge */
		return 0;
	}
	if (fd < 0)
		return fd;
	/* opaque (or unknown: the layers below stay out): its redirect, if
	 * any, does not count */
	int r = bottom ? 0 : dir_stops_merge(fd, dirfd, comp);
	if (r != 0) {
		w->stop = true;
	} else if (!bottom && (r = follow_redirect(fs, w, fd, 0, layer, tail, post)) < 0) {
		close(fd);
		return r;
	}
	*fdp = fd;
	return 1;
}

/* look_step(fs) in a packed layer: DIR is the directory's inode there, *pinop
 * the inode of a directory found (0 for none). */
static int look_step_pk(struct sfs *fs, struct walk *w, uint32_t dir, const char *comp, uint32_t layer, bool final,
			size_t tail, const char *post, struct stat *st, uint32_t *pinop)
{
	const struct lower *lo = &fs->layers[layer].lo;
	bool bottom = layer + 1 >= fs->nlayers;
	uint32_t child;

	*pinop = 0;
	if (strlen(comp) > NAME_MAX)
		return 0;
	if (!strcmp(comp, ".") || !strcmp(comp, ".."))
		return -EACCES;
	int r = lower_lookup(lo, dir, comp, st, &child);
	if (r < 0)
		return r;
	if (r == LOWER_WHITEOUT) {
		w->stop = true;
		return 0;
	}
	if (r == LOWER_ABSENT)
		return 0;
	if (!S_ISDIR(st->st_mode)) {
		w->stop = true;
		return final && !w->is_dir;
	}
	r = bottom ? 0 : lower_opaque(lo, child);
	if (r != 0) {
		if (r < 0)
			return r;
		w->stop = true;
	} else if (!bottom && (r = follow_redirect(fs, w, -1, child, layer, tail, post)) < 0) {
		return r;
	}
	*pinop = child;
	return 1;
}

/* look_layer(fs) in a packed layer: BASE is the directory's inode for a
 * name; the layer's root for a path. */
static int look_layer_pk(struct sfs *fs, struct walk *w, uint32_t base, uint32_t layer, struct stat *st, uint32_t *pinop)
{
	char here[PATH_MAX], comp[NAME_MAX + 1];
	uint32_t cur = base;

	memcpy(here, w->loc, strlen(w->loc) + 1);
	if (here[0] != '/')
		return look_step_pk(fs, w, base, here, layer, true, strlen(here), "", st, pinop);
	for (const char *p = here + 1;;) {
		const char *e = strchrnul(p, '/');
		bool final = !*e;
		uint32_t next = 0;
		int r = 0;
		if ((size_t)(e - p) <= NAME_MAX) {
			memcpy(comp, p, (size_t)(e - p));
			comp[e - p] = '\0';
			r = look_step_pk(fs, w, cur, comp, layer, final, strlen(p), e, st, &next);
		}
		if (r <= 0 || final) {
			*pinop = r > 0 ? next : 0;
			return r;
		}
		cur = next;
		p = e + 1;
	}
}

/* The walk's location in one layer: BASE is the merged directory's directory
 * there for a name, the layer's root for a path. As look_step(). */
static int look_layer(struct sfs *fs, struct walk *w, int base, uint32_t layer, struct stat *st, int *fdp)
{
	char here[PATH_MAX], comp[NAME_MAX + 1];
	int cur = base;

	/* the walk goes by this layer's path; a redirect met on the way
	 * changes what the layers below are asked for */
	memcpy(here, w->loc, strlen(w->loc) + 1);
	if (here[0] != '/')
		return look_step(fs, w, base, here, layer, true, strlen(here), "", st, fdp);
	for (const char *p = here + 1;;) {
		const char *e = strchrnul(p, '/');
		bool final = !*e;
		int fd, r = 0;
		if ((size_t)(e - p) > NAME_MAX) {
			r = 0;   /* no such name, as the kernel's ENAMETOOLONG */
		} else {
			memcpy(comp, p, (size_t)(e - p));
			comp[e - p] = '\0';
			r = look_step(fs, w, cur, comp, layer, final, strlen(p), e, st, &fd);
		}
		if (cur != base)
			close(cur);
		if (r <= 0 || final) {
			*fdp = r > 0 ? fd : -1;
			return r;
		}
		cur = fd;
		p = e + 1;
	}
}

static int add_lower_at(struct lookup_res *res, uint32_t layer, const char *at)
{
	struct lower_at *n = realloc(res->lat, (res->nlat + 1) * sizeof *n);
	if (!n)
		return -ENOMEM;
	res->lat = n;
	if (!(n[res->nlat].path = strdup(at)))
		return -ENOMEM;
	n[res->nlat++].layer = layer;
	return 0;
}

/* The data of a metacopy upper file: in the first lower layer below that
 * has a regular file at its name. dl_lock of dir held. */
static void find_metacopy_data(struct sfs *fs, struct node *dir, const char *name, struct lookup_res *res)
{
	for (unsigned j = 0; j < dir->ndl; j++) {
		bool tmp;
		struct stat ls;
		if (is_upper(fs, dir->dl[j].layer))
			continue;
		int ok;
		if (layer_packed(fs, dir->dl[j].layer)) {
			uint32_t child;
			int f = lower_lookup(&fs->layers[dir->dl[j].layer].lo, dir->dl[j].pino, name, &ls, &child);
			if (f < 0 || f == LOWER_WHITEOUT)
				break;
			ok = f == LOWER_FOUND;
		} else {
			int fd = node_dlfd(fs, dir, j, &tmp);
			if (fd < 0)
				break;
			ok = fstatat(fd, name, &ls, AT_SYMLINK_NOFOLLOW) == 0;
			if (tmp)
				close(fd);
		}
		if (ok && S_ISREG(ls.st_mode))
			res->data_layer = dir->dl[j].layer;
		if (ok)
			break;
	}
	if (res->data_layer < 0)
		res->metacopy = false;  /* data lost: show the upper as is */
}

/* Where the walk goes next after layer `layer`: the next of the merged
 * directory's layers for a name; the next of the root's for a path (the
 * root's dl_lock is then taken once, *root_locked). -1: none. */
static int next_layer(struct sfs *fs, struct node *dir, const struct walk *w, uint32_t layer, struct node **stack,
		      bool *root_locked)
{
	if (w->loc[0] == '/' && *stack != fs->root) {
		if (dir != fs->root) {
			/* the root settled before any node below it existed */
			pthread_rwlock_rdlock(fs->root->dl_lock);
			*root_locked = true;
		}
		*stack = fs->root;
	}
	struct node *s = *stack;
	for (unsigned i = 0; i < s->ndl; i++)
		if (s->dl[i].layer > layer)
			return (int)i;
	return -1;
}

int lookup_name(struct sfs *fs, struct node *dir, const char *name, struct lookup_res *res)
{
	struct walk w;   /* (not zeroed whole: loc is large, and written first) */
	struct node *stack = dir;   /* whose layer list the walk follows */
	bool found = false, root_locked = false;
	int r = 0;

	memset(res, 0, sizeof *res);
	res->data_layer = -1;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!strncmp(name, WH_PREFIX, WH_PREFIX_LEN))
		return -ENOENT;   /* whiteout bookkeeping never shows */
	strcpy(w.loc, name);
	w.stop = w.is_dir = w.redirected = false;
	w.upper_redirect = NULL;

	dl_rdlock(fs, dir);
	for (int i = dir->ndl ? 0 : -1; i >= 0 && !w.stop;) {
		uint32_t layer = stack->dl[i].layer;
		bool by_name = w.loc[0] != '/', tmp = false;
		bool pk = layer_packed(fs, layer);
		int base = fs->layers[layer].fd;
		uint32_t pbase = pk ? lower_root(&fs->layers[layer].lo) : 0, pino = 0;
		char at[PATH_MAX];

		if (w.redirected && fs->opts.redirect_dir == REDIRECT_NOFOLLOW) {
			r = -EPERM;   /* a redirect to follow, told not to */
			break;
		}
		if (by_name) {
			int known = known_absence(dir, (unsigned)i, w.loc);
			if (known == HIDDEN)
				break;
			if (known == ABSENT) {
				i = next_layer(fs, dir, &w, layer, &stack, &root_locked);
				continue;
			}
			if (pk)
				pbase = dir->dl[i].pino;
			else if ((base = node_dlfd(fs, dir, (unsigned)i, &tmp)) < 0) {
				r = base;
				break;
			}
		}
		memcpy(at, w.loc, strlen(w.loc) + 1);
		struct stat st;
		int fd = -1, f;
		if (pk) {
			f = look_layer_pk(fs, &w, pbase, layer, &st, &pino);
		} else {
			f = look_layer(fs, &w, base, layer, &st, &fd);
		}
		bool isdir = pk ? pino != 0 : fd >= 0;
		if (f > 0 && !found) {
			found = true;
			res->st = st;
			res->layer = layer;
			res->ino = layer_ino(fs, layer, &st);
			w.is_dir = isdir;
			if (!isdir && is_upper(fs, layer))
				upper_file_marks(fs, res, base, name);
		}
		if (tmp)
			close(base);
		if (f < 0) {
			r = f;
			break;
		}
		if (f > 0 && !isdir)
			break;   /* a non-directory: it alone is the answer */
		if (f > 0) {
			if (!is_upper(fs, layer) && strcmp(at, name) && (r = add_lower_at(res, layer, at)) < 0) {
				if (fd >= 0)
					close(fd);
				break;
			}
			if ((r = add_dl(res, layer, fd, pino)) < 0)
				break;
		}
		i = next_layer(fs, dir, &w, layer, &stack, &root_locked);
	}
	if (r == 0 && res->metacopy)
		find_metacopy_data(fs, dir, name, res);
	if (root_locked)
		pthread_rwlock_unlock(fs->root->dl_lock);
	pthread_rwlock_unlock(dir->dl_lock);
	res->redirect = w.upper_redirect;
	if (r < 0) {
		lookup_res_free(res);
		return r;
	}
	if (!found)
		return -ENOENT;
	if (S_ISDIR(res->st.st_mode)) {
		/* Stable across copy-up and rename: the topmost lower's number. */
		for (unsigned i = 0; i < res->ndl; i++)
			if (!is_upper(fs, res->dl[i].layer)) {
				struct stat ls;
				struct lref lr = { .dirfd = res->dl[i].fd, .name = ".", .ino = res->dl[i].pino };
				if (lower_stat(&fs->layers[res->dl[i].layer].lo, &lr, &ls) == 0)
					res->ino = layer_ino(fs, res->dl[i].layer, &ls);
				break;
			}
	}
	return 0;
}

int name_in_lowers(struct sfs *fs, struct node *dir, const char *name)
{
	int r = 0;

	dl_rdlock(fs, dir);
	for (unsigned i = 0; i < dir->ndl; i++) {
		uint32_t layer = dir->dl[i].layer;
		struct stat st;
		bool tmp;

		if (is_upper(fs, layer))
			continue;
		int known = known_absence(dir, i, name);
		if (known == ABSENT)
			continue;
		if (known == HIDDEN)
			break;
		if (layer_packed(fs, layer)) {
			uint32_t child;
			int f = lower_lookup(&fs->layers[layer].lo, dir->dl[i].pino, name, &st, &child);
			if (f < 0)
				r = f;
			else if (f == LOWER_FOUND)
				r = 1;
			if (f != LOWER_ABSENT)
				break;   /* found, whited out, or unknown */
			continue;
		}
		int dfd = node_dlfd(fs, dir, i, &tmp);
		if (dfd < 0) {
			r = dfd;
			break;
		}
		int ok = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
		int e = ok ? 0 : errno;
		int hidden = !ok && oci_whiteout_in(dfd, name);
		if (tmp)
			close(dfd);
		if (ok) {
			r = !wh_is_chardev(&st);
			break;
		}
		if (e != ENOENT && e != ENOTDIR) {
			r = -e;   /* unknown: not "absent", or a whiteout would be skipped */
			break;
		}
		if (hidden)
			break;
	}
	pthread_rwlock_unlock(dir->dl_lock);
	return r;
}

struct node *node_from_lookup(struct sfs *fs, struct node *dir, const char *name, struct lookup_res *res)
{
	struct node *n;
	bool hardlink = is_upper(fs, res->layer) && !S_ISDIR(res->st.st_mode) && res->st.st_nlink > 1;

	pthread_mutex_lock(&fs->table_lock);
	n = node_child_find(fs, dir, name);
	if (n && (n->type != (res->st.st_mode & S_IFMT))) {
		n = NULL;   /* changed behind our back: a new object */
	}
	if (!n && hardlink) {
		n = node_hash_find(fs, res->st.st_dev, res->st.st_ino);
		if (n) {
			/* another name of a hard-linked upper object */
			n->nlookup++;
			pthread_mutex_unlock(&fs->table_lock);
			if (node_detached(n) || node_deleted(n))
				node_set_name(fs, n, dir, name);
			lookup_res_free(res);
			return n;
		}
	}
	if (n) {
		n->nlookup++;
		pthread_mutex_unlock(&fs->table_lock);
		lookup_res_free(res);
		return n;
	}
	pthread_mutex_unlock(&fs->table_lock);

	n = node_new(fs, dir, name, res->st.st_mode & S_IFMT);
	if (!n) {
		lookup_res_free(res);
		return NULL;
	}
	n->layer = res->layer;
	n->ino = res->ino;
	n->metacopy = res->metacopy;
	n->data_layer = res->data_layer;
	if (S_ISDIR(n->type)) {
		node_set_dlayers(fs, n, res->dl, res->ndl);
		res->dl = NULL;
		res->ndl = 0;
		n->redirect = res->redirect;
		res->redirect = NULL;
		n->lat = res->lat;
		n->nlat = res->nlat;
		res->lat = NULL;
		res->nlat = 0;
	}
	lookup_res_free(res);

	pthread_mutex_lock(&fs->table_lock);
	struct node *raced = node_child_find(fs, dir, name);
	if (raced && raced->type == n->type) {
		raced->nlookup++;
		pthread_mutex_unlock(&fs->table_lock);
		/* never published: drop it (node_forget frees it and its
		 * reference on dir) */
		pthread_mutex_lock(&fs->table_lock);
		fs->nnodes++;
		pthread_mutex_unlock(&fs->table_lock);
		node_forget(fs, n, 0);
		return raced;
	}
	n->nlookup = 1;
	fs->nnodes++;
	node_child_add(fs, n);
	if (is_upper(fs, node_layer(n)) && !S_ISDIR(n->type))
		node_hash_add(fs, n, res->st.st_dev, res->st.st_ino);
	pthread_mutex_unlock(&fs->table_lock);
	return n;
}
