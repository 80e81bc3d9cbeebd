/* build_meta: the instructions that change only the image config (ENV,
 * ARG, LABEL, CMD, ...) and what history shows for a step. */
#include "build.h"

#include "cli.h"
#include "err.h"
#include "fsutil.h"
#include "image.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

json_t *build_cc(json_t *cfg)
{
	json_t *cc = json_object_get(cfg, "config");
	if (!json_is_object(cc)) {
		cc = json_object();
		json_object_set_new(cfg, "config", cc);
	}
	return cc;
}

/* The value of NAME in an Env array, or NULL. */
const char *build_env_get(json_t *env, const char *name)
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


/* ENV wins over ARG of the same name, as in docker. */
const char *build_var_lookup(void *p, const char *name)
{
	struct lookup_ctx *l = p;
	const char *v = l->env ? build_env_get(l->env, name) : NULL;
	if (!v && l->args)
		v = json_string_value(json_object_get(l->args, name));
	if (!v && l->more)
		v = json_string_value(json_object_get(l->more, name));
	return v;
}

char *build_expand(struct build *b, struct stage *s, const char *word)
{
	struct lookup_ctx l = { s ? json_object_get(build_cc(s->cfg), "Env") : NULL, s ? s->args : NULL,
				s ? NULL : b->global_args };
	return df_word(word, b->df.escape, build_var_lookup, &l);
}

void build_history_add(json_t *cfg, const char *created_by, bool empty)
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
	json_t *sh = json_object_get(build_cc(st->cfg), "Shell");
	json_t *a = json_is_array(sh) && json_array_size(sh) ? json_deep_copy(sh) : json_pack("[s,s]", "/bin/sh", "-c");
	json_array_append_new(a, json_string(in->args));
	return a;
}

int build_meta(struct build *b, struct stage *st, const struct df_insn *in)
{
	json_t *cc = build_cc(st->cfg);
	const char *cmd = in->cmd;
	int r = 0;

	if (!strcmp(cmd, "ENV") || !strcmp(cmd, "LABEL")) {
		char **k, **v;
		size_t n;
		struct lookup_ctx l = { json_object_get(cc, "Env"), st->args, NULL };
		if ((r = df_pairs(in->args, b->df.escape, true, build_var_lookup, &l, &k, &v, &n)) < 0)
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
		if ((r = df_pairs(in->args, b->df.escape, false, build_var_lookup, &l, &k, &v, &n)) < 0)
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
		char *x = build_expand(b, st, in->args);
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
		char *x = build_expand(b, st, in->args);
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
			char *x = in->is_json ? strdup(w[i]) : build_expand(b, st, w[i]);
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


/* What history shows for a step: the instruction with its variables
 * resolved where docker resolves them. */
char *build_created_by(struct build *b, struct stage *st, const struct df_insn *in)
{
	char *s = NULL;
	if (!strcmp(in->cmd, "RUN")) {
		if (asprintf(&s, "RUN %s", in->args) < 0)
			return NULL;
		return s;
	}
	bool expands = strcmp(in->cmd, "CMD") && strcmp(in->cmd, "ENTRYPOINT") && strcmp(in->cmd, "SHELL") &&
		       strcmp(in->cmd, "HEALTHCHECK") && strcmp(in->cmd, "ONBUILD") && !in->is_json;
	char *args = expands ? build_expand(b, st, in->args) : strdup(in->args);
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

