/* ops_xattr.c: extended attributes through the merged view. Layer
 * bookkeeping (overlay.*, strata.*, ownership overrides) stays hidden;
 * changing an xattr copies metadata up, never data. */
#include "fs.h"

#include <string.h>
#include <sys/xattr.h>

static bool acl_key(const char *k)
{
	return !strncmp(k, "system.posix_acl_", 17);
}

/* Why a change of xattr NAME is refused before looking at the object. */
static int change_refused(struct sfs *fs, const char *name)
{
	if (!fs->has_upper)
		return EROFS;
	if (xa_is_private(name))
		return EPERM;   /* layer bookkeeping is not the user's */
	if (fs->opts.noacl && acl_key(name))
		return EOPNOTSUPP;
	return 0;
}

/* What getxattr of NAME answers when the object has no such xattr. Where
 * SELinux runs, the kernel answers security.selinux itself and never asks
 * us, so a request for it means no security module keeps labels on this
 * host: "not supported" for a file without one lets ls -l and libselinux
 * stop asking for each file of the mount (one round trip per file
 * otherwise), while a label a layer does hold is still returned. */
static int absent(struct sfs *fs, const char *name)
{
	if (!fs->opts.unlabeled_enodata && !strcmp(name, "security.selinux"))
		return EOPNOTSUPP;
	return ENODATA;
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	struct loc l;
	int r;

	if (xa_is_private(name)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	/* The kernel caches ACLs only where the mount takes them: with noacl
	 * every `ls -l` asked for each file's ACL. "Not supported", as for
	 * setting one, is true of the mount, and ls stops asking. */
	if (fs->opts.noacl && acl_key(name)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	bool lower = !is_upper(fs, node_layer(n)) && !node_metacopy(n);
	if (lower && __atomic_load_n(&n->xa_none, __ATOMIC_RELAXED)) {
		fuse_reply_err(req, absent(fs, name));
		return;
	}
	if ((r = loc_get(fs, n, &l)) < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (lower && !S_ISDIR(n->type)) {
		/* learn once whether this lower object has any xattr we show */
		char list[1024];
		ssize_t ln = loc_xa_list(fs, &l, list, sizeof list);
		bool none = ln == 0 || ln == -ENOTSUP;
		if (ln > 0) {
			none = true;
			for (char *k = list; k < list + ln; k += strlen(k) + 1)
				if (!xa_is_private(k))
					none = false;
		}
		if (none && !is_upper(fs, node_layer(n))) {
			__atomic_store_n(&n->xa_none, true, __ATOMIC_RELAXED);
			loc_put(&l);
			fuse_reply_err(req, absent(fs, name));
			return;
		}
	}
	char *buf = size ? malloc(size) : NULL;
	ssize_t len = loc_xa_get(fs, &l, name, buf, size);
	loc_put(&l);
	if (len == -ENODATA || len == -ENOTSUP)
		fuse_reply_err(req, absent(fs, name));
	else if (len < 0)
		fuse_reply_err(req, (int)-len);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else
		fuse_reply_buf(req, buf, (size_t)len);
	free(buf);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	struct loc l;
	char buf[65536], out[65536];
	size_t k = 0;
	int r;

	if ((r = loc_get(fs, n, &l)) < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	ssize_t len = loc_xa_list(fs, &l, buf, sizeof buf);
	loc_put(&l);
	if (len < 0) {
		if (len == -ENOTSUP)
			len = 0;
		else {
			fuse_reply_err(req, (int)-len);
			return;
		}
	}
	for (char *p = buf; p < buf + len; p += strlen(p) + 1) {
		if (xa_is_private(p) || (fs->opts.noacl && acl_key(p)))
			continue;
		size_t pl = strlen(p) + 1;
		memcpy(out + k, p, pl);
		k += pl;
	}
	if (size == 0)
		fuse_reply_xattr(req, k);
	else if (k > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, out, k);
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	struct loc l;
	int r = change_refused(fs, name);

	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	node_ref(fs, n);
	/* a flag that must fail fails before any copy-up */
	if ((flags & (XATTR_CREATE | XATTR_REPLACE)) && !is_upper(fs, node_layer(n)) &&
	    (r = loc_get(fs, n, &l)) == 0) {
		ssize_t have = loc_xa_get(fs, &l, name, NULL, 0);
		loc_put(&l);
		int e = (flags & XATTR_CREATE) && have >= 0 ? EEXIST
		      : (flags & XATTR_REPLACE) && have < 0 ? ENODATA : 0;
		if (e) {
			node_unref(fs, n);
			fuse_reply_err(req, e);
			return;
		}
	}
	if ((r = copyup(fs, n, CU_META)) == 0 && (r = loc_get(fs, n, &l)) == 0) {
		r = xa_set(l.dirfd, l.name, name, value, size, flags);
		loc_put(&l);
	}
	node_unref(fs, n);
	fuse_reply_err(req, -r);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	struct loc l;
	int r = change_refused(fs, name);

	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	node_ref(fs, n);
	/* nothing to remove: fail as the kernel does, without a copy-up */
	if (!is_upper(fs, node_layer(n)) && (r = loc_get(fs, n, &l)) == 0) {
		ssize_t have = loc_xa_get(fs, &l, name, NULL, 0);
		loc_put(&l);
		if (have < 0) {
			node_unref(fs, n);
			fuse_reply_err(req, have == -ENOTSUP ? ENODATA : (int)-have);
			return;
		}
	}
	if ((r = copyup(fs, n, CU_META)) == 0 && (r = loc_get(fs, n, &l)) == 0) {
		r = xa_remove(l.dirfd, l.name, name);
		loc_put(&l);
	}
	node_unref(fs, n);
	fuse_reply_err(req, -r);
}
