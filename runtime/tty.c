/* Terminals and the launcher's side of a running container.
 *
 * With a tty the command's stdio is a pseudo-terminal from the
 * container's own devpts instance: the command process opens /dev/ptmx
 * after the pivot (so `tty` says /dev/pts/0, and nothing of the host's
 * devpts is reachable), makes the slave its controlling terminal and
 * hands the master to the launcher over the control socket. The launcher
 * relays between that master and its own stdio, keeps the window size
 * current and puts the caller's terminal back as it found it.
 *
 * The control socket (SOCK_SEQPACKET, created before the first fork)
 * carries one-byte messages, some with ancillary data:
 *   'N' init -> launcher: the network namespace exists; the sender's pid
 *       arrives as the kernel translates it (SO_PASSCRED), so the
 *       launcher learns init's host pid without trusting a number
 *   'G' launcher -> init: the network is configured, start the command
 *   'T' command -> launcher: the terminal's master (SCM_RIGHTS)
 *   'A' launcher -> command: the window size is set, go on
 */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>

int ctl_send(int sock, char type, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { &type, 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	memset(&u, 0, sizeof u);
	if (fd >= 0) {
		msg.msg_control = u.buf;
		msg.msg_controllen = sizeof u.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof fd);
	}
	while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Returns 0 with the message type, a passed fd (or -1) and the sender's
 * pid as this process's namespace sees it (or 0); -EPIPE when the other
 * side is gone. */
int ctl_recv(int sock, char *type, int *fd, pid_t *pid)
{
	union {
		char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { type, 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof u.buf };
	ssize_t n;

	if (fd)
		*fd = -1;
	if (pid)
		*pid = 0;
	while ((n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0)
		if (errno != EINTR)
			return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET)
			continue;
		if (c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int f;
				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
				if (fd && *fd < 0)
					*fd = f;
				else
					close(f);
			}
		} else if (c->cmsg_type == SCM_CREDENTIALS && pid) {
			struct ucred uc;
			memcpy(&uc, CMSG_DATA(c), sizeof uc);
			*pid = uc.pid;
		}
	}
	return n == 1 ? 0 : -EPIPE;
}

/* Wait for one message of the given type; anything else is a protocol
 * error (the other side is ours, so that means it died mid-way). */
int ctl_expect(int sock, char want)
{
	char type = 0;
	int r = ctl_recv(sock, &type, NULL, NULL);

	if (r < 0)
		return r;
	return type == want ? 0 : -EPROTO;
}

/* In the command's process, after the pivot: a terminal from the
 * container's devpts becomes its controlling terminal and stdio. */
int tty_attach(int ctl, bool chown_to, uid_t uid, struct strata_error *err)
{
	_cleanup_close_ int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	int unlock = 0, r;

	if (master < 0)
		return rt_err(err, errno, "open", "/dev/ptmx", "the container's devpts instance gives the terminal");
	if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
		return rt_err(err, errno, "unlock", "/dev/ptmx", NULL);
	/* TIOCGPTPEER opens this master's own slave, with no path lookup a
	 * process in the container could redirect. */
	_cleanup_close_ int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (slave < 0)
		return rt_err(err, errno, "open", "the terminal's slave", "needs Linux 4.13 or later");
	if (chown_to && fchown(slave, uid, (gid_t)-1) < 0)
		return rt_err(err, errno, "chown", "the terminal",
			      "to uid %u: is it mapped in the user namespace?", (unsigned)uid);
	if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
		return rt_err(err, errno, "make controlling terminal", "/dev/pts", NULL);
	for (int i = 0; i < 3; i++)
		if (dup2(slave, i) < 0)
			return rt_err(err, errno, "dup2", "the terminal", "onto stdio");
	if ((r = ctl_send(ctl, 'T', master)) < 0 || (r = ctl_expect(ctl, 'A')) < 0) {
		rt_err(err, r, "hand over", "the terminal", "the launcher is gone");
		return r;
	}
	return 0;
}

/* -- the launcher's side ------------------------------------------------- */

struct relay {
	int master;             /* -1 until the command sends it */
	bool interactive;
	bool in_eof, out_broken;
	char inbuf[4096];
	size_t inlen, inoff;
	int rawfd;              /* the caller's terminal we switched, or -1 */
	struct termios saved;
	void (*copy)(void *arg, const char *buf, size_t len);
	void *copy_arg;
};

static void copy_winsize(int master)
{
	struct winsize ws;

	for (int fd = 0; fd < 3; fd++)
		if (isatty(fd) && ioctl(fd, TIOCGWINSZ, &ws) == 0) {
			ioctl(master, TIOCSWINSZ, &ws);
			return;
		}
}

static void relay_start(struct relay *rl, int master)
{
	rl->master = master;
	fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
	copy_winsize(master);
	/* Typing goes to the container's terminal as it is (^C included);
	 * without -i the caller's terminal keeps its keys, and only stops
	 * turning \n into \r\n, which the container's terminal did already. */
	int fd = rl->interactive && isatty(0) ? 0 : isatty(1) ? 1 : -1;
	/* not from the background: that would stop us with SIGTTOU */
	if (fd >= 0 && tcgetpgrp(fd) == getpgrp() && tcgetattr(fd, &rl->saved) == 0) {
		struct termios t = rl->saved;
		if (fd == 0)
			cfmakeraw(&t);
		else
			t.c_oflag &= ~(tcflag_t)OPOST;
		if (tcsetattr(fd, TCSADRAIN, &t) == 0)
			rl->rawfd = fd;
	}
}

static void relay_restore(struct relay *rl)
{
	if (rl->rawfd >= 0) {
		tcsetattr(rl->rawfd, TCSADRAIN, &rl->saved);
		rl->rawfd = -1;
	}
}

static void write_all(struct relay *rl, int fd, const char *p, size_t n)
{
	while (n && !rl->out_broken) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			struct pollfd pf = { fd, POLLOUT, 0 };
			poll(&pf, 1, 1000);
			continue;
		}
		if (w <= 0) {
			rl->out_broken = true; /* keep draining the master, discard */
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

/* Returns false once the master has nothing more to give. Unless told
 * to drain it, a few reads at a time: a command that never stops writing
 * must not keep the loop from its signals. */
static bool relay_output(struct relay *rl, bool drain)
{
	char buf[16384];

	for (int i = 0; drain || i < 8; i++) {
		ssize_t n = read(rl->master, buf, sizeof buf);
		if (n > 0) {
			write_all(rl, 1, buf, (size_t)n);
			if (rl->copy)
				rl->copy(rl->copy_arg, buf, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 && errno == EAGAIN;
	}
	return true;
}

static void relay_input(struct relay *rl)
{
	if (rl->inlen == 0) {
		ssize_t n = read(0, rl->inbuf, sizeof rl->inbuf);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return;
		if (n <= 0) {
			/* the end of a piped stdin reaches the command as the
			 * terminal's end-of-file character */
			rl->in_eof = true;
			rl->inbuf[0] = 4;
			n = 1;
		}
		rl->inlen = (size_t)n;
		rl->inoff = 0;
	}
	ssize_t w = write(rl->master, rl->inbuf + rl->inoff, rl->inlen - rl->inoff);
	bool broken = w < 0 && errno != EAGAIN && errno != EINTR;
	if (w > 0)
		rl->inoff += (size_t)w;
	/* what is left (an end-of-file character too) waits for POLLOUT,
	 * unless the terminal is gone: then drop it and stop reading */
	if (rl->inoff >= rl->inlen || broken)
		rl->inlen = rl->inoff = 0;
	if (broken)
		rl->in_eof = true;
}

static void print_log(const char *helper, char *text)
{
	for (char *line = text, *nl; line && *line; line = nl) {
		nl = strchr(line, '\n');
		if (nl)
			*nl++ = '\0';
		if (*line && !strstr(line, "to syslog"))
			fprintf(stderr, "%s: %s: %s\n", strata_prog ? strata_prog : "strata", helper, line);
	}
}

/* The network helper's messages: pasta's (--quiet: errors only) go out
 * as they come, without its noise about a missing syslog; slirp4netns
 * talks about every step, so its last words are kept for a failure. */
static bool relay_log(struct session *ss)
{
	char buf[4096];
	ssize_t n = read(ss->pasta_log, buf, sizeof buf - 1);
	bool quiet = ss->helper && strcmp(ss->helper, "pasta") != 0;

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	if (n <= 0) {
		close(take_fd(&ss->pasta_log));
		return false;
	}
	buf[n] = '\0';
	if (quiet) {
		size_t have = strlen(ss->log_tail), add = (size_t)n, room = sizeof ss->log_tail - 1;
		if (add > room) {
			memcpy(ss->log_tail, buf + add - room, room + 1);
			return true;
		}
		if (have + add > room) {
			memmove(ss->log_tail, ss->log_tail + (have + add - room), have - (have + add - room) + 1);
			have = strlen(ss->log_tail);
		}
		memcpy(ss->log_tail + have, buf, add + 1);
		return true;
	}
	print_log(ss->helper, buf);
	return true;
}

/* The helper quit before the network was ready: its last words (slirp4netns's,
 * kept back; pasta's went out as they came) belong in the error. */
static int net_helper_failed(struct session *ss)
{
	char *t = ss->log_tail;

	while (*t == '\n')
		t++;
	for (char *c = t; *c; c++)
		if (*c == '\n')
			*c = c[1] ? ';' : '\0';
	return rt_errx(ss->err, ENETUNREACH, "start", ss->helper,
		       "it could not give the container its network (%s%s); try --net host or none",
		       *t ? "its last messages: " : "its messages are above", t);
}

int session_run(struct session *ss, pid_t child, int *status)
{
	struct strata_error *err = ss->err;
	struct relay rl = { .master = -1, .rawfd = -1, .interactive = ss->interactive };
	sigset_t set, pipeset, oldset;

	if (ss->ctx) {
		rl.copy = ss->ctx->spec->on_tty_output;
		rl.copy_arg = ss->ctx->spec->on_tty_output_arg;
	}
	int r = 0;
	bool pipe_pending;

	forwarded_signals(&set);
	/* a closed stdout must not kill the caller; a SIGPIPE raised here is
	 * taken back below */
	sigemptyset(&pipeset);
	sigaddset(&pipeset, SIGPIPE);
	sigpending(&oldset);
	pipe_pending = sigismember(&oldset, SIGPIPE);
	sigprocmask(SIG_BLOCK, &pipeset, &oldset);

	_cleanup_close_ int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		r = -errno;
		rt_err(err, r, "signalfd", NULL, "to relay signals to the container");
		kill(child, SIGKILL);
		waitpid(child, status, 0);
		goto out;
	}
	for (;;) {
		struct pollfd pf[6];
		int n = 0, i_sig, i_ctl = -1, i_out = -1, i_in = -1, i_ready = -1, i_log = -1;
		pid_t w = waitpid(child, status, WNOHANG);

		if (w == child)
			break;
		if (w < 0 && errno != EINTR) {
			r = -errno;
			rt_err(err, r, "wait for", "the container", "the calling program must not ignore SIGCHLD");
			goto out;
		}
		i_sig = n;
		pf[n++] = (struct pollfd){ sfd, POLLIN, 0 };
		if (ss->ctl >= 0) {
			i_ctl = n;
			pf[n++] = (struct pollfd){ ss->ctl, POLLIN, 0 };
		}
		if (rl.master >= 0) {
			i_out = n;
			pf[n++] = (struct pollfd){ rl.master, (short)(POLLIN | (rl.inlen ? POLLOUT : 0)), 0 };
			if (rl.interactive && !rl.in_eof && !rl.inlen) {
				i_in = n;
				pf[n++] = (struct pollfd){ 0, POLLIN, 0 };
			}
		}
		if (ss->pasta_ready >= 0) {
			i_ready = n;
			pf[n++] = (struct pollfd){ ss->pasta_ready, POLLIN, 0 };
		}
		if (ss->pasta_log >= 0) {
			i_log = n;
			pf[n++] = (struct pollfd){ ss->pasta_log, POLLIN, 0 };
		}
		/* the timeout covers a caller whose SIGCHLD never reaches us */
		if (poll(pf, (nfds_t)n, 500) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			rt_err(err, r, "poll", NULL, "while the container runs");
			break;
		}
		if (pf[i_sig].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si) {
				int sig = (int)si.ssi_signo;
				if (sig == SIGCHLD)
					continue;
				if (sig == SIGWINCH && rl.master >= 0) {
					copy_winsize(rl.master);
					continue;
				}
				/* Without a terminal of its own the command shares
				 * the caller's foreground group and already got
				 * what the terminal sent (see supervise()). */
				if (!ss->tty && si.ssi_code == SI_KERNEL)
					continue;
				kill(child, sig);
			}
		}
		if (i_ctl >= 0 && pf[i_ctl].revents) {
			char type;
			int fd;
			pid_t pid;
			if (ctl_recv(ss->ctl, &type, &fd, &pid) < 0) {
				close(take_fd(&ss->ctl));
			} else if (type == 'N' && ss->on_netns) {
				if ((r = ss->on_netns(ss, pid)) < 0)
					goto fail;
			} else if (type == 'T' && fd >= 0 && rl.master < 0) {
				relay_start(&rl, fd);
				if (ctl_send(ss->ctl, 'A', -1) < 0)
					close(take_fd(&ss->ctl));
			} else if (fd >= 0) {
				close(fd);
			}
		}
		if (i_ready >= 0 && pf[i_ready].revents) {
			char buf[32];
			ssize_t k = read(ss->pasta_ready, buf, sizeof buf);
			close(take_fd(&ss->pasta_ready));
			if (k <= 0) {
				while (ss->pasta_log >= 0 && relay_log(ss))
					;
				r = net_helper_failed(ss);
				goto fail;
			}
			if (ss->on_ready && (r = ss->on_ready(ss)) < 0)
				goto fail;
			if (ctl_send(ss->ctl, 'G', -1) < 0)
				close(take_fd(&ss->ctl));
		}
		if (i_log >= 0 && pf[i_log].revents)
			relay_log(ss);
		if (i_out >= 0 && pf[i_out].revents) {
			if (pf[i_out].revents & POLLOUT)
				relay_input(&rl);
			/* EIO: every slave is closed, the command is gone */
			if (!relay_output(&rl, false))
				close(take_fd(&rl.master));
		}
		if (i_in >= 0 && pf[i_in].revents)
			relay_input(&rl);
	}
	if (rl.master >= 0)
		relay_output(&rl, true);
	goto out;
fail:
	/* Through init, if we know it: the processes above it then end
	 * as usual (unmount, reap the daemon) instead of leaving orphans. */
	kill(ss->init > 0 ? ss->init : child, SIGKILL);
	while (waitpid(child, status, 0) < 0 && errno == EINTR)
		;
out:
	relay_restore(&rl);
	if (rl.master >= 0)
		close(rl.master);
	/* take back a SIGPIPE our writes raised, not one the caller had */
	if (!pipe_pending) {
		struct timespec zero = { 0, 0 };
		sigset_t pending;
		sigpending(&pending);
		if (sigismember(&pending, SIGPIPE))
			sigtimedwait(&pipeset, NULL, &zero);
	}
	sigprocmask(SIG_SETMASK, &oldset, NULL);
	return r;
}

int session_socket(int *launcher_end, int *container_end, struct strata_error *err)
{
	int sv[2], one = 1;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return rt_err(err, errno, "create", "the control socket", NULL);
	/* init's pid, as the launcher sees it, comes with its first message */
	if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
		int e = errno;
		rt_err(err, e, "set SO_PASSCRED on", "the control socket", NULL);
		close(sv[0]);
		close(sv[1]);
		return -e;
	}
	*launcher_end = sv[0];
	*container_end = sv[1];
	return 0;
}
