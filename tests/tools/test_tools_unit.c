/* Unit tests of the pure helpers behind `strata`: member-name cleaning
 * (the first line of defence against hostile tars), digest checks,
 * reference and source-spec parsing, ChainIDs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"
#include "digest.h"
#include "image.h"
#include "store.h"
#include "layer.h"
#include "unpack.h"

static void clean(const char *in, int want_r, const char *want)
{
	char out[256];
	int r = clean_member_path(in, out, sizeof out);
	assert_int_equal(r, want_r);
	if (r == 0)
		assert_string_equal(out, want);
}

static void test_clean_member_path(void **state)
{
	(void)state;
	clean("a/b", 0, "a/b");
	clean("./a//b/", 0, "a/b");
	clean("./", 0, "");
	clean(".", 0, "");
	clean("a/./b/.", 0, "a/b");
	clean("../x", -EPERM, NULL);
	clean("a/../../x", -EPERM, NULL);
	clean("a/..", -EPERM, NULL);
	clean("/etc/passwd", -EPERM, NULL);
	clean("..a/b..", 0, "..a/b..");     /* only a whole ".." component is a parent */
	clean(".wh..wh..opq", 0, ".wh..wh..opq");
	char out[4];
	assert_int_equal(clean_member_path("abcdef", out, sizeof out), -ENAMETOOLONG);
}

static void test_digest_valid(void **state)
{
	(void)state;
	char d[DIGEST_BUF];
	sha256_buf("", 0, d);
	/* sha256 of nothing, as every OCI tool knows it */
	assert_string_equal(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_true(digest_valid(d));
	assert_false(digest_valid("sha256:../../../../etc/passwd"));
	assert_false(digest_valid("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"));
	assert_false(digest_valid("sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	assert_false(digest_valid("sha256:e3b0"));
	assert_false(digest_valid(NULL));
}

static void test_ref_normalize(void **state)
{
	(void)state;
	char *r;
	assert_string_equal((r = ref_normalize("busybox")), "busybox:latest");
	free(r);
	assert_string_equal((r = ref_normalize("busybox:1.36")), "busybox:1.36");
	free(r);
	/* a registry port is not a tag */
	assert_string_equal((r = ref_normalize("localhost:5000/app")), "localhost:5000/app:latest");
	free(r);
}

static void test_spec_parse(void **state)
{
	(void)state;
	struct spec sp;
	assert_int_equal(spec_parse("oci:/nonexistent/dir:v1", false, &sp), 0);
	assert_int_equal(sp.kind, SPEC_OCI);
	assert_string_equal(sp.path, "/nonexistent/dir");
	assert_string_equal(sp.ref, "v1");
	spec_free(&sp);
	assert_int_equal(spec_parse("docker-archive:/x/y.tar:name:tag", false, &sp), 0);
	assert_string_equal(sp.path, "/x/y.tar");
	assert_string_equal(sp.ref, "name:tag");
	spec_free(&sp);
	/* on import the path is the prefix that exists */
	assert_int_equal(spec_parse("oci:/tmp:t", true, &sp), 0);
	assert_string_equal(sp.path, "/tmp");
	assert_string_equal(sp.ref, "t");
	spec_free(&sp);
	assert_int_equal(spec_parse("rootfs:/a:b", true, &sp), 0);
	assert_string_equal(sp.path, "/a:b");
	assert_null(sp.ref);
	spec_free(&sp);
	assert_int_equal(spec_parse("docker://busybox", true, &sp), -EINVAL);
	spec_free(&sp);
	assert_int_equal(spec_parse("oci:", true, &sp), -EINVAL);
	spec_free(&sp);
}

static void test_chain_ids(void **state)
{
	(void)state;
	const char *a = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
	const char *b = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
	json_t *ids = json_pack("[s,s]", a, b);
	json_t *c = chain_ids(ids);
	char want[DIGEST_BUF], buf[256];
	snprintf(buf, sizeof buf, "%s %s", a, b);
	sha256_buf(buf, strlen(buf), want);
	assert_string_equal(json_string_value(json_array_get(c, 0)), a);
	assert_string_equal(json_string_value(json_array_get(c, 1)), want);
	json_decref(c);
	json_decref(ids);
}

static void test_media_types(void **state)
{
	(void)state;
	assert_int_equal(media_type_compression("application/vnd.oci.image.layer.v1.tar+gzip"), COMP_GZIP);
	assert_int_equal(media_type_compression("application/vnd.oci.image.layer.v1.tar+zstd"), COMP_ZSTD);
	assert_int_equal(media_type_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"), COMP_GZIP);
	assert_int_equal(media_type_compression("application/vnd.oci.image.layer.v1.tar"), COMP_NONE);
	assert_int_equal(media_type_compression("application/vnd.oci.image.layer.v1.tar+bzip2"), COMP_UNKNOWN);
	assert_int_equal(media_type_compression(NULL), COMP_UNKNOWN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_member_path),
		cmocka_unit_test(test_digest_valid),
		cmocka_unit_test(test_ref_normalize),
		cmocka_unit_test(test_spec_parse),
		cmocka_unit_test(test_chain_ids),
		cmocka_unit_test(test_media_types),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
