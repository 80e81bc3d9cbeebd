"""Contenders that start containers rather than mount trees: the launcher
rows (start of /bin/true, exec into a running container), the density rows
(N containers of one image, started one after the other and kept running)
and the build rows (strata build against podman build). They all work on
the "runimage" fixture: one layer holding a small root filesystem and a
data tree the containers read."""

import json
import os
import shutil
import signal
import subprocess
import tempfile

from . import sysutil
from .contenders import Contender, Instance
from .sysutil import BenchError

IMAGE = "bench-img:1"
READY_TIMEOUT = 120.0


class Special(Contender):
    """Takes part in the workloads of its groups whose key it knows."""
    kind = "launcher"
    groups = ()
    keys = None

    def takes_part(self, workload):
        return workload.group in self.groups and (self.keys is None or workload.key in self.keys)

    def unmount(self, inst):
        shutil.rmtree(inst.scratch, ignore_errors=True)


def _scratch(ctx, name):
    return tempfile.mkdtemp(prefix=name.replace("/", "_").replace(" ", "_") + "-", dir=ctx.scratch)


def _need(binary, what):
    if not binary:
        return "%s is not installed" % what
    if not os.access(binary, os.X_OK):
        return "%s not built yet (no %s)" % (what, binary)
    return None


# -- starting /bin/true and exec ---------------------------------------------

class Argv(Special):
    """A launcher given as a command line: bwrap, strata-run. For "exec" it
    is the reference a fresh start is compared with."""
    groups = ("launcher",)

    def __init__(self, name, binary, make_argv, keys=("start", "exec")):
        self.name = name
        self.binary = binary
        self.make_argv = make_argv
        self.keys = keys

    def probe(self, ctx):
        return _need(self.binary, self.name)

    def mount(self, ctx, fixture, writable=False):
        scratch = _scratch(ctx, self.name)
        inst = Instance(self, fixture.root, scratch)
        inst.argv = self.make_argv(ctx, fixture, scratch, ["/bin/true"])
        return inst


def bwrap_argv(ctx, fixture, scratch, cmd, rw_root=None, binds=()):
    argv = [shutil.which("bwrap"), "--unshare-all", "--die-with-parent"]
    argv += ["--bind", rw_root, "/"] if rw_root else ["--ro-bind", fixture.layer_path(0), "/"]
    for src, dst in binds:
        argv += ["--bind", src, dst]
    return argv + ["--proc", "/proc", "--dev", "/dev"] + cmd


def strata_run_argv(ctx, fs_program, fixture, cmd, binds=(), upper=None, lowerdir=None, fs_opt=None):
    argv = [ctx.strata_run, "--fs-program", fs_program, "--lowerdir", lowerdir or fixture.layer_path(0)]
    if fs_opt:
        argv += ["--fs-opt", fs_opt]
    if upper:
        os.makedirs(os.path.join(upper, "u"))
        os.makedirs(os.path.join(upper, "w"))
        argv += ["--upperdir", os.path.join(upper, "u"), "--workdir", os.path.join(upper, "w")]
    for src, dst in binds:
        argv += ["--bind", "%s:%s" % (src, dst)]
    return argv + ["--"] + cmd


def store_lowerdir(ctx):
    """The image's layers as `strata run` mounts them: the files of the run's
    store (packed layers, the store's default), top first."""
    if getattr(ctx, "store_lowerdir", None) is None:
        out = sysutil.run_setup([ctx.strata, "--store", ctx.strata_store(), "inspect", IMAGE],
                                what="strata inspect of the container image")
        layers = json.loads(out)["layers"]
        ctx.store_lowerdir = ":".join(l["path"] for l in reversed(layers))
    return ctx.store_lowerdir


class Strata(Special):
    """The strata tool: `run --rm IMAGE /bin/true` for "start"; for "exec",
    a detached container (untimed) and `exec CONTAINER /bin/true`."""
    name = "strata"
    groups = ("launcher",)
    keys = ("start", "exec")

    def probe(self, ctx):
        why = _need(ctx.strata, "strata")
        if why:
            return why
        h = subprocess.run([ctx.strata, "run", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if "--detach" not in h.stdout:
            return "this strata has no `run -d` yet"
        return None

    def mount(self, ctx, fixture, writable=False):
        store = ctx.strata_store()
        scratch = _scratch(ctx, self.name)
        inst = Instance(self, fixture.root, scratch)
        inst.container = None
        if ctx.current_workload.key == "start":
            inst.argv = [ctx.strata, "--store", store, "run", "--rm", IMAGE, "/bin/true"]
            return inst
        name = "bench-exec-%d" % next(ctx.counter)
        sysutil.run_setup([ctx.strata, "--store", store, "run", "-d", "--name", name, IMAGE,
                           "sleep", "1000000"], what="start a detached container", timeout=120)
        inst.container = name
        inst.argv = [ctx.strata, "--store", store, "exec", name, "/bin/true"]
        return inst

    def unmount(self, inst):
        try:
            if inst.container:
                sysutil.run_setup([inst.argv[0], "--store", inst.argv[2], "rm", "-f",
                                   inst.container], what="remove the container", timeout=120)
        finally:
            shutil.rmtree(inst.scratch, ignore_errors=True)


# podman on a hybrid-cgroup host: crun refuses the empty v2 hierarchy at
# /sys/fs/cgroup/unified, so an empty tmpfs covers it in the harness's own
# mount namespace (run.sh made it private; the rootless harness has its own,
# where the cgroup2 mount, inherited, could not be unmounted) for the podman
# rows, and is taken off after.
UNIFIED = "/sys/fs/cgroup/unified"


def _private_mount_ns(ctx):
    """run.sh starts the harness with `unshare --mount` (unless
    STRATA_BENCH_NO_UNSHARE): then its mount namespace is not its parent's.
    The rootless harness always has a mount namespace of its own."""
    if ctx.rootless:
        return True
    try:
        mine = os.readlink("/proc/self/ns/mnt")
        # a mode of a multi-mode run: its parent harness found it private
        if os.environ.get(PRIVATE_NS_ENV) == mine:
            return True
        return mine != os.readlink("/proc/%d/ns/mnt" % os.getppid())
    except OSError:
        return False


PRIVATE_NS_ENV = "STRATA_BENCH_PRIVATE_NS"


def note_private_mount_ns(ctx):
    """Called by the top harness before it starts the modes as children."""
    if _private_mount_ns(ctx):
        os.environ[PRIVATE_NS_ENV] = os.readlink("/proc/self/ns/mnt")


class CgroupHide:
    """Counted: the repetitions of two podman contenders interleave, so one
    contender's unmount must not uncover the hierarchy while the other's
    instance still runs (crun then wrote into the empty v2 tree: ENOSPC)."""
    def __init__(self, ctx):
        self.hidden = False
        self.users = 0

    def hide(self):
        self.users += 1
        if self.hidden or not sysutil.mountinfo_has(UNIFIED):
            return
        # root writes through the mode: crun makes its cgroup directories and
        # files here on each run of a batch, so leave room for them
        sysutil.mount("tmpfs", UNIFIED, "tmpfs", "size=4m,mode=0555")
        self.hidden = True

    def show(self, force=False):
        self.users = 0 if force else max(0, self.users - 1)
        if not self.hidden or self.users:
            return
        sysutil.umount(UNIFIED, lazy_fallback=False)
        self.hidden = False


class Podman(Special):
    """podman with an overlay mount_program (fuse-overlayfs or strata-fs),
    its store private to the run (--root/--runroot on the command line,
    which is also why mount_program is passed there)."""
    groups = ("launcher",)

    def __init__(self, name, mount_program, keys=("start", "exec")):
        self.name = name
        self.mount_program = mount_program
        self.keys = keys
        self.ready = False

    def base(self, ctx):
        d = os.path.join(ctx.scratch, "podman-" + self.name.replace("+", "-").replace(" ", "-"))
        if not getattr(self, "runroot", None):
            # podman refuses a runroot path longer than 50 characters
            self.runroot = tempfile.mkdtemp(prefix="sbp-", dir="/tmp")
            ctx.atexit.append(lambda: shutil.rmtree(self.runroot, ignore_errors=True))
        return [shutil.which("podman"), "--root", os.path.join(d, "root"),
                "--runroot", self.runroot, "--tmpdir", os.path.join(d, "tmp"),
                "--storage-driver", "overlay",
                "--storage-opt", "overlay.mount_program=" + self.mount_program,
                "--cgroup-manager=cgroupfs", "--events-backend=file"]

    def run_opts(self, ctx):
        if ctx.rootless:
            return ["--network=none", "--pull=never"]
        # root lacks CAP_SYS_RESOURCE on this kind of host (docs/podman.md)
        return ["--network=none", "--pull=never", "--ulimit", "nofile=20000:20000",
                "--ulimit", "nproc=4096:4096"]

    def probe(self, ctx):
        why = _need(shutil.which("podman"), "podman") or _need(self.mount_program, self.name)
        if why:
            return why
        if sysutil.mountinfo_has(UNIFIED) and not _private_mount_ns(ctx):
            return ("the host's hybrid cgroups need %s unmounted for crun, and the harness "
                    "is not in a private mount namespace (STRATA_BENCH_NO_UNSHARE)" % UNIFIED)
        try:
            self.setup(ctx)
            inst = self.mount(ctx, ctx.fixture("runimage"), key="start")
            try:
                r = sysutil.run_measured(inst.argv, timeout=120)
            finally:
                self.unmount(inst)
            if r.rc != 0:
                return "`podman run --rm %s /bin/true` exited %d: %s" % (
                    IMAGE, r.rc, r.err.strip()[-300:])
        except (BenchError, OSError) as e:
            return "podman does not run here: %s" % e
        return None

    def setup(self, ctx):
        if self.ready:
            return
        ctx.cg.hide()
        try:
            sysutil.run_setup(self.base(ctx) + ["import", ctx.runimage_tar(), "localhost/" + IMAGE],
                              what="podman import", timeout=600)
        finally:
            ctx.cg.show()
        self.ready = True

    def mount(self, ctx, fixture, writable=False, key=None):
        key = key or ctx.current_workload.key
        scratch = _scratch(ctx, self.name)
        inst = Instance(self, fixture.root, scratch)
        inst.container = None
        inst.base = self.base(ctx)
        inst.cg = ctx.cg
        ctx.cg.hide()
        try:
            if key == "start":
                inst.argv = inst.base + ["run", "--rm"] + self.run_opts(ctx) + ["localhost/" + IMAGE,
                                                                            "/bin/true"]
            elif key == "exec":
                name = "bench-exec-%d" % next(ctx.counter)
                sysutil.run_setup(inst.base + ["run", "-d", "--name", name] + self.run_opts(ctx)
                                  + ["localhost/" + IMAGE, "sleep", "1000000"],
                                  what="podman run -d", timeout=120)
                inst.container = name
                inst.argv = inst.base + ["exec", name, "/bin/true"]
            else:
                inst.argv = None
        except BaseException:
            ctx.cg.show()
            raise
        return inst

    def unmount(self, inst):
        try:
            if inst.container:
                sysutil.run_setup(inst.base + ["rm", "-f", "-t", "0", inst.container],
                                  what="podman rm -f", timeout=120)
        finally:
            inst.cg.show()
            shutil.rmtree(inst.scratch, ignore_errors=True)


# -- density: N containers of one image, kept running -------------------------

# each container reads the image's data tree, says it is ready, and stays
DENSITY_CMD = ["/bin/sh", "-c",
               "find /data -type f -exec cat {} + >/dev/null && : > /ready/$BENCH_ID "
               "&& exec sleep 1000000"]


class Running:
    """One started container: how to stop it, and its processes."""

    def __init__(self, proc=None, stop=None, mounted=None):
        self.proc = proc
        self.stop_fn = stop
        self.mounted = mounted

    def stop(self):
        err = None
        try:
            if self.stop_fn:
                self.stop_fn()
            if self.proc is not None and self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                except OSError:
                    pass
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
                    err = BenchError("container pid %d ignored SIGTERM for 30 s; killed"
                                     % self.proc.pid)
        finally:
            if self.mounted:
                contender, inst = self.mounted
                contender.unmount(inst)
        if err:
            raise err


def _spawn(argv, env_id, scratch):
    log = open(os.path.join(scratch, "ctr-%s.log" % env_id), "wb")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, env=dict(os.environ, BENCH_ID=env_id))
    finally:
        log.close()


class DensityVia(Special):
    """A filesystem contender (kernel overlayfs, fuse-overlayfs, strata-fs)
    mounted by the harness, one mount per container as engines do, and the
    container started on it by bwrap: the same launch path for all three,
    because strata-run serves its root only through a FUSE daemon
    (--fs-program gets /dev/fd/N) and so cannot start a container on a
    kernel overlay mount."""
    groups = ("density",)

    def __init__(self, fs):
        self.fs = fs
        self.name = fs.name

    def probe(self, ctx):
        return _need(shutil.which("bwrap"), "bwrap")

    def mount(self, ctx, fixture, writable=False):
        scratch = _scratch(ctx, "density-" + self.name)
        inst = Instance(self, fixture.root, scratch)
        inst.fixture = fixture

        def start(i, ready):
            m = self.fs.mount(ctx, fixture, writable=True)
            ctx.live.add(m)
            try:
                argv = bwrap_argv(ctx, fixture, scratch, DENSITY_CMD, rw_root=m.path,
                                  binds=[(ready, "/ready")])
                argv[1:1] = ["--setenv", "BENCH_ID", str(i)]
                p = _spawn(argv, str(i), scratch)
            except BaseException:
                ctx.live.discard(m)
                self.fs.unmount(m)
                raise

            def unmount_it(c, mm):
                ctx.live.discard(mm)
                c.unmount(mm)
            holder = type("M", (), {"unmount": staticmethod(lambda mm: unmount_it(self.fs, mm))})
            return Running(proc=p, mounted=(holder, m))
        inst.start = start
        # a FUSE mount's files hold pages of their own: counted per mount
        inst.merged_paths = (lambda r: r.mounted[1].path) if self.fs.kind == "fuse" else (lambda r: None)
        return inst


class DensityStrataRun(Special):
    """strata-run in the background, its FUSE daemon given by --fs-program."""
    groups = ("density",)

    def __init__(self, name, fs_program):
        self.name = name
        self.fs_program = fs_program

    def probe(self, ctx):
        return _need(ctx.strata_run, "strata-run") or _need(self.fs_program, self.name)

    def mount(self, ctx, fixture, writable=False):
        scratch = _scratch(ctx, "density-" + self.name)
        inst = Instance(self, fixture.root, scratch)

        def start(i, ready):
            argv = strata_run_argv(ctx, self.fs_program, fixture, DENSITY_CMD,
                                   binds=[(ready, "/ready")],
                                   upper=os.path.join(scratch, "c%d" % i))
            argv[1:1] = ["--env", "BENCH_ID=%d" % i]
            return Running(proc=_spawn(argv, str(i), scratch))
        inst.start = start
        return inst


class DensityStrata(Special):
    """`strata run -d`: the lifecycle CLI, its monitor owning the daemon."""
    name = "strata run -d"
    groups = ("density",)

    def probe(self, ctx):
        return Strata().probe(ctx)

    def mount(self, ctx, fixture, writable=False):
        store = ctx.strata_store()
        scratch = _scratch(ctx, "density-strata")
        inst = Instance(self, fixture.root, scratch)

        def start(i, ready):
            name = "bench-density-%d-%d" % (next(ctx.counter), i)
            sysutil.run_setup([ctx.strata, "--store", store, "run", "-d", "--name", name,
                               "-e", "BENCH_ID=%d" % i, "-v", "%s:/ready" % ready, IMAGE]
                              + DENSITY_CMD, what="strata run -d", timeout=120)
            return Running(stop=lambda: sysutil.run_setup(
                [ctx.strata, "--store", store, "rm", "-f", name], what="strata rm -f",
                timeout=120))
        inst.start = start
        return inst


# -- build ----------------------------------------------------------------------

class StrataBuild(Special):
    name = "strata build"
    groups = ("build",)

    def probe(self, ctx):
        why = _need(ctx.strata, "strata")
        if why:
            return why
        h = subprocess.run([ctx.strata, "build", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        return None if "--no-cache" in h.stdout else "this strata has no `build --no-cache`"

    def mount(self, ctx, fixture, writable=False):
        inst = Instance(self, fixture.root, _scratch(ctx, "build-strata"))
        store = ctx.strata_store()
        inst.build = lambda ctxdir, tag, no_cache: (
            [ctx.strata, "--store", store, "build", "-t", tag]
            + (["--no-cache"] if no_cache else []) + ["--network", "none", ctxdir])
        return inst


class PodmanBuild(Podman):
    groups = ("build",)

    def __init__(self, name, mount_program):
        Podman.__init__(self, name, mount_program, keys=None)

    def mount(self, ctx, fixture, writable=False, key="build"):
        inst = Podman.mount(self, ctx, fixture, key=key)
        inst.build = lambda ctxdir, tag, no_cache: (
            inst.base + ["build", "--pull=never", "--network=none", "-t", tag]
            + (["--no-cache"] if no_cache else []) + [ctxdir])
        return inst


def contenders(ctx):
    sr = ctx.strata_run
    strata_fs = os.path.join(ctx.builddir, "fs", "strata-fs") if ctx.builddir else None
    fo = shutil.which("fuse-overlayfs")
    out = [
        Argv("bwrap", shutil.which("bwrap"),
             lambda c, fx, s, cmd: bwrap_argv(c, fx, s, cmd)),
        Argv("strata-run", sr, lambda c, fx, s, cmd: strata_run_argv(c, strata_fs, fx, cmd)),
        # the same job as `strata run --rm`: a container with a writable layer
        Argv("strata-run+upper", sr,
             lambda c, fx, s, cmd: strata_run_argv(c, strata_fs, fx, cmd,
                                                   upper=os.path.join(s, "rw")),
             keys=("start",)),
        # the same job over the very layer `strata run` mounts: its store's
        # packed layer file, not the fixture's directory, with the option
        # strata gives it (programs kept decompressed beside the layer)
        Argv("strata-run+upper packed", sr,
             lambda c, fx, s, cmd: strata_run_argv(c, strata_fs, fx, cmd, upper=os.path.join(s, "rw"),
                                                   lowerdir=store_lowerdir(c), fs_opt="progcache"),
             keys=("start",)),
        # the same launcher over fuse-overlayfs: separates the launcher's own
        # cost from its filesystem's start-up
        Argv("strata-run+fuse-ovl", sr, lambda c, fx, s, cmd: strata_run_argv(c, fo, fx, cmd),
             keys=("start",)),
        Strata(),
        Podman("podman+strata-fs", strata_fs),
        Podman("podman+fuse-ovl", fo),
        DensityStrata(),
        DensityStrataRun("strata-run", strata_fs),
        DensityStrataRun("strata-run+fuse-ovl", fo),
        StrataBuild(),
        PodmanBuild("podman build+strata-fs", strata_fs),
        PodmanBuild("podman build+fuse-ovl", fo),
    ]
    return out
