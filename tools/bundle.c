#include "bundle.h"

#include "err.h"
#include "fsutil.h"
#include "unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bundle_open(struct bundle *b, const char *path, bool archive)
{
	struct stat st;
	b->archive = archive;
	b->path = path;
	b->dirfd = b->fd = -1;
	if (archive) {
		/* The path is the user's own: a symlink to the tarball is fine,
		 * a FIFO or device is not, as every pass reads it again. */
		b->fd = open_regular(AT_FDCWD, path, true, false, &st);
		if (b->fd == -EINVAL) {
			serr(0, "import: open archive", path,
			     "it is %s, not a regular file; an archive is read more than once, so save it to a file first",
			     file_kind(st.st_mode));
			return -EINVAL;
		}
		if (b->fd < 0) {
			serr(b->fd, "import: open archive", path, "give the path of an existing tarball");
			return b->fd;
		}
		return 0;
	}
	b->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
	if (b->dirfd < 0) {
		int r = -errno;
		serr(r, "import: open OCI layout", path, "give a directory holding index.json and blobs/");
		return r;
	}
	return 0;
}

void bundle_close(struct bundle *b)
{
	if (b->dirfd >= 0)
		close(b->dirfd);
	if (b->fd >= 0)
		close(b->fd);
	b->dirfd = b->fd = -1;
}

/* A member of a layout: a regular file beneath the layout, not a symlink. */
static int open_member(struct bundle *b, const char *name, struct stat *st)
{
	int fd = open_regular(b->dirfd, name, false, true, st);
	if (fd == -EINVAL)
		serr(0, "import: read", name, "in %s: it is %s, not a regular file; the image layout is malformed or hostile",
		     b->path, file_kind(st->st_mode));
	else if (fd == -EXDEV || fd == -ELOOP)
		serr(fd, "import: read", name, "in %s: a symlink leads out of the image layout; the layout is malformed or hostile",
		     b->path);
	else if (fd < 0)
		serr(fd, "import: read", name, "in %s; the image is incomplete or not this format", b->path);
	return fd;
}

static int size_check(struct bundle *b, const char *name, int64_t have, int64_t want)
{
	if (want < 0 || have == want)
		return 0;
	serr(0, "import: verify", name, "in %s: size mismatch: the file has %lld bytes but its descriptor says %lld; the image is corrupt",
	     b->path, (long long)have, (long long)want);
	return -EBADMSG;
}

static struct archive *open_archive(struct bundle *b)
{
	struct archive *a = archive_read_new();
	if (!a)
		return NULL;
	archive_read_support_format_tar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	if (lseek(b->fd, 0, SEEK_SET) < 0 || archive_read_open_fd(a, b->fd, 1 << 16) != ARCHIVE_OK) {
		serr(errno, "import: open archive", b->path, "%s", archive_error_string(a) ? archive_error_string(a) : "cannot read it");
		archive_read_free(a);
		return NULL;
	}
	return a;
}

static ssize_t archive_src_read(void *ctx, void *buf, size_t len)
{
	struct archive *a = ctx;
	la_ssize_t n = archive_read_data(a, buf, len);
	if (n >= 0)
		return n;
	return archive_errno(a) > 0 ? -archive_errno(a) : -EIO;
}

/* Walk the archive; for each member whose clean name is in names[] call
 * cb. Returns after the whole archive was read. */
static int archive_walk(struct bundle *b, const char *const *names, size_t n, bool *seen,
			int (*cb)(void *, size_t, struct bsrc *, struct archive_entry *), void *ctx)
{
	struct archive *a = open_archive(b);
	struct archive_entry *e;
	int ar, r = 0;
	if (!a)
		return -EIO;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK || ar == ARCHIVE_WARN) {
		char clean[PATH_MAX];
		if (clean_member_path(archive_entry_pathname(e), clean, sizeof clean) < 0)
			continue;   /* never matches a name we look for */
		for (size_t i = 0; i < n; i++) {
			if (seen[i] || strcmp(names[i], clean))
				continue;
			seen[i] = true;
			if (archive_entry_filetype(e) != AE_IFREG) {
				serr(0, "import: read", names[i], "in archive %s: the member is not a regular file; the archive is malformed",
				     b->path);
				r = -EINVAL;
				goto out;
			}
			struct bsrc src = { archive_src_read, a };
			r = cb(ctx, i, &src, e);
			if (r < 0)
				goto out;
			break;
		}
		bool all = true;
		for (size_t i = 0; i < n; i++)
			all = all && seen[i];
		if (all)
			goto out;
	}
	if (ar != ARCHIVE_EOF) {
		int e2 = archive_errno(a);
		serr(e2 > 0 ? e2 : 0, "import: read archive", b->path, "%s; the archive is truncated or corrupt",
		     archive_error_string(a) ? archive_error_string(a) : "bad header");
		r = -EIO;
	}
out:
	archive_read_free(a);
	return r;
}

struct small {
	struct bundle *b;
	const char *name;
	size_t max;
	int64_t want;
	char *buf;
	size_t len;
};

static int read_small_cb(void *ctx, size_t i, struct bsrc *src, struct archive_entry *e)
{
	struct small *s = ctx;
	(void)i;
	if (archive_entry_size_is_set(e)) {
		int64_t have = archive_entry_size(e);
		int r = size_check(s->b, s->name, have, s->want);
		if (r < 0)
			return r;
		if ((uint64_t)have > s->max) {
			serr(-EFBIG, "import: read", s->name, "in %s: %lld bytes, more than the %zu a manifest or config may have",
			     s->b->path, (long long)have, s->max);
			return -EFBIG;
		}
	}
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf)
			return -ENOMEM;
		if (len + 1 >= cap) {
			if (cap > s->max)
				break;
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = src->read(src->ctx, buf + len, cap - len - 1);
		if (n < 0) {
			free(buf);
			serr(n, "import: read", s->name, "in archive %s; the archive is truncated or corrupt", s->b->path);
			return (int)n;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > s->max) {
		free(buf);
		serr(-EFBIG, "import: read", s->name, "in %s: more than the %zu bytes a manifest or config may have",
		     s->b->path, s->max);
		return -EFBIG;
	}
	buf[len] = '\0';
	s->buf = buf;
	s->len = len;
	return 0;
}

int bundle_read(struct bundle *b, const char *name, size_t max, int64_t size, char **buf, size_t *len)
{
	if (!b->archive) {
		struct stat st;
		_cleanup_close_ int fd = open_member(b, name, &st);
		if (fd < 0)
			return fd;
		int r = size_check(b, name, st.st_size, size);
		if (r < 0)
			return r;
		r = read_fd(fd, max, buf, len);
		if (r == -EFBIG)
			serr(r, "import: read", name, "in %s: %lld bytes, more than the %zu a manifest or config may have",
			     b->path, (long long)st.st_size, max);
		else if (r < 0)
			serr(r, "import: read", name, "in %s", b->path);
		return r;
	}
	struct small s = { .b = b, .name = name, .max = max, .want = size };
	bool seen = false;
	int r = archive_walk(b, &name, 1, &seen, read_small_cb, &s);
	if (r < 0)
		return r;
	if (!seen) {
		serr(-ENOENT, "import: find", name, "in archive %s; the image is incomplete or not this format", b->path);
		return -ENOENT;
	}
	*buf = s.buf;
	if (len)
		*len = s.len;
	return 0;
}

/* A source that ends where its size says: a file that grows while it is
 * read (or lies about its size) is cut off the moment it overruns. */
struct limit_src {
	struct bsrc *in;
	int64_t left;
	const char *name, *where;
};

static ssize_t limit_read(void *ctx, void *buf, size_t len)
{
	struct limit_src *l = ctx;
	/* One byte past the end is asked for, to see an overrun at once. */
	if ((uint64_t)len > (uint64_t)l->left + 1)
		len = (size_t)l->left + 1;
	ssize_t n = l->in->read(l->in->ctx, buf, len);
	if (n <= 0)
		return n;
	if (n > l->left) {
		serr(0, "import: read", l->name, "in %s: the blob goes on past the size its descriptor gives; the image is corrupt or hostile",
		     l->where);
		return -EFBIG;
	}
	l->left -= n;
	return n;
}

struct stream_ctx {
	struct bundle *b;
	const char *const *names;
	const int64_t *sizes;
	bundle_cb cb;
	void *ctx;
};

static int stream_cb(void *ctx, size_t i, struct bsrc *src, struct archive_entry *e)
{
	struct stream_ctx *s = ctx;
	int64_t want = s->sizes ? s->sizes[i] : -1;
	if (archive_entry_size_is_set(e)) {
		int r = size_check(s->b, s->names[i], archive_entry_size(e), want);
		if (r < 0)
			return r;
	}
	if (want < 0)
		return s->cb(s->ctx, i, src);
	struct limit_src l = { src, want, s->names[i], s->b->path };
	struct bsrc ls = { limit_read, &l };
	return s->cb(s->ctx, i, &ls);
}

int bundle_stream(struct bundle *b, const char *const *names, const int64_t *sizes, size_t n,
		  bundle_cb cb, void *ctx)
{
	if (!n)
		return 0;
	if (!b->archive) {
		for (size_t i = 0; i < n; i++) {
			struct stat st;
			_cleanup_close_ int fd = open_member(b, names[i], &st);
			if (fd < 0)
				return fd;
			int64_t want = sizes ? sizes[i] : -1;
			int r = size_check(b, names[i], st.st_size, want);
			if (r < 0)
				return r;
			struct fd_src f = { fd };
			struct bsrc src = { fd_src_read, &f };
			struct limit_src l = { &src, st.st_size, names[i], b->path };
			struct bsrc ls = { limit_read, &l };
			r = cb(ctx, i, &ls);
			if (r < 0)
				return r;
		}
		return 0;
	}
	bool *seen = calloc(n, sizeof *seen);
	if (!seen)
		return -ENOMEM;
	struct stream_ctx s = { b, names, sizes, cb, ctx };
	int r = archive_walk(b, names, n, seen, stream_cb, &s);
	for (size_t i = 0; r == 0 && i < n; i++)
		if (!seen[i]) {
			serr(-ENOENT, "import: find", names[i], "in archive %s; the image is incomplete", b->path);
			r = -ENOENT;
		}
	free(seen);
	return r;
}
