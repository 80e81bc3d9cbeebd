/* What the launcher's steps share: the resolved launch context and the
 * per-step entry points. Not a public header; users include launch.h.
 *
 * Process tree (docs/architecture.md, "strata-run"):
 *   launcher  host namespaces; writes the id maps, forwards signals
 *   outer     makes the cgroup, then new user (rootless) + mount ns: makes
 *             the merged view (a detached FUSE mount), runs the daemon,
 *             waits for the daemon's exit at the end; survives a killed
 *             launcher long enough to stop and clean up everything
 *   daemon    strata-fs -f ... /dev/fd/N, in the outer mount ns
 *   init      joins the cgroup; pid 1 of new pid/mount/uts/ipc[/net] ns:
 *             attaches the merged view, builds the root, pivots, reaps,
 *             forwards signals
 *   command   the user's process (pid 2)
 */
#ifndef STRATA_RUNTIME_INTERNAL_H
#define STRATA_RUNTIME_INTERNAL_H

#include "launch.h"

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

/* Exit code of a helper process whose setup step failed; the cause
 * travels on the error pipe, so it is never confused with the command's. */
#define SETUP_FAILED_EXIT 125

/* error.c: filling a struct strata_error (launch.h). Each returns the
 * -errno the caller passes on.
 *   rt_err:   "OP PATH: strerror(errnum) (HINT)", code errnum (EIO if 0)
 *   rt_errx:  the same without a system cause, code as given
 *   rt_usage: a bad input with no system cause, code EINVAL
 *   rt_fallback: "OP PATH: strerror(err)" unless e already says why */
int rt_err(struct strata_error *e, int errnum, const char *op, const char *path, const char *hint_fmt, ...)
	__attribute__((format(printf, 5, 6)));
int rt_errx(struct strata_error *e, int code, const char *op, const char *path, const char *hint_fmt, ...)
	__attribute__((format(printf, 5, 6)));
int rt_usage(struct strata_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int rt_fallback(struct strata_error *e, int err, const char *op, const char *path);

/* The error pipe: a helper process sends its error object, with the exit
 * code it means (SETUP_FAILED_EXIT: setup failed; 126/127: the command
 * could not be run; 0: a note about the cleanup), in one atomic write.
 * recv_failures() reads every record until EOF into e; it sets
 * *exit_code to SETUP_FAILED_EXIT when one was a setup failure, else to
 * a note's non-zero exit, and returns whether there was any record. */
struct failure_msg {
	int exit;
	struct strata_error e;
};
void send_failure(int fd, int exit_code, const struct strata_error *e);
int recv_failures(int fd, struct strata_error *e, int *exit_code);

/* cgroup.c: the container's cgroup, one directory per v1 hierarchy (or
 * one in the unified hierarchy). procs[] are its "tasks" (v1) or
 * cgroup.procs (v2) files, opened by the launcher; the container's init,
 * single-threaded, writes itself into them. */
#define CGROUP_MAX_DIRS 8
struct cgroups {
	size_t n;
	char *dir[CGROUP_MAX_DIRS];
	int procs[CGROUP_MAX_DIRS];
	const char *started;    /* strata_started.cgroup: the memory or unified one */
	bool v2;
};
/* made by outer (which outlives a killed launcher and so can remove
 * them), named after the launcher's pid unless spec->cgroup_name */
int cgroup_create(const struct strata_launch_spec *s, pid_t launcher, struct cgroups *cg,
		  struct strata_error *err);
int cgroup_send(int fd, const struct cgroups *cg);
int cgroup_recv(int fd, struct cgroups *cg);
int cgroup_join(const struct cgroups *cg, struct strata_error *err);
void cgroup_close_fds(struct cgroups *cg);
int cgroup_remove(struct cgroups *cg, int timeout_ms, struct strata_error *err);
void cgroup_free(struct cgroups *cg);

struct launch_ctx {
	const struct strata_launch_spec *spec;
	bool userns;            /* a user namespace is created */
	bool setgroups_ok;      /* setgroups(2) works inside (not "deny") */
	char *lowerdir;         /* absolute, checked */
	char *upperdir, *workdir;
	char *fs_program;       /* resolved path of the daemon */
	int rootmnt;            /* the merged view: a detached mount (fsmount)
				 * made by outer, attached only in init's mount
				 * namespace, so no host directory ever holds it */
	struct cgroups cg;
	pid_t init_pid, daemon_pid; /* host pids, known to the launcher once
				     * init runs (0 before) */
	uint64_t caps;          /* capability set the command keeps */
	struct strata_error *err; /* the caller's in the launcher; each
				 * helper process fills its own copy and
				 * sends it on the error pipe */
	int errfd;              /* write end of the error pipe */
	int ctlfd;              /* the container's end of the control socket
				 * (tty.c), -1 when neither tty nor a private
				 * network needs one */
	sigset_t oldmask;       /* the caller's mask, restored before exec */
};

/* a helper whose step failed: ctx->err (or, if that step left it
 * empty, err's strerror) goes on the error pipe, then it exits */
void report_failure(const struct launch_ctx *ctx, int err) __attribute__((noreturn));

/* idmap.c: write the child's uid/gid maps from the launcher */
int idmap_setup(const struct launch_ctx *ctx, pid_t child);

/* fusemount.c */
int fs_find_program(const char *given, char **out, struct strata_error *err);
int fs_open_device(struct strata_error *err);
/* Mount the merged view (ctx->rootmnt) and start its daemon; the view
 * answers once fs_mount_ready() says so (the daemon starts meanwhile). */
int fs_mount(struct launch_ctx *ctx, int fusefd, pid_t *daemon, int *daemon_pidfd);
/* Wait for the daemon's INIT reply: 0, or -errno (reported) when it
 * refused or died; the caller then ends what holds the view and calls
 * fs_unmount(). */
int fs_mount_ready(struct launch_ctx *ctx);
int fs_unmount(struct launch_ctx *ctx, pid_t daemon, int daemon_pidfd);

/* mounts.c: in the init process, build the container root and pivot */
int rootfs_setup(const struct launch_ctx *ctx);

/* net.c: bring loopback up in a fresh network namespace */
int net_loopback_up(struct strata_error *err);

/* caps.c */
int caps_resolve(const struct strata_launch_spec *spec, uint64_t *set, struct strata_error *err);
int caps_limit_bounding(uint64_t set, struct strata_error *err);
int caps_apply(uint64_t set, struct strata_error *err);

/* identity.c: the command takes on its identity, in this order (both
 * strata_launch's command and strata_exec's process): capability
 * bounding set, supplementary groups, gid and uid (setres*: real, saved
 * and effective), the capability sets, no_new_privs, only stdio left
 * open across exec, umask 022, the working directory. */
struct identity {
	uint64_t caps;          /* the capability set it keeps */
	bool clear_groups;      /* setgroups(2) works (not "deny") */
	uid_t uid;              /* 0 unless --user */
	gid_t gid;
	const char *cwd;
};
int enter_identity(const struct identity *id, struct strata_error *err);

/* init.c: wait for pid while forwarding signals to it */
void forwarded_signals(sigset_t *set);
int supervise(pid_t pid, bool reap_all, int *status);
int status_to_exit_code(int status);

/* process.c: in the command process; never returns */
void process_exec(const struct launch_ctx *ctx) __attribute__((noreturn));
/* execve with a PATH search in env; exits 127 not found, 126 not
 * executable, after sending why on the error pipe errfd (if >= 0) */
void exec_command(char *const *argv, char **env, size_t n, int errfd) __attribute__((noreturn));

/* tty.c: the control socket between the launcher and the container, the
 * command's terminal, and the launcher's loop while the container runs */
int ctl_send(int sock, char type, int fd);
int ctl_recv(int sock, char *type, int *fd, pid_t *pid);
int ctl_expect(int sock, char want);
int tty_attach(int ctl, bool chown_to, uid_t uid, struct strata_error *err);

struct session {
	const struct launch_ctx *ctx;   /* NULL for strata_exec */
	struct strata_error *err;       /* the caller's */
	int ctl;                /* the launcher's end of the control socket */
	bool tty, interactive;
	pid_t init;             /* the container's init, once it said so */
	/* net.c: the network helper (pasta or slirp4netns), once started */
	const char *helper;
	pid_t pasta;
	int pasta_ready, pasta_log;
	int helper_quit;        /* slirp4netns exits when this closes */
	char *api_dir;          /* slirp4netns's API socket's directory */
	char log_tail[2048];    /* its last messages, for a failure */
	int (*on_netns)(struct session *ss, pid_t init);
	int (*on_ready)(struct session *ss);    /* the helper said "ready" */
};
/* Wait for child like supervise(), relaying the terminal and serving the
 * control socket meanwhile. Returns 0 with child's status, or -errno
 * after killing and reaping child. */
int session_run(struct session *ss, pid_t child, int *status);
int session_socket(int *launcher_end, int *container_end, struct strata_error *err);

/* net.c: the private network */
int net_check_private(const struct strata_launch_spec *s, struct strata_error *err);
int net_announce(const struct launch_ctx *ctx);         /* in init */
int net_wait_configured(const struct launch_ctx *ctx);  /* in init */
int net_on_netns(struct session *ss, pid_t init);       /* in the launcher */
int net_on_ready(struct session *ss);                   /* in the launcher */
void net_stop(struct session *ss);

#endif
