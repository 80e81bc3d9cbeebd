/* strata's one error convention, shared by every program.
 *
 * A function that can fail returns 0 (or a non-negative result) on success
 * and -errno on failure. The function that knows the operation and the path
 * reports the failure once, with serr(), and returns the error up; callers
 * above it only pass the -errno on. Every message names the operation, the
 * path and the cause, and says what the user can do:
 *
 *   strata-fs: open lower layer /x/y: No such file or directory (check the lowerdir= list)
 *
 * A library whose callers know what the user was doing reports the same
 * message into an error object instead of printing it: the runtime
 * (runtime/launch.h, struct strata_error), so that `strata run` can say
 * "strata: starting container web: mount proc /proc: ...".
 */
#ifndef STRATA_ERR_H
#define STRATA_ERR_H

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

/* Program name used as the prefix of every message; set once in main(). */
extern const char *strata_prog;

/* Report "PROG: OP PATH: strerror(err) (HINT)". errnum is positive or
 * negative errno, or 0 when there is no system cause. hint may be NULL. */
void serr(int errnum, const char *op, const char *path, const char *hint_fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* A usage or input error without a system cause: "PROG: MESSAGE". */
void susage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Debug output, printed only when strata_debug is set (e.g. strata-fs -d). */
extern int strata_debug;
void sdebug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Scope-bound cleanup, as in crun and systemd: the resource is released
 * when the variable goes out of scope, on every return path. */
#define _cleanup_(f) __attribute__((cleanup(f)))
static inline void cleanup_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}
static inline void cleanup_freep(void *p)
{
	free(*(void **)p);
}
#define _cleanup_close_ _cleanup_(cleanup_closep)
#define _cleanup_free_ _cleanup_(cleanup_freep)

/* Hand a cleanup-owned fd or pointer to someone else. */
static inline int take_fd(int *fd)
{
	int r = *fd;
	*fd = -1;
	return r;
}
#define TAKE_PTR(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })

#endif
