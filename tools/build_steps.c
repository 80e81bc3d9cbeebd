/* build_steps: the steps that make layers. RUN runs in a container
 * through the launcher whose writable layer becomes the step's layer;
 * COPY and ADD build theirs in a staging directory; WORKDIR makes its
 * directory when the image lacks it. */
#include "build.h"

#include "container.h"
#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "lowerview.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef STRATA_HAVE_RUNTIME
#include "launch.h"
#endif

/* ---- RUN -------------------------------------------------------------- */

#ifdef STRATA_HAVE_RUNTIME
/* The lowerdir list of a config's layers (top first), or an empty
 * directory for an image without layers. */
static int lower_of(struct store *s, json_t *cfg, const char *empty, char **out)
{
	json_t *ids;
	int r = config_diff_ids(cfg, "build", &ids);
	if (r < 0)
		return r;
	size_t n = json_array_size(ids), len = 1;
	for (size_t i = 0; i < n; i++)
		len += strlen(s->root) + 96;
	char *l = calloc(1, len + strlen(empty) + 1);
	if (!l)
		return -ENOMEM;
	for (size_t i = n; i-- > 0;) {
		_cleanup_free_ char *p = store_layer_path(s, json_string_value(json_array_get(ids, i)));
		if (!p) {
			free(l);
			return -ENOMEM;
		}
		if (*l)
			strcat(l, ":");
		strcat(l, p);
	}
	if (!n)
		strcpy(l, empty);
	*out = l;
	return 0;
}

/* A step's directory under the store's tmp/ (relative to the store). */
struct run_tmp {
	char name[64];
};

int build_run(struct build *b, struct stage *st, const struct df_insn *in, const char *created_by,
		    bool *empty_upper, char diffid[DIGEST_BUF])
{
	struct store *s = &b->s;
	struct run_tmp t = { 0 };
	_cleanup_free_ char *lower = NULL, *upper = NULL, *work = NULL, *empty = NULL;
	char **argv = NULL;
	const char **env = NULL;
	int r = 0;
	int tfd = store_mktemp(s, t.name);
	if (tfd < 0) {
		serr(tfd, "build: create a directory in", s->root, "check free space of the store");
		return tfd;
	}
	if (mkdirat(tfd, "upper", 0755) < 0 || mkdirat(tfd, "work", 0700) < 0 || mkdirat(tfd, "empty", 0755) < 0)
		r = -errno;
	close(tfd);
	if (r == 0 && (asprintf(&upper, "%s/%s/upper", s->root, t.name) < 0 ||
		       asprintf(&work, "%s/%s/work", s->root, t.name) < 0 ||
		       asprintf(&empty, "%s/%s/empty", s->root, t.name) < 0))
		r = -ENOMEM;
	if (r == 0)
		r = lower_of(s, st->cfg, empty, &lower);
	json_t *cc = build_cc(st->cfg);
	struct strata_launch_spec spec = { .lowerdir = lower, .upperdir = upper, .workdir = work };
	/* the command: exec form as given; shell form through SHELL */
	size_t nargv = 0;
	if (r == 0 && in->is_json) {
		argv = calloc(in->njson + 1, sizeof *argv);
		for (size_t i = 0; argv && i < in->njson; i++)
			argv[nargv++] = in->json[i];
	} else if (r == 0) {
		json_t *sh = json_object_get(cc, "Shell");
		size_t ns = json_array_size(sh);
		argv = calloc((ns ? ns : 2) + 2, sizeof *argv);
		if (argv && ns) {
			for (size_t i = 0; i < ns; i++)
				argv[nargv++] = (char *)json_string_value(json_array_get(sh, i));
		} else if (argv) {
			argv[nargv++] = "/bin/sh";
			argv[nargv++] = "-c";
		}
		if (argv)
			argv[nargv++] = in->args;
	}
	if (r == 0 && (!argv || !nargv)) {
		susage("%s:%u: RUN needs a command", b->file_name, in->line);
		r = argv ? -EINVAL : -ENOMEM;
	}
	/* the environment: the image's, and the build arguments it can see
	 * (not kept in the image) */
	json_t *ienv = json_object_get(cc, "Env");
	env = calloc(json_array_size(ienv) + json_object_size(st->args) + 1, sizeof *env);
	char **argenv = calloc(json_object_size(st->args) + 1, sizeof *argenv);
	size_t ne = 0, na = 0;
	if (r == 0 && (!env || !argenv))
		r = -ENOMEM;
	if (r == 0) {
		const char *k;
		json_t *v;
		json_object_foreach(st->args, k, v) {
			if (!json_is_string(v) || build_env_get(ienv, k))
				continue;
			if (asprintf(&argenv[na], "%s=%s", k, json_string_value(v)) >= 0)
				env[ne++] = argenv[na++];
		}
		size_t i;
		json_array_foreach(ienv, i, v)
			env[ne++] = json_string_value(v);
	}
	spec.argv = argv;
	spec.env = env;
	spec.n_env = ne;
	const char *wd = json_string_value(json_object_get(cc, "WorkingDir"));
	spec.cwd = wd && *wd ? wd : NULL;
	const char *user = json_string_value(json_object_get(cc, "User"));
	if (r == 0 && user && *user) {
		if ((r = ctr_resolve_user(s, st->cfg, user, &spec.uid, &spec.gid)) == 0)
			spec.set_user = true;
	}
	const char *net = b->network ? b->network : "private";
	spec.net = !strcmp(net, "none") ? STRATA_NET_NONE : !strcmp(net, "private") ? STRATA_NET_PRIVATE
										       : STRATA_NET_HOST;
	spec.hostname = "strata-build";
	spec.fs_options = b->rootless ? "progcache,xattr_permissions=2,squash_to_root" : "progcache";
	/* the store is free while the step runs; our tmp/ directory stays
	 * ours (its owner directory is locked for the handle's life) */
	if (r == 0)
		r = build_lock(b, 0);
	if (r == 0) {
		struct strata_error lerr;
		int code = strata_launch(&spec, &lerr);
		strata_error_print(&lerr, "build: %s:%u: %s", b->file_name, in->line, created_by);
		if (code != 0) {
			if (code > 0 && !lerr.code)
				fprintf(stderr, "strata: build: %s:%u: %s: the command exited with %d\n",
					b->file_name, in->line, created_by, code);
			r = code > 0 ? code : 125;
		}
	}
	if (r == 0 && (r = build_lock(b, LOCK_EX)) == 0) {
		char rel[128];
		snprintf(rel, sizeof rel, "%s/upper", t.name);
		_cleanup_close_ int ufd = openat(s->fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		char **names;
		size_t nn = 0;
		if (ufd < 0 || list_sorted(ufd, &names, &nn) < 0) {
			r = -EIO;
		} else {
			free_names(names, nn);
			*empty_upper = nn == 0;
			json_t *ids;
			struct lowerview lv = { 0 };
			if (!*empty_upper && (r = config_diff_ids(st->cfg, "build", &ids)) == 0 &&
			    (r = lowerview_open_packed(s, ids, &lv)) == 0) {
				r = layer_from_dir(s, ufd, created_by, true, &lv, diffid);
				if (r == 0 && (r = store_commit_begin(s)) == 0)
					r = store_commit_pending(s);
				lowerview_close(&lv);
			}
		}
	}
	if (r != 0)
		store_drop_pending(s);
	rm_rf_at(s->fd, t.name);
	for (size_t i = 0; i < na; i++)
		free(argenv[i]);
	free(argenv);
	free(env);
	free(argv);
	return r;
}
#endif


/* ---- COPY / ADD -------------------------------------------------------- */

void build_copy_free(struct copy_step *c)
{
	df_strv_free(c->src, c->nsrc);
	free(c->dest);
}


static int parse_chmod(const char *v, int *mode)
{
	char *end;
	long m = strtol(v, &end, 8);
	if (!*v || *end || m < 0 || m > 07777) {
		susage("--chmod=%s: give an octal mode such as 0755", v);
		return -EINVAL;
	}
	*mode = (int)m;
	return 0;
}

int build_copy_prepare(struct build *b, size_t idx, const struct df_insn *in, bool add, struct copy_step *c)
{
	struct stage *st = &b->st[idx];
	char **w = NULL;
	size_t n = 0;
	int r = 0;
	memset(c, 0, sizeof *c);
	c->o.mode = -1;
	if (in->is_json) {
		w = calloc(in->njson + 1, sizeof *w);
		for (size_t i = 0; w && i < in->njson; i++)
			w[n++] = strdup(in->json[i]);
		if (!w)
			return -ENOMEM;
	} else if ((r = df_words(in->args, b->df.escape, &w, &n)) < 0) {
		return r;
	}
	if (n < 2) {
		susage("%s:%u: %s needs a source and a destination", b->file_name, in->line, in->cmd);
		df_strv_free(w, n);
		return -EINVAL;
	}
	/* build_expand every word; quotes of the JSON form are already gone */
	c->src = calloc(n, sizeof *c->src);
	for (size_t i = 0; c->src && i + 1 < n; i++) {
		char *x = in->is_json ? strdup(w[i]) : build_expand(b, st, w[i]);
		if (!x) {
			r = -errno;
			break;
		}
		c->src[c->nsrc++] = x;
	}
	char *dest = !c->src ? NULL : in->is_json ? strdup(w[n - 1]) : build_expand(b, st, w[n - 1]);
	df_strv_free(w, n);
	if (!c->src || !dest) {
		free(dest);
		return r ? r : -ENOMEM;
	}
	c->dest_is_dir = c->nsrc > 1 || dest[strlen(dest) - 1] == '/';
	if (dest[0] != '/') {
		const char *wd = json_string_value(json_object_get(build_cc(st->cfg), "WorkingDir"));
		char *abs = NULL;
		if (asprintf(&abs, "%s/%s", wd && *wd ? wd : "", dest) < 0) {
			free(dest);
			return -ENOMEM;
		}
		free(dest);
		dest = abs;
	}
	c->dest = dest;
	for (size_t i = 0; i < c->nsrc; i++)
		if (add && (!strncmp(c->src[i], "http://", 7) || !strncmp(c->src[i], "https://", 8) ||
			    !strncmp(c->src[i], "git@", 4))) {
			susage("%s:%u: ADD %s: remote sources are not supported; fetch it into the context "
			       "and ADD or COPY the file", b->file_name, in->line, c->src[i]);
			return -EINVAL;
		}
	const char *v;
	if ((v = df_flag(in, "chown", NULL))) {
		uid_t uid;
		gid_t gid;
		char *x = build_expand(b, st, v);
		r = x ? ctr_resolve_user(&b->s, st->cfg, x, &uid, &gid) : -errno;
		free(x);
		if (r < 0)
			return r;
		c->o.uid = uid;
		c->o.gid = gid;
	}
	if ((v = df_flag(in, "chmod", NULL)) && (r = parse_chmod(v, &c->o.mode)) < 0)
		return r;
	if (!add && (v = df_flag(in, "from", NULL))) {
		char *x = build_expand(b, st, v);
		if (!x)
			return -errno;
		if (!(c->from_stage = build_stage_named(b, x, idx))) {
			r = build_resolve_image(b, x, c->from_image);
			if (r < 0)
				susage("%s:%u: COPY --from=%s: no such stage or image", b->file_name, in->line, x);
			c->from_is_image = r == 0;
		}
		free(x);
		if (r < 0)
			return r;
	}
	c->o.rootless = b->rootless;
	return 0;
}

/* The staging tree of a COPY/ADD, then its layer. */
int build_copy(struct build *b, struct stage *st, const struct copy_step *c, bool add,
		    const char *created_by, char diffid[DIGEST_BUF])
{
	struct store *s = &b->s;
	char tname[64];
	int r = build_lock(b, LOCK_EX);
	if (r < 0)
		return r;
	int tfd = store_mktemp(s, tname);
	if (tfd < 0) {
		serr(tfd, "build: create a directory in", s->root, "check free space of the store");
		return tfd;
	}
	struct lowerview lv = { 0 }, from_lv = { 0 };
	json_t *ids, *fcfg = NULL;
	if ((r = config_diff_ids(st->cfg, "build", &ids)) == 0)
		r = lowerview_open_packed(s, ids, &lv);
	if (r == 0 && (c->from_stage || c->from_is_image)) {
		json_t *src_cfg = c->from_stage ? c->from_stage->cfg : NULL;
		if (!src_cfg && (r = store_load_image(s, c->from_image, &fcfg, &ids)) == 0)
			src_cfg = fcfg;
		if (r == 0 && (r = config_diff_ids(src_cfg, "build", &ids)) == 0)
			r = lowerview_open_packed(s, ids, &from_lv);
	}
	/* the sources, resolved: context paths (globs expanded) or paths of
	 * the --from image */
	bool from = c->from_stage || c->from_is_image;
	struct src { char *path; bool dir, tar; } *srcs = NULL;
	size_t ns = 0;
	for (size_t i = 0; r == 0 && i < c->nsrc; i++) {
		char **m = NULL;
		size_t nm = 0;
		if (from) {
			char clean[PATH_MAX];
			snprintf(clean, sizeof clean, "%s", c->src[i] + strspn(c->src[i], "/"));
			size_t cl = strlen(clean);
			while (cl && clean[cl - 1] == '/')
				clean[--cl] = '\0';
			m = calloc(2, sizeof *m);
			if (!m || !(m[0] = strdup(clean))) {
				free(m);
				r = -ENOMEM;
				break;
			}
			nm = 1;
		} else if ((r = bctx_glob(&b->ctx, c->src[i], &m, &nm)) < 0) {
			break;
		}
		struct src *g = realloc(srcs, (ns + nm) * sizeof *g);
		if (!g) {
			df_strv_free(m, nm);
			r = -ENOMEM;
			break;
		}
		srcs = g;
		for (size_t k = 0; k < nm; k++) {
			struct src *x = &srcs[ns++];
			x->path = m[k];
			x->tar = false;
			if (from) {
				int d = lower_is_dir(&from_lv, x->path);
				if (d < 0 && r == 0) {
					susage("%s: /%s is not in the --from image", created_by, x->path);
					r = d;
				}
				x->dir = d == 1;
			} else {
				struct stat sst;
				x->dir = fstatat(b->ctx.fd, *x->path ? x->path : ".", &sst, AT_SYMLINK_NOFOLLOW) == 0 &&
					 S_ISDIR(sst.st_mode);
				x->tar = add && !x->dir && bctx_is_tar(&b->ctx, x->path);
			}
		}
		free(m);
	}
	/* the destination is a directory when it ends in '/', when several
	 * sources go there, when the image has a directory there, or when
	 * the one source is a directory or an archive ADD unpacks */
	const char *d = c->dest + strspn(c->dest, "/");
	bool dest_dir = c->dest_is_dir || ns > 1 || !*d || lower_is_dir(&lv, d) == 1 ||
			(ns == 1 && (srcs[0].dir || srcs[0].tar));
	int dfd = -1;
	char parent[PATH_MAX], base[NAME_MAX + 1] = "";
	if (r == 0) {
		snprintf(parent, sizeof parent, "%s", d);
		size_t pl = strlen(parent);
		while (pl && parent[pl - 1] == '/')
			parent[--pl] = '\0';
		if (!dest_dir) {
			char *slash = strrchr(parent, '/');
			const char *leaf = slash ? slash + 1 : parent;
			if (strlen(leaf) > NAME_MAX) {
				susage("%s: the destination name %s is longer than %d bytes", created_by, leaf, NAME_MAX);
				r = -ENAMETOOLONG;
			}
			memcpy(base, leaf, strnlen(leaf, NAME_MAX));
			base[strnlen(leaf, NAME_MAX)] = '\0';
			if (slash)
				*slash = '\0';
			else
				parent[0] = '\0';
		}
		if (r == 0 && (dfd = stage_mkdirs(tfd, parent, &lv, &c->o)) < 0)
			r = dfd;
	}
	for (size_t i = 0; r == 0 && i < ns; i++) {
		const char *leaf = strrchr(srcs[i].path, '/') ? strrchr(srcs[i].path, '/') + 1 : srcs[i].path;
		const char *dname = srcs[i].dir ? "." : dest_dir ? leaf : base;
		if (from)
			r = lower_copy(&from_lv, srcs[i].path, dfd, dname, srcs[i].dir, &c->o);
		else if (srcs[i].tar)
			r = bctx_untar(&b->ctx, srcs[i].path, dfd, &c->o);
		else
			r = bctx_copy(&b->ctx, srcs[i].path, dfd, dname, srcs[i].dir, &c->o);
	}
	for (size_t i = 0; i < ns; i++)
		free(srcs[i].path);
	free(srcs);
	if (dfd >= 0)
		close(dfd);
	if (r == 0) {
		r = layer_from_dir(s, tfd, created_by, false, NULL, diffid);
		if (r == 0 && (r = store_commit_begin(s)) == 0)
			r = store_commit_pending(s);
	}
	close(tfd);
	lowerview_close(&lv);
	lowerview_close(&from_lv);
	json_decref(fcfg);
	if (r != 0)
		store_drop_pending(s);
	rm_rf_at(s->fd, tname);
	return r;
}

/* WORKDIR creates its directory when the image lacks it: a small layer
 * of its own, as docker's builder makes. */
int build_workdir_layer(struct build *b, struct stage *st, const char *by, bool *made, char diffid[DIGEST_BUF])
{
	const char *wd = json_string_value(json_object_get(build_cc(st->cfg), "WorkingDir"));
	struct store *s = &b->s;
	json_t *ids;
	struct lowerview lv = { 0 };
	char tname[64] = "";
	*made = false;
	if (!wd || !*(wd + strspn(wd, "/")))
		return 0;
	int r = build_lock(b, LOCK_EX);
	if (r < 0)
		return r;
	if ((r = config_diff_ids(st->cfg, "build", &ids)) == 0 && (r = lowerview_open_packed(s, ids, &lv)) == 0 &&
	    lower_is_dir(&lv, wd + strspn(wd, "/")) != 1) {
		int tfd = store_mktemp(s, tname);
		if (tfd < 0) {
			r = tfd;
		} else {
			struct copy_opts o = { .mode = -1, .rootless = b->rootless };
			int dfd = stage_mkdirs(tfd, wd, &lv, &o);
			if (dfd < 0)
				r = dfd;
			else
				close(dfd);
			if (r == 0 && (r = layer_from_dir(s, tfd, by, false, NULL, diffid)) == 0 &&
			    (r = store_commit_begin(s)) == 0 && (r = store_commit_pending(s)) == 0)
				*made = true;
			close(tfd);
		}
	}
	lowerview_close(&lv);
	if (r != 0)
		store_drop_pending(s);
	if (tname[0])
		rm_rf_at(s->fd, tname);
	return r;
}

