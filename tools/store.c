#include "store.h"

#include "err.h"
#include "fsutil.h"
#include "pkstore.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const subdirs[] = { "layers", "images", "containers", "tmp" };

static char *default_root(void)
{
	char *p = NULL;
	if (geteuid() == 0)
		return strdup("/var/lib/strata");
	const char *home = getenv("HOME");
	if (!home || !*home) {
		struct passwd *pw = getpwuid(geteuid());
		home = pw ? pw->pw_dir : "/tmp";
	}
	if (asprintf(&p, "%s/.local/share/strata", home) < 0)
		return NULL;
	return p;
}

int store_open(struct store *s, const char *root, bool exclusive)
{
	int r;

	memset(s, 0, sizeof *s);
	s->fd = s->lockfd = s->ownfd = -1;
	if (!root || !*root)
		root = getenv("STRATA_STORE");
	s->root = (root && *root) ? realpath(root, NULL) : NULL;
	if (!s->root) {
		char *want = (root && *root) ? strdup(root) : default_root();
		if (!want)
			return -ENOMEM;
		r = mkdir_p(want, 0700);
		if (r < 0) {
			serr(r, "open store", want, "pass --store DIR or set STRATA_STORE to a writable directory");
			free(want);
			return r;
		}
		s->root = realpath(want, NULL);
		free(want);
		if (!s->root)
			return -errno;
	}
	s->rootless = geteuid() != 0;
	s->fd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->fd < 0) {
		r = -errno;
		serr(r, "open store", s->root, "pass --store DIR or set STRATA_STORE to a writable directory");
		return r;
	}
	for (size_t i = 0; i < sizeof subdirs / sizeof *subdirs; i++)
		if (mkdirat(s->fd, subdirs[i], 0700) < 0 && errno != EEXIST) {
			r = -errno;
			serr(r, "create store directory", s->root, "check the store's permissions");
			return r;
		}
	s->lockfd = openat(s->fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lockfd < 0) {
		r = -errno;
		serr(r, "lock store", s->root, "check the store's permissions");
		return r;
	}
	/* A reader that finds the store idle cleans too, so whatever a killed
	 * command left is gone at the next command of any kind. */
	if (!exclusive && flock(s->lockfd, LOCK_EX | LOCK_NB) == 0) {
		store_clean(s, false);
		if (flock(s->lockfd, LOCK_SH) == 0)
			return 0;
	}
	if ((r = store_relock(s, exclusive)) < 0)
		return r;
	if (exclusive)
		store_clean(s, true);
	return 0;
}

int store_unlock(struct store *s)
{
	if (flock(s->lockfd, LOCK_UN) < 0)
		return -errno;
	return 0;
}

int store_relock(struct store *s, bool exclusive)
{
	while (flock(s->lockfd, exclusive ? LOCK_EX : LOCK_SH) < 0) {
		if (errno == EINTR)
			continue;
		int r = -errno;
		serr(r, "lock store", s->root, "check the store's permissions");
		return r;
	}
	return 0;
}

void store_close(struct store *s)
{
	store_drop_pending(s);
	if (s->ownfd >= 0) {
		rm_rf_at(s->fd, s->owner);
		close(s->ownfd);
	}
	if (s->lockfd >= 0)
		close(s->lockfd);
	if (s->fd >= 0)
		close(s->fd);
	free(s->root);
	s->root = NULL;
	s->fd = s->lockfd = s->ownfd = -1;
}

/* ------------------------------------------------------------ cleaning */

static bool pid_alive(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* "NAME.tmp.PID" as write_file_atomic names its temporary files: the PID,
 * or 0 for any other name. */
static pid_t tmpfile_pid(const char *name)
{
	const char *t = strstr(name, ".tmp.");
	for (const char *n; t && (n = strstr(t + 1, ".tmp.")); t = n)
		;
	if (!t || !t[5])
		return 0;
	char *end;
	long v = strtol(t + 5, &end, 10);
	return (*end || v <= 0 || v > INT_MAX) ? 0 : (pid_t)v;
}

/* Remove NAME.tmp.PID files of dead processes in dirfd. Returns whether
 * one of a live process is there. */
static bool clean_tmpfiles(int dirfd, char **names, size_t n)
{
	bool live = false;
	for (size_t i = 0; i < n; i++) {
		pid_t pid = tmpfile_pid(names[i]);
		if (!pid)
			continue;
		if (pid_alive(pid))
			live = true;
		else
			unlinkat(dirfd, names[i], 0);
	}
	return live;
}

static void clean_tmp(struct store *s)
{
	_cleanup_close_ int tfd = openat(s->fd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	if (tfd < 0 || list_sorted(tfd, &names, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		/* A live owner holds its directory's flock. The cleaner takes
		 * it before removing, so an owner that loses the race finds
		 * its directory gone (own_tmp) rather than sharing it. */
		_cleanup_close_ int d = openat(tfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (d >= 0 && flock(d, LOCK_EX | LOCK_NB) < 0)
			continue;
		int r = rm_rf_at(tfd, names[i]);
		if (r < 0)
			serr(r, "remove leftover", names[i], "in %s/tmp; remove it by hand", s->root);
	}
	free_names(names, n);
}

/* One container directory: stale NAME.tmp.PID files go; the directory
 * goes when it has no record and no live writer. full: look for stale
 * files beside a record too (writers); else a record found with one stat
 * ends the look (readers, which must stay cheap with many containers). */
static void clean_container(struct store *s, int cfd, const char *name, bool full)
{
	if (!full) {
		char p[PATH_MAX];
		struct stat st;
		snprintf(p, sizeof p, "%s/container.json", name);
		if (fstatat(cfd, p, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
			return;
	}
	int fd = openat(cfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	bool record = false, live = false;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, "container.json")) {
			record = true;
			continue;
		}
		pid_t pid = tmpfile_pid(de->d_name);
		if (!pid)
			continue;
		if (pid_alive(pid))
			live = true;
		else
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	if (record || live)
		return;
	/* Containers are made under the exclusive lock and get their record
	 * before it is released: one without a record is what a killed
	 * create (or rm) left. */
	int r = rm_rf_at(cfd, name);
	if (r < 0)
		serr(r, "remove leftover container directory", name, "in %s/containers; remove it by hand", s->root);
	else
		sdebug("removed the remains of an unfinished create: containers/%s", name);
}

static void clean_containers(struct store *s, bool full)
{
	_cleanup_close_ int cfd = openat(s->fd, "containers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	if (cfd < 0 || list_sorted(cfd, &names, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		clean_container(s, cfd, names[i], full);
	free_names(names, n);
}

static void clean_dir_tmpfiles(struct store *s, const char *dir)
{
	_cleanup_close_ int fd = openat(s->fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	if (fd < 0 || list_sorted(fd, &names, &n) < 0)
		return;
	clean_tmpfiles(fd, names, n);
	free_names(names, n);
}

#define COMMIT_MARK "commit.tmp."

int store_commit_begin(struct store *s)
{
	char p[64];
	snprintf(p, sizeof p, COMMIT_MARK "%d", (int)getpid());
	int fd = openat(s->fd, p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		int r = -errno;
		serr(r, "mark commit in", s->root, "check free space and permissions of the store");
		return r;
	}
	close(fd);
	return 0;
}

void store_commit_end(struct store *s)
{
	char p[64];
	snprintf(p, sizeof p, COMMIT_MARK "%d", (int)getpid());
	unlinkat(s->fd, p, 0);
}

/* A commit marker of a dead process: its commit may have stopped halfway. */
static bool dead_commit(struct store *s)
{
	char **names;
	size_t n;
	bool dead = false;
	if (list_sorted(s->fd, &names, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		pid_t pid = tmpfile_pid(names[i]);
		if (pid && !strncmp(names[i], COMMIT_MARK, strlen(COMMIT_MARK)) && !pid_alive(pid))
			dead = true;
	}
	free_names(names, n);
	return dead;
}

void store_clean(struct store *s, bool full)
{
	bool gc = dead_commit(s);
	clean_tmp(s);
	clean_containers(s, full);
	if (gc)
		store_gc(s);
	clean_dir_tmpfiles(s, ".");
	clean_dir_tmpfiles(s, "images");
}

/* tmp/<owner>: made on first use and flocked for the life of this store
 * handle, so cleaners leave it alone even while no store lock is held. */
static int own_tmp(struct store *s)
{
	if (s->ownfd >= 0)
		return 0;
	for (int tries = 0; tries < 100; tries++) {
		unsigned rnd = 0;
		if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) < 0)
			rnd = (unsigned)time(NULL) ^ (unsigned)tries;
		snprintf(s->owner, sizeof s->owner, "tmp/%d-%08x", (int)getpid(), rnd);
		if (mkdirat(s->fd, s->owner, 0700) < 0) {
			if (errno == EEXIST)
				continue;
			/* tmp/ itself removed by hand while the store was
			 * open: make it again. */
			if (errno == ENOENT && (mkdirat(s->fd, "tmp", 0700) == 0 || errno == EEXIST))
				continue;
			return -errno;
		}
		/* A cleaner (any store command finding the store idle) may
		 * take the fresh directory for a dead owner's between mkdir
		 * and flock, unlocked as it is: gone before the open (ENOENT)
		 * or after it (no links once locked); either way, try again. */
		int fd = openat(s->fd, s->owner, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue;
			return -errno;
		}
		struct stat st;
		if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0 || st.st_nlink == 0) {
			close(fd);
			continue;
		}
		s->ownfd = fd;
		return 0;
	}
	return -EEXIST;
}

int store_mktemp(struct store *s, char name[64])
{
	int r = own_tmp(s);
	if (r < 0)
		return r;
	for (int tries = 0; tries < 100; tries++) {
		snprintf(name, 64, "%s/%u", s->owner, s->seq++);
		if (mkdirat(s->fd, name, 0700) == 0)
			return openat(s->fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

char *ref_normalize(const char *ref)
{
	const char *slash = strrchr(ref, '/');
	const char *colon = strrchr(slash ? slash : ref, ':');
	char *out;
	if (colon)
		return strdup(ref);
	if (asprintf(&out, "%s:latest", ref) < 0)
		return NULL;
	return out;
}

static struct pending_layer *find_pending(struct store *s, const char *diffid);

static void layer_rel(char *buf, size_t len, const char *diffid, const char *leaf)
{
	snprintf(buf, len, "layers/%s%s%s", digest_hex(diffid), leaf ? "/" : "", leaf ? leaf : "");
}

bool store_has_layer(struct store *s, const char *diffid)
{
	char p[128];
	struct stat st;
	if (!digest_valid(diffid))
		return false;
	if (find_pending(s, diffid))
		return true;
	layer_rel(p, sizeof p, diffid, "layer.json");
	return fstatat(s->fd, p, &st, 0) == 0;
}

int store_layer_dirfd(struct store *s, const char *diffid)
{
	char p[128];
	if (!digest_valid(diffid))
		return -EINVAL;
	store_layer_relpath(s, diffid, p, sizeof p - 8);
	strcat(p, "/diff");
	int fd = openat(s->fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && !find_pending(s, diffid) && pkstore_layer_is_packed(s, diffid) == 1)
		return pkstore_layer_tree(s, diffid);
	return fd < 0 ? -errno : fd;
}

char *store_layer_path(struct store *s, const char *diffid)
{
	char *p;
	/* A packed layer (pkstore.h) is mounted from its metadata file. */
	if (pkstore_layer_is_packed(s, diffid) == 1)
		return asprintf(&p, "%s/layers/%s/layer.pk", s->root, digest_hex(diffid)) < 0 ? NULL : p;
	if (asprintf(&p, "%s/layers/%s/diff", s->root, digest_hex(diffid)) < 0)
		return NULL;
	return p;
}

int store_layer_info(struct store *s, const char *diffid, json_t **info)
{
	char p[128];
	_cleanup_free_ char *buf = NULL;
	int r;

	if (!digest_valid(diffid))
		return -EINVAL;
	store_layer_relpath(s, diffid, p, sizeof p - 16);
	strcat(p, "/layer.json");
	r = read_file_at(s->fd, p, 1 << 20, &buf, NULL);
	if (r < 0)
		return r;
	*info = json_loads(buf, 0, NULL);
	return *info ? 0 : -EBADMSG;
}

int store_add_pending(struct store *s, const char *tmpname, const char *diffid)
{
	struct pending_layer *np = realloc(s->pending, (s->npending + 1) * sizeof *np);
	if (!np)
		return -ENOMEM;
	s->pending = np;
	snprintf(np[s->npending].tmpname, sizeof np->tmpname, "%s", tmpname);
	snprintf(np[s->npending].diffid, sizeof np->diffid, "%s", diffid);
	s->npending++;
	return 0;
}

static struct pending_layer *find_pending(struct store *s, const char *diffid)
{
	for (size_t i = 0; i < s->npending; i++)
		if (!strcmp(s->pending[i].diffid, diffid))
			return &s->pending[i];
	return NULL;
}

int store_layer_relpath(struct store *s, const char *diffid, char *buf, size_t len)
{
	struct pending_layer *p = find_pending(s, diffid);
	if (p)
		snprintf(buf, len, "%s", p->tmpname);
	else
		layer_rel(buf, len, diffid, NULL);
	return 0;
}

int store_commit_pending(struct store *s)
{
	int r = 0;
	/* Unpacked files reach the disk before their layer becomes visible:
	 * after a crash a layer is either complete or still in tmp/. */
	if (s->npending && syncfs(s->fd) < 0) {
		r = -errno;
		serr(r, "sync store", s->root, "check the store's filesystem");
		store_drop_pending(s);
		return r;
	}
	for (size_t i = 0; i < s->npending; i++) {
		char p[128];
		layer_rel(p, sizeof p, s->pending[i].diffid, NULL);
		if (renameat(s->fd, s->pending[i].tmpname, s->fd, p) == 0)
			continue;
		if (errno == EEXIST || errno == ENOTEMPTY) {
			rm_rf_at(s->fd, s->pending[i].tmpname);
			continue;
		}
		r = -errno;
		serr(r, "store layer", p, "check the store's permissions");
		break;
	}
	store_drop_pending(s);
	return r;
}

void store_drop_pending(struct store *s)
{
	for (size_t i = 0; i < s->npending; i++)
		rm_rf_at(s->fd, s->pending[i].tmpname);
	free(s->pending);
	s->pending = NULL;
	s->npending = 0;
}

int store_put_image(struct store *s, const char *config, size_t len, char digest[DIGEST_BUF])
{
	char p[128];
	sha256_buf(config, len, digest);
	snprintf(p, sizeof p, "images/%s.json", digest_hex(digest));
	return write_file_atomic(s->fd, p, config, len);
}

int store_tags(struct store *s, json_t **tags)
{
	_cleanup_free_ char *buf = NULL;
	int r = read_file_at(s->fd, "tags.json", 64 << 20, &buf, NULL);
	if (r == -ENOENT) {
		*tags = json_object();
		return 0;
	}
	if (r < 0)
		return r;
	*tags = json_loads(buf, 0, NULL);
	if (!*tags || !json_is_object(*tags)) {
		json_decref(*tags);
		serr(0, "read", "tags.json", "the store's tag list is corrupt; restore it or remove it");
		return -EBADMSG;
	}
	return 0;
}

int store_save_tags(struct store *s, json_t *tags)
{
	_cleanup_free_ char *buf = json_dumps(tags, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (!buf)
		return -ENOMEM;
	int r = write_file_atomic(s->fd, "tags.json", buf, strlen(buf));
	if (r < 0)
		serr(r, "write", "tags.json", "check free space and permissions of the store");
	return r;
}

int store_set_tag(struct store *s, const char *ref, const char *digest)
{
	json_t *tags;
	_cleanup_free_ char *name = ref_normalize(ref);
	int r = store_tags(s, &tags);
	if (r < 0)
		return r;
	const char *old = json_string_value(json_object_get(tags, name));
	bool moved = old && strcmp(old, digest);
	json_object_set_new(tags, name, json_string(digest));
	r = store_save_tags(s, tags);
	json_decref(tags);
	/* A name moved to another image: the old one may now be unused. */
	if (r == 0 && moved)
		r = store_gc(s);
	return r;
}

static bool image_exists(struct store *s, const char *digest)
{
	char p[128];
	struct stat st;
	snprintf(p, sizeof p, "images/%s.json", digest_hex(digest));
	return fstatat(s->fd, p, &st, 0) == 0;
}

int store_resolve(struct store *s, const char *ref, char digest[DIGEST_BUF])
{
	_cleanup_free_ char *name = NULL;
	if (digest_valid(ref)) {
		if (!image_exists(s, ref))
			goto missing;
		strcpy(digest, ref);
		return 0;
	}
	json_t *tags;
	int r = store_tags(s, &tags);
	if (r < 0)
		return r;
	name = ref_normalize(ref);
	const char *d = json_string_value(json_object_get(tags, name ? name : ref));
	if (d && digest_valid(d)) {
		strcpy(digest, d);
		json_decref(tags);
		return 0;
	}
	json_decref(tags);

	/* A short ID as `strata images` prints it. */
	size_t n = strlen(ref);
	if (n >= 6 && n <= 64 && strspn(ref, "0123456789abcdef") == n) {
		int ifd = openat(s->fd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		char **names;
		size_t cnt, hits = 0;
		if (ifd >= 0 && list_sorted(ifd, &names, &cnt) == 0) {
			for (size_t i = 0; i < cnt; i++)
				if (!strncmp(names[i], ref, n) && strlen(names[i]) == 69) {
					snprintf(digest, DIGEST_BUF, "sha256:%.64s", names[i]);
					hits++;
				}
			free_names(names, cnt);
		}
		if (ifd >= 0)
			close(ifd);
		if (hits == 1)
			return 0;
		if (hits > 1) {
			susage("image ID %s is ambiguous: give more digits", ref);
			return -EINVAL;
		}
	}
missing:
	susage("no such image: %s (see `strata images`; import one with `strata import`)", ref);
	return -ENOENT;
}

int config_diff_ids(json_t *config, const char *what, json_t **ids)
{
	json_t *rootfs = json_object_get(config, "rootfs");
	json_t *d = json_object_get(rootfs, "diff_ids");
	if (!json_is_array(d)) {
		serr(0, "read image config", what, "it has no rootfs.diff_ids list; not an OCI or Docker image config");
		return -EBADMSG;
	}
	size_t i;
	json_t *v;
	json_array_foreach(d, i, v) {
		if (!digest_valid(json_string_value(v))) {
			serr(0, "read image config", what, "rootfs.diff_ids[%zu] is not a sha256 digest", i);
			return -EBADMSG;
		}
	}
	*ids = d;
	return 0;
}

int store_load_config(struct store *s, const char *digest, json_t **config, char **raw, size_t *rawlen)
{
	char p[128];
	char *buf = NULL;
	size_t len;
	snprintf(p, sizeof p, "images/%s.json", digest_hex(digest));
	int r = read_file_at(s->fd, p, 64 << 20, &buf, &len);
	if (r < 0) {
		serr(r, "read image config", p, "the store is damaged; remove the image with `strata rmi` and import it again");
		return r;
	}
	json_error_t je;
	*config = json_loadb(buf, len, 0, &je);
	if (!*config) {
		serr(0, "parse image config", p, "%s", je.text);
		free(buf);
		return -EBADMSG;
	}
	if (raw) {
		*raw = buf;
		if (rawlen)
			*rawlen = len;
	} else {
		free(buf);
	}
	return 0;
}

int store_load_image(struct store *s, const char *digest, json_t **config, json_t **ids)
{
	int r = store_load_config(s, digest, config, NULL, NULL);
	if (r < 0)
		return r;
	r = config_diff_ids(*config, digest, ids);
	if (r < 0) {
		json_decref(*config);
		*config = NULL;
	}
	return r;
}

/* Images in use: tagged, or the base of a container. */
static int used_images(struct store *s, json_t *used)
{
	json_t *tags;
	const char *k;
	json_t *v;
	int r = store_tags(s, &tags);
	if (r < 0)
		return r;
	json_object_foreach(tags, k, v)
		json_object_set_new(used, json_string_value(v), json_true());
	json_decref(tags);

	int cfd = openat(s->fd, "containers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names;
	size_t n;
	if (cfd >= 0 && list_sorted(cfd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			char p[PATH_MAX];
			char *buf;
			snprintf(p, sizeof p, "%s/container.json", names[i]);
			if (read_file_at(cfd, p, 1 << 20, &buf, NULL) < 0)
				continue;
			json_t *c = json_loads(buf, 0, NULL);
			free(buf);
			const char *img = json_string_value(json_object_get(c, "image"));
			if (img)
				json_object_set_new(used, img, json_true());
			json_decref(c);
		}
		free_names(names, n);
	}
	if (cfd >= 0)
		close(cfd);

	/* strata build's cache: each entry names the image a step made, so
	 * an unchanged rebuild finds it after any gc */
	int bfd = openat(s->fd, "build-cache", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bfd >= 0 && list_sorted(bfd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			char *buf;
			if (read_file_at(bfd, names[i], 256, &buf, NULL) < 0)
				continue;
			buf[strcspn(buf, "\n")] = '\0';
			if (digest_valid(buf))
				json_object_set_new(used, buf, json_true());
			free(buf);
		}
		free_names(names, n);
	}
	if (bfd >= 0)
		close(bfd);
	return 0;
}

int store_gc(struct store *s)
{
	json_t *used = json_object(), *keep = json_object();
	char **names;
	size_t n;
	_cleanup_close_ int ifd = openat(s->fd, "images", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int lfd = openat(s->fd, "layers", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = used_images(s, used);
	if (r < 0)
		goto out;

	if (ifd >= 0 && list_sorted(ifd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			char d[DIGEST_BUF + 8];
			snprintf(d, sizeof d, "sha256:%.64s", names[i]);
			if (!json_object_get(used, d)) {
				unlinkat(ifd, names[i], 0);
				continue;
			}
			json_t *cfg, *ids;
			if (store_load_config(s, d, &cfg, NULL, NULL) < 0)
				continue;
			if (config_diff_ids(cfg, d, &ids) == 0) {
				size_t j;
				json_t *v;
				json_array_foreach(ids, j, v)
					json_object_set_new(keep, json_string_value(v), json_true());
			}
			json_decref(cfg);
		}
		free_names(names, n);
	}

	if (lfd >= 0 && list_sorted(lfd, &names, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			char d[DIGEST_BUF + 8];
			snprintf(d, sizeof d, "sha256:%.64s", names[i]);
			if (!json_object_get(keep, d)) {
				/* Out of layers/ in one rename, then removed: a kill
				 * halfway leaves tmp/ debris for the next cleaner,
				 * never a half layer that a later import would keep. */
				char tmp[64];
				_cleanup_close_ int tfd = store_mktemp(s, tmp);
				int q = tfd >= 0 && renameat(lfd, names[i], tfd, "layer") == 0 ? rm_rf_at(s->fd, tmp)
												 : rm_rf_at(lfd, names[i]);
				if (q < 0)
					serr(q, "remove unused layer", names[i], "remove it by hand");
			}
		}
		free_names(names, n);
	}
	/* Then the chunks only removed layers used (reported by pk_gc). */
	pkstore_gc(s, NULL);
out:
	json_decref(used);
	json_decref(keep);
	return r;
}
