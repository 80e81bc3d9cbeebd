/* image: moving images between the store and the outside world.
 *
 * SOURCE/DEST specs, as skopeo spells them:
 *   oci:DIR[:TAG]  oci-archive:FILE[:TAG]  docker-archive:FILE[:REF]
 *   rootfs:DIR     rootfs:FILE.tar[.gz|.zst]   (import only)
 */
#ifndef STRATA_IMAGE_H
#define STRATA_IMAGE_H

#include "lowerview.h"
#include "store.h"

enum spec_kind { SPEC_OCI, SPEC_OCI_ARCHIVE, SPEC_DOCKER_ARCHIVE, SPEC_ROOTFS };

struct spec {
	enum spec_kind kind;
	char *path;
	char *ref;      /* optional TAG / REF after the path */
};

/* Parse "kind:path[:ref]". for_import: the path must exist, which decides
 * whether a trailing ":x" is part of the path or a ref. */
int spec_parse(const char *text, bool for_import, struct spec *sp);
void spec_free(struct spec *sp);

int image_import(struct store *s, const struct spec *sp, const char *name, char digest[DIGEST_BUF]);
int image_export(struct store *s, const char *digest, const char *name, const struct spec *sp);

/* Turn a directory tree (a rootfs, or a container's upper dir with its
 * overlay whiteouts) into a layer and store it; *diffid receives its id.
 * lower (the image under the upper dir, or NULL) gives metacopy files'
 * data and renamed directories' contents. */
int layer_from_dir(struct store *s, int dirfd, const char *what, bool overlay,
		   const struct lowerview *lower, char diffid[DIGEST_BUF]);

/* A config for a fresh image, or one derived from base (NULL: new). */
json_t *config_new(void);
void config_add_layer(json_t *config, const char *diffid, const char *created_by, const char *comment);

#endif
