/* pkint: what the parts of the packed-layer library share. */
#ifndef STRATA_PKINT_H
#define STRATA_PKINT_H

#include "packed.h"

/* Copy len bytes at off of chunk c into dst through the cache, loading the
 * chunk from store s (identified by dev/ino of its directory) on a miss:
 * 0, -EIO for a damaged object, -ENOENT for a missing one. */
int pk_cache_read(struct pk_cache *cache, struct pk_store *s, uint64_t sdev, uint64_t sino,
		  const struct pk_chunk *c, uint32_t off, uint32_t len, void *dst);

/* The store's directory fd. */
int pk_store_dirfd(const struct pk_store *s);

#endif
