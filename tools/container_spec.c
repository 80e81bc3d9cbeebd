/* container_spec: a container's record and its image's config, made into
 * the launcher's spec; and the check of create/run options, done the way
 * start will use them so a bad value fails at create. */
#include "container.h"

#include "err.h"
#include "fsutil.h"
#include "lowerview.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static bool numeric(const char *s)
{
	return *s && strspn(s, "0123456789") == strlen(s);
}

static const char *opt_str(json_t *opts, const char *key)
{
	const char *v = json_string_value(json_object_get(opts, key));
	return v && *v ? v : NULL;
}

/* A rootless container with subordinate ranges needs the caller's own
 * ids mapped: the store's layers belong to them, and strata-fs runs in
 * the container's user namespace, where an unmapped owner reads as
 * nobody and every lower file answers EACCES. */
static int check_caller_mapped(json_t *opts)
{
	static const char *const keys[] = { "uidmap", "gidmap" };
	if (geteuid() == 0)
		return 0;
	for (int k = 0; k < 2; k++) {
		json_t *a = json_object_get(opts, keys[k]);
		unsigned long self = k ? (unsigned long)getegid() : (unsigned long)geteuid();
		bool mapped = false;
		if (json_array_size(a) == 0)
			continue;
		for (size_t i = 0; i < json_array_size(a); i++) {
			unsigned long in, out, count;
			if (sscanf(json_string_value(json_array_get(a, i)), "%lu:%lu:%lu", &in, &out, &count) == 3 &&
			    self >= out && self - out < count)
				mapped = true;
		}
		if (!mapped) {
			susage("--%s: your own %s %lu is not in the map, so the container could not read the "
			       "store's layers (they belong to you); map it first, e.g. --%s 0:%lu:1 --%s 1:SUB%s:65536 "
			       "with SUB%s the start of your range in /etc/sub%s",
			       keys[k], k ? "gid" : "uid", self, keys[k], self, keys[k], k ? "GID" : "UID",
			       k ? "GID" : "UID", k ? "gid" : "uid");
			return -EINVAL;
		}
	}
	return 0;
}

#ifdef STRATA_HAVE_RUNTIME
static int parse_limits(json_t *opts, struct strata_limits *l)
{
	const char *v;
	int r;
	if ((v = opt_str(opts, "memory")) && (r = STRATA_PARSE_REPORTED(strata_parse_size, v, &l->memory)) < 0)
		return r;
	if ((v = opt_str(opts, "memory_swap")) && (r = STRATA_PARSE_REPORTED(strata_parse_size, v, &l->memory_swap)) < 0)
		return r;
	if ((v = opt_str(opts, "cpus")) && (r = STRATA_PARSE_REPORTED(strata_parse_cpus, v, &l->cpu_quota_us, &l->cpu_period_us)) < 0)
		return r;
	if ((v = opt_str(opts, "cpu_shares"))) {
		char *end;
		unsigned long n = strtoul(v, &end, 10);
		if (*end || !numeric(v) || n < 2 || n > 262144) {
			susage("--cpu-shares %s: give a number from 2 to 262144 (1024 is the default weight)", v);
			return -EINVAL;
		}
		l->cpu_shares = n;
	}
	if ((v = opt_str(opts, "pids_limit"))) {
		char *end;
		long long n = strtoll(v, &end, 10);
		if (*end || end == v || (n < 1 && n != -1)) {
			susage("--pids-limit %s: give a number of processes, or -1 for no limit", v);
			return -EINVAL;
		}
		l->pids = n;
	}
	return 0;
}

static int parse_net(json_t *opts, enum strata_net *net)
{
	const char *v = opt_str(opts, "net");
	if (!v)
		*net = json_array_size(json_object_get(opts, "publish")) ? STRATA_NET_PRIVATE : STRATA_NET_HOST;
	else if (!strcmp(v, "host"))
		*net = STRATA_NET_HOST;
	else if (!strcmp(v, "none"))
		*net = STRATA_NET_NONE;
	else if (!strcmp(v, "private") || !strcmp(v, "pasta") || !strcmp(v, "slirp4netns"))
		*net = STRATA_NET_PRIVATE;
	else {
		susage("--network %s: use host, none or private", v);
		return -EINVAL;
	}
	if (*net != STRATA_NET_PRIVATE && json_array_size(json_object_get(opts, "publish"))) {
		susage("--publish needs --network private (the default when ports are published), not %s", v);
		return -EINVAL;
	}
	return 0;
}
#endif

static int parse_log_opts(json_t *opts, long long *max)
{
	json_t *a = json_object_get(opts, "log_opt");
	*max = CTR_LOG_MAX_DEFAULT;
	for (size_t i = 0; i < json_array_size(a); i++) {
		const char *v = json_string_value(json_array_get(a, i));
		if (strncmp(v, "max-size=", 9)) {
			susage("--log-opt %s: strata knows max-size=SIZE (e.g. 10m)", v);
			return -EINVAL;
		}
		char *end;
		double n = strtod(v + 9, &end);
		long long mul = 1;
		switch (*end | 0x20) {
		case 'k': mul = 1LL << 10; end++; break;
		case 'm': mul = 1LL << 20; end++; break;
		case 'g': mul = 1LL << 30; end++; break;
		case 'b': end++; break;
		default: break;
		}
		if ((*end && strcasecmp(end, "b")) || n < 1 || end == v + 9) {
			susage("--log-opt %s: give a size such as 100k, 10m or 1g", v);
			return -EINVAL;
		}
		*max = (long long)(n * (double)mul);
	}
	return 0;
}

/* --storage-opt sharecache=direct|off: how the container's strata-fs caches
 * the image's files (*direct: from the layer's cache, shared with every
 * container of the image; off: in the container's own mount). */
static int parse_storage_opts(json_t *opts, bool *direct)
{
	json_t *a = json_object_get(opts, "storage_opt");
	*direct = true;
	for (size_t i = 0; i < json_array_size(a); i++) {
		const char *v = json_string_value(json_array_get(a, i));
		if (!strcmp(v, "sharecache=direct") || !strcmp(v, "sharecache=off")) {
			*direct = !strcmp(v, "sharecache=direct");
			continue;
		}
		susage("--storage-opt %s: strata knows sharecache=direct (the default: the image's files are "
		       "read from one page cache shared by its containers) and sharecache=off (each container "
		       "caches what it reads in its own mount)", v);
		return -EINVAL;
	}
	return 0;
}

int ctr_check_options(json_t *opts)
{
	int r;
	long long max;
	bool direct;
	if ((r = check_caller_mapped(opts)) < 0 || (r = parse_log_opts(opts, &max)) < 0 ||
	    (r = parse_storage_opts(opts, &direct)) < 0)
		return r;
	const char *rs = opt_str(opts, "restart");
	enum restart_mode mode;
	int n;
	if ((r = restart_parse(rs, &mode, &n)) < 0)
		return r;
	if (mode != RESTART_NO && json_is_true(json_object_get(opts, "rm"))) {
		susage("--restart %s and --rm conflict: a container removed when it ends cannot be restarted", rs);
		return -EINVAL;
	}
	const char *sig = opt_str(opts, "stop_signal");
	if (sig && signal_parse(sig) < 0) {
		susage("--stop-signal %s: not a signal name or number", sig);
		return -EINVAL;
	}
#ifdef STRATA_HAVE_RUNTIME
	struct strata_limits l = { 0 };
	enum strata_net net;
	if ((r = parse_limits(opts, &l)) < 0 || (r = parse_net(opts, &net)) < 0)
		return r;
	json_t *a = json_object_get(opts, "publish");
	for (size_t i = 0; i < json_array_size(a); i++) {
		struct strata_port p;
		if ((r = STRATA_PARSE_REPORTED(strata_parse_port, json_string_value(json_array_get(a, i)), &p)) < 0)
			return r;
	}
	a = json_object_get(opts, "rlimit");
	for (size_t i = 0; i < json_array_size(a); i++) {
		struct strata_rlimit rl;
		if ((r = STRATA_PARSE_REPORTED(strata_parse_rlimit, json_string_value(json_array_get(a, i)), &rl)) < 0)
			return r;
	}
	static const char *const maps[] = { "uidmap", "gidmap" };
	for (int k = 0; k < 2; k++) {
		a = json_object_get(opts, maps[k]);
		for (size_t i = 0; i < json_array_size(a); i++) {
			struct strata_idmap m;
			if ((r = STRATA_PARSE_REPORTED(strata_parse_idmap, json_string_value(json_array_get(a, i)), &m)) < 0)
				return r;
		}
	}
#endif
	return 0;
}

#ifdef STRATA_HAVE_RUNTIME
/* Look NAME up in the image's /etc/passwd (field 3 = uid, 4 = gid) or
 * /etc/group (field 3 = gid), as the merged layers show it. */
static int image_id_lookup(struct store *s, json_t *ids, const char *file, const char *name,
			   long *id, long *gid)
{
	struct lowerview lv;
	size_t layer;
	/* packed layers read in place: nothing of the image is unpacked */
	int r = lowerview_open_packed(s, ids, &lv);
	if (r < 0)
		return r;
	r = -ENOENT;
	_cleanup_free_ char *buf = NULL;
	if (lower_lookup(&lv, 0, file, &layer)) {
		_cleanup_close_ int fd = lower_open_file(&lv, layer, file);
		if (fd >= 0)
			read_fd(fd, 1 << 20, &buf, NULL);
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
	lowerview_close(&lv);
	return r;
}

int ctr_resolve_user(struct store *s, json_t *cfg, const char *spec, uid_t *uid, gid_t *gid)
{
	json_t *ids;
	_cleanup_free_ char *u = strdup(spec);
	if (!u)
		return -ENOMEM;
	char *g = strchr(u, ':');
	if (g)
		*g++ = '\0';
	long uu = 0, gg = 0;
	int r = config_diff_ids(cfg, "image", &ids);
	if (r < 0)
		return r;
	if (numeric(u)) {
		uu = strtol(u, NULL, 10);
		/* a numeric user keeps group 0 unless the image names it */
	} else if (image_id_lookup(s, ids, "etc/passwd", u, &uu, &gg) < 0) {
		susage("user '%s' is not in the image's /etc/passwd; give a numeric UID[:GID]", u);
		return -EINVAL;
	}
	if (g && numeric(g))
		gg = strtol(g, NULL, 10);
	else if (g && image_id_lookup(s, ids, "etc/group", g, &gg, NULL) < 0) {
		susage("group '%s' is not in the image's /etc/group; give a numeric GID", g);
		return -EINVAL;
	}
	*uid = (uid_t)uu;
	*gid = (gid_t)gg;
	return 0;
}

/* The strings of a JSON array, borrowed, NULL-terminated. */
static const char **strv(json_t *a, size_t *n)
{
	size_t len = json_array_size(a);
	const char **v = calloc(len + 1, sizeof *v);
	for (size_t i = 0; v && i < len; i++)
		v[i] = json_string_value(json_array_get(a, i));
	if (n)
		*n = len;
	return v;
}

/* lowerdir is top first: the config lists layers bottom first. */
static int lower_list_of(struct store *s, json_t *ids, const char *image, char **out)
{
	size_t n = json_array_size(ids), len = 1;
	if (n == 0) {
		susage("image %s has no layers; nothing to run", image);
		return -EINVAL;
	}
	if (strchr(s->root, ':') || strchr(s->root, ',')) {
		serr(0, "start: store path", s->root,
		     "contains ':' or ',', which the overlay lowerdir list cannot carry; use another --store");
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		len += strlen(s->root) + 96;
	char *lower = calloc(1, len);
	if (!lower)
		return -ENOMEM;
	for (size_t i = n; i-- > 0;) {
		_cleanup_free_ char *p = store_layer_path(s, json_string_value(json_array_get(ids, i)));
		if (*lower)
			strcat(lower, ":");
		strcat(lower, p ? p : "");
	}
	*out = lower;
	return 0;
}

/* The launcher's parsers over a JSON array of option strings. */
static int parse_all(json_t *a, void **out, size_t size, size_t *n,
		     int (*parse)(const char *, void *))
{
	*n = json_array_size(a);
	char *v = calloc(*n + 1, size);
	if (!v)
		return -ENOMEM;
	*out = v;
	for (size_t i = 0; i < *n; i++) {
		int r = parse(json_string_value(json_array_get(a, i)), v + i * size);
		if (r < 0)
			return r;
	}
	return 0;
}
static int p_rlimit(const char *t, void *o) { return STRATA_PARSE_REPORTED(strata_parse_rlimit, t, o); }
static int p_idmap(const char *t, void *o) { return STRATA_PARSE_REPORTED(strata_parse_idmap, t, o); }
static int p_port(const char *t, void *o) { return STRATA_PARSE_REPORTED(strata_parse_port, t, o); }

/* Image Env first, then --env, so the user's values win. */
static int build_env(struct ctr_spec *sp, json_t *cc, json_t *opts)
{
	json_t *ienv = json_object_get(cc, "Env"), *uenv = json_object_get(opts, "env");
	sp->env = calloc(json_array_size(ienv) + json_array_size(uenv) + 1, sizeof *sp->env);
	if (!sp->env)
		return -ENOMEM;
	size_t i;
	json_t *v;
	json_array_foreach(ienv, i, v)
		sp->env[sp->n_env++] = json_string_value(v);
	json_array_foreach(uenv, i, v)
		sp->env[sp->n_env++] = json_string_value(v);
	sp->l.env = sp->env;
	sp->l.n_env = sp->n_env;
	return 0;
}

static int build_binds(struct ctr_spec *sp, json_t *opts)
{
	json_t *a = json_object_get(opts, "bind");
	size_t n = json_array_size(a);
	sp->binds = calloc(n + 1, sizeof *sp->binds);
	sp->bind_text = calloc(n + 1, sizeof *sp->bind_text);
	if (!sp->binds || !sp->bind_text)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		/* The parser cuts its argument into pieces: give it copies
		 * that live as long as the spec. */
		if (!(sp->bind_text[i] = strdup(json_string_value(json_array_get(a, i)))))
			return -ENOMEM;
		int r = STRATA_PARSE_REPORTED(strata_parse_bind, sp->bind_text[i], &sp->binds[i]);
		if (r < 0)
			return r;
	}
	sp->l.binds = sp->binds;
	sp->l.n_binds = n;
	return 0;
}

static int build_user(struct store *s, struct ctr_spec *sp, json_t *cc, json_t *opts)
{
	const char *user = opt_str(opts, "user");
	if (!user)
		user = json_string_value(json_object_get(cc, "User"));
	if (!user || !*user)
		return 0;
	sp->l.set_user = true;
	return ctr_resolve_user(s, sp->cfg, user, &sp->l.uid, &sp->l.gid);
}

int ctr_spec_build(struct store *s, const char *id, json_t *rec, json_t *cfg, struct ctr_spec *sp)
{
	json_t *ids, *opts = json_object_get(rec, "options");
	int r;
	size_t n;

	memset(sp, 0, sizeof *sp);
	sp->rec = json_incref(rec);
	const char *image = json_string_value(json_object_get(rec, "image"));
	if (cfg)
		sp->cfg = json_incref(cfg);
	else if ((r = store_load_config(s, image, &sp->cfg, NULL, NULL)) < 0)
		return r;
	if ((r = config_diff_ids(sp->cfg, image, &ids)) < 0 || (r = lower_list_of(s, ids, image, &sp->lower)) < 0)
		return r;
	json_t *cc = json_object_get(sp->cfg, "config");
	if (asprintf(&sp->upper, "%s/containers/%s/upper", s->root, id) < 0 ||
	    asprintf(&sp->work, "%s/containers/%s/work", s->root, id) < 0 ||
	    asprintf(&sp->cgroup_name, "strata-%.12s", id) < 0)
		return -ENOMEM;
	sp->l.lowerdir = sp->lower;
	sp->l.upperdir = sp->upper;
	sp->l.workdir = sp->work;
	sp->l.cgroup_name = sp->cgroup_name;

	json_t *cmd = json_object_get(rec, "command");
	if (!(sp->argv = calloc(json_array_size(cmd) + 1, sizeof *sp->argv)))
		return -ENOMEM;
	for (size_t i = 0; i < json_array_size(cmd); i++)
		sp->argv[i] = (char *)json_string_value(json_array_get(cmd, i));
	sp->l.argv = sp->argv;

	if ((r = build_env(sp, cc, opts)) < 0 || (r = build_binds(sp, opts)) < 0 ||
	    (r = build_user(s, sp, cc, opts)) < 0)
		return r;
	if (!(sp->cap_add = strv(json_object_get(opts, "cap_add"), &sp->l.n_cap_add)) ||
	    !(sp->cap_drop = strv(json_object_get(opts, "cap_drop"), &sp->l.n_cap_drop)))
		return -ENOMEM;
	sp->l.cap_add = sp->cap_add;
	sp->l.cap_drop = sp->cap_drop;
	if ((r = parse_all(json_object_get(opts, "rlimit"), (void **)&sp->rlimits, sizeof *sp->rlimits, &n, p_rlimit)) < 0)
		return r;
	sp->l.rlimits = sp->rlimits;
	sp->l.n_rlimits = n;
	if ((r = parse_all(json_object_get(opts, "uidmap"), (void **)&sp->uidmap, sizeof *sp->uidmap, &n, p_idmap)) < 0)
		return r;
	sp->l.uidmap = sp->uidmap;
	sp->l.n_uidmap = n;
	if ((r = parse_all(json_object_get(opts, "gidmap"), (void **)&sp->gidmap, sizeof *sp->gidmap, &n, p_idmap)) < 0)
		return r;
	sp->l.gidmap = sp->gidmap;
	sp->l.n_gidmap = n;
	if ((r = parse_all(json_object_get(opts, "publish"), (void **)&sp->ports, sizeof *sp->ports, &n, p_port)) < 0)
		return r;
	sp->l.ports = sp->ports;
	sp->l.n_ports = n;
	bool direct;
	if ((r = parse_net(opts, &sp->l.net)) < 0 || (r = parse_limits(opts, &sp->l.limits)) < 0 ||
	    (r = check_caller_mapped(opts)) < 0 || (r = parse_log_opts(opts, &sp->log_max)) < 0 ||
	    (r = parse_storage_opts(opts, &direct)) < 0 ||
	    (r = restart_parse(opt_str(opts, "restart"), &sp->restart, &sp->restart_max)) < 0)
		return r;

	const char *cwd = opt_str(opts, "cwd");
	if (!cwd)
		cwd = json_string_value(json_object_get(cc, "WorkingDir"));
	sp->l.cwd = (cwd && *cwd) ? cwd : NULL;
	const char *host = opt_str(opts, "hostname");
	sp->l.hostname = host ? host : json_string_value(json_object_get(rec, "name"));
	sp->l.fs_program = opt_str(opts, "fs_program");
	/* A rootless store keeps image owners and modes in
	 * user.containers.override_stat: have strata-fs present them. With
	 * only the caller's own id mapped, every owner shows as root. */
	/* The store's packed layers keep their programs decompressed
	 * beside them (strata-fs progcache): a container's start then
	 * decompresses none that an earlier one started. Containers of one
	 * image read its files from one page cache, the layer's (sharecache
	 * =direct, unless --storage-opt sharecache=off): each container after
	 * the first adds its own writes, not another copy of the image's data
	 * it reads. */
	snprintf(sp->fs_options, sizeof sp->fs_options, "progcache,sharecache=%s%s",
		 direct ? "direct" : "off",
		 geteuid() == 0 ? "" : sp->l.n_uidmap ? ",xattr_permissions=2" : ",xattr_permissions=2,squash_to_root");
	sp->l.fs_options = sp->fs_options;
	sp->l.tty = json_is_true(json_object_get(opts, "tty"));
	sp->l.interactive = json_is_true(json_object_get(opts, "interactive"));
	sp->autoremove = json_is_true(json_object_get(opts, "rm"));

	const char *sig = opt_str(opts, "stop_signal");
	if (!sig)
		sig = json_string_value(json_object_get(cc, "StopSignal"));
	sp->stop_signal = sig && *sig ? signal_parse(sig) : SIGTERM;
	if (sp->stop_signal < 0)
		sp->stop_signal = SIGTERM;
	return 0;
}

void ctr_spec_free(struct ctr_spec *sp)
{
	for (size_t i = 0; sp->bind_text && sp->bind_text[i]; i++)
		free(sp->bind_text[i]);
	free(sp->bind_text);
	free(sp->binds);
	free(sp->lower);
	free(sp->upper);
	free(sp->work);
	free(sp->cgroup_name);
	free(sp->env);
	free(sp->cap_add);
	free(sp->cap_drop);
	free(sp->argv);
	free(sp->rlimits);
	free(sp->uidmap);
	free(sp->gidmap);
	free(sp->ports);
	json_decref(sp->cfg);
	json_decref(sp->rec);
	memset(sp, 0, sizeof *sp);
}
#endif
