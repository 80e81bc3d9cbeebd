/* pkhash.h: the XXH3 hashes of the pack module's hot paths (a chunk's
 * key, a metadata section's checksum), computed with the widest vector
 * unit the CPU has. xxhash's own header builds them for the baseline CPU
 * (SSE2 on x86-64); an AVX2 build of the same code, picked at run time,
 * checks a 64 KiB chunk several times faster. Same hashes either way. */
#ifndef STRATA_PKHASH_H
#define STRATA_PKHASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH3-128 of data, canonical (big-endian) bytes: a chunk's key. */
void pk_xxh3_128(const void *data, size_t len, uint8_t out[16]);
/* XXH3-64 of data. */
uint64_t pk_xxh3_64(const void *data, size_t len);

#endif
