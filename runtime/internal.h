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

/* cgroup.c: the container's cgroup, one directory per v1 hierarchy (or
 * one in the unified hierarchy). procs[] are its cgroup.procs, opened by
 * the launcher; the container's init writes itself into them. */
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
int cgroup_create(const struct strata_launch_spec *s, pid_t launcher, struct cgroups *cg);
int cgroup_send(int fd, const struct cgroups *cg);
int cgroup_recv(int fd, struct cgroups *cg);
int cgroup_join(const struct cgroups *cg);
void cgroup_close_fds(struct cgroups *cg);
int cgroup_remove(struct cgroups *cg, int timeout_ms);
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
	int errfd;              /* write end of the error pipe */
	int ctlfd;              /* the container's end of the control socket
				 * (tty.c), -1 when neither tty nor a private
				 * network needs one */
	sigset_t oldmask;       /* the caller's mask, restored before exec */
};

/* error pipe: a helper that fails reports -errno here, then exits */
void report_failure(const struct launch_ctx *ctx, int err) __attribute__((noreturn));

/* idmap.c: write the child's uid/gid maps from the launcher */
int idmap_setup(const struct launch_ctx *ctx, pid_t child);

/* fusemount.c */
int fs_find_program(const char *given, char **out);
int fs_open_device(void);
int fs_mount(struct launch_ctx *ctx, int fusefd, pid_t *daemon, int *daemon_pidfd);
int fs_unmount(struct launch_ctx *ctx, pid_t daemon, int daemon_pidfd);

/* mounts.c: in the init process, build the container root and pivot */
int rootfs_setup(const struct launch_ctx *ctx);

/* net.c: bring loopback up in a fresh network namespace */
int net_loopback_up(void);

/* caps.c */
int caps_resolve(const struct strata_launch_spec *spec, uint64_t *set);
int caps_limit_bounding(uint64_t set);
int caps_apply(uint64_t set);

/* init.c: wait for pid while forwarding signals to it */
void forwarded_signals(sigset_t *set);
int supervise(pid_t pid, bool reap_all, int *status);
int status_to_exit_code(int status);

/* process.c: in the command process; never returns */
void process_exec(const struct launch_ctx *ctx) __attribute__((noreturn));
/* execve with a PATH search in env; exits 127 not found, 126 not
 * executable, after writing that code as an int to codefd (if >= 0) */
void exec_command(char *const *argv, char **env, size_t n, int codefd) __attribute__((noreturn));

/* tty.c: the control socket between the launcher and the container, the
 * command's terminal, and the launcher's loop while the container runs */
int ctl_send(int sock, char type, int fd);
int ctl_recv(int sock, char *type, int *fd, pid_t *pid);
int ctl_expect(int sock, char want);
int tty_attach(int ctl, bool chown_to, uid_t uid);

struct session {
	const struct launch_ctx *ctx;   /* NULL for strata_exec */
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
int session_socket(int *launcher_end, int *container_end);

/* net.c: the private network */
int net_check_private(const struct strata_launch_spec *s);
int net_announce(const struct launch_ctx *ctx);         /* in init */
int net_wait_configured(const struct launch_ctx *ctx);  /* in init */
int net_on_netns(struct session *ss, pid_t init);       /* in the launcher */
int net_on_ready(struct session *ss);                   /* in the launcher */
void net_stop(struct session *ss);

#endif
