/* ops_file.c: open files. Opening for write copies the data up first; a
 * read-only open of a lower file reads the lower file directly, and notices
 * a later copy-up so every reader sees the same data (as overlayfs does).
 * Data moves with splice where the kernel allows. */
#include "fs.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

struct fh {
	int fd;
	int flags;
	uint32_t layer;     /* layer the fd is on */
	bool meta;          /* fd reads a metacopy's lower data */
	off_t lower_size;   /* size of a read-only lower file, else -1 */
	unsigned refs;      /* RELEASE may arrive while a read still finishes */
	int pt_id;          /* backing id when in passthrough mode, else 0 */
	bool pt_counted;    /* counted by pt_open(): pt_release() at the end */
	struct node *n;
	pthread_mutex_t lock;
	struct fh *prev, *next; /* open handles, closed at unmount if the kernel
				 * never released them (a mapping outliving it) */
};

static void fh_link(struct sfs *fs, struct fh *h)
{
	pthread_mutex_lock(&fs->open_lock);
	h->next = fs->open_list;
	if (fs->open_list)
		fs->open_list->prev = h;
	fs->open_list = h;
	pthread_mutex_unlock(&fs->open_lock);
}

static void fh_unlink(struct sfs *fs, struct fh *h)
{
	pthread_mutex_lock(&fs->open_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->open_list = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->open_lock);
}

static struct fh *FH(struct fuse_file_info *fi)
{
	return (struct fh *)(uintptr_t)fi->fh;
}

int fh_fd(struct fuse_file_info *fi)
{
	return fi && fi->fh ? FH(fi)->fd : -1;
}

static bool wants_write(int flags)
{
	return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

int real_flags(struct sfs *fs, int flags)
{
	int fl = flags & ~(O_CREAT | O_EXCL | O_NOCTTY);
	fl |= O_CLOEXEC | O_NOFOLLOW;
	if (fs->opts.writeback || fs->pt) {
		/* the kernel's writeback cache reads pages of write-only files
		 * and handles appends itself; a passthrough backing file must be
		 * read-write and append nothing on its own */
		if ((fl & O_ACCMODE) == O_WRONLY)
			fl = (fl & ~O_ACCMODE) | O_RDWR;
		fl &= ~O_APPEND;
	}
	return fl;
}

int fh_new(struct sfs *fs, struct node *n, int fd, int flags, struct fuse_file_info *fi)
{
	struct fh *h = calloc(1, sizeof *h);
	if (!h)
		return -ENOMEM;
	h->fd = fd;
	h->flags = flags;
	h->layer = node_layer(n);
	h->n = n;
	h->lower_size = -1;
	h->refs = 1;
	if (!wants_write(flags) && (!is_upper(fs, node_layer(n)) || node_metacopy(n))) {
		struct stat st;
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
			h->lower_size = st.st_size;
	}
	pthread_mutex_init(&h->lock, NULL);
	node_ref(fs, n);
	fh_link(fs, h);
	fi->fh = (uintptr_t)h;
	h->pt_id = pt_open(fs, n, fd, flags, &h->pt_counted);
	/* lower data never changes; upper data changes only through us,
	 * unless it was written through a backing file behind the cache */
	fi->keep_cache = !h->pt_id && !n->pt_used;
	/* FLUSH would only release locks, which the kernel keeps itself;
	 * where the writeback cache makes the kernel send it anyway, libfuse
	 * answers ENOSYS (no flush operation) and the kernel stops asking:
	 * one round trip fewer per file written (rootless untar) */
	fi->noflush = 1;
	return 0;
}

int fh_reply_open(fuse_req_t req, struct fuse_file_info *fi, const struct fuse_entry_param *e)
{
	pt_reply_with(FH(fi)->pt_id);
	int r = e ? fuse_reply_create(req, e, fi) : fuse_reply_open(req, fi);
	pt_reply_with(0);
	return r;
}

static void fh_put(struct sfs *fs, struct fh *h)
{
	if (__atomic_sub_fetch(&h->refs, 1, __ATOMIC_ACQ_REL))
		return;
	fh_unlink(fs, h);
	if (h->pt_counted)
		pt_release(fs, h->n, h->pt_id);
	close(h->fd);
	pthread_mutex_destroy(&h->lock);
	node_unref(fs, h->n);
	free(h);
}

void fh_free_fi(struct sfs *fs, struct fuse_file_info *fi)
{
	struct fh *h = FH(fi);
	if (!h)
		return;
	fi->fh = 0;
	fh_put(fs, h);
}

/* Open the object (or, for a metacopy read, its lower data). */
int node_open(struct sfs *fs, struct node *n, int flags)
{
	struct loc l;
	int r;
	int32_t dlayer = __atomic_load_n(&n->data_layer, __ATOMIC_ACQUIRE);

	if (node_metacopy(n) && dlayer >= 0 && !wants_write(flags))
		r = loc_get_layer(fs, n, (uint32_t)dlayer, &l);
	else
		r = loc_get(fs, n, &l);
	if (r < 0)
		return r;
	int fd = openat(l.dirfd, l.name, real_flags(fs, flags) & ~(l.nofollow ? 0 : O_NOFOLLOW));
	r = fd < 0 ? -errno : fd;
	loc_put(&l);
	return r;
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	int r;

	if (wants_write(fi->flags)) {
		if (!fs->has_upper) {
			fuse_reply_err(req, EROFS);
			return;
		}
		/* O_TRUNC of a lower file: nothing to copy but metadata */
		enum cu_how how = (fi->flags & O_TRUNC) && !node_metacopy(n) ? CU_EMPTY : CU_DATA;
		if ((r = copyup(fs, n, how)) < 0) {
			fuse_reply_err(req, -r);
			return;
		}
	}
	int fd = node_open(fs, n, fi->flags);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	if ((r = fh_new(fs, n, fd, fi->flags, fi)) < 0) {
		close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	FH(fi)->meta = node_metacopy(n);
	const struct fuse_open_in *raw = loop_request_arg(FUSE_OPEN, sizeof *raw);
	if (raw && (raw->open_flags & FUSE_OPEN_KILL_SUIDGID) && (fi->flags & O_TRUNC))
		node_kill_setid(fs, n, req);
	if (fh_reply_open(req, fi, NULL) != 0)
		fh_free_fi(fs, fi);
}

/* A read-only handle opened before a copy-up switches to the upper copy. */
static int fh_current(struct sfs *fs, struct fh *h)
{
	struct node *n = h->n;
	if ((h->layer == node_layer(n) && h->meta == node_metacopy(n)) || wants_write(h->flags) || n->deleted)
		return h->fd;
	pthread_mutex_lock(&h->lock);
	if (h->layer != node_layer(n) || h->meta != node_metacopy(n)) {
		int fd = node_open(fs, n, O_RDONLY);
		/* dup2 swaps the file behind the number atomically: reads in
		 * flight keep the old file, later ones get the copy */
		if (fd >= 0 && dup2(fd, h->fd) >= 0) {
			h->layer = node_layer(n);
			h->meta = node_metacopy(n);
		}
		if (fd >= 0)
			close(fd);
	}
	int fd = h->fd;
	pthread_mutex_unlock(&h->lock);
	return fd;
}

/* The kernel caches what we return in the merged file's pages: drop the
 * lower file's copy so the data is not cached twice. Layer filesystems
 * cache in large folios that a partial range cannot evict, so whole 2 MiB
 * chunks go once a read has passed them, and the tail at end of file. */
static void drop_layer_cache(struct fh *h, off_t off, size_t size)
{
	const off_t chunk = 2 << 20;
	off_t end = off + (off_t)size;

	if (h->lower_size < 0 || h->layer != node_layer(h->n))
		return;
	off_t s = off / chunk * chunk, e = end / chunk * chunk;
	if (end >= h->lower_size)
		posix_fadvise(h->fd, s, 0, POSIX_FADV_DONTNEED);
	else if (e > s)
		posix_fadvise(h->fd, s, e - s, POSIX_FADV_DONTNEED);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct fh *h = FH(fi);
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fh_current(fs, h);
	buf.buf[0].pos = off;
	/* once replied, the kernel may release the handle: keep it for the
	 * cache drop that follows the reply */
	__atomic_add_fetch(&h->refs, 1, __ATOMIC_ACQ_REL);
	size_t cap;
	char *area = uring_reply_area(&cap);
	if (area && size <= cap) {
		/* straight into the io_uring entry's buffer: one copy fewer */
		struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
		dst.buf[0].mem = area;
		ssize_t n = fuse_buf_copy(&dst, &buf, 0);
		if (n < 0)
			fuse_reply_err(req, (int)-n);
		else
			fuse_reply_buf(req, area, (size_t)n);
	} else {
		fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
	}
	drop_layer_cache(h, off, size);
	fh_put(fs, h);
}

void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct fh *h = FH(fi);
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));

	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = h->fd;
	out.buf[0].pos = off;
	if ((h->flags & O_APPEND) && !fs->opts.writeback) {
		struct stat st;
		if (fstat(h->fd, &st) == 0)
			out.buf[0].pos = st.st_size;
	}
	ssize_t n = fuse_buf_copy(&out, in, 0);
	const struct fuse_write_in *raw = loop_request_arg(FUSE_WRITE, sizeof *raw);
	if (n > 0 && raw && (raw->write_flags & FUSE_WRITE_KILL_SUIDGID))
		node_kill_setid(fs, h->n, req);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	fh_free_fi(fs, fi);
	fuse_reply_err(req, 0);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	int r = 0;
	if (!fs->opts.is_volatile)
		r = (datasync ? fdatasync(FH(fi)->fd) : fsync(FH(fi)->fd)) < 0 ? errno : 0;
	fuse_reply_err(req, r);
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi)
{
	fuse_reply_err(req, fallocate(FH(fi)->fd, mode, offset, length) < 0 ? errno : 0);
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	off_t r = lseek(fh_current(fs, FH(fi)), off, whence);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, r);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct sfs *fs = fuse_req_userdata(req);
	ssize_t n = copy_file_range(fh_current(fs, FH(fi_in)), &off_in, FH(fi_out)->fd, &off_out, len, (unsigned)flags);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}


void op_tmpfile(fuse_req_t req, fuse_ino_t parent, mode_t mode, struct fuse_file_info *fi)
{
	fuse_reply_err(req, EOPNOTSUPP);
}

void fh_close_all(struct sfs *fs)
{
	pthread_mutex_lock(&fs->open_lock);
	struct fh *h = fs->open_list;
	fs->open_list = NULL;
	pthread_mutex_unlock(&fs->open_lock);
	while (h) {
		struct fh *next = h->next;
		close(h->fd);
		pthread_mutex_destroy(&h->lock);
		free(h);
		h = next;
	}
}
