/* strata pack / strata unpack: a directory to a packed layer and back
 * (docs/packed-format.md). */
#include "cli.h"

#include "err.h"
#include "packed.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A deep tree keeps one directory fd open per level. */
static void more_fds(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int gc(const char *chunks, int n, char **live)
{
	struct pk_gc_stats st;
	if (!chunks) {
		susage("pack --gc: give the chunk store with --chunks DIR, then every live layer file");
		return 2;
	}
	int r = pk_gc(chunks, live, n, &st);
	if (r < 0)
		return r;
	printf("%llu live layers, %llu chunks kept, %llu removed (%llu bytes), %llu temporary files removed\n",
	       (unsigned long long)st.live_layers, (unsigned long long)st.kept, (unsigned long long)st.removed,
	       (unsigned long long)st.removed_bytes, (unsigned long long)st.tmp_removed);
	return 0;
}

/* BYTES, or a number of KiB with a k/K/KiB suffix: 0 for anything else. */
static uint32_t chunk_arg(const char *a)
{
	char *end;
	unsigned long v = strtoul(a, &end, 10);
	if (end == a || v > PK_CHUNK_MAX)
		return 0;
	if (!strcmp(end, "k") || !strcmp(end, "K") || !strcmp(end, "KiB"))
		v *= 1024;
	else if (*end)
		return 0;
	return pk_chunk_size_ok(v) ? (uint32_t)v : 0;
}

int cmd_pack(const char *store, int argc, char **argv)
{
	struct pk_write_opts o = { 0 };
	const char *pos[64];
	int npos = 0;
	bool stats = false, do_gc = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--chunks") && i + 1 < argc)
			o.chunks = argv[++i];
		else if (!strcmp(argv[i], "--inline") && i + 1 < argc)
			o.inline_max = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			o.threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--chunk-size") && i + 1 < argc) {
			if (!(o.chunk_size = chunk_arg(argv[++i]))) {
				susage("pack: --chunk-size %s: give a power of two from %u to %u bytes (or 4k..64k)",
				       argv[i], PK_CHUNK_MIN, PK_CHUNK_MAX);
				return 2;
			}
		}
		else if (!strcmp(argv[i], "--stats"))
			stats = true;
		else if (!strcmp(argv[i], "--gc"))
			do_gc = true;
		else if (argv[i][0] == '-' && argv[i][1]) {
			susage("pack: unknown option %s (usage: strata pack SRC_DIR DEST [--chunks DIR] [--stats])", argv[i]);
			return 2;
		} else if (npos < 64)
			pos[npos++] = argv[i];
		else {
			susage("pack: too many arguments");
			return 2;
		}
	}
	if (do_gc)
		return gc(o.chunks, npos, (char **)pos);
	if (npos != 2) {
		susage("usage: strata pack SRC_DIR DEST [--chunks DIR] [--stats] [--inline BYTES] [--threads N]\n"
		       "                  [--chunk-size BYTES]\n"
		       "       strata pack --gc --chunks DIR [LIVE_LAYER...]\n"
		       "  --chunks DIR     the chunk store (default: chunks/ beside DEST)\n"
		       "  --stats          print sizes, objects written and throughput\n"
		       "  --inline BYTES   files up to BYTES live in DEST itself (default 512)\n"
		       "  --threads N      compressing threads (default: one per CPU)\n"
		       "  --chunk-size N   cut files into chunks of N bytes, a power of two from 4k\n"
		       "                   to 64k (default 32k)\n"
		       "  --gc             remove the objects none of the LIVE_LAYER files uses");
		return 2;
	}
	more_fds();
	struct pk_write_stats st;
	double t0 = now();
	int r = pk_write(pos[0], pos[1], &o, &st);
	if (r < 0)
		return r;
	double t = now() - t0;
	if (stats)
		printf("packed %s: %llu inodes, %llu files, %.1f MB in %.2f s (%.0f MB/s); "
		       "%llu chunks + %llu holes, %llu new objects (%.1f MB stored), "
		       "inline %.1f MB, metadata %.1f MB\n",
		       pos[0], (unsigned long long)st.inodes, (unsigned long long)st.files, st.bytes_in / 1e6, t,
		       t > 0 ? st.bytes_in / 1e6 / t : 0.0, (unsigned long long)st.chunks,
		       (unsigned long long)st.holes, (unsigned long long)st.chunks_new, st.stored_new / 1e6,
		       st.inline_bytes / 1e6, st.meta_size / 1e6);
	return 0;
}

int cmd_unpack(const char *store, int argc, char **argv)
{
	const char *chunks = NULL, *pos[2];
	int npos = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--chunks") && i + 1 < argc)
			chunks = argv[++i];
		else if (argv[i][0] == '-' && argv[i][1]) {
			susage("unpack: unknown option %s (usage: strata unpack DEST DIR [--chunks DIR])", argv[i]);
			return 2;
		} else if (npos < 2)
			pos[npos++] = argv[i];
		else
			npos = 3;
	}
	if (npos != 2) {
		susage("usage: strata unpack DEST DIR [--chunks DIR]");
		return 2;
	}
	more_fds();
	struct pk_layer *l;
	int r = pk_open(pos[0], chunks, NULL, &l);
	if (r < 0)
		return r;
	r = pk_unpack(l, pos[1]);
	pk_close(l);
	return r;
}
