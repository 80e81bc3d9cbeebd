/* Unit tests of the Containerfile parser and docker's word rules
 * (tools/dockerfile.c): directives, comments and continuations, flags,
 * exec and shell forms, ENV/LABEL/ARG pairs, quotes and variable
 * expansion, and the errors a bad file gets. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dockerfile.h"

static int parse(const char *text, struct dockerfile *df)
{
	return df_parse(text, strlen(text), "Containerfile", df);
}

static void test_basic(void **state)
{
	(void)state;
	struct dockerfile df;
	const char *t =
		"# syntax=docker/dockerfile:1\n"
		"\n"
		"# a comment\n"
		"from busybox AS base\n"
		"RUN echo one && \\\n"
		"    # a comment inside\n"
		"\n"
		"    echo two\n"
		"COPY --chown=1:2 --from=base a b /dst/\n"
		"CMD [\"sh\", \"-c\", \"echo hi\"]\n"
		"ENTRYPOINT echo shell form\n"
		"EXPOSE 80/tcp\n";
	assert_int_equal(parse(t, &df), 0);
	assert_int_equal(df.n, 6);
	assert_string_equal(df.insn[0].cmd, "FROM");
	assert_string_equal(df.insn[0].args, "busybox AS base");
	assert_int_equal(df.insn[0].line, 4);
	assert_string_equal(df.insn[1].cmd, "RUN");
	assert_string_equal(df.insn[1].args, "echo one &&     echo two");
	assert_int_equal(df.insn[1].line, 5);
	assert_false(df.insn[1].is_json);
	assert_string_equal(df.insn[2].cmd, "COPY");
	assert_int_equal(df.insn[2].nflags, 2);
	assert_string_equal(df_flag(&df.insn[2], "chown", NULL), "1:2");
	assert_string_equal(df_flag(&df.insn[2], "from", NULL), "base");
	bool present = true;
	assert_null(df_flag(&df.insn[2], "chmod", &present));
	assert_false(present);
	assert_string_equal(df.insn[2].args, "a b /dst/");
	assert_true(df.insn[3].is_json);
	assert_int_equal(df.insn[3].njson, 3);
	assert_string_equal(df.insn[3].json[2], "echo hi");
	assert_false(df.insn[4].is_json);
	assert_string_equal(df.insn[5].args, "80/tcp");
	df_free(&df);
}

static void test_escape_directive(void **state)
{
	(void)state;
	struct dockerfile df;
	const char *t = "# escape=`\nFROM scratch\nRUN dir c:\\ `\n  && echo x\n";
	assert_int_equal(parse(t, &df), 0);
	assert_int_equal(df.escape, '`');
	assert_int_equal(df.n, 2);
	assert_string_equal(df.insn[1].args, "dir c:\\   && echo x");
	df_free(&df);
	/* after an instruction a directive is a comment */
	t = "FROM scratch\n# escape=`\nRUN a \\\n b\n";
	assert_int_equal(parse(t, &df), 0);
	assert_int_equal(df.escape, '\\');
	assert_string_equal(df.insn[1].args, "a  b");
	df_free(&df);
}

static void test_errors(void **state)
{
	(void)state;
	struct dockerfile df;
	assert_int_equal(parse("", &df), -EINVAL);
	assert_int_equal(parse("# only a comment\n", &df), -EINVAL);
	assert_int_equal(parse("RUN true\n", &df), -EINVAL);          /* no FROM */
	assert_int_equal(parse("FROM a\nFROB x\n", &df), -EINVAL);    /* unknown */
	assert_int_equal(parse("FROM a\nSHELL sh -c\n", &df), -EINVAL);
	assert_int_equal(parse("FROM a\nWORKDIR\n", &df), -EINVAL);
	assert_int_equal(df_parse("FROM a\0x", 8, "f", &df), -EINVAL);
	/* ARG may come before FROM */
	assert_int_equal(parse("ARG V=1\nFROM a:${V}\n", &df), 0);
	df_free(&df);
}

static const char *lookup(void *ctx, const char *name)
{
	const char *const *kv = ctx;
	for (size_t i = 0; kv[i]; i += 2)
		if (!strcmp(kv[i], name))
			return kv[i + 1];
	return NULL;
}

static void word(const char *raw, const char *want)
{
	static const char *const vars[] = { "A", "apple", "E", "", "P", "/usr/bin", NULL };
	char *w = df_word(raw, '\\', lookup, (void *)vars);
	assert_non_null(w);
	assert_string_equal(w, want);
	free(w);
}

static void test_words(void **state)
{
	(void)state;
	word("$A", "apple");
	word("${A}s", "apples");
	word("x${NOPE}y", "xy");
	word("${NOPE:-dflt}", "dflt");
	word("${E:-dflt}", "dflt");           /* empty counts as unset for :- */
	word("${A:-dflt}", "apple");
	word("${A:+set}", "set");
	word("${NOPE:+set}", "");
	word("${NOPE:-$A}", "apple");
	word("'$A'", "$A");                    /* single quotes: literal */
	word("\"$A b\"", "apple b");
	word("\\$A", "$A");
	word("a\\ b", "a b");
	word("\"a\\nb\"", "a\\nb");             /* inside "": \n stays */
	word("$", "$");
	word("$P:/bin", "/usr/bin:/bin");
	assert_null(df_word("'open", '\\', lookup, (void *)(const char *const[]){ NULL }));
	assert_null(df_word("${A", '\\', lookup, (void *)(const char *const[]){ NULL }));

	char **w;
	size_t n;
	assert_int_equal(df_words("a  'b c' \"d e\" f\\ g", '\\', &w, &n), 0);
	assert_int_equal(n, 4);
	assert_string_equal(w[1], "'b c'");
	assert_string_equal(w[3], "f\\ g");
	df_strv_free(w, n);
}

static void test_pairs(void **state)
{
	(void)state;
	static const char *const vars[] = { "A", "apple", NULL };
	char **k, **v;
	size_t n;
	assert_int_equal(df_pairs("X=1 Y=\"two words\" Z=$A W='$A'", '\\', true, lookup, (void *)vars,
				  &k, &v, &n), 0);
	assert_int_equal(n, 4);
	assert_string_equal(k[1], "Y");
	assert_string_equal(v[1], "two words");
	assert_string_equal(v[2], "apple");
	assert_string_equal(v[3], "$A");
	df_strv_free(k, n);
	df_strv_free(v, n);
	/* the legacy form: one name, the rest of the line */
	assert_int_equal(df_pairs("GREETING hello  world", '\\', true, lookup, (void *)vars, &k, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(k[0], "GREETING");
	assert_string_equal(v[0], "hello  world");
	df_strv_free(k, n);
	df_strv_free(v, n);
	/* ARG NAME without a default */
	assert_int_equal(df_pairs("V", '\\', false, lookup, (void *)vars, &k, &v, &n), 0);
	assert_int_equal(n, 1);
	assert_null(v[0]);
	df_strv_free(k, n);
	df_strv_free(v, n);
	assert_int_equal(df_pairs("=x", '\\', false, lookup, (void *)vars, &k, &v, &n), -EINVAL);
	assert_int_equal(df_pairs("NOVALUE", '\\', true, lookup, (void *)vars, &k, &v, &n), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_escape_directive),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_pairs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
