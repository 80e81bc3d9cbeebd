/* dockerfile: the Containerfile/Dockerfile language, parsed into a list
 * of instructions, and the variable expansion docker applies to the
 * arguments of some of them.
 *
 * Parsing follows docker's rules: a "# escape=" or "# syntax=" parser
 * directive is honoured only before the first comment, blank line or
 * instruction; comment lines are dropped, also inside a continued
 * instruction; a line ending in the escape character (\ by default, `
 * with "# escape=`") continues on the next; an instruction's keyword is
 * case-insensitive; RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD and VOLUME may
 * be given a JSON array (exec form); flags (--from=, --chown=, ...) come
 * before the arguments. Nothing here touches the file system.
 */
#ifndef STRATA_DOCKERFILE_H
#define STRATA_DOCKERFILE_H

#include <stdbool.h>
#include <stddef.h>

struct df_flag {
	char *name;              /* without "--", e.g. "from" */
	char *value;             /* NULL for a flag without "=" */
};

struct df_insn {
	char *cmd;               /* upper-case keyword: "RUN", "COPY", ... */
	char *args;              /* the rest of the line after the flags, joined */
	char *original;          /* the instruction as written (for history) */
	char **json;             /* exec form: the array's strings, NULL-ended */
	size_t njson;
	bool is_json;
	struct df_flag *flags;
	size_t nflags;
	unsigned line;           /* where it starts, 1-based */
};

struct dockerfile {
	struct df_insn *insn;
	size_t n;
	char escape;             /* '\\' or '`' */
};

/* Parse TEXT (len bytes). 0, or -EINVAL after reporting the line and what
 * is wrong with it (name: the file's name for messages). */
int df_parse(const char *text, size_t len, const char *name, struct dockerfile *out);
void df_free(struct dockerfile *df);

/* The value of flag NAME of an instruction, or NULL (present: *present). */
const char *df_flag(const struct df_insn *in, const char *name, bool *present);

/* Variable lookup for df_expand: the value of NAME, or NULL when unset. */
typedef const char *(*df_lookup_fn)(void *ctx, const char *name);

/* One word as docker's shell-like lexer reads it: quotes removed
 * ('...' literal, "..." with escapes), the escape character taking the
 * next character literally, and, with lookup set, $NAME, ${NAME},
 * ${NAME:-word} and ${NAME:+word} expanded outside single quotes (what
 * docker does for ENV, ARG, LABEL, COPY, ADD, WORKDIR, USER, EXPOSE,
 * VOLUME, STOPSIGNAL and FROM). Returns a malloc'd string, or NULL with
 * errno set (EINVAL: an unterminated quote or ${, reported). */
char *df_word(const char *raw, char escape, df_lookup_fn lookup, void *ctx);

/* Split ARGS into raw words on unquoted blanks (quotes and escapes kept,
 * for df_word). *words is a malloc'd array of n malloc'd strings. */
int df_words(const char *args, char escape, char ***words, size_t *n);
void df_strv_free(char **v, size_t n);

/* "K=V K2='v 2'" (ENV, LABEL, ARG), or with legacy_ok the old "K V W"
 * (ENV, LABEL: one key, the rest of the line its value), into processed
 * keys and values (df_word with lookup). A value is NULL for "ARG NAME"
 * without a default. */
int df_pairs(const char *args, char escape, bool legacy_ok, df_lookup_fn lookup, void *ctx,
	     char ***keys, char ***vals, size_t *n);

#endif
