/* io: whole reads and writes, for every part of strata. */
#ifndef STRATA_IO_H
#define STRATA_IO_H

#include <stddef.h>
#include <stdint.h>

/* Read exactly n bytes of fd into p: at off (pread) when off >= 0, else
 * from the file's position. 0, -errno, or short (what the caller says a
 * file or stream that ends first means: -EIO, -EPIPE, ...). */
int io_read_full(int fd, void *p, size_t n, int64_t off, int short_err);

/* Write all n bytes of p to fd: at off (pwrite) when off >= 0, else at
 * the file's position. A short write is carried on, so the error returned
 * is the one that stopped it (ENOSPC, EDQUOT, EIO), never one an earlier
 * call left in errno; a write that makes no progress and gives no reason
 * is -ENOSPC. 0 or -errno. */
int io_write_full(int fd, const void *p, size_t n, int64_t off);

#endif
