/* diff, layers: what a container, an image or a layer changed.
 *
 * `diff CONTAINER` reads only the container's upper directory (its cost
 * follows the change, not the image) and asks the image's layers one
 * path at a time whether a name existed before. `diff IMAGE IMAGE` and
 * `layers` build the merged tree of an image layer by layer, applying
 * whiteouts and opaque markers as strata-fs does (fs/whiteout.h). Packed
 * layers are read in place through pk_* (pack/packed.h), their entries
 * named and ordered as in the directory they were packed from, so both
 * formats print the same.
 */
#include "cli.h"

#include "err.h"
#include "fsutil.h"
#include "image.h"
#include "lowerview.h"
#include "packed.h"
#include "store.h"
#include "whiteout.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static bool take_flag(int *argc, char **argv, const char *flag)
{
	bool f = false;
	int o = 0;
	for (int i = 0; i < *argc; i++) {
		if (!strcmp(argv[i], flag))
			f = true;
		else
			argv[o++] = argv[i];
	}
	*argc = o;
	return f;
}

struct changes {
	json_t *list;     /* [{"kind":"A|C|D","path":...}] */
};

static void add_change(struct changes *c, const char *kind, const char *path)
{
	json_array_append_new(c->list, json_pack("{s:s,s:s}", "kind", kind, "path", path));
}

static int cmp_change(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "path")),
		      json_string_value(json_object_get(*(json_t *const *)b, "path")));
}

/* In path order, as docker diff prints (whiteouts sort by their own names). */
static void sort_changes(json_t *list)
{
	size_t n = json_array_size(list);
	json_t **v = calloc(n + 1, sizeof *v);
	if (!v)
		return;
	for (size_t i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(list, i));
	qsort(v, n, sizeof *v, cmp_change);
	json_array_clear(list);
	for (size_t i = 0; i < n; i++)
		json_array_append_new(list, v[i]);
	free(v);
}

static void print_changes(json_t *list, bool js)
{
	if (js) {
		print_json(list);
		return;
	}
	size_t i;
	json_t *v;
	json_array_foreach(list, i, v)
		printf("%s %s\n", json_string_value(json_object_get(v, "kind")),
		       json_string_value(json_object_get(v, "path")));
}

/* Every entry of the merged lower directory src, reported as added under
 * dir: the contents of a renamed directory appear at its new path. */
static void added_from_lower(const struct lowerview *lv, size_t layer, const char *src, const char *dir,
			     char **skip, size_t nskip, struct changes *c)
{
	struct lower_entry *e;
	size_t n;
	if (lower_list(lv, layer, src, &e, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		bool skipped = false;
		for (size_t k = 0; k < nskip && !skipped; k++)
			skipped = !strcmp(skip[k], e[i].name);
		if (skipped)
			continue;
		char path[PATH_MAX], child[PATH_MAX];
		struct stat sb;
		snprintf(path, sizeof path, "%s/%s", dir, e[i].name);
		snprintf(child, sizeof child, "%s%s%s", src, *src ? "/" : "", e[i].name);
		add_change(c, "A", path);
		if (lower_stat(lv, e[i].layer, child, &sb) == 0 && S_ISDIR(sb.st_mode))
			added_from_lower(lv, e[i].layer, child, path, NULL, 0, c);
	}
	lower_list_free(e, n);
}

static bool redirect_of(int fd, char *buf, size_t len)
{
	ssize_t n = fgetxattr(fd, "trusted.overlay.redirect", buf, len - 1);
	if (n < 0)
		n = fgetxattr(fd, "user.overlay.redirect", buf, len - 1);
	if (n <= 1 || buf[0] != '/')
		return false;
	buf[n] = '\0';
	return true;
}

/* One entry of a layer directory: its stat, its kind (whiteout or not) and
 * the path it stands for in the merged view (a whiteout's is the name it
 * hides). -1 for entries to pass over: gone, or opaque/aufs bookkeeping. */
static int layer_entry(int dirfd, const char *dir, const char *name, struct stat *sb,
		       const char **target, char *path, size_t len)
{
	if (fstatat(dirfd, name, sb, AT_SYMLINK_NOFOLLOW) < 0)
		return -1;
	enum wh_kind k = wh_classify(name, sb, target);
	if (k == WH_OPQ || k == WH_RESERVED)
		return -1;
	snprintf(path, len, "%s/%s", dir, k == WH_OCI ? *target : name);
	return (int)k;
}

/* Walk the upper directory dirfd (shown at dir). all_added: the directory
 * is new, so is everything in it. lsrc: inside a renamed directory, the
 * lower path its contents come from. */
static int walk_upper(int dirfd, const char *dir, const struct lowerview *lv, bool all_added,
		      const char *lsrc, struct changes *c)
{
	char **names;
	size_t n;
	int r = list_sorted(dirfd, &names, &n);
	if (r < 0) {
		serr(r, "diff: list", *dir ? dir : "/", "of the container's upper directory");
		return r;
	}
	for (size_t i = 0; i < n && r == 0; i++) {
		char path[PATH_MAX];
		struct stat sb;
		const char *target;
		int k = layer_entry(dirfd, dir, names[i], &sb, &target, path, sizeof path);
		if (k < 0)
			continue;
		if (k == WH_CHARDEV || k == WH_OCI) {
			if (k == WH_OCI)
				memmove(names[i], target, strlen(target) + 1);   /* for the skip list */
			if (!all_added)
				add_change(c, "D", path);
			continue;
		}
		bool existed = !all_added && lower_lookup(lv, 0, path + 1, NULL);
		add_change(c, existed ? "C" : "A", path);
		if (!S_ISDIR(sb.st_mode))
			continue;
		_cleanup_close_ int sub = openat(dirfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0)
			continue;
		char redir[PATH_MAX], src[PATH_MAX];
		const char *child_src = NULL;
		if (redirect_of(sub, redir, sizeof redir)) {
			child_src = redir + 1;
		} else if (lsrc) {
			snprintf(src, sizeof src, "%s%s%s", lsrc, *lsrc ? "/" : "", names[i]);
			child_src = src;
		}
		r = walk_upper(sub, path, lv, !existed, child_src, c);
		if (r == 0 && existed && !child_src && wh_dir_is_opaque(sub, true) > 0) {
			/* An opaque directory hides what the image had in it. */
			struct lower_entry *e;
			size_t m;
			if (lower_list(lv, 0, path + 1, &e, &m) == 0) {
				for (size_t q = 0; q < m; q++) {
					char p2[PATH_MAX + NAME_MAX + 2];
					struct stat us;
					if (fstatat(sub, e[q].name, &us, AT_SYMLINK_NOFOLLOW) == 0)
						continue;
					snprintf(p2, sizeof p2, "%s/%s", path, e[q].name);
					add_change(c, "D", p2);
				}
				lower_list_free(e, m);
			}
		}
	}
	if (r == 0 && lsrc && wh_dir_is_opaque(dirfd, true) <= 0)
		added_from_lower(lv, 0, lsrc, dir, names, n, c);
	free_names(names, n);
	return r;
}

static int diff_container(struct store *s, const char *id, bool js)
{
	json_t *c, *cfg = NULL, *ids;
	struct lowerview lv = { 0 };
	struct changes ch = { json_array() };
	char p[PATH_MAX];
	int ufd = -1;
	int r = container_load(s, id, &c);
	if (r < 0)
		goto out;
	if ((r = store_load_image(s, json_string_value(json_object_get(c, "image")), &cfg, &ids)) < 0 ||
	    (r = lowerview_open_packed(s, ids, &lv)) < 0)
		goto out;
	snprintf(p, sizeof p, "containers/%s/upper", id);
	ufd = openat(s->fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ufd < 0) {
		r = -errno;
		serr(r, "diff: open", p, "the container's writable layer is missing; remove the container");
		goto out;
	}
	if ((r = walk_upper(ufd, "", &lv, false, NULL, &ch)) == 0) {
		sort_changes(ch.list);
		print_changes(ch.list, js);
	}
out:
	if (ufd >= 0)
		close(ufd);
	lowerview_close(&lv);
	json_decref(ch.list);
	json_decref(cfg);
	json_decref(c);
	return r;
}

/* ---- merged trees, for image-to-image diff and layer inspection ---- */

struct node_info {
	mode_t mode;
	uid_t uid;
	gid_t gid;
	long long size;
	long long mtime;
	size_t layer;
};

static json_t *info_json(const struct stat *sb, size_t layer, const char *link)
{
	return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "mode", (json_int_t)sb->st_mode,
			 "uid", (json_int_t)sb->st_uid, "gid", (json_int_t)sb->st_gid,
			 "size", (json_int_t)(S_ISREG(sb->st_mode) ? sb->st_size : 0),
			 "mtime", (json_int_t)sb->st_mtime, "layer", (json_int_t)layer, "link", link);
}

struct tree {
	json_t *map;          /* "/path" -> info */
	long long *wasted;    /* per layer: bytes hidden by later layers */
	json_t *layer_changes;/* per layer: [{"kind","path","size"}] */
	long long *layer_size;
};

static void hide(struct tree *t, const char *path, bool self, bool children)
{
	size_t pl = strlen(path);
	json_t *cur = json_object_get(t->map, path);
	/* Only a directory has children: for a file the map lookup is all. */
	if (cur && !S_ISDIR(json_integer_value(json_object_get(cur, "mode"))) && self) {
		if (t->wasted)
			t->wasted[json_integer_value(json_object_get(cur, "layer"))] +=
				json_integer_value(json_object_get(cur, "size"));
		json_object_del(t->map, path);
		return;
	}
	if (!cur && self && !children)
		return;
	const char *k;
	void *tmp;
	json_t *v;
	json_object_foreach_safe(t->map, tmp, k, v) {
		bool match = (self && !strcmp(k, path)) ||
			     (children && !strncmp(k, path, pl) && (pl == 1 || k[pl] == '/') && strlen(k) > pl);
		if (!match)
			continue;
		if (t->wasted)
			t->wasted[json_integer_value(json_object_get(v, "layer"))] +=
				json_integer_value(json_object_get(v, "size"));
		json_object_del(t->map, k);
	}
}

static void note(struct tree *t, size_t layer, const char *kind, const char *path, long long size, bool dir)
{
	if (t->layer_changes)
		json_array_append_new(json_array_get(t->layer_changes, layer),
				      json_pack("{s:s,s:s,s:I,s:b}", "kind", kind, "path", path,
						"size", (json_int_t)size, "dir", dir));
}

/* A directory of a layer being applied: a directory layer's (fd) or a
 * packed layer's (pk, ino), read the same way. */
struct ldir {
	int fd;
	const struct pk_layer *pk;
	uint32_t ino;
};

/* One entry as a directory layer shows it: the name in that encoding
 * (".wh.NAME" for an OCI whiteout), its stat and its whiteout kind. */
struct lent {
	char *name;
	const char *target;   /* WH_OCI: the hidden name, inside name */
	struct stat sb;
	int kind;             /* enum wh_kind */
	uint32_t ino;         /* packed layers */
};

static int cmp_lent(const void *a, const void *b)
{
	return strcmp(((const struct lent *)a)->name, ((const struct lent *)b)->name);
}

static void lents_free(struct lent *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* The entries of a packed directory, named and ordered as the directory
 * layer the packed one was made from lists them, so that both give the
 * same changes in the same order (whiteouts by their ".wh." names). */
static int list_pk(const struct ldir *d, struct lent **out, size_t *n)
{
	struct pk_attr a;
	int r = pk_getattr(d->pk, d->ino, &a);
	if (r < 0)
		return r;
	size_t cnt = 0, cap = 0;
	struct lent *v = NULL;
	struct pk_dirent e;
	for (uint64_t off = 0; (r = pk_readdir(d->pk, d->ino, off, &e)) > 0; off++) {
		struct pk_attr ea;
		if ((r = pk_getattr(d->pk, e.ino, &ea)) < 0)
			break;
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct lent *nv = realloc(v, nc * sizeof *nv);
			if (!nv) {
				r = -ENOMEM;
				break;
			}
			memset(nv + cap, 0, (nc - cap) * sizeof *nv);
			v = nv;
			cap = nc;
		}
		struct lent *l = &v[cnt];
		bool oci = e.kind == PK_ENT_WHITEOUT && (e.flags & PK_ENTF_WH_OCI);
		if (asprintf(&l->name, "%s%.*s", oci ? WH_PREFIX : "", (int)e.name_len, e.name) < 0) {
			l->name = NULL;
			r = -ENOMEM;
			break;
		}
		cnt++;
		lower_pk_stat(&ea, &l->sb);
		l->ino = e.ino;
		if (e.kind == PK_ENT_NORMAL) {
			l->kind = WH_NONE;
		} else if (e.kind == PK_ENT_WHITEOUT) {
			l->kind = oci ? WH_OCI : WH_CHARDEV;
			l->target = oci ? l->name + WH_PREFIX_LEN : NULL;
		} else {
			l->kind = wh_classify(l->name, &l->sb, &l->target);
			if (l->kind == WH_NONE)
				l->kind = WH_RESERVED;   /* hidden: never a name of the view */
		}
	}
	if (r < 0) {
		lents_free(v, cnt);
		return r;
	}
	if (cnt)
		qsort(v, cnt, sizeof *v, cmp_lent);
	*out = v;
	*n = cnt;
	return 0;
}

static int list_ldir(const struct ldir *d, struct lent **out, size_t *n)
{
	if (d->pk)
		return list_pk(d, out, n);
	char **names;
	size_t k, cnt = 0;
	int r = list_sorted(d->fd, &names, &k);
	if (r < 0)
		return r;
	struct lent *v = calloc(k + 1, sizeof *v);
	if (!v) {
		free_names(names, k);
		return -ENOMEM;
	}
	for (size_t i = 0; i < k; i++) {
		struct lent *l = &v[cnt];
		if (fstatat(d->fd, names[i], &l->sb, AT_SYMLINK_NOFOLLOW) < 0) {
			free(names[i]);
			continue;
		}
		l->name = names[i];
		l->kind = wh_classify(l->name, &l->sb, &l->target);
		cnt++;
	}
	free(names);
	*out = v;
	*n = cnt;
	return 0;
}

/* Opaque in itself (xattr or marker entry), as wh_dir_is_opaque sees a
 * directory; a ".wh.NAME" beside it is an entry of its parent. */
static bool ldir_opaque(const struct ldir *d)
{
	if (!d->pk)
		return wh_dir_is_opaque(d->fd, true) > 0;
	struct pk_attr a;
	return pk_getattr(d->pk, d->ino, &a) == 0 && (a.flags & PK_INO_OPAQUE & ~PK_INO_OPQ_WHBESIDE);
}

static void ldir_readlink(const struct ldir *d, const struct lent *l, char *buf, size_t len)
{
	buf[0] = '\0';
	if (!S_ISLNK(l->sb.st_mode))
		return;
	if (d->pk) {
		const char *t;
		size_t tl;
		if (pk_readlink(d->pk, l->ino, &t, &tl) == 0)
			snprintf(buf, len, "%.*s", (int)(tl < len ? tl : len - 1), t);
		return;
	}
	ssize_t n = readlinkat(d->fd, l->name, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
}

static int apply_dir(struct tree *t, const struct ldir *d, const char *dir, size_t layer)
{
	struct lent *ents;
	size_t n;
	int r = list_ldir(d, &ents, &n);
	if (r < 0)
		return r;
	/* An opaque directory hides what lower layers had in it. */
	if (*dir && ldir_opaque(d))
		hide(t, dir, false, true);
	for (size_t i = 0; i < n && r == 0; i++) {
		const struct lent *l = &ents[i];
		char path[PATH_MAX];
		if (l->kind == WH_OPQ || l->kind == WH_RESERVED)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, l->kind == WH_OCI ? l->target : l->name);
		if (l->kind == WH_CHARDEV || l->kind == WH_OCI) {
			if (json_object_get(t->map, path))
				note(t, layer, "D", path, 0, false);
			hide(t, path, true, true);
			continue;
		}
		const struct stat *sb = &l->sb;
		json_t *old = json_object_get(t->map, path);
		long long size = S_ISREG(sb->st_mode) ? sb->st_size : 0;
		if (t->layer_size)
			t->layer_size[layer] += size;
		if (old) {
			bool both_dirs = S_ISDIR(sb->st_mode) &&
					 S_ISDIR(json_integer_value(json_object_get(old, "mode")));
			/* A directory met again keeps its children; anything
			 * else is replaced, with what was under it. */
			if (!both_dirs)
				hide(t, path, true, true);
			note(t, layer, "C", path, size, S_ISDIR(sb->st_mode));
		} else {
			note(t, layer, "A", path, size, S_ISDIR(sb->st_mode));
		}
		char link[PATH_MAX];
		ldir_readlink(d, l, link, sizeof link);
		json_object_set_new(t->map, path, info_json(sb, layer, link));
		if (!S_ISDIR(sb->st_mode))
			continue;
		if (d->pk) {
			struct ldir sub = { -1, d->pk, l->ino };
			r = apply_dir(t, &sub, path, layer);
		} else {
			_cleanup_close_ int fd = openat(d->fd, l->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			struct ldir sub = { fd, NULL, 0 };
			if (fd >= 0)
				r = apply_dir(t, &sub, path, layer);
		}
	}
	lents_free(ents, n);
	return r;
}

static int build_tree(struct store *s, json_t *ids, struct tree *t)
{
	size_t i;
	json_t *v;
	json_array_foreach(ids, i, v) {
		int fd;
		struct pk_layer *pk;
		int r = lower_layer_open(s, json_string_value(v), &fd, &pk);
		if (r < 0) {
			serr(r, "open layer", json_string_value(v), "the store is damaged; import the image again");
			return r;
		}
		struct ldir d = { fd, pk, pk ? pk_root(pk) : 0 };
		r = apply_dir(t, &d, "", i);
		if (fd >= 0)
			close(fd);
		if (pk)
			pk_close(pk);
		if (r < 0) {
			serr(r, "read layer", json_string_value(v), "the store is damaged; import the image again");
			return r;
		}
	}
	return 0;
}

static bool same_node(json_t *a, json_t *b)
{
	static const char *const keys[] = { "mode", "uid", "gid", "size", "mtime" };
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		if (json_integer_value(json_object_get(a, keys[i])) != json_integer_value(json_object_get(b, keys[i])))
			return false;
	return !strcmp(json_string_value(json_object_get(a, "link")), json_string_value(json_object_get(b, "link")));
}

static int cmp_paths(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int diff_images(struct store *s, const char *ra, const char *rb, bool js)
{
	char da[DIGEST_BUF], db[DIGEST_BUF];
	json_t *ca = NULL, *cb = NULL, *ia, *ib;
	struct tree ta = { .map = json_object() }, tb = { .map = json_object() };
	json_t *list = json_array();
	int r;
	if ((r = store_resolve(s, ra, da)) < 0 || (r = store_resolve(s, rb, db)) < 0 ||
	    (r = store_load_image(s, da, &ca, &ia)) < 0 || (r = store_load_image(s, db, &cb, &ib)) < 0 ||
	    (r = build_tree(s, ia, &ta)) < 0 || (r = build_tree(s, ib, &tb)) < 0)
		goto out;
	/* Layers shared at the bottom give identical nodes; comparing the
	 * metadata (and the layer's DiffID for files) tells changes apart. */
	size_t n = json_object_size(ta.map) + json_object_size(tb.map), k = 0;
	const char **paths = calloc(n + 1, sizeof *paths);
	const char *key;
	json_t *v;
	json_object_foreach(ta.map, key, v)
		paths[k++] = key;
	json_object_foreach(tb.map, key, v)
		if (!json_object_get(ta.map, key))
			paths[k++] = key;
	qsort(paths, k, sizeof *paths, cmp_paths);
	for (size_t i = 0; i < k; i++) {
		json_t *a = json_object_get(ta.map, paths[i]), *b = json_object_get(tb.map, paths[i]);
		const char *kind = NULL;
		if (!a)
			kind = "A";
		else if (!b)
			kind = "D";
		else if (!same_node(a, b))
			kind = "C";
		else if (S_ISREG(json_integer_value(json_object_get(a, "mode")))) {
			size_t la = (size_t)json_integer_value(json_object_get(a, "layer"));
			size_t lb = (size_t)json_integer_value(json_object_get(b, "layer"));
			if (strcmp(json_string_value(json_array_get(ia, la)), json_string_value(json_array_get(ib, lb))))
				kind = "C";   /* same metadata, from another layer: content may differ */
		}
		if (kind)
			json_array_append_new(list, json_pack("{s:s,s:s}", "kind", kind, "path", paths[i]));
	}
	free(paths);
	print_changes(list, js);
out:
	json_decref(list);
	json_decref(ta.map);
	json_decref(tb.map);
	json_decref(ca);
	json_decref(cb);
	return r;
}

int cmd_diff(const char *root, int argc, char **argv)
{
	struct store s;
	char id[65];
	bool js = take_flag(&argc, argv, "--json");
	if (argc != 1 && argc != 2) {
		susage("usage: strata diff CONTAINER [--json] | strata diff IMAGE IMAGE [--json]");
		return 2;
	}
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	if (argc == 1) {
		r = container_find(&s, argv[0], id);
		if (r < 0)
			susage("no such container: %s (see `strata ps -a`; to compare images give two)", argv[0]);
		else
			r = diff_container(&s, id, js);
	} else {
		r = diff_images(&s, argv[0], argv[1], js);
	}
	store_close(&s);
	return r;
}

/* A layer's changes as an indented tree. Without all, a directory with
 * more than TREE_FOLD entries below it is folded into one line. */
#define TREE_FOLD 20

static void print_tree(json_t *changes, bool all)
{
	size_t n = json_array_size(changes);
	for (size_t i = 0; i < n; i++) {
		json_t *c = json_array_get(changes, i);
		const char *path = json_string_value(json_object_get(c, "path"));
		const char *base = strrchr(path, '/');
		bool dir = json_is_true(json_object_get(c, "dir"));
		long long size = json_integer_value(json_object_get(c, "size"));
		int depth = 0;
		for (const char *p = path + 1; *p; p++)
			depth += *p == '/';
		size_t below = 0, pl = strlen(path);
		long long below_size = 0;
		if (dir)
			for (size_t j = i + 1; j < n; j++) {
				json_t *d = json_array_get(changes, j);
				const char *q = json_string_value(json_object_get(d, "path"));
				if (strncmp(q, path, pl) || q[pl] != '/')
					break;
				below++;
				below_size += json_integer_value(json_object_get(d, "size"));
			}
		char sz[32];
		printf("%*s%s %s%s", 2 + 2 * depth, "", json_string_value(json_object_get(c, "kind")),
		       base ? base + 1 : path, dir ? "/" : "");
		if (dir && !all && below > TREE_FOLD) {
			printf("  (%zu entries, %s; --all shows them)\n", below, human_size(below_size, sz, sizeof sz));
			i += below;
			continue;
		}
		if (size)
			printf("  (%s)", human_size(size, sz, sizeof sz));
		putchar('\n');
	}
}

int cmd_layers(const char *root, int argc, char **argv)
{
	struct store s;
	char digest[DIGEST_BUF];
	json_t *cfg = NULL, *ids;
	bool js = take_flag(&argc, argv, "--json");
	bool all = take_flag(&argc, argv, "--all");
	if (argc != 1) {
		susage("usage: strata layers IMAGE [--all] [--json]");
		return 2;
	}
	int r = store_open(&s, root, false);
	if (r < 0)
		return r;
	if ((r = store_resolve(&s, argv[0], digest)) < 0 || (r = store_load_image(&s, digest, &cfg, &ids)) < 0) {
		store_close(&s);
		return r;
	}
	size_t n = json_array_size(ids);
	struct tree t = { json_object(), calloc(n + 1, sizeof(long long)), json_array(),
			  calloc(n + 1, sizeof(long long)) };
	for (size_t i = 0; i < n; i++)
		json_array_append_new(t.layer_changes, json_array());
	if ((r = build_tree(&s, ids, &t)) < 0)
		goto out;

	/* Match history entries to layers, skipping empty_layer ones. */
	json_t *hist = json_object_get(cfg, "history"), *by = json_array();
	size_t i;
	json_t *h;
	json_array_foreach(hist, i, h)
		if (!json_is_true(json_object_get(h, "empty_layer")))
			json_array_append(by, json_object_get(h, "created_by") ?: json_null());

	json_t *chains = chain_ids(ids), *out = json_array();
	long long total = 0, wasted = 0;
	for (i = 0; i < n; i++) {
		json_array_append_new(out, json_pack("{s:I,s:O,s:O,s:O,s:I,s:I,s:O}", "index", (json_int_t)i,
			"diff_id", json_array_get(ids, i), "chain_id", json_array_get(chains, i),
			"created_by", json_array_get(by, i) ?: json_null(),
			"size", (json_int_t)t.layer_size[i], "wasted", (json_int_t)t.wasted[i],
			"changes", json_array_get(t.layer_changes, i)));
		total += t.layer_size[i];
		wasted += t.wasted[i];
	}
	if (js) {
		json_t *o = json_pack("{s:s,s:o,s:I,s:I}", "image", digest, "layers", out,
				      "size", (json_int_t)total, "wasted", (json_int_t)wasted);
		print_json(o);
		json_decref(o);
	} else {
		json_t *l;
		json_array_foreach(out, i, l) {
			char sz[32], ws[32];
			printf("layer %zu  %s  size %s  wasted %s\n", i,
			       json_string_value(json_object_get(l, "diff_id")),
			       human_size(json_integer_value(json_object_get(l, "size")), sz, sizeof sz),
			       human_size(json_integer_value(json_object_get(l, "wasted")), ws, sizeof ws));
			if (json_string_value(json_object_get(l, "created_by")))
				printf("  created by: %s\n", json_string_value(json_object_get(l, "created_by")));
			print_tree(json_object_get(l, "changes"), all);
		}
		char ts[32], ws[32];
		printf("total %s, wasted %s (bytes in files a later layer replaces or deletes)\n",
		       human_size(total, ts, sizeof ts), human_size(wasted, ws, sizeof ws));
		json_decref(out);
	}
	json_decref(chains);
	json_decref(by);
out:
	json_decref(t.map);
	json_decref(t.layer_changes);
	free(t.wasted);
	free(t.layer_size);
	json_decref(cfg);
	store_close(&s);
	return r;
}
