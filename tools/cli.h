/* cli: the `strata` subcommands. Each takes the arguments after its name
 * and the store path from the global --store option (NULL: default), and
 * returns a process exit code (>= 0) or -errno. */
#ifndef STRATA_CLI_H
#define STRATA_CLI_H

#include "container.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

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
int cmd_bench(const char *store, int argc, char **argv);
int cmd_pack(const char *store, int argc, char **argv);
int cmd_unpack(const char *store, int argc, char **argv);
int cmd_system(const char *store, int argc, char **argv);
int cmd_pull(const char *store, int argc, char **argv);
int cmd_build(const char *store, int argc, char **argv);
int cmd_push(const char *store, int argc, char **argv);
int cmd_login(const char *store, int argc, char **argv);
int cmd_logout(const char *store, int argc, char **argv);
int cmd_save(const char *store, int argc, char **argv);
int cmd_load(const char *store, int argc, char **argv);
/* cmd_run.c */
int cmd_create(const char *store, int argc, char **argv);
int cmd_run(const char *store, int argc, char **argv);
int cmd_start(const char *store, int argc, char **argv);
/* cmd_stop.c */
int cmd_stop(const char *store, int argc, char **argv);
int cmd_kill(const char *store, int argc, char **argv);
int cmd_restart(const char *store, int argc, char **argv);
int cmd_wait(const char *store, int argc, char **argv);
int cmd_pause(const char *store, int argc, char **argv);
int cmd_unpause(const char *store, int argc, char **argv);
int cmd_rm(const char *store, int argc, char **argv);
/* cmd_exec.c, cmd_logs.c, cmd_ps.c */
int cmd_exec(const char *store, int argc, char **argv);
int cmd_logs(const char *store, int argc, char **argv);
int cmd_ps(const char *store, int argc, char **argv);
int cmd_top(const char *store, int argc, char **argv);
int cmd_stats(const char *store, int argc, char **argv);
int cmd_port(const char *store, int argc, char **argv);

/* Start a created container: attached (returns its command's exit code)
 * or detached (0 once it runs); print: its name on success. */
int ctr_start(const char *store, const char *what, bool attach, bool print);

/* The help of one command, from main.c's table; false if no such command. */
bool cli_help(const char *cmd, FILE *f);

/* An image reference as docker reads it (cmd_registry.c): domain
 * ("docker.io"), path ("library/busybox"), tag or digest. */
struct image_ref {
	char *domain, *path, *tag, *digest;
};
int image_ref_parse(const char *text, struct image_ref *r);
void image_ref_free(struct image_ref *r);
char *image_ref_full(const struct image_ref *r);      /* docker.io/library/busybox:latest */
char *image_ref_familiar(const struct image_ref *r);  /* busybox:latest */

/* Pull a registry reference into the open store, named as docker shows it
 * (busybox:latest, 127.0.0.1:5000/x:1, x@sha256:...); digest (DIGEST_BUF
 * bytes) gets the image ID. As image_import, the store lock is given up
 * meanwhile and held exclusively again on success. Reports its errors;
 * -EINTR when a signal ended skopeo. */
struct pull_opts {
	bool tls_verify;        /* false: plain HTTP or an untrusted certificate */
	bool quiet;             /* no progress even on a terminal */
	const char *authfile;   /* NULL: skopeo's, or login's */
};
int registry_pull(struct store *s, const char *ref, const struct pull_opts *po, char *digest);

/* Print a JSON value to stdout, indented. */
void print_json(json_t *j);
/* "12.3MB"-style size. */
const char *human_size(long long bytes, char *buf, size_t len);
/* ChainIDs of a diff_ids list, as a new JSON array. */
json_t *chain_ids(json_t *diff_ids);

#endif
