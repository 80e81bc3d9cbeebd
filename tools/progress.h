/* progress: a one-line byte counter on stderr for long work (import and
 * export of big layers), shown only when stderr is a terminal so scripts and
 * logs stay quiet. */
#ifndef STRATA_PROGRESS_H
#define STRATA_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress {
	bool on;
	const char *what;
	uint64_t bytes;
	uint64_t last_shown;
};

void progress_start(struct progress *p, const char *what);
void progress_add(struct progress *p, uint64_t n);
void progress_end(struct progress *p);

#endif
