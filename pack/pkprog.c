/* pkprog: the programs and libraries of a packed layer, kept decompressed
 * in a directory beside it for every mount of the layer (pk_progs_enable).
 *
 * Every container of an image maps the same programs and libraries as it
 * starts, each from a mount of its own, and over a packed layer each mount
 * would decompress them again. A copy on disk is made once, by the first
 * mount that opens the file, and the mounts after it read the copy as they
 * read a file of a directory layer: through its descriptor, its page cache
 * shared by all of them and kept.
 *
 * A copy is not trusted: a mount checks it against the layer's chunk keys
 * (hashing costs a fraction of decompressing) before it gives out the first
 * descriptor of it, and a damaged copy is made again. A copy appears whole
 * or not at all (an unnamed file, linked in once written), so a killed
 * mount leaves none half-written; nothing changes one once it is there, and
 * the copies go with the layer's directory.
 */
#include "pkint.h"

#include "bytes.h"
#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Larger files stay packed: a copy is made whole when the file is opened,
 * and a large program is seldom read whole. */
#define PROG_MAX (64u << 20)
/* Copies a process holds open at most: a container's start opens a few
 * dozen; one that opens every program of its image (a scan) must neither
 * run the daemon out of descriptors nor copy the whole image. */
#define PROG_FDS_MAX 256

struct pent {
	uint32_t ino;   /* 0: an empty slot */
	int fd;         /* the checked copy, -1: read packed, PENT_BUSY: being
			 * checked or made by another thread */
};
#define PENT_BUSY (-2)

struct pk_progs {
	pthread_mutex_t mu;
	char *dir;
	int dfd;            /* -1 until first needed */
	bool off;           /* the directory cannot be made or opened */
	struct pent *tab;   /* open addressing by ino, at most half full */
	size_t cap, n;
	size_t nfd;         /* entries with a descriptor or being made */
	struct pk_progs_stats st;
};

int pk_progs_enable(struct pk_layer *l, const char *dir)
{
	struct pk_progs *p = calloc(1, sizeof *p);
	if (!p || !(p->dir = strdup(dir))) {
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	p->dfd = -1;
	pk_progs_free(l->progs);
	l->progs = p;
	return 0;
}

void pk_progs_free(struct pk_progs *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->cap; i++)
		if (p->tab[i].ino && p->tab[i].fd >= 0)
			close(p->tab[i].fd);
	if (p->dfd >= 0)
		close(p->dfd);
	pthread_mutex_destroy(&p->mu);
	free(p->tab);
	free(p->dir);
	free(p);
}

void pk_progs_stats(struct pk_layer *l, struct pk_progs_stats *st)
{
	memset(st, 0, sizeof *st);
	if (!l->progs)
		return;
	pthread_mutex_lock(&l->progs->mu);
	*st = l->progs->st;
	pthread_mutex_unlock(&l->progs->mu);
}

static struct pent *slot(struct pent *tab, size_t cap, uint32_t ino)
{
	size_t i = (ino * 0x9e3779b1u) & (cap - 1);
	while (tab[i].ino && tab[i].ino != ino)
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

static int remember(struct pk_progs *p, uint32_t ino, int fd)
{
	if (2 * (p->n + 1) > p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 64;
		struct pent *tab = calloc(cap, sizeof *tab);
		if (!tab)
			return -ENOMEM;
		for (size_t i = 0; i < p->cap; i++)
			if (p->tab[i].ino)
				*slot(tab, cap, p->tab[i].ino) = p->tab[i];
		free(p->tab);
		p->tab = tab;
		p->cap = cap;
	}
	struct pent *e = slot(p->tab, p->cap, ino);
	e->ino = ino;
	e->fd = fd;
	p->n++;
	return 0;
}

static int progs_dir(struct pk_progs *p)
{
	if (p->dfd < 0 && !p->off) {
		if (mkdir(p->dir, 0700) < 0 && errno != EEXIST)
			sdebug("program copies: cannot make %s: %s; programs are read packed", p->dir,
			       strerror(errno));
		p->dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		p->off = p->dfd < 0;
	}
	return p->dfd;
}

static uint32_t extent_len(const struct pk_layer *l, const struct pk_inode *i, uint64_t idx)
{
	uint64_t left = i->size - idx * l->chunk;
	return left > l->chunk ? l->chunk : (uint32_t)left;
}

/* Does fd hold exactly the bytes of file ino? */
static bool copy_ok(struct pk_layer *l, uint32_t ino, const struct pk_inode *i, const struct pk_extent *e,
		    uint64_t n, int fd, unsigned char *buf)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != i->size)
		return false;
	for (uint64_t idx = 0; idx < n; idx++) {
		uint32_t len = extent_len(l, i, idx), c;
		if (pread(fd, buf, len, (off_t)(idx * l->chunk)) != (ssize_t)len ||
		    pk_extent_chunk(l, ino, i, e, idx, &c) < 0)
			return false;
		uint8_t key[16];
		if (c == PK_HOLE ? !bytes_all_zero(buf, len)
				 : (pk_key(buf, len, key), memcmp(key, l->chunks[c].key, sizeof key) != 0))
			return false;
	}
	return true;
}

static bool is_elf(struct pk_layer *l, uint32_t ino)
{
	unsigned char m[4];
	return pk_read(l, ino, 0, sizeof m, m) == (ssize_t)sizeof m && !memcmp(m, "\177ELF", 4);
}

/* Name fd, a complete unnamed copy (or tmp, a named one), as name. */
static int link_copy(int dfd, int fd, const char *tmp, const char *name)
{
	if (tmp)
		return renameat(dfd, tmp, dfd, name) < 0 ? -errno : 0;
	if (linkat(fd, "", dfd, name, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno == EEXIST)
		return -EEXIST;
	/* (AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH) */
	char self[40];
	snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, self, dfd, name, AT_SYMLINK_FOLLOW) < 0 ? -errno : 0;
}

/* Write file ino's bytes, taken from the chunk store and checked on the
 * way, into a new copy called name: 0 or -errno. */
static int make_copy(struct pk_progs *p, struct pk_layer *l, uint32_t ino, const struct pk_inode *i,
		     const struct pk_extent *e, uint64_t n, const char *name, unsigned char *buf)
{
	char tmpname[64];
	const char *tmp = NULL;
	_cleanup_close_ int fd = openat(p->dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0400);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		snprintf(tmpname, sizeof tmpname, ".tmp.%d.%u", (int)getpid(), ino);
		unlinkat(p->dfd, tmpname, 0);
		fd = openat(p->dfd, tmpname, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0400);
		tmp = tmpname;
	}
	if (fd < 0)
		return -errno;
	_cleanup_free_ void *comp = malloc(PK_STORED_MAX);
	int r = comp ? 0 : -ENOMEM;
	for (uint64_t idx = 0; idx < n && r == 0; idx++) {
		uint32_t c;
		if ((r = pk_extent_chunk(l, ino, i, e, idx, &c)) < 0 || c == PK_HOLE)
			continue;
		if ((r = pk_store_get_with(l->store, &l->chunks[c], pk_loc_at(l, c), buf, comp)) == 0)
			r = io_write_full(fd, buf, extent_len(l, i, idx), (int64_t)(idx * l->chunk));
	}
	if (r == 0 && ftruncate(fd, (off_t)i->size) < 0)
		r = -errno;
	if (r == 0)
		r = link_copy(p->dfd, fd, tmp, name);
	if (r < 0 && tmp)
		unlinkat(p->dfd, tmp, 0);
	return r;
}

/* The checked copy of file ino, made if need be: an fd, or -errno. Runs
 * without p->mu (p->dfd is open and stays so); what it did goes to *st. */
static int copy_fd(struct pk_progs *p, struct pk_layer *l, uint32_t ino, const struct pk_inode *i,
		   const struct pk_extent *e, uint64_t n, struct pk_progs_stats *st)
{
	char name[16];
	snprintf(name, sizeof name, "%u", ino);
	_cleanup_free_ unsigned char *buf = malloc(l->chunk);
	if (!buf)
		return -ENOMEM;
	for (int tries = 0; tries < 2; tries++) {
		int fd = openat(p->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			if (copy_ok(l, ino, i, e, n, fd, buf)) {
				st->checked++;
				return fd;
			}
			close(fd);
			st->damaged++;
			char path[PATH_MAX + 16];
			snprintf(path, sizeof path, "%s/%s", p->dir, name);
			serr(-EIO, "check program copy", path,
			     "it does not match layer %s: made again from the layer's chunks", l->path);
			if (unlinkat(p->dfd, name, 0) < 0)
				return -errno;
		} else if (errno != ENOENT) {
			return -errno;
		}
		if (tries == 0 && !is_elf(l, ino))
			return -ENOENT;
		int r = make_copy(p, l, ino, i, e, n, name, buf);
		if (r == 0) {
			/* (written from checked chunks: no need to check it) */
			st->made++;
			fd = openat(p->dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
			return fd >= 0 ? fd : -errno;
		}
		if (r != -EEXIST)   /* (another mount made it meanwhile: check it) */
			return r;
	}
	return -EIO;
}

/* A new descriptor of checked copy fd for the caller, or -ENOENT for no
 * copy (read the file packed), or -errno. */
static int dup_copy(int fd)
{
	if (fd < 0)
		return -ENOENT;
	int r = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return r < 0 ? -errno : r;
}

/* The table's entry for ino, or NULL; p->mu held. */
static struct pent *lookup(struct pk_progs *p, uint32_t ino)
{
	struct pent *pe = p->cap ? slot(p->tab, p->cap, ino) : NULL;
	return pe && pe->ino ? pe : NULL;
}

int pk_prog_fd(struct pk_layer *l, uint32_t ino)
{
	struct pk_progs *p = l->progs;
	if (!p)
		return -ENOENT;
	const struct pk_inode *i;
	const struct pk_extent *e;
	uint64_t n;
	int r = pk_file_extents(l, ino, &i, &e, &n);
	if (r < 0)
		return r;
	if ((i->flags & PK_INO_INLINE) || i->size == 0 || i->size > PROG_MAX)
		return -ENOENT;
	pthread_mutex_lock(&p->mu);
	struct pent *pe = lookup(p, ino);
	if (pe) {
		/* (a copy another thread is still checking or making is read
		 * packed this time: the same bytes) */
		r = dup_copy(pe->fd);
		pthread_mutex_unlock(&p->mu);
		return r;
	}
	/* The first open of each file of the layer comes here, and checking
	 * or making a copy reads the whole file (the check that it is a
	 * program reads its first chunk): done without the lock, so first
	 * opens of other files by other threads do not wait for it. The
	 * busy entry counts against the descriptors' bound. */
	if (p->nfd >= PROG_FDS_MAX || progs_dir(p) < 0 || remember(p, ino, PENT_BUSY) < 0) {
		pthread_mutex_unlock(&p->mu);
		return -ENOENT;
	}
	p->nfd++;
	pthread_mutex_unlock(&p->mu);

	struct pk_progs_stats st = { 0 };
	int fd = copy_fd(p, l, ino, i, e, n, &st);
	r = dup_copy(fd);

	pthread_mutex_lock(&p->mu);
	/* (a failure is remembered too: this mount reads that file packed
	 * from now on) */
	lookup(p, ino)->fd = fd >= 0 ? fd : -1;
	if (fd < 0)
		p->nfd--;
	p->st.made += st.made;
	p->st.checked += st.checked;
	p->st.damaged += st.damaged;
	pthread_mutex_unlock(&p->mu);
	return r;
}
