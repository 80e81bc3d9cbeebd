/* ps, top, stats, port: what containers are doing, judged from their
 * state and from the processes and cgroups that really exist. */
#include "cli.h"

#include "container.h"
#include "err.h"
#include "fsutil.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Every container of the store, described (container_describe). */
static json_t *all_containers(struct store *s)
{
	_cleanup_close_ int cfd = openat(s->fd, "containers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	json_t *out = json_array();
	if (cfd >= 0 && list_sorted(cfd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			json_t *c;
			if (strlen(names[i]) == 64 && container_describe(s, names[i], &c) == 0)
				json_array_append_new(out, c);
		}
		free_names(names, n);
	}
	return out;
}

static bool is_active(json_t *c)
{
	const char *st = json_string_value(json_object_get(c, "state"));
	return st && (!strcmp(st, "running") || !strcmp(st, "paused") || !strcmp(st, "restarting"));
}

static void ports_text(json_t *c, char *buf, size_t len)
{
	json_t *a = json_object_get(json_object_get(c, "options"), "publish");
	size_t i;
	json_t *v;
	buf[0] = '\0';
	json_array_foreach(a, i, v) {
		if (i)
			strncat(buf, ", ", len - strlen(buf) - 1);
		strncat(buf, json_string_value(v), len - strlen(buf) - 1);
	}
}

int cmd_ps(const char *root, int argc, char **argv)
{
	struct store s;
	bool all = false, js = false, quiet = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "-a") || !strcmp(argv[i], "--all"))
			all = true;
		else if (!strcmp(argv[i], "--json"))
			js = true;
		else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet"))
			quiet = true;
		else if (!strcmp(argv[i], "--help")) {
			cli_help("ps", stdout);
			return 0;
		} else {
			susage("ps: unknown argument %s (usage: strata ps [-a] [-q] [--json])", argv[i]);
			return EXIT_STRATA;
		}
	}
	if (store_open(&s, root, false) < 0)
		return EXIT_STRATA;
	json_t *list = all_containers(&s), *out = json_array(), *c;
	store_close(&s);
	size_t i;
	json_array_foreach(list, i, c)
		if (all || is_active(c))
			json_array_append(out, c);
	json_decref(list);
	if (js) {
		print_json(out);
	} else if (quiet) {
		json_array_foreach(out, i, c)
			printf("%.12s\n", json_string_value(json_object_get(c, "id")));
	} else {
		printf("%-14s %-20s %-24s %-22s %-30s %-20s %s\n", "CONTAINER ID", "IMAGE", "COMMAND", "CREATED",
		       "STATUS", "PORTS", "NAMES");
		json_array_foreach(out, i, c) {
			char cmd[256] = "", ports[256];
			size_t k;
			json_t *v;
			json_array_foreach(json_object_get(c, "command"), k, v) {
				strncat(cmd, json_string_value(v), sizeof cmd - strlen(cmd) - 2);
				strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
			}
			ports_text(c, ports, sizeof ports);
			printf("%-14.12s %-20.20s %-24.24s %-22.19s %-30s %-20s %s\n",
			       json_string_value(json_object_get(c, "id")),
			       json_string_value(json_object_get(c, "image_ref")), cmd,
			       json_string_value(json_object_get(c, "created")),
			       json_string_value(json_object_get(c, "status")), ports,
			       json_string_value(json_object_get(c, "name")));
		}
	}
	json_decref(out);
	return 0;
}

/* ---------------------------------------------------------------- processes */

static int open_one(const char *root, const char *what, struct ctr *c)
{
	struct store s;
	if (store_open(&s, root, false) < 0)
		return -EIO;
	int r = ctr_open(&s, what, c);
	store_close(&s);
	return r;
}

struct pstat {
	char state;
	pid_t ppid;
	int tty;                    /* tty_nr */
	unsigned long long ticks;   /* utime + stime */
	unsigned long long start;   /* clock ticks after boot */
	long rss_pages;
	uid_t uid;
};

static int proc_stat(pid_t pid, struct pstat *ps)
{
	char p[64], buf[1024];
	snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (n <= 0)
		return -ESRCH;
	buf[n] = '\0';
	char *q = strrchr(buf, ')');
	if (!q)
		return -EINVAL;
	unsigned long utime = 0, stime = 0;
	unsigned long long start = 0;
	long rss = 0;
	int ppid = 0, tty = 0;
	/* state ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt utime stime cutime cstime priority nice threads
	 * itrealvalue starttime vsize rss */
	if (sscanf(q + 2, "%c %d %*d %*d %d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %llu %*u %ld",
		   &ps->state, &ppid, &tty, &utime, &stime, &start, &rss) != 7)
		return -EINVAL;
	ps->ppid = ppid;
	ps->tty = tty;
	ps->start = start;
	ps->ticks = utime + stime;
	ps->rss_pages = rss;
	struct stat st;
	snprintf(p, sizeof p, "/proc/%d", (int)pid);
	ps->uid = stat(p, &st) == 0 ? st.st_uid : 0;
	return 0;
}

static void cmdline(pid_t pid, char *buf, size_t len)
{
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/cmdline", (int)pid);
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : -1;
	if (n <= 0) {
		snprintf(buf, len, "?");
		return;
	}
	for (ssize_t i = 0; i < n - 1; i++)
		if (!buf[i])
			buf[i] = ' ';
	buf[n] = '\0';
}

/* The terminal of tty_nr as ps names it: pts/N, ttyN, or "?". */
static void tty_name(int nr, char *buf, size_t len)
{
	unsigned major = ((unsigned)nr >> 8) & 0xfff, minor = ((unsigned)nr & 0xff) | (((unsigned)nr >> 12) & 0xfff00);
	if (!nr)
		snprintf(buf, len, "?");
	else if (major >= 136 && major <= 143)
		snprintf(buf, len, "pts/%u", (major - 136) * 256 + minor);
	else if (major == 4 && minor < 64)
		snprintf(buf, len, "tty%u", minor);
	else
		snprintf(buf, len, "%u:%u", major, minor);
}

/* docker top: ps -ef's columns for the container's processes: the
 * user's command and everything it started, and what exec started;
 * strata's own init (pid 1 of the container's namespace, which only
 * reaps and relays signals) is left out, as docker shows no shim. */
int cmd_top(const char *root, int argc, char **argv)
{
	struct ctr c;
	if (argc >= 1 && !strcmp(argv[0], "--help")) {
		cli_help("top", stdout);
		return 0;
	}
	if (argc != 1) {
		susage(argc > 1 ? "top: ps options are not supported (usage: strata top CONTAINER)" : "usage: strata top CONTAINER");
		return EXIT_STRATA;
	}
	if (open_one(root, argv[0], &c) < 0)
		return EXIT_STRATA;
	pid_t *pids;
	size_t n;
	enum ctr_status st = ctr_status(&c);
	if ((st != CTR_RUNNING && st != CTR_PAUSED) || ctr_pids(&c, &pids, &n) < 0) {
		susage("top: container %s is not running (%s)", argv[0], ctr_status_name(st));
		ctr_close(&c);
		return EXIT_STRATA;
	}
	pid_t init = (pid_t)json_integer_value(json_object_get(c.st, "Pid"));
	long hz = sysconf(_SC_CLK_TCK);
	if (hz <= 0)
		hz = 100;
	struct timespec up;
	clock_gettime(CLOCK_BOOTTIME, &up);
	unsigned long long now_ticks = (unsigned long long)up.tv_sec * (unsigned long long)hz +
				       (unsigned long long)up.tv_nsec * (unsigned long long)hz / 1000000000ULL;
	printf("%-10s %-8s %-8s %-3s %-5s %-8s %-9s %s\n", "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD");
	for (size_t i = 0; i < n; i++) {
		struct pstat ps;
		char cmd[512], user[32], tty[32], stime[16];
		if (pids[i] == init || proc_stat(pids[i], &ps) < 0)
			continue;
		cmdline(pids[i], cmd, sizeof cmd);
		struct passwd *pw = getpwuid(ps.uid);
		if (pw)
			snprintf(user, sizeof user, "%s", pw->pw_name);
		else
			snprintf(user, sizeof user, "%u", (unsigned)ps.uid);
		tty_name(ps.tty, tty, sizeof tty);
		unsigned long long life = now_ticks > ps.start ? now_ticks - ps.start : 1;
		/* from the time since boot the kernel counts, not /proc/stat's
		 * btime, which drifts on a VM that was paused */
		time_t started = time(NULL) - (time_t)(life / (unsigned long long)hz);
		struct tm tm;
		localtime_r(&started, &tm);
		strftime(stime, sizeof stime, "%H:%M", &tm);
		unsigned long long secs = ps.ticks / (unsigned long long)hz;
		printf("%-10s %-8d %-8d %-3llu %-5s %-8s %02llu:%02llu:%02llu %s\n", user, (int)pids[i], (int)ps.ppid,
		       ps.ticks * 100 / life, stime, tty, secs / 3600, secs / 60 % 60, secs % 60, cmd);
	}
	free(pids);
	ctr_close(&c);
	return 0;
}

/* ---------------------------------------------------------------- stats */

struct sample {
	double cpu_s;             /* CPU seconds used */
	long long mem, limit;     /* bytes; limit 0: none known */
	long long pids;
	double at;                /* monotonic seconds */
};

static long long read_ll(const char *dir, const char *file)
{
	char p[4200], buf[256];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if (!strncmp(buf, "max", 3))
		return 0;
	if (!strcmp(file, "cpu.stat")) {
		char *u = strstr(buf, "usage_usec ");
		return u ? strtoll(u + 11, NULL, 10) : -1;
	}
	return strtoll(buf, NULL, 10);
}

static long long host_memory(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
	return pages > 0 && size > 0 ? (long long)pages * size : 0;
}

/* The container's cgroups where it has them; its processes otherwise. */
static void sample(struct ctr *c, struct sample *sm)
{
	char dirs[16][4096];
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	memset(sm, 0, sizeof *sm);
	sm->at = (double)t.tv_sec + (double)t.tv_nsec / 1e9;
	sm->cpu_s = sm->mem = sm->pids = -1;
	size_t n = ctr_cgroup_dirs(json_string_value(json_object_get(c->st, "Cgroup")), dirs, 16);
	for (size_t i = 0; i < n; i++) {
		long long v;
		if ((v = read_ll(dirs[i], "memory.usage_in_bytes")) >= 0 || (v = read_ll(dirs[i], "memory.current")) >= 0)
			sm->mem = v;
		if ((v = read_ll(dirs[i], "memory.limit_in_bytes")) > 0 || (v = read_ll(dirs[i], "memory.max")) > 0)
			sm->limit = v;
		if ((v = read_ll(dirs[i], "cpuacct.usage")) >= 0)
			sm->cpu_s = (double)v / 1e9;
		else if ((v = read_ll(dirs[i], "cpu.stat")) >= 0)
			sm->cpu_s = (double)v / 1e6;
		if ((v = read_ll(dirs[i], "pids.current")) >= 0)
			sm->pids = v;
	}
	pid_t *pids = NULL;
	size_t np = 0;
	ctr_pids(c, &pids, &np);
	double cpu = 0;
	long long rss = 0;
	long hz = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < np; i++) {
		struct pstat ps;
		if (proc_stat(pids[i], &ps) == 0) {
			cpu += (double)ps.ticks / (double)(hz > 0 ? hz : 100);
			rss += (long long)ps.rss_pages * page;
		}
	}
	free(pids);
	if (sm->cpu_s < 0)
		sm->cpu_s = cpu;
	if (sm->mem < 0)
		sm->mem = rss;
	if (sm->pids < 0)
		sm->pids = (long long)np;
	long long host = host_memory();
	if (!sm->limit || sm->limit > host)
		sm->limit = host;
}

int cmd_stats(const char *root, int argc, char **argv)
{
	bool stream = true, js = false;
	int i = 0;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--no-stream"))
			stream = false;
		else if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "--format=json"))
			js = true;
		else if (!strcmp(argv[i], "-a") || !strcmp(argv[i], "--all"))
			continue;
		else if (!strcmp(argv[i], "--help")) {
			cli_help("stats", stdout);
			return 0;
		} else {
			susage("stats: unknown option %s (see strata stats --help)", argv[i]);
			return EXIT_STRATA;
		}
	}
	struct store s;
	if (store_open(&s, root, false) < 0)
		return EXIT_STRATA;
	/* The named containers, or every running one. */
	size_t n = 0;
	struct ctr *cs = calloc((size_t)(argc - i) + 1, sizeof *cs);
	json_t *names = json_array();
	if (i < argc) {
		for (int k = i; k < argc; k++)
			json_array_append_new(names, json_string(argv[k]));
	} else {
		json_t *all = all_containers(&s), *c;
		size_t k;
		json_array_foreach(all, k, c)
			if (is_active(c))
				json_array_append(names, json_object_get(c, "id"));
		json_decref(all);
		cs = realloc(cs, (json_array_size(names) + 1) * sizeof *cs);
	}
	int rc = 0;
	for (size_t k = 0; cs && k < json_array_size(names); k++) {
		if (ctr_open(&s, json_string_value(json_array_get(names, k)), &cs[n]) == 0)
			n++;
		else {
			ctr_close(&cs[n]);
			rc = EXIT_STRATA;
		}
	}
	store_close(&s);
	json_decref(names);
	struct sample *a = calloc(n + 1, sizeof *a), *b = calloc(n + 1, sizeof *b);
	for (size_t k = 0; a && k < n; k++)
		sample(&cs[k], &a[k]);
	do {
		const struct timespec t = { 0, 500 * 1000 * 1000 };
		nanosleep(&t, NULL);
		json_t *out = json_array();
		for (size_t k = 0; a && b && k < n; k++) {
			sample(&cs[k], &b[k]);
			double dt = b[k].at - a[k].at;
			double cpu = dt > 0 ? (b[k].cpu_s - a[k].cpu_s) / dt * 100.0 : 0;
			ctr_reload_state(&cs[k]);
			bool up = ctr_status(&cs[k]) == CTR_RUNNING || ctr_status(&cs[k]) == CTR_PAUSED;
			json_array_append_new(out, json_pack("{s:s,s:s,s:f,s:I,s:I,s:f,s:I}", "id", cs[k].id,
				"name", ctr_name(&cs[k]), "cpu_percent", up && cpu > 0 ? cpu : 0.0,
				"memory_usage", (json_int_t)(up ? b[k].mem : 0), "memory_limit", (json_int_t)b[k].limit,
				"memory_percent", up && b[k].limit ? 100.0 * (double)b[k].mem / (double)b[k].limit : 0.0,
				"pids", (json_int_t)(up ? b[k].pids : 0)));
			a[k] = b[k];
		}
		if (js) {
			print_json(out);
		} else {
			if (stream)
				printf("\033[2J\033[H");
			printf("%-14s %-20s %-8s %-22s %-8s %s\n", "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT",
			       "MEM %", "PIDS");
			size_t k;
			json_t *v;
			json_array_foreach(out, k, v) {
				char u[32], l[32], ml[80];
				human_size(json_integer_value(json_object_get(v, "memory_usage")), u, sizeof u);
				human_size(json_integer_value(json_object_get(v, "memory_limit")), l, sizeof l);
				snprintf(ml, sizeof ml, "%s / %s", u, l);
				printf("%-14.12s %-20.20s %-8.2f %-22s %-8.2f %lld\n", json_string_value(json_object_get(v, "id")),
				       json_string_value(json_object_get(v, "name")),
				       json_real_value(json_object_get(v, "cpu_percent")), ml,
				       json_real_value(json_object_get(v, "memory_percent")),
				       (long long)json_integer_value(json_object_get(v, "pids")));
			}
		}
		fflush(stdout);
		json_decref(out);
	} while (stream);
	for (size_t k = 0; k < n; k++)
		ctr_close(&cs[k]);
	free(cs);
	free(a);
	free(b);
	return rc;
}

/* ---------------------------------------------------------------- port */

int cmd_port(const char *root, int argc, char **argv)
{
	struct ctr c;
	if (argc >= 1 && !strcmp(argv[0], "--help")) {
		cli_help("port", stdout);
		return 0;
	}
	if (argc < 1 || argc > 2) {
		susage("usage: strata port CONTAINER [PRIVATE_PORT[/PROTO]]");
		return EXIT_STRATA;
	}
	if (open_one(root, argv[0], &c) < 0)
		return EXIT_STRATA;
	json_t *a = json_object_get(json_object_get(c.rec, "options"), "publish");
	int rc = argc == 2 ? 1 : 0;
	for (size_t i = 0; i < json_array_size(a); i++) {
#ifdef STRATA_HAVE_RUNTIME
		struct strata_port p;
		struct strata_error perr;
		char priv[32];
		/* checked when the container was made */
		if (strata_parse_port(json_string_value(json_array_get(a, i)), &p, &perr) < 0)
			continue;
		snprintf(priv, sizeof priv, "%u/%s", p.container_port, p.udp ? "udp" : "tcp");
		if (argc == 2 && strcmp(argv[1], priv) && (strchr(argv[1], '/') || (unsigned)atoi(argv[1]) != p.container_port))
			continue;
		rc = 0;
		printf("%s -> %s:%u\n", priv, p.host_ip[0] ? p.host_ip : "0.0.0.0", p.host_port);
#endif
	}
	if (rc)
		susage("port: no public port '%s' published for %s", argv[1], argv[0]);
	ctr_close(&c);
	return rc;
}
