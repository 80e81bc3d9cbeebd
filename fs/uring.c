/* uring.c: FUSE over io_uring (Linux 6.14+, with fuse.enable_uring=1).
 *
 * Through /dev/fuse a request costs two wake-ups across CPUs: the kernel
 * queues it, wakes a reader wherever that reader last ran, and the reply
 * wakes the client back. On a virtual machine each wake-up of an idle vCPU
 * is an exit to the host, tens of microseconds, more than serving the
 * request. With io_uring the kernel keeps one queue per CPU and hands a
 * request to the queue of the CPU its client runs on; the thread serving
 * that queue here is pinned to the same CPU, so a request and its reply
 * are two context switches on one CPU.
 *
 * Each queue thread owns one io_uring and a few ring entries (a header
 * buffer and a payload buffer registered with the kernel). A request
 * arrives as the completion of an entry's previous command; the reply goes
 * back in the same buffers with COMMIT_AND_FETCH, which also re-arms the
 * entry. FORGET, INTERRUPT and the notifications we send still travel
 * through /dev/fuse (loop.c keeps reading it).
 *
 * libfuse 3.14 knows nothing of this: requests are reassembled in the
 * layout /dev/fuse gives (headers just before the payload, no copy of the
 * data) and served by the same code; the replies libfuse writes are taken
 * from the session's writev (passthrough.c) into the entry. Requests that
 * may block go to loop.c's workers as before; their replies come back to
 * the queue thread through an eventfd, since only it may submit. */
#include "fs.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel ABI (uapi fuse.h 7.42); Debian 12's headers predate it. */
#define UR_INIT_FLAG2   (1u << 9)          /* FUSE_OVER_IO_URING >> 32 */
#define UR_HEADER_SZ    128
enum { UR_CMD_REGISTER = 1, UR_CMD_COMMIT_AND_FETCH = 2 };
struct ur_header {
	char in_out[UR_HEADER_SZ];          /* fuse_in_header / fuse_out_header */
	char op_in[UR_HEADER_SZ];           /* the request's fixed-size argument */
	struct {
		uint64_t flags, commit_id;
		uint32_t payload_sz, padding;
		uint64_t reserved;
	} ent;
};
struct ur_cmd {
	uint64_t flags, commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

#define DEPTH 8                 /* entries per queue */
/* room before the payload for the headers, so a request is contiguous */
#define HEADROOM 4096

struct queue;
struct ent {
	struct ur_header hdr;
	struct queue *q;
	char *payload;
	size_t cap;
	uint64_t unique;        /* of the request being served, 0: none */
	struct iovec iov[2];
	struct ent *next_done;
	bool committed;         /* its last command was a commit, not a registration */
};

struct queue {
	struct sfs *fs;
	unsigned qid;
	pthread_t th;
	bool started;
	struct io_uring ring;
	struct ent ents[DEPTH];
	int efd;                /* workers' replies wait here */
	uint64_t efd_val;
	pthread_mutex_t lock;
	struct ent *done;
	unsigned pending;       /* SQEs queued, not yet submitted */
	int ready;              /* 1 registered, -errno failed */
	struct place place;     /* its scheduling policy (place.c) */
};

/* A mount's io_uring (fs->ur). */
struct uring {
	bool wanted;
	uint32_t max_write, max_pages;
	unsigned nq;
	struct queue *qs;
	int fd;
	bool stop;               /* set once by uring_stop(); atomic loads and stores */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned nready;
};

/* The request this thread serves: its entry belongs to us only until the
 * reply is handed over (a worker's may serve a new request right after),
 * so what we know of it is kept here. */
static __thread struct ent *tls_ent;
static __thread uint64_t tls_unique;
static __thread bool tls_replied;
static __thread struct queue *tls_queue;  /* queue this thread owns */

static int ring_init(struct io_uring *ring, unsigned entries);
static void ring_exit(struct io_uring *ring);

int uring_init(struct sfs *fs)
{
	struct uring *ur = calloc(1, sizeof *ur);
	if (!ur)
		return -ENOMEM;
	pthread_mutex_init(&ur->lock, NULL);
	pthread_cond_init(&ur->cond, NULL);
	fs->ur = ur;
	return 0;
}

void uring_note_init(struct sfs *fs, uint32_t flags2)
{
	struct uring *ur = fs->ur;
	ur->wanted = (flags2 & UR_INIT_FLAG2) && fs->opts.uring && !fs->opts.single_thread;
	/* Once INIT says io_uring, the kernel holds every request until the
	 * queues are registered: say it only if we can create rings at all
	 * (io_uring may be disabled by sysctl or a seccomp filter). */
	if (ur->wanted && !place_may_turn_back()) {
		ur->wanted = false;
		sdebug("io_uring: offered, not used: without CAP_SYS_NICE its threads could not leave SCHED_IDLE under load");
	}
	struct io_uring probe;
	if (ur->wanted && ring_init(&probe, 4) < 0)
		ur->wanted = false;
	else if (ur->wanted)
		ring_exit(&probe);
}

bool uring_wanted(struct sfs *fs)
{
	return fs->ur && fs->ur->wanted;
}

void uring_complete_init(struct sfs *fs, uint32_t *flags2, uint32_t max_write, uint32_t max_pages)
{
	struct uring *ur = fs->ur;
	if (!ur->wanted)
		return;
	*flags2 |= UR_INIT_FLAG2;
	ur->max_write = max_write;
	ur->max_pages = max_pages;
}

/* A free SQE of q's ring, submitting what is queued if there is none. */
static struct io_uring_sqe *get_sqe(struct queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
	if (!sqe) {
		io_uring_submit(&q->ring);
		q->pending = 0;
		sqe = io_uring_get_sqe(&q->ring);
	}
	if (sqe)
		q->pending++;
	return sqe;
}

/* A FUSE command OP on the fuse device, in a 128-byte SQE. */
static void prep_cmd(struct io_uring_sqe *sqe, int devfd, uint32_t op)
{
	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = devfd;
	sqe->cmd_op = op;
}

static struct io_uring_sqe *cmd_sqe(struct queue *q, struct ent *e, uint32_t op)
{
	struct io_uring_sqe *sqe = get_sqe(q);
	if (!sqe)
		return NULL;
	prep_cmd(sqe, q->fs->ur->fd, op);
	sqe->addr = (uint64_t)(uintptr_t)e->iov;
	sqe->len = 2;
	io_uring_sqe_set_data(sqe, e);
	struct ur_cmd *c = (struct ur_cmd *)sqe->cmd;
	c->qid = (uint16_t)q->qid;
	c->commit_id = e->unique;
	return sqe;
}

static void arm_eventfd(struct queue *q)
{
	struct io_uring_sqe *sqe = get_sqe(q);
	if (!sqe)
		return;
	io_uring_prep_read(sqe, q->efd, &q->efd_val, sizeof q->efd_val, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

/* Queue the entry's reply; it goes out with the next submission. */
static void commit(struct sfs *fs, struct ent *e)
{
	struct queue *q = e->q;
	if (!cmd_sqe(q, e, UR_CMD_COMMIT_AND_FETCH))
		serr(EBUSY, "io_uring commit", fs->opts.mountpoint, "the request is lost; unmount");
	e->committed = true;
	e->unique = 0;
}

static void flush(struct queue *q)
{
	if (q->pending) {
		io_uring_submit(&q->ring);
		q->pending = 0;
	}
}

void uring_flush(void)
{
	if (tls_queue)
		flush(tls_queue);
}

bool uring_capture(struct sfs *fs, const struct iovec *iov, int count, ssize_t *ret)
{
	struct ent *e = tls_ent;
	const struct fuse_out_header *out = iov[0].iov_base;
	if (!e || tls_replied || iov[0].iov_len < sizeof *out || out->unique != tls_unique)
		return false;
	tls_replied = true;

	size_t total = 0;
	for (int i = 1; i < count; i++)
		total += iov[i].iov_len;
	struct fuse_out_header oh = *out;
	if (total > e->cap) {
		/* cannot happen with the sizes negotiated at INIT */
		oh.error = -EIO;
		total = 0;
	} else {
		size_t off = 0;
		for (int i = 1; i < count; i++) {
			/* data read into the entry already (uring_reply_area) */
			if (iov[i].iov_base != e->payload + off)
				memcpy(e->payload + off, iov[i].iov_base, iov[i].iov_len);
			off += iov[i].iov_len;
		}
	}
	oh.len = (uint32_t)(sizeof oh + total);
	memcpy(e->hdr.in_out, &oh, sizeof oh);
	e->hdr.ent.payload_sz = (uint32_t)total;
	*ret = (ssize_t)(sizeof *out + total);

	struct queue *q = e->q;
	if (tls_queue == q) {
		commit(fs, e);
	} else {
		pthread_mutex_lock(&q->lock);
		e->next_done = q->done;
		q->done = e;
		pthread_mutex_unlock(&q->lock);
		uint64_t one = 1;
		if (write(q->efd, &one, sizeof one) < 0)
			serr(errno, "write", "eventfd", "a reply may be delayed");
	}
	return true;
}

char *uring_reply_area(size_t *cap)
{
	if (!tls_ent || tls_replied)
		return NULL;
	*cap = tls_ent->cap;
	return tls_ent->payload;
}

/* This thread now serves request UNIQUE, whose reply goes to entry e. */
static void serving(struct ent *e, uint64_t unique)
{
	tls_ent = e;
	tls_unique = unique;
	tls_replied = false;
}

/* Answer request UNIQUE in entry e with an error, as its reply. */
static void reply_error(struct sfs *fs, struct ent *e, uint64_t unique, int err)
{
	struct fuse_out_header oh = { .len = sizeof oh, .error = -err, .unique = unique };
	struct iovec iov = { &oh, sizeof oh };
	ssize_t r;
	serving(e, unique);
	uring_capture(fs, &iov, 1, &r);
	tls_ent = NULL;
}

void uring_serve_job(struct sfs *fs, void *ctx, void *mem, size_t size)
{
	struct ent *e = ctx;
	serving(e, ((const struct fuse_in_header *)mem)->unique);
	loop_process(fs, mem, size);
	if (!tls_replied) {
		/* a bug: answer for it, so the entry returns to the kernel */
		serr(EIO, "serve request", fs->opts.mountpoint, "no reply was produced; answering EIO");
		reply_error(fs, e, tls_unique, EIO);
	}
	tls_ent = NULL;
}

/* A request arrived in entry e: lay it out as /dev/fuse would and serve
 * it, here or on a worker. */
static void handle(struct sfs *fs, struct ent *e)
{
	struct fuse_in_header in;
	memcpy(&in, e->hdr.in_out, sizeof in);
	uint32_t psz = e->hdr.ent.payload_sz;
	e->unique = in.unique;
	if (in.len < sizeof in + psz || in.len - sizeof in - psz > UR_HEADER_SZ || psz > e->cap) {
		reply_error(fs, e, in.unique, EIO);
		return;
	}
	size_t opsz = in.len - sizeof in - psz;
	char *start = e->payload - opsz - sizeof in;
	memcpy(start, &in, sizeof in);
	memcpy(start + sizeof in, e->hdr.op_in, opsz);
	if (loop_offload(fs, start, in.len, e))
		return;
	uring_serve_job(fs, e, start, in.len);
}

static void drain_done(struct sfs *fs, struct queue *q)
{
	pthread_mutex_lock(&q->lock);
	struct ent *e = q->done;
	q->done = NULL;
	pthread_mutex_unlock(&q->lock);
	for (; e; e = e->next_done)
		commit(fs, e);
}

static void set_ready(struct queue *q, int v)
{
	struct uring *ur = q->fs->ur;
	pthread_mutex_lock(&ur->lock);
	q->ready = v;
	ur->nready++;
	pthread_cond_broadcast(&ur->cond);
	pthread_mutex_unlock(&ur->lock);
}

/* Registration fails at once or not at all: a registered entry completes
 * only when a request arrives. */
static int registered(struct queue *q, unsigned *live)
{
	struct io_uring_cqe *cqe;
	int err = 0;
	while (io_uring_peek_cqe(&q->ring, &cqe) == 0) {
		if (io_uring_cqe_get_data(cqe) && cqe->res < 0) {
			err = cqe->res;
			(*live)--;
		}
		io_uring_cqe_seen(&q->ring, cqe);
	}
	return err;
}

/* liburing maps and unmaps a ring's memory with system calls of its own,
 * which ThreadSanitizer does not see: a ring made where an ended queue
 * thread's ring was mapped would look to it like memory both threads wrote
 * without order. Making and ending rings under one lock orders them (the
 * address space is the process's, so the lock is too; held only around
 * ring setup and teardown). */
static pthread_mutex_t ring_map_lock = PTHREAD_MUTEX_INITIALIZER;

static int ring_init(struct io_uring *ring, unsigned entries)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER |
					      IORING_SETUP_DEFER_TASKRUN };
	pthread_mutex_lock(&ring_map_lock);
	int r = io_uring_queue_init_params(entries, ring, &p);
	if (r == -EINVAL) {
		memset(&p, 0, sizeof p);
		p.flags = IORING_SETUP_SQE128;
		r = io_uring_queue_init_params(entries, ring, &p);
	}
	pthread_mutex_unlock(&ring_map_lock);
	return r;
}

static void ring_exit(struct io_uring *ring)
{
	pthread_mutex_lock(&ring_map_lock);
	io_uring_queue_exit(ring);
	pthread_mutex_unlock(&ring_map_lock);
}

static void *queue_main(void *arg)
{
	struct queue *q = arg;
	struct sfs *fs = q->fs;
	struct uring *ur = fs->ur;
	tls_queue = q;

	/* the ring first, while the thread still runs SCHED_OTHER: made
	 * under ring_map_lock, which a thread gone SCHED_IDLE on a busy
	 * machine would hold for long while the other queues wait */
	int r = ring_init(&q->ring, DEPTH * 2 + 4);
	if (r < 0) {
		set_ready(q, r);
		return NULL;
	}
	keep_io_priority();
	for (unsigned i = 0; i < DEPTH; i++)
		cmd_sqe(q, &q->ents[i], UR_CMD_REGISTER);
	arm_eventfd(q);
	flush(q);
	unsigned live = DEPTH;
	r = registered(q, &live);
	if (r == 0) {
		/* named once registered: ps and the tests tell them apart */
		char name[16];
		snprintf(name, sizeof name, "strata-uring%u", q->qid % 1000);
		pthread_setname_np(pthread_self(), name);
	}
	set_ready(q, r < 0 ? r : 1);
	/* Serve the CPU whose clients this queue gets: the wake-ups stay
	 * there. A CPU that cannot be used (offline) is served from anywhere.
	 * Only once registered: the kernel holds every request of the mount
	 * until all queues are, and a thread bound to its CPU first waited for
	 * whatever ran there (at a container's start, the CLI that started
	 * it) before it could register. */
	place_open(fs, &q->place, NULL);
	place_home(&q->place, (int)q->qid);

	while (!__atomic_load_n(&ur->stop, __ATOMIC_ACQUIRE) && live) {
		struct io_uring_cqe *cqe;
		r = io_uring_submit_and_wait(&q->ring, 1);
		q->pending = 0;
		if (r < 0 && r != -EINTR)
			break;
		/* collected first: serving submits, which may touch the ring */
		struct ent *got[DEPTH + 1];
		int res[DEPTH + 1];
		unsigned head, seen = 0, ngot = 0;
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			if (ngot < DEPTH + 1) {
				got[ngot] = io_uring_cqe_get_data(cqe);
				res[ngot++] = cqe->res;
			}
			seen++;
		}
		io_uring_cq_advance(&q->ring, seen);
		for (unsigned i = 0; i < ngot; i++) {
			struct ent *e = got[i];
			if (!e) {
				drain_done(fs, q);
				if (!__atomic_load_n(&ur->stop, __ATOMIC_ACQUIRE))
					arm_eventfd(q);
			} else if (res[i] < 0) {
				/* A refused commit (its request gone) leaves the
				 * kernel without this entry: register it anew, or a
				 * queue that lost them all would stall its CPU's
				 * clients. Anything else: the connection ended. */
				if (e->committed && !__atomic_load_n(&ur->stop, __ATOMIC_ACQUIRE) && res[i] != -ENOTCONN &&
				    res[i] != -ECONNABORTED && res[i] != -ECANCELED) {
					sdebug("io_uring: commit refused: %s; registering the entry again",
					       strerror(-res[i]));
					e->committed = false;
					cmd_sqe(q, e, UR_CMD_REGISTER);
				} else {
					live--;
				}
			} else {
				uint64_t t0 = mono_ns();
				handle(fs, e);
				place_served(&q->place, t0, mono_ns());
			}
		}
		place_check(&q->place, false);
	}
	ring_exit(&q->ring);
	return NULL;
}

/* After INIT said io_uring, the kernel holds requests until the queues
 * are registered or a registration fails: make one fail on purpose (no
 * buffers), and it goes back to /dev/fuse. */
static void refuse(int devfd)
{
	struct io_uring ring;
	if (ring_init(&ring, 2) < 0)
		return;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	if (sqe) {
		prep_cmd(sqe, devfd, UR_CMD_REGISTER);
		io_uring_submit_and_wait(&ring, 1);
	}
	ring_exit(&ring);
}

static void free_queue(struct queue *q)
{
	for (unsigned i = 0; i < DEPTH; i++)
		if (q->ents[i].payload)
			munmap(q->ents[i].payload - HEADROOM, q->ents[i].cap + HEADROOM);
	if (q->efd >= 0)
		close(q->efd);
	place_close(&q->place);
}

int uring_start(struct sfs *fs, struct fuse_session *se)
{
	struct uring *ur = fs->ur;
	if (!ur->wanted)
		return 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	/* the kernel has one queue per possible CPU and takes requests only
	 * once every queue has an entry */
	unsigned nq = 0;
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");
	if (f) {
		unsigned a, b;
		int k = fscanf(f, "%u-%u", &a, &b);
		if (k == 2)
			nq = b + 1;
		else if (k == 1)
			nq = a + 1;
		fclose(f);
	}
	if (!nq)
		nq = ncpu > 0 ? (unsigned)ncpu : 1;

	size_t cap = ur->max_write;
	if ((size_t)ur->max_pages * 4096 > cap)
		cap = (size_t)ur->max_pages * 4096;
	if (cap < 8192)
		cap = 8192;
	cap = (cap + 4095) & ~(size_t)4095;

	ur->fd = fuse_session_fd(se);
	ur->nq = nq;
	ur->qs = calloc(nq, sizeof *ur->qs);
	if (!ur->qs)
		return -ENOMEM;
	for (unsigned i = 0; i < nq; i++) {
		struct queue *q = &ur->qs[i];
		q->fs = fs;
		q->qid = i;
		q->efd = eventfd(0, EFD_CLOEXEC);
		q->place.statfd = q->place.loadfd = -1;
		pthread_mutex_init(&q->lock, NULL);
		if (q->efd < 0) {
			serr(errno, "eventfd", "io_uring queue", "serving through /dev/fuse");
			goto fail;
		}
		for (unsigned k = 0; k < DEPTH; k++) {
			struct ent *e = &q->ents[k];
			/* untouched pages of the payload cost no memory */
			char *m = mmap(NULL, cap + HEADROOM, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED) {
				serr(errno, "mmap", "io_uring buffers", "serving through /dev/fuse");
				goto fail;
			}
			e->q = q;
			e->payload = m + HEADROOM;
			e->cap = cap;
			e->iov[0] = (struct iovec){ &e->hdr, sizeof e->hdr };
			e->iov[1] = (struct iovec){ e->payload, cap };
		}
	}
	for (unsigned i = 0; i < nq; i++) {
		if (pthread_create(&ur->qs[i].th, NULL, queue_main, &ur->qs[i]) != 0) {
			ur->nq = i;
			break;
		}
		ur->qs[i].started = true;
	}
	/* wait for every queue to report */
	pthread_mutex_lock(&ur->lock);
	while (ur->nready < ur->nq)
		pthread_cond_wait(&ur->cond, &ur->lock);
	pthread_mutex_unlock(&ur->lock);
	int err = 0;
	for (unsigned i = 0; i < ur->nq; i++)
		if (ur->qs[i].ready < 0)
			err = ur->qs[i].ready;
	if (ur->nq < nq)
		err = -EAGAIN;
	if (err) {
		sdebug("io_uring: registering the queues: %s; serving through /dev/fuse", strerror(-err));
		refuse(ur->fd);
	}
	return err;
fail:
	refuse(ur->fd);
	for (unsigned i = 0; i < nq; i++)
		free_queue(&ur->qs[i]);
	free(ur->qs);
	ur->qs = NULL;
	ur->nq = 0;
	return -ENOMEM;
}

void uring_stop(struct sfs *fs)
{
	struct uring *ur = fs->ur;
	if (!ur)
		return;
	if (!ur->qs)
		goto out;
	__atomic_store_n(&ur->stop, true, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < ur->nq; i++) {
		uint64_t one = 1;
		if (write(ur->qs[i].efd, &one, sizeof one) < 0)
			continue;
	}
	for (unsigned i = 0; i < ur->nq; i++) {
		if (ur->qs[i].started)
			pthread_join(ur->qs[i].th, NULL);
		free_queue(&ur->qs[i]);
	}
	free(ur->qs);
	ur->qs = NULL;
out:
	/* only now: the queue threads read it until they are joined */
	fs->ur = NULL;
	pthread_cond_destroy(&ur->cond);
	pthread_mutex_destroy(&ur->lock);
	free(ur);
}
