#include "image.h"

#include "bundle.h"
#include "err.h"
#include "fsutil.h"
#include "layer.h"
#include "pack.h"
#include "pkstore.h"
#include "unpack.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define MT_OCI_INDEX    "application/vnd.oci.image.index.v1+json"
#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_CONFIG   "application/vnd.oci.image.config.v1+json"
#define MT_DOCKER_LIST  "application/vnd.docker.distribution.manifest.list.v2+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_CONFIG "application/vnd.docker.container.image.v1+json"
#define REF_ANNOTATION  "org.opencontainers.image.ref.name"
#define SMALL_MAX       (16u << 20)

int spec_parse(const char *text, bool for_import, struct spec *sp)
{
	static const struct { const char *p; enum spec_kind k; } kinds[] = {
		{ "oci:", SPEC_OCI }, { "oci-archive:", SPEC_OCI_ARCHIVE },
		{ "docker-archive:", SPEC_DOCKER_ARCHIVE }, { "rootfs:", SPEC_ROOTFS },
	};
	memset(sp, 0, sizeof *sp);
	for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
		size_t n = strlen(kinds[i].p);
		if (strncmp(text, kinds[i].p, n))
			continue;
		sp->kind = kinds[i].k;
		sp->path = strdup(text + n);
		if (!sp->path)
			return -ENOMEM;
		if (!*sp->path) {
			susage("%s: no path after '%s'", text, kinds[i].p);
			return -EINVAL;
		}
		/* A ":ref" suffix is split off. Paths may hold colons and
		 * docker refs do (NAME:TAG): on import the path is the
		 * shortest prefix that exists; on export docker-archive splits
		 * at the first colon, the OCI kinds at the last one. */
		struct stat st;
		char *colon = NULL;
		if (sp->kind != SPEC_ROOTFS) {
			if (for_import) {
				for (char *c = strchr(sp->path, ':'); c && !colon; c = strchr(c + 1, ':')) {
					*c = '\0';
					if (stat(sp->path, &st) == 0)
						colon = c;
					*c = ':';
				}
			} else if (sp->kind == SPEC_DOCKER_ARCHIVE) {
				colon = strchr(sp->path, ':');
			} else {
				colon = strrchr(sp->path, ':');
				if (colon && strchr(colon, '/'))
					colon = NULL;
			}
		}
		if (colon) {
			*colon = '\0';
			sp->ref = strdup(colon + 1);
		}
		return 0;
	}
	susage("%s: unknown transport; use oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE, rootfs:DIR or rootfs:FILE.tar", text);
	return -EINVAL;
}

void spec_free(struct spec *sp)
{
	free(sp->path);
	free(sp->ref);
	memset(sp, 0, sizeof *sp);
}

/* Whether this process gave up the store lock for its input (image_import):
 * then a packed layer is written under a shared lock taken for it. */
static bool import_unlocked;

/* layer_import, writing a packed layer when the store's format says so. */
static int import_one(struct store *s, struct bsrc *src, struct layer_expect *x, const char *what,
		      struct layer_got *got)
{
	struct layer_tap tap;
	struct pkstore_import *pi = NULL;
	if (pkstore_packed()) {
		int r = pkstore_import_new(s, import_unlocked, &pi, &tap);
		if (r < 0)
			return r;
		x->tap = &tap;
	}
	int r = layer_import(s, src, x, what, got);
	x->tap = NULL;
	pkstore_import_free(pi);
	if (r < 0 && pi && import_unlocked && store_relock(s, true) == 0) {
		/* A packed layer's chunks are written while the tar streams in,
		 * before its digests are known: a refused layer leaves chunks
		 * no layer names, collected now so a failed import leaves the
		 * store as it was. */
		pkstore_gc(s, NULL);
		store_unlock(s);
	}
	return r;
}

static void blob_name(char *buf, size_t len, const char *digest)
{
	snprintf(buf, len, "blobs/sha256/%s", digest_hex(digest));
}

/* A descriptor's size, or -1 when it gives none. */
static int64_t desc_size(json_t *desc)
{
	json_t *v = json_object_get(desc, "size");
	return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : -1;
}

/* Read a blob named by digest and check that it is what it claims. */
static int read_blob(struct bundle *b, const char *digest, int64_t size, char **buf, size_t *len)
{
	char name[128], got[DIGEST_BUF];
	if (!digest_valid(digest)) {
		serr(0, "import: read", b->path, "a descriptor's digest '%s' is not sha256:<64 hex>; the image is malformed",
		     digest ? digest : "(none)");
		return -EBADMSG;
	}
	blob_name(name, sizeof name, digest);
	int r = bundle_read(b, name, SMALL_MAX, size, buf, len);
	if (r < 0)
		return r;
	sha256_buf(*buf, *len, got);
	if (strcmp(got, digest) || (size >= 0 && (size_t)size != *len)) {
		serr(0, "import: verify", name, "in %s: digest or size mismatch (content is %s, %zu bytes); the image is corrupt",
		     b->path, got, *len);
		free(*buf);
		*buf = NULL;
		return -EBADMSG;
	}
	return 0;
}

static json_t *parse_json(const char *buf, size_t len, const char *what, const char *where)
{
	json_error_t je;
	json_t *j = json_loadb(buf, len, 0, &je);
	if (!j || !json_is_object(j) ) {
		serr(0, "import: parse", what, "in %s: %s; the image is malformed", where, j ? "not a JSON object" : je.text);
		json_decref(j);
		return NULL;
	}
	return j;
}

static const char *host_arch(void)
{
	struct utsname u;
	static char arch[sizeof u.machine];
	uname(&u);
	if (!strcmp(u.machine, "x86_64"))
		return "amd64";
	if (!strcmp(u.machine, "aarch64"))
		return "arm64";
	snprintf(arch, sizeof arch, "%s", u.machine);
	return arch;
}

/* Pick a manifest descriptor out of an index: by ref annotation when a tag
 * is given, else the only one, else the host's platform. */
static json_t *pick_manifest(json_t *index, const char *ref, const char *where)
{
	json_t *ms = json_object_get(index, "manifests");
	size_t i;
	json_t *m, *pick = NULL;
	if (!json_is_array(ms) || json_array_size(ms) == 0) {
		serr(0, "import: read index of", where, "it lists no manifests");
		return NULL;
	}
	if (ref) {
		json_array_foreach(ms, i, m) {
			const char *r = json_string_value(json_object_get(json_object_get(m, "annotations"), REF_ANNOTATION));
			if (r && !strcmp(r, ref))
				return m;
		}
		serr(0, "import: find tag", ref, "in %s; no manifest carries that %s", where, REF_ANNOTATION);
		return NULL;
	}
	if (json_array_size(ms) == 1)
		return json_array_get(ms, 0);
	json_array_foreach(ms, i, m) {
		json_t *p = json_object_get(m, "platform");
		const char *arch = json_string_value(json_object_get(p, "architecture"));
		if (arch && !strcmp(arch, host_arch())) {
			if (pick) {
				pick = NULL;
				break;
			}
			pick = m;
		}
	}
	if (!pick)
		serr(0, "import: choose image in", where, "it holds %zu images; name one as oci:DIR:TAG",
		     json_array_size(ms));
	return pick;
}

struct layer_job {
	struct store *s;
	const char **names;     /* member names to stream */
	const char **digests;   /* expected blob digest or NULL, per name */
	const char **diffids;   /* expected DiffID, per name */
	enum compression *comps;
	int64_t *sizes;
	size_t n;
	const char *where;
};

static int layer_cb(void *ctx, size_t i, struct bsrc *src)
{
	struct layer_job *j = ctx;
	char what[PATH_MAX];
	struct layer_got got;
	struct layer_expect x = {
		.comp = j->comps[i], .digest = j->digests[i], .diffid = j->diffids[i], .size = j->sizes[i],
	};
	snprintf(what, sizeof what, "layer %s of %s", j->names[i], j->where);
	if (store_has_layer(j->s, j->diffids[i]))
		return 0;   /* the same layer twice in one image */
	return import_one(j->s, src, &x, what, &got);
}

/* Import the layers a config lists that the store lacks. layers[i] gives
 * each one's member name, expected digest (may be NULL) and media type. */
static int import_layers(struct store *s, struct bundle *b, json_t *diff_ids, char **names,
			 const char **digests, enum compression *comps, int64_t *sizes)
{
	size_t n = json_array_size(diff_ids), k = 0;
	struct layer_job j = { .s = s, .where = b->path };
	j.names = calloc(n + 1, sizeof *j.names);
	j.digests = calloc(n + 1, sizeof *j.digests);
	j.diffids = calloc(n + 1, sizeof *j.diffids);
	j.comps = calloc(n + 1, sizeof *j.comps);
	j.sizes = calloc(n + 1, sizeof *j.sizes);
	int r = -ENOMEM;
	if (!j.names || !j.digests || !j.diffids || !j.comps || !j.sizes)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const char *d = json_string_value(json_array_get(diff_ids, i));
		if (store_has_layer(s, d))
			continue;
		/* The same layer twice is read once: docker save (before 25)
		 * writes the second copy as a symlink, which is not read. */
		bool dup = false;
		for (size_t q = 0; q < k; q++)
			dup = dup || !strcmp(j.names[q], names[i]) || !strcmp(j.diffids[q], d);
		if (dup)
			continue;
		j.names[k] = names[i];
		j.digests[k] = digests ? digests[i] : NULL;
		j.diffids[k] = d;
		j.comps[k] = comps ? comps[i] : COMP_UNKNOWN;
		j.sizes[k] = sizes ? sizes[i] : -1;
		k++;
	}
	j.n = k;
	r = bundle_stream(b, j.names, j.sizes, k, layer_cb, &j);
out:
	free(j.names);
	free(j.digests);
	free(j.diffids);
	free(j.comps);
	free(j.sizes);
	return r;
}

/* Input is read and verified without the store lock (image_import); the
 * exclusive lock is taken only here, to make the result visible. */
static int finish(struct store *s, const char *config, size_t len, const char *name, char digest[DIGEST_BUF])
{
	int r = store_relock(s, true);
	if (r < 0)
		return r;
	/* A layer this image shares with one already stored was not read
	 * again; it must still be there now that the lock is held. */
	json_t *cfg = json_loadb(config, len, 0, NULL), *ids;
	if (!cfg || config_diff_ids(cfg, name, &ids) < 0) {
		json_decref(cfg);
		return -EBADMSG;
	}
	size_t i;
	json_t *v;
	json_array_foreach(ids, i, v) {
		if (!store_has_layer(s, json_string_value(v))) {
			serr(-EAGAIN, "import: store", name, "layer %s went away while the image was read (a `strata rmi` at the same time?); run the import again",
			     json_string_value(v));
			json_decref(cfg);
			return -EAGAIN;
		}
	}
	json_decref(cfg);
	/* Layers, then the config, then the tag: a kill in between leaves
	 * unreferenced layers, which the marker has the next command collect. */
	if ((r = store_commit_begin(s)) < 0)
		return r;
	r = store_commit_pending(s);
	if (r == 0) {
		r = store_put_image(s, config, len, digest);
		if (r < 0)
			serr(r, "import: store image config in", s->root, "check free space of the store");
	}
	if (r == 0)
		r = store_set_tag(s, name, digest);
	if (r < 0)
		store_gc(s);
	store_commit_end(s);
	return r;
}

static int import_oci(struct store *s, const struct spec *sp, const char *name, char digest[DIGEST_BUF])
{
	struct bundle b;
	_cleanup_free_ char *ibuf = NULL, *mbuf = NULL, *cbuf = NULL;
	size_t len, mlen, clen;
	json_t *index = NULL, *man = NULL, *cfg = NULL;
	char **names = NULL;
	const char **digests = NULL;
	enum compression *comps = NULL;
	int64_t *sizes = NULL;
	size_t n = 0;
	int r = bundle_open(&b, sp->path, sp->kind == SPEC_OCI_ARCHIVE);
	if (r < 0)
		return r;

	if ((r = bundle_read(&b, "index.json", SMALL_MAX, -1, &ibuf, &len)) < 0)
		goto out;
	r = -EBADMSG;
	if (!(index = parse_json(ibuf, len, "index.json", sp->path)))
		goto out;
	json_t *desc = pick_manifest(index, sp->ref, sp->path);
	for (int depth = 0; desc; depth++) {
		/* desc belongs to the document freed below: copy what we need. */
		char mtbuf[128] = "";
		const char *mt = json_string_value(json_object_get(desc, "mediaType"));
		if (mt)
			snprintf(mtbuf, sizeof mtbuf, "%s", mt);
		mt = mt ? mtbuf : NULL;
		if ((r = read_blob(&b, json_string_value(json_object_get(desc, "digest")),
				   desc_size(desc), &mbuf, &mlen)) < 0)
			goto out;
		r = -EBADMSG;
		json_decref(man);
		if (!(man = parse_json(mbuf, mlen, "manifest", sp->path)))
			goto out;
		if (!mt)
			mt = json_string_value(json_object_get(man, "mediaType"));
		desc = NULL;
		if (mt && (!strcmp(mt, MT_OCI_INDEX) || !strcmp(mt, MT_DOCKER_LIST)) && depth < 4) {
			free(mbuf);
			mbuf = NULL;
			/* Keep the index alive while desc points into it. */
			json_decref(index);
			index = TAKE_PTR(man);
			desc = pick_manifest(index, NULL, sp->path);
			continue;
		}
		if (mt && strcmp(mt, MT_OCI_MANIFEST) && strcmp(mt, MT_DOCKER_MANIFEST)) {
			serr(0, "import: read manifest in", sp->path, "unknown manifest media type '%s'", mt);
			goto out;
		}
		break;
	}
	if (!man)
		goto out;

	json_t *cdesc = json_object_get(man, "config");
	const char *cmt = json_string_value(json_object_get(cdesc, "mediaType"));
	if (cmt && strcmp(cmt, MT_OCI_CONFIG) && strcmp(cmt, MT_DOCKER_CONFIG)) {
		serr(0, "import: read manifest in", sp->path, "unknown config media type '%s'; not a container image", cmt);
		goto out;
	}
	if ((r = read_blob(&b, json_string_value(json_object_get(cdesc, "digest")),
			   desc_size(cdesc), &cbuf, &clen)) < 0)
		goto out;
	r = -EBADMSG;
	if (!(cfg = parse_json(cbuf, clen, "image config", sp->path)))
		goto out;
	json_t *ids, *layers = json_object_get(man, "layers");
	if ((r = config_diff_ids(cfg, sp->path, &ids)) < 0)
		goto out;
	r = -EBADMSG;
	n = json_array_size(ids);
	if (!json_is_array(layers) || json_array_size(layers) != n) {
		serr(0, "import: read manifest in", sp->path, "it lists %zu layers but the config has %zu diff_ids; the image is malformed",
		     json_array_size(layers), n);
		goto out;
	}
	names = calloc(n + 1, sizeof *names);
	digests = calloc(n + 1, sizeof *digests);
	comps = calloc(n + 1, sizeof *comps);
	sizes = calloc(n + 1, sizeof *sizes);
	if (!names || !digests || !comps || !sizes) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *l = json_array_get(layers, i);
		const char *mt = json_string_value(json_object_get(l, "mediaType"));
		const char *d = json_string_value(json_object_get(l, "digest"));
		comps[i] = media_type_compression(mt);
		if (comps[i] == COMP_UNKNOWN) {
			serr(0, "import: read manifest in", sp->path,
			     "layer %zu has media type '%s', which strata cannot read (tar, tar+gzip and tar+zstd are supported)",
			     i, mt ? mt : "(none)");
			goto out;
		}
		if (!digest_valid(d)) {
			serr(0, "import: read manifest in", sp->path, "layer %zu has no valid sha256 digest", i);
			goto out;
		}
		digests[i] = d;
		sizes[i] = desc_size(l);
		names[i] = malloc(96);
		if (!names[i]) {
			r = -ENOMEM;
			goto out;
		}
		blob_name(names[i], 96, d);
	}
	if ((r = import_layers(s, &b, ids, names, digests, comps, sizes)) < 0)
		goto out;
	r = finish(s, cbuf, clen, name, digest);
out:
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	free(digests);
	free(comps);
	free(sizes);
	json_decref(index);
	json_decref(man);
	json_decref(cfg);
	bundle_close(&b);
	return r;
}

/* Docker writes fully qualified names: "foo:1" is saved as
 * "docker.io/library/foo:1", "x/y:z" as "docker.io/x/y:z". */
static bool same_docker_ref(const char *have, const char *want)
{
	if (!strcmp(have, want))
		return true;
	if (!strncmp(have, "docker.io/", 10) && !strcmp(have + 10, want))
		return true;
	return !strncmp(have, "docker.io/library/", 18) && !strcmp(have + 18, want);
}

static int import_docker(struct store *s, const struct spec *sp, const char *name, char digest[DIGEST_BUF])
{
	struct bundle b;
	_cleanup_free_ char *mbuf = NULL, *cbuf = NULL;
	size_t mlen, clen, n = 0;
	json_t *man = NULL, *cfg = NULL, *pick = NULL;
	char **names = NULL;
	int r = bundle_open(&b, sp->path, true);
	if (r < 0)
		return r;
	if ((r = bundle_read(&b, "manifest.json", SMALL_MAX, -1, &mbuf, &mlen)) < 0)
		goto out;
	r = -EBADMSG;
	json_error_t je;
	man = json_loadb(mbuf, mlen, 0, &je);
	if (!json_is_array(man) || json_array_size(man) == 0) {
		serr(0, "import: parse manifest.json in", sp->path, "expected a non-empty JSON list as `docker save` writes");
		goto out;
	}
	size_t i;
	json_t *m;
	if (sp->ref) {
		_cleanup_free_ char *want = ref_normalize(sp->ref);
		json_array_foreach(man, i, m) {
			size_t q;
			json_t *t;
			json_array_foreach(json_object_get(m, "RepoTags"), q, t)
				if (json_string_value(t) && want && same_docker_ref(json_string_value(t), want))
					pick = m;
		}
		if (!pick) {
			serr(0, "import: find", sp->ref, "in %s; no image has that RepoTag", sp->path);
			goto out;
		}
	} else if (json_array_size(man) == 1) {
		pick = json_array_get(man, 0);
	} else {
		serr(0, "import: choose image in", sp->path, "it holds several images; name one as docker-archive:FILE:NAME:TAG");
		goto out;
	}
	char cname[PATH_MAX];
	const char *cfgname = json_string_value(json_object_get(pick, "Config"));
	if (!cfgname || clean_member_path(cfgname, cname, sizeof cname) < 0) {
		serr(0, "import: read manifest.json in", sp->path, "no usable Config entry");
		goto out;
	}
	if ((r = bundle_read(&b, cname, SMALL_MAX, -1, &cbuf, &clen)) < 0)
		goto out;
	r = -EBADMSG;
	if (!(cfg = parse_json(cbuf, clen, cname, sp->path)))
		goto out;
	json_t *ids, *layers = json_object_get(pick, "Layers");
	if ((r = config_diff_ids(cfg, sp->path, &ids)) < 0)
		goto out;
	r = -EBADMSG;
	n = json_array_size(ids);
	if (!json_is_array(layers) || json_array_size(layers) != n) {
		serr(0, "import: read manifest.json in", sp->path, "it lists %zu layers but the config has %zu diff_ids",
		     json_array_size(layers), n);
		goto out;
	}
	names = calloc(n + 1, sizeof *names);
	if (!names) {
		r = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		const char *l = json_string_value(json_array_get(layers, i));
		names[i] = malloc(PATH_MAX);
		if (!names[i] || !l || clean_member_path(l, names[i], PATH_MAX) < 0) {
			serr(0, "import: read manifest.json in", sp->path, "layer %zu has a bad path", i);
			goto out;
		}
	}
	if ((r = import_layers(s, &b, ids, names, NULL, NULL, NULL)) < 0)
		goto out;
	r = finish(s, cbuf, clen, name, digest);
out:
	for (i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	json_decref(man);
	json_decref(cfg);
	bundle_close(&b);
	return r;
}

static void now_rfc3339(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *config_new(void)
{
	char now[64];
	now_rfc3339(now, sizeof now);
	return json_pack("{s:s,s:s,s:s,s:{s:[s],s:[s]},s:{s:s,s:[]},s:[]}",
			 "created", now, "architecture", host_arch(), "os", "linux",
			 "config", "Env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			 "Cmd", "/bin/sh",
			 "rootfs", "type", "layers", "diff_ids", "history");
}

void config_add_layer(json_t *config, const char *diffid, const char *created_by, const char *comment)
{
	char now[64];
	now_rfc3339(now, sizeof now);
	json_t *rootfs = json_object_get(config, "rootfs");
	if (!rootfs) {
		rootfs = json_pack("{s:s,s:[]}", "type", "layers", "diff_ids");
		json_object_set_new(config, "rootfs", rootfs);
	}
	json_array_append_new(json_object_get(rootfs, "diff_ids"), json_string(diffid));
	json_t *h = json_object_get(config, "history");
	if (!json_is_array(h)) {
		h = json_array();
		json_object_set_new(config, "history", h);
	}
	json_t *e = json_pack("{s:s,s:s}", "created", now, "created_by", created_by);
	if (comment)
		json_object_set_new(e, "comment", json_string(comment));
	json_array_append_new(h, e);
	json_object_set_new(config, "created", json_string(now));
}

/* The rootfs source: a directory, a tarball, or a FIFO or pipe streaming
 * one (read once, so a stream is fine). Devices are refused before they
 * are opened: /dev/zero would be read for ever. */
static int open_rootfs(const char *path, struct stat *st)
{
	_cleanup_close_ int pfd = open(path, O_PATH | O_CLOEXEC);
	int r;
	if (pfd < 0 || fstat(pfd, st) < 0) {
		r = -errno;
		serr(r, "import: open", path, "give an existing directory or tarball");
		return r;
	}
	if (S_ISDIR(st->st_mode)) {
		r = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		r = r < 0 ? -errno : r;
	} else if (S_ISREG(st->st_mode)) {
		r = open_regular(AT_FDCWD, path, true, false, st);
	} else if (S_ISFIFO(st->st_mode)) {
		/* Waits for a writer, as reading a pipe does; no store lock
		 * is held meanwhile. */
		r = open(path, O_RDONLY | O_CLOEXEC);
		r = r < 0 ? -errno : r;
		struct stat again;
		if (r >= 0 && (fstat(r, &again) < 0 || again.st_ino != st->st_ino || again.st_dev != st->st_dev)) {
			close(r);
			r = -EAGAIN;
		}
	} else {
		serr(0, "import: open", path, "it is %s; give a directory, a tarball or a pipe streaming one",
		     file_kind(st->st_mode));
		return -EINVAL;
	}
	if (r < 0)
		serr(r, "import: open", path, "give an existing directory or tarball");
	return r;
}

static int import_rootfs(struct store *s, const struct spec *sp, const char *name, char digest[DIGEST_BUF])
{
	char diffid[DIGEST_BUF];
	struct stat st;
	_cleanup_close_ int fd = open_rootfs(sp->path, &st);
	int r;
	if (fd < 0)
		return fd;
	if (S_ISDIR(st.st_mode)) {
		r = layer_from_dir(s, fd, sp->path, false, NULL, diffid);
	} else {
		struct fd_src f = { fd };
		struct bsrc src = { fd_src_read, &f };
		struct layer_expect x = { .comp = COMP_UNKNOWN, .size = -1 };
		struct layer_got got;
		r = import_one(s, &src, &x, sp->path, &got);
		memcpy(diffid, got.diffid, sizeof diffid);
	}
	if (r < 0)
		return r;
	json_t *cfg = config_new();
	char by[PATH_MAX + 32];
	snprintf(by, sizeof by, "strata import rootfs:%s", sp->path);
	config_add_layer(cfg, diffid, by, NULL);
	_cleanup_free_ char *txt = json_dumps(cfg, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(cfg);
	if (!txt)
		return -ENOMEM;
	return finish(s, txt, strlen(txt), name, digest);
}

int image_import(struct store *s, const struct spec *sp, const char *name, char digest[DIGEST_BUF])
{
	/* Input may be slow or never end (a FIFO, a stalled network file
	 * system): no other command waits for it. Work in tmp/ is safe from
	 * cleaners without the lock; finish() locks to commit. So callers get
	 * the exclusive lock back on success only; after a failure they may
	 * only clean up their own tmp/ work and close the store. */
	store_unlock(s);
	import_unlocked = true;
	int r = -EINVAL;
	switch (sp->kind) {
	case SPEC_OCI:
	case SPEC_OCI_ARCHIVE:
		r = import_oci(s, sp, name, digest);
		break;
	case SPEC_DOCKER_ARCHIVE:
		r = import_docker(s, sp, name, digest);
		break;
	case SPEC_ROOTFS:
		r = import_rootfs(s, sp, name, digest);
		break;
	}
	import_unlocked = false;
	return r;
}

int layer_from_dir(struct store *s, int dirfd, const char *what, bool overlay,
		   const struct lowerview *lower, char diffid[DIGEST_BUF])
{
	char tmpname[64];
	_cleanup_close_ int tfd = store_mktemp(s, tmpname);
	if (tfd < 0) {
		serr(tfd, "create temporary directory in", s->root, "check free space and permissions of the store");
		return tfd;
	}
	_cleanup_close_ int fd = openat(tfd, "layer.tar.gz", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int r = fd < 0 ? -errno : 0;
	if (r == 0) {
		struct pack_opts po = { .overlay = overlay, .lower = lower, .rootless = s->rootless, .what = what };
		r = pack_dir(dirfd, fd, &po);
	}
	if (r == 0 && lseek(fd, 0, SEEK_SET) == 0) {
		struct fd_src f = { fd };
		struct bsrc src = { fd_src_read, &f };
		struct layer_expect x = { .comp = COMP_GZIP, .size = -1 };
		struct layer_got got;
		r = import_one(s, &src, &x, what, &got);
		if (r == 0)
			memcpy(diffid, got.diffid, DIGEST_BUF);
	}
	rm_rf_at(s->fd, tmpname);
	return r;
}
