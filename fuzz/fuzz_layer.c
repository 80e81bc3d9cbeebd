/* A layer blob through strata's import path: sniffing gzip/zstd/plain,
 * inflating, hashing, and unpacking every tar entry into a scratch store,
 * the way `strata import` reads a layer of a hostile image. Odd-sized
 * inputs unpack as a rootless store does (owners in xattrs, devices left
 * out), even-sized ones as root's (chown, mknod) when run as root. A custom
 * mutator keeps plain tar headers' checksums right. */
#include "err.h"
#include "fsutil.h"
#include "layer.h"
#include "store.h"
#include "scratch.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	scratch_begin();
	if (store_open(&st, dir, true) < 0)
		abort();
	scratch_ready();
	return 0;
}

struct mem_src {
	const uint8_t *p;
	size_t n, off;
};

static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
	struct mem_src *m = ctx;
	if (len > m->n - m->off)
		len = m->n - m->off;
	memcpy(buf, m->p + m->off, len);
	m->off += len;
	return (ssize_t)len;
}

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max);

/* Plain tar inputs get their header checksums fixed after each mutation:
 * libarchive drops a header whose checksum is wrong, so almost every
 * mutation of a header would otherwise test only that check. */
static void fix_checksums(uint8_t *d, size_t n)
{
	size_t off = 0;
	while (off + 512 <= n) {
		uint8_t *h = d + off;
		bool zero = true;
		for (size_t i = 0; i < 512 && zero; i++)
			zero = !h[i];
		if (zero)
			break;
		unsigned sum = 0;
		memset(h + 148, ' ', 8);
		for (size_t i = 0; i < 512; i++)
			sum += h[i];
		char ck[8];
		snprintf(ck, sizeof ck, "%06o", sum & 0777777);
		memcpy(h + 148, ck, 6);
		h[154] = '\0';
		h[155] = ' ';
		/* The member's data follows, in whole blocks. */
		unsigned long long size = 0;
		for (size_t i = 124; i < 136 && h[i] >= '0' && h[i] <= '7'; i++)
			size = size * 8 + (h[i] - '0');
		if (h[156] == '5' || h[156] == '1' || h[156] == '2' || h[156] == '3' || h[156] == '4' || h[156] == '6')
			size = 0;
		if (size > n)
			break;
		off += 512 + (size + 511) / 512 * 512;
	}
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max, unsigned seed)
{
	(void)seed;
	size = LLVMFuzzerMutate(data, size, max);
	if (size >= 512 && !(data[0] == 0x1f && size > 1 && data[1] == 0x8b) &&
	    !(size >= 4 && !memcmp(data, "\x28\xb5\x2f\xfd", 4)))
		fix_checksums(data, size);
	return size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mem_src m = { data, size, 0 };
	struct bsrc src = { mem_read, &m };
	struct layer_expect x = { .comp = COMP_UNKNOWN, .size = -1 };
	struct layer_got got;
	bool root = geteuid() == 0;
	st.rootless = !root || (size & 1);
	layer_import(&st, &src, &x, "fuzz", &got);
	/* Nothing is kept: the next input starts from an empty store. */
	store_drop_pending(&st);
	return 0;
}
