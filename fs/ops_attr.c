/* ops_attr.c: attributes: getattr, setattr (copy-up first, metadata only
 * where it can), readlink, statfs, and how attributes are presented
 * (inode numbers, ownership override, id mapping, squashing). */
#include "fs.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

void req_owner(struct sfs *fs, fuse_req_t req, uid_t *uid, gid_t *gid)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);
	*uid = idmap_to_outside(&fs->opts.uidmap, c->uid);
	*gid = idmap_to_outside(&fs->opts.gidmap, c->gid);
}

/* The override xattr of the object at fd, or name in dirfd, or (pk set) of
 * a packed layer's object, applied to st. */
static void apply_override(struct sfs *fs, struct stat *st, int dirfd, const char *name, int fd,
			   const struct loc *pk)
{
	static const char *const keys[] = {
		"user.containers.override_stat", "security.containers.override_stat",
		"user.fuseoverlayfs.override_stat", "security.fuseoverlayfs.override_stat",
	};
	char v[128], names[2048];
	ssize_t n = -1;
	/* One listing instead of four reads that mostly find nothing: a
	 * rootless untar stats each new file three times or more (4 -> 1
	 * system calls each). A list too long for the buffer: read them all. */
	int xfd = fd >= 0 ? fd : dirfd;
	const char *xname = fd >= 0 ? NULL : name;   /* NULL: the descriptor itself */
	if (xfd < 0 && !pk)
		return;
	ssize_t ln = pk ? loc_xa_list(fs, pk, names, sizeof names) : xa_list(xfd, xname, names, sizeof names);
	if (ln == 0 || ln == -ENOTSUP || ln == -ENODATA)
		return;
	for (size_t i = 0; i < sizeof keys / sizeof *keys && n < 0; i++) {
		bool listed = ln < 0;
		for (ssize_t k = 0; !listed && k < ln; k += (ssize_t)strlen(names + k) + 1)
			listed = !strcmp(names + k, keys[i]);
		if (listed)
			n = pk ? loc_xa_get(fs, pk, keys[i], v, sizeof v - 1)
			       : xa_get(xfd, xname, keys[i], v, sizeof v - 1);
	}
	if (n <= 0)
		return;
	v[n] = '\0';
	unsigned uid, gid, mode;
	if (sscanf(v, "%u:%u:%o", &uid, &gid, &mode) != 3)
		return;
	st->st_uid = uid;
	st->st_gid = gid;
	st->st_mode = (st->st_mode & S_IFMT) | (mode & 07777);
}

/* Owner and mode as stored: the file's, or its override xattr's. */
static int stored_stat(struct sfs *fs, const struct loc *l, struct stat *st)
{
	if (fstatat(l->dirfd, l->name, st, l->nofollow) < 0)
		return -errno;
	apply_override(fs, st, l->dirfd, l->name, -1, NULL);
	return 0;
}

void present_stat(struct sfs *fs, struct node *n, struct stat *st, int fd, int dirfd, const char *name)
{
	struct strata_opts *o = &fs->opts;

	st->st_ino = n->ino;
	if (S_ISDIR(n->type) && (__atomic_load_n(&n->ndl, __ATOMIC_ACQUIRE) > 1 || (n == fs->root && fs->nlayers > 1)))
		st->st_nlink = 1;  /* merged: counting subdirectories is not worth it */
	if (o->xattr_permissions || fs->no_dac)
		apply_override(fs, st, dirfd, name, fd, NULL);
	st->st_uid = idmap_to_inside(&o->uidmap, st->st_uid);
	st->st_gid = idmap_to_inside(&o->gidmap, st->st_gid);
	if (o->squash_to_root) {
		st->st_uid = 0;
		st->st_gid = 0;
	}
	if (o->squash_uid >= 0)
		st->st_uid = (uid_t)o->squash_uid;
	if (o->squash_gid >= 0)
		st->st_gid = (gid_t)o->squash_gid;
}

int node_stat(struct sfs *fs, struct node *n, struct stat *st)
{
	struct loc l;
	int r = loc_get(fs, n, &l);

	if (r < 0)
		return r;
	if ((r = loc_stat(fs, &l, st)) < 0)
		;
	else {
		if (node_metacopy(n) && __atomic_load_n(&n->data_layer, __ATOMIC_ACQUIRE) >= 0) {
			/* blocks are the lower data's until data is copied up */
			struct loc dl;
			struct stat ds;
			int32_t dlayer = __atomic_load_n(&n->data_layer, __ATOMIC_ACQUIRE);
			if (dlayer >= 0 && loc_get_layer(fs, n, (uint32_t)dlayer, &dl) == 0) {
				if (loc_stat(fs, &dl, &ds) == 0)
					st->st_blocks = ds.st_blocks;
				loc_put(&dl);
			}
		}
		/* a packed layer's object has no fd or name for present_stat():
		 * its override xattr (a rootless layer's owners) is read here */
		if (l.pino && (fs->opts.xattr_permissions || fs->no_dac))
			apply_override(fs, st, -1, NULL, -1, &l);
		present_stat(fs, n, st, -1, l.dirfd, l.name);
	}
	loc_put(&l);
	return r;
}

int fill_entry(struct sfs *fs, struct node *n, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	int r = node_stat(fs, n, &e->attr);
	if (r < 0)
		return r;
	e->ino = node_id(fs, n);
	e->generation = 1;
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
	return 0;
}

int fill_entry_st(struct sfs *fs, struct node *n, const struct stat *st, struct fuse_entry_param *e)
{
	/* the stat a lookup just made is the object's: no second one, unless
	 * presentation needs more than the stat (metacopy blocks, override) */
	if (node_metacopy(n) || fs->opts.xattr_permissions || fs->no_dac)
		return fill_entry(fs, n, e);
	memset(e, 0, sizeof *e);
	e->attr = *st;
	present_stat(fs, n, &e->attr, -1, -1, NULL);
	e->ino = node_id(fs, n);
	e->generation = 1;
	e->attr_timeout = fs->timeout;
	e->entry_timeout = fs->timeout;
	return 0;
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	struct stat st;
	int r = node_stat(fs, n, &st);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, fs->timeout);
}

/* chmod of the object at l (node n, already in the upper). */
static int apply_mode(struct sfs *fs, struct node *n, struct loc *l, mode_t mode)
{
	int r = 0;
	if (S_ISLNK(n->type)) {
		r = -EOPNOTSUPP;
	} else if ((fs->opts.xattr_permissions || fs->no_dac) &&
		   (S_ISREG(n->type) || S_ISDIR(n->type))) {
		/* the override is the truth (user.* xattrs live on files
		 * and directories only); the file itself stays
		 * readable by the daemon */
		struct stat cur;
		r = stored_stat(fs, l, &cur);
		if (r == 0)
			r = override_write(fs, l->dirfd, l->name, -1, cur.st_uid, cur.st_gid, mode);
		/* the file follows, but stays usable by its owner, the
		 * daemon: tools that read the upper see the mode */
		if (r == 0)
			fchmodat(l->dirfd, l->name, (mode & 07777) | owner_access(cur.st_mode), 0);
	} else if (fchmodat(l->dirfd, l->name, mode & 07777, 0) < 0) {
		r = -errno;
	}
	return r;
}

bool mode_is_setid(mode_t mode)
{
	return mode & (S_ISUID | S_ISGID);
}

/* May the caller of req keep set-group-ID on a file of group gid? Only
 * root or a member of the group (the kernel's in_group_or_capable). */
static bool req_in_group(fuse_req_t req, gid_t gid)
{
	if (!req)
		return false;
	const struct fuse_ctx *c = fuse_req_ctx(req);
	if (c->uid == 0 || c->gid == gid)
		return true;
	gid_t list[256];
	int n = fuse_req_getgroups(req, 256, list);
	for (int i = 0; i < n && i < 256; i++)
		if (list[i] == gid)
			return true;
	return false;
}

/* What the kernel leaves to us with FUSE_HANDLE_KILLPRIV_V2: a write,
 * truncate or chown by someone without CAP_FSETID drops set-user-ID, and
 * set-group-ID where it is an executable's or the writer is not in the
 * file's group (the kernel's setattr_should_drop_sgid). 1 when the mode
 * changed. */
static int kill_setid_at(struct sfs *fs, struct node *n, struct loc *l, fuse_req_t req)
{
	struct stat st;
	int r = node_stat(fs, n, &st);
	if (r < 0 || !S_ISREG(st.st_mode) || !mode_is_setid(st.st_mode))
		return r;
	mode_t m = st.st_mode & ~(mode_t)S_ISUID;
	if ((m & S_ISGID) && ((m & S_IXGRP) || !req_in_group(req, st.st_gid)))
		m &= ~(mode_t)S_ISGID;
	if (m == st.st_mode)
		return 0;
	r = apply_mode(fs, n, l, m);
	return r < 0 ? r : 1;
}

int node_kill_setid(struct sfs *fs, struct node *n, fuse_req_t req)
{
	struct loc l;
	int r = loc_get(fs, n, &l);
	if (r < 0)
		return r;
	r = kill_setid_at(fs, n, &l, req);
	loc_put(&l);
	/* outside a SETATTR no reply carries the new mode: the kernel would
	 * show its cached one until the attribute timeout */
	if (r > 0 && fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, node_id(fs, n), -1, 0);
	return r < 0 ? r : 0;
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	struct loc l;
	int r;
	bool sized = false;   /* between pt_write_begin() and _end() */

	if (!fs->has_upper) {
		fuse_reply_err(req, EROFS);
		return;
	}
	const struct fuse_setattr_in *raw = loop_request_arg(FUSE_SETATTR, sizeof *raw);
	/* n->name may be replaced by a rename on another thread: read it only
	 * when debugging (a log line may then show either name) */
	if (strata_debug)
		sdebug("setattr %s valid=%#x (raw %#x) size=%lld mtime=%lld.%09ld", n->name, to_set,
		       raw ? raw->valid : 0, (long long)attr->st_size, (long long)attr->st_mtim.tv_sec,
		       attr->st_mtim.tv_nsec);
	node_ref(fs, n);
	/* ctime follows any change by itself; the kernel's writeback cache
	 * sends it alone after an unlink, and an unlinked lower file has
	 * nothing left to change */
	to_set &= FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE |
		  FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
		  FUSE_SET_ATTR_MTIME_NOW;
	/* also alone: a write by someone without CAP_FSETID comes first */
	bool kill = raw && (raw->valid & FATTR_KILL_SUIDGID);
	if ((!to_set && !kill) || (node_deleted(n) && !is_upper(fs, node_layer(n)))) {
		r = 0;
		goto out;
	}
	/* (sharecache: no truncate while readers read the lower file itself) */
	if ((to_set & FUSE_SET_ATTR_SIZE) && (r = pt_write_begin(fs, n)) < 0)
		goto out;
	sized = to_set & FUSE_SET_ATTR_SIZE;
	/* size needs the data; anything else only the metadata */
	r = copyup(fs, n, !(to_set & FUSE_SET_ATTR_SIZE) ? CU_META : attr->st_size == 0 ? CU_EMPTY : CU_DATA);
	if (r < 0)
		goto out;
	if ((r = loc_get(fs, n, &l)) < 0)
		goto out;
	int fd = fi ? fh_fd(fi) : -1;

	if (to_set & FUSE_SET_ATTR_MODE)
		r = apply_mode(fs, n, &l, attr->st_mode);
	if (r == 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		uid_t uid = (uid_t)-1;
		gid_t gid = (gid_t)-1;
		if (to_set & FUSE_SET_ATTR_UID)
			uid = idmap_to_outside(&fs->opts.uidmap, attr->st_uid);
		if (to_set & FUSE_SET_ATTR_GID)
			gid = idmap_to_outside(&fs->opts.gidmap, attr->st_gid);
		if (fs->opts.xattr_permissions) {
			struct stat cur;
			r = stored_stat(fs, &l, &cur);
			if (r == 0)
				r = override_write(fs, l.dirfd, l.name, -1, uid == (uid_t)-1 ? cur.st_uid : uid,
						   gid == (gid_t)-1 ? cur.st_gid : gid, cur.st_mode);
		} else if (fchownat(l.dirfd, l.name, uid, gid, l.nofollow) < 0) {
			r = -errno;
		}
	}
	if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		/* With the writeback cache the kernel keeps mtime itself and
		 * sends none for a truncate to the current size: leave the file
		 * alone then, so what is on disk stays what the kernel shows. */
		struct stat cur;
		if (fs->opts.writeback && !(to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) &&
		    fstatat(l.dirfd, l.name, &cur, l.nofollow) == 0 && cur.st_size == attr->st_size)
			to_set &= ~FUSE_SET_ATTR_SIZE;
	}
	if (r == 0 && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (fd >= 0 && !node_deleted(n))
			r = ftruncate(fd, attr->st_size) < 0 ? -errno : 0;
		else {
			_cleanup_close_ int tfd = openat(l.dirfd, l.name,
							 O_WRONLY | O_CLOEXEC | (l.nofollow ? O_NOFOLLOW : 0));
			if (tfd < 0 || ftruncate(tfd, attr->st_size) < 0)
				r = -errno;
		}
	}
	if (r == 0 && kill && (r = kill_setid_at(fs, n, &l, req)) > 0)
		r = 0;
	if (r == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			ts[0] = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_MTIME)
			ts[1] = attr->st_mtim;
		if (utimensat(l.dirfd, l.name, ts, l.nofollow) < 0)
			r = -errno;
	}
	loc_put(&l);
out:
	if (sized)
		pt_write_end(fs, n);
	if (r < 0)
		fuse_reply_err(req, -r);
	else {
		struct stat st;
		r = node_stat(fs, n, &st);
		if (r < 0)
			fuse_reply_err(req, -r);
		else
			fuse_reply_attr(req, &st, fs->timeout);
	}
	node_unref(fs, n);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	char buf[PATH_MAX + 1];
	struct loc l;
	int r = loc_get(fs, n, &l);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	ssize_t len = l.pino || l.nofollow ? loc_readlink(fs, &l, buf, sizeof buf - 1)
				 : readlinkat(n->pathfd, "", buf, sizeof buf - 1);
	int e = len < 0 && !l.pino && !l.nofollow ? errno : len < 0 ? (int)-len : 0;
	loc_put(&l);
	if (len < 0) {
		fuse_reply_err(req, e);
		return;
	}
	buf[len] = '\0';
	fuse_reply_readlink(req, buf);
}

void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct statvfs sv;
	/* the upper is where writes go; read-only mounts show the top lower */
	if (fs->layers[0].fd >= 0 ? fstatvfs(fs->layers[0].fd, &sv) < 0
				   : statvfs(fs->layers[0].path, &sv) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	sv.f_namemax = NAME_MAX;
	fuse_reply_statfs(req, &sv);
}
