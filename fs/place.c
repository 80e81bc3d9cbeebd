/* place.c: where the threads that serve requests run, and at what
 * priority (the io_uring queue threads, and the /dev/fuse reader when it
 * follows its client).
 *
 * A reply wakes the client while the serving thread still runs on the
 * client's CPU, and the scheduler sends a woken task to an idle CPU rather
 * than a busy one: every reply would move the client to the other CPU and
 * the next request would cross back, two wake-ups of a sleeping vCPU per
 * request. A CPU running only SCHED_IDLE threads counts as idle, so while
 * the machine is mostly idle the serving threads run SCHED_IDLE: the client
 * stays, and takes the CPU back the moment it is woken (5 us per request
 * instead of 40 here). But a SCHED_IDLE thread gets almost no CPU next to
 * busy tasks, so every 5 ms it looks: while half the CPUs are busy it runs
 * SCHED_OTHER, and for a second after it waited on its run queue for more
 * than a tenth of the time. With CPUs busy, the woken client finds no idle
 * one to move to anyway. A thread turns back only with CAP_SYS_NICE or
 * RLIMIT_NICE (place_may_turn_back()); without, the /dev/fuse reader hands
 * its work to a thread that never left SCHED_OTHER (loop.c). */
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/ioprio.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

bool place_may_turn_back(void)
{
	/* the kernel's can_nice(): CAP_SYS_NICE in the initial namespace,
	 * or RLIMIT_NICE */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NICE, &rl) == 0 && rl.rlim_cur >= 20)
		return true;
	return has_init_cap(CAP_SYS_NICE);
}

/* The start of a small /proc file kept open, NUL-terminated; false if
 * it could not be read. */
static bool read_proc(int fd, char *buf, size_t size)
{
	ssize_t n = fd >= 0 ? pread(fd, buf, size - 1, 0) : -1;
	if (n <= 0)
		return false;
	buf[n] = 0;
	return true;
}

/* Nanoseconds this thread has waited on a run queue. */
static uint64_t run_delay(int fd)
{
	char b[96];
	unsigned long long run, delay;
	return read_proc(fd, b, sizeof b) && sscanf(b, "%llu %llu", &run, &delay) == 2 ? delay : 0;
}

/* Tasks running or waiting to run, system-wide (/proc/loadavg's 4th
 * field), this thread included; unknown counts as busy. */
static unsigned nr_running(int fd)
{
	char b[128];
	double l1, l5, l15;
	unsigned run, total;
	return read_proc(fd, b, sizeof b) &&
	       sscanf(b, "%lf %lf %lf %u/%u", &l1, &l5, &l15, &run, &total) == 5 ? run : 1000;
}

void place_check(struct place *p, bool first)
{
	uint64_t now = mono_ns();
	if (!first && now - p->t_check < 5000000)
		return;
	uint64_t d = run_delay(p->statfd);
	uint64_t waited = d - p->delay_check, wall = now - p->t_check;
	/* read-ahead threads are SCHED_IDLE: they give way, they are not load */
	unsigned running = nr_running(p->loadfd), ahead = wa_busy(p->fs);
	unsigned others = running > ahead + 1 ? running - ahead - 1 : 0;
	p->t_check = now;
	p->delay_check = d;
	/* one look may catch a passing kernel thread: two in a row count */
	bool busy_now = others >= (p->ncpu + 1) / 2;
	bool busy = busy_now && p->was_busy;
	p->was_busy = busy_now;
	if (!first && waited * 10 > wall && !p->no_wait_check)
		p->hold_until = now + 1000000000u;
	bool idle = !busy && now >= p->hold_until;
	/* One that cannot turn back (a relay: a thread started, the reading
	 * handed over) leaves SCHED_IDLE only when it starves, waiting to run
	 * for half the time: busy CPUs alone said so during a quiet untar
	 * (writeback threads, the client between its requests), and each
	 * relay cost a second of round trips across CPUs. It goes idle on a
	 * quiet look, not on its first. */
	if (p->before_idle)
		idle = p->idle ? !(busy && waited * 2 > wall) : !first && !busy_now && now >= p->hold_until;
	if (!first && idle == p->idle)
		return;
	if (idle && p->before_idle && !p->before_idle(p->fs))
		return;   /* no way back: stay */
	struct sched_param sp = { 0 };
	if (sched_setscheduler(0, idle ? SCHED_IDLE : SCHED_OTHER, &sp) < 0 && !idle) {
		p->stuck = true;
		return;
	}
	p->idle = idle;
}

void place_open(struct sfs *fs, struct place *p, bool (*before_idle)(struct sfs *fs))
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	memset(p, 0, sizeof *p);
	p->fs = fs;
	p->before_idle = before_idle;
	p->ncpu = ncpu > 0 ? (unsigned)ncpu : 1;
	p->home = -1;
	p->allowed = fs->cpus;
	p->statfd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	p->loadfd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
	place_check(p, true);
}

void place_close(struct place *p)
{
	if (p->statfd >= 0)
		close(p->statfd);
	if (p->loadfd >= 0)
		close(p->loadfd);
	p->statfd = p->loadfd = -1;
}

int place_cpu_of(uint32_t tid)
{
	char path[64], b[1024];
	snprintf(path, sizeof path, "/proc/%u/stat", tid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, b, sizeof b - 1);
	if (n <= 0)
		return -1;
	b[n] = 0;
	/* "pid (comm) state ...": comm may hold anything, so fields count
	 * from its closing parenthesis; "processor" is field 39 */
	char *p = strrchr(b, ')');
	if (!p)
		return -1;
	for (int field = 2; field < 39; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -1;
	}
	char *end;
	long cpu = strtol(p + 1, &end, 10);
	return end != p + 1 && cpu >= 0 && cpu < CPU_SETSIZE ? (int)cpu : -1;
}

/* A thread at SCHED_IDLE next to busy tasks runs a few milliseconds a
 * second or less: the queue threads, the reader and the read-ahead threads
 * woken for the end would each wait that long for a turn, one after the
 * other, and a loaded machine stretched a daemon's exit past 20 s. Pinned
 * to a busy CPU, a thread waits there although another may be free. */
void place_all_to_front(struct sfs *fs)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	struct sched_param sp = { 0 };

	if (!d)
		return;
	while ((de = readdir(d))) {
		pid_t tid = (pid_t)atoi(de->d_name);
		if (tid <= 0)
			continue;
		if (sched_getscheduler(tid) == SCHED_IDLE)
			sched_setscheduler(tid, SCHED_OTHER, &sp);
		sched_setaffinity(tid, sizeof fs->cpus, &fs->cpus);
	}
	closedir(d);
}

/* Unless set, a thread's I/O priority follows its scheduling policy, and
 * under SCHED_IDLE its reads are idle-class I/O, which the block layer's
 * scheduler serves after everything else: mq-deadline here took 2.5 to 6
 * times as long per read (a cold rm -rf of usr/share: 645 reads, 200-400
 * ms in them against 55 ms under kernel overlayfs). place_check()'s
 * SCHED_IDLE is about where the client wakes, not about deferring the
 * client's I/O: set the best-effort class the thread's nice value gives
 * under SCHED_OTHER. An I/O priority set for the daemon (ionice) stays. */
void keep_io_priority(void)
{
	long prio = syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0);
	if (prio < 0 || IOPRIO_PRIO_CLASS(prio) != IOPRIO_CLASS_NONE)
		return;
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	if (errno)
		nice = 0;
	int level = (nice + 20) / 5;
	if (level > 7)
		level = 7;
	if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE, level)) < 0)
		sdebug("ioprio_set: %s; a serving thread's reads may wait as idle-class I/O",
		       strerror(errno));
}

/* Where a request that waited is finished. The wait ends with an
 * interrupt on whichever CPU the device's interrupts go to; a thread
 * pinned elsewhere must then be woken there by an inter-processor
 * interrupt, on a virtual machine an exit to the host per request (4k
 * random reads from a client on the other CPU than the disk's interrupt
 * ran 1.3x slower than from the same CPU). Unpinned, the thread wakes where
 * the interrupt came in and its reply draws the client along (a halted
 * vCPU does not count as idle), after which that CPU's queue serves it (the reader follows it too).
 * Requests that waited show as time: one served here for longer than
 * FLOAT_NS unpins the thread for FLOAT_HOLD_NS; pinned again after that
 * long without one. A client that follows leaves this queue (with io_uring); one that
 * cannot (its own affinity) keeps sending here, and then every request
 * costs the thread two moves (40 us instead of 3): after FLOAT_REQS of
 * them it stays pinned for a second. A long request need not have waited
 * for the disk (a listing merged from 64 cached layers takes a
 * millisecond of CPU), and a client that stays put pays for every one. */
#define FLOAT_NS      40000u
#define FLOAT_HOLD_NS 50000000u
#define FLOAT_REQS    32

static void pin(struct place *p, bool on)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (on && p->home >= 0 && CPU_ISSET(p->home, &p->allowed))
		CPU_SET(p->home, &set);
	else
		set = p->allowed;
	sched_setaffinity(0, sizeof set, &set);
	p->floating = !on;
	p->float_reqs = 0;
}

void place_home(struct place *p, int cpu)
{
	p->home = cpu;
	if (!p->floating)
		pin(p, true);
}

void place_served(struct place *p, uint64_t t0, uint64_t t1)
{
	if (p->floating && ++p->float_reqs > FLOAT_REQS) {
		pin(p, true);
		p->no_float_until = t1 + 1000000000u;
		return;
	}
	if (t1 - t0 > FLOAT_NS && t1 >= p->no_float_until) {
		p->float_until = t1 + FLOAT_HOLD_NS;
		if (!p->floating)
			pin(p, false);
	} else if (p->floating && t1 > p->float_until) {
		pin(p, true);
	}
}
