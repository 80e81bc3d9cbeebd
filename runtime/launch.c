/* strata_launch(): checks the spec, then walks the process tree described
 * in internal.h. Each helper process that fails sends its error object on
 * the error pipe, so the launcher can tell a failed setup from a command
 * that exited with the same code, and hand the cause to its caller. */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

void report_failure(const struct launch_ctx *ctx, int err)
{
	rt_fallback(ctx->err, err, "set up", "the container");
	send_failure(ctx->errfd, SETUP_FAILED_EXIT, ctx->err);
	_exit(SETUP_FAILED_EXIT);
}

/* Absolute, existing paths for the daemon's options; its option syntax
 * has no escape for ',' so such paths are refused here, not misparsed. */
static int check_dir(const char *path, const char *what, char **out, struct strata_error *err)
{
	struct stat st;
	char *abs = realpath(path, NULL);

	if (!abs || stat(abs, &st) < 0) {
		int e = errno;
		free(abs);
		return rt_err(err, e, "open", path, "%s must be an existing directory", what);
	}
	if (!S_ISDIR(st.st_mode) || strpbrk(abs, ",:")) {
		rt_err(err, S_ISDIR(st.st_mode) ? EINVAL : ENOTDIR, "use", path,
		       "%s must be a directory whose path has no ',' or ':'", what);
		free(abs);
		return -EINVAL;
	}
	*out = abs;
	return 0;
}

/* The first bytes of a packed layer file (pack/pkformat.h's PK_MAGIC; the
 * runtime does not link the pack library). strata-fs checks the rest of
 * the file when it maps it; here only the kind of lower is told. */
#define PACKED_LAYER_MAGIC "STRATAPK"

/* A lower layer is a directory or a packed layer file. The file is opened
 * without blocking (a FIFO planted in its place must not hang the
 * launcher) and only its magic is read. */
static int check_lower(const char *path, char **out, struct strata_error *err)
{
	const char *what = "each layer of --lowerdir";
	struct stat st;
	_cleanup_free_ char *abs = realpath(path, NULL);

	if (!abs || stat(abs, &st) < 0)
		return rt_err(err, errno, "open", path, "%s must be an existing directory or packed layer file", what);
	if (S_ISDIR(st.st_mode))
		return check_dir(abs, what, out, err);
	if (!S_ISREG(st.st_mode))
		return rt_errx(err, ENOTDIR, "use", path, "%s must be a directory or a packed layer file", what);
	_cleanup_close_ int fd = open(abs, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
	if (fd < 0)
		return rt_err(err, errno, "open", path, "%s must be readable by the user running the container", what);
	char head[sizeof PACKED_LAYER_MAGIC - 1];
	ssize_t n = pread(fd, head, sizeof head, 0);
	if (n < 0)
		return rt_err(err, errno, "read", path, "%s: cannot read the file", what);
	if (n != (ssize_t)sizeof head || memcmp(head, PACKED_LAYER_MAGIC, sizeof head))
		return rt_errx(err, EINVAL, "use", path, "%s must be a directory or a packed layer file (strata pack)", what);
	if (strpbrk(abs, ",:"))
		return rt_errx(err, EINVAL, "use", path, "%s must have a path without ',' or ':'", what);
	*out = abs;
	abs = NULL;
	return 0;
}

static int check_lowerdir(const char *spec, char **out, struct strata_error *err)
{
	_cleanup_free_ char *copy = strdup(spec);
	char *save = NULL, *joined = NULL;
	size_t len = 0;

	if (!copy)
		return -ENOMEM;
	for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char *abs;
		int r = check_lower(d, &abs, err);
		if (r < 0) {
			free(joined);
			return r;
		}
		char *grown = realloc(joined, len + strlen(abs) + 2);
		if (!grown) {
			free(abs);
			free(joined);
			return -ENOMEM;
		}
		joined = grown;
		len += sprintf(joined + len, "%s%s", len ? ":" : "", abs);
		free(abs);
	}
	if (!joined)
		return rt_usage(err, "--lowerdir names no layer");
	*out = joined;
	return 0;
}

static int check_spec(struct launch_ctx *ctx)
{
	const struct strata_launch_spec *s = ctx->spec;
	struct strata_error *err = ctx->err;
	int r;

	if (!s->argv || !s->argv[0])
		return rt_usage(err, "no command given (strata-run [OPTIONS] -- COMMAND [ARG...])");
	if (!s->lowerdir)
		return rt_usage(err, "--lowerdir is required");
	if (!s->upperdir != !s->workdir)
		return rt_usage(err, "--upperdir and --workdir go together");
	if ((r = check_lowerdir(s->lowerdir, &ctx->lowerdir, err)) < 0)
		return r;
	if (s->upperdir && ((r = check_dir(s->upperdir, "--upperdir", &ctx->upperdir, err)) < 0 ||
			    (r = check_dir(s->workdir, "--workdir", &ctx->workdir, err)) < 0))
		return r;
	for (size_t i = 0; i < s->n_binds; i++) {
		struct stat st;
		if (stat(s->binds[i].src, &st) < 0)
			return rt_err(err, errno, "bind", s->binds[i].src,
				      "the source of --bind must exist on the host");
	}
	if (s->hostname && (!*s->hostname || strlen(s->hostname) > HOST_NAME_MAX))
		return rt_usage(err, "hostname '%s' must have 1 to %d characters", s->hostname, HOST_NAME_MAX);
	for (size_t i = 0; i < s->n_env; i++)
		if (!strchr(s->env[i], '=') || s->env[i][0] == '=')
			return rt_usage(err, "--env '%s' is not KEY=VALUE", s->env[i]);
	if ((r = caps_resolve(s, &ctx->caps, err)) < 0)
		return r;
	if ((r = net_check_private(s, err)) < 0)
		return r;
	return fs_find_program(s->fs_program, &ctx->fs_program, err);
}

static void apply_rlimits(const struct launch_ctx *ctx)
{
	const struct strata_launch_spec *s = ctx->spec;

	for (size_t i = 0; i < s->n_rlimits; i++) {
		struct rlimit rl = { s->rlimits[i].soft, s->rlimits[i].hard };
		if (setrlimit(s->rlimits[i].resource, &rl) < 0)
			report_failure(ctx, rt_err(ctx->err, errno, "set rlimit", NULL,
						   "resource %d to %llu:%llu; raising a hard limit needs privilege",
						   s->rlimits[i].resource, (unsigned long long)rl.rlim_cur,
						   (unsigned long long)rl.rlim_max));
	}
}

/* The launcher's death reaches the outer process as this signal rather
 * than SIGKILL, so that it still stops the container, waits for the
 * daemon and removes the cgroup: nothing outlives a killed launcher. */
#define LAUNCHER_GONE_SIGNAL (SIGRTMIN + 4)

static volatile sig_atomic_t launcher_gone;
/* a pidfd, not a pid: init may be reaped by then and its pid reused */
static volatile sig_atomic_t outer_init_pidfd = -1;

static void on_launcher_gone(int sig)
{
	(void)sig;
	launcher_gone = 1;
	if (outer_init_pidfd >= 0)
		syscall(SYS_pidfd_send_signal, (int)outer_init_pidfd, SIGKILL, NULL, 0);
}

/* pid 1 of the container: join the cgroup (before anything else, so every
 * process of the container is in it), wait for outer's word that the
 * merged view answers (go_r), build the root, say so (joined_w: from then
 * on the container is running, and `strata exec` finds its root), then
 * start the command and stay as its reaper and signal relay. */
static void init_main(struct launch_ctx *ctx, int joined_w, int go_r) __attribute__((noreturn));
static void init_main(struct launch_ctx *ctx, int joined_w, int go_r)
{
	const struct strata_launch_spec *s = ctx->spec;
	int flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC;
	int r, st;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(LAUNCHER_GONE_SIGNAL, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	if ((r = cgroup_join(&ctx->cg, ctx->err)) < 0)
		report_failure(ctx, r);
	cgroup_close_fds(&ctx->cg);
	/* EOF: the daemon did not come up; outer reports it and kills us */
	char go;
	while ((r = (int)read(go_r, &go, 1)) < 0 && errno == EINTR)
		;
	if (r != 1)
		_exit(SETUP_FAILED_EXIT);
	close(go_r);
	if (s->net != STRATA_NET_HOST)
		flags |= CLONE_NEWNET;
	if (unshare(flags) < 0)
		report_failure(ctx, rt_err(ctx->err, errno, "unshare", "mount/uts/ipc/net namespaces",
					   "for the container"));
	if (s->net != STRATA_NET_HOST && ((r = net_loopback_up(ctx->err)) < 0 || (r = net_announce(ctx)) < 0))
		report_failure(ctx, r);
	const char *host = s->hostname ? s->hostname : "strata";
	if (sethostname(host, strlen(host)) < 0)
		report_failure(ctx, rt_err(ctx->err, errno, "sethostname", host, NULL));
	if ((r = rootfs_setup(ctx)) < 0)
		report_failure(ctx, r);
	cleanup_closep(&ctx->rootmnt);
	/* (before the network is configured: the launcher configures it
	 * once it has heard this) */
	if (write(joined_w, "j", 1) != 1) {
		/* outer is gone; our death signal follows */
	}
	close(joined_w);
	if ((r = net_wait_configured(ctx)) < 0)
		report_failure(ctx, r);

	pid_t cmd = fork();
	if (cmd < 0)
		report_failure(ctx, rt_err(ctx->err, errno, "fork", "command", NULL));
	if (cmd == 0) {
		apply_rlimits(ctx);
		process_exec(ctx);
	}
	if (supervise(cmd, true, &st) < 0)
		_exit(255);
	_exit(status_to_exit_code(st));
}

/* What outer tells the launcher once init is in its cgroup with its root
 * built. */
struct started_msg {
	pid_t init, daemon;
};

/* Outer's way out when the launcher died: the container is stopped by
 * now; the launcher cannot remove the cgroup any more, so we do (where
 * our ids allow: not as a --uidmap'ed root). */
static void outer_exit(struct launch_ctx *ctx, int code) __attribute__((noreturn));
static void outer_exit(struct launch_ctx *ctx, int code)
{
	/* nobody is left to tell what goes wrong here */
	struct strata_error unheard = { 0 };

	if (launcher_gone)
		cgroup_remove(&ctx->cg, 60000, &unheard);
	_exit(code);
}

/* A set-up step of outer failed: tell the launcher, or, if it is gone,
 * clean up for it. */
static void outer_fail(struct launch_ctx *ctx, int err) __attribute__((noreturn));
static void outer_fail(struct launch_ctx *ctx, int err)
{
	if (launcher_gone)
		outer_exit(ctx, SETUP_FAILED_EXIT);
	report_failure(ctx, err);
}

/* The outer process: owns the merged view and the daemon for the whole
 * run, and waits for the daemon's exit before it exits itself. */
static void outer_main(struct launch_ctx *ctx, pid_t launcher, int ready_w, int go_r, int started_w)
	__attribute__((noreturn));
static void outer_main(struct launch_ctx *ctx, pid_t launcher, int ready_w, int go_r, int started_w)
{
	pid_t daemon = -1, init;
	int daemon_pidfd = -1, r, st, joined[2], go[2];
	char c = 0;
	struct sigaction sa = { .sa_handler = on_launcher_gone, .sa_flags = SA_RESTART };
	sigset_t gone;

	/* A launcher killed outright: we kill init (whose death ends the
	 * container's pid and mount namespaces, and so the merged view and
	 * the daemon), wait for the daemon, remove the cgroup. Writes to the
	 * dead launcher's pipes must not kill us first. */
	sigemptyset(&sa.sa_mask);
	sigaction(LAUNCHER_GONE_SIGNAL, &sa, NULL);
	sigemptyset(&gone);
	sigaddset(&gone, LAUNCHER_GONE_SIGNAL);
	sigprocmask(SIG_UNBLOCK, &gone, NULL);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, LAUNCHER_GONE_SIGNAL);
	if (getppid() != launcher) {
		launcher_gone = 1;
		outer_exit(ctx, SETUP_FAILED_EXIT);
	}
	/* The cgroup is made here, not by the launcher: from now on whoever
	 * dies first, one of us removes it. With a user namespace it is made
	 * now, with the launcher's ids; without one, once the daemon is
	 * starting, so that the cgroup directories' making overlaps the
	 * daemon's start. */
	bool cg_early = ctx->userns;
	if (cg_early && (r = cgroup_create(ctx->spec, launcher, &ctx->cg, ctx->err)) < 0)
		outer_fail(ctx, r);
	if (cg_early && cgroup_send(started_w, &ctx->cg) < 0) {
		launcher_gone = 1;
		outer_exit(ctx, SETUP_FAILED_EXIT);
	}
	if (unshare(CLONE_NEWNS | (ctx->userns ? CLONE_NEWUSER : 0)) < 0)
		outer_fail(ctx, rt_err(ctx->err, errno,
				       "unshare", ctx->userns ? "user and mount namespaces" : "mount namespace",
				       ctx->userns ? "user namespaces may be disabled: check "
						     "/proc/sys/user/max_user_namespaces"
						     " and /proc/sys/kernel/unprivileged_userns_clone"
						   : NULL));
	/* Tell the launcher we have a user namespace to map, wait for it. */
	if (write(ready_w, &c, 1) != 1 || read(go_r, &c, 1) != 1) {
		launcher_gone = 1;
		outer_exit(ctx, SETUP_FAILED_EXIT);
	}
	close(ready_w);
	close(go_r);
	int fusefd = fs_open_device(ctx->err);
	if (fusefd < 0)
		outer_fail(ctx, fusefd);
	/* Mapping ids does not change ours: root's kernel uid 0 is not the
	 * new namespace's 0 unless the map says so, so become that 0 (a
	 * no-op for a rootless caller mapped to it). That resets the death
	 * signal, so set it again. */
	if (ctx->userns) {
		if (ctx->setgroups_ok && setgroups(0, NULL) < 0)
			outer_fail(ctx, rt_err(ctx->err, errno, "clear supplementary groups", NULL,
					       "in the new user namespace"));
		if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
			outer_fail(ctx, rt_err(ctx->err, errno, "become root in", "the user namespace",
					       "--uidmap and --gidmap must map id 0 of the container"));
		prctl(PR_SET_PDEATHSIG, LAUNCHER_GONE_SIGNAL);
		if (getppid() != launcher) {
			launcher_gone = 1;
			outer_exit(ctx, SETUP_FAILED_EXIT);
		}
	}

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		outer_fail(ctx, rt_err(ctx->err, errno, "make private", "/", "in the launcher's mount namespace"));
	if ((r = fs_mount(ctx, fusefd, &daemon, &daemon_pidfd)) < 0)
		outer_fail(ctx, r);
	if (!cg_early && (r = cgroup_create(ctx->spec, launcher, &ctx->cg, ctx->err)) < 0)
		goto fail;
	if (!cg_early && cgroup_send(started_w, &ctx->cg) < 0)
		launcher_gone = 1;
	if (launcher_gone) {
		r = -ECANCELED;
		goto fail;
	}
	if (unshare(CLONE_NEWPID) < 0) {
		r = rt_err(ctx->err, errno, "unshare", "pid namespace", NULL);
		goto fail;
	}
	if (pipe2(joined, O_CLOEXEC) < 0) {
		r = rt_err(ctx->err, errno, "create pipe", NULL, NULL);
		goto fail;
	}
	if (pipe2(go, O_CLOEXEC) < 0) {
		r = rt_err(ctx->err, errno, "create pipe", NULL, NULL);
		close(joined[0]);
		close(joined[1]);
		goto fail;
	}
	/* init starts while the daemon does: joining a v1 cgroup waits for an
	 * RCU grace period, which then overlaps the daemon's start */
	init = fork();
	if (init < 0) {
		r = rt_err(ctx->err, errno, "fork", "container init", NULL);
		close(joined[0]);
		close(joined[1]);
		close(go[0]);
		close(go[1]);
		goto fail;
	}
	if (init == 0) {
		close(daemon_pidfd);
		close(joined[0]);
		close(go[1]);
		close(started_w);
		init_main(ctx, joined[1], go[0]);
	}
	/* not reaped before supervise(), so the pid is still init's */
	outer_init_pidfd = (int)syscall(SYS_pidfd_open, init, 0);
	if (launcher_gone)
		kill(init, SIGKILL);
	close(joined[1]);
	close(go[0]);
	if ((r = fs_mount_ready(ctx)) < 0) {
		/* init holds the view too: it goes first, then the daemon */
		close(go[1]);
		close(joined[0]);
		kill(init, SIGKILL);
		while (waitpid(init, NULL, 0) < 0 && errno == EINTR)
			;
		goto fail;
	}
	if (write(go[1], "g", 1) != 1) {
		/* init is gone: its status says why */
	}
	close(go[1]);
	/* init holds the merged view now; with its namespace it goes */
	cleanup_closep(&ctx->rootmnt);
	ctx->rootmnt = -1;
	cgroup_close_fds(&ctx->cg);
	/* init writes once it is in the cgroup and its root is built, and
	 * closes: EOF means it failed, and its status says so */
	while ((r = (int)read(joined[0], &c, 1)) < 0 && errno == EINTR)
		;
	close(joined[0]);
	if (r == 1) {
		struct started_msg m = { init, daemon };
		if (write(started_w, &m, sizeof m) != sizeof m) {
			/* the launcher is gone; we stop the container */
		}
	}
	close(started_w);
	if (supervise(init, true, &st) < 0)
		st = 255 << 8;
	/* a daemon that had to be killed: a note for the caller */
	if (fs_unmount(ctx, daemon, daemon_pidfd) < 0)
		send_failure(ctx->errfd, 0, ctx->err);
	outer_exit(ctx, status_to_exit_code(st));
fail:
	fs_unmount(ctx, daemon, daemon_pidfd);
	outer_fail(ctx, r);
}

int strata_launch(const struct strata_launch_spec *spec, struct strata_error *err)
{
	struct launch_ctx ctx = { .spec = spec, .err = err, .errfd = -1, .ctlfd = -1, .rootmnt = -1 };
	/* the control socket: tty.c; its launcher end is ss.ctl */
	struct session ss = { .ctx = &ctx, .err = err, .ctl = -1, .tty = spec->tty,
			      .interactive = spec->interactive,
			      .pasta_ready = -1, .pasta_log = -1, .helper_quit = -1,
			      .on_netns = net_on_netns, .on_ready = net_on_ready };
	bool session = spec->tty || spec->net == STRATA_NET_PRIVATE;
	int errp[2] = { -1, -1 }, ready[2] = { -1, -1 }, go[2] = { -1, -1 }, startp[2] = { -1, -1 };
	int r, st = 0, failure_exit = 0;
	sigset_t fwd;

	strata_error_clear(err);
	if ((r = check_spec(&ctx)) < 0)
		goto out;
	ctx.userns = geteuid() != 0 || spec->n_uidmap || spec->n_gidmap;
	ctx.setgroups_ok = !ctx.userns || geteuid() == 0 || spec->n_gidmap;
	if (pipe2(errp, O_CLOEXEC) < 0 || pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 ||
	    pipe2(startp, O_CLOEXEC) < 0) {
		r = rt_err(err, errno, "create pipes", NULL, NULL);
		goto out;
	}
	ctx.errfd = errp[1];
	if (session && (r = session_socket(&ss.ctl, &ctx.ctlfd, err)) < 0)
		goto out;
	forwarded_signals(&fwd);
	sigprocmask(SIG_BLOCK, &fwd, &ctx.oldmask);

	pid_t self = getpid(), outer = fork();
	if (outer < 0) {
		r = rt_err(err, errno, "fork", NULL, NULL);
		goto restore;
	}
	if (outer == 0) {
		close(errp[0]);
		close(ready[0]);
		close(go[1]);
		close(startp[0]);
		outer_main(&ctx, self, ready[1], go[0], startp[1]);
	}
	close(take_fd(&startp[1]));
	close(take_fd(&errp[1]));
	ctx.errfd = -1;
	cleanup_closep(&ctx.ctlfd);
	ctx.ctlfd = -1;
	close(take_fd(&ready[1]));
	close(take_fd(&go[0]));

	/* outer's cgroup (EOF: it failed before, and removed what it made).
	 * With a user namespace outer makes it first (outer_main), and it
	 * must be known here before a failed id mapping kills outer; without
	 * one it comes once the daemon is starting. */
	if (ctx.userns && cgroup_recv(startp[0], &ctx.cg) < 0)
		memset(&ctx.cg, 0, sizeof ctx.cg);
	char c;
	if (spec->keep_mntns)
		*spec->keep_mntns = -1;
	if (read(ready[0], &c, 1) == 1) {
		/* outer has its mount namespace now (see keep_mntns) */
		if (spec->keep_mntns) {
			char ns[64];
			snprintf(ns, sizeof ns, "/proc/%d/ns/mnt", (int)outer);
			*spec->keep_mntns = open(ns, O_RDONLY | O_CLOEXEC);
		}
		if (ctx.userns && (r = idmap_setup(&ctx, outer)) < 0) {
			kill(outer, SIGKILL);
			waitpid(outer, NULL, 0);
			goto restore;
		}
		if (write(go[1], &c, 1) != 1) {
			/* the outer process is gone; its status tells why */
		}
	}
	close(take_fd(&go[1]));
	if (!ctx.userns && cgroup_recv(startp[0], &ctx.cg) < 0)
		memset(&ctx.cg, 0, sizeof ctx.cg);
	struct started_msg m;
	ssize_t n;
	while ((n = read(startp[0], &m, sizeof m)) < 0 && errno == EINTR)
		;
	if (n == sizeof m) {
		ctx.init_pid = m.init;
		ctx.daemon_pid = m.daemon;
		const char *dirs[CGROUP_MAX_DIRS];
		for (size_t i = 0; i < ctx.cg.n; i++)
			dirs[i] = ctx.cg.dir[i];
		struct strata_started info = { .init_pid = m.init, .daemon_pid = m.daemon,
					       .cgroup = ctx.cg.started, .cgroup_dirs = dirs,
					       .n_cgroup_dirs = ctx.cg.n };
		if (spec->on_start)
			spec->on_start(spec->on_start_arg, &info);
	}
	if (session && (r = session_run(&ss, outer, &st)) < 0)
		goto restore;
	if (!session && (r = supervise(outer, false, &st)) < 0) {
		/* ECHILD: already reaped behind our back, nothing left to stop */
		rt_err(err, r, "wait for", "the container", "the calling program must not ignore SIGCHLD");
		goto restore;
	}
	/* every writer is gone with outer; non-blocking all the same, so a
	 * stray copy can never hang us */
	fcntl(errp[0], F_SETFL, O_NONBLOCK);
	r = status_to_exit_code(st);
	if (recv_failures(errp[0], err, &failure_exit) && failure_exit == SETUP_FAILED_EXIT)
		r = err->code ? -err->code : -EIO;
restore:
	net_stop(&ss);
	sigprocmask(SIG_SETMASK, &ctx.oldmask, NULL);
	/* outer is reaped: everything in the cgroup is gone or going */
	cgroup_remove(&ctx.cg, 60000, err);
out:
	cgroup_free(&ctx.cg);
	cleanup_closep(&ss.ctl);
	cleanup_closep(&ctx.ctlfd);
	for (int i = 0; i < 2; i++) {
		cleanup_closep(&errp[i]);
		cleanup_closep(&ready[i]);
		cleanup_closep(&go[i]);
		cleanup_closep(&startp[i]);
	}
	free(ctx.lowerdir);
	free(ctx.upperdir);
	free(ctx.workdir);
	free(ctx.fs_program);
	return r;
}
