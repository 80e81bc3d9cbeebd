/* pkstore: the store's layers as packed layers (pkstore.h). */
#include "pkstore.h"

#include "err.h"
#include "fsutil.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

bool pkstore_packed(void)
{
	static int warned;
	const char *v = getenv("STRATA_STORE_FORMAT");
	if (!v || !*v)
		return PKSTORE_DEFAULT_PACKED;
	if (!strcmp(v, "packed"))
		return true;
	if (!strcmp(v, "dir"))
		return false;
	if (!warned++)
		susage("STRATA_STORE_FORMAT=%s: unknown layer format (packed or dir); using %s", v,
		       PKSTORE_DEFAULT_PACKED ? "packed" : "dir");
	return PKSTORE_DEFAULT_PACKED;
}

char *pkstore_chunks(struct store *s)
{
	char *p;
	return asprintf(&p, "%s/chunks", s->root) < 0 ? NULL : p;
}

int pkstore_layer_is_packed(struct store *s, const char *diffid)
{
	char p[128];
	struct stat st;
	if (!digest_valid(diffid))
		return -EINVAL;
	snprintf(p, sizeof p, "layers/%s/layer.pk", digest_hex(diffid));
	if (fstatat(s->fd, p, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	return errno == ENOENT ? 0 : -errno;
}

int pkstore_open_layer(struct store *s, const char *diffid, struct pk_layer **l, int *tsfd)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/layers/%s/layer.pk", s->root, digest_hex(diffid));
	_cleanup_free_ char *chunks = pkstore_chunks(s);
	if (!chunks)
		return -ENOMEM;
	int r = pk_open(p, chunks, NULL, l);
	if (r < 0)
		return r;
	snprintf(p, sizeof p, "layers/%s/tar-split", digest_hex(diffid));
	*tsfd = openat(s->fd, p, O_RDONLY | O_CLOEXEC);
	if (*tsfd < 0) {
		r = -errno;
		serr(r, "open tar-split record", p, "the layer cannot be exported; `strata system check` lists the damage");
		pk_close(*l);
		*l = NULL;
	}
	return r;
}

int pkstore_layer_tree(struct store *s, const char *diffid)
{
	char name[64], p[PATH_MAX], dir[PATH_MAX + 64];
	struct pk_layer *l;
	_cleanup_close_ int tfd = store_mktemp(s, name);
	if (tfd < 0)
		return tfd;
	snprintf(p, sizeof p, "%s/layers/%s/layer.pk", s->root, digest_hex(diffid));
	snprintf(dir, sizeof dir, "%s/%s/tree", s->root, name);
	_cleanup_free_ char *chunks = pkstore_chunks(s);
	if (!chunks)
		return -ENOMEM;
	int r = pk_open(p, chunks, NULL, &l);
	if (r < 0)
		return r;
	r = pk_unpack(l, dir);
	pk_close(l);
	if (r < 0)
		return r;
	r = openat(tfd, "tree", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return r < 0 ? -errno : r;
}

int pkmap_open(const char *path, struct pkmap *m)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	memset(m, 0, sizeof *m);
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if ((size_t)st.st_size < sizeof(struct pk_super))
		return -EBADMSG;
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	m->map = map;
	m->size = (size_t)st.st_size;
	m->sb = map;
	for (int i = 0; i < PK_SEC_COUNT; i++) {
		const struct pk_section *c = &m->sb->sec[i];
		if (c->off > m->size || c->size > m->size - c->off || (c->rec_size && c->off % 8)) {
			pkmap_close(m);
			return -EBADMSG;
		}
	}
	return 0;
}

void pkmap_close(struct pkmap *m)
{
	if (m->map)
		munmap(m->map, m->size);
	memset(m, 0, sizeof *m);
}

const void *pkmap_sec(const struct pkmap *m, int i, size_t *count)
{
	const struct pk_section *c = &m->sb->sec[i];
	*count = c->rec_size ? c->size / c->rec_size : 0;
	return (const char *)m->map + c->off;
}

static int resolve_path(struct pk_layer *l, const char *path, uint32_t *ino)
{
	uint32_t cur = pk_root(l);
	for (const char *c = path; *c;) {
		const char *e = strchr(c, '/');
		size_t n = e ? (size_t)(e - c) : strlen(c);
		struct pk_dirent de;
		int r = pk_lookup(l, cur, c, n, &de);
		if (r != PK_FOUND)
			return r < 0 ? r : -ENOENT;
		cur = de.ino;
		c += n + (e != NULL);
	}
	*ino = cur;
	return 0;
}

int pkstore_check_refs(const char *pkpath, const struct ts_writer *w)
{
	const struct ts_ref *refs;
	const uint8_t (*keys)[16];
	size_t nrefs;
	struct pk_layer *l;
	struct pkmap m;
	ts_refs(w, &refs, &nrefs, &keys);
	int r = pk_open(pkpath, NULL, NULL, &l);
	if (r < 0)
		return r;
	if ((r = pkmap_open(pkpath, &m)) < 0) {
		pk_close(l);
		return r;
	}
	size_t ni, ne, nc;
	const struct pk_inode *ino = pkmap_sec(&m, PK_SEC_INODES, &ni);
	const struct pk_extent *ext = pkmap_sec(&m, PK_SEC_EXTENTS, &ne);
	const struct pk_chunk *chk = pkmap_sec(&m, PK_SEC_CHUNKS, &nc);
	_cleanup_free_ unsigned char *buf = malloc(PK_CHUNK_SIZE);
	static const unsigned char zero[PK_CHUNK_SIZE];
	int ok = buf ? 1 : -ENOMEM;
	for (size_t i = 0; i < nrefs && ok == 1; i++) {
		uint32_t n;
		struct pk_attr a;
		if (resolve_path(l, refs[i].path, &n) < 0 || n >= ni || pk_getattr(l, n, &a) < 0 ||
		    !S_ISREG(a.mode) || a.size != refs[i].size) {
			ok = 0;
			break;
		}
		uint64_t pieces = (refs[i].size + PK_CHUNK_SIZE - 1) / PK_CHUNK_SIZE;
		for (uint64_t p = 0; p < pieces && ok == 1; p++) {
			uint32_t len = refs[i].size - p * PK_CHUNK_SIZE > PK_CHUNK_SIZE ? PK_CHUNK_SIZE
				       : (uint32_t)(refs[i].size - p * PK_CHUNK_SIZE);
			uint8_t have[16];
			const uint8_t *want = keys[refs[i].first + p];
			if (ino[n].flags & PK_INO_INLINE) {
				/* inline: its bytes are in the metadata file itself */
				ssize_t k = pk_read(l, n, 0, len, buf);
				if (k != (ssize_t)len) {
					ok = 0;
					break;
				}
				pk_key(buf, len, have);
			} else {
				uint64_t e = ino[n].data + p;
				if (ino[n].data >= ne || e >= ne) {
					ok = 0;
					break;
				}
				if (ext[e].chunk == PK_HOLE)
					pk_key(zero, len, have);
				else if (ext[e].chunk < nc && chk[ext[e].chunk].ulen == len)
					memcpy(have, chk[ext[e].chunk].key, 16);
				else
					memset(have, 0, sizeof have), ok = 0;
			}
			if (memcmp(have, want, 16))
				ok = 0;
		}
	}
	pkmap_close(&m);
	pk_close(l);
	return ok;
}

/* ---------------------------------------------------------------- import */

struct pkstore_import {
	struct store *s;
	bool unlocked;
	char dir[64];          /* tmp/<owner>/N holding the record meanwhile */
	int dirfd, fd;
	struct ts_writer *w;
};

static int tap_data(void *ctx, const void *buf, size_t len)
{
	struct pkstore_import *pi = ctx;
	return ts_feed(pi->w, buf, len);
}

struct sha_sink {
	struct sha256 h;
	uint64_t n;
};

static int sha_sink(void *ctx, const void *buf, size_t len)
{
	struct sha_sink *k = ctx;
	sha256_update(&k->h, buf, len);
	k->n += len;
	return 0;
}

/* Rebuild the tar from record and layer and compare it with the DiffID:
 * 1 equal, 0 different (or not rebuildable), -errno. */
int pkstore_verify(const char *pkpath, int tsfd, const char *diffid, const char *what)
{
	struct pk_layer *l;
	int r = pk_open(pkpath, NULL, NULL, &l);
	if (r < 0)
		return r;
	struct sha_sink k = { 0 };
	char got[DIGEST_BUF];
	if ((r = sha256_init(&k.h)) < 0) {
		pk_close(l);
		return r;
	}
	r = ts_regen(tsfd, l, sha_sink, &k, NULL, NULL);
	sha256_final(&k.h, got);
	pk_close(l);
	if (r == -ENOMEM)
		return r;
	if (r < 0 || strcmp(got, diffid)) {
		sdebug("%s: the tar rebuilt from the packed layer differs from the DiffID (%s); its blob is kept",
		       what, r < 0 ? strerror(-r) : got);
		return 0;
	}
	return 1;
}

int pkstore_set_format(int dirfd, const char *tar)
{
	_cleanup_free_ char *buf = NULL;
	int r = read_file_at(dirfd, "layer.json", 1 << 20, &buf, NULL);
	if (r < 0)
		return r;
	json_t *j = json_loads(buf, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return -EBADMSG;
	}
	json_object_set_new(j, "format", json_string("packed"));
	json_object_set_new(j, "tar", json_string(tar));
	if (!strcmp(tar, "tar-split") && json_is_string(json_object_get(j, "diff_id"))) {
		/* The blob is gone: export writes the plain tar, whose digest is
		 * the DiffID; inspect shows what export writes. */
		if (!json_object_get(j, "imported_digest"))
			json_object_set(j, "imported_digest", json_object_get(j, "digest"));
		json_object_set(j, "digest", json_object_get(j, "diff_id"));
		json_object_set_new(j, "media_type", json_string(oci_layer_media_type(COMP_NONE)));
		json_object_set(j, "size", json_object_get(j, "tar_size"));
	}
	_cleanup_free_ char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	json_decref(j);
	return s ? write_file_atomic(dirfd, "layer.json", s, strlen(s)) : -ENOMEM;
}

/* Pack dir/diff into dir/layer.pk and make the record and the metadata
 * the layer; dir/diff and dir/blob go when the record rebuilds the tar. */
/* Rootless trees keep every file readable by the store's user (unpack adds
 * owner access) except whiteout markers, made with mode 0; pk_write reads
 * every regular file, so those get owner read as the rest. */
static int fix_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)f;
	if (flag == FTW_F && S_ISREG(st->st_mode) && !(st->st_mode & S_IRUSR) && st->st_uid == geteuid())
		chmod(p, (st->st_mode & 07777) | S_IRUSR | S_IWUSR);
	return 0;
}

/* A layer file records its chunk store. Recorded as "chunks", relative to
 * the layer's directory (what pk_write records when it is given no store),
 * with that name a symlink to the store's chunks/, a store moved or copied
 * elsewhere keeps working. The link is absolute while the layer is written
 * and checked (in tmp/<owner>/<n>/ during an import), then "../../chunks",
 * right where the layer lives: layers/<hex>/. */
#define CHUNKS_LINK "chunks"
#define CHUNKS_FROM_LAYER "../../chunks"

static int link_chunks(int dfd, const char *target)
{
	char cur[PATH_MAX];
	ssize_t n = readlinkat(dfd, CHUNKS_LINK, cur, sizeof cur - 1);
	if (n >= 0 && (cur[n] = 0, !strcmp(cur, target)))
		return 0;
	unlinkat(dfd, CHUNKS_LINK ".new", 0);
	if (symlinkat(target, dfd, CHUNKS_LINK ".new") < 0 ||
	    renameat(dfd, CHUNKS_LINK ".new", dfd, CHUNKS_LINK) < 0)
		return -errno;
	return 0;
}

int pkstore_pack_layer(struct store *s, int dfd, const char *dir, const char *diffid, bool unlocked,
		       const struct ts_writer *w, const char *what)
{
	char src[PATH_MAX], dest[PATH_MAX];
	_cleanup_free_ char *chunks = pkstore_chunks(s);
	if (!chunks)
		return -ENOMEM;
	snprintf(src, sizeof src, "%s/%s/diff", s->root, dir);
	snprintf(dest, sizeof dest, "%s/%s/layer.pk", s->root, dir);
	/* A GC (exclusive store lock) must not run while chunks are written
	 * that no layer file names yet. */
	if (unlocked) {
		int r = store_relock(s, false);
		if (r < 0)
			return r;
	}
	struct pk_write_opts o = { .chunks = NULL };
	struct pk_write_stats st;
	struct stat sb;
	int r = 0;
	/* A migration killed after this step finds the layer file in place. */
	if (fstatat(dfd, "layer.pk", &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		if (s->rootless)
			nftw(src, fix_cb, 32, FTW_PHYS);
		if (mkdirat(s->fd, "chunks", 0755) < 0 && errno != EEXIST)
			r = -errno;
		else
			r = link_chunks(dfd, chunks);
		if (r < 0)
			serr(r, "link chunk store of", what, "check the store's permissions");
		else
			r = pk_write(src, dest, &o, &st);
	}
	if (unlocked)
		store_unlock(s);
	if (r < 0)
		return r;
	_cleanup_close_ int tsfd = openat(dfd, "tar-split", O_RDONLY | O_CLOEXEC);
	if (tsfd < 0)
		return -errno;
	/* The import's record is checked by the chunk keys pk_write named
	 * (no chunk is read); migrate's by rebuilding the tar. */
	int ok = w ? pkstore_check_refs(dest, w) : pkstore_verify(dest, tsfd, diffid, what);
	if (ok == 0 && w)
		sdebug("%s: the packed layer does not hold every body of the tar as recorded; its blob is kept", what);
	if (ok < 0)
		return ok;
	if (ok) {
		if (unlinkat(dfd, "blob", 0) < 0 && errno != ENOENT)
			return -errno;
	} else {
		unlinkat(dfd, "tar-split", 0);
	}
	if ((r = pkstore_set_format(dfd, ok ? "tar-split" : "blob")) < 0)
		return r;
	if ((r = link_chunks(dfd, CHUNKS_FROM_LAYER)) < 0) {
		serr(r, "link chunk store of", what, "check the store's permissions");
		return r;
	}
	return rm_rf_at(dfd, "diff");
}

static int tap_done(void *ctx, struct store *s, int tfd, const char *tmpname, const struct layer_got *got)
{
	struct pkstore_import *pi = ctx;
	int r = ts_finish(pi->w);
	if (r >= 0 && renameat(pi->dirfd, "tar-split", tfd, "tar-split") < 0)
		r = -errno;
	if (r < 0) {
		serr(r, "import: write tar-split record in", s->root, "check free space of the store");
		return r;
	}
	char what[128];
	snprintf(what, sizeof what, "layer %s", got->diffid);
	r = pkstore_pack_layer(s, tfd, tmpname, got->diffid, pi->unlocked, pi->w, what);
	if (r < 0)
		serr(r, "import: pack", what, "check free space of the store");
	return r;
}

int pkstore_import_new(struct store *s, bool unlocked, struct pkstore_import **out, struct layer_tap *tap)
{
	struct pkstore_import *pi = calloc(1, sizeof *pi);
	if (!pi)
		return -ENOMEM;
	pi->s = s;
	pi->unlocked = unlocked;
	pi->fd = -1;
	pi->dirfd = store_mktemp(s, pi->dir);
	int r = pi->dirfd;
	if (r >= 0) {
		pi->fd = openat(pi->dirfd, "tar-split", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		r = pi->fd < 0 ? -errno : ts_writer_new(pi->fd, &pi->w);
	}
	if (r < 0) {
		serr(r, "import: create temporary file in", s->root, "check free space and permissions of the store");
		pkstore_import_free(pi);
		return r;
	}
	*tap = (struct layer_tap){ .data = tap_data, .done = tap_done, .ctx = pi };
	*out = pi;
	return 0;
}

void pkstore_import_free(struct pkstore_import *pi)
{
	if (!pi)
		return;
	ts_writer_free(pi->w);
	if (pi->fd >= 0)
		close(pi->fd);
	if (pi->dirfd >= 0) {
		close(pi->dirfd);
		rm_rf_at(pi->s->fd, pi->dir);
	}
	free(pi);
}

/* ---------------------------------------------------------------- gc */

static int add_live(char ***live, size_t *n, size_t *cap, const char *path)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		char **p = realloc(*live, c * sizeof *p);
		if (!p)
			return -ENOMEM;
		*live = p;
		*cap = c;
	}
	if (!((*live)[*n] = strdup(path)))
		return -ENOMEM;
	(*n)++;
	return 0;
}

/* Every layer.pk in DIR/<name>/ (depth 1), or DIR/<a>/<b>/ (depth 2). */
static int scan(struct store *s, const char *dir, int depth, char ***live, size_t *n, size_t *cap)
{
	_cleanup_close_ int fd = openat(s->fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t k;
	int r = 0;
	if (fd < 0 || list_sorted(fd, &names, &k) < 0)
		return 0;
	for (size_t i = 0; i < k && r == 0; i++) {
		char p[PATH_MAX];
		struct stat st;
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		if (depth > 1) {
			r = scan(s, p, depth - 1, live, n, cap);
			continue;
		}
		strncat(p, "/layer.pk", sizeof p - strlen(p) - 1);
		if (fstatat(s->fd, p, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			char abs[PATH_MAX + 64];
			snprintf(abs, sizeof abs, "%s/%s", s->root, p);
			r = add_live(live, n, cap, abs);
		}
	}
	free_names(names, k);
	return r;
}

int pkstore_gc(struct store *s, struct pk_gc_stats *out)
{
	struct stat st;
	if (fstatat(s->fd, "chunks", &st, 0) < 0)
		return 0;
	_cleanup_free_ char *chunks = pkstore_chunks(s);
	char **live = NULL;
	size_t n = 0, cap = 0;
	/* Pending layers of running imports (tmp/<owner>/<n>/) are live too:
	 * their chunks are written, their layers not yet in place. */
	int r = chunks ? scan(s, "layers", 1, &live, &n, &cap) : -ENOMEM;
	if (r == 0)
		r = scan(s, "tmp", 2, &live, &n, &cap);
	if (r == 0) {
		struct pk_gc_stats gs;
		r = pk_gc(chunks, live, (int)n, &gs);
		if (out)
			*out = gs;
		if (r == 0 && gs.removed)
			sdebug("gc: %llu chunks removed (%llu bytes), %llu kept", (unsigned long long)gs.removed,
			       (unsigned long long)gs.removed_bytes, (unsigned long long)gs.kept);
	}
	for (size_t i = 0; i < n; i++)
		free(live[i]);
	free(live);
	return r;
}
