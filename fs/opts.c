#include "opts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Options other tools pass that have no meaning for strata-fs; accepted so
 * that containers-storage and mount(8) can call us like fuse-overlayfs. */
static const char *const ignored_opts[] = {
	"context", "fscontext", "defcontext", "rootcontext", "threaded", "fast_ino",
	"plugins", "index", "xino", "userxattr", "nfs_export", "max_idle_threads", NULL,
};

/* Mount options handed to the kernel unchanged. */
static const char *const kernel_opts[] = {
	"allow_other", "allow_root", "default_permissions", "ro", "rw", "nodev", "dev",
	"nosuid", "suid", "noexec", "exec", "noatime", "atime", "relatime", "norelatime",
	"strictatime", "nodiratime", "sync", "async", "dirsync", "fsname", "subtype",
	"auto_unmount", NULL,
};

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

static bool in_list(const char *const *list, const char *key, size_t keylen)
{
	for (; *list; list++)
		if (strlen(*list) == keylen && strncmp(*list, key, keylen) == 0)
			return true;
	return false;
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

/* Options of kernel overlayfs and fuse-overlayfs that change what the mount
 * does: honoured, or refused with the reason. 1 not one of them, else 0 or
 * -EINVAL. */
static int parse_behaviour(struct strata_opts *o, const char *key, const char *val)
{
	if (!strcmp(key, "redirect_dir")) {
		if (!val)
			goto badval;
		if (!strcmp(val, "on"))
			o->redirect_dir = REDIRECT_ON;
		else if (!strcmp(val, "follow") || !strcmp(val, "off"))
			o->redirect_dir = REDIRECT_FOLLOW;
		else if (!strcmp(val, "nofollow"))
			o->redirect_dir = REDIRECT_NOFOLLOW;
		else
			goto badval;
		return 0;
	}
	if (!strcmp(key, "static_nlink")) {
		susage("option static_nlink is not supported: strata-fs shows a merged "
		       "directory's link count as 1 and any other directory's real count; "
		       "drop the option");
		return -EINVAL;
	}
	if (!strcmp(key, "noxattrs")) {
		bool b = true;
		if (val && parse_bool_val(val, &b) < 0)
			goto badval;
		if (!b)
			return 0;   /* xattrs on: what strata-fs always does */
		susage("option noxattrs is not supported: strata-fs always passes extended "
		       "attributes through (its own are hidden); drop the option or give noxattrs=0");
		return -EINVAL;
	}
	return 1;
badval:
	susage("bad value for option %s: '%s' (%s)", key, val ? val : "",
	       !strcmp(key, "redirect_dir") ? "one of on, follow, off, nofollow" : "0 or 1");
	return -EINVAL;
}

/* One "key[=value]" item. */
static int parse_item(struct strata_opts *o, char *item)
{
	char *eq = strchr(item, '=');
	size_t keylen = eq ? (size_t)(eq - item) : strlen(item);
	const char *val = eq ? eq + 1 : NULL;
	char key[64];
	int r;

	if (keylen >= sizeof key) {
		susage("unknown option '%s' (see strata-fs --help)", item);
		return -EINVAL;
	}
	memcpy(key, item, keylen);
	key[keylen] = '\0';

#define NEEDS_VAL()                                                              \
	do {                                                                     \
		if (!val) {                                                      \
			susage("option %s needs a value (%s=...)", key, key);    \
			return -EINVAL;                                          \
		}                                                                \
	} while (0)

	if (!strcmp(key, "lowerdir")) {
		NEEDS_VAL();
		for (unsigned i = 0; i < o->nlowers; i++)
			free(o->lowers[i]);
		free(o->lowers);
		o->lowers = NULL;
		o->nlowers = 0;
		r = opts_split_lowers(val, &o->lowers, &o->nlowers);
		if (r < 0)
			return r;
		if (!o->nlowers) {
			susage("lowerdir= names no directory; give at least one layer");
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "upperdir")) {
		NEEDS_VAL();
		return set_str(&o->upperdir, val, key);
	}
	if (!strcmp(key, "workdir")) {
		NEEDS_VAL();
		return set_str(&o->workdir, val, key);
	}
	if (!strcmp(key, "volatile")) {
		o->is_volatile = true;
		return 0;
	}
	if (!strcmp(key, "fsync")) {
		bool b;
		NEEDS_VAL();
		if (parse_bool_val(val, &b) < 0)
			goto badval;
		o->is_volatile = !b;
		return 0;
	}
	if (!strcmp(key, "uidmapping") || !strcmp(key, "gidmapping")) {
		NEEDS_VAL();
		if (opts_parse_idmap(val, key[0] == 'u' ? &o->uidmap : &o->gidmap) < 0) {
			susage("bad %s=%s: expected DISK:SHOWN:COUNT[:DISK:SHOWN:COUNT...]",
			       key, val);
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "squash_to_root")) {
		o->squash_to_root = true;
		return 0;
	}
	if (!strcmp(key, "squash_to_uid") || !strcmp(key, "squash_to_gid")) {
		uint32_t id;
		char *end;
		NEEDS_VAL();
		if (parse_u32(val, &end, &id) < 0 || *end)
			goto badval;
		if (key[10] == 'u')
			o->squash_uid = id;
		else
			o->squash_gid = id;
		return 0;
	}
	if (!strcmp(key, "xattr_permissions")) {
		NEEDS_VAL();
		if (strcmp(val, "0") && strcmp(val, "1") && strcmp(val, "2"))
			goto badval;
		o->xattr_permissions = val[0] - '0';
		return 0;
	}
	if (!strcmp(key, "unlabeled")) {
		NEEDS_VAL();
		if (strcmp(val, "enotsup") && strcmp(val, "enodata"))
			goto badval;
		o->unlabeled_enodata = !strcmp(val, "enodata");
		return 0;
	}
	if (!strcmp(key, "noacl")) {
		o->noacl = true;
		return 0;
	}
	if (!strcmp(key, "metacopy") || !strcmp(key, "writeback") || !strcmp(key, "passthrough") ||
	    !strcmp(key, "uring")) {
		bool b = true;
		if (val && parse_bool_val(val, &b) < 0)
			goto badval;
		if (key[0] == 'm')
			o->metacopy = b;
		else if (key[0] == 'w')
			o->writeback = b;
		else if (key[0] == 'u')
			o->uring = b;
		else
			o->passthrough = b;
		return 0;
	}
	if (!strcmp(key, "poll_us")) {
		uint32_t us;
		char *end;
		NEEDS_VAL();
		if (parse_u32(val, &end, &us) < 0 || *end || us > 1000000)
			goto badval;
		o->poll_us = us;
		return 0;
	}
	if (!strcmp(key, "timeout")) {
		char *end;
		NEEDS_VAL();
		errno = 0;
		double t = strtod(val, &end);
		if (errno || *end || t < 0)
			goto badval;
		o->timeout = t;
		return 0;
	}
	if (!strcmp(key, "debug")) {
		o->debug = true;
		return 0;
	}
	if ((r = parse_behaviour(o, key, val)) <= 0)
		return r;
	if (in_list(ignored_opts, key, keylen))
		return 0;
	if (in_list(kernel_opts, key, keylen))
		return append_fuse_opt(o, item, strlen(item));
	susage("unknown option '%s' (see strata-fs --help for the options it accepts)", key);
	return -EINVAL;
badval:
	susage("bad value for option %s: '%s' (see strata-fs --help)", key, val ? val : "");
	return -EINVAL;
#undef NEEDS_VAL
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

int opts_parse(struct strata_opts *o, int argc, char **argv)
{
	char *pos[2];
	int npos = 0, r;

	opts_init(o);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-f")) {
			o->foreground = true;
		} else if (!strcmp(a, "-d") || !strcmp(a, "--debug")) {
			o->debug = true;
			o->foreground = true;
		} else if (!strcmp(a, "-s")) {
			o->single_thread = true;
		} else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			o->show_version = true;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			o->show_help = true;
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
