/* lookup.c: find a name through the layer stack (overlayfs's namei): the
 * topmost layer that has the name decides; whiteouts end the search;
 * directories merge with the same directory in the layers below until one
 * is opaque or a non-directory hides the rest. */
#include "fs.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void lookup_res_free(struct lookup_res *res)
{
	for (unsigned i = 0; i < res->ndl; i++)
		if (res->dl[i].fd >= 0)
			close(res->dl[i].fd);
	free(res->dl);
	free(res->redirect);
	res->dl = NULL;
	res->ndl = 0;
	res->redirect = NULL;
}

static int oci_whiteout_in(int dirfd, const char *name)
{
	char wh[WH_PREFIX_LEN + NAME_MAX + 1];
	struct stat st;

	if (snprintf(wh, sizeof wh, WH_PREFIX "%s", name) >= (int)sizeof wh || strlen(wh) > NAME_MAX)
		return 0;
	return fstatat(dirfd, wh, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int add_dl(struct lookup_res *res, uint32_t layer, int fd)
{
	struct dlayer *n = realloc(res->dl, (res->ndl + 1) * sizeof *n);
	if (!n) {
		close(fd);
		return -ENOMEM;
	}
	res->dl = n;
	res->dl[res->ndl].layer = layer;
	res->dl[res->ndl].fd = fd;
	res->dl[res->ndl].names = NULL;
	res->ndl++;
	return 0;
}

static int open_subdir(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int open_beneath_dir(int rootfd, const char *path)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	while (*path == '/')
		path++;
	int fd = (int)syscall(SYS_openat2, rootfd, *path ? path : ".", &how, sizeof how);
	return fd < 0 ? -errno : fd;
}

/* A directory found in layer `layer`: does it end the merge? */
static int dir_stops_merge(int fd, int parentfd, const char *name, uint32_t layer)
{
	/* nothing below the bottom layer to stop: no xattr or whiteout to ask
	 * for (most directories of an image are in its base layer alone) */
	if (layer + 1 >= SFS->nlayers)
		return 1;
	int r = wh_dir_is_opaque(fd, true);
	if (r != 0)
		return r;
	/* OCI: ".wh.NAME" beside a re-created NAME in the same layer deletes
	 * the lower NAME before adding this one: an opaque directory. */
	return oci_whiteout_in(parentfd, name);
}

/* Merge the lower layers of a directory renamed in the upper: they hold it
 * at `redirect` from their roots. */
static int merge_redirected(struct lookup_res *res, uint32_t from)
{
	for (uint32_t l = from; l < SFS->nlayers; l++) {
		int fd = open_beneath_dir(SFS->layers[l].fd, res->redirect);
		if (fd == -ENOENT)
			continue;
		if (fd < 0)
			return fd == -ENOTDIR ? 0 : fd;
		int r = wh_dir_is_opaque(fd, true);
		int e = add_dl(res, l, fd);
		if (e < 0)
			return e;
		if (r)
			return 0;
	}
	return 0;
}

static void upper_file_marks(struct lookup_res *res, int dirfd, const char *name)
{
	char list[4096], buf[64];

	if (!S_ISREG(res->st.st_mode) && !SFS->privileged) {
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
			xa_get(dirfd, name, wh_xattr_metacopy(&SFS->whp), buf, sizeof buf) >= 0;
	} else {
		for (char *k = list; k < list + n; k += strlen(k) + 1) {
			if (S_ISREG(res->st.st_mode) && !strcmp(k, wh_xattr_metacopy(&SFS->whp)))
				res->metacopy = true;
			else if (!strcmp(k, SFS->xa_origin))
				has_origin = true;
		}
	}
	if (!has_origin)
		return;
	n = xa_get(dirfd, name, SFS->xa_origin, buf, sizeof buf - 1);
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

int lookup_name(struct node *dir, const char *name, struct lookup_res *res)
{
	bool found = false;
	int r = 0;

	memset(res, 0, sizeof *res);
	res->data_layer = -1;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!strncmp(name, WH_PREFIX, WH_PREFIX_LEN))
		return -ENOENT;   /* whiteout bookkeeping never shows */

	dl_rdlock(dir);
	for (unsigned i = 0; i < dir->ndl; i++) {
		uint32_t layer = dir->dl[i].layer;
		bool tmp;
		struct stat st;
		int known = known_absence(dir, i, name);
		if (known == ABSENT)
			continue;
		if (known == HIDDEN)
			break;
		int dfd = node_dlfd(dir, i, &tmp);

		if (dfd < 0) {
			r = dfd;
			break;
		}
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			int e = errno;
			/* a whiteout in the bottom layer would hide nothing */
			bool hidden = e == ENOENT && i + 1 < dir->ndl && oci_whiteout_in(dfd, name);
			if (tmp)
				close(dfd);
			if (e != ENOENT && e != ENOTDIR) {
				r = -e;
				break;
			}
			if (hidden)
				break;
			continue;
		}
		if (wh_is_chardev(&st)) {
			if (tmp)
				close(dfd);
			break;
		}
		if (!found) {
			found = true;
			res->st = st;
			res->layer = layer;
			res->ino = layer_ino(layer, &st);
			if (!S_ISDIR(st.st_mode)) {
				if (is_upper(layer))
					upper_file_marks(res, dfd, name);
				if (tmp)
					close(dfd);
				if (res->metacopy) {
					/* the data lives in the first lower layer below
					 * that has a regular file at this name */
					for (unsigned j = i + 1; j < dir->ndl; j++) {
						bool t2;
						struct stat ls;
						int lfd = node_dlfd(dir, j, &t2);
						if (lfd < 0)
							break;
						int ok = fstatat(lfd, name, &ls, AT_SYMLINK_NOFOLLOW) == 0;
						if (t2)
							close(lfd);
						if (ok && S_ISREG(ls.st_mode)) {
							res->data_layer = dir->dl[j].layer;
							break;
						}
						if (ok)
							break;
					}
					if (res->data_layer < 0)
						res->metacopy = false;  /* data lost: show the upper as is */
				}
				break;
			}
			int cfd = open_subdir(dfd, name);
			if (cfd < 0) {
				if (tmp)
					close(dfd);
				r = cfd;
				break;
			}
			int stop = dir_stops_merge(cfd, dfd, name, layer);
			if (is_upper(layer) && stop <= 0) {
				char red[PATH_MAX];
				ssize_t n = xa_get(cfd, NULL, wh_xattr_redirect(&SFS->whp), red, sizeof red - 1);
				if (n > 0) {
					red[n] = '\0';
					if (red[0] == '/') {
						res->redirect = strdup(red);
					} else {
						/* kernel overlayfs writes a bare name for a
						 * rename within one directory: relative to
						 * where the lower layers hold the parent */
						char base[PATH_MAX], full[2 * PATH_MAX + 2];
						if (node_lower_path(dir, base, sizeof base) == 0) {
							snprintf(full, sizeof full, "/%s/%s",
								 strcmp(base, ".") ? base : "", red);
							res->redirect = strdup(full);
						}
					}
				}
			}
			if (tmp)
				close(dfd);
			if ((r = add_dl(res, layer, cfd)) < 0)
				break;
			if (stop)
				break;
			if (res->redirect) {
				r = merge_redirected(res, layer + 1);
				break;
			}
			continue;
		}
		/* below a directory already found */
		if (!S_ISDIR(st.st_mode)) {
			if (tmp)
				close(dfd);
			break;
		}
		int cfd = open_subdir(dfd, name);
		int stop = cfd >= 0 ? dir_stops_merge(cfd, dfd, name, layer) : 1;
		if (tmp)
			close(dfd);
		if (cfd < 0)
			break;
		if ((r = add_dl(res, layer, cfd)) < 0)
			break;
		if (stop)
			break;
	}
	pthread_rwlock_unlock(dir->dl_lock);
	if (r < 0) {
		lookup_res_free(res);
		return r;
	}
	if (!found)
		return -ENOENT;
	if (S_ISDIR(res->st.st_mode)) {
		/* Stable across copy-up and rename: the topmost lower's number. */
		for (unsigned i = 0; i < res->ndl; i++)
			if (!is_upper(res->dl[i].layer)) {
				struct stat ls;
				if (fstat(res->dl[i].fd, &ls) == 0)
					res->ino = layer_ino(res->dl[i].layer, &ls);
				break;
			}
	}
	return 0;
}

int name_in_lowers(struct node *dir, const char *name)
{
	int r = 0;

	dl_rdlock(dir);
	for (unsigned i = 0; i < dir->ndl; i++) {
		uint32_t layer = dir->dl[i].layer;
		struct stat st;
		bool tmp;

		if (is_upper(layer))
			continue;
		int known = known_absence(dir, i, name);
		if (known == ABSENT)
			continue;
		if (known == HIDDEN)
			break;
		int dfd = node_dlfd(dir, i, &tmp);
		if (dfd < 0) {
			r = dfd;
			break;
		}
		int ok = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
		int hidden = !ok && oci_whiteout_in(dfd, name);
		if (tmp)
			close(dfd);
		if (ok) {
			r = !wh_is_chardev(&st);
			break;
		}
		if (hidden)
			break;
	}
	pthread_rwlock_unlock(dir->dl_lock);
	return r;
}

struct node *node_from_lookup(struct node *dir, const char *name, struct lookup_res *res)
{
	struct node *n;
	bool hardlink = is_upper(res->layer) && !S_ISDIR(res->st.st_mode) && res->st.st_nlink > 1;

	pthread_mutex_lock(&SFS->table_lock);
	n = node_child_find(dir, name);
	if (n && (n->type != (res->st.st_mode & S_IFMT))) {
		n = NULL;   /* changed behind our back: a new object */
	}
	if (!n && hardlink) {
		n = node_hash_find(res->st.st_dev, res->st.st_ino);
		if (n) {
			/* another name of a hard-linked upper object */
			n->nlookup++;
			pthread_mutex_unlock(&SFS->table_lock);
			if (n->detached || n->deleted)
				node_set_name(n, dir, name);
			lookup_res_free(res);
			return n;
		}
	}
	if (n) {
		n->nlookup++;
		pthread_mutex_unlock(&SFS->table_lock);
		lookup_res_free(res);
		return n;
	}
	pthread_mutex_unlock(&SFS->table_lock);

	n = node_new(dir, name, res->st.st_mode & S_IFMT);
	if (!n) {
		lookup_res_free(res);
		return NULL;
	}
	n->layer = res->layer;
	n->ino = res->ino;
	n->metacopy = res->metacopy;
	n->data_layer = res->data_layer;
	if (S_ISDIR(n->type)) {
		node_set_dlayers(n, res->dl, res->ndl);
		res->dl = NULL;
		res->ndl = 0;
		n->redirect = res->redirect;
		res->redirect = NULL;
	}
	lookup_res_free(res);

	pthread_mutex_lock(&SFS->table_lock);
	struct node *raced = node_child_find(dir, name);
	if (raced && raced->type == n->type) {
		raced->nlookup++;
		pthread_mutex_unlock(&SFS->table_lock);
		/* never published: drop it (node_forget frees it and its
		 * reference on dir) */
		pthread_mutex_lock(&SFS->table_lock);
		SFS->nnodes++;
		pthread_mutex_unlock(&SFS->table_lock);
		node_forget(n, 0);
		return raced;
	}
	n->nlookup = 1;
	SFS->nnodes++;
	node_child_add(n);
	if (is_upper(n->layer) && !S_ISDIR(n->type))
		node_hash_add(n, res->st.st_dev, res->st.st_ino);
	pthread_mutex_unlock(&SFS->table_lock);
	return n;
}
