/* lower.c: the objects of a lower layer, a directory or a packed layer
 * file, behind one set of calls (lower.h). The packed side translates the
 * format's records (pack/, docs/packed-format.md) into what the rest of
 * strata-fs expects from a directory: struct stat, xattrs with their
 * overlay.* markers as stored, whiteouts as found by a lookup. */
#include "lower.h"
#include "fs.h"
#include "io.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

bool lower_is_packed_file(const char *path)
{
	struct stat st;
	char head[8];
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	return fd >= 0 && pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head &&
	       !memcmp(head, PK_MAGIC, sizeof head);
}

int lower_prog_fd(const struct lower *lo, uint32_t ino)
{
	return lo->pk ? pk_prog_fd(lo->pk, ino) : -EBADF;
}

int lower_open_packed(const char *path, unsigned idx, struct pk_cache *cache, struct lower *lo)
{
	memset(lo, 0, sizeof *lo);
	lo->fd = -1;
	int r = pk_open(path, NULL, cache, &lo->pk);
	if (r < 0)
		return r;   /* reported, naming the file and what is wrong with it */
	lo->dev = makedev(LOWER_PK_MAJOR, idx);
	return 0;
}

void lower_close(struct lower *lo)
{
	if (lo->pk)
		pk_close(lo->pk);
	lo->pk = NULL;
}

uint32_t lower_root(const struct lower *lo)
{
	return pk_root(lo->pk);
}

/* 512-byte blocks of a packed regular file: the 4 KiB blocks that were data
 * in the source (what du and a sparse-aware copy see). */
static blkcnt_t pk_blocks(const struct lower *lo, uint32_t ino, const struct pk_attr *a)
{
	if (!S_ISREG(a->mode))
		return 0;
	if (a->flags & PK_INO_INLINE)
		return (blkcnt_t)((a->size + PK_BLOCK - 1) / PK_BLOCK) * (PK_BLOCK / 512);
	uint32_t chunk = pk_chunk_size(lo->pk);
	uint64_t n = a->size / chunk + (a->size % chunk != 0), blocks = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint16_t holes;
		bool none;
		if (pk_holes(lo->pk, ino, i, &holes, &none) < 0)
			break;
		uint64_t len = a->size - i * chunk;
		unsigned nb = len >= chunk ? chunk / PK_BLOCK : (unsigned)((len + PK_BLOCK - 1) / PK_BLOCK);
		for (unsigned b = 0; b < nb; b++)
			blocks += !(holes & (1u << b));
	}
	return (blkcnt_t)(blocks * (PK_BLOCK / 512));
}

static int pk_stat(const struct lower *lo, uint32_t ino, struct stat *st)
{
	struct pk_attr a;
	int r = pk_getattr(lo->pk, ino, &a);
	if (r < 0)
		return r;
	memset(st, 0, sizeof *st);
	st->st_dev = lo->dev;
	st->st_ino = ino;
	st->st_mode = a.mode;
	st->st_nlink = a.nlink ? a.nlink : 1;
	st->st_uid = a.uid;
	st->st_gid = a.gid;
	st->st_rdev = a.rdev;
	/* a directory's record counts entries; a directory shows the size of
	 * one block, as on ext4 */
	st->st_size = S_ISDIR(a.mode) ? PK_BLOCK : (off_t)a.size;
	st->st_blksize = PK_BLOCK;
	st->st_blocks = S_ISDIR(a.mode) ? PK_BLOCK / 512 : pk_blocks(lo, ino, &a);
	st->st_atim = a.atime;
	st->st_mtim = a.mtime;
	st->st_ctim = a.mtime;   /* ctime is not kept: no one can restore it */
	return 0;
}

int lower_lookup(const struct lower *lo, uint32_t dir, const char *name, struct stat *st,
		 uint32_t *child)
{
	struct pk_dirent e;
	int r = pk_lookup(lo->pk, dir, name, strlen(name), &e);
	if (r < 0)
		return r == -ENOTDIR ? LOWER_ABSENT : r;
	if (r == PK_ABSENT)
		return LOWER_ABSENT;
	if (r == PK_WHITEOUT)
		return LOWER_WHITEOUT;
	if ((r = pk_stat(lo, e.ino, st)) < 0)
		return r == -ENOENT ? -EIO : r;   /* an entry naming no inode */
	*child = e.ino;
	return LOWER_FOUND;
}

int lower_opaque(const struct lower *lo, uint32_t dir)
{
	return pk_is_opaque(lo->pk, dir);
}

int lower_walk(const struct lower *lo, const char *path, uint32_t *ino)
{
	uint32_t cur = pk_root(lo->pk);
	char comp[PK_MAX_NAME + 1];

	for (const char *p = path;;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		const char *e = strchrnul(p, '/');
		if ((size_t)(e - p) > PK_MAX_NAME)
			return -ENOENT;
		memcpy(comp, p, (size_t)(e - p));
		comp[e - p] = '\0';
		if (!strcmp(comp, ".") || !strcmp(comp, ".."))
			return -EINVAL;
		struct stat st;
		uint32_t next;
		int r = lower_lookup(lo, cur, comp, &st, &next);
		if (r < 0)
			return r;
		if (r != LOWER_FOUND || !S_ISDIR(st.st_mode))
			return -ENOENT;
		cur = next;
		p = e;
	}
	*ino = cur;
	return 0;
}

int lower_stat(const struct lower *lo, const struct lref *r, struct stat *st)
{
	if (lower_packed(lo))
		return pk_stat(lo, r->ino, st);
	return fstatat(r->dirfd, r->name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

ssize_t lower_getxattr(const struct lower *lo, const struct lref *r, const char *key, void *buf,
		       size_t size)
{
	if (!lower_packed(lo))
		return xa_get(r->dirfd, strcmp(r->name, ".") ? r->name : NULL, key, buf, size);
	return pk_getxattr(lo->pk, r->ino, key, buf, size);
}

ssize_t lower_listxattr(const struct lower *lo, const struct lref *r, char *buf, size_t size)
{
	if (!lower_packed(lo))
		return xa_list(r->dirfd, strcmp(r->name, ".") ? r->name : NULL, buf, size);
	return pk_listxattr(lo->pk, r->ino, buf, size);
}

ssize_t lower_readlink(const struct lower *lo, const struct lref *r, char *buf, size_t size)
{
	if (!lower_packed(lo)) {
		ssize_t n = readlinkat(r->dirfd, r->name, buf, size);
		return n < 0 ? -errno : n;
	}
	const char *t;
	size_t len;
	int e = pk_readlink(lo->pk, r->ino, &t, &len);
	if (e < 0)
		return e;
	if (len > size)
		len = size;
	memcpy(buf, t, len);
	return (ssize_t)len;
}

int lower_readdir(const struct lower *lo, uint32_t dir, uint64_t *off, struct lower_dirent *e)
{
	for (;;) {
		struct pk_dirent d;
		int r = pk_readdir(lo->pk, dir, *off, &d);
		if (r <= 0)
			return r;
		(*off)++;
		if (d.kind != PK_ENT_NORMAL && d.kind != PK_ENT_WHITEOUT)
			continue;
		memcpy(e->name, d.name, d.name_len);
		e->name[d.name_len] = '\0';
		e->kind = d.kind == PK_ENT_NORMAL ? LOWER_FOUND : LOWER_WHITEOUT;
		e->ino = d.ino;
		e->type = 0;
		if (d.kind == PK_ENT_NORMAL) {
			struct pk_attr a;
			if ((r = pk_getattr(lo->pk, d.ino, &a)) < 0)
				return r == -ENOENT ? -EIO : r;
			e->type = a.mode & S_IFMT;
		}
		return 1;
	}
}

ssize_t lower_pread(const struct lower *lo, uint32_t ino, void *buf, size_t len, uint64_t off)
{
	return pk_read(lo->pk, ino, off, len, buf);
}

ssize_t lower_read_pieces(const struct lower *lo, uint32_t ino, uint64_t off, size_t len, struct pk_piece *p,
			  size_t max, size_t *np)
{
	return pk_read_pieces(lo->pk, ino, off, len, p, max, np);
}

void lower_read_done(const struct lower *lo, struct pk_piece *p, size_t np)
{
	pk_read_done(lo->pk, p, np);
}

int lower_prefetch(const struct lower *lo, uint32_t ino, uint64_t off, uint64_t len)
{
	return pk_prefetch(lo->pk, ino, off, len);
}

/* Is 4 KiB block b of file ino (of attributes a) a hole? 1, 0, -errno. */
static int pk_block_hole(const struct lower *lo, uint32_t ino, const struct pk_attr *a, uint64_t b)
{
	if (a->flags & PK_INO_INLINE)
		return 0;
	uint16_t holes;
	bool none;
	uint64_t per = pk_chunk_size(lo->pk) / PK_BLOCK;
	int r = pk_holes(lo->pk, ino, b / per, &holes, &none);
	if (r < 0)
		return r;
	return none || (holes & (1u << (b % per))) ? 1 : 0;
}

/* The attributes of ino, which must be a regular file. */
static int regular_attr(const struct lower *lo, uint32_t ino, struct pk_attr *a)
{
	int r = pk_getattr(lo->pk, ino, a);
	if (r < 0)
		return r;
	return S_ISREG(a->mode) ? 0 : -EINVAL;
}

off_t lower_seek(const struct lower *lo, uint32_t ino, off_t off, int whence)
{
	struct pk_attr a;
	int r = regular_attr(lo, ino, &a);
	if (r < 0)
		return r;
	if (off < 0)
		return -ENXIO;
	if (whence == SEEK_SET || whence == SEEK_CUR)
		return off;
	if (whence == SEEK_END)
		return (off_t)a.size + off;
	if ((whence != SEEK_DATA && whence != SEEK_HOLE))
		return -EINVAL;
	if ((uint64_t)off >= a.size)
		return -ENXIO;
	for (uint64_t b = (uint64_t)off / PK_BLOCK; b * PK_BLOCK < a.size; b++) {
		int h = pk_block_hole(lo, ino, &a, b);
		if (h < 0)
			return h;
		if (h == (whence == SEEK_HOLE)) {
			uint64_t at = b * PK_BLOCK;
			return (off_t)(at > (uint64_t)off ? at : (uint64_t)off);
		}
	}
	return whence == SEEK_HOLE ? (off_t)a.size : -ENXIO;
}

int lower_copy_xattrs(const struct lower *lo, uint32_t ino, int dstfd, int ddir, const char *dname)
{
	for (uint32_t i = 0;; i++) {
		const char *name;
		const void *val;
		size_t nlen, vlen;
		char key[PK_MAX_NAME + 1];
		int r = pk_xattr_at(lo->pk, ino, i, &name, &nlen, &val, &vlen);
		if (r <= 0)
			return r;
		if (nlen >= sizeof key)
			continue;   /* no such name on Linux: nothing to copy */
		memcpy(key, name, nlen);
		key[nlen] = '\0';
		/* the ownership override is the object's owner, not a marker */
		bool keep_override = !strcmp(key, "user.containers.override_stat") ||
				     !strcmp(key, "security.containers.override_stat");
		if (xa_is_private(key) && !keep_override)
			continue;
		if (dstfd >= 0)
			r = fsetxattr(dstfd, key, val, vlen, 0) < 0 ? -errno : 0;
		else
			r = xa_set(ddir, dname, key, val, vlen, 0);
		if (r < 0 && r != -ENOTSUP && r != -EPERM)
			return r;
	}
}

int lower_copy_data(const struct lower *lo, uint32_t ino, int dst, uint64_t limit)
{
	struct pk_attr a;
	int r = regular_attr(lo, ino, &a);
	if (r < 0)
		return r;
	if (limit > a.size)
		limit = a.size;
	uint32_t chunk = pk_chunk_size(lo->pk);
	_cleanup_free_ char *buf = malloc(chunk);
	if (!buf)
		return -ENOMEM;
	for (uint64_t off = 0; off < limit; off += chunk) {
		uint16_t holes = 0;
		bool none = false;
		if (!(a.flags & PK_INO_INLINE) &&
		    (r = pk_holes(lo->pk, ino, off / chunk, &holes, &none)) < 0)
			return r;
		if (none)
			continue;
		ssize_t n = pk_read(lo->pk, ino, off, chunk, buf);
		if (n < 0)
			return (int)n;
		if ((uint64_t)n > limit - off)
			n = (ssize_t)(limit - off);
		/* write runs of data blocks; holes stay holes */
		for (size_t b = 0; b * PK_BLOCK < (size_t)n;) {
			if (holes & (1u << b)) {
				b++;
				continue;
			}
			size_t e = b;
			while (e * PK_BLOCK < (size_t)n && !(holes & (1u << e)))
				e++;
			size_t end = e * PK_BLOCK < (size_t)n ? e * PK_BLOCK : (size_t)n;
			if ((r = io_write_full(dst, buf + b * PK_BLOCK, end - b * PK_BLOCK, (int64_t)(off + b * PK_BLOCK))) < 0)
				return r;
			b = e;
		}
	}
	return ftruncate(dst, (off_t)limit) < 0 ? -errno : 0;
}
