#include "layer.h"

#include "bytes.h"
#include "err.h"
#include "fsutil.h"
#include "io.h"
#include "progress.h"
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define BUFSZ (1 << 16)

ssize_t fd_src_read(void *ctx, void *buf, size_t len)
{
	struct fd_src *f = ctx;
	for (;;) {
		ssize_t n = read(f->fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		return n < 0 ? -errno : n;
	}
}

enum compression media_type_compression(const char *mt)
{
	static const struct { const char *mt; enum compression c; } t[] = {
		{ "application/vnd.oci.image.layer.v1.tar", COMP_NONE },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", COMP_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", COMP_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar", COMP_NONE },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", COMP_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", COMP_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar", COMP_NONE },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", COMP_GZIP },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", COMP_GZIP },
	};
	for (size_t i = 0; mt && i < sizeof t / sizeof *t; i++)
		if (!strcmp(mt, t[i].mt))
			return t[i].c;
	return COMP_UNKNOWN;
}

const char *oci_layer_media_type(enum compression c)
{
	switch (c) {
	case COMP_GZIP: return "application/vnd.oci.image.layer.v1.tar+gzip";
	case COMP_ZSTD: return "application/vnd.oci.image.layer.v1.tar+zstd";
	default: return "application/vnd.oci.image.layer.v1.tar";
	}
}

/* Compressed side: source -> digest, blob copy, progress. */
struct outer {
	struct bsrc *src;
	int blobfd;
	struct sha256 h;
	int64_t n;
	int err;
	bool eof;
	ssize_t pending;        /* bytes of buf read ahead to sniff the format */
	struct progress prog;
	char buf[BUFSZ];
};

/* Uncompressed side: decompressor -> DiffID -> tar reader. gzip goes
 * through zlib, which checks each member's CRC (libarchive's gzip reader
 * does not, and a rootfs tarball has no digest to catch corruption);
 * zstd and plain tar go through libarchive's raw reader. */
struct inner {
	struct outer *o;
	const struct layer_tap *tap;
	bool use_zlib, member_done, z_ready;
	z_stream z;
	struct archive *dec;
	struct sha256 h;
	int64_t n;
	int err;
	bool padded;
	char buf[BUFSZ];
};

static int outer_take(struct outer *o, const void *buf, ssize_t n)
{
	sha256_update(&o->h, buf, (size_t)n);
	o->n += n;
	progress_add(&o->prog, (uint64_t)n);
	return io_write_full(o->blobfd, buf, (size_t)n, -1);
}

/* Next chunk of the blob, hashed and kept; 0 at its end. */
static ssize_t outer_pull(struct outer *o)
{
	if (o->pending) {
		ssize_t n = o->pending;
		o->pending = 0;
		return n;
	}
	if (o->eof)
		return 0;
	ssize_t n = o->src->read(o->src->ctx, o->buf, sizeof o->buf);
	if (n < 0)
		return o->err = (int)n;
	if (n == 0) {
		o->eof = true;
		return 0;
	}
	if ((o->err = outer_take(o, o->buf, n)) < 0)
		return o->err;
	return n;
}

static la_ssize_t outer_read(struct archive *a, void *ctx, const void **buf)
{
	struct outer *o = ctx;
	ssize_t n = outer_pull(o);
	if (n < 0) {
		archive_set_error(a, (int)-n, "reading the blob or writing it into the store failed");
		return -1;
	}
	*buf = o->buf;
	return n;
}

/* Inflate the next piece of a gzip stream (members may be concatenated;
 * zero padding after the last is tolerated). */
static la_ssize_t zlib_read(struct archive *a, struct inner *in)
{
	z_stream *z = &in->z;
	for (;;) {
		if (z->avail_in == 0) {
			ssize_t n = outer_pull(in->o);
			if (n < 0) {
				archive_set_error(a, (int)-n, "reading the blob failed");
				return -1;
			}
			z->next_in = (unsigned char *)in->o->buf;
			z->avail_in = (uInt)n;
			if (n == 0 && in->member_done)
				return 0;
			if (n == 0) {
				archive_set_error(a, EIO, "truncated gzip input");
				return -1;
			}
		}
		if (in->member_done) {
			if (bytes_all_zero(z->next_in, z->avail_in)) {
				z->avail_in = 0;
				continue;
			}
			inflateReset(z);
			in->member_done = false;
		}
		z->next_out = (unsigned char *)in->buf;
		z->avail_out = sizeof in->buf;
		int ret = inflate(z, Z_NO_FLUSH);
		la_ssize_t got = (la_ssize_t)(sizeof in->buf - z->avail_out);
		if (ret == Z_STREAM_END)
			in->member_done = true;
		else if (ret != Z_OK && !(ret == Z_BUF_ERROR && z->avail_in == 0)) {
			archive_set_error(a, EIO, "gzip data is corrupt (%s)", z->msg ? z->msg : "bad data");
			return -1;
		}
		if (got > 0)
			return got;
	}
}

static la_ssize_t inner_read(struct archive *a, void *ctx, const void **buf)
{
	struct inner *in = ctx;
	la_ssize_t n;
	if (in->use_zlib) {
		n = zlib_read(a, in);
		if (n < 0) {
			in->err = -EIO;
			return -1;
		}
	} else {
		n = archive_read_data(in->dec, in->buf, sizeof in->buf);
	}
	if (n < 0) {
		/* Keep the cause: ENOSPC writing the blob is not corruption. */
		int e = archive_errno(in->dec) > 0 ? archive_errno(in->dec) : EIO;
		in->err = -e;
		archive_set_error(a, e, "%s", archive_error_string(in->dec)
				  ? archive_error_string(in->dec) : "decompression failed");
		return -1;
	}
	if (n == 0 && !in->padded && in->n % 512) {
		/* umoci 0.4.7 `insert` ends a layer right after the last file's
		 * data, without block padding or end footer. Complete the block
		 * for the tar reader; the DiffID covers only the real bytes. */
		in->padded = true;
		n = 512 - in->n % 512;
		memset(in->buf, 0, (size_t)n);
		*buf = in->buf;
		return n;
	}
	sha256_update(&in->h, in->buf, (size_t)n);
	in->n += n;
	if (in->tap && n > 0 && (in->err = in->tap->data(in->tap->ctx, in->buf, (size_t)n)) < 0) {
		archive_set_error(a, -in->err, "recording the layer's tar failed");
		return -1;
	}
	*buf = in->buf;
	return n;
}

static enum compression filter_comp(struct archive *a)
{
	switch (archive_filter_code(a, 0)) {
	case ARCHIVE_FILTER_NONE: return COMP_NONE;
	case ARCHIVE_FILTER_GZIP: return COMP_GZIP;
	case ARCHIVE_FILTER_ZSTD: return COMP_ZSTD;
	default: return COMP_UNKNOWN;
	}
}

static const char *comp_name(enum compression c)
{
	return c == COMP_GZIP ? "gzip" : c == COMP_ZSTD ? "zstd" : c == COMP_NONE ? "uncompressed tar" : "unknown";
}

static int write_info(int dirfd, const struct layer_got *g)
{
	json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:I}", "diff_id", g->diffid, "digest", g->digest,
			      "media_type", oci_layer_media_type(g->comp), "size", (json_int_t)g->size,
			      "tar_size", (json_int_t)g->tar_size);
	_cleanup_free_ char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(j);
	if (!s)
		return -ENOMEM;
	return write_file_atomic(dirfd, "layer.json", s, strlen(s));
}

int layer_import(struct store *s, struct bsrc *src, const struct layer_expect *x,
		 const char *what, struct layer_got *got)
{
	char tmpname[64];
	struct outer *o = calloc(1, sizeof *o);
	struct inner *in = calloc(1, sizeof *in);
	struct archive *dec = NULL, *tar = NULL;
	_cleanup_close_ int tfd = -1, rootfd = -1;
	int r;

	memset(got, 0, sizeof *got);
	if (!o || !in) {
		r = -ENOMEM;
		goto out;
	}
	o->src = src;
	o->blobfd = -1;
	tfd = store_mktemp(s, tmpname);
	if (tfd < 0) {
		r = tfd;
		serr(r, "import: create temporary directory in", s->root, "check free space and permissions of the store");
		goto out;
	}
	if (mkdirat(tfd, "diff", 0755) < 0 ||
	    (rootfd = openat(tfd, "diff", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (o->blobfd = openat(tfd, "blob", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) {
		r = -errno;
		serr(r, "import: create layer in", s->root, "check free space and permissions of the store");
		goto out;
	}
	if ((r = sha256_init(&o->h)) < 0 || (r = sha256_init(&in->h)) < 0)
		goto out;
	progress_start(&o->prog, what);

	tar = archive_read_new();
	if (!tar) {
		r = -ENOMEM;
		goto out;
	}
	in->o = o;
	in->tap = x->tap;
	o->pending = outer_pull(o);
	if (o->pending <= 0) {
		r = o->pending < 0 ? (int)o->pending : -ENODATA;
		serr(r, "import: read", what, "the blob is empty or unreadable");
		o->pending = 0;
		goto out;
	}
	if (o->pending >= 2 && (unsigned char)o->buf[0] == 0x1f && (unsigned char)o->buf[1] == 0x8b) {
		got->comp = COMP_GZIP;
		in->use_zlib = true;
		if (inflateInit2(&in->z, 15 + 16) != Z_OK) {
			r = -ENOMEM;
			goto out;
		}
		in->z_ready = true;
	} else {
		struct archive_entry *e;
		dec = archive_read_new();
		if (!dec) {
			r = -ENOMEM;
			goto out;
		}
		archive_read_support_filter_zstd(dec);
		archive_read_support_format_raw(dec);
		if (archive_read_open(dec, o, NULL, outer_read, NULL) != ARCHIVE_OK ||
		    archive_read_next_header(dec, &e) != ARCHIVE_OK) {
			r = o->err ? o->err : -EIO;
			serr(r, "import: read", what, "%s; the blob is truncated or corrupt",
			     archive_error_string(dec) ? archive_error_string(dec) : "unreadable");
			goto out;
		}
		got->comp = filter_comp(dec);
	}
	if (x->comp != COMP_UNKNOWN && got->comp != x->comp) {
		r = -EBADMSG;
		serr(0, "import: read", what, "the media type says %s but the blob is %s; the image is malformed",
		     comp_name(x->comp), comp_name(got->comp));
		goto out;
	}

	in->dec = dec;
	archive_read_support_format_tar(tar);
	if (archive_read_open(tar, in, NULL, inner_read, NULL) != ARCHIVE_OK) {
		r = -EIO;
		serr(r, "import: read", what, "%s", archive_error_string(tar) ? archive_error_string(tar) : "not a tar");
		goto out;
	}
	struct unpack_opts uo = { .rootless = s->rootless, .what = what };
	if (x->tap && x->tap->entries)
		r = x->tap->entries(x->tap->ctx, tar, s, tfd, tmpname, what);
	else
		r = unpack_archive(tar, rootfd, &uo);
	if (r < 0)
		goto out;

	/* The digests cover every byte, also any padding after the tar's end
	 * and after the compressed stream. */
	la_ssize_t n;
	while ((n = inner_read(tar, in, &(const void *){ NULL })) > 0)
		;
	if (n < 0) {
		r = -EIO;
		serr(r, "import: read", what, "%s; the blob is truncated or corrupt",
		     archive_error_string(tar) ? archive_error_string(tar) : "read error");
		goto out;
	}
	ssize_t m;
	while ((m = outer_pull(o)) > 0)
		;
	if (m < 0) {
		r = (int)m;
		serr(r, "import: read", what, "reading the blob failed");
		goto out;
	}
	progress_end(&o->prog);
	sha256_final(&o->h, got->digest);
	sha256_final(&in->h, got->diffid);
	got->size = o->n;
	got->tar_size = in->n;

	if (x->digest && strcmp(x->digest, got->digest)) {
		r = -EBADMSG;
		serr(0, "import: verify", what, "digest mismatch: the manifest says %s but the blob is %s; the image is corrupt, fetch it again",
		     x->digest, got->digest);
		goto out;
	}
	if (x->size >= 0 && x->size != got->size) {
		r = -EBADMSG;
		serr(0, "import: verify", what, "size mismatch: the manifest says %lld bytes but the blob has %lld",
		     (long long)x->size, (long long)got->size);
		goto out;
	}
	if (x->diffid && strcmp(x->diffid, got->diffid)) {
		r = -EBADMSG;
		serr(0, "import: verify", what, "DiffID mismatch: the config says %s but the layer's tar is %s; the image is corrupt",
		     x->diffid, got->diffid);
		goto out;
	}
	if ((r = write_info(tfd, got)) < 0) {
		char hint[PATH_MAX + 256];
		serr(r, "import: write layer metadata in", s->root, "%s",
		     fs_full_hint(tfd, r, hint, sizeof hint) ? hint : "check free space of the store");
		goto out;
	}
	if (x->tap && x->tap->done && (r = x->tap->done(x->tap->ctx, s, tfd, tmpname, got)) < 0)
		goto out;
	if (store_has_layer(s, got->diffid))
		rm_rf_at(s->fd, tmpname);   /* same content already there */
	else
		r = store_add_pending(s, tmpname, got->diffid);
out:
	if (tar)
		archive_read_free(tar);
	if (dec)
		archive_read_free(dec);
	if (o) {
		if (o->blobfd >= 0)
			close(o->blobfd);
		sha256_free(&o->h);
		if (o->prog.on)
			fputc('\n', stderr);
	}
	if (in) {
		if (in->z_ready)
			inflateEnd(&in->z);
		sha256_free(&in->h);
	}
	if (r < 0 && tfd >= 0)
		rm_rf_at(s->fd, tmpname);
	free(o);
	free(in);
	return r;
}
