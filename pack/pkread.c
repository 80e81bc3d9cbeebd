/* pkread: a packed layer, mapped and read in place.
 *
 * Opening checks the superblock and the checksum of every section and walks
 * nothing. Each query then touches only the records it needs, and checks
 * every index and range it takes from the file before using it: a file with
 * valid checksums may still be hostile.
 */
#include "pkint.h"
#include "pkhash.h"

#include "err.h"

#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

/* A private cache for a layer opened without a shared one. */
#define PK_PRIVATE_CACHE (4u << 20)

static const uint32_t rec_sizes[PK_SEC_COUNT] = {
	[PK_SEC_INODES] = sizeof(struct pk_inode),
	[PK_SEC_ENTRIES] = sizeof(struct pk_entry),
	[PK_SEC_XATTRS] = sizeof(struct pk_xattr),
	[PK_SEC_EXTENTS] = sizeof(struct pk_extent),
	[PK_SEC_CHUNKS] = sizeof(struct pk_chunk),
	[PK_SEC_STRINGS] = 1,
	[PK_SEC_DATA] = 1,
	[PK_SEC_LOCS] = sizeof(struct pk_loc),
};

static int bad(const char *path, const char *why)
{
	serr(-EINVAL, "open packed layer", path, "%s; the file is not a usable packed layer: pack it again", why);
	return -EINVAL;
}

static int check_super(const char *path, const unsigned char *map, size_t size)
{
	char why[160];
	if (size < sizeof(struct pk_super) || memcmp(map, PK_MAGIC, 8)) {
		if (size >= 8 && !memcmp(map, PK_MAGIC, 8))
			return bad(path, "truncated: shorter than its superblock");
		return bad(path, "no packed-layer magic number at its start");
	}
	struct pk_super sb;
	memcpy(&sb, map, sizeof sb);
	if (sb.version != PK_VERSION) {
		snprintf(why, sizeof why, "format version %u, this program reads version %u", sb.version, PK_VERSION);
		return bad(path, why);
	}
	uint64_t want = sb.super_xxh3;
	sb.super_xxh3 = 0;
	if (sb.super_size != sizeof sb || XXH3_64bits(&sb, sizeof sb) != want)
		return bad(path, "superblock checksum mismatch (corrupt)");
	if (sb.incompat & ~PK_INCOMPAT_KNOWN) {
		snprintf(why, sizeof why, "unknown incompatible features 0x%llx (written by a newer strata)",
			 (unsigned long long)(sb.incompat & ~PK_INCOMPAT_KNOWN));
		return bad(path, why);
	}
	if (sb.file_size != size) {
		snprintf(why, sizeof why, "%s: %zu bytes where the superblock says %llu",
			 size < sb.file_size ? "truncated" : "trailing bytes", size, (unsigned long long)sb.file_size);
		return bad(path, why);
	}
	if (!pk_chunk_size_ok(sb.chunk_size)) {
		snprintf(why, sizeof why, "chunk size %u (this program reads powers of two from %u to %u)",
			 sb.chunk_size, PK_CHUNK_MIN, PK_CHUNK_MAX);
		return bad(path, why);
	}
	for (int i = 0; i < PK_SEC_COUNT; i++) {
		const struct pk_section *s = &sb.sec[i];
		if (i == PK_SEC_LOCS && !(sb.incompat & PK_INCOMPAT_PACKS))
			continue;   /* a layer of loose objects: no such section */
		if (s->rec_size != rec_sizes[i] || s->off > size || s->size > size - s->off ||
		    s->size != (uint64_t)s->count * s->rec_size || s->off % 8) {
			snprintf(why, sizeof why, "section %d out of bounds (corrupt)", i);
			return bad(path, why);
		}
		if (pk_xxh3_64(map + s->off, s->size) != s->xxh3) {
			snprintf(why, sizeof why, "checksum mismatch in section %d (corrupt)", i);
			return bad(path, why);
		}
	}
	if (sb.inode_count != sb.sec[PK_SEC_INODES].count || sb.root_ino != PK_ROOT_INO ||
	    sb.root_ino >= sb.inode_count)
		return bad(path, "no root directory (corrupt)");
	const struct pk_inode *root = (const struct pk_inode *)(map + sb.sec[PK_SEC_INODES].off) + sb.root_ino;
	if (!S_ISDIR(root->mode))
		return bad(path, "the root is not a directory (corrupt)");
	if ((sb.incompat & PK_INCOMPAT_PACKS) && sb.sec[PK_SEC_LOCS].count != sb.sec[PK_SEC_CHUNKS].count)
		return bad(path, "chunk locations do not match its chunks (corrupt)");
	if ((uint64_t)sb.chunks_off + sb.chunks_len > sb.sec[PK_SEC_STRINGS].size)
		return bad(path, "chunk store path out of bounds (corrupt)");
	return 0;
}

int pk_open(const char *path, const char *chunks, struct pk_cache *cache, struct pk_layer **out)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		serr(r, "open packed layer", path, NULL);
		return r;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		return bad(path, "not a regular file");
	}
	if (st.st_size < (off_t)sizeof(struct pk_super)) {
		unsigned char head[8];
		ssize_t n = pread(fd, head, sizeof head, 0);
		return check_super(path, head, n > 0 ? n : 0);
	}
	void *map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		int r = -errno;
		serr(r, "map packed layer", path, NULL);
		return r;
	}
	int r = check_super(path, map, st.st_size);
	if (r < 0) {
		munmap(map, st.st_size);
		return r;
	}
	struct pk_layer *l = calloc(1, sizeof *l);
	if (!l || !(l->path = strdup(path))) {
		free(l);
		munmap(map, st.st_size);
		return -ENOMEM;
	}
	l->map = map;
	l->size = st.st_size;
	l->sb = map;
	l->chunk = l->sb->chunk_size;
	const struct pk_section *s = l->sb->sec;
	l->inodes = (const void *)(l->map + s[PK_SEC_INODES].off);
	l->n_inodes = s[PK_SEC_INODES].count;
	l->entries = (const void *)(l->map + s[PK_SEC_ENTRIES].off);
	l->n_entries = s[PK_SEC_ENTRIES].count;
	l->xattrs = (const void *)(l->map + s[PK_SEC_XATTRS].off);
	l->n_xattrs = s[PK_SEC_XATTRS].count;
	l->extents = (const void *)(l->map + s[PK_SEC_EXTENTS].off);
	l->n_extents = s[PK_SEC_EXTENTS].count;
	l->chunks = (const void *)(l->map + s[PK_SEC_CHUNKS].off);
	l->n_chunks = s[PK_SEC_CHUNKS].count;
	if (l->sb->incompat & PK_INCOMPAT_PACKS)
		l->locs = (const void *)(l->map + s[PK_SEC_LOCS].off);
	l->strings = (const char *)(l->map + s[PK_SEC_STRINGS].off);
	l->n_strings = s[PK_SEC_STRINGS].size;
	l->data = (const char *)(l->map + s[PK_SEC_DATA].off);
	l->n_data = s[PK_SEC_DATA].size;

	/* The chunk store: as given, else as recorded (relative to the file's
	 * directory), else "chunks" beside it. */
	char where[2 * PATH_MAX + 2];
	if (chunks)
		snprintf(where, sizeof where, "%s", chunks);
	else {
		char rec[PATH_MAX] = "chunks";
		if (l->sb->chunks_len && l->sb->chunks_len < sizeof rec) {
			memcpy(rec, l->strings + l->sb->chunks_off, l->sb->chunks_len);
			rec[l->sb->chunks_len] = 0;
		}
		if (rec[0] == '/')
			snprintf(where, sizeof where, "%s", rec);
		else {
			char tmp[PATH_MAX];
			snprintf(tmp, sizeof tmp, "%s", path);
			snprintf(where, sizeof where, "%s/%s", dirname(tmp), rec);
		}
	}
	r = pk_store_open(where, false, &l->store);
	if (r < 0) {
		pk_close(l);
		return r;
	}
	struct stat sst;
	if (fstat(pk_store_dirfd(l->store), &sst) == 0) {
		l->sdev = sst.st_dev;
		l->sino = sst.st_ino;
	}
	l->cache = cache;
	if (!cache) {
		l->cache = pk_cache_new(PK_PRIVATE_CACHE);
		l->own_cache = true;
		if (!l->cache) {
			pk_close(l);
			return -ENOMEM;
		}
	}
	*out = l;
	return 0;
}

void pk_close(struct pk_layer *l)
{
	if (!l)
		return;
	pk_progs_free(l->progs);
	if (l->own_cache)
		pk_cache_free(l->cache);
	else if (l->cache && l->store)
		pk_cache_forget(l->cache, l->store);
	pk_store_close(l->store);
	munmap((void *)l->map, l->size);
	free(l->path);
	free(l);
}

const char *pk_layer_path(const struct pk_layer *l)
{
	return l->path;
}

const struct pk_super *pk_super(const struct pk_layer *l)
{
	return l->sb;
}

uint32_t pk_chunk_size(const struct pk_layer *l)
{
	return l->chunk;
}

uint32_t pk_root(const struct pk_layer *l)
{
	return l->sb->root_ino;
}

uint32_t pk_chunk_count(const struct pk_layer *l)
{
	return l->n_chunks;
}

const struct pk_chunk *pk_chunk_at(const struct pk_layer *l, uint32_t i)
{
	return i < l->n_chunks ? &l->chunks[i] : NULL;
}

const struct pk_loc *pk_loc_at(const struct pk_layer *l, uint32_t i)
{
	return l->locs && i < l->n_chunks ? &l->locs[i] : NULL;
}

/* Damage found in a file whose checksums were valid: log it once per call. */
static int corrupt(const struct pk_layer *l, uint32_t ino, const char *what)
{
	serr(-EIO, "read packed layer", l->path, "inode %u: %s (the file is corrupt or hostile)", ino, what);
	return -EIO;
}

static const struct pk_inode *inode(const struct pk_layer *l, uint32_t ino)
{
	if (ino == 0 || ino >= l->n_inodes || !l->inodes[ino].mode)
		return NULL;
	return &l->inodes[ino];
}

static bool str_ok(const struct pk_layer *l, uint64_t off, uint64_t len)
{
	return off <= l->n_strings && len <= l->n_strings - off;
}

int pk_getattr(const struct pk_layer *l, uint32_t ino, struct pk_attr *a)
{
	const struct pk_inode *i = inode(l, ino);
	if (!i)
		return -ENOENT;
	a->ino = ino;
	a->mode = i->mode;
	a->uid = i->uid;
	a->gid = i->gid;
	a->nlink = i->nlink;
	a->size = i->size;
	a->rdev = (S_ISCHR(i->mode) || S_ISBLK(i->mode)) ? (dev_t)i->data : 0;
	a->mtime.tv_sec = i->mtime_sec;
	a->mtime.tv_nsec = i->mtime_nsec % 1000000000u;
	a->atime.tv_sec = i->atime_sec;
	a->atime.tv_nsec = i->atime_nsec % 1000000000u;
	a->flags = i->flags;
	return 0;
}

/* The entries of directory dir: -ENOTDIR, -EIO, or 0 with *first, *n. */
static int dir_range(const struct pk_layer *l, uint32_t dir, const struct pk_entry **first, uint64_t *n)
{
	const struct pk_inode *i = inode(l, dir);
	if (!i)
		return -ENOENT;
	if (!S_ISDIR(i->mode))
		return -ENOTDIR;
	if (i->data > l->n_entries || i->size > l->n_entries - i->data)
		return corrupt(l, dir, "directory entries out of bounds");
	*first = l->entries + i->data;
	*n = i->size;
	return 0;
}

static int fill(const struct pk_layer *l, uint32_t dir, const struct pk_entry *e, struct pk_dirent *d)
{
	if (!str_ok(l, e->name_off, e->name_len) || e->name_len == 0 || e->name_len > PK_MAX_NAME)
		return corrupt(l, dir, "entry name out of bounds");
	const char *n = l->strings + e->name_off;
	if (memchr(n, '/', e->name_len) || memchr(n, 0, e->name_len) ||
	    (e->name_len == 1 && n[0] == '.') || (e->name_len == 2 && n[0] == '.' && n[1] == '.'))
		return corrupt(l, dir, "invalid entry name");
	if (!inode(l, e->ino) || e->kind > PK_ENT_HIDDEN)
		return corrupt(l, dir, "entry names no inode");
	d->name = n;
	d->name_len = e->name_len;
	d->kind = e->kind;
	d->flags = e->flags;
	d->ino = e->ino;
	return 0;
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);
	return c ? c : (al > bl) - (al < bl);
}

int pk_lookup(const struct pk_layer *l, uint32_t dir, const char *name, size_t len, struct pk_dirent *d)
{
	const struct pk_entry *e;
	uint64_t n;
	int r = dir_range(l, dir, &e, &n);
	if (r < 0)
		return r;
	uint64_t lo = 0, hi = n;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		const struct pk_entry *m = &e[mid];
		if (!str_ok(l, m->name_off, m->name_len))
			return corrupt(l, dir, "entry name out of bounds");
		int c = name_cmp(name, len, l->strings + m->name_off, m->name_len);
		if (c == 0) {
			r = fill(l, dir, m, d);
			if (r < 0)
				return r;
			if (d->kind == PK_ENT_HIDDEN)
				return PK_ABSENT;
			return d->kind == PK_ENT_WHITEOUT ? PK_WHITEOUT : PK_FOUND;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return PK_ABSENT;
}

int pk_is_opaque(const struct pk_layer *l, uint32_t dir)
{
	const struct pk_inode *i = inode(l, dir);
	if (!i)
		return -ENOENT;
	if (!S_ISDIR(i->mode))
		return -ENOTDIR;
	return (i->flags & PK_INO_OPAQUE) ? 1 : 0;
}

int pk_readdir(const struct pk_layer *l, uint32_t dir, uint64_t off, struct pk_dirent *d)
{
	const struct pk_entry *e;
	uint64_t n;
	int r = dir_range(l, dir, &e, &n);
	if (r < 0)
		return r;
	if (off >= n)
		return 0;
	r = fill(l, dir, &e[off], d);
	return r < 0 ? r : 1;
}

int pk_readlink(const struct pk_layer *l, uint32_t ino, const char **target, size_t *len)
{
	const struct pk_inode *i = inode(l, ino);
	if (!i)
		return -ENOENT;
	if (!S_ISLNK(i->mode))
		return -EINVAL;
	if (!str_ok(l, i->data, i->size) || i->size == 0 || i->size >= PATH_MAX)
		return corrupt(l, ino, "symlink target out of bounds");
	*target = l->strings + i->data;
	*len = i->size;
	return 0;
}

static int xattr_range(const struct pk_layer *l, uint32_t ino, const struct pk_xattr **first, uint32_t *n)
{
	const struct pk_inode *i = inode(l, ino);
	if (!i)
		return -ENOENT;
	if (i->xattr_first > l->n_xattrs || i->xattr_count > l->n_xattrs - i->xattr_first)
		return corrupt(l, ino, "xattrs out of bounds");
	*first = l->xattrs + i->xattr_first;
	*n = i->xattr_count;
	return 0;
}

int pk_xattr_at(const struct pk_layer *l, uint32_t ino, uint32_t idx, const char **name,
		size_t *name_len, const void **value, size_t *value_len)
{
	const struct pk_xattr *x;
	uint32_t n;
	int r = xattr_range(l, ino, &x, &n);
	if (r < 0)
		return r;
	if (idx >= n)
		return 0;
	x += idx;
	if (!str_ok(l, x->name_off, x->name_len) || !str_ok(l, x->value_off, x->value_len) ||
	    x->name_len == 0 || x->value_len > 65536 || memchr(l->strings + x->name_off, 0, x->name_len))
		return corrupt(l, ino, "xattr out of bounds");
	*name = l->strings + x->name_off;
	*name_len = x->name_len;
	*value = l->strings + x->value_off;
	*value_len = x->value_len;
	return 1;
}

ssize_t pk_listxattr(const struct pk_layer *l, uint32_t ino, char *buf, size_t size)
{
	size_t need = 0;
	const char *name;
	const void *v;
	size_t nl, vl;
	int r;
	for (uint32_t i = 0; (r = pk_xattr_at(l, ino, i, &name, &nl, &v, &vl)) == 1; i++) {
		if (size) {
			if (need + nl + 1 > size)
				return -ERANGE;
			memcpy(buf + need, name, nl);
			buf[need + nl] = 0;
		}
		need += nl + 1;
	}
	return r < 0 ? r : (ssize_t)need;
}

ssize_t pk_getxattr(const struct pk_layer *l, uint32_t ino, const char *name, void *buf, size_t size)
{
	const struct pk_xattr *x;
	uint32_t n;
	int r = xattr_range(l, ino, &x, &n);
	if (r < 0)
		return r;
	size_t len = strlen(name);
	uint32_t lo = 0, hi = n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const char *nm;
		const void *v;
		size_t nl, vl;
		r = pk_xattr_at(l, ino, mid, &nm, &nl, &v, &vl);
		if (r < 0)
			return r;
		int c = name_cmp(name, len, nm, nl);
		if (c == 0) {
			if (size == 0)
				return vl;
			if (vl > size)
				return -ERANGE;
			memcpy(buf, v, vl);
			return vl;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENODATA;
}

void pk_path_of(const struct pk_layer *l, uint32_t ino, char *buf, size_t size)
{
	/* Walk up the parent links, finding each name by a scan of the parent
	 * (only on error paths), at most 256 levels. */
	char tmp[PATH_MAX];
	size_t pos = sizeof tmp - 1;
	tmp[pos] = 0;
	uint32_t cur = ino;
	for (int depth = 0; depth < 256 && cur != PK_ROOT_INO; depth++) {
		const struct pk_inode *i = inode(l, cur);
		const struct pk_entry *e;
		uint64_t n;
		if (!i || dir_range(l, i->parent, &e, &n) < 0)
			break;
		uint64_t k;
		for (k = 0; k < n; k++)
			if (e[k].ino == cur && str_ok(l, e[k].name_off, e[k].name_len))
				break;
		if (k == n || (size_t)e[k].name_len + 1 > pos)
			break;
		pos -= e[k].name_len;
		memcpy(tmp + pos, l->strings + e[k].name_off, e[k].name_len);
		tmp[--pos] = '/';
		cur = i->parent;
	}
	if (cur != PK_ROOT_INO)
		snprintf(buf, size, "inode %u", ino);
	else
		snprintf(buf, size, "%s", pos == sizeof tmp - 1 ? "/" : tmp + pos);
}

/* The extents of regular file ino, checked: 0 with *first and *n. */
int pk_file_extents(const struct pk_layer *l, uint32_t ino, const struct pk_inode **ip,
		    const struct pk_extent **first, uint64_t *n)
{
	const struct pk_inode *i = inode(l, ino);
	if (!i)
		return -ENOENT;
	if (S_ISDIR(i->mode))
		return -EISDIR;
	if (!S_ISREG(i->mode))
		return -EINVAL;
	*ip = i;
	*first = NULL;
	*n = 0;
	if (i->flags & PK_INO_INLINE) {
		if (i->data > l->n_data || i->size > l->n_data - i->data)
			return corrupt(l, ino, "inline data out of bounds");
		return 0;
	}
	uint64_t cnt = i->size / l->chunk + (i->size % l->chunk != 0);
	if (i->data > l->n_extents || cnt > l->n_extents - i->data)
		return corrupt(l, ino, "extents out of bounds");
	*first = l->extents + i->data;
	*n = cnt;
	return 0;
}

int pk_holes(const struct pk_layer *l, uint32_t ino, uint64_t idx, uint16_t *holes, bool *no_chunk)
{
	const struct pk_inode *i;
	const struct pk_extent *e;
	uint64_t n;
	int r = pk_file_extents(l, ino, &i, &e, &n);
	if (r < 0)
		return r;
	*holes = 0;
	*no_chunk = false;
	if (idx >= n)
		return 0;
	*no_chunk = e[idx].chunk == PK_HOLE;
	*holes = *no_chunk ? 0xffff : e[idx].holes;
	return 0;
}

/* A chunk that could not be read: log the object, the file and the layer. */
static int chunk_failed(const struct pk_layer *l, uint32_t ino, uint32_t c, int r)
{
	char name[64], where[PATH_MAX + 160], path[PATH_MAX];
	if (l->locs) {
		char key[33];
		for (int i = 0; i < 16; i++)
			snprintf(key + 2 * i, 3, "%02x", l->chunks[c].key[i]);
		pk_loc_name(&l->locs[c], name);
		snprintf(where, sizeof where, "%s/%s (key %s)", pk_store_path(l->store), name, key);
	} else {
		pk_object_name(&l->chunks[c], name);
		snprintf(where, sizeof where, "%s/%s", pk_store_path(l->store), name);
	}
	pk_path_of(l, ino, path, sizeof path);
	char why[96];
	snprintf(why, sizeof why, "it cannot be opened: %s", strerror(-r));
	serr(r == -ENOMEM ? r : -EIO, "read chunk", where, "%s; file %s (inode %u) of layer %s",
	     r == -ENOENT ? "missing from the chunk store"
	     : r == -ENOMEM ? "out of memory"
	     : r == -EIO ? "its content does not match its key: the chunk store is damaged"
	     : why,
	     path, ino, l->path);
	return r == -ENOMEM ? r : -EIO;
}

/* CHUNKS index of extent idx of file i, checked: 0 with *c (PK_HOLE for
 * none) and *ulen, or -EIO. */
int pk_extent_chunk(const struct pk_layer *l, uint32_t ino, const struct pk_inode *i,
		    const struct pk_extent *e, uint64_t idx, uint32_t *c)
{
	*c = e[idx].chunk;
	if (*c == PK_HOLE)
		return 0;
	uint64_t ulen = i->size - idx * l->chunk;
	if (ulen > l->chunk)
		ulen = l->chunk;
	if (*c >= l->n_chunks || l->chunks[*c].ulen != ulen || l->chunks[*c].form > PK_FORM_LZ4)
		return corrupt(l, ino, "extent names no chunk of the right size");
	return 0;
}

int pk_prefetch(struct pk_layer *l, uint32_t ino, uint64_t off, uint64_t len)
{
	const struct pk_inode *i;
	const struct pk_extent *e;
	uint64_t n;
	int r = pk_file_extents(l, ino, &i, &e, &n);
	if (r < 0 || !e || off >= i->size)
		return r;
	if (len > i->size - off)
		len = i->size - off;
	/* the runs of the range that lie back to back in one pack are asked
	 * of the kernel as one read-ahead, before the loaders read them */
	uint64_t run_pack = 0, run_off = 0, run_end = 0;
	for (uint64_t idx = off / l->chunk; idx < n && idx * l->chunk < off + len; idx++) {
		uint32_t c;
		if ((r = pk_extent_chunk(l, ino, i, e, idx, &c)) < 0)
			return r;
		if (c == PK_HOLE)
			continue;
		if (l->locs) {
			const struct pk_loc *lc = &l->locs[c];
			if (lc->pack != run_pack || lc->off != run_end || lc->off > UINT64_MAX - PK_STORED_MAX) {
				if (run_pack)
					pk_store_willneed(l->store, run_pack, run_off, run_end - run_off);
				run_pack = lc->pack;
				run_off = lc->off;
				run_end = lc->off;
			}
			if (run_end <= UINT64_MAX - PK_STORED_MAX)
				run_end += l->chunks[c].slen;
		}
		pk_cache_prefetch(l->cache, l->store, l->sdev, l->sino, &l->chunks[c], pk_loc_at(l, c));
	}
	if (run_pack)
		pk_store_willneed(l->store, run_pack, run_off, run_end - run_off);
	return 0;
}

/* What a hole's piece points at. */
static const unsigned char zeros[PK_CHUNK_MAX];

ssize_t pk_read_pieces(struct pk_layer *l, uint32_t ino, uint64_t off, size_t len, struct pk_piece *p,
		       size_t max, size_t *np)
{
	const struct pk_inode *i;
	const struct pk_extent *e;
	uint64_t n;
	*np = 0;
	int r = pk_file_extents(l, ino, &i, &e, &n);
	if (r < 0)
		return r;
	if (off >= i->size)
		return 0;
	if (len > i->size - off)
		len = i->size - off;
	if (!max)
		return -EINVAL;
	if (i->flags & PK_INO_INLINE) {
		p[0] = (struct pk_piece){ l->data + i->data + off, len, NULL, 0 };
		*np = 1;
		return len;
	}
	size_t done = 0;
	while (done < len && *np < max) {
		uint64_t pos = off + done;
		uint64_t idx = pos / l->chunk;
		uint32_t in = pos % l->chunk;
		uint32_t want = l->chunk - in;
		if (want > len - done)
			want = len - done;
		uint32_t c;
		if ((r = pk_extent_chunk(l, ino, i, e, idx, &c)) == 0 && c == PK_HOLE) {
			p[(*np)++] = (struct pk_piece){ zeros, want, NULL, 0 };
			done += want;
			continue;
		}
		struct pk_cent *ce = NULL;
		if (r == 0 && (r = pk_cache_pin(l->cache, l->store, l->sdev, l->sino, &l->chunks[c], pk_loc_at(l, c),
						&ce)) < 0)
			r = chunk_failed(l, ino, c, r);
		if (r < 0) {
			pk_read_done(l, p, *np);
			*np = 0;
			return r;
		}
		p[(*np)++] = (struct pk_piece){ (const char *)pk_cache_data(ce) + in, want, ce, in };
		done += want;
	}
	return done;
}

void pk_read_done(struct pk_layer *l, struct pk_piece *p, size_t np)
{
	for (size_t k = 0; k < np; k++)
		if (p[k].pin)
			pk_cache_unpin(l->cache, p[k].pin, p[k].pin_off, (uint32_t)p[k].len);
}

ssize_t pk_read(struct pk_layer *l, uint32_t ino, uint64_t off, size_t len, void *buf)
{
	size_t done = 0;
	while (done < len) {
		struct pk_piece p[8];
		size_t np;
		ssize_t n = pk_read_pieces(l, ino, off + done, len - done, p, 8, &np);
		if (n <= 0)
			return n < 0 ? n : (ssize_t)done;
		for (size_t k = 0, at = done; k < np; at += p[k].len, k++)
			memcpy((char *)buf + at, p[k].data, p[k].len);
		pk_read_done(l, p, np);
		done += n;
	}
	return done;
}
