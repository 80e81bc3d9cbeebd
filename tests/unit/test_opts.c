/* Unit tests of strata-fs's option parser: what containers-storage and
 * mount(8) pass must parse; anything else must be refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <stdio.h>
#include "err.h"
#include "opts.h"

static int parse(struct strata_opts *o, const char *const *args)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = "strata-fs";
	for (; *args; args++)
		argv[argc++] = (char *)*args;
	argv[argc] = NULL;
	return opts_parse(o, argc, argv);
}

static void full_line(void **state)
{
	struct strata_opts o;
	const char *a[] = { "-f", "-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w", "/mnt", NULL };
	assert_int_equal(parse(&o, a), 0);
	assert_true(o.foreground);
	assert_int_equal(o.nlowers, 2);
	assert_string_equal(o.lowers[0], "/l1");
	assert_string_equal(o.lowers[1], "/l2");
	assert_string_equal(o.upperdir, "/u");
	assert_string_equal(o.workdir, "/w");
	assert_string_equal(o.mountpoint, "/mnt");
	assert_true(o.metacopy);
	opts_free(&o);
}

static void containers_storage_options(void **state)
{
	struct strata_opts o;
	const char *a[] = { "-o", ",,lowerdir=/l,,upperdir=/u,workdir=/w,volatile,context=\"system_u:object_r:container_file_t:s0\","
		"uidmapping=:0:1000:1:1:100000:65536,gidmapping=0:1000:1,squash_to_root,xattr_permissions=2,noacl",
		"/m", NULL };
	assert_int_equal(parse(&o, a), 0);
	assert_true(o.is_volatile);
	assert_true(o.squash_to_root);
	assert_true(o.noacl);
	assert_int_equal(o.xattr_permissions, 2);
	assert_int_equal(o.uidmap.n, 2);
	assert_int_equal(o.uidmap.ents[1].outside, 1);
	assert_int_equal(o.uidmap.ents[1].inside, 100000);
	assert_int_equal(o.uidmap.ents[1].count, 65536);
	assert_int_equal(o.gidmap.n, 1);
	/* on-disk 6 shows as 100005; an unmapped one shows as nobody */
	assert_int_equal(idmap_to_inside(&o.uidmap, 6), 100005);
	assert_int_equal(idmap_to_inside(&o.uidmap, 0), 1000);
	assert_int_equal(idmap_to_outside(&o.uidmap, 100005), 6);
	assert_int_equal(idmap_to_outside(&o.uidmap, 70000), IDMAP_OVERFLOW);
	assert_int_equal(idmap_to_inside(&o.uidmap, 70000), IDMAP_OVERFLOW);
	opts_free(&o);
}

static void squash_ids_and_version(void **state)
{
	struct strata_opts o;
	const char *a[] = { "-o", "lowerdir=/l,squash_to_uid=7,squash_to_gid=8", "/m", NULL };
	assert_int_equal(parse(&o, a), 0);
	assert_int_equal(o.squash_uid, 7);
	assert_int_equal(o.squash_gid, 8);
	opts_free(&o);
	const char *v[] = { "--version", NULL };
	assert_int_equal(parse(&o, v), 0);
	assert_true(o.show_version);
	opts_free(&o);
}

static void mount_helper_form(void **state)
{
	struct strata_opts o;
	/* mount(8): PROG SOURCE MOUNTPOINT -o OPTS */
	const char *a[] = { "overlay", "/m", "-o", "lowerdir=/l,nodev,nosuid", NULL };
	assert_int_equal(parse(&o, a), 0);
	assert_string_equal(o.mountpoint, "/m");
	assert_non_null(o.fuse_opts);
	assert_string_equal(o.fuse_opts, "nodev,nosuid");
	opts_free(&o);
}

static void escaped_lowers(void **state)
{
	char **v;
	unsigned n;
	assert_int_equal(opts_split_lowers("/a\\:b:/c::/d", &v, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(v[0], "/a:b");
	assert_string_equal(v[1], "/c");
	assert_string_equal(v[2], "/d");
	for (unsigned i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void passthrough_and_polling(void **state)
{
	struct strata_opts o;
	const char *dflt[] = { "-o", "lowerdir=/l", "/m", NULL };
	const char *set[] = { "-o", "lowerdir=/l,passthrough=off,poll_us=0,uring=off,unlabeled=enodata",
			      "/m", NULL };
	assert_int_equal(parse(&o, dflt), 0);
	assert_true(o.passthrough);
	assert_true(o.uring);
	assert_int_equal(o.poll_us, 50);
	assert_false(o.unlabeled_enodata);
	opts_free(&o);
	assert_int_equal(parse(&o, set), 0);
	assert_false(o.passthrough);
	assert_false(o.uring);
	assert_int_equal(o.poll_us, 0);
	assert_true(o.unlabeled_enodata);
	opts_free(&o);
}

static void refused(void **state)
{
	struct strata_opts o;
	const char *unknown[] = { "-o", "lowerdir=/l,frobnicate", "/m", NULL };
	const char *nolower[] = { "-o", "upperdir=/u,workdir=/w", "/m", NULL };
	const char *halfupper[] = { "-o", "lowerdir=/l,upperdir=/u", "/m", NULL };
	const char *nomnt[] = { "-o", "lowerdir=/l", NULL };
	const char *badmap[] = { "-o", "lowerdir=/l,uidmapping=0:1000", "/m", NULL };
	const char *badperm[] = { "-o", "lowerdir=/l,xattr_permissions=3", "/m", NULL };
	const char *emptylower[] = { "-o", "lowerdir=::", "/m", NULL };
	const char *badarg[] = { "--frob", "-o", "lowerdir=/l", "/m", NULL };
	const char *badpoll[] = { "-o", "lowerdir=/l,poll_us=-1", "/m", NULL };
	const char *badpoll2[] = { "-o", "lowerdir=/l,poll_us=5ms", "/m", NULL };
	const char *badpt[] = { "-o", "lowerdir=/l,passthrough=maybe", "/m", NULL };
	const char *baduring[] = { "-o", "lowerdir=/l,uring=2", "/m", NULL };
	const char *badlabel[] = { "-o", "lowerdir=/l,unlabeled=on", "/m", NULL };
	const char *nolabel[] = { "-o", "lowerdir=/l,unlabeled", "/m", NULL };
	const char *const *cases[] = { unknown, nolower, halfupper, nomnt, badmap, badperm, emptylower, badarg,
				       badpoll, badpoll2, badpt, baduring, badlabel, nolabel };
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		assert_int_equal(parse(&o, cases[i]), -EINVAL);
		opts_free(&o);
	}
}

static void redirect_dir_modes(void **state)
{
	struct strata_opts o;
	static const struct { const char *opts; enum redirect_mode want; } cases[] = {
		{ "lowerdir=/l", REDIRECT_ON },
		{ "lowerdir=/l,redirect_dir=on", REDIRECT_ON },
		{ "lowerdir=/l,redirect_dir=follow", REDIRECT_FOLLOW },
		/* kernel overlayfs with redirect_always_follow (its default) */
		{ "lowerdir=/l,redirect_dir=off", REDIRECT_FOLLOW },
		{ "lowerdir=/l,redirect_dir=nofollow", REDIRECT_NOFOLLOW },
		{ "lowerdir=/l,redirect_dir=off,redirect_dir=on", REDIRECT_ON },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		const char *a[] = { "-o", cases[i].opts, "/m", NULL };
		assert_int_equal(parse(&o, a), 0);
		assert_int_equal(o.redirect_dir, cases[i].want);
		opts_free(&o);
	}
}

/* Options that would change behaviour are honoured or refused, never
 * accepted and ignored. */
static void behaviour_options(void **state)
{
	struct strata_opts o;
	const char *xattrs_on[] = { "-o", "lowerdir=/l,noxattrs=0", "/m", NULL };
	assert_int_equal(parse(&o, xattrs_on), 0);
	opts_free(&o);
	const char *nlink[] = { "-o", "lowerdir=/l,static_nlink", "/m", NULL };
	const char *noxattrs[] = { "-o", "lowerdir=/l,noxattrs", "/m", NULL };
	const char *noxattrs1[] = { "-o", "lowerdir=/l,noxattrs=1", "/m", NULL };
	const char *noxattrsbad[] = { "-o", "lowerdir=/l,noxattrs=maybe", "/m", NULL };
	const char *redirbad[] = { "-o", "lowerdir=/l,redirect_dir=maybe", "/m", NULL };
	const char *redirnone[] = { "-o", "lowerdir=/l,redirect_dir", "/m", NULL };
	const char *const *cases[] = { nlink, noxattrs, noxattrs1, noxattrsbad, redirbad, redirnone };
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		assert_int_equal(parse(&o, cases[i]), -EINVAL);
		opts_free(&o);
	}
}

/* Every name of the table is a name the parser takes (with a value where
 * its row wants one), and every name --help shows is in the table: the
 * parser, --help and the man page cannot disagree on what exists. */
static void table_drives_parser_and_help(void **state)
{
	struct strata_opts o;
	char *help = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&help, &len);

	(void)state;
	assert_non_null(f);
	opts_usage(f);
	fclose(f);
	for (const struct opt_row *r = opts_table; r->names; r++) {
		assert_non_null(r->parse);
		_cleanup_free_ char *names = strdup(r->names);
		char *save = NULL;
		for (char *n = strtok_r(names, " ", &save); n; n = strtok_r(NULL, " ", &save)) {
			/* refused options aside, a name parses with a value that fits it */
			static const struct { const char *name, *value; } values[] = {
				{ "lowerdir", "/l2" }, { "upperdir", "/u" }, { "workdir", "/w" },
				{ "fsync", "0" }, { "uidmapping", "0:0:1" }, { "gidmapping", "0:0:1" },
				{ "squash_to_uid", "1" }, { "squash_to_gid", "1" }, { "xattr_permissions", "2" },
				{ "unlabeled", "enodata" }, { "timeout", "1" }, { "poll_us", "0" },
				{ "redirect_dir", "follow" }, { "fsname", "x" }, { "subtype", "x" },
				{ "noxattrs", "0" },
			};
			const char *v = NULL;
			for (size_t i = 0; i < sizeof values / sizeof *values; i++)
				if (!strcmp(values[i].name, n))
					v = values[i].value;
			char item[128];
			snprintf(item, sizeof item, "lowerdir=/l,%s%s%s", n, v ? "=" : "", v ? v : "");
			const char *a[] = { "-o", item, "/m", NULL };
			int want = !strcmp(n, "static_nlink") ? -EINVAL : 0;
			if (!strcmp(n, "upperdir") || !strcmp(n, "workdir"))
				snprintf(item, sizeof item, "lowerdir=/l,upperdir=/u,workdir=/w,%s=%s", n, v);
			assert_int_equal(parse(&o, a), want);
			opts_free(&o);
			/* each name is in --help, and so on the man page */
			if (strcmp(n, "squash_to_root") && strcmp(n, "volatile")) {
				char shown[80];
				snprintf(shown, sizeof shown, "%s", n);
				if (!strstr(help, shown))
					fail_msg("option %s is not in --help", n);
			}
		}
	}
	/* and the flags */
	static const char *const flags[] = { "-f", "-d", "--debug", "-s", "-V", "--version", "-h", "--help" };
	for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
		const char *a[] = { flags[i], "-o", "lowerdir=/l", "/m", NULL };
		assert_int_equal(parse(&o, a), 0);
		opts_free(&o);
		assert_non_null(strstr(help, flags[i]));
	}
	free(help);
}

/* Items the parser accepts in forms that used to differ per option: a
 * bare switch is "on", a missing value of a valued option is refused
 * before its parser runs. */
static void value_forms(void **state)
{
	struct strata_opts o;

	(void)state;
	const char *bare[] = { "-o", "lowerdir=/l,metacopy,passthrough,volatile,squash_to_root,noacl,debug", "/m", NULL };
	assert_int_equal(parse(&o, bare), 0);
	assert_true(o.metacopy && o.passthrough && o.is_volatile && o.squash_to_root && o.noacl && o.debug);
	opts_free(&o);
	static const char *const novalue[] = { "fsync", "squash_to_uid", "timeout", "poll_us", "uidmapping",
					       "xattr_permissions", "upperdir", "lowerdir" };
	for (size_t i = 0; i < sizeof novalue / sizeof *novalue; i++) {
		char item[64];
		snprintf(item, sizeof item, "lowerdir=/l,%s", novalue[i]);
		const char *a[] = { "-o", item, "/m", NULL };
		assert_int_equal(parse(&o, a), -EINVAL);
		opts_free(&o);
	}
	const char *kern[] = { "-o", "lowerdir=/l,allow_other,fsname=x,auto_unmount", "/m", NULL };
	assert_int_equal(parse(&o, kern), 0);
	assert_string_equal(o.fuse_opts, "allow_other,fsname=x,auto_unmount");
	opts_free(&o);
	const char *badtimeout[] = { "-o", "lowerdir=/l,timeout=", "/m", NULL };
	assert_int_equal(parse(&o, badtimeout), -EINVAL);
	opts_free(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(full_line),
		cmocka_unit_test(containers_storage_options),
		cmocka_unit_test(squash_ids_and_version),
		cmocka_unit_test(mount_helper_form),
		cmocka_unit_test(escaped_lowers),
		cmocka_unit_test(passthrough_and_polling),
		cmocka_unit_test(refused),
		cmocka_unit_test(redirect_dir_modes),
		cmocka_unit_test(behaviour_options),
		cmocka_unit_test(table_drives_parser_and_help),
		cmocka_unit_test(value_forms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
