/* layer.c: open and check the layer stack; inode numbers unique across it. */
#include "fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statfs.h>
#include <stdint.h>
#include <unistd.h>

/* Directories known by identity, for the overlap checks below. */
static void dir_key(const struct stat *st, char *key, size_t len)
{
	snprintf(key, len, "%jx:%jx", (uintmax_t)st->st_dev, (uintmax_t)st->st_ino);
}

/* Walk from directory fd up to "/", calling step() on each directory until
 * it returns nonzero; that value is returned, 0 once "/" was passed. The
 * walk holds O_PATH descriptors: it needs search permission only, so
 * parents a user may not list still count. A parent that cannot be opened
 * ends the walk as "/" would (the layer is then not below any writable
 * directory we can see). */
static int walk_up(int fd, int (*step)(const struct stat *st, void *arg), void *arg)
{
	struct stat st, prev = { 0 };
	int cur = openat(fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC), r = 0;

	for (int depth = 0; cur >= 0 && depth < 4096; depth++) {
		if (fstat(cur, &st) < 0)
			break;
		if (depth && st.st_dev == prev.st_dev && st.st_ino == prev.st_ino)
			break;  /* "/" */
		if ((r = step(&st, arg)) != 0)
			break;
		prev = st;
		int up = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
		close(cur);
		cur = up;
	}
	if (cur >= 0)
		close(cur);
	return r;
}

static int add_key(const struct stat *st, void *set)
{
	char key[48];
	dir_key(st, key, sizeof key);
	int r = ns_add(set, key);
	return r < 0 ? r : 0;
}

/* Overlap checks between the writable directories (upper, work) and every
 * lower layer. Walking ".." from each lower to "/" costs a few system
 * calls per level, which for 500 layers was a sixth of the mount time; the
 * layers of a stack usually share their parents, so a walk stops at the
 * first ancestor an earlier walk found clear. */
struct overlap {
	struct stat wr[2];        /* upper, work */
	struct nameset above[2];  /* each of them and its ancestors */
	struct nameset clear;     /* dirs with neither of them at or above */
	struct nameset walked;    /* this walk's dirs, clear once it ends at "/" */
};

static int below_step(const struct stat *st, void *arg)
{
	struct overlap *ov = arg;
	char key[48];

	for (int k = 0; k < 2; k++)
		if (st->st_dev == ov->wr[k].st_dev && st->st_ino == ov->wr[k].st_ino)
			return k + 1;
	dir_key(st, key, sizeof key);
	if (ns_has(&ov->clear, key))
		return 3;
	return ns_add(&ov->walked, key) < 0 ? -ENOMEM : 0;
}

/* Which writable dir (1 upper, 2 work) is lower dir LST at or below, or
 * contains; 0 none; -errno. */
static int lower_overlaps(struct overlap *ov, int fd, const struct stat *lst)
{
	char key[48];

	dir_key(lst, key, sizeof key);
	for (int k = 0; k < 2; k++)
		if (ns_has(&ov->above[k], key))
			return k + 1;
	int r = walk_up(fd, below_step, ov);
	if (r == 0 || r == 3) {
		for (size_t i = 0; i < ov->walked.cap && r >= 0; i++)
			if (ov->walked.slot[i] && ns_add(&ov->clear, ov->walked.slot[i]) < 0)
				r = -ENOMEM;
		r = r < 0 ? r : 0;
	}
	ns_free(&ov->walked);
	ov->walked = (struct nameset){ 0 };
	return r;
}

/* what: the layer's role for messages; NULL for a lower layer, which may
 * also be a packed layer file: ENOTDIR is then returned unreported. */
static int open_layer_dir(const char *path, const char *what, struct layer *l)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;
		if (e == ENOTDIR && !what)
			return -e;
		if (!what)
			what = "lower layer (lowerdir=)";
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
	l->lo = (struct lower){ .fd = fd, .dev = st.st_dev };
	l->path = strdup(path);
	return l->path ? 0 : -ENOMEM;
}

/* Decompressed chunks of every packed layer of the mount, in one cache. */
#define PK_CACHE_BYTES (64u << 20)

/* A lower layer that is a packed layer's metadata file (strata pack):
 * mapped and checked now, so a truncated or corrupt one is refused at
 * mount, naming it. */
static int open_layer_packed(struct sfs *fs, const char *path, unsigned idx, struct layer *l)
{
	if (!fs->pk_cache && !(fs->pk_cache = pk_cache_new(PK_CACHE_BYTES)))
		return -ENOMEM;
	int r = lower_open_packed(path, idx, fs->pk_cache, &l->lo);
	if (r < 0)
		return r;
	/* (progcache: programs decompressed once, beside the layer file, for
	 * every mount of it) */
	char dir[PATH_MAX];
	if (fs->opts.progcache && snprintf(dir, sizeof dir, "%s" LOWER_PROGS_SUFFIX, path) < (int)sizeof dir &&
	    (r = pk_progs_enable(l->lo.pk, dir)) < 0)
		return r;
	l->fd = -1;
	l->dev = l->lo.dev;
	l->path = strdup(path);
	return l->path ? 0 : -ENOMEM;
}

/* Refuse a stack whose upper or work directory overlaps another layer:
 * writes would show up in a layer, or copy-ups in what they copy. */
static int check_overlaps(struct sfs *fs, int ufd, const struct stat *ust, int wfd,
			  const struct stat *wst)
{
	const struct strata_opts *o = &fs->opts;
	struct overlap ov = { .wr = { *ust, *wst } };
	char key[2][48];
	int r = walk_up(ufd, add_key, &ov.above[0]);

	if (r == 0)
		r = walk_up(wfd, add_key, &ov.above[1]);
	if (r < 0) {
		serr(-r, "check overlaps of", o->upperdir, "strata-fs is short of memory");
		goto out;
	}
	dir_key(ust, key[0], sizeof key[0]);
	dir_key(wst, key[1], sizeof key[1]);
	if (ns_has(&ov.above[0], key[1]) || ns_has(&ov.above[1], key[0])) {
		serr(EINVAL, "use work directory", o->workdir,
		     "it overlaps upperdir %s; give two separate sibling directories", o->upperdir);
		r = -EINVAL;
		goto out;
	}
	for (unsigned i = 0; i < o->nlowers && r == 0; i++) {
		int fd = fs->layers[fs->has_upper + i].fd;
		struct stat lst;
		if (fd < 0)
			continue;   /* a packed layer: a file, read only through its map */
		if (fstat(fd, &lst) < 0) {
			r = -errno;
			serr(-r, "stat", o->lowers[i], NULL);
			break;
		}
		r = lower_overlaps(&ov, fd, &lst);
		if (r < 0)
			serr(-r, "check overlaps of", o->lowers[i], "strata-fs is short of memory");
		else if (r == 1)
			serr(EINVAL, "use upper layer", o->upperdir,
			     "it overlaps lower layer %s; the upper must be a separate directory tree",
			     o->lowers[i]);
		else if (r == 2)
			serr(EINVAL, "use work directory", o->workdir,
			     "it overlaps lower layer %s; layers are never written, give a workdir outside them",
			     o->lowers[i]);
		if (r > 0)
			r = -EINVAL;
	}
out:
	ns_free(&ov.above[0]);
	ns_free(&ov.above[1]);
	ns_free(&ov.clear);
	ns_free(&ov.walked);
	return r;
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
		/* a directory, else a packed layer's metadata file: a stack of
		 * directories costs no system call more than before */
		r = open_layer_dir(o->lowers[i], NULL, &fs->layers[base + i]);
		if (r == -ENOTDIR && lower_is_packed_file(o->lowers[i]))
			r = open_layer_packed(fs, o->lowers[i], i, &fs->layers[base + i]);
		else if (r == -ENOTDIR)
			serr(ENOTDIR, "open", o->lowers[i],
			     "a lower layer (lowerdir=) must be a directory or a packed layer file (strata pack)");
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
		_cleanup_close_ int wfd = open(o->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
			return -EXDEV;
		}
		r = check_overlaps(fs, u->fd, &ust, wfd, &wst);
		if (r < 0)
			return r;
		if (mkdirat(wfd, "strata", 0700) < 0 && errno != EEXIST) {
			int e = errno;
			serr(e, "create", o->workdir, "strata-fs needs a writable workdir");
			return -e;
		}
		fs->workfd = openat(wfd, "strata", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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
	bool packed = false;
	for (unsigned i = 0; i < n; i++) {
		unsigned k;
		/* packed layers share one tag: layer_ino(fs) tells them apart */
		dev_t dev = fs->layers[i].lo.pk ? makedev(LOWER_PK_MAJOR, 0) : fs->layers[i].dev;
		packed |= fs->layers[i].lo.pk != NULL;
		for (k = 0; k < ndevs; k++)
			if (devs[k] == dev)
				break;
		if (k == ndevs && ndevs < 64)
			devs[ndevs++] = dev;
		fs->layers[i].ino_tag = (uint64_t)(k < 64 ? k : 63) << 58;
	}
	if (ndevs > 1 || packed)
		fs->same_dev = false;
	return 0;
}

void layers_close(struct sfs *fs)
{
	for (unsigned i = 0; i < fs->nlayers; i++) {
		if (fs->layers[i].fd >= 0)
			close(fs->layers[i].fd);
		lower_close(&fs->layers[i].lo);
		free(fs->layers[i].path);
	}
	free(fs->layers);
	pk_cache_free(fs->pk_cache);
	fs->pk_cache = NULL;
	if (fs->workfd >= 0) {
		if (fs->whp.share_dirfd == fs->workfd)  /* set up (probe_privileges) */
			wh_share_end(&fs->whp);
		close(fs->workfd);
	}
}

uint64_t layer_ino(struct sfs *fs, uint32_t layer, const struct stat *st)
{
	if (fs->same_dev)
		return st->st_ino;
	/* Keep the low bits and mark the filesystem in the high ones, as
	 * overlayfs's xino does; an inode number that already uses the high
	 * bits is folded so it stays unique in practice. */
	uint64_t ino = st->st_ino;
	if (fs->layers[layer].lo.pk) {
		/* a packed layer's numbers are 32 bits: above them, the layer's
		 * place counted from the bottom of the stack, which a layer
		 * added on top (a commit) does not change */
		ino = (ino & 0xffffffffu) | (uint64_t)(fs->nlayers - layer) << 32;
		return (ino & ((1ULL << 58) - 1)) | fs->layers[layer].ino_tag;
	}
	if (ino >> 58)
		ino = (ino ^ (ino >> 58)) & ((1ULL << 58) - 1);
	return ino | fs->layers[layer].ino_tag;
}
