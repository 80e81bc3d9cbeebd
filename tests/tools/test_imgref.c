/* Unit tests of docker's reading of image references (image_ref_parse):
 * what strata pull and push send to skopeo, and the name the store keeps. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli.h"

#define D64 "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static void good(const char *in, const char *full, const char *familiar)
{
	struct image_ref r;
	assert_int_equal(image_ref_parse(in, &r), 0);
	char *f = image_ref_full(&r), *l = image_ref_familiar(&r);
	assert_non_null(f);
	assert_non_null(l);
	assert_string_equal(f, full);
	assert_string_equal(l, familiar);
	free(f);
	free(l);
	image_ref_free(&r);
}

static void bad(const char *in)
{
	struct image_ref r;
	assert_int_equal(image_ref_parse(in, &r), -EINVAL);
}

static void test_normalise(void **state)
{
	(void)state;
	good("busybox", "docker.io/library/busybox:latest", "busybox:latest");
	good("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36");
	good("docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest");
	good("index.docker.io/library/busybox:x", "docker.io/library/busybox:x", "busybox:x");
	good("someone/tool", "docker.io/someone/tool:latest", "someone/tool:latest");
	good("docker.io/someone/tool:2", "docker.io/someone/tool:2", "someone/tool:2");
	good("localhost:5000/x:tag", "localhost:5000/x:tag", "localhost:5000/x:tag");
	good("localhost/x", "localhost/x:latest", "localhost/x:latest");
	good("127.0.0.1:5000/bb:1", "127.0.0.1:5000/bb:1", "127.0.0.1:5000/bb:1");
	good("quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3", "quay.io/a/b/c:v1.2-rc_3");
	good("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest");
	/* Capitals make the first component a host, as docker reads it. */
	good("Registry/x", "Registry/x:latest", "Registry/x:latest");
	good("a__b/c.d/e--f", "docker.io/a__b/c.d/e--f:latest", "a__b/c.d/e--f:latest");
}

static void test_digests(void **state)
{
	(void)state;
	good("busybox@" D64, "docker.io/library/busybox@" D64, "busybox@" D64);
	good("127.0.0.1:5000/bb@" D64, "127.0.0.1:5000/bb@" D64, "127.0.0.1:5000/bb@" D64);
	/* A tag with a digest: the digest decides. */
	good("127.0.0.1:5000/bb:1@" D64, "127.0.0.1:5000/bb@" D64, "127.0.0.1:5000/bb@" D64);
	struct image_ref r;
	assert_int_equal(image_ref_parse("x@" D64, &r), 0);
	assert_null(r.tag);
	assert_string_equal(r.digest, D64);
	image_ref_free(&r);
}

static void test_refused(void **state)
{
	(void)state;
	bad("");
	bad("Busybox");
	bad("bb:");
	bad("bb:-x");
	bad("bb:.x");
	bad("a//b");
	bad("a/");
	bad("-x");
	bad("a___b");
	bad("a..b");
	bad("x@sha256:abc");
	bad("x@md5:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	bad("foo:bar/x");          /* not a port */
	bad("host:123456/x");
	bad("bb:1:2/x");
	bad("x y");
	char tag[200];
	memset(tag, 'a', sizeof tag);
	memcpy(tag, "bb:", 3);
	tag[3 + 129] = '\0';
	bad(tag);                  /* a 129-character tag */
	char name[300];
	memset(name, 'a', sizeof name - 1);
	name[sizeof name - 1] = '\0';
	bad(name);                 /* longer than 255 */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normalise),
		cmocka_unit_test(test_digests),
		cmocka_unit_test(test_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
