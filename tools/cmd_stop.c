/* stop, kill, restart, wait, pause, unpause, rm: what ends a container or
 * holds it. Each takes the container's lock for its whole operation
 * (except kill and wait, which change nothing of the record), and waits
 * for the state its monitor writes, never for the monitor itself, which
 * may need that lock to remove a --rm container. */
#include "cli.h"

#include "container.h"
#include "err.h"
#include "fsutil.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms)
{
	const struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&t, NULL);
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool active(enum ctr_status st)
{
	return st == CTR_RUNNING || st == CTR_PAUSED || st == CTR_RESTARTING;
}

/* Wait until the container is no longer active; false at the deadline
 * (timeout < 0: none). */
static bool wait_inactive(struct ctr *c, double timeout)
{
	double end = now_s() + timeout;
	for (;;) {
		if (ctr_reload_state(c) < 0 || !active(ctr_status(c)))
			return true;
		if (timeout >= 0 && now_s() > end)
			return false;
		sleep_ms(20);
	}
}

/* Open each named container in turn; fn's nonzero result is remembered
 * and the others are still done, as docker does. */
static int each(const char *root, int argc, char **argv, bool lock,
		int (*fn)(struct ctr *c, const char *what, void *arg), void *arg)
{
	int rc = 0;
	for (int i = 0; i < argc; i++) {
		struct store s;
		struct ctr c;
		int r = store_open(&s, root, false);
		if (r < 0)
			return EXIT_STRATA;
		r = ctr_open(&s, argv[i], &c);
		store_close(&s);
		if (r == 0 && lock)
			r = ctr_lock(&c);
		if (r == 0)
			r = fn(&c, argv[i], arg);
		else
			r = 1;
		ctr_close(&c);
		if (r)
			rc = r;
	}
	return rc;
}

static int thaw_now(struct ctr *c)
{
	char dir[4096], p[4200];
	bool v2;
	if (ctr_freezer(c, dir, sizeof dir, &v2) < 0)
		return 0;
	snprintf(p, sizeof p, "%s/%s", dir, v2 ? "cgroup.freeze" : "freezer.state");
	_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, v2 ? "0" : "THAWED", v2 ? 1 : 6) < 0) {
		int r = -errno;
		serr(r, "unpause: write", p, NULL);
		return r;
	}
	return 0;
}

/* Stop one container (lock held): its stop signal, SIGKILL after the
 * grace period, and a monitor that never records the end is killed and
 * its leftovers reaped. */
static int stop_locked(struct ctr *c, int timeout)
{
	enum ctr_status st = ctr_status(c);
	if (st == CTR_DEAD)
		ctr_reap_leftovers(c);
	if (!active(st))
		return 0;
	/* The restart policy stands down from here on. */
	_cleanup_close_ int m = openat(c->dirfd, "stopped", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (timeout < 0) {
		const char *t = json_string_value(json_object_get(json_object_get(c->rec, "options"), "stop_timeout"));
		timeout = t ? atoi(t) : 10;
	}
	int sig = (int)json_integer_value(json_object_get(c->st, "StopSignal"));
	struct proc_ref init = proc_ref_from(c->st, "Pid", "PidStart");
	if (st == CTR_PAUSED)
		thaw_now(c);
	if (st != CTR_RESTARTING)
		proc_kill(&init, sig > 0 ? sig : SIGTERM);
	if (wait_inactive(c, timeout))
		return 0;
	init = proc_ref_from(c->st, "Pid", "PidStart");
	proc_kill(&init, SIGKILL);
	if (wait_inactive(c, 30))
		return 0;
	/* The monitor did not record the end: take everything down. */
	ctr_reap_leftovers(c);
	return 0;
}

static int stop_one(struct ctr *c, const char *what, void *arg)
{
	stop_locked(c, *(int *)arg);
	printf("%s\n", what);
	return 0;
}

static int parse_timeout(const char *cmd, int *argc, char ***argv, int *timeout)
{
	int i = 0;
	*timeout = -1;
	for (; i < *argc && (*argv)[i][0] == '-'; i++) {
		const char *a = (*argv)[i];
		if ((!strcmp(a, "-t") || !strcmp(a, "--time") || !strcmp(a, "--timeout")) && i + 1 < *argc) {
			*timeout = atoi((*argv)[++i]);
		} else if (!strncmp(a, "--time=", 7)) {
			*timeout = atoi(a + 7);
		} else if (!strcmp(a, "--help")) {
			cli_help(cmd, stdout);
			return 1;
		} else {
			susage("%s: unknown option %s (see strata %s --help)", cmd, a, cmd);
			return -EINVAL;
		}
	}
	*argc -= i;
	*argv += i;
	if (*argc < 1) {
		susage("usage: strata %s [-t SECONDS] CONTAINER...", cmd);
		return -EINVAL;
	}
	return 0;
}

int cmd_stop(const char *root, int argc, char **argv)
{
	int t, r = parse_timeout("stop", &argc, &argv, &t);
	if (r)
		return r > 0 ? 0 : EXIT_STRATA;
	return each(root, argc, argv, true, stop_one, &t);
}

static int restart_one(struct ctr *c, const char *what, void *arg)
{
	stop_locked(c, *(int *)arg);
	ctr_unlock(c);
	return ctr_start(c->root, c->id, false, false) == 0 ? (printf("%s\n", what), 0) : EXIT_STRATA;
}

int cmd_restart(const char *root, int argc, char **argv)
{
	int t, r = parse_timeout("restart", &argc, &argv, &t);
	if (r)
		return r > 0 ? 0 : EXIT_STRATA;
	return each(root, argc, argv, true, restart_one, &t);
}

static int kill_one(struct ctr *c, const char *what, void *arg)
{
	int sig = *(int *)arg;
	enum ctr_status st = ctr_status(c);
	if (st != CTR_RUNNING && st != CTR_PAUSED) {
		susage("kill %s: container is not running (%s)", what, ctr_status_name(st));
		return 1;
	}
	int stopsig = (int)json_integer_value(json_object_get(c->st, "StopSignal"));
	if (sig == SIGKILL || sig == stopsig) {
		_cleanup_close_ int m = openat(c->dirfd, "stopped", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	}
	struct proc_ref init = proc_ref_from(c->st, "Pid", "PidStart");
	int r = proc_kill(&init, sig);
	if (r < 0) {
		serr(r, "kill", what, "its init is gone; see `strata ps -a`");
		return 1;
	}
	printf("%s\n", what);
	return 0;
}

int cmd_kill(const char *root, int argc, char **argv)
{
	int i = 0, sig = SIGKILL;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i], *v = NULL;
		if ((!strcmp(a, "-s") || !strcmp(a, "--signal")) && i + 1 < argc)
			v = argv[++i];
		else if (!strncmp(a, "--signal=", 9))
			v = a + 9;
		else if (!strcmp(a, "--help")) {
			cli_help("kill", stdout);
			return 0;
		} else {
			susage("kill: unknown option %s (see strata kill --help)", a);
			return EXIT_STRATA;
		}
		if ((sig = signal_parse(v)) < 0) {
			susage("kill: %s is not a signal (e.g. TERM, SIGKILL, 9)", v);
			return EXIT_STRATA;
		}
	}
	if (i >= argc) {
		susage("usage: strata kill [-s SIGNAL] CONTAINER...");
		return EXIT_STRATA;
	}
	return each(root, argc - i, argv + i, false, kill_one, &sig);
}

/* Did the state record the end of its latest run? A container started
 * again keeps the last run's FinishedAt (as docker shows it) until this
 * run ends: only a FinishedAt from after StartedAt is this run's. (Both
 * are fixed-width RFC 3339 times in UTC: they compare as strings.) */
static bool end_recorded(json_t *st)
{
	const char *fin = json_string_value(json_object_get(st, "FinishedAt"));
	const char *start = json_string_value(json_object_get(st, "StartedAt"));
	return fin && (!start || strcmp(fin, start) >= 0);
}

static int wait_one(struct ctr *c, const char *what, void *arg)
{
	(void)what, (void)arg;
	/* Opened now, read if the container vanishes (--rm): the monitor
	 * writes the code into this same file before it removes anything. */
	_cleanup_close_ int efd = openat(c->dirfd, "exit", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	bool gone = false, seen_active = active(ctr_status(c));
	for (;;) {
		if (ctr_reload_state(c) < 0) {
			gone = true;
			break;
		}
		enum ctr_status st = ctr_status(c);
		/* --rm removes the directory file by file: a state that is
		 * gone while the record is still there is the removal under
		 * way, not a container that never ran */
		if (seen_active && st == CTR_CREATED && !json_object_get(c->st, "Status")) {
			sleep_ms(5);
			continue;
		}
		if (!active(st))
			break;
		seen_active = true;
		sleep_ms(20);
	}
	char buf[16] = "";
	if (gone && efd >= 0 && pread(efd, buf, sizeof buf - 1, 0) > 0)
		printf("%d\n", atoi(buf));
	else if (!gone && ctr_status(c) == CTR_DEAD && !end_recorded(c->st))
		printf("%d\n", 128 + SIGKILL);
	else
		printf("%lld\n", (long long)json_integer_value(json_object_get(c->st, "ExitCode")));
	fflush(stdout);
	return 0;
}

int cmd_wait(const char *root, int argc, char **argv)
{
	if (argc >= 1 && !strcmp(argv[0], "--help")) {
		cli_help("wait", stdout);
		return 0;
	}
	if (argc < 1) {
		susage("usage: strata wait CONTAINER...");
		return EXIT_STRATA;
	}
	return each(root, argc, argv, false, wait_one, NULL);
}

/* ---------------------------------------------------------------- pause */

static int write_str(const char *path, const char *s)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, s, strlen(s)) < 0)
		return -errno;
	return 0;
}

/* Where to freeze: the container's v2 cgroup, else a v1 freezer cgroup
 * beside its monitor's, holding every process of the container. */
static int pick_freezer(struct ctr *c, char *dir, size_t len, bool *v2)
{
	const char *cg = json_string_value(json_object_get(c->st, "Cgroup"));
	char p[4200];
	if (cg) {
		snprintf(p, sizeof p, "%s/cgroup.freeze", cg);
		if (access(p, F_OK) == 0) {
			snprintf(dir, len, "%s", cg);
			*v2 = true;
			return 0;
		}
	}
	*v2 = false;
	if (access("/sys/fs/cgroup/freezer/freezer.state", F_OK) < 0 &&
	    access("/sys/fs/cgroup/freezer/cgroup.procs", F_OK) < 0) {
		susage("pause %s: no cgroup freezer on this host (neither a v2 cgroup for the container nor the "
		       "v1 freezer at /sys/fs/cgroup/freezer)", ctr_name(c));
		return -ENOTSUP;
	}
	/* The monitor's own freezer cgroup, from /proc/PID/cgroup. */
	pid_t mon = (pid_t)json_integer_value(json_object_get(c->st, "MonitorPid"));
	snprintf(p, sizeof p, "/proc/%d/cgroup", (int)mon);
	_cleanup_free_ char *buf = NULL;
	const char *rel = "/";
	if (read_file_at(AT_FDCWD, p, 1 << 16, &buf, NULL) == 0) {
		for (char *save, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
			if (a && b && (size_t)(b - a - 1) == strlen("freezer") && !strncmp(a + 1, "freezer", 7)) {
				rel = b + 1;
				break;
			}
		}
	}
	snprintf(dir, len, "/sys/fs/cgroup/freezer%s%sstrata-%.12s", rel, rel[strlen(rel) - 1] == '/' ? "" : "/", c->id);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		int r = -errno;
		serr(r, "pause: create freezer cgroup", dir,
		     r == -EACCES || r == -EROFS ? "the v1 freezer needs root (a rootless container can be paused "
						   "only through a delegated cgroup v2 tree)" : NULL);
		return r;
	}
	return 0;
}

static int pause_one(struct ctr *c, const char *what, void *arg)
{
	(void)arg;
	char dir[4096], p[4200];
	bool v2;
	enum ctr_status st = ctr_status(c);
	if (st != CTR_RUNNING) {
		susage("pause %s: container is %s, not running", what, ctr_status_name(st));
		return 1;
	}
	int r = pick_freezer(c, dir, sizeof dir, &v2);
	if (r < 0)
		return 1;
	int fd = openat(c->dirfd, "freezer", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, dir, strlen(dir)) < 0) {
		serr(errno, "pause: record freezer of", what, NULL);
		if (fd >= 0)
			close(fd);
		return 1;
	}
	close(fd);
	if (!v2) {
		/* Move every process in; a fork racing the move is caught by
		 * the next round. */
		for (int round = 0; round < 10; round++) {
			pid_t *pids;
			size_t n, moved = 0;
			if (ctr_pids(c, &pids, &n) < 0)
				break;
			snprintf(p, sizeof p, "%s/cgroup.procs", dir);
			_cleanup_free_ char *cur = NULL;
			read_file_at(AT_FDCWD, p, 1 << 20, &cur, NULL);
			for (size_t i = 0; i < n; i++) {
				char line[32];
				snprintf(line, sizeof line, "%d", (int)pids[i]);
				if (write_str(p, line) == 0)
					moved++;
			}
			free(pids);
			(void)cur;
			if (round > 0 && moved == n)
				break;
		}
	}
	snprintf(p, sizeof p, "%s/%s", dir, v2 ? "cgroup.freeze" : "freezer.state");
	if ((r = write_str(p, v2 ? "1" : "FROZEN")) < 0) {
		serr(r, "pause: write", p, NULL);
		return 1;
	}
	printf("%s\n", what);
	return 0;
}

static int unpause_one(struct ctr *c, const char *what, void *arg)
{
	(void)arg;
	if (ctr_status(c) != CTR_PAUSED) {
		susage("unpause %s: container is not paused", what);
		return 1;
	}
	if (thaw_now(c) < 0)
		return 1;
	printf("%s\n", what);
	return 0;
}

static int simple_verb(const char *verb, const char *root, int argc, char **argv,
		       int (*fn)(struct ctr *, const char *, void *))
{
	if (argc >= 1 && !strcmp(argv[0], "--help")) {
		cli_help(verb, stdout);
		return 0;
	}
	if (argc < 1 || argv[0][0] == '-') {
		susage("usage: strata %s CONTAINER...", verb);
		return EXIT_STRATA;
	}
	return each(root, argc, argv, true, fn, NULL);
}

int cmd_pause(const char *root, int argc, char **argv)
{
	return simple_verb("pause", root, argc, argv, pause_one);
}

int cmd_unpause(const char *root, int argc, char **argv)
{
	return simple_verb("unpause", root, argc, argv, unpause_one);
}

/* ---------------------------------------------------------------- rm */

static int rm_one(struct ctr *c, const char *what, void *arg)
{
	bool force = *(bool *)arg;
	enum ctr_status st = ctr_status(c);
	if (active(st)) {
		if (!force) {
			susage("container %s is running: stop it first or use rm -f", what);
			return 1;
		}
		stop_locked(c, 0);
	}
	/* A dead monitor's leftovers: processes by checked pid, cgroups. */
	ctr_reload_state(c);
	ctr_reap_leftovers(c);
	struct proc_ref mon = proc_ref_from(c->st, "MonitorPid", "MonitorStart");
	struct store s;
	int r = store_open(&s, c->root, true);
	if (r < 0)
		return 1;
	r = container_remove(&s, c->id);
	store_close(&s);
	if (r < 0)
		return 1;
	/* The monitor finishes (its log, its cgroups) after the state says
	 * exited: done when it is gone, so nothing of it is left. */
	ctr_unlock(c);
	for (int i = 0; i < 500 && proc_alive(&mon); i++)
		sleep_ms(20);
	printf("%s\n", what);
	return 0;
}

int cmd_rm(const char *root, int argc, char **argv)
{
	bool force = false;
	int i = 0;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--force"))
			force = true;
		else if (!strcmp(argv[i], "--help")) {
			cli_help("rm", stdout);
			return 0;
		} else {
			susage("rm: unknown option %s (see strata rm --help)", argv[i]);
			return EXIT_STRATA;
		}
	}
	if (i >= argc) {
		susage("usage: strata rm [-f] CONTAINER...");
		return EXIT_STRATA;
	}
	return each(root, argc - i, argv + i, true, rm_one, &force);
}
