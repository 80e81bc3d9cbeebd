/* walkahead.c: metadata read-ahead for tree walks.
 *
 * A walk (find, ls -R, du, tar, chown -R, rm -rf) lists a directory, then
 * each of its subdirectories in turn; each costs a few synchronous disk
 * reads in the lower filesystem (the directory's blocks, then its entries'
 * inodes), one at a time, while the disk could serve many at once (4 KiB
 * reads on the test machine: 14k/s one at a time, 100k/s sixteen at a
 * time), and while the CPU the walk runs on waits for them or serves
 * requests, the other CPUs have nothing to do. Once a walk is seen (a
 * directory listed soon after its parent), the subdirectories a listing
 * finds in each layer are read ahead by a few threads on the other CPUs:
 * opened, listed and their entries stat'ed, two levels deep, which leaves
 * the lower filesystem's blocks, inodes and names in the kernel's caches
 * for when the walk gets there. The subdirectories of the last listing
 * before a walk is seen are held until it is (its parent's other
 * children, all of them in a walk of a flat stack). Nothing is kept here
 * but the queue: the walk itself still reads everything through the
 * normal paths, so a read-ahead that comes late or not at all changes
 * only the time.
 *
 * Order: a walk goes depth first, so the newest batch is read first
 * (a stack of batches), each batch in the order the client will see its
 * entries. The threads run SCHED_IDLE, so they never take a CPU from a
 * client or a request, with best-effort I/O priority (an idle-class read
 * would wait behind every other one and stall the walk that catches up
 * with it). */
#include "fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 4
#define DEPTH 2          /* levels below a listed directory read ahead */
#define QCAP 2048        /* queued directories; the oldest go first when full */
#define SEEN 8192        /* directories recently queued, by (dev, ino): not twice */
#define HELD 64          /* batches held from the last listing before a walk */
#define FDS 256          /* directories held open for the queue, at most */
#define WALK_NS 1000000000ull  /* a walk is on for this long after it was last seen */

struct wa_dir {          /* an open directory whose subdirectories are queued */
	int fd;
	unsigned refs;
	dev_t dev;
};

/* A mount's read-ahead (fs->wa): its queue, its threads and what they
 * hold open. */
struct walkahead {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct wa_item q[QCAP];   /* ring: [head, head+n) oldest first; the top is newest */
	size_t head, n;
	uint64_t seen[SEEN];
	struct wa_batch held[HELD];
	unsigned nheld;
	uint64_t held_owner;      /* inode number of the directory they were found in */
	pthread_t th[THREADS];
	unsigned nth;
	bool started, stop;
	unsigned busy;            /* threads reading ahead now; written under lock, read
				   * without it by wa_busy(): atomic */
	unsigned fds;             /* struct wa_dir open */
	uint64_t walk_until;      /* mono_ns */
	int walker_cpu;           /* where the walk's requests were last served */
};

int wa_init(struct sfs *fs)
{
	struct walkahead *wa = calloc(1, sizeof *wa);
	if (!wa)
		return -ENOMEM;
	pthread_mutex_init(&wa->lock, NULL);
	pthread_cond_init(&wa->cond, NULL);
	fs->wa = wa;
	return 0;
}

static void dir_put(struct walkahead *wa, struct wa_dir *d)
{
	/* under wa->lock */
	if (--d->refs == 0) {
		close(d->fd);
		free(d);
		wa->fds--;
	}
}

static void item_free(struct walkahead *wa, struct wa_item *it)
{
	/* under wa->lock */
	dir_put(wa, it->parent);
	free(it->name);
}

static void drop_oldest(struct walkahead *wa)
{
	/* under wa->lock, wa->n > 0 */
	item_free(wa, &wa->q[wa->head]);
	wa->head = (wa->head + 1) % QCAP;
	wa->n--;
}

/* Not queued before (recently)? Marks it. Under wa->lock. */
static bool first_time(struct walkahead *wa, dev_t dev, uint64_t ino)
{
	uint64_t key = ((uint64_t)dev << 40) ^ ino ^ ((uint64_t)dev >> 24);
	key = key ? key : 1;
	uint64_t *slot = &wa->seen[(key * 0x9e3779b97f4a7c15ull) >> 51];
	if (*slot == key)
		return false;
	*slot = key;
	return true;
}

/* Drop a batch's items and its hold on the directory. Under wa->lock. */
static void batch_free(struct walkahead *wa, struct wa_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->items[i].name);
	free(b->items);
	if (b->dir)
		dir_put(wa, b->dir);
	b->items = NULL;
	b->n = b->cap = 0;
	b->dir = NULL;
}

static int by_order(const void *a, const void *b)
{
	const struct wa_item *x = a, *y = b;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Queue a batch's directories (but skip), newest on top, and free it.
 * Under wa->lock. */
static void enqueue(struct walkahead *wa, struct wa_batch *b, const char *skip)
{
	if (b->n > 1)
		qsort(b->items, b->n, sizeof *b->items, by_order);
	/* the first entry on top: it is the one the walk reaches first */
	for (size_t i = b->n; i-- > 0;) {
		struct wa_item *it = &b->items[i];
		if (wa->stop || (skip && !strcmp(it->name, skip)) || !first_time(wa, b->dev, it->ino)) {
			free(it->name);
			continue;
		}
		if (wa->n == QCAP)
			drop_oldest(wa);
		b->dir->refs++;
		wa->q[(wa->head + wa->n++) % QCAP] = *it;
	}
	b->n = 0;
	batch_free(wa, b);
	pthread_cond_broadcast(&wa->cond);
}

static void drop_held(struct walkahead *wa)
{
	/* under wa->lock */
	for (unsigned i = 0; i < wa->nheld; i++)
		batch_free(wa, &wa->held[i]);
	wa->nheld = 0;
}

static void warm(struct sfs *fs, struct wa_item *it);

static void *wa_main(void *arg)
{
	struct sfs *fs = arg;
	struct walkahead *wa = fs->wa;
	struct sched_param sp = { 0 };
	sched_setscheduler(0, SCHED_IDLE, &sp);
	keep_io_priority();
	/* the daemon's CPUs: the thread that started this one (and the
	 * reader) may have been pinned to one */
	cpu_set_t allowed = fs->cpus;
	sched_setaffinity(0, sizeof allowed, &allowed);
	int away = -1;      /* the CPU this thread keeps off */
	pthread_mutex_lock(&wa->lock);
	for (;;) {
		while (!wa->stop && wa->n == 0)
			pthread_cond_wait(&wa->cond, &wa->lock);
		if (wa->stop)
			break;
		/* Off the walker's CPU. A CPU that runs only SCHED_IDLE
		 * threads counts as idle, and the load balancer moves the
		 * walker to it: ls -lR of the image moved 300-1100 times
		 * (each move: requests to the other queue, cold caches;
		 * 160-230 ms), kept off, 4-13 times (136-140 ms). */
		if (wa->walker_cpu != away && CPU_COUNT(&allowed) > 1) {
			cpu_set_t set = allowed;
			away = wa->walker_cpu;
			if (away >= 0 && CPU_ISSET(away, &set))
				CPU_CLR(away, &set);
			sched_setaffinity(0, sizeof set, &set);
		}
		struct wa_item it = wa->q[(wa->head + --wa->n) % QCAP];
		__atomic_fetch_add(&wa->busy, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&wa->lock);
		warm(fs, &it);
		pthread_mutex_lock(&wa->lock);
		__atomic_fetch_sub(&wa->busy, 1, __ATOMIC_RELAXED);
		item_free(wa, &it);
	}
	pthread_mutex_unlock(&wa->lock);
	return NULL;
}

static void start_threads(struct sfs *fs)
{
	struct walkahead *wa = fs->wa;
	/* under wa->lock */
	wa->started = true;
	for (unsigned i = 0; i < THREADS; i++) {
		if (pthread_create(&wa->th[wa->nth], NULL, wa_main, fs) != 0) {
			sdebug("walkahead: pthread_create: %s; walks go without read-ahead",
			       strerror(errno));
			break;
		}
		pthread_setname_np(wa->th[wa->nth], "strata-ahead");
		wa->nth++;
	}
}

static bool batch_setup(struct wa_batch *b);

/* Queue held batches of dir's parent, now that a walk is seen: each
 * gets the parent's directory in its layer (the listing before kept none
 * open, as most listings are no walk's). */
static void release(struct sfs *fs, struct node *dir, struct wa_batch *rel, unsigned n, const char *skip)
{
	struct walkahead *wa = fs->wa;
	pthread_mutex_lock(&fs->table_lock);
	struct node *p = dir->parent;
	if (p)
		p->refs++;
	pthread_mutex_unlock(&fs->table_lock);
	for (unsigned k = 0; k < n; k++) {
		struct wa_batch *b = &rel[k];
		int fd = -1;
		bool tmp = false;
		if (p && S_ISDIR(p->type)) {
			dl_rdlock(fs, p);
			for (unsigned i = 0; i < p->ndl && fd < 0; i++)
				if (p->dl[i].layer == b->layer)
					fd = node_dlfd(fs, p, i, &tmp);
			pthread_rwlock_unlock(p->dl_lock);
		}
		b->srcfd = fd;
		bool ok = fd >= 0 && batch_setup(b);
		if (tmp && fd >= 0)
			close(fd);
		pthread_mutex_lock(&wa->lock);
		if (ok) {
			for (size_t i = 0; i < b->n; i++)
				b->items[i].parent = b->dir;
			enqueue(wa, b, skip);
		} else {
			batch_free(wa, b);
		}
		pthread_mutex_unlock(&wa->lock);
	}
	if (p)
		node_unref(fs, p);
}

enum wa_mode wa_listing(struct sfs *fs, struct node *dir)
{
	uint64_t now = mono_ns();
	char name[NAME_MAX + 1] = "";
	pthread_mutex_lock(&fs->table_lock);
	struct node *p = dir->parent;
	uint32_t ms = (uint32_t)(now / 1000000u);   /* wraps: only differences count */
	bool child_of_recent = p && p->listed_ms && ms - p->listed_ms < WALK_NS / 1000000u;
	uint64_t pino = p ? p->ino : 0;
	dir->listed_ms = ms ? ms : 1;
	if (dir->name && strlen(dir->name) < sizeof name)
		strcpy(name, dir->name);
	pthread_mutex_unlock(&fs->table_lock);

	struct walkahead *wa = fs->wa;
	pthread_mutex_lock(&wa->lock);
	if (child_of_recent)
		wa->walk_until = now + WALK_NS;
	wa->walker_cpu = sched_getcpu();
	bool on = !wa->stop && now < wa->walk_until;
	if (on && !wa->started)
		start_threads(fs);
	on = on && wa->nth > 0;
	struct wa_batch rel[HELD];
	unsigned nrel = 0;
	if (on && wa->nheld && wa->held_owner == pino && pino) {
		/* the walk began at the parent: its other children next */
		memcpy(rel, wa->held, wa->nheld * sizeof *rel);
		nrel = wa->nheld;
		wa->nheld = 0;
	}
	enum wa_mode mode = wa->stop ? WA_OFF : on ? WA_QUEUE : WA_HOLD;
	pthread_mutex_unlock(&wa->lock);
	if (nrel)
		release(fs, dir, rel, nrel, name);
	return mode;
}

void wa_batch_begin(struct sfs *fs, struct wa_batch *b, int dirfd, enum wa_mode mode, uint64_t owner,
		    uint32_t layer)
{
	memset(b, 0, sizeof *b);
	b->fs = fs;
	b->srcfd = mode == WA_OFF ? -1 : dirfd;
	b->mode = mode;
	b->owner = owner;
	b->layer = layer;
	b->dev = layer < fs->nlayers ? fs->layers[layer].dev : 0;
	b->depth = 1;
}

/* The batch's own descriptor of its directory, taken at its first
 * subdirectory (most listings of a deep stack find none in most layers),
 * unless too many are open already. */
static bool batch_setup(struct wa_batch *b)
{
	struct walkahead *wa = b->fs->wa;
	pthread_mutex_lock(&wa->lock);
	bool room = wa->fds < FDS && !wa->stop;
	if (room)
		wa->fds++;
	pthread_mutex_unlock(&wa->lock);
	if (room && (b->dir = malloc(sizeof *b->dir))) {
		if ((b->dir->fd = fcntl(b->srcfd, F_DUPFD_CLOEXEC, 0)) >= 0) {
			b->dir->refs = 1;   /* the batch's own, dropped when it is queued or freed */
			b->dir->dev = b->dev;
			return true;
		}
		free(b->dir);
		b->dir = NULL;
	}
	if (room) {
		pthread_mutex_lock(&wa->lock);
		wa->fds--;
		pthread_mutex_unlock(&wa->lock);
	}
	b->srcfd = -1;   /* nothing more for this batch */
	return false;
}

void wa_batch_add(struct wa_batch *b, const char *name, uint64_t ino)
{
	/* held batches keep names only: a descriptor once a walk is seen;
	 * no more names than the queue holds (a layer may hold millions) */
	if (b->srcfd < 0 || b->n >= QCAP || (b->mode == WA_QUEUE && !b->dir && !batch_setup(b)))
		return;
	if (b->n == b->cap) {
		size_t nc = b->cap ? b->cap * 2 : 16;
		struct wa_item *ni = realloc(b->items, nc * sizeof *ni);
		if (!ni)
			return;
		b->items = ni;
		b->cap = nc;
	}
	char *nm = strdup(name);
	if (!nm)
		return;
	b->items[b->n++] = (struct wa_item){ .parent = b->dir, .name = nm, .ino = ino,
					     .depth = b->depth, .order = cookie_hash(b->fs, nm) };
}

void wa_batch_end(struct wa_batch *b)
{
	struct walkahead *wa = b->fs->wa;
	if (!b->n) {
		free(b->items);
		if (b->dir) {
			pthread_mutex_lock(&wa->lock);
			dir_put(wa, b->dir);
			pthread_mutex_unlock(&wa->lock);
		}
		return;
	}
	pthread_mutex_lock(&wa->lock);
	if (b->mode == WA_QUEUE) {
		enqueue(wa, b, NULL);
	} else {
		/* held for a walk that may start below this directory */
		if (wa->held_owner != b->owner)
			drop_held(wa);
		wa->held_owner = b->owner;
		if (wa->nheld < HELD && !wa->stop)
			wa->held[wa->nheld++] = *b;
		else
			batch_free(wa, b);
	}
	pthread_mutex_unlock(&wa->lock);
}

struct dent {            /* what getdents64 returns */
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* Read one directory ahead: its blocks, its entries' inodes, and queue
 * its subdirectories while not too deep. */
static void warm(struct sfs *fs, struct wa_item *it)
{
	_cleanup_close_ int fd = openat(it->parent->fd, it->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	struct wa_batch sub;
	wa_batch_begin(fs, &sub, fd, it->depth < DEPTH ? WA_QUEUE : WA_OFF, 0, UINT32_MAX);
	sub.dev = it->parent->dev;
	sub.depth = it->depth + 1;
	/* a walk that does not look its files up (find -type f) gets
	 * them listed without attributes: their inodes would be read for
	 * nothing (directories are looked up either way) */
	bool files_too = !readdir_lean_now(fs);
	char buf[32768];
	long n;
	while (!__atomic_load_n(&fs->wa->stop, __ATOMIC_RELAXED) &&
	       (n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
		for (long off = 0; off < n;) {
			struct dent *de = (struct dent *)(buf + off);
			off += de->d_reclen;
			const char *nm = de->d_name;
			if (nm[0] == '.' && (!nm[1] || (nm[1] == '.' && !nm[2])))
				continue;
			struct stat st;
			if (files_too || de->d_type == DT_DIR || de->d_type == DT_UNKNOWN)
				fstatat(fd, nm, &st, AT_SYMLINK_NOFOLLOW);
			if (de->d_type == DT_DIR)
				wa_batch_add(&sub, nm, de->d_ino);
		}
	}
	wa_batch_end(&sub);
}

unsigned wa_busy(struct sfs *fs)
{
	struct walkahead *wa = fs->wa;
	return __atomic_load_n(&wa->busy, __ATOMIC_RELAXED);
}

void wa_stop(struct sfs *fs)
{
	struct walkahead *wa = fs->wa;
	pthread_mutex_lock(&wa->lock);
	__atomic_store_n(&wa->stop, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&wa->cond);
	pthread_mutex_unlock(&wa->lock);
	for (unsigned i = 0; i < wa->nth; i++)
		pthread_join(wa->th[i], NULL);
	pthread_mutex_lock(&wa->lock);
	while (wa->n)
		drop_oldest(wa);
	drop_held(wa);
	pthread_mutex_unlock(&wa->lock);
	pthread_cond_destroy(&wa->cond);
	pthread_mutex_destroy(&wa->lock);
	free(wa);
	fs->wa = NULL;
}
