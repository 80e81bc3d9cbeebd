/* The container's network: loopback in a fresh namespace (--net none and
 * private), and the private network's wiring through pasta below.
 * A fresh network namespace starts with loopback down, so bring it up. */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <net/if.h>
#include <stdarg.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

int net_loopback_up(struct strata_error *err)
{
	_cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr;

	if (s < 0)
		return rt_err(err, errno, "socket", "AF_INET", "needed to bring up loopback");
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0 ||
	    (ifr.ifr_flags |= IFF_UP | IFF_RUNNING, ioctl(s, SIOCSIFFLAGS, &ifr) < 0))
		return rt_err(err, errno, "bring up", "lo", "in the container's network namespace");
	return 0;
}

/* -- a private network through pasta or slirp4netns ------------------------
 *
 * The container's init makes its own network namespace, says so on the
 * control socket ('N'), builds its root meanwhile and waits ('G') before
 * it starts the command. The launcher, in the host's namespaces, starts a
 * user-mode network stack on that namespace, as rootless podman does:
 *
 * pasta (preferred) copies the host's addresses and routes onto a tap
 * device in it, carries outbound traffic through ordinary sockets of the
 * host and binds the published ports on the host. In the foreground it
 * writes its pid file once the namespace is configured and the ports are
 * bound: that write, into a pipe, is the signal to let the command start.
 *
 * slirp4netns (when pasta is not installed, or STRATA_NET_HELPER names
 * it) gives the namespace 10.0.2.100/24 behind a NAT, says "ready" on a
 * pipe, and takes the published ports afterwards, one request each on its
 * API socket; it exits when the pipe given as --exit-fd closes.
 *
 * Either is the launcher's child for the container's whole life and is
 * killed when the container ends (or with the launcher: death signal). */

#include <sys/un.h>

#define MAX_PORTS 64

int net_announce(const struct launch_ctx *ctx)
{
	struct strata_error *err = ctx->err;
	int r;

	if (ctx->spec->net != STRATA_NET_PRIVATE)
		return 0;
	if ((r = ctl_send(ctx->ctlfd, 'N', -1)) < 0)
		rt_err(err, r, "announce", "the network namespace", "to the launcher");
	return r;
}

int net_wait_configured(const struct launch_ctx *ctx)
{
	struct strata_error *err = ctx->err;
	int r;

	if (ctx->spec->net != STRATA_NET_PRIVATE)
		return 0;
	if ((r = ctl_expect(ctx->ctlfd, 'G')) < 0)
		rt_err(err, r, "wait for", "the container's network",
		       "the launcher stopped before its network helper was ready");
	return r;
}

static bool in_path(const char *prog)
{
	const char *path = getenv("PATH");
	_cleanup_free_ char *copy = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	char *save = NULL, full[PATH_MAX];

	for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save))
		if (snprintf(full, sizeof full, "%s/%s", d, prog) < (int)sizeof full && access(full, X_OK) == 0)
			return true;
	return false;
}

/* "pasta" or "slirp4netns", or NULL after saying what is missing */
static const char *net_helper(struct strata_error *err)
{
	const char *forced = getenv("STRATA_NET_HELPER");

	if (forced && *forced) {
		if (strcmp(forced, "pasta") != 0 && strcmp(forced, "slirp4netns") != 0) {
			rt_usage(err, "STRATA_NET_HELPER='%s': expected pasta or slirp4netns", forced);
			return NULL;
		}
		if (!in_path(forced)) {
			rt_err(err, ENOENT, "find", forced, "STRATA_NET_HELPER names it, but it is not in PATH");
			return NULL;
		}
		return forced;
	}
	if (in_path("pasta"))
		return "pasta";
	if (in_path("slirp4netns"))
		return "slirp4netns";
	rt_err(err, ENOENT, "find", "pasta",
	       "the private network needs pasta (package passt) or slirp4netns in PATH");
	return NULL;
}

/* What can be checked before anything starts, so a missing piece is a
 * plain message, not a half-built container. */
int net_check_private(const struct strata_launch_spec *s, struct strata_error *err)
{
	if (s->net != STRATA_NET_PRIVATE) {
		if (s->n_ports) {
			rt_usage(err, "published ports need the private network (--net private)");
			return -EINVAL;
		}
		return 0;
	}
	if (s->n_ports > MAX_PORTS) {
		rt_usage(err, "at most %d ports can be published", MAX_PORTS);
		return -EINVAL;
	}
	for (size_t i = 0; i < s->n_ports; i++)
		for (size_t j = 0; j < i; j++)
			if (s->ports[i].host_port == s->ports[j].host_port && s->ports[i].udp == s->ports[j].udp &&
			    strcmp(s->ports[i].host_ip, s->ports[j].host_ip) == 0) {
				rt_usage(err, "host port %u/%s is published twice", s->ports[i].host_port,
					 s->ports[i].udp ? "udp" : "tcp");
				return -EINVAL;
			}
	if (!net_helper(err))
		return -ENOENT;
	/* The tap device is opened inside the container's user namespace,
	 * where only the node's own permissions count. */
	if (access("/dev/net/tun", R_OK | W_OK) < 0)
		return rt_err(err, errno, "open", "/dev/net/tun", "the private network needs the tun device%s",
			      geteuid() ? " readable and writable by you (mode 0666, as most distributions ship it)" : "");
	return 0;
}

struct argv_buf {
	const char *argv[32 + 2 * MAX_PORTS];
	size_t n;
	char text[MAX_PORTS + 8][128];
	size_t nt;
};

static void arg(struct argv_buf *b, const char *a)
{
	b->argv[b->n++] = a;
}

static __attribute__((format(printf, 2, 3))) void argf(struct argv_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b->text[b->nt], sizeof b->text[b->nt], fmt, ap);
	va_end(ap);
	b->argv[b->n++] = b->text[b->nt++];
}

static void pasta_args(struct argv_buf *b, const struct strata_launch_spec *s, pid_t init, int readyfd)
{
	arg(b, "pasta");
	arg(b, "--foreground");
	arg(b, "--quiet");
	arg(b, "--config-net");
	/* no route from the container to the host's own loopback services */
	arg(b, "--no-map-gw");
	arg(b, "-T");
	arg(b, "none");
	arg(b, "-U");
	arg(b, "none");
	/* without -t/-u pasta would forward whatever the container binds */
	for (int udp = 0; udp < 2; udp++) {
		size_t before = b->n;
		for (size_t i = 0; i < s->n_ports; i++) {
			const struct strata_port *p = &s->ports[i];
			if (p->udp != (udp == 1))
				continue;
			arg(b, udp ? "-u" : "-t");
			argf(b, "%s%s%u:%u", p->host_ip, *p->host_ip ? "/" : "", p->host_port, p->container_port);
		}
		if (b->n == before) {
			arg(b, udp ? "-u" : "-t");
			arg(b, "none");
		}
	}
	arg(b, "--pid");
	argf(b, "/dev/fd/%d", readyfd);
	if (geteuid() == 0) {
		/* pasta would become nobody, who may not enter the namespace */
		arg(b, "--runas");
		arg(b, "0");
		/* the bind made in the child below */
		arg(b, "--netns");
		arg(b, "/tmp/netns");
		arg(b, "--netns-only");
	} else {
		arg(b, "--netns");
		argf(b, "/proc/%d/ns/net", (int)init);
		arg(b, "--userns");
		argf(b, "/proc/%d/ns/user", (int)init);
	}
}

static void slirp_args(struct argv_buf *b, const char *api, pid_t init, int readyfd, int exitfd)
{
	arg(b, "slirp4netns");
	arg(b, "--configure");
	arg(b, "--mtu=65520");
	arg(b, "--disable-host-loopback");
	argf(b, "--ready-fd=%d", readyfd);
	argf(b, "--exit-fd=%d", exitfd);
	if (api)
		argf(b, "--api-socket=%s", api);
	if (geteuid() != 0)
		argf(b, "--userns-path=/proc/%d/ns/user", (int)init);
	argf(b, "%d", (int)init);
	arg(b, "tap0");
}

/* pasta drops to a few capabilities before it opens the files in
 * /proc/PID/ns, and the kernel then refuses it those of init, which is
 * fully privileged or, with --uidmap, not dumpable. A bind of the file,
 * in a mount namespace only pasta sees, opens by plain permissions. */
static int bind_netns_for_pasta(pid_t init)
{
	char nsnet[64];
	int fd = -1;
	const char *step = "unshare the mount namespace";

	snprintf(nsnet, sizeof nsnet, "/proc/%d/ns/net", (int)init);
	if (unshare(CLONE_NEWNS) < 0 || (step = "make / private", mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) < 0 ||
	    (step = "mount tmpfs on /tmp", mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k")) < 0 ||
	    (step = "create /tmp/netns", fd = open("/tmp/netns", O_CREAT | O_WRONLY | O_CLOEXEC, 0444)) < 0 ||
	    close(fd) < 0 || (step = nsnet, mount(nsnet, "/tmp/netns", NULL, MS_BIND, NULL)) < 0) {
		fprintf(stderr, "bind the container's network namespace (%s): %s\n", step, strerror(errno));
		return -1;
	}
	return 0;
}

/* slirp4netns's API socket lives in a private directory of ours */
static int make_api_dir(struct session *ss)
{
	struct strata_error *err = ss->err;
	const char *base = getenv("XDG_RUNTIME_DIR");
	struct stat st;
	char dir[PATH_MAX];

	if (!base || geteuid() == 0 || stat(base, &st) < 0)
		base = getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	if (snprintf(dir, sizeof dir, "%s/strata-net.XXXXXX", base) >= (int)sizeof dir - 16)
		return -ENAMETOOLONG;
	if (!mkdtemp(dir))
		return rt_err(err, errno, "create directory in", base,
		       "for slirp4netns's API socket; set TMPDIR to a writable directory");
	if (!(ss->api_dir = strdup(dir))) {
		rmdir(dir);
		return -ENOMEM;
	}
	return 0;
}

static int spawn_helper(struct session *ss, pid_t init)
{
	const struct launch_ctx *ctx = ss->ctx;
	const struct strata_launch_spec *s = ctx->spec;
	struct strata_error *err = ss->err;
	const char *helper = net_helper(err);
	bool slirp = helper && strcmp(helper, "slirp4netns") == 0;
	int ready[2] = { -1, -1 }, logp[2] = { -1, -1 }, quit[2] = { -1, -1 }, r = 0;
	char api[PATH_MAX];
	struct argv_buf *b = calloc(1, sizeof *b);

	if (!helper || !b) {
		free(b);
		return helper ? rt_err(err, ENOMEM, "start", helper, NULL) : -ENOENT;
	}
	ss->helper = helper;
	if (slirp && s->n_ports && (r = make_api_dir(ss)) < 0)
		goto out;
	snprintf(api, sizeof api, "%s/api.sock", ss->api_dir ? ss->api_dir : "");
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(logp, O_CLOEXEC) < 0 || (slirp && pipe2(quit, O_CLOEXEC) < 0)) {
		r = -errno;
		rt_err(err, r, "create pipes", NULL, "for %s", helper);
		goto out;
	}
	if (slirp)
		slirp_args(b, ss->api_dir ? api : NULL, init, ready[1], quit[0]);
	else
		pasta_args(b, s, init, ready[1]);
	b->argv[b->n] = NULL;

	pid_t launcher = getpid(), pid = fork();
	if (pid < 0) {
		r = -errno;
		rt_err(err, r, "fork", helper, NULL);
		goto out;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		setsid(); /* the caller's ^C is the container's business, not the helper's */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != launcher || devnull < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 ||
		    dup2(logp[1], 2) < 0 || fcntl(ready[1], F_SETFD, 0) < 0 || (slirp && fcntl(quit[0], F_SETFD, 0) < 0))
			_exit(SETUP_FAILED_EXIT);
		sigprocmask(SIG_SETMASK, &ctx->oldmask, NULL);
		if (!slirp && geteuid() == 0 && bind_netns_for_pasta(init) < 0)
			_exit(SETUP_FAILED_EXIT);
		execvp(b->argv[0], (char *const *)b->argv);
		fprintf(stderr, "exec %s: %s\n", b->argv[0], strerror(errno));
		_exit(127);
	}
	ss->pasta = pid;
	ss->pasta_ready = take_fd(&ready[0]);
	ss->pasta_log = take_fd(&logp[0]);
	ss->helper_quit = take_fd(&quit[1]);
	fcntl(ss->pasta_log, F_SETFL, O_NONBLOCK);
out:
	for (int i = 0; i < 2; i++) {
		cleanup_closep(&ready[i]);
		cleanup_closep(&logp[i]);
		cleanup_closep(&quit[i]);
	}
	free(b);
	return r;
}

int net_on_netns(struct session *ss, pid_t init)
{
	struct strata_error *err = ss->err;

	if (init <= 0 || ss->pasta > 0) {
		rt_err(err, EPROTO, "learn", "the container's pid", "the launcher cannot wire its network");
		return -EPROTO;
	}
	ss->init = init;
	return spawn_helper(ss, init);
}

/* One request on slirp4netns's API socket; its answer holds "error" when
 * the request failed. */
static int slirp_request(const char *api, const char *req, char *answer, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t n = 0, reqlen = strlen(req);
	ssize_t k;

	if (fd < 0 || strlen(api) >= sizeof sa.sun_path)
		return fd < 0 ? -errno : -ENAMETOOLONG;
	strcpy(sa.sun_path, api);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || write(fd, req, reqlen) != (ssize_t)reqlen ||
	    shutdown(fd, SHUT_WR) < 0)
		return -errno;
	while (n + 1 < len && (k = read(fd, answer + n, len - n - 1)) != 0) {
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		n += (size_t)k;
	}
	answer[n] = '\0';
	return 0;
}

static int slirp_publish(struct session *ss)
{
	const struct strata_launch_spec *s = ss->ctx->spec;
	struct strata_error *err = ss->err;
	char api[PATH_MAX], req[256], answer[1024];

	snprintf(api, sizeof api, "%s/api.sock", ss->api_dir);
	for (size_t i = 0; i < s->n_ports; i++) {
		const struct strata_port *p = &s->ports[i];
		int r;
		snprintf(req, sizeof req,
			 "{\"execute\": \"add_hostfwd\", \"arguments\": {\"proto\": \"%s\", \"host_addr\": \"%s\","
			 " \"host_port\": %u, \"guest_port\": %u}}",
			 p->udp ? "udp" : "tcp", *p->host_ip ? p->host_ip : "0.0.0.0", p->host_port, p->container_port);
		if ((r = slirp_request(api, req, answer, sizeof answer)) < 0) {
			rt_err(err, r, "publish", "a port", "%s:%u through slirp4netns's API socket %s", p->host_ip,
			       p->host_port, api);
			return r;
		}
		if (!strstr(answer, "\"return\"")) {
			answer[strcspn(answer, "\n")] = '\0';
			return rt_errx(err, EADDRINUSE, "publish", "a port", "slirp4netns refused host port %u: %s",
				       p->host_port, answer);
		}
	}
	return 0;
}

static void remove_api_dir(struct session *ss)
{
	if (ss->api_dir) {
		char api[PATH_MAX];
		snprintf(api, sizeof api, "%s/api.sock", ss->api_dir);
		unlink(api);
		rmdir(ss->api_dir);
		free(ss->api_dir);
		ss->api_dir = NULL;
	}
}

/* Once the helper is ready: slirp4netns takes the published ports now,
 * and its API socket goes right after, so that nothing of it is left in
 * the file system while the container runs (or if we are killed). pasta
 * bound the ports before it said it was ready. */
int net_on_ready(struct session *ss)
{
	int r = ss->api_dir ? slirp_publish(ss) : 0;

	remove_api_dir(ss);
	return r;
}

void net_stop(struct session *ss)
{
	cleanup_closep(&ss->helper_quit);
	ss->helper_quit = -1;
	if (ss->pasta > 0) {
		kill(ss->pasta, SIGKILL);
		while (waitpid(ss->pasta, NULL, 0) < 0 && errno == EINTR)
			;
		ss->pasta = 0;
	}
	cleanup_closep(&ss->pasta_ready);
	cleanup_closep(&ss->pasta_log);
	ss->pasta_ready = ss->pasta_log = -1;
	remove_api_dir(ss);
}
