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

/* How every call below reports a failure: it prints nothing, and fills
 * the caller's struct strata_error instead (crun's libcrun_error_t idea),
 * so the caller can say what the user was doing before the cause:
 *
 *   strata: starting container web: mount proc /proc: Permission denied (...)
 *
 * The message names the operation, the path and the cause, and says what
 * the user can do, in the form common/err.h's serr() prints, without the
 * program's name. strata_launch() and strata_exec() clear it first. When several
 * things went wrong the first (the cause) gives the code and later ones
 * are added to the message. code is 0 when there is nothing to tell. */
#define STRATA_ERROR_MSG_MAX 1536
struct strata_error {
	int code;                       /* positive errno of the cause */
	char msg[STRATA_ERROR_MSG_MAX];
};

/* Print "PROG: CONTEXT: MESSAGE" on stderr (CONTEXT may be NULL); nothing
 * when e holds no error. */
void strata_error_print(const struct strata_error *e, const char *context_fmt, ...)
	__attribute__((format(printf, 2, 3)));
void strata_error_clear(struct strata_error *e);

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
	STRATA_NET_PRIVATE,     /* own network namespace wired to the host by a
				 * user-mode stack (pasta): outbound traffic and
				 * the published ports below */
};

/* -p [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp] */
struct strata_port {
	char host_ip[64];       /* "" : every address of the host */
	unsigned short host_port, container_port;
	bool udp;
};

/* Resource limits, applied through a cgroup created for the container
 * beneath the launcher's own cgroup (v2 where unified, the v1 memory,
 * cpu and pids controllers where the host is hybrid). 0 means "not set";
 * a limit that cannot be applied is an error, never ignored. */
struct strata_limits {
	long long memory;       /* bytes (--memory) */
	long long memory_swap;  /* bytes of memory+swap (--memory-swap); -1: unlimited */
	long long cpu_quota_us; /* --cpus N: N * period */
	long long cpu_period_us;
	unsigned long cpu_shares; /* --cpu-shares (v1 shares; mapped to v2 weight) */
	long long pids;         /* --pids-limit; -1: unlimited */
};

/* What the launcher learns once the container runs; handed to
 * spec->on_start in the calling process (see below). */
struct strata_started {
	pid_t init_pid;         /* the container's pid 1, as the host sees it */
	pid_t daemon_pid;       /* the FUSE daemon */
	const char *cgroup;     /* the container's cgroup (a path under
				 * /sys/fs/cgroup of one controller, or of the
				 * unified hierarchy), NULL when none was made */
	/* Every directory of that cgroup: one per v1 hierarchy (memory, cpu,
	 * cpuacct, pids, freezer, devices, as far as made), or the one
	 * unified directory. Valid during the call only. */
	const char *const *cgroup_dirs;
	size_t n_cgroup_dirs;
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

	/* Published ports (net == STRATA_NET_PRIVATE only). */
	const struct strata_port *ports;
	size_t n_ports;

	struct strata_limits limits;
	/* Leaf name of the container's cgroup ("strata-<id>"); NULL: a cgroup
	 * is made only when a limit is set, named after the launcher's pid.
	 * (Root containers always get one for their device rules: the v1
	 * devices controller, or a BPF device program on cgroup v2.) A name
	 * without limits is best effort: rootless without a writable cgroup
	 * runs without one (strata_started.cgroup NULL). */
	const char *cgroup_name;

	/* A pseudo-terminal from the container's own devpts instance is the
	 * command's stdin/stdout/stderr; the launcher relays it to its own
	 * stdin/stdout, keeps the window size current and restores the
	 * caller's terminal mode on every way out. */
	bool tty;
	/* With tty: relay the caller's stdin to the terminal (-i). Without
	 * tty the command inherits the caller's stdio as it is. */
	bool interactive;
	/* With tty: also called with every piece of the terminal's output as
	 * it is relayed (a log of it); NULL: none. */
	void (*on_tty_output)(void *arg, const char *buf, size_t len);
	void *on_tty_output_arg;

	/* Non-NULL: set to a descriptor of the launcher's own mount namespace
	 * (-1 if none), which then ends when the caller closes it, not in the
	 * launcher's exit: releasing its mounts waits for an RCU grace period,
	 * which a caller that hands the descriptor to a process outliving it
	 * takes off its path. */
	int *keep_mntns;

	/* Called once in the calling process when the container's init runs
	 * (before the command may have started), e.g. to record its pid. */
	void (*on_start)(void *arg, const struct strata_started *info);
	void *on_start_arg;
};

/* Run the container and wait for it. Returns the command's exit code
 * (0..255; 128+N when killed by signal N, 127 when the command is not in
 * the image, 126 when it cannot be run), or -errno when the container
 * could not be set up; err then says why. err may hold a message with a
 * result >= 0 too: why the command could not be run (126, 127), or what
 * failed while cleaning up after it ran; callers print it whenever
 * err->code is set. Nothing is left behind either way:
 * no mount, no daemon, no zombie. The caller must not have SIGCHLD set to
 * SIG_IGN (children would vanish unwaited); the forwarded signals
 * (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH) are
 * blocked in the calling thread while the container runs and passed on
 * to the command. */
int strata_launch(const struct strata_launch_spec *spec, struct strata_error *err);

/* Run a further process in a running container (strata exec): it joins
 * the namespaces of the container whose init is init_pid (user, mount,
 * pid, uts, ipc, network), its cgroup, the capability set given by
 * cap_add/cap_drop over the default set, and no_new_privs. */
struct strata_exec_spec {
	pid_t init_pid;
	char *const *argv;
	const char *const *env; /* the complete environment (KEY=VALUE) */
	size_t n_env;
	const char *cwd;        /* NULL: "/" */
	bool set_user;
	uid_t uid;
	gid_t gid;
	const char *const *cap_add;
	size_t n_cap_add;
	const char *const *cap_drop;
	size_t n_cap_drop;
	bool tty, interactive;
	bool detach;            /* return once the process runs (exit code 0) */
};
/* Returns the process's exit code as strata_launch() does, or -errno
 * with err saying why it could not be started (err is filled as by
 * strata_launch(), also for 126 and 127). */
int strata_exec(const struct strata_exec_spec *spec, struct strata_error *err);

/* Parsers for the command-line spellings, shared by both front doors.
 * Each returns 0, or -EINVAL with err saying what is wrong with arg. */
/* SRC:DST[:ro|:rw] */
int strata_parse_bind(char *arg, struct strata_bind *out, struct strata_error *err);
/* INSIDE:OUTSIDE:COUNT */
int strata_parse_idmap(const char *arg, struct strata_idmap *out, struct strata_error *err);
/* NAME=SOFT[:HARD] */
int strata_parse_rlimit(const char *arg, struct strata_rlimit *out, struct strata_error *err);
/* UID[:GID] */
int strata_parse_user(const char *arg, uid_t *uid, gid_t *gid, struct strata_error *err);
/* [IP:]HOST:CONTAINER[/tcp|/udp] */
int strata_parse_port(const char *arg, struct strata_port *out, struct strata_error *err);
/* 512m, 1g, 1048576, -1 */
int strata_parse_size(const char *arg, long long *bytes, struct strata_error *err);
/* 1.5 */
int strata_parse_cpus(const char *arg, long long *quota_us, long long *period_us, struct strata_error *err);

/* For a front door that prints a refused spelling at once, having no
 * context to add: STRATA_PARSE_REPORTED(strata_parse_size, arg, &bytes) */
#define STRATA_PARSE_REPORTED(fn, ...)                                         \
	({                                                                     \
		struct strata_error e_ = { 0 };                                \
		int r_ = fn(__VA_ARGS__, &e_);                                 \
		if (r_ < 0)                                                    \
			strata_error_print(&e_, NULL);                         \
		r_;                                                            \
	})

#endif
