/* bytes: checks of a range of memory, for every part of strata. */
#ifndef STRATA_BYTES_H
#define STRATA_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* Are all n bytes at p zero? (true for n == 0) */
static inline bool bytes_all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	return n == 0 || (b[0] == 0 && memcmp(b, b + 1, n - 1) == 0);
}

#endif
