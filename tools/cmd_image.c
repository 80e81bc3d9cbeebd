/* Image commands: import, export, images, tag, rmi, history, inspect, bench. */
#include "cli.h"

#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (s) {
		puts(s);
		free(s);
	}
}

const char *human_size(long long b, char *buf, size_t len)
{
	static const char *u[] = { "B", "kB", "MB", "GB", "TB" };
	double v = (double)b;
	int i = 0;
	while (v >= 1000 && i < 4) {
		v /= 1000;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%lldB", b);
	else
		snprintf(buf, len, "%.3g%s", v, u[i]);
	return buf;
}

json_t *chain_ids(json_t *ids)
{
	json_t *out = json_array();
	char prev[DIGEST_BUF] = "";
	size_t i;
	json_t *v;
	json_array_foreach(ids, i, v) {
		const char *d = json_string_value(v);
		if (i == 0) {
			snprintf(prev, sizeof prev, "%s", d);
		} else {
			char buf[2 * DIGEST_BUF + 2];
			snprintf(buf, sizeof buf, "%s %s", prev, d);
			sha256_buf(buf, strlen(buf), prev);
		}
		json_array_append_new(out, json_string(prev));
	}
	return out;
}

static bool want_json(int *argc, char **argv)
{
	bool j = false;
	int o = 0;
	for (int i = 0; i < *argc; i++) {
		if (!strcmp(argv[i], "--json"))
			j = true;
		else
			argv[o++] = argv[i];
	}
	*argc = o;
	return j;
}

static bool valid_name(const char *name)
{
	/* A tag must not look like a transport or a digest, and must be a
	 * plain word: it ends up in tags.json and in export tags. */
	if (!*name || strchr(name, ' ') || digest_valid(name) || strstr(name, "..") || name[0] == '-')
		return false;
	for (const char *p = name; *p; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
		    !strchr("._-/:@", *p))
			return false;
	return true;
}

int cmd_import(const char *root, int argc, char **argv)
{
	struct spec sp;
	struct store s;
	char digest[DIGEST_BUF];
	if (argc != 2) {
		susage("usage: strata import SOURCE NAME[:TAG]");
		return 2;
	}
	if (!valid_name(argv[1])) {
		susage("import: '%s' is not a valid NAME[:TAG] (letters, digits, . _ - / : only)", argv[1]);
		return 2;
	}
	int r = spec_parse(argv[0], true, &sp);
	if (r < 0)
		return 2;
	if ((r = store_open(&s, root, true)) == 0) {
		r = image_import(&s, &sp, argv[1], digest);
		if (r == 0)
			printf("%s\n", digest);
		store_close(&s);
	}
	spec_free(&sp);
	return r;
}

int cmd_export(const char *root, int argc, char **argv)
{
	struct spec sp;
	struct store s;
	char digest[DIGEST_BUF];
	if (argc != 2) {
		susage("usage: strata export IMAGE oci:DIR[:TAG]|oci-archive:FILE|docker-archive:FILE");
		return 2;
	}
	int r = spec_parse(argv[1], false, &sp);
	if (r < 0)
		return 2;
	if ((r = store_open(&s, root, false)) == 0) {
		if ((r = store_resolve(&s, argv[0], digest)) == 0)
			r = image_export(&s, digest, argv[0], &sp);
		store_close(&s);
	}
	spec_free(&sp);
	return r;
}

static long long image_size(struct store *s, json_t *ids)
{
	long long total = 0;
	size_t i;
	json_t *v;
	json_array_foreach(ids, i, v) {
		json_t *info;
		if (store_layer_info(s, json_string_value(v), &info) == 0) {
			total += json_integer_value(json_object_get(info, "tar_size"));
			json_decref(info);
		}
	}
	return total;
}

int cmd_images(const char *root, int argc, char **argv)
{
	struct store s;
	json_t *tags;
	bool js = want_json(&argc, argv);
	int ifd = -1;
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	if ((r = store_tags(&s, &tags)) < 0)
		goto out;
	json_t *out = json_array();
	const char *k;
	json_t *v;
	if (!js)
		printf("%-30s %-12s %-14s %-22s %s\n", "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE");
	/* Rows: every tag, then untagged images a container still uses, as
	 * <none>. */
	json_t *rows = json_array(), *named = json_object(), *row;
	json_object_foreach(tags, k, v) {
		json_array_append_new(rows, json_pack("[s,O]", k, v));
		json_object_set_new(named, json_string_value(v), json_true());
	}
	ifd = openat(s.fd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **files;
	size_t nfiles, ri;
	if (ifd >= 0 && list_sorted(ifd, &files, &nfiles) == 0) {
		for (size_t i = 0; i < nfiles; i++) {
			char d[DIGEST_BUF + 8];
			snprintf(d, sizeof d, "sha256:%.64s", files[i]);
			if (strlen(files[i]) == 69 && digest_valid(d) && !json_object_get(named, d))
				json_array_append_new(rows, json_pack("[s,s]", "<none>:<none>", d));
		}
		free_names(files, nfiles);
	}
	json_decref(named);
	json_array_foreach(rows, ri, row) {
		k = json_string_value(json_array_get(row, 0));
		v = json_array_get(row, 1);
		const char *d = json_string_value(v);
		json_t *cfg, *ids;
		if (!digest_valid(d) || store_load_config(&s, d, &cfg, NULL, NULL) < 0)
			continue;
		long long size = config_diff_ids(cfg, d, &ids) == 0 ? image_size(&s, ids) : 0;
		const char *created = json_string_value(json_object_get(cfg, "created"));
		_cleanup_free_ char *repo = strdup(k);
		char *colon = strncmp(k, "<none>", 6) ? strrchr(repo, ':') : strchr(repo, ':');
		const char *tag = "latest";
		if (colon && !strchr(colon, '/')) {
			*colon = '\0';
			tag = colon + 1;
		}
		if (js) {
			json_array_append_new(out, json_pack("{s:s,s:s,s:s,s:s?,s:I}", "repository", repo, "tag", tag,
							     "id", d, "created", created, "size", (json_int_t)size));
		} else {
			char sz[32];
			printf("%-30s %-12s %-14.12s %-22.19s %s\n", repo, tag, digest_hex(d),
			       created ? created : "", human_size(size, sz, sizeof sz));
		}
		json_decref(cfg);
	}
	if (js)
		print_json(out);
	json_decref(out);
	json_decref(rows);
	json_decref(tags);
out:
	if (ifd >= 0)
		close(ifd);
	store_close(&s);
	return r;
}

int cmd_tag(const char *root, int argc, char **argv)
{
	struct store s;
	char digest[DIGEST_BUF];
	if (argc != 2) {
		susage("usage: strata tag IMAGE NAME[:TAG]");
		return 2;
	}
	if (!valid_name(argv[1])) {
		susage("tag: '%s' is not a valid NAME[:TAG]", argv[1]);
		return 2;
	}
	int r = store_open(&s, root, true);
	if (r < 0)
		return r;
	if ((r = store_resolve(&s, argv[0], digest)) == 0)
		r = store_set_tag(&s, argv[1], digest);
	store_close(&s);
	return r;
}

int cmd_rmi(const char *root, int argc, char **argv)
{
	struct store s;
	json_t *tags;
	if (argc < 1) {
		susage("usage: strata rmi IMAGE...");
		return 2;
	}
	int r = store_open(&s, root, true);
	if (r < 0)
		return r;
	if ((r = store_tags(&s, &tags)) < 0)
		goto out;
	for (int i = 0; i < argc && r == 0; i++) {
		_cleanup_free_ char *name = ref_normalize(argv[i]);
		if (json_object_get(tags, name)) {
			json_object_del(tags, name);
			printf("Untagged: %s\n", name);
			continue;
		}
		char digest[DIGEST_BUF];
		if ((r = store_resolve(&s, argv[i], digest)) < 0)
			break;
		/* By ID: every name of the image goes. */
		const char *k;
		void *tmp;
		json_t *v;
		json_object_foreach_safe(tags, tmp, k, v)
			if (!strcmp(json_string_value(v), digest)) {
				printf("Untagged: %s\n", k);
				json_object_del(tags, k);
			}
	}
	if (r == 0 && (r = store_save_tags(&s, tags)) == 0)
		r = store_gc(&s);
	json_decref(tags);
out:
	store_close(&s);
	return r;
}

int cmd_history(const char *root, int argc, char **argv)
{
	struct store s;
	char digest[DIGEST_BUF];
	json_t *cfg = NULL, *ids;
	bool js = want_json(&argc, argv);
	if (argc != 1) {
		susage("usage: strata history IMAGE [--json]");
		return 2;
	}
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	if ((r = store_resolve(&s, argv[0], digest)) < 0 ||
	    (r = store_load_config(&s, digest, &cfg, NULL, NULL)) < 0 ||
	    (r = config_diff_ids(cfg, digest, &ids)) < 0)
		goto out;
	/* History entries map to layers in order, skipping empty_layer ones. */
	json_t *hist = json_object_get(cfg, "history"), *out = json_array();
	size_t li = 0, i;
	json_t *h;
	json_array_foreach(hist, i, h) {
		bool empty = json_is_true(json_object_get(h, "empty_layer"));
		json_t *e = json_pack("{s:O?,s:O?,s:O?,s:b}", "created", json_object_get(h, "created"),
				      "created_by", json_object_get(h, "created_by"),
				      "comment", json_object_get(h, "comment"), "empty_layer", empty);
		if (!empty && li < json_array_size(ids)) {
			const char *d = json_string_value(json_array_get(ids, li++));
			json_t *info;
			json_object_set_new(e, "diff_id", json_string(d));
			if (store_layer_info(&s, d, &info) == 0) {
				json_object_set(e, "size", json_object_get(info, "tar_size"));
				json_decref(info);
			}
		}
		json_array_insert_new(out, 0, e);
	}
	if (js) {
		print_json(out);
	} else {
		printf("%-14s %-22s %-50s %-10s %s\n", "LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT");
		json_array_foreach(out, i, h) {
			char sz[32];
			const char *d = json_string_value(json_object_get(h, "diff_id"));
			printf("%-14.12s %-22.19s %-50.50s %-10s %s\n", d ? digest_hex(d) : "<empty>",
			       json_string_value(json_object_get(h, "created")) ?: "",
			       json_string_value(json_object_get(h, "created_by")) ?: "",
			       human_size(json_integer_value(json_object_get(h, "size")), sz, sizeof sz),
			       json_string_value(json_object_get(h, "comment")) ?: "");
		}
	}
	json_decref(out);
out:
	json_decref(cfg);
	store_close(&s);
	return r;
}

static json_t *image_tags(struct store *s, const char *digest)
{
	json_t *tags, *out = json_array();
	const char *k;
	json_t *v;
	if (store_tags(s, &tags) < 0)
		return out;
	json_object_foreach(tags, k, v)
		if (!strcmp(json_string_value(v), digest))
			json_array_append_new(out, json_string(k));
	json_decref(tags);
	return out;
}

int cmd_inspect(const char *root, int argc, char **argv)
{
	struct store s;
	char digest[DIGEST_BUF], id[65];
	json_t *cfg, *ids;
	if (argc != 1) {
		susage("usage: strata inspect IMAGE|CONTAINER");
		return 2;
	}
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	/* Containers first: their names are ours; images fall back. */
	if (container_find(&s, argv[0], id) == 0) {
		json_t *c;
		if ((r = container_describe(&s, id, &c)) == 0) {
			char p[PATH_MAX];
			snprintf(p, sizeof p, "%s/containers/%s/upper", s.root, id);
			json_object_set_new(c, "upper_dir", json_string(p));
			print_json(c);
			json_decref(c);
		}
		goto out;
	}
	if ((r = store_resolve(&s, argv[0], digest)) < 0 ||
	    (r = store_load_config(&s, digest, &cfg, NULL, NULL)) < 0)
		goto out;
	if ((r = config_diff_ids(cfg, digest, &ids)) == 0) {
		json_t *chains = chain_ids(ids), *layers = json_array();
		size_t i;
		json_t *v;
		json_array_foreach(ids, i, v) {
			json_t *info = NULL;
			store_layer_info(&s, json_string_value(v), &info);
			_cleanup_free_ char *path = store_layer_path(&s, json_string_value(v));
			json_array_append_new(layers, json_pack("{s:O,s:O,s:O?,s:O?,s:O?,s:s}", "diff_id", v,
				"chain_id", json_array_get(chains, i), "digest", json_object_get(info, "digest"),
				"media_type", json_object_get(info, "media_type"), "size", json_object_get(info, "tar_size"),
				"path", path));
			json_decref(info);
		}
		json_t *o = json_pack("{s:s,s:o,s:o,s:O}", "id", digest, "repo_tags", image_tags(&s, digest),
				      "layers", layers, "config", cfg);
		print_json(o);
		json_decref(o);
		json_decref(chains);
	}
	json_decref(cfg);
out:
	store_close(&s);
	return r;
}

int cmd_bench(const char *root, int argc, char **argv)
{
	(void)root;
	char script[PATH_MAX];
	snprintf(script, sizeof script, "%s/bench/run.sh", STRATA_SOURCE_DIR);
	if (access(script, R_OK) < 0) {
		serr(errno, "bench: find", script, "the benchmark harness is part of the source tree strata was built from");
		return 1;
	}
	char **args = calloc((size_t)argc + 4, sizeof *args);
	if (!args)
		return -ENOMEM;
	args[0] = "sh";
	args[1] = script;
	args[2] = STRATA_BINARY_DIR;
	for (int i = 0; i < argc; i++)
		args[3 + i] = argv[i];
	execvp("sh", args);
	serr(errno, "bench: run", script, "is sh installed?");
	free(args);
	return 1;
}
