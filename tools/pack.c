#include "pack.h"

#include "err.h"
#include "fsutil.h"
#include "lowerview.h"
#include "unpack.h"
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

struct link {
	dev_t dev;
	ino_t ino;
	char *path;
};

struct pk {
	struct archive *a;
	const struct pack_opts *o;
	struct lowerview lv;
	struct link *links;
	size_t nlinks;
};

static bool skip_xattr(const char *name)
{
	static const char *const pfx[] = {
		"trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.", OVERRIDE_STAT_XATTR,
	};
	for (size_t i = 0; i < sizeof pfx / sizeof *pfx; i++)
		if (!strncmp(name, pfx[i], strlen(pfx[i])))
			return true;
	return false;
}

static void add_xattrs(struct archive_entry *e, int fd)
{
	char list[8192];
	ssize_t n = flistxattr(fd, list, sizeof list);
	for (ssize_t off = 0; n > 0 && off < n; off += (ssize_t)strlen(list + off) + 1) {
		const char *name = list + off;
		char val[4096];
		if (skip_xattr(name))
			continue;
		ssize_t vl = fgetxattr(fd, name, val, sizeof val);
		if (vl >= 0)
			archive_entry_xattr_add_entry(e, name, val, (size_t)vl);
	}
}

/* Owner and mode as the image sees them. */
/* Owner and mode as the image sees them. In a rootless store the disk
 * owner is the store's user, who is root inside the container; an owner
 * from the image lives in the override xattr. */
static void image_stat(const struct pack_opts *o, int fd, struct stat *st)
{
	char v[64];
	ssize_t n = fd >= 0 ? fgetxattr(fd, OVERRIDE_STAT_XATTR, v, sizeof v - 1) : -1;
	unsigned uid, gid, mode;
	if (n > 0) {
		v[n] = '\0';
		if (sscanf(v, "%u:%u:%o", &uid, &gid, &mode) == 3) {
			/* Import wrote the disk mode as the image's plus owner
			 * access. A disk mode that differs was set later, by a
			 * chmod in a container whose filesystem did not keep the
			 * xattr current: it is the newer truth. */
			mode_t owner = S_ISDIR(st->st_mode) ? 0700 : 0600;
			bool chmodded = (st->st_mode & 0777) != ((mode & 0777) | owner);
			st->st_uid = uid;
			st->st_gid = gid;
			if (!chmodded)
				st->st_mode = (st->st_mode & S_IFMT) | (mode & 07777);
			return;
		}
	}
	if (o->rootless) {
		if (st->st_uid == geteuid())
			st->st_uid = 0;
		if (st->st_gid == getegid())
			st->st_gid = 0;
	}
}

static bool has_xattr(int fd, const char *a, const char *b, char *val, size_t len)
{
	ssize_t n = fgetxattr(fd, a, val, len - 1);
	if (n < 0)
		n = fgetxattr(fd, b, val, len - 1);
	if (n < 0)
		return false;
	val[n] = '\0';
	return true;
}

/* A metacopy file in upper has only metadata; its data is in the first
 * lower layer holding the path (or its redirect). */
static int data_fd(struct pk *p, int fd, const char *path)
{
	char v[PATH_MAX];
	if (!p->o->overlay || !has_xattr(fd, "trusted.overlay.metacopy", "user.overlay.metacopy", v, sizeof v))
		return -ENOENT;
	const char *src = path;   /* the entry's lower source path */
	if (has_xattr(fd, "trusted.overlay.redirect", "user.overlay.redirect", v, sizeof v) && v[0] == '/')
		src = v + 1;
	/* The data of a packed layer's file comes out of it (lower_open_file)
	 * without unpacking the layer. */
	size_t layer;
	if (!lower_lookup(&p->lv, 0, src, &layer))
		return -ENOENT;
	return lower_open_file(&p->lv, layer, src);
}

static int write_entry(struct pk *p, struct archive_entry *e, int datafd, const char *path)
{
	if (archive_write_header(p->a, e) != ARCHIVE_OK) {
		serr(0, "pack: write tar header for", path, "%s", archive_error_string(p->a));
		return -EIO;
	}
	if (datafd < 0 || archive_entry_size(e) == 0)
		return 0;
	char buf[1 << 16];
	ssize_t n;
	while ((n = read(datafd, buf, sizeof buf)) > 0)
		if (archive_write_data(p->a, buf, (size_t)n) < 0) {
			serr(0, "pack: write data of", path, "%s", archive_error_string(p->a));
			return -EIO;
		}
	if (n < 0) {
		int r = -errno;
		serr(r, "pack: read", path, "%s", p->o->what);
		return r;
	}
	return 0;
}

static int emit_marker(struct pk *p, const char *dirpath, const char *name, time_t mtime)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s%s%s", dirpath, *dirpath ? "/" : "", name);
	struct archive_entry *e = archive_entry_new();
	archive_entry_set_pathname(e, path);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0);
	archive_entry_set_size(e, 0);
	archive_entry_set_mtime(e, mtime, 0);
	int r = write_entry(p, e, -1, path);
	archive_entry_free(e);
	return r;
}

static int walk(struct pk *p, int dirfd, const char *dirpath, const char *lsrc);
static int emit_lower_children(struct pk *p, const char *src, const char *tardir, size_t layer,
			       char **skip, size_t nskip);

static bool redirect_of(int fd, char *buf, size_t len)
{
	return has_xattr(fd, "trusted.overlay.redirect", "user.overlay.redirect", buf, len) && buf[0] == '/';
}

/* Emit entry NAME of dirfd as DIRPATH/NAME.
 *
 * from_layer < 0: dirfd is in the upper directory; lsrc is the entry's
 * path in the lower layers when it sits inside a renamed (redirected)
 * directory, else NULL (same path). OCI has no redirects, so a renamed
 * directory is written whole: opaque, with its lower contents copied in.
 * from_layer >= 0: dirfd is in that lower layer (copying a renamed
 * directory's contents); lsrc is the entry's path there. */
static int one(struct pk *p, int dirfd, const char *dirpath, const char *name, const char *lsrc,
	       int from_layer)
{
	char path[PATH_MAX];
	struct stat st;
	const char *target;
	int r = 0;

	if ((size_t)snprintf(path, sizeof path, "%s%s%s", dirpath, *dirpath ? "/" : "", name) >= sizeof path)
		return -ENAMETOOLONG;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		serr(r, "pack: stat", path, "%s", p->o->what);
		return r;
	}
	enum wh_kind k = wh_classify(name, &st, &target);
	if (k == WH_RESERVED)
		return 0;
	if (p->o->overlay && k == WH_CHARDEV && from_layer < 0) {
		char wh[NAME_MAX + 8];
		snprintf(wh, sizeof wh, WH_PREFIX "%s", name);
		return emit_marker(p, dirpath, wh, st.st_mtime);
	}
	if (S_ISSOCK(st.st_mode))
		return 0;

	_cleanup_close_ int fd = -1;
	if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
		if (fd < 0) {
			r = -errno;
			serr(r, "pack: open", path, "%s; is it readable by this user?", p->o->what);
			return r;
		}
	}
	image_stat(p->o, fd, &st);

	struct archive_entry *e = archive_entry_new();
	archive_entry_copy_stat(e, &st);
	archive_entry_set_pathname(e, path);
	archive_entry_set_uname(e, "");
	archive_entry_set_gname(e, "");
	archive_entry_unset_atime(e);
	archive_entry_unset_ctime(e);
	archive_entry_unset_birthtime(e);
	if (fd >= 0)
		add_xattrs(e, fd);

	if (S_ISLNK(st.st_mode)) {
		char t[PATH_MAX];
		ssize_t n = readlinkat(dirfd, name, t, sizeof t - 1);
		if (n < 0) {
			r = -errno;
			goto out;
		}
		t[n] = '\0';
		archive_entry_set_symlink(e, t);
		archive_entry_set_size(e, 0);
	}
	if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
		for (size_t i = 0; i < p->nlinks; i++)
			if (p->links[i].dev == st.st_dev && p->links[i].ino == st.st_ino) {
				archive_entry_set_hardlink(e, p->links[i].path);
				archive_entry_set_size(e, 0);
				r = write_entry(p, e, -1, path);
				goto out;
			}
		struct link *nl = realloc(p->links, (p->nlinks + 1) * sizeof *nl);
		if (nl) {
			p->links = nl;
			nl[p->nlinks++] = (struct link){ st.st_dev, st.st_ino, strdup(path) };
		}
	}
	if (S_ISREG(st.st_mode)) {
		_cleanup_close_ int lfd = from_layer < 0 ? data_fd(p, fd, lsrc ? lsrc : path) : -1;
		if (lfd >= 0) {
			struct stat ls;
			fstat(lfd, &ls);
			archive_entry_set_size(e, ls.st_size);
		}
		r = write_entry(p, e, lfd >= 0 ? lfd : fd, path);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		archive_entry_set_size(e, 0);
		r = write_entry(p, e, -1, path);
		if (r < 0)
			goto out;
		struct stat ms;
		char redir[PATH_MAX];
		if (from_layer >= 0) {
			r = emit_lower_children(p, lsrc, path, (size_t)from_layer, NULL, 0);
			goto out;
		}
		bool redirected = p->o->overlay && redirect_of(fd, redir, sizeof redir);
		bool has_marker = fstatat(fd, WH_OPQ_MARKER, &ms, AT_SYMLINK_NOFOLLOW) == 0;
		if (p->o->overlay && !has_marker && (redirected || wh_dir_is_opaque(fd, false) > 0))
			r = emit_marker(p, path, WH_OPQ_MARKER, st.st_mtime);
		if (r == 0)
			r = walk(p, fd, path, redirected ? redir + 1 : lsrc);
		goto out;
	}
	archive_entry_set_size(e, 0);
	r = write_entry(p, e, -1, path);
out:
	archive_entry_free(e);
	return r;
}

/* Children of upper directory dirfd. Inside a renamed directory (lsrc set)
 * whiteouts only hide lower entries, which are then copied in. */
static int walk(struct pk *p, int dirfd, const char *dirpath, const char *lsrc)
{
	char **names;
	size_t n;
	int r = list_sorted(dirfd, &names, &n);
	if (r < 0) {
		serr(r, "pack: list", *dirpath ? dirpath : "/", "%s", p->o->what);
		return r;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		if (!lsrc) {
			r = one(p, dirfd, dirpath, names[i], NULL, -1);
			continue;
		}
		struct stat st;
		const char *target;
		if (fstatat(dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		enum wh_kind k = wh_classify(names[i], &st, &target);
		if (k == WH_OCI) {
			/* keep the hidden name in the skip list */
			memmove(names[i], target, strlen(target) + 1);
			continue;
		}
		if (k != WH_NONE)
			continue;
		char src[PATH_MAX];
		snprintf(src, sizeof src, "%s%s%s", lsrc, *lsrc ? "/" : "", names[i]);
		r = one(p, dirfd, dirpath, names[i], src, -1);
	}
	if (r == 0 && lsrc && wh_dir_is_opaque(dirfd, true) <= 0)
		r = emit_lower_children(p, lsrc, dirpath, 0, names, n);
	free_names(names, n);
	return r;
}

/* Copy the merged lower directory src (from layer `layer` down) into the
 * tar under tardir, leaving out names in skip (present or deleted above). */
static int emit_lower_children(struct pk *p, const char *src, const char *tardir, size_t layer,
			       char **skip, size_t nskip)
{
	struct lower_entry *e;
	size_t n;
	int r = lower_list(&p->lv, layer, src, &e, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		bool skipped = false;
		for (size_t k = 0; k < nskip && !skipped; k++)
			skipped = !strcmp(skip[k], e[i].name);
		if (skipped)
			continue;
		char child[PATH_MAX];
		snprintf(child, sizeof child, "%s%s%s", src, *src ? "/" : "", e[i].name);
		/* A renamed directory is copied from the layer's tree: a packed
		 * layer is unpacked for it (lower_fd), once per command. */
		int lfd = lower_fd(&p->lv, e[i].layer);
		_cleanup_close_ int pfd = lfd < 0 ? lfd : open_beneath(lfd, src, O_PATH | O_DIRECTORY, 0);
		if (pfd < 0) {
			r = pfd;
			serr(r, "pack: open lower directory", src, "%s", p->o->what);
			break;
		}
		r = one(p, pfd, tardir, e[i].name, child, (int)e[i].layer);
	}
	lower_list_free(e, n);
	return r;
}

int pack_dir(int dirfd, int outfd, const struct pack_opts *o)
{
	struct pk p = { .o = o };
	if (o->lower)
		p.lv = *o->lower;
	int r;
	p.a = archive_write_new();
	if (!p.a)
		return -ENOMEM;
	archive_write_set_format_pax_restricted(p.a);
	archive_write_add_filter_gzip(p.a);
	archive_write_set_bytes_in_last_block(p.a, 1);
	if (archive_write_open_fd(p.a, outfd) != ARCHIVE_OK) {
		serr(0, "pack: start layer for", o->what, "%s", archive_error_string(p.a));
		archive_write_free(p.a);
		return -EIO;
	}
	r = walk(&p, dirfd, "", NULL);
	if (archive_write_close(p.a) != ARCHIVE_OK && r == 0) {
		serr(0, "pack: finish layer for", o->what, "%s", archive_error_string(p.a));
		r = -EIO;
	}
	archive_write_free(p.a);
	for (size_t i = 0; i < p.nlinks; i++)
		free(p.links[i].path);
	free(p.links);
	return r;
}
