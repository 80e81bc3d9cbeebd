/* Unit tests of packed layers (pack/): the format read back through the
 * reader API, the chunk store's byte-for-byte dedup (forged keys), damage
 * detection, the cache, the garbage collector and program copies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "packed.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

static char top[64];
static char path_buf[512];
static char path_ring[4][512];

/* top/rel, in one of four buffers: a call may take two of them. */
static const char *P(const char *rel)
{
	static int k;
	char *b = path_ring[k++ % 4];
	snprintf(b, 512, "%s/%s", top, rel);
	return b;
}

static void put_file(const char *rel, const void *data, size_t len)
{
	int fd = open(P(rel), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static unsigned char *rnd(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len);
	uint64_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = x;
	}
	return p;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

/* Thousands of well-formed complaints, or errors a test provokes on
 * purpose, are not for the test log: stderr to /dev/null, and back. */
static int stderr_off(void)
{
	fflush(stderr);
	int saved = dup(2), null = open("/dev/null", O_WRONLY);
	dup2(null, 2);
	close(null);
	return saved;
}

static void stderr_on(int saved)
{
	dup2(saved, 2);
	close(saved);
}

static int setup(void **state)
{
	strcpy(top, "/tmp/strata-pk-XXXXXX");
	if (!mkdtemp(top))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* A source tree with one of everything the format records. */
static unsigned char *big;
/* What a layer written with the default options uses. */
#define CHUNK PK_CHUNK_DEFAULT
#define NCHUNKS(size) (((size) + CHUNK - 1) / CHUNK)
#define BIG (3 * CHUNK + 100)

static void make_tree(void)
{
	assert_int_equal(mkdir(P("src"), 0755), 0);
	assert_int_equal(mkdir(P("src/d"), 0750), 0);
	assert_int_equal(mkdir(P("src/opq"), 0755), 0);
	put_file("src/opq/.wh..wh..opq", "", 0);
	put_file("src/small", "hello\n", 6);
	put_file("src/empty", "", 0);
	big = rnd(BIG, 1);
	put_file("src/d/big", big, BIG);
	assert_int_equal(link(P("src/d/big"), P("src/d/big2")), 0);
	assert_int_equal(symlink("../small", P("src/d/link")), 0);
	put_file("src/.wh.gone", "", 0);
	put_file("src/d/.wh.small", "", 0);   /* beside no real "small" in d: a whiteout */
	put_file("src/d/x", "x", 1);
	put_file("src/d/.wh.x", "", 0);       /* beside a real x: kept hidden */
	assert_int_equal(mkdir(P("src/renewed"), 0755), 0);
	put_file("src/.wh.renewed", "", 0);   /* beside a real directory: opaque */
	assert_int_equal(mkfifo(P("src/fifo"), 0600), 0);
	/* user.* xattrs need a filesystem that has them (tmpfs does since 6.6) */
	setxattr(P("src/small"), "user.b", "2", 1, 0);
	setxattr(P("src/small"), "user.a", "one", 3, 0);
}

static struct pk_layer *pack(const char *src, const char *dest, struct pk_write_stats *st)
{
	struct pk_write_opts o = { .threads = 2 };
	char d[512], s[512];
	snprintf(s, sizeof s, "%s/%s", top, src);
	snprintf(d, sizeof d, "%s/%s", top, dest);
	assert_int_equal(pk_write(s, d, &o, st), 0);
	struct pk_layer *l;
	assert_int_equal(pk_open(d, NULL, NULL, &l), 0);
	return l;
}

static uint32_t look(struct pk_layer *l, uint32_t dir, const char *name, int want)
{
	struct pk_dirent e;
	assert_int_equal(pk_lookup(l, dir, name, strlen(name), &e), want);
	return want == PK_ABSENT ? 0 : e.ino;
}

static void test_tree(void **state)
{
	make_tree();
	struct pk_write_stats st;
	struct pk_layer *l = pack("src", "L1", &st);
	uint32_t root = pk_root(l);
	struct pk_attr a;

	uint32_t small = look(l, root, "small", PK_FOUND);
	assert_int_equal(pk_getattr(l, small, &a), 0);
	assert_true(S_ISREG(a.mode));
	assert_int_equal(a.size, 6);
	char buf[16] = "";
	assert_int_equal(pk_read(l, small, 0, sizeof buf, buf), 6);
	assert_memory_equal(buf, "hello\n", 6);
	assert_int_equal(pk_read(l, small, 6, 10, buf), 0);
	if (pk_getxattr(l, small, "user.a", NULL, 0) >= 0) {
		char v[8];
		assert_int_equal(pk_getxattr(l, small, "user.a", v, sizeof v), 3);
		assert_memory_equal(v, "one", 3);
		assert_int_equal(pk_getxattr(l, small, "user.b", v, sizeof v), 1);
		assert_int_equal(pk_getxattr(l, small, "user.a", v, 2), -ERANGE);
		char list[64];
		assert_int_equal(pk_listxattr(l, small, list, sizeof list), 14);
		assert_string_equal(list, "user.a");
	}
	assert_int_equal(pk_getxattr(l, small, "user.none", buf, sizeof buf), -ENODATA);

	look(l, root, "gone", PK_WHITEOUT);
	look(l, root, ".wh.gone", PK_ABSENT);
	look(l, root, "nothere", PK_ABSENT);
	uint32_t opq = look(l, root, "opq", PK_FOUND);
	assert_int_equal(pk_is_opaque(l, opq), 1);
	assert_int_equal(pk_is_opaque(l, root), 0);
	uint32_t renewed = look(l, root, "renewed", PK_FOUND);
	assert_int_equal(pk_is_opaque(l, renewed), 1);
	look(l, root, ".wh.renewed", PK_ABSENT);
	look(l, opq, ".wh..wh..opq", PK_ABSENT);
	uint32_t fifo = look(l, root, "fifo", PK_FOUND);
	assert_int_equal(pk_getattr(l, fifo, &a), 0);
	assert_true(S_ISFIFO(a.mode));

	uint32_t d = look(l, root, "d", PK_FOUND);
	assert_int_equal(pk_getattr(l, d, &a), 0);
	assert_int_equal(a.mode & 07777, 0750);
	look(l, d, "small", PK_WHITEOUT);
	uint32_t x = look(l, d, "x", PK_FOUND);
	look(l, d, ".wh.x", PK_ABSENT);   /* hidden, kept for unpack */
	assert_int_equal(pk_read(l, x, 0, 4, buf), 1);
	uint32_t b1 = look(l, d, "big", PK_FOUND), b2 = look(l, d, "big2", PK_FOUND);
	assert_int_equal(b1, b2);
	assert_int_equal(pk_getattr(l, b1, &a), 0);
	assert_int_equal(a.nlink, 2);
	assert_int_equal(a.size, BIG);
	unsigned char *got = malloc(BIG + 10);
	assert_int_equal(pk_read(l, b1, 0, BIG + 10, got), BIG);
	assert_memory_equal(got, big, BIG);
	/* A read across a chunk boundary. */
	assert_int_equal(pk_read(l, b1, CHUNK - 5, 10, got), 10);
	assert_memory_equal(got, big + CHUNK - 5, 10);
	free(got);
	uint32_t ln = look(l, d, "link", PK_FOUND);
	const char *t;
	size_t tl;
	assert_int_equal(pk_readlink(l, ln, &t, &tl), 0);
	assert_int_equal(tl, 8);
	assert_memory_equal(t, "../small", 8);
	assert_int_equal(pk_readlink(l, b1, &t, &tl), -EINVAL);

	/* readdir: every entry, sorted, offsets are indexes. */
	struct pk_dirent e, prev = { 0 };
	uint64_t off;
	for (off = 0; pk_readdir(l, d, off, &e) == 1; off++) {
		if (off) {
			size_t m = prev.name_len < e.name_len ? prev.name_len : e.name_len;
			int c = memcmp(prev.name, e.name, m);
			assert_true(c < 0 || (c == 0 && prev.name_len < e.name_len));
		}
		prev = e;
	}
	assert_int_equal(off, 6);   /* .wh.x big big2 link small(wh) x */
	assert_int_equal(pk_readdir(l, d, 3, &e), 1);
	assert_memory_equal(e.name, "link", 4);
	assert_int_equal(pk_readdir(l, d, 99, &e), 0);
	assert_int_equal(pk_readdir(l, small, 0, &e), -ENOTDIR);
	assert_int_equal(pk_getattr(l, 99999, &a), -ENOENT);
	char path[256];
	pk_path_of(l, b1, path, sizeof path);
	assert_string_equal(path, "/d/big");
	pk_close(l);
	free(big);
}

/* The only pack file of store (its path in buf), and its index beside it. */
static int one_pack(const char *store, char *buf, size_t size)
{
	char d[600];
	snprintf(d, sizeof d, "%s/packs", store);
	DIR *dir = opendir(d);
	int n = 0, idx = 0;
	struct dirent *de;
	while (dir && (de = readdir(dir))) {
		size_t l = strlen(de->d_name);
		if (l == 21 && !strcmp(de->d_name + 16, ".pack")) {
			n++;
			snprintf(buf, size, "%s/%s", d, de->d_name);
		} else if (l == 20 && !strcmp(de->d_name + 16, ".idx"))
			idx++;
	}
	if (dir)
		closedir(dir);
	return n == 1 && idx == 1 ? 0 : -1;
}

static void test_forged_keys(void **state)
{
	struct pk_store *s;
	assert_int_equal(pk_store_open(P("store"), true, &s), 0);
	uint8_t key[16];
	memset(key, 0xab, 16);
	unsigned char *a = rnd(1000, 7), *b = rnd(1000, 8);
	unsigned char zeros[5000] = { 0 };
	struct pk_chunk ca, cb, ca2, cz;
	struct pk_loc la, lb, la2, lz;
	assert_int_equal(pk_store_put(s, key, a, 1000, &ca, &la), 0);
	assert_int_equal(pk_store_put(s, key, b, 1000, &cb, &lb), 0);   /* forged: same key, other bytes */
	assert_int_equal(ca.suffix, 0);
	assert_int_equal(cb.suffix, 1);
	assert_int_equal(pk_store_put(s, key, a, 1000, &ca2, &la2), 0);
	assert_int_equal(ca2.suffix, 0);                        /* reused after comparing */
	assert_true(la2.pack == la.pack && la2.off == la.off);
	assert_true(la.pack != 0 && lb.pack == la.pack && lb.off == la.off + 1000);   /* back to back */
	assert_int_equal(ca.form, PK_FORM_RAW);                 /* random bytes: lz4 does not shrink them */
	pk_key(zeros, sizeof zeros, key);
	assert_int_equal(pk_store_put(s, key, zeros, sizeof zeros, &cz, &lz), 0);
	assert_int_equal(cz.form, PK_FORM_LZ4);
	assert_true(cz.slen < 100);
	struct pk_store_stats ss;
	pk_store_stats(s, &ss);
	assert_int_equal(ss.created, 3);
	assert_int_equal(ss.reused, 1);
	assert_int_equal(pk_store_sync(s), 0);

	/* Both chunks are there and read back as their own bytes; a forged
	 * key never verifies (the real XXH3 of a differs), so get says EIO. */
	unsigned char out[5000];
	assert_int_equal(pk_store_get(s, &ca, &la, out), -EIO);
	assert_int_equal(pk_store_get(s, &cz, &lz, out), 0);
	assert_memory_equal(out, zeros, sizeof zeros);
	char pack_path[700];
	assert_int_equal(one_pack(P("store"), pack_path, sizeof pack_path), 0);
	int fd = open(pack_path, O_RDONLY);
	assert_int_equal(pread(fd, out, 1000, lb.off), 1000);
	assert_memory_equal(out, b, 1000);
	assert_int_equal(pread(fd, out, 1000, la.off), 1000);
	assert_memory_equal(out, a, 1000);
	close(fd);
	/* a location out of the pack's bounds, or of no pack: an error, not bytes */
	struct pk_loc far = { la.pack, 1ull << 40 }, nopack = { 0x1234, la.off };
	assert_int_equal(pk_store_get(s, &cz, &far, out), -EIO);
	assert_int_equal(pk_store_get(s, &cz, &nopack, out), -ENOENT);

	/* A forged key that matches real data of the first layer. */
	unsigned char *c = rnd(3000, 9), *d = rnd(3000, 10);
	pk_key(c, 3000, key);
	struct pk_chunk cc, cd;
	struct pk_loc lc, ld;
	assert_int_equal(pk_store_put(s, key, c, 3000, &cc, &lc), 0);
	assert_int_equal(pk_store_put(s, key, d, 3000, &cd, &ld), 0);
	assert_int_equal(cd.suffix, 1);
	assert_int_equal(pk_store_get(s, &cc, &lc, out), 0);
	assert_memory_equal(out, c, 3000);
	assert_int_equal(pk_store_sync(s), 0);
	pk_store_close(s);

	/* Another writer finds both through the index, compares, and reuses
	 * each for its own bytes. */
	assert_int_equal(pk_store_open(P("store"), true, &s), 0);
	struct pk_chunk x;
	struct pk_loc lx;
	assert_int_equal(pk_store_put(s, key, d, 3000, &x, &lx), 0);
	assert_true(x.suffix == 1 && lx.pack == ld.pack && lx.off == ld.off);
	assert_int_equal(pk_store_put(s, key, c, 3000, &x, &lx), 0);
	assert_true(x.suffix == 0 && lx.pack == lc.pack && lx.off == lc.off);
	pk_store_stats(s, &ss);
	assert_int_equal(ss.created, 0);
	assert_int_equal(ss.reused, 2);
	pk_store_close(s);
	free(a);
	free(b);
	free(c);
	free(d);
}

/* Every object file of a store, for damaging one. */
static char first_obj[512];
static int find_obj(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	size_t n = strlen(p);
	if (flag == FTW_F && n > 4 && (!strcmp(p + n - 4, ".lz4") || !strcmp(p + n - 4, ".raw")) && !first_obj[0])
		snprintf(first_obj, sizeof first_obj, "%s", p);
	return 0;
}

/* (A store of loose objects, as strata wrote before packs.) A writer lists
 * a fan-out directory once it has put a few chunks there and creates what
 * the listing lacks without looking it up: an object another writer made
 * meanwhile is met as EEXIST and compared, a partial object (a writer
 * killed while writing it) is never reused, and the GC removes it. */
static void test_store_listing(void **state)
{
	struct pk_store *s, *other;
	setenv("STRATA_TEST_LOOSE_OBJECTS", "1", 1);
	assert_int_equal(pk_store_open(P("store"), true, &s), 0);
	assert_int_equal(pk_store_open(P("store"), true, &other), 0);
	unsetenv("STRATA_TEST_LOOSE_OBJECTS");
	unsigned char *d[8];
	struct pk_chunk c[8], c2;
	struct pk_loc lo;
	uint8_t key[8][16];
	for (int i = 0; i < 8; i++) {
		d[i] = rnd(3000, 100 + i);
		pk_key(d[i], 3000, key[i]);
		key[i][0] = 0x5a;   /* all in one fan-out directory (a forged key, read as EIO) */
	}
	/* a partial object where key 7's will go, as a killed writer leaves it */
	struct pk_chunk part = { .ulen = 3000, .form = PK_FORM_RAW };
	memcpy(part.key, key[7], 16);
	char name[64];
	pk_object_name(&part, name);
	assert_int_equal(mkdir(P("store/5a"), 0755), 0);
	snprintf(path_buf, sizeof path_buf, "store/%s", name);
	put_file(path_buf, d[7], 1000);
	for (int i = 0; i < 5; i++)   /* the fourth put lists 5a/ */
		assert_int_equal(pk_store_put(s, key[i], d[i], 3000, &c[i], &lo), 0);
	assert_true(lo.pack == 0);
	/* made by another writer after the listing: met as EEXIST, compared, reused */
	assert_int_equal(pk_store_put(other, key[5], d[5], 3000, &c[5], &lo), 0);
	assert_int_equal(pk_store_put(s, key[5], d[5], 3000, &c2, &lo), 0);
	assert_int_equal(c2.suffix, 0);
	/* the same key with other bytes: compared different, next suffix */
	assert_int_equal(pk_store_put(s, key[5], d[6], 3000, &c2, &lo), 0);
	assert_int_equal(c2.suffix, 1);
	/* the partial object is listed, compared, not reused */
	assert_int_equal(pk_store_put(s, key[7], d[7], 3000, &c[7], &lo), 0);
	assert_int_equal(c[7].suffix, 1);
	struct pk_store_stats ss;
	pk_store_stats(s, &ss);
	assert_int_equal(ss.created, 7);   /* 0..4, key 5 suffix 1, key 7 suffix 1 */
	assert_int_equal(ss.reused, 1);
	/* a store listed again (a new writer) reuses all of them */
	pk_store_close(other);
	setenv("STRATA_TEST_LOOSE_OBJECTS", "1", 1);
	assert_int_equal(pk_store_open(P("store"), true, &other), 0);
	unsetenv("STRATA_TEST_LOOSE_OBJECTS");
	for (int i = 0; i < 8; i++)
		if (i != 6)
			assert_int_equal(pk_store_put(other, key[i], d[i], 3000, &c2, &lo), 0);
	pk_store_stats(other, &ss);
	assert_int_equal(ss.created, 0);
	pk_store_close(other);
	pk_store_close(s);
	/* the GC removes the partial object (no layer names it) */
	struct pk_gc_stats gs;
	assert_int_equal(pk_gc(P("store"), NULL, 0, &gs), 0);
	assert_int_equal(gs.removed, 9);   /* 0..4, 5 and 5-1, 7-1 and the partial 7 */
	struct stat st;
	snprintf(path_buf, sizeof path_buf, "%s/store/%s", top, name);
	assert_int_equal(stat(path_buf, &st), -1);
	for (int i = 0; i < 8; i++)
		free(d[i]);
}

/* Flip one byte at off of file path (made writable first). */
static void flip(const char *path, off_t off)
{
	assert_int_equal(chmod(path, 0644), 0);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	unsigned char byte;
	assert_int_equal(pread(fd, &byte, 1, off), 1);
	byte ^= 0x40;
	assert_int_equal(pwrite(fd, &byte, 1, off), 1);
	close(fd);
}

static void test_damaged_chunk(void **state)
{
	assert_int_equal(mkdir(P("src"), 0755), 0);
	unsigned char *data = rnd(200000, 3);
	put_file("src/f", data, 200000);
	struct pk_layer *l = pack("src", "L", NULL);
	uint32_t f = look(l, pk_root(l), "f", PK_FOUND);
	/* a byte inside the chunk holding the file's first 64 KiB: found by
	 * its key, as the writer's threads append chunks to the pack in
	 * whatever order they finish */
	char pack_path[700];
	assert_int_equal(one_pack(P("chunks"), pack_path, sizeof pack_path), 0);
	uint8_t key0[16];
	pk_key(data, CHUNK, key0);
	const struct pk_loc *loc0 = NULL;
	for (uint32_t i = 0; i < pk_chunk_count(l); i++)
		if (!memcmp(pk_chunk_at(l, i)->key, key0, 16))
			loc0 = pk_loc_at(l, i);
	assert_non_null(loc0);
	flip(pack_path, (off_t)loc0->off + 10);
	unsigned char *out = malloc(200000);
	assert_int_equal(pk_read(l, f, 0, 200000, out), -EIO);
	/* read-ahead of the damaged chunk fails on a loader thread: the
	 * reader still gets EIO, every time, and never the bad bytes */
	struct pk_cache *c = pk_cache_new(8 * CHUNK);
	struct pk_layer *l2;
	char L[512];
	snprintf(L, sizeof L, "%s/L", top);
	assert_int_equal(pk_open(L, NULL, c, &l2), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pk_prefetch(l2, f, 0, 200000), 0);
		assert_int_equal(pk_read(l2, f, 0, 200000, out), -EIO);
	}
	/* the chunks after it read fine */
	assert_int_equal(pk_read(l2, f, CHUNK, 200000 - CHUNK, out), 200000 - CHUNK);
	assert_memory_equal(out, data + CHUNK, 200000 - CHUNK);
	pk_close(l2);
	pk_cache_free(c);
	/* a pack cut short: the chunks past its end are errors too */
	assert_int_equal(truncate(pack_path, 2 * CHUNK), 0);
	assert_int_equal(pk_read(l, f, 3 * CHUNK, 1000, out), -EIO);
	pk_close(l);
	free(out);
	free(data);
}

/* A layer of loose objects (written as strata did before packs) still
 * reads, flags damage, and its objects are collected: a store keeps
 * working across the change. */
static void test_loose_layer(void **state)
{
	assert_int_equal(mkdir(P("src"), 0755), 0);
	unsigned char *data = rnd(150000, 4);
	put_file("src/f", data, 150000);
	setenv("STRATA_TEST_LOOSE_OBJECTS", "1", 1);
	struct pk_layer *l = pack("src", "OLD", NULL);
	unsetenv("STRATA_TEST_LOOSE_OBJECTS");
	assert_int_equal(pk_super(l)->incompat & PK_INCOMPAT_PACKS, 0);
	assert_null(pk_loc_at(l, 0));
	char pack_path[700];
	assert_int_not_equal(one_pack(P("chunks"), pack_path, sizeof pack_path), 0);
	/* a new layer of the same file is packed: nothing is shared with
	 * loose objects, and both read */
	struct pk_write_stats st;
	struct pk_layer *n = pack("src", "NEW", &st);
	assert_int_equal(st.chunks_new, NCHUNKS(150000));
	assert_true(pk_super(n)->incompat & PK_INCOMPAT_PACKS);
	assert_int_equal(one_pack(P("chunks"), pack_path, sizeof pack_path), 0);
	unsigned char *out = malloc(150000);
	uint32_t f = look(l, pk_root(l), "f", PK_FOUND), g = look(n, pk_root(n), "f", PK_FOUND);
	assert_int_equal(pk_read(l, f, 0, 150000, out), 150000);
	assert_memory_equal(out, data, 150000);
	assert_int_equal(pk_read(n, g, 0, 150000, out), 150000);
	assert_memory_equal(out, data, 150000);
	/* the GC keeps what each uses, then frees the old layer's objects */
	char store[512], lold[512], lnew[512];
	snprintf(store, sizeof store, "%s/chunks", top);
	snprintf(lold, sizeof lold, "%s/OLD", top);
	snprintf(lnew, sizeof lnew, "%s/NEW", top);
	char *both[] = { lold, lnew }, *only_new[] = { lnew };
	struct pk_gc_stats gs;
	assert_int_equal(pk_gc(store, both, 2, &gs), 0);
	assert_int_equal(gs.removed, 0);
	assert_int_equal(gs.kept, 2 * NCHUNKS(150000));
	assert_int_equal(pk_gc(store, only_new, 1, &gs), 0);
	assert_int_equal(gs.removed, NCHUNKS(150000));
	first_obj[0] = 0;
	nftw(P("chunks"), find_obj, 16, FTW_PHYS);
	assert_false(first_obj[0]);
	assert_int_equal(pk_read(n, g, 0, 150000, out), 150000);
	assert_memory_equal(out, data, 150000);
	pk_close(l);
	pk_close(n);
	free(out);
	free(data);
}

static void test_damaged_meta(void **state)
{
	assert_int_equal(mkdir(P("src"), 0755), 0);
	put_file("src/a", "a", 1);
	struct pk_layer *l = pack("src", "L", NULL);
	off_t size = pk_super(l)->file_size;
	uint64_t inodes = pk_super(l)->sec[PK_SEC_INODES].off;
	pk_close(l);
	char L[512];
	snprintf(L, sizeof L, "%s/L", top);
	/* A flipped byte in a section. */
	int fd = open(L, O_RDWR);
	unsigned char byte;
	assert_int_equal(pread(fd, &byte, 1, inodes + 80), 1);
	byte ^= 1;
	assert_int_equal(pwrite(fd, &byte, 1, inodes + 80), 1);
	assert_int_equal(pk_open(L, NULL, NULL, &l), -EINVAL);
	byte ^= 1;
	assert_int_equal(pwrite(fd, &byte, 1, inodes + 80), 1);
	assert_int_equal(pk_open(L, NULL, NULL, &l), 0);
	pk_close(l);
	/* The superblock. */
	assert_int_equal(pread(fd, &byte, 1, 40), 1);
	byte ^= 1;
	assert_int_equal(pwrite(fd, &byte, 1, 40), 1);
	assert_int_equal(pk_open(L, NULL, NULL, &l), -EINVAL);
	byte ^= 1;
	assert_int_equal(pwrite(fd, &byte, 1, 40), 1);
	/* Truncated, anywhere. */
	assert_int_equal(ftruncate(fd, size - 1), 0);
	assert_int_equal(pk_open(L, NULL, NULL, &l), -EINVAL);
	assert_int_equal(ftruncate(fd, 100), 0);
	assert_int_equal(pk_open(L, NULL, NULL, &l), -EINVAL);
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pk_open(L, NULL, NULL, &l), -EINVAL);
	close(fd);
	char junk[400];
	memset(junk, 'x', sizeof junk);
	put_file("notalayer", junk, sizeof junk);
	assert_int_equal(pk_open(P("notalayer"), NULL, NULL, &l), -EINVAL);
}

/* Pack files in store (and how many 512-byte blocks they take). */
static int count_packs(const char *store, long long *blocks)
{
	char d[600];
	snprintf(d, sizeof d, "%s/packs", store);
	DIR *dir = opendir(d);
	int n = 0;
	if (blocks)
		*blocks = 0;
	struct dirent *de;
	while (dir && (de = readdir(dir))) {
		size_t l = strlen(de->d_name);
		if (l > 5 && !strcmp(de->d_name + l - 5, ".pack")) {
			char p[1200];
			struct stat st;
			snprintf(p, sizeof p, "%s/%s", d, de->d_name);
			assert_int_equal(stat(p, &st), 0);
			if (blocks)
				*blocks += st.st_blocks;
			n++;
		}
	}
	if (dir)
		closedir(dir);
	return n;
}

static long long blocks_of(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_blocks;
}

static void test_gc(void **state)
{
	assert_int_equal(mkdir(P("a"), 0755), 0);
	assert_int_equal(mkdir(P("b"), 0755), 0);
	unsigned char *shared = rnd(100000, 1), *only_a = rnd(600000, 2), *only_b = rnd(70000, 3);
	put_file("a/shared", shared, 100000);
	put_file("b/shared", shared, 100000);
	put_file("a/mine", only_a, 600000);
	put_file("b/mine", only_b, 70000);
	struct pk_write_stats sa, sb;
	struct pk_layer *la = pack("a", "LA", &sa), *lb = pack("b", "LB", &sb);
	assert_int_equal(sa.chunks_new, NCHUNKS(100000) + NCHUNKS(600000));
	assert_int_equal(sb.chunks_new, NCHUNKS(70000));   /* the shared file's chunks are reused */
	/* each writer added one pack, and nothing loose */
	char store[512], lia[512], lib[512];
	snprintf(store, sizeof store, "%s/chunks", top);
	snprintf(lia, sizeof lia, "%s/LA", top);
	snprintf(lib, sizeof lib, "%s/LB", top);
	assert_int_equal(count_packs(store, NULL), 2);
	first_obj[0] = 0;
	nftw(store, find_obj, 16, FTW_PHYS);
	assert_false(first_obj[0]);
	const struct pk_loc *loc_a = pk_loc_at(la, 0);
	assert_non_null(loc_a);
	char pack_a[700], idx_a[700];
	snprintf(pack_a, sizeof pack_a, "%s/packs/%016llx.pack", store, (unsigned long long)loc_a->pack);
	snprintf(idx_a, sizeof idx_a, "%s/packs/%016llx.idx", store, (unsigned long long)loc_a->pack);
	long long before = blocks_of(pack_a);
	struct stat ist;
	assert_int_equal(stat(idx_a, &ist), 0);
	off_t idx_before = ist.st_size;

	put_file("chunks/tmp/123.4", "junk", 4);   /* left by a killed writer */
	put_file("chunks/packs/00000000000000ab.pack", "STRATAPF junk of a writer killed before its index", 50);
	char *live[] = { lib };
	struct pk_gc_stats gs;
	/* Only B lives: A's own file's chunks are punched out of A's pack,
	 * which keeps the shared ones B uses; the orphan pack goes. */
	assert_int_equal(pk_gc(store, live, 1, &gs), 0);
	assert_int_equal(gs.removed, NCHUNKS(600000));
	assert_int_equal(gs.kept, NCHUNKS(100000) + NCHUNKS(70000));
	assert_int_equal(gs.tmp_removed, 1);
	assert_int_equal(gs.packs_removed, 1);
	assert_int_equal(gs.packs_punched, 1);
	assert_int_equal(count_packs(store, NULL), 2);
	assert_true(blocks_of(pack_a) < before - 500000 / 512);
	assert_int_equal(stat(idx_a, &ist), 0);
	assert_true(ist.st_size < idx_before);
	/* The live layer reads whole. */
	pk_close(la);
	uint32_t f = look(lb, pk_root(lb), "mine", PK_FOUND);
	unsigned char *out = malloc(600000);
	assert_int_equal(pk_read(lb, f, 0, 70000, out), 70000);
	assert_memory_equal(out, only_b, 70000);
	f = look(lb, pk_root(lb), "shared", PK_FOUND);
	assert_int_equal(pk_read(lb, f, 0, 100000, out), 100000);
	assert_memory_equal(out, shared, 100000);
	/* Again: nothing more to free, and nothing lost. */
	assert_int_equal(pk_gc(store, live, 1, &gs), 0);
	assert_int_equal(gs.removed, 0);
	assert_int_equal(gs.kept, NCHUNKS(100000) + NCHUNKS(70000));
	assert_int_equal(pk_read(lb, f, 0, 100000, out), 100000);
	assert_memory_equal(out, shared, 100000);
	/* A new writer does not reuse a punched chunk: it stores it again. */
	struct pk_write_stats sc;
	struct pk_layer *lc = pack("a", "LC", &sc);
	assert_int_equal(sc.chunks_new, NCHUNKS(600000));
	f = look(lc, pk_root(lc), "mine", PK_FOUND);
	assert_int_equal(pk_read(lc, f, 0, 600000, out), 600000);
	assert_memory_equal(out, only_a, 600000);
	pk_close(lc);
	/* A live layer that cannot be read stops the GC before any removal. */
	char *bad[] = { lib, (char *)"/nonexistent/layer" };
	long long b1, b2;
	count_packs(store, &b1);
	assert_int_not_equal(pk_gc(store, bad, 2, &gs), 0);
	assert_int_equal(count_packs(store, &b2), 3);
	assert_int_equal(b1, b2);
	/* Nothing live: everything goes, indexes too. */
	assert_int_equal(pk_gc(store, NULL, 0, &gs), 0);
	assert_int_equal(count_packs(store, NULL), 0);
	assert_int_equal(gs.packs_removed, 3);
	DIR *d = opendir(P("chunks/packs"));
	struct dirent *de;
	int left = 0;
	while ((de = readdir(d)))
		left += de->d_name[0] != '.';
	closedir(d);
	assert_int_equal(left, 0);
	pk_close(lb);
	free(out);
	free(shared);
	free(only_a);
	free(only_b);
}

struct rd {
	struct pk_layer *l;
	uint32_t ino;
	const unsigned char *want;
	int bad;
};

static void *reader(void *arg)
{
	struct rd *r = arg;
	unsigned char *buf = malloc(8192);
	for (int i = 0; i < 400; i++) {
		uint64_t off = (i * 7919u * 4096u) % (800000 - 8192);
		if (pk_read(r->l, r->ino, off, 8192, buf) != 8192 || memcmp(buf, r->want + off, 8192))
			r->bad++;
	}
	free(buf);
	return NULL;
}

static void test_cache_threads(void **state)
{
	assert_int_equal(mkdir(P("src"), 0755), 0);
	unsigned char *data = rnd(800000, 5);
	put_file("src/f", data, 800000);
	assert_int_equal(pk_write(P("src"), P("L"), NULL, NULL), 0);
	struct pk_cache *c = pk_cache_new(3 * CHUNK);
	struct pk_layer *l;
	char L[512];
	snprintf(L, sizeof L, "%s/L", top);
	assert_int_equal(pk_open(L, NULL, c, &l), 0);
	struct rd r[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		r[i] = (struct rd){ l, look(l, pk_root(l), "f", PK_FOUND), data, 0 };
		pthread_create(&th[i], NULL, reader, &r[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(r[i].bad, 0);
	}
	struct pk_cache_stats cs, cs2;
	pk_cache_stats(c, &cs);
	assert_true(cs.bytes <= 3 * CHUNK);
	assert_true(cs.hits > 0 && cs.misses > 0);
	/* Readahead: what was prefetched is read without a miss (a load still
	 * running is waited for). */
	assert_int_equal(pk_prefetch(l, r[0].ino, 5 * CHUNK, 2 * CHUNK), 0);
	pk_cache_stats(c, &cs);
	unsigned char *buf = malloc(2 * CHUNK);
	assert_int_equal(pk_read(l, r[0].ino, 5 * CHUNK, 2 * CHUNK, buf), 2 * CHUNK);
	assert_memory_equal(buf, data + 5 * CHUNK, 2 * CHUNK);
	pk_cache_stats(c, &cs2);
	assert_int_equal(cs2.misses, cs.misses);
	free(buf);
	/* closed with read-ahead queued and running: the loads of its store
	 * are cancelled or waited for, none outlives it */
	assert_int_equal(pk_prefetch(l, r[0].ino, 0, 800000), 0);
	pk_close(l);
	assert_int_equal(pk_open(L, NULL, c, &l), 0);
	assert_int_equal(pk_prefetch(l, r[0].ino, 0, 800000), 0);
	unsigned char *all = malloc(800000);
	assert_int_equal(pk_read(l, r[0].ino, 0, 800000, all), 800000);
	assert_memory_equal(all, data, 800000);
	free(all);
	pk_close(l);
	pk_cache_free(c);
	free(data);
}

/* Drop-behind: a file read through from start to end leaves nothing in
 * the cache (the kernel keeps what strata-fs replied), a chunk read in
 * part stays until its end is read, and read-ahead that was loaded goes
 * once read through. */
static void test_cache_drop_behind(void **state)
{
	(void)state;
	size_t n = 10 * CHUNK + 5000;
	unsigned char *data = rnd(n, 31);
	assert_int_equal(mkdir(P("src"), 0755), 0);
	put_file("src/f", data, n);
	assert_int_equal(pk_write(P("src"), P("L"), NULL, NULL), 0);
	struct pk_cache *c = pk_cache_new(64 * CHUNK);
	struct pk_layer *l;
	assert_int_equal(pk_open(P("L"), NULL, c, &l), 0);
	uint32_t f = look(l, pk_root(l), "f", PK_FOUND);
	unsigned char *buf = malloc(n);
	/* the kernel's reads of a sequential reader: 128 KiB at a time */
	for (size_t off = 0; off < n; off += 131072) {
		size_t want = n - off < 131072 ? n - off : 131072;
		assert_int_equal(pk_read(l, f, off, want, buf + off), (ssize_t)want);
	}
	assert_memory_equal(buf, data, n);
	struct pk_cache_stats cs;
	pk_cache_stats(c, &cs);
	assert_int_equal(cs.misses, 11);
	assert_int_equal(cs.dropped, 11);
	assert_int_equal(cs.entries, 0);
	assert_int_equal(cs.bytes, 0);
	/* in part: the first 4 KiB of chunk 3, then more of it (a hit) */
	assert_int_equal(pk_read(l, f, 3 * CHUNK, 4096, buf), 4096);
	assert_int_equal(pk_read(l, f, 3 * CHUNK + 4096, 8192, buf), 8192);
	assert_memory_equal(buf, data + 3 * CHUNK + 4096, 8192);
	pk_cache_stats(c, &cs);
	assert_int_equal(cs.misses, 12);
	assert_int_equal(cs.hits, 1);
	assert_int_equal(cs.entries, 1);
	assert_int_equal(cs.bytes, CHUNK);
	/* its end, read: it goes */
	assert_int_equal(pk_read(l, f, 4 * CHUNK - 100, 100, buf), 100);
	assert_memory_equal(buf, data + 4 * CHUNK - 100, 100);
	pk_cache_stats(c, &cs);
	assert_int_equal(cs.entries, 0);
	assert_int_equal(cs.dropped, 12);
	/* read-ahead queued and loaded, then read through: dropped too */
	assert_int_equal(pk_prefetch(l, f, 0, 4 * CHUNK), 0);
	assert_int_equal(pk_read(l, f, 0, 4 * CHUNK, buf), 4 * CHUNK);
	assert_memory_equal(buf, data, 4 * CHUNK);
	pk_cache_stats(c, &cs);
	assert_int_equal(cs.entries, 0);
	pk_close(l);
	pk_cache_free(c);
	free(buf);
	free(data);
}

/* A chunk's key is XXH3-128 in canonical bytes whichever build of XXH3
 * the CPU gets (pkhash.c): the same as xxhash's own, for every length
 * class its code has (0, 1-3, 4-8, 9-16, 17-128, 129-240, longer, and
 * across its 1 KiB stripes and 64 KiB). */
static void test_key_is_xxh3(void **state)
{
	(void)state;
	static const size_t lens[] = { 0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1023, 1024, 1025,
				       4096, 32767, 32768, 65535, PK_CHUNK_MAX };
	unsigned char *d = rnd(PK_CHUNK_MAX, 5);
	for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
		uint8_t got[16];
		XXH128_canonical_t want;
		XXH128_canonicalFromHash(&want, XXH3_128bits(d, lens[i]));
		pk_key(d, lens[i], got);
		assert_memory_equal(got, want.digest, 16);
	}
	free(d);
}

/* Reads in place (pk_read_pieces): the pieces give the file's bytes, a
 * hole as zeros without a chunk, a small file's inline bytes; a pinned
 * chunk keeps its bytes while the cache evicts around it, and goes once
 * the read through its end is done; max pieces cut a read short. */
static void test_read_pieces(void **state)
{
	(void)state;
	size_t n = 4 * CHUNK + 700;
	unsigned char *data = rnd(n, 77);
	memset(data + CHUNK, 0, 2 * CHUNK);
	assert_int_equal(mkdir(P("src"), 0755), 0);
	int fd = open(P("src/f"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, CHUNK, 0), CHUNK);
	assert_int_equal(pwrite(fd, data + 3 * CHUNK, n - 3 * CHUNK, 3 * CHUNK),
			 (ssize_t)(n - 3 * CHUNK));
	close(fd);
	put_file("src/small", "tiny", 4);
	assert_int_equal(pk_write(P("src"), P("L"), NULL, NULL), 0);
	/* room for one chunk: every load evicts what is not pinned */
	struct pk_cache *c = pk_cache_new(CHUNK);
	struct pk_layer *l;
	assert_int_equal(pk_open(P("L"), NULL, c, &l), 0);
	uint32_t f = look(l, pk_root(l), "f", PK_FOUND);

	struct pk_piece p[8];
	size_t np;
	assert_int_equal(pk_read_pieces(l, f, 100, n, p, 8, &np), (ssize_t)(n - 100));
	assert_int_equal(np, 5);
	size_t at = 100, holes = 0;
	for (size_t k = 0; k < np; at += p[k].len, k++) {
		assert_memory_equal(p[k].data, data + at, p[k].len);
		holes += !p[k].pin;
	}
	assert_int_equal(at, n);
	assert_int_equal(holes, 2);
	/* three chunks pinned in a cache for one: all stay until done */
	struct pk_cache_stats cs;
	pk_cache_stats(c, &cs);
	assert_int_equal(cs.entries, 3);
	assert_memory_equal(p[0].data, data + 100, p[0].len);
	pk_read_done(l, p, np);
	pk_cache_stats(c, &cs);
	assert_int_equal(cs.entries, 0);
	assert_int_equal(cs.bytes, 0);

	/* a chunk pinned while another load evicts: its bytes hold */
	assert_int_equal(pk_read_pieces(l, f, 3 * CHUNK, 4096, p, 8, &np), 4096);
	assert_int_equal(np, 1);
	unsigned char *other = malloc(CHUNK);
	assert_int_equal(pk_read(l, f, 0, 4096, other), 4096);
	assert_int_equal(pk_read(l, f, 4 * CHUNK, 700, other), 700);
	assert_memory_equal(p[0].data, data + 3 * CHUNK, 4096);
	pk_read_done(l, p, np);

	/* max pieces: the read stops where they end */
	assert_int_equal(pk_read_pieces(l, f, CHUNK - 10, 3 * CHUNK, p, 2, &np), 10 + CHUNK);
	assert_int_equal(np, 2);
	assert_memory_equal(p[0].data, data + CHUNK - 10, 10);
	pk_read_done(l, p, np);
	assert_int_equal(pk_read_pieces(l, f, n, 10, p, 8, &np), 0);
	assert_int_equal(np, 0);

	uint32_t sm = look(l, pk_root(l), "small", PK_FOUND);
	assert_int_equal(pk_read_pieces(l, sm, 1, 100, p, 8, &np), 3);
	assert_int_equal(np, 1);
	assert_null(p[0].pin);
	assert_memory_equal(p[0].data, "iny", 3);
	pk_read_done(l, p, np);
	pk_close(l);
	pk_cache_free(c);
	free(other);
	free(data);
}

/* Everything a reader of the layer can ask, depth first; returns how many
 * queries failed (with -errno, never a crash or a sanitizer report). */
static int visit(struct pk_layer *l, uint32_t dir, int depth, uint8_t *seen, unsigned char *buf)
{
	int bad = 0;
	struct pk_dirent e;
	int r;
	if (depth > 64)
		return 1;
	for (uint64_t off = 0; (r = pk_readdir(l, dir, off, &e)) == 1 && off < 10000; off++) {
		struct pk_dirent f;
		bad += pk_lookup(l, dir, e.name, e.name_len, &f) < 0;
		struct pk_attr a;
		if (pk_getattr(l, e.ino, &a) < 0) {
			bad++;
			continue;
		}
		char list[1024];
		ssize_t n = pk_listxattr(l, e.ino, list, sizeof list);
		bad += n < 0;
		for (ssize_t k = 0; n > 0 && k < n; k += strlen(list + k) + 1) {
			char v[256];
			bad += pk_getxattr(l, e.ino, list + k, v, sizeof v) < 0;
		}
		if (S_ISDIR(a.mode) && e.ino / 8 < 4096 && !(seen[e.ino / 8] & (1 << (e.ino % 8)))) {
			seen[e.ino / 8] |= 1 << (e.ino % 8);
			bad += pk_is_opaque(l, e.ino) < 0;
			bad += visit(l, e.ino, depth + 1, seen, buf);
		} else if (S_ISREG(a.mode)) {
			for (uint64_t o = 0; o < a.size && o < 64 * CHUNK; o += CHUNK) {
				uint16_t h;
				bool none;
				bad += pk_holes(l, e.ino, o / CHUNK, &h, &none) < 0;
				bad += pk_read(l, e.ino, o, CHUNK, buf) < 0;
			}
		} else if (S_ISLNK(a.mode)) {
			const char *t;
			size_t tl;
			bad += pk_readlink(l, e.ino, &t, &tl) < 0;
		}
		char path[256];
		pk_path_of(l, e.ino, path, sizeof path);
	}
	return bad + (r < 0);
}

/* Damage that keeps valid checksums (a hostile file): random bytes of the
 * sections changed and every checksum recomputed. The reader must refuse or
 * answer -errno, never read out of bounds. */
/* pk_build, entries fed in archive order: a sparse file (holes where no
 * data came), a file listed twice, a directory replaced by a file, a hard
 * link, a symlinked parent (followed inside the layer, refused when it
 * leads out), data out of order refused; read back through the reader. */
static void test_build(void **state)
{
	(void)state;
	struct pk_build_attr dirs = { .mode = S_IFDIR | 0755 };
	struct pk_build *b;
	struct pk_bnode *n;
	struct pk_write_stats st;
	struct pk_write_opts o = { .threads = 2 };
	assert_int_equal(pk_build_new(P("L"), &o, &dirs, &b), 0);

	struct pk_build_attr reg = { .mode = S_IFREG | 0640, .uid = 5, .gid = 6, .size = 300000,
				     .mtime = { 1000, 7 }, .atime = { 1000, 7 } };
	unsigned char *a = rnd(70000, 1), *c = rnd(5000, 2);
	assert_int_equal(pk_build_add(b, "d/sparse", &reg, NULL, &n), 0);   /* parent made */
	assert_int_equal(pk_build_data(b, 0, a, 70000), 0);
	assert_int_equal(pk_build_data(b, 200000, c, 5000), 0);
	assert_int_equal(pk_build_data(b, 100, c, 10), -EINVAL);             /* backwards */
	pk_build_free(b);
	assert_int_equal(access(P("L"), F_OK), -1);                          /* nothing written */

	assert_int_equal(pk_build_new(P("L"), &o, &dirs, &b), 0);
	assert_int_equal(pk_build_add(b, "d/sparse", &reg, NULL, &n), 0);
	assert_int_equal(pk_build_data(b, 0, a, 70000), 0);
	assert_int_equal(pk_build_data(b, 200000, c, 5000), 0);
	assert_int_equal(pk_build_xattr(b, n, "user.x", "1", 1), 0);
	struct pk_build_attr small = reg;
	small.size = 5;
	assert_int_equal(pk_build_add(b, "twice", &small, NULL, &n), 0);
	assert_int_equal(pk_build_data(b, 0, "first", 5), 0);
	assert_int_equal(pk_build_add(b, "twice", &small, NULL, &n), 0);
	assert_int_equal(pk_build_data(b, 0, "again", 5), 0);
	struct pk_build_attr dir = { .mode = S_IFDIR | 0700 };
	assert_int_equal(pk_build_add(b, "wasdir", &dir, NULL, &n), 0);
	assert_int_equal(pk_build_add(b, "wasdir/in", &small, NULL, &n), 0);
	assert_int_equal(pk_build_data(b, 0, "inner", 5), 0);
	assert_int_equal(pk_build_add(b, "wasdir", &small, NULL, &n), 0);
	assert_int_equal(pk_build_data(b, 0, "afile", 5), 0);
	assert_int_equal(pk_build_link(b, "hl", "d/sparse"), 0);
	assert_int_equal(pk_build_link(b, "hl2", "nothere"), -ENOENT);
	assert_int_equal(pk_build_link(b, "hl3", "d"), -ENOENT);             /* a directory */
	struct pk_build_attr lnk = { .mode = S_IFLNK | 0777 };
	assert_int_equal(pk_build_add(b, "via", &lnk, "d", &n), 0);
	assert_int_equal(pk_build_add(b, "via/x", &small, NULL, &n), 0);     /* lands in d/ */
	assert_int_equal(pk_build_data(b, 0, "via-x", 5), 0);
	assert_int_equal(pk_build_add(b, "out", &lnk, "../..", &n), 0);
	assert_int_equal(pk_build_add(b, "out/y", &small, NULL, &n), -EXDEV);
	assert_int_equal(pk_build_add(b, "abs", &lnk, "/etc", &n), 0);
	assert_int_equal(pk_build_add(b, "abs/y", &small, NULL, &n), -EXDEV);
	assert_int_equal(pk_build_add(b, "twice/y", &small, NULL, &n), -ENOTDIR);
	assert_int_equal(pk_build_lookup(b, "d/x"), 1);
	assert_int_equal(pk_build_lookup(b, "wasdir/in"), -ENOTDIR);
	assert_int_equal(pk_build_finish(b, &st), 0);
	pk_build_free(b);
	assert_int_equal(st.files, 6);

	struct pk_layer *l;
	struct pk_dirent e, e2;
	struct pk_attr at;
	char buf[300000];
	uint32_t root;
	assert_int_equal(pk_open(P("L"), NULL, NULL, &l), 0);
	root = pk_root(l);
	assert_int_equal(pk_lookup(l, root, "d", 1, &e), PK_FOUND);
	assert_int_equal(pk_lookup(l, e.ino, "sparse", 6, &e2), PK_FOUND);
	assert_int_equal(pk_getattr(l, e2.ino, &at), 0);
	assert_int_equal(at.size, 300000);
	assert_int_equal(at.uid, 5);
	assert_int_equal(at.nlink, 2);
	assert_int_equal(at.mode, S_IFREG | 0640);
	assert_int_equal(pk_read(l, e2.ino, 0, sizeof buf, buf), 300000);
	assert_memory_equal(buf, a, 70000);
	for (size_t i = 70000; i < 200000; i++)
		assert_int_equal(buf[i], 0);
	assert_memory_equal(buf + 200000, c, 5000);
	uint16_t holes;
	bool none;
	assert_int_equal(pk_holes(l, e2.ino, 131072 / CHUNK, &holes, &none), 0);   /* from 128 KiB: no data */
	assert_true(none);
	assert_int_equal(pk_holes(l, e2.ino, 65536 / CHUNK, &holes, &none), 0);    /* 4464 bytes of data: 2 blocks */
	assert_false(none);
	assert_int_equal(holes, (uint16_t)(((1u << (CHUNK / 4096)) - 1) & ~3u));
	assert_int_equal(pk_getxattr(l, e2.ino, "user.x", buf, sizeof buf), 1);
	assert_int_equal(pk_lookup(l, e.ino, "x", 1, &e2), PK_FOUND);
	assert_int_equal(pk_read(l, e2.ino, 0, 5, buf), 5);
	assert_memory_equal(buf, "via-x", 5);
	assert_int_equal(pk_lookup(l, root, "twice", 5, &e), PK_FOUND);
	assert_int_equal(pk_read(l, e.ino, 0, 5, buf), 5);
	assert_memory_equal(buf, "again", 5);
	assert_int_equal(pk_lookup(l, root, "wasdir", 6, &e), PK_FOUND);
	assert_int_equal(pk_getattr(l, e.ino, &at), 0);
	assert_true(S_ISREG(at.mode));
	assert_int_equal(pk_lookup(l, root, "hl", 2, &e), PK_FOUND);
	assert_int_equal(pk_lookup(l, root, "hl2", 3, &e), PK_ABSENT);
	pk_close(l);
	free(a);
	free(c);
}

/* progcache (pkprog.c): an ELF file's copy is made once, found and
 * checked by the next process, made again when damaged; other files have
 * none. The copy is compared with the file's bytes, holes included. */
static void test_progs(void **state)
{
	(void)state;
	size_t n = 3 * 65536 + 1000;
	unsigned char *elf = rnd(n, 11);
	memcpy(elf, "\177ELF", 4);
	memset(elf + 65536, 0, 65536);   /* a whole chunk of zeros: a hole */
	assert_int_equal(mkdir(P("src"), 0755), 0);
	put_file("src/prog", elf, n);
	unsigned char *data = rnd(n, 12);
	put_file("src/data", data, n);
	struct pk_write_stats ws;
	struct pk_layer *l = pack("src", "l.pk", &ws);
	uint32_t prog = look(l, pk_root(l), "prog", PK_FOUND), dat = look(l, pk_root(l), "data", PK_FOUND);
	/* off until enabled */
	assert_int_equal(pk_prog_fd(l, prog), -ENOENT);
	assert_int_equal(pk_progs_enable(l, P("l.pk.progs")), 0);
	assert_int_equal(pk_prog_fd(l, dat), -ENOENT);
	int fd = pk_prog_fd(l, prog);
	assert_true(fd >= 0);
	unsigned char *got = malloc(n + 1);
	assert_int_equal(pread(fd, got, n + 1, 0), (ssize_t)n);
	assert_memory_equal(got, elf, n);
	close(fd);
	int again = pk_prog_fd(l, prog);   /* from the table: no second check */
	assert_true(again >= 0);
	close(again);
	struct pk_progs_stats st;
	pk_progs_stats(l, &st);
	assert_int_equal(st.made, 1);
	assert_int_equal(st.checked, 0);
	pk_close(l);

	/* another process: finds the copy and checks it */
	assert_int_equal(pk_open(P("l.pk"), NULL, NULL, &l), 0);
	assert_int_equal(pk_progs_enable(l, P("l.pk.progs")), 0);
	fd = pk_prog_fd(l, prog);
	assert_true(fd >= 0);
	close(fd);
	pk_progs_stats(l, &st);
	assert_int_equal(st.made, 0);
	assert_int_equal(st.checked, 1);
	pk_close(l);

	/* a byte flipped in the hole of the copy: made again */
	char copy[64];
	snprintf(copy, sizeof copy, "l.pk.progs/%u", prog);
	flip(P(copy), 65536 + 7);
	assert_int_equal(pk_open(P("l.pk"), NULL, NULL, &l), 0);
	assert_int_equal(pk_progs_enable(l, P("l.pk.progs")), 0);
	fd = pk_prog_fd(l, prog);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, got, n, 0), (ssize_t)n);
	assert_memory_equal(got, elf, n);
	close(fd);
	pk_progs_stats(l, &st);
	assert_int_equal(st.damaged, 1);
	assert_int_equal(st.made, 1);
	pk_close(l);
	free(got);
	free(elf);
	free(data);
}

/* Is some thread of this process blocked in openat(2)? (the syscall file
 * of a thread in a system call starts with its number) */
static bool a_thread_in_openat(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	bool found = false;
	while (d && !found && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char f[300], line[32] = "";
		snprintf(f, sizeof f, "/proc/self/task/%s/syscall", de->d_name);
		FILE *fp = fopen(f, "r");
		if (fp) {
			found = fgets(line, sizeof line, fp) && !strncmp(line, "257 ", 4);
			fclose(fp);
		}
	}
	if (d)
		closedir(d);
	return found;
}

struct prog_open {
	struct pk_layer *l;
	uint32_t ino;
	int fd;
	bool done;
};

static void *prog_open_main(void *arg)
{
	struct prog_open *o = arg;
	o->fd = pk_prog_fd(o->l, o->ino);
	__atomic_store_n(&o->done, true, __ATOMIC_RELEASE);
	return NULL;
}

/* A copy being made must not hold up the first open of another program:
 * the layer's pack is a FIFO here, so making prog1's copy blocks in its
 * open while prog2's existing copy is checked (which reads no chunk). */
static void test_progs_unlocked(void **state)
{
	(void)state;
	size_t n = 2 * 65536 + 100;
	unsigned char *a = rnd(n, 21), *b = rnd(n, 22);
	memcpy(a, "\177ELF", 4);
	memcpy(b, "\177ELF", 4);
	assert_int_equal(mkdir(P("src"), 0755), 0);
	put_file("src/prog1", a, n);
	put_file("src/prog2", b, n);
	struct pk_layer *l = pack("src", "l.pk", NULL);
	uint32_t p1 = look(l, pk_root(l), "prog1", PK_FOUND), p2 = look(l, pk_root(l), "prog2", PK_FOUND);
	assert_int_equal(pk_progs_enable(l, P("l.pk.progs")), 0);
	int fd = pk_prog_fd(l, p2);
	assert_true(fd >= 0);
	close(fd);
	pk_close(l);

	char pack_path[600], aside[620];
	assert_int_equal(one_pack(P("chunks"), pack_path, sizeof pack_path), 0);
	snprintf(aside, sizeof aside, "%s.aside", pack_path);
	assert_int_equal(rename(pack_path, aside), 0);
	assert_int_equal(mkfifo(pack_path, 0600), 0);

	assert_int_equal(pk_open(P("l.pk"), NULL, NULL, &l), 0);
	assert_int_equal(pk_progs_enable(l, P("l.pk.progs")), 0);
	struct prog_open o1 = { l, p1, 0, false }, o2 = { l, p2, 0, false };
	pthread_t t1, t2;
	assert_int_equal(pthread_create(&t1, NULL, prog_open_main, &o1), 0);
	/* (prog1's copy must be made from the pack: it cannot end first) */
	while (!a_thread_in_openat() && !__atomic_load_n(&o1.done, __ATOMIC_ACQUIRE))
		usleep(1000);
	assert_false(__atomic_load_n(&o1.done, __ATOMIC_ACQUIRE));
	assert_int_equal(pthread_create(&t2, NULL, prog_open_main, &o2), 0);
	/* (a generous bound: it only tells a wait that never ends) */
	struct timespec end;
	clock_gettime(CLOCK_REALTIME, &end);
	end.tv_sec += 60;
	int joined = pthread_timedjoin_np(t2, NULL, &end);

	/* a writer that closes at once: the blocked open returns, its reads
	 * of a FIFO fail, prog1 is read packed */
	int saved = stderr_off();
	int w = open(pack_path, O_WRONLY);
	if (w >= 0)
		close(w);
	pthread_join(t1, NULL);
	if (joined != 0)
		pthread_join(t2, NULL);
	stderr_on(saved);

	assert_int_equal(joined, 0);
	assert_true(o2.fd >= 0);
	unsigned char *got = malloc(n);
	assert_int_equal(pread(o2.fd, got, n, 0), (ssize_t)n);
	assert_memory_equal(got, b, n);
	close(o2.fd);
	assert_true(o1.fd < 0);
	struct pk_progs_stats st;
	pk_progs_stats(l, &st);
	assert_int_equal(st.checked, 1);
	assert_int_equal(st.made, 0);
	pk_close(l);
	unlink(pack_path);
	assert_int_equal(rename(aside, pack_path), 0);
	free(got);
	free(a);
	free(b);
}

static void test_hostile_meta(void **state)
{
	make_tree();
	free(big);
	struct pk_layer *l = pack("src", "L", NULL);
	pk_close(l);
	char L[512], H[512];
	snprintf(L, sizeof L, "%s/L", top);
	snprintf(H, sizeof H, "%s/H", top);
	int fd = open(L, O_RDONLY);
	struct stat st;
	fstat(fd, &st);
	unsigned char *good = malloc(st.st_size), *bad = malloc(st.st_size);
	assert_int_equal(read(fd, good, st.st_size), st.st_size);
	close(fd);
	unsigned char *buf = malloc(CHUNK);
	uint8_t *seen = malloc(4096);
	uint64_t x = 88172645463325252ull;
	int opened = 0, failures = 0;
	int saved = stderr_off();
	for (int it = 0; it < 400; it++) {
		memcpy(bad, good, st.st_size);
		struct pk_super *sb = (struct pk_super *)bad;
		uint64_t lo = sb->sec[0].off, span = st.st_size - lo;
		int flips = 1 + it % 8;
		for (int k = 0; k < flips; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			uint64_t pos = lo + x % span;
			/* Small numbers and all-ones are the interesting ones. */
			bad[pos] = (x >> 32) % 3 == 0 ? 0xff : (x >> 32) % 3 == 1 ? (x >> 40) & 7 : (x >> 40);
		}
		for (int i = 0; i < PK_SEC_COUNT; i++)
			sb->sec[i].xxh3 = XXH3_64bits(bad + sb->sec[i].off, sb->sec[i].size);
		sb->super_xxh3 = 0;
		sb->super_xxh3 = XXH3_64bits(sb, sizeof *sb);
		fd = open(H, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		assert_int_equal(write(fd, bad, st.st_size), st.st_size);
		close(fd);
		char chunks[512];
		snprintf(chunks, sizeof chunks, "%s/chunks", top);
		if (pk_open(H, chunks, NULL, &l) < 0)
			continue;
		opened++;
		memset(seen, 0, 4096);
		failures += visit(l, pk_root(l), 0, seen, buf) > 0;
		pk_close(l);
	}
	stderr_on(saved);
	assert_true(opened > 300);
	assert_true(failures > 0);   /* the damage was seen */
	free(good);
	free(bad);
	free(buf);
	free(seen);
}

/* Layers of every chunk size the format allows read the same, side by side
 * in one chunk store (stores written before 32 KiB became the default hold
 * 64 KiB layers); sizes it does not allow are refused, when packing and in
 * a layer file. */
static void test_chunk_sizes(void **state)
{
	const size_t n = 5 * PK_CHUNK_MAX + 700;
	unsigned char *data = rnd(n, 9);
	/* a hole of three 4 KiB blocks inside the second 64 KiB */
	memset(data + PK_CHUNK_MAX + 8192, 0, 3 * 4096);
	assert_int_equal(mkdir(P("src"), 0755), 0);
	int fd = open(P("src/f"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, PK_CHUNK_MAX + 8192, 0), PK_CHUNK_MAX + 8192);
	size_t rest = PK_CHUNK_MAX + 8192 + 3 * 4096;
	assert_int_equal(pwrite(fd, data + rest, n - rest, rest), (ssize_t)(n - rest));
	close(fd);
	const uint32_t sizes[] = { PK_CHUNK_MIN, 16384, PK_CHUNK_MAX, 0 };
	unsigned char *got = malloc(n);
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		uint32_t cs = sizes[k] ? sizes[k] : PK_CHUNK_DEFAULT;
		char dest[64], out[64];
		snprintf(dest, sizeof dest, "L%u", cs);
		struct pk_write_opts o = { .threads = 2, .chunk_size = sizes[k] };
		struct pk_write_stats st;
		assert_int_equal(pk_write(P("src"), P(dest), &o, &st), 0);
		struct pk_layer *l;
		assert_int_equal(pk_open(P(dest), NULL, NULL, &l), 0);
		assert_int_equal(pk_chunk_size(l), cs);
		assert_int_equal(pk_super(l)->chunk_size, cs);
		/* one extent per chunk, the hole's blocks counted as holes */
		assert_int_equal(st.chunks + st.holes, (n + cs - 1) / cs);
		uint32_t f = look(l, pk_root(l), "f", PK_FOUND);
		assert_int_equal(pk_read(l, f, 0, n, got), (ssize_t)n);
		assert_memory_equal(got, data, n);
		/* across a chunk boundary, and in pieces */
		assert_int_equal(pk_read(l, f, 3 * cs - 7, 20, got), 20);
		assert_memory_equal(got, data + 3 * cs - 7, 20);
		struct pk_piece p[64];
		size_t np, len = 2 * cs + 100;
		assert_true(len / cs + 2 <= 64);
		assert_int_equal(pk_read_pieces(l, f, cs - 50, len, p, len / cs + 2, &np), (ssize_t)len);
		assert_int_equal(np, 4);
		size_t at = cs - 50;
		for (size_t i = 0; i < np; at += p[i].len, i++)
			assert_memory_equal(p[i].data, data + at, p[i].len);
		pk_read_done(l, p, np);
		/* the hole's first block, by this layer's chunk and block index */
		uint64_t blk = (PK_CHUNK_MAX + 8192) / 4096, per = cs / 4096;
		uint16_t holes;
		bool none;
		assert_int_equal(pk_holes(l, f, blk / per, &holes, &none), 0);
		assert_true(none || (holes & (1u << (blk % per))));
		assert_int_equal(pk_holes(l, f, 0, &holes, &none), 0);
		assert_false(none);
		assert_int_equal(holes & 1, 0);
		/* and back to a tree */
		snprintf(out, sizeof out, "out%u", cs);
		assert_int_equal(pk_unpack(l, P(out)), 0);
		char of[80];
		snprintf(of, sizeof of, "%s/f", out);
		fd = open(P(of), O_RDONLY);
		assert_true(fd >= 0);
		memset(got, 0xaa, n);
		assert_int_equal(read(fd, got, n), (ssize_t)n);
		close(fd);
		assert_memory_equal(got, data, n);
		pk_close(l);
	}
	int saved = stderr_off();
	struct pk_write_opts o = { .chunk_size = 3000 };
	assert_int_equal(pk_write(P("src"), P("Lbad"), &o, NULL), -EINVAL);
	o.chunk_size = 2 * PK_CHUNK_MAX;
	assert_int_equal(pk_write(P("src"), P("Lbad"), &o, NULL), -EINVAL);
	o.chunk_size = PK_CHUNK_MIN / 2;
	assert_int_equal(pk_write(P("src"), P("Lbad"), &o, NULL), -EINVAL);
	/* a layer file claiming a size the format does not allow, resealed */
	char L[64];
	snprintf(L, sizeof L, "L%u", PK_CHUNK_DEFAULT);
	fd = open(P(L), O_RDWR);
	struct pk_super sb;
	assert_int_equal(pread(fd, &sb, sizeof sb, 0), (ssize_t)sizeof sb);
	sb.chunk_size = 3 * 4096;
	sb.super_xxh3 = 0;
	sb.super_xxh3 = XXH3_64bits(&sb, sizeof sb);
	assert_int_equal(pwrite(fd, &sb, sizeof sb, 0), (ssize_t)sizeof sb);
	close(fd);
	struct pk_layer *l;
	assert_int_equal(pk_open(P(L), NULL, NULL, &l), -EINVAL);
	/* a size it allows but that is not the layer's: its extents do not
	 * fit it, and no wrong byte is read */
	fd = open(P(L), O_RDWR);
	sb.chunk_size = PK_CHUNK_MAX;
	sb.super_xxh3 = 0;
	sb.super_xxh3 = XXH3_64bits(&sb, sizeof sb);
	assert_int_equal(pwrite(fd, &sb, sizeof sb, 0), (ssize_t)sizeof sb);
	close(fd);
	assert_int_equal(pk_open(P(L), NULL, NULL, &l), 0);
	uint32_t f = look(l, pk_root(l), "f", PK_FOUND);
	assert_int_equal(pk_read(l, f, 0, 4096, got), -EIO);
	pk_close(l);
	stderr_on(saved);
	free(got);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tree, setup, teardown),
		cmocka_unit_test_setup_teardown(test_forged_keys, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_listing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_chunk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_loose_layer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_meta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hostile_meta, setup, teardown),
		cmocka_unit_test_setup_teardown(test_build, setup, teardown),
		cmocka_unit_test_setup_teardown(test_progs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_progs_unlocked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_drop_behind, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunk_sizes, setup, teardown),
		cmocka_unit_test(test_key_is_xxh3),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
