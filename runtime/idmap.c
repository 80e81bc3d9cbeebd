/* The child's uid/gid maps, written from the launcher (the parent user
 * namespace) once the child has unshared. Without ranges: the caller's
 * own ids become 0, with setgroups denied as the kernel requires of an
 * unprivileged writer. With ranges: root writes them itself, anyone else
 * goes through the setuid helpers newuidmap/newgidmap, which check
 * /etc/subuid and /etc/subgid. */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

static int write_file(const char *path, const char *text, struct strata_error *err)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	size_t n = strlen(text);

	if (fd < 0 || write(fd, text, n) != (ssize_t)n) {
		int e = errno ? errno : EIO;
		rt_err(err, e, "write", path, "user namespace id mapping was refused");
		return -e;
	}
	return 0;
}

static int run_helper(const char *helper, pid_t child, const struct strata_idmap *m, size_t n,
		      struct strata_error *err)
{
	char *argv[2 + 3 * 64 + 1];
	char nums[1 + 3 * 64][24];
	size_t a = 0, k = 0;
	int st;

	if (n > 64)
		return rt_usage(err, "at most 64 id map ranges are supported");
	argv[a++] = (char *)helper;
	snprintf(nums[k], sizeof nums[k], "%d", (int)child);
	argv[a++] = nums[k++];
	for (size_t i = 0; i < n; i++) {
		snprintf(nums[k], sizeof nums[k], "%lu", m[i].inside);
		argv[a++] = nums[k++];
		snprintf(nums[k], sizeof nums[k], "%lu", m[i].outside);
		argv[a++] = nums[k++];
		snprintf(nums[k], sizeof nums[k], "%lu", m[i].count);
		argv[a++] = nums[k++];
	}
	argv[a] = NULL;

	pid_t pid = fork();
	if (pid < 0)
		return rt_err(err, errno, "fork", helper, NULL);
	if (pid == 0) {
		/* what went wrong is told by the parent, from the status */
		execvp(helper, argv);
		_exit(errno == ENOENT ? 127 : 126);
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return rt_err(err, errno, "wait for", helper, NULL);
	if (WIFEXITED(st) && (WEXITSTATUS(st) == 127 || WEXITSTATUS(st) == 126))
		return rt_err(err, WEXITSTATUS(st) == 127 ? ENOENT : EACCES, "exec", helper,
			      "install the uidmap package");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return rt_errx(err, EPERM, helper, NULL,
			       "failed with status %d; check your ranges in /etc/subuid and /etc/subgid",
			       status_to_exit_code(st));
	return 0;
}

static int write_map(pid_t child, const char *which, const struct strata_idmap *m, size_t n,
		     struct strata_error *err)
{
	char path[64], text[64 * 72] = "";
	size_t len = 0;

	for (size_t i = 0; i < n && len < sizeof text - 72; i++)
		len += snprintf(text + len, sizeof text - len, "%lu %lu %lu\n",
				m[i].inside, m[i].outside, m[i].count);
	snprintf(path, sizeof path, "/proc/%d/%s", (int)child, which);
	return write_file(path, text, err);
}

int idmap_setup(const struct launch_ctx *ctx, pid_t child)
{
	const struct strata_launch_spec *s = ctx->spec;
	struct strata_error *err = ctx->err;
	bool root = geteuid() == 0;
	struct strata_idmap own_uid = { 0, geteuid(), 1 }, own_gid = { 0, getegid(), 1 };
	char path[64];
	int r;

	if (s->n_uidmap)
		r = root ? write_map(child, "uid_map", s->uidmap, s->n_uidmap, err)
			 : run_helper("newuidmap", child, s->uidmap, s->n_uidmap, err);
	else
		r = write_map(child, "uid_map", &own_uid, 1, err);
	if (r < 0)
		return r;

	if (s->n_gidmap)
		return root ? write_map(child, "gid_map", s->gidmap, s->n_gidmap, err)
			    : run_helper("newgidmap", child, s->gidmap, s->n_gidmap, err);
	if (!root) {
		snprintf(path, sizeof path, "/proc/%d/setgroups", (int)child);
		if ((r = write_file(path, "deny", err)) < 0)
			return r;
	}
	return write_map(child, "gid_map", &own_gid, 1, err);
}
