/* pkunpack: a packed layer back into a directory, in its source encoding.
 *
 * The layer is hostile input: every name was checked by the reader (no "/",
 * not "." or ".."), everything is created with O_EXCL/O_NOFOLLOW semantics
 * below fds this code opened, a directory met twice (a cycle) is refused,
 * and hard links are made from a parent opened with RESOLVE_BENEATH.
 */
#include "pkint.h"

#include "err.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#define MAX_DEPTH 256

struct u {
	struct pk_layer *l;
	const char *dir;
	int rootfd;
	uint32_t n;          /* inode count */
	uint8_t *seen;       /* directories entered */
	char **first;        /* path of the first link of a multiply linked inode */
	char *buf;           /* one chunk */
};

static int ufail(struct u *u, int r, const char *op, const char *rel, const char *hint)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s", u->dir, rel);
	serr(r, op, path, "%s", hint ? hint : "unpacking stopped");
	return r;
}

/* Owner, xattrs, mode, times of dfd/name (name NULL: dfd itself). */
static int apply(struct u *u, int dfd, const char *name, uint32_t ino, const struct pk_attr *a, const char *rel)
{
	int r;
	if ((name ? fchownat(dfd, name, a->uid, a->gid, AT_SYMLINK_NOFOLLOW) : fchown(dfd, a->uid, a->gid)) < 0) {
		r = -errno;
		return ufail(u, r, "set owner of", rel, r == -EPERM || r == -EINVAL
			     ? "the layer holds files of other owners: unpack it as root" : NULL);
	}
	char proc[64 + NAME_MAX];
	if (name)
		snprintf(proc, sizeof proc, "/proc/self/fd/%d/%s", dfd, name);
	const char *xn;
	const void *xv;
	size_t nl, vl;
	for (uint32_t i = 0; (r = pk_xattr_at(u->l, ino, i, &xn, &nl, &xv, &vl)) == 1; i++) {
		char xname[XATTR_NAME_MAX + 1];
		if (nl > XATTR_NAME_MAX)
			return ufail(u, -EIO, "set xattr of", rel, "xattr name too long in the layer");
		memcpy(xname, xn, nl);
		xname[nl] = 0;
		if ((name ? lsetxattr(proc, xname, xv, vl, 0) : fsetxattr(dfd, xname, xv, vl, 0)) < 0) {
			r = -errno;
			char hint[XATTR_NAME_MAX + 64];
			snprintf(hint, sizeof hint, "%s%s", xname,
				 r == -EPERM ? ": needs privilege, unpack it as root" : "");
			return ufail(u, r, "set xattr of", rel, hint);
		}
	}
	if (r < 0)
		return r;
	if (!S_ISLNK(a->mode) &&
	    (name ? fchmodat(dfd, name, a->mode & 07777, 0) : fchmod(dfd, a->mode & 07777)) < 0)
		return ufail(u, -errno, "set mode of", rel, NULL);
	struct timespec ts[2] = { a->atime, a->mtime };
	if ((name ? utimensat(dfd, name, ts, AT_SYMLINK_NOFOLLOW) : futimens(dfd, ts)) < 0)
		return ufail(u, -errno, "set times of", rel, NULL);
	return 0;
}

static int write_contents(struct u *u, int fd, uint32_t ino, const struct pk_attr *a, const char *rel)
{
	uint32_t chunk = pk_chunk_size(u->l);
	uint64_t n = a->size / chunk + (a->size % chunk != 0);
	for (uint64_t idx = 0; idx < n; idx++) {
		uint16_t holes;
		bool none;
		int r = pk_holes(u->l, ino, idx, &holes, &none);
		if (r < 0)
			return r;
		if (none)
			continue;
		uint64_t off = idx * chunk;
		ssize_t got = pk_read(u->l, ino, off, chunk, u->buf);
		if (got < 0)
			return ufail(u, got, "read from the layer", rel, NULL);
		/* Only the blocks that were data in the source: holes stay holes. */
		for (size_t b = 0; b * PK_BLOCK < (size_t)got; b++) {
			if (holes & (1u << b))
				continue;
			size_t len = got - b * PK_BLOCK > PK_BLOCK ? PK_BLOCK : got - b * PK_BLOCK;
			if ((r = io_write_full(fd, u->buf + b * PK_BLOCK, len, (int64_t)(off + b * PK_BLOCK))) < 0)
				return ufail(u, r, "write", rel, NULL);
		}
	}
	if (ftruncate(fd, a->size) < 0)
		return ufail(u, -errno, "write", rel, NULL);
	return 0;
}

static int unpack_dir(struct u *u, uint32_t dino, int dfd, const char *rel, int depth);

static int entry(struct u *u, int dfd, const struct pk_dirent *e, const char *rel, int depth)
{
	char name[NAME_MAX + 1], crel[PATH_MAX];
	size_t len = e->name_len;
	if (e->kind == PK_ENT_WHITEOUT && (e->flags & PK_ENTF_WH_OCI)) {
		if (len + 4 > NAME_MAX)
			return ufail(u, -ENAMETOOLONG, "unpack", rel, "whiteout name too long");
		memcpy(name, ".wh.", 4);
		memcpy(name + 4, e->name, len);
		len += 4;
	} else
		memcpy(name, e->name, len);
	name[len] = 0;
	if ((size_t)snprintf(crel, sizeof crel, "%s%s%s", rel, rel[0] ? "/" : "", name) >= sizeof crel)
		return ufail(u, -ENAMETOOLONG, "unpack", rel, "path too long");

	struct pk_attr a;
	int r = pk_getattr(u->l, e->ino, &a);
	if (r < 0)
		return ufail(u, -EIO, "unpack", crel, "the layer names a missing inode");
	/* A ".wh.NAME" whiteout is whatever object the source had under that
	 * name (a file, as a rule); a char device whiteout is one. */
	if (e->kind == PK_ENT_WHITEOUT && !(e->flags & PK_ENTF_WH_OCI) &&
	    !((e->flags & PK_ENTF_WH_CHARDEV) && S_ISCHR(a.mode) && a.rdev == 0))
		return ufail(u, -EIO, "unpack", crel, "malformed whiteout in the layer");

	if (!S_ISDIR(a.mode) && u->first[e->ino]) {
		/* Another name of an inode made already. */
		const char *p = u->first[e->ino];
		const char *slash = strrchr(p, '/');
		_cleanup_close_ int pfd = -1;
		if (slash) {
			char parent[PATH_MAX];
			snprintf(parent, sizeof parent, "%.*s", (int)(slash - p), p);
			struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
						.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
			pfd = syscall(SYS_openat2, u->rootfd, parent, &how, sizeof how);
			if (pfd < 0)
				return ufail(u, -errno, "open", parent, NULL);
		}
		if (linkat(slash ? pfd : u->rootfd, slash ? slash + 1 : p, dfd, name, 0) < 0)
			return ufail(u, -errno, "link", crel, NULL);
		return 0;
	}

	switch (a.mode & S_IFMT) {
	case S_IFDIR: {
		if (depth + 1 >= MAX_DEPTH)
			return ufail(u, -ELOOP, "unpack", crel, "directories nested too deep");
		if (u->seen[e->ino / 8] & (1u << (e->ino % 8)))
			return ufail(u, -EIO, "unpack", crel, "a directory appears twice in the layer (corrupt or hostile)");
		u->seen[e->ino / 8] |= 1u << (e->ino % 8);
		if (mkdirat(dfd, name, 0700) < 0)
			return ufail(u, -errno, "create directory", crel, NULL);
		_cleanup_close_ int cfd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0)
			return ufail(u, -errno, "open directory", crel, NULL);
		r = unpack_dir(u, e->ino, cfd, crel, depth + 1);
		if (r < 0)
			return r;
		return apply(u, cfd, NULL, e->ino, &a, crel);
	}
	case S_IFREG: {
		_cleanup_close_ int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0)
			return ufail(u, -errno, "create", crel, NULL);
		if ((r = write_contents(u, fd, e->ino, &a, crel)) < 0)
			return r;
		break;
	}
	case S_IFLNK: {
		const char *t;
		size_t tl;
		char target[PATH_MAX];
		if ((r = pk_readlink(u->l, e->ino, &t, &tl)) < 0)
			return ufail(u, r, "read symlink from the layer", crel, NULL);
		memcpy(target, t, tl);
		target[tl] = 0;
		if (strlen(target) != tl)
			return ufail(u, -EIO, "unpack", crel, "symlink target holds a NUL byte");
		if (symlinkat(target, dfd, name) < 0)
			return ufail(u, -errno, "create symlink", crel, NULL);
		break;
	}
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		if (mknodat(dfd, name, (a.mode & S_IFMT) | 0600, a.rdev) < 0) {
			r = -errno;
			return ufail(u, r, "create device node", crel,
				     r == -EPERM ? "device nodes need privilege: unpack it as root" : NULL);
		}
		break;
	default:
		return ufail(u, -EIO, "unpack", crel, "unknown file type in the layer");
	}
	if (a.nlink > 1 && !(u->first[e->ino] = strdup(crel)))
		return -ENOMEM;
	return apply(u, dfd, name, e->ino, &a, crel);
}

static int unpack_dir(struct u *u, uint32_t dino, int dfd, const char *rel, int depth)
{
	struct pk_dirent e;
	int r;
	for (uint64_t off = 0; (r = pk_readdir(u->l, dino, off, &e)) == 1; off++)
		if ((r = entry(u, dfd, &e, rel, depth)) < 0)
			return r;
	if (r < 0)
		return ufail(u, r, "read directory from the layer", rel, NULL);
	return 0;
}

int pk_unpack(struct pk_layer *l, const char *dir)
{
	struct u u = { .l = l, .dir = dir, .rootfd = -1 };
	int r = 0;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		serr(r, "create", dir, "check that its parent exists");
		return r;
	}
	u.rootfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (u.rootfd < 0) {
		r = -errno;
		serr(r, "open", dir, NULL);
		return r;
	}
	u.n = pk_super(l)->inode_count;
	u.seen = calloc(u.n / 8 + 1, 1);
	u.first = calloc(u.n, sizeof *u.first);
	u.buf = malloc(pk_chunk_size(l));
	if (!u.seen || !u.first || !u.buf)
		r = -ENOMEM;
	struct pk_attr a;
	if (r == 0 && (r = pk_getattr(l, pk_root(l), &a)) == 0) {
		u.seen[pk_root(l) / 8] |= 1u << (pk_root(l) % 8);
		r = unpack_dir(&u, pk_root(l), u.rootfd, "", 0);
		if (r == 0)
			r = apply(&u, u.rootfd, NULL, pk_root(l), &a, "");
	}
	if (u.first)
		for (uint32_t i = 0; i < u.n; i++)
			free(u.first[i]);
	free(u.first);
	free(u.seen);
	free(u.buf);
	close(u.rootfd);
	return r;
}
