#include "digest.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

int sha256_init(struct sha256 *h)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(c);
		h->ctx = NULL;
		return -ENOMEM;
	}
	h->ctx = c;
	return 0;
}

void sha256_update(struct sha256 *h, const void *buf, size_t len)
{
	if (h->ctx && len)
		EVP_DigestUpdate(h->ctx, buf, len);
}

void sha256_final(struct sha256 *h, char out[DIGEST_BUF])
{
	unsigned char md[32];
	unsigned int n = 0;
	static const char hx[] = "0123456789abcdef";

	EVP_DigestFinal_ex(h->ctx, md, &n);
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < 32; i++) {
		out[7 + 2 * i] = hx[md[i] >> 4];
		out[8 + 2 * i] = hx[md[i] & 15];
	}
	out[DIGEST_LEN] = '\0';
	sha256_free(h);
}

void sha256_free(struct sha256 *h)
{
	EVP_MD_CTX_free(h->ctx);
	h->ctx = NULL;
}

void sha256_buf(const void *buf, size_t len, char out[DIGEST_BUF])
{
	struct sha256 h;
	if (sha256_init(&h) < 0) {
		memset(out, 0, DIGEST_BUF);
		return;
	}
	sha256_update(&h, buf, len);
	sha256_final(&h, out);
}

bool digest_valid(const char *d)
{
	if (!d || strncmp(d, "sha256:", 7) != 0 || strlen(d) != DIGEST_LEN)
		return false;
	for (const char *p = d + 7; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}
