/* packed: packed layers (docs/packed-format.md).
 *
 * A packed layer is one immutable metadata file, mapped and read in place,
 * whose regular files point at 64 KiB chunks in a content-addressed chunk
 * store shared by many layers. This library writes them (pk_write), reads
 * them (pk_open and the pk_* queries, the API strata-fs uses), turns them
 * back into directories (pk_unpack) and frees unreferenced chunks (pk_gc).
 *
 * Every function returns 0 (or a count) on success and -errno on failure,
 * having reported the failure once with serr() where it knows the path.
 * The reader treats a layer file as hostile: every index is checked before
 * use, and a damaged file or chunk gives -EIO, never wrong data.
 */
#ifndef STRATA_PACKED_H
#define STRATA_PACKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "pkformat.h"

/* ---------------------------------------------------------------- chunks */

/* The XXH3-128 key of a chunk's uncompressed bytes, canonical byte order. */
void pk_key(const void *data, size_t len, uint8_t key[16]);

struct pk_store;

/* Open the chunk store at path (create it when asked). Writers hold a shared
 * lock on it from the first chunk until their metadata file is in place; the
 * collector holds it exclusively, so it never sees half a layer. */
int pk_store_open(const char *path, bool create, struct pk_store **out);
void pk_store_close(struct pk_store *s);
int pk_store_lock(struct pk_store *s, bool exclusive);

/* Store len bytes under key. A chunk already stored under the key is
 * reused only when its bytes equal data; a different chunk with the same
 * key (XXH3 is no cryptographic hash) gets the next suffix. Fills *out (key,
 * sizes, form, suffix) and *loc (where it is: its pack and offset). The key
 * is a parameter so a test can forge one. New chunks are appended to this
 * writer's own pack file and reach the disk, with the pack's index, at the
 * next pk_store_sync(). */
int pk_store_put(struct pk_store *s, const uint8_t key[16], const void *data, uint32_t len,
		 struct pk_chunk *out, struct pk_loc *loc);
/* Make every chunk written so far durable and indexed (before a layer
 * names them). */
int pk_store_sync(struct pk_store *s);
/* Read a chunk into buf (c->ulen bytes), checked against its key: -EIO when
 * damaged (or out of its pack's bounds), -ENOENT when missing. loc: where it
 * is, or NULL (or pack 0) for a loose object. Reports nothing. */
int pk_store_get(struct pk_store *s, const struct pk_chunk *c, const struct pk_loc *loc, void *buf);
/* "ab/cdef...[-N].lz4": a loose object's path inside the store. */
void pk_object_name(const struct pk_chunk *c, char buf[64]);
/* "packs/0123456789abcdef.pack@OFF": a packed chunk, for messages. */
void pk_loc_name(const struct pk_loc *loc, char buf[64]);
const char *pk_store_path(const struct pk_store *s);

struct pk_store_stats {
	uint64_t puts, reused, created, stored_bytes, collisions;
};
void pk_store_stats(const struct pk_store *s, struct pk_store_stats *st);

/* ---------------------------------------------------------------- cache */

/* Decompressed chunks, bounded by max_bytes, shared by every layer opened
 * with it and safe to use from many threads. A chunk read up to its end
 * leaves the cache at once (drop-behind: the reader has what it wanted),
 * unless another reader holds it. */
struct pk_cache;
struct pk_cache *pk_cache_new(size_t max_bytes);
void pk_cache_free(struct pk_cache *c);
struct pk_cache_stats {
	uint64_t hits, misses, bytes, entries;
	uint64_t dropped;    /* chunks dropped behind a reader */
};
void pk_cache_stats(struct pk_cache *c, struct pk_cache_stats *st);

/* ---------------------------------------------------------------- writer */

struct pk_write_opts {
	const char *chunks;      /* chunk store; NULL: "chunks" beside dest */
	uint32_t inline_max;     /* 0: PK_INLINE_DEFAULT */
	int threads;             /* compressing threads; 0: one per CPU */
	uint32_t chunk_size;     /* 0: PK_CHUNK_DEFAULT; else a power of two
	                            from PK_CHUNK_MIN to PK_CHUNK_MAX */
};
#define PK_INLINE_DEFAULT 512u

struct pk_write_stats {
	uint64_t inodes, files, dirs, bytes_in, inline_bytes;
	uint64_t chunks, holes;          /* extents of the layer */
	uint64_t chunks_new, stored_new; /* objects this pack added, and bytes */
	uint64_t meta_size;
};

/* Pack the directory src (either whiteout encoding) into the metadata file
 * dest. src is walked from its own fd without following symlinks. */
int pk_write(const char *src, const char *dest, const struct pk_write_opts *o,
	     struct pk_write_stats *st);

/* A packed layer from entries fed one at a time, in archive order (what an
 * import reads from a tar), with no tree on disk: pk_build_new, then per
 * entry pk_build_add (and pk_build_data for a regular file's bytes, before
 * the next entry), pk_build_link, pk_build_xattr, then pk_build_finish,
 * which writes dest as pk_write does, and pk_build_free. Paths are cleaned
 * and relative ("" is the root); a later entry replaces an earlier one of
 * the same path (a directory stays a directory and takes the later
 * attributes); missing parents are made with the attributes given to
 * pk_build_new; symlinks among the parents are followed while they stay
 * inside the layer (-EXDEV for one that leads out, -ELOOP).
 * pk_build_add/link/remove/lookup/xattr report nothing (the caller names the
 * member); pk_build_data and pk_build_finish report their failures. The
 * chunk store's writer lock is held from pk_build_new to pk_build_free. */
struct pk_build;
struct pk_bnode;
struct pk_build_attr {
	uint32_t mode;           /* with the type bits */
	uint32_t uid, gid;
	uint64_t rdev;           /* char/block devices (Linux encoding) */
	uint64_t size;           /* regular files */
	struct timespec mtime, atime;
};
int pk_build_new(const char *dest, const struct pk_write_opts *o, const struct pk_build_attr *dirs,
		 struct pk_build **out);
/* symlink: the target of a symlink (mode S_IFLNK). A regular file's bytes
 * follow with pk_build_data; blocks never written are holes. */
int pk_build_add(struct pk_build *b, const char *path, const struct pk_build_attr *a, const char *symlink,
		 struct pk_bnode **out);
/* Bytes at off of the regular file added last; offsets only grow (-EINVAL
 * for data out of order or past the file's size). */
int pk_build_data(struct pk_build *b, uint64_t off, const void *buf, size_t len);
/* path as another name of the non-directory at target: -ENOENT when there
 * is none. */
int pk_build_link(struct pk_build *b, const char *path, const char *target);
int pk_build_remove(struct pk_build *b, const char *path);
/* 1 when path names an entry, 0, -errno. */
int pk_build_lookup(struct pk_build *b, const char *path);
int pk_build_xattr(struct pk_build *b, struct pk_bnode *n, const char *name, const void *val, size_t len);
int pk_build_finish(struct pk_build *b, struct pk_write_stats *st);
/* Whether the failure just returned was the data's (storing a chunk:
 * reported already), not the entry's. */
bool pk_build_failed(const struct pk_build *b);
void pk_build_free(struct pk_build *b);

/* ---------------------------------------------------------------- reader */

struct pk_layer;

/* Map and check the metadata file at path: superblock, version, features and
 * the checksum of every section (refused with a message naming the file when
 * truncated or corrupt). chunks: the chunk store, or NULL for the one the
 * file records (relative to its directory). cache: shared cache, or NULL for
 * a small private one. */
int pk_open(const char *path, const char *chunks, struct pk_cache *cache, struct pk_layer **out);
void pk_close(struct pk_layer *l);
const char *pk_layer_path(const struct pk_layer *l);
const struct pk_super *pk_super(const struct pk_layer *l);
/* The layer's chunk size: its files are cut at multiples of it. */
uint32_t pk_chunk_size(const struct pk_layer *l);
uint32_t pk_root(const struct pk_layer *l);

struct pk_attr {
	uint32_t ino, mode, uid, gid, nlink;
	uint64_t size;       /* reg: bytes, lnk: target length, dir: entries */
	dev_t rdev;
	struct timespec mtime, atime;
	uint32_t flags;      /* PK_INO_* */
};
int pk_getattr(const struct pk_layer *l, uint32_t ino, struct pk_attr *a);

struct pk_dirent {
	const char *name;    /* not NUL-terminated: name_len bytes */
	uint16_t name_len;
	uint8_t kind;        /* enum pk_kind */
	uint8_t flags;       /* PK_ENTF_* */
	uint32_t ino;
};

enum pk_found { PK_ABSENT = 0, PK_FOUND = 1, PK_WHITEOUT = 2 };
/* Binary search of directory dir: PK_FOUND (e filled), PK_WHITEOUT (NAME is
 * deleted in this layer: the layers below must not show it), PK_ABSENT, or
 * -errno. Hidden entries (".wh..wh.*" names) read as absent. */
int pk_lookup(const struct pk_layer *l, uint32_t dir, const char *name, size_t len,
	      struct pk_dirent *e);
/* 1 when directory dir hides the layers below it, 0, or -errno. */
int pk_is_opaque(const struct pk_layer *l, uint32_t dir);
/* The entry at index off of directory dir (offsets are stable: the index):
 * 1 with e filled, 0 past the end, -errno. Every kind is returned; a
 * directory listing skips whiteouts and hidden entries. */
int pk_readdir(const struct pk_layer *l, uint32_t dir, uint64_t off, struct pk_dirent *e);
/* The target of symlink ino, in place (not NUL-terminated). */
int pk_readlink(const struct pk_layer *l, uint32_t ino, const char **target, size_t *len);
/* listxattr/getxattr semantics: size 0 asks for the size needed; -ERANGE
 * when buf is too small, -ENODATA when name is absent. */
ssize_t pk_listxattr(const struct pk_layer *l, uint32_t ino, char *buf, size_t size);
ssize_t pk_getxattr(const struct pk_layer *l, uint32_t ino, const char *name, void *buf, size_t size);
/* The i-th xattr of ino, in place: 1, 0 past the end, -errno. */
int pk_xattr_at(const struct pk_layer *l, uint32_t ino, uint32_t i, const char **name,
		size_t *name_len, const void **value, size_t *value_len);
/* Read up to len bytes of regular file ino at off: bytes read (short only
 * at the end of the file) or -errno (-EIO for a damaged chunk, logged with
 * the layer file, the chunk and the file's path). */
ssize_t pk_read(struct pk_layer *l, uint32_t ino, uint64_t off, size_t len, void *buf);
/* The same read without a copy: [off, off + len) of file ino as up to max
 * (> 0) pieces in place (a cached chunk's bytes, pinned; inline data;
 * zeros for a hole), in order, each valid until pk_read_done. Bytes, short
 * at the end of the file or where max pieces end (len / pk_chunk_size(l) + 2
 * always suffice), with *np pieces; or -errno as pk_read, nothing left
 * pinned. */
struct pk_cent;
struct pk_piece {
	const void *data;
	size_t len;
	struct pk_cent *pin;     /* the cache entry held, or NULL */
	uint32_t pin_off;        /* where data starts in it */
};
ssize_t pk_read_pieces(struct pk_layer *l, uint32_t ino, uint64_t off, size_t len, struct pk_piece *p,
		       size_t max, size_t *np);
void pk_read_done(struct pk_layer *l, struct pk_piece *p, size_t np);
/* Start decompressing the chunks covering [off, off + len) of file ino
 * into the cache, on the cache's loader threads, and return: read-ahead for
 * a sequential reader, whose pk_read of a chunk still loading waits for
 * that load. 0, or -errno for a bad inode or extent (logged); a damaged
 * chunk is left for pk_read to meet and log. */
int pk_prefetch(struct pk_layer *l, uint32_t ino, uint64_t off, uint64_t len);
/* Which 4 KiB blocks of chunk index idx of file ino were holes in the
 * source (bit i: block i); all of them for an extent with no chunk. */
int pk_holes(const struct pk_layer *l, uint32_t ino, uint64_t idx, uint16_t *holes, bool *no_chunk);
/* A path of ino inside the layer ("/a/b"), for messages. */
void pk_path_of(const struct pk_layer *l, uint32_t ino, char *buf, size_t size);
/* The chunks this layer uses, and where each is: NULL for a layer of loose
 * objects (without PK_INCOMPAT_PACKS). */
uint32_t pk_chunk_count(const struct pk_layer *l);
const struct pk_chunk *pk_chunk_at(const struct pk_layer *l, uint32_t i);
const struct pk_loc *pk_loc_at(const struct pk_layer *l, uint32_t i);

/* Programs and libraries (ELF files) of layer l kept decompressed in dir
 * (made when first needed; a directory that cannot be made turns this
 * off), one file per inode, shared by every process that enables it with
 * the same dir: pkprog.c. 0 or -ENOMEM. */
int pk_progs_enable(struct pk_layer *l, const char *dir);
/* A new read-only descriptor of file ino's bytes when ino is a program or
 * library of a layer with pk_progs_enable: its copy in dir, checked
 * against the layer's chunk keys the first time this process uses it, and
 * made (or made again, if damaged) from the chunk store when missing.
 * -ENOENT (or another -errno) otherwise: read the file packed. */
int pk_prog_fd(struct pk_layer *l, uint32_t ino);
struct pk_progs_stats {
	uint64_t made;       /* copies this process made */
	uint64_t checked;    /* copies found and checked */
	uint64_t damaged;    /* copies found damaged (then made again) */
};
void pk_progs_stats(struct pk_layer *l, struct pk_progs_stats *st);

/* ---------------------------------------------------------------- tools */

/* Recreate the layer's tree in dir (created, or an empty directory), in the
 * source's encoding: whiteouts, opaque markers, owners, modes, times,
 * xattrs, hard links and holes. */
int pk_unpack(struct pk_layer *l, const char *dir);

struct pk_gc_stats {
	uint64_t live_layers, kept, removed, removed_bytes, tmp_removed;
	uint64_t packs_removed;     /* packs with no live chunk, or no index */
	uint64_t packs_punched;     /* packs some dead chunk was punched out of */
};
/* Free every chunk of the store at chunks that none of the live layer files
 * uses: loose objects are removed; a pack loses the dead chunks from its
 * index, then their bytes (punched holes: live chunks never move), or goes
 * whole when nothing in it lives, as does a pack without an index (a dead
 * writer's). Temporary files of dead writers go too. Marks first, then
 * frees, under the store's exclusive lock: a GC killed at any point has
 * freed only unreferenced chunks. A live layer that cannot be read stops
 * the GC before anything is removed. */
int pk_gc(const char *chunks, char *const *live, int n_live, struct pk_gc_stats *st);
/* pk_gc, or (nowait) -EWOULDBLOCK at once, reporting nothing, while a
 * writer holds the store: an import holds it while it reads its input,
 * which may be slow, and a store command must not wait for that. */
int pk_gc_nowait(const char *chunks, char *const *live, int n_live, bool nowait, struct pk_gc_stats *st);

#endif
