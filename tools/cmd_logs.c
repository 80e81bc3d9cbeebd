/* logs: what a detached container's command wrote, from ctr.log.1 and
 * ctr.log (docker's json-file lines), also after it ended; -f follows the
 * log, across rotation, until the container ends. */
#include "cli.h"

#include "container.h"
#include "err.h"
#include "fsutil.h"
#include "store.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct logs_opts {
	bool follow, timestamps;
	long long tail;          /* -1: all */
	char since[64];          /* RFC 3339, comparable as a string; "" none */
};

/* --since: RFC 3339, a unix time, or a duration back from now (10m). */
static int parse_since(const char *v, char out[64])
{
	char *end;
	double n = strtod(v, &end);
	time_t t;
	if (end != v && (!*end || (!end[1] && strchr("smhd", *end)))) {
		if (*end) {
			double mul = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600 : 86400;
			t = time(NULL) - (time_t)(n * mul);
		} else {
			t = (time_t)n;
		}
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(out, 64, "%Y-%m-%dT%H:%M:%S", &tm);
		return 0;
	}
	if (strlen(v) >= 10 && v[4] == '-' && v[7] == '-') {
		snprintf(out, 64, "%s", v);
		size_t l = strlen(out);
		if (l && out[l - 1] == 'Z')
			out[l - 1] = '\0';
		return 0;
	}
	susage("logs: --since %s: give a time (2026-01-02T03:04:05Z), a unix time or a duration (10m)", v);
	return -EINVAL;
}

static void emit(const struct logs_opts *o, const char *line, size_t len)
{
	_cleanup_free_ char *copy = strndup(line, len);
	json_t *j = copy ? json_loads(copy, JSON_ALLOW_NUL, NULL) : NULL;
	const char *text = json_string_value(json_object_get(j, "log"));
	const char *stream = json_string_value(json_object_get(j, "stream"));
	const char *tm = json_string_value(json_object_get(j, "time"));
	if (text && (!o->since[0] || (tm && strncmp(tm, o->since, strlen(o->since)) >= 0))) {
		FILE *f = stream && !strcmp(stream, "stderr") ? stderr : stdout;
		if (o->timestamps && tm)
			fprintf(f, "%s ", tm);
		fwrite(text, 1, json_string_length(json_object_get(j, "log")), f);
	}
	json_decref(j);
}

/* Complete lines of buf[0..len); returns how much was consumed. */
static size_t emit_lines(const struct logs_opts *o, const char *buf, size_t len, long long skip)
{
	size_t pos = 0;
	for (;;) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		if (!nl)
			return pos;
		size_t end = (size_t)(nl - buf) + 1;
		if (skip-- <= 0)
			emit(o, buf + pos, end - pos);
		pos = end;
	}
}

static long long count_lines(const char *b, size_t len)
{
	long long n = 0;
	for (const char *p = b; (p = memchr(p, '\n', len - (size_t)(p - b))); p++)
		n++;
	return n;
}

static void drain(const struct logs_opts *o, int fd, char *buf, size_t size, size_t *have)
{
	for (;;) {
		ssize_t n = fd >= 0 ? read(fd, buf + *have, size - *have) : 0;
		if (n <= 0)
			break;
		*have += (size_t)n;
		size_t k = emit_lines(o, buf, *have, 0);
		if (k == 0 && *have == size)
			k = *have;   /* an overlong line: drop it rather than stall */
		memmove(buf, buf + k, *have - k);
		*have -= k;
	}
	fflush(stdout);
	fflush(stderr);
}

static int logs(struct ctr *c, const struct logs_opts *o)
{
	_cleanup_free_ char *old = NULL, *cur = NULL;
	size_t olen = 0, clen = 0;
	read_file_at(c->dirfd, "ctr.log.1", 256 << 20, &old, &olen);
	_cleanup_close_ int fd = openat(c->dirfd, "ctr.log", O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd >= 0)
		read_fd(fd, 256 << 20, &cur, &clen);
	long long total = count_lines(old ? old : "", olen) + count_lines(cur ? cur : "", clen);
	long long skip = o->tail >= 0 && total > o->tail ? total - o->tail : 0;
	long long oldn = count_lines(old ? old : "", olen);
	if (old)
		emit_lines(o, old, olen, skip);
	size_t used = cur ? emit_lines(o, cur, clen, skip > oldn ? skip - oldn : 0) : 0;
	fflush(stdout);
	fflush(stderr);
	if (!o->follow)
		return 0;

	/* Follow: read what the logger appends; a new inode at ctr.log is a
	 * rotation, whose rest is read from the old file first. */
	off_t off = (off_t)used;
	char buf[65536];
	size_t have = 0;
	if (fd >= 0 && lseek(fd, off, SEEK_SET) < 0)
		return -errno;
	for (bool last = false;;) {
		bool running = ctr_reload_state(c) == 0 && (ctr_status(c) == CTR_RUNNING ||
							    ctr_status(c) == CTR_PAUSED ||
							    ctr_status(c) == CTR_RESTARTING);
		if (fd < 0)
			fd = openat(c->dirfd, "ctr.log", O_RDONLY | O_CLOEXEC);
		drain(o, fd, buf, sizeof buf, &have);
		struct stat now;
		if (fd >= 0 && fstatat(c->dirfd, "ctr.log", &now, 0) == 0 && fstat(fd, &st) == 0 &&
		    now.st_ino != st.st_ino) {
			/* Rotated: the old file got its last lines before the
			 * rename; read them, then switch. */
			drain(o, fd, buf, sizeof buf, &have);
			close(fd);
			fd = openat(c->dirfd, "ctr.log", O_RDONLY | O_CLOEXEC);
			have = 0;
			continue;
		}
		if (last)
			return 0;
		if (!running) {
			/* One more read: what the logger wrote before the end. */
			struct proc_ref mon = proc_ref_from(c->st, "MonitorPid", "MonitorStart");
			for (int i = 0; i < 250 && proc_alive(&mon); i++) {
				const struct timespec t = { 0, 20 * 1000 * 1000 };
				nanosleep(&t, NULL);
			}
			last = true;
			continue;
		}
		const struct timespec t = { 0, 100 * 1000 * 1000 };
		nanosleep(&t, NULL);
	}
}

int cmd_logs(const char *root, int argc, char **argv)
{
	struct logs_opts o = { .tail = -1 };
	int i = 0;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
#define IS(s) (strlen(s) == len && !strncmp(a, s, len))
		if (IS("-f") || IS("--follow")) {
			o.follow = true;
		} else if (IS("-t") || IS("--timestamps")) {
			o.timestamps = true;
		} else if (!strcmp(a, "--help")) {
			cli_help("logs", stdout);
			return 0;
		} else if (IS("--tail") || IS("-n") || IS("--since")) {
			const char *v = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
			if (!v) {
				susage("logs: %s needs a value", a);
				return EXIT_STRATA;
			}
			if (IS("--since")) {
				if (parse_since(v, o.since) < 0)
					return EXIT_STRATA;
			} else if (!strcmp(v, "all")) {
				o.tail = -1;
			} else {
				char *end;
				o.tail = strtoll(v, &end, 10);
				if (*end || end == v || o.tail < 0) {
					susage("logs: --tail %s: give a number of lines or all", v);
					return EXIT_STRATA;
				}
			}
		} else {
			susage("logs: unknown option %s (see strata logs --help)", a);
			return EXIT_STRATA;
		}
#undef IS
	}
	if (argc - i != 1) {
		susage("usage: strata logs [-f] [-t] [--tail N] [--since TIME] CONTAINER");
		return EXIT_STRATA;
	}
	struct store s;
	struct ctr c;
	if (store_open(&s, root, false) < 0)
		return EXIT_STRATA;
	int r = ctr_open(&s, argv[i], &c);
	store_close(&s);
	if (r == 0)
		r = logs(&c, &o);
	ctr_close(&c);
	return r < 0 ? EXIT_STRATA : 0;
}
