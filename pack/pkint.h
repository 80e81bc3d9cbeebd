/* pkint: what the parts of the packed-layer library share. */
#ifndef STRATA_PKINT_H
#define STRATA_PKINT_H

#include "packed.h"

/* Copy len bytes at off of chunk c into dst through the cache, loading the
 * chunk from store s (identified by dev/ino of its directory) on a miss:
 * 0, -EIO for a damaged object, -ENOENT for a missing one. */
int pk_cache_read(struct pk_cache *cache, struct pk_store *s, uint64_t sdev, uint64_t sino,
		  const struct pk_chunk *c, uint32_t off, uint32_t len, void *dst);

/* Start loading chunk c into the cache on a loader thread, unless it is
 * there or on its way (a reader of it then waits for that load). A hint:
 * dropped when too many loads are queued; a failed load is left for the
 * reader to meet and report. */
int pk_cache_prefetch(struct pk_cache *cache, struct pk_store *s, uint64_t sdev, uint64_t sino,
		      const struct pk_chunk *c);
/* Cancel the queued loads from store s and wait for those running: before
 * s is closed. */
void pk_cache_forget(struct pk_cache *cache, struct pk_store *s);

/* The largest stored object: LZ4_COMPRESSBOUND(PK_CHUNK_SIZE). */
#define PK_STORED_MAX (PK_CHUNK_SIZE + PK_CHUNK_SIZE / 255 + 16)
/* pk_store_get with comp, a buffer of PK_STORED_MAX bytes the compressed
 * bytes are read into (NULL: one of its own). */
int pk_store_get_with(struct pk_store *s, const struct pk_chunk *c, void *buf, void *comp);

/* The collector's exclusive lock if no writer holds the store: 0, or
 * -EWOULDBLOCK (not reported). */
int pk_store_trylock_ex(struct pk_store *s);

/* The store's directory fd. */
int pk_store_dirfd(const struct pk_store *s);

#endif
