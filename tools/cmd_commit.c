/* commit: a container's writable layer becomes a new image layer.
 *
 * The upper directory is packed as an OCI layer (overlay whiteouts become
 * ".wh." entries, renamed directories are written whole, metacopy files
 * take their data from the image) and stored like any imported layer (a
 * packed layer unless STRATA_STORE_FORMAT=dir); the image's layers are read
 * in place (lowerview_open_packed), packed ones through pk_*; the
 * new image's config is the base's plus that layer and a history entry.
 * Base image and container are left as they were.
 */
#include "cli.h"

#include "err.h"
#include "image.h"
#include "lowerview.h"
#include "store.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cmd_commit(const char *root, int argc, char **argv)
{
	struct store s;
	char id[65], diffid[DIGEST_BUF], digest[DIGEST_BUF], p[PATH_MAX];
	const char *message = NULL;
	char *pos[2];
	int np = 0;
	for (int i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "--message") || !strcmp(argv[i], "-m")) && i + 1 < argc)
			message = argv[++i];
		else if (np < 2 && argv[i][0] != '-')
			pos[np++] = argv[i];
		else {
			susage("usage: strata commit CONTAINER NAME[:TAG] [--message M]");
			return 2;
		}
	}
	if (np != 2) {
		susage("usage: strata commit CONTAINER NAME[:TAG] [--message M]");
		return 2;
	}
	json_t *c = NULL, *cfg = NULL, *ids;
	struct lowerview lv = { 0 };
	int ufd = -1;
	char *txt = NULL;
	int r = store_open(&s, root, true);
	if (r < 0)
		return r;
	if ((r = container_find(&s, pos[0], id)) < 0) {
		susage("no such container: %s (see `strata ps -a`)", pos[0]);
		goto out;
	}
	if ((r = container_load(&s, id, &c)) < 0)
		goto out;
	const char *base = json_string_value(json_object_get(c, "image"));
	if ((r = store_load_image(&s, base, &cfg, &ids)) < 0 || (r = lowerview_open_packed(&s, ids, &lv)) < 0)
		goto out;
	snprintf(p, sizeof p, "containers/%s/upper", id);
	ufd = openat(s.fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ufd < 0) {
		r = -errno;
		serr(r, "commit: open", p, "the container's writable layer is missing");
		goto out;
	}
	char what[128];
	snprintf(what, sizeof what, "container %s", json_string_value(json_object_get(c, "name")));
	if ((r = layer_from_dir(&s, ufd, what, true, &lv, diffid)) < 0)
		goto out;
	/* layer, config, tag: a kill in between leaves an unreferenced
	 * layer, which the marker has the next command collect */
	if ((r = store_commit_begin(&s)) < 0)
		goto out;
	if ((r = store_commit_pending(&s)) < 0)
		goto out;
	/* The new config is the base's with one more layer and history entry. */
	char by[512] = "strata commit";
	json_t *cmd = json_object_get(c, "command");
	size_t i;
	json_t *v;
	json_array_foreach(cmd, i, v) {
		strncat(by, " ", sizeof by - strlen(by) - 1);
		strncat(by, json_string_value(v), sizeof by - strlen(by) - 1);
	}
	config_add_layer(cfg, diffid, by, message);
	txt = json_dumps(cfg, JSON_COMPACT);
	if (!txt) {
		r = -ENOMEM;
		goto out;
	}
	if ((r = store_put_image(&s, txt, strlen(txt), digest)) < 0) {
		serr(r, "commit: store image config in", s.root, "check free space of the store");
		goto out;
	}
	if ((r = store_set_tag(&s, pos[1], digest)) == 0)
		printf("%s\n", digest);
out:
	store_commit_end(&s);
	if (ufd >= 0)
		close(ufd);
	free(txt);
	lowerview_close(&lv);
	json_decref(cfg);
	json_decref(c);
	store_close(&s);
	return r;
}
