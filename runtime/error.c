/* The runtime's error object: the step that knows the operation, the path
 * and the cause fills it in; the caller of strata_launch()/strata_exec()
 * adds what the user was doing and prints it (strata_error_print). Helper
 * processes carry theirs to the launcher on the error pipe
 * (send_failure), so nothing below the public calls writes to stderr. */
#include "internal.h"
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void strata_error_clear(struct strata_error *e)
{
	e->code = 0;
	e->msg[0] = '\0';
}

/* The first error is the cause and keeps its code; what goes wrong while
 * cleaning up after it is added to the message, not put in its place. */
static void put(struct strata_error *e, int code, const char *text)
{
	size_t len = strlen(e->msg);

	if (!e->code || !e->msg[0]) {
		e->code = code;
		snprintf(e->msg, sizeof e->msg, "%s", text);
	} else if (len + 8 < sizeof e->msg) {
		snprintf(e->msg + len, sizeof e->msg - len, "; then %s", text);
	}
}

static int vset(struct strata_error *e, int errnum, int code, const char *op, const char *path,
		const char *hint_fmt, va_list ap)
{
	char hint[512] = "", text[STRATA_ERROR_MSG_MAX];
	int saved = errno, n;

	if (errnum < 0)
		errnum = -errnum;
	if (code < 0)
		code = -code;
	if (hint_fmt)
		vsnprintf(hint, sizeof hint, hint_fmt, ap);
	n = snprintf(text, sizeof text, "%s%s%s", op, path ? " " : "", path ? path : "");
	if (errnum && n >= 0 && (size_t)n < sizeof text)
		n += snprintf(text + n, sizeof text - n, ": %s", strerror(errnum));
	if (hint[0] && n >= 0 && (size_t)n < sizeof text)
		snprintf(text + n, sizeof text - n, " (%s)", hint);
	put(e, code, text);
	errno = saved;
	return -code;
}

int rt_err(struct strata_error *e, int errnum, const char *op, const char *path, const char *hint_fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, hint_fmt);
	r = vset(e, errnum, errnum ? errnum : EIO, op, path, hint_fmt, ap);
	va_end(ap);
	return r;
}

int rt_errx(struct strata_error *e, int code, const char *op, const char *path, const char *hint_fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, hint_fmt);
	r = vset(e, 0, code, op, path, hint_fmt, ap);
	va_end(ap);
	return r;
}

int rt_usage(struct strata_error *e, const char *fmt, ...)
{
	char text[STRATA_ERROR_MSG_MAX];
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	put(e, EINVAL, text);
	errno = saved;
	return -EINVAL;
}

int rt_fallback(struct strata_error *e, int err, const char *op, const char *path)
{
	if (!e->code)
		rt_err(e, err, op, path, NULL);
	return err < 0 ? err : -err;
}

void strata_error_print(const struct strata_error *e, const char *context_fmt, ...)
{
	char context[512] = "";

	if (!e->code && !e->msg[0])
		return;
	if (context_fmt) {
		va_list ap;
		va_start(ap, context_fmt);
		vsnprintf(context, sizeof context, context_fmt, ap);
		va_end(ap);
	}
	fprintf(stderr, "%s: %s%s%s\n", strata_prog, context, context[0] ? ": " : "",
		e->msg[0] ? e->msg : strerror(e->code));
}

void send_failure(int fd, int exit_code, const struct strata_error *e)
{
	struct failure_msg m = { .exit = exit_code, .e = *e };

	if (fd < 0)
		return;
	/* one write of at most PIPE_BUF bytes: records of several processes
	 * never interleave */
	_Static_assert(sizeof m <= 4096, "a failure record must fit PIPE_BUF");
	if (write(fd, &m, sizeof m) < 0) {
		/* the exit code still says that setup failed */
	}
}

int recv_failures(int fd, struct strata_error *e, int *exit_code)
{
	struct failure_msg m;
	ssize_t n;
	int found = 0;

	for (;;) {
		while ((n = read(fd, &m, sizeof m)) < 0 && errno == EINTR)
			;
		if (n != sizeof m)
			break;
		m.e.msg[sizeof m.e.msg - 1] = '\0';
		/* a setup failure outranks a note (a command not found, a
		 * daemon that had to be killed) */
		if (m.exit == SETUP_FAILED_EXIT && found != SETUP_FAILED_EXIT) {
			struct strata_error before = *e;
			*e = m.e;
			if (before.code)
				put(e, before.code, before.msg);
			found = SETUP_FAILED_EXIT;
		} else {
			put(e, m.e.code, m.e.msg);
			if (!found)
				found = m.exit ? m.exit : -1;
		}
	}
	if (found > 0)
		*exit_code = found;
	return found != 0;
}
