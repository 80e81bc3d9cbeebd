/* strata's container launcher: one call that runs a command inside the
 * merged view of a layer stack, in its own namespaces.
 *
 * Both front doors use it: the strata-run CLI (runtime/main.c) and the
 * `strata run` command. The spec is a plain struct the caller fills in;
 * strata_launch() keeps no global state, never calls exit() in the calling
 * process, and restores the caller's signal mask before it returns.
 *
 * Who runs it decides the mode: as root (euid 0) the container uses real
 * root (no user namespace unless uidmap/gidmap are given); as any other
 * user it is rootless (a user namespace mapping the caller to root, or the
 * given subuid ranges through newuidmap/newgidmap).
 */
#ifndef STRATA_LAUNCH_H
#define STRATA_LAUNCH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

struct strata_bind {
	const char *src;        /* host path; must exist */
	const char *dst;        /* path inside the container */
	bool readonly;
};

/* One line of a uid_map/gid_map: container ids [inside, inside+count) are
 * host ids [outside, outside+count). */
struct strata_idmap {
	unsigned long inside, outside, count;
};

struct strata_rlimit {
	int resource;           /* RLIMIT_* */
	rlim_t soft, hard;
};

enum strata_net {
	STRATA_NET_HOST,        /* share the host's network namespace */
	STRATA_NET_NONE,        /* own network namespace with loopback only */
};

struct strata_launch_spec {
	/* Image layers, "TOP:...:BOTTOM" (required). */
	const char *lowerdir;
	/* Writable layer and its work directory on the same filesystem; both
	 * or neither (neither: the root is read-only). */
	const char *upperdir, *workdir;
	/* The FUSE daemon; NULL: $STRATA_FS, then strata-fs next to the
	 * running executable (and ../fs/strata-fs, the build tree), then PATH. */
	const char *fs_program;
	/* Extra daemon options appended to its -o list, e.g.
	 * "xattr_permissions=2,squash_to_root" for a rootless store. */
	const char *fs_options;

	char *const *argv;      /* command and arguments (required) */
	const char *const *env; /* KEY=VALUE added to the minimal environment */
	size_t n_env;
	const char *cwd;        /* NULL: "/" */
	const char *hostname;   /* NULL: "strata" */

	bool set_user;          /* run the command as uid:gid below */
	uid_t uid;
	gid_t gid;

	const struct strata_bind *binds;
	size_t n_binds;

	/* Capability names as libcap spells them ("cap_net_admin" or
	 * "NET_ADMIN"); cap_drop may hold "ALL". Applied to the docker-like
	 * default set: drops first, then adds. */
	const char *const *cap_add;
	size_t n_cap_add;
	const char *const *cap_drop;
	size_t n_cap_drop;

	enum strata_net net;

	const struct strata_rlimit *rlimits;
	size_t n_rlimits;

	/* Subordinate id ranges; empty: map only the caller (rootless) or no
	 * user namespace at all (root). */
	const struct strata_idmap *uidmap;
	size_t n_uidmap;
	const struct strata_idmap *gidmap;
	size_t n_gidmap;
};

/* Run the container and wait for it. Returns the command's exit code
 * (0..255; 128+N when killed by signal N, 127 when the command is not in
 * the image), or -errno when the container could not be set up, after the
 * cause has been reported on stderr. Nothing is left behind either way:
 * no mount, no daemon, no zombie. The caller must not have SIGCHLD set to
 * SIG_IGN (children would vanish unwaited); the forwarded signals
 * (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH) are
 * blocked in the calling thread while the container runs and passed on
 * to the command. */
int strata_launch(const struct strata_launch_spec *spec);

/* Parsers for the command-line spellings, shared by both front doors.
 * Each returns 0 or -EINVAL after reporting what is wrong with arg. */
int strata_parse_bind(char *arg, struct strata_bind *out);          /* SRC:DST[:ro|:rw] */
int strata_parse_idmap(const char *arg, struct strata_idmap *out);  /* INSIDE:OUTSIDE:COUNT */
int strata_parse_rlimit(const char *arg, struct strata_rlimit *out);/* NAME=SOFT[:HARD] */
int strata_parse_user(const char *arg, uid_t *uid, gid_t *gid);     /* UID[:GID] */

#endif
