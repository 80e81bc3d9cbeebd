/* Registry commands: pull, push, login, logout.
 *
 * strata speaks no registry protocol itself: skopeo moves images between a
 * registry and an OCI layout in the store's tmp/, and the existing import
 * and export read and write that layout. Login state is skopeo's (and
 * podman's) auth file, so credentials given to either work for all three. */
#include "cli.h"

#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- references, as docker reads them --- */

void image_ref_free(struct image_ref *r)
{
	free(r->domain);
	free(r->path);
	free(r->tag);
	free(r->digest);
	memset(r, 0, sizeof *r);
}

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One path component: [a-z0-9]+ joined by '.', '_', '__' or runs of '-'. */
static bool component_valid(const char *c, size_t n)
{
	if (n == 0 || !is_lower_alnum(c[0]) || !is_lower_alnum(c[n - 1]))
		return false;
	for (size_t i = 1; i < n; i++) {
		if (is_lower_alnum(c[i]))
			continue;
		if (c[i] == '.' || c[i] == '_') {
			size_t run = 1;
			while (i + run < n && c[i + run] == c[i])
				run++;
			if (!(run == 1 || (c[i] == '_' && run == 2)))
				return false;
			i += run - 1;
		} else if (c[i] != '-') {
			return false;
		}
	}
	return true;
}

/* host[:port] or [ipv6][:port]. */
static bool domain_valid(const char *d)
{
	const char *port = NULL;
	if (d[0] == '[') {
		const char *end = strchr(d, ']');
		if (!end || end == d + 1)
			return false;
		for (const char *p = d + 1; p < end; p++)
			if (!strchr("0123456789abcdefABCDEF:.", *p))
				return false;
		if (end[1] && end[1] != ':')
			return false;
		port = end[1] ? end + 1 : NULL;
	} else {
		port = strchr(d, ':');
		size_t n = port ? (size_t)(port - d) : strlen(d);
		if (n == 0 || d[0] == '-' || d[0] == '.' || d[n - 1] == '-' || d[n - 1] == '.')
			return false;
		for (size_t i = 0; i < n; i++)
			if (!((d[i] >= 'a' && d[i] <= 'z') || (d[i] >= 'A' && d[i] <= 'Z') ||
			      (d[i] >= '0' && d[i] <= '9') || d[i] == '-' || d[i] == '.'))
				return false;
	}
	if (port) {
		if (!port[1] || strlen(port + 1) > 5)
			return false;
		for (const char *p = port + 1; *p; p++)
			if (*p < '0' || *p > '9')
				return false;
	}
	return true;
}

static bool tag_valid(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > 128 || t[0] == '.' || t[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= '0' && t[i] <= '9') ||
		      t[i] == '_' || t[i] == '.' || t[i] == '-'))
			return false;
	return true;
}

int image_ref_parse(const char *text, struct image_ref *r)
{
	memset(r, 0, sizeof *r);
	size_t len = strlen(text);
	if (len == 0 || len > 512) {
		susage("'%.64s': not an image reference (NAME[:TAG] or NAME@sha256:DIGEST)", text);
		return -EINVAL;
	}
	_cleanup_free_ char *buf = strdup(text);
	if (!buf)
		return -ENOMEM;
	char *at = strchr(buf, '@');
	if (at) {
		*at = '\0';
		if (!digest_valid(at + 1)) {
			susage("'%s': the digest must be sha256: and 64 lowercase hex digits", text);
			return -EINVAL;
		}
		if (!(r->digest = strdup(at + 1)))
			goto nomem;
	}
	char *slash = strrchr(buf, '/');
	char *colon = strrchr(slash ? slash : buf, ':');
	if (colon) {
		*colon = '\0';
		if (!tag_valid(colon + 1)) {
			susage("'%s': a tag is up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", text);
			image_ref_free(r);
			return -EINVAL;
		}
		/* With a digest the tag says nothing more: docker pulls by the
		 * digest, and skopeo refuses references with both. */
		if (!r->digest && !(r->tag = strdup(colon + 1)))
			goto nomem;
	}
	/* The first component names a registry when it looks like a host:
	 * it has a '.' or a ':' (a port), is "localhost", or has capitals
	 * (repository names cannot). */
	const char *name = buf;
	char *first = strchr(buf, '/');
	if (first) {
		*first = '\0';
		bool upper = false;
		for (const char *p = buf; *p; p++)
			upper = upper || (*p >= 'A' && *p <= 'Z');
		if (strchr(buf, '.') || strchr(buf, ':') || !strcmp(buf, "localhost") || upper || buf[0] == '[') {
			if (!domain_valid(buf)) {
				susage("'%s': '%s' is not a valid registry host[:port]", text, buf);
				image_ref_free(r);
				return -EINVAL;
			}
			r->domain = strdup(strcmp(buf, "index.docker.io") ? buf : "docker.io");
			name = first + 1;
		} else {
			*first = '/';
		}
	}
	if (!r->domain)
		r->domain = strdup("docker.io");
	if (!r->domain)
		goto nomem;
	for (const char *c = name;;) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);
		if (!component_valid(c, n)) {
			bool upper = false;
			for (size_t i = 0; i < n; i++)
				upper = upper || (c[i] >= 'A' && c[i] <= 'Z');
			susage("'%s': %s", text, upper ? "repository names must be lowercase" :
			       "a repository name is lowercase letters and digits, separated by '/', '.', '_', '__' or '-'");
			image_ref_free(r);
			return -EINVAL;
		}
		if (!e)
			break;
		c = e + 1;
	}
	bool library = !strcmp(r->domain, "docker.io") && !strchr(name, '/');
	if (asprintf(&r->path, "%s%s", library ? "library/" : "", name) < 0) {
		r->path = NULL;
		goto nomem;
	}
	if (strlen(r->domain) + 1 + strlen(r->path) > 255) {
		susage("'%.64s...': the repository name is longer than 255 characters", text);
		image_ref_free(r);
		return -EINVAL;
	}
	if (!r->tag && !r->digest && !(r->tag = strdup("latest")))
		goto nomem;
	return 0;
nomem:
	image_ref_free(r);
	return -ENOMEM;
}

static char *ref_string(const struct image_ref *r, bool familiar)
{
	const char *path = r->path;
	bool hub = !strcmp(r->domain, "docker.io");
	if (familiar && hub && !strncmp(path, "library/", 8) && !strchr(path + 8, '/'))
		path += 8;
	char *out;
	if (asprintf(&out, "%s%s%s%s%s", familiar && hub ? "" : r->domain, familiar && hub ? "" : "/", path,
		     r->digest ? "@" : ":", r->digest ? r->digest : r->tag) < 0)
		return NULL;
	return out;
}

char *image_ref_full(const struct image_ref *r)
{
	return ref_string(r, false);
}

char *image_ref_familiar(const struct image_ref *r)
{
	return ref_string(r, true);
}

/* --- running skopeo --- */

static volatile sig_atomic_t child_pid, got_signal;

/* While skopeo works, a signal meant for strata goes to skopeo (a ^C at
 * the terminal reaches both): strata waits for it to end, then cleans up. */
static void forward(int sig)
{
	got_signal = sig;
	if (child_pid > 0)
		kill((pid_t)child_pid, sig);
}

/* The message skopeo's logger puts in msg="...", unescaped. */
static char *skopeo_message(const char *err)
{
	const char *m = NULL, *p = err;
	while ((p = strstr(p, "msg=\"")))
		m = p += 5;
	if (!m) {
		/* Not a logger line: its last non-empty line. */
		size_t n = strlen(err);
		while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
			n--;
		const char *s = err + n;
		while (s > err && s[-1] != '\n')
			s--;
		return strndup(s, (size_t)(err + n - s));
	}
	char *out = malloc(strlen(m) + 1), *o = out;
	if (!out)
		return NULL;
	for (; *m && *m != '"'; m++) {
		if (*m == '\\' && m[1]) {
			m++;
			*o++ = *m == 'n' ? ' ' : *m == 't' ? ' ' : *m;
		} else {
			*o++ = *m;
		}
	}
	*o = '\0';
	/* "1 error occurred:  * x  " reads better as "x". */
	char *star = strstr(out, "* ");
	if (!strncmp(out, "1 error occurred:", 17) && star)
		memmove(out, star + 2, strlen(star + 2) + 1);
	for (size_t n = strlen(out); n && out[n - 1] == ' '; n--)
		out[n - 1] = '\0';
	return out;
}

static const char *skopeo_hint(const char *msg, const char *what)
{
	static const struct { const char *needle, *hint; } hints[] = {
		{ "server gave HTTP response to HTTPS client",
		  "the registry speaks plain HTTP: add --tls-verify=false if you trust it" },
		{ "x509:", "the registry's certificate is not trusted: install its CA certificate, or add --tls-verify=false for a local registry" },
		{ "certificate", "the registry's certificate is not trusted: install its CA certificate, or add --tls-verify=false for a local registry" },
		{ "unauthorized", "log in first with strata login REGISTRY, and check the name and your access to it" },
		{ "authentication required", "log in first with strata login REGISTRY, and check the name and your access to it" },
		{ "denied", "log in first with strata login REGISTRY, and check the name and your access to it" },
		{ "invalid username/password", "check the user name and password" },
		{ "manifest unknown", "check that the name and tag (or digest) exist in the registry" },
		{ "name unknown", "check that the repository exists in the registry" },
		{ "not found", "check that the name and tag (or digest) exist in the registry" },
		{ "connection refused", "check the registry's address and port, and that it is running" },
		{ "no such host", "check the registry's host name and the network" },
		{ "i/o timeout", "check the registry's address and the network" },
		{ "no image found in manifest list", "the image has no variant for this machine's architecture" },
		{ "not logged in", "nothing to log out of: strata login REGISTRY stores credentials" },
		{ "no space left", "free space where the store lives" },
		{ "permission denied", "check the permissions of the store and of the auth file (--authfile, REGISTRY_AUTH_FILE)" },
	};
	for (size_t i = 0; i < sizeof hints / sizeof *hints; i++)
		if (strcasestr(msg, hints[i].needle))
			return hints[i].hint;
	return what;
}

struct skopeo_opts {
	bool stdout_to_stderr;  /* progress goes where strata's progress goes */
	const char *op;         /* "pull", for messages */
	const char *target;     /* "docker://...", for messages */
};

/* Run skopeo with args (NULL-terminated, args[0] = "skopeo"). Its stderr
 * is collected: passed on as it is when it succeeds (warnings), turned into
 * one strata message when it fails. 0, -EINTR when a signal ended it, or
 * -EIO after a failure that was reported. */
static int run_skopeo(char **args, const struct skopeo_opts *o)
{
	if (strata_debug) {
		char line[2048] = "";
		size_t n = 0;
		for (char **a = args; *a && n < sizeof line; a++)
			n += (size_t)snprintf(line + n, sizeof line - n, "%s%s", n ? " " : "", *a);
		sdebug("%s", line);
	}
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		int r = -errno;
		serr(r, o->op, "(pipe for skopeo)", "too many open files?");
		return r;
	}
	struct sigaction sa = { .sa_handler = forward }, old[4];
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
	sigset_t block, oldmask;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	for (size_t i = 0; i < 4; i++)
		sigaddset(&block, sigs[i]);
	/* Signals wait until the child's pid is known (parent) or the
	 * defaults are back (child), so none is lost in between. */
	sigprocmask(SIG_BLOCK, &block, &oldmask);
	got_signal = 0;
	child_pid = 0;
	for (size_t i = 0; i < 4; i++)
		sigaction(sigs[i], &sa, &old[i]);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		for (size_t i = 0; i < 4; i++)
			signal(sigs[i], SIG_DFL);
		sigprocmask(SIG_SETMASK, &oldmask, NULL);
		if (o->stdout_to_stderr)
			dup2(STDERR_FILENO, STDOUT_FILENO);
		dup2(pfd[1], STDERR_FILENO);
		execvp(args[0], args);
		dprintf(2, "strata-exec-failed %d\n", errno);
		_exit(127);
	}
	int r = 0;
	_cleanup_free_ char *msg = NULL;
	if (pid < 0) {
		r = -errno;
		serr(r, o->op, "(starting skopeo)", "too many processes?");
		sigprocmask(SIG_SETMASK, &oldmask, NULL);
		close(pfd[0]);
		close(pfd[1]);
		goto restore;
	}
	child_pid = pid;
	sigprocmask(SIG_SETMASK, &oldmask, NULL);
	close(pfd[1]);
	/* The tail of skopeo's stderr: its last words are the ones that say
	 * why it failed. */
	char err[16384];
	size_t elen = 0;
	for (;;) {
		char chunk[4096];
		ssize_t n = read(pfd[0], chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		/* chunk is smaller than err: dropping the oldest bytes makes room. */
		if (elen + (size_t)n > sizeof err - 1) {
			size_t drop = elen + (size_t)n - (sizeof err - 1);
			memmove(err, err + drop, elen - drop);
			elen -= drop;
		}
		memcpy(err + elen, chunk, (size_t)n);
		elen += (size_t)n;
	}
	err[elen] = '\0';
	close(pfd[0]);
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	child_pid = 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		if (elen)
			fputs(err, stderr);
		goto restore;
	}
	int e;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && sscanf(err, "strata-exec-failed %d", &e) == 1) {
		serr(e, o->op, "(running skopeo)", "strata moves images to and from registries with skopeo: install it (scripts/setup.sh does)");
		r = -e;
		goto restore;
	}
	if (got_signal || WIFSIGNALED(status)) {
		int sig = got_signal ? got_signal : WTERMSIG(status);
		serr(0, o->op, o->target, "interrupted by signal %d (%s); nothing was kept", sig, strsignal(sig));
		r = -EINTR;
		goto restore;
	}
	msg = skopeo_message(err);
	/* "initializing source docker://x: why": strata's message names x
	 * already. */
	const char *why = msg;
	for (size_t i = 0; why && i < 2; i++) {
		static const char *const pre[] = { "initializing source ", "initializing destination " };
		size_t pl = strlen(pre[i]), tl = strlen(o->target);
		if (!strncmp(why, pre[i], pl) && !strncmp(why + pl, o->target, tl) && !strncmp(why + pl + tl, ": ", 2))
			why += pl + tl + 2;
	}
	fprintf(stderr, "%s: %s %s: %s (%s)\n", strata_prog, o->op, o->target,
		why && *why ? why : "skopeo failed without a message",
		skopeo_hint(msg ? msg : "", "run strata --debug to see the skopeo command, and try it by hand"));
	if (strata_debug && elen)
		fprintf(stderr, "%s[debug]: skopeo said:\n%s", strata_prog, err);
	r = -EIO;
restore:
	for (size_t i = 0; i < 4; i++)
		sigaction(sigs[i], &old[i], NULL);
	return r;
}

/* --- options shared by the commands --- */

struct reg_opts {
	bool tls_verify;        /* default true */
	bool quiet;
	const char *authfile;
	const char *user;
	bool password_stdin;
	bool all;
	char *args[4];          /* positional */
	int nargs;
};

static int parse_bool(const char *opt, const char *v, bool *out)
{
	if (!strcmp(v, "true") || !strcmp(v, "1")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "false") || !strcmp(v, "0")) {
		*out = false;
		return 0;
	}
	susage("%s=%s: use true or false", opt, v);
	return -EINVAL;
}

/* flags: which options the command takes ("tqa" tls, quiet, authfile; "up"
 * user, password-stdin; "A" --all). */
static int parse_reg_opts(int argc, char **argv, const char *flags, int maxargs, struct reg_opts *o)
{
	memset(o, 0, sizeof *o);
	o->tls_verify = true;
	bool dashdash = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (dashdash || a[0] != '-' || !a[1]) {
			if (o->nargs >= maxargs) {
				susage("unexpected argument '%s'", a);
				return -EINVAL;
			}
			o->args[o->nargs++] = argv[i];
		} else if (!strcmp(a, "--")) {
			dashdash = true;
		} else if (strchr(flags, 't') && !strcmp(a, "--tls-verify")) {
			o->tls_verify = true;
		} else if (strchr(flags, 't') && !strncmp(a, "--tls-verify=", 13)) {
			if (parse_bool("--tls-verify", a + 13, &o->tls_verify) < 0)
				return -EINVAL;
		} else if (strchr(flags, 'q') && (!strcmp(a, "-q") || !strcmp(a, "--quiet"))) {
			o->quiet = true;
		} else if (strchr(flags, 'a') && !strcmp(a, "--authfile") && i + 1 < argc) {
			o->authfile = argv[++i];
		} else if (strchr(flags, 'a') && !strncmp(a, "--authfile=", 11)) {
			o->authfile = a + 11;
		} else if (strchr(flags, 'u') && (!strcmp(a, "-u") || !strcmp(a, "--username")) && i + 1 < argc) {
			o->user = argv[++i];
		} else if (strchr(flags, 'u') && !strncmp(a, "--username=", 11)) {
			o->user = a + 11;
		} else if (strchr(flags, 'p') && !strcmp(a, "--password-stdin")) {
			o->password_stdin = true;
		} else if (strchr(flags, 'p') && (!strcmp(a, "-p") || !strcmp(a, "--password") ||
						  !strncmp(a, "--password=", 11))) {
			susage("%s: a password on the command line ends up in the shell history and in ps; "
			       "pipe it in with --password-stdin, or let login ask for it", a);
			return -EINVAL;
		} else if (strchr(flags, 'A') && (!strcmp(a, "-a") || !strcmp(a, "--all"))) {
			o->all = true;
		} else {
			susage("unknown option %s (see strata --help)", a);
			return -EINVAL;
		}
	}
	return 0;
}

/* The auth file to hand skopeo when neither --authfile nor
 * REGISTRY_AUTH_FILE names one: none (skopeo's default) for root and for
 * users with a runtime directory. Without one (su, ssh without a systemd
 * login) skopeo looks in /run/containers/UID, which users cannot create and,
 * once root's podman has made /run/containers, cannot even look into: then
 * ~/.config/containers/auth.json, which login writes (for_login) and
 * skopeo reads anyway, or docker's ~/.docker/config.json when only that
 * one exists. A file that does not exist reads as no credentials. */
static char *default_authfile(bool for_login)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR"), *home = getenv("HOME");
	if (geteuid() == 0 || (xdg && *xdg) || getenv("REGISTRY_AUTH_FILE") || !home || !*home)
		return NULL;
	char *dir, *file = NULL, *docker = NULL;
	if (asprintf(&dir, "%s/.config/containers", home) < 0)
		return NULL;
	if (for_login)
		mkdir_p(dir, 0700);
	if (asprintf(&file, "%s/auth.json", dir) < 0)
		file = NULL;
	free(dir);
	if (file && !for_login && access(file, F_OK) < 0 && asprintf(&docker, "%s/.docker/config.json", home) >= 0) {
		if (access(docker, F_OK) == 0) {
			free(file);
			return docker;
		}
		free(docker);
	}
	return file;
}

static const char *tls_arg(const char *which, bool verify)
{
	static char buf[64];
	snprintf(buf, sizeof buf, "--%stls-verify=%s", which, verify ? "true" : "false");
	return buf;
}

/* --- pull --- */

/* Put the blob of every layer the store holds into the layout skopeo will
 * write, as a hard link named by its digest: skopeo's OCI destination
 * takes a blob already in place as copied and does not fetch it, and
 * import skips a layer the store has. So a pull fetches only the layers
 * that are new (those of an updated tag, or the top of an image whose
 * base is here). Best effort: a link that cannot be made costs a
 * download, nothing else. */
static void offer_stored_blobs(struct store *s, const char *tmpname)
{
	char dir[128];
	snprintf(dir, sizeof dir, "%s/oci/blobs/sha256", tmpname);
	_cleanup_close_ int lfd = openat(s->fd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	if (lfd < 0 || list_sorted(lfd, &names, &n) < 0)
		return;
	bool made = false;
	for (size_t i = 0; i < n; i++) {
		char p[PATH_MAX], *txt = NULL;
		snprintf(p, sizeof p, "%s/layer.json", names[i]);
		if (read_file_at(lfd, p, 64 << 10, &txt, NULL) < 0)
			continue;
		json_t *info = json_loads(txt, 0, NULL);
		free(txt);
		const char *dg = json_string_value(json_object_get(info, "digest"));
		/* A packed layer keeps no blob (pkstore.h): it is offered as an
		 * empty file under the digest it was imported with and the one
		 * export gives it. skopeo takes either as copied; import skips
		 * the layer by DiffID without reading it (a layer removed by a
		 * `strata rmi` in between makes that import fail its digest
		 * check, and a second pull downloads it). */
		char pkp[PATH_MAX];
		snprintf(pkp, sizeof pkp, "%s/layer.pk", names[i]);
		bool packed = faccessat(lfd, pkp, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
		for (int k = 0; k < (packed ? 2 : 1); k++) {
			if (k == 1)
				dg = json_string_value(json_object_get(info, "imported_digest"));
			if (!dg || !digest_valid(dg))
				continue;
			if (!made) {
				char sub[128];
				snprintf(sub, sizeof sub, "%s/oci", tmpname);
				made = (mkdirat(s->fd, sub, 0700) == 0 || errno == EEXIST);
				snprintf(sub, sizeof sub, "%s/oci/blobs", tmpname);
				made = made && (mkdirat(s->fd, sub, 0700) == 0 || errno == EEXIST);
				made = made && (mkdirat(s->fd, dir, 0700) == 0 || errno == EEXIST);
			}
			char from[PATH_MAX], to[PATH_MAX];
			snprintf(from, sizeof from, "layers/%s/blob", names[i]);
			snprintf(to, sizeof to, "%s/%s", dir, digest_hex(dg));
			if (!made || linkat(s->fd, from, s->fd, to, 0) == 0 || errno == EEXIST)
				continue;
			if (errno == ENOENT && packed) {
				int fd = openat(s->fd, to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
				if (fd >= 0)
					close(fd);
				else if (errno != EEXIST)
					sdebug("pull: cannot offer packed layer %s to skopeo (%s): it is downloaded again", names[i], strerror(errno));
			} else if (errno != ENOENT) {
				sdebug("pull: cannot offer %s to skopeo (%s): it is downloaded again", from, strerror(errno));
			}
		}
		json_decref(info);
	}
	free_names(names, n);
}

int registry_pull(struct store *s, const char *text, const struct pull_opts *po, char *digest)
{
	struct image_ref ref;
	if (image_ref_parse(text, &ref) < 0)
		return -EINVAL;
	_cleanup_free_ char *full = image_ref_full(&ref), *local = image_ref_familiar(&ref);
	image_ref_free(&ref);
	if (!full || !local)
		return -ENOMEM;
	char tmpname[64];
	_cleanup_close_ int tfd = store_mktemp(s, tmpname);
	if (tfd < 0) {
		serr(tfd, "pull: create a temporary directory in", s->root, "check free space and permissions of the store");
		return tfd;
	}
	char layout[PATH_MAX], dest[PATH_MAX + 16], src[600], tls[64];
	snprintf(layout, sizeof layout, "%s/%s/oci", s->root, tmpname);
	snprintf(dest, sizeof dest, "oci:%s:pulled", layout);
	snprintf(src, sizeof src, "docker://%s", full);
	snprintf(tls, sizeof tls, "%s", tls_arg("src-", po->tls_verify));
	char *args[12];
	int n = 0;
	args[n++] = "skopeo";
	args[n++] = "copy";
	/* Progress bars when a person watches stderr; nothing for scripts. */
	bool show = !po->quiet && isatty(STDERR_FILENO);
	if (!show)
		args[n++] = "--quiet";
	args[n++] = tls;
	_cleanup_free_ char *af = NULL, *def = po->authfile ? NULL : default_authfile(false);
	if ((po->authfile || def) && asprintf(&af, "--src-authfile=%s", po->authfile ? po->authfile : def) >= 0)
		args[n++] = af;
	args[n++] = src;
	args[n++] = dest;
	args[n] = NULL;
	struct skopeo_opts so = { .stdout_to_stderr = true, .op = "pull", .target = src };
	if (show)
		fprintf(stderr, "Pulling %s\n", full);
	offer_stored_blobs(s, tmpname);
	/* No store lock while skopeo downloads, which takes as long as the
	 * network does: work in tmp/ is this process's own (flocked), safe
	 * from cleaners, and import takes the write lock to commit. */
	store_unlock(s);
	int r = run_skopeo(args, &so);
	if (r == 0) {
		struct spec sp = { .kind = SPEC_OCI, .path = layout, .ref = "pulled" };
		if ((r = image_import(s, &sp, local, digest)) == 0 && show)
			fprintf(stderr, "Pulled %s as %s\n", full, local);
	}
	rm_rf_at(s->fd, tmpname);
	return r;
}

int cmd_pull(const char *root, int argc, char **argv)
{
	struct reg_opts o;
	if (parse_reg_opts(argc, argv, "tqa", 1, &o) < 0 || o.nargs != 1) {
		if (o.nargs != 1)
			susage("usage: strata pull [--tls-verify=false] [-q] [--authfile FILE] NAME[:TAG|@sha256:DIGEST]");
		return 2;
	}
	struct image_ref ref;
	if (image_ref_parse(o.args[0], &ref) < 0)
		return 2;
	image_ref_free(&ref);
	struct store s;
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	struct pull_opts po = { .tls_verify = o.tls_verify, .quiet = o.quiet, .authfile = o.authfile };
	char digest[DIGEST_BUF];
	if ((r = registry_pull(&s, o.args[0], &po, digest)) == 0)
		printf("%s\n", digest);
	store_close(&s);
	return r == -EINTR ? 130 : r;
}

/* --- push --- */

/* The first line of a small file. */
static int read_line(const char *path, char *buf, size_t len)
{
	int r = read_small(path, buf, len);
	if (r < 0)
		return r;
	buf[strcspn(buf, "\r\n")] = '\0';
	return 0;
}

int cmd_push(const char *root, int argc, char **argv)
{
	struct reg_opts o;
	struct image_ref ref;
	if (parse_reg_opts(argc, argv, "tqa", 2, &o) < 0 || o.nargs < 1) {
		if (o.nargs < 1)
			susage("usage: strata push [--tls-verify=false] [-q] [--authfile FILE] IMAGE [NAME[:TAG]]");
		return 2;
	}
	const char *image = o.args[0], *dest_text = o.nargs > 1 ? o.args[1] : o.args[0];
	struct store s;
	/* A shared lock while the layout is written (the image's layers must
	 * stay), none while skopeo sends it. */
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	char digest[DIGEST_BUF], tmpname[64] = "";
	_cleanup_close_ int tfd = -1;
	_cleanup_free_ char *full = NULL, *af = NULL, *df = NULL, *repo = NULL, *def = NULL;
	if ((r = store_resolve(&s, image, digest)) < 0)
		goto out;
	if (o.nargs == 1) {
		/* Without a destination the image's own name is one, so it must
		 * be a name the store knows, not an ID. */
		json_t *tags;
		_cleanup_free_ char *name = ref_normalize(image);
		if ((r = store_tags(&s, &tags)) < 0)
			goto out;
		bool named = name && json_object_get(tags, name);
		json_decref(tags);
		if (!named) {
			susage("push: '%s' is an image ID, not a name; say where it goes: strata push %s REGISTRY/NAME:TAG",
			       image, image);
			r = 2;
			goto out;
		}
	}
	if (image_ref_parse(dest_text, &ref) < 0) {
		r = 2;
		goto out;
	}
	if (ref.digest) {
		susage("push: '%s' names a digest; a push gives a tag (the registry computes the digest)", dest_text);
		image_ref_free(&ref);
		r = 2;
		goto out;
	}
	full = image_ref_full(&ref);
	image_ref_free(&ref);
	if (!full) {
		r = -ENOMEM;
		goto out;
	}
	if ((tfd = store_mktemp(&s, tmpname)) < 0) {
		r = tfd;
		tmpname[0] = '\0';
		serr(r, "push: create a temporary directory in", s.root, "check free space and permissions of the store");
		goto out;
	}
	char layout[PATH_MAX], src[PATH_MAX + 16], dst[600], dfile[PATH_MAX], tls[64];
	snprintf(layout, sizeof layout, "%s/%s/oci", s.root, tmpname);
	snprintf(dfile, sizeof dfile, "%s/%s/digest", s.root, tmpname);
	snprintf(src, sizeof src, "oci:%s:push", layout);
	snprintf(dst, sizeof dst, "docker://%s", full);
	snprintf(tls, sizeof tls, "%s", tls_arg("dest-", o.tls_verify));
	struct spec sp = { .kind = SPEC_OCI, .path = layout, .ref = "push" };
	if ((r = image_export(&s, digest, image, &sp)) < 0)
		goto out;
	bool show = !o.quiet && isatty(STDERR_FILENO);
	char *args[12];
	int n = 0;
	args[n++] = "skopeo";
	args[n++] = "copy";
	if (!show)
		args[n++] = "--quiet";
	args[n++] = tls;
	def = o.authfile ? NULL : default_authfile(false);
	if ((o.authfile || def) && asprintf(&af, "--dest-authfile=%s", o.authfile ? o.authfile : def) >= 0)
		args[n++] = af;
	if (asprintf(&df, "--digestfile=%s", dfile) < 0) {
		r = -ENOMEM;
		goto out;
	}
	args[n++] = df;
	args[n++] = src;
	args[n++] = dst;
	args[n] = NULL;
	struct skopeo_opts so = { .stdout_to_stderr = true, .op = "push", .target = dst };
	if (show)
		fprintf(stderr, "Pushing %s\n", full);
	store_unlock(&s);
	if ((r = run_skopeo(args, &so)) < 0)
		goto out;
	/* Where it went, as a reference that pulls exactly this. */
	char mdigest[128];
	repo = strdup(full);
	char *colon = repo ? strrchr(repo, ':') : NULL;
	if (colon && !strchr(colon, '/'))
		*colon = '\0';
	if (repo && read_line(dfile, mdigest, sizeof mdigest) == 0 && digest_valid(mdigest))
		printf("%s@%s\n", repo, mdigest);
	else
		printf("%s\n", full);
out:
	if (tmpname[0])
		rm_rf_at(s.fd, tmpname);
	store_close(&s);
	return r == -EINTR ? 130 : r;
}

/* --- login, logout --- */

static int login_logout(bool login, int argc, char **argv)
{
	struct reg_opts o;
	const char *op = login ? "login" : "logout";
	if (parse_reg_opts(argc, argv, login ? "taup" : "aA", 1, &o) < 0)
		return 2;
	if (login && o.password_stdin && !o.user) {
		susage("login: --password-stdin needs the user name: strata login -u USER --password-stdin REGISTRY");
		return 2;
	}
	if (!login && o.all && o.nargs) {
		susage("logout: give a REGISTRY or --all, not both");
		return 2;
	}
	/* No registry means Docker Hub, as with docker. A reference or URL is
	 * cut down to its host. */
	const char *reg = o.nargs ? o.args[0] : (o.all ? NULL : "docker.io");
	_cleanup_free_ char *host = NULL;
	if (reg) {
		if (!strncmp(reg, "https://", 8))
			reg += 8;
		else if (!strncmp(reg, "http://", 7))
			reg += 7;
		host = strndup(reg, strcspn(reg, "/"));
		if (!host)
			return -ENOMEM;
		if (!*host || !domain_valid(host)) {
			susage("%s: '%s' is not a registry host[:port]", op, reg);
			return 2;
		}
	}
	_cleanup_free_ char *def = o.authfile ? NULL : default_authfile(true), *af = NULL;
	const char *authfile = o.authfile ? o.authfile : def;
	char *args[12];
	char tls[64];
	int n = 0;
	args[n++] = "skopeo";
	args[n++] = (char *)op;
	if (login) {
		snprintf(tls, sizeof tls, "%s", tls_arg("", o.tls_verify));
		args[n++] = tls;
		if (o.user) {
			args[n++] = "--username";
			args[n++] = (char *)o.user;
		}
		if (o.password_stdin)
			args[n++] = "--password-stdin";
	}
	if (authfile) {
		if (asprintf(&af, "--authfile=%s", authfile) < 0)
			return -ENOMEM;
		args[n++] = af;
	}
	if (!login && o.all)
		args[n++] = "--all";
	if (host)
		args[n++] = host;
	args[n] = NULL;
	struct skopeo_opts so = { .op = op, .target = host ? host : "(all registries)" };
	int r = run_skopeo(args, &so);
	return r == -EINTR ? 130 : r;
}

int cmd_login(const char *root, int argc, char **argv)
{
	(void)root;
	return login_logout(true, argc, argv);
}

int cmd_logout(const char *root, int argc, char **argv)
{
	(void)root;
	return login_logout(false, argc, argv);
}
