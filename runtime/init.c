/* Waiting for a child while passing signals on to it: used by the
 * launcher (for the outer process), the outer process (for init) and the
 * container's init (for the command, as pid 1 that must also reap
 * orphans re-parented to it). */
#include "internal.h"

#include <errno.h>
#include <sys/wait.h>
#include <time.h>

static const int forwarded[] = {
	SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
};

/* The forwarded signals plus SIGCHLD: blocked before the first fork so
 * none is lost between fork and the wait loop. */
void forwarded_signals(sigset_t *set)
{
	sigemptyset(set);
	for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		sigaddset(set, forwarded[i]);
	sigaddset(set, SIGCHLD);
}

int status_to_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}

/* Returns 0 with pid's wait status in *status. The signals must already
 * be blocked. reap_all also collects any other child (pid 1's duty); the
 * launcher leaves its caller's other children alone. A short timeout
 * covers a caller that set SIGCHLD to SIG_IGN-like behaviour we cannot
 * see, so a lost SIGCHLD never hangs us. */
int supervise(pid_t pid, bool reap_all, int *status)
{
	sigset_t set;
	const struct timespec tick = { .tv_sec = 0, .tv_nsec = 200 * 1000 * 1000 };

	forwarded_signals(&set);
	for (;;) {
		int st;
		pid_t r;

		while ((r = waitpid(reap_all ? -1 : pid, &st, WNOHANG)) > 0) {
			if (r == pid) {
				*status = st;
				return 0;
			}
		}
		if (r < 0 && errno != EINTR)
			return -errno;

		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &tick);
		/* The terminal's interrupt, quit, hangup and resize come from the kernel
		 * to the whole foreground process group, which the command is
		 * in: it has its copy already, and relaying would deliver it
		 * once more per level. */
		if (sig > 0 && sig != SIGCHLD && si.si_code != SI_KERNEL)
			kill(pid, sig);
	}
}
