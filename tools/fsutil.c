#include "fsutil.h"

#include "err.h"
#include "io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int open_beneath(int rootfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_CLOEXEC),
		.mode = (flags & O_CREAT) ? mode : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	if (!*path)
		path = ".";
	long fd = syscall(SYS_openat2, rootfd, path, &how, sizeof how);
	return fd < 0 ? -errno : (int)fd;
}

int open_regular(int dirfd, const char *path, bool follow, bool beneath, struct stat *st)
{
	int nf = follow ? 0 : O_NOFOLLOW;
	_cleanup_close_ int pfd = beneath ? open_beneath(dirfd, path, O_PATH | nf, 0)
					  : openat(dirfd, path, O_PATH | nf | O_CLOEXEC);
	if (pfd < 0)
		return beneath ? pfd : -errno;
	if (fstat(pfd, st) < 0)
		return -errno;
	if (!S_ISREG(st->st_mode))
		return -EINVAL;
	/* Open it for reading by name again; should the name have changed
	 * to a FIFO meanwhile, O_NONBLOCK keeps the open from waiting and
	 * the inode check refuses it. */
	int fd = beneath ? open_beneath(dirfd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY | nf, 0)
			 : openat(dirfd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | nf);
	if (fd < 0)
		return beneath ? fd : -errno;
	struct stat again;
	if (fstat(fd, &again) < 0 || again.st_dev != st->st_dev || again.st_ino != st->st_ino) {
		close(fd);
		return -EAGAIN;
	}
	*st = again;
	return fd;
}

const char *file_kind(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "a regular file";
	case S_IFDIR: return "a directory";
	case S_IFLNK: return "a symlink";
	case S_IFIFO: return "a FIFO";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	case S_IFSOCK: return "a socket";
	default: return "not a regular file";
	}
}

void fs_full_where(int fd, char *buf, size_t len)
{
	char self[64], path[4096];
	struct stat st, up;
	snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(self, path, sizeof path - 1);
	if (n <= 0 || path[0] != '/' || fstat(fd, &st) < 0) {
		snprintf(buf, len, "the store's filesystem");
		return;
	}
	path[n] = '\0';
	/* Work in progress lives in STORE/tmp/...: name the store. */
	char *t = strstr(path, "/tmp/");
	for (char *q; t && (q = strstr(t + 1, "/tmp/")); t = q)
		;
	if (t)
		*t = '\0';
	char mnt[4096];
	snprintf(mnt, sizeof mnt, "%s", path);
	for (;;) {
		char *slash = strrchr(mnt, '/');
		if (!slash)
			break;
		char keep = slash[1];
		if (slash == mnt)
			slash[1] = '\0';
		else
			*slash = '\0';
		if (stat(mnt, &up) < 0 || up.st_dev != st.st_dev) {
			/* mnt is now above the mount: step back down. */
			if (slash == mnt)
				slash[1] = keep;
			else
				*slash = '/';
			break;
		}
		if (slash == mnt)
			break;
	}
	snprintf(buf, len, "the filesystem mounted at %s (holding %s)", mnt, path);
}

bool fs_full_hint(int fd, int r, char *buf, size_t len)
{
	bool quota = r == EDQUOT || r == -EDQUOT;
	if (!quota && r != ENOSPC && r != -ENOSPC)
		return false;
	char where[PATH_MAX];
	fs_full_where(fd, where, sizeof where);
	snprintf(buf, len, "the store's filesystem is full: %s %s; free space there, or import into a store on "
		 "another filesystem with --store DIR", quota ? "your disk quota is used up on" :
		 "no space or inodes left on", where);
	return true;
}

int rm_rf_at(int parent, const char *name)
{
	if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Layers are read-only by mode; we own them, so make them removable. */
	fchmod(fd, 0700);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		int q = rm_rf_at(dirfd(d), de->d_name);
		if (q < 0 && !r)
			r = q;
	}
	closedir(d);
	if (r < 0)
		return r;
	if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int read_file_at(int dirfd, const char *path, size_t max, char **buf, size_t *len)
{
	/* Non-blocking: a FIFO in its place must fail, not hang (read_fd
	 * refuses anything but a regular file). */
	_cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	return read_fd(fd, max, buf, len);
}

int read_fd(int fd, size_t max, char **buf, size_t *len)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((size_t)st.st_size > max)
		return -EFBIG;
	char *b = malloc((size_t)st.st_size + 1);
	if (!b)
		return -ENOMEM;
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(b);
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	b[got] = '\0';
	*buf = b;
	if (len)
		*len = got;
	return 0;
}

int write_file_atomic(int dirfd, const char *path, const void *data, size_t len)
{
	char tmp[4096];
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= sizeof tmp)
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int e = io_write_full(fd, data, len, -1);
	if (e == 0 && (fsync(fd) < 0 || renameat(dirfd, tmp, dirfd, path) < 0))
		e = -errno;
	if (e < 0)
		unlinkat(dirfd, tmp, 0);
	return e;
}

long long copy_fd(int in, int out)
{
	char buf[1 << 16];
	long long total = 0;
	for (;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return total;
		int e = io_write_full(out, buf, (size_t)n, -1);
		if (e < 0)
			return e;
		total += n;
	}
}

static int cmpstr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int list_sorted(int dirfd, char ***names, size_t *n)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	char **v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			char **nv = realloc(v, cap * sizeof *v);
			if (!nv)
				goto oom;
			v = nv;
		}
		if (!(v[cnt] = strdup(de->d_name)))
			goto oom;
		cnt++;
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof *v, cmpstr);
	*names = v;
	*n = cnt;
	return 0;
oom:
	closedir(d);
	free_names(v, cnt);
	return -ENOMEM;
}

void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

int read_small(const char *path, char *buf, size_t len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, len - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return (int)n;
}
