/* The command-line spellings accepted by strata-run and `strata run`. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "launch.h"

/* what a refused spelling says; the parsers print nothing themselves */
static struct strata_error err;

static void bind_forms(void **state)
{
	struct strata_bind b;
	char a1[] = "/host/dir:/data", a2[] = "/h:/c:ro", a3[] = "/h:/c:rw";
	char bad1[] = "/h", bad2[] = "/h:relative", bad3[] = "/h:/c:rx", bad4[] = ":/c";

	assert_int_equal(strata_parse_bind(a1, &b, &err), 0);
	assert_string_equal(b.src, "/host/dir");
	assert_string_equal(b.dst, "/data");
	assert_false(b.readonly);
	assert_int_equal(strata_parse_bind(a2, &b, &err), 0);
	assert_string_equal(b.dst, "/c");
	assert_true(b.readonly);
	assert_int_equal(strata_parse_bind(a3, &b, &err), 0);
	assert_false(b.readonly);
	assert_int_equal(strata_parse_bind(bad1, &b, &err), -EINVAL);
	assert_int_equal(strata_parse_bind(bad2, &b, &err), -EINVAL);
	assert_int_equal(strata_parse_bind(bad3, &b, &err), -EINVAL);
	assert_int_equal(strata_parse_bind(bad4, &b, &err), -EINVAL);
}

static void idmap_forms(void **state)
{
	struct strata_idmap m;

	assert_int_equal(strata_parse_idmap("1:100000:65536", &m, &err), 0);
	assert_int_equal(m.inside, 1);
	assert_int_equal(m.outside, 100000);
	assert_int_equal(m.count, 65536);
	assert_int_equal(strata_parse_idmap("0:1000", &m, &err), -EINVAL);
	assert_int_equal(strata_parse_idmap("0:1000:0", &m, &err), -EINVAL);
	assert_int_equal(strata_parse_idmap("0:-1:5", &m, &err), -EINVAL);
	assert_int_equal(strata_parse_idmap("0:1:5:", &m, &err), -EINVAL);
}

static void rlimit_forms(void **state)
{
	struct strata_rlimit r;

	assert_int_equal(strata_parse_rlimit("nofile=1024:4096", &r, &err), 0);
	assert_int_equal(r.resource, RLIMIT_NOFILE);
	assert_int_equal(r.soft, 1024);
	assert_int_equal(r.hard, 4096);
	assert_int_equal(strata_parse_rlimit("RLIMIT_CORE=0", &r, &err), 0);
	assert_int_equal(r.resource, RLIMIT_CORE);
	assert_int_equal(r.soft, 0);
	assert_int_equal(r.hard, 0);
	assert_int_equal(strata_parse_rlimit("stack=8192:unlimited", &r, &err), 0);
	assert_true(r.hard == RLIM_INFINITY);
	assert_int_equal(strata_parse_rlimit("nofile=10:5", &r, &err), -EINVAL);
	assert_int_equal(strata_parse_rlimit("nofiles=10", &r, &err), -EINVAL);
	assert_int_equal(strata_parse_rlimit("nofile", &r, &err), -EINVAL);
	assert_int_equal(strata_parse_rlimit("nofile=1x", &r, &err), -EINVAL);
}

static void user_forms(void **state)
{
	uid_t u;
	gid_t g;

	assert_int_equal(strata_parse_user("1000", &u, &g, &err), 0);
	assert_int_equal(u, 1000);
	assert_int_equal(g, 1000);
	assert_int_equal(strata_parse_user("0:5", &u, &g, &err), 0);
	assert_int_equal(u, 0);
	assert_int_equal(g, 5);
	assert_int_equal(strata_parse_user("root", &u, &g, &err), -EINVAL);
	assert_int_equal(strata_parse_user("1:", &u, &g, &err), -EINVAL);
	assert_int_equal(strata_parse_user("4294967295", &u, &g, &err), -EINVAL);
}

static void size_forms(void **state)
{
	long long b;

	(void)state;
	assert_int_equal(strata_parse_size("1048576", &b, &err), 0);
	assert_int_equal(b, 1048576);
	assert_int_equal(strata_parse_size("512m", &b, &err), 0);
	assert_int_equal(b, 512LL << 20);
	assert_int_equal(strata_parse_size("1G", &b, &err), 0);
	assert_int_equal(b, 1LL << 30);
	assert_int_equal(strata_parse_size("1.5g", &b, &err), 0);
	assert_int_equal(b, 3LL << 29);
	assert_int_equal(strata_parse_size("64MB", &b, &err), 0);
	assert_int_equal(b, 64LL << 20);
	assert_int_equal(strata_parse_size("2GiB", &b, &err), 0);
	assert_int_equal(b, 2LL << 30);
	assert_int_equal(strata_parse_size("100b", &b, &err), 0);
	assert_int_equal(b, 100);
	assert_int_equal(strata_parse_size("-1", &b, &err), 0);
	assert_int_equal(b, -1);
	assert_int_equal(strata_parse_size("0", &b, &err), -EINVAL);
	assert_int_equal(strata_parse_size("", &b, &err), -EINVAL);
	assert_int_equal(strata_parse_size("m", &b, &err), -EINVAL);
	assert_int_equal(strata_parse_size("12x", &b, &err), -EINVAL);
	assert_int_equal(strata_parse_size("1mm", &b, &err), -EINVAL);
	assert_int_equal(strata_parse_size("-5", &b, &err), -EINVAL);
	assert_int_equal(strata_parse_size("99999999999t", &b, &err), -EINVAL);
	assert_int_equal(strata_parse_size("1.2.3", &b, &err), -EINVAL);
}

static void cpus_forms(void **state)
{
	long long q, p;

	(void)state;
	assert_int_equal(strata_parse_cpus("1.5", &q, &p, &err), 0);
	assert_int_equal(q, 150000);
	assert_int_equal(p, 100000);
	assert_int_equal(strata_parse_cpus("2", &q, &p, &err), 0);
	assert_int_equal(q, 200000);
	assert_int_equal(strata_parse_cpus("0.01", &q, &p, &err), 0);
	assert_int_equal(q, 1000);
	assert_int_equal(strata_parse_cpus("0.001", &q, &p, &err), -EINVAL);
	assert_int_equal(strata_parse_cpus("0", &q, &p, &err), -EINVAL);
	assert_int_equal(strata_parse_cpus("-1", &q, &p, &err), -EINVAL);
	assert_int_equal(strata_parse_cpus("one", &q, &p, &err), -EINVAL);
	assert_int_equal(strata_parse_cpus("1.5x", &q, &p, &err), -EINVAL);
}

/* A refusal fills the error object with the input and what is expected,
 * and writes nothing to stderr (the caller adds what the user was doing). */
static void errors_go_to_the_caller(void **state)
{
	long long b;
	struct strata_rlimit r;

	(void)state;
	strata_error_clear(&err);
	fflush(stderr);
	int saved = dup(2);
	assert_true(saved >= 0);
	/* stderr is a pipe: anything printed would be found there */
	int p[2];
	assert_int_equal(pipe(p), 0);
	dup2(p[1], 2);
	int r1 = strata_parse_size("12x", &b, &err);
	fflush(stderr);
	dup2(saved, 2);
	close(p[1]);
	char buf[64];
	ssize_t n = read(p[0], buf, sizeof buf);
	close(p[0]);
	close(saved);
	assert_int_equal(r1, -EINVAL);
	assert_int_equal(n, 0);
	assert_int_equal(err.code, EINVAL);
	assert_non_null(strstr(err.msg, "'12x'"));
	assert_non_null(strstr(err.msg, "512m"));

	strata_error_clear(&err);
	assert_int_equal(err.code, 0);
	assert_int_equal(strata_parse_rlimit("nofiles=10", &r, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "unknown limit"));
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
		cmocka_unit_test(errors_go_to_the_caller),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
