/* loop.c: the request loop. One thread reads requests and serves the cheap,
 * frequent ones itself (lookups, attributes, listings, namespace changes):
 * a FUSE request handed from thread to thread costs more than serving it,
 * and the kernel wakes its waiting readers round-robin. Requests that may
 * block for long (data I/O, copy-up on open/truncate/link/rename, fsync)
 * go to a small pool of workers, so one container copying a large file up
 * never stalls the others. The reader follows its client's CPU (follow_*,
 * relaying to a standby thread where it may not turn back from SCHED_IDLE);
 * where it cannot follow it polls briefly before it sleeps (wait_request).
 * The operations can see the raw request they serve (loop_request_arg), for
 * fields libfuse 3.14 does not pass on. A watch thread takes the exit
 * signals and the unmount, so the end never waits for a thread at
 * SCHED_IDLE to be given the CPU. */
#include "fs.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <time.h>
#include <linux/fuse.h>
#include <string.h>

struct job {
	struct job *next;
	void *ctx;              /* io_uring entry the reply goes to, or NULL */
	size_t size;
	char *mem;              /* the request: inline below, or lent */
	bool lent;              /* mem is a reader's buffer (back to the spares) */
	_Alignas(16) char inline_mem[];   /* read as a struct fuse_in_header */
};

/* A request at least this large (a write) goes to a worker in the
 * reader's own buffer, and the reader reads on into a spare one: copying
 * it and allocating its copy cost more than serving it took (a megabyte
 * per write of the writeback cache, the allocator faulting its pages in
 * again each time). */
#define LEND_MIN (64 * 1024)
#define BUF_SPARE 4

/* The jobs for the workers. */
struct jobs {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;
	bool stop;
	unsigned nworkers;
	struct fuse_session *se;
	unsigned busy;          /* jobs queued or being served */
	void *bufs[BUF_SPARE];  /* readers' buffers to lend again */
	unsigned nbufs;
};

/* The watch: a thread at SCHED_OTHER that sleeps until an exit signal
 * comes or the mount table of our namespace changes, and ends the session
 * on a signal or when our mount has left that namespace (main.c's
 * mount_present). It, not the reader, is woken then: the reader and the
 * io_uring queue threads may sit at SCHED_IDLE behind the machine's load,
 * a few milliseconds of CPU a second. */
struct watch {
	pthread_t th;
	bool started;
	int wakefd;             /* readable: the session is over (reader's wait) */
	int stopfd;             /* readable: the watch ends */
};

/* The reader's state, handed from thread to thread when it relays. */
struct reader {
	struct fuse_buf buf;
	sigset_t waitsigs;      /* the exit signals unblocked (watch_main, wait_request) */
	bool ur;                /* io_uring serves the requests: here only forgets */
	bool init_done;         /* INIT answered: follow from the start */
	int r;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool standby;           /* a standby thread is parked */
	bool baton;             /* handed to it */
	bool done;              /* the session ended */
};

/* A mount's request loop (fs->loop). */
struct loop {
	struct jobs q;
	struct watch w;
	struct reader r;
};

/* Could this request block for long? Looks at the request's own arguments:
 * an open for writing or a truncate may copy a whole file up; a large
 * write or any read may wait for the disk. */
static bool may_block(const void *mem, size_t size)
{
	const struct fuse_in_header *in = mem;
	const void *arg = (const char *)mem + sizeof *in;
	size_t asize = size - sizeof *in;

	switch (in->opcode) {
	case FUSE_OPEN:
		if (asize < sizeof(struct fuse_open_in))
			return true;
		{
			uint32_t fl = ((const struct fuse_open_in *)arg)->flags;
			return (fl & O_ACCMODE) != O_RDONLY || (fl & O_TRUNC);
		}
	case FUSE_SETATTR:
		return asize < sizeof(struct fuse_setattr_in) ||
		       (((const struct fuse_setattr_in *)arg)->valid & FATTR_SIZE);
	case FUSE_WRITE:
		return asize < sizeof(struct fuse_write_in) ||
		       ((const struct fuse_write_in *)arg)->size > 64 * 1024;
	case FUSE_READ:
	case FUSE_FSYNC:
	case FUSE_FSYNCDIR:
	case FUSE_LINK:
	case FUSE_RENAME:
	case FUSE_RENAME2:
	case FUSE_FALLOCATE:
	case FUSE_COPY_FILE_RANGE:
		return true;
	default:
		return false;
	}
}

/* the request this thread serves (per thread, whatever the mount) */
static __thread const struct fuse_in_header *tls_req;

const void *loop_request_arg(uint32_t opcode, size_t size)
{
	const struct fuse_in_header *in = tls_req;
	if (!in || in->opcode != opcode || in->len < sizeof *in + size)
		return NULL;
	return in + 1;
}

void loop_process(struct sfs *fs, void *mem, size_t size)
{
	struct loop *lp = fs->loop;
	struct fuse_buf b = { .size = size, .mem = mem };
	tls_req = mem;
	fuse_session_process_buf(lp->q.se, &b);
	tls_req = NULL;
}

/* when this thread last handed a job to the workers (the reader's polling
 * looks at its own) */
static __thread uint64_t tls_last_job;

static void enqueue(struct loop *lp, struct job *j)
{
	__atomic_add_fetch(&lp->q.busy, 1, __ATOMIC_RELAXED);
	tls_last_job = mono_ns();
	pthread_mutex_lock(&lp->q.lock);
	if (lp->q.tail)
		lp->q.tail->next = j;
	else
		lp->q.head = j;
	lp->q.tail = j;
	pthread_cond_signal(&lp->q.cond);
	pthread_mutex_unlock(&lp->q.lock);
}

static bool offload_wanted(struct loop *lp, const void *mem, size_t size, void *ctx)
{
	if (!lp->q.nworkers || size < sizeof(struct fuse_in_header) || !may_block(mem, size))
		return false;
	/* An io_uring queue serves one CPU's clients, and a read waits for one
	 * request's worth of disk at most: a hand-off to a worker and back
	 * would cost more than it saves (4k random reads ran at half speed). */
	return !(ctx && ((const struct fuse_in_header *)mem)->opcode == FUSE_READ);
}

bool loop_offload(struct sfs *fs, const void *mem, size_t size, void *ctx)
{
	struct loop *lp = fs->loop;
	struct job *j;
	if (!offload_wanted(lp, mem, size, ctx) || !(j = malloc(sizeof *j + size)))
		return false;
	*j = (struct job){ .ctx = ctx, .size = size, .mem = j->inline_mem };
	memcpy(j->inline_mem, mem, size);
	enqueue(lp, j);
	return true;
}

/* loop_offload of the request the reader read into b: a large one is lent
 * to the worker, b given a spare buffer (or none: libfuse allocates one). */
static bool offload_read(struct sfs *fs, struct fuse_buf *b, size_t size)
{
	struct loop *lp = fs->loop;
	if (size < LEND_MIN)
		return loop_offload(fs, b->mem, size, NULL);
	struct job *j;
	if (!offload_wanted(lp, b->mem, size, NULL) || !(j = malloc(sizeof *j)))
		return false;
	*j = (struct job){ .size = size, .mem = b->mem, .lent = true };
	pthread_mutex_lock(&lp->q.lock);
	b->mem = lp->q.nbufs ? lp->q.bufs[--lp->q.nbufs] : NULL;
	pthread_mutex_unlock(&lp->q.lock);
	enqueue(lp, j);
	return true;
}

/* A lent buffer back from a worker. */
static void give_back(struct loop *lp, void *mem)
{
	pthread_mutex_lock(&lp->q.lock);
	if (lp->q.nbufs < BUF_SPARE) {
		lp->q.bufs[lp->q.nbufs++] = mem;
		mem = NULL;
	}
	pthread_mutex_unlock(&lp->q.lock);
	free(mem);
}

static void *worker(void *arg)
{
	struct sfs *fs = arg;
	struct loop *lp = fs->loop;
	for (;;) {
		pthread_mutex_lock(&lp->q.lock);
		while (!lp->q.head && !lp->q.stop)
			pthread_cond_wait(&lp->q.cond, &lp->q.lock);
		struct job *j = lp->q.head;
		if (!j) {
			pthread_mutex_unlock(&lp->q.lock);
			return NULL;
		}
		lp->q.head = j->next;
		if (!lp->q.head)
			lp->q.tail = NULL;
		pthread_mutex_unlock(&lp->q.lock);

		if (j->ctx)
			uring_serve_job(fs, j->ctx, j->mem, j->size);
		else
			loop_process(fs, j->mem, j->size);
		if (j->lent)
			give_back(lp, j->mem);
		free(j);
		__atomic_sub_fetch(&lp->q.busy, 1, __ATOMIC_RELAXED);
	}
}

/* Wait for the next request: poll without sleeping for up to spin_us, then
 * sleep. On a virtual machine a sleeping vCPU costs tens of microseconds to
 * wake (an exit to the host each way), more than a whole request costs to
 * serve; a client issuing system calls back to back sends its next request
 * within a few microseconds of our reply, and finds us awake. Only the
 * reader polls, and only right after a request: an idle mount sleeps. */
static int wait_request(struct sfs *fs, int fd, unsigned spin_us, const sigset_t *sigs)
{
	struct loop *lp = fs->loop;
	/* p[1]: the end, said by the mount watch (never read: it stays
	 * readable, and no later wait can miss it) */
	struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = lp->w.wakefd, .events = POLLIN } };
	uint64_t end = spin_us ? mono_ns() + (uint64_t)spin_us * 1000 : 0;
	while (spin_us) {
		int r = poll(p, 1, 0);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
		if (mono_ns() >= end)
			break;
	}
	/* The exit signals arrive in the watch thread, blocked in every other
	 * one; only where it could not start, here: a signal then ends the
	 * wait and the loop sees the session's exit flag, with no window to
	 * miss it in. */
	if (ppoll(p, lp->w.wakefd >= 0 ? 2 : 1, NULL, lp->w.started ? NULL : sigs) < 0 && errno != EINTR)
		return -1;
	return 0;
}

/* With io_uring, this thread reads little but FORGETs, and an rm -rf
 * queues one per file: read each as it comes and every one wakes us, a
 * cross-CPU wake-up charged to the client's unlink (4126 of them for 4263
 * files). Not waiting on the device for a moment after a forget lets the
 * next ones pile up, and the kernel hands them over in one BATCH_FORGET;
 * a forget has no reply, nobody waits for it. */
static void forget_pause(void)
{
	struct timespec ts = { 0, 1000000 };
	nanosleep(&ts, NULL);
}

/* Without io_uring the kernel has one queue for all CPUs, and the reader
 * ran wherever it last slept: a request woke it on the other CPU, its
 * reply woke the client back across (24 us per round trip with polling,
 * 53 without, against 5 on one CPU). So the reader follows its client:
 * every FOLLOW_EVERY requests (FOLLOW_NEW when the sender changed) it
 * looks where the sender last ran and pins itself there, and it runs as
 * the io_uring queue threads do (place.c: SCHED_IDLE while the machine is
 * quiet, so the woken client keeps its CPU; unpinned for a while after a
 * request that waited for the disk), without polling (the request wakes
 * it on the CPU it is on). With more than one CPU.
 *
 * A thread may always go to SCHED_IDLE but comes back only with
 * CAP_SYS_NICE or RLIMIT_NICE, which a rootless daemon lacks. There the
 * reader relays: before it goes SCHED_IDLE it starts a standby thread,
 * still SCHED_OTHER, parked; when the machine gets busy it hands the
 * device to the standby and ends, and the standby reads on (and starts a
 * standby of its own before it goes SCHED_IDLE). Rootless untar of 20k
 * files 3.96 s -> 1.27 s, ls -lR after it 86 -> 40 ms. */
#define FOLLOW_EVERY 64
#define FOLLOW_NEW 8
struct follow {
	bool on;
	unsigned since;    /* requests since the last look */
	uint32_t pid;      /* whose CPU it looked up last */
	uint64_t other_ns; /* when a request last came from someone else */
	struct place place;
};

static bool start_standby(struct sfs *fs);

static void follow_start(struct sfs *fs, struct follow *f)
{
	memset(f, 0, sizeof *f);
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	place_open(fs, &f->place, place_may_turn_back() ? NULL : start_standby);
	if (CPU_COUNT(&f->place.allowed) < 2) {
		place_close(&f->place);
		return;
	}
	f->on = true;
	/* pinned where its client runs, it waits on the run queue for the
	 * client to block each time: not a sign of load (counted, it held
	 * the reader at SCHED_OTHER and the client moved away at every
	 * reply: untar 1.4 s -> 5.7 s) */
	f->place.no_wait_check = true;
	keep_io_priority();
}

static void follow_request(struct follow *f, const struct fuse_in_header *in, uint64_t now)
{
	if (!f->on)
		return;
	place_check(&f->place, false);
	/* a new sender is looked up soon (a walk right after the mount
	 * would pay a crossing per request until the next look) */
	f->since++;
	if (in->pid && in->pid != f->pid)
		f->other_ns = now;
	if (!in->pid || f->since < (in->pid != f->pid ? FOLLOW_NEW : FOLLOW_EVERY))
		return;
	f->since = 0;
	f->pid = in->pid;
	int c = place_cpu_of(in->pid);
	if (c >= 0 && c != f->place.home && CPU_ISSET(c, &f->place.allowed))
		place_home(&f->place, c);
}

static void follow_stop(struct follow *f)
{
	if (!f->on)
		return;
	struct sched_param sp = { 0 };
	sched_setaffinity(0, sizeof f->place.allowed, &f->place.allowed);
	sched_setscheduler(0, SCHED_OTHER, &sp);
	place_close(&f->place);
	f->on = false;
}

enum { READER_DONE, READER_RELAYED };

/* Read and serve requests until the session ends, or until this thread,
 * stuck at SCHED_IDLE on a busy machine, has handed the reading on. */
static int reader_loop(struct sfs *fs)
{
	struct loop *lp = fs->loop;
	struct follow fol = { .on = false };
	struct fuse_session *se = lp->q.se;
	int fd = fuse_session_fd(se);
	unsigned spin_us = fs->opts.poll_us;
	bool spin = false;
	unsigned skip = 0;      /* waits left without polling */
	int r = 0;

	if (lp->r.init_done && !lp->r.ur) {
		follow_start(fs, &fol);
		/* relayed from a reader stuck on a busy machine: not back to
		 * SCHED_IDLE for a while (each time costs a standby thread) */
		fol.place.hold_until = mono_ns() + 1000000000u;
	}
	while (!fuse_session_exited(se)) {
		r = fuse_session_receive_buf(se, &lp->r.buf);
		if (r == -EINTR)
			continue;
		if (r == -EAGAIN) {
			/* Poll only after a request served here, and not while
			 * data moves (a job for the workers in the last 2 ms):
			 * reads and copy-ups, and the processes consuming their
			 * data, need the CPUs, and polling would compete with
			 * them (tar c | cat ran 25% slower with it). */
			bool poll_now = !fol.on && spin && !skip && !__atomic_load_n(&lp->q.busy, __ATOMIC_RELAXED) &&
					mono_ns() - tls_last_job > 2000000;
			if (skip)
				skip--;
			int w = wait_request(fs, fd, poll_now ? spin_us : 0, &lp->r.waitsigs);
			if (w < 0)
				break;
			/* polls that find nothing back off: a client that
			 * does not come back quickly is not worth the CPU */
			if (poll_now)
				skip = w ? 0 : (skip * 2 + 1 > 256 ? 256 : skip * 2 + 1);
			continue;
		}
		spin = true;
		if (r <= 0)
			break;
		const struct fuse_in_header *in = lp->r.buf.mem;
		uint32_t op = (size_t)r >= sizeof *in ? in->opcode : 0;
		uint64_t now = fol.on ? mono_ns() : 0;
		if (op)
			follow_request(&fol, in, now);
		/* The client followed waits for its read either way; handed to a
		 * worker, the reply would wake it from another CPU (cold tar c
		 * 1069 -> 910 ms, 1 GiB read 566 -> 444 ms, as on an io_uring
		 * queue). Only while no other client sent anything for 10 ms: a
		 * find running beside a cold 1 GiB dd took 160-235 ms with the
		 * reads handed off, 270 ms with them served here. */
		bool inline_read = fol.on && op == FUSE_READ && in->pid == fol.pid &&
				   now - fol.other_ns > 10000000;
		if (op && !inline_read && offload_read(fs, &lp->r.buf, (size_t)r)) {
			spin = false;
		} else {
			/* a request nobody waits for says nothing of when the
			 * next one comes */
			switch (op) {
			case FUSE_RELEASE:
			case FUSE_RELEASEDIR:
			case FUSE_FORGET:
			case FUSE_BATCH_FORGET:
			case FUSE_INTERRUPT:
				spin = false;
				break;
			}
			bool init = op == FUSE_INIT;
			if (init)
				pt_note_init(fs, in + 1, (size_t)r - sizeof *in, true);
			loop_process(fs, lp->r.buf.mem, (size_t)r);
			if (fol.on)
				place_served(&fol.place, now, mono_ns());
			if (init) {
				pt_note_init(fs, NULL, 0, false);
				lp->r.ur = uring_start(fs, se) == 0 && uring_wanted(fs);
				lp->r.init_done = true;
				if (!lp->r.ur)
					follow_start(fs, &fol);
			}
			if (lp->r.ur && (op == FUSE_FORGET || op == FUSE_BATCH_FORGET))
				forget_pause();
		}
		if (fol.on && fol.place.stuck) {
			/* SCHED_IDLE on a busy machine, for good: the standby
			 * (SCHED_OTHER) reads from here on */
			place_close(&fol.place);
			pthread_mutex_lock(&lp->r.lock);
			lp->r.baton = true;
			pthread_cond_broadcast(&lp->r.cond);
			pthread_mutex_unlock(&lp->r.lock);
			return READER_RELAYED;
		}
	}
	follow_stop(&fol);
	/* the threads woken for the end must not wait behind the load */
	place_all_to_front(fs);
	/* ended by the mount watch while waiting: not an error */
	if (r == -EAGAIN || r == -EINTR)
		r = 0;
	lp->r.r = r;
	pthread_mutex_lock(&lp->r.lock);
	lp->r.done = true;
	pthread_cond_broadcast(&lp->r.cond);
	pthread_mutex_unlock(&lp->r.lock);
	return READER_DONE;
}

static void *standby_main(void *arg)
{
	struct sfs *fs = arg;
	struct loop *lp = fs->loop;
	pthread_mutex_lock(&lp->r.lock);
	while (!lp->r.baton && !lp->r.done)
		pthread_cond_wait(&lp->r.cond, &lp->r.lock);
	bool go = lp->r.baton && !lp->r.done;
	lp->r.baton = false;
	lp->r.standby = false;
	pthread_mutex_unlock(&lp->r.lock);
	if (go) {
		/* it was started where the reader then ran, pinned */
		sched_setaffinity(0, sizeof fs->cpus, &fs->cpus);
		pthread_setname_np(pthread_self(), "strata-reader");
		reader_loop(fs);
	}
	return NULL;
}

/* place.c's before_idle for a reader that cannot turn back: a standby
 * parked at SCHED_OTHER (it inherits this thread's policy, so it is
 * started before the switch). */
static bool start_standby(struct sfs *fs)
{
	struct loop *lp = fs->loop;
	pthread_mutex_lock(&lp->r.lock);
	bool ok = lp->r.standby;
	if (!ok && !lp->r.done) {
		pthread_t th;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		ok = pthread_create(&th, &at, standby_main, fs) == 0;
		pthread_attr_destroy(&at);
		if (ok) {
			pthread_setname_np(th, "strata-standby");
			lp->r.standby = true;
		}
	}
	pthread_mutex_unlock(&lp->r.lock);
	return ok;
}

static void *watch_main(void *arg)
{
	struct sfs *fs = arg;
	struct loop *lp = fs->loop;
	struct pollfd p[2] = { { .fd = fs->mntinfo_fd, .events = POLLPRI },
			       { .fd = lp->w.stopfd, .events = POLLIN } };
	for (;;) {
		/* the only wait with the exit signals unblocked */
		int r = ppoll(p, 2, NULL, &lp->r.waitsigs);
		if (fuse_session_exited(lp->q.se))
			break;  /* a signal */
		if (r < 0) {
			if (errno != EINTR) {
				/* nothing a watch could mend: try again shortly */
				struct timespec ts = { 0, 10000000 };
				nanosleep(&ts, NULL);
			}
			continue;
		}
		if (p[1].revents)
			return NULL;
		if (p[0].fd >= 0 && (p[0].revents & (POLLPRI | POLLERR)) && !mount_present(fs)) {
			sdebug("%s: unmounted from this mount namespace; ending", fs->opts.mountpoint);
			__atomic_store_n(&fs->mnt_gone, true, __ATOMIC_RELEASE);
			fuse_session_exit(lp->q.se);
			break;
		}
	}
	place_all_to_front(fs);
	uint64_t one = 1;
	if (write(lp->w.wakefd, &one, sizeof one) < 0)
		serr(errno, "write", "eventfd", "the reader may not see the end");
	return NULL;
}

/* Started before any thread may go SCHED_IDLE, with the exit signals
 * blocked like every thread serve() starts. */
static void watch_start(struct sfs *fs)
{
	struct loop *lp = fs->loop;
	int e = 0;
	lp->w.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	lp->w.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (lp->w.wakefd < 0 || lp->w.stopfd < 0)
		e = errno;
	else if (!(e = pthread_create(&lp->w.th, NULL, watch_main, fs))) {
		pthread_setname_np(lp->w.th, "strata-watch");
		lp->w.started = true;
		return;
	}
	serr(e, "start", "the watch thread",
	     "the reader takes the exit signals, and the daemon ends when the kernel ends the connection");
	if (lp->w.wakefd >= 0)
		close(lp->w.wakefd);
	if (lp->w.stopfd >= 0)
		close(lp->w.stopfd);
	lp->w.wakefd = lp->w.stopfd = -1;
}

static void watch_stop(struct sfs *fs)
{
	struct loop *lp = fs->loop;
	if (lp->w.started) {
		uint64_t one = 1;
		if (write(lp->w.stopfd, &one, sizeof one) < 0)
			serr(errno, "write", "eventfd", "waiting for the mount watch anyway");
		pthread_join(lp->w.th, NULL);
		lp->w.started = false;
	}
	if (lp->w.wakefd >= 0)
		close(lp->w.wakefd);
	if (lp->w.stopfd >= 0)
		close(lp->w.stopfd);
	lp->w.wakefd = lp->w.stopfd = -1;
}

int serve(struct sfs *fs, struct fuse_session *se, unsigned nworkers)
{
	pthread_t th[16];
	unsigned n = 0;

	/* Not freed at the end: a standby thread (detached) may still be on
	 * its way out through it. */
	struct loop *lp = calloc(1, sizeof *lp);
	if (!lp || wa_init(fs) < 0 || uring_init(fs) < 0) {
		free(lp);
		serr(ENOMEM, "serve", fs->opts.mountpoint, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&lp->q.lock, NULL);
	pthread_cond_init(&lp->q.cond, NULL);
	pthread_mutex_init(&lp->r.lock, NULL);
	pthread_cond_init(&lp->r.cond, NULL);
	lp->w.wakefd = lp->w.stopfd = -1;
	fs->loop = lp;
	lp->q.se = se;
	if (nworkers > 16)
		nworkers = 16;
	/* libfuse's exit signals, blocked in every thread but while the watch
	 * (or, without one, the reader) waits */
	sigset_t exitsigs;
	sigemptyset(&exitsigs);
	sigaddset(&exitsigs, SIGHUP);
	sigaddset(&exitsigs, SIGINT);
	sigaddset(&exitsigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &exitsigs, &lp->r.waitsigs);
	sigdelset(&lp->r.waitsigs, SIGHUP);
	sigdelset(&lp->r.waitsigs, SIGINT);
	sigdelset(&lp->r.waitsigs, SIGTERM);
	for (; n < nworkers; n++)
		if (pthread_create(&th[n], NULL, worker, fs) != 0)
			break;
	lp->q.nworkers = n;
	watch_start(fs);

	int fd = fuse_session_fd(se);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	/* this thread reads until it relays; then it waits for the end */
	if (reader_loop(fs) == READER_RELAYED) {
		pthread_mutex_lock(&lp->r.lock);
		while (!lp->r.done)
			pthread_cond_wait(&lp->r.cond, &lp->r.lock);
		pthread_mutex_unlock(&lp->r.lock);
	}
	pthread_mutex_lock(&lp->q.lock);
	lp->q.stop = true;
	pthread_cond_broadcast(&lp->q.cond);
	pthread_mutex_unlock(&lp->q.lock);
	for (unsigned i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	watch_stop(fs);
	uring_stop(fs);
	wa_stop(fs);
	free(lp->r.buf.mem);
	lp->r.buf.mem = NULL;
	while (lp->q.nbufs)
		free(lp->q.bufs[--lp->q.nbufs]);
	fuse_session_reset(se);
	return lp->r.r < 0 && lp->r.r != -ENODEV ? lp->r.r : 0;
}
