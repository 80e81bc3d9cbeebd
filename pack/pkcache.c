/* pkcache: decompressed chunks, shared by every layer of a process.
 *
 * A hash table over an LRU list, bounded in bytes. Readers copy out of an
 * entry without holding the lock (the entry is pinned by a reference), and
 * decompress a missing chunk without it too: two readers missing the same
 * chunk at once both load it, and the second copy is dropped.
 */
#include "pkint.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct cent {
	struct cent *hnext, *prev, *next;
	uint64_t sdev, sino;
	uint8_t key[16];
	uint16_t suffix;
	uint32_t len;
	int refs;
	unsigned char data[];
};

struct pk_cache {
	pthread_mutex_t mu;
	size_t max, used;
	size_t nb;                 /* buckets, a power of two */
	struct cent **b;
	struct cent *head, *tail;  /* most recently used first */
	uint64_t hits, misses, entries;
};

struct pk_cache *pk_cache_new(size_t max_bytes)
{
	struct pk_cache *c = calloc(1, sizeof *c);
	if (!c)
		return NULL;
	c->max = max_bytes;
	c->nb = 64;
	while (c->nb < 2 * (max_bytes / PK_CHUNK_SIZE) && c->nb < (1u << 24))
		c->nb <<= 1;
	c->b = calloc(c->nb, sizeof *c->b);
	if (!c->b) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	return c;
}

void pk_cache_free(struct pk_cache *c)
{
	if (!c)
		return;
	for (struct cent *e = c->head, *n; e; e = n) {
		n = e->next;
		free(e);
	}
	free(c->b);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

void pk_cache_stats(struct pk_cache *c, struct pk_cache_stats *st)
{
	pthread_mutex_lock(&c->mu);
	st->hits = c->hits;
	st->misses = c->misses;
	st->bytes = c->used;
	st->entries = c->entries;
	pthread_mutex_unlock(&c->mu);
}

static size_t slot(const struct pk_cache *c, uint64_t sdev, uint64_t sino, const uint8_t key[16], uint16_t suffix)
{
	uint64_t h;
	memcpy(&h, key, 8);
	h ^= suffix * 0x9e3779b97f4a7c15ull ^ sdev * 31 ^ sino;
	h ^= h >> 29;
	return h & (c->nb - 1);
}

static struct cent *find(struct pk_cache *c, size_t s, uint64_t sdev, uint64_t sino, const struct pk_chunk *k)
{
	for (struct cent *e = c->b[s]; e; e = e->hnext)
		if (e->sino == sino && e->sdev == sdev && e->suffix == k->suffix && !memcmp(e->key, k->key, 16))
			return e;
	return NULL;
}

static void lru_unlink(struct pk_cache *c, struct cent *e)
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

static void lru_front(struct pk_cache *c, struct cent *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	c->head = e;
	if (!c->tail)
		c->tail = e;
}

/* Drop unpinned entries from the cold end until the cache fits. */
static void evict(struct pk_cache *c)
{
	struct cent *e = c->tail;
	while (c->used > c->max && e) {
		struct cent *p = e->prev;
		if (!e->refs) {
			size_t s = slot(c, e->sdev, e->sino, e->key, e->suffix);
			struct cent **pp = &c->b[s];
			while (*pp != e)
				pp = &(*pp)->hnext;
			*pp = e->hnext;
			lru_unlink(c, e);
			c->used -= e->len;
			c->entries--;
			free(e);
		}
		e = p;
	}
}

int pk_cache_read(struct pk_cache *c, struct pk_store *st, uint64_t sdev, uint64_t sino,
		  const struct pk_chunk *k, uint32_t off, uint32_t len, void *dst)
{
	if ((uint64_t)off + len > k->ulen)
		return -EIO;
	size_t s = slot(c, sdev, sino, k->key, k->suffix);
	pthread_mutex_lock(&c->mu);
	struct cent *e = find(c, s, sdev, sino, k);
	if (e) {
		c->hits++;
		e->refs++;
		lru_unlink(c, e);
		lru_front(c, e);
	} else
		c->misses++;
	pthread_mutex_unlock(&c->mu);

	if (!e) {
		struct cent *n = malloc(sizeof *n + (k->ulen ? k->ulen : 1));
		if (!n)
			return -ENOMEM;
		int r = pk_store_get(st, k, n->data);
		if (r < 0) {
			free(n);
			return r;
		}
		memcpy(n->key, k->key, 16);
		n->suffix = k->suffix;
		n->sdev = sdev;
		n->sino = sino;
		n->len = k->ulen;
		n->refs = 1;
		n->prev = n->next = NULL;
		pthread_mutex_lock(&c->mu);
		e = find(c, s, sdev, sino, k);
		if (e) {
			e->refs++;
			free(n);
		} else {
			e = n;
			e->hnext = c->b[s];
			c->b[s] = e;
			lru_front(c, e);
			c->used += e->len;
			c->entries++;
			evict(c);
		}
		pthread_mutex_unlock(&c->mu);
	}
	if (len)
		memcpy(dst, e->data + off, len);
	pthread_mutex_lock(&c->mu);
	e->refs--;
	if (c->used > c->max)
		evict(c);
	pthread_mutex_unlock(&c->mu);
	return 0;
}
