/* pkhash.c: XXH3 through the best build for this CPU (pkhash.h). */
#include "pkhash.h"

#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "pkhash_impl.h"

static XXH128_hash_t base_128(const void *d, size_t n)
{
	return XXH3_128bits(d, n);
}

static uint64_t base_64(const void *d, size_t n)
{
	return XXH3_64bits(d, n);
}

struct impl {
	XXH128_hash_t (*h128)(const void *, size_t);
	uint64_t (*h64)(const void *, size_t);
};

static const struct impl *impl(void)
{
	static const struct impl base = { base_128, base_64 };
#ifdef PK_HASH_AVX2
	static const struct impl avx2 = { pk_xxh3_128_avx2, pk_xxh3_64_avx2 };
	static const struct impl *chosen;
	const struct impl *c = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
	if (!c) {
		__builtin_cpu_init();
		c = __builtin_cpu_supports("avx2") ? &avx2 : &base;
		__atomic_store_n(&chosen, c, __ATOMIC_RELEASE);
	}
	return c;
#else
	return &base;
#endif
}

void pk_xxh3_128(const void *data, size_t len, uint8_t out[16])
{
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, impl()->h128(data, len));
	memcpy(out, c.digest, 16);
}

uint64_t pk_xxh3_64(const void *data, size_t len)
{
	return impl()->h64(data, len);
}
