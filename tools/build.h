/* build: the parts of `strata build` (cmd_build.c: the verb, FROM and the
 * stage loop; build_cache.c: step keys and the step cache; build_steps.c:
 * RUN, COPY/ADD and WORKDIR's layer; build_meta.c: the instructions that
 * change only the image config, and the history). Internal to them. */
#ifndef STRATA_BUILD_H
#define STRATA_BUILD_H

#include "buildctx.h"
#include "digest.h"
#include "dockerfile.h"
#include "store.h"

#include <jansson.h>
#include <stdbool.h>
#include <xxhash.h>

struct stage {
	char *name;              /* AS name, lower-case, or NULL */
	json_t *cfg;             /* the image config as built so far */
	json_t *args;            /* ARGs declared in this stage: name -> value|null */
	char key[33];            /* cache key of the state so far */
	char digest[DIGEST_BUF]; /* the stage's image, once stored */
	bool have_image;
	size_t verified;         /* leading layers of cfg seen in the store */
};

struct build {
	const char *root;        /* the store's path as given (NULL: default) */
	struct store s;          /* open for the whole build */
	int lock;                /* what s holds: 0, LOCK_SH or LOCK_EX */
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

struct lookup_ctx {
	json_t *env;    /* may be NULL */
	json_t *args;   /* may be NULL */
	json_t *more;   /* global ARGs, for FROM */
};

/* ---- keys and the step cache (build_cache.c) ---------------------------- */

/* A step's key: XXH3-128 over the previous key and what the step adds. */
XXH3_state_t *bkey_begin(const char *prev);
void bkey_add(XXH3_state_t *h, const char *s);
void bkey_hex(XXH3_state_t *h, char out[33]);
/* The key part of a COPY/ADD: what its sources hold. */
int build_copy_key(struct build *b, const struct copy_step *c, XXH3_state_t *h);
/* The build's store handle locked as the next thing needs: LOCK_SH to
 * read, LOCK_EX to write, 0 while a RUN or a pull runs (they take the
 * lock themselves, or must not keep others out for long). */
int build_lock(struct build *b, int how);
/* Empty the store handle's tmp/ after a step: the handle lives for the
 * whole build, and what a step leaves there (its staging tree, the trees
 * of packed layers a lowerview unpacked) would otherwise pile up until
 * the end. */
void build_tmp_clear(struct build *b);
/* Store the stage's config as an image (untagged until the end). */
int build_stage_store(struct build *b, struct stage *st);
/* After a step: record the new state under its key. */
int build_step_done(struct build *b, struct stage *st, const char *key);
/* Before a step: a cached result replaces the stage's state. 1 when hit. */
int build_step_cached(struct build *b, struct stage *st, const char *key);
/* The context's file hashes remembered by the last build of it, and kept
 * for the next one (written only when they changed). */
int build_memo_load(struct build *b);
void build_memo_save(struct build *b);

/* ---- instructions that change the config (build_meta.c) ----------------- */

json_t *build_cc(json_t *cfg);
const char *build_env_get(json_t *env, const char *name);
const char *build_var_lookup(void *p, const char *name);
/* A word with the stage's variables (or the global ARGs, s NULL) expanded. */
char *build_expand(struct build *b, struct stage *s, const char *word);
void build_history_add(json_t *cfg, const char *created_by, bool empty);
char *build_created_by(struct build *b, struct stage *st, const struct df_insn *in);
int build_meta(struct build *b, struct stage *st, const struct df_insn *in);

/* ---- steps that make layers (build_steps.c) ----------------------------- */

int build_copy_prepare(struct build *b, size_t idx, const struct df_insn *in, bool add, struct copy_step *c);
void build_copy_free(struct copy_step *c);
int build_copy(struct build *b, struct stage *st, const struct copy_step *c, bool add,
	       const char *created_by, char diffid[DIGEST_BUF]);
#ifdef STRATA_HAVE_RUNTIME
int build_run(struct build *b, struct stage *st, const struct df_insn *in, const char *created_by,
	      bool *empty_upper, char diffid[DIGEST_BUF]);
#endif
int build_workdir_layer(struct build *b, struct stage *st, const char *by, bool *made, char diffid[DIGEST_BUF]);

/* ---- cmd_build.c ------------------------------------------------------- */

struct stage *build_stage_named(struct build *b, const char *name, size_t before);
/* An image of the store, pulled when it is a registry reference the store
 * does not hold. */
int build_resolve_image(struct build *b, const char *ref, char digest[DIGEST_BUF]);

#endif
