/* pkformat: the on-disk structures of a packed layer (docs/packed-format.md).
 *
 * Every integer is little-endian and every record naturally aligned, so a
 * reader maps the file and uses the records in place. The structures here are
 * the format: change them only with a new version number.
 */
#ifndef STRATA_PKFORMAT_H
#define STRATA_PKFORMAT_H

#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "packed layers are read in place: this code assumes a little-endian host"
#endif

#define PK_MAGIC          "STRATAPK"
#define PK_VERSION        1
#define PK_CHUNK_MIN      4096u             /* chunk sizes: powers of two */
#define PK_CHUNK_MAX      65536u            /*   in [MIN, MAX] (holes: u16) */
#define PK_CHUNK_DEFAULT  32768u            /* what a new layer uses */
#define PK_BLOCK          4096u              /* hole granularity */
#define PK_ROOT_INO       1u
#define PK_HOLE           0xffffffffu        /* extent without a chunk */
#define PK_MAX_NAME       255u
#define PK_MAX_SUFFIX     64u                /* objects sharing one key */

/* Is n a chunk size the format allows? */
static inline int pk_chunk_size_ok(uint64_t n)
{
	return n >= PK_CHUNK_MIN && n <= PK_CHUNK_MAX && !(n & (n - 1));
}

/* Sections, in file order. */
enum pk_sec {
	PK_SEC_INODES,    /* struct pk_inode[inode_count], index = inode number */
	PK_SEC_ENTRIES,   /* struct pk_entry, each directory's run sorted by name */
	PK_SEC_XATTRS,    /* struct pk_xattr, each inode's run sorted by name */
	PK_SEC_EXTENTS,   /* struct pk_extent, one per chunk_size of a chunked file */
	PK_SEC_CHUNKS,    /* struct pk_chunk, each object this layer uses once */
	PK_SEC_STRINGS,   /* names, symlink targets, xattr names and values */
	PK_SEC_DATA,      /* contents of inline files */
	PK_SEC_LOCS,      /* struct pk_loc, parallel to CHUNKS (PK_INCOMPAT_PACKS) */
	PK_SEC_COUNT,
};
#define PK_SEC_SLOTS 8

struct pk_section {
	uint64_t off, size;     /* bytes, from the start of the file */
	uint64_t xxh3;          /* XXH3-64 of those bytes */
	uint32_t count;         /* records */
	uint32_t rec_size;      /* bytes per record (1 for byte sections) */
};

/* Feature bits: a reader refuses a file with an incompat bit it does not
 * know; compat bits it may ignore. */
/* The layer's chunks are in pack files, located by the LOCS section; a
 * layer without it names loose objects (CHUNKS/ab/<hex>[-N].{lz4,raw}) and
 * has no LOCS section (its slot is all zero). */
#define PK_INCOMPAT_PACKS 0x1ull
#define PK_INCOMPAT_KNOWN PK_INCOMPAT_PACKS

struct pk_super {
	char magic[8];              /* PK_MAGIC, no NUL */
	uint32_t version;           /* PK_VERSION */
	uint32_t super_size;        /* sizeof(struct pk_super) */
	uint64_t incompat, compat;
	uint64_t file_size;         /* the whole file: a shorter one is truncated */
	uint32_t chunk_size;        /* the layer's, PK_CHUNK_MIN..MAX */
	uint32_t inline_max;        /* files up to this size are inline */
	uint32_t root_ino;          /* PK_ROOT_INO */
	uint32_t inode_count;       /* records in INODES, including unused 0 */
	uint32_t chunks_off;        /* STRINGS: the chunk store, relative to */
	uint32_t chunks_len;        /*   this file's directory unless absolute */
	uint64_t reserved[4];
	struct pk_section sec[PK_SEC_SLOTS];
	uint64_t super_xxh3;        /* XXH3-64 of this struct with this field 0 */
};

/* Inode flags. */
#define PK_INO_INLINE       0x01u   /* reg: contents in DATA at data */
#define PK_INO_OPQ_TRUSTED  0x02u   /* dir: trusted.overlay.opaque=y */
#define PK_INO_OPQ_USER     0x04u   /* dir: user.overlay.opaque=y */
#define PK_INO_OPQ_FUSE     0x08u   /* dir: user.fuseoverlayfs.opaque=y */
#define PK_INO_OPQ_MARKER   0x10u   /* dir: holds a ".wh..wh..opq" entry */
#define PK_INO_OPQ_WHBESIDE 0x20u   /* dir: a ".wh.NAME" beside it (OCI: the
                                       lower NAME is deleted, this one added) */
#define PK_INO_OPAQUE       0x3eu

struct pk_inode {
	uint32_t mode;              /* st_mode, type bits included; 0: unused */
	uint32_t uid, gid;
	uint32_t nlink;             /* entries of this layer naming it */
	uint32_t flags;
	uint32_t parent;            /* a directory naming it (0 for the root) */
	uint64_t size;              /* reg: bytes; lnk: target length;
	                               dir: number of entries */
	uint64_t data;              /* reg inline: offset in DATA;
	                               reg: first EXTENTS index;
	                               dir: first ENTRIES index;
	                               lnk: offset in STRINGS; chr/blk: rdev */
	int64_t mtime_sec, atime_sec;
	uint32_t mtime_nsec, atime_nsec;
	uint32_t xattr_first, xattr_count;
};

/* Entry kinds. */
enum pk_kind {
	PK_ENT_NORMAL = 0,     /* visible */
	PK_ENT_WHITEOUT = 1,   /* hides NAME in the layers below */
	PK_ENT_HIDDEN = 2,     /* kept for unpack only: ".wh..wh.*" names, and a
	                          ".wh.NAME" beside a real NAME */
};
/* Entry flags: the encoding a whiteout had in the source. */
#define PK_ENTF_WH_CHARDEV 0x01u   /* char device 0/0 named NAME */
#define PK_ENTF_WH_OCI     0x02u   /* a file named ".wh.NAME" */

struct pk_entry {
	uint32_t name_off;          /* STRINGS */
	uint16_t name_len;
	uint8_t kind;
	uint8_t flags;
	uint32_t ino;
	uint32_t reserved;
};

struct pk_xattr {
	uint32_t name_off;          /* STRINGS */
	uint32_t value_off;         /* STRINGS */
	uint16_t name_len;
	uint16_t reserved;
	uint32_t value_len;
};

struct pk_extent {
	uint32_t chunk;             /* CHUNKS index, or PK_HOLE */
	uint16_t holes;             /* bit i: 4 KiB block i was a hole */
	uint16_t reserved;
};

#define PK_FORM_RAW 0
#define PK_FORM_LZ4 1

struct pk_chunk {
	uint8_t key[16];            /* XXH3-128 of the uncompressed bytes, canonical */
	uint32_t ulen;              /* uncompressed bytes (<= chunk_size) */
	uint32_t slen;              /* stored bytes */
	uint16_t form;              /* PK_FORM_* */
	uint16_t suffix;            /* 0, or n: object "KEY-n" (a forged key) */
	uint32_t reserved;
};

/* Where a chunk of a PK_INCOMPAT_PACKS layer is: slen bytes (its CHUNKS
 * record) at off of the pack file CHUNKS/packs/<pack as 16 hex digits>.pack.
 * pack 0 names no pack. */
struct pk_loc {
	uint64_t pack;
	uint64_t off;
};

/* A pack file: this header, then chunks back to back, unaligned. A writer
 * appends to its own pack only; nothing in a pack moves once written (the
 * collector punches holes where dead chunks were). */
#define PK_PACK_MAGIC   "STRATAPF"
#define PK_PACK_VERSION 1
struct pk_pack_head {
	char magic[8];              /* PK_PACK_MAGIC */
	uint32_t version;           /* PK_PACK_VERSION */
	uint32_t head_size;         /* sizeof(struct pk_pack_head) */
	uint64_t pack;              /* its id, as in its name */
	uint64_t reserved;
};

/* A pack's index, CHUNKS/packs/<id>.idx: this header, then count records
 * sorted by (key, suffix, off). Written once its pack is durable, so a pack
 * without an index is a dead writer's. Only for dedup and the collector: a
 * reader never needs it. */
#define PK_IDX_MAGIC   "STRATAPI"
#define PK_IDX_VERSION 1
struct pk_idx_head {
	char magic[8];              /* PK_IDX_MAGIC */
	uint32_t version;           /* PK_IDX_VERSION */
	uint32_t rec_size;          /* sizeof(struct pk_idx_ent) */
	uint64_t pack;              /* the pack it indexes */
	uint64_t count;             /* records */
	uint64_t xxh3;              /* XXH3-64 of header (this field 0) and records */
};
struct pk_idx_ent {
	uint8_t key[16];
	uint64_t off;
	uint32_t slen, ulen;
	uint16_t form, suffix;
	uint32_t reserved;
};

_Static_assert(sizeof(struct pk_loc) == 16, "pk_loc");
_Static_assert(sizeof(struct pk_pack_head) == 32, "pk_pack_head");
_Static_assert(sizeof(struct pk_idx_head) == 40, "pk_idx_head");
_Static_assert(sizeof(struct pk_idx_ent) == 40, "pk_idx_ent");
_Static_assert(sizeof(struct pk_section) == 32, "pk_section");
_Static_assert(sizeof(struct pk_super) == 360, "pk_super");
_Static_assert(sizeof(struct pk_inode) == 72, "pk_inode");
_Static_assert(sizeof(struct pk_entry) == 16, "pk_entry");
_Static_assert(sizeof(struct pk_xattr) == 16, "pk_xattr");
_Static_assert(sizeof(struct pk_extent) == 8, "pk_extent");
_Static_assert(sizeof(struct pk_chunk) == 32, "pk_chunk");

#endif
