"""Contenders are plugins: each knows whether it can run here, how to present
a fixture's layers as one tree, and how to take that tree down again. The
workloads never know which one they are timing."""

import os
import shutil
import subprocess
import tempfile
import time

from . import sysutil
from .sysutil import BenchError

MOUNT_TIMEOUT = 20.0


class Instance:
    """One mounted (or copied) view of a fixture, used for one repetition."""

    mount_cpu = (None, None)   # (client, daemon) CPU seconds of mounting

    def __init__(self, contender, path, scratch, mount_s=None, daemon=None):
        self.contender = contender
        self.path = path
        self.scratch = scratch
        self.mount_s = mount_s
        self.daemon = daemon

    @property
    def daemon_pid(self):
        return self.daemon.pid if self.daemon else None

    def daemon_cpu(self):
        return sysutil.proc_cpu_seconds(self.daemon.pid) if self.daemon else None


class Contender:
    name = "?"
    kind = "fs"          # "plain", "kernel" or "fuse": what its page cache means
    roles = ("all",)     # workload groups it takes part in

    def probe(self, ctx):
        """None when usable, else the reason it is skipped."""
        return None

    def takes_part(self, workload):
        return "all" in self.roles or workload.group in self.roles

    def mount(self, ctx, fixture):
        raise NotImplementedError

    def unmount(self, inst):
        if not getattr(inst, "kept", False):
            shutil.rmtree(inst.scratch, ignore_errors=True)

    def workload_done(self, workload):
        pass


class Plain(Contender):
    """The merged tree flattened into an ordinary directory: the floor."""
    name = "plain"
    kind = "plain"

    def workload_done(self, workload):
        for key in [k for k in self.kept if k[1] == workload.name]:
            shutil.rmtree(self.kept.pop(key).scratch, ignore_errors=True)

    def __init__(self):
        self.kept = {}

    def mount(self, ctx, fixture, writable=False):
        if isinstance(writable, tuple):
            # ("reuse", workload, what): one private copy for all repetitions
            key = (fixture.name, writable[1])
            if key not in self.kept:
                self.kept[key] = self.mount(ctx, fixture, writable[2])
                self.kept[key].kept = True
            return self.kept[key]
        scratch = tempfile.mkdtemp(prefix="plain-", dir=ctx.scratch)
        flat = ctx.flat_tree(fixture)
        if not writable:
            return Instance(self, flat, scratch, mount_s=None)
        # A workload that modifies the tree gets its own copy, made untimed;
        # when it names the one subtree it touches, only that is copied.
        dst = os.path.join(scratch, "tree")
        if isinstance(writable, str):
            os.makedirs(os.path.dirname(os.path.join(dst, writable)), exist_ok=True)
            sysutil.run_setup(["cp", "-a", os.path.join(flat, writable),
                               os.path.join(dst, writable)], what="copy plain tree")
        else:
            sysutil.run_setup(["cp", "-a", flat, dst], what="copy plain tree")
        return Instance(self, dst, scratch, mount_s=None)


def _overlay_dirs(ctx, prefix):
    # mountinfo escapes a space as \040: a mount point without one is found as named
    scratch = tempfile.mkdtemp(prefix=prefix.replace(" ", "_"), dir=ctx.scratch)
    upper, work, mnt = (os.path.join(scratch, n) for n in ("upper", "work", "mnt"))
    for d in (upper, work, mnt):
        os.mkdir(d)
    return scratch, upper, work, mnt


class KernelOverlay(Contender):
    kind = "kernel"

    def __init__(self, name, extra, roles=("all",)):
        self.name = name
        self.extra = extra
        self.roles = roles

    def probe(self, ctx):
        with open("/proc/filesystems") as f:
            if "overlay" not in f.read():
                subprocess.run(["modprobe", "overlay"], stderr=subprocess.DEVNULL)
        scratch, upper, work, mnt = _overlay_dirs(ctx, "probe-")
        try:
            low = os.path.join(scratch, "l")
            os.mkdir(low)
            sysutil.mount("overlay", mnt, "overlay",
                          "lowerdir=%s,upperdir=%s,workdir=%s,%s"
                          % (low, upper, work, self.extra))
            sysutil.umount(mnt)
        except BenchError as e:
            return "kernel overlayfs with %s does not mount here (%s)" % (self.extra, e)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return None

    def mount(self, ctx, fixture, writable=False):
        scratch, upper, work, mnt = _overlay_dirs(ctx, self.name.replace("/", "_") + "-")
        opts = "lowerdir=%s,upperdir=%s,workdir=%s,%s" % (
            ":".join(fixture.lowers), upper, work, self.extra)
        c0 = sysutil.thread_cpu_seconds()
        t0 = time.perf_counter()
        try:
            sysutil.mount("overlay", mnt, "overlay", opts, cwd=fixture.root)
        except BenchError:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        inst = Instance(self, mnt, scratch, mount_s=time.perf_counter() - t0)
        inst.mount_cpu = (sysutil.thread_cpu_seconds() - c0, None)
        return inst

    def unmount(self, inst):
        sysutil.umount(inst.path)
        shutil.rmtree(inst.scratch, ignore_errors=True)


class FuseOverlay(Contender):
    """Any daemon with fuse-overlayfs's command line. It runs with -f as our
    own child: we time spawn-to-live, read its CPU and RSS, and reap it
    ourselves (PID 1 here reaps nothing)."""
    kind = "fuse"

    def __init__(self, name, binary, extra=""):
        self.name = name
        self.binary = binary
        self.extra = extra

    def probe(self, ctx):
        if not self.binary:
            return "no build directory given (bench/run.sh BUILDDIR)"
        if not os.access(self.binary, os.X_OK):
            return "%s not built yet (no %s)" % (self.name, self.binary)
        if not os.path.exists("/dev/fuse"):
            return "/dev/fuse is missing"
        if "uring=on" in self.extra and not getattr(ctx, "uring_on", False):
            return ("the kernel offers no FUSE over io_uring here (%s missing or off)"
                    % "/sys/module/fuse/parameters/enable_uring")
        fixture = self.probe_fixture(ctx)
        try:
            inst = self.mount(ctx, fixture)
        except BenchError as e:
            return "%s does not mount a two-layer test stack: %s" % (self.name, e)
        try:
            names = sorted(sysutil.call_with_timeout(lambda: os.listdir(inst.path), MOUNT_TIMEOUT,
                                                     inst.path, "listing the test stack"))
        except (OSError, BenchError) as e:
            names = "error %s" % e
        queues = [t for t in os.listdir("/proc/%d/task" % inst.daemon.pid)
                  if (sysutil.proc_comm(int(t)) or "").startswith("strata-uring")]
        try:
            self.unmount(inst)
        except BenchError as e:
            return "%s misbehaves on unmount: %s" % (self.name, e)
        if names != fixture.expect_names:
            return ("%s shows %s for a stack that should read %s"
                    % (self.name, names, fixture.expect_names))
        if "uring=on" in self.extra and not queues:
            return "%s registered no io_uring queue (it fell back to /dev/fuse)" % self.name
        return None

    def probe_fixture(self, ctx):
        return ctx.probe_fixture()

    def lowerdir(self, fixture):
        return ":".join(fixture.lowers)

    def argv(self, fixture, upper, work, mnt):
        opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (self.lowerdir(fixture), upper, work)
        if self.extra:
            opts += "," + self.extra
        return [self.binary, "-f", "-o", opts, mnt]

    def mount(self, ctx, fixture, writable=False):
        scratch, upper, work, mnt = _overlay_dirs(ctx, self.name.replace("/", "_") + "-")
        log = open(os.path.join(scratch, "daemon.log"), "wb")
        t0 = time.perf_counter()
        daemon = subprocess.Popen(self.argv(fixture, upper, work, mnt),
                                  cwd=fixture.root, stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, start_new_session=True)
        log.close()
        try:
            while not sysutil.mountinfo_has(mnt):
                if daemon.poll() is not None:
                    raise BenchError("%s exited %d before the mount went live; log: %s"
                                     % (self.name, daemon.returncode,
                                        _tail(os.path.join(scratch, "daemon.log"))))
                if time.perf_counter() - t0 > MOUNT_TIMEOUT:
                    raise BenchError("%s did not mount %s within %.0fs"
                                     % (self.name, mnt, MOUNT_TIMEOUT))
                time.sleep(0.0005)
            # the mount exists once the daemon called mount(2); it is live when
            # the root answers
            sysutil.call_with_timeout(lambda: os.stat(mnt), MOUNT_TIMEOUT, mnt,
                                      "stat of the new mount's root")
        except BaseException:
            _stop_daemon(daemon, mnt)
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        inst = Instance(self, mnt, scratch, mount_s=time.perf_counter() - t0,
                        daemon=daemon)
        # the daemon's CPU until its mount answered: what mounting cost it
        inst.mount_cpu = (None, sysutil.proc_cpu_seconds(daemon.pid))
        return inst

    def unmount(self, inst):
        try:
            _stop_daemon(inst.daemon, inst.path)
            rc = inst.daemon.returncode
            if rc != 0:
                # a crash mid-workload must not pass as a slow run
                raise BenchError("%s %s; its log: %s"
                                 % (self.name, "was killed by signal %d" % -rc if rc < 0
                                    else "exited %d" % rc,
                                    _tail(os.path.join(inst.scratch, "daemon.log"))))
        finally:
            shutil.rmtree(inst.scratch, ignore_errors=True)


class PackedFs(FuseOverlay):
    """strata-fs over packed layer files (issue 16): the fixture's layers as
    `strata pack` or a packed store wrote them (fixture.packed, top first),
    mounted exactly as the strata-fs contender mounts directories."""

    roles = ("packed",)

    def probe(self, ctx):
        if not ctx.strata or not os.access(ctx.strata, os.X_OK):
            return "the strata tool is not built (no %s) to pack layers with" % ctx.strata
        return super().probe(ctx)

    def probe_fixture(self, ctx):
        from . import packed
        return packed.probe_packed(ctx, ctx.probe_fixture())

    def lowerdir(self, fixture):
        return ":".join(fixture.packed)


class Squashfuse(FuseOverlay):
    """squashfuse (Debian's package; its low-level squashfuse_ll where
    installed, the faster of its two programs) over an lz4 squashfs of the
    fixture's merged tree (fixture.sqfs): read-only, one image, no layers."""

    roles = ("packed",)

    def probe(self, ctx):
        if not shutil.which("mksquashfs"):
            return "mksquashfs is not installed (squashfs-tools; make setup)"
        return super().probe(ctx)

    def probe_fixture(self, ctx):
        from . import packed
        return packed.probe_sqfs(ctx, ctx.probe_fixture())

    def argv(self, fixture, upper, work, mnt):
        return [self.binary, "-f", fixture.sqfs, mnt]


class StoreFormat(Contender):
    """A strata store whose new layers take one format (STRATA_STORE_FORMAT):
    the import and size rows of issue 16. Nothing is mounted."""
    kind = "store"
    roles = ("packed",)

    def __init__(self, name, fmt):
        self.name = name
        self.fmt = fmt

    def probe(self, ctx):
        if not ctx.strata or not os.access(ctx.strata, os.X_OK):
            return "the strata tool is not built (no %s)" % ctx.strata
        return None

    def mount(self, ctx, fixture, writable=False):
        return Instance(self, None, tempfile.mkdtemp(prefix=self.name.replace(" ", "_") + "-",
                                                     dir=ctx.scratch))


class ShareCache(Contender):
    """Density rows only: strata-fs with `-o sharecache=on` (lower files
    opened read-only pass through to the lower file, so the mounts of one
    layer share its page cache), started as the plain strata-fs density rows
    are: via="mount" is the strata-fs row's path (one harness mount per
    container, `-o uring=off,sharecache=on`, the container started on it by
    bwrap), via="strata-run" the strata-run row's (`strata-run --fs-opt
    sharecache=on` with a writable layer per container). Either way the
    lower is the runimage fixture's layer directory, never a store's packed
    layer file: sharecache passes through directory layers only."""
    kind = "launcher"
    roles = ("density",)
    groups = ("density",)
    OPT = "sharecache=on"

    def __init__(self, name, binary, via):
        self.name = name
        self.binary = binary
        self.via = via
        # what the probes mount, and the "mount" row's filesystem
        self.fs = FuseOverlay(name, binary, "uring=off," + self.OPT)
        self.inner = None

    def takes_part(self, workload):
        return workload.group in self.groups

    ROOT_ONLY = True

    def probe(self, ctx):
        # FUSE passthrough needs CAP_SYS_ADMIN in the initial user
        # namespace; a rootless mount takes the option and keeps one copy
        # per mount, which would pass for a sharecache figure
        if self.ROOT_ONLY and (ctx.rootless or os.geteuid() != 0):
            return ("sharecache passes lower files through (FUSE passthrough), which needs "
                    "CAP_SYS_ADMIN: root only")
        why = self.fs.probe(ctx) or self._passes_through(ctx)
        if why:
            return why
        from . import launchers
        if self.via == "mount":
            self.inner = launchers.DensityVia(self.fs)
        else:
            self.inner = launchers.DensityStrataRun(self.name, self.binary)
        return self.inner.probe(ctx)

    def _passes_through(self, ctx):
        """None when a lower file read through a mount left no pages in the
        mount's own inode (its reads went to the lower file), else why not."""
        from .workloads import cached_bytes
        inst = self.fs.mount(ctx, ctx.probe_fixture())
        try:
            merged = os.path.join(inst.path, "a")
            with open(merged, "rb") as f:
                f.read()
            own = cached_bytes(merged)
        except (OSError, BenchError) as e:
            return "%s could not count what its test stack caches: %s" % (self.name, e)
        finally:
            self.fs.unmount(inst)
        if own is None:
            return "no cachestat(2) here (Linux 6.5+) to tell whether files pass through"
        if own:
            return ("%s cached a lower file's data in the mount's own inode: the kernel did not "
                    "take %s (Linux 6.9+ for passthrough, 6.6+ for direct)" % (self.name, self.OPT))
        return None

    def mount(self, ctx, fixture, writable=False):
        if self.via == "mount":
            return self.inner.mount(ctx, fixture, writable)
        return self._strata_run(ctx, fixture)

    def _strata_run(self, ctx, fixture):
        """The strata-run density row's start with --fs-opt added."""
        from . import launchers as L
        inst = self.inner.mount(ctx, fixture)

        def start(i, ready):
            argv = L.strata_run_argv(ctx, self.binary, fixture, L.DENSITY_CMD,
                                     binds=[(ready, "/ready")],
                                     upper=os.path.join(inst.scratch, "c%d" % i))
            argv[1:1] = ["--env", "BENCH_ID=%d" % i, "--fs-opt", self.OPT]
            return L.Running(proc=L._spawn(argv, str(i), inst.scratch))
        inst.start = start
        return inst

    def unmount(self, inst):
        self.inner.unmount(inst)


class ShareDirect(ShareCache):
    """Density rows only: the same two paths with `-o sharecache=direct`:
    lower files opened read-only are read uncached (FOPEN_DIRECT_IO), from
    the layer's page cache, which every mount shares. No passthrough, so
    rootless too."""
    OPT = "sharecache=direct"
    ROOT_ONLY = False


def _tail(path, n=400):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace").strip() or "(empty)"
    except OSError:
        return "(no log)"


def _stop_daemon(daemon, mnt):
    err = None
    if sysutil.mountinfo_has(mnt):
        try:
            sysutil.umount(mnt)
        except BenchError as e:
            err = e
            sysutil.fuse_abort(mnt)
            sysutil.umount(mnt)
    try:
        daemon.wait(timeout=10)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        err = err or BenchError("daemon pid %d did not exit after unmount of %s; killed it"
                                % (daemon.pid, mnt))
    if err:
        raise err


def all_contenders(ctx):
    builddir = ctx.builddir
    strata = os.path.join(builddir, "fs", "strata-fs") if builddir else None
    out = [Plain()]
    if ctx.rootless:
        # in a user namespace overlayfs takes its xattrs from user.* and
        # refuses redirect_dir and metacopy
        out.append(KernelOverlay("kernel", "userxattr"))
    else:
        out += [KernelOverlay("kernel", "redirect_dir=on"),
                # metacopy only changes copy-up, so it runs only there
                KernelOverlay("kernel-metacopy", "redirect_dir=on,metacopy=on",
                              roles=("copy-up",))]
    out.append(FuseOverlay("fuse-overlayfs", shutil.which("fuse-overlayfs")))
    # The default host: requests through /dev/fuse, whatever enable_uring a
    # previous run or test left behind (Debian ships it off, and a rootless
    # user cannot turn it on). --uring adds the io_uring column.
    out.append(FuseOverlay("strata-fs", strata, "uring=off"))
    if ctx.args.uring:
        out.append(FuseOverlay("strata-fs+uring", strata, "uring=on"))
    # issue 19's density rows only: N mounts of one image sharing its cache
    out += [ShareCache("strata-fs+sharecache", strata, "mount"),
            ShareCache("strata-run+sharecache", strata, "strata-run"),
            ShareDirect("strata-fs+sharedirect", strata, "mount"),
            ShareDirect("strata-run+sharedirect", strata, "strata-run")]
    # issue 16's rows only
    out.append(PackedFs("strata-fs packed", strata, "uring=off"))
    out.append(Squashfuse("squashfuse", shutil.which("squashfuse_ll") or shutil.which("squashfuse")))
    out += [StoreFormat("dir store", "dir"), StoreFormat("packed store", "packed")]
    return out


