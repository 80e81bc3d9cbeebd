/* layer: bring one layer blob into the store in a single streaming pass.
 *
 * The blob is read once: its bytes are hashed (digest) and kept as the
 * layer's blob, decompressed (gzip, zstd or none, by content), the tar
 * stream is hashed (DiffID) and unpacked as it flows. Nothing becomes
 * visible until both digests match what the manifest and config promised;
 * then the finished directory is renamed into layers/<DiffID>.
 */
#ifndef STRATA_LAYER_H
#define STRATA_LAYER_H

#include "digest.h"
#include "store.h"

#include <stdint.h>
#include <sys/types.h>

struct archive;

enum compression { COMP_UNKNOWN = -1, COMP_NONE = 0, COMP_GZIP, COMP_ZSTD };

/* Where the blob's bytes come from: read returns >0, 0 at the end or -errno. */
struct bsrc {
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	void *ctx;
};

/* A bsrc over an fd. */
struct fd_src { int fd; };
ssize_t fd_src_read(void *ctx, void *buf, size_t len);

struct layer_got;

/* An observer of one import (the packed store format, tools/pkstore.h):
 * data sees every byte of the uncompressed tar in order and returns 0 or
 * -errno; done runs once both digests are verified, before the layer in
 * tmp/<tmpname> (diff/, blob, layer.json) becomes pending. */
struct layer_tap {
	int (*data)(void *ctx, const void *buf, size_t len);
	/* Optional: takes the tar's entries instead of unpacking them into
	 * tmp/<tmpname>/diff (the packed store builds its layer from them);
	 * reports its failures. */
	int (*entries)(void *ctx, struct archive *tar, struct store *s, int tfd, const char *tmpname,
		       const char *what);
	int (*done)(void *ctx, struct store *s, int tfd, const char *tmpname, const struct layer_got *got);
	void *ctx;
};

struct layer_expect {
	const struct layer_tap *tap;   /* or NULL */
	enum compression comp;   /* from the media type; COMP_UNKNOWN: accept any */
	const char *digest;      /* blob digest, or NULL */
	const char *diffid;      /* DiffID, or NULL */
	int64_t size;            /* blob size, or -1 */
};

struct layer_got {
	char digest[DIGEST_BUF];
	char diffid[DIGEST_BUF];
	int64_t size, tar_size;
	enum compression comp;
};

int layer_import(struct store *s, struct bsrc *src, const struct layer_expect *x,
		 const char *what, struct layer_got *got);

/* Media types <-> compression. -1 for a type that is not a layer we read. */
enum compression media_type_compression(const char *mt);
const char *oci_layer_media_type(enum compression c);

#endif
