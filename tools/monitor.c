/* monitor: the process that owns one running container (conmon's job).
 *
 * Detached (`run -d`, `start`), the CLI forks twice; the grandchild, in a
 * session of its own with its stdio on /dev/null, is the monitor: it runs
 * the container through strata_launch() with the command's stdout and
 * stderr on pipes read by a small logger child that writes ctr.log, tells
 * the CLI through a pipe as soon as the command runs, records every change
 * of the container's state, carries out the restart policy and removes
 * the container for --rm. Attached (`run`, `start -a`) the CLI itself runs
 * the same loop with the caller's stdio.
 *
 * Whatever way the monitor ends, the launcher's death signals take the
 * container down with it; what the monitor could not record, `ps` tells
 * from the dead monitor pid and `rm -f` cleans.
 */
#include "container.h"

#include "err.h"
#include "fsutil.h"
#include "io.h"
#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef STRATA_HAVE_RUNTIME

/* The watcher: a thread of the monitor, alive while one run of the
 * container lasts. strata_launch() keeps the monitor's main thread; the
 * watcher sees what the launcher does not look for:
 *  - the FUSE daemon dying under a running container (killed, crashed):
 *    every file access in the container would fail with ENOTCONN from
 *    then on, so the watcher kills the container's init and the run is
 *    recorded as dead, with that reason;
 *  - an OOM kill in the container's memory cgroup: the kernel's own
 *    count (v1 memory.oom_control, v2 memory.events "oom_kill"), read
 *    when the cgroup signals an OOM event, while it still exists (the
 *    launcher removes it before strata_launch() returns).
 * A normal end is told apart from a dead daemon by order: init exits
 * first and the daemon only once the container's mounts are gone. */
struct watch {
	pthread_t thread;
	bool started;
	int daemon_fd, init_fd;  /* pidfds */
	pid_t init_pid, daemon_pid;
	int oom_fd;              /* v1: an eventfd armed on memory.oom_control;
				  * v2: memory.events (POLLPRI) */
	int oom_count_fd;        /* the file holding "oom_kill N" */
	int quit[2];
	atomic_bool daemon_died, oom_killed;
};

struct monitor {
	struct ctr *c;
	struct ctr_spec *sp;
	json_t *st;              /* the state this monitor writes */
	int notify;              /* to the waiting CLI; -1 once told */
	int restarts;
	unsigned kept;           /* old states left for --rm (see ctr_save_state_keep) */
	struct watch w;
};

static void save(struct monitor *m)
{
	int r = ctr_save_state_keep(m->c->dirfd, m->st, m->sp->autoremove ? &m->kept : NULL);
	if (r < 0 && r != -ENOENT)
		serr(r, "write container state", m->c->id, "check free space of the store");
}

static void tell(struct monitor *m, char what, int value)
{
	char buf[32];
	if (m->notify < 0)
		return;
	int n = snprintf(buf, sizeof buf, "%c%d\n", what, value);
	/* A CLI that is gone must not kill us with SIGPIPE; the disposition
	 * stays the default, which the container's processes inherit. */
	sigset_t pipe, old;
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	sigprocmask(SIG_BLOCK, &pipe, &old);
	if (write(m->notify, buf, (size_t)n) != n) {
		const struct timespec zero = { 0, 0 };
		sigtimedwait(&pipe, NULL, &zero);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(m->notify);
	m->notify = -1;
}

static void set_time(json_t *st, const char *key)
{
	char now[64];
	now_rfc3339(now, sizeof now, true);
	json_object_set_new(st, key, json_string(now));
}

static int pidfd_of(pid_t pid)
{
	return pid > 0 ? (int)syscall(SYS_pidfd_open, pid, 0) : -1;
}

/* "oom_kill N" of a memory cgroup's oom_control (v1) or events (v2). */
static long oom_kills(int fd)
{
	char buf[1024];
	ssize_t n = fd >= 0 ? pread(fd, buf, sizeof buf - 1, 0) : -1;
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	const char *k = strstr(buf, "oom_kill ");
	return k ? strtol(k + 9, NULL, 10) : -1;
}

/* Whether pid has begun to exit (PF_EXITING in /proc/PID/stat's flags),
 * or is gone. The container's init drops its mount namespace, which ends
 * the daemon, before its pidfd turns readable: a daemon that ends while
 * init is exiting ended normally. */
static bool proc_exiting(pid_t pid)
{
	char p[64], buf[1024];
	snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	const char *q = strrchr(buf, ')');
	unsigned long flags = 0;
	char state = 0;
	if (!q || sscanf(q + 2, "%c %*d %*d %*d %*d %*d %lu", &state, &flags) != 2)
		return true;
	return state == 'Z' || state == 'X' || (flags & 0x4);
}

/* PIDFD_GET_INFO (Linux 6.13; the exit status since 6.15), declared here
 * for older headers: the first 64 bytes of struct pidfd_info. */
struct pidfd_info_v0 {
	uint64_t mask, cgroupid;
	uint32_t pid, tgid, ppid, ruid, rgid, euid, egid, suid, sgid, fsuid, fsgid;
	int32_t exit_code;
};
#define PIDFD_GET_INFO_V0 _IOWR(0xFF, 11, struct pidfd_info_v0)
#define PIDFD_INFO_EXIT_BIT (1ULL << 3)

/* How the daemon ended, from its wait status, which the kernel keeps in
 * the pidfd once its parent (the launcher's outer process) reaped it:
 * 0 a normal end (exit 0: its mount went away with the container), 1 it
 * died (a signal, an error), -1 not known (older kernel). */
static int daemon_end(int pidfd, int quit)
{
	for (int i = 0; i < 200; i++) {
		struct pidfd_info_v0 info = { .mask = PIDFD_INFO_EXIT_BIT };
		if (ioctl(pidfd, PIDFD_GET_INFO_V0, &info) < 0)
			return -1;
		if (info.mask & PIDFD_INFO_EXIT_BIT)
			return WIFEXITED(info.exit_code) && WEXITSTATUS(info.exit_code) == 0 ? 0 : 1;
		if (i > 0 && quit < 0)
			return -1;
		/* Exited, not yet reaped: the outer process reaps it once it
		 * has reaped init. The watcher is told to quit only after
		 * the launcher returned, by when outer has reaped the daemon:
		 * the quit ends the wait at once (a sleep here held up the
		 * end of every attached run), and one more look finds the
		 * status. */
		struct pollfd q = { .fd = quit, .events = POLLIN };
		if (quit >= 0 && poll(&q, 1, 5) == 1)
			quit = -1;
	}
	return -1;
}

static void watch_oom_check(struct watch *w)
{
	if (oom_kills(w->oom_count_fd) > 0)
		atomic_store(&w->oom_killed, true);
}

static void *watch_main(void *arg)
{
	struct watch *w = arg;
	for (;;) {
		struct pollfd pf[4] = {
			{ .fd = w->init_fd, .events = POLLIN },
			{ .fd = atomic_load(&w->daemon_died) ? -1 : w->daemon_fd, .events = POLLIN },
			{ .fd = w->oom_fd, .events = w->oom_count_fd == w->oom_fd ? POLLPRI : POLLIN },
			{ .fd = w->quit[0], .events = POLLIN },
		};
		if (poll(pf, 4, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[2].revents && w->oom_fd != w->oom_count_fd) {
			/* v1: the event comes as the OOM begins, before its kill
			 * is counted; the removal of the cgroup signals it too.
			 * An event of a cgroup that is still there is an OOM
			 * (docker and containerd count it so on v1). */
			uint64_t v;
			if (read(w->oom_fd, &v, sizeof v) < 0) {
				/* nonblocking: nothing more to take */
			}
			if (oom_kills(w->oom_count_fd) >= 0)
				atomic_store(&w->oom_killed, true);
			else
				w->oom_fd = -1;
		} else if (pf[2].revents) {
			watch_oom_check(w);
			if (pf[2].revents & (POLLERR | POLLNVAL))
				w->oom_fd = -1;
		}
		if (pf[0].revents) {
			watch_oom_check(w);
			/* A daemon killed under a running command ends the
			 * command too (its files fail), and both pidfds can
			 * turn readable before we look: the daemon's status
			 * tells its death from the normal end (exit 0). */
			struct pollfd d = { .fd = w->daemon_fd, .events = POLLIN };
			/* A killed daemon drops its connection as it begins
			 * to exit, before its pidfd turns readable: a command
			 * that failed on that (an exec that found nothing) can
			 * end in between. A daemon exiting is asked how. */
			if (!pf[1].revents && poll(&d, 1, 0) != 1 && !proc_exiting(w->daemon_pid))
				break;
			if (!atomic_load(&w->daemon_died) && daemon_end(w->daemon_fd, w->quit[0]) == 1)
				atomic_store(&w->daemon_died, true);
			break;
		}
		if (pf[1].revents) {
			struct pollfd init = { .fd = w->init_fd, .events = POLLIN };
			int how = poll(&init, 1, 0) == 1 ? 0 : daemon_end(w->daemon_fd, w->quit[0]);
			/* without the kernel's word: init went first, the normal
			 * end (a busy machine is given a moment to show it) */
			if (how < 0)
				how = proc_exiting(w->init_pid) || poll(&init, 1, 100) == 1 ||
				      proc_exiting(w->init_pid) ? 0 : 1;
			if (how == 0)
				break;
			atomic_store(&w->daemon_died, true);
			syscall(SYS_pidfd_send_signal, w->init_fd, SIGKILL, NULL, 0);
		}
		if (pf[3].revents)
			break;
	}
	return NULL;
}

/* Arm the watcher for the run that just started (see struct watch);
 * best effort: a container the monitor cannot watch still runs. */
static void watch_start(struct watch *w, const struct strata_started *info)
{
	char p[4200];
	w->daemon_fd = pidfd_of(info->daemon_pid);
	w->init_fd = pidfd_of(info->init_pid);
	w->init_pid = info->init_pid;
	w->daemon_pid = info->daemon_pid;
	for (size_t i = 0; i < info->n_cgroup_dirs && w->oom_fd < 0; i++) {
		snprintf(p, sizeof p, "%s/memory.events", info->cgroup_dirs[i]);
		if ((w->oom_count_fd = open(p, O_RDONLY | O_CLOEXEC)) >= 0) {
			w->oom_fd = w->oom_count_fd;
			break;
		}
		snprintf(p, sizeof p, "%s/memory.oom_control", info->cgroup_dirs[i]);
		if ((w->oom_count_fd = open(p, O_RDONLY | O_CLOEXEC)) < 0)
			continue;
		/* v1 tells of OOMs through an eventfd registered for the file */
		int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		char reg[64];
		snprintf(p, sizeof p, "%s/cgroup.event_control", info->cgroup_dirs[i]);
		int n = snprintf(reg, sizeof reg, "%d %d", efd, w->oom_count_fd);
		int ctl = efd >= 0 ? open(p, O_WRONLY | O_CLOEXEC) : -1;
		if (ctl >= 0 && write(ctl, reg, (size_t)n) == n)
			w->oom_fd = efd;
		else if (efd >= 0)
			close(efd);
		if (ctl >= 0)
			close(ctl);
	}
	if (w->daemon_fd < 0 || w->init_fd < 0 || pipe2(w->quit, O_CLOEXEC) < 0)
		return;
	/* No signal may land on this thread: the launcher waits for its
	 * SIGCHLD and forwarded signals with sigtimedwait() in the main one. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	w->started = pthread_create(&w->thread, NULL, watch_main, w) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void watch_init(struct watch *w)
{
	w->started = false;
	w->daemon_fd = w->init_fd = w->oom_fd = w->oom_count_fd = w->quit[0] = w->quit[1] = -1;
	atomic_store(&w->daemon_died, false);
	atomic_store(&w->oom_killed, false);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void watch_stop(struct watch *w)
{
	if (w->started) {
		if (write(w->quit[1], "q", 1) < 0) {
			/* the thread ends on init's exit anyway */
		}
		pthread_join(w->thread, NULL);
		w->started = false;
	}
	if (w->oom_fd != w->oom_count_fd)
		close_fd(&w->oom_fd);
	w->oom_fd = -1;
	close_fd(&w->oom_count_fd);
	close_fd(&w->daemon_fd);
	close_fd(&w->init_fd);
	close_fd(&w->quit[0]);
	close_fd(&w->quit[1]);
}

static void on_start(void *arg, const struct strata_started *info)
{
	struct monitor *m = arg;
	watch_start(&m->w, info);
	json_object_set_new(m->st, "Status", json_string("running"));
	json_object_set_new(m->st, "Pid", json_integer(info->init_pid));
	json_object_set_new(m->st, "PidStart", json_integer((json_int_t)proc_start_time(info->init_pid)));
	json_object_set_new(m->st, "DaemonPid", json_integer(info->daemon_pid));
	json_object_set_new(m->st, "DaemonStart", json_integer((json_int_t)proc_start_time(info->daemon_pid)));
	if (info->cgroup)
		json_object_set_new(m->st, "Cgroup", json_string(info->cgroup));
	else
		json_object_del(m->st, "Cgroup");
	json_object_set_new(m->st, "ExitCode", json_integer(0));
	json_object_del(m->st, "Signal");
	json_object_del(m->st, "Error");
	json_object_del(m->st, "OOMKilled");
	set_time(m->st, "StartedAt");
	save(m);
	tell(m, 'S', info->init_pid);
}

static bool stopped_by_user(struct monitor *m)
{
	return faccessat(m->c->dirfd, "stopped", F_OK, 0) == 0;
}

static bool want_restart(struct monitor *m, int code)
{
	if (stopped_by_user(m))
		return false;
	switch (m->sp->restart) {
	case RESTART_ALWAYS:
	case RESTART_UNLESS_STOPPED:
		return true;
	case RESTART_ON_FAILURE:
		return code != 0 && (m->sp->restart_max == 0 || m->restarts < m->sp->restart_max);
	default:
		return false;
	}
}

/* Backoff between restarts as docker's: 100 ms, doubling, at most 10 s;
 * a user's stop ends the wait. */
static bool restart_pause(struct monitor *m)
{
	long ms = 100L << (m->restarts < 7 ? m->restarts : 7);
	if (ms > 10000)
		ms = 10000;
	for (long waited = 0; waited < ms; waited += 50) {
		if (stopped_by_user(m))
			return false;
		const struct timespec tick = { 0, 50 * 1000 * 1000 };
		nanosleep(&tick, NULL);
	}
	return !stopped_by_user(m);
}

/* What the launcher's cgroup and pause's freezer leave behind. */
static void remove_cgroups(struct monitor *m)
{
	char p[4200];
	_cleanup_free_ char *fz = NULL;
	if (read_file_at(m->c->dirfd, "freezer", 4096, &fz, NULL) == 0) {
		snprintf(p, sizeof p, "%s/freezer.state", fz);
		_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
		if (fd >= 0 && write(fd, "THAWED", 6) < 0) {
			/* gone already */
		}
		rmdir(fz);
		unlinkat(m->c->dirfd, "freezer", 0);
	}
	const char *cg = json_string_value(json_object_get(m->st, "Cgroup"));
	char dirs[16][4096];
	size_t n = ctr_cgroup_dirs(cg, dirs, 16);
	for (size_t i = 0; i < n; i++)
		rmdir(dirs[i]);
}

/* The exit code in a file written in place, before the state says the
 * container ended: `wait` holds it open and reads it even after --rm
 * removed the directory. */
static void write_exit(struct monitor *m, int code)
{
	char buf[16];
	int n = snprintf(buf, sizeof buf, "%d\n", code);
	_cleanup_close_ int fd = openat(m->c->dirfd, "exit", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0 && (pwrite(fd, buf, (size_t)n, 0) != n || ftruncate(fd, n) < 0)) {
		/* wait falls back to the state */
	}
}

/* Run (and rerun) the container; returns the last exit code, or -errno
 * when it could not be started at all. */
static int monitor_loop(struct monitor *m)
{
	int r;
	json_object_set_new(m->st, "MonitorPid", json_integer(getpid()));
	json_object_set_new(m->st, "MonitorStart", json_integer((json_int_t)proc_start_time(getpid())));
	json_object_set_new(m->st, "RestartCount", json_integer(0));
	json_object_set_new(m->st, "StopSignal", json_integer(m->sp->stop_signal));
	for (;;) {
		json_object_set_new(m->st, "Status", json_string("starting"));
		json_object_del(m->st, "Pid");
		save(m);
		m->sp->l.on_start = on_start;
		m->sp->l.on_start_arg = m;
		watch_init(&m->w);
		struct strata_error lerr;
		r = strata_launch(&m->sp->l, &lerr);
		strata_error_print(&lerr, "starting container %s", ctr_name(m->c));
		watch_stop(&m->w);
		set_time(m->st, "FinishedAt");
		json_object_set_new(m->st, "Status", json_string("exited"));
		json_object_set_new(m->st, "Pid", json_integer(0));
		json_object_del(m->st, "DeadReason");
		if (r < 0) {
			json_object_set_new(m->st, "ExitCode", json_integer(EXIT_STRATA));
			json_object_set_new(m->st, "Error",
					    json_string(lerr.code ? lerr.msg : "the container could not be started"));
		} else {
			json_object_set_new(m->st, "ExitCode", json_integer(r));
			if (r > 128 && r < 128 + 65)
				json_object_set_new(m->st, "Signal", json_integer(r - 128));
			/* docker's OOMKilled: the kernel killed a process of
			 * the container for want of memory, whichever it was */
			json_object_set_new(m->st, "OOMKilled", json_boolean(atomic_load(&m->w.oom_killed)));
		}
		bool daemon_died = atomic_load(&m->w.daemon_died);
		if (daemon_died) {
			/* The watcher killed init: that is the end, whatever
			 * the command made of its filesystem's death first (an
			 * exec that found nothing, 127; a set-up step, 125) */
			r = 128 + SIGKILL;
			json_object_set_new(m->st, "ExitCode", json_integer(r));
			json_object_set_new(m->st, "Signal", json_integer(SIGKILL));
			json_object_set_new(m->st, "Status", json_string("dead"));
			json_object_set_new(m->st, "DeadReason", json_string("filesystem daemon died"));
			json_object_set_new(m->st, "Error", json_string("the container's filesystem daemon (strata-fs) died "
									 "while it ran; the container was stopped"));
			fprintf(stderr, "strata: container %s: its filesystem daemon died; the container was stopped "
				"(see `strata inspect %s`)\n", ctr_name(m->c), ctr_name(m->c));
		}
		remove_cgroups(m);
		/* One write: a reader never sees "exited" between two runs.
		 * A dead daemon is no failure of the command: not restarted. */
		bool again = r >= 0 && !daemon_died && want_restart(m, r);
		if (again) {
			m->restarts++;
			json_object_set_new(m->st, "RestartCount", json_integer(m->restarts));
			json_object_set_new(m->st, "Status", json_string("restarting"));
		}
		if (!again)
			write_exit(m, r < 0 ? EXIT_STRATA : r);
		save(m);
		if (!again)
			break;
		if (!restart_pause(m)) {
			json_object_set_new(m->st, "Status", json_string("exited"));
			save(m);
			break;
		}
	}
	return r;
}

/* --rm: the container goes when its command ends. Whoever holds the
 * container's lock (rm -f, stop) waits for the state, never for us, so
 * waiting for the lock here cannot deadlock. */
static bool image_tagged(struct store *s, json_t *rec)
{
	const char *image = json_string_value(json_object_get(rec, "image"));
	json_t *tags = NULL, *v;
	const char *k;
	bool tagged = false;
	if (image && store_tags(s, &tags) == 0)
		json_object_foreach(tags, k, v)
			tagged = tagged || (json_string_value(v) && !strcmp(json_string_value(v), image));
	json_decref(tags);
	return tagged;
}

/* An attached run --rm returns once its container is gone from the store
 * (moved into this process's tmp/ directory, its record unlinked first so
 * that a command waiting for its lock finds no container); the files are
 * deleted by a child that outlives the CLI, holding the tmp/ directory's
 * flock, so no cleaner takes it meanwhile. Deleting a layer's worth of
 * directories took 2-16 ms on a busy machine, after the command had
 * ended. The child also takes the launcher's mount namespace (mntns,
 * see keep_mntns in launch.h), whose end waits for an RCU grace period.
 * Returns false when it did not apply (an untagged image needs the
 * collector, under the lock): the caller removes it as usual. */
static bool remove_behind(struct ctr *c, struct store *s, int mntns)
{
	char tmp[64], dst[128], src[128], rec[160];
	if (!image_tagged(s, c->rec))
		return false;
	int tfd = store_mktemp(s, tmp);
	if (tfd < 0)
		return false;
	close(tfd);
	snprintf(src, sizeof src, "containers/%s", c->id);
	snprintf(dst, sizeof dst, "%s/%.12s", tmp, c->id);
	snprintf(rec, sizeof rec, "%s/%.12s.json", tmp, c->id);
	/* The record is moved out rather than unlinked: an unlink frees its
	 * blocks, which on a store mounted with discard waits for the
	 * device; the child deletes it with the rest. */
	if (renameat(c->dirfd, "container.json", s->fd, rec) < 0 || renameat(s->fd, src, s->fd, dst) < 0)
		return false;   /* rm_rf of the record-less rest by the caller */
	store_unlock(s);
	ctr_unlock(c);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		/* store_close deletes tmp/<owner>, with the container in it */
		store_close(s);
		if (mntns >= 0)
			close(mntns);
		_exit(0);
	}
	if (pid < 0) {
		store_close(s);
		return true;
	}
	/* the child holds tmp/<owner>'s flock (one open file description) */
	close(s->ownfd);
	close(s->lockfd);
	close(s->fd);
	free(s->root);
	s->ownfd = s->lockfd = s->fd = -1;
	s->root = NULL;
	return true;
}

/* mntns: see remove_behind (closed here in any case; -1 for none). */
static void autoremove(struct ctr *c, bool behind, int mntns)
{
	struct store s;
	if (ctr_lock(c) < 0)
		goto out;
	/* A start that won the lock before us made the container another
	 * monitor's: it is not ours to remove any more. */
	if ((pid_t)json_integer_value(json_object_get(c->st, "MonitorPid")) != getpid()) {
		ctr_unlock(c);
		goto out;
	}
	if (store_open(&s, c->root, true) == 0) {
		if (behind && remove_behind(c, &s, mntns)) {
			if (mntns >= 0)
				close(mntns);
			return;
		}
		container_remove(&s, c->id);
		store_close(&s);
	}
	ctr_unlock(c);
out:
	if (mntns >= 0)
		close(mntns);
}

/* ---------------------------------------------------------------- the log */

struct logbuf {
	const char *stream;
	char data[16384];
	size_t len;
	bool eof;
};

struct logger {
	int dirfd, fd;
	long long size, max;
	bool opened;             /* ctr.log is made at the first line: a
				  * run --rm of a silent command makes none */
};

static void log_open(struct logger *lg)
{
	struct stat st;
	lg->fd = openat(lg->dirfd, "ctr.log", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	lg->size = lg->fd >= 0 && fstat(lg->fd, &st) == 0 ? st.st_size : 0;
}

/* One line of docker's json-file format; bytes that are not UTF-8 become
 * U+FFFD, so every line is valid JSON whatever the command wrote. */
static void log_emit(struct logger *lg, const char *stream, const char *s, size_t n)
{
	size_t cap = n * 6 + 160, o = 0;
	_cleanup_free_ char *out = malloc(cap);
	if (!out)
		return;
	o += (size_t)snprintf(out, cap, "{\"log\":\"");
	for (size_t i = 0; i < n;) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\') {
			out[o++] = '\\';
			out[o++] = (char)ch;
			i++;
		} else if (ch == '\n') {
			memcpy(out + o, "\\n", 2);
			o += 2;
			i++;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
			i++;
		} else if (ch < 0x80) {
			out[o++] = (char)ch;
			i++;
		} else {
			size_t len = ch >= 0xf0 && ch < 0xf5 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc2 && ch < 0xe0 ? 2 : 0;
			bool ok = len && i + len <= n && !(ch >= 0xf5);
			for (size_t k = 1; ok && k < len; k++)
				ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
			if (ok && len == 3 && ch == 0xe0 && (unsigned char)s[i + 1] < 0xa0)
				ok = false;
			if (ok && len == 3 && ch == 0xed && (unsigned char)s[i + 1] >= 0xa0)
				ok = false;
			if (ok && len == 4 && ch == 0xf0 && (unsigned char)s[i + 1] < 0x90)
				ok = false;
			if (ok && len == 4 && ch == 0xf4 && (unsigned char)s[i + 1] >= 0x90)
				ok = false;
			if (ok) {
				memcpy(out + o, s + i, len);
				o += len;
				i += len;
			} else {
				memcpy(out + o, "\\ufffd", 6);
				o += 6;
				i++;
			}
		}
	}
	char now[64];
	now_rfc3339(now, sizeof now, true);
	o += (size_t)snprintf(out + o, cap - o, "\",\"stream\":\"%s\",\"time\":\"%s\"}\n", stream, now);
	if (!lg->opened) {
		log_open(lg);
		lg->opened = true;
	}
	if (lg->fd >= 0 && lg->size > 0 && lg->size + (long long)o > lg->max) {
		/* Rotate: one older file is kept, as docker's max-file=2. */
		close(lg->fd);
		renameat(lg->dirfd, "ctr.log", lg->dirfd, "ctr.log.1");
		log_open(lg);
	}
	if (lg->fd < 0)
		return;
	if (io_write_full(lg->fd, out, o, -1) < 0)
		return;
	lg->size += (long long)o;
}

static void log_drain(struct logger *lg, struct logbuf *b, bool all)
{
	size_t start = 0;
	for (;;) {
		char *nl = memchr(b->data + start, '\n', b->len - start);
		if (!nl)
			break;
		size_t end = (size_t)(nl - b->data) + 1;
		log_emit(lg, b->stream, b->data + start, end - start);
		start = end;
	}
	/* A full buffer without a newline, or the end of the stream, is
	 * written as it is. */
	if ((all || (start == 0 && b->len == sizeof b->data)) && b->len > start) {
		log_emit(lg, b->stream, b->data + start, b->len - start);
		start = b->len;
	}
	memmove(b->data, b->data + start, b->len - start);
	b->len -= start;
}

/* Read the command's stdout and stderr until both end, into ctr.log;
 * copy[i] >= 0: also pass each stream on as it comes (an attached run's
 * caller's stdout and stderr). */
static void log_relay(int dirfd, int out, int err, long long max, const int copy[2])
{
	struct logbuf b[2] = { { .stream = "stdout" }, { .stream = "stderr" } };
	struct logger lg = { .dirfd = dirfd, .fd = -1, .max = max };
	struct pollfd pf[2] = { { .fd = out, .events = POLLIN }, { .fd = err, .events = POLLIN } };
	while (!b[0].eof || !b[1].eof) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (b[i].eof || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(pf[i].fd, b[i].data + b[i].len, sizeof b[i].data - b[i].len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				b[i].eof = true;
				pf[i].fd = -1;
				log_drain(&lg, &b[i], true);
				continue;
			}
			if (copy && copy[i] >= 0)
				/* (the caller's output gone: the log goes on) */
				(void)io_write_full(copy[i], b[i].data + b[i].len, (size_t)n, -1);
			b[i].len += (size_t)n;
			log_drain(&lg, &b[i], false);
		}
	}
	if (lg.fd >= 0)
		close(lg.fd);
}

static void logger_main(int dirfd, int out, int err, long long max) __attribute__((noreturn));
static void logger_main(int dirfd, int out, int err, long long max)
{
	log_relay(dirfd, out, err, max, NULL);
	_exit(0);
}

/* An attached run without a terminal logs as a detached one does (docker
 * logs shows a foreground container's output too): the command's stdout
 * and stderr are pipes that a thread of the CLI copies to the caller's
 * stdout and stderr and into ctr.log. With -t the launcher relays the
 * terminal to the caller and hands each piece to tee_tty_output, which
 * logs it as "stdout", as docker logs a terminal (its \r\n included). A
 * detached -t container needs neither: its monitor's stdout, where the
 * terminal is relayed, is the logger's pipe already. */
struct tee {
	pthread_t thread;
	bool started;
	int dirfd, out[2], err[2], saved[2];
	long long max;
	bool tty;
	struct logger tlg;
	struct logbuf tbuf;
};

static void tee_tty_output(void *arg, const char *buf, size_t len)
{
	struct tee *t = arg;
	while (len) {
		size_t n = sizeof t->tbuf.data - t->tbuf.len;
		if (n > len)
			n = len;
		memcpy(t->tbuf.data + t->tbuf.len, buf, n);
		t->tbuf.len += n;
		buf += n;
		len -= n;
		log_drain(&t->tlg, &t->tbuf, false);
	}
}

static void *tee_main(void *arg)
{
	struct tee *t = arg;
	log_relay(t->dirfd, t->out[0], t->err[0], t->max, t->saved);
	return NULL;
}

static void tee_start(struct tee *t, struct ctr *c, struct ctr_spec *sp)
{
	t->started = false;
	t->out[0] = t->out[1] = t->err[0] = t->err[1] = t->saved[0] = t->saved[1] = -1;
	t->dirfd = c->dirfd;
	t->max = sp->log_max;
	t->tty = sp->l.tty;
	if (sp->l.tty) {
		t->tlg = (struct logger){ .dirfd = c->dirfd, .fd = -1, .max = sp->log_max };
		t->tbuf.stream = "stdout";
		t->tbuf.len = 0;
		sp->l.on_tty_output = tee_tty_output;
		sp->l.on_tty_output_arg = t;
		return;
	}
	fflush(stdout);
	fflush(stderr);
	if (pipe2(t->out, O_CLOEXEC) < 0 || pipe2(t->err, O_CLOEXEC) < 0 ||
	    (t->saved[0] = fcntl(1, F_DUPFD_CLOEXEC, 3)) < 0 || (t->saved[1] = fcntl(2, F_DUPFD_CLOEXEC, 3)) < 0)
		goto undo;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	t->started = pthread_create(&t->thread, NULL, tee_main, t) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!t->started)
		goto undo;
	dup2(t->out[1], 1);
	dup2(t->err[1], 2);
	close_fd(&t->out[1]);
	close_fd(&t->err[1]);
	return;
undo:
	/* unlogged, but the container runs as before */
	for (int i = 0; i < 2; i++) {
		close_fd(&t->out[i]);
		close_fd(&t->err[i]);
		close_fd(&t->saved[i]);
	}
}

static void tee_stop(struct tee *t)
{
	if (t->tty) {
		log_drain(&t->tlg, &t->tbuf, true);
		if (t->tlg.fd >= 0)
			close(t->tlg.fd);
		t->tlg.fd = -1;
		t->tty = false;
	}
	if (!t->started)
		return;
	fflush(stdout);
	fflush(stderr);
	/* our stdout and stderr back: the last writers of the pipes (the
	 * container's processes and its daemon are gone by now) */
	dup2(t->saved[0], 1);
	dup2(t->saved[1], 2);
	pthread_join(t->thread, NULL);
	for (int i = 0; i < 2; i++) {
		close_fd(&t->out[i]);
		close_fd(&t->err[i]);
		close_fd(&t->saved[i]);
	}
	t->started = false;
}

/* Close every descriptor but the ones kept: the monitor must not hold the
 * store's lock, the container's lock or the CLI's terminal. */
static void close_others(const int *keep, size_t n)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return;
	int self = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		bool k = fd <= 2 || fd == self || e->d_name[0] == '.';
		for (size_t i = 0; i < n && !k; i++)
			k = keep[i] == fd;
		if (!k)
			close(fd);
	}
	closedir(d);
}

static void monitor_child(struct ctr *c, struct ctr_spec *sp, int notify) __attribute__((noreturn));
static void monitor_child(struct ctr *c, struct ctr_spec *sp, int notify)
{
	int out[2], err[2], keep[] = { notify, c->dirfd };
	close_others(keep, 2);
	c->lockfd = -1;
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
		_exit(EXIT_STRATA);
	dup2(null, 0);
	/* Hold no directory of the caller's busy. */
	if (chdir("/") < 0)
		_exit(EXIT_STRATA);
	pid_t logger = fork();
	if (logger < 0)
		_exit(EXIT_STRATA);
	if (logger == 0) {
		signal(SIGPIPE, SIG_IGN);
		close(notify);
		close(out[1]);
		close(err[1]);
		dup2(null, 1);
		dup2(null, 2);
		logger_main(c->dirfd, out[0], err[0], sp->log_max);
	}
	close(out[0]);
	close(err[0]);
	dup2(out[1], 1);
	dup2(err[1], 2);
	close(out[1]);
	close(err[1]);

	struct monitor m = { .c = c, .sp = sp, .st = json_deep_copy(c->st), .notify = notify };
	if (!m.st)
		_exit(EXIT_STRATA);
	int r = monitor_loop(&m);
	/* The log is complete once the logger has read every writer's end. */
	dup2(null, 1);
	dup2(null, 2);
	waitpid(logger, NULL, 0);
	tell(&m, 'F', r < 0 ? EXIT_STRATA : r);
	if (sp->autoremove)
		autoremove(c, false, -1);
	_exit(0);
}

/* The stderr lines the log gained from offset on (why a start failed). */
static void print_log_errors(struct ctr *c, long long offset)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	if (read_file_at(c->dirfd, "ctr.log", 64 << 20, &buf, &len) < 0 || (long long)len < offset)
		return;
	for (char *save, *line = strtok_r(buf + offset, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, JSON_ALLOW_NUL, NULL);
		const char *s = json_string_value(json_object_get(j, "log"));
		if (s)
			fputs(s, stderr);
		json_decref(j);
	}
}

/* A fresh start clears what the last run's user action left. */
static void prepare_start(struct ctr *c)
{
	unlinkat(c->dirfd, "stopped", 0);
	enum ctr_status st = ctr_status(c);
	if (st == CTR_DEAD)
		ctr_reap_leftovers(c);
}

int monitor_start_detached(struct ctr *c, struct ctr_spec *sp)
{
	int p[2];
	struct stat lst;
	long long offset = fstatat(c->dirfd, "ctr.log", &lst, 0) == 0 ? lst.st_size : 0;
	prepare_start(c);
	if (pipe2(p, O_CLOEXEC) < 0) {
		serr(errno, "start: create pipe", NULL, NULL);
		return EXIT_STRATA;
	}
	fflush(stdout);
	fflush(stderr);
	pid_t mid = fork();
	if (mid < 0) {
		serr(errno, "start: fork", "the monitor", NULL);
		close(p[0]);
		close(p[1]);
		return EXIT_STRATA;
	}
	if (mid == 0) {
		close(p[0]);
		setsid();
		pid_t mon = fork();
		if (mon != 0)
			_exit(mon < 0 ? EXIT_STRATA : 0);
		monitor_child(c, sp, p[1]);
	}
	close(p[1]);
	int st;
	while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
		;
	char buf[64] = "";
	size_t got = 0;
	for (;;) {
		ssize_t n = read(p[0], buf + got, sizeof buf - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		/* One line says it all; the container's processes, forked
		 * before the monitor wrote it, hold the pipe open. */
		if (memchr(buf, '\n', got) || got == sizeof buf - 1)
			break;
	}
	close(p[0]);
	buf[got] = '\0';
	if (buf[0] == 'S')
		return 0;
	print_log_errors(c, offset);
	int code = buf[0] == 'F' ? atoi(buf + 1) : EXIT_STRATA;
	if (!buf[0])
		susage("start %s: its monitor ended before the container ran (see `strata logs %s`)", ctr_name(c), ctr_name(c));
	return code ? code : EXIT_STRATA;
}

int monitor_run_attached(struct ctr *c, struct ctr_spec *sp)
{
	prepare_start(c);
	struct monitor m = { .c = c, .sp = sp, .st = json_deep_copy(c->st), .notify = -1 };
	if (!m.st)
		return EXIT_STRATA;
	/* Others may stop us: the lock is theirs while we run. */
	ctr_unlock(c);
	/* One run (no restart policy) of a --rm container: the launcher's
	 * mount namespace is left to the child that deletes the files. */
	int mntns = -1;
	if (sp->autoremove && sp->restart == RESTART_NO)
		sp->l.keep_mntns = &mntns;
	struct tee t;
	tee_start(&t, c, sp);
	int r = monitor_loop(&m);
	tee_stop(&t);
	sp->l.keep_mntns = NULL;
	json_decref(m.st);
	if (sp->autoremove)
		autoremove(c, true, mntns);
	else if (mntns >= 0)
		close(mntns);
	return r < 0 ? EXIT_STRATA : r;
}

#endif
