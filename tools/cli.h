/* cli: the `strata` subcommands. Each takes the arguments after its name
 * and the store path from the global --store option (NULL: default). */
#ifndef STRATA_CLI_H
#define STRATA_CLI_H

#include <jansson.h>

struct store;

int cmd_import(const char *store, int argc, char **argv);
int cmd_export(const char *store, int argc, char **argv);
int cmd_images(const char *store, int argc, char **argv);
int cmd_tag(const char *store, int argc, char **argv);
int cmd_rmi(const char *store, int argc, char **argv);
int cmd_history(const char *store, int argc, char **argv);
int cmd_inspect(const char *store, int argc, char **argv);
int cmd_diff(const char *store, int argc, char **argv);
int cmd_layers(const char *store, int argc, char **argv);
int cmd_commit(const char *store, int argc, char **argv);
int cmd_create(const char *store, int argc, char **argv);
int cmd_run(const char *store, int argc, char **argv);
int cmd_start(const char *store, int argc, char **argv);
int cmd_ps(const char *store, int argc, char **argv);
int cmd_rm(const char *store, int argc, char **argv);
int cmd_bench(const char *store, int argc, char **argv);
int cmd_pull(const char *store, int argc, char **argv);
int cmd_push(const char *store, int argc, char **argv);
int cmd_login(const char *store, int argc, char **argv);
int cmd_logout(const char *store, int argc, char **argv);
int cmd_save(const char *store, int argc, char **argv);
int cmd_load(const char *store, int argc, char **argv);

/* An image reference as docker reads it (cmd_registry.c): domain
 * ("docker.io"), path ("library/busybox"), tag or digest. */
struct image_ref {
	char *domain, *path, *tag, *digest;
};
int image_ref_parse(const char *text, struct image_ref *r);
void image_ref_free(struct image_ref *r);
char *image_ref_full(const struct image_ref *r);      /* docker.io/library/busybox:latest */
char *image_ref_familiar(const struct image_ref *r);  /* busybox:latest */
int cmd_pack(const char *store, int argc, char **argv);
int cmd_unpack(const char *store, int argc, char **argv);

/* Print a JSON value to stdout, indented. */
void print_json(json_t *j);
/* "12.3MB"-style size. */
const char *human_size(long long bytes, char *buf, size_t len);
/* ChainIDs of a diff_ids list, as a new JSON array. */
json_t *chain_ids(json_t *diff_ids);
/* Find a container by name or (prefix of) id; fills id (65 bytes). */
int container_find(struct store *s, const char *what, char id[65]);
int container_load(struct store *s, const char *id, json_t **c);

#endif
