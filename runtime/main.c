/* strata-run: the command-line front door to strata_launch(). All it does
 * is turn arguments into a spec; the launcher does the rest. */
#include "launch.h"
#include "err.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SETUP_FAILED 125

static const char usage[] =
	"usage: strata-run [OPTIONS] -- COMMAND [ARG...]\n"
	"Run COMMAND in its own namespaces inside the merged view of image layers.\n"
	"Run by root it uses real root; run by any other user it is rootless.\n\n"
	"  --lowerdir TOP:...:BOTTOM   image layers, top first (required)\n"
	"  --upperdir DIR --workdir DIR  writable layer (without them / is read-only)\n"
	"  --hostname NAME             container hostname (default strata)\n"
	"  --env KEY=VALUE             add to the minimal environment (repeatable)\n"
	"  --cwd DIR                   working directory inside the container\n"
	"  --user UID[:GID]            run the command as this user\n"
	"  --bind SRC:DST[:ro]         bind a host path into the container (repeatable)\n"
	"  --cap-add CAP, --cap-drop CAP|ALL  edit the docker-like default capabilities\n"
	"  --net host|none|private     host network (default), loopback only, or an own\n"
	"                              network with outbound traffic through pasta\n"
	"                              (slirp4netns where pasta is not installed)\n"
	"  -p, --publish [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]  publish a port on the\n"
	"                              host (repeatable; implies --net private)\n"
	"  -t, --tty                   give the command a terminal from the container\n"
	"  -i, --interactive           with --tty, pass stdin to that terminal\n"
	"  --rlimit NAME=SOFT[:HARD]   resource limit, e.g. nofile=1024:4096 (repeatable)\n"
	"  --memory SIZE               memory limit, e.g. 512m (the command is OOM-killed\n"
	"                              beyond it: exit 137)\n"
	"  --memory-swap SIZE          memory plus swap (default twice --memory; -1: no limit)\n"
	"  --cpus N                    CPU time, e.g. 1.5 CPUs\n"
	"  --cpu-shares N              relative CPU weight (2-262144, default 1024)\n"
	"  --pids-limit N              at most N processes (-1: no limit)\n"
	"  --cgroup-name NAME          the container's cgroup, made beneath this process's\n"
	"                              own (default strata-PID, made only for a limit;\n"
	"                              limits need root or a delegated cgroup v2 subtree)\n"
	"  --uidmap IN:OUT:COUNT, --gidmap IN:OUT:COUNT  subordinate id ranges (repeatable;\n"
	"                              rootless through newuidmap/newgidmap)\n"
	"  --fs-program PATH           FUSE daemon (default: $STRATA_FS, strata-fs next to\n"
	"                              this program, then PATH)\n"
	"  --fs-opt OPTIONS            extra -o options for the daemon (repeatable)\n"
	"  --help, --version\n\n"
	"Exit status: the command's; 128+N if killed by signal N; 127 if the command is\n"
	"not in the image; 125 if the container could not be set up.\n";

enum { O_LOWER = 256, O_UPPER, O_WORK, O_HOST, O_ENV, O_CWD, O_USER, O_BIND, O_CAPADD,
       O_CAPDROP, O_NET, O_RLIMIT, O_UIDMAP, O_GIDMAP, O_FS, O_FSOPT, O_HELP, O_VERSION,
       O_MEMORY, O_MEMSWAP, O_CPUS, O_CPUSHARES, O_PIDS, O_CGNAME,
       O_PUBLISH = 'p', O_TTY = 't', O_INTERACTIVE = 'i' };

static const struct option options[] = {
	{ "lowerdir", required_argument, NULL, O_LOWER },
	{ "upperdir", required_argument, NULL, O_UPPER },
	{ "workdir", required_argument, NULL, O_WORK },
	{ "hostname", required_argument, NULL, O_HOST },
	{ "env", required_argument, NULL, O_ENV },
	{ "cwd", required_argument, NULL, O_CWD },
	{ "user", required_argument, NULL, O_USER },
	{ "bind", required_argument, NULL, O_BIND },
	{ "cap-add", required_argument, NULL, O_CAPADD },
	{ "cap-drop", required_argument, NULL, O_CAPDROP },
	{ "net", required_argument, NULL, O_NET },
	{ "rlimit", required_argument, NULL, O_RLIMIT },
	{ "uidmap", required_argument, NULL, O_UIDMAP },
	{ "gidmap", required_argument, NULL, O_GIDMAP },
	{ "fs-program", required_argument, NULL, O_FS },
	{ "fs-opt", required_argument, NULL, O_FSOPT },
	{ "memory", required_argument, NULL, O_MEMORY },
	{ "memory-swap", required_argument, NULL, O_MEMSWAP },
	{ "cpus", required_argument, NULL, O_CPUS },
	{ "cpu-shares", required_argument, NULL, O_CPUSHARES },
	{ "pids-limit", required_argument, NULL, O_PIDS },
	{ "cgroup-name", required_argument, NULL, O_CGNAME },
	{ "publish", required_argument, NULL, O_PUBLISH },
	{ "tty", no_argument, NULL, O_TTY },
	{ "interactive", no_argument, NULL, O_INTERACTIVE },
	{ "help", no_argument, NULL, O_HELP },
	{ "version", no_argument, NULL, O_VERSION },
	{ NULL, 0, NULL, 0 },
};

/* "a,b" + "c" -> "a,b,c"; frees old */
static char *join_opts(char *old, const char *more)
{
	char *s = NULL;

	if (asprintf(&s, "%s,%s", old, more) < 0)
		s = NULL;
	free(old);
	return s;
}

static int report(const struct strata_error *err)
{
	strata_error_print(err, NULL);
	return SETUP_FAILED;
}

int main(int argc, char **argv)
{
	struct strata_launch_spec spec = { .net = STRATA_NET_HOST };
	struct strata_error err = { 0 };
	/* Every repeatable option has at most argc occurrences. */
	size_t cap = (size_t)argc;
	_cleanup_free_ const char **env = calloc(cap, sizeof *env);
	_cleanup_free_ const char **capadd = calloc(cap, sizeof *capadd);
	_cleanup_free_ const char **capdrop = calloc(cap, sizeof *capdrop);
	_cleanup_free_ struct strata_bind *binds = calloc(cap, sizeof *binds);
	_cleanup_free_ struct strata_rlimit *rlimits = calloc(cap, sizeof *rlimits);
	_cleanup_free_ struct strata_idmap *uidmap = calloc(cap, sizeof *uidmap);
	_cleanup_free_ struct strata_idmap *gidmap = calloc(cap, sizeof *gidmap);
	_cleanup_free_ struct strata_port *ports = calloc(cap, sizeof *ports);
	_cleanup_free_ char *fsopts = NULL;
	bool net_given = false;
	int c;

	strata_prog = "strata-run";
	if (!env || !capadd || !capdrop || !binds || !rlimits || !uidmap || !gidmap || !ports)
		return SETUP_FAILED;
	spec.env = env;
	spec.cap_add = capadd;
	spec.cap_drop = capdrop;
	spec.binds = binds;
	spec.rlimits = rlimits;
	spec.uidmap = uidmap;
	spec.gidmap = gidmap;
	spec.ports = ports;

	while ((c = getopt_long(argc, argv, "+p:ti", options, NULL)) != -1) {
		switch (c) {
		case O_LOWER: spec.lowerdir = optarg; break;
		case O_UPPER: spec.upperdir = optarg; break;
		case O_WORK: spec.workdir = optarg; break;
		case O_HOST: spec.hostname = optarg; break;
		case O_ENV: env[spec.n_env++] = optarg; break;
		case O_CWD: spec.cwd = optarg; break;
		case O_USER:
			if (strata_parse_user(optarg, &spec.uid, &spec.gid, &err) < 0)
				return report(&err);
			spec.set_user = true;
			break;
		case O_BIND:
			if (strata_parse_bind(optarg, &binds[spec.n_binds++], &err) < 0)
				return report(&err);
			break;
		case O_CAPADD: capadd[spec.n_cap_add++] = optarg; break;
		case O_CAPDROP: capdrop[spec.n_cap_drop++] = optarg; break;
		case O_NET:
			net_given = true;
			if (strcmp(optarg, "host") == 0)
				spec.net = STRATA_NET_HOST;
			else if (strcmp(optarg, "none") == 0)
				spec.net = STRATA_NET_NONE;
			else if (strcmp(optarg, "private") == 0)
				spec.net = STRATA_NET_PRIVATE;
			else {
				susage("--net '%s': expected host, none or private", optarg);
				return SETUP_FAILED;
			}
			break;
		case O_RLIMIT:
			if (strata_parse_rlimit(optarg, &rlimits[spec.n_rlimits++], &err) < 0)
				return report(&err);
			break;
		case O_UIDMAP:
			if (strata_parse_idmap(optarg, &uidmap[spec.n_uidmap++], &err) < 0)
				return report(&err);
			break;
		case O_GIDMAP:
			if (strata_parse_idmap(optarg, &gidmap[spec.n_gidmap++], &err) < 0)
				return report(&err);
			break;
		case O_PUBLISH:
			if (strata_parse_port(optarg, &ports[spec.n_ports++], &err) < 0)
				return report(&err);
			break;
		case O_MEMORY:
			if (strata_parse_size(optarg, &spec.limits.memory, &err) < 0)
				return report(&err);
			if (spec.limits.memory < 0)
				spec.limits.memory = 0; /* -1: no limit */
			break;
		case O_MEMSWAP:
			if (strata_parse_size(optarg, &spec.limits.memory_swap, &err) < 0)
				return report(&err);
			break;
		case O_CPUS:
			if (strata_parse_cpus(optarg, &spec.limits.cpu_quota_us, &spec.limits.cpu_period_us, &err) < 0)
				return report(&err);
			break;
		case O_CPUSHARES: {
			char *end;
			errno = 0;
			unsigned long v = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || optarg[0] == '-' || v < 2 || v > 262144) {
				susage("--cpu-shares '%s' is not a number from 2 to 262144", optarg);
				return SETUP_FAILED;
			}
			spec.limits.cpu_shares = v;
			break;
		}
		case O_PIDS: {
			char *end;
			errno = 0;
			long long v = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end || v < -1 || v == 0) {
				susage("--pids-limit '%s' is not a positive number of processes, or -1 for no limit",
				       optarg);
				return SETUP_FAILED;
			}
			spec.limits.pids = v;
			break;
		}
		case O_CGNAME: spec.cgroup_name = optarg; break;
		case O_TTY: spec.tty = true; break;
		case O_INTERACTIVE: spec.interactive = true; break;
		case O_FS: spec.fs_program = optarg; break;
		case O_FSOPT:
			fsopts = fsopts ? join_opts(fsopts, optarg) : strdup(optarg);
			if (!fsopts)
				return SETUP_FAILED;
			spec.fs_options = fsopts;
			break;
		case O_HELP: fputs(usage, stdout); return 0;
		case O_VERSION: printf("strata-run %s\n", STRATA_VERSION); return 0;
		default:
			fputs(usage, stderr);
			return SETUP_FAILED;
		}
	}
	if (optind >= argc) {
		susage("no command given; see strata-run --help");
		return SETUP_FAILED;
	}
	spec.argv = argv + optind;
	if (spec.limits.memory_swap && !spec.limits.memory) {
		susage("--memory-swap needs --memory (it limits memory and swap together)");
		return SETUP_FAILED;
	}
	if (spec.limits.memory_swap > 0 && spec.limits.memory_swap < spec.limits.memory) {
		susage("--memory-swap must be at least --memory (it limits memory and swap together)");
		return SETUP_FAILED;
	}
	if (spec.n_ports && !net_given)
		spec.net = STRATA_NET_PRIVATE;

	int r = strata_launch(&spec, &err);
	/* the library says what failed; strata-run has nothing to add that
	 * the user did not just type */
	strata_error_print(&err, NULL);
	return r < 0 ? SETUP_FAILED : r;
}
