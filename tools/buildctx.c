/* buildctx: see buildctx.h. */
#include "buildctx.h"

#include "err.h"
#include "fsutil.h"
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdint.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

/* ---- paths ------------------------------------------------------------ */

/* "./a//b/" -> "a/b"; ".." anywhere is refused (-EPERM): a build reads
 * nothing outside its context. "" is the root. */
static int clean_rel(const char *in, char *out, size_t len)
{
	size_t o = 0;
	const char *p = in;
	while (*p) {
		while (*p == '/')
			p++;
		const char *e = p;
		while (*e && *e != '/')
			e++;
		size_t n = (size_t)(e - p);
		if (n == 0)
			break;
		if (n == 1 && p[0] == '.') {
			p = e;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.')
			return -EPERM;
		if (o + n + 2 > len)
			return -ENAMETOOLONG;
		if (o)
			out[o++] = '/';
		memcpy(out + o, p, n);
		o += n;
		p = e;
	}
	out[o] = '\0';
	return 0;
}

/* A directory inside root, never through a symlink. */
static int open_dir_beneath(int rootfd, const char *rel)
{
	struct open_how how = {
		.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
	};
	long fd = syscall(SYS_openat2, rootfd, *rel ? rel : ".", &how, sizeof how);
	return fd < 0 ? -errno : (int)fd;
}

/* The parent directory of rel (opened beneath root) and its last name. */
static int open_parent(int rootfd, const char *rel, char base[NAME_MAX + 1])
{
	const char *slash = strrchr(rel, '/');
	if (!slash) {
		snprintf(base, NAME_MAX + 1, "%s", *rel ? rel : ".");
		return open_dir_beneath(rootfd, "");
	}
	char parent[PATH_MAX];
	size_t pl = (size_t)(slash - rel);
	if (pl >= sizeof parent || strlen(slash + 1) > NAME_MAX)
		return -ENAMETOOLONG;
	memcpy(parent, rel, pl);
	parent[pl] = '\0';
	snprintf(base, NAME_MAX + 1, "%s", slash + 1);
	return open_dir_beneath(rootfd, parent);
}

static void join(char *out, size_t len, const char *a, const char *b)
{
	if (*a)
		snprintf(out, len, "%s/%s", a, b);
	else
		snprintf(out, len, "%s", b);
}

static void memo_free(struct hashmemo *m);

/* ---- ignore rules ----------------------------------------------------- */

/* Do pattern segments [pi..] match path segments [si..]? A pattern that
 * runs out first matched a directory above the path: that counts. */
static bool segs_match(char **pat, size_t np, size_t pi, char **seg, size_t ns, size_t si)
{
	if (pi == np)
		return true;
	if (!strcmp(pat[pi], "**"))
		return segs_match(pat, np, pi + 1, seg, ns, si) ||
		       (si < ns && segs_match(pat, np, pi, seg, ns, si + 1));
	if (si == ns)
		return false;
	return fnmatch(pat[pi], seg[si], 0) == 0 && segs_match(pat, np, pi + 1, seg, ns, si + 1);
}

static size_t split(char *s, char **v, size_t max)
{
	size_t n = 0;
	for (char *save, *t = strtok_r(s, "/", &save); t && n < max; t = strtok_r(NULL, "/", &save))
		v[n++] = t;
	return n;
}

bool bctx_ignored(const struct bctx *c, const char *rel)
{
	char pbuf[PATH_MAX], sbuf[PATH_MAX];
	char *pv[256], *sv[256];
	bool out = false;

	snprintf(sbuf, sizeof sbuf, "%s", rel);
	size_t ns = split(sbuf, sv, 256);
	for (size_t i = 0; i < c->npat; i++) {
		snprintf(pbuf, sizeof pbuf, "%s", c->pat[i]);
		size_t np = split(pbuf, pv, 256);
		if (np && segs_match(pv, np, 0, sv, ns, 0))
			out = !c->neg[i];
	}
	return out;
}

static bool any_negation(const struct bctx *c)
{
	for (size_t i = 0; i < c->npat; i++)
		if (c->neg[i])
			return true;
	return false;
}

static int load_ignore(struct bctx *c)
{
	static const char *const names[] = { ".containerignore", ".dockerignore" };
	char *text = NULL;
	for (size_t i = 0; i < 2 && !text; i++) {
		struct stat st;
		int fd = open_regular(c->fd, names[i], false, true, &st);
		if (fd == -ENOENT)
			continue;
		if (fd < 0) {
			serr(fd, "build: read", names[i], "the ignore file of the context must be a regular file");
			return fd;
		}
		int r = read_fd(fd, 1 << 20, &text, NULL);
		close(fd);
		if (r < 0) {
			serr(r, "build: read", names[i], NULL);
			return r;
		}
	}
	for (char *save, *line = text ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		while (*line == ' ' || *line == '\t')
			line++;
		size_t n = strlen(line);
		while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (!*line || *line == '#')
			continue;
		bool neg = *line == '!';
		char clean[PATH_MAX];
		if (clean_rel(line + neg, clean, sizeof clean) < 0 || !*clean)
			continue;  /* "..", "/" or "." ignore nothing that exists */
		char **p = realloc(c->pat, (c->npat + 1) * sizeof *p);
		bool *g = p ? realloc(c->neg, (c->npat + 1) * sizeof *g) : NULL;
		if (p)
			c->pat = p;
		if (!p || !g) {
			free(text);
			return -ENOMEM;
		}
		c->neg = g;
		if (!(c->pat[c->npat] = strdup(clean))) {
			free(text);
			return -ENOMEM;
		}
		c->neg[c->npat++] = neg;
	}
	free(text);
	return 0;
}

int bctx_open(const char *path, struct bctx *c)
{
	memset(c, 0, sizeof *c);
	c->fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->fd < 0) {
		int e = errno;
		serr(e, "build: open context", path, "give a directory holding what COPY and ADD read");
		return -e;
	}
	if (!(c->path = strdup(path)))
		return -ENOMEM;
	int r = load_ignore(c);
	if (r < 0)
		bctx_close(c);
	return r;
}

void bctx_close(struct bctx *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->path);
	for (size_t i = 0; i < c->npat; i++)
		free(c->pat[i]);
	free(c->pat);
	free(c->neg);
	memo_free(c->memo);
	c->memo = NULL;
	c->pat = NULL;
	c->neg = NULL;
	c->npat = 0;
	c->path = NULL;
}

/* ---- sources ---------------------------------------------------------- */

static bool has_wild(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

struct strv {
	char **v;
	size_t n;
};

static int strv_add(struct strv *s, const char *x)
{
	char **g = realloc(s->v, (s->n + 1) * sizeof *g);
	if (!g)
		return -ENOMEM;
	s->v = g;
	if (!(s->v[s->n] = strdup(x)))
		return -ENOMEM;
	s->n++;
	return 0;
}

static int glob_walk(const struct bctx *c, int dirfd, const char *prefix, char **seg, size_t ns,
		     size_t i, struct strv *out)
{
	if (i == ns)
		return strv_add(out, prefix);
	char rel[PATH_MAX];
	struct stat st;
	if (!has_wild(seg[i])) {
		join(rel, sizeof rel, prefix, seg[i]);
		if (fstatat(dirfd, seg[i], &st, AT_SYMLINK_NOFOLLOW) < 0)
			return 0;
		if (i + 1 == ns)
			return strv_add(out, rel);
		if (!S_ISDIR(st.st_mode))
			return 0;
		_cleanup_close_ int sub = openat(dirfd, seg[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return sub < 0 ? 0 : glob_walk(c, sub, rel, seg, ns, i + 1, out);
	}
	char **names;
	size_t n;
	_cleanup_close_ int lfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lfd < 0 || list_sorted(lfd, &names, &n) < 0)
		return 0;
	int r = 0;
	for (size_t k = 0; k < n && r == 0; k++) {
		if (fnmatch(seg[i], names[k], 0))
			continue;
		join(rel, sizeof rel, prefix, names[k]);
		if (bctx_ignored(c, rel))
			continue;
		if (i + 1 == ns) {
			r = strv_add(out, rel);
		} else if (fstatat(dirfd, names[k], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, names[k], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				r = glob_walk(c, sub, rel, seg, ns, i + 1, out);
				close(sub);
			}
		}
	}
	free_names(names, n);
	return r;
}

int bctx_glob(const struct bctx *c, const char *src, char ***out, size_t *n)
{
	char clean[PATH_MAX], buf[PATH_MAX];
	char *seg[256];
	struct strv sv = { 0 };
	int r = clean_rel(src, clean, sizeof clean);
	if (r < 0) {
		susage("COPY/ADD source %s: %s", src,
		       r == -EPERM ? "it leaves the build context ('..'); sources must be inside it"
				   : "the path is too long");
		return r;
	}
	snprintf(buf, sizeof buf, "%s", clean);
	size_t ns = split(buf, seg, 256);
	if (ns == 0) {
		r = strv_add(&sv, "");
	} else {
		r = glob_walk(c, c->fd, "", seg, ns, 0, &sv);
	}
	if (r == 0 && sv.n == 0) {
		susage("COPY/ADD source %s: no such file in the build context %s%s", src, c->path,
		       bctx_ignored(c, clean) ? " (it is left out by .containerignore/.dockerignore)" : "");
		r = -ENOENT;
	}
	if (r == 0 && ns && !has_wild(clean) && bctx_ignored(c, clean)) {
		susage("COPY/ADD source %s is left out of the context by .containerignore/.dockerignore", src);
		r = -ENOENT;
	}
	if (r < 0) {
		for (size_t i = 0; i < sv.n; i++)
			free(sv.v[i]);
		free(sv.v);
		return r;
	}
	*out = sv.v;
	*n = sv.n;
	return 0;
}

/* ---- hashing ---------------------------------------------------------- */

/* The memo: the XXH3-128 of each regular file's content by its identity
 * and change stamps, so an unchanged context is hashed by fstatat alone.
 *
 * Why a matching (dev, ino, size, mtime, ctime) is taken to mean unchanged
 * content: every write to a file's data updates its mtime and ctime, and
 * nothing lets a user set ctime (utimensat sets it to now; only changing
 * the clock or writing the raw device could fake it). A file replaced by
 * another (rename, rm + create) has another inode or, when the number is
 * reused, a new ctime. The one hole is time granularity: a file changed
 * twice within one tick of the clock that stamps it keeps its stamps. So,
 * as git does with its racy-clean entries, a hash is only remembered for a
 * file whose ctime is older than the start of the build by more
 * than that tick: a change after our stat then gets a later ctime. The
 * kernel stamps from its coarse clock, one jiffy (10 ms at the lowest HZ)
 * or finer, and filesystems keep nanoseconds: 50 ms is margin enough. A
 * filesystem that keeps whole seconds only (every stamp's nanoseconds are
 * zero: ext3, FAT, some network filesystems) gets 2 s. A file changed
 * within that margin is read again at every build until it is older.
 * (A network filesystem stamps with its server's clock: a server behind
 * ours by more than the margin would defeat this, as it defeats git.) */

#define MEMO_MAGIC "STRCTXH1"
#define MEMO_ORDER 0x01020304u

struct memo_rec {
	uint64_t dev, ino, size;
	int64_t mtime_s, ctime_s;
	uint32_t mtime_ns, ctime_ns;
	uint64_t lo, hi;
};

struct memo_head {
	char magic[8];
	uint32_t order;         /* MEMO_ORDER as this host writes it */
	uint32_t recsize;
	uint64_t n;
	uint64_t sum;           /* XXH3-64 of the records: a torn write is no memo */
};

struct hashmemo {
	struct memo_rec *old;   /* as loaded, sorted by (dev, ino) */
	size_t nold;
	struct memo_rec *seen;  /* what this build found or computed */
	size_t nseen, cap;
	bool missed;            /* a file was hashed and remembered */
	struct timespec start;  /* when the hashing began */
};

static int rec_cmp(const void *a, const void *b)
{
	const struct memo_rec *x = a, *y = b;
	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return 0;
}

static void rec_of(struct memo_rec *r, const struct stat *st)
{
	memset(r, 0, sizeof *r);
	r->dev = (uint64_t)st->st_dev;
	r->ino = (uint64_t)st->st_ino;
	r->size = (uint64_t)st->st_size;
	r->mtime_s = (int64_t)st->st_mtim.tv_sec;
	r->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
	r->ctime_s = (int64_t)st->st_ctim.tv_sec;
	r->ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
}

static int memo_remember(struct hashmemo *m, const struct memo_rec *r)
{
	if (m->nseen == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 1024;
		struct memo_rec *g = realloc(m->seen, cap * sizeof *g);
		if (!g)
			return -ENOMEM;
		m->seen = g;
		m->cap = cap;
	}
	m->seen[m->nseen++] = *r;
	return 0;
}

int bctx_memo_load(struct bctx *c, const void *data, size_t len)
{
	struct hashmemo *m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	m->start = now;
	struct memo_head hd;
	if (data && len >= sizeof hd) {
		memcpy(&hd, data, sizeof hd);
		const char *recs = (const char *)data + sizeof hd;
		size_t body = len - sizeof hd;
		if (!memcmp(hd.magic, MEMO_MAGIC, 8) && hd.order == MEMO_ORDER &&
		    hd.recsize == sizeof(struct memo_rec) && hd.n == body / sizeof(struct memo_rec) &&
		    body % sizeof(struct memo_rec) == 0 && XXH3_64bits(recs, body) == hd.sum &&
		    (m->old = malloc(body ? body : 1))) {
			memcpy(m->old, recs, body);
			m->nold = (size_t)hd.n;
			/* sorted when written; a memo that is not is no memo */
			for (size_t i = 1; i < m->nold; i++)
				if (rec_cmp(&m->old[i - 1], &m->old[i]) >= 0) {
					m->nold = 0;
					break;
				}
		}
	}
	c->memo = m;
	return 0;
}

static void memo_free(struct hashmemo *m)
{
	if (m) {
		free(m->old);
		free(m->seen);
		free(m);
	}
}

int bctx_memo_dump(const struct bctx *c, void **data, size_t *len)
{
	struct hashmemo *m = c->memo;
	*data = NULL;
	*len = 0;
	if (!m || !m->nseen)
		return 0;
	qsort(m->seen, m->nseen, sizeof *m->seen, rec_cmp);
	size_t n = 0;
	for (size_t i = 0; i < m->nseen; i++)
		if (!n || rec_cmp(&m->seen[n - 1], &m->seen[i]))
			m->seen[n++] = m->seen[i];
	m->nseen = n;
	/* every file found as remembered, and no remembered file gone: the
	 * memo on disk says it all already */
	if (!m->missed && n == m->nold)
		return 0;
	struct memo_head hd = { .order = MEMO_ORDER, .recsize = sizeof(struct memo_rec), .n = n };
	memcpy(hd.magic, MEMO_MAGIC, 8);
	hd.sum = XXH3_64bits(m->seen, n * sizeof *m->seen);
	char *out = malloc(sizeof hd + n * sizeof *m->seen);
	if (!out)
		return -ENOMEM;
	memcpy(out, &hd, sizeof hd);
	memcpy(out + sizeof hd, m->seen, n * sizeof *m->seen);
	*data = out;
	*len = sizeof hd + n * sizeof *m->seen;
	return 1;
}

/* The content hash of the regular file pfd/name, whose stat is st. */
static int hash_file(const struct bctx *c, int pfd, const char *name, const struct stat *st, XXH128_hash_t *out)
{
	struct hashmemo *m = c->memo;
	struct memo_rec key;
	rec_of(&key, st);
	if (m && m->nold) {
		const struct memo_rec *f = bsearch(&key, m->old, m->nold, sizeof key, rec_cmp);
		if (f && f->size == key.size && f->mtime_s == key.mtime_s && f->mtime_ns == key.mtime_ns &&
		    f->ctime_s == key.ctime_s && f->ctime_ns == key.ctime_ns) {
			out->low64 = f->lo;
			out->high64 = f->hi;
			return memo_remember(m, f);
		}
	}
	_cleanup_close_ int fd = openat(pfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	XXH3_state_t *h = XXH3_createState();
	if (!h)
		return -ENOMEM;
	XXH3_128bits_reset(h);
	char buf[65536];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		XXH3_128bits_update(h, buf, (size_t)n);
	int r = n < 0 ? -errno : 0;
	*out = XXH3_128bits_digest(h);
	XXH3_freeState(h);
	bool settled = false;
	if (m) {
		long long margin = st->st_ctim.tv_nsec ? 50000000LL : 2000000000LL;
		long long age = ((long long)m->start.tv_sec - st->st_ctim.tv_sec) * 1000000000LL +
				(m->start.tv_nsec - st->st_ctim.tv_nsec);
		settled = age > margin;
	}
	if (r == 0 && settled) {
		key.lo = out->low64;
		key.hi = out->high64;
		m->missed = true;
		r = memo_remember(m, &key);
	}
	return r;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in directory d, sorted. */
static int read_names(DIR *d, char ***names, size_t *n)
{
	char **v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	int r = 0;
	/* readdir tells its end from an error by errno only; a successful
	 * call of anything in between may have left errno set */
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 32;
			char **g = realloc(v, cap * sizeof *g);
			if (!g) {
				r = -ENOMEM;
				break;
			}
			v = g;
		}
		if (!(v[cnt] = strdup(de->d_name))) {
			r = -ENOMEM;
			break;
		}
		cnt++;
	}
	if (r == 0 && errno)
		r = -errno;
	if (r < 0) {
		free_names(v, cnt);
		return r;
	}
	if (cnt)
		qsort(v, cnt, sizeof *v, cmp_name);
	*names = v;
	*n = cnt;
	return 0;
}

static int hash_entry(const struct bctx *c, int pfd, const char *name, const char *rel,
		      const char *shown, XXH3_state_t *h)
{
	struct stat st;
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	unsigned long long meta[3] = { st.st_mode, (unsigned long long)st.st_size, 0 };
	XXH3_128bits_update(h, shown, strlen(shown) + 1);
	if (S_ISDIR(st.st_mode))
		meta[1] = 0;
	XXH3_128bits_update(h, meta, sizeof meta);
	if (S_ISLNK(st.st_mode)) {
		char t[PATH_MAX];
		ssize_t n = readlinkat(pfd, name, t, sizeof t);
		if (n < 0)
			return -errno;
		XXH3_128bits_update(h, t, (size_t)n);
	} else if (S_ISREG(st.st_mode)) {
		XXH128_hash_t fh;
		int r = hash_file(c, pfd, name, &st, &fh);
		if (r < 0)
			return r;
		XXH128_canonical_t canon;
		XXH128_canonicalFromHash(&canon, fh);
		XXH3_128bits_update(h, &canon, sizeof canon);
	} else if (S_ISDIR(st.st_mode)) {
		int dfd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			return -errno;
		DIR *d = fdopendir(dfd);
		if (!d) {
			close(dfd);
			return -ENOMEM;
		}
		char **names;
		size_t n;
		int r = read_names(d, &names, &n);
		if (r < 0) {
			closedir(d);
			return r;
		}
		bool neg = any_negation(c);
		for (size_t i = 0; r == 0 && i < n; i++) {
			char crel[PATH_MAX], cshown[PATH_MAX];
			join(crel, sizeof crel, rel, names[i]);
			join(cshown, sizeof cshown, shown, names[i]);
			struct stat cst;
			if (c->npat && bctx_ignored(c, crel) &&
			    !(neg && fstatat(dirfd(d), names[i], &cst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(cst.st_mode)))
				continue;
			r = hash_entry(c, dirfd(d), names[i], crel, cshown, h);
		}
		free_names(names, n);
		closedir(d);
		return r;
	}
	return 0;
}

int bctx_hash(const struct bctx *c, const char *rel, XXH3_state_t *h)
{
	char base[NAME_MAX + 1];
	_cleanup_close_ int pfd = open_parent(c->fd, rel, base);
	if (pfd < 0)
		return pfd;
	return hash_entry(c, pfd, base, rel, "", h);
}

/* ---- copying ---------------------------------------------------------- */

static int set_owner_mode(int fd, bool dir, mode_t mode, const struct copy_opts *o)
{
	if (!o->rootless) {
		if (fchown(fd, o->uid, o->gid) < 0)
			return -errno;
		return fchmod(fd, mode) < 0 ? -errno : 0;
	}
	/* A rootless store: the disk owner is the container's root; another
	 * owner lives in the override xattr, and the disk mode keeps the
	 * owner's access so the store's user can still read it. */
	if (o->uid == 0 && o->gid == 0)
		return fchmod(fd, mode) < 0 ? -errno : 0;
	char v[64];
	int n = snprintf(v, sizeof v, "%u:%u:0%o", (unsigned)o->uid, (unsigned)o->gid, (unsigned)(mode & 07777));
	if (fsetxattr(fd, OVERRIDE_STAT_XATTR, v, (size_t)n, 0) < 0)
		return -errno;
	return fchmod(fd, mode | (dir ? 0700 : 0600)) < 0 ? -errno : 0;
}

static mode_t copy_mode(const struct stat *st, const struct copy_opts *o)
{
	return o->mode >= 0 ? (mode_t)o->mode : (st->st_mode & 07777);
}

static int copy_one(int sfd, const char *sname, const struct stat *st, int dstdir, const char *dname,
		    const struct copy_opts *o, const char *what)
{
	int r = 0;
	struct timespec ts[2] = { st->st_atim, st->st_mtim };

	if (S_ISREG(st->st_mode)) {
		_cleanup_close_ int in = openat(sfd, sname, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (in < 0) {
			r = -errno;
			serr(r, "build: read", what, NULL);
			return r;
		}
		struct stat dst;
		if (fstatat(dstdir, dname, &dst, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(dst.st_mode)) {
			if (S_ISDIR(dst.st_mode)) {
				susage("build: cannot copy file %s over the directory %s", what, dname);
				return -EISDIR;
			}
			unlinkat(dstdir, dname, 0);
		}
		_cleanup_close_ int out = openat(dstdir, dname, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (out < 0) {
			r = -errno;
			serr(r, "build: create", dname, "in the step's layer");
			return r;
		}
		long long n = copy_fd(in, out);
		if (n < 0) {
			serr((int)n, "build: copy", what, "check free space of the store");
			return (int)n;
		}
		if ((r = set_owner_mode(out, false, copy_mode(st, o), o)) < 0 || futimens(out, ts) < 0) {
			r = r < 0 ? r : -errno;
			serr(r, "build: set owner and mode of", dname, NULL);
		}
		return r;
	}
	if (S_ISLNK(st->st_mode)) {
		char t[PATH_MAX];
		ssize_t n = readlinkat(sfd, sname, t, sizeof t - 1);
		if (n < 0)
			return -errno;
		t[n] = '\0';
		unlinkat(dstdir, dname, 0);
		if (symlinkat(t, dstdir, dname) < 0) {
			r = -errno;
			serr(r, "build: create symlink", dname, NULL);
			return r;
		}
		/* a rootless store cannot give a symlink another owner (no user
		 * xattrs on symlinks): it shows as the container's root */
		if (!o->rootless && fchownat(dstdir, dname, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		utimensat(dstdir, dname, ts, AT_SYMLINK_NOFOLLOW);
		return 0;
	}
	fprintf(stderr, "strata: build: %s is a %s; COPY takes files, directories and symlinks: left out\n",
		what, file_kind(st->st_mode));
	return 0;
}

/* Copy the directory sfd/sname's entries into dstdir/dname (a directory
 * that exists); ctx (may be NULL) filters by the ignore rules. */
static int copy_tree(const struct bctx *c, const char *rel, int sfd, int dfd, const struct copy_opts *o);

static int copy_entry(const struct bctx *c, const char *rel, int spfd, const char *sname, int dstdir,
		      const char *dname, bool contents, const struct copy_opts *o)
{
	struct stat st;
	if (fstatat(spfd, sname, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		int e = errno;
		serr(e, "build: read", rel, NULL);
		return -e;
	}
	if (!S_ISDIR(st.st_mode))
		return copy_one(spfd, sname, &st, dstdir, dname, o, *rel ? rel : ".");
	_cleanup_close_ int sd = openat(spfd, sname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sd < 0)
		return -errno;
	if (contents) {
		_cleanup_close_ int dd = openat(dstdir, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dd < 0)
			return -errno;
		return copy_tree(c, rel, sd, dd, o);
	}
	struct stat dst;
	if (fstatat(dstdir, dname, &dst, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(dst.st_mode))
		unlinkat(dstdir, dname, 0);
	if (mkdirat(dstdir, dname, 0700) < 0 && errno != EEXIST)
		return -errno;
	_cleanup_close_ int dd = openat(dstdir, dname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dd < 0)
		return -errno;
	int r = copy_tree(c, rel, sd, dd, o);
	if (r == 0)
		r = set_owner_mode(dd, true, copy_mode(&st, o), o);
	struct timespec ts[2] = { st.st_atim, st.st_mtim };
	futimens(dd, ts);
	return r;
}

static int copy_tree(const struct bctx *c, const char *rel, int sfd, int dfd, const struct copy_opts *o)
{
	char **names;
	size_t n;
	_cleanup_close_ int lfd = openat(sfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lfd < 0 || list_sorted(lfd, &names, &n) < 0)
		return -EIO;
	int r = 0;
	bool neg = c && any_negation(c);
	for (size_t i = 0; i < n && r == 0; i++) {
		char crel[PATH_MAX];
		struct stat cst;
		join(crel, sizeof crel, rel, names[i]);
		if (c && bctx_ignored(c, crel) &&
		    !(neg && fstatat(sfd, names[i], &cst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(cst.st_mode)))
			continue;
		r = copy_entry(c, crel, sfd, names[i], dfd, names[i], false, o);
	}
	free_names(names, n);
	return r;
}

int bctx_copy(const struct bctx *c, const char *rel, int dstdir, const char *dstname, bool contents,
	      const struct copy_opts *o)
{
	char base[NAME_MAX + 1];
	_cleanup_close_ int pfd = open_parent(c->fd, rel, base);
	if (pfd < 0) {
		serr(pfd, "build: open", rel, "in the build context");
		return pfd;
	}
	return copy_entry(c, rel, pfd, base, dstdir, dstname, contents, o);
}

/* ---- from an image's layers ------------------------------------------- */

static int lower_open_parent(const struct lowerview *lv, const char *path, char base[NAME_MAX + 1],
			     size_t *layer)
{
	if (!*path) {
		*layer = 0;
		snprintf(base, NAME_MAX + 1, ".");
		int root = lv->n ? lower_fd(lv, 0) : -ENOENT;
		return root < 0 ? root : open_dir_beneath(root, "");
	}
	if (!lower_lookup(lv, 0, path, layer))
		return -ENOENT;
	/* a packed layer is unpacked for what copies from it (lower_fd) */
	int lfd = lower_fd(lv, *layer);
	return lfd < 0 ? lfd : open_parent(lfd, path, base);
}

int lower_is_dir(const struct lowerview *lv, const char *path)
{
	size_t layer;
	struct stat st;
	if (!*path)
		return 1;
	if (!lower_lookup(lv, 0, path, &layer))
		return -ENOENT;
	int r = lower_stat(lv, layer, path, &st);
	if (r < 0)
		return r;
	return S_ISDIR(st.st_mode) ? 1 : 0;
}

static int lower_copy_dir(const struct lowerview *lv, const char *path, int dfd, const struct copy_opts *o)
{
	struct lower_entry *e;
	size_t n;
	int r = lower_list(lv, 0, path, &e, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r == 0; i++) {
		char child[PATH_MAX];
		join(child, sizeof child, path, e[i].name);
		r = lower_copy(lv, child, dfd, e[i].name, false, o);
	}
	lower_list_free(e, n);
	return r;
}

int lower_copy(const struct lowerview *lv, const char *path, int dstdir, const char *dstname,
	       bool contents, const struct copy_opts *o)
{
	char base[NAME_MAX + 1];
	size_t layer;
	struct stat st;
	_cleanup_close_ int pfd = lower_open_parent(lv, path, base, &layer);
	if (pfd < 0) {
		susage("COPY --from: /%s is not in the source image", path);
		return pfd;
	}
	if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return copy_one(pfd, base, &st, dstdir, dstname, o, path);
	if (contents) {
		_cleanup_close_ int dd = openat(dstdir, dstname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		return dd < 0 ? -errno : lower_copy_dir(lv, path, dd, o);
	}
	if (mkdirat(dstdir, dstname, 0700) < 0 && errno != EEXIST)
		return -errno;
	_cleanup_close_ int dd = openat(dstdir, dstname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dd < 0)
		return -errno;
	int r = lower_copy_dir(lv, path, dd, o);
	if (r == 0)
		r = set_owner_mode(dd, true, copy_mode(&st, o), o);
	struct timespec ts[2] = { st.st_atim, st.st_mtim };
	futimens(dd, ts);
	return r;
}

/* ---- staging ---------------------------------------------------------- */

int stage_mkdirs(int stagefd, const char *path, const struct lowerview *lv, const struct copy_opts *o)
{
	char clean[PATH_MAX], sofar[PATH_MAX] = "";
	int r = clean_rel(path, clean, sizeof clean);
	if (r < 0)
		return r;
	int cur = dup(stagefd);
	if (cur < 0)
		return -errno;
	for (char *save, *name = strtok_r(clean, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
		char next[PATH_MAX];
		join(next, sizeof next, sofar, name);
		snprintf(sofar, sizeof sofar, "%s", next);
		struct stat st;
		if (fstatat(cur, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			if (!S_ISDIR(st.st_mode)) {
				susage("build: /%s is a %s, not a directory to copy into", sofar, file_kind(st.st_mode));
				close(cur);
				return -ENOTDIR;
			}
		} else {
			/* an existing directory of the image keeps its owner,
			 * mode and xattrs (read in place: a packed layer is
			 * not unpacked for them); a new one gets the step's
			 * owner */
			size_t layer;
			struct stat lst;
			bool from_image = lv && lower_lookup(lv, 0, sofar, &layer) &&
					  lower_stat(lv, layer, sofar, &lst) == 0;
			if (from_image && !S_ISDIR(lst.st_mode)) {
				susage("build: /%s is a %s in the image, not a directory to copy into", sofar,
				       file_kind(lst.st_mode));
				close(cur);
				return -ENOTDIR;
			}
			if (mkdirat(cur, name, 0755) < 0) {
				r = -errno;
				close(cur);
				serr(r, "build: create directory", sofar, "in the step's layer");
				return r;
			}
			int nd = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (nd >= 0) {
				if (from_image) {
					char v[64];
					ssize_t vl = lower_getxattr(lv, layer, sofar, OVERRIDE_STAT_XATTR, v, sizeof v);
					if (vl > 0)
						fsetxattr(nd, OVERRIDE_STAT_XATTR, v, (size_t)vl, 0);
					if (!o->rootless && fchown(nd, lst.st_uid, lst.st_gid) < 0)
						r = -errno;
					fchmod(nd, lst.st_mode & 07777);
					struct timespec ts[2] = { lst.st_atim, lst.st_mtim };
					futimens(nd, ts);
				} else {
					r = set_owner_mode(nd, true, 0755, o);
				}
			}
			if (nd < 0 || r < 0) {
				r = nd < 0 ? -errno : r;
				if (nd >= 0)
					close(nd);
				close(cur);
				return r;
			}
			close(nd);
		}
		int nd = openat(cur, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(cur);
		if (nd < 0)
			return -errno;
		cur = nd;
	}
	return cur;
}

/* ---- ADD of a local archive ------------------------------------------- */

static struct archive *open_archive(int fd)
{
	struct archive *a = archive_read_new();
	if (!a)
		return NULL;
	archive_read_support_filter_all(a);
	archive_read_support_format_tar(a);
	archive_read_support_format_gnutar(a);
	if (archive_read_open_fd(a, fd, 65536) != ARCHIVE_OK) {
		archive_read_free(a);
		return NULL;
	}
	return a;
}

bool bctx_is_tar(const struct bctx *c, const char *rel)
{
	struct stat st;
	_cleanup_close_ int fd = open_regular(c->fd, rel, false, true, &st);
	if (fd < 0)
		return false;
	struct archive *a = open_archive(fd);
	struct archive_entry *e;
	bool tar = a && archive_read_next_header(a, &e) == ARCHIVE_OK;
	if (a)
		archive_read_free(a);
	return tar;
}

int bctx_untar(const struct bctx *c, const char *rel, int dstdir, const struct copy_opts *o)
{
	struct stat st;
	if (!bctx_is_tar(c, rel))
		return 1;  /* the caller copies it as it is */
	_cleanup_close_ int fd = open_regular(c->fd, rel, false, true, &st);
	struct archive *a = fd >= 0 ? open_archive(fd) : NULL;
	if (!a)
		return -EIO;
	char what[PATH_MAX + 16];
	snprintf(what, sizeof what, "ADD %s", rel);
	struct unpack_opts uo = { .rootless = o->rootless, .what = what };
	int r = unpack_archive(a, dstdir, &uo);
	archive_read_free(a);
	return r;
}
