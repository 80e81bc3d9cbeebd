/* pkhash_impl.h: the builds of XXH3 pkhash.c chooses from (inside the
 * pack module only). */
#ifndef STRATA_PKHASH_IMPL_H
#define STRATA_PKHASH_IMPL_H

#ifdef PK_HASH_AVX2
/* pkhash_avx2.c, compiled for AVX2: call only where the CPU has it */
XXH128_hash_t pk_xxh3_128_avx2(const void *data, size_t len);
uint64_t pk_xxh3_64_avx2(const void *data, size_t len);
#endif

#endif
