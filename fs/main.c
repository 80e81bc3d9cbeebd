/* main.c: strata-fs's entry point: options, the layer stack, the FUSE
 * session, mount, background, serve until unmounted. */
#include "fs.h"

#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.destroy = op_destroy,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write_buf = op_write_buf,
	.release = op_release,
	.fsync = op_fsync,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
	.copy_file_range = op_copy_file_range,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
};

void op_init(void *ud, struct fuse_conn_info *conn)
{
	struct sfs *fs = ud;
	unsigned want = FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
			FUSE_CAP_READDIRPLUS | FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_PARALLEL_DIROPS |
			FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_ASYNC_DIO | FUSE_CAP_ASYNC_READ;
	/* the kernel takes passthrough only without its writeback cache */
	if (pt_negotiate(fs))
		fs->opts.writeback = false;
	if (fs->opts.writeback && fs->has_upper)
		want |= FUSE_CAP_WRITEBACK_CACHE;
	/* the kernel enforces and caches ACLs; umask is then ours to apply */
	if (!fs->opts.noacl)
		want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
	/* readdirplus when the kernel lacks the entries, plain readdir when it
	 * has them cached (a warm `ls -lR` then costs names only) */
	want |= FUSE_CAP_READDIRPLUS_AUTO;
	/* io_uring replies are copied into its buffers, not spliced */
	if (uring_wanted(fs))
		want &= ~(unsigned)(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
	conn->want |= want & conn->capable;
	conn->max_readahead = 1 << 20;
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->max_write = 1 << 20;
}

void op_destroy(void *ud)
{
	struct sfs *fs = ud;
	fh_close_all(fs);
}

/* The root starts with every layer; which of them an opaque layer root
 * hides is found by root_settle() when first needed. */
static int build_root(struct sfs *fs)
{
	struct node *root = node_new(fs, NULL, "", S_IFDIR);
	struct dlayer *dl = calloc(fs->nlayers, sizeof *dl);
	struct stat st;

	if (!root || !dl)
		return -ENOMEM;
	for (unsigned i = 0; i < fs->nlayers; i++) {
		dl[i].layer = i;
		dl[i].fd = -1;
		if (fs->layers[i].lo.pk) {
			dl[i].pino = lower_root(&fs->layers[i].lo);
			continue;
		}
		int fd = dup(fs->layers[i].fd);
		if (fd < 0) {
			int e = errno;
			serr(e, "open", fs->layers[i].path, "too many layers for the open-file limit? raise ulimit -n");
			return -e;
		}
		dl[i].fd = fd;
	}
	node_set_dlayers(fs, root, dl, fs->nlayers);
	unsigned ref = fs->has_upper && fs->nlayers > 1 ? 1 : 0;
	struct lref rr = { .dirfd = fs->layers[ref].fd, .name = ".", .ino = dl[ref].pino };
	lower_stat(&fs->layers[ref].lo, &rr, &st);
	root->ino = layer_ino(fs, ref, &st);
	root->nlookup = 1;
	fs->root = root;
	return 0;
}

/* An opaque layer root hides every layer below it. Finding out reads each
 * layer's root directory: for 500 layers on a cold disk that was 32 of the
 * 49 ms a mount took, so it waits for the first request that needs the
 * root's whole stack (a lookup or listing in it), which reads those
 * directories anyway, as the kernel's overlayfs reads them at its first
 * lookup in the root. The root's attributes come from its top layer and
 * need none of it. */
void root_settle(struct sfs *fs)
{
	struct node *root = fs->root;

	pthread_mutex_lock(&fs->settle_lock);
	if (!__atomic_load_n(&fs->root_settled, __ATOMIC_ACQUIRE)) {
		unsigned keep = 0;
		while (keep < root->ndl) {
			bool tmp;
			int opaque = 0;
			if (layer_packed(fs, root->dl[keep].layer)) {
				opaque = lower_opaque(&fs->layers[root->dl[keep].layer].lo, root->dl[keep].pino);
			} else {
				int fd = node_dlfd(fs, root, keep, &tmp);
				opaque = fd >= 0 ? wh_dir_is_opaque(fd, true) : 0;
				if (fd >= 0 && tmp)
					close(fd);
			}
			keep++;
			if (opaque == 1)
				break;  /* it stays; every layer below goes */
		}
		if (keep < root->ndl) {
			pthread_rwlock_wrlock(root->dl_lock);
			for (unsigned i = keep; i < root->ndl; i++)
				if (root->dl[i].fd >= 0) {
					close(root->dl[i].fd);
					__atomic_fetch_sub(&fs->fd_used, 1, __ATOMIC_RELAXED);
				}
			dl_free_names(root->dl + keep, root->ndl - keep);
			root->ndl = keep;
			pthread_rwlock_unlock(root->dl_lock);
		}
		__atomic_store_n(&fs->root_settled, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&fs->settle_lock);
}

static void probe_privileges(struct sfs *fs)
{
	fs->privileged = false;
	if (fs->has_upper && fsetxattr(fs->workfd, "trusted.strata.probe", "1", 1, 0) == 0) {
		fremovexattr(fs->workfd, "trusted.strata.probe");
		fs->privileged = true;
	}
	fs->no_dac = geteuid() != 0;
	fs->whp.use_trusted = fs->privileged;
	fs->whp.try_mknod = true;
	fs->whp.share = fs->has_upper;
	fs->whp.share_dirfd = fs->workfd;
	fs->xa_origin = fs->privileged ? "trusted.strata.origin" : "user.strata.origin";
	fs->xa_override = fs->opts.xattr_permissions == 1 ? "security.containers.override_stat"
							   : "user.containers.override_stat";
}

static void raise_nofile(struct sfs *fs)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	long lim = (long)rl.rlim_cur;
	/* leave room for open files and per-request temporaries */
	fs->fd_budget = (int)(lim > 2048 ? lim / 2 : lim / 4);
}

/* Grow the descriptor table now to what the daemon may use: grown later,
 * with threads sharing it, the kernel waits for an RCU grace period in the
 * request whose open did not fit (a cold lookup of a directory merged from
 * 64 layers spent most of its time in that wait). Done before the mount is
 * visible, so nothing can reach the daemon with a small table. Returns the
 * descriptor that holds the table at its size: fork (fuse_daemonize())
 * copies the table only as large as its highest open descriptor, so it is
 * closed once the daemon is the process it will stay; -1 if none. */
static int presize_fdtable(const struct sfs *fs)
{
	struct rlimit rl;
	long want = fs->fd_budget + 1024L;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (long)rl.rlim_cur < want)
		want = (long)rl.rlim_cur;
	if (want > 1L << 15)
		want = 1L << 15;   /* 256 KiB of table; beyond, it grows when needed */
	_cleanup_close_ int fd = open("/", O_PATH | O_CLOEXEC);
	if (fd >= 0 && want > fd + 1 && dup3(fd, (int)want - 1, O_CLOEXEC) >= 0)
		return (int)want - 1;
	return -1;
}

/* One line of mountinfo: its mount point (unescaped) and device. */
static bool mountinfo_line(char *line, char *mp, size_t mplen, unsigned *maj, unsigned *min,
			   bool *fuse)
{
	int off = 0;
	if (sscanf(line, "%*u %*u %u:%u %*s %n", maj, min, &off) != 2 || !off)
		return false;
	const char *p = line + off;
	size_t k = 0;
	for (; *p && *p != ' ' && k + 1 < mplen; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			mp[k++] = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			mp[k++] = *p;
		}
	}
	mp[k] = '\0';
	const char *sep = strstr(p, " - ");
	*fuse = sep && !strncmp(sep + 3, "fuse", 4);
	return true;
}

/* The whole of /proc/self/mountinfo from fd, NUL-terminated; free() it. */
static char *mountinfo_read(int fd)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	if (!buf || lseek(fd, 0, SEEK_SET) < 0) {
		free(buf);
		return NULL;
	}
	for (;;) {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(buf);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

/* The kernel ends the connection when the last mount of it goes. But a
 * copy of the mount in another mount namespace (anyone's unshare -m while
 * it was mounted) keeps it, and the daemon served on after its unmount for
 * as long as that namespace lived. Unmounted from the namespace it was
 * mounted in, the daemon ends: the mount it made is watched there (the
 * superblock's device, so a bind mount or a move keeps it). Not for
 * /dev/fd/N, mounted by the caller wherever it likes. */
static void mount_watch_open(struct sfs *fs, const char *mp)
{
	_cleanup_close_ int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *all = fd >= 0 ? mountinfo_read(fd) : NULL;
	bool found = false;

	for (char *line = all, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char at[PATH_MAX];
		unsigned maj, min;
		bool fuse;
		/* the last (topmost) FUSE mount there is ours */
		if (mountinfo_line(line, at, sizeof at, &maj, &min, &fuse) && fuse && !strcmp(at, mp)) {
			fs->mnt_dev = makedev(maj, min);
			found = true;
		}
	}
	if (found) {
		fs->mntinfo_fd = take_fd(&fd);
		return;
	}
	sdebug("mount watch: %s not found in /proc/self/mountinfo; the daemon ends when the kernel ends the connection",
	       mp);
}

bool mount_present(struct sfs *fs)
{
	_cleanup_free_ char *all = mountinfo_read(fs->mntinfo_fd);
	bool present = !all;   /* unknown: still there */

	for (char *line = all, *next; line && *line && !present; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		unsigned maj, min;
		if (sscanf(line, "%*u %*u %u:%u", &maj, &min) == 2 && makedev(maj, min) == fs->mnt_dev)
			present = true;
	}
	return present;
}

/* Our mount left our namespace: libfuse's unmount must not touch the path,
 * which may hold someone else's mount by now. It unmounts unless the
 * device reports the connection ended (POLLERR); a copy of the mount in
 * another namespace may keep it open. Our end of it is closed here (the
 * kernel ends the connection with its last descriptor, as at our exit) and
 * the descriptor number given to the write end of a pipe without a reader,
 * which reports POLLERR too. */
static void conn_close(struct sfs *fs)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return;
	close(p[0]);
	if (dup3(p[1], fuse_session_fd(fs->se), O_CLOEXEC) < 0)
		serr(errno, "close the connection of", fs->opts.mountpoint, "libfuse unmounts the path itself");
	close(p[1]);
}

/* Is the caller allowed allow_other? root, or user_allow_other in fuse.conf */
static bool may_allow_other(void)
{
	if (geteuid() == 0)
		return true;
	FILE *f = fopen("/etc/fuse.conf", "re");
	char line[256];
	bool ok = false;
	if (!f)
		return false;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, "user_allow_other", 16))
			ok = true;
	fclose(f);
	return ok;
}

int main(int argc, char **argv)
{
	/* one mount per process today; nothing but main() assumes it */
	static struct sfs the_fs;
	struct sfs *fs = &the_fs;
	int r, ret = 1, table_fd = -1;
	char *mp_real = NULL;

	strata_prog = "strata-fs";
	fs->mntinfo_fd = -1;
	pthread_mutex_init(&fs->table_lock, NULL);
	pthread_mutex_init(&fs->settle_lock, NULL);
	pthread_mutex_init(&fs->open_lock, NULL);
	pthread_mutex_init(&fs->lean.lock, NULL);
	pthread_mutex_init(&fs->pts.lock, NULL);
	fs->pts.stack_depth = 1;
	r = opts_parse(&fs->opts, argc, argv);
	if (r < 0)
		return 1;
	if (fs->opts.show_help) {
		opts_usage(stdout);
		return 0;
	}
	if (fs->opts.show_version) {
		printf("strata-fs version %s\nFUSE library version %s\n", STRATA_VERSION, fuse_pkgversion());
		return 0;
	}
	strata_debug = fs->opts.debug;
	/* with one CPU the client needs it to send the next request */
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		fs->opts.poll_us = 0;
	fs->timeout = fs->opts.timeout;
	umask(0);
	raise_nofile(fs);

	struct stat mst;
	bool by_path = strncmp(fs->opts.mountpoint, "/dev/fd/", 8) != 0;
	if (by_path && stat(fs->opts.mountpoint, &mst) < 0) {
		serr(errno, "stat mount point", fs->opts.mountpoint, "create the directory first");
		goto out;
	}
	/* resolved now: once mounted, looking at the path would ask us */
	mp_real = by_path ? realpath(fs->opts.mountpoint, NULL) : NULL;
	if ((r = layers_open(fs)) < 0)
		goto out;
	probe_privileges(fs);
	fs->hsize = 1 << 16;
	fs->csize = 1 << 16;
	fs->htab = calloc(fs->hsize, sizeof *fs->htab);
	fs->ctab = calloc(fs->csize, sizeof *fs->ctab);
	if (!fs->htab || !fs->ctab || build_root(fs) < 0)
		goto out;

	/* libfuse's own options: ours are parsed already */
	char fopts[4096];
	/* as root, set-id programs and device nodes of the image work, as on
	 * kernel overlayfs (options given by the caller come after and win) */
	snprintf(fopts, sizeof fopts, "fsname=strata-fs,subtype=strata,default_permissions%s%s%s%s%s",
		 geteuid() == 0 ? ",suid,dev" : "",
		 may_allow_other() ? ",allow_other" : "", fs->has_upper ? "" : ",ro",
		 fs->opts.fuse_opts ? "," : "", fs->opts.fuse_opts ? fs->opts.fuse_opts : "");
	char *fargv[] = { argv[0], "-o", fopts, fs->opts.debug ? "-d" : NULL, NULL };
	struct fuse_args args = FUSE_ARGS_INIT(fs->opts.debug ? 4 : 3, fargv);

	fs->se = fuse_session_new(&args, &ops, sizeof ops, fs);
	fuse_opt_free_args(&args);
	if (!fs->se) {
		serr(0, "start FUSE session for", fs->opts.mountpoint, "see the message above");
		goto out;
	}
	if (fuse_set_signal_handlers(fs->se) != 0)
		goto out_session;
	table_fd = presize_fdtable(fs);
	if (fuse_session_mount(fs->se, fs->opts.mountpoint) != 0) {
		serr(0, "mount on", fs->opts.mountpoint,
		     "is /dev/fuse available and may this user mount FUSE (fusermount3 installed, or run inside unshare -Urm)?");
		goto out_handlers;
	}
	if (pt_install(fs->se) != 0) {
		serr(0, "set up replies on", fs->opts.mountpoint, "out of memory?");
		goto out_unmount;
	}
	/* The mount is live: only now may the caller see exit status 0. */
	if (!fs->opts.foreground && fuse_daemonize(0) != 0)
		goto out_unmount;

	if (table_fd >= 0)
		close(table_fd);   /* the table keeps its size */
	table_fd = -1;
	if (mp_real)
		mount_watch_open(fs, mp_real);
	if (sched_getaffinity(0, sizeof fs->cpus, &fs->cpus) < 0) {
		long n = sysconf(_SC_NPROCESSORS_CONF);
		CPU_ZERO(&fs->cpus);
		for (long c = 0; c < n && c < CPU_SETSIZE; c++)
			CPU_SET(c, &fs->cpus);
	}
	/* -s: everything on this thread; else slow requests go to workers */
	ret = serve(fs, fs->se, fs->opts.single_thread ? 0 : 4) != 0;
out_unmount:
	if (__atomic_load_n(&fs->mnt_gone, __ATOMIC_ACQUIRE))
		conn_close(fs);
	fuse_session_unmount(fs->se);
out_handlers:
	fuse_remove_signal_handlers(fs->se);
out_session:
	fuse_session_destroy(fs->se);
out:
	free(mp_real);
	if (table_fd >= 0)
		close(table_fd);
	if (fs->mntinfo_fd >= 0)
		close(fs->mntinfo_fd);
	layers_close(fs);
	opts_free(&fs->opts);
	return ret;
}
