/* exec: a further process in a running container, through the launcher's
 * strata_exec(): the container's namespaces, cgroup, capability set and
 * no_new_privs, its user, environment and working directory unless the
 * options say otherwise. */
#include "cli.h"

#include "container.h"
#include "err.h"
#include "store.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef STRATA_HAVE_RUNTIME
struct exec_opts {
	bool interactive, tty, detach;
	const char *user, *cwd;
	json_t *env;             /* -e K=V, in order */
	json_t *env_file;        /* --env-file's, overridden by -e */
	char **cmd;
	const char *what;
};

static int parse(int argc, char **argv, struct exec_opts *o)
{
	int i = 0;
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--"))
			break;
		if (!strcmp(a, "--help")) {
			cli_help("exec", stdout);
			return 1;
		}
		if (a[1] != '-' && strspn(a + 1, "itd") == strlen(a + 1)) {
			o->interactive |= strchr(a, 'i') != NULL;
			o->tty |= strchr(a, 't') != NULL;
			o->detach |= strchr(a, 'd') != NULL;
			continue;
		}
		if (!strcmp(a, "--interactive")) {
			o->interactive = true;
			continue;
		}
		if (!strcmp(a, "--tty")) {
			o->tty = true;
			continue;
		}
		if (!strcmp(a, "--detach")) {
			o->detach = true;
			continue;
		}
		const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		if (eq)
			v = eq + 1;
		else
			i++;
		if (!v) {
			susage("exec: %s needs a value (see strata exec --help)", a);
			return -EINVAL;
		}
#define IS(s) (strlen(s) == len && !strncmp(a, s, len))
		if (IS("-u") || IS("--user"))
			o->user = v;
		else if (IS("-w") || IS("--workdir"))
			o->cwd = v;
		else if (IS("--env-file")) {
			if (env_file_read(v, o->env_file) < 0)
				return -EINVAL;
		} else if ((IS("-e") || IS("--env")) && strchr(v, '='))
			json_array_append_new(o->env, json_string(v));
		else if (IS("-e") || IS("--env")) {
			/* -e NAME: the caller's value, or nothing, as docker */
			const char *val = getenv(v);
			if (val)
				json_array_append_new(o->env, json_pack("s++", v, "=", val));
		}
		else {
			susage("exec: unknown option %s (see strata exec --help)", a);
			return -EINVAL;
		}
#undef IS
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (argc - i < 2) {
		susage("usage: strata exec [OPTIONS] CONTAINER COMMAND [ARG...]");
		return -EINVAL;
	}
	o->what = argv[i];
	o->cmd = argv + i + 1;
	if (i + 2 < argc && !strcmp(o->cmd[0], "--"))
		o->cmd++;
	return 0;
}

/* KEY=VALUE onto env, replacing an earlier value of KEY. */
static void env_put(const char **env, size_t *n, const char *kv)
{
	const char *eq = strchr(kv, '=');
	size_t klen = eq ? (size_t)(eq - kv) : strlen(kv);
	for (size_t i = 0; i < *n; i++)
		if (!strncmp(env[i], kv, klen) && env[i][klen] == '=') {
			env[i] = kv;
			return;
		}
	env[(*n)++] = kv;
}

static void spec_freep(struct ctr_spec *sp)
{
	ctr_spec_free(sp);
}

static void json_freep(json_t **j)
{
	json_decref(*j);
}
#endif

int cmd_exec(const char *root, int argc, char **argv)
{
#ifndef STRATA_HAVE_RUNTIME
	(void)root, (void)argc, (void)argv;
	susage("this strata was built without the launcher library (runtime/)");
	return EXIT_STRATA;
#else
	_cleanup_(json_freep) json_t *envopt = json_array();
	_cleanup_(json_freep) json_t *envfile = json_array();
	struct exec_opts o = { .env = envopt, .env_file = envfile };
	_cleanup_(spec_freep) struct ctr_spec sp = { 0 };
	struct store s;
	struct ctr c;
	int r = parse(argc, argv, &o);
	if (r)
		return r > 0 ? 0 : EXIT_STRATA;
	if (store_open(&s, root, false) < 0)
		return EXIT_STRATA;
	if ((r = ctr_open(&s, o.what, &c)) == 0) {
		enum ctr_status st = ctr_status(&c);
		if (st != CTR_RUNNING) {
			susage("exec: container %s is %s, not running%s", o.what, ctr_status_name(st),
			       st == CTR_PAUSED ? " (unpause it first)" : " (start it first)");
			r = -EINVAL;
		} else {
			r = ctr_spec_build(&s, c.id, c.rec, NULL, &sp);
		}
		if (r == 0 && o.user) {
			sp.l.set_user = true;
			r = ctr_resolve_user(&s, sp.cfg, o.user, &sp.l.uid, &sp.l.gid);
		}
	}
	store_close(&s);
	if (r < 0) {
		ctr_close(&c);
		return EXIT_STRATA;
	}

	/* The complete environment: the launcher's defaults, the image's,
	 * the container's, then exec's own. */
	char host[300];
	snprintf(host, sizeof host, "HOSTNAME=%s", sp.l.hostname ? sp.l.hostname : "strata");
	size_t n = 0, cap = sp.n_env + json_array_size(o.env) + json_array_size(o.env_file) + 8;
	_cleanup_free_ const char **env = calloc(cap, sizeof *env);
	if (!env) {
		ctr_close(&c);
		return EXIT_STRATA;
	}
	env_put(env, &n, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	env_put(env, &n, host);
	env_put(env, &n, "HOME=/root");
	if (o.tty)
		env_put(env, &n, "TERM=xterm");
	for (size_t i = 0; i < sp.n_env; i++)
		env_put(env, &n, sp.env[i]);
	for (size_t i = 0; i < json_array_size(o.env_file); i++)
		env_put(env, &n, json_string_value(json_array_get(o.env_file, i)));
	for (size_t i = 0; i < json_array_size(o.env); i++)
		env_put(env, &n, json_string_value(json_array_get(o.env, i)));

	struct strata_exec_spec x = {
		.init_pid = (pid_t)json_integer_value(json_object_get(c.st, "Pid")),
		.argv = o.cmd,
		.env = env,
		.n_env = n,
		.cwd = o.cwd ? o.cwd : sp.l.cwd,
		.set_user = sp.l.set_user,
		.uid = sp.l.uid,
		.gid = sp.l.gid,
		.cap_add = sp.l.cap_add,
		.n_cap_add = sp.l.n_cap_add,
		.cap_drop = sp.l.cap_drop,
		.n_cap_drop = sp.l.n_cap_drop,
		.tty = o.tty,
		.interactive = o.interactive,
		.detach = o.detach,
	};
	/* The pid must still be the container's init when we join it. */
	struct proc_ref init = proc_ref_from(c.st, "Pid", "PidStart");
	if (!proc_alive(&init)) {
		susage("exec: container %s has just ended", o.what);
		ctr_close(&c);
		return EXIT_STRATA;
	}
	ctr_close(&c);
	struct strata_error xerr;
	r = strata_exec(&x, &xerr);
	strata_error_print(&xerr, "exec in container %s", o.what);
	return r < 0 ? EXIT_STRATA : r;
#endif
}
