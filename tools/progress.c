#include "progress.h"

#include <stdio.h>
#include <unistd.h>

void progress_start(struct progress *p, const char *what)
{
	p->on = isatty(STDERR_FILENO);
	p->what = what;
	p->bytes = 0;
	p->last_shown = 0;
}

static void show(struct progress *p)
{
	fprintf(stderr, "\r%s: %.1f MiB", p->what, (double)p->bytes / (1024.0 * 1024.0));
	fflush(stderr);
	p->last_shown = p->bytes;
}

void progress_add(struct progress *p, uint64_t n)
{
	p->bytes += n;
	/* Redraw every 4 MiB: often enough to look alive, rare enough to cost nothing. */
	if (p->on && p->bytes - p->last_shown >= (4u << 20))
		show(p);
}

void progress_end(struct progress *p)
{
	if (!p->on)
		return;
	show(p);
	fputs(" done\n", stderr);
	p->on = false;
}
