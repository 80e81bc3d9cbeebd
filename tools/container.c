/* container: records, state and the truth about strata's containers (see
 * container.h for the layout of a container's directory). */
#include "container.h"

#include "cli.h"
#include "err.h"
#include "fsutil.h"
#include "lowerview.h"
#include "store.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* ---------------------------------------------------------------- records */

int container_load(struct store *s, const char *id, json_t **c)
{
	char p[PATH_MAX], *buf;
	snprintf(p, sizeof p, "containers/%s/container.json", id);
	int r = read_file_at(s->fd, p, 1 << 20, &buf, NULL);
	if (r < 0)
		return r;
	*c = json_loads(buf, 0, NULL);
	free(buf);
	return *c ? 0 : -EBADMSG;
}

int container_save(struct store *s, const char *id, json_t *c, bool durable)
{
	char p[128], tmp[160];
	_cleanup_free_ char *txt = json_dumps(c, JSON_INDENT(2));
	if (!txt)
		return -ENOMEM;
	snprintf(p, sizeof p, "containers/%s/container.json", id);
	int r;
	if (durable) {
		r = write_file_atomic(s->fd, p, txt, strlen(txt));
	} else {
		/* A --rm container's record goes with the container: after a
		 * crash of the machine nothing of it is wanted, so it is not
		 * worth an fsync on the path of every `run --rm`. The rename
		 * still keeps readers from seeing half a record. */
		snprintf(tmp, sizeof tmp, "%s.tmp.%d", p, (int)getpid());
		_cleanup_close_ int fd = openat(s->fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		size_t len = strlen(txt);
		ssize_t w = fd < 0 ? -1 : write(fd, txt, len);
		r = w == (ssize_t)len ? 0 : w < 0 ? -errno : -EIO;
		if (r == 0 && renameat(s->fd, tmp, s->fd, p) < 0)
			r = -errno;
		if (r < 0)
			unlinkat(s->fd, tmp, 0);
	}
	if (r < 0)
		serr(r, "write container record", p, "check free space of the store");
	return r;
}

static bool full_id(const char *what)
{
	return strlen(what) == 64 && strspn(what, "0123456789abcdef") == 64;
}

int container_find(struct store *s, const char *what, char id[65])
{
	_cleanup_close_ int cfd = openat(s->fd, "containers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names, p[128];
	size_t n, hits = 0;
	/* A full id names no other container (names of 64 characters are
	 * refused): no need to read every record. */
	if (cfd >= 0 && full_id(what)) {
		snprintf(p, sizeof p, "%s/container.json", what);
		if (faccessat(cfd, p, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			snprintf(id, 65, "%s", what);
			return 0;
		}
	}
	if (cfd < 0 || list_sorted(cfd, &names, &n) < 0)
		return -ENOENT;
	size_t wl = strlen(what);
	for (size_t i = 0; i < n; i++) {
		json_t *c;
		if (strlen(names[i]) != 64 || container_load(s, names[i], &c) < 0)
			continue;
		const char *name = json_string_value(json_object_get(c, "name"));
		if (name && !strcmp(name, what)) {
			snprintf(id, 65, "%s", names[i]);
			json_decref(c);
			hits = 1;
			break;
		}
		if (wl >= 4 && !strncmp(names[i], what, wl)) {
			snprintf(id, 65, "%s", names[i]);
			hits++;
		}
		json_decref(c);
	}
	free_names(names, n);
	return hits == 1 ? 0 : -ENOENT;
}

int container_remove(struct store *s, const char *id)
{
	char p[128];
	json_t *rec = NULL, *tags = NULL;
	container_load(s, id, &rec);
	const char *image = json_string_value(json_object_get(rec, "image"));
	bool tagged = false;
	if (image && store_tags(s, &tags) == 0) {
		const char *k;
		json_t *v;
		json_object_foreach(tags, k, v)
			tagged = tagged || (json_string_value(v) && !strcmp(json_string_value(v), image));
	}
	json_decref(tags);
	json_decref(rec);
	snprintf(p, sizeof p, "containers/%s", id);
	int r = rm_rf_at(s->fd, p);
	if (r < 0) {
		serr(r, "rm: remove", p, "remove it by hand");
		return r;
	}
	/* Only an untagged image can have been kept by this container alone:
	 * a tagged one leaves nothing for the collector (and run --rm stays
	 * quick). */
	return tagged ? 0 : store_gc(s);
}

/* ---------------------------------------------------------------- processes */

unsigned long long proc_start_time(pid_t pid)
{
	char p[64], buf[1024];
	if (pid <= 0)
		return 0;
	snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: count fields
	 * from the last ')', which ends it; field 3 follows. */
	char *q = strrchr(buf, ')');
	if (!q)
		return 0;
	q++;
	for (int field = 3; field <= 22; field++) {
		while (*q == ' ')
			q++;
		if (field == 22)
			return strtoull(q, NULL, 10);
		q = strchr(q, ' ');
		if (!q)
			return 0;
	}
	return 0;
}

bool proc_alive(const struct proc_ref *p)
{
	if (p->pid <= 0)
		return false;
	unsigned long long st = proc_start_time(p->pid);
	if (!st)
		return false;
	if (p->start && st != p->start)
		return false;
	/* A zombie has not ended what we care about only if it is ours to
	 * reap; for others it is gone. */
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)p->pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
	if (n > 0) {
		buf[n] = '\0';
		char *q = strrchr(buf, ')');
		if (q && q[1] == ' ' && (q[2] == 'Z' || q[2] == 'X'))
			return false;
	}
	return true;
}

int proc_kill(const struct proc_ref *p, int sig)
{
	if (!proc_alive(p))
		return -ESRCH;
	return kill(p->pid, sig) < 0 ? -errno : 0;
}

struct proc_ref proc_ref_from(json_t *st, const char *pidkey, const char *startkey)
{
	struct proc_ref p = {
		.pid = (pid_t)json_integer_value(json_object_get(st, pidkey)),
		.start = (unsigned long long)json_integer_value(json_object_get(st, startkey)),
	};
	return p;
}

/* ---------------------------------------------------------------- one container */

const char *ctr_status_name(enum ctr_status st)
{
	static const char *const n[] = { "created", "running", "paused", "restarting", "exited", "dead" };
	return n[st];
}

const char *ctr_name(const struct ctr *c)
{
	const char *n = json_string_value(json_object_get(c->rec, "name"));
	return n ? n : c->id;
}

int ctr_reload_state(struct ctr *c)
{
	char *buf;
	json_decref(c->st);
	c->st = NULL;
	if (faccessat(c->dirfd, "container.json", F_OK, 0) < 0)
		return -ENOENT;
	if (read_file_at(c->dirfd, "state.json", 1 << 20, &buf, NULL) == 0) {
		c->st = json_loads(buf, 0, NULL);
		free(buf);
	}
	if (!json_is_object(c->st)) {
		json_decref(c->st);
		c->st = json_object();
	}
	return 0;
}

int ctr_open(struct store *s, const char *what, struct ctr *c)
{
	char p[PATH_MAX];
	memset(c, 0, sizeof *c);
	c->dirfd = c->lockfd = -1;
	int r = container_find(s, what, c->id);
	if (r < 0) {
		susage("no such container: %s (see `strata ps -a`)", what);
		return r;
	}
	if (!(c->root = strdup(s->root)))
		return -ENOMEM;
	snprintf(p, sizeof p, "containers/%s", c->id);
	c->dirfd = openat(s->fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0 || (r = container_load(s, c->id, &c->rec)) < 0 || (r = ctr_reload_state(c)) < 0) {
		susage("no such container: %s (it was just removed)", what);
		return -ENOENT;
	}
	return 0;
}

int ctr_open_record(struct store *s, const char *id, json_t *rec, struct ctr *c)
{
	char p[PATH_MAX];
	memset(c, 0, sizeof *c);
	c->lockfd = -1;
	snprintf(c->id, sizeof c->id, "%s", id);
	snprintf(p, sizeof p, "containers/%s", id);
	if (!(c->root = strdup(s->root)))
		return -ENOMEM;
	c->dirfd = openat(s->fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0)
		return -errno;
	c->rec = json_incref(rec);
	c->st = json_object();
	return 0;
}

void ctr_close(struct ctr *c)
{
	ctr_unlock(c);
	cleanup_closep(&c->dirfd);
	c->dirfd = -1;
	json_decref(c->rec);
	json_decref(c->st);
	c->rec = c->st = NULL;
	free(c->root);
	c->root = NULL;
}

int ctr_lock(struct ctr *c)
{
	if (c->lockfd >= 0)
		return 0;
	/* The directory itself is locked: no lock file to create (one
	 * journalled create less for every run --rm), and a removed
	 * container cannot be opened any more. */
	c->lockfd = openat(c->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->lockfd < 0) {
		int r = -errno;
		if (r == -ENOENT)
			susage("no such container: %s (it was just removed)", ctr_name(c));
		else
			serr(r, "lock container", ctr_name(c), "check the store's permissions");
		return r;
	}
	while (flock(c->lockfd, LOCK_EX) < 0)
		if (errno != EINTR)
			return -errno;
	/* Whoever held the lock before us may have removed the container. */
	if (ctr_reload_state(c) < 0) {
		susage("no such container: %s (it was just removed)", ctr_name(c));
		ctr_unlock(c);
		return -ENOENT;
	}
	return 0;
}

void ctr_unlock(struct ctr *c)
{
	if (c->lockfd >= 0)
		close(c->lockfd);
	c->lockfd = -1;
}

int ctr_save_state(int dirfd, json_t *st)
{
	return ctr_save_state_keep(dirfd, st, NULL);
}

int ctr_save_state_keep(int dirfd, json_t *st, unsigned *kept)
{
	char tmp[64];
	_cleanup_free_ char *txt = json_dumps(st, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!txt)
		return -ENOMEM;
	/* No fsync: the state describes processes, which a crash of the
	 * machine ends anyway; readers only need the rename's atomicity. */
	bool keep = kept && *kept < 8;
	if (keep)
		snprintf(tmp, sizeof tmp, "state.json.%d.%u", (int)getpid(), *kept);
	else
		snprintf(tmp, sizeof tmp, "state.json.%d", (int)getpid());
	_cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	size_t len = strlen(txt);
	if (write(fd, txt, len) != (ssize_t)len) {
		int r = -errno;
		unlinkat(dirfd, tmp, 0);
		return r ? r : -EIO;
	}
	/* A rename over the old state frees its block, and on a store
	 * mounted with discard the kernel waits for the device's discard
	 * there (0.3-1 ms each, twice on every run's path). A container that
	 * is removed when it ends swaps the files instead: the old state
	 * stays under the temporary name until the directory goes. */
	if (keep && renameat2(dirfd, tmp, dirfd, "state.json", RENAME_EXCHANGE) == 0) {
		(*kept)++;
		return 0;
	}
	if (renameat(dirfd, tmp, dirfd, "state.json") < 0) {
		int r = -errno;
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	return 0;
}

/* ---------------------------------------------------------------- env files */

int env_file_read(const char *path, json_t *env)
{
	_cleanup_free_ char *buf = NULL;
	size_t len;
	int r = read_file_at(AT_FDCWD, path, 1 << 20, &buf, &len);
	if (r < 0) {
		serr(r, "read env file", path, r == -EFBIG ? "an env file holds at most 1 MiB" : NULL);
		return r;
	}
	if (memchr(buf, '\0', len)) {
		susage("--env-file %s: not a text file (it holds a NUL byte); write one KEY=VALUE a line", path);
		return -EINVAL;
	}
	unsigned lineno = 0;
	for (char *save, *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		/* as docker: leading blanks go, the rest of the line is the
		 * value as written (no quotes removed), CRLF files work */
		while (*line == ' ' || *line == '\t')
			line++;
		size_t n = strlen(line);
		if (n && line[n - 1] == '\r')
			line[--n] = '\0';
		if (!*line || *line == '#')
			continue;
		char *eq = strchr(line, '=');
		size_t klen = eq ? (size_t)(eq - line) : n;
		if (klen == 0) {
			susage("--env-file %s: line %u has no variable name before '=' (write KEY=VALUE)", path, lineno);
			return -EINVAL;
		}
		if (strcspn(line, " \t") < klen) {
			susage("--env-file %s: line %u: variable name '%.*s' holds blanks (write KEY=VALUE)", path, lineno,
			       (int)klen, line);
			return -EINVAL;
		}
		if (eq) {
			json_array_append_new(env, json_string(line));
			continue;
		}
		/* a bare KEY: the caller's value, or nothing when it has none */
		const char *val = getenv(line);
		if (val)
			json_array_append_new(env, json_pack("s++", line, "=", val));
	}
	return 0;
}

/* ---------------------------------------------------------------- cgroups */

size_t ctr_cgroup_dirs(const char *cgroup, char dirs[][4096], size_t max)
{
	static const char base[] = "/sys/fs/cgroup/";
	struct statfs sf;
	size_t n = 0;
	if (!cgroup || !*cgroup || !max)
		return 0;
	if (strncmp(cgroup, base, sizeof base - 1) ||
	    (statfs("/sys/fs/cgroup", &sf) == 0 && (unsigned long)sf.f_type == CGROUP2_SUPER_MAGIC) ||
	    !strncmp(cgroup + sizeof base - 1, "unified/", 8)) {
		snprintf(dirs[n++], 4096, "%s", cgroup);
		return n;
	}
	/* v1: the same relative path in every controller's hierarchy. */
	const char *rel = strchr(cgroup + sizeof base - 1, '/');
	if (!rel)
		return 0;
	DIR *d = opendir("/sys/fs/cgroup");
	if (!d)
		return 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < max) {
		struct stat st;
		char p[4096];
		if (e->d_name[0] == '.' || e->d_type == DT_LNK || !strcmp(e->d_name, "unified"))
			continue;
		snprintf(p, sizeof p, "/sys/fs/cgroup/%s%s", e->d_name, rel);
		if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
			snprintf(dirs[n++], 4096, "%s", p);
	}
	closedir(d);
	return n;
}

/* Paused: pause writes the freezer directory it used into the file
 * "freezer" (a v1 freezer cgroup it made, or the v2 cgroup itself). */
int ctr_freezer(const struct ctr *c, char *dir, size_t len, bool *v2)
{
	_cleanup_free_ char *buf = NULL;
	int r = read_file_at(c->dirfd, "freezer", 4096, &buf, NULL);
	if (r < 0)
		return r;
	snprintf(dir, len, "%s", buf);
	char p[4200];
	snprintf(p, sizeof p, "%s/cgroup.freeze", dir);
	*v2 = access(p, F_OK) == 0;
	return 0;
}

static bool frozen(const struct ctr *c)
{
	char dir[4096], p[4200], buf[64];
	bool v2;
	if (ctr_freezer(c, dir, sizeof dir, &v2) < 0)
		return false;
	snprintf(p, sizeof p, "%s/%s", dir, v2 ? "cgroup.freeze" : "freezer.state");
	if (read_small(p, buf, sizeof buf) <= 0)
		return false;
	return v2 ? buf[0] == '1' : strncmp(buf, "THAWED", 6) != 0;
}

static void thaw(const struct ctr *c, bool remove)
{
	char dir[4096], p[4200];
	bool v2;
	if (ctr_freezer(c, dir, sizeof dir, &v2) < 0)
		return;
	snprintf(p, sizeof p, "%s/%s", dir, v2 ? "cgroup.freeze" : "freezer.state");
	_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd >= 0 && write(fd, v2 ? "0" : "THAWED", v2 ? 1 : 6) < 0) {
		/* gone with its processes */
	}
	if (remove && !v2)
		rmdir(dir);
	if (remove)
		unlinkat(c->dirfd, "freezer", 0);
}

/* ---------------------------------------------------------------- the truth */

enum ctr_status ctr_status(const struct ctr *c)
{
	const char *s = json_string_value(json_object_get(c->st, "Status"));
	if (!s || !strcmp(s, "created"))
		return CTR_CREATED;
	if (!strcmp(s, "exited"))
		return CTR_EXITED;
	if (!strcmp(s, "dead"))
		return CTR_DEAD;
	struct proc_ref mon = proc_ref_from(c->st, "MonitorPid", "MonitorStart");
	if (!proc_alive(&mon))
		return CTR_DEAD;
	if (!strcmp(s, "restarting"))
		return CTR_RESTARTING;
	if (!strcmp(s, "running"))
		return frozen(c) ? CTR_PAUSED : CTR_RUNNING;
	/* "starting": the monitor has not seen the command run yet. */
	return CTR_RUNNING;
}

void ctr_status_text(const struct ctr *c, char *buf, size_t len)
{
	enum ctr_status st = ctr_status(c);
	int code = (int)json_integer_value(json_object_get(c->st, "ExitCode"));
	if (st == CTR_EXITED && code > 128 && code < 128 + 65 && signal_name(code - 128))
		snprintf(buf, len, "killed (%s)", signal_name(code - 128));
	else if (st == CTR_EXITED)
		snprintf(buf, len, "exited (%d)", code);
	else if (st == CTR_RESTARTING)
		snprintf(buf, len, "restarting (%d)", code);
	else if (st == CTR_DEAD) {
		/* why: recorded by whoever saw it, else the state says running
		 * while its monitor is gone */
		const char *why = json_string_value(json_object_get(c->st, "DeadReason"));
		snprintf(buf, len, "dead (%s)", why ? why : "its monitor is gone");
	} else
		snprintf(buf, len, "%s", ctr_status_name(st));
}

/* docker inspect's HostConfig and NetworkSettings.Ports, from the
 * options in the record (checked when the container was made). */
static void describe_docker(json_t *o)
{
	json_t *opts = json_object_get(o, "options");
	json_t *hc = json_object(), *ports = json_object();
	const char *v;
#ifdef STRATA_HAVE_RUNTIME
	struct strata_error e;
	long long n, quota, period;
	if ((v = json_string_value(json_object_get(opts, "memory"))) && strata_parse_size(v, &n, &e) == 0)
		json_object_set_new(hc, "Memory", json_integer(n));
	if ((v = json_string_value(json_object_get(opts, "memory_swap"))) && strata_parse_size(v, &n, &e) == 0)
		json_object_set_new(hc, "MemorySwap", json_integer(n));
	if ((v = json_string_value(json_object_get(opts, "cpus"))) && strata_parse_cpus(v, &quota, &period, &e) == 0 &&
	    period > 0)
		json_object_set_new(hc, "NanoCpus", json_integer(quota * 1000000000LL / period));
	json_t *a = json_object_get(opts, "publish");
	for (size_t i = 0; i < json_array_size(a); i++) {
		struct strata_port pt;
		char key[32], hp[16];
		if (strata_parse_port(json_string_value(json_array_get(a, i)), &pt, &e) < 0)
			continue;
		snprintf(key, sizeof key, "%u/%s", pt.container_port, pt.udp ? "udp" : "tcp");
		snprintf(hp, sizeof hp, "%u", pt.host_port);
		json_t *list = json_object_get(ports, key);
		if (!list)
			json_object_set_new(ports, key, list = json_array());
		json_array_append_new(list, json_pack("{s:s,s:s}", "HostIp", pt.host_ip[0] ? pt.host_ip : "0.0.0.0",
						      "HostPort", hp));
	}
#endif
	if ((v = json_string_value(json_object_get(opts, "cpu_shares"))))
		json_object_set_new(hc, "CpuShares", json_integer(strtoll(v, NULL, 10)));
	if ((v = json_string_value(json_object_get(opts, "pids_limit"))))
		json_object_set_new(hc, "PidsLimit", json_integer(strtoll(v, NULL, 10)));
	enum restart_mode mode = RESTART_NO;
	int max = 0;
	static const char *const names[] = { "no", "on-failure", "always", "unless-stopped" };
	v = json_string_value(json_object_get(opts, "restart"));
	if (v && (strncmp(v, "on-failure", 10) == 0 || !strcmp(v, "always") || !strcmp(v, "unless-stopped"))) {
		mode = !strcmp(v, "always") ? RESTART_ALWAYS : !strcmp(v, "unless-stopped") ? RESTART_UNLESS_STOPPED
											: RESTART_ON_FAILURE;
		max = mode == RESTART_ON_FAILURE && v[10] == ':' ? atoi(v + 11) : 0;
	}
	json_object_set_new(hc, "RestartPolicy", json_pack("{s:s,s:i}", "Name", names[mode], "MaximumRetryCount", max));
	json_object_set_new(hc, "AutoRemove", json_boolean(json_is_true(json_object_get(opts, "rm"))));
	v = json_string_value(json_object_get(opts, "net"));
	json_object_set_new(hc, "NetworkMode", json_string(v ? v : json_array_size(json_object_get(opts, "publish")) ? "private" : "host"));
	json_object_set(hc, "PortBindings", ports);
	json_object_set_new(o, "HostConfig", hc);
	json_object_set_new(o, "NetworkSettings", json_pack("{s:o}", "Ports", ports));
	json_t *exposed = json_object_get(o, "exposed_ports");
	json_t *image = json_object_get(o, "image_ref");
	json_object_set_new(o, "Config", json_pack("{s:o,s:o}", "Image", image ? json_incref(image) : json_null(),
						  "ExposedPorts", exposed ? json_incref(exposed) : json_object()));
	json_object_set(o, "Name", json_object_get(o, "name"));
	json_object_set(o, "Id", json_object_get(o, "id"));
}

int container_describe(struct store *s, const char *id, json_t **out)
{
	struct ctr c = { .dirfd = -1, .lockfd = -1 };
	char p[PATH_MAX], status[64];
	int r;
	snprintf(c.id, sizeof c.id, "%s", id);
	snprintf(p, sizeof p, "containers/%s", id);
	if ((c.dirfd = openat(s->fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	if ((r = container_load(s, id, &c.rec)) < 0 || (r = ctr_reload_state(&c)) < 0) {
		ctr_close(&c);
		return r;
	}
	enum ctr_status st = ctr_status(&c);
	ctr_status_text(&c, status, sizeof status);
	json_t *o = c.rec;
	json_t *State = json_pack("{s:s,s:b,s:b,s:b,s:b}", "Status", ctr_status_name(st),
				  "Running", st == CTR_RUNNING || st == CTR_PAUSED, "Paused", st == CTR_PAUSED,
				  "Restarting", st == CTR_RESTARTING, "Dead", st == CTR_DEAD);
	static const char *const copy[] = { "Pid", "ExitCode", "Signal", "StartedAt", "FinishedAt",
					    "RestartCount", "OOMKilled", "MonitorPid", "Cgroup", "Error", "DeadReason" };
	for (size_t i = 0; i < sizeof copy / sizeof *copy; i++) {
		json_t *v = json_object_get(c.st, copy[i]);
		if (v)
			json_object_set(State, copy[i], v);
	}
	if (st != CTR_RUNNING && st != CTR_PAUSED)
		json_object_set_new(State, "Pid", json_integer(0));
	if (!json_object_get(State, "OOMKilled"))
		json_object_set_new(State, "OOMKilled", json_false());
	json_object_set_new(o, "State", State);
	/* The lower-case keys ps --json has always had. */
	json_object_set_new(o, "state", json_string(ctr_status_name(st)));
	json_object_set_new(o, "status", json_string(status));
	if (json_object_get(c.st, "ExitCode"))
		json_object_set(o, "exit_code", json_object_get(c.st, "ExitCode"));
	snprintf(p, sizeof p, "%s/containers/%s/upper", s->root, id);
	json_object_set_new(o, "upper_dir", json_string(p));
	snprintf(p, sizeof p, "%s/containers/%s/ctr.log", s->root, id);
	json_object_set_new(o, "log_path", json_string(p));
	json_object_set_new(o, "LogPath", json_string(p));
	describe_docker(o);
	*out = json_incref(o);
	ctr_close(&c);
	return 0;
}

/* ---------------------------------------------------------------- leftovers */

static void wait_gone(const struct proc_ref *p, int ms)
{
	const struct timespec tick = { 0, 10 * 1000 * 1000 };
	for (int i = 0; i < ms / 10 && proc_alive(p); i++)
		nanosleep(&tick, NULL);
}

static void cgroup_kill_and_remove(const char *cgroup)
{
	char dirs[16][4096], p[4200], buf[4096];
	size_t n = ctr_cgroup_dirs(cgroup, dirs, 16);

	for (int round = 0; round < 50; round++) {
		bool any = false;
		for (size_t i = 0; i < n; i++) {
			snprintf(p, sizeof p, "%s/cgroup.procs", dirs[i]);
			if (read_small(p, buf, sizeof buf) <= 0)
				continue;
			for (char *q = buf; *q;) {
				long pid = strtol(q, &q, 10);
				if (pid > 0) {
					kill((pid_t)pid, SIGKILL);
					any = true;
				}
				while (*q == '\n')
					q++;
			}
		}
		if (!any)
			break;
		const struct timespec tick = { 0, 20 * 1000 * 1000 };
		nanosleep(&tick, NULL);
	}
	for (size_t i = 0; i < n; i++)
		rmdir(dirs[i]);
}

void ctr_reap_leftovers(struct ctr *c)
{
	const char *s = json_string_value(json_object_get(c->st, "Status"));
	bool ended = !s || !strcmp(s, "exited") || !strcmp(s, "created");
	/* Frozen processes cannot act on SIGKILL: thaw first. */
	thaw(c, false);
	static const char *const who[][2] = {
		{ "MonitorPid", "MonitorStart" }, { "Pid", "PidStart" }, { "DaemonPid", "DaemonStart" },
	};
	/* An ended container's monitor may still be finishing its log. */
	for (size_t i = ended ? 1 : 0; i < sizeof who / sizeof *who; i++) {
		struct proc_ref p = proc_ref_from(c->st, who[i][0], who[i][1]);
		/* A pid recorded without its start time is never signalled. */
		if (p.start && proc_kill(&p, SIGKILL) == 0)
			wait_gone(&p, 5000);
	}
	const char *cg = json_string_value(json_object_get(c->st, "Cgroup"));
	if (cg)
		cgroup_kill_and_remove(cg);
	thaw(c, true);
	if (s && strcmp(s, "exited") && strcmp(s, "created") && strcmp(s, "dead")) {
		char now[64];
		now_rfc3339(now, sizeof now, true);
		json_object_set_new(c->st, "Status", json_string("dead"));
		json_object_set_new(c->st, "FinishedAt", json_string(now));
		json_object_set_new(c->st, "Error", json_string("its monitor ended without recording the container's end"));
		json_object_set_new(c->st, "DeadReason", json_string("its monitor is gone"));
		ctr_save_state(c->dirfd, c->st);
	}
}

int ctr_pids(const struct ctr *c, pid_t **pids, size_t *n)
{
	struct proc_ref init = proc_ref_from(c->st, "Pid", "PidStart");
	char p[64];
	struct stat ns, other;
	*pids = NULL;
	*n = 0;
	if (!proc_alive(&init))
		return -ESRCH;
	snprintf(p, sizeof p, "/proc/%d/ns/pid", (int)init.pid);
	if (stat(p, &ns) < 0)
		return -errno;
	DIR *d = opendir("/proc");
	if (!d)
		return -errno;
	size_t cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 0)
			continue;
		snprintf(p, sizeof p, "/proc/%ld/ns/pid", pid);
		if (stat(p, &other) < 0 || other.st_ino != ns.st_ino || other.st_dev != ns.st_dev)
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 16;
			pid_t *np = realloc(*pids, cap * sizeof *np);
			if (!np)
				break;
			*pids = np;
		}
		(*pids)[(*n)++] = (pid_t)pid;
	}
	closedir(d);
	return 0;
}

/* ---------------------------------------------------------------- small things */

/* main.c's table answers; programs linking the library without it (the
 * unit tests) get no help text. */
__attribute__((weak)) bool cli_help(const char *cmd, FILE *f)
{
	(void)cmd, (void)f;
	return false;
}

static const struct {
	int sig;
	const char *name;
} signals[] = {
	{ SIGHUP, "HUP" }, { SIGINT, "INT" }, { SIGQUIT, "QUIT" }, { SIGILL, "ILL" }, { SIGTRAP, "TRAP" },
	{ SIGABRT, "ABRT" }, { SIGBUS, "BUS" }, { SIGFPE, "FPE" }, { SIGKILL, "KILL" }, { SIGUSR1, "USR1" },
	{ SIGSEGV, "SEGV" }, { SIGUSR2, "USR2" }, { SIGPIPE, "PIPE" }, { SIGALRM, "ALRM" }, { SIGTERM, "TERM" },
	{ SIGSTKFLT, "STKFLT" }, { SIGCHLD, "CHLD" }, { SIGCONT, "CONT" }, { SIGSTOP, "STOP" }, { SIGTSTP, "TSTP" },
	{ SIGTTIN, "TTIN" }, { SIGTTOU, "TTOU" }, { SIGURG, "URG" }, { SIGXCPU, "XCPU" }, { SIGXFSZ, "XFSZ" },
	{ SIGVTALRM, "VTALRM" }, { SIGPROF, "PROF" }, { SIGWINCH, "WINCH" }, { SIGIO, "IO" }, { SIGPWR, "PWR" },
	{ SIGSYS, "SYS" },
};

int signal_parse(const char *name)
{
	char *end;
	if (!name || !*name)
		return -EINVAL;
	long n = strtol(name, &end, 10);
	if (!*end)
		return n > 0 && n < NSIG ? (int)n : -EINVAL;
	if (!strncasecmp(name, "SIG", 3))
		name += 3;
	for (size_t i = 0; i < sizeof signals / sizeof *signals; i++)
		if (!strcasecmp(name, signals[i].name))
			return signals[i].sig;
	return -EINVAL;
}

const char *signal_name(int sig)
{
	static __thread char buf[16];
	for (size_t i = 0; i < sizeof signals / sizeof *signals; i++)
		if (signals[i].sig == sig) {
			snprintf(buf, sizeof buf, "SIG%s", signals[i].name);
			return buf;
		}
	return NULL;
}

void now_rfc3339(char *buf, size_t len, bool nanos)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	if (nanos)
		snprintf(buf + n, len - n, ".%09ldZ", ts.tv_nsec);
	else
		snprintf(buf + n, len - n, "Z");
}

int restart_parse(const char *text, enum restart_mode *mode, int *max)
{
	*max = 0;
	if (!text || !*text || !strcmp(text, "no")) {
		*mode = RESTART_NO;
		return 0;
	}
	if (!strcmp(text, "always")) {
		*mode = RESTART_ALWAYS;
		return 0;
	}
	if (!strcmp(text, "unless-stopped")) {
		*mode = RESTART_UNLESS_STOPPED;
		return 0;
	}
	if (!strncmp(text, "on-failure", 10) && (!text[10] || text[10] == ':')) {
		*mode = RESTART_ON_FAILURE;
		if (text[10]) {
			char *end;
			long n = strtol(text + 11, &end, 10);
			if (*end || n < 0 || n > 1000000 || end == text + 11)
				goto bad;
			*max = (int)n;
		}
		return 0;
	}
bad:
	susage("--restart %s: use no, on-failure[:MAX-RETRIES], always or unless-stopped", text);
	return -EINVAL;
}
