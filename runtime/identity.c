/* The command's identity, taken on the same way by strata_launch()'s
 * command and strata_exec()'s process. The order matters: the bounding
 * set is cut while CAP_SETPCAP is still held, the ids change before the
 * capability sets are set (a uid change would clear them), and files are
 * closed and the directory entered last, as the user the command runs as. */
#include "internal.h"
#include "err.h"

#include <grp.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/stat.h>

int enter_identity(const struct identity *id, struct strata_error *err)
{
	int r;

	if ((r = caps_limit_bounding(id->caps, err)) < 0)
		return r;
	if (id->clear_groups && setgroups(0, NULL) < 0)
		return rt_err(err, errno, "clear supplementary groups", NULL, NULL);
	/* also without --user: root of a container with its own user
	 * namespace is the id 0 of that namespace, not the caller's */
	if (setresgid(id->gid, id->gid, id->gid) < 0)
		return rt_err(err, errno, "setgid", NULL,
			      "gid %u: is it mapped in the container's user namespace? see --gidmap",
			      (unsigned)id->gid);
	if (setresuid(id->uid, id->uid, id->uid) < 0)
		return rt_err(err, errno, "setuid", NULL,
			      "uid %u: is it mapped in the container's user namespace? see --uidmap",
			      (unsigned)id->uid);
	if ((r = caps_apply(id->caps, err)) < 0)
		return r;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return rt_err(err, errno, "set no_new_privs", NULL, NULL);
	/* Only stdio crosses into the container, whatever the caller left
	 * open; and a known umask, as docker gives. */
	if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
		return rt_err(err, errno, "close_range", NULL, "needs Linux 5.11 or later");
	umask(022);
	if (chdir(id->cwd) < 0)
		return rt_err(err, errno, "chdir", id->cwd,
			      "the working directory must be a directory in the container the user can enter");
	return 0;
}
