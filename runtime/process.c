/* The command's own process (pid 2 in the container): identity,
 * capabilities, no_new_privs, environment, working directory, exec.
 * Everything here runs after the pivot, so paths are the image's. A
 * failure goes to the launcher on the error pipe (ctx->errfd), which
 * closes on exec. */
#include "internal.h"
#include "err.h"

#include <stdio.h>
#include <string.h>

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* KEY=VALUE: a later entry with the same KEY replaces an earlier one. */
static void env_set(char **env, size_t *n, const char *kv)
{
	size_t klen = strcspn(kv, "=");

	for (size_t i = 0; i < *n; i++)
		if (strncmp(env[i], kv, klen) == 0 && env[i][klen] == '=') {
			env[i] = (char *)kv;
			return;
		}
	env[(*n)++] = (char *)kv;
}

static const char *env_get(char **env, size_t n, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = 0; i < n; i++)
		if (strncmp(env[i], key, klen) == 0 && env[i][klen] == '=')
			return env[i] + klen + 1;
	return NULL;
}

/* execvpe() searches the launcher's PATH; the command must be looked up
 * with the container's. */
void exec_command(char *const *argv, char **env, size_t n, int errfd)
{
	const char *cmd = argv[0];
	struct strata_error e = { 0 };
	int err = ENOENT;

	if (strchr(cmd, '/')) {
		execve(cmd, argv, env);
		err = errno;
	} else {
		const char *path = env_get(env, n, "PATH");
		_cleanup_free_ char *copy = strdup(path ? path : DEFAULT_PATH);
		char *save = NULL, full[PATH_MAX];
		for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
			snprintf(full, sizeof full, "%s/%s", d, cmd);
			execve(full, argv, env);
			if (errno == EACCES || errno == ENOEXEC)
				err = errno;
		}
	}
	int code = err == ENOENT || err == ENOTDIR ? 127 : 126;
	if (code == 127)
		rt_err(&e, err, "exec", cmd, "%s", strchr(cmd, '/') ? "the command is not in the image"
							  : "no such command in the container's PATH");
	else
		rt_err(&e, err, "exec", cmd, "found in the image but cannot be run");
	send_failure(errfd, code, &e);
	_exit(code);
}

void process_exec(const struct launch_ctx *ctx)
{
	const struct strata_launch_spec *s = ctx->spec;
	struct identity id = {
		.caps = ctx->caps, .clear_groups = ctx->setgroups_ok,
		.uid = s->set_user ? s->uid : 0, .gid = s->set_user ? s->gid : 0,
		.cwd = s->cwd ? s->cwd : "/",
	};
	int r;

	sigprocmask(SIG_SETMASK, &ctx->oldmask, NULL);

	/* before the identity changes: the slave is chowned to the user */
	if (s->tty && (r = tty_attach(ctx->ctlfd, s->set_user, s->uid, ctx->err)) < 0)
		report_failure(ctx, r);
	if ((r = enter_identity(&id, ctx->err)) < 0)
		report_failure(ctx, r);

	char home[16], hostname[80];
	char **env = calloc(s->n_env + 5, sizeof *env);
	size_t n = 0;
	if (!env)
		report_failure(ctx, -ENOMEM);
	snprintf(home, sizeof home, "HOME=%s", s->set_user && s->uid != 0 ? "/" : "/root");
	snprintf(hostname, sizeof hostname, "HOSTNAME=%s", s->hostname ? s->hostname : "strata");
	env_set(env, &n, "PATH=" DEFAULT_PATH);
	env_set(env, &n, home);
	env_set(env, &n, hostname);
	if (s->tty)
		env_set(env, &n, "TERM=xterm");
	for (size_t i = 0; i < s->n_env; i++)
		env_set(env, &n, s->env[i]);
	env[n] = NULL;
	exec_command(s->argv, env, n, ctx->errfd);
}
