/* The message that carries a container's cgroup directories from the
 * launcher's outer process to the launcher (cgroup_send/cgroup_recv): read
 * exactly, so what outer writes after it on the same pipe (the started
 * message, binary, newlines and all) is left for its own reader. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static void roundtrip_leaves_what_follows(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct cgroups out = { 0 };
	char *dirs[] = { "/sys/fs/cgroup/memory/a/strata-x", "/sys/fs/cgroup/pids/strata-x",
			 "/sys/fs/cgroup/devices/strata-x" };
	for (size_t i = 0; i < 3; i++)
		out.dir[out.n++] = dirs[i];
	out.started = out.dir[0];
	assert_int_equal(cgroup_send(p[1], &out), 0);
	/* what follows at once: eight bytes, two of them newlines */
	const unsigned char after[8] = { 0x0a, 1, 2, 3, 0x0a, 0, 0, 7 };
	assert_int_equal(write(p[1], after, sizeof after), (ssize_t)sizeof after);
	close(p[1]);

	struct cgroups in;
	assert_int_equal(cgroup_recv(p[0], &in), 0);
	assert_int_equal(in.n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(in.dir[i], dirs[i]);
	assert_ptr_equal(in.started, in.dir[0]);
	unsigned char got[16];
	assert_int_equal(read(p[0], got, sizeof got), (ssize_t)sizeof after);
	assert_memory_equal(got, after, sizeof after);
	cgroup_free(&in);
	close(p[0]);
}

static void early_end_is_an_error(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "      99\n", 9), 9);
	close(p[1]);
	struct cgroups in;
	assert_int_equal(cgroup_recv(p[0], &in), -EPIPE);
	assert_int_equal(in.n, 0);
	close(p[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(roundtrip_leaves_what_follows),
		cmocka_unit_test(early_end_is_an_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
