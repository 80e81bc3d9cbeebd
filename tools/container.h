/* container: the records of strata's containers and the truth about them.
 *
 *   STORE/containers/<id>/container.json  what the container is: image,
 *                                         command, options (written at
 *                                         create, under the store lock)
 *   STORE/containers/<id>/state.json      what it is doing: written only by
 *                                         its monitor (and by whoever holds
 *                                         the container's lock after the
 *                                         monitor is gone), atomically
 *   STORE/containers/<id>/                flock of the directory: one
 *                                         lifecycle operation (start, stop,
 *                                         rm, ...) at a time
 *   STORE/containers/<id>/stopped         present after a user's stop/kill:
 *                                         the restart policy stands down
 *   STORE/containers/<id>/ctr.log[.1]     the command's output, JSON lines
 *   STORE/containers/<id>/upper, work     its writable layer
 *
 * Every pid kept in the state comes with the process's start time (field
 * 22 of /proc/PID/stat), so a pid the kernel has handed to another process
 * is never taken for ours and never signalled.
 */
#ifndef STRATA_CONTAINER_H
#define STRATA_CONTAINER_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#ifdef STRATA_HAVE_RUNTIME
#include "launch.h"
#endif

struct store;

#define CTR_LOG_MAX_DEFAULT (10LL << 20)
/* Exit code of strata's own failures, as docker's. */
#define EXIT_STRATA 125

/* Find a container by name or (prefix of) id; fills id (65 bytes). */
int container_find(struct store *s, const char *what, char id[65]);
int container_load(struct store *s, const char *id, json_t **c);
/* durable: fsync'ed (not for --rm containers, which a crash ends anyway). */
int container_save(struct store *s, const char *id, json_t *c, bool durable);
/* Remove a container's directory (exclusive store lock held) and collect
 * what only it kept. */
int container_remove(struct store *s, const char *id);
/* The record with its state and computed status merged in, for inspect
 * and ps --json. */
int container_describe(struct store *s, const char *id, json_t **out);

/* A process identified beyond its pid. */
struct proc_ref {
	pid_t pid;
	unsigned long long start;   /* 0: unknown */
};
unsigned long long proc_start_time(pid_t pid);  /* 0: no such process */
bool proc_alive(const struct proc_ref *p);
/* kill() only when pid still is the process we recorded; -ESRCH if not. */
int proc_kill(const struct proc_ref *p, int sig);
struct proc_ref proc_ref_from(json_t *st, const char *pidkey, const char *startkey);

enum ctr_status {
	CTR_CREATED, CTR_RUNNING, CTR_PAUSED, CTR_RESTARTING, CTR_EXITED, CTR_DEAD,
};
const char *ctr_status_name(enum ctr_status st);

/* One container, opened by name or id. */
struct ctr {
	char id[65];
	char *root;        /* the store's root */
	int dirfd;         /* containers/<id> */
	int lockfd;        /* containers/<id>/lock while held, else -1 */
	json_t *rec;       /* container.json */
	json_t *st;        /* state.json ({} when never started) */
};
/* Find and load; complains (no such container) and returns -ENOENT. */
int ctr_open(struct store *s, const char *what, struct ctr *c);
/* Open a container just made (its record in hand, no state yet), without
 * looking it up among the others. */
int ctr_open_record(struct store *s, const char *id, json_t *rec, struct ctr *c);
void ctr_close(struct ctr *c);
/* The container's lifecycle lock (blocking), then its state re-read;
 * -ENOENT when the container went away while we waited. */
int ctr_lock(struct ctr *c);
void ctr_unlock(struct ctr *c);
int ctr_reload_state(struct ctr *c);
/* Write the state atomically. */
int ctr_save_state(int dirfd, json_t *st);
/* The same for a container removed when it ends: kept (starting at 0)
 * counts the old states left beside it (deleted with its directory)
 * instead of freed on the way, at most 8. */
int ctr_save_state_keep(int dirfd, json_t *st, unsigned *kept);
const char *ctr_name(const struct ctr *c);

/* What the container is doing, judged from its state and the processes
 * that really live: a "running" state whose monitor is gone is dead. */
enum ctr_status ctr_status(const struct ctr *c);
/* docker's STATUS column: "running", "exited (0)", "killed (SIGKILL)", ... */
void ctr_status_text(const struct ctr *c, char *buf, size_t len);

/* Kill whatever is left of a container whose monitor is gone or stuck
 * (checked pids only), remove its cgroups, and record it as ended.
 * Called with the container's lock held. */
void ctr_reap_leftovers(struct ctr *c);

/* The container's cgroup directories (every v1 controller holding the
 * same relative path, or the one v2 directory). Returns how many. */
size_t ctr_cgroup_dirs(const char *cgroup, char dirs[][4096], size_t max);

/* The freezer pause used (see cmd_stop.c): its directory, and whether it
 * is a v2 cgroup (cgroup.freeze) or a v1 freezer cgroup. */
int ctr_freezer(const struct ctr *c, char *dir, size_t len, bool *v2);

/* Pids of the container's processes: those sharing its init's pid
 * namespace. Returns a malloc'd array. */
int ctr_pids(const struct ctr *c, pid_t **pids, size_t *n);

/* Signals by name ("TERM", "SIGTERM", "15"); -EINVAL when unknown. */
int signal_parse(const char *name);
const char *signal_name(int sig);

/* "2026-01-02T03:04:05.123456789Z" */
void now_rfc3339(char *buf, size_t len, bool nanos);

/* --restart no|on-failure[:N]|always|unless-stopped */
enum restart_mode { RESTART_NO, RESTART_ON_FAILURE, RESTART_ALWAYS, RESTART_UNLESS_STOPPED };
int restart_parse(const char *text, enum restart_mode *mode, int *max);

#ifdef STRATA_HAVE_RUNTIME
/* Everything strata_launch() needs for one container, built from its
 * record and its image's config; owns every allocation. */
struct ctr_spec {
	struct strata_launch_spec l;
	json_t *cfg;                 /* image config */
	json_t *rec;                 /* the record (a reference) */
	char *lower, *upper, *work, *cgroup_name;
	const char **env, **cap_add, **cap_drop;
	size_t n_env;
	char **argv;
	char **bind_text;            /* strata_parse_bind cuts these */
	struct strata_bind *binds;
	struct strata_rlimit *rlimits;
	struct strata_idmap *uidmap, *gidmap;
	struct strata_port *ports;
	int stop_signal;
	enum restart_mode restart;
	int restart_max;
	bool autoremove;
	long long log_max;
	char fs_options[96];         /* the daemon's -o beyond the layers */
};
/* cfg: the image's config when the caller has it loaded already (a
 * reference is taken), else NULL to load it. */
int ctr_spec_build(struct store *s, const char *id, json_t *rec, json_t *cfg, struct ctr_spec *sp);
void ctr_spec_free(struct ctr_spec *sp);
/* USER[:GROUP] with names looked up in the image, as UID and GID. */
int ctr_resolve_user(struct store *s, json_t *cfg, const char *spec, uid_t *uid, gid_t *gid);

/* monitor.c: start the container under a monitor detached from the
 * caller; returns 0 as soon as the command runs, else the exit code
 * (125) after reporting why. The container's lock is held by the caller
 * and stays held. */
int monitor_start_detached(struct ctr *c, struct ctr_spec *sp);
/* Run the monitor's loop in this process with the caller's stdio; drops
 * the container's lock while the container runs. Returns the exit code. */
int monitor_run_attached(struct ctr *c, struct ctr_spec *sp);
#endif

/* --env-file FILE (docker's format: KEY=VALUE lines, '#' comments and
 * blank lines skipped, a bare KEY takes the caller's value): its
 * variables appended to env. Says what is wrong and returns -errno. */
int env_file_read(const char *path, json_t *env);

/* Options of create/run, kept in the record (see cmd_run.c). Checks each
 * value the way start will use it, so a bad one fails at create. */
int ctr_check_options(json_t *opts);

#endif
