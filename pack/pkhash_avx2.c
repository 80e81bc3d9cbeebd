/* pkhash_avx2.c: XXH3 built for AVX2 (this file alone is compiled with
 * -mavx2; pkhash.c calls it only on a CPU that has AVX2). */
#include <stddef.h>
#include <stdint.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pkhash_impl.h"

XXH128_hash_t pk_xxh3_128_avx2(const void *data, size_t len)
{
	return XXH3_128bits(data, len);
}

uint64_t pk_xxh3_64_avx2(const void *data, size_t len)
{
	return XXH3_64bits(data, len);
}
