/* The command-line spellings accepted by strata-run and `strata run`. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "launch.h"

static void bind_forms(void **state)
{
	struct strata_bind b;
	char a1[] = "/host/dir:/data", a2[] = "/h:/c:ro", a3[] = "/h:/c:rw";
	char bad1[] = "/h", bad2[] = "/h:relative", bad3[] = "/h:/c:rx", bad4[] = ":/c";

	assert_int_equal(strata_parse_bind(a1, &b), 0);
	assert_string_equal(b.src, "/host/dir");
	assert_string_equal(b.dst, "/data");
	assert_false(b.readonly);
	assert_int_equal(strata_parse_bind(a2, &b), 0);
	assert_string_equal(b.dst, "/c");
	assert_true(b.readonly);
	assert_int_equal(strata_parse_bind(a3, &b), 0);
	assert_false(b.readonly);
	assert_int_equal(strata_parse_bind(bad1, &b), -EINVAL);
	assert_int_equal(strata_parse_bind(bad2, &b), -EINVAL);
	assert_int_equal(strata_parse_bind(bad3, &b), -EINVAL);
	assert_int_equal(strata_parse_bind(bad4, &b), -EINVAL);
}

static void idmap_forms(void **state)
{
	struct strata_idmap m;

	assert_int_equal(strata_parse_idmap("1:100000:65536", &m), 0);
	assert_int_equal(m.inside, 1);
	assert_int_equal(m.outside, 100000);
	assert_int_equal(m.count, 65536);
	assert_int_equal(strata_parse_idmap("0:1000", &m), -EINVAL);
	assert_int_equal(strata_parse_idmap("0:1000:0", &m), -EINVAL);
	assert_int_equal(strata_parse_idmap("0:-1:5", &m), -EINVAL);
	assert_int_equal(strata_parse_idmap("0:1:5:", &m), -EINVAL);
}

static void rlimit_forms(void **state)
{
	struct strata_rlimit r;

	assert_int_equal(strata_parse_rlimit("nofile=1024:4096", &r), 0);
	assert_int_equal(r.resource, RLIMIT_NOFILE);
	assert_int_equal(r.soft, 1024);
	assert_int_equal(r.hard, 4096);
	assert_int_equal(strata_parse_rlimit("RLIMIT_CORE=0", &r), 0);
	assert_int_equal(r.resource, RLIMIT_CORE);
	assert_int_equal(r.soft, 0);
	assert_int_equal(r.hard, 0);
	assert_int_equal(strata_parse_rlimit("stack=8192:unlimited", &r), 0);
	assert_true(r.hard == RLIM_INFINITY);
	assert_int_equal(strata_parse_rlimit("nofile=10:5", &r), -EINVAL);
	assert_int_equal(strata_parse_rlimit("nofiles=10", &r), -EINVAL);
	assert_int_equal(strata_parse_rlimit("nofile", &r), -EINVAL);
	assert_int_equal(strata_parse_rlimit("nofile=1x", &r), -EINVAL);
}

static void user_forms(void **state)
{
	uid_t u;
	gid_t g;

	assert_int_equal(strata_parse_user("1000", &u, &g), 0);
	assert_int_equal(u, 1000);
	assert_int_equal(g, 1000);
	assert_int_equal(strata_parse_user("0:5", &u, &g), 0);
	assert_int_equal(u, 0);
	assert_int_equal(g, 5);
	assert_int_equal(strata_parse_user("root", &u, &g), -EINVAL);
	assert_int_equal(strata_parse_user("1:", &u, &g), -EINVAL);
	assert_int_equal(strata_parse_user("4294967295", &u, &g), -EINVAL);
}

static void size_forms(void **state)
{
	long long b;

	(void)state;
	assert_int_equal(strata_parse_size("1048576", &b), 0);
	assert_int_equal(b, 1048576);
	assert_int_equal(strata_parse_size("512m", &b), 0);
	assert_int_equal(b, 512LL << 20);
	assert_int_equal(strata_parse_size("1G", &b), 0);
	assert_int_equal(b, 1LL << 30);
	assert_int_equal(strata_parse_size("1.5g", &b), 0);
	assert_int_equal(b, 3LL << 29);
	assert_int_equal(strata_parse_size("64MB", &b), 0);
	assert_int_equal(b, 64LL << 20);
	assert_int_equal(strata_parse_size("2GiB", &b), 0);
	assert_int_equal(b, 2LL << 30);
	assert_int_equal(strata_parse_size("100b", &b), 0);
	assert_int_equal(b, 100);
	assert_int_equal(strata_parse_size("-1", &b), 0);
	assert_int_equal(b, -1);
	assert_int_equal(strata_parse_size("0", &b), -EINVAL);
	assert_int_equal(strata_parse_size("", &b), -EINVAL);
	assert_int_equal(strata_parse_size("m", &b), -EINVAL);
	assert_int_equal(strata_parse_size("12x", &b), -EINVAL);
	assert_int_equal(strata_parse_size("1mm", &b), -EINVAL);
	assert_int_equal(strata_parse_size("-5", &b), -EINVAL);
	assert_int_equal(strata_parse_size("99999999999t", &b), -EINVAL);
	assert_int_equal(strata_parse_size("1.2.3", &b), -EINVAL);
}

static void cpus_forms(void **state)
{
	long long q, p;

	(void)state;
	assert_int_equal(strata_parse_cpus("1.5", &q, &p), 0);
	assert_int_equal(q, 150000);
	assert_int_equal(p, 100000);
	assert_int_equal(strata_parse_cpus("2", &q, &p), 0);
	assert_int_equal(q, 200000);
	assert_int_equal(strata_parse_cpus("0.01", &q, &p), 0);
	assert_int_equal(q, 1000);
	assert_int_equal(strata_parse_cpus("0.001", &q, &p), -EINVAL);
	assert_int_equal(strata_parse_cpus("0", &q, &p), -EINVAL);
	assert_int_equal(strata_parse_cpus("-1", &q, &p), -EINVAL);
	assert_int_equal(strata_parse_cpus("one", &q, &p), -EINVAL);
	assert_int_equal(strata_parse_cpus("1.5x", &q, &p), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bind_forms),
		cmocka_unit_test(idmap_forms),
		cmocka_unit_test(rlimit_forms),
		cmocka_unit_test(user_forms),
		cmocka_unit_test(size_forms),
		cmocka_unit_test(cpus_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
