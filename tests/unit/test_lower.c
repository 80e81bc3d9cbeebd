/* Unit tests of fs/lower.c: a packed layer read through the calls strata-fs
 * uses answers as the directory it was packed from does (stat, xattrs,
 * readlink, lookups with whiteouts and opaque directories, listing, data,
 * holes kept by the copy), damage gives -EIO, and a damaged metadata file
 * is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "lower.h"

static char top[64];
static char ring[4][512];

static const char *P(const char *rel)
{
	static int k;
	char *b = ring[k++ % 4];
	snprintf(b, 512, "%s/%s", top, rel);
	return b;
}

static void put_file(const char *rel, const void *data, size_t len, off_t at)
{
	int fd = open(P(rel), O_WRONLY | O_CREAT, 0640);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, data, len, at), (ssize_t)len);
	close(fd);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st, (void)flag, (void)f;
	return remove(p);
}

static int setup(void **state)
{
	(void)state;
	strcpy(top, "/tmp/strata-lower-XXXXXX");
	return mkdtemp(top) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	nftw(top, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static unsigned char *pattern(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len);
	uint64_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)x;
	}
	return p;
}

/* src: a tree with every kind of object, packed into top/layer.pk */
static void make_layer(struct lower *lo)
{
	assert_int_equal(mkdir(P("src"), 0755), 0);
	assert_int_equal(mkdir(P("src/d"), 0750), 0);
	assert_int_equal(mkdir(P("src/opq"), 0755), 0);
	put_file("src/opq/.wh..wh..opq", "", 0, 0);
	put_file("src/small", "hello\n", 6, 0);
	unsigned char *big = pattern(200000, 7);
	put_file("src/big", big, 200000, 0);
	free(big);
	/* data, a 64 KiB + 8 KiB hole, data */
	unsigned char *sp = pattern(8192, 9);
	put_file("src/sparse", sp, 8192, 0);
	put_file("src/sparse", sp, 8192, 8192 + 65536 + 8192);
	free(sp);
	assert_int_equal(link(P("src/big"), P("src/d/biglink")), 0);
	assert_int_equal(symlink("d/biglink", P("src/sym")), 0);
	put_file("src/.wh.gone", "", 0, 0);
	assert_int_equal(setxattr(P("src/small"), "user.k", "v1", 2, 0), 0);
	/* markers the copy leaves behind, and one it keeps */
	assert_int_equal(setxattr(P("src/opq"), "user.overlay.opaque", "y", 1, 0), 0);
	assert_int_equal(setxattr(P("src/opq"), "user.keep", "k", 1, 0), 0);
	struct timespec ts[2] = { { 1000, 5 }, { 2000, 123456789 } };
	assert_int_equal(utimensat(AT_FDCWD, P("src/small"), ts, AT_SYMLINK_NOFOLLOW), 0);

	struct pk_write_opts o = { .threads = 1 };
	struct pk_write_stats st;
	assert_int_equal(pk_write(P("src"), P("layer.pk"), &o, &st), 0);
	assert_true(lower_is_packed_file(P("layer.pk")));
	assert_false(lower_is_packed_file(P("src")));
	assert_false(lower_is_packed_file(P("src/small")));
	assert_int_equal(lower_open_packed(P("layer.pk"), 3, NULL, lo), 0);
}

static void same_stat(const struct stat *a, const struct stat *b)
{
	assert_int_equal(a->st_mode, b->st_mode);
	assert_int_equal(a->st_uid, b->st_uid);
	assert_int_equal(a->st_gid, b->st_gid);
	assert_int_equal(a->st_mtim.tv_sec, b->st_mtim.tv_sec);
	assert_int_equal(a->st_mtim.tv_nsec, b->st_mtim.tv_nsec);
	if (!S_ISDIR(a->st_mode)) {
		assert_int_equal(a->st_size, b->st_size);
		assert_int_equal(a->st_nlink, b->st_nlink);
	}
}

/* lookup + stat of NAME in packed dir and in the source directory */
static uint32_t both(struct lower *lo, uint32_t dir, const char *srcdir, const char *name,
		     struct stat *pst)
{
	uint32_t ino = 0;
	struct stat dst;
	assert_int_equal(lower_lookup(lo, dir, name, pst, &ino), LOWER_FOUND);
	int dfd = open(P(srcdir), O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	struct lower plain = { .fd = dfd };
	struct lref r = { .dirfd = dfd, .name = name };
	assert_int_equal(lower_stat(&plain, &r, &dst), 0);
	close(dfd);
	same_stat(pst, &dst);
	assert_int_equal(pst->st_dev, makedev(4094, 3));
	assert_int_equal(pst->st_ino, ino);
	return ino;
}

static void test_tree(void **state)
{
	(void)state;
	struct lower lo;
	struct stat st;
	make_layer(&lo);
	uint32_t root = lower_root(&lo);

	uint32_t small = both(&lo, root, "src", "small", &st);
	uint32_t big = both(&lo, root, "src", "big", &st);
	uint32_t sym = both(&lo, root, "src", "sym", &st);
	uint32_t sparse = both(&lo, root, "src", "sparse", &st);
	/* 8 KiB + 8 KiB of data: the holes are not counted */
	assert_int_equal(st.st_blocks, 32);
	uint32_t d = both(&lo, root, "src", "d", &st);
	assert_int_equal(st.st_nlink, 2);
	assert_int_equal(both(&lo, d, "src/d", "biglink", &st), big);
	assert_int_equal(st.st_nlink, 2);
	uint32_t opq = both(&lo, root, "src", "opq", &st);

	/* whiteouts and opaque directories as found by a lookup */
	uint32_t x;
	assert_int_equal(lower_lookup(&lo, root, "gone", &st, &x), LOWER_WHITEOUT);
	assert_int_equal(lower_lookup(&lo, root, ".wh.gone", &st, &x), LOWER_ABSENT);
	assert_int_equal(lower_lookup(&lo, root, "nothing", &st, &x), LOWER_ABSENT);
	assert_int_equal(lower_lookup(&lo, opq, ".wh..wh..opq", &st, &x), LOWER_ABSENT);
	assert_int_equal(lower_lookup(&lo, small, "x", &st, &x), LOWER_ABSENT);
	assert_int_equal(lower_opaque(&lo, opq), 1);
	assert_int_equal(lower_opaque(&lo, d), 0);
	assert_int_equal(lower_opaque(&lo, root), 0);
	assert_int_equal(lower_walk(&lo, "/d", &x), 0);
	assert_int_equal(x, d);
	assert_int_equal(lower_walk(&lo, "/", &x), 0);
	assert_int_equal(x, root);
	assert_int_equal(lower_walk(&lo, "/small", &x), -ENOENT);
	assert_int_equal(lower_walk(&lo, "/gone/a", &x), -ENOENT);

	/* xattrs and symlinks */
	char buf[256];
	struct lref r = { .ino = small };
	assert_int_equal(lower_getxattr(&lo, &r, "user.k", buf, sizeof buf), 2);
	assert_memory_equal(buf, "v1", 2);
	assert_int_equal(lower_getxattr(&lo, &r, "user.k", NULL, 0), 2);
	assert_int_equal(lower_getxattr(&lo, &r, "user.no", buf, sizeof buf), -ENODATA);
	assert_int_equal(lower_getxattr(&lo, &r, "user.k", buf, 1), -ERANGE);
	assert_int_equal(lower_listxattr(&lo, &r, buf, sizeof buf), 7);
	assert_string_equal(buf, "user.k");
	r.ino = sym;
	assert_int_equal(lower_readlink(&lo, &r, buf, sizeof buf), 9);
	assert_memory_equal(buf, "d/biglink", 9);
	assert_int_equal(lower_readlink(&lo, &r, buf, 3), 3);

	/* the listing: sorted, whiteouts as such, markers hidden */
	uint64_t off = 0;
	struct lower_dirent e;
	const char *want[] = { "big", "d", "gone", "opq", "small", "sparse", "sym" };
	for (unsigned i = 0; i < 7; i++) {
		assert_int_equal(lower_readdir(&lo, root, &off, &e), 1);
		assert_string_equal(e.name, want[i]);
		assert_int_equal(e.kind, strcmp(want[i], "gone") ? LOWER_FOUND : LOWER_WHITEOUT);
		if (!strcmp(want[i], "d"))
			assert_int_equal(e.type, S_IFDIR);
	}
	assert_int_equal(lower_readdir(&lo, root, &off, &e), 0);
	off = 0;
	assert_int_equal(lower_readdir(&lo, opq, &off, &e), 0);

	/* data, across chunk boundaries, and at the end */
	unsigned char *want_big = pattern(200000, 7);
	unsigned char *got = malloc(200000);
	assert_int_equal(lower_pread(&lo, big, got, 200000, 0), 200000);
	assert_memory_equal(got, want_big, 200000);
	assert_int_equal(lower_pread(&lo, big, got, 1000, 65000), 1000);
	assert_memory_equal(got, want_big + 65000, 1000);
	assert_int_equal(lower_pread(&lo, big, got, 1000, 199500), 500);
	assert_int_equal(lower_pread(&lo, big, got, 10, 200000), 0);
	assert_int_equal(lower_prefetch(&lo, big, 0, 200000), 0);
	assert_int_equal(lower_pread(&lo, small, got, 100, 0), 6);
	assert_memory_equal(got, "hello\n", 6);
	assert_int_equal(lower_pread(&lo, d, got, 10, 0), -EISDIR);

	/* copy-up of the sparse file keeps its holes */
	int dst = open(P("copy"), O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(dst >= 0);
	assert_int_equal(lower_copy_data(&lo, sparse, dst, UINT64_MAX), 0);
	struct stat cs, ss;
	assert_int_equal(fstat(dst, &cs), 0);
	assert_int_equal(stat(P("src/sparse"), &ss), 0);
	assert_int_equal(cs.st_size, ss.st_size);
	assert_true(cs.st_blocks <= ss.st_blocks);
	assert_int_equal(lseek(dst, 0, SEEK_HOLE), 8192);
	unsigned char *a = malloc(ss.st_size), *b = malloc(ss.st_size);
	int sfd = open(P("src/sparse"), O_RDONLY);
	assert_int_equal(pread(sfd, a, ss.st_size, 0), ss.st_size);
	assert_int_equal(pread(dst, b, ss.st_size, 0), ss.st_size);
	assert_memory_equal(a, b, ss.st_size);
	close(sfd);
	close(dst);
	dst = open(P("copy2"), O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_int_equal(lower_copy_data(&lo, big, dst, UINT64_MAX), 0);
	assert_int_equal(pread(dst, got, 200000, 0), 200000);
	assert_memory_equal(got, want_big, 200000);
	close(dst);
	/* holes and data as lseek finds them: data [0, 8K), hole [8K, 80K), data to the end */
	assert_int_equal(lower_seek(&lo, sparse, 0, SEEK_DATA), 0);
	assert_int_equal(lower_seek(&lo, sparse, 100, SEEK_HOLE), 8192);
	assert_int_equal(lower_seek(&lo, sparse, 8192, SEEK_DATA), 8192 + 65536 + 8192);
	assert_int_equal(lower_seek(&lo, sparse, 90000, SEEK_HOLE), ss.st_size);
	assert_int_equal(lower_seek(&lo, sparse, ss.st_size, SEEK_DATA), -ENXIO);
	assert_int_equal(lower_seek(&lo, small, 0, SEEK_HOLE), 6);
	/* a prefix only (a metacopy truncated smaller), and the xattrs */
	dst = open(P("copy3"), O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_int_equal(lower_copy_data(&lo, big, dst, 70000), 0);
	assert_int_equal(lseek(dst, 0, SEEK_END), 70000);
	assert_int_equal(lower_copy_xattrs(&lo, small, dst, -1, NULL), 0);
	assert_int_equal(fgetxattr(dst, "user.k", buf, sizeof buf), 2);
	close(dst);
	uint32_t opqdir;
	assert_int_equal(lower_walk(&lo, "/opq", &opqdir), 0);
	assert_int_equal(mkdir(P("copydir"), 0700), 0);
	assert_int_equal(lower_copy_xattrs(&lo, opqdir, -1, AT_FDCWD, P("copydir")), 0);
	assert_int_equal(listxattr(P("copydir"), buf, sizeof buf), 10);
	assert_string_equal(buf, "user.keep");
	free(a);
	free(b);
	free(got);
	free(want_big);
	lower_close(&lo);
}

static void test_damage(void **state)
{
	(void)state;
	struct lower lo;
	make_layer(&lo);
	uint32_t root = lower_root(&lo), big;
	struct stat st;
	assert_int_equal(lower_lookup(&lo, root, "big", &st, &big), LOWER_FOUND);
	lower_close(&lo);

	/* every chunk of "big" damaged (a loose object flipped, a pack's
	 * chunks zeroed past its 32-byte header): the reader gets EIO, never data */
	char cmd[1600];
	snprintf(cmd, sizeof cmd,
		 "set -e; n=0; for f in %s/chunks/[0-9a-f][0-9a-f]/* %s/chunks/packs/*.pack; do "
		 "[ -e \"$f\" ] || continue; chmod u+w \"$f\"; case \"$f\" in "
		 "*.pack) s=$(stat -c %%s \"$f\"); truncate -s 32 \"$f\"; truncate -s $s \"$f\";; "
		 "*) printf '\\377' | dd of=\"$f\" bs=1 seek=20 conv=notrunc 2>/dev/null;; esac; n=$((n+1)); done; "
		 "test $n -gt 0", top, top);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(lower_open_packed(P("layer.pk"), 0, NULL, &lo), 0);
	char buf[4096];
	assert_int_equal(lower_pread(&lo, big, buf, sizeof buf, 0), -EIO);
	int dst = open(P("copy"), O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_int_equal(lower_copy_data(&lo, big, dst, UINT64_MAX), -EIO);
	close(dst);
	lower_close(&lo);

	/* a truncated metadata file is refused at open */
	assert_int_equal(truncate(P("layer.pk"), 1000), 0);
	assert_true(lower_is_packed_file(P("layer.pk")));
	assert_int_equal(lower_open_packed(P("layer.pk"), 0, NULL, &lo), -EINVAL);
	assert_null(lo.pk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tree, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
