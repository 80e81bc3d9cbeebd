/* Unit tests of the whiteout module: every encoding is read, and what is
 * written reads back as the same thing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sysmacros.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "whiteout.h"

static char tmpl[64];
static int dfd = -1;

static void rm_rf(const char *path);

static int setup(void **state)
{
	strcpy(tmpl, "/tmp/strata-wh-XXXXXX");
	if (!mkdtemp(tmpl))
		return -1;
	dfd = open(tmpl, O_RDONLY | O_DIRECTORY);
	return dfd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	close(dfd);
	rm_rf(tmpl);
	return 0;
}

static void rm_rf(const char *path)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", path);
}

static void classify_names(void **state)
{
	const char *t = NULL;
	struct stat reg = { .st_mode = S_IFREG | 0644 };
	struct stat wh = { .st_mode = S_IFCHR, .st_rdev = makedev(0, 0) };
	struct stat tty = { .st_mode = S_IFCHR, .st_rdev = makedev(5, 0) };

	assert_int_equal(wh_classify("file", &reg, &t), WH_NONE);
	assert_int_equal(wh_classify(".wh.file", &reg, &t), WH_OCI);
	assert_string_equal(t, "file");
	assert_int_equal(wh_classify(".wh..wh..opq", &reg, &t), WH_OPQ);
	assert_int_equal(wh_classify(".wh..wh.plnk", &reg, &t), WH_RESERVED);
	assert_int_equal(wh_classify(".wh.", &reg, &t), WH_RESERVED);
	assert_int_equal(wh_classify(".wh..", &reg, &t), WH_RESERVED);
	assert_int_equal(wh_classify("gone", &wh, &t), WH_CHARDEV);
	assert_int_equal(wh_classify("tty", &tty, &t), WH_NONE);
	assert_int_equal(wh_classify("gone", NULL, &t), WH_NONE);
	/* ".wh" without the dot is an ordinary name */
	assert_int_equal(wh_classify(".whfoo", &reg, &t), WH_NONE);
}

static void write_oci_then_remove(void **state)
{
	struct wh_policy pol = { .use_trusted = false, .try_mknod = false };
	struct stat st;

	assert_int_equal(wh_exists(dfd, "a"), 0);
	assert_int_equal(wh_write(dfd, "a", &pol), 0);
	assert_int_equal(fstatat(dfd, ".wh.a", &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(wh_exists(dfd, "a"), 1);
	assert_int_equal(wh_remove(dfd, "a"), 1);
	assert_int_equal(wh_exists(dfd, "a"), 0);
	assert_int_equal(wh_remove(dfd, "a"), 0);
}

static void write_chardev_when_allowed(void **state)
{
	struct wh_policy pol = { .use_trusted = false, .try_mknod = true };
	struct stat st;

	assert_int_equal(wh_write(dfd, "b", &pol), 0);
	if (pol.try_mknod) {
		/* mknod worked: a char 0/0 */
		assert_int_equal(fstatat(dfd, "b", &st, AT_SYMLINK_NOFOLLOW), 0);
		assert_true(wh_is_chardev(&st));
	} else {
		assert_int_equal(fstatat(dfd, ".wh.b", &st, AT_SYMLINK_NOFOLLOW), 0);
	}
	assert_int_equal(wh_exists(dfd, "b"), 1);
	assert_int_equal(wh_remove(dfd, "b"), 1);
	assert_int_equal(wh_exists(dfd, "b"), 0);
}

/* Where mknod works, whiteouts are links of one shared char 0/0 kept in
 * the share directory; one missing there is made anew. */
static void chardev_whiteouts_share_one_inode(void **state)
{
	struct wh_policy pol = { .try_mknod = true, .share = true };
	struct stat s1, s2, s3, sh;

	assert_int_equal(mkdirat(dfd, "share", 0700), 0);
	pol.share_dirfd = openat(dfd, "share", O_RDONLY | O_DIRECTORY);
	assert_true(pol.share_dirfd >= 0);
	if (mknodat(pol.share_dirfd, "probe", S_IFCHR, makedev(0, 0)) < 0) {
		close(pol.share_dirfd);
		skip();   /* no mknod here (unprivileged): nothing is shared */
	}
	unlinkat(pol.share_dirfd, "probe", 0);

	assert_int_equal(wh_write(dfd, "s1", &pol), 0);
	assert_int_equal(wh_write(dfd, "s2", &pol), 0);
	assert_int_equal(fstatat(dfd, "s1", &s1, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(fstatat(dfd, "s2", &s2, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(wh_is_chardev(&s1) && wh_is_chardev(&s2));
	assert_true(s1.st_ino == s2.st_ino && s1.st_nlink == 3);
	assert_int_equal(wh_exists(dfd, "s1"), 1);
	/* an existing name is an error, not a second link */
	assert_int_equal(wh_write(dfd, "s1", &pol), -EEXIST);

	/* the shared one gone (a cleaned workdir): a new one, shared again */
	assert_int_equal(fstatat(pol.share_dirfd, "whiteout", &sh, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(unlinkat(pol.share_dirfd, "whiteout", 0), 0);
	assert_int_equal(wh_write_chardev(dfd, "s3", &pol), 0);
	assert_int_equal(fstatat(dfd, "s3", &s3, AT_SYMLINK_NOFOLLOW), 0);
	assert_true(wh_is_chardev(&s3) && s3.st_ino != s1.st_ino && s3.st_nlink == 2);
	assert_true(pol.share);

	/* removing a whiteout leaves the others */
	assert_int_equal(wh_remove(dfd, "s1"), 1);
	assert_int_equal(wh_exists(dfd, "s2"), 1);
	assert_int_equal(wh_remove(dfd, "s2"), 1);
	assert_int_equal(wh_remove(dfd, "s3"), 1);
	unlinkat(pol.share_dirfd, "whiteout", 0);
	close(pol.share_dirfd);
	assert_int_equal(unlinkat(dfd, "share", AT_REMOVEDIR), 0);
}

static void name_too_long_for_prefix(void **state)
{
	struct wh_policy pol = { .use_trusted = false, .try_mknod = false };
	char name[256];
	memset(name, 'n', 255);
	name[255] = '\0';
	assert_int_equal(wh_write(dfd, name, &pol), -ENAMETOOLONG);
}

static void opaque_markers(void **state)
{
	struct wh_policy pol = { .use_trusted = false, .try_mknod = false };

	assert_int_equal(mkdirat(dfd, "o1", 0755), 0);
	assert_int_equal(mkdirat(dfd, "o2", 0755), 0);
	assert_int_equal(mkdirat(dfd, "o3", 0755), 0);
	int f1 = openat(dfd, "o1", O_RDONLY | O_DIRECTORY);
	int f2 = openat(dfd, "o2", O_RDONLY | O_DIRECTORY);
	int f3 = openat(dfd, "o3", O_RDONLY | O_DIRECTORY);
	assert_true(f1 >= 0 && f2 >= 0 && f3 >= 0);

	assert_int_equal(wh_dir_is_opaque(f1, true), 0);
	/* written per policy (user.* here), read back */
	assert_int_equal(wh_set_opaque(f1, &pol), 0);
	assert_int_equal(wh_dir_is_opaque(f1, true), 1);

	/* the OCI marker file counts only when asked to look for it */
	int m = openat(f2, WH_OPQ_MARKER, O_CREAT | O_WRONLY, 0600);
	assert_true(m >= 0);
	close(m);
	assert_int_equal(wh_dir_is_opaque(f2, true), 1);
	assert_int_equal(wh_dir_is_opaque(f2, false), 0);

	/* fuse-overlayfs's own xattr; a value other than "y" is not opaque */
	if (fsetxattr(f3, "user.fuseoverlayfs.opaque", "n", 1, 0) == 0) {
		assert_int_equal(wh_dir_is_opaque(f3, true), 0);
		assert_int_equal(fsetxattr(f3, "user.fuseoverlayfs.opaque", "y", 1, 0), 0);
		assert_int_equal(wh_dir_is_opaque(f3, true), 1);
	}
	close(f1);
	close(f2);
	close(f3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(classify_names),
		cmocka_unit_test(write_oci_then_remove),
		cmocka_unit_test(write_chardev_when_allowed),
		cmocka_unit_test(chardev_whiteouts_share_one_inode),
		cmocka_unit_test(name_too_long_for_prefix),
		cmocka_unit_test(opaque_markers),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
