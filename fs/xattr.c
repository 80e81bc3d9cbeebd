/* xattr.c: extended attributes of an entry named relative to a directory fd,
 * never following a symlink. Linux 6.13 has *xattrat(); older kernels get
 * the same through an O_PATH fd and its /proc/self/fd magic link. */
#include "fs.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef SYS_setxattrat
#define SYS_setxattrat 463
#define SYS_getxattrat 464
#define SYS_listxattrat 465
#define SYS_removexattrat 466
#endif

struct xattr_args_k {
	uint64_t value;
	uint32_t size;
	uint32_t flags;
};

static int have_at = 1;   /* cleared once the kernel says ENOSYS (the process's, not a mount's) */

/* Names inside a layer are relative and never followed; the only absolute
 * ones are /proc/self/fd links to objects already unlinked, which must be
 * followed to reach the object. */
static unsigned at_flags(const char *name)
{
	return name[0] == '/' ? 0 : AT_SYMLINK_NOFOLLOW;
}

static int opath(int dirfd, const char *name, char *buf, size_t len)
{
	/* same rule as at_flags(): only a /proc link is followed */
	int fd = openat(dirfd, name, O_PATH | O_CLOEXEC | (name[0] == '/' ? 0 : O_NOFOLLOW));
	if (fd < 0)
		return -errno;
	snprintf(buf, len, "/proc/self/fd/%d", fd);
	return fd;
}

ssize_t xa_get(int dirfd, const char *name, const char *key, void *buf, size_t sz)
{
	if (!name || !*name) {
		ssize_t n = fgetxattr(dirfd, key, buf, sz);
		return n < 0 ? -errno : n;
	}
	if (__atomic_load_n(&have_at, __ATOMIC_RELAXED)) {
		struct xattr_args_k a = { .value = (uintptr_t)buf, .size = (uint32_t)sz };
		long n = syscall(SYS_getxattrat, dirfd, name, at_flags(name), key, &a, sizeof a);
		if (n >= 0 || errno != ENOSYS)
			return n < 0 ? -errno : n;
		__atomic_store_n(&have_at, 0, __ATOMIC_RELAXED);
	}
	char p[64];
	_cleanup_close_ int fd = opath(dirfd, name, p, sizeof p);
	if (fd < 0)
		return fd;
	ssize_t n = getxattr(p, key, buf, sz);
	return n < 0 ? -errno : n;
}

int xa_set(int dirfd, const char *name, const char *key, const void *v, size_t sz, int flags)
{
	if (!name || !*name)
		return fsetxattr(dirfd, key, v, sz, flags) < 0 ? -errno : 0;
	if (__atomic_load_n(&have_at, __ATOMIC_RELAXED)) {
		struct xattr_args_k a = { .value = (uintptr_t)v, .size = (uint32_t)sz, .flags = (uint32_t)flags };
		long r = syscall(SYS_setxattrat, dirfd, name, at_flags(name), key, &a, sizeof a);
		if (r >= 0 || errno != ENOSYS)
			return r < 0 ? -errno : 0;
		__atomic_store_n(&have_at, 0, __ATOMIC_RELAXED);
	}
	char p[64];
	_cleanup_close_ int fd = opath(dirfd, name, p, sizeof p);
	if (fd < 0)
		return fd;
	int r = setxattr(p, key, v, sz, flags);
	return r < 0 ? -errno : 0;
}

ssize_t xa_list(int dirfd, const char *name, char *buf, size_t sz)
{
	if (!name || !*name) {
		ssize_t n = flistxattr(dirfd, buf, sz);
		return n < 0 ? -errno : n;
	}
	if (__atomic_load_n(&have_at, __ATOMIC_RELAXED)) {
		long n = syscall(SYS_listxattrat, dirfd, name, at_flags(name), buf, sz);
		if (n >= 0 || errno != ENOSYS)
			return n < 0 ? -errno : n;
		__atomic_store_n(&have_at, 0, __ATOMIC_RELAXED);
	}
	char p[64];
	_cleanup_close_ int fd = opath(dirfd, name, p, sizeof p);
	if (fd < 0)
		return fd;
	ssize_t n = listxattr(p, buf, sz);
	return n < 0 ? -errno : n;
}

int xa_remove(int dirfd, const char *name, const char *key)
{
	if (!name || !*name)
		return fremovexattr(dirfd, key) < 0 ? -errno : 0;
	if (__atomic_load_n(&have_at, __ATOMIC_RELAXED)) {
		long r = syscall(SYS_removexattrat, dirfd, name, at_flags(name), key);
		if (r >= 0 || errno != ENOSYS)
			return r < 0 ? -errno : 0;
		__atomic_store_n(&have_at, 0, __ATOMIC_RELAXED);
	}
	char p[64];
	_cleanup_close_ int fd = opath(dirfd, name, p, sizeof p);
	if (fd < 0)
		return fd;
	int r = removexattr(p, key);
	return r < 0 ? -errno : 0;
}

/* xattrs that carry layer bookkeeping: never shown through the merged view,
 * never settable through it, never copied up. */
bool xa_is_private(const char *key)
{
	static const char *const pfx[] = {
		"trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.",
		"trusted.strata.", "user.strata.", "security.fuseoverlayfs.",
		"user.containers.override_stat", "security.containers.override_stat",
	};
	for (size_t i = 0; i < sizeof pfx / sizeof *pfx; i++)
		if (!strncmp(key, pfx[i], strlen(pfx[i])))
			return true;
	return false;
}
