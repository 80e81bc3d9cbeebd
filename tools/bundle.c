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
#include <unistd.h>

int bundle_open(struct bundle *b, const char *path, bool archive)
{
	b->archive = archive;
	b->path = path;
	b->dirfd = -1;
	if (archive) {
		if (access(path, R_OK) < 0) {
			int r = -errno;
			serr(r, "import: open archive", path, "give the path of an existing tarball");
			return r;
		}
		return 0;
	}
	b->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
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
	b->dirfd = -1;
}

static struct archive *open_archive(struct bundle *b)
{
	struct archive *a = archive_read_new();
	if (!a)
		return NULL;
	archive_read_support_format_tar(a);
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	if (archive_read_open_filename(a, b->path, 1 << 16) != ARCHIVE_OK) {
		serr(0, "import: open archive", b->path, "%s", archive_error_string(a));
		archive_read_free(a);
		return NULL;
	}
	return a;
}

static ssize_t archive_src_read(void *ctx, void *buf, size_t len)
{
	la_ssize_t n = archive_read_data(ctx, buf, len);
	return n < 0 ? -EIO : n;
}

/* Walk the archive; for each member whose clean name is in names[] call
 * cb. Returns after the whole archive was read. */
static int archive_walk(struct bundle *b, const char *const *names, size_t n, bool *seen,
			int (*cb)(void *, size_t, struct bsrc *, struct archive *), void *ctx)
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
			struct bsrc src = { archive_src_read, a };
			r = cb(ctx, i, &src, a);
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
		serr(0, "import: read archive", b->path, "%s; the archive is truncated or corrupt",
		     archive_error_string(a) ? archive_error_string(a) : "bad header");
		r = -EIO;
	}
out:
	archive_read_free(a);
	return r;
}

struct small {
	size_t max;
	char *buf;
	size_t len;
	int err;
};

static int read_small_cb(void *ctx, size_t i, struct bsrc *src, struct archive *a)
{
	struct small *s = ctx;
	(void)i;
	(void)a;
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
			return (int)n;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > s->max) {
		free(buf);
		return -EFBIG;
	}
	buf[len] = '\0';
	s->buf = buf;
	s->len = len;
	return 0;
}

int bundle_read(struct bundle *b, const char *name, size_t max, char **buf, size_t *len)
{
	if (!b->archive) {
		int r = read_file_at(b->dirfd, name, max, buf, len);
		if (r < 0)
			serr(r, "import: read", name, "in %s; the image is incomplete or not this format", b->path);
		return r;
	}
	struct small s = { .max = max };
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

struct stream_ctx {
	bundle_cb cb;
	void *ctx;
};

static int stream_cb(void *ctx, size_t i, struct bsrc *src, struct archive *a)
{
	struct stream_ctx *s = ctx;
	(void)a;
	return s->cb(s->ctx, i, src);
}

int bundle_stream(struct bundle *b, const char *const *names, size_t n, bundle_cb cb, void *ctx)
{
	if (!n)
		return 0;
	if (!b->archive) {
		for (size_t i = 0; i < n; i++) {
			_cleanup_close_ int fd = open_beneath(b->dirfd, names[i], O_RDONLY | O_NOFOLLOW, 0);
			if (fd < 0) {
				serr(fd, "import: open", names[i], "in %s; the image is incomplete", b->path);
				return fd;
			}
			struct fd_src f = { fd };
			struct bsrc src = { fd_src_read, &f };
			int r = cb(ctx, i, &src);
			if (r < 0)
				return r;
		}
		return 0;
	}
	bool *seen = calloc(n, sizeof *seen);
	if (!seen)
		return -ENOMEM;
	struct stream_ctx s = { cb, ctx };
	int r = archive_walk(b, names, n, seen, stream_cb, &s);
	for (size_t i = 0; r == 0 && i < n; i++)
		if (!seen[i]) {
			serr(-ENOENT, "import: find", names[i], "in archive %s; the image is incomplete", b->path);
			r = -ENOENT;
		}
	free(seen);
	return r;
}
