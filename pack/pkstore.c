/* pkstore: the content-addressed chunk store.
 *
 * One file per object, CHUNKS/ab/<32 hex digits of the key>[-N].{lz4,raw}:
 * an object is created with O_EXCL under its name, which fails when the
 * name exists, so two writers (threads or processes) racing on one key
 * never replace each other's object. Objects are compared byte for byte
 * before reuse, and checked against their key when read.
 */
#include "pkint.h"

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

struct pk_store {
	int dirfd, lockfd;
	char *path;
	atomic_bool fan[256];       /* subdirectory "ab" known to exist */
	pthread_mutex_t mu;         /* st, busy */
	struct known known[256];    /* the objects of each subdirectory */
	struct pk_store_stats st;
	/* Keys being stored by a thread of this process: an object is
	 * written in place (create()), so another thread putting the same
	 * bytes would find it half-written, take it for a forged key and
	 * store the bytes again under the next suffix. It waits instead. */
	struct {
		uint8_t key[16];
		bool used;
	} busy[64];
	pthread_cond_t put_done;
};

void pk_key(const void *data, size_t len, uint8_t key[16])
{
	XXH128_hash_t h = XXH3_128bits(data, len);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	memcpy(key, c.digest, 16);
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
	if (create)
		spread_fanout(dfd);
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
	pthread_cond_init(&s->put_done, NULL);
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

int pk_store_sync(struct pk_store *s)
{
	if (syncfs(s->dirfd) < 0) {
		int r = -errno;
		serr(r, "sync chunk store", s->path, "the layer is not written; check the disk");
		return r;
	}
	return 0;
}

void pk_store_stats(const struct pk_store *s, struct pk_store_stats *st)
{
	pthread_mutex_lock((pthread_mutex_t *)&s->mu);
	*st = s->st;
	pthread_mutex_unlock((pthread_mutex_t *)&s->mu);
}

static int read_all(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = pread(fd, (char *)buf + got, len - got, got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		got += n;
	}
	return 0;
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
		return read_all(fd, buf, ulen);
	}
	_cleanup_free_ char *own = comp ? NULL : malloc(st.st_size ? st.st_size : 1);
	char *c = comp ? comp : own;
	if (!c)
		return -ENOMEM;
	int r = read_all(fd, c, st.st_size);
	if (r < 0)
		return r;
	int n = LZ4_decompress_safe(c, buf, (int)st.st_size, (int)ulen);
	return n == (int)ulen ? 0 : -EIO;
}

int pk_store_get(struct pk_store *s, const struct pk_chunk *c, void *buf)
{
	return pk_store_get_with(s, c, buf, NULL);
}

int pk_store_get_with(struct pk_store *s, const struct pk_chunk *c, void *buf, void *comp)
{
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

static int write_all(int fd, const void *bytes, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t w = write(fd, (const char *)bytes + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		done += w;
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
	int r = write_all(fd, bytes, n);
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

static int put(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len, struct pk_chunk *out);

int pk_store_put(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len,
		 struct pk_chunk *out)
{
	unsigned slot = busy_claim(s, key);
	int r = put(s, key, data, len, out);
	busy_release(s, slot);
	return r;
}

static int put(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len, struct pk_chunk *out)
{
	if (len > PK_CHUNK_SIZE)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	memcpy(out->key, key, 16);
	out->ulen = len;
	_cleanup_free_ char *scratch = malloc(PK_CHUNK_SIZE);
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

int pk_store_dirfd(const struct pk_store *s)
{
	return s->dirfd;
}
