/* The command's own process (pid 2 in the container): identity,
 * capabilities, no_new_privs, environment, working directory, exec.
 * Everything here runs after the pivot, so paths are the image's. */
#include "internal.h"
#include "err.h"

#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/stat.h>

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
void exec_command(char *const *argv, char **env, size_t n, int codefd)
{
	const char *cmd = argv[0];
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
		serr(err, "exec", cmd, "%s", strchr(cmd, '/') ? "the command is not in the image"
						       : "no such command in the container's PATH");
	else
		serr(err, "exec", cmd, "found in the image but cannot be run");
	if (codefd >= 0 && write(codefd, &code, sizeof code) < 0) {
		/* the exit code says the same to whoever waits */
	}
	_exit(code);
}

void process_exec(const struct launch_ctx *ctx)
{
	const struct strata_launch_spec *s = ctx->spec;
	const char *cwd = s->cwd ? s->cwd : "/";
	int r;

	sigprocmask(SIG_SETMASK, &ctx->oldmask, NULL);

	/* before the identity changes: the slave is chowned to the user */
	if (s->tty && (r = tty_attach(ctx->ctlfd, s->set_user, s->uid)) < 0)
		report_failure(ctx, r);
	if ((r = caps_limit_bounding(ctx->caps)) < 0)
		report_failure(ctx, r);
	if (ctx->setgroups_ok && setgroups(0, NULL) < 0) {
		serr(errno, "clear supplementary groups", NULL, NULL);
		report_failure(ctx, -errno);
	}
	if (s->set_user) {
		if (setgid(s->gid) < 0) {
			serr(errno, "setgid", NULL, "gid %u: is it mapped in the user namespace? (--gidmap)",
			     (unsigned)s->gid);
			report_failure(ctx, -errno);
		}
		if (setuid(s->uid) < 0) {
			serr(errno, "setuid", NULL, "uid %u: is it mapped in the user namespace? (--uidmap)",
			     (unsigned)s->uid);
			report_failure(ctx, -errno);
		}
	}
	if ((r = caps_apply(ctx->caps)) < 0)
		report_failure(ctx, r);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		serr(errno, "set no_new_privs", NULL, NULL);
		report_failure(ctx, -errno);
	}
	/* Only stdio crosses into the container, whatever the caller left
	 * open; and a known umask, as docker gives. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		serr(errno, "close_range", NULL, "needs Linux 5.11 or later");
		report_failure(ctx, -errno);
	}
	umask(022);
	if (chdir(cwd) < 0) {
		serr(errno, "chdir", cwd, "--cwd must name a directory in the image the user can enter");
		report_failure(ctx, -errno);
	}

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
	exec_command(s->argv, env, n, -1);
}
