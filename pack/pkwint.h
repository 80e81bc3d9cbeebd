/* pkwint: what the two packed-layer writers share: pk_write (a directory
 * walked from its fd, pkwrite.c) and pk_build (entries fed one by one, as
 * an import reads them from a tar, pkbuild.c). Both fill the same in-memory
 * sections, hash and compress chunks on the same worker pool and write the
 * metadata file the same way. */
#ifndef STRATA_PKWINT_H
#define STRATA_PKWINT_H

#include "pkint.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#define MAX_DEPTH 256

/* A growable array of fixed-size records. */
struct vec {
	void *p;
	size_t n, cap, sz;
};

#define VEC_AT(v, type, i) (((type *)(v).p)[i])

struct job {
	uint64_t ext;
	uint32_t len;
	uint16_t holes;
	unsigned char buf[];
};

struct hl {
	uint64_t dev, ino;
	uint32_t pk;
};

struct w {
	const char *src;
	struct pk_store *store;
	uint32_t inline_max;
	uint32_t chunk;              /* the layer's chunk size */
	struct vec ino, ent, xat, ext, chk, str, dat;
	struct vec loc;              /* parallel to chk */
	/* (dev, ino) -> inode, for files linked more than once */
	struct hl *hl;
	size_t hl_n, hl_cap;
	/* (key, suffix, form, location) -> CHUNKS index + 1 */
	uint32_t *cmap;
	size_t cmap_cap;

	pthread_mutex_t mu;          /* ext, chk, cmap, err */
	pthread_cond_t more, room;
	struct job **q;
	size_t qcap, qhead, qn;
	bool done;
	bool full;                   /* the reader waits for room */
	int idle;                    /* workers waiting for a job */
	pthread_t *th;
	int nth;
	int err;
	struct pk_write_stats st;
};

/* A directory entry on its way into the ENTRIES section: the name the
 * source gives it, the name it is stored and sorted under (NAME for a
 * ".wh.NAME"), its kind and flags. Each writer's item begins with one. */
struct dent {
	const char *name;
	size_t nlen;
	const char *key;
	size_t klen;
	uint8_t kind, flags;
	bool wh_beside;      /* a ".wh.NAME" sits beside this NAME */
};

/* d for an entry called name (st: its mode and rdev) of directory dino,
 * which an opaque marker marks opaque. */
void dent_classify(struct w *w, uint32_t dino, struct dent *d, const char *name, size_t nlen,
		   const struct stat *st);
/* Sort n items of size sz (each beginning with a struct dent) by stored
 * name; a ".wh.NAME" beside a NAME (or beside a char 0/0 NAME) cannot
 * share its slot and is kept, hidden, under its own name. -EINVAL when two
 * entries still map to one name. */
int dents_sort(void *items, size_t n, size_t sz);

int vec_grow(struct vec *v, size_t more);
int add_bytes(struct vec *v, const void *p, size_t n, uint64_t *off);
/* Called with mu held. */
int chunk_index(struct w *w, const struct pk_chunk *c, const struct pk_loc *loc, uint32_t *idx);
/* Queue a chunk (taking j) for hashing, compression and storing (done
 * inline without workers); the first failure of any chunk so far, or 0. */
int submit(struct w *w, struct job *j);
/* Start nth workers (0: one per CPU) when more than one. */
int start_workers(struct w *w, int nth);
void stop_workers(struct w *w);
int xattr_cmp(const void *a, const void *b, void *strs);
/* Write the sections as the metadata file dest (via DEST.tmp.PID, fsync,
 * rename, directory fsync). chunks_rec: the store path it records. */
int write_meta(struct w *w, const char *dest, const char *chunks_rec);
void w_init(struct w *w);
/* inline_max and chunk from o (defaults for NULL or 0): 0, or -EINVAL
 * (reported, naming w->src) for a chunk size the format does not allow. */
int w_opts(struct w *w, const struct pk_write_opts *o);
/* The mask of a chunk of len bytes' 4 KiB blocks. */
static inline uint16_t block_mask(uint32_t len)
{
	uint32_t blocks = (len + PK_BLOCK - 1) / PK_BLOCK;
	return blocks >= 16 ? 0xffff : (uint16_t)((1u << blocks) - 1);
}
void w_free(struct w *w);

#endif
