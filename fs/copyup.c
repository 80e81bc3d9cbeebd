/* copyup.c: bring lower objects into the upper layer (overlayfs's
 * copy_up.c). Data is copied sparse-aware (reflink, else copy_file_range
 * over SEEK_DATA/SEEK_HOLE extents); mode, owner, times and xattrs follow.
 * Everything is built in the work directory and renamed into place, so a
 * crash never leaves a half-copied file visible. Metadata-only changes make
 * a metacopy: the upper file holds metadata only and data stays below. */
#include "fs.h"
#include "io.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/xattr.h>
#include <unistd.h>

int copyup_tmpname(struct sfs *fs, char *buf, size_t len)
{
	uint64_t seq = __atomic_add_fetch(&fs->tmp_seq, 1, __ATOMIC_RELAXED);
	snprintf(buf, len, "#%d-%llu", (int)getpid(), (unsigned long long)seq);
	return 0;
}

/* Copy [0, size) of src to dst keeping holes. */
static int copy_data(int src, int dst, off_t size)
{
	if (size == 0)
		return 0;
	if (ioctl(dst, FICLONE, src) == 0)
		return 0;
	/* copy_file_range refuses across filesystems (EXDEV) and on some; once
	 * refused, every extent goes through a buffer */
	bool cfr = true;
	off_t pos = 0;
	while (pos < size) {
		off_t data = lseek(src, pos, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break;  /* only a hole remains */
			data = pos;    /* no SEEK_DATA here: copy everything */
		}
		off_t hole = lseek(src, data, SEEK_HOLE);
		if (hole < 0)
			hole = size;
		if (hole > size)
			hole = size;
		off_t in = data, out = data;
		while (in < hole) {
			if (cfr) {
				ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(hole - in), 0);
				if (n > 0)
					continue;
				if (n == 0)
					break;  /* the source shrank */
				if (errno == EINTR)
					continue;
				if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
					return -errno;
				cfr = false;
			}
			char buf[128 * 1024];
			size_t want = sizeof buf < (size_t)(hole - in) ? sizeof buf : (size_t)(hole - in);
			ssize_t rd = pread(src, buf, want, in);
			if (rd < 0 && errno == EINTR)
				continue;
			if (rd < 0)
				return -errno;
			if (rd == 0)
				return -EIO;  /* the source shrank under us */
			int r = io_write_full(dst, buf, (size_t)rd, out);
			if (r < 0)
				return r;
			in += rd;
			out += rd;
		}
		pos = hole;
	}
	/* the size, including a trailing hole */
	if (ftruncate(dst, size) < 0)
		return -errno;
	return 0;
}

int copy_xattrs(int srcfd, int dstfd)
{
	char list[16384];
	ssize_t n = flistxattr(srcfd, list, sizeof list);

	if (n < 0)
		return errno == ENOTSUP ? 0 : -errno;
	for (char *k = list; k < list + n; k += strlen(k) + 1) {
		char val[65536];
		bool keep_override = !strcmp(k, "user.containers.override_stat") ||
				     !strcmp(k, "security.containers.override_stat");
		if (xa_is_private(k) && !keep_override)
			continue;
		ssize_t vn = fgetxattr(srcfd, k, val, sizeof val);
		if (vn < 0)
			continue;
		if (fsetxattr(dstfd, k, val, (size_t)vn, 0) < 0 && errno != ENOTSUP && errno != EPERM)
			return -errno;
	}
	return 0;
}

/* xattrs of an entry that cannot be opened (symlinks, devices) */
static int copy_xattrs_at(int sdir, const char *sname, int ddir, const char *dname)
{
	char list[16384];
	ssize_t n = xa_list(sdir, sname, list, sizeof list);

	if (n < 0)
		return (n == -ENOTSUP || n == -EPERM) ? 0 : (int)n;
	for (char *k = list; k < list + n; k += strlen(k) + 1) {
		char val[65536];
		if (xa_is_private(k))
			continue;
		ssize_t vn = xa_get(sdir, sname, k, val, sizeof val);
		if (vn < 0)
			continue;
		int r = xa_set(ddir, dname, k, val, (size_t)vn, 0);
		if (r < 0 && r != -ENOTSUP && r != -EPERM)
			return r;
	}
	return 0;
}

/* Owner and mode onto an upper object. An owner the upper cannot hold (a
 * rootless store without that id mapped) is kept in the override xattr, so
 * no operation fails with EOVERFLOW. */
mode_t owner_access(mode_t mode)
{
	return S_ISDIR(mode) ? S_IRWXU : S_IRUSR | S_IWUSR;
}

/* A daemon without CAP_DAC_OVERRIDE must still reach what it stores: an
 * object whose mode denies its owner keeps owner access on disk and its real
 * mode in the override xattr (user.* xattrs live on files and dirs only). */
bool needs_owner_access(struct sfs *fs, mode_t mode)
{
	return fs->no_dac && (S_ISREG(mode) || S_ISDIR(mode)) &&
	       (mode & owner_access(mode)) != owner_access(mode);
}

int override_write(struct sfs *fs, int dirfd, const char *name, int fd, uid_t uid, gid_t gid, mode_t mode)
{
	char v[64];
	int len = snprintf(v, sizeof v, "%u:%u:0%o", uid, gid, mode & 07777);
	if (fd >= 0)
		return fsetxattr(fd, fs->xa_override, v, (size_t)len, 0) < 0 ? -errno : 0;
	return xa_set(dirfd, name, fs->xa_override, v, (size_t)len, 0);
}

int upper_set_owner(struct sfs *fs, int dirfd, const char *name, int fd, uid_t uid, gid_t gid, mode_t mode)
{
	int r = fd >= 0 ? fchown(fd, uid, gid) : fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);
	bool overridden = false;
	bool need_keep = needs_owner_access(fs, mode);

	if (r < 0 && errno != EPERM && errno != EINVAL && errno != EOVERFLOW)
		return -errno;
	if ((r < 0 || need_keep) && fs->xa_override) {
		int xr = override_write(fs, dirfd, name, fd, uid, gid, mode);
		if (xr < 0 && xr != -EPERM && xr != -ENOTSUP)
			return xr;
		overridden = xr == 0;
	}
	if (!S_ISLNK(mode)) {
		/* chown may have cleared set-id bits: mode goes last */
		mode_t m = (mode & 07777) | (need_keep && overridden ? owner_access(mode) : 0);
		r = fd >= 0 ? fchmod(fd, m) : fchmodat(dirfd, name, m, 0);
		if (r < 0 && !overridden)
			return -errno;
	}
	return 0;
}

static void set_origin(struct sfs *fs, int dirfd, const char *name, int fd, uint64_t ino, mode_t mode)
{
	char v[32];
	int len = snprintf(v, sizeof v, "%llx", (unsigned long long)ino);

	if (!S_ISREG(mode) && !fs->privileged)
		return;  /* user.* xattrs live only on files and dirs: see origin_in_parent */
	if (fd >= 0)
		fsetxattr(fd, fs->xa_origin, v, (size_t)len, 0);
	else
		xa_set(dirfd, name, fs->xa_origin, v, (size_t)len, 0);
}

/* Unprivileged, symlinks and special files cannot carry user.* xattrs: the
 * origin of such a copy is kept on its upper parent, keyed by a hash of
 * its name (an xattr name cannot hold a 255-byte file name). */
static void origin_key(const char *name, char *key, size_t len)
{
	uint64_t h = 1469598103934665603ULL;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	snprintf(key, len, "user.strata.o.%016llx", (unsigned long long)h);
}

void origin_in_parent_set(int pdirfd, const char *name, uint64_t ino)
{
	char key[64], v[32];
	int len = snprintf(v, sizeof v, "%llx", (unsigned long long)ino);
	origin_key(name, key, sizeof key);
	fsetxattr(pdirfd, key, v, (size_t)len, 0);
}

uint64_t origin_in_parent_get(int pdirfd, const char *name)
{
	char key[64], v[32];
	origin_key(name, key, sizeof key);
	ssize_t n = fgetxattr(pdirfd, key, v, sizeof v - 1);
	if (n <= 0)
		return 0;
	v[n] = '\0';
	return strtoull(v, NULL, 16);
}

void origin_in_parent_clear(struct sfs *fs, int pdirfd, const char *name)
{
	char key[64];
	if (fs->privileged)
		return;
	origin_key(name, key, sizeof key);
	fremovexattr(pdirfd, key);
}

static void copy_times(int dirfd, const char *name, const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
}

/* Copy-up is invisible: the upper parent keeps the times it had. */
static void restore_times(int fd, const struct stat *st)
{
	struct timespec ts[2] = { st->st_atim, st->st_mtim };
	futimens(fd, ts);
}

/* What the kernel cached about a directory (nlink of a now merged
 * directory) is stale after its copy-up. */
static void inval_attr(struct sfs *fs, struct node *n)
{
	if (fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, node_id(fs, n), -1, 0);
}

static int copyup_dir_in(struct sfs *fs, struct node *dir, struct node *p);

int copyup_dir(struct sfs *fs, struct node *dir)
{
	if (!fs->has_upper)
		return -EROFS;
	pthread_rwlock_rdlock(dir->dl_lock);
	bool have = dir->ndl && is_upper(fs, dir->dl[0].layer);
	pthread_rwlock_unlock(dir->dl_lock);
	if (have)
		return 0;
	if (node_deleted(dir))
		return -ENOENT;  /* removed: nothing may bring it back */
	pthread_mutex_lock(&fs->table_lock);
	struct node *p = dir->parent;
	if (p)
		p->refs++;
	pthread_mutex_unlock(&fs->table_lock);
	if (!p)
		return -EIO;  /* the root always has an upper */
	int r = copyup_dir_in(fs, dir, p);
	node_unref(fs, p);
	return r;
}

static int copyup_dir_in(struct sfs *fs, struct node *dir, struct node *p)
{
	char tmp[64];
	int r;
	bool have;
	_cleanup_close_ int nfd = -1;   /* the new upper directory, until dl[0] has it */

	if ((r = copyup_dir(fs, p)) < 0)
		return r;

	pthread_mutex_lock(&p->lock);
	pthread_rwlock_rdlock(dir->dl_lock);
	have = dir->ndl && is_upper(fs, dir->dl[0].layer);
	pthread_rwlock_unlock(dir->dl_lock);
	if (have) {
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	int ufd = node_upperfd(fs, p);
	struct stat st;
	bool t = false;
	pthread_rwlock_rdlock(dir->dl_lock);
	uint32_t slayer = dir->dl[0].layer, spino = dir->dl[0].pino;
	bool spk = layer_packed(fs, slayer);
	int src = spk ? -1 : node_dlfd(fs, dir, 0, &t);
	pthread_rwlock_unlock(dir->dl_lock);
	if (ufd < 0 || (!spk && src < 0)) {
		pthread_mutex_unlock(&p->lock);
		return src < 0 && !spk ? src : -EIO;
	}
	if (spk) {
		struct lref lr = { .ino = spino };
		if ((r = lower_stat(&fs->layers[slayer].lo, &lr, &st)) < 0) {
			pthread_mutex_unlock(&p->lock);
			return r;
		}
	} else {
		fstat(src, &st);
	}
	copyup_tmpname(fs, tmp, sizeof tmp);
	if (mkdirat(fs->workfd, tmp, 0700) < 0) {
		r = -errno;
		goto out;
	}
	nfd = openat(fs->workfd, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0) {
		r = -errno;
		unlinkat(fs->workfd, tmp, AT_REMOVEDIR);
		goto out;
	}
	r = upper_set_owner(fs, -1, NULL, nfd, st.st_uid, st.st_gid, st.st_mode);
	if (r == 0) {
		int xr = spk ? lower_copy_xattrs(&fs->layers[slayer].lo, spino, nfd, -1, NULL)
			     : copy_xattrs(src, nfd);
		if (xr < 0)
			serr(xr, "copy xattrs of directory", dir->name,
			     "the upper filesystem refused them; the copy-up goes on without them");
	}
	if (r == 0) {
		char name[NAME_MAX + 1];
		struct stat pst;
		fstat(ufd, &pst);
		pthread_mutex_lock(&fs->table_lock);
		snprintf(name, sizeof name, "%s", dir->name);
		pthread_mutex_unlock(&fs->table_lock);
		if (renameat2(fs->workfd, tmp, ufd, name, RENAME_NOREPLACE) < 0)
			r = -errno;
		/* after the move: moving a directory rewrites its ".." */
		restore_times(nfd, &st);
		restore_times(ufd, &pst);
	}
	if (r < 0) {
		unlinkat(fs->workfd, tmp, AT_REMOVEDIR);
		goto out;
	}
	/* the new upper joins the top of the layer list */
	dl_rdlock(fs, dir);
	unsigned n = dir->ndl;
	struct dlayer *dl = malloc((n + 1) * sizeof *dl);
	if (dl) {
		dl[0].layer = 0;
		dl[0].fd = take_fd(&nfd);
		dl[0].pino = 0;
		dl[0].names = NULL;
		for (unsigned i = 0; i < n; i++) {
			dl[i + 1].layer = dir->dl[i].layer;
			dl[i + 1].pino = dir->dl[i].pino;
			/* the name sets move to the new list */
			dl[i + 1].names = __atomic_exchange_n(&dir->dl[i].names, NULL, __ATOMIC_ACQ_REL);
			/* the fds move too: a thread that just took one from the
			 * old list may still be using it, so none is closed */
			dl[i + 1].fd = __atomic_exchange_n(&dir->dl[i].fd, -1, __ATOMIC_ACQ_REL);
			if (dl[i + 1].fd >= 0)
				__atomic_fetch_sub(&fs->fd_used, 1, __ATOMIC_RELAXED);
		}
	}
	pthread_rwlock_unlock(dir->dl_lock);
	if (!dl) {
		r = -ENOMEM;
		goto out;
	}
	node_set_dlayers(fs, dir, dl, n + 1);
	inval_attr(fs, dir);
	r = 0;
out:
	if (t && src >= 0)
		close(src);
	pthread_mutex_unlock(&p->lock);
	return r;
}

/* Fill the data of a metacopy upper file from its lower data, in place:
 * until the metacopy mark is removed, readers still see the lower data. */
static int copyup_metacopy_data(struct sfs *fs, struct node *n)
{
	struct loc ul, dl;
	int r;

	int32_t dlayer = __atomic_load_n(&n->data_layer, __ATOMIC_ACQUIRE);
	if (dlayer < 0)
		return -EIO;
	if ((r = loc_get(fs, n, &ul)) < 0)
		return r;
	if ((r = loc_get_layer(fs, n, (uint32_t)dlayer, &dl)) < 0) {
		loc_put(&ul);
		return r;
	}
	_cleanup_close_ int src = dl.pino ? -1 : openat(dl.dirfd, dl.name,
							 O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	/* an unlinked metacopy is reached through its /proc link: follow it */
	_cleanup_close_ int dst = openat(ul.dirfd, ul.name, O_WRONLY | O_CLOEXEC | (ul.nofollow ? O_NOFOLLOW : 0));
	char cap[256];
	ssize_t caplen = dst >= 0 ? fgetxattr(dst, "security.capability", cap, sizeof cap) : -1;
	struct stat st;
	r = 0;
	if ((!dl.pino && src < 0) || dst < 0 || fstat(dst, &st) < 0)
		r = -errno;
	else {
		struct stat sst = { 0 };
		if (dl.pino)
			loc_stat(fs, &dl, &sst);
		else
			fstat(src, &sst);
		off_t size = st.st_size < sst.st_size ? st.st_size : sst.st_size;
		struct timespec ts[2] = { st.st_atim, st.st_mtim };
		r = dl.pino ? lower_copy_data(&fs->layers[dl.layer].lo, dl.pino, dst, (uint64_t)size)
			    : copy_data(src, dst, size);
		if (r == 0 && ftruncate(dst, st.st_size) < 0)
			r = -errno;
		if (r == 0 && !fs->opts.is_volatile && fdatasync(dst) < 0)
			r = -errno;
		/* writing the data dropped the file capabilities: put them back */
		if (r == 0 && caplen > 0)
			fsetxattr(dst, "security.capability", cap, (size_t)caplen, 0);
		if (r == 0 && fremovexattr(dst, wh_xattr_metacopy(&fs->whp)) < 0 && errno != ENODATA)
			r = -errno;
		if (r < 0) {
			/* A fill that failed (the upper full, most often) leaves
			 * the file a metacopy, its data read from below: what it
			 * wrote is given back, or the upper stays full. */
			if (ftruncate(dst, 0) < 0 || ftruncate(dst, st.st_size) < 0)
				serr(errno, "free the partial data of", ul.name,
				     "the file stays a metacopy; its upper copy holds space until deleted");
			if (caplen > 0)
				fsetxattr(dst, "security.capability", cap, (size_t)caplen, 0);
		}
		futimens(dst, ts);
	}
	loc_put(&ul);
	loc_put(&dl);
	if (r == 0) {
		__atomic_store_n(&n->metacopy, false, __ATOMIC_RELEASE);
		__atomic_store_n(&n->data_layer, -1, __ATOMIC_RELEASE);
	}
	return r;
}

/* Build the copy of a lower non-directory in the work directory as TMP.
 * Runs without the parent's lock: a long data copy stalls nobody else. */
static int build_copy(struct sfs *fs, struct node *n, enum cu_how how, const struct loc *src,
		      const struct stat *st, const char *tmp, bool *meta)
{
	int r = 0;

	*meta = false;
	if (S_ISREG(st->st_mode)) {
		/* O_NONBLOCK and a second look: a layer changed under us must
		 * not make the daemon open a FIFO or a device */
		const struct lower *lo = &fs->layers[src->layer].lo;
		_cleanup_close_ int in = -1;
		if (!src->pino) {
			in = openat(src->dirfd, src->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
			struct stat ist;
			if (in < 0)
				return -errno;
			if (fstat(in, &ist) < 0 || !S_ISREG(ist.st_mode) || ist.st_ino != st->st_ino)
				return -EIO;
		}
		_cleanup_close_ int out = openat(fs->workfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (out < 0)
			return -errno;
		*meta = how == CU_META && fs->opts.metacopy && st->st_size > 0;
		if (*meta) {
			r = ftruncate(out, st->st_size) < 0 ? -errno : 0;
			if (r == 0 && fsetxattr(out, wh_xattr_metacopy(&fs->whp), "", 0, 0) < 0)
				*meta = false;  /* no xattrs on this upper: copy the data */
		}
		/* a metadata change without metacopy still needs the data */
		if (r == 0 && !*meta && how != CU_EMPTY)
			r = src->pino ? lower_copy_data(lo, src->pino, out, (uint64_t)st->st_size)
				      : copy_data(in, out, st->st_size);
		/* owner before xattrs: chown drops security.capability */
		if (r == 0)
			r = upper_set_owner(fs, -1, NULL, out, st->st_uid, st->st_gid, st->st_mode);
		if (r == 0)
			r = src->pino ? lower_copy_xattrs(lo, src->pino, out, -1, NULL) : copy_xattrs(in, out);
		if (r == 0) {
			if (st->st_nlink == 1)
				set_origin(fs, -1, NULL, out, n->ino, st->st_mode);
			if (!fs->opts.is_volatile && !*meta)
				fdatasync(out);
			struct timespec ts[2] = { st->st_atim, st->st_mtim };
			futimens(out, ts);
		}
		return r;
	}
	if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX + 1];
		ssize_t len = loc_readlink(fs, src, target, sizeof target - 1);
		if (len < 0)
			return (int)len;
		target[len] = '\0';
		r = symlinkat(target, fs->workfd, tmp) < 0 ? -errno : 0;
	} else {
		r = mknodat(fs->workfd, tmp, (st->st_mode & S_IFMT) | 0600, st->st_rdev) < 0 ? -errno : 0;
	}
	if (r == 0)
		r = upper_set_owner(fs, fs->workfd, tmp, -1, st->st_uid, st->st_gid, st->st_mode);
	if (r == 0)
		r = src->pino ? lower_copy_xattrs(&fs->layers[src->layer].lo, src->pino, -1, fs->workfd, tmp)
			      : copy_xattrs_at(src->dirfd, src->name, fs->workfd, tmp);
	if (r == 0) {
		if (st->st_nlink == 1)
			set_origin(fs, fs->workfd, tmp, -1, n->ino, st->st_mode);
		copy_times(fs->workfd, tmp, st);
	}
	return r;
}

/* A metacopy truncated to nothing needs no data: drop the mark. */
static int drop_metacopy(struct sfs *fs, struct node *n)
{
	struct loc ul;
	int r = loc_get(fs, n, &ul);
	if (r < 0)
		return r;
	r = xa_remove(ul.dirfd, ul.name, wh_xattr_metacopy(&fs->whp));
	loc_put(&ul);
	if (r == -ENODATA)
		r = 0;
	if (r == 0) {
		__atomic_store_n(&n->metacopy, false, __ATOMIC_RELEASE);
		__atomic_store_n(&n->data_layer, -1, __ATOMIC_RELEASE);
	}
	return r;
}

int copyup(struct sfs *fs, struct node *n, enum cu_how how)
{
	struct node *p;
	struct loc src;
	char tmp[64], name[NAME_MAX + 1];
	struct stat st;
	bool meta;
	int r;

	if (!fs->has_upper)
		return -EROFS;
	if (S_ISDIR(n->type))
		return copyup_dir(fs, n);

	pthread_mutex_lock(&fs->table_lock);
	p = n->parent;
	if (p)
		p->refs++;
	pthread_mutex_unlock(&fs->table_lock);
	if (!p)
		return -ENOENT;
	if ((r = copyup_dir(fs, p)) < 0)
		goto out_unref;

	/* copy-ups of one object run one at a time (a non-directory's own
	 * lock serves nothing else) */
	pthread_mutex_lock(&n->lock);
	if (is_upper(fs, node_layer(n))) {
		r = 0;
		if (how == CU_DATA && node_metacopy(n))
			r = copyup_metacopy_data(fs, n);
		else if (how == CU_EMPTY && node_metacopy(n))
			r = drop_metacopy(fs, n);
		goto out_unlock;
	}
	if (node_deleted(n) || node_detached(n)) {
		r = -ENOENT;
		goto out_unlock;
	}
	if ((r = loc_get(fs, n, &src)) < 0)
		goto out_unlock;
	if ((r = loc_stat(fs, &src, &st)) < 0) {
		loc_put(&src);
		goto out_unlock;
	}
	copyup_tmpname(fs, tmp, sizeof tmp);
	r = build_copy(fs, n, how, &src, &st, tmp, &meta);
	loc_put(&src);
	if (r < 0) {
		unlinkat(fs->workfd, tmp, 0);
		goto out_unlock;
	}

	/* only the move into place needs the directory */
	pthread_mutex_lock(&p->lock);
	int ufd = node_upperfd(fs, p);
	pthread_mutex_lock(&fs->table_lock);
	bool gone = node_deleted(n) || node_detached(n) || n->parent != p;
	snprintf(name, sizeof name, "%s", n->name);
	pthread_mutex_unlock(&fs->table_lock);
	struct stat pst;
	if (gone || ufd < 0) {
		r = gone ? -ENOENT : -EIO;
	} else {
		fstat(ufd, &pst);
		if (renameat2(fs->workfd, tmp, ufd, name, RENAME_NOREPLACE) < 0)
			r = -errno;
	}
	if (r < 0) {
		pthread_mutex_unlock(&p->lock);
		unlinkat(fs->workfd, tmp, 0);
		goto out_unlock;
	}
	if (!S_ISREG(st.st_mode) && !fs->privileged && st.st_nlink == 1)
		origin_in_parent_set(ufd, name, n->ino);
	restore_times(ufd, &pst);
	struct stat ust;
	fstatat(ufd, name, &ust, AT_SYMLINK_NOFOLLOW);
	uint32_t old_layer = node_layer(n);
	pthread_mutex_lock(&fs->table_lock);
	__atomic_store_n(&n->layer, 0, __ATOMIC_RELEASE);
	if (st.st_nlink > 1) {
		/* a lower hard link broken by copy-up is a new inode, as in
		 * overlayfs without index */
		n->ino = layer_ino(fs, 0, &ust);
	}
	__atomic_store_n(&n->metacopy, meta, __ATOMIC_RELEASE);
	__atomic_store_n(&n->data_layer, meta ? (int32_t)old_layer : -1, __ATOMIC_RELEASE);
	node_hash_add(fs, n, ust.st_dev, ust.st_ino);
	pthread_mutex_unlock(&fs->table_lock);
	pthread_mutex_unlock(&p->lock);
	if (st.st_nlink > 1)
		inval_attr(fs, n);  /* the copy has a link count of its own */
out_unlock:
	pthread_mutex_unlock(&n->lock);
out_unref:
	node_unref(fs, p);
	return r;
}
