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

/* A handle goes from the thread that answers its OPEN to the threads that
 * serve the requests on it through the kernel (they come only after the
 * reply), which ThreadSanitizer cannot see: the reply releases the handle,
 * FH() acquires it. The other way, the free at RELEASE after the last
 * request's reply, is in tests/fs/tsan.supp. */
#ifdef __SANITIZE_THREAD__
#include <sanitizer/tsan_interface.h>
#define HANDLE_OUT(h) __tsan_release(h)
#define HANDLE_IN(h) __tsan_acquire(h)
#else
#define HANDLE_OUT(h) ((void)(h))
#define HANDLE_IN(h) ((void)(h))
#endif

struct fh {
	int fd;             /* -1 while pino is set */
	uint32_t pino;      /* reads a packed layer's file (player, pino), else 0 */
	uint32_t player;
	uint64_t ra_end;    /* packed: where the chunks decompressed ahead end */
	uint64_t rd_end;    /* packed: where the last read ended */
	int flags;
	uint32_t layer;     /* layer the fd is on */
	bool meta;          /* fd reads a metacopy's lower data */
	off_t lower_size;   /* size of a read-only lower file, else -1 */
	bool keep_layer;    /* a program or library: the layer's cache of it stays */
	bool direct;        /* reads lower data uncached (sharecache=direct) */
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
	struct fh *h = (struct fh *)(uintptr_t)fi->fh;
	HANDLE_IN(h);
	return h;
}

int fh_fd(struct fuse_file_info *fi)
{
	return fi && fi->fh ? __atomic_load_n(&FH(fi)->fd, __ATOMIC_ACQUIRE) : -1;
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

/* Programs and shared libraries (ELF files) are what every container of an
 * image maps at its start: the layer's cache of them is kept (drop_layer_cache
 * leaves them), so the next container of the image, in a mount of its own,
 * starts them from memory. Caching them twice while mounted is the price;
 * every other file read is cached once, in the merged file. */
static bool is_elf(int fd)
{
	unsigned char m[4];
	return pread(fd, m, sizeof m, 0) == (ssize_t)sizeof m && m[0] == 0x7f && m[1] == 'E' && m[2] == 'L' &&
	       m[3] == 'F';
}

int fh_new(struct sfs *fs, struct node *n, int fd, int flags, struct fuse_file_info *fi)
{
	struct fh *h = calloc(1, sizeof *h);
	if (!h)
		return -ENOMEM;
	h->pt_id = pt_open(fs, n, fd, flags, &h->pt_counted);
	if (h->pt_id < 0) {
		int r = h->pt_id;
		free(h);
		return r;
	}
	h->fd = fd;
	h->flags = flags;
	h->layer = node_layer(n);
	h->n = n;
	h->lower_size = -1;
	h->refs = 1;
	if (fd >= 0 && !wants_write(flags) && (!is_upper(fs, node_layer(n)) || node_metacopy(n))) {
		struct stat st;
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
			h->lower_size = st.st_size;
			h->keep_layer = is_elf(fd);
		}
	}
	pthread_mutex_init(&h->lock, NULL);
	node_ref(fs, n);
	__atomic_add_fetch(&n->opens, 1, __ATOMIC_ACQ_REL);
	fh_link(fs, h);
	fi->fh = (uintptr_t)h;
	/* lower data never changes; upper data changes only through us,
	 * unless it was written through a backing file behind the cache */
	fi->keep_cache = !h->pt_id && !__atomic_load_n(&n->pt_used, __ATOMIC_RELAXED);
	/* FLUSH would only release locks, which the kernel keeps itself;
	 * where the writeback cache makes the kernel send it anyway, libfuse
	 * answers ENOSYS (no flush operation) and the kernel stops asking:
	 * one round trip fewer per file written (rootless untar) */
	fi->noflush = 1;
	return 0;
}

/* A small lower file opened to be read, the first time: its bytes go into
 * the kernel's cache of it (NOTIFY_STORE) before the open is answered, so
 * the reader finds them there. That spares the READ round trip and the
 * GETATTR that follows every READ (it drops the kernel's cached atime), two
 * of the four requests per file of a cold `tar c`; from a directory layer
 * or a packed one (whose bytes come decompressed from the chunk cache, or
 * a program's kept copy). Only where the cache
 * is kept across opens (lower data never changes), only when no other
 * handle is open on the file (a READ for another reader could then hold
 * a page lock the store waits for, while the thread that would answer it
 * is this one), once per node (a later open finds the pages, or the
 * kernel dropped them and reads as usual), and not over io_uring. The
 * node's lock keeps a copy-up (and so any writer) out until the pages are
 * stored, so they never land over what a writer wrote; a node busy with
 * one is skipped rather than waited for. */
#define PREFILL_MAX (128u << 10)

static void drop_layer_cache(struct sfs *fs, struct fh *h, off_t off, size_t size);

/* The size of the lower file a read-only handle reads (pino: its packed
 * file, or 0), or -1. */
static off_t handle_lower_size(struct sfs *fs, const struct fh *h, uint32_t pino)
{
	struct stat st;
	if (!pino)
		return h->lower_size;
	struct lref r = { .dirfd = -1, .name = NULL, .ino = pino };
	return lower_stat(&fs->layers[h->player].lo, &r, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : -1;
}

static void prefill(struct sfs *fs, struct node *n, struct fh *h, struct fuse_file_info *fi)
{
	if (!fi->keep_cache || fi->direct_io || h->pt_id || (fi->flags & O_DIRECT) || uring_wanted(fs) ||
	    __atomic_load_n(&n->opens, __ATOMIC_ACQUIRE) != 1 || __atomic_load_n(&n->prefilled, __ATOMIC_RELAXED))
		return;
	uint32_t pino = __atomic_load_n(&h->pino, __ATOMIC_ACQUIRE);
	off_t size = handle_lower_size(fs, h, pino);
	if (size <= 0 || size > (off_t)PREFILL_MAX || pthread_mutex_trylock(&n->lock) != 0)
		return;
	void *buf = NULL;
	size_t len = (size_t)size;
	if ((!is_upper(fs, node_layer(n)) || node_metacopy(n)) && __atomic_load_n(&n->opens, __ATOMIC_ACQUIRE) == 1 &&
	    (buf = malloc(len)) &&
	    (pino ? lower_pread(&fs->layers[h->player].lo, pino, buf, len, 0) : pread(h->fd, buf, len, 0)) ==
		    (ssize_t)len) {
		__atomic_store_n(&n->prefilled, true, __ATOMIC_RELAXED);
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
		bv.buf[0].mem = buf;
		/* a refusal leaves the pages to READ: nothing to report */
		if (fuse_lowlevel_notify_store(fs->se, node_id(fs, n), 0, &bv, 0) == 0 && !pino)
			drop_layer_cache(fs, h, 0, len);   /* as a READ would */
	}
	pthread_mutex_unlock(&n->lock);
	free(buf);
}

int fh_reply_open(fuse_req_t req, struct fuse_file_info *fi, const struct fuse_entry_param *e)
{
	/* the last touch of the handle before the kernel may release it on
	 * another thread: then hand it over */
	pt_reply_with(FH(fi)->pt_id);
	HANDLE_OUT(FH(fi));
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
	if (h->fd >= 0)
		close(h->fd);
	pthread_mutex_destroy(&h->lock);
	__atomic_sub_fetch(&h->n->opens, 1, __ATOMIC_ACQ_REL);
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

/* Open the object (or, for a metacopy read, its lower data): 0 with *fd,
 * or, for a file of a packed layer, 0 with *fd -1 and its *layer and
 * *pino (a program kept decompressed: its copy's fd); -errno. */
static int node_open_at(struct sfs *fs, struct node *n, int flags, int *fd, uint32_t *layer, uint32_t *pino)
{
	struct loc l;
	int r;
	int32_t dlayer = __atomic_load_n(&n->data_layer, __ATOMIC_ACQUIRE);

	*fd = -1;
	*pino = 0;
	if (node_metacopy(n) && dlayer >= 0 && !wants_write(flags))
		r = loc_get_layer(fs, n, (uint32_t)dlayer, &l);
	else
		r = loc_get(fs, n, &l);
	if (r < 0)
		return r;
	if (l.pino) {
		/* a program's decompressed copy reads as a directory layer's
		 * file does (progcache) */
		int pfd = wants_write(flags) ? -1 : lower_prog_fd(&fs->layers[l.layer].lo, l.pino);
		if (pfd >= 0) {
			*fd = pfd;
			loc_put(&l);
			return 0;
		}
		*layer = l.layer;
		*pino = l.pino;
		loc_put(&l);
		return wants_write(flags) ? -EROFS : 0;
	}
	*fd = openat(l.dirfd, l.name, real_flags(fs, flags) & ~(l.nofollow ? 0 : O_NOFOLLOW));
	r = *fd < 0 ? -errno : 0;
	loc_put(&l);
	return r;
}

int node_open(struct sfs *fs, struct node *n, int flags)
{
	int fd;
	uint32_t layer, pino;
	int r = node_open_at(fs, n, flags, &fd, &layer, &pino);
	if (r < 0)
		return r;
	return pino ? -EBADF : fd;   /* a packed file has no fd to give */
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	int r;

	bool writer = wants_write(fi->flags);
	if (writer) {
		if (!fs->has_upper) {
			fuse_reply_err(req, EROFS);
			return;
		}
		/* (sharecache: not while readers read the lower file itself) */
		if ((r = pt_write_begin(fs, n)) < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		/* O_TRUNC of a lower file: nothing to copy but metadata */
		enum cu_how how = (fi->flags & O_TRUNC) && !node_metacopy(n) ? CU_EMPTY : CU_DATA;
		if ((r = copyup(fs, n, how)) < 0) {
			pt_write_end(fs, n);
			fuse_reply_err(req, -r);
			return;
		}
	}
	int fd;
	uint32_t player, pino;
	if ((r = node_open_at(fs, n, fi->flags, &fd, &player, &pino)) < 0) {
		if (writer)
			pt_write_end(fs, n);
		fuse_reply_err(req, -r);
		return;
	}
	r = fh_new(fs, n, fd, fi->flags, fi);
	/* counted as an open from here on: a reader takes the cached mode or
	 * this writer's backing file, never the lower file */
	if (writer)
		pt_write_end(fs, n);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, -r);
		return;
	}
	FH(fi)->meta = node_metacopy(n);
	if (pino) {
		/* packed data never changes: the kernel's cache of it stays
		 * valid across opens */
		FH(fi)->player = player;
		__atomic_store_n(&FH(fi)->pino, pino, __ATOMIC_RELEASE);
		fi->keep_cache = 1;
	}
	/* sharecache=direct: lower data is read from the layer's page cache
	 * (a packed layer's: the pack's), which every mount shares, and not
	 * kept in this file's. Programs and libraries keep their cached mode:
	 * they are mapped, and a mapping is cached in the file's pages anyway.
	 * After a copy-up its reads switch to the copy as cached reads do, and
	 * the kernel writes dirty pages of the file back before it sends an
	 * uncached read of them (with FUSE_DIRECT_IO_ALLOW_MMAP), so it reads
	 * what a writer wrote as any reader does (fs_sharedirect). */
	struct fh *h = FH(fi);
	if (fs->pts.direct && !writer && !h->pt_id && ((h->lower_size >= 0 && !h->keep_layer) || pino)) {
		h->direct = true;
		fi->direct_io = 1;
	}
	const struct fuse_open_in *raw = loop_request_arg(FUSE_OPEN, sizeof *raw);
	if (raw && (raw->open_flags & FUSE_OPEN_KILL_SUIDGID) && (fi->flags & O_TRUNC))
		node_kill_setid(fs, n, req);
	if (!writer)
		prefill(fs, n, h, fi);
	if (fh_reply_open(req, fi, NULL) != 0)
		fh_free_fi(fs, fi);
}

/* A read-only handle opened before a copy-up switches to the upper copy:
 * its fd, or -1 with *pino set while it reads a packed file. */
static int fh_current_pk(struct sfs *fs, struct fh *h, uint32_t *pino, uint32_t *layer)
{
	struct node *n = h->n;
	*pino = __atomic_load_n(&h->pino, __ATOMIC_ACQUIRE);
	*layer = h->player;
	if ((h->layer == node_layer(n) && h->meta == node_metacopy(n)) || wants_write(h->flags) || node_deleted(n))
		return *pino ? -1 : __atomic_load_n(&h->fd, __ATOMIC_ACQUIRE);
	pthread_mutex_lock(&h->lock);
	if (h->layer != node_layer(n) || h->meta != node_metacopy(n)) {
		int fd;
		uint32_t nl, np;
		if (node_open_at(fs, n, O_RDONLY, &fd, &nl, &np) == 0) {
			if (np) {
				/* (never from a real file to a packed one: only a
				 * copy-up changes what a handle reads) */
				h->layer = node_layer(n);
				h->meta = node_metacopy(n);
			} else if (h->fd < 0) {
				/* from a packed file to a real one: the fd first, so a
				 * reader that finds no pino finds the fd */
				__atomic_store_n(&h->fd, fd, __ATOMIC_RELEASE);
				fd = -1;
				h->layer = node_layer(n);
				h->meta = node_metacopy(n);
				__atomic_store_n(&h->pino, 0, __ATOMIC_RELEASE);
			} else if (dup2(fd, h->fd) >= 0) {
				/* dup2 swaps the file behind the number atomically:
				 * reads in flight keep the old file, later ones get
				 * the copy */
				h->layer = node_layer(n);
				h->meta = node_metacopy(n);
			}
			if (fd >= 0)
				close(fd);
		}
	}
	*pino = __atomic_load_n(&h->pino, __ATOMIC_ACQUIRE);
	*layer = h->player;
	int fd = *pino ? -1 : h->fd;
	pthread_mutex_unlock(&h->lock);
	return fd;
}

static int fh_current(struct sfs *fs, struct fh *h)
{
	uint32_t pino, layer;
	int fd = fh_current_pk(fs, h, &pino, &layer);
	return pino ? -EBADF : fd;
}

/* How far ahead of a sequential reader of a packed file chunks are
 * decompressed: the kernel's own read-ahead asks for 128 KiB..1 MiB at a
 * time, so the next requests find their chunks in the cache. */
#define PK_AHEAD (4u << 20)

/* The reply of a packed read: into the io_uring entry's buffer where
 * there is one (it is copied there anyway), else written to the kernel
 * straight from the cache's chunks, pinned meanwhile: no copy in between.
 * Bytes replied, or -errno (replied too). */
static ssize_t reply_packed(fuse_req_t req, const struct lower *lo, uint32_t pino, size_t size, off_t off)
{
	size_t cap;
	char *area = uring_reply_area(&cap);
	ssize_t n;
	if (area && size <= cap) {
		n = lower_pread(lo, pino, area, size, (uint64_t)off);
		if (n >= 0)
			fuse_reply_buf(req, area, (size_t)n);
	} else {
		size_t max = size / pk_chunk_size(lo->pk) + 2, np;
		struct pk_piece *p = malloc(max * (sizeof *p + sizeof(struct iovec)));
		if (!p) {
			fuse_reply_err(req, ENOMEM);
			return -ENOMEM;
		}
		struct iovec *iov = (struct iovec *)(p + max);
		n = lower_read_pieces(lo, pino, (uint64_t)off, size, p, max, &np);
		if (n >= 0) {
			for (size_t k = 0; k < np; k++)
				iov[k] = (struct iovec){ (void *)p[k].data, p[k].len };
			fuse_reply_iov(req, iov, (int)np);
			lower_read_done(lo, p, np);
		}
		free(p);
	}
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	return n;
}

static void read_packed(struct sfs *fs, fuse_req_t req, struct fh *h, uint32_t layer, uint32_t pino, size_t size, off_t off)
{
	const struct lower *lo = &fs->layers[layer].lo;
	ssize_t n = reply_packed(req, lo, pino, size, off);
	/* a reader going on about where its last read ended (the kernel's
	 * read-ahead requests may arrive out of order): decompress what it
	 * will ask for next, after the reply (it is not kept waiting) */
	uint64_t end = (uint64_t)off + (n > 0 ? (uint64_t)n : 0);
	uint64_t last = __atomic_exchange_n(&h->rd_end, end, __ATOMIC_RELAXED);
	bool seq = (uint64_t)off <= last + PK_AHEAD / 4 && (uint64_t)off + PK_AHEAD >= last;
	uint64_t ra = __atomic_load_n(&h->ra_end, __ATOMIC_RELAXED);
	if (seq && n > 0 && (uint64_t)n == size && end + PK_AHEAD / 2 > ra) {
		uint64_t from = end > ra ? end : ra;
		__atomic_store_n(&h->ra_end, end + PK_AHEAD, __ATOMIC_RELAXED);
		lower_prefetch(lo, pino, from, end + PK_AHEAD - from);
	}
}

/* The kernel caches what we return in the merged file's pages: drop the
 * lower file's copy so the data is not cached twice. Layer filesystems
 * cache in large folios that a partial range cannot evict, so whole 2 MiB
 * chunks go once a read has passed them, and the tail at end of file. */
static void drop_layer_cache(struct sfs *fs, struct fh *h, off_t off, size_t size)
{
	const off_t chunk = 2 << 20;
	off_t end = off + (off_t)size;

	if (h->lower_size < 0 || h->keep_layer || h->direct || h->layer != node_layer(h->n))
		return;
	/* with sharecache other mounts read the layer's copy directly */
	if (fs->pts.share)
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
	uint32_t pino, player;

	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = fh_current_pk(fs, h, &pino, &player);
	buf.buf[0].pos = off;
	/* once replied, the kernel may release the handle: keep it for the
	 * cache drop that follows the reply */
	__atomic_add_fetch(&h->refs, 1, __ATOMIC_ACQ_REL);
	if (pino) {
		read_packed(fs, req, h, player, pino, size, off);
		fh_put(fs, h);
		return;
	}
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
	drop_layer_cache(fs, h, off, size);
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
	int fd = fh_fd(fi);
	if (!fs->opts.is_volatile && fd >= 0)   /* (a packed file has nothing to sync) */
		r = (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? errno : 0;
	fuse_reply_err(req, r);
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi)
{
	fuse_reply_err(req, fallocate(FH(fi)->fd, mode, offset, length) < 0 ? errno : 0);
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	uint32_t pino, layer;
	int fd = fh_current_pk(fs, FH(fi), &pino, &layer);
	off_t r;
	if (pino)
		r = lower_seek(&fs->layers[layer].lo, pino, off, whence);
	else if ((r = lseek(fd, off, whence)) < 0)
		r = -errno;
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, r);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags)
{
	struct sfs *fs = fuse_req_userdata(req);
	/* from a packed file: EXDEV has the kernel copy through reads */
	int in = fh_current(fs, FH(fi_in));
	if (in < 0) {
		fuse_reply_err(req, EXDEV);
		return;
	}
	ssize_t n = copy_file_range(in, &off_in, FH(fi_out)->fd, &off_out, len, (unsigned)flags);
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
		if (h->fd >= 0)
			close(h->fd);
		pthread_mutex_destroy(&h->lock);
		free(h);
		h = next;
	}
}
