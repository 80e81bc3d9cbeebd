/* strata system df | check | migrate | prune: the store as a whole
 * (docs/packed-format.md, "The store's packed layers"). */
#include "cli.h"

#include "err.h"
#include "fsutil.h"
#include "pkstore.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

/* ---------------------------------------------------------------- key sets */

/* An open-addressing set of 18-byte keys (XXH3-128 + suffix). */
struct kset {
	uint8_t (*k)[19];      /* [18]: used */
	size_t n, cap;
};

/* 1 when added, 0 when present, -ENOMEM. */
static int kset_add(struct kset *s, const uint8_t key[16], uint16_t suffix)
{
	if ((s->n + 1) * 2 > s->cap) {
		struct kset o = *s;
		s->cap = o.cap ? o.cap * 2 : 1024;
		s->k = calloc(s->cap, sizeof *s->k);
		s->n = 0;
		if (!s->k) {
			*s = o;
			return -ENOMEM;
		}
		for (size_t i = 0; i < o.cap; i++)
			if (o.k[i][18]) {
				uint16_t sf;
				memcpy(&sf, o.k[i] + 16, 2);
				kset_add(s, o.k[i], sf);
			}
		free(o.k);
	}
	uint64_t h;
	memcpy(&h, key, 8);
	h ^= suffix * 0x9e3779b97f4a7c15ull;
	for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->k[i][18]) {
			memcpy(s->k[i], key, 16);
			memcpy(s->k[i] + 16, &suffix, 2);
			s->k[i][18] = 1;
			s->n++;
			return 1;
		}
		if (!memcmp(s->k[i], key, 16) && !memcmp(s->k[i] + 16, &suffix, 2))
			return 0;
	}
}

static bool kset_has(const struct kset *s, const uint8_t key[16], uint16_t suffix)
{
	if (!s->cap)
		return false;
	uint64_t h;
	memcpy(&h, key, 8);
	h ^= suffix * 0x9e3779b97f4a7c15ull;
	for (size_t i = h & (s->cap - 1); s->k[i][18]; i = (i + 1) & (s->cap - 1))
		if (!memcmp(s->k[i], key, 16) && !memcmp(s->k[i] + 16, &suffix, 2))
			return true;
	return false;
}

static void kset_free(struct kset *s)
{
	free(s->k);
	memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- df */

struct usage {
	uint64_t logical;      /* bytes of regular files, as the image shows them */
	uint64_t files;        /* after identical files are counted once */
	uint64_t chunks;       /* after identical chunks are counted once (+ inline) */
	uint64_t chunk_u, chunk_s;   /* distinct chunks: uncompressed, stored */
	uint64_t stored;       /* chunks + metadata + records + blobs + dir layers */
	uint64_t layers, packed;
};

struct sets {
	struct kset files, chunks;
};

static uint64_t du_total;
static int du_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)p, (void)flag, (void)f;
	du_total += (uint64_t)st->st_blocks * 512;
	return 0;
}

/* Bytes a directory tree takes on disk. */
static uint64_t du(const char *path)
{
	du_total = 0;
	nftw(path, du_cb, 32, FTW_PHYS);
	return du_total;
}

static uint64_t file_size_at(int dfd, const char *name)
{
	struct stat st;
	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)st.st_size : 0;
}

static int usage_packed(struct store *s, const char *hex, struct sets *k, struct usage *u)
{
	char p[PATH_MAX];
	struct pk_layer *l;
	struct pkmap m = { 0 };
	snprintf(p, sizeof p, "%s/layers/%s/layer.pk", s->root, hex);
	int r = pk_open(p, NULL, NULL, &l);
	if (r < 0)
		return r;
	if ((r = pkmap_open(p, &m)) < 0) {
		pk_close(l);
		return r;
	}
	size_t ni, ne, nc, nd;
	const struct pk_inode *ino = pkmap_sec(&m, PK_SEC_INODES, &ni);
	const struct pk_extent *ext = pkmap_sec(&m, PK_SEC_EXTENTS, &ne);
	const struct pk_chunk *chk = pkmap_sec(&m, PK_SEC_CHUNKS, &nc);
	const unsigned char *data = pkmap_sec(&m, PK_SEC_DATA, &nd);
	for (size_t i = 1; i < ni; i++) {
		if (!S_ISREG(ino[i].mode))
			continue;
		u->logical += ino[i].size;
		/* A file's identity: its bytes (inline) or its chunk list. */
		XXH3_state_t h;
		XXH3_128bits_reset(&h);
		XXH3_128bits_update(&h, &ino[i].size, 8);
		if (ino[i].flags & PK_INO_INLINE) {
			if (ino[i].data <= nd && ino[i].size <= nd - ino[i].data)
				XXH3_128bits_update(&h, data + ino[i].data, ino[i].size);
		} else {
			uint64_t n = (ino[i].size + pk_chunk_size(l) - 1) / pk_chunk_size(l);
			for (uint64_t e = ino[i].data; e < ino[i].data + n && e < ne; e++) {
				uint32_t c = ext[e].chunk;
				if (c < nc) {
					XXH3_128bits_update(&h, chk[c].key, 16);
					XXH3_128bits_update(&h, &chk[c].suffix, 2);
				} else {
					XXH3_128bits_update(&h, "hole", 4);
				}
				XXH3_128bits_update(&h, &ext[e].holes, 2);
			}
		}
		XXH128_canonical_t c;
		XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&h));
		int added = kset_add(&k->files, c.digest, 0);
		if (added < 0) {
			r = added;
			break;
		}
		if (added) {
			u->files += ino[i].size;
			if (ino[i].flags & PK_INO_INLINE)
				u->chunks += ino[i].size;
		}
	}
	for (size_t i = 0; r == 0 && i < nc; i++) {
		/* a chunk is counted once per place it is stored in */
		const struct pk_loc *loc = pk_loc_at(l, (uint32_t)i);
		uint8_t id[16];
		if (loc) {
			memcpy(id, &loc->pack, 8);
			memcpy(id + 8, &loc->off, 8);
		}
		int added = kset_add(&k->chunks, loc ? id : chk[i].key, loc ? 0xffff : chk[i].suffix);
		if (added < 0)
			r = added;
		else if (added) {
			u->chunks += chk[i].ulen;
			u->chunk_u += chk[i].ulen;
			u->chunk_s += chk[i].slen;
			u->stored += chk[i].slen;
		}
	}
	pkmap_close(&m);
	pk_close(l);
	return r;
}

/* One layer's share; shared: a set of layers already counted. */
static int usage_layer(struct store *s, const char *diffid, struct sets *k, struct kset *seen, struct usage *u)
{
	uint8_t key[16];
	char p[PATH_MAX];
	/* The DiffID's first 16 bytes name the layer in the seen set. */
	for (int i = 0; i < 16; i++)
		sscanf(digest_hex(diffid) + 2 * i, "%2hhx", &key[i]);
	int added = kset_add(seen, key, 0);
	if (added <= 0)
		return added;
	u->layers++;
	snprintf(p, sizeof p, "layers/%s", digest_hex(diffid));
	_cleanup_close_ int dfd = openat(s->fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	int packed = pkstore_layer_is_packed(s, diffid);
	if (packed < 0)
		return packed;
	if (packed) {
		u->packed++;
		u->stored += file_size_at(dfd, "layer.pk") + file_size_at(dfd, "tar-split") +
			     file_size_at(dfd, "blob") + file_size_at(dfd, "layer.json");
		return usage_packed(s, digest_hex(diffid), k, u);
	}
	/* A dir layer: nothing is shared; its tree and blob as on disk. */
	json_t *info;
	if (store_layer_info(s, diffid, &info) == 0) {
		u->logical += (uint64_t)json_integer_value(json_object_get(info, "tar_size"));
		json_decref(info);
	}
	snprintf(p, sizeof p, "%s/layers/%s", s->root, digest_hex(diffid));
	uint64_t d = du(p);
	u->stored += d;
	u->files += d;
	u->chunks += d;
	return 0;
}

/* Bytes of the programs containers' mounts keep decompressed beside the
 * packed layers (strata-fs progcache: layers/<id>/layer.pk.progs). */
static uint64_t du_progs(struct store *s)
{
	_cleanup_close_ int lfd = openat(s->fd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	uint64_t t = 0;
	if (lfd < 0 || list_sorted(lfd, &names, &n) < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char p[PATH_MAX];
		struct stat st;
		snprintf(p, sizeof p, "%s/layers/%s/layer.pk.progs", s->root, names[i]);
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			t += du(p);
	}
	free_names(names, n);
	return t;
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 1.0;
}

static json_t *usage_json(const struct usage *u)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:{s:f,s:f,s:f,s:f}}",
			 "layers", (json_int_t)u->layers, "packed_layers", (json_int_t)u->packed,
			 "logical_bytes", (json_int_t)u->logical, "file_dedup_bytes", (json_int_t)u->files,
			 "chunk_dedup_bytes", (json_int_t)u->chunks, "stored_bytes", (json_int_t)u->stored,
			 "ratios", "file_dedup", ratio(u->logical, u->files), "chunk_dedup", ratio(u->files, u->chunks),
			 "lz4", ratio(u->chunk_u, u->chunk_s), "total", ratio(u->logical, u->stored));
}

static void usage_line(const char *name, const struct usage *u)
{
	char a[32], b[32];
	printf("%-40s %10s %10s  %6.2fx %6.2fx %6.2fx %6.2fx\n", name, human_size((long long)u->logical, a, sizeof a),
	       human_size((long long)u->stored, b, sizeof b), ratio(u->logical, u->files), ratio(u->files, u->chunks),
	       ratio(u->chunk_u, u->chunk_s), ratio(u->logical, u->stored));
}

static int df(struct store *s, bool js)
{
	json_t *tags, *images = json_array();
	_cleanup_close_ int ifd = openat(s->fd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names = NULL;
	size_t n = 0;
	struct sets tk = { 0 };
	struct kset tseen = { 0 };
	struct usage total = { 0 };
	int r = store_tags(s, &tags);
	if (r < 0)
		return r;
	if (ifd >= 0 && (r = list_sorted(ifd, &names, &n)) < 0)
		goto out;
	if (!js)
		printf("%-40s %10s %10s  %7s %7s %7s %7s\n", "IMAGE", "LOGICAL", "STORED", "FILES", "CHUNKS", "LZ4",
		       "TOTAL");
	for (size_t i = 0; i < n && r == 0; i++) {
		char d[DIGEST_BUF + 8];
		if (strlen(names[i]) != 69)
			continue;
		snprintf(d, sizeof d, "sha256:%.64s", names[i]);
		json_t *cfg, *ids, *nm = json_array();
		if (store_load_image(s, d, &cfg, &ids) < 0)
			continue;
		struct sets k = { 0 };
		struct kset seen = { 0 };
		struct usage u = { 0 };
		size_t j;
		json_t *v;
		json_array_foreach(ids, j, v) {
			if (r == 0)
				r = usage_layer(s, json_string_value(v), &k, &seen, &u);
			if (r == 0)
				r = usage_layer(s, json_string_value(v), &tk, &tseen, &total);
		}
		const char *tk_name;
		json_t *tv;
		char label[128];
		snprintf(label, sizeof label, "%.12s", names[i]);
		json_object_foreach(tags, tk_name, tv)
			if (!strcmp(json_string_value(tv), d)) {
				size_t at = json_array_size(nm) ? strlen(label) : 0;
				json_array_append_new(nm, json_string(tk_name));
				snprintf(label + at, sizeof label - at, "%s%s", at ? "," : "", tk_name);
			}
		if (r == 0) {
			json_t *o = usage_json(&u);
			json_object_set_new(o, "id", json_string(d));
			json_object_set_new(o, "names", nm);
			json_array_append_new(images, o);
			if (!js)
				usage_line(label, &u);
		} else {
			json_decref(nm);
			serr(r, "system df: read the layers of", d, "run `strata system check`");
		}
		kset_free(&k.files);
		kset_free(&k.chunks);
		kset_free(&seen);
		json_decref(cfg);
	}
	if (r == 0) {
		char p[PATH_MAX], a[32], b[32];
		snprintf(p, sizeof p, "%s/layers", s->root);
		uint64_t dl = du(p);
		snprintf(p, sizeof p, "%s/chunks", s->root);
		uint64_t dc = du(p), dp = du_progs(s);
		if (js) {
			json_t *t = usage_json(&total);
			json_object_set_new(t, "disk_layers_bytes", json_integer((json_int_t)dl));
			json_object_set_new(t, "disk_chunks_bytes", json_integer((json_int_t)dc));
			json_object_set_new(t, "disk_program_copies_bytes", json_integer((json_int_t)dp));
			json_t *o = json_pack("{s:o,s:o}", "images", images, "total", t);
			images = NULL;
			print_json(o);
			json_decref(o);
		} else {
			usage_line("TOTAL (each layer and chunk once)", &total);
			char c[32];
			printf("on disk: layers %s (programs kept decompressed for containers %s), chunks %s\n",
			       human_size((long long)dl, a, sizeof a), human_size((long long)dp, c, sizeof c),
			       human_size((long long)dc, b, sizeof b));
		}
	}
out:
	free_names(names, n);
	kset_free(&tk.files);
	kset_free(&tk.chunks);
	kset_free(&tseen);
	json_decref(images);
	json_decref(tags);
	return r;
}

/* ---------------------------------------------------------------- check */

struct checker {
	struct store *s;
	struct pk_store *cs;
	struct kset ok;       /* chunks verified */
	unsigned damage;
	bool unused;          /* the layer at hand: no image names it */
	void *buf;
};

static void damaged(struct checker *c, const char *what, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void damaged(struct checker *c, const char *what, const char *fmt, ...)
{
	va_list ap;
	/* What no image uses is garbage, not damage: a removal killed halfway
	 * leaves such a layer, and the next collection removes it. */
	printf("%s: %s: ", c->unused ? "note: unused" : "damaged", what);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	puts(c->unused ? " (`strata system prune` removes it)" : "");
	if (!c->unused)
		c->damage++;
}

static void check_packed(struct checker *c, int dfd, const char *hex, const char *what)
{
	char p[PATH_MAX];
	struct pk_layer *l;
	snprintf(p, sizeof p, "%s/layers/%s/layer.pk", c->s->root, hex);
	if (pk_open(p, NULL, NULL, &l) < 0) {
		damaged(c, what, "its metadata file layer.pk is unreadable or corrupt (see above)");
		return;
	}
	uint32_t n = pk_chunk_count(l);
	for (uint32_t i = 0; i < n; i++) {
		const struct pk_chunk *k = pk_chunk_at(l, i);
		const struct pk_loc *loc = pk_loc_at(l, i);
		if (!k)
			continue;
		/* a chunk is known by where it is (a pack and offset), or
		 * by its object's name */
		uint8_t id[16];
		uint16_t sf = loc ? 0xffff : k->suffix;
		if (loc) {
			memcpy(id, &loc->pack, 8);
			memcpy(id + 8, &loc->off, 8);
		} else
			memcpy(id, k->key, 16);
		if (kset_has(&c->ok, id, sf))
			continue;
		int r = c->cs ? pk_store_get(c->cs, k, loc, c->buf) : -ENOENT;
		if (r == 0 && kset_add(&c->ok, id, sf) < 0)
			r = -ENOMEM;
		if (r < 0) {
			char name[64];
			if (loc)
				pk_loc_name(loc, name);
			else
				pk_object_name(k, name);
			damaged(c, what, "chunk %s/chunks/%s is %s", c->s->root, name,
				r == -ENOENT ? "missing" : "corrupt (its bytes do not match its key)");
		}
	}
	_cleanup_close_ int tsfd = openat(dfd, "tar-split", O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (tsfd >= 0) {
		if (ts_regen(tsfd, l, NULL, NULL, what, NULL) < 0)
			damaged(c, what, "its tar-split record is corrupt or does not match the layer: it cannot be exported");
	} else if (fstatat(dfd, "blob", &st, 0) < 0) {
		damaged(c, what, "it has neither a tar-split record nor a blob: it cannot be exported");
	}
	pk_close(l);
	if (fstatat(dfd, "diff", &st, AT_SYMLINK_NOFOLLOW) == 0)
		printf("note: %s: a dir-format tree is left beside the packed layer; `strata system migrate` removes it\n",
		       what);
}

static int check(struct store *s)
{
	struct checker c = { .s = s };
	_cleanup_free_ char *chunks = pkstore_chunks(s);
	_cleanup_close_ int lfd = openat(s->fd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names = NULL;
	size_t n = 0, packed = 0, dir = 0;
	struct stat st;
	c.buf = malloc(PK_CHUNK_MAX);
	if (!chunks || !c.buf) {
		free(c.buf);
		return -ENOMEM;
	}
	if (fstatat(s->fd, "chunks", &st, 0) == 0 && pk_store_open(chunks, false, &c.cs) < 0)
		c.cs = NULL;
	json_t *used = json_object();
	_cleanup_close_ int ifd0 = openat(s->fd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ifd0 >= 0 && list_sorted(ifd0, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			char d[DIGEST_BUF + 8];
			json_t *cfg, *ids, *v;
			size_t j;
			snprintf(d, sizeof d, "sha256:%.64s", names[i]);
			if (strlen(names[i]) != 69 || store_load_image(s, d, &cfg, &ids) < 0)
				continue;
			json_array_foreach(ids, j, v)
				json_object_set_new(used, json_string_value(v), json_true());
			json_decref(cfg);
		}
		free_names(names, n);
	}
	names = NULL;
	n = 0;
	if (lfd >= 0)
		list_sorted(lfd, &names, &n);
	for (size_t i = 0; i < n; i++) {
		char what[128], d[DIGEST_BUF + 8];
		snprintf(what, sizeof what, "layer %s", names[i]);
		snprintf(d, sizeof d, "sha256:%s", names[i]);
		_cleanup_close_ int dfd = openat(lfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		json_t *info = NULL;
		c.unused = !json_object_get(used, d);
		if (!digest_valid(d) || dfd < 0) {
			damaged(&c, what, "not a layer directory");
			continue;
		}
		if (store_layer_info(s, d, &info) < 0 || strcmp(json_string_value(json_object_get(info, "diff_id")) ?: "", d))
			damaged(&c, what, "its layer.json is missing, corrupt or names another layer");
		json_decref(info);
		if (fstatat(dfd, "layer.pk", &st, AT_SYMLINK_NOFOLLOW) == 0) {
			packed++;
			check_packed(&c, dfd, names[i], what);
			continue;
		}
		dir++;
		if (fstatat(dfd, "diff", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode))
			damaged(&c, what, "its tree diff/ is missing");
		if (fstatat(dfd, "blob", &st, AT_SYMLINK_NOFOLLOW) < 0)
			damaged(&c, what, "its blob is missing: it cannot be exported");
	}
	free_names(names, n);
	json_decref(used);
	c.unused = false;
	/* Every image's layers are there. */
	_cleanup_close_ int ifd = openat(s->fd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ifd >= 0 && list_sorted(ifd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			char d[DIGEST_BUF + 8];
			json_t *cfg, *ids, *v;
			size_t j;
			if (strlen(names[i]) != 69)
				continue;
			snprintf(d, sizeof d, "sha256:%.64s", names[i]);
			if (store_load_image(s, d, &cfg, &ids) < 0) {
				damaged(&c, d, "its config is unreadable");
				continue;
			}
			json_array_foreach(ids, j, v)
				if (!store_has_layer(s, json_string_value(v)))
					damaged(&c, d, "its layer %s is missing", json_string_value(v));
			json_decref(cfg);
		}
		free_names(names, n);
	}
	/* A pack without an index is a writer's that was killed (or one still
	 * writing): no layer can name its chunks, and the collector removes it. */
	_cleanup_close_ int pfd = openat(s->fd, "chunks/packs", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd >= 0 && list_sorted(pfd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			size_t len = strlen(names[i]);
			char idx[64];
			if (len != 21 || strcmp(names[i] + 16, ".pack"))
				continue;
			snprintf(idx, sizeof idx, "%.16s.idx", names[i]);
			if (fstatat(pfd, idx, &st, AT_SYMLINK_NOFOLLOW) < 0)
				printf("note: unused: pack %s/chunks/packs/%s has no index: a killed writer's, or one still "
				       "writing (`strata system prune` removes it)\n", s->root, names[i]);
		}
		free_names(names, n);
	}
	printf("%zu packed layers (%zu chunks checked), %zu dir layers: %s\n", packed, c.ok.n, dir,
	       c.damage ? "DAMAGED" : "ok");
	if (c.damage)
		serr(0, "system check", s->root, "%u problems above; remove the damaged images with `strata rmi` and import them again",
		     c.damage);
	kset_free(&c.ok);
	pk_store_close(c.cs);
	free(c.buf);
	return c.damage ? 1 : 0;
}

/* ---------------------------------------------------------------- migrate */

/* The record of a dir layer's tar, made from its blob. */
static int record_from_blob(int dfd, const char *what)
{
	char tmp[64];
	snprintf(tmp, sizeof tmp, "tar-split.tmp.%d", (int)getpid());
	_cleanup_close_ int bfd = openat(dfd, "blob", O_RDONLY | O_CLOEXEC);
	_cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (bfd < 0 || fd < 0)
		return -errno;
	struct ts_writer *w;
	int r = ts_writer_new(fd, PK_CHUNK_DEFAULT, &w);
	if (r < 0)
		return r;
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	char buf[1 << 16];
	la_ssize_t n = -1;
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_raw(a);
	if (archive_read_open_fd(a, bfd, 1 << 16) == ARCHIVE_OK && archive_read_next_header(a, &e) == ARCHIVE_OK)
		while ((n = archive_read_data(a, buf, sizeof buf)) > 0 && (r = ts_feed(w, buf, (size_t)n)) == 0)
			;
	archive_read_free(a);
	if (r == 0 && n < 0)
		r = -EIO;
	if (r == 0)
		r = ts_finish(w);
	ts_writer_free(w);
	if (r >= 0 && renameat(dfd, tmp, dfd, "tar-split") < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dfd, tmp, 0);
		serr(r, "system migrate: record the tar of", what, "its blob is unreadable");
	}
	return r < 0 ? r : 0;
}

static int migrate(struct store *s)
{
	_cleanup_close_ int lfd = openat(s->fd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names = NULL;
	size_t n = 0, done = 0, already = 0;
	int r = 0;
	if (lfd >= 0 && (r = list_sorted(lfd, &names, &n)) < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		char what[128], d[DIGEST_BUF + 8], rel[128];
		struct stat st;
		snprintf(what, sizeof what, "layer %s", names[i]);
		snprintf(d, sizeof d, "sha256:%s", names[i]);
		snprintf(rel, sizeof rel, "layers/%s", names[i]);
		_cleanup_close_ int dfd = openat(lfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (!digest_valid(d) || dfd < 0)
			continue;
		bool has_pk = fstatat(dfd, "layer.pk", &st, AT_SYMLINK_NOFOLLOW) == 0;
		bool has_diff = fstatat(dfd, "diff", &st, AT_SYMLINK_NOFOLLOW) == 0;
		bool has_blob = fstatat(dfd, "blob", &st, AT_SYMLINK_NOFOLLOW) == 0;
		bool has_ts = fstatat(dfd, "tar-split", &st, AT_SYMLINK_NOFOLLOW) == 0;
		if (has_pk && !has_diff && (has_ts != has_blob)) {
			already++;
			continue;
		}
		if (!has_pk && !has_diff) {
			serr(0, "system migrate", what, "has neither a tree nor a packed layer; `strata system check` lists the damage");
			continue;
		}
		if (!has_pk && !has_blob && !has_ts) {
			serr(0, "system migrate", what, "has no blob to rebuild its tar from; left as it is");
			continue;
		}
		/* Each step leaves a layer that works: the record beside the
		 * blob, the packed file beside the tree (it wins), then the
		 * blob or the record goes, then the tree. */
		if (!has_ts && has_blob && (r = record_from_blob(dfd, what)) < 0)
			break;
		r = pkstore_pack_layer(s, dfd, rel, d, false, NULL, what);
		if (r < 0)
			serr(r, "system migrate: pack", what, "check free space of the store");
		else
			done++;
		/* the kill-9 window of pk_write: its temporary file */
		char **leaf;
		size_t k;
		if (list_sorted(dfd, &leaf, &k) == 0) {
			for (size_t j = 0; j < k; j++)
				if (strstr(leaf[j], ".tmp."))
					unlinkat(dfd, leaf[j], 0);
			free_names(leaf, k);
		}
	}
	free_names(names, n);
	if (r == 0)
		printf("%zu layers migrated, %zu already packed\n", done, already);
	return r;
}

/* ---------------------------------------------------------------- command */

int cmd_system(const char *root, int argc, char **argv)
{
	const char *sub = argc > 0 ? argv[0] : "";
	bool js = argc > 1 && !strcmp(argv[1], "--json");
	struct store s;
	int r;
	if (!strcmp(sub, "df") && argc <= 2 && (argc < 2 || js)) {
		if ((r = store_open(&s, root, false)) < 0)
			return r;
		r = df(&s, js);
	} else if (!strcmp(sub, "check") && argc == 1) {
		if ((r = store_open(&s, root, false)) < 0)
			return r;
		r = check(&s);
	} else if (!strcmp(sub, "migrate") && argc == 1) {
		if ((r = store_open(&s, root, true)) < 0)
			return r;
		r = migrate(&s);
		if (r == 0)
			r = store_gc(&s);
	} else if (!strcmp(sub, "prune") && argc == 1) {
		struct pk_gc_stats gs = { 0 };
		if ((r = store_open(&s, root, true)) < 0)
			return r;
		/* store_gc collects chunks as its last step; again here for the figures */
		r = store_gc(&s);
		if (r == 0)
			r = pkstore_gc(&s, &gs);
		if (r == 0)
			printf("%llu chunks kept, %llu removed (%llu bytes)\n", (unsigned long long)gs.kept,
			       (unsigned long long)gs.removed, (unsigned long long)gs.removed_bytes);
	} else {
		susage("usage: strata system df [--json] | check | migrate | prune");
		return 2;
	}
	store_close(&s);
	return r;
}
