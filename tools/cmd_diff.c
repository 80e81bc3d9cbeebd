#include "cli.h"
#include "err.h"
int cmd_diff(const char *root, int argc, char **argv) { susage("diff: not yet"); return 1; }
int cmd_layers(const char *root, int argc, char **argv) { susage("layers: not yet"); return 1; }
int cmd_commit(const char *root, int argc, char **argv) { susage("commit: not yet"); return 1; }
