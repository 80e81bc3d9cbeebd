#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *strata_prog = "strata";
int strata_debug;

void serr(int errnum, const char *op, const char *path, const char *hint_fmt, ...)
{
	char hint[512] = "";
	int saved = errno;

	if (hint_fmt) {
		va_list ap;
		va_start(ap, hint_fmt);
		vsnprintf(hint, sizeof hint, hint_fmt, ap);
		va_end(ap);
	}
	if (errnum < 0)
		errnum = -errnum;
	fprintf(stderr, "%s: %s%s%s", strata_prog, op, path ? " " : "", path ? path : "");
	if (errnum)
		fprintf(stderr, ": %s", strerror(errnum));
	if (hint[0])
		fprintf(stderr, " (%s)", hint);
	fputc('\n', stderr);
	errno = saved;
}

void susage(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	fprintf(stderr, "%s: ", strata_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	errno = saved;
}

void sdebug(const char *fmt, ...)
{
	va_list ap;

	if (!strata_debug)
		return;
	int saved = errno;
	fprintf(stderr, "%s[debug]: ", strata_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	errno = saved;
}
