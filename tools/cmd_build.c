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
 * A fully cached rebuild must cost little more than a stat of each
 * context file: one store handle serves the whole build (one open, one
 * clean, the lock shared to read and exclusive only to write); a hit
 * reads its cache entry and the image config and checks only the layers
 * the state before it did not have; the context files' hashes come from
 * a memo while their stat stamps are unchanged (buildctx.c); and a
 * rebuild whose tags already name the image writes nothing, so it syncs
 * nothing.
 *
 * Nothing half-done stays: a failing step's container and staging tree go
 * with it (they live in the store's tmp/), and only images the cache or a
 * tag refers to survive the next garbage collection.
 */
#include "cli.h"

#include "build.h"
#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "store.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- FROM ------------------------------------------------------------- */

struct stage *build_stage_named(struct build *b, const char *name, size_t before)
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
int build_resolve_image(struct build *b, const char *ref, char digest[DIGEST_BUF])
{
	int r = build_lock(b, LOCK_SH);
	if (r < 0 || (r = store_resolve(&b->s, ref, digest)) == 0)
		return r;
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
	/* the pull takes the store's lock through a handle of its own */
	if ((r = build_lock(b, 0)) < 0)
		return r;
	if (cmd_pull(b->s.root, argc, argv) != 0) {
		susage("build: FROM %s: not in the store and the pull failed (import it, or check the name)", ref);
		return -ENOENT;
	}
	if ((r = build_lock(b, LOCK_SH)) < 0)
		return r;
	return store_resolve(&b->s, ref, digest);
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
	char *image = build_expand(b, NULL, w[0]);
	if (n == 3) {
		st->name = strdup(w[2]);
		for (char *c = st->name; c && *c; c++)
			*c = (char)tolower((unsigned char)*c);
	}
	df_strv_free(w, n);
	if (!image)
		return -errno;
	st->args = json_object();
	XXH3_state_t *h = bkey_begin("FROM");
	struct stage *prev = build_stage_named(b, image, idx);
	if (prev) {
		st->cfg = json_deep_copy(prev->cfg);
		st->verified = prev->verified;
		bkey_add(h, prev->key);
	} else if (!strcmp(image, "scratch")) {
		st->cfg = config_new();
		json_object_del(build_cc(st->cfg), "Cmd");
		bkey_add(h, "scratch");
	} else {
		char digest[DIGEST_BUF];
		if ((r = build_resolve_image(b, image, digest)) < 0) {
			if (r == -ENOENT)
				susage("%s:%u: FROM %s: no such image or stage", b->file_name, in->line, image);
			free(image);
			XXH3_freeState(h);
			return r;
		}
		json_t *ids;
		r = store_load_image(&b->s, digest, &st->cfg, &ids);
		bkey_add(h, digest);
	}
	if (r == 0 && !st->cfg)
		r = -ENOMEM;
	if (r == 0) {
		/* the base's ONBUILD triggers are not run (docker's legacy
		 * builder would); they stay recorded for images built on ours */
		json_object_del(build_cc(st->cfg), "OnBuild");
		bkey_hex(h, st->key);
		fprintf(stderr, "STEP %u/%u: FROM %s%s%s\n", ++b->step, b->nsteps, image,
			st->name ? " AS " : "", st->name ? st->name : "");
	}
	XXH3_freeState(h);
	free(image);
	return r;
}

/* ---- the stage loop ---------------------------------------------------- */

static bool fs_changing(const char *cmd)
{
	return !strcmp(cmd, "RUN") || !strcmp(cmd, "COPY") || !strcmp(cmd, "ADD");
}

static int do_step(struct build *b, size_t idx, const struct df_insn *in)
{
	struct stage *st = &b->st[idx];
	_cleanup_free_ char *by = build_created_by(b, st, in);
	if (!by)
		return -ENOMEM;
	fprintf(stderr, "STEP %u/%u: %s\n", ++b->step, b->nsteps, by);

	XXH3_state_t *h = bkey_begin(st->key);
	if (!h)
		return -ENOMEM;
	bkey_add(h, by);
	struct copy_step cs = { 0 };
	bool is_copy = !strcmp(in->cmd, "COPY") || !strcmp(in->cmd, "ADD");
	int r = 0;
	if (!strcmp(in->cmd, "RUN")) {
		/* the build arguments a RUN can see are part of its input */
		const char *k;
		json_t *v;
		json_object_foreach(st->args, k, v) {
			bkey_add(h, k);
			bkey_add(h, json_string_value(v));
		}
		bkey_add(h, b->network);
	} else if (is_copy) {
		/* hashing the sources reads only the context: writers of
		 * the store need not wait for it */
		if ((r = build_copy_prepare(b, idx, in, !strcmp(in->cmd, "ADD"), &cs)) == 0 &&
		    (r = build_lock(b, 0)) == 0)
			r = build_copy_key(b, &cs, h);
	}
	char key[33];
	bkey_hex(h, key);
	XXH3_freeState(h);
	sdebug("build: %s: cache key %s (after %s)", by, key, st->key);
	if (r < 0) {
		build_copy_free(&cs);
		return r;
	}
	/* an ARG changes the build's variables, which no image records: it
	 * applies whether or not the step comes from the cache */
	bool is_arg = !strcmp(in->cmd, "ARG");
	if (is_arg && (r = build_meta(b, st, in)) < 0) {
		build_copy_free(&cs);
		return r;
	}
	if (build_step_cached(b, st, key) == 1) {
		fprintf(stderr, "--> using cache %.12s\n", st->digest + 7);
		build_copy_free(&cs);
		return 0;
	}
	if (!fs_changing(in->cmd)) {
		bool made = false;
		char wdiff[DIGEST_BUF];
		if (!is_arg)
			r = build_meta(b, st, in);
		if (r == 0 && !strcmp(in->cmd, "WORKDIR"))
			r = build_workdir_layer(b, st, by, &made, wdiff);
		if (r == 0) {
			if (made)
				config_add_layer(st->cfg, wdiff, by, NULL);
			else
				build_history_add(st->cfg, by, true);
			r = build_step_done(b, st, key);
		}
		build_copy_free(&cs);
		return r;
	}
	char diffid[DIGEST_BUF];
	bool empty = false;
	if (is_copy) {
		r = build_copy(b, st, &cs, !strcmp(in->cmd, "ADD"), by, diffid);
	} else {
#ifdef STRATA_HAVE_RUNTIME
		r = build_run(b, st, in, by, &empty, diffid);
#else
		susage("RUN needs the launcher library, which this strata was built without");
		r = -ENOSYS;
#endif
	}
	build_copy_free(&cs);
	if (r != 0)
		return r;
	if (empty)
		build_history_add(st->cfg, by, true);
	else
		config_add_layer(st->cfg, diffid, by, NULL);
	return build_step_done(b, st, key);
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
		build_tmp_clear(b);
	}
	if (r != 0)
		return r;
	struct stage *fin = &b->st[b->nst - 1];
	if (!fin->have_image && (r = build_stage_store(b, fin)) < 0)
		return r;
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
	if (b->s.root)
		store_close(&b->s);
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

/* Name the image; a rebuild whose names all say so already writes nothing. */
static int set_tags(struct build *b, const char *const *tags, size_t ntags, const char *digest)
{
	json_t *have;
	int r = build_lock(b, LOCK_SH);
	if (r < 0 || (r = store_tags(&b->s, &have)) < 0)
		return r;
	size_t same = 0;
	for (size_t i = 0; i < ntags; i++) {
		_cleanup_free_ char *name = ref_normalize(tags[i]);
		if (name && !strcmp(json_string_value(json_object_get(have, name)) ?: "", digest))
			same++;
	}
	json_decref(have);
	if (same == ntags)
		return 0;
	if ((r = build_lock(b, LOCK_EX)) < 0)
		return r;
	for (size_t i = 0; i < ntags && r == 0; i++)
		r = store_set_tag(&b->s, tags[i], digest);
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
	/* one store handle for the whole build: opened (and cleaned) once,
	 * its lock shared to read, exclusive only to write */
	if ((r = store_open(&b.s, root, false)) < 0) {
		build_free(&b);
		return 125;
	}
	b.lock = LOCK_SH;
	char digest[DIGEST_BUF];
	if ((r = build_memo_load(&b)) == 0)
		r = run_build(&b, digest);
	if (r == 0)
		r = set_tags(&b, tags, ntags, digest);
	/* what the context hashing learnt is right whether or not the build
	 * went through */
	build_memo_save(&b);
	build_free(&b);
	if (r != 0) {
		fprintf(stderr, "strata: build failed\n");
		return r > 0 ? r : 125;
	}
	fprintf(stderr, "COMMIT %s\n", ntags ? tags[0] : "");
	printf("%s\n", digest);
	return 0;
}
