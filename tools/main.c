/* strata: the user's command. Global options, then one subcommand.
 *
 * Every command has one entry in the table below: its name, function,
 * arguments, one line for the command list, and the help that
 * `strata COMMAND --help` and `strata help COMMAND` print (one option a
 * line). A new command is one more line in the table.
 */
#include "cli.h"

#include "err.h"

#include <stdio.h>
#include <string.h>

#define RUN_OPTS \
	"  -d, --detach              run in the background under a monitor; print the id\n" \
	"      --rm                  remove the container when its command ends (also with -d)\n" \
	"  -i, --interactive         keep stdin open (with -t: relay it to the terminal)\n" \
	"  -t, --tty                 give the command a pseudo-terminal\n" \
	"      --name NAME           name the container\n" \
	"  -e, --env KEY=VALUE       set an environment variable (repeatable)\n" \
	"      --env-file FILE       read variables from FILE: KEY=VALUE lines, # comments (repeatable)\n" \
	"  -v, --volume SRC:DST[:ro] bind a host path (repeatable; --bind is the same)\n" \
	"  -p, --publish [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]  publish a port (repeatable)\n" \
	"      --network none|host|private  network (--net; default private with -p, else host)\n" \
	"  -u, --user USER[:GROUP]   run as this user (names from the image's /etc/passwd)\n" \
	"  -w, --workdir DIR         working directory\n" \
	"  -h, --hostname NAME       host name (default: the container's name)\n" \
	"      --cap-add CAP         add a capability (repeatable)\n" \
	"      --cap-drop CAP|ALL    drop a capability (repeatable)\n" \
	"  -m, --memory SIZE         memory limit (512m, 1g)\n" \
	"      --memory-swap SIZE    memory plus swap limit (-1: unlimited)\n" \
	"      --cpus N              CPU limit (1.5)\n" \
	"  -c, --cpu-shares N        relative CPU weight (1024 is the default)\n" \
	"      --pids-limit N        process limit (-1: unlimited)\n" \
	"      --restart POLICY      no, on-failure[:MAX], always, unless-stopped\n" \
	"      --stop-signal SIG     signal of stop (default: the image's StopSignal or SIGTERM)\n" \
	"      --stop-timeout SECS   stop's grace period before SIGKILL (default 10)\n" \
	"      --log-opt max-size=SIZE  rotate ctr.log at this size (default 10m)\n" \
	"      --storage-opt sharecache=direct|off  direct (default): the image's files are read\n" \
	"                            from one page cache its containers share; off: each\n" \
	"                            container caches what it reads in its own mount\n" \
	"      --rlimit NAME=SOFT[:HARD]  resource limit (repeatable; --ulimit is the same)\n" \
	"      --uidmap IN:OUT:COUNT  user namespace uid range (repeatable); rootless, map\n" \
	"                            yourself too: --uidmap 0:$(id -u):1 --uidmap 1:SUBUID:65536\n" \
	"      --gidmap IN:OUT:COUNT  the same for gids\n" \
	"      --fs-program PATH     the FUSE daemon (default: strata-fs)\n"

static const struct command {
	const char *name;
	int (*fn)(const char *, int, char **);
	const char *args, *what;
	const char *help;       /* options, one a line; NULL: none */
	bool own_help;          /* the command answers --help itself */
} cmds[] = {
	{ "import", cmd_import, "SOURCE NAME[:TAG]", "bring an image in (sources below)", NULL, false },
	{ "export", cmd_export, "IMAGE DEST", "write an image out (oci:, oci-archive:, docker-archive:)", NULL, false },
	{ "images", cmd_images, "[--json]", "list images", "  --json  as JSON\n", false },
	{ "tag", cmd_tag, "IMAGE NAME[:TAG]", "give an image another name", NULL, false },
	{ "rmi", cmd_rmi, "IMAGE...", "remove names; unused images and layers go", NULL, false },
	{ "history", cmd_history, "IMAGE [--json]", "how the image was built", "  --json  as JSON\n", false },
	{ "inspect", cmd_inspect, "IMAGE|CONTAINER", "details as JSON (a container's State, ports, limits, log)", NULL, false },
	{ "diff", cmd_diff, "CONTAINER|IMAGE IMAGE [--json]", "what changed: A added, C changed, D deleted", "  --json  as JSON\n", false },
	{ "layers", cmd_layers, "IMAGE [--all] [--json]", "per layer: tree of changes, sizes, wasted bytes",
	  "  --all   every entry, not only the top of each tree\n  --json  as JSON\n", false },
	{ "commit", cmd_commit, "CONTAINER NAME[:TAG] [-m MSG]", "a container's layer becomes a new image",
	  "  -m, --message MSG  the history comment\n", false },
	{ "build", cmd_build, "[OPTIONS] CONTEXT", "build an image from a Containerfile or Dockerfile",
	  "  -t, --tag NAME[:TAG]     name the image (repeatable)\n"
	  "  -f, --file FILE          the Containerfile (default: CONTEXT/Containerfile, then Dockerfile)\n"
	  "      --build-arg K[=V]    a build argument (repeatable; K alone takes $K)\n"
	  "      --target STAGE       build up to this stage\n"
	  "      --no-cache           run every step again\n"
	  "      --layers             one layer per step (always so; accepted for podman's scripts)\n"
	  "      --tls-verify=false   pull FROM images from a registry without TLS checks\n"
	  "      --network MODE       RUN steps' network: private (default: own namespace, outbound\n"
	  "                           through pasta), host or none\n", false },
	{ "create", cmd_create, "[OPTIONS] IMAGE [COMMAND [ARG...]]", "make a container", RUN_OPTS, false },
	{ "run", cmd_run, "[OPTIONS] IMAGE [COMMAND [ARG...]]", "create and start (attached unless -d)", RUN_OPTS, false },
	{ "start", cmd_start, "[-a] CONTAINER...", "start containers in the background",
	  "  -a, --attach  run in the foreground with this terminal; exit with the command's code\n", false },
	{ "stop", cmd_stop, "[-t SECONDS] CONTAINER...", "stop signal (image's or SIGTERM), SIGKILL after the grace period",
	  "  -t, --time SECONDS  grace period before SIGKILL (default 10, or the container's --stop-timeout)\n", false },
	{ "restart", cmd_restart, "[-t SECONDS] CONTAINER...", "stop, then start in the background",
	  "  -t, --time SECONDS  grace period of the stop\n", false },
	{ "kill", cmd_kill, "[-s SIGNAL] CONTAINER...", "send a signal to the container's init",
	  "  -s, --signal SIGNAL  name or number (default KILL)\n", false },
	{ "wait", cmd_wait, "CONTAINER...", "wait for containers to end; print their exit codes", NULL, false },
	{ "pause", cmd_pause, "CONTAINER...", "freeze the container's processes (cgroup freezer)", NULL, false },
	{ "unpause", cmd_unpause, "CONTAINER...", "thaw them", NULL, false },
	{ "exec", cmd_exec, "[OPTIONS] CONTAINER COMMAND [ARG...]", "run a command in a running container",
	  "  -i, --interactive      keep stdin open\n"
	  "  -t, --tty              give the command a pseudo-terminal\n"
	  "  -d, --detach           return once it runs\n"
	  "  -u, --user USER[:GROUP]  run as this user (default: the container's)\n"
	  "  -e, --env KEY=VALUE    set an environment variable (repeatable)\n"
	  "      --env-file FILE    read variables from FILE: KEY=VALUE lines, # comments (repeatable)\n"
	  "  -w, --workdir DIR      working directory (default: the container's)\n", false },
	{ "logs", cmd_logs, "[OPTIONS] CONTAINER", "what a container's command wrote (a foreground run's too, unless -t)",
	  "  -f, --follow        keep printing until the container ends\n"
	  "  -n, --tail N        only the last N lines\n"
	  "  -t, --timestamps    show each line's time\n"
	  "      --since TIME    lines since TIME (2026-01-02T03:04:05Z, unix time, or 10m ago)\n", false },
	{ "ps", cmd_ps, "[-a] [-q] [--json]", "list running (all) containers",
	  "  -a, --all    also containers that are not running\n  -q, --quiet  ids only\n  --json       as JSON\n", false },
	{ "top", cmd_top, "CONTAINER", "the container's processes, as ps -ef shows them", NULL, false },
	{ "stats", cmd_stats, "[--no-stream] [--json] [CONTAINER...]", "CPU, memory and pids per container",
	  "  --no-stream  print once\n  --json       as JSON\n", false },
	{ "port", cmd_port, "CONTAINER [PORT[/PROTO]]", "the container's published ports", NULL, false },
	{ "rm", cmd_rm, "[-f] CONTAINER...", "remove containers and their layers",
	  "  -f, --force  stop running containers first, clean up after dead ones\n", false },
	{ "pack", cmd_pack, "SRC_DIR DEST [OPTIONS]", "a directory to a packed layer",
	  "  --chunks DIR       the chunk store (default: chunks/ beside DEST)\n"
	  "  --chunk-size SIZE  cut files into chunks of SIZE: a power of two from 4k to 64k (default 32k)\n"
	  "  --inline BYTES     files up to BYTES live in DEST itself (default 512)\n"
	  "  --threads N        compressing threads (default: one per CPU)\n"
	  "  --stats            print sizes, objects written and throughput\n"
	  "  --gc               with --chunks DIR: remove the objects no LIVE_LAYER file given uses\n", false },
	{ "unpack", cmd_unpack, "DEST DIR [--chunks DIR]", "a packed layer back to a directory", NULL, false },
	{ "system", cmd_system, "df [--json] | check | migrate | prune", "the store: usage and dedup, damage, layer format, unused data",
	  "  df       logical and stored bytes, dedup and lz4 ratios, per image and in total\n"
	  "  check    verify every layer's metadata and chunks; exit 1 on damage\n"
	  "  migrate  convert dir-format layers to packed layers\n"
	  "  prune    remove unused images, layers and chunks\n", false },
	{ "pull", cmd_pull, "[OPTIONS] NAME[:TAG]|NAME@DIGEST", "fetch an image from a registry; print its id",
	  "      --tls-verify=false  the registry speaks plain HTTP or has an untrusted certificate\n" "  -q, --quiet             no progress\n      --authfile FILE     credentials (default: login's)\n", false },
	{ "push", cmd_push, "[OPTIONS] IMAGE [NAME[:TAG]]", "send an image to a registry; print NAME@DIGEST",
	  "      --tls-verify=false  the registry speaks plain HTTP or has an untrusted certificate\n" "  -q, --quiet             no progress\n      --authfile FILE     credentials (default: login's)\n", false },
	{ "login", cmd_login, "[OPTIONS] [REGISTRY]", "keep credentials for a registry (default docker.io)",
	  "  -u, --username USER     asked for when not given\n      --password-stdin    read the password from stdin\n"
	  "      --tls-verify=false  the registry speaks plain HTTP or has an untrusted certificate\n" "      --authfile FILE     where to keep them\n", false },
	{ "logout", cmd_logout, "[--all] [REGISTRY]", "forget a registry's credentials",
	  "  -a, --all          every registry's\n      --authfile FILE  where they are kept\n", false },
	{ "save", cmd_save, "[-o FILE] IMAGE", "write an image as a docker-archive (stdout without -o)",
	  "  -o, --output FILE  the archive\n      --format docker-archive|oci-archive\n", false },
	{ "load", cmd_load, "[-i FILE]", "read a docker-archive (stdin without -i), keeping its names",
	  "  -i, --input FILE  the archive\n  -q, --quiet       do not list the names loaded\n", false },
	{ "bench", cmd_bench, "[ARGS...]", "run the benchmark harness (bench/run.sh)", NULL, true },
};

static const struct command *find(const char *name)
{
	for (size_t k = 0; k < sizeof cmds / sizeof *cmds; k++)
		if (!strcmp(name, cmds[k].name))
			return &cmds[k];
	return NULL;
}

bool cli_help(const char *name, FILE *f)
{
	const struct command *c = find(name);
	if (!c)
		return false;
	fprintf(f, "usage: strata [--store DIR] %s %s\n\n%s\n", c->name, c->args, c->what);
	if (c->help)
		fprintf(f, "\noptions:\n%s", c->help);
	return true;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: strata [--store DIR] [--debug] COMMAND [ARGS]\n\n"
		   "The store is DIR, else $STRATA_STORE, else /var/lib/strata (root) or\n"
		   "~/.local/share/strata.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
		fprintf(f, "  %-8s %-36s %s\n", cmds[i].name, cmds[i].args, cmds[i].what);
	fprintf(f, "  %-8s %-36s %s\n", "help", "[COMMAND]", "this text, or a command's options");
	fprintf(f, "\nsources: oci:DIR[:TAG]  oci-archive:FILE[:TAG]  docker-archive:FILE[:NAME:TAG]\n"
		   "         rootfs:DIR  rootfs:FILE.tar[.gz|.zst]\n"
		   "\nExit codes of run, start -a and exec: the command's, 125 when strata fails,\n"
		   "126 when the command cannot be executed, 127 when it is not found, 128+N\n"
		   "when signal N ended it. `strata COMMAND --help` lists a command's options.\n"
		   "\npull and push go through skopeo, which shares its credentials with podman;\n"
		   "a local registry without TLS needs --tls-verify=false.\n");
}

int main(int argc, char **argv)
{
	const char *store = NULL;
	int i = 1;

	strata_prog = "strata";
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (!strcmp(argv[i], "--store") && i + 1 < argc)
			store = argv[++i];
		else if (!strncmp(argv[i], "--store=", 8))
			store = argv[i] + 8;
		else if (!strcmp(argv[i], "--debug"))
			strata_debug = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "--version")) {
			printf("strata %s\n", STRATA_VERSION);
			return 0;
		} else {
			susage("unknown option %s (see strata --help)", argv[i]);
			return 2;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[i], "help")) {
		if (i + 1 >= argc || !strcmp(argv[i + 1], "--help")) {
			usage(stdout);
			return 0;
		}
		if (cli_help(argv[i + 1], stdout))
			return 0;
		susage("unknown command '%s' (see strata --help)", argv[i + 1]);
		return 2;
	}
	const struct command *c = find(argv[i]);
	if (!c) {
		susage("unknown command '%s' (see strata --help)", argv[i]);
		return 2;
	}
	if (!c->own_help && i + 1 < argc && (!strcmp(argv[i + 1], "--help") || !strcmp(argv[i + 1], "-help"))) {
		cli_help(c->name, stdout);
		return 0;
	}
	int r = c->fn(store, argc - i - 1, argv + i + 1);
	/* Commands return a process exit code (>= 0) or -errno. */
	return r < 0 ? 1 : r;
}
