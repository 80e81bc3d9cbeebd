/* bundle: named files of an image source, whether a directory (OCI layout)
 * or a tarball of one (oci-archive, docker-archive). Archives are read in
 * passes that skip what they do not need, so blobs stream straight from
 * the tarball into the store without a temporary copy. */
#ifndef STRATA_BUNDLE_H
#define STRATA_BUNDLE_H

#include "layer.h"

#include <stdbool.h>
#include <stddef.h>

struct bundle {
	bool archive;
	int dirfd;           /* directory bundles */
	const char *path;    /* for messages, and archive file name */
};

int bundle_open(struct bundle *b, const char *path, bool archive);
void bundle_close(struct bundle *b);

/* Read a small member (manifests, configs) into memory. */
int bundle_read(struct bundle *b, const char *name, size_t max, char **buf, size_t *len);

/* Stream members names[0..n): cb(ctx, i, src) is called once per member
 * with a source positioned at its data. A member missing from the bundle
 * is an error. */
typedef int (*bundle_cb)(void *ctx, size_t i, struct bsrc *src);
int bundle_stream(struct bundle *b, const char *const *names, size_t n, bundle_cb cb, void *ctx);

#endif
