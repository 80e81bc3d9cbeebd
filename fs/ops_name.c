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
	struct sfs *fs = fuse_req_userdata(req);
	struct node *dir = node_get(fs, parent);
	struct lookup_res res;
	struct fuse_entry_param e;
	readdir_note_lookup(fs, dir);
	int r = lookup_name(fs, dir, name, &res);

	if (r == -ENOENT) {
		/* a negative entry the kernel may cache as long as anything else */
		memset(&e, 0, sizeof e);
		e.entry_timeout = fs->timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	struct stat st = res.st;
	struct node *n = node_from_lookup(fs, dir, name, &res);
	if (!n) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = fill_entry_st(fs, n, &st, &e);
	if (r < 0) {
		node_forget(fs, n, 1);
		fuse_reply_err(req, -r);
		return;
	}
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(fs, n, 1);
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct sfs *fs = fuse_req_userdata(req);
	node_forget(fs, node_get(fs, ino), nlookup);
	fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct sfs *fs = fuse_req_userdata(req);
	static size_t since_trim;   /* malloc's pools are the process's, not a mount's */

	for (size_t i = 0; i < count; i++)
		node_forget(fs, node_get(fs, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
	/* After the kernel let go of many nodes (memory pressure, drop_caches)
	 * give the freed memory back instead of keeping it in malloc's pools. */
	if (__atomic_add_fetch(&since_trim, count, __ATOMIC_RELAXED) > 16384) {
		__atomic_store_n(&since_trim, 0, __ATOMIC_RELAXED);
		malloc_trim(0);
	}
}

/* A child node with an in-daemon reference (no kernel reference). */
static struct node *get_child(struct sfs *fs, struct node *dir, const char *name, int *err)
{
	struct node *n;
	struct lookup_res res;

	pthread_mutex_lock(&fs->table_lock);
	n = node_child_find(fs, dir, name);
	if (n)
		n->refs++;
	pthread_mutex_unlock(&fs->table_lock);
	if (n)
		return n;
	*err = lookup_name(fs, dir, name, &res);
	if (*err < 0)
		return NULL;
	n = node_from_lookup(fs, dir, name, &res);
	if (!n) {
		*err = -ENOMEM;
		return NULL;
	}
	node_ref(fs, n);
	node_forget(fs, n, 1);
	return n;
}

static int reply_new_entry(struct sfs *fs, fuse_req_t req, struct node *dir, const char *name,
			   struct fuse_file_info *fi, int fd)
{
	struct lookup_res res;
	struct fuse_entry_param e;
	int r = lookup_name(fs, dir, name, &res);

	if (r < 0)
		return r;
	struct stat st = res.st;
	struct node *n = node_from_lookup(fs, dir, name, &res);
	if (!n)
		return -ENOMEM;
	r = fill_entry_st(fs, n, &st, &e);
	if (r < 0) {
		node_forget(fs, n, 1);
		return r;
	}
	if (fi) {
		if ((r = fh_new(fs, n, fd, fi->flags, fi)) < 0) {
			node_forget(fs, n, 1);
			return r;
		}
		if (fh_reply_open(req, fi, &e) != 0) {
			fh_free_fi(fs, fi);
			node_forget(fs, n, 1);
		}
		return 0;
	}
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(fs, n, 1);
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

static int make_obj(struct sfs *fs, int dirfd, const char *name, const struct obj_spec *s, int *fdp)
{
	switch (s->kind) {
	case OBJ_FILE: {
		int fl = (real_flags(fs, s->open_flags) & ~O_TRUNC) | O_CREAT | O_EXCL;
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
static void new_owner(struct sfs *fs, fuse_req_t req, int pdirfd, uid_t *uid, gid_t *gid, mode_t *mode)
{
	struct stat pst;
	req_owner(fs, req, uid, gid);
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
static int create_set_owner(struct sfs *fs, int dirfd, const char *name, int fd, uid_t uid, gid_t gid, mode_t mode)
{
	struct stat st;
	int r = fd >= 0 ? fstat(fd, &st) : fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW);

	if (needs_owner_access(fs, mode))
		return upper_set_owner(fs, dirfd, name, fd, uid, gid, mode);
	if (r == 0 && st.st_uid == uid && st.st_gid == gid && !(mode & 06000))
		return 0;
	if (!(mode & 06000) && r == 0) {
		r = fd >= 0 ? fchown(fd, uid, gid) : fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);
		if (r == 0)
			return 0;
	}
	return upper_set_owner(fs, dirfd, name, fd, uid, gid, mode);
}

static int create_obj(struct sfs *fs, fuse_req_t req, struct node *dir, const char *name, struct obj_spec *s,
		      struct fuse_file_info *fi)
{
	int r;
	_cleanup_close_ int fd = -1;   /* the new object, open when it is a file */
	uid_t uid;
	gid_t gid;
	struct stat wst;

	if (!fs->has_upper)
		return -EROFS;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	if (!strncmp(name, WH_PREFIX, WH_PREFIX_LEN))
		return -EINVAL;  /* would read back as a whiteout */
	if ((r = copyup_dir(fs, dir)) < 0)
		return r;
	pthread_mutex_lock(&dir->lock);
	int ufd = node_upperfd(fs, dir);
	if (ufd < 0) {
		r = -EIO;
		goto out;
	}
	mode_t mode = s->kind == OBJ_DIR ? (S_IFDIR | (s->mode & 07777))
		    : s->kind == OBJ_SYMLINK ? (S_IFLNK | 0777)
		    : s->kind == OBJ_FILE ? (S_IFREG | (s->mode & 07777)) : s->mode;
	new_owner(fs, req, ufd, &uid, &gid, &mode);
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
	int lower = s->kind == OBJ_DIR && !over_cwh && !over_oci ? name_in_lowers(fs, dir, name) : 0;
	if (lower < 0) {
		r = lower;
		goto out;
	}
	bool opaque = s->kind == OBJ_DIR && (over_cwh || over_oci || lower == 1);

	if (!over_cwh && !opaque) {
		/* the common case: nothing to replace, create in place */
		r = make_obj(fs, ufd, name, s, &fd);
		if (r == 0)
			r = create_set_owner(fs, ufd, name, fd, uid, gid, mode);
		if (r < 0) {
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
		copyup_tmpname(fs, tmp, sizeof tmp);
		r = make_obj(fs, fs->workfd, tmp, s, &fd);
		if (r == 0)
			r = create_set_owner(fs, fs->workfd, tmp, fd, uid, gid, mode);
		if (r == 0 && opaque) {
			_cleanup_close_ int dfd = openat(fs->workfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
									 O_CLOEXEC);
			r = dfd < 0 ? -errno : wh_set_opaque(dfd, &fs->whp);
		}
		if (r == 0) {
			if (over_cwh && s->kind == OBJ_DIR) {
				if (renameat2(fs->workfd, tmp, ufd, name, RENAME_EXCHANGE) < 0)
					r = -errno;
				else
					unlinkat(fs->workfd, tmp, 0);
			} else if (renameat2(fs->workfd, tmp, ufd, name, over_cwh ? 0 : RENAME_NOREPLACE) < 0) {
				r = -errno;
			}
		}
		if (r < 0) {
			unlinkat(fs->workfd, tmp, s->kind == OBJ_DIR ? AT_REMOVEDIR : 0);
			goto out;
		}
		if (over_oci)
			wh_remove(ufd, name);
	}
	if (s->kind == OBJ_NODE || s->kind == OBJ_SYMLINK)
		origin_in_parent_clear(fs, ufd, name);  /* a new object, not a copy */
	node_dir_changed(fs, dir);
	pthread_mutex_unlock(&dir->lock);
	r = reply_new_entry(fs, req, dir, name, fi, fd);
	/* the handle keeps it; mknod of a regular file opened it too, with
	 * no handle to keep it */
	if (r == 0 && fi)
		take_fd(&fd);
	return r;
out:
	pthread_mutex_unlock(&dir->lock);
	return r;
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct sfs *fs = fuse_req_userdata(req);
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
	int r = create_obj(fs, req, node_get(fs, parent), name, &s, NULL);
	if (r < 0)
		fuse_reply_err(req, -r);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct obj_spec s = { .kind = OBJ_DIR, .mode = mode };
	int r = create_obj(fs, req, node_get(fs, parent), name, &s, NULL);
	if (r < 0)
		fuse_reply_err(req, -r);
}

void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct obj_spec s = { .kind = OBJ_SYMLINK, .target = link };
	int r = create_obj(fs, req, node_get(fs, parent), name, &s, NULL);
	if (r < 0)
		fuse_reply_err(req, -r);
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct obj_spec s = { .kind = OBJ_FILE, .mode = mode, .open_flags = fi->flags };
	int r = create_obj(fs, req, node_get(fs, parent), name, &s, fi);
	if (r < 0)
		fuse_reply_err(req, -r);
}

/* Empty an upper directory that holds only whiteouts (a merged directory
 * that looks empty), so it can be removed or replaced. */
static void clear_whiteouts(int parentfd, const char *name)
{
	_cleanup_close_ int dfd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return;
	DIR *d = fdopendir(dup(dfd));
	struct dirent *de;
	while (d && (de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			unlinkat(dfd, de->d_name, 0);
	if (d)
		closedir(d);
}

static void set_opaque_at(struct sfs *fs, int parentfd, const char *name)
{
	_cleanup_close_ int dfd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd >= 0)
		wh_set_opaque(dfd, &fs->whp);
}

/* Remove what remove_entry moved aside to TMP in the workdir (a directory
 * holds only whiteouts). */
static void drop_aside(struct sfs *fs, const char *tmp, bool is_dir)
{
	if (is_dir)
		clear_whiteouts(fs->workfd, tmp);
	unlinkat(fs->workfd, tmp, is_dir ? AT_REMOVEDIR : 0);
}

/* Put a whiteout in place of upper entry NAME in one step, the entry going
 * to TMP in the workdir: a shared whiteout is linked to TMP and the two are
 * exchanged. 0 done, else -errno and nothing changed. */
static int swap_for_whiteout(struct sfs *fs, int ufd, const char *name, const char *tmp)
{
	if (!wh_may_share(&fs->whp))
		return -ENOTSUP;
	int r = wh_write_chardev(fs->workfd, tmp, &fs->whp);
	if (r < 0)
		return r;
	if (renameat2(fs->workfd, tmp, ufd, name, RENAME_EXCHANGE) < 0) {
		r = -errno;
		unlinkat(fs->workfd, tmp, 0);
	}
	return r;
}

/* Remove NAME's upper entry (if any) and leave a whiteout when a lower
 * layer still has the name. Called with dir->lock held. */
static int remove_entry(struct sfs *fs, struct node *dir, const char *name, bool is_dir, bool in_upper)
{
	int ufd = node_upperfd(fs, dir);
	int lower = name_in_lowers(fs, dir, name);
	int r;

	if (lower < 0)
		return lower;
	if (ufd < 0)
		return -EIO;
	if (!is_dir && in_upper)
		origin_in_parent_clear(fs, ufd, name);
	if (in_upper) {
		char tmp[64];
		copyup_tmpname(fs, tmp, sizeof tmp);
		if (lower && swap_for_whiteout(fs, ufd, name, tmp) == 0) {
			/* the old entry is at tmp now, the whiteout in its place */
			drop_aside(fs, tmp, is_dir);
			return 0;
		}
		if (is_dir) {
			/* holds only whiteouts: move it aside, then clear it */
			unsigned flags = lower && wh_may_mknod(&fs->whp) ? RENAME_WHITEOUT : 0;
			if (renameat2(ufd, name, fs->workfd, tmp, flags) < 0) {
				if (flags && (errno == EPERM || errno == EINVAL)) {
					wh_mknod_refused(&fs->whp);
					flags = 0;
					if (renameat2(ufd, name, fs->workfd, tmp, 0) < 0)
						return -errno;
				} else {
					return -errno;
				}
			}
			drop_aside(fs, tmp, true);
			if (lower && !flags)
				return wh_write(ufd, name, &fs->whp);
			return 0;
		}
		if (lower && wh_may_mknod(&fs->whp)) {
			if (renameat2(ufd, name, fs->workfd, tmp, RENAME_WHITEOUT) == 0) {
				drop_aside(fs, tmp, false);
				return 0;
			}
			if (errno != EPERM && errno != EINVAL)
				return -errno;
			wh_mknod_refused(&fs->whp);
		}
		if (unlinkat(ufd, name, 0) < 0)
			return -errno;
	}
	if (lower) {
		r = wh_write(ufd, name, &fs->whp);
		if (r < 0)
			return r;
	}
	return 0;
}

static int do_remove(struct sfs *fs, struct node *dir, const char *name, bool is_dir)
{
	int r;
	struct node *n = get_child(fs, dir, name, &r);

	if (!n)
		return r;
	if (!fs->has_upper) {
		r = -EROFS;
		goto out;
	}
	if (is_dir != !!S_ISDIR(n->type)) {
		r = is_dir ? -ENOTDIR : -EISDIR;
		goto out;
	}
	if (is_dir && (r = dir_is_empty(fs, n)) <= 0) {
		r = r == 0 ? -ENOTEMPTY : r;
		goto out;
	}
	if ((r = copyup_dir(fs, dir)) < 0)
		goto out;
	pthread_mutex_lock(&dir->lock);
	bool in_upper;
	if (is_dir) {
		pthread_rwlock_rdlock(n->dl_lock);
		in_upper = n->ndl && is_upper(fs, n->dl[0].layer);
		pthread_rwlock_unlock(n->dl_lock);
	} else {
		in_upper = is_upper(fs, node_layer(n));
	}
	struct stat st = { 0 };
	if (!is_dir && in_upper) {
		int ufd = node_upperfd(fs, dir);
		if (ufd >= 0)
			fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW);
	}
	bool other_links = !is_dir && in_upper && st.st_nlink > 1;
	node_keep_path(fs, n);   /* before the name goes */
	r = remove_entry(fs, dir, name, is_dir, in_upper);
	if (r == 0 && other_links)
		node_detach(fs, n);
	else if (r == 0)
		node_mark_deleted(fs, n);
	node_dir_changed(fs, dir);
	pthread_mutex_unlock(&dir->lock);
out:
	node_unref(fs, n);
	return r;
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct sfs *fs = fuse_req_userdata(req);
	fuse_reply_err(req, -do_remove(fs, node_get(fs, parent), name, false));
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct sfs *fs = fuse_req_userdata(req);
	fuse_reply_err(req, -do_remove(fs, node_get(fs, parent), name, true));
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino), *dir = node_get(fs, newparent);
	struct loc src;
	struct stat wst;
	int r;

	if (!fs->has_upper) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!strncmp(newname, WH_PREFIX, WH_PREFIX_LEN)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	node_ref(fs, n);
	if ((r = copyup(fs, n, CU_DATA)) < 0 || (r = copyup_dir(fs, dir)) < 0)
		goto out;
	pthread_mutex_lock(&dir->lock);
	int ufd = node_upperfd(fs, dir);
	if ((r = loc_get(fs, n, &src)) < 0) {
		pthread_mutex_unlock(&dir->lock);
		goto out;
	}
	bool over_cwh = fstatat(ufd, newname, &wst, AT_SYMLINK_NOFOLLOW) == 0;
	if (over_cwh && !wh_is_chardev(&wst))
		r = -EEXIST;
	else if (over_cwh) {
		char tmp[64];
		copyup_tmpname(fs, tmp, sizeof tmp);
		if (linkat(src.dirfd, src.name, fs->workfd, tmp, src.nofollow ? 0 : AT_SYMLINK_FOLLOW) < 0 ||
		    renameat(fs->workfd, tmp, ufd, newname) < 0) {
			r = -errno;
			unlinkat(fs->workfd, tmp, 0);
		}
	} else if (linkat(src.dirfd, src.name, ufd, newname, src.nofollow ? 0 : AT_SYMLINK_FOLLOW) < 0) {
		r = -errno;
	} else if (wh_exists(ufd, newname) == 1) {
		wh_remove(ufd, newname);
	}
	loc_put(&src);
	if (r == 0 && !S_ISREG(n->type) && !fs->privileged)
		origin_in_parent_set(ufd, newname, n->ino);  /* every name shows one number */
	if (r == 0)
		node_dir_changed(fs, dir);
	pthread_mutex_unlock(&dir->lock);
	if (r == 0) {
		struct fuse_entry_param e;
		pthread_mutex_lock(&fs->table_lock);
		n->nlookup++;
		pthread_mutex_unlock(&fs->table_lock);
		r = fill_entry(fs, n, &e);
		if (r == 0) {
			if (fuse_reply_entry(req, &e) != 0)
				node_forget(fs, n, 1);
			node_unref(fs, n);
			return;
		}
		node_forget(fs, n, 1);
	}
out:
	fuse_reply_err(req, -r);
	node_unref(fs, n);
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
static bool dir_has_lower(struct sfs *fs, struct node *n)
{
	bool lower = false;
	dl_rdlock(fs, n);
	for (unsigned i = 0; i < n->ndl; i++)
		if (!is_upper(fs, n->dl[i].layer))
			lower = true;
	pthread_rwlock_unlock(n->dl_lock);
	return lower;
}

/* Prepare directory n, NAME in upper directory ufd, to move (SAMEDIR:
 * within its parent): a redirect written where it has lower layers (one it
 * has is kept where it still holds: an absolute one, or a bare name within
 * one directory). -EXDEV where it may not get one (redirect_dir other than
 * on, an upper without xattrs, a path too long). */
static int dir_move_prepare(struct sfs *fs, struct node *n, int ufd, const char *name, bool samedir,
			    struct dir_move *m)
{
	memset(m, 0, sizeof *m);
	m->lower = dir_has_lower(fs, n);
	if (!m->lower)
		return 0;
	if (fs->opts.redirect_dir != REDIRECT_ON)
		return -EXDEV;
	int r = node_pin_lower(fs, n, &m->lat, &m->nlat);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->table_lock);
	bool keep = n->redirect && (samedir || n->redirect[0] == '/');
	pthread_mutex_unlock(&fs->table_lock);
	if (keep)
		return 0;
	/* absolute even within one directory, where kernel overlayfs writes a
	 * bare name (lookups follow both): what the layer export reads */
	char *red = NULL;
	r = node_redirect_path(fs, n, &red);
	if (r == 0 && strlen(red) > REDIRECT_MAX)
		r = -EXDEV;
	/* the upper refusing it is EXDEV too: mv copies instead */
	if (r == 0 && xa_set(ufd, name, wh_xattr_redirect(&fs->whp), red, strlen(red), 0) < 0)
		r = -EXDEV;
	if (r < 0) {
		free(red);
		dir_move_free(m);
		return r;
	}
	pthread_mutex_lock(&fs->table_lock);
	char *old = n->redirect;
	n->redirect = red;
	pthread_mutex_unlock(&fs->table_lock);
	free(old);
	return 0;
}

/* The move is done: the pinned places find n's lower layers from now on. */
static void dir_move_done(struct sfs *fs, struct node *n, struct dir_move *m)
{
	if (m->lower) {
		node_set_lower_at(fs, n, m->lat, m->nlat);
		m->lat = NULL;
		m->nlat = 0;
	}
}

/* The checks of rename(2) between source s and target t (NULL: none). */
static int rename_check(struct sfs *fs, struct node *s, struct node *t, unsigned flags)
{
	int r;

	/* without redirects a directory with lower layers cannot move: said
	 * before anything is copied up, as kernel overlayfs does */
	if (fs->opts.redirect_dir != REDIRECT_ON &&
	    ((S_ISDIR(s->type) && dir_has_lower(fs, s)) ||
	     (t && (flags & RENAME_EXCHANGE) && S_ISDIR(t->type) && dir_has_lower(fs, t))))
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
	if (S_ISDIR(t->type) && (r = dir_is_empty(fs, t)) <= 0)
		return r == 0 ? -ENOTEMPTY : r;
	return 0;
}

/* RENAME_EXCHANGE of s (NAME in od, upper fd ofd) and t (NEWNAME in nd,
 * nfd). Both directories locked. */
static int rename_exchange(struct sfs *fs, struct node *od, int ofd, const char *name, struct node *s,
			   struct node *nd, int nfd, const char *newname, struct node *t)
{
	struct dir_move ms = { 0 }, mt = { 0 };
	int r = 0;
	bool samedir = od == nd;

	if (S_ISDIR(s->type) && (r = dir_move_prepare(fs, s, ofd, name, samedir, &ms)) < 0)
		return r;
	if (S_ISDIR(t->type) && (r = dir_move_prepare(fs, t, nfd, newname, samedir, &mt)) < 0)
		goto out;
	/* a pure upper directory now standing on a lower name must not merge
	 * with it: asked before anything changes */
	int s_over = S_ISDIR(s->type) && !ms.lower ? name_in_lowers(fs, nd, newname) : 0;
	int t_over = S_ISDIR(t->type) && !mt.lower ? name_in_lowers(fs, od, name) : 0;
	if ((r = s_over < 0 ? s_over : t_over < 0 ? t_over : 0) < 0)
		goto out;
	if (renameat2(ofd, name, nfd, newname, RENAME_EXCHANGE) < 0) {
		r = -errno;
		goto out;
	}
	if (s_over == 1)
		set_opaque_at(fs, nfd, newname);
	if (t_over == 1)
		set_opaque_at(fs, ofd, name);
	dir_move_done(fs, s, &ms);
	dir_move_done(fs, t, &mt);
	char *sname = strdup(name);
	if (sname) {
		node_set_name(fs, t, od, sname);
		free(sname);
	}
	node_set_name(fs, s, nd, newname);
out:
	dir_move_free(&ms);
	dir_move_free(&mt);
	return r;
}

/* Move s (NAME in od, upper fd ofd) to NEWNAME in nd (nfd), replacing t
 * (NULL: nothing there). Both directories locked. */
static int rename_move(struct sfs *fs, struct node *od, int ofd, const char *name, struct node *s,
		       struct node *nd, int nfd, const char *newname, struct node *t)
{
	struct dir_move ms = { 0 };
	int r = 0;

	/* whether the names are in lower layers decides the whiteout and
	 * opacity: asked before anything changes, and an error is an error,
	 * not "no" (the lower name would come back) */
	int s_lower = name_in_lowers(fs, od, name);
	if (s_lower < 0)
		return s_lower;
	int t_lower = name_in_lowers(fs, nd, newname);
	if (t_lower < 0)
		return t_lower;
	if (S_ISDIR(s->type) && (r = dir_move_prepare(fs, s, ofd, name, od == nd, &ms)) < 0)
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
		set_opaque_at(fs, ofd, name);
	nlink_t t_links = 1;
	if (t) {
		node_keep_path(fs, t);   /* the target's name is about to change hands */
		struct stat lst;
		if (!S_ISDIR(t->type) && is_upper(fs, node_layer(t)) &&
		    fstatat(nfd, newname, &lst, AT_SYMLINK_NOFOLLOW) == 0)
			t_links = lst.st_nlink;
	}
	uint64_t s_origin = 0;
	if (!S_ISDIR(s->type) && !S_ISREG(s->type) && !fs->privileged) {
		s_origin = origin_in_parent_get(ofd, name);
		origin_in_parent_clear(fs, ofd, name);
	}
	if (t && !S_ISDIR(t->type))
		origin_in_parent_clear(fs, nfd, newname);
	unsigned rflags = (s_lower == 1 && wh_may_mknod(&fs->whp)) ? RENAME_WHITEOUT : 0;
	if (renameat2(ofd, name, nfd, newname, rflags) < 0) {
		if (rflags && (errno == EPERM || errno == EINVAL)) {
			wh_mknod_refused(&fs->whp);
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
		r = wh_write(ofd, name, &fs->whp);
	if (r == 0 && wh_exists(nfd, newname) == 1)
		wh_remove(nfd, newname);  /* an OCI whiteout for the new name */
	if (r == 0) {
		/* a replaced hard link lives on under its other names: the
		 * next lookup of one of them must find this same node */
		if (t && t_links > 1)
			node_detach(fs, t);
		else if (t)
			node_mark_deleted(fs, t);
		dir_move_done(fs, s, &ms);
		node_set_name(fs, s, nd, newname);
	}
	dir_move_free(&ms);
	return r;
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *od = node_get(fs, parent), *nd = node_get(fs, newparent);
	struct node *s = NULL, *t = NULL;
	int r;

	if (!fs->has_upper) {
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
	s = get_child(fs, od, name, &r);
	if (!s)
		goto out;
	t = get_child(fs, nd, newname, &r);
	if (!t && r != -ENOENT)
		goto out;
	r = 0;
	if (t == s)
		goto out;  /* hard links to one object: nothing to do */
	if ((r = rename_check(fs, s, t, flags)) < 0)
		goto out;
	/* bring everything involved into the upper first */
	if ((r = copyup(fs, s, CU_DATA)) < 0 || (r = copyup_dir(fs, nd)) < 0 || (r = copyup_dir(fs, od)) < 0)
		goto out;
	if ((flags & RENAME_EXCHANGE) && (r = copyup(fs, t, CU_DATA)) < 0)
		goto out;

	lock2(od, nd);
	int ofd = node_upperfd(fs, od), nfd = node_upperfd(fs, nd);
	if (ofd < 0 || nfd < 0)
		r = -EIO;
	else if (flags & RENAME_EXCHANGE)
		r = rename_exchange(fs, od, ofd, name, s, nd, nfd, newname, t);
	else
		r = rename_move(fs, od, ofd, name, s, nd, nfd, newname, t);
	if (r == 0) {
		node_dir_changed(fs, od);
		if (nd != od)
			node_dir_changed(fs, nd);
	}
	unlock2(od, nd);
out:
	if (s)
		node_unref(fs, s);
	if (t)
		node_unref(fs, t);
	fuse_reply_err(req, -r);
}
