/* create, run, start: a container is made from an image and its options,
 * kept in its record so that every start runs it the same way, and run
 * attached (the caller's stdio, its exit code) or detached under a
 * monitor (monitor.c). */
#include "cli.h"

#include "container.h"
#include "err.h"
#include "fsutil.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

enum okind { O_FLAG, O_STR, O_LIST };
#define FOR_CREATE 1u
#define FOR_RUN 2u

/* The options of create and run (their help text is in main.c's table);
 * each lands in the record's "options" under key. */
static const struct copt {
	const char *lng, *shrt, *key;
	enum okind kind;
	unsigned where;
} copts[] = {
	{ "--detach", "-d", "detach", O_FLAG, FOR_RUN },
	{ "--rm", NULL, "rm", O_FLAG, FOR_CREATE | FOR_RUN },
	{ "--interactive", "-i", "interactive", O_FLAG, FOR_CREATE | FOR_RUN },
	{ "--tty", "-t", "tty", O_FLAG, FOR_CREATE | FOR_RUN },
	{ "--name", NULL, "name", O_STR, FOR_CREATE | FOR_RUN },
	{ "--env", "-e", "env", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--env-file", NULL, "env_file", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--volume", "-v", "bind", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--bind", NULL, "bind", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--publish", "-p", "publish", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--network", NULL, "net", O_STR, FOR_CREATE | FOR_RUN },
	{ "--net", NULL, "net", O_STR, FOR_CREATE | FOR_RUN },
	{ "--user", "-u", "user", O_STR, FOR_CREATE | FOR_RUN },
	{ "--workdir", "-w", "cwd", O_STR, FOR_CREATE | FOR_RUN },
	{ "--hostname", "-h", "hostname", O_STR, FOR_CREATE | FOR_RUN },
	{ "--cap-add", NULL, "cap_add", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--cap-drop", NULL, "cap_drop", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--memory", "-m", "memory", O_STR, FOR_CREATE | FOR_RUN },
	{ "--memory-swap", NULL, "memory_swap", O_STR, FOR_CREATE | FOR_RUN },
	{ "--cpus", NULL, "cpus", O_STR, FOR_CREATE | FOR_RUN },
	{ "--cpu-shares", "-c", "cpu_shares", O_STR, FOR_CREATE | FOR_RUN },
	{ "--pids-limit", NULL, "pids_limit", O_STR, FOR_CREATE | FOR_RUN },
	{ "--restart", NULL, "restart", O_STR, FOR_CREATE | FOR_RUN },
	{ "--stop-signal", NULL, "stop_signal", O_STR, FOR_CREATE | FOR_RUN },
	{ "--stop-timeout", NULL, "stop_timeout", O_STR, FOR_CREATE | FOR_RUN },
	{ "--log-opt", NULL, "log_opt", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--storage-opt", NULL, "storage_opt", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--rlimit", NULL, "rlimit", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--ulimit", NULL, "rlimit", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--uidmap", NULL, "uidmap", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--gidmap", NULL, "gidmap", O_LIST, FOR_CREATE | FOR_RUN },
	{ "--fs-program", NULL, "fs_program", O_STR, FOR_CREATE | FOR_RUN },
};

struct copts {
	const char *cmdname;
	const char *name;
	bool detach;
	json_t *opts;
	json_t *env_file;        /* variables of --env-file, before -e's */
	const char *image;
	char **cmd;
	int ncmd;
};

static void copts_free(struct copts *o)
{
	json_decref(o->opts);
	json_decref(o->env_file);
}

static const struct copt *copt_find(const char *a, unsigned where, size_t len)
{
	for (size_t k = 0; k < sizeof copts / sizeof *copts; k++)
		if ((copts[k].where & where) &&
		    ((!strncmp(a, copts[k].lng, len) && !copts[k].lng[len]) ||
		     (copts[k].shrt && !strncmp(a, copts[k].shrt, len) && !copts[k].shrt[len])))
			return &copts[k];
	return NULL;
}

static int copt_set(struct copts *o, const struct copt *t, const char *v)
{
	if (t->kind == O_FLAG) {
		if (!strcmp(t->key, "detach"))
			o->detach = true;
		else
			json_object_set_new(o->opts, t->key, json_true());
	} else if (!strcmp(t->key, "name")) {
		o->name = v;
	} else if (!strcmp(t->key, "env_file")) {
		/* read now, as docker does: the record keeps the variables,
		 * not the file */
		if (!o->env_file)
			o->env_file = json_array();
		return env_file_read(v, o->env_file);
	} else if (t->kind == O_LIST) {
		json_t *a = json_object_get(o->opts, t->key);
		char *kv = NULL;
		/* -e NAME, as docker: the caller's value, or nothing when the
		 * caller has none */
		if (!strcmp(t->key, "env") && !strchr(v, '=')) {
			const char *val = getenv(v);
			if (!val || asprintf(&kv, "%s=%s", v, val) < 0)
				return 0;
			v = kv;
		}
		if (!a)
			json_object_set_new(o->opts, t->key, a = json_array());
		json_array_append_new(a, json_string(v));
		free(kv);
	} else {
		json_object_set_new(o->opts, t->key, json_string(v));
	}
	return 0;
}

/* Bundled short flags as docker takes them: -it, -dit. */
static bool short_bundle(struct copts *o, const char *a, unsigned where)
{
	if (a[0] != '-' || a[1] == '-' || strlen(a) < 3)
		return false;
	for (const char *p = a + 1; *p; p++) {
		char s[3] = { '-', *p, 0 };
		const struct copt *t = copt_find(s, where, 2);
		if (!t || t->kind != O_FLAG)
			return false;
	}
	for (const char *p = a + 1; *p; p++) {
		char s[3] = { '-', *p, 0 };
		copt_set(o, copt_find(s, where, 2), NULL);
	}
	return true;
}

/* Returns 0, 1 after --help, or -EINVAL after saying what is wrong. */
static int parse_copts(const char *cmdname, int argc, char **argv, unsigned where, struct copts *o)
{
	memset(o, 0, sizeof *o);
	o->cmdname = cmdname;
	o->opts = json_object();
	int i = 0;
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--"))
			break;
		if (!strcmp(a, "--help")) {
			cli_help(cmdname, stdout);
			return 1;
		}
		if (short_bundle(o, a, where))
			continue;
		const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
		const struct copt *t = copt_find(a, where, eq ? (size_t)(eq - a) : strlen(a));
		if (!t) {
			susage("%s: unknown option %s (see strata %s --help)", cmdname, a, cmdname);
			return -EINVAL;
		}
		const char *v = eq ? eq + 1 : NULL;
		if (t->kind != O_FLAG && !v) {
			if (i + 1 >= argc) {
				susage("%s: %s needs a value (see strata %s --help)", cmdname, a, cmdname);
				return -EINVAL;
			}
			v = argv[++i];
		}
		if (copt_set(o, t, v) < 0)
			return -EINVAL;
	}
	if (o->env_file) {
		/* -e wins over --env-file whatever their order, as docker */
		json_array_extend(o->env_file, json_object_get(o->opts, "env"));
		json_object_set(o->opts, "env", o->env_file);
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (i >= argc) {
		susage("%s: no image given (usage: strata %s [OPTIONS] IMAGE [COMMAND [ARG...]])", cmdname, cmdname);
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
	if (o->detach && json_is_true(json_object_get(o->opts, "interactive")) &&
	    json_is_true(json_object_get(o->opts, "tty"))) {
		/* docker keeps a detached -it container's terminal for a later
		 * attach; strata has no attach: say so instead of hanging. */
		susage("%s: -d with -it: strata cannot attach to a detached terminal later; drop -d or -it", cmdname);
		return -EINVAL;
	}
	return ctr_check_options(o->opts);
}

/* The command: the image's Entrypoint, then the given arguments or the
 * image's Cmd. */
static json_t *command_of(json_t *cc, struct copts *o)
{
	json_t *cmd = json_array(), *v;
	size_t i;
	json_array_foreach(json_object_get(cc, "Entrypoint"), i, v)
		json_array_append(cmd, v);
	if (o->ncmd) {
		for (int k = 0; k < o->ncmd; k++)
			json_array_append_new(cmd, json_string(o->cmd[k]));
	} else {
		json_array_foreach(json_object_get(cc, "Cmd"), i, v)
			json_array_append(cmd, v);
	}
	return cmd;
}

static int new_id(char id[65])
{
	unsigned char rnd[32];
	if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd)
		return -EIO;
	for (int k = 0; k < 32; k++)
		sprintf(id + 2 * k, "%02x", rnd[k]);
	return 0;
}

/* Make the container's directory and record (store lock held); the
 * record and the image's config are handed back when asked for, so that
 * run starts the container without reading either again. */
static int create(struct store *s, struct copts *o, char id[65], json_t **recp, json_t **cfgp)
{
	char digest[DIGEST_BUF], now[64], p[PATH_MAX], name[16];
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
	json_t *cmd = command_of(json_object_get(cfg, "config"), o);
	if (json_array_size(cmd) == 0) {
		json_decref(cmd);
		json_decref(cfg);
		susage("image %s has no Cmd or Entrypoint: give a command after the image", o->image);
		return -EINVAL;
	}
	if ((r = new_id(id)) < 0) {
		json_decref(cmd);
		json_decref(cfg);
		return r;
	}
	snprintf(name, sizeof name, "%.12s", id);
	now_rfc3339(now, sizeof now, false);
	snprintf(p, sizeof p, "containers/%s", id);
	if (mkdirat(s->fd, p, 0700) < 0) {
		r = -errno;
		serr(r, "create container directory in", s->root, "check the store's permissions");
		json_decref(cmd);
		json_decref(cfg);
		return r;
	}
	snprintf(p, sizeof p, "containers/%s/upper", id);
	mkdirat(s->fd, p, 0755);
	snprintf(p, sizeof p, "containers/%s/work", id);
	mkdirat(s->fd, p, 0700);
	json_t *c = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:O}", "id", id, "name", o->name ? o->name : name,
			      "image", digest, "image_ref", o->image, "command", cmd, "created", now,
			      "options", o->opts);
	/* for inspect's Config.ExposedPorts without reading the image again */
	json_t *exposed = json_object_get(json_object_get(cfg, "config"), "ExposedPorts");
	if (json_is_object(exposed))
		json_object_set(c, "exposed_ports", exposed);
	r = container_save(s, id, c, !json_is_true(json_object_get(o->opts, "rm")));
	if (r < 0) {
		snprintf(p, sizeof p, "containers/%s", id);
		rm_rf_at(s->fd, p);
	}
	if (r == 0 && recp)
		*recp = json_incref(c);
	if (r == 0 && cfgp)
		*cfgp = json_incref(cfg);
	json_decref(c);
	json_decref(cfg);
	return r;
}

static int create_locked(const char *root, struct copts *o, char id[65])
{
	struct store s;
	int r = store_open(&s, root, true);
	if (r < 0)
		return r;
	r = create(&s, o, id, NULL, NULL);
	store_close(&s);
	return r;
}

int cmd_create(const char *root, int argc, char **argv)
{
	_cleanup_(copts_free) struct copts o;
	char id[65];
	int r = parse_copts("create", argc, argv, FOR_CREATE, &o);
	if (r)
		return r > 0 ? 0 : EXIT_STRATA;
	if ((r = create_locked(root, &o, id)) < 0)
		return EXIT_STRATA;
	printf("%s\n", id);
	return 0;
}

#ifdef STRATA_HAVE_RUNTIME
static void spec_freep(struct ctr_spec *sp)
{
	ctr_spec_free(sp);
}

/* Start an opened container whose lock is held: attached, the exit code
 * of its command; detached, 0 once it runs. */
static int start_locked(struct ctr *c, bool attach)
{
	_cleanup_(spec_freep) struct ctr_spec sp = { 0 };
	struct store s;
	enum ctr_status st = ctr_status(c);
	if (st == CTR_RUNNING || st == CTR_PAUSED || st == CTR_RESTARTING) {
		susage("container %s is already running (%s)", ctr_name(c), ctr_status_name(st));
		return EXIT_STRATA;
	}
	int r = store_open(&s, c->root, false);
	if (r < 0)
		return EXIT_STRATA;
	r = ctr_spec_build(&s, c->id, c->rec, NULL, &sp);
	store_close(&s);
	if (r < 0)
		return EXIT_STRATA;
	if (!attach && sp.l.interactive && sp.l.tty) {
		susage("start %s: it was made with -it: start it with -a (strata has no later attach)", ctr_name(c));
		return EXIT_STRATA;
	}
	return attach ? monitor_run_attached(c, &sp) : monitor_start_detached(c, &sp);
}
#endif

int ctr_start(const char *root, const char *what, bool attach, bool print)
{
#ifndef STRATA_HAVE_RUNTIME
	(void)root, (void)what, (void)attach, (void)print;
	susage("this strata was built without the launcher library (runtime/)");
	return EXIT_STRATA;
#else
	struct store s;
	struct ctr c;
	int r = store_open(&s, root, false);
	if (r < 0)
		return EXIT_STRATA;
	r = ctr_open(&s, what, &c);
	store_close(&s);
	if (r < 0 || ctr_lock(&c) < 0) {
		ctr_close(&c);
		return EXIT_STRATA;
	}
	r = start_locked(&c, attach);
	if (r == 0 && print)
		printf("%s\n", what);
	ctr_close(&c);
	return r;
#endif
}

/* Remove a container that never ran (run's --rm after a failed start). */
static void remove_now(const char *root, const char *id)
{
	struct store s;
	if (store_open(&s, root, true) < 0)
		return;
	container_remove(&s, id);
	store_close(&s);
}

#ifdef STRATA_HAVE_RUNTIME
/* create and start in one go: one store handle makes the container and
 * its launch spec from the config it has read once; the new container is
 * opened by id, not looked up among the others. */
static int run_new(const char *root, struct copts *o, char id[65])
{
	_cleanup_(spec_freep) struct ctr_spec sp = { 0 };
	struct store s;
	struct ctr c = { .dirfd = -1, .lockfd = -1 };
	json_t *rec = NULL, *cfg = NULL;
	int r = store_open(&s, root, true);
	if (r < 0)
		return -EXIT_STRATA;
	r = create(&s, o, id, &rec, &cfg);
	if (r == 0) {
		r = ctr_spec_build(&s, id, rec, cfg, &sp);
		if (r == 0)
			r = ctr_open_record(&s, id, rec, &c);
		if (r == 0)
			r = ctr_lock(&c);
		if (r < 0)
			r = 1;
	}
	store_close(&s);
	json_decref(rec);
	json_decref(cfg);
	if (r < 0)
		return -EXIT_STRATA;      /* not made */
	if (r == 0)
		r = o->detach ? monitor_start_detached(&c, &sp) : monitor_run_attached(&c, &sp);
	else
		r = EXIT_STRATA;
	ctr_close(&c);
	return r;
}
#endif

int cmd_run(const char *root, int argc, char **argv)
{
	_cleanup_(copts_free) struct copts o;
	char id[65];
	int r = parse_copts("run", argc, argv, FOR_RUN, &o);
	if (r)
		return r > 0 ? 0 : EXIT_STRATA;
#ifndef STRATA_HAVE_RUNTIME
	susage("this strata was built without the launcher library (runtime/)");
	return EXIT_STRATA;
#else
	if ((r = run_new(root, &o, id)) < 0)
		return EXIT_STRATA;
	if (o.detach && r == 0)
		printf("%s\n", id);
	/* A start that failed before the monitor took over leaves the
	 * container to --rm here; the monitor removes it otherwise. */
	if (r == EXIT_STRATA && json_is_true(json_object_get(o.opts, "rm"))) {
		struct store s;
		json_t *c;
		if (store_open(&s, root, false) == 0) {
			bool still = container_load(&s, id, &c) == 0;
			if (still)
				json_decref(c);
			store_close(&s);
			if (still)
				remove_now(root, id);
		}
	}
	return r;
#endif
}

int cmd_start(const char *root, int argc, char **argv)
{
	bool attach = false;
	int i = 0, r = 0;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "-a") || !strcmp(argv[i], "--attach"))
			attach = true;
		else if (!strcmp(argv[i], "-i") || !strcmp(argv[i], "--interactive"))
			continue;
		else if (!strcmp(argv[i], "--help")) {
			cli_help("start", stdout);
			return 0;
		} else {
			susage("start: unknown option %s (see strata start --help)", argv[i]);
			return EXIT_STRATA;
		}
	}
	if (i >= argc || (attach && argc - i > 1)) {
		susage("usage: strata start [-a] CONTAINER%s", attach ? " (one with -a)" : "...");
		return EXIT_STRATA;
	}
	for (; i < argc; i++) {
		int one = ctr_start(root, argv[i], attach, !attach);
		if (attach)
			return one;
		if (one)
			r = one;
	}
	return r;
}
