/* fs.h: strata-fs's internal interface, shared by the files that make up the
 * daemon (layer stack, node table, lookup, copy-up and the FUSE operations).
 * Nothing outside fs/ includes it. */
#ifndef STRATA_FS_H
#define STRATA_FS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include "err.h"
#include "opts.h"
#include "whiteout.h"
#include "lower.h"

struct node;
struct wa_dir;
struct sfs;
struct loop;         /* loop.c: the request loop's queue, watch and reader */
struct uring;        /* uring.c: the io_uring queues */
struct walkahead;    /* walkahead.c: read-ahead queue and threads */
struct fh;           /* ops_file.c: an open-file handle */
/* walkahead.c: what a listing does with the subdirectories it finds */
enum wa_mode {
	WA_OFF,      /* nothing to read ahead */
	WA_HOLD,     /* keep what the listing finds, for a walk that may begin below */
	WA_QUEUE,    /* a walk is on: read ahead what the listing finds */
};

/* ---- layers ---------------------------------------------------------- */

struct layer {
	int fd;           /* O_RDONLY|O_DIRECTORY of the layer's root; -1 for a packed layer */
	struct lower lo;  /* how its objects are read (lower.h): lo.pk for a packed layer */
	char *path;
	dev_t dev;
	uint64_t ino_tag; /* high bits that make inode numbers unique across filesystems */
};

/* ---- nodes ----------------------------------------------------------- */

/* One contributing layer of a merged directory. */
/* A set of names (open addressing). */
struct nameset {
	char **slot;
	size_t cap, n;
};
bool ns_has(const struct nameset *s, const char *name);
int ns_add(struct nameset *s, const char *name);   /* 1 added, 0 present, -ENOMEM */
void ns_free(struct nameset *s);

struct dlayer {
	uint32_t layer;
	int fd;           /* open O_RDONLY|O_DIRECTORY, or -1 when not cached
			   * (always -1 in a packed layer) */
	uint32_t pino;    /* in a packed layer: the directory's inode there */
	struct nameset *names; /* every entry of this lower directory, once listed */
};
/* Does layer i of dir hold NAME? 1 yes, 0 no, -1 unknown (not listed yet) */
int dl_has(struct node *dir, unsigned i, const char *name);
void dl_free_names(struct dlayer *dl, unsigned n);

struct dircache;

/* Where a lower layer holds a directory, where that is not at the
 * directory's own name in its parent's directory of the same layer: a bare
 * name there (a relative redirect), or "/a/b" from the layer's root. */
struct lower_at {
	uint32_t layer;
	char *path;
};
void lower_at_free(struct lower_at *lat, unsigned n);

/* A merged object. What guards each field, in brackets after it:
 *   [T] fs->table_lock      [L] the node's own lock     [D] its dl_lock
 *   [P] fs->pts.lock        [C] set before the node is in the tables, then fixed
 *   [A] atomic loads and stores only (node_layer(), node_metacopy() ...)
 * "[A; L]": atomics, and writers hold L as well. The order the locks nest
 * in (own lock -> parent's lock -> dl_lock -> table_lock) and what may
 * block under each: docs/locking.md. */
struct node {
	/* (fields ordered by size: a walk of a large tree keeps one node per
	 * entry the kernel holds, so padding is memory) */
	struct node *parent;     /* [T] merged parent; NULL for the root */
	char *name;              /* [T] */
	uint64_t nlookup;        /* [T] kernel references (LOOKUP minus FORGET) */
	uint64_t ino;            /* [T] inode number shown: stable across copy-up */
	dev_t rdev_real;         /* [T] identity of the real upper object, for hard links */
	ino_t rino_real;         /* [T] */
	struct node *cnext;      /* [T] (parent, name) hash chain */
	struct node *hnext;      /* [T] hard-link hash chain */
	pthread_mutex_t lock;    /* serialises copy-up of this node, and changes
				  * to this directory's upper; taken before the
				  * parent's, never after */

	/* directories */
	struct dlayer *dl;       /* [D] contributing layers, top first */
	char *redirect;          /* [T] the upper dir's overlay.redirect as found or
				  * written ("/a/b", or a bare name), or NULL */
	struct lower_at *lat;    /* [T] its lower layers' places that differ from its
				  * name (lookup.c, node.c) */
	pthread_rwlock_t *dl_lock;/* [C] guards dl/ndl: readers iterate, copy-up/rename
				  * replace (directories only: most nodes are files);
				  * readers go through dl_rdlock() */
	uint64_t version;        /* [T] bumped on every change of the listing */
	struct dircache *dcache; /* [T] merged listing for `version`, or NULL */
	unsigned ndl;            /* [D] */
	unsigned nlat;           /* [T] */

	unsigned refs;           /* [T] in-daemon references (open handles, ops in flight) */
	uint32_t layer;          /* [A; L, parent's L, T] layer holding the object
				  * (for dirs: the topmost); changes once, at copy-up */
	mode_t type;             /* [C] S_IFMT */
	int pathfd;              /* [parent's L] O_PATH fd kept once deleted while
				  * referenced, else -1; set once, by the thread that
				  * takes its name away, before the name goes */
	uint32_t pk_ino;         /* [A] the same for an object of a packed layer: its
				  * inode, else 0 */
	uint32_t listed_ms;      /* [T] when a listing of it last began (walkahead.c), 0 never */

	/* regular files whose upper holds only metadata (metacopy) */
	int32_t data_layer;      /* [A; L] layer holding the data, -1 when none */

	/* open regular files (passthrough.c) */
	int backing_id;          /* [P] the kernel's id of the backing file, 0 when none */
	unsigned pt_opens;       /* [P] handles open in passthrough mode */
	unsigned cached_opens;   /* [P] handles open in cached mode */
	unsigned pt_writers;     /* [P] opens for write and truncates under way (sharecache) */
	unsigned opens;          /* [A] handles open on it (ops_file.c) */

	bool hashed;             /* [T] in the hard-link table */
	bool deleted;            /* [T, atomic] unlinked or replaced in the merged view */
	bool detached;           /* [T, atomic] its recorded name is gone but other hard links live */
	bool in_ctab;            /* [T] */
	bool kcached;            /* [T] the kernel may hold a cached listing of it */
	bool lean_listed;        /* [A] last listed without attributes of its entries
				  * (ops_dir.c; a hint) */
	/* [A] a lower object found to carry no visible xattr: GETXATTR answers
	 * ENODATA without a system call (lower layers never change) */
	bool xa_none;
	bool metacopy;           /* [A; L] the upper holds metadata only */
	bool pt_used;            /* [A; P] written behind the kernel's page cache once */
	bool pt_lower;           /* [P] backing_id is a read-only lower file (sharecache) */
	bool prefilled;          /* [A] its lower data was given to the kernel's cache
				  * at an open (ops_file.c: prefill) */
};

/* ---- the mount ------------------------------------------------------- */

/* One mount: what ops reach through fuse_req_userdata(req) and pass down as
 * fs. Fields without a bracket are set up before requests are served and
 * fixed from then on; the others as for struct node ([T] table_lock, [A]
 * atomics, or the lock named). */
struct sfs {
	struct strata_opts opts;
	struct layer *layers;    /* [0] is the upper when has_upper; then lowers, top first */
	unsigned nlayers;
	bool has_upper;
	struct pk_cache *pk_cache; /* decompressed chunks of every packed layer */
	int workfd;              /* scratch directory inside workdir, same fs as upper */
	struct wh_policy whp;    /* try_mknod, share: [A] (wh_may_mknod() ...) */
	bool privileged;         /* trusted.* xattrs and chown work */
	bool no_dac;             /* no CAP_DAC_OVERRIDE: a plain user's daemon (fusermount3) */
	bool same_dev;           /* every layer on one filesystem: real inode numbers suffice */
	const char *xa_origin;   /* xattr recording the inode number a copy-up keeps */
	const char *xa_override; /* ownership override xattr written, or NULL */

	struct node *root;
	bool root_settled;       /* [A; settle_lock] root_settle() has cut the root's stack */
	/* the node tables and most of struct node: the innermost lock of
	 * the daemon (only module locks, leaves, may be taken under it);
	 * held for a few instructions, never across a disk wait */
	pthread_mutex_t table_lock;
	struct node **htab;      /* [T] hard links: real upper (dev, ino) -> node */
	size_t hsize;
	struct node **ctab;      /* [T] (parent, name) -> node, for live nodes */
	size_t csize;
	size_t nnodes;           /* [T] */
	uint64_t tmp_seq;        /* [A] names of scratch files in the workdir */

	int fd_budget;           /* how many directory fds nodes may keep open */
	int fd_used;             /* [A] */
	double timeout;
	bool pt;                 /* upper files use the kernel's passthrough (set at INIT) */
	cpu_set_t cpus;          /* the daemon's CPUs, before any thread pinned itself */
	struct fuse_session *se;

	/* The modules' own state, one per mount, made by serve() while it
	 * serves: ur and wa are freed at its end, loop is kept (a detached
	 * standby thread may still be leaving through it). */
	struct loop *loop;
	struct uring *ur;
	struct walkahead *wa;
	pthread_mutex_t settle_lock;  /* root_settle() runs once; takes the root's
				       * dl_lock under it */
	uint64_t cookie_seed;         /* [A] readdir cookies' hash seed (readdir.c) */
	/* open handles (ops_file.c), closed at unmount if the kernel never
	 * released them (a mapping outliving it); under open_lock */
	pthread_mutex_t open_lock;
	struct fh *open_list;
	/* lean listings (ops_dir.c): entries given lean, and lookups under
	 * lean-listed directories since ([A]); lean.lock serialises the choice */
	struct {
		pthread_mutex_t lock;
		unsigned lean, used;
		bool full;
		unsigned since_probe;
	} lean;
	/* passthrough (passthrough.c): offered, killpriv_v2, stack_depth are
	 * set while INIT is served, before other requests; broken [P] */
	struct {
		bool offered;        /* the kernel's INIT offered passthrough */
		bool killpriv_v2;    /* ... and FUSE_HANDLE_KILLPRIV_V2 */
		bool broken;         /* a registration failed: stay in cached mode */
		bool share;          /* sharecache: read-only opens of lower files too */
		bool dio_mmap;       /* the kernel's INIT offered FUSE_DIRECT_IO_ALLOW_MMAP */
		bool direct;         /* sharecache=direct, with the kernel's leave */
		unsigned stack_depth;
		pthread_mutex_t lock;    /* a leaf: registration of backing files */
		pthread_cond_t released; /* a lower backing file went (share) */
	} pts;
	/* The mount this daemon made itself, watched in its mount namespace
	 * (main.c): mntinfo_fd is /proc/self/mountinfo (-1: not watched, as
	 * for /dev/fd/N), mnt_dev its superblock; mnt_gone [A] once no mount
	 * of it is left there. */
	int mntinfo_fd;
	dev_t mnt_dev;
	bool mnt_gone;
};


/* main.c: cut the root's layers at the first opaque layer root, once. */
void root_settle(struct sfs *fs);

/* Take DIR's layer list (dl, ndl) for reading, to iterate its layers.
 * Readers of dl[0] alone may take dl_lock directly: the root's top
 * layer is known before root_settle(). */
static inline void dl_rdlock(struct sfs *fs, struct node *dir)
{
	if (dir == fs->root && !__atomic_load_n(&fs->root_settled, __ATOMIC_ACQUIRE))
		root_settle(fs);
	pthread_rwlock_rdlock(dir->dl_lock);
}

/* A node's layer and metacopy flag change once, at copy-up (under its
 * own lock, its parent's and table_lock) while other threads read them
 * without a lock: both sides go through these. */
static inline uint32_t node_layer(const struct node *n)
{
	return __atomic_load_n(&n->layer, __ATOMIC_ACQUIRE);
}

static inline bool node_metacopy(const struct node *n)
{
	return __atomic_load_n(&n->metacopy, __ATOMIC_ACQUIRE);
}

/* deleted and detached are written under table_lock and read by request
 * threads that do not hold it (a stale answer is taken as the state just
 * before or after, as with any lookup): both sides go through atomics. */
static inline bool node_deleted(const struct node *n)
{
	return __atomic_load_n(&n->deleted, __ATOMIC_ACQUIRE);
}

static inline bool node_detached(const struct node *n)
{
	return __atomic_load_n(&n->detached, __ATOMIC_ACQUIRE);
}

static inline bool is_upper(struct sfs *fs, uint32_t layer)
{
	return fs->has_upper && layer == 0;
}

/* layer.c */
int layers_open(struct sfs *fs);
void layers_close(struct sfs *fs);
uint64_t layer_ino(struct sfs *fs, uint32_t layer, const struct stat *st);

/* node.c */
struct node *node_new(struct sfs *fs, struct node *parent, const char *name, mode_t type);
struct node *node_get(struct sfs *fs, fuse_ino_t ino);   /* nodeid -> node */
fuse_ino_t node_id(struct sfs *fs, struct node *n);
void node_ref(struct sfs *fs, struct node *n);
void node_unref(struct sfs *fs, struct node *n);
void node_forget(struct sfs *fs, struct node *n, uint64_t nlookup);
void node_set_name(struct sfs *fs, struct node *n, struct node *parent, const char *name);
struct node *node_hash_find(struct sfs *fs, dev_t dev, ino_t ino);
void node_hash_add(struct sfs *fs, struct node *n, dev_t dev, ino_t ino);
void node_hash_del(struct sfs *fs, struct node *n);
void node_mark_deleted(struct sfs *fs, struct node *n);
/* Hold on to the object a node names now (an O_PATH fd), before its name
 * is taken by something else. */
void node_keep_path(struct sfs *fs, struct node *n);
void node_detach(struct sfs *fs, struct node *n);
struct node *node_child_find(struct sfs *fs, struct node *parent, const char *name);
void node_child_add(struct sfs *fs, struct node *n);
void node_dir_changed(struct sfs *fs, struct node *dir);
/* Forget the cached listing dc of dir, if it is still the current one. */
void node_drop_listing(struct sfs *fs, struct node *dir, struct dircache *dc);
/* A directory's fd in its i-th contributing layer: cached, or opened now
 * (then *tmp is set and the caller closes it). */
int node_dlfd(struct sfs *fs, struct node *dir, unsigned i, bool *tmp);
/* The fd of the directory in the upper layer, or -1 when it has none. */
int node_upperfd(struct sfs *fs, struct node *dir);
void node_set_dlayers(struct sfs *fs, struct node *dir, struct dlayer *dl, unsigned n);
/* The absolute redirect for dir moving to another directory, as kernel
 * overlayfs builds it (names, and its own and its ancestors' redirects):
 * 0 and *out (malloc'd), or -errno. */
int node_redirect_path(struct sfs *fs, struct node *dir, char **out);
/* Where each lower layer of dir holds it now, as paths from the layers'
 * roots: what finds them once dir moves (node_set_lower_at after the move). */
int node_pin_lower(struct sfs *fs, struct node *dir, struct lower_at **lat, unsigned *n);
void node_set_lower_at(struct sfs *fs, struct node *dir, struct lower_at *lat, unsigned n);

/* lookup.c */
struct lookup_res {
	struct stat st;
	uint32_t layer;
	struct dlayer *dl;    /* for directories */
	unsigned ndl;
	char *redirect;       /* the upper directory's redirect, as stored */
	struct lower_at *lat; /* where lower layers hold the directory, if not at NAME */
	unsigned nlat;
	bool metacopy;
	int32_t data_layer;
	uint64_t ino;
};
/* Look NAME up in merged directory DIR. 0 with *res filled, or -ENOENT. */
int lookup_name(struct sfs *fs, struct node *dir, const char *name, struct lookup_res *res);
void lookup_res_free(struct lookup_res *res);
/* Is NAME visible in one of DIR's layers below the upper? 1, 0 or -errno. */
int name_in_lowers(struct sfs *fs, struct node *dir, const char *name);
/* Find or create the node for a lookup result, taking one kernel reference. */
struct node *node_from_lookup(struct sfs *fs, struct node *dir, const char *name, struct lookup_res *res);
/* Stat the object behind a node (with ownership presentation applied). */
int node_stat(struct sfs *fs, struct node *n, struct stat *st);
void present_stat(struct sfs *fs, struct node *n, struct stat *st, int fd, int dirfd, const char *name);

/* readdir.c */
struct dentry_rec {
	char *name;
	uint64_t ino;
	uint64_t cookie;  /* readdir offset after this entry: from the name's hash */
	mode_t type;
};
struct dircache {
	unsigned refs;
	uint64_t version;
	struct dentry_rec *ents;
	size_t n;
};
/* The merged listing, ordered by cookie: an entry keeps its offset however
 * the directory changes around it, so a reader resuming at an offset sees
 * every entry that stayed exactly once, with no state kept between calls
 * (as ext4's hashed offsets). Cookies 1 and 2 are "." and "..". */
int dir_listing(struct sfs *fs, struct node *dir, struct dircache **out);
/* The same, and what to do with the subdirectories it finds in the layers
 * (walkahead.c). */
int dir_listing_ahead(struct sfs *fs, struct node *dir, struct dircache **out, enum wa_mode ahead);
/* The order of NAME in every listing (its cookie is derived from it). */
uint64_t cookie_hash(struct sfs *fs, const char *name);
/* Index of the first entry after offset off (off > 2) */
size_t dir_seek(const struct dircache *dc, uint64_t off);
void dircache_put(struct dircache *dc);
/* 1 when the merged directory holds nothing, 0 when it does, -errno. */
int dir_is_empty(struct sfs *fs, struct node *dir);

/* copyup.c */
int copyup_dir(struct sfs *fs, struct node *dir);   /* ensure the dir exists in upper */
enum cu_how {
	CU_META,   /* a metadata change: a metacopy where allowed */
	CU_DATA,   /* data will change: a full copy */
	CU_EMPTY,  /* about to be truncated to zero: metadata, no data */
};
int copyup(struct sfs *fs, struct node *n, enum cu_how how);
int copyup_tmpname(struct sfs *fs, char *buf, size_t len);
/* Inode origins of unprivileged copies that cannot hold xattrs themselves
 * (symlinks, special files), kept on the upper parent directory. */
void origin_in_parent_set(int pdirfd, const char *name, uint64_t ino);
uint64_t origin_in_parent_get(int pdirfd, const char *name);
void origin_in_parent_clear(struct sfs *fs, int pdirfd, const char *name);
int copy_xattrs(int srcfd, int dstfd);
int upper_set_owner(struct sfs *fs, int dirfd, const char *name, int fd, uid_t uid, gid_t gid, mode_t mode);
/* Owner and mode kept in the override xattr ("uid:gid:0mode"). */
int override_write(struct sfs *fs, int dirfd, const char *name, int fd, uid_t uid, gid_t gid, mode_t mode);
/* The bits an owner needs to use an object (rw for files, rwx for dirs). */
mode_t owner_access(mode_t mode);
/* Would a daemon without CAP_DAC_OVERRIDE lose access to an object of MODE? */
bool needs_owner_access(struct sfs *fs, mode_t mode);

/* xattr helpers (xattr.c): xattrs of NAME in dirfd without following symlinks */
ssize_t xa_get(int dirfd, const char *name, const char *key, void *buf, size_t sz);
int xa_set(int dirfd, const char *name, const char *key, const void *v, size_t sz, int flags);
ssize_t xa_list(int dirfd, const char *name, char *buf, size_t sz);
int xa_remove(int dirfd, const char *name, const char *key);
bool xa_is_private(const char *key);

/* Monotonic clock in nanoseconds, for the request loops' timing. */
static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* main.c: is a mount of our superblock left in our mount namespace? */
bool mount_present(struct sfs *fs);

/* loop.c: serve requests until unmounted; 0 workers = one thread */
int serve(struct sfs *fs, struct fuse_session *se, unsigned nworkers);
/* The arguments of the request this thread serves, as the kernel sent them,
 * if it is OPCODE with at least SIZE bytes of them (else NULL): for fields
 * libfuse 3.14 does not pass on. */
const void *loop_request_arg(uint32_t opcode, size_t size);
/* Serve one raw request (as /dev/fuse gives it) on this thread. */
void loop_process(struct sfs *fs, void *mem, size_t size);
/* Hand a request that may block for long to a worker (copied); ctx goes
 * to uring_serve_job. false: serve it yourself. */
bool loop_offload(struct sfs *fs, const void *mem, size_t size, void *ctx);

/* uring.c: FUSE over io_uring, per-CPU queues (Linux 6.14+, when the
 * fuse module's enable_uring is on) */
/* loop.c/passthrough.c around INIT: what the kernel offered (flags2) */
int uring_init(struct sfs *fs);
void uring_note_init(struct sfs *fs, uint32_t flags2);
bool uring_wanted(struct sfs *fs);
/* the INIT reply: ask for io_uring, note the sizes the buffers need */
void uring_complete_init(struct sfs *fs, uint32_t *flags2, uint32_t max_write, uint32_t max_pages);
/* after INIT is answered: register the queues (0, or -errno and requests
 * stay on /dev/fuse) */
int uring_start(struct sfs *fs, struct fuse_session *se);
void uring_stop(struct sfs *fs);
/* The session's writev: a reply to the io_uring request this thread
 * serves goes into its entry (true, *ret set), else false. */
bool uring_capture(struct sfs *fs, const struct iovec *iov, int count, ssize_t *ret);
/* Send the replies this thread has queued (before a notification, which
 * the kernel may hold until they arrive). */
void uring_flush(void);
/* Where the reply's data may be built in place (the io_uring entry's
 * payload, *cap bytes), or NULL: reply as usual. */
char *uring_reply_area(size_t *cap);
/* A worker serving an io_uring request. */
void uring_serve_job(struct sfs *fs, void *ctx, void *mem, size_t size);

/* walkahead.c: metadata read-ahead for tree walks */
int wa_init(struct sfs *fs);
void wa_stop(struct sfs *fs);
/* A listing of dir begins: what to do with the subdirectories it finds. */
enum wa_mode wa_listing(struct sfs *fs, struct node *dir);
/* The subdirectories a listing finds in one layer's directory dirfd, by
 * their names and inode numbers. owner: the listed directory's inode
 * number. */
struct wa_item {
	struct wa_dir *parent;
	char *name;
	uint64_t ino;
	uint64_t order;      /* where the client meets it in the listing */
	unsigned depth;
};
struct wa_batch {
	struct sfs *fs;
	int srcfd;           /* the directory listed, -1: nothing to do */
	struct wa_dir *dir;  /* its descriptor of our own, once a subdirectory is added */
	dev_t dev;
	enum wa_mode mode;
	uint64_t owner;
	uint32_t layer;
	unsigned depth;      /* of the subdirectories added */
	struct wa_item *items;
	size_t n, cap;
};
void wa_batch_begin(struct sfs *fs, struct wa_batch *b, int dirfd, enum wa_mode mode, uint64_t owner,
		    uint32_t layer);
void wa_batch_add(struct wa_batch *b, const char *name, uint64_t ino);
void wa_batch_end(struct wa_batch *b);
/* Read-ahead threads at work now (they run SCHED_IDLE: not load). */
unsigned wa_busy(struct sfs *fs);

/* place.c: scheduling of the threads that serve requests */
struct place {
	struct sfs *fs;
	int statfd, loadfd;
	unsigned ncpu;
	cpu_set_t allowed;       /* the daemon's CPUs (fs->cpus) */
	int home;                /* CPU it serves from, -1: anywhere */
	bool floating;           /* unpinned while requests wait (place_served) */
	unsigned float_reqs;     /* requests served since it was unpinned */
	uint64_t float_until, no_float_until;
	bool idle, was_busy;
	bool no_wait_check;  /* its waits on the run queue are not a sign of load */
	uint64_t t_check, delay_check, hold_until;
	/* A thread that may not turn back from SCHED_IDLE goes there only once
	 * before_idle() has set up a way out (a standby thread, loop.c), and
	 * when it must run SCHED_OTHER again, stuck says so. */
	bool (*before_idle)(struct sfs *fs);
	bool stuck;
};
/* May a thread go from SCHED_IDLE back to SCHED_OTHER? */
bool place_may_turn_back(void);
/* For the calling thread: SCHED_IDLE while the machine is quiet, so the
 * clients it wakes stay on their CPU; SCHED_OTHER while it is busy.
 * place_check() looks again every 5 ms (first: now). before_idle: NULL
 * where the thread may turn back, else see struct place. */
void place_open(struct sfs *fs, struct place *p, bool (*before_idle)(struct sfs *fs));
void place_check(struct place *p, bool first);
void place_close(struct place *p);
/* Serve from CPU cpu (pinned there, unless floating). */
void place_home(struct place *p, int cpu);
/* A request served from t0 to t1: one that waited (for the disk) lets
 * the thread float for a while, to wake where the interrupt comes in. */
void place_served(struct place *p, uint64_t t0, uint64_t t1);
/* The CPU thread tid last ran on, or -1. */
int place_cpu_of(uint32_t tid);
/* Shutting down: every thread of the daemon back at SCHED_OTHER on all its
 * CPUs (where it may turn back), so none waits behind the load to exit. */
void place_all_to_front(struct sfs *fs);
/* A thread without an I/O priority of its own takes it from its
 * scheduling policy, and SCHED_IDLE means idle-class I/O: give it the
 * best-effort level of its nice value (an ionice of the daemon stays). */
void keep_io_priority(void);

/* ops_attr.c */
bool mode_is_setid(mode_t mode);   /* S_ISUID or S_ISGID: a write may drop them */
/* Drop set-user-ID and set-group-ID, as a write by a user without
 * CAP_FSETID does (FUSE_HANDLE_KILLPRIV_V2 leaves it to us); req is the
 * writer's request, or NULL when unknown (then both bits go). */
int node_kill_setid(struct sfs *fs, struct node *n, fuse_req_t req);

/* passthrough.c: the kernel's FUSE passthrough for upper files */
/* Does the daemon hold capability CAP_BIT in the initial user namespace? */
bool has_init_cap(int cap_bit);
/* loop.c around serving INIT: begin=true before, false after */
void pt_note_init(struct sfs *fs, const void *arg, size_t size, bool begin);
/* op_init: may upper files use passthrough? Sets fs->pt. */
bool pt_negotiate(struct sfs *fs);
/* After mounting: replies go through the code that completes them. */
int pt_install(struct fuse_session *se);
/* An open of n (open(2) FLAGS) through fd: the backing id to hand the
 * kernel, 0 for cached mode, or -ETXTBSY (a write while the kernel holds n
 * passed through to its lower file). *counted: pt_release() must follow. */
int pt_open(struct sfs *fs, struct node *n, int fd, int flags, bool *counted);
void pt_release(struct sfs *fs, struct node *n, int id);
/* Around an open for write or a truncate of n (copy-up included): 0, or
 * -ETXTBSY while read-only descriptors read n's lower file directly
 * (sharecache); pt_write_end() follows a 0. */
int pt_write_begin(struct sfs *fs, struct node *n);
void pt_write_end(struct sfs *fs, struct node *n);
/* The next OPEN/CREATE reply of this thread carries backing id (0: none). */
void pt_reply_with(int id);

/* ops_*.c: FUSE operations */
void op_init(void *ud, struct fuse_conn_info *conn);
void op_destroy(void *ud);
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi);
void op_readlink(fuse_req_t req, fuse_ino_t ino);
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned int flags);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *bufv, off_t off, struct fuse_file_info *fi);
void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi);
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len, int flags);
void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
/* A LOOKUP under parent: did the client need what a lean listing left out? */
void readdir_note_lookup(struct sfs *fs, struct node *dir);
/* Are listings lean now (clients do not look up the files they list)? */
bool readdir_lean_now(struct sfs *fs);
void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags);
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
void op_tmpfile(fuse_req_t req, fuse_ino_t parent, mode_t mode, struct fuse_file_info *fi);

/* ops_file.c: open-file handles */
int fh_new(struct sfs *fs, struct node *n, int fd, int flags, struct fuse_file_info *fi);
/* Reply to OPEN (e NULL) or CREATE for a handle fh_new() made. */
int fh_reply_open(fuse_req_t req, struct fuse_file_info *fi, const struct fuse_entry_param *e);
void fh_free_fi(struct sfs *fs, struct fuse_file_info *fi);
int fh_fd(struct fuse_file_info *fi);   /* the handle's fd, -1 without one */
/* Close handles the kernel never released (at unmount). */
void fh_close_all(struct sfs *fs);

/* Shared by the ops: fill a fuse_entry_param for node n. */
int fill_entry(struct sfs *fs, struct node *n, struct fuse_entry_param *e);
/* The same from the stat a lookup just took of the object. */
int fill_entry_st(struct sfs *fs, struct node *n, const struct stat *st, struct fuse_entry_param *e);
/* open(2) flags for an upper or lower object from those of a FUSE open:
 * no O_CREAT/O_EXCL, O_CLOEXEC|O_NOFOLLOW, and read-write without O_APPEND
 * where the writeback cache or a passthrough backing file needs it. */
int real_flags(struct sfs *fs, int flags);
/* Open the object behind n (flags as open(2), no O_CREAT). */
int node_open(struct sfs *fs, struct node *n, int flags);
/* Where a node's object lives: dirfd + name in its layer, or, for an object
 * already unlinked but still referenced, AT_FDCWD + "/proc/self/fd/N" of a
 * kept O_PATH fd (then follow is AT_SYMLINK_FOLLOW: the magic link leads to
 * the object itself). */
struct loc {
	int dirfd;
	char name[NAME_MAX + 1];
	int nofollow;      /* AT_SYMLINK_NOFOLLOW, or 0 for a /proc path */
	bool tmp;          /* dirfd is ours to close */
	uint32_t layer;
	uint32_t pino;     /* an object of a packed layer: its inode (dirfd -1), else 0 */
};
int loc_get(struct sfs *fs, struct node *n, struct loc *l);
/* The object at a node's name in another of its parent's layers (the lower
 * data of a metacopy). */
int loc_get_layer(struct sfs *fs, struct node *n, uint32_t layer, struct loc *l);
void loc_put(struct loc *l);
/* node.c: the object at a loc, whichever kind of layer holds it */
static inline bool layer_packed(struct sfs *fs, uint32_t layer)
{
	return fs->layers[layer].lo.pk != NULL;
}
int loc_stat(struct sfs *fs, const struct loc *l, struct stat *st);
ssize_t loc_xa_get(struct sfs *fs, const struct loc *l, const char *key, void *buf, size_t sz);
ssize_t loc_xa_list(struct sfs *fs, const struct loc *l, char *buf, size_t sz);
ssize_t loc_readlink(struct sfs *fs, const struct loc *l, char *buf, size_t sz);
/* The object named NAME in packed directory PINO of LAYER (lookups that
 * found it before): its inode, or -errno. */
int pk_child(struct sfs *fs, uint32_t layer, uint32_t pino, const char *name, uint32_t *child);
/* uid/gid of the request, as stored on disk */
void req_owner(struct sfs *fs, fuse_req_t req, uid_t *uid, gid_t *gid);

#endif
