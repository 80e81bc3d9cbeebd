/* pkstore_tarsplit: the record that rebuilds a layer's tar byte for byte
 * from its packed layer (docs/packed-format.md, "tar-split record").
 *
 * The writer sees the uncompressed tar as it streams in and follows its
 * block structure: headers, extended headers (PAX, GNU long names, sparse
 * maps), bodies, padding and whatever follows the end marker. A regular
 * file's body is replaced by a reference (its path in the layer, its size
 * and XXH3-128); everything else is kept, lz4-compressed. The parser need
 * not agree with libarchive on every odd archive: the import rebuilds the
 * tar from the record and compares it with the DiffID before it trusts it.
 */
#include "pkstore.h"

#include "bytes.h"
#include "err.h"
#include "fsutil.h"
#include "io.h"
#include "unpack.h"

#include <fcntl.h>
#include <limits.h>
#include <lz4.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define TS_MAGIC "STRATATS"
#define TS_VERSION 1u
#define TS_HDR 32
#define TS_RAWBUF (256u * 1024)
#define TS_META_MAX (1u << 20)   /* PAX / long-name bodies parsed up to this */

enum { OP_END = 0, OP_RAW = 1, OP_LZ4 = 2, OP_ZERO = 3, OP_FILE = 4 };
enum { S_HDR, S_EXT, S_BODY, S_PAD, S_TRAIL };

struct ts_writer {
	int fd, err;
	XXH3_state_t fh;                 /* checksum of the record */
	unsigned char out[1 << 16];
	size_t outn;
	unsigned char *raw, *lz;
	size_t rawn;
	uint64_t zeros, tar_size;
	int refs;

	int st;
	unsigned char blk[512];
	size_t blkn;
	uint64_t left, pad;
	bool ref;
	XXH3_state_t bh;                 /* the referenced body */
	char path[PATH_MAX];
	uint64_t size;
	/* extended headers that apply to the next entry */
	char *pax_path, *gnu_name;
	int64_t pax_size;
	bool pax_sparse, pax_bad;
	int collect;
	unsigned char *meta;
	size_t metan;
	bool meta_over;
	/* each referenced body's path, size and piece keys (a piece: the
	 * packed layer's chunk size), for the import's check against the
	 * layer's chunk keys */
	XXH3_state_t ph;
	uint32_t pfill, piece;
	struct ts_ref *rv;
	size_t nr, capr;
	uint8_t (*keys)[16];
	size_t nk, capk;
};

static int w_flush_out(struct ts_writer *w)
{
	int r = io_write_full(w->fd, w->out, w->outn, -1);
	if (r == 0)
		w->outn = 0;
	return r;
}

static int w_put(struct ts_writer *w, const void *p, size_t n)
{
	XXH3_64bits_update(&w->fh, p, n);
	while (n) {
		size_t k = sizeof w->out - w->outn < n ? sizeof w->out - w->outn : n;
		memcpy(w->out + w->outn, p, k);
		w->outn += k;
		p = (const char *)p + k;
		n -= k;
		if (w->outn == sizeof w->out) {
			int r = w_flush_out(w);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int w_op(struct ts_writer *w, uint8_t op)
{
	return w_put(w, &op, 1);
}

static int flush_raw(struct ts_writer *w)
{
	if (!w->rawn)
		return 0;
	int c = LZ4_compress_default((const char *)w->raw, (char *)w->lz, (int)w->rawn,
				     LZ4_compressBound(TS_RAWBUF));
	uint32_t ulen = (uint32_t)w->rawn, clen = c > 0 ? (uint32_t)c : 0;
	int r;
	if (clen && clen + 4 < ulen) {
		if ((r = w_op(w, OP_LZ4)) < 0 || (r = w_put(w, &ulen, 4)) < 0 || (r = w_put(w, &clen, 4)) < 0 ||
		    (r = w_put(w, w->lz, clen)) < 0)
			return r;
	} else if ((r = w_op(w, OP_RAW)) < 0 || (r = w_put(w, &ulen, 4)) < 0 || (r = w_put(w, w->raw, ulen)) < 0) {
		return r;
	}
	w->rawn = 0;
	return 0;
}

static int flush_zero(struct ts_writer *w)
{
	if (!w->zeros)
		return 0;
	int r = w_op(w, OP_ZERO);
	if (r == 0)
		r = w_put(w, &w->zeros, 8);
	w->zeros = 0;
	return r;
}

static int emit_raw(struct ts_writer *w, const void *p, size_t n)
{
	int r = flush_zero(w);
	while (r == 0 && n) {
		size_t k = TS_RAWBUF - w->rawn < n ? TS_RAWBUF - w->rawn : n;
		memcpy(w->raw + w->rawn, p, k);
		w->rawn += k;
		p = (const char *)p + k;
		n -= k;
		if (w->rawn == TS_RAWBUF)
			r = flush_raw(w);
	}
	return r;
}

static int emit_zero(struct ts_writer *w, uint64_t n)
{
	int r = flush_raw(w);
	w->zeros += n;
	return r;
}

/* Padding and trailers: zero runs as ZERO ops, the rest kept. */
static int emit_any(struct ts_writer *w, const unsigned char *p, size_t n)
{
	return bytes_all_zero(p, n) ? emit_zero(w, n) : emit_raw(w, p, n);
}

int ts_writer_new(int fd, uint32_t piece, struct ts_writer **out)
{
	struct ts_writer *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->piece = piece;
	w->raw = malloc(TS_RAWBUF);
	w->lz = malloc((size_t)LZ4_compressBound(TS_RAWBUF));
	w->meta = malloc(TS_META_MAX);
	w->pax_size = -1;
	XXH3_64bits_reset(&w->fh);
	if (!w->raw || !w->lz || !w->meta) {
		ts_writer_free(w);
		return -ENOMEM;
	}
	unsigned char hdr[TS_HDR] = { 0 };
	uint32_t v = TS_VERSION;
	memcpy(hdr, TS_MAGIC, 8);
	memcpy(hdr + 8, &v, 4);
	int r = w_put(w, hdr, sizeof hdr);
	if (r < 0) {
		ts_writer_free(w);
		return r;
	}
	*out = w;
	return 0;
}

void ts_writer_free(struct ts_writer *w)
{
	if (!w)
		return;
	free(w->raw);
	free(w->lz);
	free(w->meta);
	free(w->pax_path);
	free(w->gnu_name);
	for (size_t i = 0; i < w->nr; i++)
		free(w->rv[i].path);
	free(w->rv);
	free(w->keys);
	free(w);
}

/* A numeric header field: octal, or base-256 (GNU) for large values. */
static bool parse_num(const unsigned char *f, size_t n, uint64_t *v)
{
	*v = 0;
	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return false;   /* negative or too large */
		for (size_t i = 1; i < n; i++) {
			if (*v >> 56)
				return false;
			*v = *v << 8 | f[i];
		}
		return true;
	}
	size_t i = 0;
	while (i < n && (f[i] == ' ' || f[i] == 0))
		i++;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (*v >> 60)
			return false;
		*v = *v * 8 + (f[i] - '0');
	}
	return true;
}

static void clear_ext(struct ts_writer *w)
{
	free(w->pax_path);
	free(w->gnu_name);
	w->pax_path = w->gnu_name = NULL;
	w->pax_size = -1;
	w->pax_sparse = w->pax_bad = false;
}

/* PAX records "LEN KEY=VALUE\n" as far as they matter to find bodies. */
static void parse_pax(struct ts_writer *w, const unsigned char *p, size_t n)
{
	size_t pos = 0;
	while (pos < n) {
		size_t len = 0, i = pos;
		while (i < n && p[i] >= '0' && p[i] <= '9' && len < n)
			len = len * 10 + (p[i++] - '0');
		if (i >= n || p[i] != ' ' || len == 0 || len > n - pos) {
			w->pax_bad = true;
			return;
		}
		const unsigned char *kv = p + i + 1, *end = p + pos + len - 1;   /* at the '\n' */
		const unsigned char *eq = memchr(kv, '=', (size_t)(end - kv));
		if (!eq || *end != '\n') {
			w->pax_bad = true;
			return;
		}
		size_t kl = (size_t)(eq - kv), vl = (size_t)(end - eq - 1);
		if (kl == 4 && !memcmp(kv, "path", 4)) {
			free(w->pax_path);
			w->pax_path = memchr(eq + 1, 0, vl) ? NULL : strndup((const char *)eq + 1, vl);
			if (!w->pax_path)
				w->pax_bad = true;
		} else if (kl == 4 && !memcmp(kv, "size", 4)) {
			char num[32];
			if (vl == 0 || vl >= sizeof num) {
				w->pax_bad = true;
			} else {
				memcpy(num, eq + 1, vl);
				num[vl] = 0;
				char *e;
				long long s = strtoll(num, &e, 10);
				if (*e || s < 0)
					w->pax_bad = true;
				else
					w->pax_size = s;
			}
		} else if (kl > 11 && !memcmp(kv, "GNU.sparse.", 11)) {
			w->pax_sparse = true;
		}
		pos += len;
	}
}

static void field(char *out, const unsigned char *f, size_t n)
{
	size_t k = strnlen((const char *)f, n);
	memcpy(out, f, k);
	out[k] = 0;
}

/* Whether the body of this regular-file header can be a reference, and
 * the cleaned path it will have in the layer. */
static bool ref_path(struct ts_writer *w, const unsigned char *h)
{
	char raw[PATH_MAX + 256];
	if (w->pax_bad || w->pax_sparse)
		return false;
	if (w->pax_path) {
		if (strlen(w->pax_path) >= sizeof raw)
			return false;
		strcpy(raw, w->pax_path);
	} else if (w->gnu_name) {
		if (strlen(w->gnu_name) >= sizeof raw)
			return false;
		strcpy(raw, w->gnu_name);
	} else {
		char name[101], prefix[156];
		field(name, h, 100);
		prefix[0] = 0;
		if (!memcmp(h + 257, "ustar\0", 6))
			field(prefix, h + 345, 155);
		snprintf(raw, sizeof raw, "%s%s%s", prefix, *prefix ? "/" : "", name);
	}
	size_t n = strlen(raw);
	if (!n || raw[n - 1] == '/')
		return false;   /* read as a directory by old conventions */
	if (clean_member_path(raw, w->path, sizeof w->path) < 0 || !w->path[0])
		return false;
	/* Whiteouts and opaque markers are stored as such, not as files. */
	for (const char *c = w->path; c; c = strchr(c, '/')) {
		c += *c == '/';
		if (!strncmp(c, ".wh.", 4))
			return false;
	}
	return true;
}

static int header(struct ts_writer *w)
{
	const unsigned char *h = w->blk;
	if (bytes_all_zero(h, 512)) {
		/* libarchive ends the archive at the first zero block; what
		 * follows is kept as it is */
		w->st = S_TRAIL;
		return emit_zero(w, 512);
	}
	int r = emit_raw(w, h, 512);
	uint64_t size;
	if (r < 0)
		return r;
	if (!parse_num(h + 124, 12, &size)) {
		w->st = S_TRAIL;
		return 0;
	}
	char type = (char)h[156];
	bool ext = type == 'x' || type == 'L' || type == 'K' || type == 'g';
	w->collect = type == 'x' || type == 'L' ? type : 0;
	w->metan = 0;
	w->meta_over = false;
	w->ref = false;
	if (!ext && w->pax_size >= 0)
		size = (uint64_t)w->pax_size;
	if ((type == '0' || type == 0 || type == '7') && size > 0)
		w->ref = ref_path(w, h);
	if (w->ref) {
		w->size = size;
		XXH3_128bits_reset(&w->bh);
		XXH3_128bits_reset(&w->ph);
		w->pfill = 0;
		if (w->nr == w->capr) {
			size_t c = w->capr ? w->capr * 2 : 256;
			struct ts_ref *p = realloc(w->rv, c * sizeof *p);
			if (!p)
				return -ENOMEM;
			w->rv = p;
			w->capr = c;
		}
		if (!(w->rv[w->nr].path = strdup(w->path)))
			return -ENOMEM;
		w->rv[w->nr].size = size;
		w->rv[w->nr].first = w->nk;
		w->nr++;
	}
	if (!ext)
		clear_ext(w);
	w->left = size;
	w->pad = (512 - size % 512) % 512;
	if (type == 'S' && h[482])
		w->st = S_EXT;
	else
		w->st = w->left ? S_BODY : w->pad ? S_PAD : S_HDR;
	return 0;
}

/* The XXH3-128 of each piece of a referenced body, as pk_key names the
 * chunk pk_write makes of it. */
static int piece_keys(struct ts_writer *w, const unsigned char *p, size_t n, bool last)
{
	while (n) {
		size_t k = w->piece - w->pfill < n ? w->piece - w->pfill : n;
		XXH3_128bits_update(&w->ph, p, k);
		w->pfill += (uint32_t)k;
		p += k;
		n -= k;
		if (w->pfill == w->piece || (last && !n)) {
			if (w->nk == w->capk) {
				size_t c = w->capk ? w->capk * 2 : 1024;
				uint8_t (*nk)[16] = realloc(w->keys, c * sizeof *nk);
				if (!nk)
					return -ENOMEM;
				w->keys = nk;
				w->capk = c;
			}
			XXH128_canonical_t c;
			XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&w->ph));
			memcpy(w->keys[w->nk++], c.digest, 16);
			XXH3_128bits_reset(&w->ph);
			w->pfill = 0;
		}
	}
	return 0;
}

static int body_done(struct ts_writer *w)
{
	int r = 0;
	if (w->ref) {
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&w->bh));
		uint16_t pl = (uint16_t)strlen(w->path);
		if ((r = flush_raw(w)) == 0 && (r = flush_zero(w)) == 0 && (r = w_op(w, OP_FILE)) == 0 &&
		    (r = w_put(w, &pl, 2)) == 0 && (r = w_put(w, w->path, pl)) == 0 &&
		    (r = w_put(w, &w->size, 8)) == 0)
			r = w_put(w, c.digest, 16);
		w->refs++;
		w->ref = false;
	} else if (w->collect && !w->meta_over) {
		if (w->collect == 'x') {
			parse_pax(w, w->meta, w->metan);
		} else {
			free(w->gnu_name);
			w->gnu_name = strndup((const char *)w->meta, w->metan);
		}
	} else if (w->collect) {
		w->pax_bad = true;
	}
	w->collect = 0;
	w->st = w->pad ? S_PAD : S_HDR;
	return r;
}

int ts_feed(struct ts_writer *w, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	w->tar_size += len;
	while (len && w->err == 0) {
		size_t n;
		switch (w->st) {
		case S_HDR:
		case S_EXT:
			n = 512 - w->blkn < len ? 512 - w->blkn : len;
			memcpy(w->blk + w->blkn, p, n);
			w->blkn += n;
			if (w->blkn < 512)
				break;
			w->blkn = 0;
			if (w->st == S_HDR) {
				w->err = header(w);
			} else {
				/* a GNU sparse map continues while byte 504 says so */
				w->err = emit_raw(w, w->blk, 512);
				if (!w->blk[504])
					w->st = w->left ? S_BODY : w->pad ? S_PAD : S_HDR;
			}
			break;
		case S_BODY:
			n = w->left < len ? (size_t)w->left : len;
			if (w->ref) {
				XXH3_128bits_update(&w->bh, p, n);
				w->err = piece_keys(w, p, n, w->left == n);
			} else {
				if (w->collect) {
					if (w->metan + n <= TS_META_MAX) {
						memcpy(w->meta + w->metan, p, n);
						w->metan += n;
					} else {
						w->meta_over = true;
					}
				}
				w->err = emit_raw(w, p, n);
			}
			w->left -= n;
			if (!w->left && w->err == 0)
				w->err = body_done(w);
			break;
		case S_PAD:
			n = w->pad < len ? (size_t)w->pad : len;
			w->err = emit_any(w, p, n);
			w->pad -= n;
			if (!w->pad)
				w->st = S_HDR;
			break;
		default:
			n = len < 512 ? len : 512;
			w->err = emit_any(w, p, n);
			break;
		}
		p += n;
		len -= n;
	}
	return w->err;
}

int ts_finish(struct ts_writer *w)
{
	int r = w->err;
	/* A stream cut inside a header or a body (libarchive then failed the
	 * import, or the tar lacks its end marker): keep what is pending. */
	if (r == 0 && w->blkn)
		r = emit_raw(w, w->blk, w->blkn);
	if (r == 0 && w->st == S_BODY && w->ref)
		r = -EPROTO;   /* a body cut short cannot be referenced */
	if (r == 0)
		r = flush_raw(w);
	if (r == 0)
		r = flush_zero(w);
	if (r == 0)
		r = w_op(w, OP_END);
	if (r == 0)
		r = w_put(w, &w->tar_size, 8);
	if (r == 0) {
		uint64_t sum = XXH3_64bits_digest(&w->fh);
		r = w_put(w, &sum, 8);
	}
	if (r == 0)
		r = w_flush_out(w);
	if (r == 0 && fsync(w->fd) < 0)
		r = -errno;
	return r < 0 ? r : w->refs;
}

void ts_refs(const struct ts_writer *w, const struct ts_ref **refs, size_t *n, const uint8_t (**keys)[16])
{
	*refs = w->rv;
	*n = w->nr;
	*keys = (const uint8_t (*)[16])w->keys;
}

/* ---------------------------------------------------------------- reader */

struct rd {
	int fd;
	XXH3_state_t h;
	unsigned char buf[1 << 16];
	size_t pos, n;
	bool eof;
};

static int rd_get(struct rd *d, void *out, size_t len)
{
	unsigned char *o = out;
	while (len) {
		if (d->pos == d->n) {
			ssize_t k = read(d->fd, d->buf, sizeof d->buf);
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0)
				return -errno;
			if (k == 0)
				return -EBADMSG;   /* truncated */
			d->pos = 0;
			d->n = (size_t)k;
		}
		size_t k = d->n - d->pos < len ? d->n - d->pos : len;
		memcpy(o, d->buf + d->pos, k);
		XXH3_64bits_update(&d->h, d->buf + d->pos, k);
		d->pos += k;
		o += k;
		len -= k;
	}
	return 0;
}

static int resolve(struct pk_layer *l, const char *path, uint32_t *ino)
{
	uint32_t cur = pk_root(l);
	const char *c = path;
	while (*c) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);
		struct pk_dirent de;
		int r = pk_lookup(l, cur, c, n, &de);
		if (r < 0)
			return r;
		if (r != PK_FOUND)
			return -ENOENT;
		cur = de.ino;
		c += n + (e != NULL);
	}
	*ino = cur;
	return 0;
}

/* The regular file a record names, with the size it names: its inode, or
 * -ESTALE when the layer holds something else there. */
static int find_ref(struct pk_layer *l, const char *path, uint64_t size, uint32_t *ino)
{
	struct pk_attr a;
	int r = resolve(l, path, ino);
	if (r == 0)
		r = pk_getattr(l, *ino, &a);
	if (r == 0 && (!S_ISREG(a.mode) || a.size != size))
		r = -ESTALE;
	return r;
}

static int sink_file(struct pk_layer *l, const char *path, uint64_t size, const uint8_t want[16],
		     ts_sink sink, void *ctx, const char *what)
{
	uint32_t ino;
	int r = find_ref(l, path, size, &ino);
	if (r < 0) {
		if (what)
			serr(r, "rebuild tar of", what, "file %s is not in the packed layer as recorded; the layer is damaged",
			     path);
		return r == -ESTALE ? -EIO : r;
	}
	_cleanup_free_ char *buf = malloc(1 << 16);
	if (!buf)
		return -ENOMEM;
	XXH3_state_t h;
	XXH3_128bits_reset(&h);
	for (uint64_t off = 0; off < size;) {
		size_t want_n = size - off < (1 << 16) ? (size_t)(size - off) : (1 << 16);
		ssize_t k = pk_read(l, ino, off, want_n, buf);
		if (k <= 0) {
			r = k < 0 ? (int)k : -EIO;
			if (what)
				serr(r, "rebuild tar of", what, "reading %s from the packed layer failed", path);
			return r;
		}
		XXH3_128bits_update(&h, buf, (size_t)k);
		if ((r = sink(ctx, buf, (size_t)k)) < 0)
			return r;
		off += (uint64_t)k;
	}
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&h));
	if (memcmp(c.digest, want, 16)) {
		if (what)
			serr(-EIO, "rebuild tar of", what, "%s does not hold the bytes imported; the layer is damaged", path);
		return -EIO;
	}
	return 0;
}

/* The check's look at a reference: the file is there with that size. */
static int ref_exists(struct pk_layer *l, const char *path, uint64_t size, const char *what)
{
	uint32_t ino;
	int r = find_ref(l, path, size, &ino);
	if (r < 0 && what)
		serr(r == -ESTALE ? -EIO : r, "check tar-split record of", what,
		     "it names %s (%llu bytes), which the packed layer does not hold", path, (unsigned long long)size);
	return r < 0 ? -EIO : 0;
}

int ts_regen(int fd, struct pk_layer *l, ts_sink sink, void *ctx, const char *what, uint64_t *tar_size)
{
	static const unsigned char zero[1 << 16];
	struct rd *d = calloc(1, sizeof *d);
	_cleanup_free_ unsigned char *ubuf = malloc(TS_RAWBUF), *cbuf = malloc((size_t)LZ4_compressBound(TS_RAWBUF));
	unsigned char hdr[TS_HDR];
	uint64_t out = 0;
	int r;
	if (!d || !ubuf || !cbuf) {
		free(d);
		return -ENOMEM;
	}
	d->fd = fd;
	XXH3_64bits_reset(&d->h);
	if (lseek(fd, 0, SEEK_SET) < 0) {
		r = -errno;
		goto out;
	}
	if ((r = rd_get(d, hdr, sizeof hdr)) < 0)
		goto bad;
	uint32_t ver;
	memcpy(&ver, hdr + 8, 4);
	if (memcmp(hdr, TS_MAGIC, 8) || ver != TS_VERSION) {
		r = -EBADMSG;
		goto bad;
	}
	for (;;) {
		uint8_t op;
		uint32_t ulen, clen;
		uint64_t n;
		if ((r = rd_get(d, &op, 1)) < 0)
			goto bad;
		switch (op) {
		case OP_RAW:
		case OP_LZ4:
			if ((r = rd_get(d, &ulen, 4)) < 0)
				goto bad;
			if (ulen == 0 || ulen > TS_RAWBUF) {
				r = -EBADMSG;
				goto bad;
			}
			if (op == OP_RAW) {
				if ((r = rd_get(d, ubuf, ulen)) < 0)
					goto bad;
			} else {
				if ((r = rd_get(d, &clen, 4)) < 0)
					goto bad;
				if (clen == 0 || clen > (uint32_t)LZ4_compressBound(TS_RAWBUF) ||
				    (r = rd_get(d, cbuf, clen)) < 0 ||
				    LZ4_decompress_safe((const char *)cbuf, (char *)ubuf, (int)clen, (int)ulen) != (int)ulen) {
					r = r < 0 ? r : -EBADMSG;
					goto bad;
				}
			}
			if (sink && (r = sink(ctx, ubuf, ulen)) < 0)
				goto out;
			out += ulen;
			break;
		case OP_ZERO:
			if ((r = rd_get(d, &n, 8)) < 0)
				goto bad;
			out += n;
			while (sink && n) {
				size_t k = n < sizeof zero ? (size_t)n : sizeof zero;
				if ((r = sink(ctx, zero, k)) < 0)
					goto out;
				n -= k;
			}
			break;
		case OP_FILE: {
			uint16_t pl;
			char path[PATH_MAX];
			uint8_t key[16];
			if ((r = rd_get(d, &pl, 2)) < 0)
				goto bad;
			if (pl == 0 || pl >= sizeof path) {
				r = -EBADMSG;
				goto bad;
			}
			if ((r = rd_get(d, path, pl)) < 0 || (r = rd_get(d, &n, 8)) < 0 || (r = rd_get(d, key, 16)) < 0)
				goto bad;
			path[pl] = 0;
			if (l && sink && (r = sink_file(l, path, n, key, sink, ctx, what)) < 0)
				goto out;
			if (l && !sink && (r = ref_exists(l, path, n, what)) < 0)
				goto out;
			out += n;
			break;
		}
		case OP_END: {
			uint64_t total, sum, want;
			if ((r = rd_get(d, &total, 8)) < 0)
				goto bad;
			want = XXH3_64bits_digest(&d->h);
			if ((r = rd_get(d, &sum, 8)) < 0)
				goto bad;
			if (sum != want || total != out) {
				r = -EBADMSG;
				goto bad;
			}
			unsigned char extra;
			ssize_t k = d->pos < d->n ? 1 : read(fd, &extra, 1);
			if (k != 0) {
				r = -EBADMSG;
				goto bad;
			}
			if (tar_size)
				*tar_size = out;
			r = 0;
			goto out;
		}
		default:
			r = -EBADMSG;
			goto bad;
		}
	}
bad:
	if (what)
		serr(r, "read tar-split record of", what,
	     "it is truncated or corrupt; `strata system check` lists the damage, import the image again");
out:
	free(d);
	return r;
}
