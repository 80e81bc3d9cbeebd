/* build_cache: the keys of build steps and the step cache (see build.h,
 * and cmd_build.c for what a key covers). */
#include "build.h"

#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

void bkey_hex(XXH3_state_t *h, char out[33])
{
	XXH128_hash_t k = XXH3_128bits_digest(h);
	snprintf(out, 33, "%016llx%016llx", (unsigned long long)k.high64, (unsigned long long)k.low64);
}

XXH3_state_t *bkey_begin(const char *prev)
{
	XXH3_state_t *h = XXH3_createState();
	if (h) {
		XXH3_128bits_reset(h);
		XXH3_128bits_update(h, prev, strlen(prev) + 1);
	}
	return h;
}

void bkey_add(XXH3_state_t *h, const char *s)
{
	XXH3_128bits_update(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

/* ---- the cache -------------------------------------------------------- */

/* How many leading layers of ids the stage already knows are in the store. */
static size_t known_layers(struct stage *st, json_t *ids)
{
	json_t *have;
	if (config_diff_ids(st->cfg, "build", &have) < 0)
		return 0;
	size_t n = 0, max = st->verified < json_array_size(have) ? st->verified : json_array_size(have);
	while (n < max && n < json_array_size(ids) &&
	       json_equal(json_array_get(have, n), json_array_get(ids, n)))
		n++;
	return n;
}

static int cache_get(struct build *b, struct stage *st, const char *key, json_t **cfg, size_t *nlayers,
		     char digest[DIGEST_BUF])
{
	char p[128], *txt = NULL;
	snprintf(p, sizeof p, "build-cache/%s", key);
	if (read_file_at(b->s.fd, p, 256, &txt, NULL) < 0)
		return -ENOENT;
	size_t n = strcspn(txt, "\n");
	txt[n] = '\0';
	json_t *ids;
	int r = digest_valid(txt) ? store_load_image(&b->s, txt, cfg, &ids) : -EINVAL;
	if (r == 0) {
		/* every layer must still be there; those of the state the
		 * step starts from were seen already */
		for (size_t i = known_layers(st, ids); r == 0 && i < json_array_size(ids); i++)
			if (!store_has_layer(&b->s, json_string_value(json_array_get(ids, i))))
				r = -ENOENT;
		if (r == 0) {
			snprintf(digest, DIGEST_BUF, "%s", txt);
			*nlayers = json_array_size(ids);
		} else {
			json_decref(*cfg);
		}
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

int build_lock(struct build *b, int how)
{
	if (b->lock == how)
		return 0;
	int r = how ? store_relock(&b->s, how == LOCK_EX) : store_unlock(&b->s);
	if (r == 0)
		b->lock = how;
	return r;
}

int build_stage_store(struct build *b, struct stage *st)
{
	char *txt = json_dumps(st->cfg, JSON_COMPACT);
	if (!txt)
		return -ENOMEM;
	int r = build_lock(b, LOCK_EX);
	if (r == 0)
		r = store_put_image(&b->s, txt, strlen(txt), st->digest);
	free(txt);
	if (r < 0)
		serr(r, "build: store image config in", b->s.root, "check free space of the store");
	else
		st->have_image = true;
	return r;
}

int build_step_done(struct build *b, struct stage *st, const char *key)
{
	/* a step's layer (committed by the step) is unreferenced until its
	 * image and cache entry are written: the commit marker the step set
	 * has the next command collect it should we die before */
	int r = build_stage_store(b, st);
	if (r == 0)
		r = cache_put(&b->s, key, st->digest);
	if (r == 0)
		store_commit_end(&b->s);
	if (r == 0) {
		memcpy(st->key, key, 33);
		/* the layers under the new state are all there: the step's
		 * own was just made, the rest were there before it */
		json_t *ids;
		if (config_diff_ids(st->cfg, "build", &ids) == 0 && st->verified + 1 >= json_array_size(ids))
			st->verified = json_array_size(ids);
	}
	int q = build_lock(b, LOCK_SH);
	return r ? r : q;
}

int build_step_cached(struct build *b, struct stage *st, const char *key)
{
	json_t *cfg;
	char digest[DIGEST_BUF];
	size_t nlayers = 0;
	if (build_lock(b, LOCK_SH) < 0 || b->no_cache || cache_get(b, st, key, &cfg, &nlayers, digest) < 0)
		return 0;
	json_decref(st->cfg);
	st->cfg = cfg;
	st->verified = nlayers;
	memcpy(st->digest, digest, DIGEST_BUF);
	st->have_image = true;
	memcpy(st->key, key, 33);
	return 1;
}

void build_tmp_clear(struct build *b)
{
	char **names;
	size_t n;
	if (b->s.ownfd < 0 || list_sorted(b->s.ownfd, &names, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		rm_rf_at(b->s.ownfd, names[i]);
	free_names(names, n);
}

/* ---- the context's file hashes ----------------------------------------- */

/* STORE/build-cache/contexts/<XXH3-64 of the context's real path>: the
 * memo of its files' hashes (buildctx.c says why it can be trusted). */
static int memo_name(struct build *b, char *out, size_t len)
{
	_cleanup_free_ char *real = realpath(b->ctx.path, NULL);
	if (!real)
		return -errno;
	snprintf(out, len, "build-cache/contexts/%016llx", (unsigned long long)XXH3_64bits(real, strlen(real)));
	return 0;
}

int build_memo_load(struct build *b)
{
	char name[128];
	char *data = NULL;
	size_t len = 0;
	if (memo_name(b, name, sizeof name) == 0)
		read_file_at(b->s.fd, name, 256u << 20, &data, &len);
	int r = bctx_memo_load(&b->ctx, data, len);
	free(data);
	return r;
}

void build_memo_save(struct build *b)
{
	void *data;
	size_t len;
	char name[128], tname[64];
	if (!b->ctx.memo || bctx_memo_dump(&b->ctx, &data, &len) <= 0 || memo_name(b, name, sizeof name) < 0)
		return;
	/* written in our tmp/ and renamed into place, without fsync: a memo
	 * torn by a crash fails its checksum and is no memo, which costs one
	 * full read of the context, nothing else */
	int tfd = store_mktemp(&b->s, tname);
	if (tfd >= 0) {
		int fd = openat(tfd, "memo", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		bool ok = fd >= 0 && io_write_full(fd, data, len, -1) == 0;
		if (fd >= 0)
			close(fd);
		char from[128];
		snprintf(from, sizeof from, "%s/memo", tname);
		if (ok && (mkdirat(b->s.fd, "build-cache", 0700) == 0 || errno == EEXIST) &&
		    (mkdirat(b->s.fd, "build-cache/contexts", 0700) == 0 || errno == EEXIST))
			renameat(b->s.fd, from, b->s.fd, name);
		close(tfd);
		rm_rf_at(b->s.fd, tname);
	}
	free(data);
}

/* ---- keys of COPY and ADD ---------------------------------------------- */

int build_copy_key(struct build *b, const struct copy_step *c, XXH3_state_t *h)
{
	char ugm[64];
	snprintf(ugm, sizeof ugm, "%u:%u:%d", (unsigned)c->o.uid, (unsigned)c->o.gid, c->o.mode);
	bkey_add(h, ugm);
	bkey_add(h, c->dest);
	if (c->from_stage) {
		bkey_add(h, c->from_stage->key);
	} else if (c->from_is_image) {
		bkey_add(h, c->from_image);
	}
	for (size_t i = 0; i < c->nsrc; i++) {
		bkey_add(h, c->src[i]);
		if (c->from_stage || c->from_is_image)
			continue;
		char **m;
		size_t nm;
		int r = bctx_glob(&b->ctx, c->src[i], &m, &nm);
		if (r < 0)
			return r;
		for (size_t k = 0; k < nm && r == 0; k++) {
			bkey_add(h, m[k]);
			r = bctx_hash(&b->ctx, m[k], h);
		}
		df_strv_free(m, nm);
		if (r < 0)
			return r;
	}
	return 0;
}

