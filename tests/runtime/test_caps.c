/* Capability sets the launcher gives the command: docker's default,
 * edited by --cap-drop then --cap-add. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <linux/capability.h>

#include "internal.h"

/* docker's default set, written out from its documentation rather than
 * from the launcher's table */
static const uint64_t docker_default = 0xa80425fbULL;

static uint64_t resolve(const char *const *drop, size_t nd, const char *const *add, size_t na, int *r)
{
	struct strata_launch_spec s = { .cap_drop = drop, .n_cap_drop = nd, .cap_add = add, .n_cap_add = na };
	struct strata_error err = { 0 };
	uint64_t set = 0;

	*r = caps_resolve(&s, &set, &err);
	/* a refusal names the capability; success leaves nothing to say */
	if (*r < 0)
		assert_non_null(strstr(err.msg, "unknown capability"));
	else
		assert_int_equal(err.code, 0);
	return set;
}

static void default_set(void **state)
{
	int r;
	assert_int_equal(resolve(NULL, 0, NULL, 0, &r), docker_default);
	assert_int_equal(r, 0);
}

static void spellings(void **state)
{
	const char *const add[] = { "NET_ADMIN", "cap_sys_ptrace", "Sys_Admin" };
	const char *const drop[] = { "CAP_CHOWN", "net_raw" };
	int r;
	uint64_t got = resolve(drop, 2, add, 3, &r);

	assert_int_equal(r, 0);
	assert_int_equal(got, (docker_default & ~((1ULL << CAP_CHOWN) | (1ULL << CAP_NET_RAW))) |
				      (1ULL << CAP_NET_ADMIN) | (1ULL << CAP_SYS_PTRACE) | (1ULL << CAP_SYS_ADMIN));
}

static void drop_all_then_add(void **state)
{
	const char *const drop[] = { "ALL" };
	const char *const add[] = { "kill" };
	int r;

	assert_int_equal(resolve(drop, 1, add, 1, &r), 1ULL << CAP_KILL);
	assert_int_equal(resolve(drop, 1, NULL, 0, &r), 0);
}

static void unknown_names(void **state)
{
	const char *const bad[] = { "NOT_A_CAP" };
	const char *const empty[] = { "" };
	int r;

	resolve(NULL, 0, bad, 1, &r);
	assert_int_equal(r, -EINVAL);
	resolve(bad, 1, NULL, 0, &r);
	assert_int_equal(r, -EINVAL);
	resolve(NULL, 0, empty, 1, &r);
	assert_int_equal(r, -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(default_set),
		cmocka_unit_test(spellings),
		cmocka_unit_test(drop_all_then_add),
		cmocka_unit_test(unknown_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
