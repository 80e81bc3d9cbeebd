/* The container's cgroup: made by the launcher beneath the launcher's own
 * cgroup (in every v1 hierarchy it needs, or the unified one), limited
 * there, joined by the container's init before it starts the command,
 * and removed once every process in it is gone.
 *
 * The FUSE daemon and the outer process stay where the launcher is: a
 * memory limit must never kill the filesystem under the container, and a
 * pids limit counts only the container's own processes.
 *
 * Root containers always get the device controller's allow list (v1), so
 * a device node however it got into the container (an image layer, mknod)
 * opens only when it is one of the standard set /dev holds. */
#include "internal.h"
#include "err.h"
#include "io.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* The v1 controllers a container's cgroup is made in when it has limits
 * (cpuacct and freezer serve stats and pause). */
static const char *const v1_controllers[] = { "memory", "cpu", "cpuacct", "pids", "freezer", "devices" };

/* A named cgroup without limits (every `strata run`) is made only where
 * something reads it: memory (usage, OOM kills), cpuacct and pids (stats),
 * devices (root's rules). cpu and freezer would hold nothing: pause makes
 * its own freezer cgroup when asked. Each hierarchy costs a mkdir, a join
 * and an rmdir on the path of every container start. */
static bool lean_needs(const char *ctrl)
{
	return strcmp(ctrl, "cpu") != 0 && strcmp(ctrl, "freezer") != 0;
}

/* /proc/self/cgroup and /proc/self/mountinfo read once for all the
 * hierarchies a container's cgroup is made in. */
struct proc_view {
	char *cgroup, *mountinfo;
	size_t cgroup_len, mountinfo_len;
};

static char *slurp(const char *path, size_t *len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 8192, n = 0;
	char *buf = fd >= 0 ? malloc(cap) : NULL;
	while (buf) {
		if (cap - n < 2048) {
			char *nb = realloc(buf, cap * 2);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		ssize_t k = read(fd, buf + n, cap - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0) {
				*len = n;
				return buf;
			}
			break;
		}
		n += (size_t)k;
	}
	free(buf);
	return NULL;
}

static void proc_view_free(struct proc_view *v)
{
	free(v->cgroup);
	free(v->mountinfo);
}

/* A stream over the snapshot when there is one, else over the file. */
static FILE *proc_open(const char *path, const char *buf, size_t len)
{
	return buf && len ? fmemopen((void *)buf, len, "r") : fopen(path, "re");
}

/* docker's default device rules: the nodes /dev holds, pseudo-terminals
 * and tun; everything else, mknod included, is refused. */
static const char *const device_allow[] = {
	"c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
	"c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
};

/* The same rules for the unified hierarchy, which has no device
 * controller: a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the
 * container's cgroup answers every open and mknod of a device node.
 * {major, minor}, minor -1 for any; character devices only. */
static const int device_allow_bpf[][2] = {
	{ 1, 3 }, { 1, 5 }, { 1, 7 }, { 1, 8 }, { 1, 9 }, { 5, 0 }, { 5, 1 }, { 5, 2 }, { 136, -1 }, { 10, 200 },
};

static struct bpf_insn insn(__u8 code, __u8 dst, __u8 src, __s16 off, __s32 imm)
{
	return (struct bpf_insn){ .code = code, .dst_reg = dst, .src_reg = src, .off = off, .imm = imm };
}

static int attach_device_program(const char *dir, struct strata_error *err)
{
	struct bpf_insn p[8 + 6 * sizeof device_allow_bpf / sizeof device_allow_bpf[0]];
	size_t n = 0, jumps[2];

	/* r2 = device type, r3 = major, r4 = minor (struct bpf_cgroup_dev_ctx) */
	p[n++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_2, BPF_REG_1, 0, 0);
	p[n++] = insn(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_2, 0, 0, 0xffff);
	p[n++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_3, BPF_REG_1, 4, 0);
	p[n++] = insn(BPF_LDX | BPF_W | BPF_MEM, BPF_REG_4, BPF_REG_1, 8, 0);
	size_t not_char = n;
	p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_2, 0, 0, BPF_DEVCG_DEV_CHAR);
	for (size_t i = 0; i < sizeof device_allow_bpf / sizeof device_allow_bpf[0]; i++) {
		size_t nj = 0;
		jumps[nj++] = n;
		p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_3, 0, 0, device_allow_bpf[i][0]);
		if (device_allow_bpf[i][1] >= 0) {
			jumps[nj++] = n;
			p[n++] = insn(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_4, 0, 0, device_allow_bpf[i][1]);
		}
		p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1);
		p[n++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
		for (size_t j = 0; j < nj; j++)
			p[jumps[j]].off = (__s16)(n - jumps[j] - 1); /* on to the next rule */
	}
	p[not_char].off = (__s16)(n - not_char - 1);
	p[n++] = insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0);
	p[n++] = insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

	union bpf_attr load = { 0 };
	load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
	load.insns = (__u64)(uintptr_t)p;
	load.insn_cnt = (__u32)n;
	load.license = (__u64)(uintptr_t)"GPL";
	_cleanup_close_ int prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load);
	if (prog < 0)
		return rt_err(err, errno, "load", "the device cgroup program",
			      "the container's device rules on cgroup v2 need BPF (CONFIG_CGROUP_BPF)");
	_cleanup_close_ int cgfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0)
		return rt_err(err, errno, "open", dir, "to attach the device rules");
	union bpf_attr at = { 0 };
	at.target_fd = (__u32)cgfd;
	at.attach_bpf_fd = (__u32)prog;
	at.attach_type = BPF_CGROUP_DEVICE;
	/* programs of the cgroups above run too: ours only narrows */
	at.attach_flags = BPF_F_ALLOW_MULTI;
	if (syscall(SYS_bpf, BPF_PROG_ATTACH, &at, sizeof at) < 0)
		return rt_err(err, errno, "attach", "the device cgroup program", "to %s", dir);
	return 0;
}

static bool limits_set(const struct strata_limits *l)
{
	return l->memory || l->memory_swap || l->cpu_quota_us || l->cpu_shares || l->pids;
}

/* Which limit needs which v1 controller (for the error that says what is
 * missing). */
static const char *limit_needing(const struct strata_limits *l, const char *ctrl)
{
	if (strcmp(ctrl, "memory") == 0 && (l->memory || l->memory_swap))
		return l->memory ? "--memory" : "--memory-swap";
	if (strcmp(ctrl, "cpu") == 0 && (l->cpu_quota_us || l->cpu_shares))
		return l->cpu_quota_us ? "--cpus" : "--cpu-shares";
	if (strcmp(ctrl, "pids") == 0 && l->pids)
		return "--pids-limit";
	return NULL;
}

static const char *any_limit(const struct strata_limits *l)
{
	static const char *const ctrls[] = { "memory", "cpu", "pids" };
	for (size_t i = 0; i < 3; i++)
		if (limit_needing(l, ctrls[i]))
			return limit_needing(l, ctrls[i]);
	return NULL;
}

/* "a,b,c" holds word? */
static bool list_has(const char *list, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == n && strncmp(p, word, n) == 0)
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

/* The caller's path in the hierarchy whose /proc/self/cgroup line lists
 * ctrl (NULL: the unified one, "0::"), and that line's controllers. */
static int self_cgroup(const struct proc_view *v, const char *ctrl, char **path, char **ctrls)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	FILE *f = proc_open("/proc/self/cgroup", v ? v->cgroup : NULL, v ? v->cgroup_len : 0);
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = '\0';
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
		if (!c2)
			continue;
		*c2 = '\0';
		const char *list = c1 + 1;
		if (ctrl ? !list_has(list, ctrl) : (*list || c1 != line + 1 || line[0] != '0'))
			continue;
		*path = strdup(c2 + 1);
		*ctrls = strdup(list);
		r = (*path && *ctrls) ? 0 : -ENOMEM;
		break;
	}
	fclose(f);
	return r;
}

/* Where the hierarchy is mounted: a cgroup (v1) mount whose options list
 * ctrl, or the cgroup2 mount (ctrl NULL). A mount of a sub-tree (root
 * other than "/") shows only paths below its root. */
static int hierarchy_mount(const struct proc_view *v, const char *ctrl, char **mnt, char **root)
{
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	FILE *f = proc_open("/proc/self/mountinfo", v ? v->mountinfo : NULL, v ? v->mountinfo_len : 0);
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char mroot[PATH_MAX], mpoint[PATH_MAX], fstype[64], opts[1024];
		char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %4095s %4095s", mroot, mpoint) != 2 ||
		    sscanf(sep + 3, "%63s %*s %1023s", fstype, opts) != 2)
			continue;
		if (ctrl ? (strcmp(fstype, "cgroup") != 0 || !list_has(opts, ctrl))
			 : strcmp(fstype, "cgroup2") != 0)
			continue;
		/* mountinfo escapes blanks as \040: cgroup mounts have none */
		*mnt = strdup(mpoint);
		*root = strdup(mroot);
		r = (*mnt && *root) ? 0 : -ENOMEM;
		if (!ctrl && strcmp(mpoint, "/sys/fs/cgroup") != 0) {
			/* prefer /sys/fs/cgroup itself when both are there */
			continue;
		}
		break;
	}
	fclose(f);
	return r;
}

/* The directory of the caller's cgroup in that hierarchy. */
static int caller_dir(const struct proc_view *v, const char *ctrl, char **dir, char **ctrls)
{
	_cleanup_free_ char *path = NULL, *mnt = NULL, *root = NULL;
	int r;

	if ((r = self_cgroup(v, ctrl, &path, ctrls)) < 0)
		return r;
	if ((r = hierarchy_mount(v, ctrl ? ctrl : NULL, &mnt, &root)) < 0)
		return r;
	const char *rel = path;
	size_t rl = strlen(root);
	if (strcmp(root, "/") != 0) {
		if (strncmp(path, root, rl) != 0 || (path[rl] && path[rl] != '/'))
			return -ENOENT; /* our cgroup is outside what is mounted */
		rel = path + rl;
	}
	while (*rel == '/')
		rel++;
	if (asprintf(dir, "%s%s%s", mnt, *rel ? "/" : "", rel) < 0)
		return -ENOMEM;
	return 0;
}

static int write_file(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX];
	_cleanup_close_ int fd = -1;

	snprintf(path, sizeof path, "%s/%s", dir, file);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, value, strlen(value));
	if (n < 0)
		return -errno;
	return (size_t)n == strlen(value) ? 0 : -EIO;
}

static int set_value(const char *dir, const char *file, const char *value, const char *flag,
		     struct strata_error *err)
{
	int r = write_file(dir, file, value);

	if (r < 0)
		rt_err(err, r, "write", file, "in %s, value %s (%s): %s", dir, value, flag,
		       r == -ENOENT ? "this kernel's cgroup lacks it"
				  : r == -EINVAL || r == -EBUSY ? "the kernel refused the value; check the limit"
								: "cannot set the limit");
	return r;
}

static int set_ll(const char *dir, const char *file, long long v, const char *flag, struct strata_error *err)
{
	char buf[32];

	if (v < 0)
		snprintf(buf, sizeof buf, "-1");
	else
		snprintf(buf, sizeof buf, "%lld", v);
	return set_value(dir, file, buf, flag, err);
}

static int apply_v1(const char *ctrls, const char *dir, const struct strata_limits *l, bool devices,
		    struct strata_error *err)
{
	int r;

	if (list_has(ctrls, "memory") && l->memory) {
		if ((r = set_ll(dir, "memory.limit_in_bytes", l->memory, "--memory", err)) < 0)
			return r;
		/* docker's rule: without --memory-swap as much swap as memory */
		long long sw = l->memory_swap ? l->memory_swap : 2 * l->memory;
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/memory.memsw.limit_in_bytes", dir);
		if (access(path, F_OK) == 0) {
			if ((r = set_ll(dir, "memory.memsw.limit_in_bytes", sw, "--memory-swap", err)) < 0)
				return r;
		} else if (l->memory_swap > 0) {
			rt_err(err, ENOENT, "limit swap in", dir,
			       "--memory-swap needs swap accounting (memory.memsw.*): boot with swapaccount=1");
			return -ENOENT;
		}
	}
	if (list_has(ctrls, "cpu")) {
		if (l->cpu_quota_us &&
		    ((r = set_ll(dir, "cpu.cfs_period_us", l->cpu_period_us, "--cpus", err)) < 0 ||
		     (r = set_ll(dir, "cpu.cfs_quota_us", l->cpu_quota_us, "--cpus", err)) < 0))
			return r;
		if (l->cpu_shares && (r = set_ll(dir, "cpu.shares", (long long)l->cpu_shares, "--cpu-shares", err)) < 0)
			return r;
	}
	if (list_has(ctrls, "pids") && l->pids) {
		if (l->pids < 0)
			r = set_value(dir, "pids.max", "max", "--pids-limit", err);
		else
			r = set_ll(dir, "pids.max", l->pids, "--pids-limit", err);
		if (r < 0)
			return r;
	}
	if (list_has(ctrls, "devices") && devices) {
		if ((r = set_value(dir, "devices.deny", "a", "device rules", err)) < 0)
			return r;
		for (size_t i = 0; i < sizeof device_allow / sizeof device_allow[0]; i++)
			if ((r = set_value(dir, "devices.allow", device_allow[i], "device rules", err)) < 0)
				return r;
	}
	return 0;
}

static int apply_v2(const char *dir, const struct strata_limits *l, struct strata_error *err)
{
	char buf[64];
	int r;

	if (l->memory && (r = set_ll(dir, "memory.max", l->memory, "--memory", err)) < 0)
		return r;
	if (l->memory) {
		/* v2 limits swap alone: memory+swap minus memory */
		long long sw = l->memory_swap < 0 ? -1 : l->memory_swap ? l->memory_swap - l->memory : l->memory;
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/memory.swap.max", dir);
		if (access(path, F_OK) == 0 &&
		    (r = set_value(dir, "memory.swap.max", sw < 0 ? "max" : (snprintf(buf, sizeof buf, "%lld", sw), buf),
				   "--memory-swap", err)) < 0)
			return r;
	}
	if (l->cpu_quota_us) {
		snprintf(buf, sizeof buf, "%lld %lld", l->cpu_quota_us, l->cpu_period_us);
		if ((r = set_value(dir, "cpu.max", buf, "--cpus", err)) < 0)
			return r;
	}
	if (l->cpu_shares) {
		/* shares 2..262144 onto weight 1..10000, as crun maps them */
		unsigned long s = l->cpu_shares < 2 ? 2 : l->cpu_shares > 262144 ? 262144 : l->cpu_shares;
		snprintf(buf, sizeof buf, "%lu", 1 + ((s - 2) * 9999) / 262142);
		if ((r = set_value(dir, "cpu.weight", buf, "--cpu-shares", err)) < 0)
			return r;
	}
	if (l->pids && (r = l->pids < 0 ? set_value(dir, "pids.max", "max", "--pids-limit", err)
				       : set_ll(dir, "pids.max", l->pids, "--pids-limit", err)) < 0)
		return r;
	return 0;
}

/* A stale directory of that name (a launcher killed outright) is taken
 * over when nothing runs in it; one in use is an error. */
static int make_dir(const char *dir)
{
	if (mkdir(dir, 0755) == 0)
		return 0;
	if (errno != EEXIST)
		return -errno;
	if (rmdir(dir) < 0)
		return errno == EBUSY ? -EBUSY : -errno;
	return mkdir(dir, 0755) < 0 ? -errno : 0;
}

/* The container's init joins through file: in a v1 hierarchy "tasks",
 * which moves the one thread that writes "0" to it. Moving a whole process
 * (cgroup.procs) takes the kernel's global threadgroup lock for writing,
 * and that waits for an RCU grace period: milliseconds on the path of every
 * container start. Moving the writing thread itself needs no such lock, and
 * init is single-threaded then, so it is the whole process; what it forks
 * from there is born inside. */
static int add_dir(struct cgroups *cg, char *dir, const char *file, struct strata_error *err)
{
	char path[PATH_MAX];

	snprintf(path, sizeof path, "%s/%s", dir, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		rt_err(err, e, "open", path, "to move the container into its cgroup");
		rmdir(dir);
		free(dir);
		return -e;
	}
	cg->dir[cg->n] = dir;
	cg->procs[cg->n] = fd;
	cg->n++;
	return 0;
}

static void refuse_hint(int e, const char *dir, const char *flag, struct strata_error *err)
{
	rt_err(err, e, "create cgroup", dir,
	       "%s needs a cgroup this user may create; %s", flag,
	       geteuid() == 0 ? "is /sys/fs/cgroup mounted read-only here?"
			    : "rootless limits need a delegated cgroup v2 subtree (systemd: run under "
			      "`systemd-run --user --scope -p Delegate=yes`), or run as root; drop the limit "
			      "to run without a cgroup");
}

static int bad_cgroup_name(const char *name, struct strata_error *err)
{
	if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
	    strlen(name) > 200) {
		rt_usage(err, "--cgroup-name '%s' must be one path component (no '/')", name);
		return -EINVAL;
	}
	return 0;
}

static int create_v1(const struct strata_launch_spec *s, const char *name, bool devices_only, bool devices,
		     struct cgroups *cg, struct strata_error *err)
{
	const struct strata_limits *l = &s->limits;
	char *done[8] = { 0 };
	size_t n_done = 0;
	int r = 0;
	bool lean = !limits_set(l);
	struct proc_view view = { 0 };

	view.cgroup = slurp("/proc/self/cgroup", &view.cgroup_len);
	view.mountinfo = slurp("/proc/self/mountinfo", &view.mountinfo_len);
	for (size_t i = 0; i < sizeof v1_controllers / sizeof v1_controllers[0] && r == 0; i++) {
		const char *ctrl = v1_controllers[i];
		_cleanup_free_ char *parent = NULL, *ctrls = NULL;
		bool seen = false;

		if (devices_only ? strcmp(ctrl, "devices") != 0 : (!devices && strcmp(ctrl, "devices") == 0))
			continue;
		if (lean && !lean_needs(ctrl))
			continue;
		if ((r = caller_dir(&view, ctrl, &parent, &ctrls)) < 0) {
			const char *flag = limit_needing(l, ctrl);
			if (flag) {
				rt_err(err, r, "find cgroup controller", ctrl,
				       "%s needs the cgroup v1 %s controller mounted under /sys/fs/cgroup", flag, ctrl);
				break;
			}
			r = 0;
			continue;
		}
		for (size_t j = 0; j < n_done; j++)
			seen |= strcmp(done[j], parent) == 0;
		if (seen)
			continue; /* a hierarchy holding several controllers (cpu,cpuacct) */
		char *dir = NULL;
		if (asprintf(&dir, "%s/%s", parent, name) < 0) {
			r = -ENOMEM;
			break;
		}
		if ((r = make_dir(dir)) < 0) {
			const char *flag = limit_needing(l, ctrl);
			if (r == -EBUSY) {
				rt_err(err, r, "create cgroup", dir, "a cgroup of that name is in use; choose another --cgroup-name");
			} else if (flag) {
				refuse_hint(r, dir, flag, err);
			} else {
				/* no limit needs this controller: run without it
				 * (root's device rules then rest on nodev mounts) */
				r = 0;
				free(dir);
				continue;
			}
			free(dir);
			break;
		}
		done[n_done++] = strdup(parent);
		if ((r = add_dir(cg, dir, "tasks", err)) < 0)
			break;
		if ((r = apply_v1(ctrls, dir, l, devices, err)) < 0)
			break;
		if (!cg->started && list_has(ctrls, "memory"))
			cg->started = cg->dir[cg->n - 1];
	}
	for (size_t j = 0; j < n_done; j++)
		free(done[j]);
	proc_view_free(&view);
	if (r == 0 && !cg->started && cg->n)
		cg->started = cg->dir[0];
	return r;
}

static int create_v2(const struct strata_launch_spec *s, const char *name, bool devices, struct cgroups *cg,
		     struct strata_error *err)
{
	const struct strata_limits *l = &s->limits;
	_cleanup_free_ char *parent = NULL, *ctrls = NULL;
	char *dir = NULL;
	int r;

	if ((r = caller_dir(NULL, NULL, &parent, &ctrls)) < 0) {
		if (any_limit(l))
			rt_err(err, r, "find", "the unified cgroup hierarchy", "%s needs cgroup v2 mounted at /sys/fs/cgroup",
			       any_limit(l));
		return any_limit(l) ? r : 0;
	}
	/* The controllers must be enabled for our children; where the
	 * caller's cgroup holds processes (not the root) the kernel refuses
	 * that, and says so here. */
	const char *want[] = { (l->memory || l->memory_swap) ? "+memory" : NULL,
			       (l->cpu_quota_us || l->cpu_shares) ? "+cpu" : NULL, l->pids ? "+pids" : NULL };
	char enabled[512] = "", path[PATH_MAX];
	snprintf(path, sizeof path, "%s/cgroup.subtree_control", parent);
	FILE *f = fopen(path, "re");
	if (f) {
		if (!fgets(enabled, sizeof enabled, f))
			enabled[0] = '\0';
		fclose(f);
	}
	for (char *c = enabled; *c; c++)
		if (*c == ' ' || *c == '\n')
			*c = ',';
	for (size_t i = 0; i < 3; i++) {
		/* already enabled: writing again would only risk EBUSY */
		if (!want[i] || list_has(enabled, want[i] + 1))
			continue;
		if ((r = write_file(parent, "cgroup.subtree_control", want[i])) < 0) {
			rt_err(err, r, "enable", want[i] + 1, "in %s/cgroup.subtree_control: %s needs the %s controller "
			       "for the cgroups beneath the caller's%s", parent, any_limit(l), want[i] + 1,
			       r == -EBUSY ? " (cgroup v2 enables controllers only below a cgroup without processes "
					   "of its own: start the launcher in a cgroup whose cgroup.subtree_control "
					   "already lists it, or from the root cgroup)"
					 : r == -ENOENT || r == -EINVAL ? " (the controller is not available here)" : "");
			return r;
		}
	}
	if (asprintf(&dir, "%s/%s", parent, name) < 0)
		return -ENOMEM;
	if ((r = make_dir(dir)) < 0) {
		if (r == -EBUSY)
			rt_err(err, r, "create cgroup", dir, "a cgroup of that name is in use; choose another --cgroup-name");
		else if (any_limit(l))
			refuse_hint(r, dir, any_limit(l), err);
		else
			r = 0; /* no limit asked for: run without */
		free(dir);
		return r;
	}
	if ((r = add_dir(cg, dir, "cgroup.procs", err)) < 0)
		return r;
	if (!cg->started)
		cg->started = cg->dir[cg->n - 1];
	cg->v2 = true;
	if (devices && (r = attach_device_program(dir, err)) < 0)
		return r;
	return apply_v2(dir, l, err);
}

static bool has_v1_devices(const struct cgroups *cg)
{
	for (size_t i = 0; i < cg->n; i++) {
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/devices.deny", cg->dir[i]);
		if (access(path, F_OK) == 0)
			return true;
	}
	return false;
}

int cgroup_create(const struct strata_launch_spec *s, pid_t launcher, struct cgroups *cg,
		  struct strata_error *err)
{
	char name[64];
	bool root = geteuid() == 0;
	bool wanted = limits_set(&s->limits) || s->cgroup_name;
	struct statfs sfs;
	int r;

	memset(cg, 0, sizeof *cg);
	for (size_t i = 0; i < CGROUP_MAX_DIRS; i++)
		cg->procs[i] = -1;
	if (s->cgroup_name && (r = bad_cgroup_name(s->cgroup_name, err)) < 0)
		return r;
	if (!wanted && !root)
		return 0;
	snprintf(name, sizeof name, "strata-%d", (int)launcher);
	const char *leaf = s->cgroup_name ? s->cgroup_name : name;
	bool unified = statfs("/sys/fs/cgroup", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;

	if (unified) {
		r = wanted || root ? create_v2(s, leaf, root, cg, err) : 0;
	} else {
		r = create_v1(s, leaf, !wanted, root, cg, err);
		/* a hybrid host without the v1 device controller: the device
		 * program in the unified hierarchy, where that is mounted */
		if (r == 0 && root && !has_v1_devices(cg)) {
			struct strata_launch_spec none = { .limits = { 0 } };
			r = create_v2(&none, leaf, true, cg, err);
		}
	}
	if (r < 0) {
		cgroup_remove(cg, 0, err);
		return r;
	}
	return 0;
}

int cgroup_join(const struct cgroups *cg, struct strata_error *err)
{
	for (size_t i = 0; i < cg->n; i++) {
		if (cg->procs[i] < 0)
			continue;
		if (write(cg->procs[i], "0", 1) != 1)
			return rt_err(err, errno, "join cgroup", cg->dir[i], "move the container's init into it");
	}
	return 0;
}

void cgroup_close_fds(struct cgroups *cg)
{
	for (size_t i = 0; i < cg->n; i++)
		cleanup_closep(&cg->procs[i]), cg->procs[i] = -1;
}

/* rmdir answers EBUSY while the last processes are still on their way
 * out; wait for them up to the deadline. Already gone is fine. */
int cgroup_remove(struct cgroups *cg, int timeout_ms, struct strata_error *err)
{
	struct timespec start, now;
	const struct timespec pause = { 0, 10 * 1000 * 1000 };
	int r = 0;

	cgroup_close_fds(cg);
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (size_t i = cg->n; i-- > 0;) {
		if (!cg->dir[i])
			continue;
		for (;;) {
			if (rmdir(cg->dir[i]) == 0 || errno == ENOENT)
				break;
			if (errno != EBUSY) {
				r = -errno;
				break;
			}
			clock_gettime(CLOCK_MONOTONIC, &now);
			if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >= timeout_ms) {
				r = -EBUSY;
				break;
			}
			nanosleep(&pause, NULL);
		}
		if (r < 0 && timeout_ms > 0) {
			rt_err(err, r, "remove cgroup", cg->dir[i], "processes are still in it; remove it once they are gone");
			timeout_ms = 0;
		}
	}
	return r;
}

void cgroup_free(struct cgroups *cg)
{
	cgroup_close_fds(cg);
	for (size_t i = 0; i < cg->n; i++)
		free(cg->dir[i]), cg->dir[i] = NULL;
	cg->n = 0;
	cg->started = NULL;
}

/* The directories travel from outer, which makes them, to the launcher,
 * which removes them once outer is gone: a 16-byte length ("%15zu\n"),
 * then "N STARTED V2\n" and one directory a line (cgroup paths hold no
 * newline: we made them). The length lets the launcher read exactly the
 * message: outer writes more to the same pipe after it (launch.c's
 * started message), and it may be there already. */
#define CG_LEN_FIELD 16

int cgroup_send(int fd, const struct cgroups *cg)
{
	char buf[CGROUP_MAX_DIRS * (PATH_MAX + 1) + 64 + CG_LEN_FIELD];
	size_t started = 0, len = CG_LEN_FIELD;

	for (size_t i = 0; i < cg->n; i++)
		if (cg->dir[i] == cg->started)
			started = i;
	len += (size_t)snprintf(buf + len, sizeof buf - len, "%zu %zu %d\n", cg->n, started, cg->v2);
	for (size_t i = 0; i < cg->n && len < sizeof buf; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s\n", cg->dir[i]);
	if (len >= sizeof buf)
		return -ENAMETOOLONG;
	char head[CG_LEN_FIELD + 1];
	snprintf(head, sizeof head, "%15zu\n", len - CG_LEN_FIELD);
	memcpy(buf, head, CG_LEN_FIELD);
	return io_write_full(fd, buf, len, -1);
}

int cgroup_recv(int fd, struct cgroups *cg)
{
	const size_t cap = CGROUP_MAX_DIRS * (PATH_MAX + 1) + 64;
	_cleanup_free_ char *buf = malloc(cap + 1);
	char head[CG_LEN_FIELD + 1];
	size_t len, n_dirs, started;
	int v2, r;

	if (!buf)
		return -ENOMEM;
	memset(cg, 0, sizeof *cg);
	for (size_t i = 0; i < CGROUP_MAX_DIRS; i++)
		cg->procs[i] = -1;
	if ((r = io_read_full(fd, head, CG_LEN_FIELD, -1, -EPIPE)) < 0)
		return r;
	head[CG_LEN_FIELD] = '\0';
	if (sscanf(head, "%zu", &len) != 1 || len > cap)
		return -EPROTO;
	if ((r = io_read_full(fd, buf, len, -1, -EPIPE)) < 0)
		return r;
	buf[len] = '\0';
	size_t lines = 0;
	for (size_t i = 0; i < len; i++)
		lines += buf[i] == '\n';
	if (sscanf(buf, "%zu %zu %d", &n_dirs, &started, &v2) != 3 || n_dirs > CGROUP_MAX_DIRS ||
	    (n_dirs && started >= n_dirs) || lines < n_dirs + 1)
		return -EPROTO;
	char *line = strchr(buf, '\n') + 1;
	for (size_t i = 0; i < n_dirs; i++) {
		char *end = strchr(line, '\n');
		*end = '\0';
		if (!(cg->dir[i] = strdup(line))) {
			cgroup_free(cg);
			return -ENOMEM;
		}
		cg->n++;
		line = end + 1;
	}
	cg->started = n_dirs ? cg->dir[started] : NULL;
	cg->v2 = v2;
	return 0;
}
