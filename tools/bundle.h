/* bundle: named files of an image source, whether a directory (OCI layout)
 * or a tarball of one (oci-archive, docker-archive). Archives are read in
 * passes that skip what they do not need, so blobs stream straight from
 * the tarball into the store without a temporary copy.
 *
 * Sources are hostile: only regular files are read (a FIFO, a device or a
 * symlink in a layout is refused before it is opened for reading), a file
 * whose size differs from its descriptor's is refused before it is read,
 * and a file that grows while it is read is cut off at that size. */
#ifndef STRATA_BUNDLE_H
#define STRATA_BUNDLE_H

#include "layer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bundle {
	bool archive;
	int dirfd;           /* directory bundles */
	int fd;              /* archive bundles: the tarball, read once per pass */
	const char *path;    /* for messages */
};

int bundle_open(struct bundle *b, const char *path, bool archive);
void bundle_close(struct bundle *b);

/* Read a small member (manifests, configs) into memory. size: what its
 * descriptor says, or -1. */
int bundle_read(struct bundle *b, const char *name, size_t max, int64_t size, char **buf, size_t *len);

/* Stream members names[0..n): cb(ctx, i, src) is called once per member
 * with a source positioned at its data. sizes (or NULL): each member's
 * size by its descriptor, -1 where unknown. A member missing from the
 * bundle is an error. */
typedef int (*bundle_cb)(void *ctx, size_t i, struct bsrc *src);
int bundle_stream(struct bundle *b, const char *const *names, const int64_t *sizes, size_t n,
		  bundle_cb cb, void *ctx);

#endif
