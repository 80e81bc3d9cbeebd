"""The run: builds fixtures on demand, then for every workload runs every
contender once per repetition, interleaved (contender order rotates each
repetition so none is always first after a cache drop), each on a fresh mount."""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import contenders as C
from . import fixtures as F
from . import report
from . import sysutil
from . import workloads as W
from .sysutil import BenchError

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZES = {
    "quick": dict(reps=3, big_mib=64, randread_mib=4, randwrite_size_mib=8,
                  randwrite_io_mib=4, untar_files=1000, stacks=[2, 64, 500],
                  synthetic_base_files=3000, launch_batch=3,
                  tree=["usr/share/doc", "usr/share", "opt"], tar_path="usr/share/doc",
                  many_files=10000),
    "full": dict(reps=5, big_mib=1024, randread_mib=32, randwrite_size_mib=128,
                 randwrite_io_mib=64, untar_files=20000, stacks=[2, 16, 64, 128, 500],
                 synthetic_base_files=8000, launch_batch=10,
                 tree=["usr/share", "usr/lib", "usr", "opt"], tar_path=".",
                 many_files=100000),
}
# the 1 GiB workloads dominate the full run's time; three repetitions of them
HEAVY_REPS = 3


class Context:
    def __init__(self, args):
        self.args = args
        self.mode = "quick" if args.quick else "full"
        self.sizes = dict(SIZES[self.mode])
        if args.reps:
            self.sizes["reps"] = args.reps
        # generous against kernel overlayfs's slowest run (seconds), short
        # enough that a hung daemon does not eat the run
        self.timeout = 60 if args.quick else 180
        builddir = args.builddir
        if not builddir:
            # make's default build directory, so `sh bench/run.sh` alone finds it
            guess = os.path.join(os.path.dirname(BENCH_DIR), "build")
            builddir = guess if os.path.isdir(guess) else None
        elif not os.path.isdir(builddir):
            raise SystemExit("bench: build directory %s does not exist; build first "
                             "(make build) or pass the right one" % builddir)
        self.builddir = os.path.abspath(builddir) if builddir else None
        self.cache = os.path.join(BENCH_DIR, "cache")
        self.results = args.results or os.path.join(BENCH_DIR, "results")
        os.makedirs(self.cache, exist_ok=True)
        os.makedirs(self.results, exist_ok=True)
        base = args.scratch or os.environ.get("TMPDIR") or "/var/tmp"
        self.scratch = tempfile.mkdtemp(prefix="strata-bench-", dir=base)
        self._fixtures = {}
        self._flat = {}
        self._tarball = None
        self.flatten_via = None
        self.live = set()
        self.notes = []
        self.logged = []
        self.load_start = os.getloadavg()[0]

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
            elif name.startswith("stack"):
                fx = F.stack(self, int(name[5:]))
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

    def cleanup(self):
        for inst in list(self.live):
            try:
                inst.contender.unmount(inst)
            except BenchError as e:
                self.log("cleanup: %s" % e)
        self.live.clear()
        if self.args.keep:
            self.log("scratch kept in %s" % self.scratch)
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run.sh",
                                description="strata benchmark suite: layered filesystems side by side")
    p.add_argument("builddir", nargs="?", default=None,
                   help="CMake build directory holding fs/strata-fs and runtime/strata-run")
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions, a subset (~1 min)")
    p.add_argument("--reps", type=int, help="repetitions per workload and contender")
    p.add_argument("--only", help="regular expression: run only workloads whose name or group matches")
    p.add_argument("--contenders", help="comma-separated subset, e.g. kernel,fuse-overlayfs")
    p.add_argument("--scratch", help="directory for mounts and uppers (default $TMPDIR or /var/tmp)")
    p.add_argument("--results", help="directory for CSV and PNG (default bench/results)")
    p.add_argument("--synthetic-base", action="store_true",
                   help="use a generated tree instead of the debootstrap rootfs as the image base")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--list", action="store_true", help="list workloads and contenders, run nothing")
    p.add_argument("--host-uring", action="store_true",
                   help="leave the fuse module's enable_uring as the host has it (default: on for "
                        "the run, restored after; strata-fs then takes requests through io_uring)")
    return p.parse_args(argv)


URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


def set_uring(ctx):
    """Turns FUSE over io_uring on for the run; returns the value to restore
    (None: nothing changed). Only strata-fs asks for it at mount time;
    fuse-overlayfs (libfuse 3.14) keeps /dev/fuse either way."""
    try:
        with open(URING_PARAM) as f:
            before = f.read().strip()
    except OSError:
        ctx.note("this kernel has no FUSE over io_uring: strata-fs serves through /dev/fuse")
        return None
    if ctx.args.host_uring or before == "Y":
        ctx.note("fuse.enable_uring=%s as the host has it%s" % (
            before, "" if before == "Y" else ": strata-fs serves through /dev/fuse"))
        return None
    try:
        with open(URING_PARAM, "w") as f:
            f.write("Y")
    except OSError as e:
        ctx.note("cannot turn on %s (%s): strata-fs serves through /dev/fuse" % (URING_PARAM, e))
        return None
    ctx.note("fuse.enable_uring=Y for this run (restored to %s after): strata-fs takes requests "
             "through io_uring; --host-uring measures the host as it is" % before)
    return before


def select_contenders(ctx):
    chosen = []
    wanted = set(ctx.args.contenders.split(",")) if ctx.args.contenders else None
    for c in C.all_contenders(ctx.builddir) + C.launchers(ctx.builddir):
        if wanted and c.name not in wanted and c.kind != "plain" and c.name != "bwrap":
            continue
        why = c.probe(ctx)
        if why:
            ctx.note("skipping %s: %s" % (c.name, why))
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
            if c.kind != "fuse":
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


def run_workload(ctx, wl, contenders, rows):
    parts = [c for c in contenders if (wl.group == "launcher") == (c.kind == "launcher")
             and c.takes_part(wl) and (not wl.only_kinds or c.kind in wl.only_kinds)]
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
                       daemon_cpu_s="", note="")
            inst = None
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
    for c in parts:
        c.workload_done(wl)
    ctx.log("%-34s %5.1fs" % (wl.name, time.perf_counter() - t0))


def main(argv):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (it mounts overlayfs and drops the page cache); "
              "run `sudo make bench`", file=sys.stderr)
        return 1
    ctx = Context(args)
    all_w = W.build(ctx)
    if args.list:
        for w in all_w:
            print("%-10s %-36s fixture=%s%s" % (w.group, w.name, w.fixture,
                                                  "" if w.quick else "  (full only)"))
        shutil.rmtree(ctx.scratch, ignore_errors=True)
        return 0

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    rows = []
    started = time.time()
    uring_before = set_uring(ctx)
    try:
        if not sysutil.can_drop_caches():
            ctx.note("cannot write /proc/sys/vm/drop_caches: 'cold' runs are warm")
        contenders = select_contenders(ctx)
        ctx.log("contenders: %s; mode %s, %d repetitions, scratch %s"
                % (", ".join(c.name for c in contenders), ctx.mode, ctx.sizes["reps"], ctx.scratch))
        if not args.only:
            check_views(ctx, contenders)
        pick = re.compile(args.only) if args.only else None
        for wl in all_w:
            if ctx.mode == "quick" and not wl.quick:
                continue
            if pick and not (pick.search(wl.name) or pick.search(wl.group)):
                continue
            run_workload(ctx, wl, contenders, rows)
    except KeyboardInterrupt:
        ctx.log("interrupted: cleaning up and reporting what was measured")
    finally:
        ctx.cleanup()
        if uring_before is not None:
            with open(URING_PARAM, "w") as f:
                f.write(uring_before)
    report.write_all(ctx, rows, started)
    return 0
