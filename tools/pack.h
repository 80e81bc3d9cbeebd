/* pack: write a directory tree as an OCI layer tar (gzip).
 *
 * With overlay set the tree is an overlay upper directory: char 0/0
 * whiteouts become ".wh.NAME", opaque directories gain ".wh..wh..opq",
 * overlay bookkeeping xattrs are dropped, metacopy files take their data
 * from the lower layers, and rootless owners come from the
 * user.containers.override_stat xattr. Entries are written in name order,
 * so the same tree gives the same tar.
 */
#ifndef STRATA_PACK_H
#define STRATA_PACK_H

#include <stdbool.h>
#include <stddef.h>

#include "lowerview.h"

struct pack_opts {
	bool overlay;
	const struct lowerview *lower;   /* the image below an overlay upper */
	bool rootless;                   /* disk owner = the container's root */
	const char *what;        /* for messages */
};

/* Write the tree under dirfd as tar+gzip to outfd. */
int pack_dir(int dirfd, int outfd, const struct pack_opts *o);

#endif
