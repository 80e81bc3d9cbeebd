/* pkcache: decompressed chunks, shared by every layer of a process.
 *
 * A hash table over an LRU list, bounded in bytes. Readers copy out of an
 * entry without holding the lock (the entry is pinned by a reference), and
 * load a missing chunk without it too. An entry being loaded is in the table
 * already, marked loading, so every other reader of that chunk waits for the
 * one load instead of reading and decompressing it again.
 *
 * Read-ahead (pk_cache_prefetch) is asynchronous: it puts a loading entry in
 * the table and queues the load for a few loader threads, started on first
 * use. A cold sequential reader then has many chunks read from disk
 * and decompressed at once, ahead of it, on every CPU, instead of one at a
 * time on its own thread: the disk's latency, not its bandwidth, was what a
 * cold read of a packed file waited on.
 */
#include "pkint.h"

#include "err.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Loader threads, one per CPU (at most LOADERS): a chunk's bytes come
 * from one pack file that read-ahead (WILLNEED) has usually brought in,
 * so a load is decompression and its check, CPU work: loaders beyond the
 * CPUs only take them from the reader they work for (a container's start
 * is slower with more). And queued read-ahead loads (more are dropped: it
 * is a hint). */
#define LOADERS 8
#define QUEUE 256
/* Freed full-size entries kept for reuse: a malloc and free of 64 KiB per
 * chunk had the allocator give pages back and fault them in again, a
 * seventh of a cold read's CPU time. */
#define SPARE 32
/* Buffers for the compressed bytes of the chunks readers load themselves
 * (on a miss), kept for the next: the same reason. */
#define COMP_SPARE 8

struct pk_cent {
	struct pk_cent *hnext, *prev, *next;
	uint64_t sdev, sino;
	uint8_t key[16];
	uint16_t suffix;
	struct pk_loc loc;         /* where it was read from: two packs may each
	                              hold a chunk of one key and suffix (writers
	                              run side by side), with different bytes if
	                              one is forged */
	bool loading;              /* data not there yet: wait on loaded */
	bool failed;               /* its load failed: out of the table, freed by the last ref */
	uint32_t len;
	int refs;
	unsigned char data[];
};

struct job {
	struct pk_store *st;
	struct pk_cent *e;         /* the loading entry, pinned by the job */
	struct pk_chunk k;
	struct pk_loc loc;
};

struct pk_cache {
	pthread_mutex_t mu;
	pthread_cond_t loaded;     /* some entry stopped loading */
	size_t max, used;
	size_t nb;                 /* buckets, a power of two */
	struct pk_cent **b;
	struct pk_cent *head, *tail; /* most recently used first */
	uint64_t hits, misses, entries, dropped;
	struct pk_cent *spare;     /* full-size entries to reuse, by hnext, */
	int nspare;                /*   all of spare_len bytes (layers of */
	uint32_t spare_len;        /*   another chunk size are not) */
	void *comp[COMP_SPARE];
	int ncomp;

	/* read-ahead loaders, all under mu */
	pthread_cond_t work, idle;
	struct job q[QUEUE];
	size_t qhead, qn;
	pthread_t th[LOADERS];
	struct pk_store *busy[LOADERS];   /* the store each loader reads now */
	int nth, started, nloaders;
	bool stop;
};

struct pk_cache *pk_cache_new(size_t max_bytes)
{
	struct pk_cache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->max = max_bytes;
	c->nb = 64;
	while (c->nb < 2 * (max_bytes / PK_CHUNK_DEFAULT) && c->nb < (1u << 24))
		c->nb <<= 1;
	c->b = calloc(c->nb, sizeof *c->b);
	if (!c->b) {
		free(c);
		return NULL;
	}
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	c->nloaders = cpus < 2 ? 2 : cpus > LOADERS ? LOADERS : (int)cpus;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->loaded, NULL);
	pthread_cond_init(&c->work, NULL);
	pthread_cond_init(&c->idle, NULL);
	return c;
}

static void drop_job(struct pk_cache *c, struct job *j);

void pk_cache_free(struct pk_cache *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	while (c->qn) {
		drop_job(c, &c->q[c->qhead]);
		c->qhead = (c->qhead + 1) % QUEUE;
		c->qn--;
	}
	pthread_cond_broadcast(&c->work);
	pthread_mutex_unlock(&c->mu);
	for (int i = 0; i < c->nth; i++)
		pthread_join(c->th[i], NULL);
	for (struct pk_cent *e = c->head, *n; e; e = n) {
		n = e->next;
		free(e);
	}
	for (struct pk_cent *e = c->spare, *n; e; e = n) {
		n = e->hnext;
		free(e);
	}
	for (int i = 0; i < c->ncomp; i++)
		free(c->comp[i]);
	free(c->b);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->loaded);
	pthread_cond_destroy(&c->work);
	pthread_cond_destroy(&c->idle);
	free(c);
}

void pk_cache_stats(struct pk_cache *c, struct pk_cache_stats *st)
{
	pthread_mutex_lock(&c->mu);
	st->hits = c->hits;
	st->misses = c->misses;
	st->bytes = c->used;
	st->entries = c->entries;
	st->dropped = c->dropped;
	pthread_mutex_unlock(&c->mu);
}

static size_t slot(const struct pk_cache *c, uint64_t sdev, uint64_t sino, const uint8_t key[16], uint16_t suffix,
		   const struct pk_loc *loc)
{
	uint64_t h;
	memcpy(&h, key, 8);
	h ^= suffix * 0x9e3779b97f4a7c15ull ^ sdev * 31 ^ sino ^ loc->pack ^ loc->off * 0xff51afd7ed558ccdull;
	h ^= h >> 29;
	return h & (c->nb - 1);
}

static struct pk_cent *find(struct pk_cache *c, size_t s, uint64_t sdev, uint64_t sino,
			    const struct pk_chunk *k, const struct pk_loc *loc)
{
	for (struct pk_cent *e = c->b[s]; e; e = e->hnext)
		if (e->sino == sino && e->sdev == sdev && e->suffix == k->suffix && e->loc.off == loc->off &&
		    e->loc.pack == loc->pack && !memcmp(e->key, k->key, 16))
			return e;
	return NULL;
}

static void lru_unlink(struct pk_cache *c, struct pk_cent *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_front(struct pk_cache *c, struct pk_cent *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

/* Free an entry out of the table, or keep it for reuse. Called with mu held. */
static void release(struct pk_cache *c, struct pk_cent *e)
{
	if (!c->nspare && e->len >= PK_CHUNK_MIN && !(e->len & (e->len - 1)))
		c->spare_len = e->len;
	if (e->len == c->spare_len && c->nspare < SPARE) {
		e->hnext = c->spare;
		c->spare = e;
		c->nspare++;
	} else
		free(e);
}

/* Take e out of the table (its memory stays until its last ref is put). */
static void unhash(struct pk_cache *c, struct pk_cent *e)
{
	size_t s = slot(c, e->sdev, e->sino, e->key, e->suffix, &e->loc);
	struct pk_cent **pp = &c->b[s];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	lru_unlink(c, e);
	c->used -= e->len;
	c->entries--;
}

/* Drop unpinned entries from the cold end until the cache fits. */
static void evict(struct pk_cache *c)
{
	struct pk_cent *e = c->tail;
	while (c->used > c->max && e) {
		struct pk_cent *p = e->prev;
		if (!e->refs) {
			unhash(c, e);
			release(c, e);
		}
		e = p;
	}
}

static void put(struct pk_cache *c, struct pk_cent *e)
{
	if (--e->refs == 0 && e->failed)
		release(c, e);
	else if (c->used > c->max)
		evict(c);
}

/* A new loading entry for k, in the table, pinned once; NULL without memory. */
static struct pk_cent *insert_loading(struct pk_cache *c, size_t s, uint64_t sdev, uint64_t sino,
				      const struct pk_chunk *k, const struct pk_loc *loc)
{
	struct pk_cent *n;
	if (k->ulen == c->spare_len && c->spare) {
		n = c->spare;
		c->spare = n->hnext;
		c->nspare--;
	} else if (!(n = malloc(sizeof *n + (k->ulen ? k->ulen : 1))))
		return NULL;
	memcpy(n->key, k->key, 16);
	n->suffix = k->suffix;
	n->loc = *loc;
	n->sdev = sdev;
	n->sino = sino;
	n->len = k->ulen;
	n->refs = 1;
	n->loading = true;
	n->failed = false;
	n->prev = n->next = NULL;
	n->hnext = c->b[s];
	c->b[s] = n;
	lru_front(c, n);
	c->used += n->len;
	c->entries++;
	evict(c);
	return n;
}

/* The load of loading entry e ended with r: wake its waiters. */
static void loaded(struct pk_cache *c, struct pk_cent *e, int r)
{
	e->loading = false;
	if (r < 0) {
		/* the waiters load it themselves and report the error with
		 * what they know (the layer, the file) */
		unhash(c, e);
		e->failed = true;
	}
	pthread_cond_broadcast(&c->loaded);
}

/* Chunk k, loaded and pinned (the caller puts it with pk_cache_unpin):
 * 0 with *out, or the load's -errno. */
int pk_cache_pin(struct pk_cache *c, struct pk_store *st, uint64_t sdev, uint64_t sino,
		 const struct pk_chunk *k, const struct pk_loc *locp, struct pk_cent **out)
{
	static const struct pk_loc none;
	const struct pk_loc *loc = locp ? locp : &none;
	size_t s = slot(c, sdev, sino, k->key, k->suffix, loc);
	pthread_mutex_lock(&c->mu);
	struct pk_cent *e = find(c, s, sdev, sino, k, loc);
	if (e) {
		e->refs++;
		while (e->loading)
			pthread_cond_wait(&c->loaded, &c->mu);
		if (!e->failed) {
			c->hits++;
			lru_unlink(c, e);
			lru_front(c, e);
			pthread_mutex_unlock(&c->mu);
			*out = e;
			return 0;
		}
		put(c, e);
	}
	c->misses++;
	/* a failed load is not put back in the table: this reader loads its
	 * own copy, outside it (and sees the error itself) */
	struct pk_cent *n = find(c, s, sdev, sino, k, loc) ? NULL : insert_loading(c, s, sdev, sino, k, loc);
	void *comp = n && c->ncomp ? c->comp[--c->ncomp] : NULL;
	pthread_mutex_unlock(&c->mu);
	if (!n) {
		if (!(n = malloc(sizeof *n + (k->ulen ? k->ulen : 1))))
			return -ENOMEM;
		n->len = k->ulen;
		n->refs = 1;
		n->loading = false;
		n->failed = true;    /* not in the table: freed by its last put */
		int r = pk_store_get(st, k, loc, n->data);
		if (r < 0)
			free(n);
		else
			*out = n;
		return r;
	}
	if (!comp)
		comp = malloc(PK_STORED_MAX);   /* NULL: pk_store_get_with finds its own */
	int r = pk_store_get_with(st, k, loc, n->data, comp);
	pthread_mutex_lock(&c->mu);
	if (comp && c->ncomp < COMP_SPARE)
		c->comp[c->ncomp++] = comp;
	else
		free(comp);
	loaded(c, n, r);
	if (r < 0)
		put(c, n);
	pthread_mutex_unlock(&c->mu);
	if (r == 0)
		*out = n;
	return r;
}

const void *pk_cache_data(const struct pk_cent *e)
{
	return e->data;
}

void pk_cache_unpin(struct pk_cache *c, struct pk_cent *e, uint32_t off, uint32_t len)
{
	pthread_mutex_lock(&c->mu);
	/* Drop-behind: a read that reaches the chunk's end has taken the last
	 * of it a sequential reader wants, and strata-fs's reader keeps what
	 * it got in the kernel's page cache (keep_cache). Kept here too, every
	 * file read whole would stay in memory twice, the cache's 64 MiB per
	 * daemon, and so per container of an image. A chunk that another
	 * reader holds now, or that was only read in part, stays. */
	if (len && off + len == e->len && e->refs == 1 && !e->failed) {
		unhash(c, e);
		e->refs = 0;
		c->dropped++;
		release(c, e);
	} else {
		put(c, e);
	}
	pthread_mutex_unlock(&c->mu);
}

/* A queued load that will not run: its entry goes. Called with mu held. */
static void drop_job(struct pk_cache *c, struct job *j)
{
	loaded(c, j->e, -ECANCELED);
	put(c, j->e);
}

static void *loader(void *arg)
{
	struct pk_cache *c = arg;
	/* the compressed bytes of each object are read here */
	_cleanup_free_ void *comp = malloc(PK_STORED_MAX);
	pthread_mutex_lock(&c->mu);
	int me = c->started++;
	for (;;) {
		while (!c->qn && !c->stop)
			pthread_cond_wait(&c->work, &c->mu);
		if (c->stop)
			break;
		struct job j = c->q[c->qhead];
		c->qhead = (c->qhead + 1) % QUEUE;
		c->qn--;
		c->busy[me] = j.st;
		pthread_mutex_unlock(&c->mu);
		int r = pk_store_get_with(j.st, &j.k, &j.loc, j.e->data, comp);
		pthread_mutex_lock(&c->mu);
		loaded(c, j.e, r);
		put(c, j.e);
		c->busy[me] = NULL;
		pthread_cond_broadcast(&c->idle);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

int pk_cache_prefetch(struct pk_cache *c, struct pk_store *st, uint64_t sdev, uint64_t sino,
		      const struct pk_chunk *k, const struct pk_loc *locp)
{
	static const struct pk_loc none;
	const struct pk_loc *loc = locp ? locp : &none;
	size_t s = slot(c, sdev, sino, k->key, k->suffix, loc);
	pthread_mutex_lock(&c->mu);
	if (c->stop || c->qn == QUEUE || find(c, s, sdev, sino, k, loc)) {
		pthread_mutex_unlock(&c->mu);
		return 0;
	}
	while (c->nth < c->nloaders) {
		if (pthread_create(&c->th[c->nth], NULL, loader, c))
			break;
		c->nth++;
	}
	struct pk_cent *e = c->nth ? insert_loading(c, s, sdev, sino, k, loc) : NULL;
	if (e) {
		c->q[(c->qhead + c->qn) % QUEUE] = (struct job){ st, e, *k, *loc };
		c->qn++;
		pthread_cond_signal(&c->work);
	}
	pthread_mutex_unlock(&c->mu);
	return 0;
}

void pk_cache_forget(struct pk_cache *c, struct pk_store *st)
{
	pthread_mutex_lock(&c->mu);
	size_t kept = 0;
	for (size_t i = 0; i < c->qn; i++) {
		struct job *j = &c->q[(c->qhead + i) % QUEUE];
		if (j->st == st)
			drop_job(c, j);
		else
			c->q[(c->qhead + kept++) % QUEUE] = *j;
	}
	c->qn = kept;
	for (bool busy = true; busy;) {
		busy = false;
		for (int i = 0; i < c->nth; i++)
			busy |= c->busy[i] == st;
		if (busy)
			pthread_cond_wait(&c->idle, &c->mu);
	}
	pthread_mutex_unlock(&c->mu);
}
