/* digest: sha256 content addresses as OCI writes them ("sha256:<64 hex>").
 *
 * Digests arrive from untrusted manifests and become file names in the store,
 * so every one is checked with digest_valid() before it is used as a path.
 */
#ifndef STRATA_DIGEST_H
#define STRATA_DIGEST_H

#include <stdbool.h>
#include <stddef.h>

#define DIGEST_LEN 71          /* "sha256:" + 64 hex */
#define DIGEST_BUF 72

struct sha256 {
	void *ctx;             /* EVP_MD_CTX */
};

int sha256_init(struct sha256 *h);
void sha256_update(struct sha256 *h, const void *buf, size_t len);
/* Writes "sha256:<hex>" into out (DIGEST_BUF bytes) and frees the context. */
void sha256_final(struct sha256 *h, char out[DIGEST_BUF]);
void sha256_free(struct sha256 *h);

/* Digest of a memory buffer. */
void sha256_buf(const void *buf, size_t len, char out[DIGEST_BUF]);

/* "sha256:" followed by exactly 64 lowercase hex digits. */
bool digest_valid(const char *d);

/* The hex part of a valid digest. */
static inline const char *digest_hex(const char *d) { return d + 7; }

#endif
