/* strata_exec(): a further process in a running container.
 *
 *   caller   keeps its namespaces; relays the terminal (tty.c) and
 *            signals, returns the exit code
 *   joiner   moves into the container's cgroups, then into its
 *            namespaces (setns on a pidfd of init, all at once), and
 *            forks, since a pid namespace only applies to children
 *   process  pid N in the container: terminal, identity, capabilities,
 *            no_new_privs, environment, working directory, exec
 *
 * As in strata_launch(), a step that fails sends its error object on an
 * error pipe and exits 125, so the caller can tell it from the command's
 * own exit code; the pipe also closes on exec, which is how a detached
 * exec knows that its process runs. */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static void fail(int errfd, struct strata_error *e, int err) __attribute__((noreturn));
static void fail(int errfd, struct strata_error *e, int err)
{
	rt_fallback(e, err, "start", "the process in the container");
	send_failure(errfd, SETUP_FAILED_EXIT, e);
	_exit(SETUP_FAILED_EXIT);
}

static const struct {
	const char *name;
	int flag;
} nstypes[] = {
	/* user first: the others belong to it (the /proc fallback's order) */
	{ "user", CLONE_NEWUSER }, { "mnt", CLONE_NEWNS }, { "pid", CLONE_NEWPID },
	{ "uts", CLONE_NEWUTS }, { "ipc", CLONE_NEWIPC }, { "net", CLONE_NEWNET },
	{ "cgroup", CLONE_NEWCGROUP },
};

/* The namespaces in which init differs from us; joining one's own user
 * namespace is an error, and the others would only cost a privilege
 * check. */
static int ns_differing(pid_t pid, int *flags, struct strata_error *err)
{
	char path[64];
	struct stat mine, theirs;

	*flags = 0;
	for (size_t i = 0; i < sizeof nstypes / sizeof nstypes[0]; i++) {
		snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, nstypes[i].name);
		if (stat(path, &theirs) < 0) {
			if (errno == ENOENT && nstypes[i].flag == CLONE_NEWCGROUP)
				continue;
			int e = errno;
			rt_err(err, e, "stat", path, "is the container still running, and is it yours?");
			return -e;
		}
		snprintf(path, sizeof path, "/proc/self/ns/%s", nstypes[i].name);
		if (stat(path, &mine) < 0)
			return rt_err(err, errno, "stat", path, NULL);
		if (mine.st_ino != theirs.st_ino || mine.st_dev != theirs.st_dev)
			*flags |= nstypes[i].flag;
	}
	return 0;
}

static int join_namespaces(int pidfd, pid_t pid, int flags, struct strata_error *err)
{
	char path[64];
	int fds[sizeof nstypes / sizeof nstypes[0]];
	int r = 0;

	if (setns(pidfd, flags) == 0)
		return 0;
	if (errno != EINVAL)
		return rt_err(err, errno, "join", "the container's namespaces", "%s",
			      errno == ESRCH ? "the container has stopped"
					     : "only root or the user who started a rootless container can");
	/* before Linux 5.8: one /proc/PID/ns file at a time, all opened
	 * first, since /proc is the container's once its mount ns is in */
	for (size_t i = 0; i < sizeof nstypes / sizeof nstypes[0]; i++) {
		fds[i] = -1;
		if (!(flags & nstypes[i].flag))
			continue;
		snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, nstypes[i].name);
		if ((fds[i] = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			r = -errno;
			rt_err(err, r, "open", path, "is the container still running?");
			break;
		}
	}
	for (size_t i = 0; r == 0 && i < sizeof nstypes / sizeof nstypes[0]; i++)
		if (fds[i] >= 0 && setns(fds[i], nstypes[i].flag) < 0) {
			r = -errno;
			rt_err(err, r, "join", "the container's namespace", "%s", nstypes[i].name);
		}
	for (size_t i = 0; i < sizeof nstypes / sizeof nstypes[0]; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return r;
}

/* -- cgroups --------------------------------------------------------------- */

static bool read_line(const char *dir, const char *file, char *buf, size_t len)
{
	char path[PATH_MAX];
	FILE *f;
	bool ok;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	if (!(f = fopen(path, "re")))
		return false;
	ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return ok;
}

/* Is a limit set on this cgroup (v1 or v2)? Then the exec must join it. */
static bool cgroup_has_limit(const char *dir)
{
	static const char *const unlimited_max[] = { "memory.max", "memory.swap.max", "pids.max" };
	char v[128];

	for (size_t i = 0; i < sizeof unlimited_max / sizeof unlimited_max[0]; i++)
		if (read_line(dir, unlimited_max[i], v, sizeof v) && strcmp(v, "max") != 0)
			return true;
	if (read_line(dir, "cpu.max", v, sizeof v) && strncmp(v, "max", 3) != 0)
		return true;
	if (read_line(dir, "cpu.cfs_quota_us", v, sizeof v) && strcmp(v, "-1") != 0)
		return true;
	if (read_line(dir, "memory.limit_in_bytes", v, sizeof v) && strtoull(v, NULL, 10) < (1ULL << 62))
		return true;
	return false;
}

/* Does the cgroup (v1) or cgroup2 mount described by fstype and super
 * options serve the hierarchy whose /proc/PID/cgroup controllers are
 * ctrls ("" for the unified one)? */
static bool mount_serves(const char *fstype, const char *opts, const char *ctrls)
{
	if (!*ctrls)
		return strcmp(fstype, "cgroup2") == 0;
	if (strcmp(fstype, "cgroup") != 0)
		return false;
	_cleanup_free_ char *want = strdup(ctrls);
	char *save = NULL;
	if (!want)
		return false;
	for (char *c = strtok_r(want, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
		size_t n = strlen(c);
		const char *p = opts;
		bool found = false;
		while ((p = strstr(p, c))) {
			if ((p == opts || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) {
				found = true;
				break;
			}
			p += n;
		}
		if (!found)
			return false;
	}
	return true;
}

/* Where the hierarchy is mounted here: fills dir with mountpoint + path. */
static bool cgroup_dir(const char *ctrls, const char *path, char *dir, size_t len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		char root[PATH_MAX], mnt[PATH_MAX], fstype[64], opts[512];
		char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %4095s %4095s", root, mnt) != 2 ||
		    sscanf(sep + 3, "%63s %*s %511s", fstype, opts) != 2)
			continue;
		if (!mount_serves(fstype, opts, ctrls))
			continue;
		size_t rl = strlen(root);
		const char *rel = path;
		if (strcmp(root, "/") != 0) {
			if (strncmp(path, root, rl) != 0 || (path[rl] && path[rl] != '/'))
				continue;
			rel = path + rl;
		}
		found = snprintf(dir, len, "%s%s", mnt, rel) < (int)len;
	}
	free(line);
	fclose(f);
	return found;
}

/* Our own path in the hierarchy whose /proc/PID/cgroup line starts with
 * prefix ("ID:CONTROLLERS:"), or NULL. */
static char *own_cgroup(const char *prefix)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	char *line = NULL, *found = NULL;
	size_t cap = 0, pl = strlen(prefix);

	if (!f)
		return NULL;
	while (!found && getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, prefix, pl) == 0)
			found = strdup(line + pl);
	}
	free(line);
	fclose(f);
	return found;
}

static int join_cgroups(pid_t pid, struct strata_error *err)
{
	char path[64], dir[PATH_MAX];
	char *line = NULL;
	size_t cap = 0;
	int r = 0;

	snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f) {
		r = -errno;
		rt_err(err, r, "read", path, "is the container still running?");
		return r;
	}
	while (r == 0 && getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		/* ID:CONTROLLERS:PATH */
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		char prefix[256];
		snprintf(prefix, sizeof prefix, "%.*s", (int)(c2 + 1 - line), line);
		*c2 = '\0';
		const char *ctrls = c1 + 1, *cgpath = c2 + 1;
		_cleanup_free_ char *mine = own_cgroup(prefix);
		if (mine && strcmp(mine, cgpath) == 0)
			continue; /* already there */
		if (!cgroup_dir(ctrls, cgpath, dir, sizeof dir))
			continue; /* not mounted here: nothing we could join */
		/* v1: this single thread through "tasks", which spares the wait
		 * for an RCU grace period that moving a whole process costs
		 * (cgroup.c's add_dir says more); v2 has no such file */
		bool v1 = strncmp(prefix, "0:", 2) != 0;
		char procs[PATH_MAX + 16];
		snprintf(procs, sizeof procs, "%s/%s", dir, v1 ? "tasks" : "cgroup.procs");
		int fd = open(procs, O_WRONLY | O_CLOEXEC);
		if (fd >= 0 && write(fd, "0", 1) == 1) {
			close(fd);
			continue;
		}
		int e = errno;
		if (fd >= 0)
			close(fd);
		/* A cgroup that holds no limit is only bookkeeping: an exec that
		 * may not join it (a rootless caller outside a delegated tree)
		 * runs beside it. One that limits the container must be joined. */
		if (cgroup_has_limit(dir)) {
			rt_err(err, e, "join", dir, "the container's resource limits apply there; run as its owner");
			r = -e;
		}
	}
	free(line);
	fclose(f);
	return r;
}

/* -- the process in the container ------------------------------------------ */

static bool setgroups_allowed(void)
{
	char v[16] = "";
	return !read_line("/proc/self", "setgroups", v, sizeof v) || strcmp(v, "deny") != 0;
}

static void env_put(char **env, size_t *n, const char *kv)
{
	size_t klen = strcspn(kv, "=");

	for (size_t i = 0; i < *n; i++)
		if (strncmp(env[i], kv, klen) == 0 && env[i][klen] == '=') {
			env[i] = (char *)kv;
			return;
		}
	env[(*n)++] = (char *)kv;
}

static bool env_has(char **env, size_t n, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = 0; i < n; i++)
		if (strncmp(env[i], key, klen) == 0 && env[i][klen] == '=')
			return true;
	return false;
}

static void process_main(const struct strata_exec_spec *s, uint64_t caps, int errfd, int ctl,
			 const sigset_t *oldmask, struct strata_error *err) __attribute__((noreturn));
static void process_main(const struct strata_exec_spec *s, uint64_t caps, int errfd, int ctl,
			 const sigset_t *oldmask, struct strata_error *err)
{
	struct identity id = {
		.caps = caps, .clear_groups = setgroups_allowed(),
		.uid = s->set_user ? s->uid : 0, .gid = s->set_user ? s->gid : 0,
		.cwd = s->cwd ? s->cwd : "/",
	};
	int r;

	if (s->detach) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
			fail(errfd, err, rt_err(err, errno, "open", "/dev/null", "as the detached process's stdio"));
		close(null);
		setsid();
	}
	if (s->tty && (r = tty_attach(ctl, s->set_user, id.uid, err)) < 0)
		fail(errfd, err, r);
	if ((r = enter_identity(&id, err)) < 0)
		fail(errfd, err, r);

	char **env = calloc(s->n_env + 4, sizeof *env);
	size_t n = 0;
	if (!env)
		fail(errfd, err, -ENOMEM);
	for (size_t i = 0; i < s->n_env; i++)
		env_put(env, &n, s->env[i]);
	if (!env_has(env, n, "PATH"))
		env_put(env, &n, "PATH=" DEFAULT_PATH);
	if (!env_has(env, n, "HOME"))
		env_put(env, &n, id.uid == 0 ? "HOME=/root" : "HOME=/");
	if (s->tty && !env_has(env, n, "TERM"))
		env_put(env, &n, "TERM=xterm");
	env[n] = NULL;
	/* the caller's end decides when we die, not the joiner's */
	if (!s->detach)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	sigprocmask(SIG_SETMASK, oldmask, NULL);
	exec_command(s->argv, env, n, errfd);
}

static void joiner_main(const struct strata_exec_spec *s, uint64_t caps, int pidfd, int nsflags, int errfd,
			int ctl, const sigset_t *oldmask, pid_t caller) __attribute__((noreturn));
static void joiner_main(const struct strata_exec_spec *s, uint64_t caps, int pidfd, int nsflags, int errfd,
			int ctl, const sigset_t *oldmask, pid_t caller)
{
	struct strata_error e = { 0 }, *err = &e;
	int r, st;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != caller)
		_exit(SETUP_FAILED_EXIT);
	if ((r = join_cgroups(s->init_pid, err)) < 0 || (r = join_namespaces(pidfd, s->init_pid, nsflags, err)) < 0)
		fail(errfd, err, r);
	close(pidfd);
	/* joining a user namespace resets the death signal */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != caller)
		_exit(SETUP_FAILED_EXIT);
	/* Detached: one more fork inside the container, so that the process
	 * is orphaned there and adopted by the container's init. Adopted by
	 * our reaper instead, it would hold the container's end: an exiting
	 * pid 1 waits until every process of its namespace is reaped. */
	pid_t pid = fork();
	if (pid == 0 && s->detach) {
		pid = fork();
		if (pid != 0)
			_exit(pid < 0 ? SETUP_FAILED_EXIT : 0);
	}
	if (pid < 0)
		fail(errfd, err, rt_err(err, errno, "fork", "the process in the container", NULL));
	if (pid == 0)
		process_main(s, caps, errfd, ctl, oldmask, err);
	if (s->detach) {
		/* the caller learns from the error pipe whether it exec'd */
		if (supervise(pid, false, &st) < 0 || status_to_exit_code(st) != 0)
			fail(errfd, err, rt_errx(err, EAGAIN, "fork", "the detached process", NULL));
		_exit(0);
	}
	close(errfd);
	if (ctl >= 0)
		close(ctl);
	if (supervise(pid, false, &st) < 0)
		_exit(SETUP_FAILED_EXIT);
	_exit(status_to_exit_code(st));
}

int strata_exec(const struct strata_exec_spec *s, struct strata_error *err)
{
	struct strata_launch_spec capspec = {
		.cap_add = s->cap_add, .n_cap_add = s->n_cap_add,
		.cap_drop = s->cap_drop, .n_cap_drop = s->n_cap_drop,
	};
	struct session ss = { .err = err, .ctl = -1, .tty = s->tty, .interactive = s->interactive,
			      .pasta_ready = -1, .pasta_log = -1, .helper_quit = -1 };
	_cleanup_close_ int pidfd = -1, ctl_child = -1;
	int errp[2] = { -1, -1 }, nsflags, r, st = 0, failure_exit = 0;
	uint64_t caps;
	sigset_t fwd, oldmask;

	strata_error_clear(err);
	if (!s->argv || !s->argv[0])
		return rt_usage(err, "no command given to run in the container");
	if (s->detach && s->tty)
		return rt_usage(err, "a detached process has no terminal to relay to: use -t or -d, not both");
	for (size_t i = 0; i < s->n_env; i++)
		if (!strchr(s->env[i], '=') || s->env[i][0] == '=')
			return rt_usage(err, "environment entry '%s' is not KEY=VALUE", s->env[i]);
	if ((r = caps_resolve(&capspec, &caps, err)) < 0)
		return r;
	if (s->init_pid <= 0 || (pidfd = (int)syscall(SYS_pidfd_open, s->init_pid, 0)) < 0)
		return rt_err(err, s->init_pid <= 0 ? ESRCH : errno, "find", "the container's init",
			      "pid %d: is the container running?", (int)s->init_pid);
	if ((r = ns_differing(s->init_pid, &nsflags, err)) < 0)
		return r;
	if (pipe2(errp, O_CLOEXEC) < 0)
		return rt_err(err, errno, "create pipes", NULL, NULL);
	if (s->tty && (r = session_socket(&ss.ctl, &ctl_child, err)) < 0)
		goto out;

	forwarded_signals(&fwd);
	sigprocmask(SIG_BLOCK, &fwd, &oldmask);
	pid_t self = getpid(), joiner = fork();
	if (joiner < 0) {
		r = rt_err(err, errno, "fork", NULL, NULL);
		goto restore;
	}
	if (joiner == 0) {
		close(errp[0]);
		if (ss.ctl >= 0)
			close(ss.ctl);
		joiner_main(s, caps, pidfd, nsflags, errp[1], ctl_child, &oldmask, self);
	}
	close(take_fd(&errp[1]));
	cleanup_closep(&ctl_child);
	ctl_child = -1;
	if (s->tty)
		r = session_run(&ss, joiner, &st);
	else if ((r = supervise(joiner, false, &st)) < 0)
		rt_err(err, r, "wait for", "the process in the container",
		       "the calling program must not ignore SIGCHLD");
	if (r < 0)
		goto restore;
	/* EOF once every copy is closed: the process exec'd, or died */
	recv_failures(errp[0], err, &failure_exit);
	if (failure_exit == SETUP_FAILED_EXIT)
		r = err->code ? -err->code : -EIO;
	else if (failure_exit && s->detach)
		r = failure_exit; /* 126 or 127 from exec_command(), with err saying why */
	else if (s->detach && status_to_exit_code(st) != 0)
		r = rt_errx(err, EIO, "start", "the detached process", "it ended before it could run %s",
			    s->argv[0]);
	else
		r = s->detach ? 0 : status_to_exit_code(st);
restore:
	sigprocmask(SIG_SETMASK, &oldmask, NULL);
out:
	cleanup_closep(&ss.ctl);
	cleanup_closep(&errp[0]);
	cleanup_closep(&errp[1]);
	return r;
}
