/* layer.c: open and check the layer stack; inode numbers unique across it. */
#include "fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

/* Is directory fd `inner` the same as, or below, directory fd `outer`?
 * Walks ".." from inner up to the root. */
static int is_within(int inner, const struct stat *outer)
{
	struct stat st, prev = { 0 };
	int fd = dup(inner);

	if (fd < 0)
		return -errno;
	for (int depth = 0; depth < 4096; depth++) {
		if (fstat(fd, &st) < 0) {
			close(fd);
			return -errno;
		}
		if (st.st_dev == outer->st_dev && st.st_ino == outer->st_ino) {
			close(fd);
			return 1;
		}
		if (depth && st.st_dev == prev.st_dev && st.st_ino == prev.st_ino)
			break;  /* reached "/" */
		prev = st;
		int up = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		if (up < 0)
			return -errno;
		fd = up;
	}
	close(fd);
	return 0;
}

static int open_layer_dir(const char *path, const char *what, struct layer *l)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;
		if (e == ENOTDIR)
			serr(e, "open", path, "the %s must be a directory", what);
		else
			serr(e, "open", path, "check the %s path and its permissions", what);
		return -e;
	}
	if (fstat(fd, &st) < 0) {
		int e = errno;
		serr(e, "stat", path, NULL);
		close(fd);
		return -e;
	}
	l->fd = fd;
	l->dev = st.st_dev;
	l->path = strdup(path);
	return l->path ? 0 : -ENOMEM;
}

/* Remove leftovers of an earlier crash from our scratch directory. */
static void clean_workdir(int fd)
{
	DIR *d;
	struct dirent *de;
	int dfd = dup(fd);

	if (dfd < 0 || !(d = fdopendir(dfd))) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (unlinkat(fd, de->d_name, 0) < 0 && errno == EISDIR) {
			int sub = openat(fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				clean_workdir(sub);
				close(sub);
			}
			unlinkat(fd, de->d_name, AT_REMOVEDIR);
		}
	}
	closedir(d);
}

int layers_open(struct sfs *fs)
{
	struct strata_opts *o = &fs->opts;
	unsigned n = o->nlowers + (o->upperdir ? 1 : 0);
	unsigned base = o->upperdir ? 1 : 0;
	struct stat ust;
	int r;

	fs->layers = calloc(n, sizeof *fs->layers);
	if (!fs->layers)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		fs->layers[i].fd = -1;
	fs->nlayers = n;
	fs->has_upper = base;
	fs->workfd = -1;

	for (unsigned i = 0; i < o->nlowers; i++) {
		r = open_layer_dir(o->lowers[i], "lower layer (lowerdir=)", &fs->layers[base + i]);
		if (r < 0)
			return r;
	}
	if (o->upperdir) {
		struct layer *u = &fs->layers[0];
		r = open_layer_dir(o->upperdir, "upper layer (upperdir=)", u);
		if (r < 0)
			return r;
		if (faccessat(u->fd, ".", W_OK, AT_EACCESS) < 0) {
			serr(errno, "write to upper layer", o->upperdir,
			     "the upper directory must be writable by the user running strata-fs");
			return -EACCES;
		}
		fstat(u->fd, &ust);
		for (unsigned i = 0; i < o->nlowers; i++) {
			struct layer *l = &fs->layers[base + i];
			struct stat lst;
			fstat(l->fd, &lst);
			if (is_within(u->fd, &lst) == 1 || is_within(l->fd, &ust) == 1) {
				serr(EINVAL, "use upper layer", o->upperdir,
				     "it overlaps lower layer %s; the upper must be a separate directory tree",
				     o->lowers[i]);
				return -EINVAL;
			}
		}
		int wfd = open(o->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct stat wst;
		if (wfd < 0) {
			int e = errno;
			serr(e, "open work directory", o->workdir,
			     "workdir= must be an existing, empty directory on the upper's filesystem");
			return -e;
		}
		fstat(wfd, &wst);
		if (wst.st_dev != ust.st_dev) {
			serr(EXDEV, "use work directory", o->workdir,
			     "it is on another filesystem than upperdir %s; put both on the same one",
			     o->upperdir);
			close(wfd);
			return -EXDEV;
		}
		if (wst.st_ino == ust.st_ino || is_within(wfd, &ust) == 1 || is_within(u->fd, &wst) == 1) {
			serr(EINVAL, "use work directory", o->workdir,
			     "it overlaps upperdir %s; give two separate sibling directories", o->upperdir);
			close(wfd);
			return -EINVAL;
		}
		for (unsigned i = 0; i < o->nlowers; i++) {
			struct stat lst;
			fstat(fs->layers[base + i].fd, &lst);
			if (is_within(wfd, &lst) == 1 || is_within(fs->layers[base + i].fd, &wst) == 1) {
				serr(EINVAL, "use work directory", o->workdir,
				     "it overlaps lower layer %s; layers are never written, give a workdir outside them",
				     o->lowers[i]);
				close(wfd);
				return -EINVAL;
			}
		}
		if (mkdirat(wfd, "strata", 0700) < 0 && errno != EEXIST) {
			int e = errno;
			serr(e, "create", o->workdir, "strata-fs needs a writable workdir");
			close(wfd);
			return -e;
		}
		fs->workfd = openat(wfd, "strata", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(wfd);
		if (fs->workfd < 0) {
			int e = errno;
			serr(e, "open", o->workdir, "remove the workdir's 'strata' entry and retry");
			return -e;
		}
		clean_workdir(fs->workfd);
	}

	/* Inode numbers: real ones when every layer shares one filesystem,
	 * else tagged with the filesystem's index in the high bits. */
	dev_t devs[64];
	unsigned ndevs = 0;
	fs->same_dev = true;
	for (unsigned i = 0; i < n; i++) {
		unsigned k;
		for (k = 0; k < ndevs; k++)
			if (devs[k] == fs->layers[i].dev)
				break;
		if (k == ndevs && ndevs < 64)
			devs[ndevs++] = fs->layers[i].dev;
		fs->layers[i].ino_tag = (uint64_t)(k < 64 ? k : 63) << 58;
	}
	if (ndevs > 1)
		fs->same_dev = false;
	return 0;
}

void layers_close(struct sfs *fs)
{
	for (unsigned i = 0; i < fs->nlayers; i++) {
		if (fs->layers[i].fd >= 0)
			close(fs->layers[i].fd);
		free(fs->layers[i].path);
	}
	free(fs->layers);
	if (fs->workfd >= 0) {
		if (fs->whp.share_dirfd == fs->workfd)  /* set up (probe_privileges) */
			wh_share_end(&fs->whp);
		close(fs->workfd);
	}
}

uint64_t layer_ino(uint32_t layer, const struct stat *st)
{
	if (SFS->same_dev)
		return st->st_ino;
	/* Keep the low bits and mark the filesystem in the high ones, as
	 * overlayfs's xino does; an inode number that already uses the high
	 * bits is folded so it stays unique in practice. */
	uint64_t ino = st->st_ino;
	if (ino >> 58)
		ino = (ino ^ (ino >> 58)) & ((1ULL << 58) - 1);
	return ino | SFS->layers[layer].ino_tag;
}
