/* whiteout: the one place that knows how layers encode deletions.
 *
 * Read, every encoding overlayfs and OCI use:
 *   - a whiteout is a character device 0/0, or a file named ".wh.NAME" (OCI);
 *   - a directory is opaque (hides every layer below it) when it carries the
 *     xattr trusted.overlay.opaque, user.overlay.opaque or
 *     user.fuseoverlayfs.opaque with value "y", or holds a ".wh..wh..opq" entry.
 * No ".wh." name is ever visible in a merged view.
 *
 * Written, per policy: a whiteout as char 0/0 where mknod is allowed, else
 * ".wh.NAME"; opaque as xattr (trusted.* when privileged, user.* otherwise).
 * tools/ links this module to turn upper directories into OCI layers and back.
 */
#ifndef STRATA_WHITEOUT_H
#define STRATA_WHITEOUT_H

#include <stdbool.h>
#include <sys/stat.h>

#define WH_PREFIX      ".wh."
#define WH_PREFIX_LEN  4
#define WH_OPQ_MARKER  ".wh..wh..opq"

enum wh_kind {
	WH_NONE = 0,   /* an ordinary entry */
	WH_CHARDEV,    /* char device 0/0: hides NAME itself */
	WH_OCI,        /* ".wh.TARGET": hides TARGET */
	WH_OPQ,        /* ".wh..wh..opq": makes the containing directory opaque */
	WH_RESERVED,   /* another ".wh..wh." name (aufs metadata): never shown */
};

/* Classify directory entry NAME of a layer. st may be NULL when the type is
 * unknown; then a char device cannot be recognised and WH_NONE is returned
 * for non-".wh." names. For WH_OCI, *target (if given) points into name at
 * the hidden name. */
enum wh_kind wh_classify(const char *name, const struct stat *st, const char **target);

/* True for a char device 0/0. */
bool wh_is_chardev(const struct stat *st);

/* Does the directory open as dirfd (O_RDONLY|O_DIRECTORY) hide the layers
 * below it? Returns 1, 0, or -errno for an error other than "no such xattr".
 * check_marker: also look for a ".wh..wh..opq" entry. */
int wh_dir_is_opaque(int dirfd, bool check_marker);

/* How this mount writes whiteouts and opaque markers into its upper layer. */
struct wh_policy {
	bool use_trusted;   /* trusted.overlay.* (needs CAP_SYS_ADMIN) else user.overlay.* */
	bool try_mknod;     /* try char 0/0 first; fall back to ".wh.NAME" on EPERM */
	/* Char 0/0 whiteouts as hard links of one shared whiteout kept in
	 * share_dirfd (as overlayfs does): no inode to allocate per deletion.
	 * Off by itself where links fail for a reason a new one cannot mend. */
	bool share;
	int share_dirfd;
};

/* try_mknod and share only go from true to false, and strata-fs's request
 * threads read and clear them at the same time: through these. */
static inline bool wh_may_mknod(struct wh_policy *pol)
{
	return __atomic_load_n(&pol->try_mknod, __ATOMIC_RELAXED);
}

static inline void wh_mknod_refused(struct wh_policy *pol)
{
	__atomic_store_n(&pol->try_mknod, false, __ATOMIC_RELAXED);
}

static inline bool wh_may_share(struct wh_policy *pol)
{
	return __atomic_load_n(&pol->share, __ATOMIC_RELAXED);
}

static inline void wh_share_off(struct wh_policy *pol)
{
	__atomic_store_n(&pol->share, false, __ATOMIC_RELAXED);
}

/* Create a whiteout for NAME in dirfd (which must not hold NAME). */
int wh_write(int dirfd, const char *name, struct wh_policy *pol);

/* Remove the shared whiteout of a policy set up to share (at unmount; the
 * whiteouts linked to it stay). */
void wh_share_end(struct wh_policy *pol);

/* Create a char 0/0 whiteout for NAME in dirfd, no other encoding: 0, -EPERM
 * where this mount cannot have them, or -errno. */
int wh_write_chardev(int dirfd, const char *name, struct wh_policy *pol);

/* Remove a whiteout for NAME in dirfd if one exists (either encoding).
 * Returns 1 if one was removed, 0 if there was none, -errno on error. */
int wh_remove(int dirfd, const char *name);

/* Is there a whiteout for NAME in dirfd (either encoding)? 1, 0 or -errno. */
int wh_exists(int dirfd, const char *name);

/* Mark the directory open as dirfd opaque, per policy. */
int wh_set_opaque(int dirfd, const struct wh_policy *pol);

/* The xattr names this mount writes (overlay.opaque / overlay.redirect /
 * overlay.metacopy under trusted. or user.). */
const char *wh_xattr_opaque(const struct wh_policy *pol);
const char *wh_xattr_redirect(const struct wh_policy *pol);
const char *wh_xattr_metacopy(const struct wh_policy *pol);

#endif
