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
#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef STRATA_HAVE_RUNTIME

struct monitor {
	struct ctr *c;
	struct ctr_spec *sp;
	json_t *st;              /* the state this monitor writes */
	int notify;              /* to the waiting CLI; -1 once told */
	int restarts;
};

static void save(struct monitor *m)
{
	int r = ctr_save_state(m->c->dirfd, m->st);
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

static void on_start(void *arg, const struct strata_started *info)
{
	struct monitor *m = arg;
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
		struct strata_error lerr;
		r = strata_launch(&m->sp->l, &lerr);
		strata_error_print(&lerr, "starting container %s", ctr_name(m->c));
		set_time(m->st, "FinishedAt");
		json_object_set_new(m->st, "Status", json_string("exited"));
		json_object_set_new(m->st, "Pid", json_integer(0));
		if (r < 0) {
			json_object_set_new(m->st, "ExitCode", json_integer(EXIT_STRATA));
			json_object_set_new(m->st, "Error",
					    json_string(lerr.code ? lerr.msg : "the container could not be started"));
		} else {
			json_object_set_new(m->st, "ExitCode", json_integer(r));
			if (r > 128 && r < 128 + 65)
				json_object_set_new(m->st, "Signal", json_integer(r - 128));
			if (r == 128 + SIGKILL && m->sp->l.limits.memory > 0 && !stopped_by_user(m))
				json_object_set_new(m->st, "OOMKilled", json_true());
		}
		remove_cgroups(m);
		/* One write: a reader never sees "exited" between two runs. */
		bool again = r >= 0 && want_restart(m, r);
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
static void autoremove(struct ctr *c)
{
	struct store s;
	if (ctr_lock(c) < 0)
		return;
	/* A start that won the lock before us made the container another
	 * monitor's: it is not ours to remove any more. */
	if ((pid_t)json_integer_value(json_object_get(c->st, "MonitorPid")) != getpid()) {
		ctr_unlock(c);
		return;
	}
	if (store_open(&s, c->root, true) == 0) {
		container_remove(&s, c->id);
		store_close(&s);
	}
	ctr_unlock(c);
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
	if (lg->fd >= 0 && lg->size > 0 && lg->size + (long long)o > lg->max) {
		/* Rotate: one older file is kept, as docker's max-file=2. */
		close(lg->fd);
		renameat(lg->dirfd, "ctr.log", lg->dirfd, "ctr.log.1");
		log_open(lg);
	}
	if (lg->fd < 0)
		return;
	for (size_t done = 0; done < o;) {
		ssize_t w = write(lg->fd, out + done, o - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		done += (size_t)w;
	}
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

static void logger_main(int dirfd, int out, int err, long long max) __attribute__((noreturn));
static void logger_main(int dirfd, int out, int err, long long max)
{
	static struct logbuf b[2] = { { .stream = "stdout" }, { .stream = "stderr" } };
	struct logger lg = { .dirfd = dirfd, .max = max };
	struct pollfd pf[2] = { { .fd = out, .events = POLLIN }, { .fd = err, .events = POLLIN } };
	log_open(&lg);
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
			b[i].len += (size_t)n;
			log_drain(&lg, &b[i], false);
		}
	}
	_exit(0);
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
		autoremove(c);
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
	int r = monitor_loop(&m);
	json_decref(m.st);
	if (sp->autoremove)
		autoremove(c);
	return r < 0 ? EXIT_STRATA : r;
}

#endif
