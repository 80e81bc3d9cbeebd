/* io.c: whole reads and writes (io.h). */
#include "io.h"

#include <errno.h>
#include <unistd.h>

int io_read_full(int fd, void *p, size_t n, int64_t off, int short_err)
{
	while (n) {
		ssize_t k = off < 0 ? read(fd, p, n) : pread(fd, p, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return short_err;
		p = (char *)p + k;
		n -= (size_t)k;
		if (off >= 0)
			off += k;
	}
	return 0;
}

int io_write_full(int fd, const void *p, size_t n, int64_t off)
{
	while (n) {
		ssize_t k = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -ENOSPC;
		p = (const char *)p + k;
		n -= (size_t)k;
		if (off >= 0)
			off += k;
	}
	return 0;
}
