/* strata-fs's option parser: the -o string as mount and containers-storage
 * pass it, the lowerdir= splitter and the uidmap=/gidmap= parser. */
#include "opts.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* The parser explains every refusal on stderr; libFuzzer and the
	 * sanitizers keep their own handle on the real one. */
	FILE *null = fopen("/dev/null", "w");
	if (null)
		stderr = null;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	struct strata_opts o;
	opts_init(&o);
	if (opts_parse_string(&o, s) == 0) {
		for (uint32_t id = 0; id < 4; id++) {
			uint32_t in = idmap_to_inside(&o.uidmap, id * 65536u);
			(void)idmap_to_outside(&o.uidmap, in);
		}
	}
	opts_free(&o);

	char **v;
	unsigned n;
	if (opts_split_lowers(s, &v, &n) == 0) {
		for (unsigned i = 0; i < n; i++)
			free(v[i]);
		free(v);
	}

	struct idmap m = { 0 };
	if (opts_parse_idmap(s, &m) == 0) {
		for (unsigned i = 0; i < m.n; i++) {
			uint32_t in = idmap_to_inside(&m, m.ents[i].outside + m.ents[i].count - 1);
			(void)idmap_to_outside(&m, in);
		}
	}
	free(m.ents);
	free(s);
	return 0;
}
