/* A layer blob through strata's import path: sniffing gzip/zstd/plain,
 * inflating, hashing, and unpacking every tar entry into a scratch store,
 * the way `strata import` reads a layer of a hostile image. Odd-sized
 * inputs unpack as a rootless store does (owners in xattrs, devices left
 * out), even-sized ones as root's (chown, mknod) when run as root. */
#include "err.h"
#include "fsutil.h"
#include "layer.h"
#include "store.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct store st;
static char dir[64];
static bool ready;

static void cleanup(void)
{
	if (!ready)
		return;
	store_close(&st);
	rm_rf_at(AT_FDCWD, dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	FILE *null = fopen("/dev/null", "w");
	if (null)
		stderr = null;
	/* A tmpfs by default: the store fsyncs what it writes, which on a disk
	 * made a run thirty times slower. */
	const char *tmp = getenv("TMPDIR");
	if (!tmp || strlen(tmp) >= 32)
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof dir, "%s/strata-fuzz-XXXXXX", tmp);
	if (!mkdtemp(dir) || store_open(&st, dir, true) < 0)
		abort();
	ready = true;
	atexit(cleanup);
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
