/* strata: the user's command. Global options, then one subcommand. */
#include "cli.h"

#include "err.h"

#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*fn)(const char *, int, char **);
	const char *args, *what;
} cmds[] = {
	{ "import", cmd_import, "SOURCE NAME[:TAG]", "bring an image in (sources below)" },
	{ "export", cmd_export, "IMAGE DEST", "write an image out (oci:, oci-archive:, docker-archive:)" },
	{ "images", cmd_images, "[--json]", "list images" },
	{ "tag", cmd_tag, "IMAGE NAME[:TAG]", "give an image another name" },
	{ "rmi", cmd_rmi, "IMAGE...", "remove names; unused images and layers go" },
	{ "history", cmd_history, "IMAGE [--json]", "how the image was built" },
	{ "inspect", cmd_inspect, "IMAGE|CONTAINER", "details as JSON" },
	{ "diff", cmd_diff, "CONTAINER|IMAGE IMAGE [--json]", "what changed: A added, C changed, D deleted" },
	{ "layers", cmd_layers, "IMAGE [--all] [--json]", "per layer: tree of changes, sizes, wasted bytes" },
	{ "commit", cmd_commit, "CONTAINER NAME[:TAG] [-m MSG]", "a container's layer becomes a new image" },
	{ "create", cmd_create, "[OPTIONS] IMAGE [-- CMD...]", "make a container" },
	{ "run", cmd_run, "[OPTIONS] [--rm] IMAGE [-- CMD...]", "create and start, in the foreground" },
	{ "start", cmd_start, "CONTAINER", "run a container's command again" },
	{ "ps", cmd_ps, "[-a] [--json]", "list running (all) containers" },
	{ "rm", cmd_rm, "CONTAINER...", "remove containers and their layers" },
	{ "pack", cmd_pack, "SRC_DIR DEST [--chunks DIR]", "a directory into a packed layer (chunked, lz4, deduplicated)" },
	{ "unpack", cmd_unpack, "DEST DIR [--chunks DIR]", "a packed layer back into a directory" },
	{ "pull", cmd_pull, "[--tls-verify=false] [-q] NAME[:TAG]|NAME@DIGEST", "fetch an image from a registry; print its id" },
	{ "push", cmd_push, "[--tls-verify=false] [-q] IMAGE [NAME[:TAG]]", "send an image to a registry; print NAME@DIGEST" },
	{ "login", cmd_login, "[-u USER] [--password-stdin] [REGISTRY]", "keep credentials for a registry" },
	{ "logout", cmd_logout, "[--all] [REGISTRY]", "forget a registry's credentials" },
	{ "save", cmd_save, "[-o FILE] IMAGE", "write an image as a docker-archive (stdout without -o)" },
	{ "load", cmd_load, "[-i FILE]", "read a docker-archive (stdin without -i), keeping its names" },
	{ "bench", cmd_bench, "[ARGS...]", "run the benchmark harness (bench/run.sh)" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: strata [--store DIR] [--debug] COMMAND [ARGS]\n\n"
		   "The store is DIR, else $STRATA_STORE, else /var/lib/strata (root) or\n"
		   "~/.local/share/strata.\n\ncommands:\n");
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
		fprintf(f, "  %-8s %-36s %s\n", cmds[i].name, cmds[i].args, cmds[i].what);
	fprintf(f, "\nsources: oci:DIR[:TAG]  oci-archive:FILE[:TAG]  docker-archive:FILE[:NAME:TAG]\n"
		   "         rootfs:DIR  rootfs:FILE.tar[.gz|.zst]\n"
		   "\ncreate/run OPTIONS (kept with the container for start):\n"
		   "  --name N  -e|--env K=V  -v|--bind SRC:DST[:ro]  --net host|none  -u|--user U[:G]\n"
		   "  -w|--workdir DIR  -h|--hostname H  --cap-add CAP  --cap-drop CAP|ALL  --fs-program PATH\n"
		   "  --rlimit NAME=SOFT[:HARD]  --uidmap IN:OUT:COUNT  --gidmap IN:OUT:COUNT\n"
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
	for (size_t k = 0; k < sizeof cmds / sizeof *cmds; k++)
		if (!strcmp(argv[i], cmds[k].name)) {
			int r = cmds[k].fn(store, argc - i - 1, argv + i + 1);
			/* Commands return a process exit code (>= 0) or -errno. */
			return r < 0 ? 1 : r;
		}
	susage("unknown command '%s' (see strata --help)", argv[i]);
	return 2;
}
