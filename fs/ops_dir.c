/* ops_dir.c: listing directories. strata-fs keeps no state per open
 * directory: OPENDIR is declined (ENOSYS), so the kernel stops sending
 * OPENDIR and RELEASEDIR (two round trips per directory less for find or
 * ls -R) and caches listings by itself. Each READDIR is served from the
 * node's merged listing, whose offsets stay valid across changes
 * (dir_listing); readdirplus looks each entry up so `ls -l` costs one
 * round trip, unless the client is seen not to use what it gets (lean
 * listings, below). */
#include "fs.h"

#include <string.h>
#include <unistd.h>

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* the kernel then opens directories with keep_cache and cache_readdir */
	fuse_reply_err(req, ENOSYS);
}

/* Lean listings. The kernel asks for a directory's first entries with
 * attributes whatever the client will do with them, and a lookup of an
 * entry is most of what a cold directory costs: the lower filesystem
 * reads in every inode. `find -type f` needs names and types only (as on
 * kernel overlayfs, which then reads no inode), `ls -l` needs it all. So
 * the answer follows what clients did with the lean ones before:
 * non-directories of an all-lower directory go without attributes
 * (nodeid 0, which the kernel takes as "look it up when needed"), and
 * while most of those get looked up afterwards (counted over the last
 * WINDOW of them, however late the lookups come: `find -exec stat {} +`),
 * directories come with attributes; one in PROBE_EVERY of them still goes
 * lean, to see whether that changed. Directories always come with
 * attributes (a walk descends into them). Only a choice of speed: a lean
 * entry is as correct as a full one. */
#define WINDOW 32
#define PROBE_EVERY 16
/* (the counts: fs->lean) */

void readdir_note_lookup(struct sfs *fs, struct node *dir)
{
	if (__atomic_load_n(&dir->lean_listed, __ATOMIC_RELAXED))
		__atomic_add_fetch(&fs->lean.used, 1, __ATOMIC_RELAXED);
}

bool readdir_lean_now(struct sfs *fs)
{
	return !__atomic_load_n(&fs->lean.full, __ATOMIC_RELAXED);
}

/* Answer this part of a listing of dir lean? Decided at the start of a
 * pass (first), kept for its later parts while dir stays all-lower. */
static bool choose_lean(struct sfs *fs, struct node *dir, bool first)
{
	bool lower = true;
	dl_rdlock(fs, dir);
	for (unsigned i = 0; i < dir->ndl; i++)
		if (is_upper(fs, dir->dl[i].layer))
			lower = false;  /* upper entries may show another inode number once looked up */
	pthread_rwlock_unlock(dir->dl_lock);
	if (!first)
		return lower && __atomic_load_n(&dir->lean_listed, __ATOMIC_RELAXED);
	pthread_mutex_lock(&fs->lean.lock);
	unsigned lean = __atomic_load_n(&fs->lean.lean, __ATOMIC_RELAXED);
	if (lean >= WINDOW) {
		unsigned used = __atomic_exchange_n(&fs->lean.used, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&fs->lean.full, used * 2 >= lean, __ATOMIC_RELAXED);
		__atomic_store_n(&fs->lean.lean, 0, __ATOMIC_RELAXED);
	}
	bool go = lower && (!fs->lean.full || ++fs->lean.since_probe % PROBE_EVERY == 0);
	pthread_mutex_unlock(&fs->lean.lock);
	__atomic_store_n(&dir->lean_listed, go, __ATOMIC_RELAXED);
	return go;
}

static uint64_t parent_ino(struct sfs *fs, struct node *n)
{
	pthread_mutex_lock(&fs->table_lock);
	uint64_t ino = n->parent ? n->parent->ino : n->ino;
	pthread_mutex_unlock(&fs->table_lock);
	return ino;
}

static void do_readdir(struct sfs *fs, fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	struct node *dir = node_get(fs, ino);
	struct dircache *dc;
	char *buf;
	size_t used = 0;
	bool lean = plus && choose_lean(fs, dir, off == 0);
	unsigned nlean = 0;

	/* From the start, the kernel may cache this pass: every later change
	 * through us drops its copy (node_dir_changed). */
	if (off == 0) {
		pthread_mutex_lock(&fs->table_lock);
		dir->kcached = true;
		pthread_mutex_unlock(&fs->table_lock);
	}
	int r = dir_listing_ahead(fs, dir, &dc, off == 0 ? wa_listing(fs, dir) : WA_OFF);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	if (!(buf = malloc(size))) {
		dircache_put(dc);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* offsets: 0 = start, 1 = after ".", 2 = after "..", else a cookie */
	for (int k = (int)(off < 2 ? off : 2); k < 2; k++) {
		struct stat st = { .st_mode = S_IFDIR };
		const char *name = k == 0 ? "." : "..";
		size_t need;
		st.st_ino = k == 0 ? dir->ino : parent_ino(fs, dir);
		if (plus) {
			struct fuse_entry_param e = { .attr = st };
			need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, k + 1);
		} else {
			need = fuse_add_direntry(req, buf + used, size - used, name, &st, k + 1);
		}
		if (need > size - used)
			goto out;
		used += need;
	}
	for (size_t i = off <= 2 ? 0 : dir_seek(dc, (uint64_t)off); i < dc->n; i++) {
		struct dentry_rec *d = &dc->ents[i];
		const char *name = d->name;
		struct stat st = { 0 };
		size_t need;

		if (!plus) {
			st.st_ino = d->ino;
			st.st_mode = d->type;
			need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)d->cookie);
			if (need > size - used)
				break;
			used += need;
			continue;
		}
		/* readdirplus: room first, then the lookup that takes a reference */
		need = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);
		if (need > size - used)
			break;
		struct lookup_res res;
		struct fuse_entry_param e;
		/* Entries that go without attributes (nodeid 0: "no entry
		 * data"): those of a lean listing, and those the kernel already
		 * holds a node for (no lookup here, and the kernel keeps what it
		 * cached, ACLs included). */
		uint64_t bare_ino = 0;
		mode_t bare_type = 0;
		if (lean && d->type && !S_ISDIR(d->type)) {
			bare_ino = d->ino;
			bare_type = d->type;
			nlean++;
		} else {
			pthread_mutex_lock(&fs->table_lock);
			struct node *known = node_child_find(fs, dir, name);
			if (known && known->nlookup) {
				bare_ino = known->ino;
				bare_type = known->type;
			}
			pthread_mutex_unlock(&fs->table_lock);
		}
		if (bare_type) {
			memset(&e, 0, sizeof e);
			e.attr.st_ino = bare_ino;
			e.attr.st_mode = bare_type;
			used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						       (off_t)d->cookie);
			continue;
		}
		int lr = lookup_name(fs, dir, name, &res);
		if (lr == -ENOENT)
			continue;  /* gone since the listing was taken */
		if (lr < 0) {
			/* listed all the same, without attributes, as kernel
			 * overlayfs lists it: its lookup answers the error (a
			 * redirect not to follow, a malformed one, EMFILE) */
			memset(&e, 0, sizeof e);
			e.attr.st_ino = d->ino;
			e.attr.st_mode = d->type;
			used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
						       (off_t)d->cookie);
			continue;
		}
		struct stat cst = res.st;
		struct node *c = node_from_lookup(fs, dir, name, &res);
		if (!c)
			continue;
		if (fill_entry_st(fs, c, &cst, &e) < 0) {
			node_forget(fs, c, 1);
			continue;
		}
		used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)d->cookie);
	}
out:
	if (nlean)
		__atomic_add_fetch(&fs->lean.lean, nlean, __ATOMIC_RELAXED);
	fuse_reply_buf(req, buf, used);
	free(buf);
	/* An empty answer past the start ends the pass: the kernel holds the
	 * listing now, and a second copy here would only cost memory (it is
	 * rebuilt from the layers if asked for again). */
	if (used == 0 && off > 2)
		node_drop_listing(fs, dir, dc);
	dircache_put(dc);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	do_readdir(fs, req, ino, size, off, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	do_readdir(fs, req, ino, size, off, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct sfs *fs = fuse_req_userdata(req);
	struct node *n = node_get(fs, ino);
	int r = 0;

	if (!fs->opts.is_volatile) {
		int fd = node_upperfd(fs, n);
		if (fd >= 0 && fsync(fd) < 0)
			r = errno;
	}
	fuse_reply_err(req, r);
}
