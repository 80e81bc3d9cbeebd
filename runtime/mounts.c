/* The container's root, built in init's fresh mount namespace before the
 * pivot: the merged view attached, a fresh /proc, a small /dev, a
 * read-only /sys and the user's binds. Only the standard device nodes
 * (binds of the host's) and devpts allow device access: every other
 * mount is nodev.
 *
 * Every path inside the image is resolved with openat2(RESOLVE_IN_ROOT),
 * so an image symlink such as /proc -> /etc/host can never point a mount
 * outside the container's root; mounts then target the resolved fd. */
#include "internal.h"
#include "err.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>

struct fdpath {
	char s[32];
};

static struct fdpath fdpath(int fd)
{
	struct fdpath p;
	snprintf(p.s, sizeof p.s, "/proc/self/fd/%d", fd);
	return p;
}

static int open_in_root(int rootfd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (unsigned)(flags | O_CLOEXEC),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	int fd = syscall(SYS_openat2, rootfd, path, &how, sizeof how);
	return fd < 0 ? -errno : fd;
}

/* An O_PATH fd for PATH under the root, creating what is missing: parent
 * directories, and the last component as a directory or an empty file. */
static int ensure_in_root(int rootfd, const char *path, bool dir)
{
	int fd = open_in_root(rootfd, path, O_PATH);
	if (fd != -ENOENT)
		return fd;

	_cleanup_free_ char *parent = strdup(path);
	if (!parent)
		return -ENOMEM;
	size_t n = strlen(parent);
	while (n > 1 && parent[n - 1] == '/')
		parent[--n] = '\0';
	char *slash = strrchr(parent, '/');
	const char *base = slash ? slash + 1 : parent;
	_cleanup_close_ int pfd = -1;
	if (slash && slash != parent) {
		*slash = '\0';
		pfd = ensure_in_root(rootfd, parent, true);
	} else {
		pfd = open_in_root(rootfd, "/", O_PATH);
	}
	if (pfd < 0)
		return pfd;
	if (dir) {
		if (mkdirat(pfd, base, 0755) < 0 && errno != EEXIST)
			return -errno;
	} else {
		int f = openat(pfd, base, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (f < 0)
			return -errno;
		close(f);
	}
	return open_in_root(rootfd, path, O_PATH);
}

static const char *ro_hint(int err)
{
	return err == -EROFS ? "the image lacks it and the root is read-only; add it to a layer or give --upperdir"
			     : NULL;
}

static int mount_fs(int rootfd, const char *path, const char *type, unsigned long flags, const char *data,
		    struct strata_error *err)
{
	_cleanup_close_ int t = ensure_in_root(rootfd, path, true);
	if (t < 0)
		return rt_err(err, t, "create mount point", path, "%s",
			      ro_hint(t) ? ro_hint(t) : "inside the container root");
	if (mount(type, fdpath(t).s, type, flags, data) < 0)
		return rt_err(err, errno, "mount", path, "%s filesystem inside the container", type);
	return 0;
}

/* Attach a clone of the host tree at src (recursively: a user namespace
 * may not take a mount without what is locked under it) at path. */
static int bind_into(int rootfd, const char *src, const char *path, bool dir, bool readonly,
		     unsigned long extra_attrs, struct strata_error *err)
{
	_cleanup_close_ int tree = open_tree(AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
	if (tree < 0)
		return rt_err(err, errno, "bind", src, "cannot take a copy of the host path");
	if (readonly || extra_attrs) {
		struct mount_attr attr = { .attr_set = (readonly ? MOUNT_ATTR_RDONLY : 0) | extra_attrs };
		if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
			return rt_err(err, errno, "make read-only", src, "bind to %s", path);
	}
	_cleanup_close_ int t = ensure_in_root(rootfd, path, dir);
	if (t < 0)
		return rt_err(err, t, "create bind target", path, "%s",
			      ro_hint(t) ? ro_hint(t) : "inside the container root");
	if (move_mount(tree, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
		return rt_err(err, errno, "bind", src, "onto %s in the container", path);
	return 0;
}

static int setup_dev(int rootfd, bool userns, struct strata_error *err)
{
	static const char *const devices[] = { "null", "zero", "full", "random", "urandom", "tty" };
	static const char *const links[][2] = {
		{ "/proc/self/fd", "fd" }, { "/proc/self/fd/0", "stdin" },
		{ "/proc/self/fd/1", "stdout" }, { "/proc/self/fd/2", "stderr" },
		{ "pts/ptmx", "ptmx" },
	};
	char path[32];
	int r;

	/* nodev: a node made in /dev never opens; the standard ones below
	 * are binds of the host's (mounts of their own) and devpts is a
	 * mount of its own too, so those work. */
	if ((r = mount_fs(rootfd, "/dev", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME,
			  "mode=755,size=65536k", err)) < 0)
		return r;
	/* A user namespace cannot mknod: bind the host's nodes instead. */
	for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
		snprintf(path, sizeof path, "/dev/%s", devices[i]);
		if ((r = bind_into(rootfd, path, path, false, false, 0, err)) < 0)
			return r;
	}
	_cleanup_close_ int dev = open_in_root(rootfd, "/dev", O_PATH | O_DIRECTORY);
	if (dev < 0)
		return rt_err(err, dev, "open", "/dev", "in the container");
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
		if (symlinkat(links[i][0], dev, links[i][1]) < 0 && errno != EEXIST)
			return rt_err(err, errno, "symlink", links[i][1], "in the container's /dev");
	/* gid 5 is "tty" in most images; it may not exist in a user namespace */
	r = mount_fs(rootfd, "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
		     userns ? "newinstance,ptmxmode=0666,mode=0620"
			    : "newinstance,ptmxmode=0666,mode=0620,gid=5", err);
	if (r < 0)
		return r;
	return mount_fs(rootfd, "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k",
			err);
}

static int setup_sys(int rootfd, struct strata_error *err)
{
	_cleanup_close_ int t = ensure_in_root(rootfd, "/sys", true);
	if (t < 0)
		return rt_err(err, t, "create mount point", "/sys", "%s",
			      ro_hint(t) ? ro_hint(t) : "inside the container root");
	if (mount("sysfs", fdpath(t).s, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0)
		return 0;
	/* A user namespace may only mount sysfs for a network namespace it
	 * owns; with the host's network, show the host's /sys read-only. */
	if (errno != EPERM && errno != EACCES)
		return rt_err(err, errno, "mount", "/sys", "sysfs inside the container");
	return bind_into(rootfd, "/sys", "/sys", true, true, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
			 err);
}

/* docker's masked and read-only paths: kernel interfaces that leak host
 * information or let root in the container change the host. Run after
 * the pivot, where every path is the container's own proc or sysfs. */
static const char *const masked_paths[] = {
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
};
static const char *const readonly_paths[] = {
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static int mask_kernel_paths(struct strata_error *err)
{
	struct stat st;

	for (size_t i = 0; i < sizeof masked_paths / sizeof masked_paths[0]; i++) {
		const char *p = masked_paths[i];
		if (stat(p, &st) < 0)
			continue; /* not in this kernel, or /sys is the host's and lacks it */
		int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", MS_RDONLY, "size=0")
					    : mount("/dev/null", p, NULL, MS_BIND, NULL);
		if (r < 0)
			return rt_err(err, errno, "mask", p, "hide it from the container");
	}
	for (size_t i = 0; i < sizeof readonly_paths / sizeof readonly_paths[0]; i++) {
		const char *p = readonly_paths[i];
		struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY };
		if (stat(p, &st) < 0)
			continue;
		_cleanup_close_ int tree = open_tree(AT_FDCWD, p, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
		if (tree < 0 || mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &ro, sizeof ro) < 0 ||
		    move_mount(tree, "", AT_FDCWD, p, MOVE_MOUNT_F_EMPTY_PATH) < 0)
			return rt_err(err, errno, "make read-only", p, "protect the host's kernel settings");
	}
	return 0;
}

int rootfs_setup(const struct launch_ctx *ctx)
{
	const struct strata_launch_spec *s = ctx->spec;
	struct strata_error *err = ctx->err;
	int r;

	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return rt_err(err, errno, "make private", "/", "in the container's mount namespace");
	/* The merged view (a detached mount until now) is stacked on this
	 * namespace's root: absolute paths keep resolving from the old root,
	 * so the host's sources for the binds below are still reachable, and
	 * the view itself is reached through its fd. */
	if (move_mount(ctx->rootmnt, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return rt_err(err, errno, "attach", "the merged view", "in the container's mount namespace");
	_cleanup_close_ int root = openat(ctx->rootmnt, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return rt_err(err, errno, "open", "the merged view", NULL);
	if ((r = mount_fs(root, "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, err)) < 0)
		return r;
	if ((r = setup_dev(root, ctx->userns, err)) < 0)
		return r;
	if ((r = setup_sys(root, err)) < 0)
		return r;
	for (size_t i = 0; i < s->n_binds; i++) {
		struct stat st;
		if (stat(s->binds[i].src, &st) < 0)
			return rt_err(err, errno, "bind", s->binds[i].src, "the source of --bind must exist on the host");
		/* nodev as docker's volumes: a host directory a container can
		 * write to must not become its way to a device */
		r = bind_into(root, s->binds[i].src, s->binds[i].dst, S_ISDIR(st.st_mode), s->binds[i].readonly,
			      MOUNT_ATTR_NODEV, err);
		if (r < 0)
			return r;
	}

	/* pivot_root(".", ".") stacks the old root on the new one; detaching
	 * it leaves nothing of the host reachable. */
	if (fchdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
		return rt_err(err, errno, "pivot_root into", "the merged view", NULL);
	if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		return rt_err(err, errno, "detach", "the host root", "after pivot_root");
	return mask_kernel_paths(err);
}
