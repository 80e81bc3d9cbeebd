/* The merged view, in the outer mount namespace: the launcher opens
 * /dev/fuse and mounts it itself, so the mount is live before the daemon
 * starts; the daemon (strata-fs, or anything with fuse-overlayfs's command
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

int fs_find_program(const char *given, char **out)
{
	const char *env = getenv("STRATA_FS");
	char self[PATH_MAX];
	ssize_t n;

	if (given || (env && *env)) {
		const char *p = given ? given : env;
		if (access(p, X_OK) < 0) {
			serr(errno, "use FUSE daemon", p, "%s names a program that cannot be run",
			     given ? "--fs-program" : "$STRATA_FS");
			return -errno;
		}
		return (*out = strdup(p)) ? 0 : -ENOMEM;
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
	serr(ENOENT, "find FUSE daemon", "strata-fs",
	     "not next to this program nor in PATH; pass --fs-program PATH or set STRATA_FS");
	return -ENOENT;
}

static void exec_daemon(const struct launch_ctx *ctx, int fusefd)
{
	char fdpath[32];
	_cleanup_free_ char *opts = NULL;
	int r;

	/* Its own session: a ^C meant for the command must not kill the
	 * filesystem under it. If the outer process dies, follow it. */
	setsid();
	prctl(PR_SET_PDEATHSIG, SIGTERM);
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
	serr(errno, "exec FUSE daemon", ctx->fs_program, NULL);
	_exit(127);
}

/* Opened before the outer process changes its ids: root can open a
 * mode 0600 /dev/fuse as its owner, but not as the namespace's root. */
int fs_open_device(void)
{
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;
		serr(e, "open", "/dev/fuse",
		     e == ENOENT ? "no FUSE device: load the fuse module, or give the container /dev/fuse"
				 : "strata needs FUSE: /dev/fuse must be readable and writable by this user, "
				   "as Debian's default mode 0666 makes it");
		return -e;
	}
	return fd;
}

int fs_mount(struct launch_ctx *ctx, int fusefd, pid_t *daemon, int *daemon_pidfd)
{
	_cleanup_close_ int fd = fusefd;
	char opts[160];
	struct stat st;

	snprintf(opts, sizeof opts,
		 "fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other", fd);
	if (mount("strata", ctx->mountpoint, "fuse.strata", 0, opts) < 0) {
		int e = errno;
		serr(e, "mount FUSE on", ctx->mountpoint, "the kernel refused the FUSE mount");
		return -e;
	}

	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		serr(e, "fork", "FUSE daemon", NULL);
		umount2(ctx->mountpoint, MNT_DETACH);
		return -e;
	}
	if (pid == 0)
		exec_daemon(ctx, fd);
	*daemon = pid;
	*daemon_pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (*daemon_pidfd < 0) {
		int e = errno;
		serr(e, "pidfd_open", "FUSE daemon", "needs Linux 5.3 or later");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		umount2(ctx->mountpoint, MNT_DETACH);
		return -e;
	}
	/* Our copy closed: if the daemon dies, the connection aborts and
	 * accesses fail instead of hanging. */
	close(take_fd(&fd));

	/* The first access waits for the daemon's INIT reply: it is up. */
	if (stat(ctx->mountpoint, &st) < 0) {
		int e = errno;
		if (e == ENOTCONN)
			serr(e, "start FUSE daemon", ctx->fs_program,
			     "it exited without serving lowerdir=%s; see its message above", ctx->lowerdir);
		else
			serr(e, "serve the root of", ctx->lowerdir,
			     "the daemon %s refused it%s", ctx->fs_program,
			     ctx->userns ? "; in a user namespace the layers must belong to ids mapped into it"
					 : "");
		fs_unmount(ctx, pid, take_fd(daemon_pidfd));
		return -e;
	}
	return 0;
}

/* Waits up to ms for the daemon to exit and reaps it (unless the outer
 * process's reaper loop already did); 0 if it is gone. The pidfd, taken
 * at fork, keeps us from ever waiting on or signalling a recycled pid. */
static int wait_exit(pid_t pid, int pidfd, int ms)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	if (poll(&p, 1, ms) <= 0)
		return -ETIMEDOUT;
	waitpid(pid, NULL, WNOHANG);
	return 0;
}

static void pidfd_kill(int pidfd, int sig)
{
	syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

int fs_unmount(const struct launch_ctx *ctx, pid_t daemon, int pidfd)
{
	int r = 0;

	if (umount2(ctx->mountpoint, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
		serr(errno, "unmount", ctx->mountpoint, NULL);
	if (daemon <= 0 || pidfd < 0)
		return 0;
	/* With its last mount gone the kernel aborts the connection and the
	 * daemon exits by itself; a mount still pinned somewhere (an open
	 * namespace fd) must not keep us, so ask, then insist. */
	if (wait_exit(daemon, pidfd, 2000) == 0)
		goto out;
	pidfd_kill(pidfd, SIGTERM);
	if (wait_exit(daemon, pidfd, 2000) == 0)
		goto out;
	serr(ETIMEDOUT, "stop FUSE daemon", ctx->fs_program, "it ignored SIGTERM; killed it");
	pidfd_kill(pidfd, SIGKILL);
	waitpid(daemon, NULL, 0);
	r = -ETIMEDOUT;
out:
	close(pidfd);
	return r;
}
