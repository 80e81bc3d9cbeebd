#include "whiteout.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static const char *const opaque_xattrs[] = {
	"trusted.overlay.opaque",
	"user.overlay.opaque",
	"user.fuseoverlayfs.opaque",
};

bool wh_is_chardev(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == makedev(0, 0);
}

enum wh_kind wh_classify(const char *name, const struct stat *st, const char **target)
{
	if (strncmp(name, WH_PREFIX, WH_PREFIX_LEN) == 0) {
		if (strcmp(name, WH_OPQ_MARKER) == 0)
			return WH_OPQ;
		if (strncmp(name + WH_PREFIX_LEN, WH_PREFIX, WH_PREFIX_LEN) == 0)
			return WH_RESERVED;
		/* ".wh." alone hides nothing, and ".wh.." / ".wh..." would
		 * name "." or ".." which no layer can delete. */
		const char *t = name + WH_PREFIX_LEN;
		if (!*t || strcmp(t, ".") == 0 || strcmp(t, "..") == 0)
			return WH_RESERVED;
		if (target)
			*target = t;
		return WH_OCI;
	}
	if (st && wh_is_chardev(st))
		return WH_CHARDEV;
	return WH_NONE;
}

int wh_dir_is_opaque(int dirfd, bool check_marker)
{
	char v[8];

	for (size_t i = 0; i < sizeof opaque_xattrs / sizeof *opaque_xattrs; i++) {
		ssize_t n = fgetxattr(dirfd, opaque_xattrs[i], v, sizeof v);
		if (n == 1 && v[0] == 'y')
			return 1;
		if (n < 0 && errno != ENODATA && errno != ENOTSUP && errno != ERANGE &&
		    errno != EPERM && errno != EACCES)
			return -errno;
	}
	if (check_marker) {
		struct stat st;
		if (fstatat(dirfd, WH_OPQ_MARKER, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return 1;
		if (errno != ENOENT)
			return -errno;
	}
	return 0;
}

static int oci_name(char *buf, size_t len, const char *name)
{
	if ((size_t)snprintf(buf, len, WH_PREFIX "%s", name) >= len)
		return -ENAMETOOLONG;
	return 0;
}

#define WH_SHARED "whiteout"

/* Would every later link or mknod of the shared whiteout fail the same way?
 * A full upper (ENOSPC, EDQUOT) or a passing shortage (ENOMEM, EIO) mends
 * itself, and then sharing is what saves inodes: one ENOSPC must not cost
 * an inode per deletion for the rest of the mount. */
static bool lasting(int err)
{
	return err == EPERM || err == EACCES || err == EXDEV || err == EOPNOTSUPP ||
	       err == ENOSYS || err == EROFS;
}

/* Link the shared whiteout to NAME in dirfd: 0, or -errno (then the caller
 * makes one of its own, which also reports errors such as EEXIST). */
static int link_shared(int dirfd, const char *name, struct wh_policy *pol)
{
	for (int tries = 0; tries < 3; tries++) {
		if (linkat(pol->share_dirfd, WH_SHARED, dirfd, name, 0) == 0)
			return 0;
		/* Its link count full: a new one replaces it. Threads racing
		 * here may remove each other's new one; the whiteouts linked to
		 * it stay valid, and the next link makes another. */
		if (errno == EMLINK)
			unlinkat(pol->share_dirfd, WH_SHARED, 0);
		else if (errno != ENOENT) {
			int e = errno;
			if (lasting(e))
				wh_share_off(pol);
			return -e;
		}
		if (mknodat(pol->share_dirfd, WH_SHARED, S_IFCHR | 0, makedev(0, 0)) < 0 &&
		    errno != EEXIST) {
			int e = errno;
			if (lasting(e))
				wh_share_off(pol);
			return -e;
		}
	}
	return -EMLINK;
}

void wh_share_end(struct wh_policy *pol)
{
	unlinkat(pol->share_dirfd, WH_SHARED, 0);
	wh_share_off(pol);
}

int wh_write_chardev(int dirfd, const char *name, struct wh_policy *pol)
{
	if (!wh_may_mknod(pol))
		return -EPERM;
	if (wh_may_share(pol) && link_shared(dirfd, name, pol) == 0)
		return 0;
	if (mknodat(dirfd, name, S_IFCHR | 0, makedev(0, 0)) == 0)
		return 0;
	if (errno == EPERM || errno == EOPNOTSUPP || errno == EACCES) {
		/* Remember: one refusal means every later one would fail too. */
		wh_mknod_refused(pol);
		return -EPERM;
	}
	return -errno;
}

int wh_write(int dirfd, const char *name, struct wh_policy *pol)
{
	char oci[WH_PREFIX_LEN + 256];
	int r;

	if (wh_may_mknod(pol)) {
		r = wh_write_chardev(dirfd, name, pol);
		if (r != -EPERM)
			return r;
	}
	/* A 255-byte name has no room for the prefix: such a file can only be
	 * whited out where mknod works. */
	r = oci_name(oci, sizeof oci, name);
	if (r < 0 || strlen(oci) > 255)
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = openat(dirfd, oci, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0000);
	return fd < 0 ? -errno : 0;
}

int wh_exists(int dirfd, const char *name)
{
	char oci[WH_PREFIX_LEN + 256];
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && wh_is_chardev(&st))
		return 1;
	if (oci_name(oci, sizeof oci, name) == 0 &&
	    fstatat(dirfd, oci, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	return 0;
}

int wh_remove(int dirfd, const char *name)
{
	char oci[WH_PREFIX_LEN + 256];
	struct stat st;
	int removed = 0;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && wh_is_chardev(&st)) {
		if (unlinkat(dirfd, name, 0) < 0)
			return -errno;
		removed = 1;
	}
	if (oci_name(oci, sizeof oci, name) == 0) {
		if (unlinkat(dirfd, oci, 0) == 0)
			removed = 1;
		else if (errno != ENOENT && errno != ENAMETOOLONG)
			return -errno;
	}
	return removed;
}

const char *wh_xattr_opaque(const struct wh_policy *pol)
{
	return pol->use_trusted ? "trusted.overlay.opaque" : "user.overlay.opaque";
}

const char *wh_xattr_redirect(const struct wh_policy *pol)
{
	return pol->use_trusted ? "trusted.overlay.redirect" : "user.overlay.redirect";
}

const char *wh_xattr_metacopy(const struct wh_policy *pol)
{
	return pol->use_trusted ? "trusted.overlay.metacopy" : "user.overlay.metacopy";
}

int wh_set_opaque(int dirfd, const struct wh_policy *pol)
{
	if (fsetxattr(dirfd, wh_xattr_opaque(pol), "y", 1, 0) == 0)
		return 0;
	if (errno != ENOTSUP && errno != EPERM)
		return -errno;
	/* No xattrs on this upper: fall back to the OCI marker file. */
	_cleanup_close_ int fd = openat(dirfd, WH_OPQ_MARKER, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0000);
	return fd < 0 ? -errno : 0;
}
