/* passthrough.c: the kernel's FUSE passthrough (Linux 6.9+). A regular file
 * whose data lives in the upper layer is registered with the kernel as a
 * backing file; reads, writes and mmap of it then go straight to the upper
 * file, with no round trip through the daemon and no second copy in the
 * page cache. Lower files stay in cached mode by default: a copy-up would
 * have to swap the backing file under open descriptors, which the kernel
 * does not allow. With sharecache they are passed through too while only
 * read, and a write to one waits until they are closed, or fails (ETXTBSY):
 * docs/design/passthrough.md.
 *
 * libfuse 3.14 predates the feature, so the INIT and OPEN/CREATE replies it
 * builds are completed here on their way to the kernel (the session's
 * custom writev). The kernel allows passthrough only without its writeback
 * cache and only to a daemon with CAP_SYS_ADMIN; everywhere else strata-fs
 * keeps the writeback cache, as before. */
#include "fs.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

/* The kernel ABI (uapi fuse.h 7.40); Debian 12's headers predate it. */
#define PT_INIT_FLAG2      (1u << 5)       /* FUSE_PASSTHROUGH >> 32 */
#define PT_INIT_EXT        (1u << 30)      /* FUSE_INIT_EXT */
#define PT_FOPEN           (1u << 7)       /* FOPEN_PASSTHROUGH */
#define PT_FOPEN_KEEP_CACHE (1u << 1)
#define PT_INIT2_DIO_MMAP  (1u << 4)       /* FUSE_DIRECT_IO_ALLOW_MMAP >> 32 (7.39) */
struct pt_backing_map {
	int32_t fd;
	uint32_t flags;
	uint64_t padding;
};
#define PT_IOC_BACKING_OPEN  _IOW(229, 1, struct pt_backing_map)
#define PT_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* fuse_init_out as of 7.40: flags2 and max_stack_depth follow max_pages */
struct pt_init_out {
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2, max_stack_depth;
	uint32_t unused[6];
};
struct pt_open_out {
	uint64_t fh;
	uint32_t open_flags;
	int32_t backing_id;
};

/* The reply this thread is about to send needs completing (per thread:
 * the thread that serves a request sends its reply). */
static __thread bool tls_init;
static __thread int tls_backing;

void pt_note_init(struct sfs *fs, const void *arg, size_t size, bool begin)
{
	const struct fuse_init_in *in = arg;
	if (!begin) {
		tls_init = false;
		return;
	}
	tls_init = true;
	if (size >= 4 * sizeof(uint32_t))
		fs->pts.killpriv_v2 = in->flags & FUSE_HANDLE_KILLPRIV_V2;
	/* flags2 follows flags in the INIT request since 7.36 */
	if (size >= 5 * sizeof(uint32_t) && in->major == 7 && in->minor >= 36 && (in->flags & PT_INIT_EXT)) {
		uint32_t flags2 = ((const uint32_t *)arg)[4];
		fs->pts.offered = in->minor >= 40 && (flags2 & PT_INIT_FLAG2);
		fs->pts.dio_mmap = in->minor >= 39 && (flags2 & PT_INIT2_DIO_MMAP);
		uring_note_init(fs, flags2);
	}
}

bool has_init_cap(int cap_bit)
{
	char line[256];
	bool init_ns = false, cap = false;
	FILE *f = fopen("/proc/self/uid_map", "re");
	if (f) {
		unsigned a, b, c;
		init_ns = fgets(line, sizeof line, f) && sscanf(line, "%u %u %u", &a, &b, &c) == 3 &&
			  a == 0 && b == 0 && c == 4294967295u;
		fclose(f);
	}
	f = fopen("/proc/self/status", "re");
	if (f) {
		unsigned long long eff;
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "CapEff: %llx", &eff) == 1)
				cap = eff & (1ull << cap_bit);
		fclose(f);
	}
	return init_ns && cap;
}

bool pt_negotiate(struct sfs *fs)
{
	struct statfs sfs;

	/* An uncached file must still map shared, which the kernel allows only
	 * with FUSE_DIRECT_IO_ALLOW_MMAP: without it such reads stay cached. */
	fs->pts.direct = fs->opts.sharedirect && fs->pts.dio_mmap;
	if (fs->opts.sharedirect && !fs->pts.dio_mmap)
		serr(0, "sharecache=direct on", fs->opts.mountpoint,
		     "the kernel does not offer FUSE_DIRECT_IO_ALLOW_MMAP (Linux 6.6+): each mount keeps "
		     "its own cache of lower files, as with sharecache=off");

	/* BACKING_OPEN needs CAP_SYS_ADMIN */
	fs->pt = fs->opts.passthrough && fs->pts.offered && has_init_cap(CAP_SYS_ADMIN);
	if (!fs->pt)
		return false;
	/* without an upper lower files are passed through anyway */
	fs->pts.share = fs->opts.sharecache && fs->has_upper;
	pthread_cond_init(&fs->pts.released, NULL);
	/* backing files on a stacked filesystem need one more level: the
	 * upper's, or with lower files passed through the lower layers' too
	 * (each filesystem once) */
	unsigned n = (fs->has_upper && !fs->pts.share) || fs->same_dev ? 1 : fs->nlayers;
	for (unsigned i = 0; i < n; i++) {
		bool seen = false;
		for (unsigned k = 0; k < i && !seen; k++)
			seen = fs->layers[k].dev == fs->layers[i].dev;
		if (!seen && fstatfs(fs->layers[i].fd, &sfs) == 0 &&
		    (sfs.f_type == 0x794c7630 /* overlayfs */ || sfs.f_type == 0x65735546 /* fuse */))
			fs->pts.stack_depth = 2;
	}
	return true;
}

static ssize_t pt_writev(int fd, struct iovec *iov, int count, void *ud)
{
	struct sfs *fs = ud;   /* the session's userdata */
	const struct fuse_out_header *out = iov[0].iov_base;
	if (count >= 2 && out->error == 0) {
		if (tls_init && iov[1].iov_len >= sizeof(struct pt_init_out)) {
			struct pt_init_out *io = iov[1].iov_base;
			/* We drop set-id bits on write, truncate and chown
			 * ourselves (ops_attr.c); in return the kernel stops
			 * asking for security.capability before every write. */
			if (fs->pts.killpriv_v2)
				io->flags |= FUSE_HANDLE_KILLPRIV_V2;
			if (fs->pt) {
				io->flags |= PT_INIT_EXT;
				io->flags2 |= PT_INIT_FLAG2;
				io->max_stack_depth = fs->pts.stack_depth;
			}
			if (fs->pts.direct) {
				io->flags |= PT_INIT_EXT;
				io->flags2 |= PT_INIT2_DIO_MMAP;
			}
			if (uring_wanted(fs)) {
				io->flags |= PT_INIT_EXT;
				uring_complete_init(fs, &io->flags2, io->max_write, io->max_pages);
			}
		} else if (tls_backing > 0 && iov[1].iov_len >= sizeof(struct pt_open_out)) {
			/* an OPEN reply, or the open half at the end of a CREATE's */
			struct pt_open_out *oo = (void *)((char *)iov[1].iov_base + iov[1].iov_len -
							  sizeof(struct pt_open_out));
			oo->open_flags = (oo->open_flags & ~PT_FOPEN_KEEP_CACHE) | PT_FOPEN;
			oo->backing_id = tls_backing;
		}
	}
	ssize_t r;
	if (uring_capture(fs, iov, count, &r))
		return r;
	/* a notification may wait for replies queued on this thread */
	if (out->unique == 0)
		uring_flush();
	return writev(fd, iov, count);
}

static ssize_t pt_read(int fd, void *buf, size_t len, void *ud)
{
	return read(fd, buf, len);
}

static ssize_t pt_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			 unsigned int flags, void *ud)
{
	return splice(fdin, offin, fdout, offout, len, flags);
}

int pt_install(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
		.writev = pt_writev,
		.read = pt_read,
		.splice_receive = pt_splice,
		.splice_send = pt_splice,
	};
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

/* Would a descriptor opened with FL do as the backing file? Its flags apply
 * to every read and write through it, so it must be plain read-write (or
 * read-only, where nothing can be written). */
static bool backing_flags_ok(int fl, int acc)
{
	return (fl & O_ACCMODE) == acc && !(fl & (O_APPEND | O_DIRECT | O_SYNC | O_DSYNC));
}

/* Could writing through fd need set-id bits dropped? Writes through a
 * backing file never reach us, so such a file is opened in cached mode. */
static bool writes_setid(int fd, int flags)
{
	struct stat st;
	return (flags & O_ACCMODE) != O_RDONLY && fstat(fd, &st) == 0 && mode_is_setid(st.st_mode);
}

/* Register the lower file holding n's data, read-only, as its backing file
 * (sharecache; under pts.lock): its id, or 0 to go on as without. */
static int pt_lower_backing(struct sfs *fs, struct node *n)
{
	/* The data must be a lower file's and stay so while the backing
	 * lives: no data copy-up finished (a metacopy's data is still the
	 * lower file's), none that truncates or writes under way (they wait
	 * for this backing file to go, pt_write_begin), and the kernel's
	 * inode in no other mode. */
	if ((is_upper(fs, node_layer(n)) && !node_metacopy(n)) || n->pt_writers || n->cached_opens ||
	    n->pt_opens || fs->pts.broken)
		return 0;
	/* (a metacopy's: its data layer's file) */
	int bfd = node_open(fs, n, O_RDONLY);
	if (bfd < 0)   /* (a packed layer's file has no fd: cached) */
		return 0;
	struct pt_backing_map map = { .fd = bfd };
	int r = ioctl(fuse_session_fd(fs->se), PT_IOC_BACKING_OPEN, &map);
	close(bfd);
	if (r <= 0) {
		sdebug("passthrough: registering a lower file: %s; serving it myself", strerror(errno));
		return 0;
	}
	n->backing_id = r;
	n->pt_lower = true;
	return r;
}

/* How long an open for write waits for read-only descriptors passed through
 * to the lower file to go. The kernel releases a file before it tells us
 * (RELEASE comes after close() returned): a program that closes its reader
 * and then opens for write must not see ETXTBSY, one that holds the reader
 * open gets it after this. */
#define PT_WRITE_WAIT_MS 2000

int pt_write_begin(struct sfs *fs, struct node *n)
{
	if (!fs->pts.share || n->type != S_IFREG)
		return 0;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += PT_WRITE_WAIT_MS / 1000;
	until.tv_nsec += (PT_WRITE_WAIT_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	int r = 0;
	pthread_mutex_lock(&fs->pts.lock);
	while (n->pt_opens && n->pt_lower && r == 0)
		r = pthread_cond_clockwait(&fs->pts.released, &fs->pts.lock, CLOCK_MONOTONIC, &until);
	if (n->pt_opens && n->pt_lower) {
		pthread_mutex_unlock(&fs->pts.lock);
		return -ETXTBSY;
	}
	n->pt_writers++;
	pthread_mutex_unlock(&fs->pts.lock);
	return 0;
}

void pt_write_end(struct sfs *fs, struct node *n)
{
	if (!fs->pts.share || n->type != S_IFREG)
		return;
	pthread_mutex_lock(&fs->pts.lock);
	n->pt_writers--;
	pthread_mutex_unlock(&fs->pts.lock);
}

int pt_open(struct sfs *fs, struct node *n, int fd, int flags, bool *counted)
{
	int id = 0;

	*counted = false;
	if (!fs->pt || n->type != S_IFREG)
		return 0;
	pthread_mutex_lock(&fs->pts.lock);
	if (n->pt_opens && n->pt_lower) {
		/* The kernel takes every open of an inode with a backing file
		 * only with that file, and this one is a lower file: readers
		 * share it (the data is the same, as nothing may write it while
		 * it lives); a writer cannot be served (pt_write_begin made it
		 * wait, and this is one that raced it). */
		if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) {
			pthread_mutex_unlock(&fs->pts.lock);
			return -ETXTBSY;
		}
		*counted = true;
		n->pt_opens++;
		id = n->backing_id;
		pthread_mutex_unlock(&fs->pts.lock);
		return id;
	}
	*counted = true;
	if (fs->pts.share && (flags & O_ACCMODE) == O_RDONLY && !(flags & O_TRUNC) &&
	    (id = pt_lower_backing(fs, n)) > 0) {
		n->pt_opens++;
		pthread_mutex_unlock(&fs->pts.lock);
		return id;
	}
	/* A descriptor still open in cached mode pins the kernel's inode to
	 * it; so does a metacopy, whose data is read from a lower file. A
	 * set-id file opened for writing stays cached too, unless the kernel
	 * already holds it in passthrough mode (then its bits go below).
	 * Lower files only without an upper: a copy-up could not swap the
	 * backing file under descriptors open on it, and a read-only
	 * descriptor must see what is written after a copy-up. Without an
	 * upper nothing changes, and reads of lower files then share the
	 * layer's page cache (warm across mounts, never cached twice) and
	 * never reach the daemon. */
	bool eligible = !fs->pts.broken && (is_upper(fs, node_layer(n)) || !fs->has_upper) && !node_metacopy(n) &&
			n->cached_opens == 0;
	bool kill = eligible && writes_setid(fd, flags);
	if (eligible && (!kill || n->pt_opens)) {
		if (n->backing_id == 0) {
			int acc = fs->has_upper ? O_RDWR : O_RDONLY;
			int bfd = backing_flags_ok(fcntl(fd, F_GETFL), acc) ? fd : node_open(fs, n, acc);
			if (bfd >= 0) {
				struct pt_backing_map map = { .fd = bfd };
				int r = ioctl(fuse_session_fd(fs->se), PT_IOC_BACKING_OPEN, &map);
				if (r > 0)
					n->backing_id = r;
				else if (errno == EPERM || errno == EINVAL || errno == ENOTTY || errno == ELOOP) {
					sdebug("passthrough: registering a backing file: %s; serving all files myself",
					       strerror(errno));
					fs->pts.broken = true;
				}
				if (bfd != fd)
					close(bfd);
			}
		}
		if (n->backing_id > 0) {
			n->pt_opens++;
			__atomic_store_n(&n->pt_used, true, __ATOMIC_RELAXED);
			id = n->backing_id;
		}
	}
	if (!id)
		n->cached_opens++;
	pthread_mutex_unlock(&fs->pts.lock);
	/* the kernel needs every open of it in passthrough mode: the bits go
	 * now, before any write could keep them */
	if (kill && id)
		node_kill_setid(fs, n, NULL);
	return id;
}

void pt_release(struct sfs *fs, struct node *n, int id)
{
	pthread_mutex_lock(&fs->pts.lock);
	if (!id) {
		n->cached_opens--;
	} else if (--n->pt_opens == 0) {
		/* the kernel holds its own reference while files use it */
		uint32_t bid = (uint32_t)n->backing_id;
		ioctl(fuse_session_fd(fs->se), PT_IOC_BACKING_CLOSE, &bid);
		n->backing_id = 0;
		if (n->pt_lower) {
			n->pt_lower = false;
			pthread_cond_broadcast(&fs->pts.released);
		}
	}
	pthread_mutex_unlock(&fs->pts.lock);
}

void pt_reply_with(int id)
{
	tls_backing = id;
}
