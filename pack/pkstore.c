/* pkstore: the content-addressed chunk store.
 *
 * Chunks live in pack files, CHUNKS/packs/<16 hex digits>.pack: each writer
 * (one store opened to write one layer) appends the chunks it adds to a pack
 * of its own, created with O_EXCL under a random name, so writers never
 * share a file and need no lock between them. Its threads reserve their
 * place with an atomic add on the pack's end and write in parallel, back to
 * back. At pk_store_sync the pack is made durable, then its index
 * (packs/<id>.idx) is renamed into place: the table other writers read to
 * find chunks to reuse. A layer then records where each of its chunks is,
 * so a reader needs no index and no lookup: it reads slen bytes at an
 * offset of a pack it keeps open.
 *
 * Stores written before packs hold loose objects, one file per chunk,
 * CHUNKS/ab/<32 hex digits of the key>[-N].{lz4,raw}: still read (layers
 * without PK_INCOMPAT_PACKS name them), and still written when PK_LOOSE_ENV
 * is set, for the tests of such stores.
 *
 * Chunks are compared byte for byte before reuse, and checked against their
 * key when read.
 */
#include "pkint.h"
#include "pkhash.h"

#include "err.h"

#include <dirent.h>
#include <fcntl.h>
#include <lz4.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

/* The objects of one fan-out subdirectory, listed once a writer has put
 * a few chunks there, so a chunk the store lacks costs no failed lookup of
 * each form of each suffix. Names only: the objects are still opened and
 * compared before reuse. Objects other writers add later are met as EEXIST
 * by create(); none disappears meanwhile (the GC waits for writers). */
struct oname {
	uint8_t key[16];
	uint16_t suffix;
	bool used;
};
struct known {
	pthread_mutex_t mu;
	unsigned touches;
	bool loaded;
	struct oname *v;
	size_t n, cap;      /* cap a power of two */
};
#define LIST_AFTER 4        /* puts into a subdirectory before it is listed */

/* A chunk of some pack, as its index lists it. */
struct tent {
	uint8_t key[16];
	uint64_t pack, off;
	uint32_t slen, ulen;
	uint16_t form, suffix;
};

/* Open packs by id. A reader finds a pack's fd without a lock: a slot's fd
 * is set before its id is published, and neither changes until the store
 * is closed. */
#define PACK_SLOTS 256
struct pslot {
	_Atomic uint64_t id;
	int fd;
};

struct pk_store {
	int dirfd, lockfd;
	char *path;
	bool loose;                 /* writes loose objects (PK_LOOSE_ENV) */
	struct pslot pf[PACK_SLOTS];
	pthread_mutex_t pfmu;       /* opening a pack into pf */
	/* This writer's pack, created at its first chunk; wmu guards the
	 * creation, own and the dedup table. */
	pthread_mutex_t wmu;
	uint64_t wid;
	int wfd;
	_Atomic uint64_t wend;      /* where the next chunk goes */
	struct pk_idx_ent *own;     /* the chunks this writer added */
	size_t nown, capown, synced;
	/* Every chunk of every indexed pack (and own): loaded at the first
	 * put, under the writer's lock, so no collector changes a pack
	 * meanwhile. */
	bool tloaded;
	struct tent *te;
	size_t nte, capte;
	uint32_t *th;               /* te index + 1, open addressing */
	size_t thcap;
	atomic_bool fan[256];       /* subdirectory "ab" known to exist */
	pthread_mutex_t mu;         /* st, busy */
	struct known known[256];    /* the objects of each subdirectory */
	struct pk_store_stats st;
	/* Keys being stored by a thread of this writer: another thread
	 * putting the same bytes meanwhile would not find the chunk (it joins
	 * the table once written), or would find a loose object half-written
	 * and take it for a forged key, and store the bytes again. It waits
	 * instead. */
	struct {
		uint8_t key[16];
		bool used;
	} busy[64];
	pthread_cond_t put_done;
};

void pk_key(const void *data, size_t len, uint8_t key[16])
{
	pk_xxh3_128(data, len, key);
}

void pk_object_name(const struct pk_chunk *c, char buf[64])
{
	static const char hex[] = "0123456789abcdef";
	char *p = buf;
	for (int i = 0; i < 16; i++) {
		*p++ = hex[c->key[i] >> 4];
		*p++ = hex[c->key[i] & 15];
		if (i == 0)
			*p++ = '/';
	}
	if (c->suffix)
		p += sprintf(p, "-%u", (unsigned)c->suffix);
	strcpy(p, c->form == PK_FORM_LZ4 ? ".lz4" : ".raw");
}

const char *pk_store_path(const struct pk_store *s)
{
	return s->path;
}

/* Mark the store a top of a directory hierarchy (FS_TOPDIR_FL), so ext4
 * places each fan-out directory made from now on, and with it the objects
 * created in it, in a block group of its own choosing (Orlov) rather than
 * all in the group of the store's directory. Measured packing a 173 MB
 * tree (8 500 new objects) on this machine's ext4, where other work
 * deletes many files: the kernel's inode allocation, which skips inodes
 * deleted in the last seconds by reading their inode table blocks
 * (recently_deleted), was two thirds of the CPU time and took 5.3-5.5
 * system CPU-seconds; with the flag 0.7-0.8. Other file systems ignore or
 * refuse the flag, which changes nothing else. */
static void spread_fanout(int dfd)
{
	int flags;
	if (ioctl(dfd, FS_IOC_GETFLAGS, &flags) < 0 || (flags & FS_TOPDIR_FL))
		return;
	flags |= FS_TOPDIR_FL;
	ioctl(dfd, FS_IOC_SETFLAGS, &flags);
}

int pk_store_open(const char *path, bool create, struct pk_store **out)
{
	_cleanup_close_ int dfd = -1, lfd = -1;
	if (create && mkdir(path, 0755) < 0 && errno != EEXIST) {
		int r = -errno;
		serr(r, "create chunk store", path, "check that its parent exists and is writable");
		return r;
	}
	dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		int r = -errno;
		serr(r, "open chunk store", path, "give the store with --chunks DIR");
		return r;
	}
	if (create && mkdirat(dfd, "tmp", 0700) < 0 && errno != EEXIST) {
		int r = -errno;
		serr(r, "create chunk store", path, "check that it is writable");
		return r;
	}
	if (create && mkdirat(dfd, "packs", 0755) < 0 && errno != EEXIST) {
		int r = -errno;
		serr(r, "create chunk store", path, "check that it is writable");
		return r;
	}
	lfd = openat(dfd, "lock", (create ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (lfd < 0 && !create && errno == ENOENT)
		lfd = -1;   /* a read-only user of a store nobody wrote to yet */
	else if (lfd < 0) {
		int r = -errno;
		serr(r, "open chunk store lock", path, "check that the store is writable");
		return r;
	}
	struct pk_store *s = calloc(1, sizeof *s);
	if (!s || !(s->path = strdup(path))) {
		free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->pfmu, NULL);
	pthread_mutex_init(&s->wmu, NULL);
	pthread_cond_init(&s->put_done, NULL);
	s->wfd = -1;
	const char *e = getenv(PK_LOOSE_ENV);
	s->loose = create && e && *e && strcmp(e, "0");
	if (s->loose)
		spread_fanout(dfd);
	for (int i = 0; i < 256; i++)
		pthread_mutex_init(&s->known[i].mu, NULL);
	s->dirfd = take_fd(&dfd);
	s->lockfd = take_fd(&lfd);
	*out = s;
	return 0;
}

void pk_store_close(struct pk_store *s)
{
	if (!s)
		return;
	close(s->dirfd);
	if (s->lockfd >= 0)
		close(s->lockfd);   /* drops the lock too */
	for (int i = 0; i < PACK_SLOTS; i++)
		if (atomic_load(&s->pf[i].id))
			close(s->pf[i].fd);
	if (s->wfd >= 0)
		close(s->wfd);
	free(s->own);
	free(s->te);
	free(s->th);
	pthread_mutex_destroy(&s->pfmu);
	pthread_mutex_destroy(&s->wmu);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->put_done);
	for (int i = 0; i < 256; i++) {
		free(s->known[i].v);
		pthread_mutex_destroy(&s->known[i].mu);
	}
	free(s->path);
	free(s);
}

int pk_store_lock(struct pk_store *s, bool exclusive)
{
	if (s->lockfd < 0)
		return 0;
	while (flock(s->lockfd, exclusive ? LOCK_EX : LOCK_SH) < 0) {
		if (errno == EINTR)
			continue;
		int r = -errno;
		serr(r, "lock chunk store", s->path, NULL);
		return r;
	}
	return 0;
}

int pk_store_trylock_ex(struct pk_store *s)
{
	if (s->lockfd < 0)
		return 0;
	while (flock(s->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EINTR)
			continue;
		int r = -errno;
		if (r != -EWOULDBLOCK)
			serr(r, "lock chunk store", s->path, NULL);
		return r;
	}
	return 0;
}

void pk_pack_name(uint64_t id, const char *ext, char buf[40])
{
	snprintf(buf, 40, "packs/%016llx.%s", (unsigned long long)id, ext);
}

void pk_loc_name(const struct pk_loc *loc, char buf[64])
{
	snprintf(buf, 64, "packs/%016llx.pack@%llu", (unsigned long long)loc->pack, (unsigned long long)loc->off);
}

static int idx_ent_cmp(const void *a, const void *b)
{
	const struct pk_idx_ent *x = a, *y = b;
	int c = memcmp(x->key, y->key, 16);
	if (c)
		return c;
	if (x->suffix != y->suffix)
		return x->suffix < y->suffix ? -1 : 1;
	return (x->off > y->off) - (x->off < y->off);
}

int pk_write_index(int dirfd, uint64_t pack, struct pk_idx_ent *e, size_t n)
{
	qsort(e, n, sizeof *e, idx_ent_cmp);
	struct pk_idx_head h = { .version = PK_IDX_VERSION, .rec_size = sizeof *e, .pack = pack, .count = n };
	memcpy(h.magic, PK_IDX_MAGIC, 8);
	XXH3_state_t st;
	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, &h, sizeof h);
	XXH3_64bits_update(&st, e, n * sizeof *e);
	h.xxh3 = XXH3_64bits_digest(&st);
	char name[40], tmp[48];
	pk_pack_name(pack, "idx", name);
	snprintf(tmp, sizeof tmp, "%s.tmp", name);
	_cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	int r = io_write_full(fd, &h, sizeof h, 0);
	if (r == 0)
		r = io_write_full(fd, e, n * sizeof *e, sizeof h);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
		r = -errno;
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	_cleanup_close_ int pfd = openat(dirfd, "packs", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pfd < 0 || fsync(pfd) < 0)
		return -errno;
	return 0;
}

int pk_store_sync(struct pk_store *s)
{
	if (s->loose) {
		if (syncfs(s->dirfd) < 0) {
			int r = -errno;
			serr(r, "sync chunk store", s->path, "the layer is not written; check the disk");
			return r;
		}
		return 0;
	}
	pthread_mutex_lock(&s->wmu);
	size_t n = s->nown;
	_cleanup_free_ struct pk_idx_ent *e = n > s->synced ? malloc(n * sizeof *e) : NULL;
	if (e)
		memcpy(e, s->own, n * sizeof *e);
	pthread_mutex_unlock(&s->wmu);
	if (n <= s->synced)
		return 0;
	if (!e)
		return -ENOMEM;
	/* the pack first: an index names only chunks that are on disk */
	int r = fsync(s->wfd) < 0 ? -errno : 0;
	if (r == 0)
		r = pk_write_index(s->dirfd, s->wid, e, n);
	if (r < 0) {
		char name[40];
		pk_pack_name(s->wid, "pack", name);
		serr(r, "sync chunk store", s->path, "%s and its index: the layer is not written; check the disk", name);
		return r;
	}
	pthread_mutex_lock(&s->wmu);
	s->synced = n;
	pthread_mutex_unlock(&s->wmu);
	return 0;
}

void pk_store_stats(const struct pk_store *s, struct pk_store_stats *st)
{
	pthread_mutex_lock((pthread_mutex_t *)&s->mu);
	*st = s->st;
	pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}

/* Decode the object open as fd (form, stored size from fstat) into buf of
 * ulen bytes, reading a compressed one into comp (PK_STORED_MAX bytes, or
 * NULL: a buffer of its own): 0, -EIO when it does not decode to exactly
 * ulen bytes. */
static int decode(int fd, int form, uint32_t ulen, void *buf, uint32_t *slen, void *comp)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size > PK_STORED_MAX)
		return -EIO;
	*slen = st.st_size;
	if (form == PK_FORM_RAW) {
		if ((uint32_t)st.st_size != ulen)
			return -EIO;
		return io_read_full(fd, buf, ulen, 0, -EIO);
	}
	_cleanup_free_ char *own = comp ? NULL : malloc(st.st_size ? st.st_size : 1);
	char *c = comp ? comp : own;
	if (!c)
		return -ENOMEM;
	int r = io_read_full(fd, c, st.st_size, 0, -EIO);
	if (r < 0)
		return r;
	int n = LZ4_decompress_safe(c, buf, (int)st.st_size, (int)ulen);
	return n == (int)ulen ? 0 : -EIO;
}

/* ---------------------------------------------------------------- packs */

/* The fd of pack id, opened on first use: >= 0 (*transient: close it after
 * use, the table being full), or -errno. The id comes from a layer file,
 * which may be hostile: it is only ever formatted as hex. */
static int pack_fd(struct pk_store *s, uint64_t id, bool *transient)
{
	*transient = false;
	if (!id)
		return -ENOENT;
	size_t h = (size_t)((id * 0x9e3779b97f4a7c15ull) >> 56);
	for (size_t i = 0; i < PACK_SLOTS; i++) {
		struct pslot *p = &s->pf[(h + i) % PACK_SLOTS];
		uint64_t v = atomic_load_explicit(&p->id, memory_order_acquire);
		if (v == id)
			return p->fd;
		if (!v)
			break;
	}
	pthread_mutex_lock(&s->pfmu);
	struct pslot *free_slot = NULL;
	for (size_t i = 0; i < PACK_SLOTS; i++) {
		struct pslot *p = &s->pf[(h + i) % PACK_SLOTS];
		uint64_t v = atomic_load_explicit(&p->id, memory_order_relaxed);
		if (v == id) {
			pthread_mutex_unlock(&s->pfmu);
			return p->fd;
		}
		if (!v) {
			free_slot = p;
			break;
		}
	}
	char name[40];
	pk_pack_name(id, "pack", name);
	int fd = openat(s->dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		pthread_mutex_unlock(&s->pfmu);
		return r == -ELOOP ? -EIO : r;
	}
	if (free_slot) {
		free_slot->fd = fd;
		atomic_store_explicit(&free_slot->id, id, memory_order_release);
	} else
		*transient = true;
	pthread_mutex_unlock(&s->pfmu);
	return fd;
}

/* Decode the chunk of slen stored bytes at off of pack id into buf (ulen
 * bytes): 0, -ENOENT (no such pack), -EIO (out of bounds, short, or not
 * decoding to ulen bytes). comp: PK_STORED_MAX bytes, or NULL. */
static int read_packed(struct pk_store *s, uint64_t id, uint64_t off, uint32_t slen, int form, uint32_t ulen,
		       void *buf, void *comp)
{
	if (slen > PK_STORED_MAX || ulen > PK_CHUNK_MAX || off > (uint64_t)INT64_MAX - PK_STORED_MAX ||
	    off < sizeof(struct pk_pack_head) || form > PK_FORM_LZ4 || (form == PK_FORM_RAW && slen != ulen))
		return -EIO;
	bool transient;
	int fd = pack_fd(s, id, &transient);
	if (fd < 0)
		return fd;
	int r;
	if (form == PK_FORM_RAW)
		r = io_read_full(fd, buf, ulen, off, -EIO);
	else {
		_cleanup_free_ char *own = comp ? NULL : malloc(slen ? slen : 1);
		char *c = comp ? comp : own;
		r = c ? io_read_full(fd, c, slen, off, -EIO) : -ENOMEM;
		if (r == 0 && LZ4_decompress_safe(c, buf, (int)slen, (int)ulen) != (int)ulen)
			r = -EIO;
	}
	if (transient)
		close(fd);
	return r == -ENOMEM ? r : r < 0 ? -EIO : 0;
}

void pk_store_willneed(struct pk_store *s, uint64_t id, uint64_t off, uint64_t len)
{
	bool transient;
	int fd = pack_fd(s, id, &transient);
	if (fd < 0)
		return;
	posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
	if (transient)
		close(fd);
}

int pk_store_get(struct pk_store *s, const struct pk_chunk *c, const struct pk_loc *loc, void *buf)
{
	return pk_store_get_with(s, c, loc, buf, NULL);
}

int pk_store_get_with(struct pk_store *s, const struct pk_chunk *c, const struct pk_loc *loc, void *buf,
		      void *comp)
{
	if (loc && loc->pack) {
		int r = read_packed(s, loc->pack, loc->off, c->slen, c->form, c->ulen, buf, comp);
		if (r < 0)
			return r;
		uint8_t k[16];
		pk_key(buf, c->ulen, k);
		return memcmp(k, c->key, 16) ? -EIO : 0;
	}
	char name[64];
	pk_object_name(c, name);
	_cleanup_close_ int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	uint32_t slen;
	int r = decode(fd, c->form, c->ulen, buf, &slen, comp);
	if (r < 0)
		return r == -ENOMEM ? r : -EIO;
	uint8_t k[16];
	pk_key(buf, c->ulen, k);
	return memcmp(k, c->key, 16) ? -EIO : 0;
}

/* ---------------------------------------------------------------- listing */

static struct oname *known_slot(const struct known *k, const uint8_t key[16], uint16_t suffix)
{
	uint64_t h;
	memcpy(&h, key + 1, 8);   /* key[0] is the subdirectory */
	h ^= suffix * 0x9e3779b97f4a7c15ull;
	for (size_t i = h & (k->cap - 1);; i = (i + 1) & (k->cap - 1))
		if (!k->v[i].used || (k->v[i].suffix == suffix && !memcmp(k->v[i].key, key, 16)))
			return &k->v[i];
}

static int known_add(struct known *k, const uint8_t key[16], uint16_t suffix)
{
	if ((k->n + 1) * 2 > k->cap) {
		struct known t = { .cap = k->cap ? k->cap * 2 : 256 };
		if (!(t.v = calloc(t.cap, sizeof *t.v)))
			return -ENOMEM;
		for (size_t i = 0; i < k->cap; i++)
			if (k->v[i].used)
				*known_slot(&t, k->v[i].key, k->v[i].suffix) = k->v[i];
		free(k->v);
		k->v = t.v;
		k->cap = t.cap;
	}
	struct oname *o = known_slot(k, key, suffix);
	if (!o->used) {
		memcpy(o->key, key, 16);
		o->suffix = suffix;
		o->used = true;
		k->n++;
	}
	return 0;
}

static int hexv(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* List subdirectory b into s->known[b]; called with its mu held. A name that is
 * not an object's is ignored. On failure nothing is known: every object is
 * looked up as before. */
static void known_load(struct pk_store *s, int b)
{
	struct known *k = &s->known[b];
	char sub[3] = { "0123456789abcdef"[b >> 4], "0123456789abcdef"[b & 15], 0 };
	int fd = openat(s->dirfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	k->loaded = true;
	if (fd < 0) {
		if (errno != ENOENT)
			k->loaded = false;
		return;
	}
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		k->loaded = false;
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		uint8_t key[16];
		key[0] = (uint8_t)b;
		int i;
		for (i = 0; i < 15; i++) {
			int hi = hexv(n[2 * i]), lo = hi < 0 ? -1 : hexv(n[2 * i + 1]);
			if (lo < 0)
				break;
			key[i + 1] = (uint8_t)(hi << 4 | lo);
		}
		if (i < 15)
			continue;
		unsigned long suffix = 0;
		const char *p = n + 30;
		if (*p == '-') {
			char *end;
			suffix = strtoul(p + 1, &end, 10);
			p = end;
		}
		if (suffix >= PK_MAX_SUFFIX || (strcmp(p, ".lz4") && strcmp(p, ".raw")))
			continue;
		if (known_add(k, key, (uint16_t)suffix) < 0) {
			k->loaded = false;
			break;
		}
	}
	closedir(d);
}

/* Is there possibly an object KEY-suffix? false only when the subdirectory
 * is listed and lacks it. */
static bool maybe_there(struct pk_store *s, const uint8_t key[16], uint16_t suffix)
{
	struct known *k = &s->known[key[0]];
	pthread_mutex_lock(&k->mu);
	if (!k->loaded && suffix == 0 && ++k->touches == LIST_AFTER)
		known_load(s, key[0]);
	bool r = !k->loaded || (k->cap && known_slot(k, key, suffix)->used);
	pthread_mutex_unlock(&k->mu);
	return r;
}

/* Object KEY-suffix exists now (made by this writer or met as EEXIST). */
static void now_there(struct pk_store *s, const uint8_t key[16], uint16_t suffix)
{
	struct known *k = &s->known[key[0]];
	pthread_mutex_lock(&k->mu);
	if (k->loaded && known_add(k, key, suffix) < 0)
		k->loaded = false;   /* out of memory: look every object up */
	pthread_mutex_unlock(&k->mu);
}

/* Does the object named by c (key, suffix; either form) hold exactly data?
 * 1 yes (c->form, c->slen set), 0 no such object, 2 it holds other bytes
 * (a forged key, or a damaged object: either way not reusable). */
static int probe(struct pk_store *s, struct pk_chunk *c, const void *data, uint32_t len, void *scratch)
{
	char name[64];
	for (int form = PK_FORM_LZ4; form >= PK_FORM_RAW; form--) {
		c->form = form;
		pk_object_name(c, name);
		_cleanup_close_ int fd = openat(s->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			return -errno;
		}
		uint32_t slen;
		int r = decode(fd, form, len, scratch, &slen, NULL);
		if (r == -ENOMEM)
			return r;
		if (r == 0 && !memcmp(scratch, data, len)) {
			c->slen = slen;
			return 1;
		}
		return 2;
	}
	return 0;
}

/* Write bytes as a new object named by c: 0, -EEXIST when the name was
 * taken meanwhile, -errno. The object is created under its name with
 * O_EXCL, so two writers never replace each other's object. Not through a
 * temporary file linked into place: that cost an O_TMPFILE inode on the
 * orphan list, a link and a walk of /proc/self/fd per object, a third of
 * the time of packing a tree of small files. What that gave up is only
 * that an object is never seen half-written; no layer names an object
 * before it is complete and durable (the writer syncs the store before it
 * renames its layer into place), and a half-written object of a killed
 * writer is what a crash could always leave: it compares different from
 * the bytes it should hold, so a later writer uses the next suffix, and
 * the GC removes it (no layer names it). */
static int create(struct pk_store *s, const struct pk_chunk *c, const void *bytes, uint32_t n)
{
	char name[64];
	pk_object_name(c, name);
	if (!atomic_load(&s->fan[c->key[0]])) {
		char dir[3] = { name[0], name[1], 0 };
		if (mkdirat(s->dirfd, dir, 0755) < 0 && errno != EEXIST)
			return -errno;
		atomic_store(&s->fan[c->key[0]], true);
	}
	_cleanup_close_ int fd = openat(s->dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (fd < 0)
		return -errno;
	int r = io_write_full(fd, bytes, n, -1);
	if (r < 0)
		unlinkat(s->dirfd, name, 0);
	return r;
}

/* Claim key for this thread: waits while another thread stores it (or
 * while every slot is taken); the slot to give back. */
static unsigned busy_claim(struct pk_store *s, const uint8_t key[16])
{
	const unsigned n = sizeof s->busy / sizeof s->busy[0];
	pthread_mutex_lock(&s->mu);
	for (;;) {
		unsigned free_slot = n;
		bool taken = false;
		for (unsigned i = 0; i < n; i++) {
			if (!s->busy[i].used)
				free_slot = free_slot == n ? i : free_slot;
			else if (!memcmp(s->busy[i].key, key, 16))
				taken = true;
		}
		if (!taken && free_slot < n) {
			memcpy(s->busy[free_slot].key, key, 16);
			s->busy[free_slot].used = true;
			pthread_mutex_unlock(&s->mu);
			return free_slot;
		}
		pthread_cond_wait(&s->put_done, &s->mu);
	}
}

static void busy_release(struct pk_store *s, unsigned slot)
{
	pthread_mutex_lock(&s->mu);
	s->busy[slot].used = false;
	pthread_cond_broadcast(&s->put_done);
	pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- dedup table */

static uint32_t *tslot(struct pk_store *s, const uint8_t key[16], size_t *at)
{
	uint64_t h;
	memcpy(&h, key, 8);
	for (size_t i = *at == SIZE_MAX ? h & (s->thcap - 1) : (*at + 1) & (s->thcap - 1);; i = (i + 1) & (s->thcap - 1)) {
		*at = i;
		if (!s->th[i] || !memcmp(s->te[s->th[i] - 1].key, key, 16))
			return &s->th[i];
	}
}

/* Add a chunk to the table; called with wmu held. */
static int table_add(struct pk_store *s, const struct tent *t)
{
	if (s->nte >= UINT32_MAX - 1)
		return -EFBIG;
	if (pk_grow(&s->te, &s->capte, s->nte + 1, sizeof *s->te, 1024) < 0)
		return -ENOMEM;
	if ((s->nte + 1) * 2 > s->thcap) {
		size_t cap = s->thcap ? 2 * s->thcap : 2048;
		uint32_t *n = calloc(cap, sizeof *n);
		if (!n)
			return -ENOMEM;
		free(s->th);
		s->th = n;
		s->thcap = cap;
		for (size_t i = 0; i < s->nte; i++) {
			size_t at = SIZE_MAX;
			uint32_t *p;
			while (*(p = tslot(s, s->te[i].key, &at)))
				;
			*p = i + 1;
		}
	}
	s->te[s->nte] = *t;
	size_t at = SIZE_MAX;
	uint32_t *p;
	while (*(p = tslot(s, t->key, &at)))
		;
	*p = ++s->nte;
	return 0;
}

static int hexv(char c);

/* Read the index packs/NAME into the table: 0, or -EINVAL when it is not a
 * sound index (nothing of it added). */
static int load_index(struct pk_store *s, int pdfd, const char *name, uint64_t id)
{
	_cleanup_close_ int fd = openat(pdfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	struct pk_idx_head h;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < sizeof h || io_read_full(fd, &h, sizeof h, 0, -EIO) < 0 ||
	    memcmp(h.magic, PK_IDX_MAGIC, 8) || h.version != PK_IDX_VERSION || h.rec_size != sizeof(struct pk_idx_ent) ||
	    h.pack != id || h.count != ((uint64_t)st.st_size - sizeof h) / sizeof(struct pk_idx_ent) ||
	    ((uint64_t)st.st_size - sizeof h) % sizeof(struct pk_idx_ent))
		return -EINVAL;
	_cleanup_free_ struct pk_idx_ent *e = malloc(h.count ? h.count * sizeof *e : 1);
	if (!e)
		return -ENOMEM;
	if (io_read_full(fd, e, h.count * sizeof *e, sizeof h, -EIO) < 0)
		return -EINVAL;
	uint64_t want = h.xxh3;
	h.xxh3 = 0;
	XXH3_state_t xs;
	XXH3_64bits_reset(&xs);
	XXH3_64bits_update(&xs, &h, sizeof h);
	XXH3_64bits_update(&xs, e, h.count * sizeof *e);
	if (XXH3_64bits_digest(&xs) != want)
		return -EINVAL;
	for (uint64_t i = 0; i < h.count; i++)
		if (e[i].slen > PK_STORED_MAX || e[i].ulen > PK_CHUNK_MAX || e[i].form > PK_FORM_LZ4 ||
		    e[i].suffix >= PK_MAX_SUFFIX || e[i].off < sizeof(struct pk_pack_head))
			return -EINVAL;
	for (uint64_t i = 0; i < h.count; i++) {
		struct tent t = { .pack = id, .off = e[i].off, .slen = e[i].slen, .ulen = e[i].ulen,
				  .form = e[i].form, .suffix = e[i].suffix };
		memcpy(t.key, e[i].key, 16);
		int r = table_add(s, &t);
		if (r < 0)
			return r;
	}
	return 0;
}

/* 16 hex digits + "." + ext: the id, or 0. */
static uint64_t parse_pack_name(const char *n, const char *ext)
{
	uint64_t id = 0;
	for (int i = 0; i < 16; i++) {
		int v = hexv(n[i]);
		if (v < 0)
			return 0;
		id = id << 4 | (uint64_t)v;
	}
	return n[16] == '.' && !strcmp(n + 17, ext) ? id : 0;
}

uint64_t pk_pack_id(const char *name, const char *ext)
{
	return parse_pack_name(name, ext);
}

/* Load every pack index of the store; called with wmu held. An index that
 * cannot be trusted is left out (its chunks are stored again), said once. */
static void table_load(struct pk_store *s)
{
	s->tloaded = true;
	int pfd = openat(s->dirfd, "packs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0)
		return;
	DIR *d = fdopendir(pfd);
	if (!d) {
		close(pfd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		uint64_t id = parse_pack_name(de->d_name, "idx");
		if (!id)
			continue;
		int r = load_index(s, pfd, de->d_name, id);
		if (r == -ENOMEM) {
			serr(r, "read pack index", de->d_name, "in store %s; chunks are not shared with earlier layers", s->path);
			break;
		}
		if (r < 0)
			serr(r == -EINVAL ? 0 : r, "read pack index", de->d_name,
			     "in store %s: %s; ignored for sharing chunks (they are stored again); `strata system check` checks the layers",
			     s->path, r == -EINVAL ? "corrupt" : "unreadable");
	}
	closedir(d);
}

/* Append bytes to this writer's pack (created at the first chunk): 0 with
 * *off, or -errno. */
static int pack_append(struct pk_store *s, const void *bytes, uint32_t n, uint64_t *off)
{
	pthread_mutex_lock(&s->wmu);
	int r = 0;
	for (int tries = 0; s->wfd < 0 && tries < 16; tries++) {
		uint64_t id = 0;
		if (getrandom(&id, sizeof id, 0) != sizeof id) {
			r = -errno;
			break;
		}
		if (!id)
			continue;
		char name[40];
		pk_pack_name(id, "pack", name);
		int fd = openat(s->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0) {
			r = -errno;
			break;
		}
		struct pk_pack_head h = { .version = PK_PACK_VERSION, .head_size = sizeof h, .pack = id };
		memcpy(h.magic, PK_PACK_MAGIC, 8);
		if ((r = io_write_full(fd, &h, sizeof h, 0)) < 0) {
			close(fd);
			unlinkat(s->dirfd, name, 0);
			break;
		}
		s->wid = id;
		atomic_store(&s->wend, sizeof h);
		s->wfd = fd;
	}
	if (r == 0 && s->wfd < 0)
		r = -EEXIST;
	pthread_mutex_unlock(&s->wmu);
	if (r < 0)
		return r;
	*off = atomic_fetch_add(&s->wend, n);
	return io_write_full(s->wfd, bytes, n, (int64_t)*off);
}

/* put for a pack store: reuse a chunk of equal bytes found through the
 * table, else append a new one. */
static int put_packed(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len,
		      struct pk_chunk *out, struct pk_loc *loc)
{
	memset(out, 0, sizeof *out);
	memset(loc, 0, sizeof *loc);
	memcpy(out->key, key, 16);
	out->ulen = len;
	struct tent cand[PK_MAX_SUFFIX + 8];
	size_t nc = 0;
	int top = -1;
	pthread_mutex_lock(&s->wmu);
	if (!s->tloaded)
		table_load(s);
	size_t at = SIZE_MAX;
	uint32_t *p;
	while (s->thcap && *(p = tslot(s, key, &at))) {
		const struct tent *t = &s->te[*p - 1];
		if (t->suffix > top)
			top = t->suffix;
		if (nc < sizeof cand / sizeof cand[0] && t->ulen == len)
			cand[nc++] = *t;
	}
	pthread_mutex_unlock(&s->wmu);

	_cleanup_free_ char *scratch = malloc(PK_CHUNK_MAX);
	_cleanup_free_ char *comp = malloc(PK_STORED_MAX);
	if (!scratch || !comp)
		return -ENOMEM;
	for (size_t i = 0; i < nc; i++) {
		int r = read_packed(s, cand[i].pack, cand[i].off, cand[i].slen, cand[i].form, len, scratch, comp);
		if (r == -ENOMEM)
			return r;
		if (r == 0 && !memcmp(scratch, data, len)) {
			out->form = cand[i].form;
			out->slen = cand[i].slen;
			out->suffix = cand[i].suffix;
			loc->pack = cand[i].pack;
			loc->off = cand[i].off;
			pthread_mutex_lock(&s->mu);
			s->st.puts++;
			s->st.reused++;
			pthread_mutex_unlock(&s->mu);
			return 0;
		}
		/* a forged key, or a damaged or punched chunk: not reusable */
		pthread_mutex_lock(&s->mu);
		s->st.collisions++;
		pthread_mutex_unlock(&s->mu);
	}
	if (top + 1 >= (int)PK_MAX_SUFFIX) {
		serr(-EEXIST, "store chunk in", s->path,
		     "%u different chunks share one key: the store is under attack or damaged", PK_MAX_SUFFIX);
		return -EEXIST;
	}
	out->suffix = (uint16_t)(top + 1);
	int clen = LZ4_compress_default(data, comp, (int)len, PK_STORED_MAX);
	/* Kept raw where lz4 does not make it smaller. */
	if (clen <= 0 || (uint32_t)clen >= len)
		clen = 0;
	out->form = clen ? PK_FORM_LZ4 : PK_FORM_RAW;
	out->slen = clen ? (uint32_t)clen : len;
	uint64_t off;
	int r = pack_append(s, clen ? comp : data, out->slen, &off);
	if (r < 0) {
		serr(r, "write chunk into", s->path, "check free space and permissions");
		return r;
	}
	loc->pack = s->wid;
	loc->off = off;
	struct tent t = { .pack = s->wid, .off = off, .slen = out->slen, .ulen = len, .form = out->form,
			  .suffix = out->suffix };
	memcpy(t.key, key, 16);
	pthread_mutex_lock(&s->wmu);
	if (pk_grow(&s->own, &s->capown, s->nown + 1, sizeof *s->own, 1024) == 0) {
		struct pk_idx_ent *e = &s->own[s->nown++];
		memset(e, 0, sizeof *e);
		memcpy(e->key, key, 16);
		e->off = off;
		e->slen = out->slen;
		e->ulen = len;
		e->form = out->form;
		e->suffix = out->suffix;
		r = table_add(s, &t);
	} else
		r = -ENOMEM;
	pthread_mutex_unlock(&s->wmu);
	if (r < 0) {
		serr(r, "write chunk into", s->path, NULL);
		return r;
	}
	pthread_mutex_lock(&s->mu);
	s->st.puts++;
	s->st.created++;
	s->st.stored_bytes += out->slen;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

static int put(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len, struct pk_chunk *out);

int pk_store_put(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len,
		 struct pk_chunk *out, struct pk_loc *loc)
{
	if (len > PK_CHUNK_MAX)
		return -EINVAL;
	unsigned slot = busy_claim(s, key);
	int r;
	if (s->loose) {
		r = put(s, key, data, len, out);
		memset(loc, 0, sizeof *loc);
	} else
		r = put_packed(s, key, data, len, out, loc);
	busy_release(s, slot);
	return r;
}

static int put(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len, struct pk_chunk *out)
{
	if (len > PK_CHUNK_MAX)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	memcpy(out->key, key, 16);
	out->ulen = len;
	_cleanup_free_ char *scratch = malloc(PK_CHUNK_MAX);
	_cleanup_free_ char *comp = NULL;
	int clen = -1, races = 0;
	if (!scratch)
		return -ENOMEM;
	for (unsigned n = 0; n < PK_MAX_SUFFIX; n++) {
		out->suffix = n;
		int r = maybe_there(s, key, n) ? probe(s, out, data, len, scratch) : 0;
		if (r < 0) {
			char name[64];
			pk_object_name(out, name);
			serr(r, "read chunk", name, "in store %s", s->path);
			return r;
		}
		if (r == 1) {
			pthread_mutex_lock(&s->mu);
			s->st.puts++;
			s->st.reused++;
			pthread_mutex_unlock(&s->mu);
			return 0;
		}
		if (r == 2) {
			pthread_mutex_lock(&s->mu);
			s->st.collisions++;
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		if (clen < 0) {
			int bound = LZ4_compressBound(len);
			comp = malloc(bound > 0 ? bound : 1);
			if (!comp)
				return -ENOMEM;
			clen = LZ4_compress_default(data, comp, (int)len, bound);
			/* Kept raw where lz4 does not make it smaller. */
			if (clen <= 0 || (uint32_t)clen >= len)
				clen = 0;
		}
		out->form = clen ? PK_FORM_LZ4 : PK_FORM_RAW;
		out->slen = clen ? (uint32_t)clen : len;
		r = create(s, out, clen ? comp : data, out->slen);
		if (r == -EEXIST && ++races < 8) {
			now_there(s, key, n);
			n--;        /* somebody made it meanwhile: compare with theirs */
			continue;
		}
		if (r < 0) {
			serr(r, "write chunk into", s->path, "check free space and permissions");
			return r;
		}
		now_there(s, key, n);
		pthread_mutex_lock(&s->mu);
		s->st.puts++;
		s->st.created++;
		s->st.stored_bytes += out->slen;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	serr(-EEXIST, "store chunk in", s->path, "%u different chunks share one key: the store is under attack or damaged",
	     PK_MAX_SUFFIX);
	return -EEXIST;
}

bool pk_store_loose(const struct pk_store *s)
{
	return s->loose;
}

int pk_store_dirfd(const struct pk_store *s)
{
	return s->dirfd;
}
