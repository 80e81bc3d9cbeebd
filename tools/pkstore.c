/* pkstore: the store's layers as packed layers (pkstore.h). */
#include "pkstore.h"

#include "err.h"
#include "fsutil.h"
#include "unpack.h"
#include "whiteout.h"

#include <archive.h>
#include <archive_entry.h>

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
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
	uint32_t chunk = pk_chunk_size(l);
	_cleanup_free_ unsigned char *buf = malloc(chunk);
	static const unsigned char zero[PK_CHUNK_MAX];
	int ok = buf ? 1 : -ENOMEM;
	for (size_t i = 0; i < nrefs && ok == 1; i++) {
		uint32_t n;
		struct pk_attr a;
		if (resolve_path(l, refs[i].path, &n) < 0 || n >= ni || pk_getattr(l, n, &a) < 0 ||
		    !S_ISREG(a.mode) || a.size != refs[i].size) {
			ok = 0;
			break;
		}
		uint64_t pieces = (refs[i].size + chunk - 1) / chunk;
		for (uint64_t p = 0; p < pieces && ok == 1; p++) {
			uint32_t len = refs[i].size - p * chunk > chunk ? chunk : (uint32_t)(refs[i].size - p * chunk);
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

/* ---------------------------------------------------------------- entries */

/* An import's tar entries go straight into the packed layer writer
 * (pk_build): no tree in tmp/. The rules are unpack_archive's (unpack.c),
 * so the layer equals packing the tree it would have made: names cleaned
 * and refused when they leave the layer, parents made as needed, a later
 * member replacing an earlier one, hard links only to earlier files of the
 * layer, overlay bookkeeping xattrs dropped (an opaque one becomes the
 * ".wh..wh..opq" marker), whiteouts as char 0/0 (root) or ".wh.NAME"
 * (rootless), and in a rootless store the owner and mode of each file and
 * directory kept in user.containers.override_stat, device nodes left out. */
struct pkent {
	struct pk_build *b;
	const char *what;
	bool rootless;
	int tfd;
	uint32_t uid, gid;
	struct timespec now;
	struct skipped_devs skipped;   /* rootless: device nodes left out */
};

static void ent_report(const struct pkent *c, int r, const char *path, const char *why)
{
	char op[PATH_MAX + 64];
	snprintf(op, sizeof op, "import: unpack %s entry", c->what);
	serr(r, op, path, "%s", why);
}

/* Where r says the store is full, that said once more with the mount (the
 * chunk store reported the failed write itself): whether it did. */
static bool ent_full_report(const struct pkent *c, int r, const char *path)
{
	char hint[PATH_MAX + 256], op[PATH_MAX + 64];
	if (!fs_full_hint(c->tfd, r, hint, sizeof hint))
		return false;
	snprintf(op, sizeof op, "import: unpack %s entry", c->what);
	serr(r, op, path, "%s", hint);
	return true;
}

/* A failure of the tar's reader: the input is broken, or writing the blob
 * into the store failed (the read callback keeps that errno). */
static int ent_read_failure(const struct pkent *c, struct archive *a, const char *path)
{
	int e = archive_errno(a);
	const char *why = archive_error_string(a);
	char op[PATH_MAX + 64];
	snprintf(op, sizeof op, "import: %s %s", path ? "unpack" : "read", c->what);
	if (ent_full_report(c, -e, path))
		return -e;
	serr(0, op, path, "%s: the archive is truncated or corrupt; fetch it again", why ? why : "unreadable tar data");
	return -EIO;
}

static int ent_path_error(const struct pkent *c, int r, const char *raw)
{
	if (pk_build_failed(c->b)) {
		/* storing the previous file's data failed, reported by the store */
		ent_full_report(c, r, NULL);
		return r;
	}
	if (r == -EXDEV || r == -ELOOP)
		ent_report(c, r, raw, "a parent is a symlink that leads out of the layer; the image is malformed or hostile");
	else if (r == -ENOMEM)
		ent_report(c, r, raw, "out of memory");
	else
		ent_report(c, r, raw, "cannot open or create the parent directory; is a parent a file or a dangling symlink?");
	return r;
}

static int ent_override(struct pkent *c, struct pk_bnode *n, uint32_t uid, uint32_t gid, uint32_t perm)
{
	char v[64];
	int k = snprintf(v, sizeof v, "%u:%u:0%o", uid, gid, perm & 07777);
	return pk_build_xattr(c->b, n, OVERRIDE_STAT_XATTR, v, (size_t)k);
}

/* The attributes an entry gets in the store. */
static void ent_attr(const struct pkent *c, struct archive_entry *e, uint32_t type, struct pk_build_attr *a)
{
	uint32_t perm = archive_entry_perm(e) & 07777;
	memset(a, 0, sizeof *a);
	a->mtime = (struct timespec){ archive_entry_mtime(e), archive_entry_mtime_nsec(e) };
	a->atime = a->mtime;
	if (type != S_IFDIR && archive_entry_atime_is_set(e))
		a->atime = (struct timespec){ archive_entry_atime(e), archive_entry_atime_nsec(e) };
	if (!c->rootless) {
		a->uid = (uint32_t)archive_entry_uid(e);
		a->gid = (uint32_t)archive_entry_gid(e);
		a->mode = type | (type == S_IFLNK ? 0777 : perm);
		return;
	}
	/* the user keeps access on disk; the image's owner and mode are in the
	 * override xattr (set by the caller) */
	a->uid = c->uid;
	a->gid = c->gid;
	switch (type) {
	case S_IFDIR: a->mode = type | (perm & 0777) | 0700; break;
	case S_IFREG: a->mode = type | (perm & 0777) | 0600; break;
	case S_IFLNK: a->mode = type | 0777; break;
	default: a->mode = type | 0600; break;
	}
}

/* A file made by the importer itself (whiteouts and opaque markers): its
 * owner, mode 0 (0600 rootless: the store's user reads every file), now. */
static void ent_own_attr(const struct pkent *c, uint32_t type, struct pk_build_attr *a)
{
	memset(a, 0, sizeof *a);
	a->mode = type | (c->rootless && type == S_IFREG ? 0600 : 0);
	a->uid = c->uid;
	a->gid = c->gid;
	a->mtime = a->atime = c->now;
}

static int ent_xattrs(struct pkent *c, struct archive_entry *e, struct pk_bnode *n, const char *path,
		      const char *raw, bool dir)
{
	const char *name;
	const void *val;
	size_t sz;
	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &name, &val, &sz) == ARCHIVE_OK) {
		int r = 0;
		if (overlay_private(name)) {
			size_t nl = strlen(name);
			if (dir && nl >= 14 && !strcmp(name + nl - 14, "overlay.opaque") && sz == 1 &&
			    *(const char *)val == 'y') {
				char m[PATH_MAX + 16];
				struct pk_build_attr a;
				struct pk_bnode *mn;
				snprintf(m, sizeof m, "%s%s" WH_OPQ_MARKER, path, path[0] ? "/" : "");
				ent_own_attr(c, S_IFREG, &a);
				r = pk_build_lookup(c->b, m);
				if (r == 0)
					r = pk_build_add(c->b, m, &a, NULL, &mn);
			}
			sdebug("%s: overlay xattr %s not kept", raw, name);
		} else if (c->rootless && (!strncmp(name, "trusted.", 8) || !strncmp(name, "security.", 9))) {
			/* an unprivileged store cannot hold them; the image works without */
			sdebug("%s: xattr %s not kept in a rootless store", raw, name);
		} else {
			r = pk_build_xattr(c->b, n, name, val, sz);
		}
		if (r < 0) {
			ent_report(c, r, raw, "setting an extended attribute failed");
			return r;
		}
	}
	return 0;
}

static int ent_skip(struct pkent *c, const char *path)
{
	int r = pk_build_remove(c->b, path);
	if (r < 0)
		return r;
	return skipped_add(&c->skipped, path);
}

static int ent_one(struct pkent *c, struct archive *a, struct archive_entry *e)
{
	char path[PATH_MAX];
	const char *raw = archive_entry_pathname(e);
	struct pk_build_attr at;
	struct pk_bnode *n;
	int r;

	if (!raw) {
		ent_report(c, -EINVAL, "(unnamed)", "a tar member without a name; the archive is corrupt");
		return -EINVAL;
	}
	r = clean_member_path(raw, path, sizeof path);
	if (r == -EPERM) {
		ent_report(c, 0, raw, "refusing a member with an absolute path or '..': it would escape the layer; the image is malformed or hostile");
		return -EPERM;
	}
	if (r < 0) {
		ent_report(c, r, raw, "member name too long");
		return r;
	}
	const char *hl = archive_entry_hardlink(e);
	uint32_t type = archive_entry_filetype(e);
	if (!path[0]) {
		if (hl || type != AE_IFDIR) {
			ent_report(c, -EINVAL, raw, "the layer root must be a directory");
			return -EINVAL;
		}
		ent_attr(c, e, S_IFDIR, &at);
		if ((r = pk_build_add(c->b, "", &at, NULL, &n)) == 0 && c->rootless)
			r = ent_override(c, n, (uint32_t)archive_entry_uid(e), (uint32_t)archive_entry_gid(e),
					 archive_entry_perm(e));
		return r < 0 ? ent_path_error(c, r, raw) : 0;
	}
	if (hl) {
		char tpath[PATH_MAX];
		if (clean_member_path(hl, tpath, sizeof tpath) < 0 || !tpath[0]) {
			ent_report(c, 0, raw, "refusing a hard link whose target escapes the layer");
			return -EPERM;
		}
		if (skipped_has(&c->skipped, tpath))
			return ent_skip(c, path) < 0 ? ent_path_error(c, -ENOMEM, raw) : 0;
		r = pk_build_link(c->b, path, tpath);
		if (r == -ENOENT || r == -ENOTDIR) {
			ent_report(c, -ENOENT, raw, "hard link to a member that is not an earlier file of this layer");
			return -ENOENT;
		}
		return r < 0 ? ent_path_error(c, r, raw) : 0;
	}
	switch (type) {
	case AE_IFDIR:
		ent_attr(c, e, S_IFDIR, &at);
		if ((r = pk_build_add(c->b, path, &at, NULL, &n)) < 0)
			return ent_path_error(c, r, raw);
		if (c->rootless && (r = ent_override(c, n, (uint32_t)archive_entry_uid(e), (uint32_t)archive_entry_gid(e),
						     archive_entry_perm(e))) < 0)
			return ent_path_error(c, r, raw);
		return ent_xattrs(c, e, n, path, raw, true);
	case AE_IFREG: {
		la_int64_t size = archive_entry_size(e);
		if (size < 0) {
			ent_report(c, -EINVAL, raw, "a negative file size; the archive is corrupt");
			return -EINVAL;
		}
		ent_attr(c, e, S_IFREG, &at);
		at.size = (uint64_t)size;
		if ((r = pk_build_add(c->b, path, &at, NULL, &n)) < 0) {
			if (r == -EFBIG)
				ent_report(c, r, raw, "the file is larger than any file system holds; the archive is corrupt");
			return r == -EFBIG ? r : ent_path_error(c, r, raw);
		}
		const void *buf;
		size_t len;
		la_int64_t off;
		int ar;
		while ((ar = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK)
			if (len && (r = pk_build_data(c->b, (uint64_t)off, buf, len)) < 0) {
				if (r == -EINVAL)
					ent_report(c, r, raw, "file data out of order or past the file's size; the archive is corrupt");
				else
					ent_full_report(c, r, raw);
				return r;
			}
		if (ar != ARCHIVE_EOF)
			return ent_read_failure(c, a, raw);
		if (c->rootless && (r = ent_override(c, n, (uint32_t)archive_entry_uid(e), (uint32_t)archive_entry_gid(e),
						     archive_entry_perm(e))) < 0)
			return ent_path_error(c, r, raw);
		return ent_xattrs(c, e, n, path, raw, false);
	}
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(e);
		if (!target || !*target) {
			ent_report(c, -EINVAL, raw, "symlink without a target; the archive is corrupt");
			return -EINVAL;
		}
		/* The target is only data: nothing follows it out of the layer. */
		ent_attr(c, e, S_IFLNK, &at);
		r = pk_build_add(c->b, path, &at, target, &n);
		return r < 0 ? ent_path_error(c, r, raw) : 0;
	}
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO: {
		dev_t dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
		if (type == AE_IFCHR && dev == makedev(0, 0)) {
			/* an overlay whiteout: char 0/0 where the store could mknod
			 * one, else ".wh.NAME" */
			if (!c->rootless) {
				ent_own_attr(c, S_IFCHR, &at);
				r = pk_build_add(c->b, path, &at, NULL, &n);
			} else {
				char oci[PATH_MAX + 8];
				const char *slash = strrchr(path, '/');
				const char *base = slash ? slash + 1 : path;
				if (strlen(base) + 4 > 255) {
					ent_report(c, -ENAMETOOLONG, raw, "writing a whiteout failed");
					return -ENAMETOOLONG;
				}
				snprintf(oci, sizeof oci, "%.*s" WH_PREFIX "%s", (int)(base - path), path, base);
				ent_own_attr(c, S_IFREG, &at);
				if ((r = pk_build_remove(c->b, path)) == 0)
					r = pk_build_add(c->b, oci, &at, NULL, &n);
			}
			return r < 0 ? ent_path_error(c, r, raw) : 0;
		}
		if (c->rootless && type != AE_IFIFO)
			return (r = ent_skip(c, path)) < 0 ? ent_path_error(c, r, raw) : 0;
		ent_attr(c, e, type, &at);
		at.rdev = dev;
		r = pk_build_add(c->b, path, &at, NULL, &n);
		return r < 0 ? ent_path_error(c, r, raw) : 0;
	}
	case AE_IFSOCK:
		/* sockets are runtime objects; a layer cannot carry one */
		return (r = pk_build_remove(c->b, path)) < 0 ? ent_path_error(c, r, raw) : 0;
	default:
		ent_report(c, -EINVAL, raw, "unknown member type; the archive is corrupt");
		return -EINVAL;
	}
}

static int tap_entries(void *ctx, struct archive *a, struct store *s, int tfd, const char *tmpname, const char *what)
{
	struct pkstore_import *pi = ctx;
	char dest[PATH_MAX];
	_cleanup_free_ char *chunks = pkstore_chunks(s);
	if (!chunks)
		return -ENOMEM;
	snprintf(dest, sizeof dest, "%s/%s/layer.pk", s->root, tmpname);
	int r = 0;
	if (mkdirat(s->fd, "chunks", 0755) < 0 && errno != EEXIST)
		r = -errno;
	else
		r = link_chunks(tfd, chunks);
	if (r < 0) {
		char hint[PATH_MAX + 256];
		serr(r, "link chunk store of", what, "%s",
		     fs_full_hint(tfd, r, hint, sizeof hint) ? hint : "check the store's permissions");
		return r;
	}
	mode_t mask = umask(0);
	umask(mask);
	struct pkent c = { .what = what, .rootless = s->rootless, .tfd = tfd, .uid = geteuid(),
			  .gid = getegid() };
	clock_gettime(CLOCK_REALTIME, &c.now);
	/* the root and missing parents: what mkdirat(0755) makes */
	struct pk_build_attr dirs = { .mode = S_IFDIR | (0755 & ~mask), .uid = c.uid, .gid = c.gid,
				      .mtime = c.now, .atime = c.now };
	struct pk_write_opts o = { .chunks = NULL };
	if ((r = pk_build_new(dest, &o, &dirs, &c.b)) < 0) {
		ent_full_report(&c, r, NULL);
		return r;
	}
	struct archive_entry *e;
	int ar;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK || ar == ARCHIVE_WARN)
		if ((r = ent_one(&c, a, e)) < 0)
			break;
	if (r == 0 && ar != ARCHIVE_EOF)
		r = ent_read_failure(&c, a, NULL);
	struct pk_write_stats st;
	if (r == 0 && (r = pk_build_finish(c.b, &st)) < 0)
		ent_full_report(&c, r, NULL);
	if (r == 0 && c.skipped.n)
		skipped_report(&c.skipped, c.what);
	if (r == 0)
		sdebug("%s: packed %llu files, %llu bytes, %llu new chunks", what, (unsigned long long)st.files,
		       (unsigned long long)st.bytes_in, (unsigned long long)st.chunks_new);
	/* the writers' lock goes only now that the layer file is where a
	 * collector counts it live (tmp/<owner>/<n>/layer.pk) */
	pk_build_free(c.b);
	skipped_free(&c.skipped);
	(void)pi;
	return r;
}

static int tap_done(void *ctx, struct store *s, int tfd, const char *tmpname, const struct layer_got *got)
{
	struct pkstore_import *pi = ctx;
	int r = ts_finish(pi->w);
	if (r >= 0 && renameat(pi->dirfd, "tar-split", tfd, "tar-split") < 0)
		r = -errno;
	char hint[PATH_MAX + 256];
	if (r < 0) {
		serr(r, "import: write tar-split record in", s->root, "%s",
		     fs_full_hint(tfd, r, hint, sizeof hint) ? hint : "check free space of the store");
		return r;
	}
	char what[128];
	snprintf(what, sizeof what, "layer %s", got->diffid);
	r = pkstore_pack_layer(s, tfd, tmpname, got->diffid, pi->unlocked, pi->w, what);
	if (r < 0)
		serr(r, "import: pack", what, "%s",
		     fs_full_hint(tfd, r, hint, sizeof hint) ? hint : "check free space of the store");
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
		r = pi->fd < 0 ? -errno : ts_writer_new(pi->fd, PK_CHUNK_DEFAULT, &pi->w);
	}
	if (r < 0) {
		char hint[PATH_MAX + 256];
		serr(r, "import: create temporary file in", s->root, "%s",
		     fs_full_hint(s->fd, r, hint, sizeof hint) ? hint : "check free space and permissions of the store");
		pkstore_import_free(pi);
		return r;
	}
	*tap = (struct layer_tap){ .data = tap_data, .entries = tap_entries, .done = tap_done, .ctx = pi };
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
		r = pk_gc_nowait(chunks, live, (int)n, true, &gs);
		if (r == -EWOULDBLOCK) {
			/* an import or pack is writing chunks: the unused ones
			 * are freed by a later collection */
			sdebug("gc: the chunk store is being written; chunks are collected later");
			memset(&gs, 0, sizeof gs);
			r = 0;
		}
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
