/* ops_dir.c: directory handles. A handle takes a snapshot of the merged
 * listing at opendir (shared with other handles through the node's cache);
 * readdirplus looks each entry up so `ls -l` costs one round trip. */
#include "fs.h"

#include <string.h>
#include <unistd.h>

struct dh {
	struct dircache *dc;
	struct node *n;
};

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n = node_get(ino);
	struct dh *h = calloc(1, sizeof *h);
	int r;

	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if ((r = dir_listing(n, &h->dc)) < 0) {
		free(h);
		fuse_reply_err(req, -r);
		return;
	}
	h->n = n;
	node_ref(n);
	fi->fh = (uintptr_t)h;
	/* The kernel may keep listings: every change through us drops its
	 * copy (node_dir_changed). */
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) != 0) {
		dircache_put(h->dc);
		node_unref(n);
		free(h);
	}
}

static uint64_t parent_ino(struct node *n)
{
	pthread_mutex_lock(&SFS->table_lock);
	uint64_t ino = n->parent ? n->parent->ino : n->ino;
	pthread_mutex_unlock(&SFS->table_lock);
	return ino;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct dh *h = (struct dh *)(uintptr_t)fi->fh;
	struct dircache *dc;
	char *buf;
	size_t used = 0;

	/* A read from the start takes a fresh listing: the kernel caches what
	 * this pass returns, under the directory version it saw when the pass
	 * began, so the listing must not be older than that. */
	if (off == 0) {
		struct dircache *fresh;
		pthread_mutex_lock(&SFS->table_lock);
		h->n->kcached = true;
		pthread_mutex_unlock(&SFS->table_lock);
		int r = dir_listing(h->n, &fresh);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		struct dircache *old = h->dc;
		h->dc = fresh;
		dircache_put(old);
	}
	dc = h->dc;
	if (!(buf = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* offsets: 0 = start, 1 = after ".", 2 = after "..", 2+i+1 = after entry i */
	for (size_t k = (size_t)off; k < dc->n + 2; k++) {
		struct stat st = { 0 };
		const char *name;
		size_t need;

		if (k < 2) {
			name = k == 0 ? "." : "..";
			st.st_ino = k == 0 ? h->n->ino : parent_ino(h->n);
			st.st_mode = S_IFDIR;
			if (plus) {
				struct fuse_entry_param e = { .attr = st };
				need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)k + 1);
			} else {
				need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)k + 1);
			}
			if (need > size - used)
				break;
			used += need;
			continue;
		}
		struct dentry_rec *d = &dc->ents[k - 2];
		name = d->name;
		if (!plus) {
			st.st_ino = d->ino;
			st.st_mode = d->type;
			need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)k + 1);
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
		/* An entry the kernel already holds a node for goes without
		 * attributes (nodeid 0: "no entry data"): no lookup here, and
		 * the kernel keeps what it cached, ACLs included. */
		pthread_mutex_lock(&SFS->table_lock);
		struct node *known = node_child_find(h->n, name);
		if (known && known->nlookup) {
			memset(&e, 0, sizeof e);
			e.attr.st_ino = known->ino;
			e.attr.st_mode = known->type;
			pthread_mutex_unlock(&SFS->table_lock);
			used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)k + 1);
			continue;
		}
		pthread_mutex_unlock(&SFS->table_lock);
		if (lookup_name(h->n, name, &res) < 0)
			continue;  /* gone since the listing was taken */
		struct stat cst = res.st;
		struct node *c = node_from_lookup(h->n, name, &res);
		if (!c)
			continue;
		if (fill_entry_st(c, &cst, &e) < 0) {
			node_forget(c, 1);
			continue;
		}
		used += fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)k + 1);
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dh *h = (struct dh *)(uintptr_t)fi->fh;
	dircache_put(h->dc);
	node_unref(h->n);
	free(h);
	fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct node *n = node_get(ino);
	int r = 0;

	if (!SFS->opts.is_volatile) {
		int fd = node_upperfd(n);
		if (fd >= 0 && fsync(fd) < 0)
			r = errno;
	}
	fuse_reply_err(req, r);
}
