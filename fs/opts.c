#include "opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void opts_init(struct strata_opts *o)
{
	memset(o, 0, sizeof *o);
	o->squash_uid = -1;
	o->squash_gid = -1;
	o->metacopy = true;
	o->writeback = true;
	o->passthrough = true;
	o->uring = true;
	o->poll_us = 50;
	o->timeout = 86400.0;
}

void opts_free(struct strata_opts *o)
{
	for (unsigned i = 0; i < o->nlowers; i++)
		free(o->lowers[i]);
	free(o->lowers);
	free(o->upperdir);
	free(o->workdir);
	free(o->mountpoint);
	free(o->uidmap.ents);
	free(o->gidmap.ents);
	free(o->fuse_opts);
	memset(o, 0, sizeof *o);
}

int opts_split_lowers(const char *value, char ***out, unsigned *n)
{
	size_t len = strlen(value);
	char **v = NULL;
	unsigned cnt = 0;
	_cleanup_free_ char *cur = malloc(len + 1);
	size_t k = 0;

	if (!cur)
		return -ENOMEM;
	for (size_t i = 0; i <= len; i++) {
		char c = value[i];
		if (c == '\\' && i + 1 < len) {
			cur[k++] = value[++i];
			continue;
		}
		if (c == ':' || c == '\0') {
			if (k == 0) {
				/* containers-storage may leave empty elements; skip them */
				continue;
			}
			cur[k] = '\0';
			char **nv = realloc(v, (cnt + 1) * sizeof *v);
			if (!nv)
				goto oom;
			v = nv;
			if (!(v[cnt] = strdup(cur)))
				goto oom;
			cnt++;
			k = 0;
			continue;
		}
		cur[k++] = c;
	}
	*out = v;
	*n = cnt;
	return 0;
oom:
	for (unsigned j = 0; j < cnt; j++)
		free(v[j]);
	free(v);
	return -ENOMEM;
}

static int parse_u32(const char *s, char **end, uint32_t *out)
{
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, end, 10);
	if (errno || v > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

int opts_parse_idmap(const char *value, struct idmap *m)
{
	const char *p = value;
	struct idmap r = { 0 };

	if (*p == ':')
		p++;
	while (*p) {
		struct idmap_ent e;
		char *end;
		/* fuse-overlayfs's order, which containers-storage relies on:
		 * the on-disk id first, then the id shown */
		if (parse_u32(p, &end, &e.outside) < 0 || *end != ':')
			goto bad;
		if (parse_u32(end + 1, &end, &e.inside) < 0 || *end != ':')
			goto bad;
		if (parse_u32(end + 1, &end, &e.count) < 0 || (*end && *end != ':') || e.count == 0)
			goto bad;
		struct idmap_ent *ne = realloc(r.ents, (r.n + 1) * sizeof *ne);
		if (!ne) {
			free(r.ents);
			return -ENOMEM;
		}
		r.ents = ne;
		r.ents[r.n++] = e;
		p = *end ? end + 1 : end;
	}
	if (r.n == 0)
		goto bad;
	free(m->ents);
	*m = r;
	return 0;
bad:
	free(r.ents);
	return -EINVAL;
}

uint32_t idmap_to_inside(const struct idmap *m, uint32_t outside)
{
	if (!m->n)
		return outside;
	for (unsigned i = 0; i < m->n; i++) {
		const struct idmap_ent *e = &m->ents[i];
		if (outside >= e->outside && outside - e->outside < e->count)
			return e->inside + (outside - e->outside);
	}
	return IDMAP_OVERFLOW;  /* as a user namespace shows an unmapped id */
}

uint32_t idmap_to_outside(const struct idmap *m, uint32_t inside)
{
	if (!m->n)
		return inside;
	for (unsigned i = 0; i < m->n; i++) {
		const struct idmap_ent *e = &m->ents[i];
		if (inside >= e->inside && inside - e->inside < e->count)
			return e->outside + (inside - e->inside);
	}
	return IDMAP_OVERFLOW;  /* fuse-overlayfs writes unmapped ids as nobody */
}

static int append_fuse_opt(struct strata_opts *o, const char *opt, size_t len)
{
	size_t old = o->fuse_opts ? strlen(o->fuse_opts) : 0;
	char *n = realloc(o->fuse_opts, old + len + 2);
	if (!n)
		return -ENOMEM;
	if (old)
		n[old++] = ',';
	memcpy(n + old, opt, len);
	n[old + len] = '\0';
	o->fuse_opts = n;
	return 0;
}

static int set_str(char **dst, const char *v, const char *key)
{
	if (!*v) {
		susage("option %s= needs a value (a directory path)", key);
		return -EINVAL;
	}
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : -ENOMEM;
}

static int parse_bool_val(const char *v, bool *out)
{
	if (!strcmp(v, "1") || !strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true"))
		*out = true;
	else if (!strcmp(v, "0") || !strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

static int needs_value(const char *key)
{
	susage("option %s needs a value (%s=...)", key, key);
	return -EINVAL;
}

static int bad_value(const char *key, const char *val, const char *expected)
{
	susage("bad value for option %s: '%s' (%s)", key, val ? val : "", expected);
	return -EINVAL;
}

/* -- one parser per row of the table below ---------------------------------
 * Each gets the key as given, its value (NULL: none given), the whole item
 * (for options passed on to the kernel). The table has already refused a
 * missing value where every name of the row needs one (OPT_VALUE). */

static int p_lowerdir(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)key;
	(void)item;
	for (unsigned i = 0; i < o->nlowers; i++)
		free(o->lowers[i]);
	free(o->lowers);
	o->lowers = NULL;
	o->nlowers = 0;
	int r = opts_split_lowers(val, &o->lowers, &o->nlowers);
	if (r < 0)
		return r;
	if (!o->nlowers) {
		susage("lowerdir= names no directory; give at least one layer");
		return -EINVAL;
	}
	return 0;
}

static int p_dirs(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)item;
	return set_str(key[0] == 'u' ? &o->upperdir : &o->workdir, val, key);
}

static int p_volatile(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	bool b = true;

	(void)item;
	if (!strcmp(key, "volatile")) {
		o->is_volatile = true;
		return 0;
	}
	if (!val)
		return needs_value(key);
	if (parse_bool_val(val, &b) < 0)
		return bad_value(key, val, "0 or 1");
	o->is_volatile = !b;
	return 0;
}

static int p_idmapping(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)item;
	if (opts_parse_idmap(val, key[0] == 'u' ? &o->uidmap : &o->gidmap) < 0) {
		susage("bad %s=%s: expected DISK:SHOWN:COUNT[:DISK:SHOWN:COUNT...]", key, val);
		return -EINVAL;
	}
	return 0;
}

static int p_squash(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	uint32_t id;
	char *end;

	(void)item;
	if (!strcmp(key, "squash_to_root")) {
		o->squash_to_root = true;
		return 0;
	}
	if (!val)
		return needs_value(key);
	if (parse_u32(val, &end, &id) < 0 || *end)
		return bad_value(key, val, "a numeric id");
	if (key[10] == 'u')
		o->squash_uid = id;
	else
		o->squash_gid = id;
	return 0;
}

static int p_xattr_permissions(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)item;
	if (strcmp(val, "0") && strcmp(val, "1") && strcmp(val, "2"))
		return bad_value(key, val, "0, 1 or 2");
	o->xattr_permissions = val[0] - '0';
	return 0;
}

static int p_noacl(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)key;
	(void)val;
	(void)item;
	o->noacl = true;
	return 0;
}

static int p_unlabeled(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)item;
	if (strcmp(val, "enotsup") && strcmp(val, "enodata"))
		return bad_value(key, val, "enotsup or enodata");
	o->unlabeled_enodata = !strcmp(val, "enodata");
	return 0;
}

/* metacopy, writeback, passthrough, uring: on by default, sharecache and
 * progcache off; a bare name is "on" */
static int p_switch(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	bool b = true;

	(void)item;
	if (key[0] == 's' && val && !strcmp(val, "direct")) {
		o->sharecache = false;
		o->sharedirect = true;
		return 0;
	}
	if (val && parse_bool_val(val, &b) < 0)
		return bad_value(key, val, key[0] == 's' ? "on, off or direct" : "on or off");
	if (!strcmp(key, "progcache"))
		o->progcache = b;
	else if (key[0] == 'm')
		o->metacopy = b;
	else if (key[0] == 'w')
		o->writeback = b;
	else if (key[0] == 'u')
		o->uring = b;
	else if (key[0] == 's') {
		o->sharecache = b;
		o->sharedirect = false;
	}
	else
		o->passthrough = b;
	return 0;
}

static int p_timeout(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	char *end;

	(void)item;
	errno = 0;
	double t = strtod(val, &end);
	if (errno || *end || t < 0 || end == val)
		return bad_value(key, val, "a number of seconds, 0 or more");
	o->timeout = t;
	return 0;
}

static int p_poll_us(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	uint32_t us;
	char *end;

	(void)item;
	if (parse_u32(val, &end, &us) < 0 || *end || us > 1000000)
		return bad_value(key, val, "microseconds from 0 to 1000000");
	o->poll_us = us;
	return 0;
}

static int p_debug(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)key;
	(void)val;
	(void)item;
	o->debug = true;
	return 0;
}

static int p_kernel(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)key;
	(void)val;
	return append_fuse_opt(o, item, strlen(item));
}

static int p_ignored(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)o;
	(void)key;
	(void)item;
	/* noxattrs=0 asks for what strata-fs always does */
	if (!strcmp(key, "noxattrs")) {
		bool b = true;
		if (val && parse_bool_val(val, &b) < 0)
			return bad_value(key, val, "0 or 1");
		if (b) {
			susage("option noxattrs is not supported: strata-fs always passes extended "
			       "attributes through (its own are hidden); drop the option or give noxattrs=0");
			return -EINVAL;
		}
	}
	return 0;
}

static int p_redirect_dir(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)item;
	if (!strcmp(val, "on"))
		o->redirect_dir = REDIRECT_ON;
	else if (!strcmp(val, "follow") || !strcmp(val, "off"))
		o->redirect_dir = REDIRECT_FOLLOW;
	else if (!strcmp(val, "nofollow"))
		o->redirect_dir = REDIRECT_NOFOLLOW;
	else
		return bad_value(key, val, "one of on, follow, off, nofollow");
	return 0;
}

static int p_refused(struct strata_opts *o, const char *key, const char *val, const char *item)
{
	(void)o;
	(void)key;
	(void)val;
	(void)item;
	susage("option static_nlink is not supported: strata-fs shows a merged "
	       "directory's link count as 1 and any other directory's real count; "
	       "drop the option");
	return -EINVAL;
}

/* The -o options: each row is parsed by its function, printed by
 * `strata-fs --help` (opts_help) and, through that, written into the man
 * page's MOUNT OPTIONS section by man/refresh-strata-fs.py, which
 * tests/docs/test_manpages.py checks. A new option is one row here. */
const struct opt_row opts_table[] = {
	{ "lowerdir", OPT_VALUE, p_lowerdir, "lowerdir=DIRS",
	  "Read-only layers, topmost first, separated by ':' (a backslash escapes ':' and ',')." },
	{ "upperdir workdir", OPT_VALUE, p_dirs, "upperdir=DIR, workdir=DIR",
	  "The writable layer and a scratch directory on the same filesystem; both or neither "
	  "(neither: the mount is read-only)." },
	{ "volatile fsync", OPT_ANY, p_volatile, "volatile, fsync=0",
	  "Skip fsync: faster, not crash-safe." },
	{ "uidmapping gidmapping", OPT_VALUE, p_idmapping, "uidmapping=DISK:SHOWN:N[:...], gidmapping=...",
	  "Show on-disk id DISK+k as SHOWN+k and write back the reverse; other ids show as 65534 "
	  "(fuse-overlayfs's order; a leading ':' is accepted)." },
	{ "squash_to_root squash_to_uid squash_to_gid", OPT_ANY, p_squash,
	  "squash_to_root, squash_to_uid=N, squash_to_gid=N",
	  "Show every file as owned by root, or by uid/gid N." },
	{ "xattr_permissions", OPT_VALUE, p_xattr_permissions, "xattr_permissions=0|1|2",
	  "Keep owners and modes the upper cannot hold in an xattr: 1 security.containers.override_stat, "
	  "2 user.containers.override_stat (fuse-overlayfs's format UID:GID:MODE)." },
	{ "noacl", OPT_FLAG, p_noacl, "noacl",
	  "No POSIX ACLs: they are not listed, and reading or setting one answers \"not supported\"." },
	{ "unlabeled", OPT_VALUE, p_unlabeled, "unlabeled=enotsup|enodata",
	  "What getxattr of security.selinux answers for a file without a label. Default enotsup: "
	  "ls and libselinux then stop asking for every file. The request only reaches strata-fs on "
	  "hosts where no security module keeps labels itself; labels a layer holds are always shown." },
	{ "metacopy", OPT_ANY, p_switch, "metacopy=on|off",
	  "chmod, chown, utimes and xattr changes of a lower file copy no data (default on)." },
	{ "writeback", OPT_ANY, p_switch, "writeback=on|off",
	  "The kernel's writeback cache (default on, unless passthrough is used)." },
	{ "passthrough", OPT_ANY, p_switch, "passthrough=on|off",
	  "Let the kernel read and write files of the upper layer directly (default on; needs "
	  "Linux 6.9+ and CAP_SYS_ADMIN, else ignored)." },
	{ "sharecache", OPT_ANY, p_switch, "sharecache=on|off|direct",
	  "With an upper layer, pass files of lower layers opened read-only through to the lower "
	  "file too, so that every mount of one layer shares one copy of its data in the page cache "
	  "(default off; needs passthrough, else ignored). The difference from overlayfs: while this "
	  "mount has such a file open (or mapped), opening it for writing or truncating it waits up "
	  "to 2 seconds for it to be closed, then fails with ETXTBSY (\"text file busy\"). "
	  "direct: the same sharing without passthrough, also rootless and over packed layers, and "
	  "without that difference: reads of lower files (programs and libraries aside) are served "
	  "uncached, from the layer's page cache, so each read(2) is a round trip to strata-fs "
	  "(needs Linux 6.6+, else ignored)." },
	{ "progcache", OPT_ANY, p_switch, "progcache=on|off",
	  "Keep the programs and shared libraries (ELF files) of packed lower layers decompressed "
	  "in a directory beside each layer file (LAYER.progs, made by the first mount that opens "
	  "one), so that every later mount reads them as files of a directory layer, from one page "
	  "cache, instead of decompressing them again (default off; strata turns it on for its "
	  "store). A copy is checked against the layer's chunk keys before a mount first uses it, "
	  "and made again when damaged." },
	{ "uring", OPT_ANY, p_switch, "uring=on|off",
	  "Take requests through FUSE over io_uring, one queue per CPU, where the kernel offers it "
	  "(default on; Linux 6.14+ with the fuse module's enable_uring=Y, else ignored)." },
	{ "timeout", OPT_VALUE, p_timeout, "timeout=SECONDS",
	  "How long the kernel may cache names and attributes (default 86400)." },
	{ "poll_us", OPT_VALUE, p_poll_us, "poll_us=N",
	  "After a request, poll N microseconds for the next one before sleeping (default 50; 0 with "
	  "one CPU): waking a sleeping CPU costs more than that on virtual machines." },
	{ "debug", OPT_FLAG, p_debug, "debug", "Log every request (as -d, without staying in the foreground)." },
	{ "redirect_dir", OPT_VALUE, p_redirect_dir, "redirect_dir=on|follow|off|nofollow",
	  "on (the default): a renamed lower or merged directory keeps an overlay.redirect xattr "
	  "pointing to its lower contents, and redirects in every layer are followed, absolute or "
	  "relative, as the kernel's overlayfs does. follow and off: redirects are followed, but such "
	  "a rename fails with EXDEV (mv then falls back to copying). nofollow: EXDEV too, and a "
	  "redirect met in a layer gives EPERM." },
	{ "allow_other allow_root default_permissions ro rw nodev dev nosuid suid noexec exec noatime "
	  "atime relatime norelatime strictatime nodiratime sync async dirsync fsname subtype auto_unmount",
	  OPT_ANY, p_kernel,
	  "allow_other, allow_root, default_permissions, ro, nodev, nosuid, noexec, noatime, fsname=, subtype=",
	  "Passed to the kernel mount (so are rw, dev, suid, exec, atime, relatime, norelatime, "
	  "strictatime, nodiratime, sync, async, dirsync and auto_unmount)." },
	{ "context fscontext defcontext rootcontext threaded fast_ino plugins index xino userxattr "
	  "nfs_export max_idle_threads noxattrs",
	  OPT_ANY, p_ignored,
	  "context=, threaded=, fast_ino=, plugins=, index=, xino=, userxattr, noxattrs=0",
	  "Accepted and ignored, for compatibility with fuse-overlayfs (so are fscontext=, "
	  "defcontext=, rootcontext=, nfs_export= and max_idle_threads=)." },
	{ "static_nlink", OPT_ANY, p_refused, "static_nlink, noxattrs",
	  "Refused with a message: strata-fs shows a merged directory's link count as 1 and passes "
	  "extended attributes through, and cannot do otherwise." },
	{ NULL, 0, NULL, NULL, NULL },
};

/* Does the list (separated by spaces or ", ") hold key? */
static bool names_hold(const char *names, const char *key, size_t keylen)
{
	for (const char *p = names; *p;) {
		size_t n = strcspn(p, " ,");
		if (n == keylen && !strncmp(p, key, n))
			return true;
		p += n;
		p += strspn(p, " ,");
	}
	return false;
}

static const struct opt_row *find_row(const char *key, size_t keylen)
{
	for (const struct opt_row *r = opts_table; r->names; r++)
		if (names_hold(r->names, key, keylen))
			return r;
	return NULL;
}

/* One "key[=value]" item. */
static int parse_item(struct strata_opts *o, char *item)
{
	char *eq = strchr(item, '=');
	size_t keylen = eq ? (size_t)(eq - item) : strlen(item);
	const char *val = eq ? eq + 1 : NULL;
	char key[64];

	if (keylen >= sizeof key) {
		susage("unknown option '%s' (see strata-fs --help)", item);
		return -EINVAL;
	}
	memcpy(key, item, keylen);
	key[keylen] = '\0';
	const struct opt_row *row = find_row(key, keylen);
	if (!row) {
		susage("unknown option '%s' (see strata-fs --help for the options it accepts)", key);
		return -EINVAL;
	}
	if (!val && row->kind == OPT_VALUE)
		return needs_value(key);
	return row->parse(o, key, val, item);
}

/* Words of text wrapped to width columns, every line but the first
 * indented by indent spaces (the first goes on after what is there). */
static void wrap(FILE *f, const char *text, size_t col, size_t indent, size_t width)
{
	const char *p = text;

	while (*p) {
		size_t n = strcspn(p, " ");
		if (col > indent && col + 1 + n > width) {
			fprintf(f, "\n%*s", (int)indent, "");
			col = indent;
		} else if (col > indent) {
			fputc(' ', f);
			col++;
		}
		fwrite(p, 1, n, f);
		col += n;
		p += n;
		p += strspn(p, " ");
	}
	fputc('\n', f);
}

#define HELP_INDENT 21
#define HELP_WIDTH 80

void opts_help(FILE *f)
{
	fputs("options (-o, comma-separated; empty items are ignored):\n", f);
	for (const struct opt_row *r = opts_table; r->names; r++) {
		size_t len = 0;
		/* a long synopsis breaks after a ", " */
		for (const char *p = r->synopsis; *p;) {
			size_t n = strcspn(p, ",");
			if (len && 2 + len + 2 + n > HELP_WIDTH) {
				fputs(",\n", f);
				len = 0;
			} else if (len) {
				fputs(", ", f);
				len += 2;
			}
			fprintf(f, "%s%.*s", len ? "" : "  ", (int)n, p);
			len += n;
			p += n;
			p += strspn(p, ", ");
		}
		if (2 + len + 1 > HELP_INDENT) {
			fprintf(f, "\n%*s", HELP_INDENT, "");
			wrap(f, r->help, HELP_INDENT, HELP_INDENT, HELP_WIDTH);
		} else {
			fprintf(f, "%*s", (int)(HELP_INDENT - 2 - len), "");
			wrap(f, r->help, HELP_INDENT, HELP_INDENT, HELP_WIDTH);
		}
	}
}

int opts_parse_string(struct strata_opts *o, const char *s)
{
	_cleanup_free_ char *copy = strdup(s);
	char *item = copy, *p, *w;
	int r;

	if (!copy)
		return -ENOMEM;
	/* Split on unescaped commas; escapes stay for the lowerdir splitter. */
	for (p = w = copy;; p++) {
		if (*p == '\\' && p[1]) {
			*w++ = *p++;
			*w++ = *p;
			continue;
		}
		if (*p == ',' || *p == '\0') {
			bool end = *p == '\0';
			*w = '\0';
			if (*item) {
				r = parse_item(o, item);
				if (r < 0)
					return r;
			}
			if (end)
				break;
			item = w = p + 1;
			continue;
		}
		*w++ = *p;
	}
	return 0;
}

static void set_foreground(struct strata_opts *o) { o->foreground = true; }
static void set_debug(struct strata_opts *o) { o->debug = o->foreground = true; }
static void set_single(struct strata_opts *o) { o->single_thread = true; }
static void set_version(struct strata_opts *o) { o->show_version = true; }
static void set_help(struct strata_opts *o) { o->show_help = true; }

/* The command line's own flags (-o aside), for the parser and --help. */
static const struct flag_row {
	const char *spelling;   /* "-d, --debug": every way to write it */
	void (*set)(struct strata_opts *o);
	const char *help;
} flag_table[] = {
	{ "-f", set_foreground, "stay in the foreground" },
	{ "-d, --debug", set_debug, "foreground, and log every request" },
	{ "-s", set_single, "serve requests on a single thread" },
	{ "-V, --version", set_version, "print the version" },
	{ "-h, --help", set_help, "print this help" },
	{ NULL, NULL, NULL },
};

static const struct flag_row *find_flag(const char *arg)
{
	for (const struct flag_row *f = flag_table; f->spelling; f++)
		if (names_hold(f->spelling, arg, strlen(arg)))
			return f;
	return NULL;
}

void opts_usage(FILE *f)
{
	fputs("usage: strata-fs [-f] [-d] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPTS] MOUNTPOINT\n"
	      "\n"
	      "A copy-on-write layered filesystem in FUSE: the merged view of read-only lower\n"
	      "layers and one writable upper layer, with overlayfs's semantics (whiteouts,\n"
	      "opaque directories, copy-up, redirected directory renames). Without upperdir\n"
	      "the mount is read-only. Command line compatible with fuse-overlayfs, so it\n"
	      "can serve as containers-storage's mount_program.\n"
	      "\n", f);
	for (const struct flag_row *r = flag_table; r->spelling; r++)
		fprintf(f, "  %-*s%s\n", HELP_INDENT - 2, r->spelling, r->help);
	fputc('\n', f);
	opts_help(f);
	fputs("\n"
	      "MOUNTPOINT may be /dev/fd/N: a /dev/fuse descriptor already mounted by the caller.\n"
	      "strata-fs exits 0 once the mount is live, then serves in the background until\n"
	      "unmounted (fusermount3 -u MOUNTPOINT or umount MOUNTPOINT) from the mount\n"
	      "namespace it mounted in: a copy of the mount in another namespace (made by an\n"
	      "unshare -m meanwhile) does not keep it, and fails with ENOTCONN from then on.\n", f);
}

int opts_parse(struct strata_opts *o, int argc, char **argv)
{
	char *pos[2];
	int npos = 0, r;

	opts_init(o);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const struct flag_row *flag = find_flag(a);
		if (flag) {
			flag->set(o);
		} else if (!strncmp(a, "-o", 2)) {
			const char *s = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
			if (!s) {
				susage("-o needs an option string (e.g. -o lowerdir=/l,upperdir=/u,workdir=/w)");
				return -EINVAL;
			}
			r = opts_parse_string(o, s);
			if (r < 0)
				return r;
		} else if (a[0] == '-' && a[1]) {
			susage("unknown argument '%s' (see strata-fs --help)", a);
			return -EINVAL;
		} else {
			if (npos == 2) {
				susage("too many arguments at '%s': expected [SOURCE] MOUNTPOINT", a);
				return -EINVAL;
			}
			pos[npos++] = argv[i];
		}
	}
	if (o->show_version || o->show_help)
		return 0;
	if (npos == 0) {
		susage("no mount point given (usage: strata-fs -o lowerdir=... MOUNTPOINT)");
		return -EINVAL;
	}
	/* mount(8) calls helpers as "PROG SOURCE MOUNTPOINT -o OPTS". */
	if (!(o->mountpoint = strdup(pos[npos - 1])))
		return -ENOMEM;
	if (!o->nlowers) {
		susage("no lowerdir= given: strata-fs needs at least one lower layer");
		return -EINVAL;
	}
	if (!!o->upperdir != !!o->workdir) {
		susage("upperdir= and workdir= go together: give both for a writable mount, or neither for a read-only one");
		return -EINVAL;
	}
	return 0;
}
