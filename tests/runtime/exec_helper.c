/* strata_exec() from the command line, for the tests (the `strata exec`
 * front door lives in tools/):
 *   exec_helper [-t] [-i] [-d] [-u UID[:GID]] [-w DIR] [-e K=V]...
 *               [--cap-add CAP]... [--cap-drop CAP]... INIT_PID CMD [ARG...]
 * Exit status: the command's, or 125 when it could not be started. */
#include "launch.h"
#include "err.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cap-add", required_argument, NULL, 'A' },
		{ "cap-drop", required_argument, NULL, 'D' },
		{ NULL, 0, NULL, 0 },
	};
	struct strata_exec_spec s = { 0 };
	struct strata_error err = { 0 };
	const char **env = calloc((size_t)argc, sizeof *env);
	const char **add = calloc((size_t)argc, sizeof *add);
	const char **drop = calloc((size_t)argc, sizeof *drop);
	int c;

	strata_prog = "exec_helper";
	if (!env || !add || !drop)
		return 125;
	s.env = env;
	s.cap_add = add;
	s.cap_drop = drop;
	while ((c = getopt_long(argc, argv, "+tidu:w:e:", opts, NULL)) != -1) {
		switch (c) {
		case 't': s.tty = true; break;
		case 'i': s.interactive = true; break;
		case 'd': s.detach = true; break;
		case 'u':
			if (strata_parse_user(optarg, &s.uid, &s.gid, &err) < 0) {
				strata_error_print(&err, NULL);
				return 125;
			}
			s.set_user = true;
			break;
		case 'w': s.cwd = optarg; break;
		case 'e': env[s.n_env++] = optarg; break;
		case 'A': add[s.n_cap_add++] = optarg; break;
		case 'D': drop[s.n_cap_drop++] = optarg; break;
		default: return 125;
		}
	}
	if (argc - optind < 2) {
		fprintf(stderr, "usage: exec_helper [OPTIONS] INIT_PID CMD [ARG...]\n");
		return 125;
	}
	s.init_pid = (pid_t)atoi(argv[optind]);
	s.argv = argv + optind + 1;
	int r = strata_exec(&s, &err);
	strata_error_print(&err, "exec in container %d", (int)s.init_pid);
	free(env);
	free(add);
	free(drop);
	return r < 0 ? 125 : r;
}
