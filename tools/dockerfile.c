/* dockerfile: see dockerfile.h. */
#include "dockerfile.h"

#include "err.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A growing string. */
struct buf {
	char *s;
	size_t n, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *g = realloc(b->s, cap);
		if (!g)
			return -ENOMEM;
		b->s = g;
		b->cap = cap;
	}
	memcpy(b->s + b->n, s, n);
	b->n += n;
	b->s[b->n] = '\0';
	return 0;
}

static int buf_addc(struct buf *b, char c)
{
	return buf_add(b, &c, 1);
}

/* An empty string rather than NULL when nothing was added. */
static char *buf_take(struct buf *b)
{
	if (!b->s && buf_add(b, "", 0) < 0)
		return NULL;
	char *s = b->s;
	b->s = NULL;
	b->n = b->cap = 0;
	return s;
}

void df_strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

static int strv_push(char ***v, size_t *n, char *s)
{
	if (!s)
		return -ENOMEM;
	char **g = realloc(*v, (*n + 2) * sizeof **v);
	if (!g) {
		free(s);
		return -ENOMEM;
	}
	g[(*n)++] = s;
	g[*n] = NULL;
	*v = g;
	return 0;
}

/* ---- words ------------------------------------------------------------ */

int df_words(const char *args, char escape, char ***words, size_t *n)
{
	struct buf w = { 0 };
	char quote = 0;
	bool in_word = false;

	*words = NULL;
	*n = 0;
	for (const char *p = args;; p++) {
		char c = *p;
		if (!c || (!quote && isspace((unsigned char)c))) {
			if (in_word && strv_push(words, n, buf_take(&w)) < 0)
				goto nomem;
			in_word = false;
			if (!c)
				break;
			continue;
		}
		in_word = true;
		if (c == escape && quote != '\'' && p[1]) {
			if (buf_addc(&w, c) < 0 || buf_addc(&w, p[1]) < 0)
				goto nomem;
			p++;
			continue;
		}
		if (!quote && (c == '\'' || c == '"'))
			quote = c;
		else if (quote == c)
			quote = 0;
		if (buf_addc(&w, c) < 0)
			goto nomem;
	}
	free(w.s);
	return 0;
nomem:
	free(w.s);
	df_strv_free(*words, *n);
	*words = NULL;
	*n = 0;
	return -ENOMEM;
}

/* ${NAME...} or $NAME at *pp (just after '$'); appends the expansion. */
static int expand_var(const char **pp, char escape, df_lookup_fn lookup, void *ctx, struct buf *out)
{
	const char *p = *pp;
	char name[256];
	size_t nl = 0;

	if (*p == '{') {
		p++;
		while (*p && (isalnum((unsigned char)*p) || *p == '_') && nl < sizeof name - 1)
			name[nl++] = *p++;
		name[nl] = '\0';
		const char *val = nl ? lookup(ctx, name) : NULL;
		if (*p == '}') {
			*pp = p + 1;
			return val ? buf_add(out, val, strlen(val)) : 0;
		}
		if (p[0] == ':' && (p[1] == '-' || p[1] == '+')) {
			char op = p[1];
			p += 2;
			/* the word runs to the matching brace; it may hold
			 * variables of its own */
			struct buf word = { 0 };
			int depth = 0, r = 0;
			for (; *p && (depth || *p != '}'); p++) {
				if (*p == escape && p[1]) {
					r = buf_addc(&word, *++p);
				} else if (*p == '$') {
					const char *q = p + 1;
					r = expand_var(&q, escape, lookup, ctx, &word);
					p = q - 1;
				} else {
					if (*p == '{')
						depth++;
					else if (*p == '}')
						depth--;
					r = buf_addc(&word, *p);
				}
				if (r < 0) {
					free(word.s);
					return r;
				}
			}
			if (*p != '}') {
				free(word.s);
				susage("unterminated ${%s:%c...}: add the closing '}'", name, op);
				return -EINVAL;
			}
			*pp = p + 1;
			bool set = val && *val;
			const char *use = op == '-' ? (set ? val : word.s) : (set ? word.s : NULL);
			r = use ? buf_add(out, use, strlen(use)) : 0;
			free(word.s);
			return r;
		}
		susage("bad substitution ${%s%.8s...}: use ${NAME}, ${NAME:-default} or ${NAME:+word}",
		       name, p);
		return -EINVAL;
	}
	while ((isalnum((unsigned char)*p) || *p == '_') && nl < sizeof name - 1)
		name[nl++] = *p++;
	name[nl] = '\0';
	*pp = p;
	if (!nl)  /* a lone '$' stays */
		return buf_addc(out, '$');
	const char *val = lookup(ctx, name);
	return val ? buf_add(out, val, strlen(val)) : 0;
}

char *df_word(const char *raw, char escape, df_lookup_fn lookup, void *ctx)
{
	struct buf out = { 0 };
	char quote = 0;
	int r = 0;

	for (const char *p = raw; *p && r == 0; p++) {
		char c = *p;
		if (quote == '\'') {
			if (c == '\'')
				quote = 0;
			else
				r = buf_addc(&out, c);
		} else if (c == escape && p[1]) {
			/* inside double quotes only the quote, the escape and '$'
			 * are escaped, as in a shell */
			char nx = p[1];
			if (quote == '"' && nx != '"' && nx != escape && nx != '$')
				r = buf_addc(&out, c);
			if (r == 0)
				r = buf_addc(&out, nx);
			p++;
		} else if (c == '"' || (c == '\'' && !quote)) {
			quote = quote == c ? 0 : c;
		} else if (c == '$' && lookup) {
			const char *q = p + 1;
			r = expand_var(&q, escape, lookup, ctx, &out);
			p = q - 1;
		} else {
			r = buf_addc(&out, c);
		}
	}
	if (r == 0 && quote) {
		susage("unterminated %c quote in '%s': close it", quote, raw);
		r = -EINVAL;
	}
	if (r < 0) {
		free(out.s);
		errno = -r;
		return NULL;
	}
	return buf_take(&out);
}

int df_pairs(const char *args, char escape, bool legacy_ok, df_lookup_fn lookup, void *ctx,
	     char ***keys, char ***vals, size_t *n)
{
	char **w;
	size_t nw, nk = 0, nv = 0;
	int r;

	*keys = *vals = NULL;
	*n = 0;
	if ((r = df_words(args, escape, &w, &nw)) < 0)
		return r;
	if (nw == 0) {
		df_strv_free(w, nw);
		susage("no NAME=VALUE given");
		return -EINVAL;
	}
	if (legacy_ok && !strchr(w[0], '=')) {
		/* ENV NAME the rest of the line */
		const char *rest = args;
		while (isspace((unsigned char)*rest))
			rest++;
		rest += strlen(w[0]);
		while (isspace((unsigned char)*rest))
			rest++;
		if (!*rest) {
			susage("'%s' has no value: write %s=VALUE", w[0], w[0]);
			df_strv_free(w, nw);
			return -EINVAL;
		}
		char *k = df_word(w[0], escape, NULL, NULL);
		char *v = df_word(rest, escape, lookup, ctx);
		df_strv_free(w, nw);
		if (!k || !v) {
			free(k);
			free(v);
			return -errno;
		}
		if ((r = strv_push(keys, &nk, k)) < 0 || (r = strv_push(vals, &nv, v)) < 0)
			goto fail;
		*n = 1;
		return 0;
	}
	for (size_t i = 0; i < nw; i++) {
		char *eq = strchr(w[i], '=');
		if (eq)
			*eq = '\0';
		if (!*w[i]) {
			susage("'=%s': a name must come before '='", eq + 1);
			r = -EINVAL;
			goto fail;
		}
		if (!eq && legacy_ok) {
			susage("'%s' has no value: write %s=VALUE", w[i], w[i]);
			r = -EINVAL;
			goto fail;
		}
		char *k = df_word(w[i], escape, NULL, NULL);
		if (!k || (r = strv_push(keys, &nk, k)) < 0) {
			r = k ? r : -errno;
			goto fail;
		}
		char *v = NULL;
		if (eq && !(v = df_word(eq + 1, escape, lookup, ctx))) {
			r = -errno;
			goto fail;
		}
		/* strv_push refuses NULL: keep the slot for "ARG NAME" */
		char **g = realloc(*vals, (nv + 2) * sizeof **vals);
		if (!g) {
			free(v);
			r = -ENOMEM;
			goto fail;
		}
		g[nv++] = v;
		g[nv] = NULL;
		*vals = g;
	}
	df_strv_free(w, nw);
	*n = nk;
	return 0;
fail:
	df_strv_free(w, nw);
	df_strv_free(*keys, nk);
	df_strv_free(*vals, nv);
	*keys = *vals = NULL;
	return r;
}

/* ---- instructions ----------------------------------------------------- */

static const char *const known[] = {
	"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY",
	"ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL",
	"HEALTHCHECK", "SHELL",
};

static bool takes_json(const char *cmd)
{
	static const char *const j[] = { "RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME" };
	for (size_t i = 0; i < sizeof j / sizeof *j; i++)
		if (!strcmp(cmd, j[i]))
			return true;
	return false;
}

static void insn_free(struct df_insn *in)
{
	free(in->cmd);
	free(in->args);
	free(in->original);
	df_strv_free(in->json, in->njson);
	for (size_t i = 0; i < in->nflags; i++) {
		free(in->flags[i].name);
		free(in->flags[i].value);
	}
	free(in->flags);
}

void df_free(struct dockerfile *df)
{
	for (size_t i = 0; i < df->n; i++)
		insn_free(&df->insn[i]);
	free(df->insn);
	df->insn = NULL;
	df->n = 0;
}

const char *df_flag(const struct df_insn *in, const char *name, bool *present)
{
	for (size_t i = 0; i < in->nflags; i++)
		if (!strcmp(in->flags[i].name, name)) {
			if (present)
				*present = true;
			return in->flags[i].value;
		}
	if (present)
		*present = false;
	return NULL;
}

/* The exec form: a JSON array of strings, nothing else. */
static int parse_json(const char *text, struct df_insn *in)
{
	json_error_t e;
	json_t *a = json_loads(text, JSON_DECODE_ANY, &e);
	if (!a || !json_is_array(a)) {
		json_decref(a);
		return 1;  /* not JSON: the shell form */
	}
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) {
		if (!json_is_string(v)) {
			json_decref(a);
			return 1;
		}
	}
	json_array_foreach(a, i, v) {
		if (strv_push(&in->json, &in->njson, strdup(json_string_value(v))) < 0) {
			json_decref(a);
			return -ENOMEM;
		}
	}
	if (!in->json && !(in->json = calloc(1, sizeof *in->json))) {
		json_decref(a);
		return -ENOMEM;
	}
	in->is_json = true;
	json_decref(a);
	return 0;
}

static int parse_insn(const char *line, unsigned lineno, const char *name, char escape, struct df_insn *in)
{
	const char *p = line;
	memset(in, 0, sizeof *in);
	in->line = lineno;
	while (isspace((unsigned char)*p))
		p++;
	const char *kw = p;
	while (*p && !isspace((unsigned char)*p))
		p++;
	size_t kl = (size_t)(p - kw);
	if (!(in->cmd = strndup(kw, kl)) || !(in->original = strdup(kw)))
		return -ENOMEM;
	for (char *c = in->cmd; *c; c++)
		*c = (char)toupper((unsigned char)*c);
	size_t k;
	for (k = 0; k < sizeof known / sizeof *known; k++)
		if (!strcmp(in->cmd, known[k]))
			break;
	if (k == sizeof known / sizeof *known) {
		susage("%s:%u: unknown instruction %s (see the Dockerfile reference for the instructions)",
		       name, lineno, in->cmd);
		return -EINVAL;
	}
	while (isspace((unsigned char)*p))
		p++;
	/* flags: --name[=value] words before the arguments (ONBUILD's
	 * belong to the instruction it carries) */
	while (strcmp(in->cmd, "ONBUILD") && p[0] == '-' && p[1] == '-' && isalpha((unsigned char)p[2])) {
		const char *f = p + 2, *e = f;
		while (*e && !isspace((unsigned char)*e))
			e++;
		char *word = strndup(f, (size_t)(e - f));
		if (!word)
			return -ENOMEM;
		char *eq = strchr(word, '=');
		struct df_flag fl = { .name = word, .value = NULL };
		if (eq) {
			*eq = '\0';
			char *v = df_word(eq + 1, escape, NULL, NULL);
			if (!v) {
				free(word);
				return -errno;
			}
			fl.value = v;
		}
		struct df_flag *g = realloc(in->flags, (in->nflags + 1) * sizeof *g);
		if (!g) {
			free(fl.name);
			free(fl.value);
			return -ENOMEM;
		}
		in->flags = g;
		in->flags[in->nflags++] = fl;
		p = e;
		while (isspace((unsigned char)*p))
			p++;
	}
	size_t len = strlen(p);
	while (len && isspace((unsigned char)p[len - 1]))
		len--;
	if (!(in->args = strndup(p, len)))
		return -ENOMEM;
	if (takes_json(in->cmd) && in->args[0] == '[') {
		int r = parse_json(in->args, in);
		if (r < 0)
			return r;
	}
	if (!strcmp(in->cmd, "SHELL") && !in->is_json) {
		susage("%s:%u: SHELL takes a JSON array, e.g. SHELL [\"/bin/sh\", \"-c\"]", name, lineno);
		return -EINVAL;
	}
	if (!*in->args && strcmp(in->cmd, "RUN") && strcmp(in->cmd, "CMD") && strcmp(in->cmd, "ENTRYPOINT")) {
		susage("%s:%u: %s needs arguments", name, lineno, in->cmd);
		return -EINVAL;
	}
	return 0;
}

/* "# key=value" before anything else. */
static bool directive(const char *line, char *key, size_t kcap, const char **val)
{
	const char *p = line;
	if (*p++ != '#')
		return false;
	while (*p == ' ' || *p == '\t')
		p++;
	size_t kl = 0;
	while ((isalnum((unsigned char)*p) || *p == '_') && kl < kcap - 1)
		key[kl++] = (char)tolower((unsigned char)*p++);
	key[kl] = '\0';
	while (*p == ' ' || *p == '\t')
		p++;
	if (!kl || *p != '=')
		return false;
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	*val = p;
	return true;
}

static bool blank_or_comment(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return !*s || *s == '#';
}

int df_parse(const char *text, size_t len, const char *name, struct dockerfile *out)
{
	struct buf logical = { 0 };
	unsigned lineno = 0, start = 0;
	bool directives = true, cont = false;
	int r = 0;

	memset(out, 0, sizeof *out);
	out->escape = '\\';
	if (memchr(text, '\0', len)) {
		susage("%s: holds a NUL byte; a Containerfile is text", name);
		return -EINVAL;
	}
	for (size_t pos = 0; pos < len && r == 0;) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
		char *line = strndup(text + pos, ll);
		pos += ll + (nl ? 1 : 0);
		lineno++;
		if (!line) {
			r = -ENOMEM;
			break;
		}
		size_t n = strlen(line);
		if (n && line[n - 1] == '\r')
			line[--n] = '\0';
		if (directives) {
			char key[32];
			const char *val;
			if (directive(line, key, sizeof key, &val)) {
				if (!strcmp(key, "escape")) {
					if ((val[0] != '\\' && val[0] != '`') || (val[1] && !isspace((unsigned char)val[1]))) {
						susage("%s:%u: escape must be \\ or `", name, lineno);
						r = -EINVAL;
					} else {
						out->escape = val[0];
					}
				}
				/* syntax=, check=: nothing to choose here */
				free(line);
				continue;
			}
			directives = false;
		}
		if (blank_or_comment(line)) {
			/* inside a continued instruction these lines vanish */
			free(line);
			continue;
		}
		if (!cont)
			start = lineno;
		while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
			n--;
		cont = n && line[n - 1] == out->escape;
		if (cont)
			n--;
		r = buf_add(&logical, line, n);
		free(line);
		if (r < 0 || cont)
			continue;
		struct df_insn in;
		r = parse_insn(logical.s, start, name, out->escape, &in);
		logical.n = 0;
		if (r == 0) {
			struct df_insn *g = realloc(out->insn, (out->n + 1) * sizeof *g);
			if (!g)
				r = -ENOMEM;
			else {
				out->insn = g;
				out->insn[out->n++] = in;
				continue;
			}
		}
		insn_free(&in);
	}
	if (r == 0 && cont && logical.n) {
		struct df_insn in;
		r = parse_insn(logical.s, start, name, out->escape, &in);
		if (r == 0) {
			struct df_insn *g = realloc(out->insn, (out->n + 1) * sizeof *g);
			if (!g) {
				insn_free(&in);
				r = -ENOMEM;
			} else {
				out->insn = g;
				out->insn[out->n++] = in;
			}
		} else {
			insn_free(&in);
		}
	}
	free(logical.s);
	if (r == 0 && out->n == 0) {
		susage("%s: no instructions (a Containerfile starts with FROM)", name);
		r = -EINVAL;
	}
	if (r == 0 && strcmp(out->insn[0].cmd, "FROM") && strcmp(out->insn[0].cmd, "ARG")) {
		susage("%s:%u: the first instruction must be FROM (or ARG before FROM), not %s", name,
		       out->insn[0].line, out->insn[0].cmd);
		r = -EINVAL;
	}
	if (r < 0)
		df_free(out);
	return r;
}
