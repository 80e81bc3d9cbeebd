/* The merged view, made by the outer process: it opens /dev/fuse and
 * makes the (detached) mount itself, so the mount is live before the
 * daemon starts; the daemon (strata-fs, or anything with fuse-overlayfs's command
 * line) is its direct child and serves the already-mounted fd given as
 * /dev/fd/N. That keeps the daemon waitable by pid, and it never runs in
 * the container's own mount namespace. */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <libgen.h>
#include <linux/close_range.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static char *exe_candidate(const char *dir, const char *rel)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s", dir, rel) < 0)
		return NULL;
	if (access(p, X_OK) == 0)
		return p;
	free(p);
	return NULL;
}

int fs_find_program(const char *given, char **out, struct strata_error *err)
{
	const char *env = getenv("STRATA_FS");
	char self[PATH_MAX];
	ssize_t n;

	if (given || (env && *env)) {
		const char *p = given ? given : env;
		if (access(p, X_OK) < 0)
			return rt_err(err, errno, "use FUSE daemon", p, "%s names a program that cannot be run",
				      given ? "--fs-program" : "$STRATA_FS");
		return (*out = strdup(p)) ? 0 : rt_err(err, ENOMEM, "use FUSE daemon", p, NULL);
	}
	n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = '\0';
		char *dir = dirname(self);
		if ((*out = exe_candidate(dir, "strata-fs")) || (*out = exe_candidate(dir, "../fs/strata-fs")))
			return 0;
	}
	const char *path = getenv("PATH");
	if (path) {
		_cleanup_free_ char *copy = strdup(path);
		char *save = NULL;
		for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save))
			if ((*out = exe_candidate(d, "strata-fs")))
				return 0;
	}
	return rt_err(err, ENOENT, "find FUSE daemon", "strata-fs",
		      "not next to this program nor in PATH; pass --fs-program PATH or set STRATA_FS");
}

static void exec_daemon(const struct launch_ctx *ctx, int fusefd, pid_t outer)
{
	char fdpath[32];
	_cleanup_free_ char *opts = NULL;
	int r;

	/* Its own session: a ^C meant for the command must not kill the
	 * filesystem under it. If the outer process dies, follow it; if it
	 * died before the death signal was armed, nobody would send it. */
	setsid();
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != outer)
		_exit(SETUP_FAILED_EXIT);
	sigprocmask(SIG_SETMASK, &ctx->oldmask, NULL);
	signal(SIGPIPE, SIG_DFL);
	/* only the FUSE fd and stdio reach the daemon */
	if (fusefd > 3)
		close_range(3, fusefd - 1, CLOSE_RANGE_CLOEXEC);
	close_range(fusefd + 1, ~0U, CLOSE_RANGE_CLOEXEC);
	fcntl(fusefd, F_SETFD, 0);
	snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fusefd);
	const char *extra = ctx->spec->fs_options;
	if (ctx->upperdir)
		r = asprintf(&opts, "lowerdir=%s,upperdir=%s,workdir=%s%s%s", ctx->lowerdir,
			     ctx->upperdir, ctx->workdir, extra ? "," : "", extra ? extra : "");
	else
		r = asprintf(&opts, "lowerdir=%s%s%s", ctx->lowerdir, extra ? "," : "", extra ? extra : "");
	if (r < 0)
		_exit(127);
	char *argv[] = { ctx->fs_program, "-f", "-o", opts, fdpath, NULL };
	execv(ctx->fs_program, argv);
	/* the error pipe is still open here (close-on-exec): a note, since
	 * outer reports the mount that was never served as the failure */
	rt_err(ctx->err, errno, "exec FUSE daemon", ctx->fs_program, NULL);
	send_failure(ctx->errfd, 0, ctx->err);
	_exit(127);
}

/* Opened before the outer process changes its ids: root can open a
 * mode 0600 /dev/fuse as its owner, but not as the namespace's root. */
int fs_open_device(struct strata_error *err)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC), e = errno;

	if (fd < 0)
		return rt_err(err, e, "open", "/dev/fuse",
			      e == ENOENT ? "no FUSE device: load the fuse module, or give the container /dev/fuse"
					  : "strata needs FUSE: /dev/fuse must be readable and writable by this user, "
					    "as Debian's default mode 0666 makes it");
	return fd;
}

/* The kernel's own words on a refused mount parameter ("fuse: Bad
 * file"), read from the filesystem context. */
static const char *fs_log(int fsfd, char *buf, size_t len)
{
	ssize_t n = read(fsfd, buf, len - 1);

	if (n <= 2)
		return "the kernel refused the FUSE mount";
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return buf + 2; /* "e " */
}

/* errno is the cause; read before the log is */
static int mount_refused(int fsfd, const char *what, struct strata_error *err)
{
	int e = errno;
	char log[256];

	return rt_err(err, e, "mount FUSE", what, "%s", fs_log(fsfd, log, sizeof log));
}

/* The merged view is made as a detached mount (fsopen/fsmount): it has
 * no path in any namespace until the container's init attaches it in its
 * own, so no host directory is ever needed or left behind, and the view
 * goes away with the container's mount namespace. nodev: a device node in
 * an image, or one made inside, never opens. */
int fs_mount(struct launch_ctx *ctx, int fusefd, pid_t *daemon, int *daemon_pidfd)
{
	struct strata_error *err = ctx->err;
	_cleanup_close_ int fd = fusefd;
	_cleanup_close_ int fsfd = fsopen("fuse", FSOPEN_CLOEXEC);
	char fdnum[16];

	if (fsfd < 0)
		return rt_err(err, errno, "create", "FUSE filesystem context", "needs Linux 5.4 or later with FUSE");
	snprintf(fdnum, sizeof fdnum, "%d", fd);
	static const char *const flags[] = { "default_permissions", "allow_other" };
	const char *const strs[][2] = {
		{ "source", "strata" }, { "subtype", "strata" }, { "fd", fdnum },
		{ "rootmode", "40000" }, { "user_id", "0" }, { "group_id", "0" },
	};
	for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, strs[i][0], strs[i][1], 0) < 0)
			return mount_refused(fsfd, strs[i][0], err);
	for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
		if (fsconfig(fsfd, FSCONFIG_SET_FLAG, flags[i], NULL, 0) < 0)
			return mount_refused(fsfd, flags[i], err);
	if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		return mount_refused(fsfd, "for the merged view", err);
	int mnt = fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
	if (mnt < 0)
		return mount_refused(fsfd, "for the merged view", err);
	/* the context pins the superblock: only the mount may keep it */
	close(take_fd(&fsfd));
	ctx->rootmnt = mnt;

	pid_t outer = getpid(), pid = fork();
	if (pid < 0) {
		int e = errno;
		rt_err(err, e, "fork", "FUSE daemon", NULL);
		cleanup_closep(&ctx->rootmnt);
		ctx->rootmnt = -1;
		return -e;
	}
	if (pid == 0)
		exec_daemon(ctx, fd, outer);
	*daemon = pid;
	*daemon_pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (*daemon_pidfd < 0) {
		int e = errno;
		rt_err(err, e, "pidfd_open", "FUSE daemon", "needs Linux 5.3 or later");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		cleanup_closep(&ctx->rootmnt);
		ctx->rootmnt = -1;
		return -e;
	}
	/* Our copy closed: if the daemon dies, the connection aborts and
	 * accesses fail instead of hanging. */
	close(take_fd(&fd));
	return 0;
}

int fs_mount_ready(struct launch_ctx *ctx)
{
	struct strata_error *err = ctx->err;
	struct stat st;

	/* The first access waits for the daemon's INIT reply: it is up. */
	if (fstatat(ctx->rootmnt, "", &st, AT_EMPTY_PATH) == 0)
		return 0;
	int e = errno;
	if (e == ENOTCONN)
		rt_err(err, e, "start FUSE daemon", ctx->fs_program,
		       "it exited without serving lowerdir=%s; see its message above", ctx->lowerdir);
	else
		rt_err(err, e, "serve the root of", ctx->lowerdir, "the daemon %s refused it%s", ctx->fs_program,
		       ctx->userns ? "; in a user namespace the layers must belong to ids mapped into it" : "");
	return -e;
}

/* Waits up to ms (-1: for ever) for the daemon to exit, then reaps it
 * (unless the outer process's reaper loop already did); 0 once it is
 * gone. The pidfd, taken at fork, keeps us from ever waiting on or
 * signalling a recycled pid. */
static int wait_exit(pid_t pid, int pidfd, int ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int n;

	while ((n = poll(&p, 1, ms)) < 0 && errno == EINTR)
		;
	if (n == 0)
		return -ETIMEDOUT;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return 0;
}

static void pidfd_kill(int pidfd, int sig)
{
	syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

/* Drops our reference to the merged view and waits until the daemon is
 * gone: the launcher returns only after that, so whoever ran it may reuse
 * the upper layer at once. */
int fs_unmount(struct launch_ctx *ctx, pid_t daemon, int pidfd)
{
	struct strata_error *err = ctx->err;
	int r = 0;

	cleanup_closep(&ctx->rootmnt);
	ctx->rootmnt = -1;
	if (daemon <= 0 || pidfd < 0)
		return 0;
	/* With the container's mount namespace gone (init and everything
	 * that joined it exited) the view's last mount is gone: the kernel
	 * aborts the connection and the daemon exits by itself. Give it
	 * time on a loaded machine, then ask; insist only after a long
	 * deadline, and wait for it in every case. */
	if (wait_exit(daemon, pidfd, 5000) == 0)
		goto out;
	pidfd_kill(pidfd, SIGTERM);
	if (wait_exit(daemon, pidfd, 120000) == 0)
		goto out;
	rt_err(err, ETIMEDOUT, "stop FUSE daemon", ctx->fs_program, "it ignored SIGTERM for 2 minutes; killed it");
	pidfd_kill(pidfd, SIGKILL);
	wait_exit(daemon, pidfd, -1);
	r = -ETIMEDOUT;
out:
	close(pidfd);
	return r;
}
