/* -p/--publish spellings: [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "launch.h"

/* what a refused spelling says; the parsers print nothing themselves */
static struct strata_error err;

static void port_forms(void **state)
{
	struct strata_port p;

	(void)state;
	assert_int_equal(strata_parse_port("8080:80", &p, &err), 0);
	assert_string_equal(p.host_ip, "");
	assert_int_equal(p.host_port, 8080);
	assert_int_equal(p.container_port, 80);
	assert_false(p.udp);
	assert_int_equal(strata_parse_port("127.0.0.1:8000:8080", &p, &err), 0);
	assert_string_equal(p.host_ip, "127.0.0.1");
	assert_int_equal(p.host_port, 8000);
	assert_int_equal(p.container_port, 8080);
	assert_int_equal(strata_parse_port("53:5353/udp", &p, &err), 0);
	assert_true(p.udp);
	assert_int_equal(p.host_port, 53);
	assert_int_equal(strata_parse_port("1:65535/tcp", &p, &err), 0);
	assert_false(p.udp);
	assert_int_equal(p.container_port, 65535);
	assert_int_equal(strata_parse_port("[::1]:8080:80", &p, &err), 0);
	assert_string_equal(p.host_ip, "::1");
	assert_int_equal(p.host_port, 8080);
	assert_int_equal(strata_parse_port("::1:8080:80/udp", &p, &err), 0);
	assert_string_equal(p.host_ip, "::1");
	assert_true(p.udp);
}

static void port_errors(void **state)
{
	static const char *const bad[] = {
		"80", "8080:", ":80", "0:80", "8080:0", "65536:80", "8080:70000", "-1:80", "+8:80",
		"8080:80/sctp", "8080:80/", "1.2.3:80:80", "localhost:80:80", ":8080:80", "[::1:8080:80",
		"8080:80x", "8080 :80", "a:b", "",
	};
	struct strata_port p;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		memset(&p, 0x55, sizeof p);
		if (strata_parse_port(bad[i], &p, &err) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(p.host_port, 0); /* nothing half-filled */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(port_forms),
		cmocka_unit_test(port_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
