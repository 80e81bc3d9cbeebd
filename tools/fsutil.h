/* fsutil: small file-system helpers the store and the layer code share. */
#ifndef STRATA_FSUTIL_H
#define STRATA_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

/* openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS): path may follow symlinks
 * only while they stay under rootfd. -EXDEV when it would leave. */
int open_beneath(int rootfd, const char *path, int flags, mode_t mode);

/* Open dirfd/path for reading only if it is a regular file, without ever
 * blocking: a FIFO, device or socket is refused before it is opened for
 * reading (O_PATH and fstat first), so a hostile image layout cannot hang
 * or feed endless data. follow: the final component may be a symlink (a
 * path the user typed); else symlinks are refused too, and with beneath
 * the path may not leave dirfd. Returns the fd, with *st filled, or
 * -EINVAL for another kind of file (*st says which; see file_kind) or
 * -errno. */
int open_regular(int dirfd, const char *path, bool follow, bool beneath, struct stat *st);

/* "a FIFO", "a character device", ...: for messages about the wrong kind
 * of file. */
const char *file_kind(mode_t mode);

/* For a "filesystem full" message: "the filesystem mounted at M (holding
 * P)", where P is the store whose tmp/ holds fd, or fd's own path. */
void fs_full_where(int fd, char *buf, size_t len);

/* Where r is ENOSPC or EDQUOT (either sign): what to tell the user, naming
 * the full filesystem as fs_full_where() does (fd: anything on it), in buf;
 * false for any other r. Every step of an import that writes into the store
 * says it this way, so a full store is never taken for a broken input. */
bool fs_full_hint(int fd, int r, char *buf, size_t len);

/* Remove NAME in dirfd and everything below it. Missing is not an error. */
int rm_rf_at(int dirfd, const char *name);

/* mkdir -p for store directories (mode 0700 components). */
int mkdir_p(const char *path, mode_t mode);

/* Read a whole (small) file at dirfd/path; max bounds the size so hostile
 * inputs cannot make us allocate without limit. NUL-terminated. */
int read_file_at(int dirfd, const char *path, size_t max, char **buf, size_t *len);

/* The same for an open file. */
int read_fd(int fd, size_t max, char **buf, size_t *len);

/* The start of a small file (/proc, /sys, a state file) into buf, which
 * is always terminated: the bytes read, or -errno. */
int read_small(const char *path, char *buf, size_t len);

/* Write data to dirfd/path atomically: a temp file, fsync, rename. */
int write_file_atomic(int dirfd, const char *path, const void *data, size_t len);

/* Copy everything from in to out (both fds), returning bytes or -errno. */
long long copy_fd(int in, int out);

/* Directory entries of dirfd sorted by name (strings owned by the array;
 * free with free_names). Skips "." and "..". */
int list_sorted(int dirfd, char ***names, size_t *n);
void free_names(char **names, size_t n);

#endif
