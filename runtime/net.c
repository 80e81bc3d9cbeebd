/* The container's network: loopback in a fresh namespace (--net none and
 * private), and the private network's wiring through pasta below.
 * A fresh network namespace starts with loopback down, so bring it up. */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

int net_loopback_up(void)
{
	_cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr;

	if (s < 0) {
		serr(errno, "socket", "AF_INET", "needed to bring up loopback");
		return -errno;
	}
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ||
	    (ifr.ifr_flags |= IFF_UP | IFF_RUNNING, ioctl(s, SIOCSIFFLAGS, &ifr) < 0)) {
		int e = errno;
		serr(e, "bring up", "lo", "in the container's network namespace");
		return -e;
	}
	return 0;
}

/* -- a private network through pasta ------------------------------------
 *
 * The container's init makes its own network namespace, says so on the
 * control socket ('N'), builds its root meanwhile and waits ('G') before
 * it starts the command. The launcher, in the host's namespaces, starts
 * pasta on that namespace: pasta copies the host's addresses and routes
 * onto a tap device in it, carries outbound traffic through ordinary
 * sockets of the host and binds the published ports on the host. In the
 * foreground pasta writes its pid file once the namespace is configured
 * and the ports are bound: that write, into a pipe, is the launcher's
 * signal to let the command start. pasta is the launcher's child for the
 * container's whole life and is killed when the container ends (or with
 * the launcher, by its death signal). */

int net_announce(const struct launch_ctx *ctx)
{
	int r;

	if (ctx->spec->net != STRATA_NET_PRIVATE)
		return 0;
	if ((r = ctl_send(ctx->ctlfd, 'N', -1)) < 0)
		serr(r, "announce", "the network namespace", "to the launcher");
	return r;
}

int net_wait_configured(const struct launch_ctx *ctx)
{
	int r;

	if (ctx->spec->net != STRATA_NET_PRIVATE)
		return 0;
	if ((r = ctl_expect(ctx->ctlfd, 'G')) < 0)
		serr(r, "wait for", "the container's network", "the launcher stopped before pasta was ready");
	return r;
}

/* What can be checked before anything starts, so a missing piece is a
 * plain message, not a half-built container. */
int net_check_private(const struct strata_launch_spec *s)
{
	if (s->net != STRATA_NET_PRIVATE) {
		if (s->n_ports) {
			susage("published ports need the private network (--net private)");
			return -EINVAL;
		}
		return 0;
	}
	for (size_t i = 0; i < s->n_ports; i++)
		for (size_t j = 0; j < i; j++)
			if (s->ports[i].host_port == s->ports[j].host_port && s->ports[i].udp == s->ports[j].udp &&
			    strcmp(s->ports[i].host_ip, s->ports[j].host_ip) == 0) {
				susage("host port %u/%s is published twice", s->ports[i].host_port,
				       s->ports[i].udp ? "udp" : "tcp");
				return -EINVAL;
			}
	/* The tap device is opened inside the container's user namespace,
	 * where only the node's own permissions count. */
	if (access("/dev/net/tun", R_OK | W_OK) < 0) {
		int e = errno;
		serr(e, "open", "/dev/net/tun", "the private network needs the tun device%s",
		     geteuid() ? " readable and writable by you (mode 0666, as most distributions ship it)" : "");
		return -e;
	}
	return 0;
}

static int spawn_pasta(struct session *ss, pid_t init)
{
	const struct launch_ctx *ctx = ss->ctx;
	const struct strata_launch_spec *s = ctx->spec;
	int ready[2], logp[2];
	char pidfile[32], nsnet[64], nsuser[64];
	/* in a tmpfs on /tmp of a mount namespace only pasta sees */
	static const char netfile[] = "/tmp/netns";
	const char *argv[24 + 4 * 16];
	char portbuf[16][128];
	size_t a = 0, np = 0;
	/* root: see the child below; a rootless caller owns the namespace */
	bool bind_ns = geteuid() == 0;

	if (s->n_ports > 16) {
		susage("at most 16 ports can be published");
		return -EINVAL;
	}
	if (pipe2(ready, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(logp, O_CLOEXEC) < 0) {
		int e = errno;
		close(ready[0]);
		close(ready[1]);
		return -e;
	}
	snprintf(pidfile, sizeof pidfile, "/dev/fd/%d", ready[1]);
	snprintf(nsnet, sizeof nsnet, "/proc/%d/ns/net", (int)init);
	snprintf(nsuser, sizeof nsuser, "/proc/%d/ns/user", (int)init);

	argv[a++] = "pasta";
	argv[a++] = "--foreground";
	argv[a++] = "--quiet";
	argv[a++] = "--config-net";
	/* no route from the container to the host's own loopback services */
	argv[a++] = "--no-map-gw";
	argv[a++] = "-T";
	argv[a++] = "none";
	argv[a++] = "-U";
	argv[a++] = "none";
	/* without -t/-u pasta would forward whatever the container binds */
	for (int udp = 0; udp < 2; udp++) {
		size_t before = a;
		for (size_t i = 0; i < s->n_ports; i++) {
			const struct strata_port *p = &s->ports[i];
			if (p->udp != (udp == 1))
				continue;
			snprintf(portbuf[np], sizeof portbuf[np], "%s%s%u:%u", p->host_ip, *p->host_ip ? "/" : "",
				 p->host_port, p->container_port);
			argv[a++] = udp ? "-u" : "-t";
			argv[a++] = portbuf[np++];
		}
		if (a == before) {
			argv[a++] = udp ? "-u" : "-t";
			argv[a++] = "none";
		}
	}
	if (geteuid() == 0) {
		/* pasta would become nobody, who may not enter the namespace */
		argv[a++] = "--runas";
		argv[a++] = "0";
	}
	argv[a++] = "--pid";
	argv[a++] = pidfile;
	argv[a++] = "--netns";
	if (bind_ns) {
		argv[a++] = netfile;
		argv[a++] = "--netns-only";
	} else {
		argv[a++] = nsnet;
		argv[a++] = "--userns";
		argv[a++] = nsuser;
	}
	argv[a] = NULL;

	pid_t launcher = getpid(), pid = fork();
	if (pid < 0) {
		int e = errno;
		serr(e, "fork", "pasta", NULL);
		for (int i = 0; i < 2; i++) {
			close(ready[i]);
			close(logp[i]);
		}
		return -e;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		setsid(); /* the caller's ^C is the container's business, not pasta's */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != launcher || devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 ||
		    dup2(logp[1], 2) < 0 || fcntl(ready[1], F_SETFD, 0) < 0)
			_exit(SETUP_FAILED_EXIT);
		sigprocmask(SIG_SETMASK, &ctx->oldmask, NULL);
		if (bind_ns) {
			/* pasta drops to a few capabilities before it opens
			 * the files in /proc/PID/ns, and the kernel then refuses
			 * it those of init, which is fully privileged or, with
			 * --uidmap, not dumpable. A bind of the file, in a mount
			 * namespace only pasta sees, opens by plain permissions. */
			int fd = -1;
			const char *step = "unshare the mount namespace";
			if (unshare(CLONE_NEWNS) < 0 ||
			    (step = "make / private", mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) < 0 ||
			    (step = "mount tmpfs on /tmp",
			     mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k")) < 0 ||
			    (step = "create /tmp/netns", fd = open(netfile, O_CREAT | O_WRONLY | O_CLOEXEC, 0444)) < 0 ||
			    close(fd) < 0 || (step = nsnet, mount(nsnet, netfile, NULL, MS_BIND, NULL)) < 0) {
				fprintf(stderr, "bind the container's network namespace (%s): %s\n", step,
					strerror(errno));
				_exit(SETUP_FAILED_EXIT);
			}
		}
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "exec pasta: %s (install the passt package)\n", strerror(errno));
		_exit(127);
	}
	close(ready[1]);
	close(logp[1]);
	fcntl(logp[0], F_SETFL, O_NONBLOCK);
	ss->pasta = pid;
	ss->pasta_ready = ready[0];
	ss->pasta_log = logp[0];
	return 0;
}

int net_on_netns(struct session *ss, pid_t init)
{
	if (init <= 0 || ss->pasta > 0) {
		serr(EPROTO, "learn", "the container's pid", "the launcher cannot wire its network");
		return -EPROTO;
	}
	ss->init = init;
	return spawn_pasta(ss, init);
}

void net_stop(struct session *ss)
{
	if (ss->pasta > 0) {
		kill(ss->pasta, SIGKILL);
		while (waitpid(ss->pasta, NULL, 0) < 0 && errno == EINTR)
			;
		ss->pasta = 0;
	}
	cleanup_closep(&ss->pasta_ready);
	cleanup_closep(&ss->pasta_log);
	ss->pasta_ready = ss->pasta_log = -1;
}
