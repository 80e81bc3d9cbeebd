/* An image config through the OCI import's checks: the input is the config
 * blob of an OCI layout whose index and manifest this harness writes with
 * the right digests, so the JSON parse, the rootfs.diff_ids checks and the
 * manifest/config agreement run exactly as for `strata import oci:DIR`.
 * The layers' blobs do not exist: import stops there at the latest. */
#include "digest.h"
#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "store.h"
#include "scratch.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char layout[96];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	scratch_begin();
	char store[96], blobs[128];
	snprintf(store, sizeof store, "%s/store", dir);
	snprintf(layout, sizeof layout, "%s/oci", dir);
	snprintf(blobs, sizeof blobs, "%s/blobs/sha256", layout);
	if (mkdir_p(blobs, 0700) < 0 || store_open(&st, store, true) < 0)
		abort();
	scratch_ready();
	return 0;
}

static void put_blob(int bfd, const void *data, size_t len, char digest[DIGEST_BUF])
{
	sha256_buf(data, len, digest);
	write_file_atomic(bfd, digest_hex(digest), data, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Direct checks first: config_diff_ids on whatever parses. */
	json_t *cfg = json_loadb((const char *)data, size, 0, NULL), *ids;
	size_t nlayers = 0;
	if (cfg && config_diff_ids(cfg, "fuzz", &ids) == 0)
		nlayers = json_array_size(ids);
	json_decref(cfg);
	if (nlayers > 64)
		nlayers = 1;   /* a count mismatch is a path worth taking too */

	/* Then the real import of a layout around it. */
	_cleanup_close_ int bfd = open(layout, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int sfd = openat(bfd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd < 0 || sfd < 0)
		abort();
	char cd[DIGEST_BUF], md[DIGEST_BUF];
	put_blob(sfd, data, size, cd);
	json_t *layers = json_array();
	for (size_t i = 0; i < nlayers; i++) {
		char ld[DIGEST_BUF];
		sha256_buf(&i, sizeof i, ld);
		json_array_append_new(layers, json_pack("{s:s,s:s,s:i}", "mediaType",
			"application/vnd.oci.image.layer.v1.tar+gzip", "digest", ld, "size", 32));
	}
	json_t *man = json_pack("{s:i,s:s,s:{s:s,s:s,s:I},s:o}", "schemaVersion", 2,
				"mediaType", "application/vnd.oci.image.manifest.v1+json",
				"config", "mediaType", "application/vnd.oci.image.config.v1+json", "digest", cd,
				"size", (json_int_t)size, "layers", layers);
	char *mtxt = json_dumps(man, JSON_COMPACT);
	json_decref(man);
	if (!mtxt)
		abort();
	put_blob(sfd, mtxt, strlen(mtxt), md);
	json_t *index = json_pack("{s:i,s:[{s:s,s:s,s:I}]}", "schemaVersion", 2, "manifests",
				  "mediaType", "application/vnd.oci.image.manifest.v1+json", "digest", md,
				  "size", (json_int_t)strlen(mtxt));
	free(mtxt);
	char *itxt = json_dumps(index, JSON_COMPACT);
	json_decref(index);
	if (!itxt)
		abort();
	write_file_atomic(bfd, "index.json", itxt, strlen(itxt));
	free(itxt);

	struct spec sp = { .kind = SPEC_OCI, .path = layout };
	char digest[DIGEST_BUF];
	image_import(&st, &sp, "fuzz:1", digest);
	store_drop_pending(&st);
	unlinkat(sfd, digest_hex(cd), 0);
	unlinkat(sfd, digest_hex(md), 0);
	return 0;
}
