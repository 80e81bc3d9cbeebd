/* What the import fuzzers share: a scratch directory for their store, on
 * a tmpfs where there is one (the store fsyncs what it writes, which on a
 * disk made a run thirty times slower), removed at exit, and stderr
 * silenced (every rejected input explains itself there). */
#ifndef STRATA_FUZZ_SCRATCH_H
#define STRATA_FUZZ_SCRATCH_H

#include "fsutil.h"
#include "store.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct store st;
static char dir[64];
static bool ready;

static void scratch_cleanup(void)
{
	if (!ready)
		return;
	store_close(&st);
	rm_rf_at(AT_FDCWD, dir);
}

/* Make dir; the caller opens the store (st) somewhere in it. */
static void scratch_begin(void)
{
	FILE *null = fopen("/dev/null", "w");
	if (null)
		stderr = null;
	const char *tmp = getenv("TMPDIR");
	if (!tmp || strlen(tmp) >= 32)
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(dir, sizeof dir, "%s/strata-fuzz-XXXXXX", tmp);
	if (!mkdtemp(dir))
		abort();
}

static void scratch_ready(void)
{
	ready = true;
	atexit(scratch_cleanup);
}

#endif
