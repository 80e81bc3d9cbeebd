/* Container commands: create, run, start, ps, rm.
 *
 * A container is containers/<id>/{container.json, upper/, work/}: the
 * image's layers (read-only, shared) plus its own writable layer. Running
 * goes through the launcher library (runtime/launch.h), the same engine
 * strata-run uses. The store lock is held only while records change, never
 * while a container runs.
 */
#include "cli.h"

#include "err.h"
#include "fsutil.h"
#include "lowerview.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef STRATA_HAVE_RUNTIME
#include "launch.h"
#endif

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

static int container_save(struct store *s, const char *id, json_t *c)
{
	char p[PATH_MAX];
	_cleanup_free_ char *txt = json_dumps(c, JSON_INDENT(2));
	if (!txt)
		return -ENOMEM;
	snprintf(p, sizeof p, "containers/%s/container.json", id);
	int r = write_file_atomic(s->fd, p, txt, strlen(txt));
	if (r < 0)
		serr(r, "write container record", p, "check free space of the store");
	return r;
}

int container_find(struct store *s, const char *what, char id[65])
{
	_cleanup_close_ int cfd = openat(s->fd, "containers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n, hits = 0;
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

static int find_or_complain(struct store *s, const char *what, char id[65])
{
	int r = container_find(s, what, id);
	if (r < 0)
		susage("no such container: %s (see `strata ps -a`)", what);
	return r;
}

static bool is_running(json_t *c)
{
	const char *st = json_string_value(json_object_get(c, "state"));
	json_int_t pid = json_integer_value(json_object_get(c, "pid"));
	return st && !strcmp(st, "running") && pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static void now_rfc3339(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Options shared by create and run. Launcher options are kept in the
 * record so `start` runs the container the same way again. */
struct copts {
	const char *name;
	bool rm;
	json_t *opts;     /* {"env":[], "bind":[], "net":..., "user":..., "cwd":..., "hostname":...,
			      "cap_add":[], "cap_drop":[]} */
	const char *image;
	char **cmd;
	int ncmd;
};

static int parse_copts(int argc, char **argv, bool allow_rm, struct copts *o)
{
	memset(o, 0, sizeof *o);
	o->opts = json_pack("{s:[],s:[],s:[],s:[],s:[],s:[],s:[]}", "env", "bind", "cap_add", "cap_drop",
			    "rlimit", "uidmap", "gidmap");
	int i = 0;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--")) {
			break;
		} else if (allow_rm && !strcmp(a, "--rm")) {
			o->rm = true;
			continue;
		}
		static const struct { const char *opt, *alt, *key; bool list; } t[] = {
			{ "--name", NULL, "name", false }, { "--env", "-e", "env", true },
			{ "--bind", "-v", "bind", true }, { "--net", NULL, "net", false },
			{ "--user", "-u", "user", false }, { "--workdir", "-w", "cwd", false },
			{ "--hostname", "-h", "hostname", false }, { "--cap-add", NULL, "cap_add", true },
			{ "--cap-drop", NULL, "cap_drop", true }, { "--fs-program", NULL, "fs_program", false },
			{ "--rlimit", NULL, "rlimit", true }, { "--uidmap", NULL, "uidmap", true },
			{ "--gidmap", NULL, "gidmap", true },
		};
		size_t k;
		for (k = 0; k < sizeof t / sizeof *t; k++)
			if (!strcmp(a, t[k].opt) || (t[k].alt && !strcmp(a, t[k].alt)))
				break;
		if (k == sizeof t / sizeof *t) {
			susage("unknown option %s (see strata --help)", a);
			return -EINVAL;
		}
		if (!v) {
			susage("%s needs a value", a);
			return -EINVAL;
		}
		if (!strcmp(t[k].key, "name"))
			o->name = v;
		else if (t[k].list)
			json_array_append_new(json_object_get(o->opts, t[k].key), json_string(v));
		else
			json_object_set_new(o->opts, t[k].key, json_string(v));
		i++;
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (i >= argc) {
		susage("no image given (usage: strata create|run [OPTIONS] IMAGE [-- COMMAND...])");
		return -EINVAL;
	}
	o->image = argv[i++];
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	o->cmd = argv + i;
	o->ncmd = argc - i;
	if (o->name && (!*o->name || strchr(o->name, '/') || strlen(o->name) == 64)) {
		susage("--name %s: a name is a plain word (no '/')", o->name);
		return -EINVAL;
	}
	return 0;
}

static int create(struct store *s, struct copts *o, char id[65])
{
	char digest[DIGEST_BUF], now[64], p[PATH_MAX];
	unsigned char rnd[32];
	json_t *cfg;
	int r;

	if ((r = store_resolve(s, o->image, digest)) < 0)
		return r;
	if (o->name && container_find(s, o->name, id) == 0) {
		susage("a container named %s exists already; pick another --name or `strata rm %s`", o->name, o->name);
		return -EEXIST;
	}
	if ((r = store_load_config(s, digest, &cfg, NULL, NULL)) < 0)
		return r;
	json_t *cc = json_object_get(cfg, "config");
	json_t *cmd = json_array();
	json_t *ep = json_object_get(cc, "Entrypoint");
	size_t i;
	json_t *v;
	json_array_foreach(ep, i, v)
		json_array_append(cmd, v);
	if (o->ncmd) {
		for (int k = 0; k < o->ncmd; k++)
			json_array_append_new(cmd, json_string(o->cmd[k]));
	} else {
		json_array_foreach(json_object_get(cc, "Cmd"), i, v)
			json_array_append(cmd, v);
	}
	json_decref(cfg);
	if (json_array_size(cmd) == 0) {
		json_decref(cmd);
		susage("image %s has no Cmd or Entrypoint: give a command after the image", o->image);
		return -EINVAL;
	}

	if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
		json_decref(cmd);
		return -EIO;
	}
	for (int k = 0; k < 32; k++)
		sprintf(id + 2 * k, "%02x", rnd[k]);
	char name[16];
	snprintf(name, sizeof name, "%.12s", id);
	now_rfc3339(now, sizeof now);
	snprintf(p, sizeof p, "containers/%s", id);
	if (mkdirat(s->fd, p, 0700) < 0) {
		r = -errno;
		serr(r, "create container directory in", s->root, "check the store's permissions");
		json_decref(cmd);
		return r;
	}
	snprintf(p, sizeof p, "containers/%s/upper", id);
	mkdirat(s->fd, p, 0755);
	snprintf(p, sizeof p, "containers/%s/work", id);
	mkdirat(s->fd, p, 0700);
	json_t *c = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:s,s:O}", "id", id, "name", o->name ? o->name : name,
			      "image", digest, "image_ref", o->image, "command", cmd, "created", now,
			      "state", "created", "options", o->opts);
	r = container_save(s, id, c);
	json_decref(c);
	return r;
}

/* Path of a container's upper/work dir. */
static char *cpath(struct store *s, const char *id, const char *leaf)
{
	char *p;
	if (asprintf(&p, "%s/containers/%s/%s", s->root, id, leaf) < 0)
		return NULL;
	return p;
}

static int set_state(const char *root, const char *id, const char *state, int pid, int code)
{
	struct store s;
	json_t *c;
	int r = store_open(&s, root, true);
	if (r < 0)
		return r;
	if ((r = container_load(&s, id, &c)) == 0) {
		json_object_set_new(c, "state", json_string(state));
		json_object_set_new(c, "pid", json_integer(pid));
		if (code >= 0)
			json_object_set_new(c, "exit_code", json_integer(code));
		char now[64];
		now_rfc3339(now, sizeof now);
		json_object_set_new(c, !strcmp(state, "running") ? "started" : "finished", json_string(now));
		r = container_save(&s, id, c);
		json_decref(c);
	}
	store_close(&s);
	return r;
}

#ifdef STRATA_HAVE_RUNTIME
/* Look NAME up in the image's /etc/passwd (field 3 = uid, 4 = gid) or
 * /etc/group (field 3 = gid), as the merged layers show it. */
static int image_id_lookup(struct store *s, json_t *ids, const char *file, const char *name,
			   long *id, long *gid)
{
	struct lowerview lv;
	size_t layer;
	int r = lowerview_open(s, ids, &lv);
	if (r < 0)
		return r;
	r = -ENOENT;
	char *buf = NULL;
	if (lower_lookup(&lv, 0, file, &layer)) {
		int fd = open_beneath(lv.fds[layer], file, O_RDONLY, 0);
		if (fd >= 0) {
			read_fd(fd, 1 << 20, &buf, NULL);
			close(fd);
		}
	}
	for (char *save, *line = buf ? strtok_r(buf, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		char *f[5] = { 0 };
		int k = 0;
		for (char *p = line; k < 5; k++) {
			f[k] = p;
			p = strchr(p, ':');
			if (!p)
				break;
			*p++ = '\0';
		}
		if (f[0] && f[2] && !strcmp(f[0], name)) {
			*id = strtol(f[2], NULL, 10);
			if (gid && f[3])
				*gid = strtol(f[3], NULL, 10);
			r = 0;
			break;
		}
	}
	free(buf);
	lowerview_close(&lv);
	return r;
}

static bool numeric(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

/* USER[:GROUP], names resolved in the image, into "UID:GID". */
static int resolve_user(struct store *s, json_t *ids, const char *spec, char *out, size_t len)
{
	_cleanup_free_ char *u = strdup(spec);
	if (!u)
		return -ENOMEM;
	char *g = strchr(u, ':');
	if (g)
		*g++ = '\0';
	long uid = 0, gid = 0;
	if (numeric(u)) {
		uid = strtol(u, NULL, 10);
		/* a numeric user keeps group 0 unless the image names it */
	} else if (image_id_lookup(s, ids, "etc/passwd", u, &uid, &gid) < 0) {
		susage("user '%s' is not in the image's /etc/passwd; give a numeric UID[:GID]", u);
		return -EINVAL;
	}
	if (g && numeric(g))
		gid = strtol(g, NULL, 10);
	else if (g && image_id_lookup(s, ids, "etc/group", g, &gid, NULL) < 0) {
		susage("group '%s' is not in the image's /etc/group; give a numeric GID", g);
		return -EINVAL;
	}
	snprintf(out, len, "%ld:%ld", uid, gid);
	return 0;
}

static json_t *strings(json_t *opts, const char *key, const char ***out, size_t *n)
{
	json_t *a = json_object_get(opts, key);
	*n = json_array_size(a);
	*out = calloc(*n + 1, sizeof **out);
	for (size_t i = 0; *out && i < *n; i++)
		(*out)[i] = json_string_value(json_array_get(a, i));
	return a;
}
#endif

/* Run a created container in the foreground; returns its exit code. */
static int start(const char *root, const char *id)
{
#ifndef STRATA_HAVE_RUNTIME
	(void)root;
	(void)id;
	susage("this strata was built without the launcher library (runtime/)");
	return -ENOSYS;
#else
	struct store s;
	json_t *c = NULL, *cfg = NULL, *ids;
	char *lower = NULL, *upper = NULL, *work = NULL;
	const char **env = NULL, **binds_s = NULL, **capadd = NULL, **capdrop = NULL;
	char **argv = NULL, **bind_copies = NULL;
	struct strata_bind *binds = NULL;
	struct strata_rlimit *rlimits = NULL;
	struct strata_idmap *uidmap = NULL, *gidmap = NULL;
	size_t nenv, nbinds, nadd, ndrop;
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	if ((r = container_load(&s, id, &c)) < 0)
		goto out;
	if (is_running(c)) {
		susage("container %s is already running", json_string_value(json_object_get(c, "name")));
		r = -EBUSY;
		goto out;
	}
	const char *image = json_string_value(json_object_get(c, "image"));
	if ((r = store_load_config(&s, image, &cfg, NULL, NULL)) < 0 ||
	    (r = config_diff_ids(cfg, image, &ids)) < 0)
		goto out;
	if (strchr(s.root, ':') || strchr(s.root, ',')) {
		serr(0, "start: store path", s.root, "contains ':' or ',', which the overlay lowerdir list cannot carry; use another --store");
		r = -EINVAL;
		goto out;
	}
	/* lowerdir is top first: the config lists layers bottom first. */
	size_t n = json_array_size(ids), len = 1;
	for (size_t i = 0; i < n; i++)
		len += strlen(s.root) + 96;
	lower = calloc(1, len);
	if (!lower) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = n; i-- > 0;) {
		_cleanup_free_ char *p = store_layer_path(&s, json_string_value(json_array_get(ids, i)));
		if (*lower)
			strcat(lower, ":");
		strcat(lower, p);
	}
	if (n == 0) {
		susage("image %s has no layers; nothing to run", image);
		r = -EINVAL;
		goto out;
	}
	upper = cpath(&s, id, "upper");
	work = cpath(&s, id, "work");

	json_t *opts = json_object_get(c, "options"), *cc = json_object_get(cfg, "config");
	struct strata_launch_spec spec = { .lowerdir = lower, .upperdir = upper, .workdir = work };
	/* Image Env first, then --env, so the user's values win. */
	json_t *ienv = json_object_get(cc, "Env");
	json_t *uenv = json_object_get(opts, "env");
	nenv = json_array_size(ienv) + json_array_size(uenv);
	env = calloc(nenv + 1, sizeof *env);
	strings(opts, "cap_add", &capadd, &nadd);
	strings(opts, "cap_drop", &capdrop, &ndrop);
	strings(opts, "bind", &binds_s, &nbinds);
	/* Resource limits and id ranges: parsed the launcher's way. */
	json_t *rl = json_object_get(opts, "rlimit"), *um = json_object_get(opts, "uidmap"),
	       *gm = json_object_get(opts, "gidmap");
	rlimits = calloc(json_array_size(rl) + 1, sizeof *rlimits);
	uidmap = calloc(json_array_size(um) + 1, sizeof *uidmap);
	gidmap = calloc(json_array_size(gm) + 1, sizeof *gidmap);
	if (!rlimits || !uidmap || !gidmap) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t q = 0; q < json_array_size(rl); q++)
		if ((r = strata_parse_rlimit(json_string_value(json_array_get(rl, q)), &rlimits[q])) < 0)
			goto out;
	for (size_t q = 0; q < json_array_size(um); q++)
		if ((r = strata_parse_idmap(json_string_value(json_array_get(um, q)), &uidmap[q])) < 0)
			goto out;
	for (size_t q = 0; q < json_array_size(gm); q++)
		if ((r = strata_parse_idmap(json_string_value(json_array_get(gm, q)), &gidmap[q])) < 0)
			goto out;
	spec.rlimits = rlimits;
	spec.n_rlimits = json_array_size(rl);
	spec.uidmap = uidmap;
	spec.n_uidmap = json_array_size(um);
	spec.gidmap = gidmap;
	spec.n_gidmap = json_array_size(gm);
	binds = calloc(nbinds + 1, sizeof *binds);
	json_t *cmd = json_object_get(c, "command");
	argv = calloc(json_array_size(cmd) + 1, sizeof *argv);
	if (!env || !capadd || !capdrop || !binds_s || !binds || !argv) {
		r = -ENOMEM;
		goto out;
	}
	size_t k = 0, i;
	json_t *v;
	json_array_foreach(ienv, i, v)
		env[k++] = json_string_value(v);
	json_array_foreach(uenv, i, v)
		env[k++] = json_string_value(v);
	spec.env = env;
	spec.n_env = k;
	json_array_foreach(cmd, i, v)
		argv[i] = (char *)json_string_value(v);
	spec.argv = argv;
	bind_copies = calloc(nbinds + 1, sizeof *bind_copies);
	if (!bind_copies) {
		r = -ENOMEM;
		goto out;
	}
	for (i = 0; i < nbinds; i++) {
		/* The parser cuts its argument into pieces: give it copies
		 * that live until the container has run. */
		if (!(bind_copies[i] = strdup(binds_s[i]))) {
			r = -ENOMEM;
			goto out;
		}
		if ((r = strata_parse_bind(bind_copies[i], &binds[i])) < 0)
			goto out;
	}
	spec.binds = binds;
	spec.n_binds = nbinds;
	spec.cap_add = capadd;
	spec.n_cap_add = nadd;
	spec.cap_drop = capdrop;
	spec.n_cap_drop = ndrop;
	const char *cwd = json_string_value(json_object_get(opts, "cwd"));
	if (!cwd || !*cwd)
		cwd = json_string_value(json_object_get(cc, "WorkingDir"));
	spec.cwd = (cwd && *cwd) ? cwd : NULL;
	const char *host = json_string_value(json_object_get(opts, "hostname"));
	spec.hostname = host ? host : json_string_value(json_object_get(c, "name"));
	const char *user = json_string_value(json_object_get(opts, "user"));
	if (!user || !*user)
		user = json_string_value(json_object_get(cc, "User"));
	if (user && *user) {
		char ids_txt[64];
		if ((r = resolve_user(&s, ids, user, ids_txt, sizeof ids_txt)) < 0)
			goto out;
		if (strata_parse_user(ids_txt, &spec.uid, &spec.gid) < 0) {
			r = -EINVAL;
			goto out;
		}
		spec.set_user = true;
	}
	const char *net = json_string_value(json_object_get(opts, "net"));
	spec.net = (net && !strcmp(net, "none")) ? STRATA_NET_NONE : STRATA_NET_HOST;
	if (net && strcmp(net, "none") && strcmp(net, "host")) {
		susage("--net %s: use host or none", net);
		r = -EINVAL;
		goto out;
	}
	spec.fs_program = json_string_value(json_object_get(opts, "fs_program"));
	/* A rootless store keeps image owners and modes in
	 * user.containers.override_stat: have strata-fs present them. With
	 * only the caller's own id mapped, every owner shows as root. */
	if (geteuid() != 0)
		spec.fs_options = spec.n_uidmap ? "xattr_permissions=2" : "xattr_permissions=2,squash_to_root";

	/* Release the store for the container's lifetime. */
	char *rootcopy = strdup(s.root);
	store_close(&s);
	if (!rootcopy) {
		r = -ENOMEM;
		goto out;
	}
	set_state(rootcopy, id, "running", (int)getpid(), -1);
	r = strata_launch(&spec);
	set_state(rootcopy, id, "exited", 0, r >= 0 ? r : 125);
	free(rootcopy);
	if (r < 0)
		r = 125;
out:
	free(lower);
	free(upper);
	free(work);
	free(env);
	free(binds_s);
	free(binds);
	free(rlimits);
	free(uidmap);
	free(gidmap);
	for (size_t b = 0; bind_copies && bind_copies[b]; b++)
		free(bind_copies[b]);
	free(bind_copies);
	free(capadd);
	free(capdrop);
	free(argv);
	json_decref(cfg);
	json_decref(c);
	store_close(&s);
	return r;
#endif
}

int cmd_create(const char *root, int argc, char **argv)
{
	struct copts o;
	struct store s;
	char id[65];
	int r = parse_copts(argc, argv, false, &o);
	if (r < 0) {
		json_decref(o.opts);
		return 2;
	}
	if ((r = store_open(&s, root, true)) == 0) {
		if ((r = create(&s, &o, id)) == 0)
			printf("%s\n", id);
		store_close(&s);
	}
	json_decref(o.opts);
	return r;
}

static int remove_container(struct store *s, const char *id)
{
	char p[128];
	snprintf(p, sizeof p, "containers/%s", id);
	int r = rm_rf_at(s->fd, p);
	if (r < 0)
		serr(r, "rm: remove", p, "remove it by hand");
	return r;
}

int cmd_run(const char *root, int argc, char **argv)
{
	struct copts o;
	struct store s;
	char id[65];
	int r = parse_copts(argc, argv, true, &o);
	if (r < 0) {
		json_decref(o.opts);
		return 2;
	}
	if ((r = store_open(&s, root, true)) == 0) {
		r = create(&s, &o, id);
		store_close(&s);
	}
	json_decref(o.opts);
	if (r < 0)
		return 125;
	r = start(root, id);
	if (o.rm && store_open(&s, root, true) == 0) {
		remove_container(&s, id);
		store_gc(&s);
		store_close(&s);
	}
	return r < 0 ? 125 : r;
}

int cmd_start(const char *root, int argc, char **argv)
{
	struct store s;
	char id[65];
	if (argc != 1) {
		susage("usage: strata start CONTAINER");
		return 2;
	}
	int r = store_open(&s, root, false);
	if (r < 0)
		return 125;
	r = find_or_complain(&s, argv[0], id);
	store_close(&s);
	if (r < 0)
		return 125;
	r = start(root, id);
	return r < 0 ? 125 : r;
}

int cmd_ps(const char *root, int argc, char **argv)
{
	struct store s;
	bool all = false, js = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "-a") || !strcmp(argv[i], "--all"))
			all = true;
		else if (!strcmp(argv[i], "--json"))
			js = true;
		else {
			susage("ps: unknown argument %s (usage: strata ps [-a] [--json])", argv[i]);
			return 2;
		}
	}
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	_cleanup_close_ int cfd = openat(s.fd, "containers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	json_t *out = json_array();
	if (cfd >= 0 && list_sorted(cfd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			json_t *c;
			if (container_load(&s, names[i], &c) < 0)
				continue;
			bool running = is_running(c);
			const char *st = json_string_value(json_object_get(c, "state"));
			if (st && !strcmp(st, "running") && !running)
				json_object_set_new(c, "state", json_string("exited"));
			if (all || running)
				json_array_append(out, c);
			json_decref(c);
		}
		free_names(names, n);
	}
	if (js) {
		print_json(out);
	} else {
		printf("%-14s %-20s %-24s %-22s %-14s %s\n", "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES");
		size_t i;
		json_t *c;
		json_array_foreach(out, i, c) {
			char cmd[256] = "", status[32];
			size_t k;
			json_t *v;
			json_array_foreach(json_object_get(c, "command"), k, v) {
				strncat(cmd, json_string_value(v), sizeof cmd - strlen(cmd) - 2);
				strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
			}
			const char *st = json_string_value(json_object_get(c, "state"));
			if (st && !strcmp(st, "exited"))
				snprintf(status, sizeof status, "exited (%lld)",
					 (long long)json_integer_value(json_object_get(c, "exit_code")));
			else
				snprintf(status, sizeof status, "%s", st ? st : "?");
			printf("%-14.12s %-20.20s %-24.24s %-22.19s %-14s %s\n",
			       json_string_value(json_object_get(c, "id")),
			       json_string_value(json_object_get(c, "image_ref")), cmd,
			       json_string_value(json_object_get(c, "created")), status,
			       json_string_value(json_object_get(c, "name")));
		}
	}
	json_decref(out);
	store_close(&s);
	return 0;
}

int cmd_rm(const char *root, int argc, char **argv)
{
	struct store s;
	if (argc < 1) {
		susage("usage: strata rm CONTAINER...");
		return 2;
	}
	int r = store_open(&s, root, true);
	if (r < 0)
		return r;
	for (int i = 0; i < argc && r == 0; i++) {
		char id[65];
		json_t *c;
		if ((r = find_or_complain(&s, argv[i], id)) < 0)
			break;
		if (container_load(&s, id, &c) == 0) {
			bool running = is_running(c);
			json_decref(c);
			if (running) {
				susage("container %s is running; stop its command first", argv[i]);
				r = -EBUSY;
				break;
			}
		}
		if ((r = remove_container(&s, id)) == 0)
			printf("%s\n", argv[i]);
	}
	if (r == 0)
		r = store_gc(&s);
	store_close(&s);
	return r;
}
