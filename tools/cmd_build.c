/* build: a Containerfile/Dockerfile into a layered image.
 *
 * Each stage starts from its FROM (an image of the store, one pulled
 * through `strata pull`, an earlier stage, or scratch) and applies the
 * instructions in order to an image config. RUN runs in a container
 * through the launcher (the same engine as `strata run`) whose writable
 * layer becomes the step's layer; COPY and ADD build the step's layer in a
 * staging directory; the other instructions change only the config and
 * add a history entry marked empty_layer, as docker does.
 *
 * Cache: every step has a key, the XXH3-128 of the previous step's key,
 * the instruction with its arguments resolved, the build arguments it can
 * see and, for COPY/ADD, the content of its sources. A step whose key is
 * in STORE/build-cache/ reuses the image recorded there and runs nothing.
 * The key is no security boundary (XXH3 is fast, not collision-proof):
 * what a step produces is still a layer named by its sha256.
 *
 * Nothing half-done stays: a failing step's container and staging tree go
 * with it (they live in the store's tmp/), and only images the cache or a
 * tag refers to survive the next garbage collection.
 */
#include "cli.h"

#include "buildctx.h"
#include "container.h"
#include "dockerfile.h"
#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "lowerview.h"
#include "store.h"

#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#ifdef STRATA_HAVE_RUNTIME
#include "launch.h"
#endif

struct stage {
	char *name;              /* AS name, lower-case, or NULL */
	json_t *cfg;             /* the image config as built so far */
	json_t *args;            /* ARGs declared in this stage: name -> value|null */
	char key[33];            /* cache key of the state so far */
	char digest[DIGEST_BUF]; /* the stage's image, once stored */
	bool have_image;
};

struct build {
	const char *root;        /* the store's path as given (NULL: default) */
	char *store_root;        /* resolved */
	bool rootless;
	struct bctx ctx;
	struct dockerfile df;
	json_t *build_args;      /* --build-arg: name -> value */
	json_t *global_args;     /* ARG before the first FROM */
	bool no_cache;
	const char *network;
	const char *target;
	const char *file_name;
	const char *tls_verify;  /* passed to pulls of FROM and COPY --from images */
	struct stage *st;
	size_t nst;
	unsigned step, nsteps;
};

/* ---- small helpers ---------------------------------------------------- */

static void key_hex(XXH3_state_t *h, char out[33])
{
	XXH128_hash_t k = XXH3_128bits_digest(h);
	snprintf(out, 33, "%016llx%016llx", (unsigned long long)k.high64, (unsigned long long)k.low64);
}

static XXH3_state_t *key_begin(const char *prev)
{
	XXH3_state_t *h = XXH3_createState();
	if (h) {
		XXH3_128bits_reset(h);
		XXH3_128bits_update(h, prev, strlen(prev) + 1);
	}
	return h;
}

static void key_add(XXH3_state_t *h, const char *s)
{
	XXH3_128bits_update(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

static json_t *cc_of(json_t *cfg)
{
	json_t *cc = json_object_get(cfg, "config");
	if (!json_is_object(cc)) {
		cc = json_object();
		json_object_set_new(cfg, "config", cc);
	}
	return cc;
}

/* The value of NAME in an Env array, or NULL. */
static const char *env_get(json_t *env, const char *name)
{
	size_t i, nl = strlen(name);
	json_t *v;
	json_array_foreach(env, i, v) {
		const char *kv = json_string_value(v);
		if (kv && !strncmp(kv, name, nl) && kv[nl] == '=')
			return kv + nl + 1;
	}
	return NULL;
}

static void env_set(json_t *cc, const char *name, const char *value)
{
	json_t *env = json_object_get(cc, "Env");
	if (!json_is_array(env)) {
		env = json_array();
		json_object_set_new(cc, "Env", env);
	}
	char *kv = NULL;
	if (asprintf(&kv, "%s=%s", name, value) < 0)
		return;
	size_t i, nl = strlen(name);
	json_t *v;
	json_array_foreach(env, i, v) {
		const char *old = json_string_value(v);
		if (old && !strncmp(old, name, nl) && old[nl] == '=') {
			json_array_set_new(env, i, json_string(kv));
			free(kv);
			return;
		}
	}
	json_array_append_new(env, json_string(kv));
	free(kv);
}

struct lookup_ctx {
	json_t *env;    /* may be NULL */
	json_t *args;   /* may be NULL */
	json_t *more;   /* global ARGs, for FROM */
};

/* ENV wins over ARG of the same name, as in docker. */
static const char *var_lookup(void *p, const char *name)
{
	struct lookup_ctx *l = p;
	const char *v = l->env ? env_get(l->env, name) : NULL;
	if (!v && l->args)
		v = json_string_value(json_object_get(l->args, name));
	if (!v && l->more)
		v = json_string_value(json_object_get(l->more, name));
	return v;
}

static char *expand(struct build *b, struct stage *s, const char *word)
{
	struct lookup_ctx l = { s ? json_object_get(cc_of(s->cfg), "Env") : NULL, s ? s->args : NULL,
				s ? NULL : b->global_args };
	return df_word(word, b->df.escape, var_lookup, &l);
}

static void history_add(json_t *cfg, const char *created_by, bool empty)
{
	json_t *h = json_object_get(cfg, "history");
	if (!json_is_array(h)) {
		h = json_array();
		json_object_set_new(cfg, "history", h);
	}
	char now[64];
	now_rfc3339(now, sizeof now, false);
	json_t *e = json_pack("{s:s,s:s}", "created", now, "created_by", created_by);
	if (empty)
		json_object_set_new(e, "empty_layer", json_true());
	json_array_append_new(h, e);
	json_object_set_new(cfg, "created", json_string(now));
}

/* ---- the cache -------------------------------------------------------- */

static int cache_get(struct build *b, struct store *s, const char *key, json_t **cfg, char digest[DIGEST_BUF])
{
	char p[128], *txt = NULL;
	snprintf(p, sizeof p, "build-cache/%s", key);
	if (b->no_cache || read_file_at(s->fd, p, 256, &txt, NULL) < 0)
		return -ENOENT;
	size_t n = strcspn(txt, "\n");
	txt[n] = '\0';
	json_t *ids;
	int r = digest_valid(txt) ? store_load_image(s, txt, cfg, &ids) : -EINVAL;
	if (r == 0) {
		/* every layer must still be there */
		size_t i;
		json_t *v;
		json_array_foreach(ids, i, v)
			if (!store_has_layer(s, json_string_value(v)))
				r = -ENOENT;
		if (r == 0)
			snprintf(digest, DIGEST_BUF, "%s", txt);
		else
			json_decref(*cfg);
	}
	free(txt);
	return r;
}

static int cache_put(struct store *s, const char *key, const char *digest)
{
	char p[128], line[DIGEST_BUF + 1];
	if (mkdirat(s->fd, "build-cache", 0700) < 0 && errno != EEXIST)
		return -errno;
	snprintf(p, sizeof p, "build-cache/%s", key);
	int n = snprintf(line, sizeof line, "%s\n", digest);
	return write_file_atomic(s->fd, p, line, (size_t)n);
}

/* Store the stage's config as an image (untagged until the end). */
static int stage_store(struct stage *st, struct store *s)
{
	char *txt = json_dumps(st->cfg, JSON_COMPACT);
	if (!txt)
		return -ENOMEM;
	int r = store_put_image(s, txt, strlen(txt), st->digest);
	free(txt);
	if (r < 0)
		serr(r, "build: store image config in", s->root, "check free space of the store");
	else
		st->have_image = true;
	return r;
}

/* After a step: record the new state under its key. */
static int step_done(struct build *b, struct stage *st, const char *key)
{
	struct store s;
	int r = store_open(&s, b->root, true);
	if (r < 0)
		return r;
	/* a step's layer (committed by the step) is unreferenced until its
	 * image and cache entry are written: the commit marker the step set
	 * has the next command collect it should we die before */
	if ((r = stage_store(st, &s)) == 0)
		r = cache_put(&s, key, st->digest);
	if (r == 0)
		store_commit_end(&s);
	store_close(&s);
	if (r == 0)
		memcpy(st->key, key, 33);
	return r;
}

/* Before a step: a cached result replaces the stage's state. 1 when hit. */
static int step_cached(struct build *b, struct stage *st, const char *key)
{
	struct store s;
	json_t *cfg;
	char digest[DIGEST_BUF];
	if (b->no_cache || store_open(&s, b->root, false) < 0)
		return 0;
	int r = cache_get(b, &s, key, &cfg, digest);
	store_close(&s);
	if (r < 0)
		return 0;
	json_decref(st->cfg);
	st->cfg = cfg;
	memcpy(st->digest, digest, DIGEST_BUF);
	st->have_image = true;
	memcpy(st->key, key, 33);
	return 1;
}

/* ---- FROM ------------------------------------------------------------- */

static struct stage *stage_named(struct build *b, const char *name, size_t before)
{
	for (size_t i = 0; i < before; i++)
		if (b->st[i].name && !strcasecmp(b->st[i].name, name))
			return &b->st[i];
	/* a stage may also be named by its index */
	char *end;
	unsigned long k = strtoul(name, &end, 10);
	if (*name && !*end && k < before)
		return &b->st[k];
	return NULL;
}

/* An image of the store, pulled when it is a registry reference the store
 * does not hold. */
static int resolve_image(struct build *b, const char *ref, char digest[DIGEST_BUF])
{
	struct store s;
	int r = store_open(&s, b->root, false);
	if (r < 0)
		return r;
	r = store_resolve(&s, ref, digest);
	store_close(&s);
	if (r == 0)
		return 0;
	fprintf(stderr, "strata: build: %s is not in the store: pulling it\n", ref);
	char tls[64];
	char *argv[3] = { (char *)ref, NULL, NULL };
	int argc = 1;
	if (b->tls_verify) {
		snprintf(tls, sizeof tls, "--tls-verify=%s", b->tls_verify);
		argv[0] = tls;
		argv[1] = (char *)ref;
		argc = 2;
	}
	if (cmd_pull(b->root, argc, argv) != 0) {
		susage("build: FROM %s: not in the store and the pull failed (import it, or check the name)", ref);
		return -ENOENT;
	}
	if ((r = store_open(&s, b->root, false)) < 0)
		return r;
	r = store_resolve(&s, ref, digest);
	store_close(&s);
	return r;
}

static int do_from(struct build *b, size_t idx, const struct df_insn *in)
{
	struct stage *st = &b->st[idx];
	char **w;
	size_t n;
	int r = df_words(in->args, b->df.escape, &w, &n);
	if (r < 0)
		return r;
	if (!(n == 1 || (n == 3 && !strcasecmp(w[1], "as")))) {
		susage("%s:%u: FROM IMAGE [AS NAME]", b->file_name, in->line);
		df_strv_free(w, n);
		return -EINVAL;
	}
	char *image = expand(b, NULL, w[0]);
	if (n == 3) {
		st->name = strdup(w[2]);
		for (char *c = st->name; c && *c; c++)
			*c = (char)tolower((unsigned char)*c);
	}
	df_strv_free(w, n);
	if (!image)
		return -errno;
	st->args = json_object();
	XXH3_state_t *h = key_begin("FROM");
	struct stage *prev = stage_named(b, image, idx);
	if (prev) {
		st->cfg = json_deep_copy(prev->cfg);
		key_add(h, prev->key);
	} else if (!strcmp(image, "scratch")) {
		st->cfg = config_new();
		json_object_del(cc_of(st->cfg), "Cmd");
		key_add(h, "scratch");
	} else {
		char digest[DIGEST_BUF];
		struct store s;
		if ((r = resolve_image(b, image, digest)) < 0 || (r = store_open(&s, b->root, false)) < 0) {
			if (r == -ENOENT)
				susage("%s:%u: FROM %s: no such image or stage", b->file_name, in->line, image);
			free(image);
			XXH3_freeState(h);
			return r;
		}
		json_t *ids;
		r = store_load_image(&s, digest, &st->cfg, &ids);
		store_close(&s);
		key_add(h, digest);
	}
	if (r == 0 && !st->cfg)
		r = -ENOMEM;
	if (r == 0) {
		/* the base's ONBUILD triggers are not run (docker's legacy
		 * builder would); they stay recorded for images built on ours */
		json_object_del(cc_of(st->cfg), "OnBuild");
		key_hex(h, st->key);
		fprintf(stderr, "STEP %u/%u: FROM %s%s%s\n", ++b->step, b->nsteps, image,
			st->name ? " AS " : "", st->name ? st->name : "");
	}
	XXH3_freeState(h);
	free(image);
	return r;
}

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

static int run_step(struct build *b, struct stage *st, const struct df_insn *in, const char *created_by,
		    bool *empty_upper, char diffid[DIGEST_BUF])
{
	struct store s;
	struct run_tmp t = { 0 };
	_cleanup_free_ char *lower = NULL, *upper = NULL, *work = NULL, *empty = NULL;
	char **argv = NULL;
	const char **env = NULL;
	int r = store_open(&s, b->root, true);
	if (r < 0)
		return r;
	int tfd = store_mktemp(&s, t.name);
	if (tfd < 0) {
		serr(tfd, "build: create a directory in", s.root, "check free space of the store");
		store_close(&s);
		return tfd;
	}
	if (mkdirat(tfd, "upper", 0755) < 0 || mkdirat(tfd, "work", 0700) < 0 || mkdirat(tfd, "empty", 0755) < 0)
		r = -errno;
	close(tfd);
	if (r == 0 && (asprintf(&upper, "%s/%s/upper", s.root, t.name) < 0 ||
		       asprintf(&work, "%s/%s/work", s.root, t.name) < 0 ||
		       asprintf(&empty, "%s/%s/empty", s.root, t.name) < 0))
		r = -ENOMEM;
	if (r == 0)
		r = lower_of(&s, st->cfg, empty, &lower);
	json_t *cc = cc_of(st->cfg);
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
			if (!json_is_string(v) || env_get(ienv, k))
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
		if ((r = ctr_resolve_user(&s, st->cfg, user, &spec.uid, &spec.gid)) == 0)
			spec.set_user = true;
	}
	const char *net = b->network ? b->network : "private";
	spec.net = !strcmp(net, "none") ? STRATA_NET_NONE : !strcmp(net, "private") ? STRATA_NET_PRIVATE
										       : STRATA_NET_HOST;
	spec.hostname = "strata-build";
	if (b->rootless)
		spec.fs_options = "xattr_permissions=2,squash_to_root";
	/* the store is free while the step runs; our tmp/ directory stays
	 * ours (its owner directory is locked for the handle's life) */
	if (r == 0)
		r = store_unlock(&s);
	if (r == 0) {
		int code = strata_launch(&spec);
		if (code != 0) {
			if (code > 0)
				fprintf(stderr, "strata: build: %s:%u: %s: the command exited with %d\n",
					b->file_name, in->line, created_by, code);
			r = code > 0 ? code : 125;
		}
	}
	if (r == 0 && (r = store_relock(&s, true)) == 0) {
		char rel[128];
		snprintf(rel, sizeof rel, "%s/upper", t.name);
		_cleanup_close_ int ufd = openat(s.fd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
			    (r = lowerview_open(&s, ids, &lv)) == 0) {
				r = layer_from_dir(&s, ufd, created_by, true, &lv, diffid);
				if (r == 0 && (r = store_commit_begin(&s)) == 0)
					r = store_commit_pending(&s);
				lowerview_close(&lv);
			}
		}
	}
	/* closing the handle removes its tmp/ directory and what is in it */
	store_close(&s);
	for (size_t i = 0; i < na; i++)
		free(argenv[i]);
	free(argenv);
	free(env);
	free(argv);
	return r;
}
#endif

/* ---- COPY / ADD -------------------------------------------------------- */

struct copy_step {
	char **src;              /* expanded sources as written */
	size_t nsrc;
	char *dest;              /* absolute, expanded */
	bool dest_is_dir;
	struct copy_opts o;
	struct stage *from_stage;
	char from_image[DIGEST_BUF];
	bool from_is_image;
};

static void copy_step_free(struct copy_step *c)
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

static int copy_prepare(struct build *b, size_t idx, const struct df_insn *in, bool add, struct copy_step *c)
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
	/* expand every word; quotes of the JSON form are already gone */
	c->src = calloc(n, sizeof *c->src);
	for (size_t i = 0; c->src && i + 1 < n; i++) {
		char *x = in->is_json ? strdup(w[i]) : expand(b, st, w[i]);
		if (!x) {
			r = -errno;
			break;
		}
		c->src[c->nsrc++] = x;
	}
	char *dest = !c->src ? NULL : in->is_json ? strdup(w[n - 1]) : expand(b, st, w[n - 1]);
	df_strv_free(w, n);
	if (!c->src || !dest) {
		free(dest);
		return r ? r : -ENOMEM;
	}
	c->dest_is_dir = c->nsrc > 1 || dest[strlen(dest) - 1] == '/';
	if (dest[0] != '/') {
		const char *wd = json_string_value(json_object_get(cc_of(st->cfg), "WorkingDir"));
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
		struct store s;
		uid_t uid;
		gid_t gid;
		if ((r = store_open(&s, b->root, false)) < 0)
			return r;
		char *x = expand(b, st, v);
		r = x ? ctr_resolve_user(&s, st->cfg, x, &uid, &gid) : -errno;
		free(x);
		store_close(&s);
		if (r < 0)
			return r;
		c->o.uid = uid;
		c->o.gid = gid;
	}
	if ((v = df_flag(in, "chmod", NULL)) && (r = parse_chmod(v, &c->o.mode)) < 0)
		return r;
	if (!add && (v = df_flag(in, "from", NULL))) {
		char *x = expand(b, st, v);
		if (!x)
			return -errno;
		if (!(c->from_stage = stage_named(b, x, idx))) {
			r = resolve_image(b, x, c->from_image);
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
static int copy_run(struct build *b, struct stage *st, const struct copy_step *c, bool add,
		    const char *created_by, char diffid[DIGEST_BUF])
{
	struct store s;
	char tname[64];
	int r = store_open(&s, b->root, true);
	if (r < 0)
		return r;
	int tfd = store_mktemp(&s, tname);
	if (tfd < 0) {
		store_close(&s);
		return tfd;
	}
	struct lowerview lv = { 0 }, from_lv = { 0 };
	json_t *ids, *fcfg = NULL;
	if ((r = config_diff_ids(st->cfg, "build", &ids)) == 0)
		r = lowerview_open(&s, ids, &lv);
	if (r == 0 && (c->from_stage || c->from_is_image)) {
		json_t *src_cfg = c->from_stage ? c->from_stage->cfg : NULL;
		if (!src_cfg && (r = store_load_image(&s, c->from_image, &fcfg, &ids)) == 0)
			src_cfg = fcfg;
		if (r == 0 && (r = config_diff_ids(src_cfg, "build", &ids)) == 0)
			r = lowerview_open(&s, ids, &from_lv);
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
		r = layer_from_dir(&s, tfd, created_by, false, NULL, diffid);
		if (r == 0 && (r = store_commit_begin(&s)) == 0)
			r = store_commit_pending(&s);
	}
	close(tfd);
	lowerview_close(&lv);
	lowerview_close(&from_lv);
	json_decref(fcfg);
	store_close(&s);
	return r;
}

/* The cache key part of a COPY/ADD: what its sources hold. */
static int copy_key(struct build *b, const struct copy_step *c, XXH3_state_t *h)
{
	char ugm[64];
	snprintf(ugm, sizeof ugm, "%u:%u:%d", (unsigned)c->o.uid, (unsigned)c->o.gid, c->o.mode);
	key_add(h, ugm);
	key_add(h, c->dest);
	if (c->from_stage) {
		key_add(h, c->from_stage->key);
	} else if (c->from_is_image) {
		key_add(h, c->from_image);
	}
	for (size_t i = 0; i < c->nsrc; i++) {
		key_add(h, c->src[i]);
		if (c->from_stage || c->from_is_image)
			continue;
		char **m;
		size_t nm;
		int r = bctx_glob(&b->ctx, c->src[i], &m, &nm);
		if (r < 0)
			return r;
		for (size_t k = 0; k < nm && r == 0; k++) {
			key_add(h, m[k]);
			r = bctx_hash(&b->ctx, m[k], h);
		}
		df_strv_free(m, nm);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- metadata instructions --------------------------------------------- */

static json_t *strings_json(char **v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* CMD/ENTRYPOINT/SHELL: the exec form as given, the shell form through
 * the current SHELL. */
static json_t *command_json(struct stage *st, const struct df_insn *in)
{
	if (in->is_json)
		return strings_json(in->json, in->njson);
	json_t *sh = json_object_get(cc_of(st->cfg), "Shell");
	json_t *a = json_is_array(sh) && json_array_size(sh) ? json_deep_copy(sh) : json_pack("[s,s]", "/bin/sh", "-c");
	json_array_append_new(a, json_string(in->args));
	return a;
}

static int do_meta(struct build *b, struct stage *st, const struct df_insn *in)
{
	json_t *cc = cc_of(st->cfg);
	const char *cmd = in->cmd;
	int r = 0;

	if (!strcmp(cmd, "ENV") || !strcmp(cmd, "LABEL")) {
		char **k, **v;
		size_t n;
		struct lookup_ctx l = { json_object_get(cc, "Env"), st->args, NULL };
		if ((r = df_pairs(in->args, b->df.escape, true, var_lookup, &l, &k, &v, &n)) < 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			if (!strcmp(cmd, "ENV")) {
				env_set(cc, k[i], v[i]);
			} else {
				json_t *lab = json_object_get(cc, "Labels");
				if (!json_is_object(lab)) {
					lab = json_object();
					json_object_set_new(cc, "Labels", lab);
				}
				json_object_set_new(lab, k[i], json_string(v[i]));
			}
		}
		df_strv_free(k, n);
		df_strv_free(v, n);
	} else if (!strcmp(cmd, "ARG")) {
		char **k, **v;
		size_t n;
		struct lookup_ctx l = { json_object_get(cc, "Env"), st->args, NULL };
		if ((r = df_pairs(in->args, b->df.escape, false, var_lookup, &l, &k, &v, &n)) < 0)
			return r;
		for (size_t i = 0; i < n; i++) {
			/* --build-arg wins; then the default; then a global
			 * ARG's value when the stage re-declares it bare */
			json_t *given = json_object_get(b->build_args, k[i]);
			json_t *glob = json_object_get(b->global_args, k[i]);
			json_t *val = given ? json_incref(given)
					    : v[i] ? json_string(v[i]) : glob ? json_incref(glob) : json_null();
			json_object_set_new(st->args, k[i], val);
		}
		df_strv_free(k, n);
		df_strv_free(v, n);
	} else if (!strcmp(cmd, "CMD") || !strcmp(cmd, "ENTRYPOINT")) {
		const char *key = !strcmp(cmd, "CMD") ? "Cmd" : "Entrypoint";
		json_object_set_new(cc, key, command_json(st, in));
		/* a new ENTRYPOINT drops the base's CMD, as in docker */
		if (!strcmp(cmd, "ENTRYPOINT"))
			json_object_del(cc, "Cmd");
	} else if (!strcmp(cmd, "SHELL")) {
		if (!in->njson) {
			susage("%s:%u: SHELL needs at least the shell itself", b->file_name, in->line);
			return -EINVAL;
		}
		json_object_set_new(cc, "Shell", strings_json(in->json, in->njson));
	} else if (!strcmp(cmd, "WORKDIR")) {
		char *x = expand(b, st, in->args);
		if (!x)
			return -errno;
		const char *old = json_string_value(json_object_get(cc, "WorkingDir"));
		char *abs = NULL;
		if (x[0] == '/')
			abs = strdup(x);
		else if (asprintf(&abs, "%s/%s", old && *old ? old : "", x) < 0)
			abs = NULL;
		free(x);
		if (!abs)
			return -ENOMEM;
		json_object_set_new(cc, "WorkingDir", json_string(abs));
		free(abs);
	} else if (!strcmp(cmd, "USER") || !strcmp(cmd, "STOPSIGNAL")) {
		char *x = expand(b, st, in->args);
		if (!x)
			return -errno;
		if (!strcmp(cmd, "STOPSIGNAL") && signal_parse(x) < 0) {
			susage("%s:%u: STOPSIGNAL %s: no such signal", b->file_name, in->line, x);
			free(x);
			return -EINVAL;
		}
		json_object_set_new(cc, !strcmp(cmd, "USER") ? "User" : "StopSignal", json_string(x));
		free(x);
	} else if (!strcmp(cmd, "EXPOSE") || !strcmp(cmd, "VOLUME")) {
		bool expose = !strcmp(cmd, "EXPOSE");
		const char *key = expose ? "ExposedPorts" : "Volumes";
		json_t *set = json_object_get(cc, key);
		if (!json_is_object(set)) {
			set = json_object();
			json_object_set_new(cc, key, set);
		}
		char **w = NULL;
		size_t n = 0;
		if (in->is_json) {
			w = calloc(in->njson + 1, sizeof *w);
			for (size_t i = 0; w && i < in->njson; i++)
				w[n++] = strdup(in->json[i]);
		} else if ((r = df_words(in->args, b->df.escape, &w, &n)) < 0) {
			return r;
		}
		for (size_t i = 0; i < n && r == 0; i++) {
			char *x = in->is_json ? strdup(w[i]) : expand(b, st, w[i]);
			if (!x) {
				r = -errno;
				break;
			}
			char *port = NULL;
			if (expose) {
				char *end;
				unsigned long p = strtoul(x, &end, 10);
				if (!p || p > 65535 || (*end && strcmp(end, "/tcp") && strcmp(end, "/udp"))) {
					susage("%s:%u: EXPOSE %s: give PORT[/tcp|/udp]", b->file_name, in->line, x);
					r = -EINVAL;
				} else if (asprintf(&port, "%lu%s", p, *end ? end : "/tcp") < 0) {
					r = -ENOMEM;
				}
			}
			if (r == 0)
				json_object_set_new(set, expose ? port : x, json_object());
			free(port);
			free(x);
		}
		df_strv_free(w, n);
	} else if (!strcmp(cmd, "MAINTAINER")) {
		json_object_set_new(st->cfg, "author", json_string(in->args));
	} else if (!strcmp(cmd, "ONBUILD")) {
		json_t *ob = json_object_get(cc, "OnBuild");
		if (!json_is_array(ob)) {
			ob = json_array();
			json_object_set_new(cc, "OnBuild", ob);
		}
		json_array_append_new(ob, json_string(in->args));
	} else if (!strcmp(cmd, "HEALTHCHECK")) {
		json_t *hc = json_object();
		if (!strcasecmp(in->args, "NONE")) {
			json_object_set_new(hc, "Test", json_pack("[s]", "NONE"));
		} else {
			struct df_insn inner = *in;
			if (strncasecmp(in->args, "CMD", 3) || (in->args[3] && !isspace((unsigned char)in->args[3]))) {
				json_decref(hc);
				susage("%s:%u: HEALTHCHECK [OPTIONS] CMD command, or HEALTHCHECK NONE", b->file_name, in->line);
				return -EINVAL;
			}
			const char *rest = in->args + 3;
			while (isspace((unsigned char)*rest))
				rest++;
			json_t *test;
			json_error_t e;
			json_t *j = rest[0] == '[' ? json_loads(rest, 0, &e) : NULL;
			if (json_is_array(j)) {
				test = json_pack("[s]", "CMD");
				size_t i;
				json_t *v;
				json_array_foreach(j, i, v)
					json_array_append(test, v);
			} else {
				test = json_pack("[s,s]", "CMD-SHELL", rest);
			}
			json_decref(j);
			(void)inner;
			json_object_set_new(hc, "Test", test);
			static const char *const durs[][2] = {
				{ "interval", "Interval" }, { "timeout", "Timeout" },
				{ "start-period", "StartPeriod" }, { "start-interval", "StartInterval" },
			};
			for (size_t i = 0; i < 4; i++) {
				const char *v = df_flag(in, durs[i][0], NULL);
				if (!v)
					continue;
				char *end;
				double x = strtod(v, &end);
				double mul = !strcmp(end, "s") ? 1e9 : !strcmp(end, "ms") ? 1e6 : !strcmp(end, "m") ? 60e9
					   : !strcmp(end, "h") ? 3600e9 : -1;
				if (mul < 0 || x < 0) {
					json_decref(hc);
					susage("%s:%u: --%s=%s: give a duration such as 30s", b->file_name, in->line,
					       durs[i][0], v);
					return -EINVAL;
				}
				json_object_set_new(hc, durs[i][1], json_integer((json_int_t)(x * mul)));
			}
			const char *retries = df_flag(in, "retries", NULL);
			if (retries)
				json_object_set_new(hc, "Retries", json_integer(atoi(retries)));
		}
		json_object_set_new(cc, "Healthcheck", hc);
	}
	return r;
}

/* WORKDIR creates its directory when the image lacks it: a small layer
 * of its own, as docker's builder makes. */
static int workdir_layer(struct build *b, struct stage *st, const char *by, bool *made, char diffid[DIGEST_BUF])
{
	const char *wd = json_string_value(json_object_get(cc_of(st->cfg), "WorkingDir"));
	struct store s;
	json_t *ids;
	struct lowerview lv = { 0 };
	char tname[64];
	*made = false;
	if (!wd || !*(wd + strspn(wd, "/")))
		return 0;
	int r = store_open(&s, b->root, true);
	if (r < 0)
		return r;
	if ((r = config_diff_ids(st->cfg, "build", &ids)) == 0 && (r = lowerview_open(&s, ids, &lv)) == 0 &&
	    lower_is_dir(&lv, wd + strspn(wd, "/")) != 1) {
		int tfd = store_mktemp(&s, tname);
		if (tfd < 0) {
			r = tfd;
		} else {
			struct copy_opts o = { .mode = -1, .rootless = b->rootless };
			int dfd = stage_mkdirs(tfd, wd, &lv, &o);
			if (dfd < 0)
				r = dfd;
			else
				close(dfd);
			if (r == 0 && (r = layer_from_dir(&s, tfd, by, false, NULL, diffid)) == 0 &&
			    (r = store_commit_begin(&s)) == 0 && (r = store_commit_pending(&s)) == 0)
				*made = true;
			close(tfd);
		}
	}
	lowerview_close(&lv);
	store_close(&s);
	return r;
}

/* ---- the stage loop ---------------------------------------------------- */

static bool fs_changing(const char *cmd)
{
	return !strcmp(cmd, "RUN") || !strcmp(cmd, "COPY") || !strcmp(cmd, "ADD");
}

/* What history shows for a step: the instruction with its variables
 * resolved where docker resolves them. */
static char *created_by_of(struct build *b, struct stage *st, const struct df_insn *in)
{
	char *s = NULL;
	if (!strcmp(in->cmd, "RUN")) {
		if (asprintf(&s, "RUN %s", in->args) < 0)
			return NULL;
		return s;
	}
	bool expands = strcmp(in->cmd, "CMD") && strcmp(in->cmd, "ENTRYPOINT") && strcmp(in->cmd, "SHELL") &&
		       strcmp(in->cmd, "HEALTHCHECK") && strcmp(in->cmd, "ONBUILD") && !in->is_json;
	char *args = expands ? expand(b, st, in->args) : strdup(in->args);
	if (!args)
		return NULL;
	char flags[512] = "";
	for (size_t i = 0; i < in->nflags; i++) {
		size_t l = strlen(flags);
		snprintf(flags + l, sizeof flags - l, "--%s%s%s ", in->flags[i].name, in->flags[i].value ? "=" : "",
			 in->flags[i].value ? in->flags[i].value : "");
	}
	if (asprintf(&s, "%s %s%s", in->cmd, flags, args) < 0)
		s = NULL;
	free(args);
	return s;
}

static int do_step(struct build *b, size_t idx, const struct df_insn *in)
{
	struct stage *st = &b->st[idx];
	_cleanup_free_ char *by = created_by_of(b, st, in);
	if (!by)
		return -ENOMEM;
	fprintf(stderr, "STEP %u/%u: %s\n", ++b->step, b->nsteps, by);

	XXH3_state_t *h = key_begin(st->key);
	if (!h)
		return -ENOMEM;
	key_add(h, by);
	struct copy_step cs = { 0 };
	bool is_copy = !strcmp(in->cmd, "COPY") || !strcmp(in->cmd, "ADD");
	int r = 0;
	if (!strcmp(in->cmd, "RUN")) {
		/* the build arguments a RUN can see are part of its input */
		const char *k;
		json_t *v;
		json_object_foreach(st->args, k, v) {
			key_add(h, k);
			key_add(h, json_string_value(v));
		}
		key_add(h, b->network);
	} else if (is_copy) {
		if ((r = copy_prepare(b, idx, in, !strcmp(in->cmd, "ADD"), &cs)) == 0)
			r = copy_key(b, &cs, h);
	}
	char key[33];
	key_hex(h, key);
	XXH3_freeState(h);
	sdebug("build: %s: cache key %s (after %s)", by, key, st->key);
	if (r < 0) {
		copy_step_free(&cs);
		return r;
	}
	/* an ARG changes the build's variables, which no image records: it
	 * applies whether or not the step comes from the cache */
	bool is_arg = !strcmp(in->cmd, "ARG");
	if (is_arg && (r = do_meta(b, st, in)) < 0) {
		copy_step_free(&cs);
		return r;
	}
	if (step_cached(b, st, key) == 1) {
		fprintf(stderr, "--> using cache %.12s\n", st->digest + 7);
		copy_step_free(&cs);
		return 0;
	}
	if (!fs_changing(in->cmd)) {
		bool made = false;
		char wdiff[DIGEST_BUF];
		if (!is_arg)
			r = do_meta(b, st, in);
		if (r == 0 && !strcmp(in->cmd, "WORKDIR"))
			r = workdir_layer(b, st, by, &made, wdiff);
		if (r == 0) {
			if (made)
				config_add_layer(st->cfg, wdiff, by, NULL);
			else
				history_add(st->cfg, by, true);
			r = step_done(b, st, key);
		}
		copy_step_free(&cs);
		return r;
	}
	char diffid[DIGEST_BUF];
	bool empty = false;
	if (is_copy) {
		r = copy_run(b, st, &cs, !strcmp(in->cmd, "ADD"), by, diffid);
	} else {
#ifdef STRATA_HAVE_RUNTIME
		r = run_step(b, st, in, by, &empty, diffid);
#else
		susage("RUN needs the launcher library, which this strata was built without");
		r = -ENOSYS;
#endif
	}
	copy_step_free(&cs);
	if (r != 0)
		return r;
	if (empty)
		history_add(st->cfg, by, true);
	else
		config_add_layer(st->cfg, diffid, by, NULL);
	return step_done(b, st, key);
}

/* The stages to build: up to --target, or every one. */
static int stage_count(struct build *b, size_t *nstages)
{
	size_t n = 0, last = 0;
	for (size_t i = 0; i < b->df.n; i++)
		if (!strcmp(b->df.insn[i].cmd, "FROM"))
			n++;
	if (!b->target) {
		*nstages = n;
		return 0;
	}
	size_t k = 0;
	for (size_t i = 0; i < b->df.n; i++) {
		if (strcmp(b->df.insn[i].cmd, "FROM"))
			continue;
		char **w;
		size_t nw;
		if (df_words(b->df.insn[i].args, b->df.escape, &w, &nw) < 0)
			return -ENOMEM;
		bool hit = nw == 3 && !strcasecmp(w[2], b->target);
		df_strv_free(w, nw);
		k++;
		if (hit) {
			last = k;
			break;
		}
	}
	if (!last) {
		susage("--target %s: no stage of that name (FROM IMAGE AS %s)", b->target, b->target);
		return -EINVAL;
	}
	*nstages = last;
	return 0;
}

static int run_build(struct build *b, char digest[DIGEST_BUF])
{
	size_t nst;
	int r = stage_count(b, &nst);
	if (r < 0)
		return r;
	b->st = calloc(nst, sizeof *b->st);
	if (!b->st)
		return -ENOMEM;
	b->global_args = json_object();
	size_t i = 0, cur = (size_t)-1;
	/* ARGs before the first FROM: visible to FROM lines */
	for (; i < b->df.n && strcmp(b->df.insn[i].cmd, "FROM"); i++) {
		char **k, **v;
		size_t n;
		if (strcmp(b->df.insn[i].cmd, "ARG")) {
			susage("%s:%u: only ARG may come before the first FROM", b->file_name, b->df.insn[i].line);
			return -EINVAL;
		}
		if ((r = df_pairs(b->df.insn[i].args, b->df.escape, false, NULL, NULL, &k, &v, &n)) < 0)
			return r;
		for (size_t j = 0; j < n; j++) {
			json_t *given = json_object_get(b->build_args, k[j]);
			json_object_set_new(b->global_args, k[j],
					    given ? json_incref(given) : v[j] ? json_string(v[j]) : json_null());
		}
		df_strv_free(k, n);
		df_strv_free(v, n);
	}
	b->nsteps = 0;
	for (size_t j = i; j < b->df.n; j++)
		b->nsteps++;
	for (; i < b->df.n && r == 0; i++) {
		const struct df_insn *in = &b->df.insn[i];
		if (!strcmp(in->cmd, "FROM")) {
			if (cur + 1 == nst)
				break;  /* past --target */
			cur++;
			b->nst = cur + 1;
			r = do_from(b, cur, in);
			continue;
		}
		r = do_step(b, cur, in);
	}
	if (r != 0)
		return r;
	struct stage *fin = &b->st[b->nst - 1];
	if (!fin->have_image) {
		struct store s;
		if ((r = store_open(&s, b->root, true)) < 0)
			return r;
		r = stage_store(fin, &s);
		store_close(&s);
		if (r < 0)
			return r;
	}
	memcpy(digest, fin->digest, DIGEST_BUF);
	return 0;
}

static void build_free(struct build *b)
{
	for (size_t i = 0; i < b->nst; i++) {
		free(b->st[i].name);
		json_decref(b->st[i].cfg);
		json_decref(b->st[i].args);
	}
	free(b->st);
	df_free(&b->df);
	bctx_close(&b->ctx);
	json_decref(b->build_args);
	json_decref(b->global_args);
}

/* The Containerfile: -f FILE, else CONTEXT/Containerfile, else
 * CONTEXT/Dockerfile; a regular file only (a FIFO would hang us). */
static int read_containerfile(struct build *b, const char *file, const char *context, char **text, size_t *len)
{
	static const char *const names[] = { "Containerfile", "Dockerfile" };
	struct stat st;
	int fd = -ENOENT;
	if (file) {
		fd = open_regular(AT_FDCWD, file, true, false, &st);
		b->file_name = file;
	} else {
		for (size_t i = 0; i < 2 && fd == -ENOENT; i++) {
			fd = open_regular(b->ctx.fd, names[i], false, true, &st);
			b->file_name = names[i];
		}
	}
	if (fd < 0) {
		if (fd == -ENOENT && !file)
			serr(fd, "build: find", context, "no Containerfile or Dockerfile in the context; give one with -f FILE");
		else
			serr(fd, "build: read", file ? file : b->file_name,
			     fd == -EINVAL ? "it must be a regular file" : "give the Containerfile with -f FILE");
		return fd;
	}
	int r = read_fd(fd, 4 << 20, text, len);
	close(fd);
	if (r < 0)
		serr(r, "build: read", b->file_name, "a Containerfile is at most 4 MiB of text");
	return r;
}

int cmd_build(const char *root, int argc, char **argv)
{
	struct build b = { .root = root, .ctx = { .fd = -1 } };
	const char *tags[64], *file = NULL, *context = NULL;
	size_t ntags = 0;
	int r;

	b.build_args = json_object();
	b.rootless = geteuid() != 0;
	/* RUN steps get their own network namespace with outbound traffic
	 * through pasta, as podman's builds do */
	b.network = "private";
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		const char *eq = strchr(a, '=');
		char opt[64];
		snprintf(opt, sizeof opt, "%.*s", eq && a[0] == '-' ? (int)(eq - a) : 63, a);
		if (eq && a[0] == '-' && a[1] == '-')
			v = eq + 1;
		bool inline_v = eq && a[0] == '-' && a[1] == '-';
		if (!strcmp(opt, "--no-cache")) {
			b.no_cache = true;
			continue;
		}
		if (!strcmp(opt, "--layers") || !strcmp(opt, "-q") || !strcmp(opt, "--quiet"))
			continue;  /* one layer per step is what strata does anyway */
		if (a[0] != '-' || !strcmp(a, "-")) {
			if (context) {
				susage("build: one context only (%s and %s); see strata build --help", context, a);
				json_decref(b.build_args);
				return 125;
			}
			context = a;
			continue;
		}
		if (!v) {
			susage("build: %s needs a value", opt);
			json_decref(b.build_args);
			return 125;
		}
		if (!inline_v)
			i++;
		if (!strcmp(opt, "-t") || !strcmp(opt, "--tag")) {
			if (ntags < 64)
				tags[ntags++] = v;
		} else if (!strcmp(opt, "-f") || !strcmp(opt, "--file")) {
			file = v;
		} else if (!strcmp(opt, "--build-arg")) {
			const char *e = strchr(v, '=');
			char k[256];
			snprintf(k, sizeof k, "%.*s", e ? (int)(e - v) : 255, v);
			const char *val = e ? e + 1 : getenv(k);
			if (val)
				json_object_set_new(b.build_args, k, json_string(val));
		} else if (!strcmp(opt, "--tls-verify")) {
			if (strcmp(v, "true") && strcmp(v, "false")) {
				susage("build: --tls-verify=%s: true or false", v);
				json_decref(b.build_args);
				return 125;
			}
			b.tls_verify = v;
		} else if (!strcmp(opt, "--target")) {
			b.target = v;
		} else if (!strcmp(opt, "--network") || !strcmp(opt, "--net")) {
			if (strcmp(v, "host") && strcmp(v, "none") && strcmp(v, "private")) {
				susage("build: --network %s: use host, none or private", v);
				json_decref(b.build_args);
				return 125;
			}
			b.network = v;
		} else {
			susage("build: unknown option %s (see strata build --help)", opt);
			json_decref(b.build_args);
			return 125;
		}
	}
	if (!context) {
		susage("build: no context given (strata build [OPTIONS] CONTEXT); see strata build --help");
		json_decref(b.build_args);
		return 125;
	}
	char *text = NULL;
	size_t len = 0;
	if ((r = bctx_open(context, &b.ctx)) < 0 || (r = read_containerfile(&b, file, context, &text, &len)) < 0 ||
	    (r = df_parse(text, len, b.file_name, &b.df)) < 0) {
		free(text);
		build_free(&b);
		return 125;
	}
	free(text);
	for (size_t i = 0; i < ntags; i++) {
		if (!*tags[i] || strchr(tags[i], ' ')) {
			susage("build: -t '%s' is not a NAME[:TAG]", tags[i]);
			build_free(&b);
			return 125;
		}
	}
	char digest[DIGEST_BUF];
	r = run_build(&b, digest);
	if (r == 0) {
		struct store s;
		if ((r = store_open(&s, root, true)) == 0) {
			for (size_t i = 0; i < ntags && r == 0; i++)
				r = store_set_tag(&s, tags[i], digest);
			store_close(&s);
		}
	}
	build_free(&b);
	if (r != 0) {
		fprintf(stderr, "strata: build failed\n");
		return r > 0 ? r : 125;
	}
	fprintf(stderr, "COMMIT %s\n", ntags ? tags[0] : "");
	printf("%s\n", digest);
	return 0;
}
