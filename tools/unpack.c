#include "unpack.h"

#include "err.h"
#include "fsutil.h"
#include "io.h"
#include "whiteout.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

int clean_member_path(const char *in, char *out, size_t outlen)
{
	size_t o = 0;

	if (in[0] == '/')
		return -EPERM;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		const char *s = p;
		while (*p && *p != '/')
			p++;
		size_t n = (size_t)(p - s);
		if (n == 0 || (n == 1 && s[0] == '.'))
			continue;
		if (n == 2 && s[0] == '.' && s[1] == '.')
			return -EPERM;
		if (o + n + 2 > outlen)
			return -ENAMETOOLONG;
		if (o)
			out[o++] = '/';
		memcpy(out + o, s, n);
		o += n;
	}
	out[o] = '\0';
	return 0;
}

/* Directory metadata is applied after all entries: creating children would
 * change a directory's mtime, and a read-only directory mode would stop the
 * (rootless) extraction of its own children. */
struct dirmeta {
	char *path;
	size_t seq;             /* order in the archive */
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec mtime;
};

struct ctx {
	int rootfd;
	const struct unpack_opts *o;
	struct dirmeta *dirs;
	size_t ndirs, capdirs;
	struct wh_policy wh;
	/* Device nodes a rootless store cannot hold, left out. */
	struct skipped_devs skipped;   /* rootless: device nodes left out */
};

static void report(int r, const char *path, const struct ctx *c, const char *why)
{
	char op[PATH_MAX + 64], hint[PATH_MAX + 256];
	snprintf(op, sizeof op, "import: unpack %s entry", c->o->what);
	if (fs_full_hint(c->rootfd, r, hint, sizeof hint))
		why = hint;
	serr(r, op, path, "%s", why);
}

/* A tar read failed: the input is broken, or the blob or the data could not
 * be written into a full store (the read callback reports that errno). */
static int read_failure(struct archive *a, int rootfd, const char *op, const char *path)
{
	int e = archive_errno(a);
	const char *why = archive_error_string(a);
	char hint[PATH_MAX + 256];
	if (fs_full_hint(rootfd, e, hint, sizeof hint)) {
		serr(e, op, path, "%s", hint);
		return -e;
	}
	serr(0, op, path, "%s: the archive is truncated or corrupt; fetch it again", why ? why : "unreadable tar data");
	return -EIO;
}

/* Open the parent directory of path (beneath the root), creating missing
 * parents as producers expect. *name points at the final component. */
static int open_parent(struct ctx *c, char *path, const char **name, bool create)
{
	char *slash = strrchr(path, '/');
	if (!slash) {
		*name = path;
		return open_beneath(c->rootfd, ".", O_PATH | O_DIRECTORY, 0);
	}
	*name = slash + 1;
	*slash = '\0';
	int fd = open_beneath(c->rootfd, path, O_PATH | O_DIRECTORY, 0);
	if (fd != -ENOENT || !create) {
		*slash = '/';
		return fd;
	}
	/* Create component by component; each mkdirat names one component
	 * in an already-resolved directory, so nothing is followed. */
	int cur = open_beneath(c->rootfd, ".", O_PATH | O_DIRECTORY, 0);
	char *comp = path;
	while (cur >= 0) {
		char *next = strchr(comp, '/');
		if (next)
			*next = '\0';
		if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) {
			int e = -errno;
			close(cur);
			if (next)
				*next = '/';
			*slash = '/';
			return e;
		}
		if (next)
			*next = '/';
		close(cur);
		char save = next ? *next : 0;
		if (next)
			*next = '\0';
		cur = open_beneath(c->rootfd, path, O_PATH | O_DIRECTORY, 0);
		if (next)
			*next = save;
		if (!next)
			break;
		comp = next + 1;
	}
	*slash = '/';
	return cur;
}

/* Make room for a new entry: a directory stays for a directory; anything
 * else already there is replaced, as a later tar member wins. */
static int clear_slot(int pfd, const char *name, bool want_dir, bool *is_dir)
{
	struct stat st;
	*is_dir = false;
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (want_dir && S_ISDIR(st.st_mode)) {
		*is_dir = true;
		return 0;
	}
	if (S_ISDIR(st.st_mode)) {
		int dfd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0)
			return -errno;
		int r = rm_rf_at(dfd, name);
		close(dfd);
		return r;
	}
	return unlinkat(pfd, name, 0) < 0 ? -errno : 0;
}

static void set_override(int fd, uid_t uid, gid_t gid, mode_t mode)
{
	static bool warned;
	char v[64];
	int n = snprintf(v, sizeof v, "%u:%u:0%o", (unsigned)uid, (unsigned)gid,
			 (unsigned)(mode & 07777));
	if (fsetxattr(fd, OVERRIDE_STAT_XATTR, v, (size_t)n, 0) == 0 || warned)
		return;
	/* The image still works, but every file shows the container's root
	 * as owner: say so once rather than failing the import. */
	warned = true;
	serr(errno, "import: keep image owners in xattr " OVERRIDE_STAT_XATTR, NULL,
	     "the store's filesystem refuses user xattrs; files will show root as owner. "
	     "Put the store on a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs) with --store");
}

bool overlay_private(const char *name)
{
	static const char *const pfx[] = {
		"trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.", "user.strata.",
		"user.containers.override_stat", "security.containers.override_stat",
	};
	for (size_t i = 0; i < sizeof pfx / sizeof *pfx; i++)
		if (!strncmp(name, pfx[i], strlen(pfx[i])))
			return true;
	return false;
}

static int apply_xattrs(struct archive_entry *e, int fd, struct ctx *c, const char *path)
{
	const char *name;
	const void *val;
	size_t sz;

	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &name, &val, &sz) == ARCHIVE_OK) {
		if (overlay_private(name)) {
			size_t nl = strlen(name);
			if (nl >= 14 && !strcmp(name + nl - 14, "overlay.opaque") && sz == 1 &&
			    *(const char *)val == 'y' && archive_entry_filetype(e) == AE_IFDIR) {
				int m = openat(fd, WH_OPQ_MARKER, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0);
				if (m >= 0)
					close(m);
			}
			sdebug("%s: overlay xattr %s not kept", path, name);
			continue;
		}
		if (fsetxattr(fd, name, val, sz, 0) == 0)
			continue;
		/* Unprivileged stores cannot hold trusted.* or security.*;
		 * the image still works without them. */
		if (errno == EPERM || errno == ENOTSUP || errno == EACCES) {
			sdebug("%s: xattr %s not kept: %s", path, name, strerror(errno));
			continue;
		}
		int e2 = -errno;
		report(e2, path, c, "setting an extended attribute failed");
		return e2;
	}
	return 0;
}

/* Owner and mode of a non-directory entry already created at pfd/name. */
static int apply_meta(struct archive_entry *e, int pfd, const char *name, int fd,
		      struct ctx *c, const char *path, bool symlink)
{
	uid_t uid = (uid_t)archive_entry_uid(e);
	gid_t gid = (gid_t)archive_entry_gid(e);
	mode_t mode = archive_entry_perm(e);

	if (!c->o->rootless) {
		if (fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0) {
			int r = -errno;
			report(r, path, c, "cannot set the owner; is the store on a filesystem that supports ownership?");
			return r;
		}
		if (!symlink && fd >= 0 && fchmod(fd, mode) < 0)
			return -errno;
	} else if (!symlink) {
		/* On disk the user keeps read access; setuid bits live only
		 * in the xattr, where strata-fs shows them. */
		if (fd >= 0) {
			fchmod(fd, (mode & 0777) | 0600);
			set_override(fd, uid, gid, mode);
		}
	}
	struct timespec ts[2] = {
		{ .tv_sec = archive_entry_mtime(e), .tv_nsec = archive_entry_mtime_nsec(e) },
		{ .tv_sec = archive_entry_mtime(e), .tv_nsec = archive_entry_mtime_nsec(e) },
	};
	if (archive_entry_atime_is_set(e))
		ts[0] = (struct timespec){ archive_entry_atime(e), archive_entry_atime_nsec(e) };
	utimensat(pfd, name, ts, AT_SYMLINK_NOFOLLOW);
	return 0;
}

static int write_data(struct archive *a, int fd, struct ctx *c, const char *path, la_int64_t size)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;

	while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
		int e = io_write_full(fd, buf, len, off);
		if (e < 0) {
			report(e, path, c, "writing file data failed; is the store's filesystem full?");
			return e;
		}
	}
	if (r != ARCHIVE_EOF) {
		char op[PATH_MAX + 64];
		snprintf(op, sizeof op, "import: unpack %s entry", c->o->what);
		return read_failure(a, c->rootfd, op, path);
	}
	/* Sparse files end in a hole that no data block covers. */
	if (ftruncate(fd, size) < 0) {
		int e = -errno;
		report(e, path, c, "setting the file's size failed");
		return e;
	}
	return 0;
}

static int add_dir(struct ctx *c, struct archive_entry *e, const char *path)
{
	if (c->ndirs == c->capdirs) {
		size_t cap = c->capdirs ? c->capdirs * 2 : 64;
		struct dirmeta *nd = realloc(c->dirs, cap * sizeof *nd);
		if (!nd)
			return -ENOMEM;
		c->dirs = nd;
		c->capdirs = cap;
	}
	struct dirmeta *d = &c->dirs[c->ndirs];
	if (!(d->path = strdup(path)))
		return -ENOMEM;
	d->seq = c->ndirs;
	d->mode = archive_entry_perm(e);
	d->uid = (uid_t)archive_entry_uid(e);
	d->gid = (gid_t)archive_entry_gid(e);
	d->mtime = (struct timespec){ archive_entry_mtime(e), archive_entry_mtime_nsec(e) };
	c->ndirs++;
	return 0;
}

static int cmp_dirmeta(const void *a, const void *b)
{
	const struct dirmeta *x = a, *y = b;
	int r = strcmp(x->path, y->path);
	if (r)
		return r;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int finish_dirs(struct ctx *c)
{
	/* All entries exist now, so setting a directory's metadata can no
	 * longer be undone by a child's creation; the order only matters for
	 * a path listed twice, where the later entry wins. */
	if (c->ndirs)
		qsort(c->dirs, c->ndirs, sizeof *c->dirs, cmp_dirmeta);
	for (size_t i = 0; i < c->ndirs; i++) {
		struct dirmeta *d = &c->dirs[i];
		if (i + 1 < c->ndirs && !strcmp(c->dirs[i + 1].path, d->path))
			continue;
		_cleanup_close_ int fd = open_beneath(c->rootfd, d->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
		if (fd < 0)
			continue;   /* replaced by a later non-directory entry */
		if (!c->o->rootless) {
			if (fchown(fd, d->uid, d->gid) < 0 || fchmod(fd, d->mode) < 0) {
				int r = -errno;
				report(r, d->path, c, "cannot set directory owner or mode");
				return r;
			}
		} else {
			fchmod(fd, (d->mode & 0777) | 0700);
			set_override(fd, d->uid, d->gid, d->mode);
		}
		struct timespec ts[2] = { d->mtime, d->mtime };
		futimens(fd, ts);
	}
	return 0;
}

int skipped_add(struct skipped_devs *d, const char *path)
{
	char **ns = realloc(d->path, (d->n + 1) * sizeof *ns);
	if (!ns)
		return -ENOMEM;
	d->path = ns;
	if (!(ns[d->n] = strdup(path)))
		return -ENOMEM;
	d->n++;
	return 0;
}

bool skipped_has(const struct skipped_devs *d, const char *path)
{
	for (size_t i = 0; i < d->n; i++)
		if (!strcmp(d->path[i], path))
			return true;
	return false;
}

void skipped_report(const struct skipped_devs *d, const char *what)
{
	char list[256] = "";
	size_t len = 0, shown = 0;
	for (size_t i = 0; i < d->n && len < sizeof list - 64; i++, shown++) {
		int n = snprintf(list + len, sizeof list - len, "%s/%s", i ? ", " : "", d->path[i]);
		if (n < 0)
			break;
		len += (size_t)n;
	}
	susage("import: left out %zu device node%s of %s (%s%s): a rootless store cannot hold devices, as in rootless podman; "
	       "containers get /dev from the runtime", d->n, d->n == 1 ? "" : "s", what, list, shown < d->n ? ", ..." : "");
}

void skipped_free(struct skipped_devs *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->path[i]);
	free(d->path);
	d->path = NULL;
	d->n = 0;
}

static int do_entry(struct archive *a, struct archive_entry *e, struct ctx *c)
{
	char path[PATH_MAX];
	const char *raw = archive_entry_pathname(e);
	int r;

	if (!raw) {
		report(-EINVAL, "(unnamed)", c, "a tar member without a name; the archive is corrupt");
		return -EINVAL;
	}
	r = clean_member_path(raw, path, sizeof path);
	if (r == -EPERM) {
		report(0, raw, c, "refusing a member with an absolute path or '..': it would escape the layer; the image is malformed or hostile");
		return -EPERM;
	}
	if (r < 0) {
		report(r, raw, c, "member name too long");
		return r;
	}

	const char *hl = archive_entry_hardlink(e);
	mode_t type = archive_entry_filetype(e);

	if (!path[0]) {
		if (hl || type != AE_IFDIR) {
			report(-EINVAL, raw, c, "the layer root must be a directory");
			return -EINVAL;
		}
		return add_dir(c, e, "");
	}

	const char *name;
	_cleanup_close_ int pfd = open_parent(c, path, &name, true);
	if (pfd < 0) {
		if (pfd == -EXDEV || pfd == -ELOOP)
			report(pfd, raw, c, "a parent is a symlink that leads out of the layer; the image is malformed or hostile");
		else
			report(pfd, raw, c, "cannot open or create the parent directory; is a parent a file or a dangling symlink?");
		return pfd;
	}

	bool exists_dir;
	r = clear_slot(pfd, name, !hl && type == AE_IFDIR, &exists_dir);
	if (r < 0) {
		report(r, raw, c, "cannot replace an earlier member of the same name");
		return r;
	}

	if (hl) {
		char tpath[PATH_MAX];
		const char *tname;
		if (clean_member_path(hl, tpath, sizeof tpath) < 0 || !tpath[0]) {
			report(0, raw, c, "refusing a hard link whose target escapes the layer");
			return -EPERM;
		}
		_cleanup_close_ int tfd = open_parent(c, tpath, &tname, false);
		if (tfd < 0) {
			report(tfd, hl, c, "hard link target's directory is missing or escapes the layer");
			return tfd;
		}
		struct stat st;
		if (skipped_has(&c->skipped, tpath))
			return skipped_add(&c->skipped, path);
		if (fstatat(tfd, tname, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode)) {
			report(-ENOENT, raw, c, "hard link to a member that is not an earlier file of this layer");
			return -ENOENT;
		}
		if (linkat(tfd, tname, pfd, name, 0) < 0) {
			r = -errno;
			report(r, raw, c, "creating the hard link failed");
			return r;
		}
		return 0;
	}

	switch (type) {
	case AE_IFDIR:
		if (!exists_dir && mkdirat(pfd, name, 0700) < 0) {
			r = -errno;
			report(r, raw, c, "creating the directory failed");
			return r;
		}
		{
			_cleanup_close_ int dfd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (dfd < 0)
				return -errno;
			r = apply_xattrs(e, dfd, c, raw);
			if (r < 0)
				return r;
		}
		return add_dir(c, e, path);
	case AE_IFREG: {
		_cleanup_close_ int fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0) {
			r = -errno;
			report(r, raw, c, "creating the file failed");
			return r;
		}
		r = write_data(a, fd, c, raw, archive_entry_size(e));
		if (r < 0)
			return r;
		r = apply_xattrs(e, fd, c, raw);
		if (r < 0)
			return r;
		return apply_meta(e, pfd, name, fd, c, raw, false);
	}
	case AE_IFLNK: {
		const char *target = archive_entry_symlink(e);
		if (!target || !*target) {
			report(-EINVAL, raw, c, "symlink without a target; the archive is corrupt");
			return -EINVAL;
		}
		/* The target is only data: nothing in strata follows it out of
		 * the layer, so any text is allowed, as in every runtime. */
		if (symlinkat(target, pfd, name) < 0) {
			r = -errno;
			report(r, raw, c, "creating the symlink failed");
			return r;
		}
		return apply_meta(e, pfd, name, -1, c, raw, true);
	}
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO: {
		dev_t dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
		if (type == AE_IFCHR && dev == makedev(0, 0)) {
			/* An overlay-style whiteout: keep its meaning even
			 * where mknod is refused, as ".wh.NAME". */
			r = wh_write(pfd, name, &c->wh);
			if (r < 0)
				report(r, raw, c, "writing a whiteout failed");
			return r;
		}
		if (c->o->rootless && type != AE_IFIFO)
			return skipped_add(&c->skipped, path);
		if (mknodat(pfd, name, type | 0600, dev) < 0) {
			r = -errno;
			report(r, raw, c, r == -EPERM
			       ? "device nodes cannot be created in this store (rootless or nodev); import as root, or remove the device from the image"
			       : "creating the special file failed");
			return r;
		}
		if (!c->o->rootless) {
			if (fchownat(pfd, name, (uid_t)archive_entry_uid(e), (gid_t)archive_entry_gid(e), AT_SYMLINK_NOFOLLOW) < 0 ||
			    fchmodat(pfd, name, archive_entry_perm(e), 0) < 0)
				return -errno;
		}
		return 0;
	}
	case AE_IFSOCK:
		return 0;    /* sockets are runtime objects; a layer cannot carry one */
	default:
		report(-EINVAL, raw, c, "unknown member type; the archive is corrupt");
		return -EINVAL;
	}
}

int unpack_archive(struct archive *a, int rootfd, const struct unpack_opts *o)
{
	struct ctx c = {
		.rootfd = rootfd,
		.o = o,
		.wh = { .use_trusted = !o->rootless, .try_mknod = !o->rootless },
	};
	struct archive_entry *e;
	int r = 0, ar;

	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK || ar == ARCHIVE_WARN) {
		r = do_entry(a, e, &c);
		if (r < 0)
			goto out;
	}
	if (ar != ARCHIVE_EOF) {
		char op[512];
		snprintf(op, sizeof op, "import: read %s", o->what);
		r = read_failure(a, rootfd, op, NULL);
		goto out;
	}
	r = finish_dirs(&c);
	if (r == 0 && c.skipped.n)
		skipped_report(&c.skipped, c.o->what);
out:
	skipped_free(&c.skipped);
	for (size_t i = 0; i < c.ndirs; i++)
		free(c.dirs[i].path);
	free(c.dirs);
	return r;
}
