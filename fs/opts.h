/* opts: strata-fs's command line, compatible with fuse-overlayfs's as
 * containers-storage calls it. Pure parsing: no file is touched here, so the
 * parser is unit-tested on its own. */
#ifndef STRATA_OPTS_H
#define STRATA_OPTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

struct idmap_ent {
	uint32_t inside;   /* id as the container sees it */
	uint32_t outside;  /* id on disk */
	uint32_t count;
};

struct idmap {
	struct idmap_ent *ents;
	unsigned n;
};

/* redirect_dir=: may a directory rename write a redirect, may lookups
 * follow one (kernel overlayfs's modes; "off" is "follow", as with its
 * redirect_always_follow default) */
enum redirect_mode {
	REDIRECT_ON,        /* write and follow (the default) */
	REDIRECT_FOLLOW,    /* follow; renaming a directory with lower layers is EXDEV */
	REDIRECT_NOFOLLOW,  /* neither: a lookup that would follow one is EPERM */
};

struct strata_opts {
	char **lowers;       /* top first */
	unsigned nlowers;
	char *upperdir;      /* NULL: read-only mount */
	char *workdir;
	char *mountpoint;
	bool foreground;
	bool debug;
	bool single_thread;  /* -s: serve requests on one thread */
	bool is_volatile;    /* skip fsync */
	bool squash_to_root;
	int64_t squash_uid;  /* -1: not set */
	int64_t squash_gid;
	int xattr_permissions; /* 0 off, 1 privileged (security.*), 2 user.* */
	bool noacl;
	bool unlabeled_enodata; /* a missing security.selinux answers ENODATA, not EOPNOTSUPP */
	bool metacopy;       /* metadata-only changes copy no data (default on) */
	bool writeback;      /* kernel writeback cache (default on) */
	bool passthrough;    /* upper files through the kernel's passthrough,
			      * when it and our privileges allow (default on) */
	bool sharecache;     /* read-only opens of lower files passed through too,
			      * with an upper (default off) */
	bool sharedirect;    /* sharecache=direct: read-only opens of lower files
			      * read through us uncached (FOPEN_DIRECT_IO), from
			      * the layer's page cache (default off) */
	bool progcache;      /* programs of packed layers decompressed once,
			      * beside the layer, for every mount (default off) */
	bool uring;          /* FUSE over io_uring where the kernel offers it (default on) */
	enum redirect_mode redirect_dir;
	double timeout;      /* seconds the kernel may cache entries and attrs */
	unsigned poll_us;    /* the reader polls this long for the next request before sleeping */
	struct idmap uidmap, gidmap;
	char *fuse_opts;     /* passed through to the kernel mount, comma-separated */
	bool show_version;
	bool show_help;
};

/* One row of strata-fs's -o options (opts_table, in opts.c): the parser,
 * `strata-fs --help` and the man page are all made from it. */
enum opt_kind {
	OPT_FLAG,       /* a bare name; a value is ignored */
	OPT_VALUE,      /* name=value; the value is required */
	OPT_ANY,        /* the parser decides per name (volatile vs fsync=0) */
};
struct opt_row {
	const char *names;      /* the keys it parses, separated by spaces */
	enum opt_kind kind;
	int (*parse)(struct strata_opts *o, const char *key, const char *val, const char *item);
	const char *synopsis;   /* as --help and the man page show it */
	const char *help;       /* one paragraph of plain text */
};
extern const struct opt_row opts_table[];   /* ends with a row of NULLs */

/* The "options (-o ...)" block of --help, made from the table. */
void opts_help(FILE *f);

/* The whole of `strata-fs --help`. */
void opts_usage(FILE *f);

/* Parse argv into o. Returns 0, or -EINVAL after printing what is wrong and
 * what to do. o is zeroed and filled; free with opts_free(). */
int opts_parse(struct strata_opts *o, int argc, char **argv);

/* Parse one comma-separated -o string into o (exposed for tests). */
int opts_parse_string(struct strata_opts *o, const char *s);

/* Split a lowerdir= value on ':' (a backslash escapes ':' and ','). */
int opts_split_lowers(const char *value, char ***out, unsigned *n);

/* Parse "DISK:SHOWN:N[:...]" (an optional leading ':' is accepted): on-disk
 * ids DISK..DISK+N-1 show as SHOWN..SHOWN+N-1, as in fuse-overlayfs. */
int opts_parse_idmap(const char *value, struct idmap *m);

#define IDMAP_OVERFLOW 65534u

/* Map an on-disk id to the id shown, and back. With an empty map ids pass
 * unchanged; outside a map, either way, an id becomes IDMAP_OVERFLOW. */
uint32_t idmap_to_inside(const struct idmap *m, uint32_t outside);
uint32_t idmap_to_outside(const struct idmap *m, uint32_t inside);

void opts_init(struct strata_opts *o);
void opts_free(struct strata_opts *o);

#endif
