"""The run: builds fixtures on demand, then for every workload runs every
contender once per repetition, interleaved (contender order rotates each
repetition so none is always first after a cache drop), each on a fresh mount."""

import argparse
import itertools
import os
import pwd
import socket
import stat
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import contenders as C
from . import fixtures as F
from . import launchers as L
from . import report
from . import sysutil
from . import workloads as W
from .scratchfs import JournaledScratch
from .sysutil import BenchError

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# issue 16's data set (benchlib/debset.py): (tag in its OCI layout, name
# imported as); one image twice under two names, two images on one base,
# and a squashed copy of py (the same files in another layer)
PACKED_SMALL = [("py", "deb-py:1"), ("py", "deb-py-again:1"), ("curl", "deb-curl:1"),
                ("squashed", "deb-py-squashed:1")]
PACKED_FULL = [("base", "deb-base:1"), ("py", "deb-py:1"), ("dev", "deb-dev:1"),
               ("dev", "deb-dev-again:1"), ("curl", "deb-curl:1"), ("squashed", "deb-py-squashed:1")]

SIZES = {
    # proves every workload and mode runs end to end; its figures mean nothing
    "smoke": dict(reps=1, big_mib=8, randread_mib=1, randwrite_size_mib=2,
                  randwrite_io_mib=1, untar_files=200, stacks=[2, 16],
                  synthetic_base_files=500, launch_batch=1,
                  tree=["usr/share/doc", "usr/share", "opt"], tar_path="usr/share/doc",
                  many_files=1000, density=[1, 3], density_mib=2, density_reps=1,
                  build_files=200, packed_image="py", packed_imports=PACKED_SMALL),
    "quick": dict(reps=3, big_mib=64, randread_mib=4, randwrite_size_mib=8,
                  randwrite_io_mib=4, untar_files=1000, stacks=[2, 64, 500],
                  synthetic_base_files=3000, launch_batch=3,
                  tree=["usr/share/doc", "usr/share", "opt"], tar_path="usr/share/doc",
                  many_files=10000, density=[1, 5], density_mib=16, density_reps=1,
                  build_files=2000, packed_image="py", packed_imports=PACKED_SMALL),
    "full": dict(reps=5, big_mib=1024, randread_mib=32, randwrite_size_mib=128,
                 randwrite_io_mib=64, untar_files=20000, stacks=[2, 16, 64, 128, 500],
                 synthetic_base_files=8000, launch_batch=10,
                 tree=["usr/share", "usr/lib", "usr", "opt"], tar_path=".",
                 many_files=100000, density=[1, 5, 20], density_mib=64, density_reps=3,
                 build_files=20000, packed_image="dev", packed_imports=PACKED_FULL),
}
# the 1 GiB workloads dominate the full run's time; three repetitions of them
HEAVY_REPS = 3


class Context:
    def __init__(self, args):
        self.args = args
        self.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        self.sizes = dict(SIZES[self.mode])
        if args.reps:
            self.sizes["reps"] = args.reps
        self.rootless = bool(args.rootless_inner)
        self.busy = bool(args.busy_hogs)
        self.label = self.mode + ("-rootless" if args.rootless_inner else "") + (
            "-busy" if args.busy_hogs else "")
        # generous against kernel overlayfs's slowest run (seconds), short
        # enough that a hung daemon does not eat the run
        self.timeout = 180 if self.mode == "full" else 60
        self.build_timeout = 1800 if self.mode == "full" else 300
        builddir = args.builddir
        if not builddir:
            # make's default build directory, so `sh bench/run.sh` alone finds it
            guess = os.path.join(os.path.dirname(BENCH_DIR), "build")
            builddir = guess if os.path.isdir(guess) else None
        elif not os.path.isdir(builddir):
            raise SystemExit("bench: build directory %s does not exist; build first "
                             "(make build) or pass the right one" % builddir)
        self.builddir = os.path.abspath(builddir) if builddir else None
        self.cache = args.cache or os.path.join(BENCH_DIR, "cache")
        self.results = args.results or os.path.join(BENCH_DIR, "results")
        self.strata = os.path.join(self.builddir, "tools", "strata") if self.builddir else None
        self.strata_run = (os.path.join(self.builddir, "runtime", "strata-run")
                           if self.builddir else None)
        self.store = None
        self._tar = None
        self._buildctx = None
        self.counter = itertools.count(1)
        self.current_workload = None
        self.uring_on = False
        os.makedirs(self.cache, exist_ok=True)
        os.makedirs(self.results, exist_ok=True)
        self.scratch = tempfile.mkdtemp(prefix="strata-bench-", dir=scratch_base(args))
        self._fixtures = {}
        self._flat = {}
        self._tarball = None
        self.flatten_via = None
        self.live = set()
        self.notes = []
        self.logged = []
        self.load_start = os.getloadavg()[0]
        self.cg = L.CgroupHide(self)
        self.atexit = []

    def log(self, msg):
        self.logged.append(msg)
        print(msg, file=sys.stderr, flush=True)

    def note(self, msg):
        self.notes.append(msg)
        self.log("note: " + msg)

    def fixture(self, name):
        if name not in self._fixtures:
            t0 = time.perf_counter()
            # a fixture that failed once is not half-rebuilt for the next workload
            self._fixtures[name] = BenchError("could not be built (see above)")
            if name == "image":
                fx = F.image(self)
            elif name == "many":
                fx = F.many(self, self.sizes["many_files"])
            elif name == "big":
                fx = F.big(self, self.sizes["big_mib"])
            elif name == "runimage":
                fx = F.runimage(self, self.sizes["density_mib"])
            elif name.startswith("stack"):
                fx = F.stack(self, int(name[5:]))
            elif name in ("debset", "debimage", "pkbig"):
                from . import packed
                fx = packed.fixture(self, name)
            else:
                raise BenchError("unknown fixture %s" % name)
            self.log("fixture %s ready (%s) in %.1fs" % (name, fx.info, time.perf_counter() - t0))
            self._fixtures[name] = fx
        if isinstance(self._fixtures[name], BenchError):
            raise self._fixtures[name]
        return self._fixtures[name]

    def probe_fixture(self):
        return F.probe(self)

    def flat_tree(self, fixture):
        if fixture.name not in self._flat:
            if self.flatten_via is None and len(fixture.lowers) > 1:
                raise BenchError("no overlay contender mounts here, so the plain baseline "
                                 "cannot be flattened")
            dst = os.path.join(self.scratch, "flat-" + fixture.name)
            self._flat[fixture.name] = F.flatten(self, fixture, self.flatten_via, dst)
        return self._flat[fixture.name]

    def tarball(self):
        if self._tarball is None:
            self._tarball = F.untar_tarball(self, self.sizes["untar_files"])
        return self._tarball

    def strata_store(self):
        """A store private to the run holding the runimage as bench-img:1
        (also as localhost/bench-img:1, the name the Containerfile uses)."""
        if self.store is None:
            fx = self.fixture("runimage")
            store = os.path.join(self.scratch, "store")
            sysutil.run_setup([self.strata, "--store", store, "import",
                               "rootfs:" + fx.layer_path(0), "bench-img:1"],
                              what="strata import of the container image", timeout=900)
            sysutil.run_setup([self.strata, "--store", store, "tag", "bench-img:1",
                               "localhost/bench-img:1"], what="strata tag")
            self.store = store
        return self.store

    def runimage_tar(self):
        if self._tar is None:
            fx = self.fixture("runimage")
            tar = os.path.join(self.scratch, "runimage.tar")
            sysutil.run_setup(["tar", "-C", fx.layer_path(0), "-cf", tar, "."],
                              what="tar of the container image", timeout=900)
            self._tar = tar
        return self._tar

    def build_context(self):
        if self._buildctx is None:
            self._buildctx = F.build_context(self, self.sizes["build_files"])
        return self._buildctx

    def cleanup(self):
        for inst in list(self.live):
            try:
                inst.contender.unmount(inst)
            except BenchError as e:
                self.log("cleanup: %s" % e)
        self.live.clear()
        self.cg.show(force=True)
        for fn in self.atexit:
            fn()
        # podman leaves its store's overlay directory bind-mounted (in this
        # private namespace): take whatever is left under scratch down first
        left = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split(" ")[4].replace("\\040", " ")
                if mp.startswith(self.scratch + "/"):
                    left.append(mp)
        for mp in sorted(left, key=len, reverse=True):
            try:
                sysutil.umount(mp)
            except BenchError as e:
                self.log("cleanup: %s" % e)
        if self.args.keep:
            self.log("scratch kept in %s" % self.scratch)
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)


# what the run made the scratch on, for its report (the rootless run's too)
SCRATCH_NOTE_ENV = "STRATA_BENCH_SCRATCH_NOTE"


def scratch_base(args):
    """Where mounts and uppers go: --scratch, else $TMPDIR, else /var/tmp."""
    return args.scratch or os.environ.get("TMPDIR") or "/var/tmp"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run.sh",
                                description="strata benchmark suite: layered filesystems side by side")
    p.add_argument("builddir", nargs="?", default=None,
                   help="CMake build directory holding fs/strata-fs and runtime/strata-run")
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions, a subset (~1 min)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, 1 repetition: proves the workloads run, measures nothing")
    p.add_argument("--modes", help="comma-separated: default,busy,rootless (the full suite's "
                   "default is all three; --quick and --smoke run default unless told)")
    p.add_argument("--busy", action="store_true", help="same as --modes busy")
    p.add_argument("--rootless", action="store_true", help="same as --modes rootless")
    p.add_argument("--uring", action="store_true",
                   help="add strata-fs over FUSE io_uring as a column where the kernel offers it "
                        "(enable_uring turned on for the run and restored after; on by default "
                        "in the full suite)")
    p.add_argument("--no-uring", action="store_true", help="no io_uring column in the full suite")
    p.add_argument("--reps", type=int, help="repetitions per workload and contender")
    p.add_argument("--only", help="regular expression: run only workloads whose name or group matches")
    p.add_argument("--contenders", help="comma-separated subset, e.g. kernel,fuse-overlayfs")
    p.add_argument("--scratch", help="directory for mounts and uppers (default $TMPDIR or /var/tmp)")
    p.add_argument("--results", help="directory for CSV and PNG (default bench/results)")
    p.add_argument("--synthetic-base", action="store_true",
                   help="use a generated tree instead of the debootstrap rootfs as the image base")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--host-scratch", action="store_true",
                   help="measure on the scratch directory's own filesystem even when it is an "
                   "ext4 without a journal (by default the run then makes a journaled ext4 "
                   "for its uppers and mounts)")
    p.add_argument("--list", action="store_true", help="list workloads and contenders, run nothing")
    p.add_argument("--host-uring", action="store_true", help=argparse.SUPPRESS)
    # internal: one mode of a multi-mode run, and the rootless inner run
    p.add_argument("--cache", help=argparse.SUPPRESS)
    p.add_argument("--busy-hogs", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rootless-inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fusedev", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.reps is not None and a.reps < 1:
        p.error("--reps must be at least 1")
    return a


URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def set_uring(ctx):
    """With --uring: FUSE over io_uring on for the run (the strata-fs+uring
    column); returns the value to restore (None: nothing changed). The
    plain strata-fs column asks for uring=off, so it measures /dev/fuse as
    a default host has it whatever the setting."""
    try:
        with open(URING_PARAM) as f:
            before = f.read().strip()
    except OSError:
        if ctx.args.uring:
            ctx.note("this kernel has no FUSE over io_uring (%s): no io_uring column" % URING_PARAM)
        return None
    if not ctx.args.uring:
        ctx.note("default host: strata-fs serves through /dev/fuse (uring=off; the host's "
                 "enable_uring is %s); --uring adds the io_uring column" % before)
        return None
    if before == "Y":
        ctx.uring_on = True
        ctx.note("fuse.enable_uring=Y as the host has it: the strata-fs+uring column takes "
                 "requests through io_uring")
        return None
    try:
        with open(URING_PARAM, "w") as f:
            f.write("Y")
    except OSError as e:
        ctx.note("cannot turn on %s (%s): no io_uring column" % (URING_PARAM, e))
        return None
    ctx.uring_on = True
    ctx.note("fuse.enable_uring=Y for this run (restored to %s after) for the strata-fs+uring "
             "column" % before)
    return before


def select_contenders(ctx, groups):
    chosen = []
    wanted = set(ctx.args.contenders.split(",")) if ctx.args.contenders else None
    for c in C.all_contenders(ctx):
        if wanted and c.name not in wanted and c.kind != "plain":
            continue
        # a contender of some groups only is not probed for a run without them
        if "all" not in c.roles and not set(c.roles) & groups:
            continue
        why = c.probe(ctx)
        if why:
            ctx.note("skipping %s: %s" % (c.name, why))
            continue
        chosen.append(c)
    # the density rows mount each chosen overlay once per container
    special = [L.DensityVia(c) for c in chosen if c.kind in ("kernel", "fuse")
               and "all" in c.roles]
    special += L.contenders(ctx)
    for c in special:
        if wanted and c.name not in wanted and c.name != "bwrap" and not isinstance(c, L.DensityVia):
            continue
        # probing podman imports an image: only for groups that will run
        if not set(c.groups) & groups:
            continue
        why = c.probe(ctx)
        if why:
            ctx.note("skipping %s (%s): %s" % (c.name, "/".join(c.groups), why))
            continue
        chosen.append(c)
    for name in ("kernel", "fuse-overlayfs"):
        for c in chosen:
            if c.name == name:
                ctx.flatten_via = c
                break
        if ctx.flatten_via:
            break
    if ctx.flatten_via is None:
        # plain still needs some overlay to flatten the stacks, selected or not
        k = C.KernelOverlay("kernel", "redirect_dir=on")
        if k.probe(ctx) is None:
            ctx.flatten_via = k
    return chosen


def manifest(root, timeout):
    """What a process sees: every path with its type, mode, owner, size (of
    files) and symlink target. Timing a view that is wrong would be
    worthless. find runs as a child so a hung daemon costs only the timeout."""
    p = subprocess.run(["find", ".", "-mindepth", "1", "-printf", "%P\\0%y %m %U %G %s %l\\0"],
                       cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if p.returncode != 0:
        raise BenchError("find over %s failed: %s" % (root, p.stderr.decode(errors="replace")[-300:]))
    parts = p.stdout.split(b"\0")
    out = {}
    for i in range(0, len(parts) - 1, 2):
        kind, mode, uid, gid, size, link = (parts[i + 1].decode(errors="replace").split(" ", 5)
                                            + [""] * 6)[:6]
        # a directory's size is each filesystem's own business
        out[parts[i].decode(errors="replace")] = (kind, mode, uid, gid,
                                                  size if kind == "f" else "", link)
    return out


def _mounted_manifest(contender, ctx, fx):
    """The manifest of fixture fx as contender mounts it."""
    inst = contender.mount(ctx, fx)
    try:
        return manifest(inst.path, ctx.timeout)
    finally:
        contender.unmount(inst)


def check_views(ctx, contenders):
    """Each overlay contender must show the same merged tree as kernel
    overlayfs before its timings are reported; a mismatch is a note."""
    ref = next((c for c in contenders if c.name == "kernel"), None)
    if ref is None:
        return
    for name in ("image", "stack%d" % max(ctx.sizes["stacks"])):
        try:
            fx = ctx.fixture(name)
            want = _mounted_manifest(ref, ctx, fx)
        except (BenchError, OSError, subprocess.TimeoutExpired) as e:
            ctx.note("could not check merged views of %s: %s" % (name, e))
            continue
        for c in contenders:
            if c.kind != "fuse" or "all" not in c.roles:
                continue
            try:
                got = _mounted_manifest(c, ctx, fx)
            except (BenchError, OSError, subprocess.TimeoutExpired) as e:
                ctx.note("%s: merged view of %s could not be read: %s" % (c.name, name, e))
                continue
            bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            if bad:
                ctx.note("%s shows %s differently from kernel overlayfs in %d of %d entries, "
                         "e.g. %s: kernel %s, %s %s"
                         % (c.name, name, len(bad), len(want), bad[0], want.get(bad[0]),
                            c.name, got.get(bad[0])))
            else:
                ctx.log("%s shows %s exactly as kernel overlayfs does (%d entries)"
                        % (c.name, name, len(want)))


SPECIAL_GROUPS = ("launcher", "density", "build")


def run_workload(ctx, wl, contenders, rows):
    parts = [c for c in contenders if (wl.group in SPECIAL_GROUPS) == (c.kind == "launcher")
             and c.takes_part(wl) and (not wl.only_kinds or c.kind in wl.only_kinds)
             and (not wl.only_contenders or c.name in wl.only_contenders)]
    ctx.current_workload = wl
    if not parts:
        ctx.note("workload '%s' skipped: no contender for it" % wl.name)
        return
    try:
        fixture = ctx.fixture(wl.fixture)
    except (BenchError, OSError) as e:
        ctx.note("workload '%s' skipped: fixture %s: %s" % (wl.name, wl.fixture, e))
        return
    reps = wl.reps(ctx)
    if ctx.mode == "full" and (wl.fixture == "big" or wl.heavy):
        reps = min(reps, HEAVY_REPS)
    failures = {}
    t0 = time.perf_counter()
    for rep in range(reps):
        order = parts[rep % len(parts):] + parts[:rep % len(parts)]
        for c in order:
            if failures.get(c.name, 0) >= 2:
                continue
            row = dict(group=wl.group, workload=wl.name, contender=c.name, unit=wl.unit,
                       rep=rep, fixture=fixture.info, value="", client_cpu_s="",
                       daemon_cpu_s="", note="", ref=wl.ratio_ref or "")
            inst = None
            extra = []
            try:
                if wl.drop_before_mount:
                    sysutil.drop_caches()
                writable = wl.mutates and (wl.subtree(fixture) if wl.subtree else True)
                if writable and wl.plain_reuse and c.kind == "plain":
                    writable = ("reuse", wl.name, writable)
                inst = c.mount(ctx, fixture, writable=writable)
                ctx.live.add(inst)
                s = wl.measure(ctx, inst, fixture)
                row.update(value=s.value, note=s.note,
                           client_cpu_s="" if s.client_cpu is None else s.client_cpu,
                           daemon_cpu_s="" if s.daemon_cpu is None else s.daemon_cpu)
                # an extra row may name a contender of its own (a figure
                # the run computed beside, e.g. the images' gzip blobs)
                extra = [dict(row, workload=e[0], unit=e[1], value=e[2], note=e[3],
                              contender=e[4] if len(e) > 4 else c.name,
                              client_cpu_s="", daemon_cpu_s="")
                         for e in s.extra]
            except (BenchError, OSError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                # a hang costs the whole timeout: do not wait for it twice
                failures[c.name] = failures.get(c.name, 0) + (
                    2 if getattr(e, "timed_out", False) or
                    isinstance(e, subprocess.TimeoutExpired) else 1)
                row["note"] = "error: %s" % e
                ctx.log("  %s on %s failed: %s" % (wl.name, c.name, e))
            finally:
                if inst is not None:
                    ctx.live.discard(inst)
                    try:
                        c.unmount(inst)
                    except BenchError as e:
                        if row["value"] != "":
                            # the daemon died or hung: this sample is not trustworthy
                            row["value"] = ""
                            failures[c.name] = failures.get(c.name, 0) + 1
                            row["note"] = "error: unmount: %s" % e
                        else:
                            row["note"] += "; unmount: %s" % e
                        ctx.log("  unmount after %s on %s: %s" % (wl.name, c.name, e))
            rows.append(row)
            if row["value"] != "":
                rows.extend(extra)
    for c in parts:
        c.workload_done(wl)
    ctx.log("%-34s %5.1fs" % (wl.name, time.perf_counter() - t0))


ROOTLESS_USER = "strata-test"
MODES = ("default", "busy", "rootless")


def resolve_modes(args):
    if args.modes:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise SystemExit("bench: unknown mode %s; modes are %s" % (", ".join(bad), ", ".join(MODES)))
        return modes
    picked = [m for m, on in (("busy", args.busy), ("rootless", args.rootless)) if on]
    if picked:
        return picked
    return ["default"] if (args.quick or args.smoke) else list(MODES)


def _without_mode_args(argv):
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--busy", "--rootless", "--uring", "--no-uring"):
            continue
        if a == "--modes":
            skip = True
            continue
        if a.startswith("--modes="):
            continue
        out.append(a)
    return out


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (it mounts overlayfs and drops the page cache; "
              "--rootless switches to the user %s itself); run `sudo make bench`" % ROOTLESS_USER,
              file=sys.stderr)
        return 1
    if args.rootless_inner:
        return run_one(args)
    modes = resolve_modes(args)
    # the full suite has the io_uring column where the kernel offers it
    uring = args.uring or (not (args.quick or args.smoke) and not args.no_uring and not args.modes
                           and not args.busy and not args.rootless)
    if len(modes) > 1 and not args.list:
        L.note_private_mount_ns(type("Top", (), {"rootless": False})())
        rc = 0
        for m in modes:
            print("\n=== bench mode %s ===" % m, file=sys.stderr, flush=True)
            sub = _without_mode_args(argv) + ["--modes", m] + (["--uring"] if uring else [])
            rc |= subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench.py")] + sub).returncode
        return rc
    args.uring = uring
    args.host_base = scratch_base(args)
    scratch = None
    if not args.list and not args.host_scratch:
        scratch = JournaledScratch(args.host_base)
        try:
            args.scratch = scratch.start()
        except BenchError as e:
            print("bench: %s; run with --host-scratch to measure on the host's filesystem as it "
                  "is" % e, file=sys.stderr)
            return 1
        if scratch.note:
            # for this run's report and the rootless run's, which inherits it
            os.environ[SCRATCH_NOTE_ENV] = scratch.note
    try:
        if modes == ["rootless"] and not args.list:
            return rootless_outer(args, argv)
        args.busy_hogs = modes == ["busy"]
        return run_one(args)
    finally:
        if scratch:
            scratch.stop()


def start_hogs(ctx):
    """One CPU-bound process per CPU at normal priority, stopped by pid."""
    hogs = []
    for _ in range(os.cpu_count() or 1):
        hogs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                     stdin=subprocess.DEVNULL, start_new_session=True))
    ctx.note("busy host: %d CPU-bound hogs at nice 0 (pids %s) for the whole run"
             % (len(hogs), ",".join(str(h.pid) for h in hogs)))
    return hogs


def stop_hogs(hogs):
    for h in hogs:
        h.kill()
    for h in hogs:
        h.wait()


def ensure_user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
        return pwd.getpwnam(name)


def rootless_outer(args, argv):
    """Runs the suite again as the unprivileged user strata-test inside
    `unshare -Urm`: kernel overlayfs with userxattr, the FUSE daemons mounted
    in that user namespace. This host may keep /dev/fuse at 0600: a private
    0666 node (on a tmpfs of ours) is bound over it inside the namespace only.
    Cache drops are asked of this root process over a socket."""
    pw = ensure_user(ROOTLESS_USER)
    who = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--init-groups"]
    # as rootless podman maps it: the user as root, its subordinate range
    # (/etc/subuid, through newuidmap) above; only root where there is none
    userns = ["unshare", "--map-root-user", "--map-auto", "--mount"]
    r = subprocess.run(who + userns + ["true"], stderr=subprocess.PIPE, text=True)
    if r.returncode:
        userns = ["unshare", "-Urm"]
        r = subprocess.run(who + userns + ["true"], stderr=subprocess.PIPE, text=True)
        if r.returncode:
            print("bench: --rootless needs unprivileged user namespaces: %s" % r.stderr.strip(),
                  file=sys.stderr)
            return 1
        print("note: %s has no subordinate ids (/etc/subuid): only its own uid is mapped, as "
              "root" % ROOTLESS_USER, file=sys.stderr)
    base = scratch_base(args)
    work = tempfile.mkdtemp(prefix="strata-bench-rootless-", dir=base)
    os.chmod(work, 0o755)
    os.chown(work, pw.pw_uid, pw.pw_gid)
    dev = os.path.join(work, "dev")
    os.mkdir(dev)
    sysutil.mount("tmpfs", dev, "tmpfs", "size=64k,mode=0755")
    results = args.results or os.path.join(BENCH_DIR, "results")
    try:
        node = os.path.join(dev, "fuse")
        os.mknod(node, stat.S_IFCHR | 0o666, os.stat("/dev/fuse").st_rdev)
        os.chmod(node, 0o666)
        # the cache outlives the run: on the host's filesystem, not a
        # journaled scratch made for this run
        cache = os.path.join(args.host_base, "strata-bench-cache-" + ROOTLESS_USER)
        os.makedirs(cache, exist_ok=True)
        os.chown(cache, pw.pw_uid, pw.pw_gid)
        if not args.synthetic_base:
            # debootstrap needs root: copy root's rootfs once, owned by the
            # user (its uid is root inside the user namespace)
            src = F.ensure_rootfs(os.path.join(BENCH_DIR, "cache"), lambda m: print(m, file=sys.stderr))
            dst = os.path.join(cache, F.ROOTFS_NAME)
            if src and not os.path.isdir(dst):
                sysutil.run_setup(["cp", "-a", src, dst + ".tmp"], what="copy rootfs for the user")
                sysutil.run_setup(["chown", "-R", "%d:%d" % (pw.pw_uid, pw.pw_gid), dst + ".tmp"],
                                  what="chown rootfs")
                os.rename(dst + ".tmp", dst)
        inner_results = os.path.join(work, "results")
        os.mkdir(inner_results)
        os.chown(inner_results, pw.pw_uid, pw.pw_gid)
        home = os.path.join(work, "home")
        os.mkdir(home)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        sub = []
        for a in _without_mode_args(argv):
            sub.append(os.path.abspath(a) if args.builddir and a == args.builddir else a)
        if not args.builddir:
            guess = os.path.join(os.path.dirname(BENCH_DIR), "build")
            if os.path.isdir(guess):
                sub.append(guess)
        sub += ["--rootless-inner", "--fusedev", node, "--scratch", work,
                "--results", inner_results, "--cache", cache] + (["--uring"] if args.uring else [])
        mine, theirs = socket.socketpair()
        sysutil.serve_drop_requests(mine)
        env = dict(os.environ, HOME=home, USER=ROOTLESS_USER, LOGNAME=ROOTLESS_USER, TMPDIR=work,
                   XDG_RUNTIME_DIR=home)
        env[sysutil.DROP_FD_ENV] = str(theirs.fileno())
        # podman in this namespace: rootless, in a user namespace already
        # made for it, as `podman unshare` tells its children
        env.update(_CONTAINERS_USERNS_CONFIGURED="done", _CONTAINERS_ROOTLESS_UID=str(pw.pw_uid),
                   _CONTAINERS_ROOTLESS_GID=str(pw.pw_gid))
        env.pop("STRATA_STORE", None)
        py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        p = subprocess.Popen(who + userns + [py, os.path.join(BENCH_DIR, "bench.py")] + sub,
                             env=env, cwd="/", pass_fds=(theirs.fileno(),))
        theirs.close()
        try:
            rc = p.wait()
        except KeyboardInterrupt:
            p.terminate()
            rc = p.wait()
        mine.close()
        os.makedirs(results, exist_ok=True)
        for n in os.listdir(inner_results):
            dst = os.path.join(results, n)
            if os.path.lexists(dst):
                os.unlink(dst)
            shutil.move(os.path.join(inner_results, n), dst)
        print("rootless results moved to %s" % results)
        return rc
    finally:
        sysutil.umount(dev)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run_one(args):
    if args.rootless_inner:
        r = subprocess.run(["mount", "--bind", args.fusedev, "/dev/fuse"], stderr=subprocess.PIPE,
                           text=True)
        if r.returncode:
            print("bench: cannot bind the private fuse node over /dev/fuse in the user namespace: "
                  + r.stderr.strip(), file=sys.stderr)
            return 1
        F.ROOTLESS = True
    ctx = Context(args)
    note = os.environ.get(SCRATCH_NOTE_ENV)
    if note and not args.list:
        ctx.note(note)
    all_w = W.build(ctx)
    if args.list:
        for w in all_w:
            print("%-10s %-40s fixture=%s%s" % (w.group, w.name, w.fixture,
                                                  "" if w.quick is True else "  (full only)"
                                                  if not w.quick else "  (quick: with --only)"))
        shutil.rmtree(ctx.scratch, ignore_errors=True)
        return 0

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    rows = []
    started = time.time()
    if ctx.rootless:
        ctx.note("rootless: run as %s (uid %d) in a user namespace; kernel overlayfs with "
                 "userxattr, the FUSE daemons mounted in that namespace"
                 % (ROOTLESS_USER, os.getuid() if os.getuid() else pwd.getpwnam(ROOTLESS_USER).pw_uid))
    uring_before = set_uring(ctx)
    hogs = start_hogs(ctx) if args.busy_hogs else []
    try:
        if not sysutil.can_drop_caches():
            ctx.note("cannot drop the page cache: 'cold' runs are warm")
        pick = re.compile(args.only) if args.only else None
        todo = [wl for wl in all_w
                # quick="only": in a quick run when --only asks for it
                if not (ctx.mode == "quick" and (not wl.quick or (wl.quick == "only" and not pick)))
                and not (pick and not (pick.search(wl.name) or pick.search(wl.group)))]
        contenders = select_contenders(ctx, {wl.group for wl in todo})
        ctx.log("contenders: %s; mode %s, %d repetitions, scratch %s"
                % (", ".join(c.name for c in contenders), ctx.label, ctx.sizes["reps"], ctx.scratch))
        if not args.only:
            check_views(ctx, contenders)
        packed_checked = False
        for wl in todo:
            if wl.fixture == "debimage" and not packed_checked:
                # after the import rows, whose first stores the image comes from
                from . import packed
                packed.check_views(ctx, contenders)
                packed_checked = True
            run_workload(ctx, wl, contenders, rows)
    except KeyboardInterrupt:
        ctx.log("interrupted: cleaning up and reporting what was measured")
    finally:
        stop_hogs(hogs)
        ctx.cleanup()
        if uring_before is not None:
            with open(URING_PARAM, "w") as f:
                f.write(uring_before)
    report.write_all(ctx, rows, started)
    return 0
