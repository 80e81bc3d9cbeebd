/* export: write a stored image as an OCI layout, an oci-archive or a
 * docker-archive. Layer blobs and the config are written byte for byte as
 * stored, so digests (and DiffIDs) survive a round trip. */
#include "image.h"

#include "err.h"
#include "fsutil.h"
#include "io.h"
#include "layer.h"
#include "pkstore.h"
#include "progress.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct xlayer {
	char diffid[DIGEST_BUF];
	char digest[DIGEST_BUF];
	char media_type[128];
	json_int_t size, tar_size;
	int fd;     /* the stored blob, or -1 for a packed layer: */
	struct pk_layer *pk;    /* its tar is rebuilt from these two */
	int tsfd;
};

struct ximage {
	char digest[DIGEST_BUF];
	char *config;
	size_t config_len;
	struct xlayer *layers;
	size_t n;
	char *manifest;
	char manifest_digest[DIGEST_BUF];
};

static void ximage_free(struct ximage *x)
{
	for (size_t i = 0; i < x->n; i++) {
		if (x->layers[i].fd >= 0)
			close(x->layers[i].fd);
		if (x->layers[i].tsfd >= 0)
			close(x->layers[i].tsfd);
		pk_close(x->layers[i].pk);
	}
	free(x->layers);
	free(x->config);
	free(x->manifest);
}

static int ximage_load(struct store *s, const char *digest, struct ximage *x)
{
	json_t *cfg, *ids;
	memset(x, 0, sizeof *x);
	strcpy(x->digest, digest);
	int r = store_load_config(s, digest, &cfg, &x->config, &x->config_len);
	if (r < 0)
		return r;
	if ((r = config_diff_ids(cfg, digest, &ids)) < 0)
		goto out;
	x->n = json_array_size(ids);
	x->layers = calloc(x->n + 1, sizeof *x->layers);
	if (!x->layers) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < x->n; i++)
		x->layers[i].fd = x->layers[i].tsfd = -1;
	json_t *ml = json_array();
	for (size_t i = 0; i < x->n; i++) {
		struct xlayer *l = &x->layers[i];
		json_t *info;
		snprintf(l->diffid, sizeof l->diffid, "%s", json_string_value(json_array_get(ids, i)));
		if ((r = store_layer_info(s, l->diffid, &info)) < 0) {
			serr(r, "export: read layer", l->diffid, "the store is damaged; import the image again");
			json_decref(ml);
			goto out;
		}
		snprintf(l->digest, sizeof l->digest, "%s", json_string_value(json_object_get(info, "digest")));
		snprintf(l->media_type, sizeof l->media_type, "%s", json_string_value(json_object_get(info, "media_type")));
		l->size = json_integer_value(json_object_get(info, "size"));
		l->tar_size = json_integer_value(json_object_get(info, "tar_size"));
		json_decref(info);
		char p[128];
		snprintf(p, sizeof p, "layers/%s/blob", digest_hex(l->diffid));
		l->fd = openat(s->fd, p, O_RDONLY | O_CLOEXEC);
		if (l->fd < 0 && errno == ENOENT && pkstore_layer_is_packed(s, l->diffid) == 1) {
			/* No blob: the uncompressed tar, rebuilt, is the blob;
			 * its digest is the DiffID, so the config is unchanged. */
			if ((r = pkstore_open_layer(s, l->diffid, &l->pk, &l->tsfd)) < 0) {
				json_decref(ml);
				goto out;
			}
			snprintf(l->digest, sizeof l->digest, "%s", l->diffid);
			snprintf(l->media_type, sizeof l->media_type, "%s", oci_layer_media_type(COMP_NONE));
			l->size = l->tar_size;
		} else if (l->fd < 0) {
			r = -errno;
			serr(r, "export: open layer blob", p, "the store is damaged; import the image again");
			json_decref(ml);
			goto out;
		}
		json_array_append_new(ml, json_pack("{s:s,s:s,s:I}", "mediaType", l->media_type,
						    "digest", l->digest, "size", l->size));
	}
	json_t *m = json_pack("{s:i,s:s,s:{s:s,s:s,s:I},s:o}", "schemaVersion", 2,
			      "mediaType", "application/vnd.oci.image.manifest.v1+json",
			      "config", "mediaType", "application/vnd.oci.image.config.v1+json",
			      "digest", digest, "size", (json_int_t)x->config_len, "layers", ml);
	x->manifest = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	if (!x->manifest) {
		r = -ENOMEM;
		goto out;
	}
	sha256_buf(x->manifest, strlen(x->manifest), x->manifest_digest);
out:
	json_decref(cfg);
	return r;
}

static json_t *index_entry(struct ximage *x, const char *ref)
{
	json_t *d = json_pack("{s:s,s:s,s:I}", "mediaType", "application/vnd.oci.image.manifest.v1+json",
			      "digest", x->manifest_digest, "size", (json_int_t)strlen(x->manifest));
	if (ref)
		json_object_set_new(d, "annotations", json_pack("{s:s}", "org.opencontainers.image.ref.name", ref));
	return d;
}

/* The tag an export carries: the spec's, else the tag of NAME:TAG. */
static const char *export_ref(const struct spec *sp, const char *name)
{
	if (sp->ref && *sp->ref)
		return sp->ref;
	const char *slash = strrchr(name, '/');
	const char *colon = strrchr(slash ? slash : name, ':');
	return colon ? colon + 1 : "latest";
}

static int put_blob_dir(int bfd, const char *digest, const void *buf, size_t len, int srcfd)
{
	struct stat st;
	const char *hex = digest_hex(digest);
	if (fstatat(bfd, hex, &st, 0) == 0)
		return 0;   /* content addressed: same name, same bytes */
	char tmp[128];
	snprintf(tmp, sizeof tmp, ".%s.tmp", hex);
	_cleanup_close_ int fd = openat(bfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (srcfd >= 0) {
		lseek(srcfd, 0, SEEK_SET);
		long long n = copy_fd(srcfd, fd);
		if (n < 0)
			return (int)n;
	} else if (write(fd, buf, len) != (ssize_t)len) {
		return -EIO;
	}
	if (fsync(fd) < 0 || renameat(bfd, tmp, bfd, hex) < 0)
		return -errno;
	return 0;
}

/* A packed layer's tar, rebuilt, into a sink; checked against the DiffID
 * on the way, so a damaged layer fails the export instead of writing a
 * blob whose digest is not the one the manifest names. */
struct regen {
	struct sha256 h;
	ts_sink out;
	void *ctx;
	struct progress *pg;
};

static int regen_sink(void *ctx, const void *buf, size_t len)
{
	struct regen *g = ctx;
	sha256_update(&g->h, buf, len);
	if (g->pg)
		progress_add(g->pg, len);
	return g->out(g->ctx, buf, len);
}

static int regen(struct xlayer *l, ts_sink out, void *ctx, struct progress *pg)
{
	struct regen g = { .out = out, .ctx = ctx, .pg = pg };
	char what[128], got[DIGEST_BUF];
	uint64_t n = 0;
	int r = sha256_init(&g.h);
	if (r < 0)
		return r;
	snprintf(what, sizeof what, "layer %s", l->diffid);
	r = ts_regen(l->tsfd, l->pk, regen_sink, &g, what, &n);
	sha256_final(&g.h, got);
	if (r == 0 && (strcmp(got, l->diffid) || (json_int_t)n != l->tar_size)) {
		r = -EIO;
		serr(r, "export: rebuild", what, "the rebuilt tar is %s (%llu bytes); the layer is damaged: "
		     "`strata system check` lists the damage, import the image again", got, (unsigned long long)n);
	}
	return r;
}

static int fd_sink(void *ctx, const void *buf, size_t len)
{
	return io_write_full(*(int *)ctx, buf, len, -1);
}

static int ar_sink(void *ctx, const void *buf, size_t len)
{
	return archive_write_data(ctx, buf, len) == (la_ssize_t)len ? 0 : -EIO;
}

static int put_layer_dir(int bfd, struct xlayer *l)
{
	if (l->fd >= 0)
		return put_blob_dir(bfd, l->digest, NULL, 0, l->fd);
	struct stat st;
	const char *hex = digest_hex(l->digest);
	if (fstatat(bfd, hex, &st, 0) == 0)
		return 0;
	char tmp[128];
	snprintf(tmp, sizeof tmp, ".%s.tmp", hex);
	_cleanup_close_ int fd = openat(bfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int r = regen(l, fd_sink, &fd, NULL);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(bfd, tmp, bfd, hex) < 0)
		r = -errno;
	if (r < 0)
		unlinkat(bfd, tmp, 0);
	return r;
}

static int export_oci_dir(struct ximage *x, const char *dir, const char *ref)
{
	char p[PATH_MAX];
	int r;
	snprintf(p, sizeof p, "%s/blobs/sha256", dir);
	if ((r = mkdir_p(p, 0755)) < 0) {
		serr(r, "export: create", p, "check the destination's permissions");
		return r;
	}
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int bfd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || bfd < 0)
		return -errno;
	for (size_t i = 0; i < x->n; i++)
		if ((r = put_layer_dir(bfd, &x->layers[i])) < 0)
			goto fail;
	if ((r = put_blob_dir(bfd, x->digest, x->config, x->config_len, -1)) < 0 ||
	    (r = put_blob_dir(bfd, x->manifest_digest, x->manifest, strlen(x->manifest), -1)) < 0)
		goto fail;
	const char *layout = "{\"imageLayoutVersion\":\"1.0.0\"}";
	if ((r = write_file_atomic(dfd, "oci-layout", layout, strlen(layout))) < 0)
		goto fail;

	/* Add to an existing layout, replacing an entry of the same tag. */
	json_t *index = NULL;
	char *old;
	if (read_file_at(dfd, "index.json", 16 << 20, &old, NULL) == 0) {
		index = json_loads(old, 0, NULL);
		free(old);
	}
	if (!json_is_object(index) || !json_is_array(json_object_get(index, "manifests"))) {
		json_decref(index);
		index = json_pack("{s:i,s:[]}", "schemaVersion", 2, "manifests");
	}
	json_t *ms = json_object_get(index, "manifests");
	for (size_t i = 0; i < json_array_size(ms);) {
		const char *rn = json_string_value(json_object_get(json_object_get(json_array_get(ms, i), "annotations"),
								   "org.opencontainers.image.ref.name"));
		if (rn && ref && !strcmp(rn, ref))
			json_array_remove(ms, i);
		else
			i++;
	}
	json_array_append_new(ms, index_entry(x, ref));
	char *txt = json_dumps(index, JSON_COMPACT);
	json_decref(index);
	if (!txt)
		return -ENOMEM;
	r = write_file_atomic(dfd, "index.json", txt, strlen(txt));
	free(txt);
	if (r < 0)
		goto fail;
	return 0;
fail:
	serr(r, "export: write into", dir, "check free space and permissions of the destination");
	return r;
}

/* --- tarballs --- */

static int ar_header(struct archive *a, const char *name, int64_t size, mode_t type)
{
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, type);
	archive_entry_set_perm(e, type == AE_IFDIR ? 0755 : 0644);
	archive_entry_set_size(e, type == AE_IFDIR ? 0 : size);
	archive_entry_set_mtime(e, 0, 0);
	int r = archive_write_header(a, e) == ARCHIVE_OK ? 0 : -EIO;
	archive_entry_free(e);
	return r;
}

static int ar_buf(struct archive *a, const char *name, const void *buf, size_t len)
{
	if (ar_header(a, name, (int64_t)len, AE_IFREG) < 0)
		return -EIO;
	return archive_write_data(a, buf, len) == (la_ssize_t)len ? 0 : -EIO;
}

static int ar_fd(struct archive *a, const char *name, int fd, int64_t size, struct progress *pg)
{
	char buf[1 << 16];
	ssize_t n;
	if (ar_header(a, name, size, AE_IFREG) < 0)
		return -EIO;
	lseek(fd, 0, SEEK_SET);
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		if (archive_write_data(a, buf, (size_t)n) != n)
			return -EIO;
		progress_add(pg, (uint64_t)n);
	}
	return n < 0 ? -errno : 0;
}

/* docker-archive layers are plain tars: decompress the stored blob on the
 * fly; its size is known from the import (tar_size). */
static int ar_decompressed(struct archive *a, const char *name, int fd, int64_t size, struct progress *pg)
{
	struct archive *d = archive_read_new();
	struct archive_entry *e;
	char buf[1 << 16];
	la_ssize_t n;
	int64_t total = 0;
	int r = -EIO;
	lseek(fd, 0, SEEK_SET);
	archive_read_support_filter_gzip(d);
	archive_read_support_filter_zstd(d);
	archive_read_support_format_raw(d);
	if (archive_read_open_fd(d, fd, 1 << 16) != ARCHIVE_OK || archive_read_next_header(d, &e) != ARCHIVE_OK)
		goto out;
	if (ar_header(a, name, size, AE_IFREG) < 0)
		goto out;
	while ((n = archive_read_data(d, buf, sizeof buf)) > 0) {
		if (archive_write_data(a, buf, (size_t)n) != n)
			goto out;
		total += n;
		progress_add(pg, (uint64_t)n);
	}
	if (n == 0 && total == size)
		r = 0;
out:
	archive_read_free(d);
	return r;
}

/* A layer into a tarball: its blob (plain: decompressed), or its tar
 * rebuilt from the packed layer. */
static int ar_layer(struct archive *a, const char *name, struct xlayer *l, bool plain, struct progress *pg)
{
	if (l->fd >= 0)
		return plain ? ar_decompressed(a, name, l->fd, l->tar_size, pg) : ar_fd(a, name, l->fd, l->size, pg);
	if (ar_header(a, name, l->tar_size, AE_IFREG) < 0)
		return -EIO;
	return regen(l, ar_sink, a, pg);
}

static int export_archive(struct ximage *x, const struct spec *sp, const char *name)
{
	char tmp[PATH_MAX], p[256];
	int r = 0;
	struct progress pg;
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.strata-tmp.%d", sp->path, (int)getpid()) >= sizeof tmp)
		return -ENAMETOOLONG;
	struct archive *a = archive_write_new();
	archive_write_set_format_pax_restricted(a);
	if (archive_write_open_filename(a, tmp) != ARCHIVE_OK) {
		r = -errno ? -errno : -EIO;
		serr(r, "export: create", sp->path, "%s", archive_error_string(a));
		archive_write_free(a);
		return r;
	}
	progress_start(&pg, "export");
	if (sp->kind == SPEC_OCI_ARCHIVE) {
		const char *layout = "{\"imageLayoutVersion\":\"1.0.0\"}";
		json_t *index = json_pack("{s:i,s:[o]}", "schemaVersion", 2, "manifests",
					  index_entry(x, export_ref(sp, name)));
		_cleanup_free_ char *itxt = json_dumps(index, JSON_COMPACT);
		json_decref(index);
		r = ar_header(a, "blobs", 0, AE_IFDIR) || ar_header(a, "blobs/sha256", 0, AE_IFDIR) ? -EIO : 0;
		for (size_t i = 0; r == 0 && i < x->n; i++) {
			bool dup = false;
			for (size_t j = 0; j < i; j++)
				dup = dup || !strcmp(x->layers[j].digest, x->layers[i].digest);
			if (dup)
				continue;
			snprintf(p, sizeof p, "blobs/sha256/%s", digest_hex(x->layers[i].digest));
			r = ar_layer(a, p, &x->layers[i], false, &pg);
		}
		if (r == 0) {
			snprintf(p, sizeof p, "blobs/sha256/%s", digest_hex(x->digest));
			r = ar_buf(a, p, x->config, x->config_len);
		}
		if (r == 0) {
			snprintf(p, sizeof p, "blobs/sha256/%s", digest_hex(x->manifest_digest));
			r = ar_buf(a, p, x->manifest, strlen(x->manifest));
		}
		if (r == 0)
			r = ar_buf(a, "oci-layout", layout, strlen(layout));
		if (r == 0)
			r = ar_buf(a, "index.json", itxt, strlen(itxt));
	} else {
		json_t *layers = json_array();
		for (size_t i = 0; r == 0 && i < x->n; i++) {
			snprintf(p, sizeof p, "%s/layer.tar", digest_hex(x->layers[i].diffid));
			json_array_append_new(layers, json_string(p));
			bool dup = false;
			for (size_t j = 0; j < i; j++)
				dup = dup || !strcmp(x->layers[j].diffid, x->layers[i].diffid);
			if (!dup)
				r = ar_layer(a, p, &x->layers[i], true, &pg);
		}
		char cname[128];
		snprintf(cname, sizeof cname, "%s.json", digest_hex(x->digest));
		if (r == 0)
			r = ar_buf(a, cname, x->config, x->config_len);
		_cleanup_free_ char *tag = NULL;
		if (sp->ref)
			tag = ref_normalize(sp->ref);
		else
			tag = ref_normalize(name);
		json_t *m = json_pack("[{s:s,s:[s],s:o}]", "Config", cname, "RepoTags", tag, "Layers", layers);
		_cleanup_free_ char *mtxt = json_dumps(m, JSON_COMPACT);
		json_decref(m);
		if (r == 0)
			r = ar_buf(a, "manifest.json", mtxt, strlen(mtxt));
	}
	if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
		r = -EIO;
	if (r < 0)
		serr(r, "export: write", sp->path, "%s; check free space of the destination",
		     archive_error_string(a) ? archive_error_string(a) : "write failed");
	archive_write_free(a);
	progress_end(&pg);
	if (r == 0 && rename(tmp, sp->path) < 0) {
		r = -errno;
		serr(r, "export: rename into place", sp->path, "check the destination's permissions");
	}
	if (r < 0)
		unlink(tmp);
	return r;
}

int image_export(struct store *s, const char *digest, const char *name, const struct spec *sp)
{
	struct ximage x;
	int r = ximage_load(s, digest, &x);
	if (r == 0) {
		switch (sp->kind) {
		case SPEC_OCI:
			r = export_oci_dir(&x, sp->path, export_ref(sp, name));
			break;
		case SPEC_OCI_ARCHIVE:
		case SPEC_DOCKER_ARCHIVE:
			r = export_archive(&x, sp, name);
			break;
		default:
			susage("export: rootfs: is an import-only source; export to oci:, oci-archive: or docker-archive:");
			r = -EINVAL;
		}
	}
	ximage_free(&x);
	return r;
}
