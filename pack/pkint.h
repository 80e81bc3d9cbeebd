/* pkint: what the parts of the packed-layer library share. */
#ifndef STRATA_PKINT_H
#define STRATA_PKINT_H

#include "io.h"
#include "packed.h"

/* An open packed layer (pkread.c). */
struct pk_layer {
	char *path;
	const unsigned char *map;
	size_t size;
	const struct pk_super *sb;
	uint32_t chunk;                /* the layer's chunk size (a power of two) */
	const struct pk_inode *inodes;
	const struct pk_entry *entries;
	const struct pk_xattr *xattrs;
	const struct pk_extent *extents;
	const struct pk_chunk *chunks;
	const struct pk_loc *locs;     /* NULL: loose objects */
	const char *strings, *data;
	uint64_t n_inodes, n_entries, n_xattrs, n_extents, n_chunks, n_strings, n_data;
	struct pk_store *store;
	uint64_t sdev, sino;
	struct pk_cache *cache;
	bool own_cache;
	struct pk_progs *progs;        /* programs kept decompressed (pkprog.c), or NULL */
};

/* The inode of regular file ino and its extents (none for an inline file):
 * 0, or -errno (a damaged record reported). */
int pk_file_extents(const struct pk_layer *l, uint32_t ino, const struct pk_inode **ip,
		    const struct pk_extent **first, uint64_t *n);
/* The chunk of extent idx of file ino (PK_HOLE for none), checked against
 * the file: 0, or -EIO (reported). */
int pk_extent_chunk(const struct pk_layer *l, uint32_t ino, const struct pk_inode *i,
		    const struct pk_extent *e, uint64_t idx, uint32_t *c);
/* pk_close's part for pkprog.c. */
void pk_progs_free(struct pk_progs *p);

/* Chunk c pinned in the cache, loaded from store s (identified by dev/ino
 * of its directory) on a miss: 0 with *e, whose bytes (c->ulen)
 * pk_cache_data gives until pk_cache_unpin; -EIO for a damaged object,
 * -ENOENT for a missing one. Unpinning with the range [off, off + len) read
 * of it lets a read that reached its end drop it behind. */
struct pk_cent;
int pk_cache_pin(struct pk_cache *cache, struct pk_store *s, uint64_t sdev, uint64_t sino,
		 const struct pk_chunk *c, const struct pk_loc *loc, struct pk_cent **e);
const void *pk_cache_data(const struct pk_cent *e);
void pk_cache_unpin(struct pk_cache *cache, struct pk_cent *e, uint32_t off, uint32_t len);

/* Start loading chunk c into the cache on a loader thread, unless it is
 * there or on its way (a reader of it then waits for that load). A hint:
 * dropped when too many loads are queued; a failed load is left for the
 * reader to meet and report. */
int pk_cache_prefetch(struct pk_cache *cache, struct pk_store *s, uint64_t sdev, uint64_t sino,
		      const struct pk_chunk *c, const struct pk_loc *loc);
/* Cancel the queued loads from store s and wait for those running: before
 * s is closed. */
void pk_cache_forget(struct pk_cache *cache, struct pk_store *s);

/* The largest stored object: LZ4_COMPRESSBOUND(PK_CHUNK_MAX). */
#define PK_STORED_MAX (PK_CHUNK_MAX + PK_CHUNK_MAX / 255 + 16)
/* pk_store_get with comp, a buffer of PK_STORED_MAX bytes the compressed
 * bytes are read into (NULL: one of its own). */
int pk_store_get_with(struct pk_store *s, const struct pk_chunk *c, const struct pk_loc *loc, void *buf,
		      void *comp);
/* Ask the kernel to read [off, off + len) of pack id ahead (a sequential
 * reader's next chunks): a hint, failures ignored. */
void pk_store_willneed(struct pk_store *s, uint64_t id, uint64_t off, uint64_t len);
/* Write the index of pack with records e (sorted here) into place, via a
 * temporary file, fsync and rename, and fsync packs/: 0 or -errno (not
 * reported). */
int pk_write_index(int dirfd, uint64_t pack, struct pk_idx_ent *e, size_t n);
/* The id of a name "<16 hex digits>.<ext>", or 0. */
uint64_t pk_pack_id(const char *name, const char *ext);
/* Whether this store writes loose objects (PK_LOOSE_ENV). */
bool pk_store_loose(const struct pk_store *s);
/* "packs/<16 hex digits>.<ext>" */
void pk_pack_name(uint64_t id, const char *ext, char buf[40]);
/* The environment variable that has writers store loose objects and write
 * layers without PK_INCOMPAT_PACKS, as strata did before packs: for the
 * tests of old stores only. */
#define PK_LOOSE_ENV "STRATA_TEST_LOOSE_OBJECTS"

/* The collector's exclusive lock if no writer holds the store: 0, or
 * -EWOULDBLOCK (not reported). */
int pk_store_trylock_ex(struct pk_store *s);

/* The store's directory fd. */
int pk_store_dirfd(const struct pk_store *s);

/* Room for need elements of sz bytes in the array *arr (a pointer to any
 * element type) holds, *cap of them, its capacity doubled from first as
 * needed: 0, or -ENOMEM with the array as it was. */
int pk_grow(void *arr, size_t *cap, size_t need, size_t sz, size_t first);

#endif
