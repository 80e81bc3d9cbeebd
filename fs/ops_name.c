/* ops_name.c: the namespace: lookup and forget, creating objects (over
 * whiteouts where a lower name was deleted), unlink and rmdir (whiteouts,
 * never copying data), link, and rename (redirects for directories). */
#include "fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *dir = node_get(parent);
	struct lookup_res res;
	struct fuse_entry_param e;
	readdir_note_lookup(dir);
	int r = lookup_name(dir, name, &res);

	if (r == -ENOENT) {
		/* a negative entry the kernel may cache as long as anything else */
		memset(&e, 0, sizeof e);
		e.entry_timeout = SFS->timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	struct stat st = res.st;
	struct node *n = node_from_lookup(dir, name, &res);
	if (!n) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = fill_entry_st(n, &st, &e);
	if (r < 0) {
		node_forget(n, 1);
		fuse_reply_err(req, -r);
		return;
	}
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(n, 1);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(node_get(ino), nlookup);
	fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	static size_t since_trim;

	for (size_t i = 0; i < count; i++)
		node_forget(node_get(forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
	/* After the kernel let go of many nodes (memory pressure, drop_caches)
	 * give the freed memory back instead of keeping it in malloc's pools. */
	if (__atomic_add_fetch(&since_trim, count, __ATOMIC_RELAXED) > 16384) {
		__atomic_store_n(&since_trim, 0, __ATOMIC_RELAXED);
		malloc_trim(0);
	}
}

/* A child node with an in-daemon reference (no kernel reference). */
static struct node *get_child(struct node *dir, const char *name, int *err)
{
	struct node *n;
	struct lookup_res res;

	pthread_mutex_lock(&SFS->table_lock);
	n = node_child_find(dir, name);
	if (n)
		n->refs++;
	pthread_mutex_unlock(&SFS->table_lock);
	if (n)
		return n;
	*err = lookup_name(dir, name, &res);
	if (*err < 0)
		return NULL;
	n = node_from_lookup(dir, name, &res);
	if (!n) {
		*err = -ENOMEM;
		return NULL;
	}
	node_ref(n);
	node_forget(n, 1);
	return n;
}

static int reply_new_entry(fuse_req_t req, struct node *dir, const char *name,
			   struct fuse_file_info *fi, int fd)
{
	struct lookup_res res;
	struct fuse_entry_param e;
	int r = lookup_name(dir, name, &res);

	if (r < 0)
		return r;
	struct stat st = res.st;
	struct node *n = node_from_lookup(dir, name, &res);
	if (!n)
		return -ENOMEM;
	r = fill_entry_st(n, &st, &e);
	if (r < 0) {
		node_forget(n, 1);
		return r;
	}
	if (fi) {
		if ((r = fh_new(n, fd, fi->flags, fi)) < 0) {
			node_forget(n, 1);
			return r;
		}
		if (fh_reply_open(req, fi, &e) != 0) {
			fh_free_fi(fi);
			node_forget(n, 1);
		}
		return 0;
	}
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(n, 1);
	return 0;
}

enum obj_kind { OBJ_FILE, OBJ_DIR, OBJ_NODE, OBJ_SYMLINK };

struct obj_spec {
	enum obj_kind kind;
	mode_t mode;
	dev_t rdev;
	const char *target;   /* symlink */
	int open_flags;       /* OBJ_FILE */
};

static int make_obj(int dirfd, const char *name, const struct obj_spec *s, int *fdp)
{
	switch (s->kind) {
	case OBJ_FILE: {
		int fl = (real_flags(s->open_flags) & ~O_TRUNC) | O_CREAT | O_EXCL;
		int fd = openat(dirfd, name, fl, s->mode & 07777);
		if (fd < 0)
			return -errno;
		*fdp = fd;
		return 0;
	}
	case OBJ_DIR:
		return mkdirat(dirfd, name, s->mode & 07777) < 0 ? -errno : 0;
	case OBJ_NODE:
		return mknodat(dirfd, name, s->mode, s->rdev) < 0 ? -errno : 0;
	case OBJ_SYMLINK:
		return symlinkat(s->target, dirfd, name) < 0 ? -errno : 0;
	}
	return -EINVAL;
}

/* Owner of a new object: the caller, or the directory's group when it is
 * set-group-ID (the upper directory carries the same mode bits). */
static void new_owner(fuse_req_t req, int pdirfd, uid_t *uid, gid_t *gid, mode_t *mode)
{
	struct stat pst;
	req_owner(req, uid, gid);
	/* The kernel left the umask to us (POSIX ACLs on): a default ACL in
	 * the parent replaces it, and the upper filesystem applies that ACL
	 * itself when we create with the full mode. */
	if (!S_ISLNK(*mode) && fgetxattr(pdirfd, "system.posix_acl_default", NULL, 0) <= 0)
		*mode &= ~(fuse_req_ctx(req)->umask & 0777);
	if (fstat(pdirfd, &pst) == 0 && (pst.st_mode & S_ISGID)) {
		*gid = pst.st_gid;
		if (S_ISDIR(*mode))
			*mode |= S_ISGID;
	}
}

/* Owner of a newly created object. Its mode came from create() and a
 * default ACL may have shaped it: touch it again only to restore set-id
 * bits that chown cleared. */
static int create_set_owner(int dirfd, const char *name, int fd, uid_t uid, gid_t gid, mode_t mode)
{
	struct stat st;
	int r = fd >= 0 ? fstat(fd, &st) : fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW);

	if (needs_owner_access(mode))
		return upper_set_owner(dirfd, name, fd, uid, gid, mode);
	if (r == 0 && st.st_uid == uid && st.st_gid == gid && !(mode & 06000))
		return 0;
	if (!(mode & 06000) && r == 0) {
		r = fd >= 0 ? fchown(fd, uid, gid) : fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);
		if (r == 0)
			return 0;
	}
	return upper_set_owner(dirfd, name, fd, uid, gid, mode);
}

static int create_obj(fuse_req_t req, struct node *dir, const char *name, struct obj_spec *s,
		      struct fuse_file_info *fi)
{
	int r, fd = -1;
	uid_t uid;
	gid_t gid;
	struct stat wst;

	if (!SFS->has_upper)
		return -EROFS;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!strncmp(name, WH_PREFIX, WH_PREFIX_LEN))
		return -EINVAL;  /* would read back as a whiteout */
	if ((r = copyup_dir(dir)) < 0)
		return r;
	pthread_mutex_lock(&dir->lock);
	int ufd = node_upperfd(dir);
	if (ufd < 0) {
		r = -EIO;
		goto out;
	}
	mode_t mode = s->kind == OBJ_DIR ? (S_IFDIR | (s->mode & 07777))
		    : s->kind == OBJ_SYMLINK ? (S_IFLNK | 0777)
		    : s->kind == OBJ_FILE ? (S_IFREG | (s->mode & 07777)) : s->mode;
	new_owner(req, ufd, &uid, &gid, &mode);
	s->mode = (s->mode & S_IFMT) | (mode & 07777);

	bool over_cwh = fstatat(ufd, name, &wst, AT_SYMLINK_NOFOLLOW) == 0;
	if (over_cwh && !wh_is_chardev(&wst)) {
		r = -EEXIST;
		goto out;
	}
	bool over_oci = false;
	if (!over_cwh) {
		char oci[WH_PREFIX_LEN + NAME_MAX + 1];
		struct stat ost;
		snprintf(oci, sizeof oci, WH_PREFIX "%s", name);
		over_oci = strlen(oci) <= NAME_MAX && fstatat(ufd, oci, &ost, AT_SYMLINK_NOFOLLOW) == 0;
	}
	/* a directory replacing a deleted lower one must hide its contents
	 * (where the lower layers cannot be asked, it may not be created) */
	int lower = s->kind == OBJ_DIR && !over_cwh && !over_oci ? name_in_lowers(dir, name) : 0;
	if (lower < 0) {
		r = lower;
		goto out;
	}
	bool opaque = s->kind == OBJ_DIR && (over_cwh || over_oci || lower == 1);

	if (!over_cwh && !opaque) {
		/* the common case: nothing to replace, create in place */
		r = make_obj(ufd, name, s, &fd);
		if (r == 0)
			r = create_set_owner(ufd, name, fd, uid, gid, mode);
		if (r < 0) {
			if (fd >= 0)
				close(fd);
			fd = -1;
			if (r != -EEXIST)
				unlinkat(ufd, name, s->kind == OBJ_DIR ? AT_REMOVEDIR : 0);
			goto out;
		}
		if (over_oci)
			wh_remove(ufd, name);
	} else {
		/* build in the work directory, then replace the whiteout
		 * atomically: a crash leaves either the whiteout or the object */
		char tmp[64];
		copyup_tmpname(tmp, sizeof tmp);
		r = make_obj(SFS->workfd, tmp, s, &fd);
		if (r == 0)
			r = create_set_owner(SFS->workfd, tmp, fd, uid, gid, mode);
		if (r == 0 && opaque) {
			int dfd = openat(SFS->workfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			r = dfd < 0 ? -errno : wh_set_opaque(dfd, &SFS->whp);
			if (dfd >= 0)
				close(dfd);
		}
		if (r == 0) {
			if (over_cwh && s->kind == OBJ_DIR) {
				if (renameat2(SFS->workfd, tmp, ufd, name, RENAME_EXCHANGE) < 0)
					r = -errno;
				else
					unlinkat(SFS->workfd, tmp, 0);
			} else if (renameat2(SFS->workfd, tmp, ufd, name, over_cwh ? 0 : RENAME_NOREPLACE) < 0) {
				r = -errno;
			}
		}
		if (r < 0) {
			if (fd >= 0)
				close(fd);
			fd = -1;
			unlinkat(SFS->workfd, tmp, s->kind == OBJ_DIR ? AT_REMOVEDIR : 0);
			goto out;
		}
		if (over_oci)
			wh_remove(ufd, name);
	}
	if (s->kind == OBJ_NODE || s->kind == OBJ_SYMLINK)
		origin_in_parent_clear(ufd, name);  /* a new object, not a copy */
	node_dir_changed(dir);
	pthread_mutex_unlock(&dir->lock);
	r = reply_new_entry(req, dir, name, fi, fd);
	/* mknod of a regular file opened it too, with no handle to keep it */
	if ((r < 0 || !fi) && fd >= 0)
		close(fd);
	return r;
out:
	pthread_mutex_unlock(&dir->lock);
	return r;
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	if (S_ISCHR(mode) && rdev == makedev(0, 0)) {
		/* that is a whiteout: not creatable through the merged view */
		fuse_reply_err(req, EPERM);
		return;
	}
	struct obj_spec s = { .kind = OBJ_NODE, .mode = mode, .rdev = rdev };
	if (S_ISREG(mode)) {
		s.kind = OBJ_FILE;
		s.open_flags = O_WRONLY;
	}
	int r = create_obj(req, node_get(parent), name, &s, NULL);
	if (r < 0)
		fuse_reply_err(req, -r);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct obj_spec s = { .kind = OBJ_DIR, .mode = mode };
	int r = create_obj(req, node_get(parent), name, &s, NULL);
	if (r < 0)
		fuse_reply_err(req, -r);
}

void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct obj_spec s = { .kind = OBJ_SYMLINK, .target = link };
	int r = create_obj(req, node_get(parent), name, &s, NULL);
	if (r < 0)
		fuse_reply_err(req, -r);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	struct obj_spec s = { .kind = OBJ_FILE, .mode = mode, .open_flags = fi->flags };
	int r = create_obj(req, node_get(parent), name, &s, fi);
	if (r < 0)
		fuse_reply_err(req, -r);
}

/* Empty an upper directory that holds only whiteouts (a merged directory
 * that looks empty), so it can be removed or replaced. */
static void clear_whiteouts(int parentfd, const char *name)
{
	int dfd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return;
	DIR *d = fdopendir(dup(dfd));
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dfd, de->d_name, 0);
	if (d)
		closedir(d);
	close(dfd);
}

static void set_opaque_at(int parentfd, const char *name)
{
	int dfd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd >= 0) {
		wh_set_opaque(dfd, &SFS->whp);
		close(dfd);
	}
}

/* Remove what remove_entry moved aside to TMP in the workdir (a directory
 * holds only whiteouts). */
static void drop_aside(const char *tmp, bool is_dir)
{
	if (is_dir)
		clear_whiteouts(SFS->workfd, tmp);
	unlinkat(SFS->workfd, tmp, is_dir ? AT_REMOVEDIR : 0);
}

/* Put a whiteout in place of upper entry NAME in one step, the entry going
 * to TMP in the workdir: a shared whiteout is linked to TMP and the two are
 * exchanged. 0 done, else -errno and nothing changed. */
static int swap_for_whiteout(int ufd, const char *name, const char *tmp)
{
	if (!SFS->whp.share)
		return -ENOTSUP;
	int r = wh_write_chardev(SFS->workfd, tmp, &SFS->whp);
	if (r < 0)
		return r;
	if (renameat2(SFS->workfd, tmp, ufd, name, RENAME_EXCHANGE) < 0) {
		r = -errno;
		unlinkat(SFS->workfd, tmp, 0);
	}
	return r;
}

/* Remove NAME's upper entry (if any) and leave a whiteout when a lower
 * layer still has the name. Called with dir->lock held. */
static int remove_entry(struct node *dir, const char *name, bool is_dir, bool in_upper)
{
	int ufd = node_upperfd(dir);
	int lower = name_in_lowers(dir, name);
	int r;

	if (lower < 0)
		return lower;
	if (ufd < 0)
		return -EIO;
	if (!is_dir && in_upper)
		origin_in_parent_clear(ufd, name);
	if (in_upper) {
		char tmp[64];
		copyup_tmpname(tmp, sizeof tmp);
		if (lower && swap_for_whiteout(ufd, name, tmp) == 0) {
			/* the old entry is at tmp now, the whiteout in its place */
			drop_aside(tmp, is_dir);
			return 0;
		}
		if (is_dir) {
			/* holds only whiteouts: move it aside, then clear it */
			unsigned flags = lower && SFS->whp.try_mknod ? RENAME_WHITEOUT : 0;
			if (renameat2(ufd, name, SFS->workfd, tmp, flags) < 0) {
				if (flags && (errno == EPERM || errno == EINVAL)) {
					SFS->whp.try_mknod = false;
					flags = 0;
					if (renameat2(ufd, name, SFS->workfd, tmp, 0) < 0)
						return -errno;
				} else {
					return -errno;
				}
			}
			drop_aside(tmp, true);
			if (lower && !flags)
				return wh_write(ufd, name, &SFS->whp);
			return 0;
		}
		if (lower && SFS->whp.try_mknod) {
			if (renameat2(ufd, name, SFS->workfd, tmp, RENAME_WHITEOUT) == 0) {
				drop_aside(tmp, false);
				return 0;
			}
			if (errno != EPERM && errno != EINVAL)
				return -errno;
			SFS->whp.try_mknod = false;
		}
		if (unlinkat(ufd, name, 0) < 0)
			return -errno;
	}
	if (lower) {
		r = wh_write(ufd, name, &SFS->whp);
		if (r < 0)
			return r;
	}
	return 0;
}

static int do_remove(struct node *dir, const char *name, bool is_dir)
{
	int r;
	struct node *n = get_child(dir, name, &r);

	if (!n)
		return r;
	if (!SFS->has_upper) {
		r = -EROFS;
		goto out;
	}
	if (is_dir != !!S_ISDIR(n->type)) {
		r = is_dir ? -ENOTDIR : -EISDIR;
		goto out;
	}
	if (is_dir && (r = dir_is_empty(n)) <= 0) {
		r = r == 0 ? -ENOTEMPTY : r;
		goto out;
	}
	if ((r = copyup_dir(dir)) < 0)
		goto out;
	pthread_mutex_lock(&dir->lock);
	bool in_upper;
	if (is_dir) {
		pthread_rwlock_rdlock(n->dl_lock);
		in_upper = n->ndl && is_upper(n->dl[0].layer);
		pthread_rwlock_unlock(n->dl_lock);
	} else {
		in_upper = is_upper(node_layer(n));
	}
	struct stat st = { 0 };
	if (!is_dir && in_upper) {
		int ufd = node_upperfd(dir);
		if (ufd >= 0)
			fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW);
	}
	bool other_links = !is_dir && in_upper && st.st_nlink > 1;
	node_keep_path(n);   /* before the name goes */
	r = remove_entry(dir, name, is_dir, in_upper);
	if (r == 0 && other_links)
		node_detach(n);
	else if (r == 0)
		node_mark_deleted(n);
	node_dir_changed(dir);
	pthread_mutex_unlock(&dir->lock);
out:
	node_unref(n);
	return r;
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -do_remove(node_get(parent), name, false));
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -do_remove(node_get(parent), name, true));
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct node *n = node_get(ino), *dir = node_get(newparent);
	struct loc src;
	struct stat wst;
	int r;

	if (!SFS->has_upper) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!strncmp(newname, WH_PREFIX, WH_PREFIX_LEN)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	node_ref(n);
	if ((r = copyup(n, CU_DATA)) < 0 || (r = copyup_dir(dir)) < 0)
		goto out;
	pthread_mutex_lock(&dir->lock);
	int ufd = node_upperfd(dir);
	if ((r = loc_get(n, &src)) < 0) {
		pthread_mutex_unlock(&dir->lock);
		goto out;
	}
	bool over_cwh = fstatat(ufd, newname, &wst, AT_SYMLINK_NOFOLLOW) == 0;
	if (over_cwh && !wh_is_chardev(&wst))
		r = -EEXIST;
	else if (over_cwh) {
		char tmp[64];
		copyup_tmpname(tmp, sizeof tmp);
		if (linkat(src.dirfd, src.name, SFS->workfd, tmp, src.nofollow ? 0 : AT_SYMLINK_FOLLOW) < 0 ||
		    renameat(SFS->workfd, tmp, ufd, newname) < 0) {
			r = -errno;
			unlinkat(SFS->workfd, tmp, 0);
		}
	} else if (linkat(src.dirfd, src.name, ufd, newname, src.nofollow ? 0 : AT_SYMLINK_FOLLOW) < 0) {
		r = -errno;
	} else if (wh_exists(ufd, newname) == 1) {
		wh_remove(ufd, newname);
	}
	loc_put(&src);
	if (r == 0 && !S_ISREG(n->type) && !SFS->privileged)
		origin_in_parent_set(ufd, newname, n->ino);  /* every name shows one number */
	if (r == 0)
		node_dir_changed(dir);
	pthread_mutex_unlock(&dir->lock);
	if (r == 0) {
		struct fuse_entry_param e;
		pthread_mutex_lock(&SFS->table_lock);
		n->nlookup++;
		pthread_mutex_unlock(&SFS->table_lock);
		r = fill_entry(n, &e);
		if (r == 0) {
			if (fuse_reply_entry(req, &e) != 0)
				node_forget(n, 1);
			node_unref(n);
			return;
		}
		node_forget(n, 1);
	}
out:
	fuse_reply_err(req, -r);
	node_unref(n);
}

/* Lock two directories in a fixed order. */
static void lock2(struct node *a, struct node *b)
{
	if (a == b) {
		pthread_mutex_lock(&a->lock);
	} else if (a < b) {
		pthread_mutex_lock(&a->lock);
		pthread_mutex_lock(&b->lock);
	} else {
		pthread_mutex_lock(&b->lock);
		pthread_mutex_lock(&a->lock);
	}
}

static void unlock2(struct node *a, struct node *b)
{
	pthread_mutex_unlock(&a->lock);
	if (a != b)
		pthread_mutex_unlock(&b->lock);
}

/* The longest redirect kernel overlayfs writes (its redirect_max): a longer
 * path makes the rename EXDEV and mv copies instead. */
#define REDIRECT_MAX 256

/* A directory about to move: where its lower layers hold it now (pinned,
 * installed once the move is done: its name no longer leads there); its
 * upper gets the redirect that finds them at the next mount, built as
 * kernel overlayfs's ovl_set_redirect() builds an absolute one. */
struct dir_move {
	bool lower;              /* it has lower layers */
	struct lower_at *lat;
	unsigned nlat;
};

static void dir_move_free(struct dir_move *m)
{
	lower_at_free(m->lat, m->nlat);
	m->lat = NULL;
	m->nlat = 0;
}

/* A directory with lower layers: moving it needs a redirect. */
static bool dir_has_lower(struct node *n)
{
	bool lower = false;
	dl_rdlock(n);
	for (unsigned i = 0; i < n->ndl; i++)
		if (!is_upper(n->dl[i].layer))
			lower = true;
	pthread_rwlock_unlock(n->dl_lock);
	return lower;
}

/* Prepare directory n, NAME in upper directory ufd, to move (SAMEDIR:
 * within its parent): a redirect written where it has lower layers (one it
 * has is kept where it still holds: an absolute one, or a bare name within
 * one directory). -EXDEV where it may not get one (redirect_dir other than
 * on, an upper without xattrs, a path too long). */
static int dir_move_prepare(struct node *n, int ufd, const char *name, bool samedir,
			    struct dir_move *m)
{
	memset(m, 0, sizeof *m);
	m->lower = dir_has_lower(n);
	if (!m->lower)
		return 0;
	if (SFS->opts.redirect_dir != REDIRECT_ON)
		return -EXDEV;
	int r = node_pin_lower(n, &m->lat, &m->nlat);
	if (r < 0)
		return r;
	pthread_mutex_lock(&SFS->table_lock);
	bool keep = n->redirect && (samedir || n->redirect[0] == '/');
	pthread_mutex_unlock(&SFS->table_lock);
	if (keep)
		return 0;
	/* absolute even within one directory, where kernel overlayfs writes a
	 * bare name (lookups follow both): what the layer export reads */
	char *red = NULL;
	r = node_redirect_path(n, &red);
	if (r == 0 && strlen(red) > REDIRECT_MAX)
		r = -EXDEV;
	/* the upper refusing it is EXDEV too: mv copies instead */
	if (r == 0 && xa_set(ufd, name, wh_xattr_redirect(&SFS->whp), red, strlen(red), 0) < 0)
		r = -EXDEV;
	if (r < 0) {
		free(red);
		dir_move_free(m);
		return r;
	}
	pthread_mutex_lock(&SFS->table_lock);
	char *old = n->redirect;
	n->redirect = red;
	pthread_mutex_unlock(&SFS->table_lock);
	free(old);
	return 0;
}

/* The move is done: the pinned places find n's lower layers from now on. */
static void dir_move_done(struct node *n, struct dir_move *m)
{
	if (m->lower) {
		node_set_lower_at(n, m->lat, m->nlat);
		m->lat = NULL;
		m->nlat = 0;
	}
}

/* The checks of rename(2) between source s and target t (NULL: none). */
static int rename_check(struct node *s, struct node *t, unsigned flags)
{
	int r;

	/* without redirects a directory with lower layers cannot move: said
	 * before anything is copied up, as kernel overlayfs does */
	if (SFS->opts.redirect_dir != REDIRECT_ON &&
	    ((S_ISDIR(s->type) && dir_has_lower(s)) ||
	     (t && (flags & RENAME_EXCHANGE) && S_ISDIR(t->type) && dir_has_lower(t))))
		return -EXDEV;
	if (t && (flags & RENAME_NOREPLACE))
		return -EEXIST;
	if (!t && (flags & RENAME_EXCHANGE))
		return -ENOENT;
	if (!t || (flags & RENAME_EXCHANGE))
		return 0;
	if (S_ISDIR(s->type) && !S_ISDIR(t->type))
		return -ENOTDIR;
	if (!S_ISDIR(s->type) && S_ISDIR(t->type))
		return -EISDIR;
	if (S_ISDIR(t->type) && (r = dir_is_empty(t)) <= 0)
		return r == 0 ? -ENOTEMPTY : r;
	return 0;
}

/* RENAME_EXCHANGE of s (NAME in od, upper fd ofd) and t (NEWNAME in nd,
 * nfd). Both directories locked. */
static int rename_exchange(struct node *od, int ofd, const char *name, struct node *s,
			   struct node *nd, int nfd, const char *newname, struct node *t)
{
	struct dir_move ms = { 0 }, mt = { 0 };
	int r = 0;
	bool samedir = od == nd;

	if (S_ISDIR(s->type) && (r = dir_move_prepare(s, ofd, name, samedir, &ms)) < 0)
		return r;
	if (S_ISDIR(t->type) && (r = dir_move_prepare(t, nfd, newname, samedir, &mt)) < 0)
		goto out;
	/* a pure upper directory now standing on a lower name must not merge
	 * with it: asked before anything changes */
	int s_over = S_ISDIR(s->type) && !ms.lower ? name_in_lowers(nd, newname) : 0;
	int t_over = S_ISDIR(t->type) && !mt.lower ? name_in_lowers(od, name) : 0;
	if ((r = s_over < 0 ? s_over : t_over < 0 ? t_over : 0) < 0)
		goto out;
	if (renameat2(ofd, name, nfd, newname, RENAME_EXCHANGE) < 0) {
		r = -errno;
		goto out;
	}
	if (s_over == 1)
		set_opaque_at(nfd, newname);
	if (t_over == 1)
		set_opaque_at(ofd, name);
	dir_move_done(s, &ms);
	dir_move_done(t, &mt);
	char *sname = strdup(name);
	if (sname) {
		node_set_name(t, od, sname);
		free(sname);
	}
	node_set_name(s, nd, newname);
out:
	dir_move_free(&ms);
	dir_move_free(&mt);
	return r;
}

/* Move s (NAME in od, upper fd ofd) to NEWNAME in nd (nfd), replacing t
 * (NULL: nothing there). Both directories locked. */
static int rename_move(struct node *od, int ofd, const char *name, struct node *s,
		       struct node *nd, int nfd, const char *newname, struct node *t)
{
	struct dir_move ms = { 0 };
	int r = 0;

	/* whether the names are in lower layers decides the whiteout and
	 * opacity: asked before anything changes, and an error is an error,
	 * not "no" (the lower name would come back) */
	int s_lower = name_in_lowers(od, name);
	if (s_lower < 0)
		return s_lower;
	int t_lower = name_in_lowers(nd, newname);
	if (t_lower < 0)
		return t_lower;
	if (S_ISDIR(s->type) && (r = dir_move_prepare(s, ofd, name, od == nd, &ms)) < 0)
		return r;

	/* what the target name holds in the upper now */
	struct stat tst;
	bool t_upper = fstatat(nfd, newname, &tst, AT_SYMLINK_NOFOLLOW) == 0;
	bool t_is_cwh = t_upper && wh_is_chardev(&tst);
	if (t_upper && S_ISDIR(tst.st_mode)) {
		/* an empty merged directory: clear its whiteouts so it can go */
		clear_whiteouts(nfd, newname);
	}
	if (t_is_cwh && S_ISDIR(s->type)) {
		/* a directory cannot replace a char device: drop the whiteout */
		unlinkat(nfd, newname, 0);
	}
	/* a directory moving over a lower name must not merge with it */
	if (S_ISDIR(s->type) && !ms.lower && (t_lower == 1 || t_is_cwh))
		set_opaque_at(ofd, name);
	nlink_t t_links = 1;
	if (t) {
		node_keep_path(t);   /* the target's name is about to change hands */
		struct stat lst;
		if (!S_ISDIR(t->type) && is_upper(node_layer(t)) &&
		    fstatat(nfd, newname, &lst, AT_SYMLINK_NOFOLLOW) == 0)
			t_links = lst.st_nlink;
	}
	uint64_t s_origin = 0;
	if (!S_ISDIR(s->type) && !S_ISREG(s->type) && !SFS->privileged) {
		s_origin = origin_in_parent_get(ofd, name);
		origin_in_parent_clear(ofd, name);
	}
	if (t && !S_ISDIR(t->type))
		origin_in_parent_clear(nfd, newname);
	unsigned rflags = (s_lower == 1 && SFS->whp.try_mknod) ? RENAME_WHITEOUT : 0;
	if (renameat2(ofd, name, nfd, newname, rflags) < 0) {
		if (rflags && (errno == EPERM || errno == EINVAL)) {
			SFS->whp.try_mknod = false;
			rflags = 0;
			if (renameat2(ofd, name, nfd, newname, 0) < 0)
				r = -errno;
		} else {
			r = -errno;
		}
	}
	if (r == 0 && s_origin)
		origin_in_parent_set(nfd, newname, s_origin);
	if (r == 0 && s_lower == 1 && !rflags)
		r = wh_write(ofd, name, &SFS->whp);
	if (r == 0 && wh_exists(nfd, newname) == 1)
		wh_remove(nfd, newname);  /* an OCI whiteout for the new name */
	if (r == 0) {
		/* a replaced hard link lives on under its other names: the
		 * next lookup of one of them must find this same node */
		if (t && t_links > 1)
			node_detach(t);
		else if (t)
			node_mark_deleted(t);
		dir_move_done(s, &ms);
		node_set_name(s, nd, newname);
	}
	dir_move_free(&ms);
	return r;
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags)
{
	struct node *od = node_get(parent), *nd = node_get(newparent);
	struct node *s = NULL, *t = NULL;
	int r;

	if (!SFS->has_upper) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!strncmp(newname, WH_PREFIX, WH_PREFIX_LEN) || strlen(newname) > NAME_MAX) {
		fuse_reply_err(req, strlen(newname) > NAME_MAX ? ENAMETOOLONG : EINVAL);
		return;
	}
	s = get_child(od, name, &r);
	if (!s)
		goto out;
	t = get_child(nd, newname, &r);
	if (!t && r != -ENOENT)
		goto out;
	r = 0;
	if (t == s)
		goto out;  /* hard links to one object: nothing to do */
	if ((r = rename_check(s, t, flags)) < 0)
		goto out;
	/* bring everything involved into the upper first */
	if ((r = copyup(s, CU_DATA)) < 0 || (r = copyup_dir(nd)) < 0 || (r = copyup_dir(od)) < 0)
		goto out;
	if ((flags & RENAME_EXCHANGE) && (r = copyup(t, CU_DATA)) < 0)
		goto out;

	lock2(od, nd);
	int ofd = node_upperfd(od), nfd = node_upperfd(nd);
	if (ofd < 0 || nfd < 0)
		r = -EIO;
	else if (flags & RENAME_EXCHANGE)
		r = rename_exchange(od, ofd, name, s, nd, nfd, newname, t);
	else
		r = rename_move(od, ofd, name, s, nd, nfd, newname, t);
	if (r == 0) {
		node_dir_changed(od);
		if (nd != od)
			node_dir_changed(nd);
	}
	unlock2(od, nd);
out:
	if (s)
		node_unref(s);
	if (t)
		node_unref(t);
	fuse_reply_err(req, -r);
}
