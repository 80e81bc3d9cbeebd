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

static struct {
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
} W = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static void dir_put(struct wa_dir *d)
{
	/* under W.lock */
	if (--d->refs == 0) {
		close(d->fd);
		free(d);
		W.fds--;
	}
}

static void item_free(struct wa_item *it)
{
	/* under W.lock */
	dir_put(it->parent);
	free(it->name);
}

static void drop_oldest(void)
{
	/* under W.lock, W.n > 0 */
	item_free(&W.q[W.head]);
	W.head = (W.head + 1) % QCAP;
	W.n--;
}

/* Not queued before (recently)? Marks it. Under W.lock. */
static bool first_time(dev_t dev, uint64_t ino)
{
	uint64_t key = ((uint64_t)dev << 40) ^ ino ^ ((uint64_t)dev >> 24);
	key = key ? key : 1;
	uint64_t *slot = &W.seen[(key * 0x9e3779b97f4a7c15ull) >> 51];
	if (*slot == key)
		return false;
	*slot = key;
	return true;
}

/* Drop a batch's items and its hold on the directory. Under W.lock. */
static void batch_free(struct wa_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->items[i].name);
	free(b->items);
	if (b->dir)
		dir_put(b->dir);
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
 * Under W.lock. */
static void enqueue(struct wa_batch *b, const char *skip)
{
	if (b->n > 1)
		qsort(b->items, b->n, sizeof *b->items, by_order);
	/* the first entry on top: it is the one the walk reaches first */
	for (size_t i = b->n; i-- > 0;) {
		struct wa_item *it = &b->items[i];
		if (W.stop || (skip && !strcmp(it->name, skip)) || !first_time(b->dev, it->ino)) {
			free(it->name);
			continue;
		}
		if (W.n == QCAP)
			drop_oldest();
		b->dir->refs++;
		W.q[(W.head + W.n++) % QCAP] = *it;
	}
	b->n = 0;
	batch_free(b);
	pthread_cond_broadcast(&W.cond);
}

static void drop_held(void)
{
	/* under W.lock */
	for (unsigned i = 0; i < W.nheld; i++)
		batch_free(&W.held[i]);
	W.nheld = 0;
}

static void warm(struct wa_item *it);

static void *wa_main(void *arg)
{
	(void)arg;
	struct sched_param sp = { 0 };
	sched_setscheduler(0, SCHED_IDLE, &sp);
	keep_io_priority();
	/* the daemon's CPUs: the thread that started this one (and the
	 * reader) may have been pinned to one */
	cpu_set_t allowed = SFS->cpus;
	sched_setaffinity(0, sizeof allowed, &allowed);
	int away = -1;      /* the CPU this thread keeps off */
	pthread_mutex_lock(&W.lock);
	for (;;) {
		while (!W.stop && W.n == 0)
			pthread_cond_wait(&W.cond, &W.lock);
		if (W.stop)
			break;
		/* Off the walker's CPU. A CPU that runs only SCHED_IDLE
		 * threads counts as idle, and the load balancer moves the
		 * walker to it: ls -lR of the image moved 300-1100 times
		 * (each move: requests to the other queue, cold caches;
		 * 160-230 ms), kept off, 4-13 times (136-140 ms). */
		if (W.walker_cpu != away && CPU_COUNT(&allowed) > 1) {
			cpu_set_t set = allowed;
			away = W.walker_cpu;
			if (away >= 0 && CPU_ISSET(away, &set))
				CPU_CLR(away, &set);
			sched_setaffinity(0, sizeof set, &set);
		}
		struct wa_item it = W.q[(W.head + --W.n) % QCAP];
		__atomic_fetch_add(&W.busy, 1, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&W.lock);
		warm(&it);
		pthread_mutex_lock(&W.lock);
		__atomic_fetch_sub(&W.busy, 1, __ATOMIC_RELAXED);
		item_free(&it);
	}
	pthread_mutex_unlock(&W.lock);
	return NULL;
}

static void start_threads(void)
{
	/* under W.lock */
	W.started = true;
	for (unsigned i = 0; i < THREADS; i++) {
		if (pthread_create(&W.th[W.nth], NULL, wa_main, NULL) != 0) {
			sdebug("walkahead: pthread_create: %s; walks go without read-ahead",
			       strerror(errno));
			break;
		}
		pthread_setname_np(W.th[W.nth], "strata-ahead");
		W.nth++;
	}
}

static bool batch_setup(struct wa_batch *b);

/* Queue held batches of dir's parent, now that a walk is seen: each
 * gets the parent's directory in its layer (the listing before kept none
 * open, as most listings are no walk's). */
static void release(struct node *dir, struct wa_batch *rel, unsigned n, const char *skip)
{
	pthread_mutex_lock(&SFS->table_lock);
	struct node *p = dir->parent;
	if (p)
		p->refs++;
	pthread_mutex_unlock(&SFS->table_lock);
	for (unsigned k = 0; k < n; k++) {
		struct wa_batch *b = &rel[k];
		int fd = -1;
		bool tmp = false;
		if (p && S_ISDIR(p->type)) {
			dl_rdlock(p);
			for (unsigned i = 0; i < p->ndl && fd < 0; i++)
				if (p->dl[i].layer == b->layer)
					fd = node_dlfd(p, i, &tmp);
			pthread_rwlock_unlock(p->dl_lock);
		}
		b->srcfd = fd;
		bool ok = fd >= 0 && batch_setup(b);
		if (tmp && fd >= 0)
			close(fd);
		pthread_mutex_lock(&W.lock);
		if (ok) {
			for (size_t i = 0; i < b->n; i++)
				b->items[i].parent = b->dir;
			enqueue(b, skip);
		} else {
			batch_free(b);
		}
		pthread_mutex_unlock(&W.lock);
	}
	if (p)
		node_unref(p);
}

enum wa_mode wa_listing(struct node *dir)
{
	uint64_t now = mono_ns();
	char name[NAME_MAX + 1] = "";
	pthread_mutex_lock(&SFS->table_lock);
	struct node *p = dir->parent;
	uint32_t ms = (uint32_t)(now / 1000000u);   /* wraps: only differences count */
	bool child_of_recent = p && p->listed_ms && ms - p->listed_ms < WALK_NS / 1000000u;
	uint64_t pino = p ? p->ino : 0;
	dir->listed_ms = ms ? ms : 1;
	if (dir->name && strlen(dir->name) < sizeof name)
		strcpy(name, dir->name);
	pthread_mutex_unlock(&SFS->table_lock);

	pthread_mutex_lock(&W.lock);
	if (child_of_recent)
		W.walk_until = now + WALK_NS;
	W.walker_cpu = sched_getcpu();
	bool on = !W.stop && now < W.walk_until;
	if (on && !W.started)
		start_threads();
	on = on && W.nth > 0;
	struct wa_batch rel[HELD];
	unsigned nrel = 0;
	if (on && W.nheld && W.held_owner == pino && pino) {
		/* the walk began at the parent: its other children next */
		memcpy(rel, W.held, W.nheld * sizeof *rel);
		nrel = W.nheld;
		W.nheld = 0;
	}
	enum wa_mode mode = W.stop ? WA_OFF : on ? WA_QUEUE : WA_HOLD;
	pthread_mutex_unlock(&W.lock);
	if (nrel)
		release(dir, rel, nrel, name);
	return mode;
}

void wa_batch_begin(struct wa_batch *b, int dirfd, enum wa_mode mode, uint64_t owner,
		    uint32_t layer)
{
	memset(b, 0, sizeof *b);
	b->srcfd = mode == WA_OFF ? -1 : dirfd;
	b->mode = mode;
	b->owner = owner;
	b->layer = layer;
	b->dev = layer < SFS->nlayers ? SFS->layers[layer].dev : 0;
	b->depth = 1;
}

/* The batch's own descriptor of its directory, taken at its first
 * subdirectory (most listings of a deep stack find none in most layers),
 * unless too many are open already. */
static bool batch_setup(struct wa_batch *b)
{
	pthread_mutex_lock(&W.lock);
	bool room = W.fds < FDS && !W.stop;
	if (room)
		W.fds++;
	pthread_mutex_unlock(&W.lock);
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
		pthread_mutex_lock(&W.lock);
		W.fds--;
		pthread_mutex_unlock(&W.lock);
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
					     .depth = b->depth, .order = cookie_hash(nm) };
}

void wa_batch_end(struct wa_batch *b)
{
	if (!b->n) {
		free(b->items);
		if (b->dir) {
			pthread_mutex_lock(&W.lock);
			dir_put(b->dir);
			pthread_mutex_unlock(&W.lock);
		}
		return;
	}
	pthread_mutex_lock(&W.lock);
	if (b->mode == WA_QUEUE) {
		enqueue(b, NULL);
	} else {
		/* held for a walk that may start below this directory */
		if (W.held_owner != b->owner)
			drop_held();
		W.held_owner = b->owner;
		if (W.nheld < HELD && !W.stop)
			W.held[W.nheld++] = *b;
		else
			batch_free(b);
	}
	pthread_mutex_unlock(&W.lock);
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
static void warm(struct wa_item *it)
{
	int fd = openat(it->parent->fd, it->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	struct wa_batch sub;
	wa_batch_begin(&sub, fd, it->depth < DEPTH ? WA_QUEUE : WA_OFF, 0, UINT32_MAX);
	sub.dev = it->parent->dev;
	sub.depth = it->depth + 1;
	/* a walk that does not look its files up (find -type f) gets
	 * them listed without attributes: their inodes would be read for
	 * nothing (directories are looked up either way) */
	bool files_too = !readdir_lean_now();
	char buf[32768];
	long n;
	while (!__atomic_load_n(&W.stop, __ATOMIC_RELAXED) &&
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
	close(fd);
}

unsigned wa_busy(void)
{
	return __atomic_load_n(&W.busy, __ATOMIC_RELAXED);
}

void wa_stop(void)
{
	pthread_mutex_lock(&W.lock);
	__atomic_store_n(&W.stop, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&W.cond);
	pthread_mutex_unlock(&W.lock);
	for (unsigned i = 0; i < W.nth; i++)
		pthread_join(W.th[i], NULL);
	pthread_mutex_lock(&W.lock);
	while (W.n)
		drop_oldest();
	drop_held();
	pthread_mutex_unlock(&W.lock);
}
