"""Workloads: what is timed on a mounted view. Each measures one thing and
reports its value, the client's CPU time and the daemon's CPU time."""

import ctypes
import errno
import json
import os
import subprocess
import tempfile
import time

from . import sysutil
from .sysutil import BenchError


class Sample:
    def __init__(self, value, client_cpu=None, daemon_cpu=None, note="", extra=()):
        self.value = value
        self.client_cpu = client_cpu
        self.daemon_cpu = daemon_cpu
        self.note = note
        # more rows from the same run: (workload, unit, value, note)
        self.extra = list(extra)


class Workload:
    group = "?"
    unit = "s"
    cold = False       # drop the page cache (and dentries/inodes) first
    warm = False       # one untimed run first
    mutates = False    # needs a private writable tree (plain gets a copy)
    quick = True       # part of --quick (False: never; "only": when --only names it)
    drop_before_mount = False
    reference = "kernel"
    only_kinds = None  # e.g. ("fuse",): who can report this at all
    subtree = None     # fixture -> the one relative path a mutating workload touches
    plain_reuse = False  # repeating it on the same private copy measures the same thing
    heavy = False      # GiB-sized: fewer repetitions in the full run
    key = None         # what a launcher contender is asked to do (start, exec, ...)
    only_contenders = None  # names of the only contenders that take part
    ratio_ref = None   # contender the ratios compare with, instead of the group's

    def __init__(self, name, fixture, **kw):
        self.name = name
        self.fixture = fixture
        for k, v in kw.items():
            setattr(self, k, v)

    def reps(self, ctx):
        return getattr(self, "nreps", None) or ctx.sizes["reps"]

    def measure(self, ctx, inst, fixture):
        raise NotImplementedError


def _timed(inst, argv, cwd, timeout, shell=False):
    d0 = inst.daemon_cpu()
    r = sysutil.run_measured(argv, cwd=cwd, timeout=timeout, shell=shell)
    d1 = inst.daemon_cpu()
    if r.rc != 0:
        raise BenchError("`%s` exited %d in %s: %s"
                         % (argv if shell else " ".join(argv), r.rc, cwd, r.err.strip()[-300:]))
    dcpu = (d1 - d0) if d0 is not None and d1 is not None else None
    return r, dcpu


class Command(Workload):
    """A shell command run inside the merged view; value = wall seconds."""

    def measure(self, ctx, inst, fixture):
        cmd = self.cmd(ctx, fixture) if callable(self.cmd) else self.cmd
        if self.warm:
            _timed(inst, cmd, inst.path, ctx.timeout, shell=True)
        if self.cold:
            sysutil.drop_caches()
        r, dcpu = _timed(inst, cmd, inst.path, ctx.timeout, shell=True)
        return Sample(r.wall, r.cpu, dcpu)


class InProcess(Workload):
    """A single system call or two, timed inside the harness: a fork/exec of a
    shell would cost more than the operation itself."""

    def measure(self, ctx, inst, fixture):
        if self.cold:
            sysutil.drop_caches()
        d0 = inst.daemon_cpu()
        path = os.path.join(inst.path, self.target)

        def timed():
            c0 = sysutil.thread_cpu_seconds()
            t0 = time.perf_counter()
            self.op(path)
            return time.perf_counter() - t0, sysutil.thread_cpu_seconds() - c0
        wall, cpu = sysutil.call_with_timeout(timed, ctx.timeout, inst.path, self.name)
        d1 = inst.daemon_cpu()
        return Sample(wall, cpu, (d1 - d0) if d0 is not None and d1 is not None else None)


def _append(path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)


class MountTime(Workload):
    group = "metadata"
    drop_before_mount = True
    only_kinds = ("kernel", "fuse")

    def measure(self, ctx, inst, fixture):
        # mount() already waited for the root to answer
        return Sample(inst.mount_s, *inst.mount_cpu)


class Fio(Workload):
    """fio's own job runtime, so its file layout and startup are not timed."""

    def measure(self, ctx, inst, fixture):
        job = self.job(ctx, fixture)
        argv = ["fio", "--output-format=json", "--name=bench", "--ioengine=psync",
                "--bs=4k", "--randrepeat=1", "--norandommap"] + job
        if self.cold:
            sysutil.drop_caches()
        d0 = inst.daemon_cpu()
        p = subprocess.run(argv, cwd=inst.path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=ctx.timeout)
        d1 = inst.daemon_cpu()
        if p.returncode != 0:
            raise BenchError("fio %s exited %d in %s: %s"
                             % (" ".join(job), p.returncode, inst.path,
                                p.stderr.decode(errors="replace").strip()[-300:]))
        out = p.stdout.decode(errors="replace")
        data = json.loads(out[out.index("{"):])
        j = data["jobs"][0]
        secs = j["job_runtime"] / 1000.0
        cpu = (j.get("usr_cpu", 0) + j.get("sys_cpu", 0)) / 100.0 * secs
        iops = j["read"]["iops"] + j["write"]["iops"]
        dcpu = (d1 - d0) if d0 is not None and d1 is not None else None
        return Sample(secs, cpu, dcpu, note="%.0f IOPS" % iops)


class DaemonRss(Workload):
    """Daemon resident memory after walking the whole tree; with drop=True,
    after the kernel then evicted its inodes (the daemon got FORGETs and
    should have freed its nodes: memory bounded by what the kernel holds)."""
    group = "resources"
    unit = "MiB"
    only_kinds = ("fuse",)
    drop = False
    walk = "ls -lR >/dev/null"

    def measure(self, ctx, inst, fixture):
        base = sysutil.proc_rss_kib(inst.daemon_pid)
        _timed(inst, self.walk, inst.path, ctx.timeout, shell=True)
        walked = sysutil.proc_rss_kib(inst.daemon_pid)
        if walked is None:
            raise BenchError("daemon pid %d vanished during the walk" % inst.daemon_pid)
        note = "RSS %.1f MiB at mount, %.1f MiB after the walk" % (base / 1024.0, walked / 1024.0)
        if not self.drop:
            return Sample(walked / 1024.0, note=note)
        sysutil.drop_caches()
        # FORGETs arrive asynchronously after the eviction
        time.sleep(1.0)
        after = sysutil.proc_rss_kib(inst.daemon_pid)
        return Sample(after / 1024.0, note=note + ", %.1f MiB after drop_caches" % (after / 1024.0))


def _fincore_bytes(path):
    p = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise BenchError("fincore %s failed: %s" % (path, p.stderr.decode(errors="replace").strip()))
    return int(p.stdout.split()[0])


class PageCache(Workload):
    """Page cache held after one cold sequential read of the merged big file:
    lower file's pages plus, for FUSE, the merged inode's own pages (a FUSE
    file cached a second time). Kernel overlayfs maps the lower inode itself,
    so its merged pages are the lower ones and are not added twice."""
    group = "resources"
    unit = "MiB"
    cold = True

    def measure(self, ctx, inst, fixture):
        sysutil.drop_caches()
        before = sysutil.meminfo_kib("Cached")
        _timed(inst, ["dd", "if=big.bin", "of=/dev/null", "bs=1M"], inst.path, ctx.timeout)
        after = sysutil.meminfo_kib("Cached")
        lower = os.path.join(fixture.layer_path(0), "big.bin")
        total = _fincore_bytes(lower)
        merged = 0
        if inst.contender.kind == "fuse":
            merged = _fincore_bytes(os.path.join(inst.path, "big.bin"))
            total += merged
        return Sample(total / 1048576.0,
                      note="lower %.0f MiB, merged %.0f MiB, meminfo Cached +%.0f MiB"
                      % ((total - merged) / 1048576.0, merged / 1048576.0,
                         (after - before) / 1024.0))




class Launch(Workload):
    """Seconds per run of inst.argv (start of /bin/true, or exec of it in a
    running container), averaged over a batch; client CPU from wait4 (it
    covers the FUSE daemon a launcher forks and reaps, not a detached
    monitor's or conmon's)."""
    group = "launcher"
    reference = "bwrap"

    def measure(self, ctx, inst, fixture):
        n = ctx.sizes["launch_batch"]
        argv = inst.argv
        t0 = time.perf_counter()
        cpu = 0.0
        for _ in range(n):
            r = sysutil.run_measured(argv, cwd=fixture.root, timeout=120)
            if r.rc != 0:
                raise BenchError("`%s` exited %d: %s" % (" ".join(argv), r.rc, r.err.strip()[-300:]))
            cpu += r.cpu
        return Sample((time.perf_counter() - t0) / n, cpu / n)


def _memory_kib():
    return sysutil.meminfo_kib("Cached"), sysutil.meminfo_kib("AnonPages")


def _daemons_rss_kib(ctx):
    return _daemons(ctx)[0]


def _daemons(ctx):
    """RSS (KiB) and CPU seconds of the FUSE daemons serving this run
    (their command line names the run's scratch directory or store)."""
    total, cpu = 0, 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        comm = sysutil.proc_comm(int(d))
        if comm not in ("strata-fs", "fuse-overlayfs"):
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if ctx.scratch.encode() in cmd or (ctx.store and ctx.store.encode() in cmd):
            total += sysutil.proc_rss_kib(int(d)) or 0
            cpu += sysutil.proc_cpu_seconds(int(d)) or 0.0
    return total, cpu


def _wait_ready(ready, i, running, deadline):
    path = os.path.join(ready, str(i))
    while not os.path.exists(path):
        if running.proc is not None and running.proc.poll() is not None:
            raise BenchError("container %d exited %d before it was ready" % (i, running.proc.returncode))
        if time.perf_counter() > deadline:
            raise BenchError("container %d not ready within %.0f s" % (i, READY_TIMEOUT))
        time.sleep(0.002)


READY_TIMEOUT = 120.0


_libc = ctypes.CDLL(None, use_errno=True)
PAGE = os.sysconf("SC_PAGE_SIZE")
NR_CACHESTAT = {"x86_64": 451, "aarch64": 451}.get(os.uname().machine)
_cachestat_ok = None


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64),
                ("nr_writeback", ctypes.c_uint64), ("nr_evicted", ctypes.c_uint64),
                ("nr_recently_evicted", ctypes.c_uint64)]


def cached_bytes(path):
    """Bytes of path's own inode in the page cache (cachestat(2), Linux
    6.5+), or None where the call is missing. Unlike fincore (mmap +
    mincore) it counts the inode the descriptor names: a FUSE file passed
    through to its lower file (sharecache, passthrough) holds no pages of
    its own, while fincore would map it, get the lower file's mapping, and
    count the lower file's pages once more for every mount."""
    global _cachestat_ok
    if NR_CACHESTAT is None or _cachestat_ok is False:
        return None
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        rng, cs = _CachestatRange(0, 0), _Cachestat()
        if _libc.syscall(NR_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(cs), 0) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                _cachestat_ok = False
                return None
            raise BenchError("cachestat of %s failed: %s" % (path, os.strerror(err)))
        _cachestat_ok = True
        return cs.nr_cache * PAGE
    finally:
        os.close(fd)


def _fincore_many(paths):
    total = 0
    for k in range(0, len(paths), 400):
        p = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES"] + paths[k:k + 400],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        if p.returncode != 0:
            raise BenchError("fincore failed: %s" % p.stderr.decode(errors="replace").strip()[-300:])
        total += sum(int(x) for x in p.stdout.split())
    return total


def _cached_many(paths):
    """(bytes cached, how counted): cachestat per file; fincore only on a
    kernel without cachestat, which has no FUSE passthrough either (6.9+),
    so no file there maps another inode's pages."""
    if paths and cached_bytes(paths[0]) is not None:
        return sum(cached_bytes(p) for p in paths), "cachestat"
    return _fincore_many(paths), "fincore"


def _container_root(running):
    """/proc/PID/root of a container started as a child process (strata-run):
    the `sleep` DENSITY_CMD ends in. A path through it resolves in the
    container's own root mount, so its files' own pages can be counted as a
    harness mount's are."""
    proc = getattr(running, "proc", None)
    if proc is None:
        return None
    # the ready file is written just before the shell execs sleep
    deadline = time.perf_counter() + 30.0
    while time.perf_counter() < deadline:
        for pid in sysutil.descendants(proc.pid):
            if sysutil.proc_comm(pid) == "sleep":
                return "/proc/%d/root" % pid
        time.sleep(0.01)
    raise BenchError("no `sleep` below pid %d 30 s after the container was ready: its root "
                     "cannot be counted" % proc.pid)


def _data_cached_mib(fixture, paths_of, running):
    """Pages of /data cached, each page once: the lower files' own, plus
    (FUSE) each mount's merged files' own pages (a FUSE file in cached mode
    holds its own copy; one passed through to its lower file, sharecache,
    holds none and its reads fill the lower file's pages, counted once; a
    kernel overlay file is the lower inode, so it adds nothing of its own).
    Counted, not timed: the mechanism behind the memory rows, free of other
    processes' noise."""
    base = fixture.layer_path(0)
    rel = []
    for d, _, files in os.walk(os.path.join(base, "data")):
        rel += [os.path.relpath(os.path.join(d, f), base) for f in files]
    lower, how = _cached_many([os.path.join(base, r) for r in rel])
    merged = 0
    for r in running:
        paths = paths_of(r)
        if paths:
            merged += _cached_many([os.path.join(paths, x) for x in rel])[0]
    return (lower + merged) / 1048576.0, lower / 1048576.0, merged / 1048576.0, how


def _start_ready(inst, i, ready):
    t0 = time.perf_counter()
    running = inst.start(i, ready)
    try:
        _wait_ready(ready, i, running, t0 + READY_TIMEOUT)
    except BaseException:
        running.stop()
        raise
    return running, time.perf_counter() - t0


class Density(Workload):
    """N containers of one image started one after the other, each reading
    the image's /data and staying up. The machine's memory cost after the
    1st, ... Nth is ready (page cache + anonymous memory from /proc/meminfo,
    the cache dropped first; the FUSE daemons' RSS is in the note: its
    anonymous part is inside AnonPages, its file part inside Cached), and
    each one's start-to-ready time. One run gives all the rows.

    Cached counts each page of the machine once, whoever maps it, so it is
    right for passthrough (sharecache) too: N mounts reading a lower file
    through it add its pages once. Per-file counts must ask each inode for
    its own pages (cachestat), not map the file (fincore): a passthrough
    mapping is the lower file's, which would be counted once per mount."""
    group = "density"
    unit = "MiB"
    key = "density"

    def measure(self, ctx, inst, fixture):
        counts = ctx.sizes["density"]
        ready = tempfile.mkdtemp(prefix="ready-", dir=inst.scratch)
        os.chmod(ready, 0o777)
        data = fixture.data_mib
        sysutil.drop_caches()
        c0, a0 = _memory_kib()
        m0 = sysutil.machine_cpu_seconds()
        running, mem, times, notes, cached = [], {}, {}, [], {}
        cpu = (None, None)
        try:
            for i in range(1, max(counts) + 1):
                r, t = _start_ready(inst, i, ready)
                running.append(r)
                if i in counts:
                    c1, a1 = _memory_kib()
                    rss = _daemons_rss_kib(ctx)
                    mem[i] = ((c1 - c0) + (a1 - a0)) / 1024.0
                    times[i] = t
                    notes.append("%d: cache +%.1f, anon +%.1f, daemons' RSS %.1f MiB"
                                 % (i, (c1 - c0) / 1024.0, (a1 - a0) / 1024.0, rss / 1024.0))
                    # harness mounts name their merged trees; a launcher
                    # that runs the container as our child (strata-run)
                    # is reached through the container's /proc/PID/root
                    paths_of = getattr(inst, "merged_paths", None) or (
                        _container_root if getattr(running[0], "proc", None) else None)
                    if paths_of:
                        cached[i] = _data_cached_mib(fixture, paths_of, running)
                    if i == 1:
                        # machine-wide CPU and the daemons' own, for the 1st start
                        cpu = (sysutil.machine_cpu_seconds() - m0, _daemons(ctx)[1])
        finally:
            errs = []
            for r in running:
                try:
                    r.stop()
                except (BenchError, OSError) as e:
                    errs.append(str(e))
            if errs:
                ctx.log("  stopping density containers: %s" % "; ".join(errs))
        n = max(counts)
        extra = []
        for i in counts:
            extra.append(("density: memory, %d container%s" % (i, "s" if i > 1 else ""),
                          "MiB", mem[i], notes[counts.index(i)]))
            extra.append(("density: start-to-ready of container %d" % i, "s", times[i], ""))
        for i in sorted(cached):
            extra.append(("density: /data in the page cache (counted), %d container%s"
                          % (i, "s" if i > 1 else ""), "MiB", cached[i][0],
                          "lower files %.1f MiB, the mounts' own files %.1f MiB (%s)" % cached[i][1:]))
        if n > 1:
            per = (mem[n] - mem[1]) / (n - 1) / data
            extra.append(("density: each container after the 1st adds (x data read)", "x", per,
                          "(memory with %d - with 1) / %d / %d MiB read by each" % (n, n - 1, data)))
            if n in cached and 1 in cached:
                extra.append(("density: each container after the 1st adds, counted (x data read)",
                              "x", (cached[n][0] - cached[1][0]) / (n - 1) / data,
                              "(/data cached with %d - with 1) / %d / %d MiB read by each"
                              % (n, n - 1, data)))
        first = extra.pop(0)
        return Sample(first[2], cpu[0], cpu[1], note=first[3] + "; CPU: machine-wide (client "
                      "column) and the daemons' own, to the 1st container ready", extra=extra)

    def reps(self, ctx):
        return ctx.sizes["density_reps"]


class SecondStart(Workload):
    """A container of the image started and stopped, then a second one:
    bytes read from the disks (/sys/block/*/stat) by the second start, with
    the caches dropped in between (cold) or not (warm: a second start should
    read nothing the first already read)."""
    group = "density"
    unit = "MiB"
    key = "density"

    def reps(self, ctx):
        return ctx.sizes["density_reps"]

    def measure(self, ctx, inst, fixture):
        ready = tempfile.mkdtemp(prefix="ready-", dir=inst.scratch)
        os.chmod(ready, 0o777)
        sysutil.drop_caches()
        r, _ = _start_ready(inst, 1, ready)
        r.stop()
        if self.cold:
            sysutil.drop_caches()
        else:
            os.sync()
        b0 = sysutil.disk_read_bytes()
        m0, d0 = sysutil.machine_cpu_seconds(), _daemons(ctx)[1]
        r, t = _start_ready(inst, 2, ready)
        b1 = sysutil.disk_read_bytes()
        m1, d1 = sysutil.machine_cpu_seconds(), _daemons(ctx)[1]
        r.stop()
        # the first container's daemons are gone: what is left is the second's
        return Sample((b1 - b0) / 1048576.0, m1 - m0, d1 - d0 if d1 >= d0 else d1,
                      note="start-to-ready %.3f s; CPU: machine-wide (client column) and the "
                      "daemon's own" % t,
                      extra=[(self.name.replace("MiB read from disk", "start-to-ready"),
                              "s", t, "")])


class Build(Workload):
    """strata build / podman build of the multi-step Containerfile. cold:
    --no-cache; cached: an unchanged rebuild; changed: a rebuild after one
    file of the context changed (the untimed first build made the cache)."""
    group = "build"
    key = "build"

    def measure(self, ctx, inst, fixture):
        from . import fixtures as F
        src = ctx.build_context()
        ctxdir = os.path.join(inst.scratch, "ctx")
        sysutil.run_setup(["cp", "-a", src, ctxdir], what="copy the build context")
        with open(os.path.join(ctxdir, "Containerfile"), "w") as f:
            f.write(F.CONTAINERFILE)
        n = next(ctx.counter)
        tag = "localhost/bench-build:%d" % n
        if self.kind != "cold":
            pre = sysutil.run_measured(inst.build(ctxdir, tag, False), timeout=ctx.build_timeout)
            if pre.rc != 0:
                raise BenchError("first build exited %d: %s" % (pre.rc, pre.err.strip()[-300:]))
        if self.kind == "changed":
            # new content each time: an earlier repetition's change is in
            # the build cache of the run's store
            with open(os.path.join(ctxdir, "src", "d0", "f0.txt"), "ab") as f:
                f.write(b"changed %d\n" % n)
        # stdout joins stderr (podman says "Using cache" on stdout, strata on
        # stderr): the note tells how many steps came from the cache
        r = sysutil.run_measured(["sh", "-c", 'exec "$@" 1>&2', "sh"]
                                 + inst.build(ctxdir, tag, self.kind == "cold"),
                                 timeout=ctx.build_timeout)
        if r.rc != 0:
            raise BenchError("build exited %d: %s" % (r.rc, r.err.strip()[-300:]))
        steps = build_steps(r.err)
        hits = sum(1 for _, cached in steps if cached)
        ran = [s.split()[0] for s, cached in steps if not cached and not s.startswith("FROM")]
        note = "%d steps from the cache, ran: %s" % (hits, " ".join(ran) or "nothing")
        if self.kind == "changed":
            # the changed file is copied by the COPY: it and what follows
            # it run again, nothing before it
            want = [l.split()[0] for l in F.CONTAINERFILE.splitlines()[2:] if l.strip()]
            note += "; only the steps from the COPY on: %s" % ("yes" if ran == want else
                                                             "NO (want %s)" % " ".join(want))
        return Sample(r.wall, r.cpu, note=note + "; client CPU includes the RUN step's container")


def build_steps(out):
    """(instruction, from the cache) for each STEP line of a build's output;
    strata and podman print the same 'STEP n/m: ...' and '--> Using cache'."""
    steps = []
    for line in out.splitlines():
        if line.startswith("STEP ") and ": " in line:
            steps.append([line.split(": ", 1)[1], False])
        elif "using cache" in line.lower() and steps:
            steps[-1][1] = True
    return [tuple(s) for s in steps]


def build(ctx):
    """The suite, in run order. Fixture names refer to ctx.fixture()."""
    s = ctx.sizes
    W = []
    for n in s["stacks"]:
        fx = "stack%d" % n
        W.append(MountTime("mount %d layers" % n, fx))
        W.append(Command("find -type f %d layers, cold" % n, fx, group="metadata", cold=True,
                         cmd="find . -type f >/dev/null"))
        W.append(Command("ls -lR %d layers, cold" % n, fx, group="metadata", cold=True,
                         cmd="ls -lR >/dev/null", quick=False))
    W += [
        MountTime("mount image", "image"),
        Command("find -type f, cold", "image", group="metadata", cold=True,
                cmd="find . -type f >/dev/null"),
        Command("find -type f, warm", "image", group="metadata", warm=True,
                cmd="find . -type f >/dev/null", quick=False),
        Command("stat all, cold", "image", group="metadata", cold=True,
                cmd="find . -printf '%s %m %u\\n' >/dev/null"),
        Command("stat all, warm", "image", group="metadata", warm=True,
                cmd="find . -printf '%s %m %u\\n' >/dev/null", quick=False),
        Command("ls -lR, cold", "image", group="metadata", cold=True,
                cmd="ls -lR >/dev/null"),
        Command("ls -lR, warm", "image", group="metadata", warm=True,
                cmd="ls -lR >/dev/null"),
        # tar to a pipe: GNU tar skips reading file data when writing to /dev/null
        Command("tar c all, cold", "image", group="reads", cold=True,
                cmd=lambda ctx, fx: "tar cf - %s | cat >/dev/null" % ctx.sizes["tar_path"]),
        Command("seq read big, cold", "big", group="reads", cold=True,
                cmd="dd if=big.bin of=/dev/null bs=1M 2>/dev/null"),
        Command("seq read big, warm", "big", group="reads", warm=True,
                cmd="dd if=big.bin of=/dev/null bs=1M 2>/dev/null"),
        Fio("4k rand read, cold", "big", group="reads", cold=True,
            job=lambda ctx, fx: ["--rw=randread", "--readonly", "--filename=big.bin",
                                 "--io_size=%dM" % ctx.sizes["randread_mib"]]),
        Command("seq write new", "stack2", group="writes", mutates=True, heavy=True,
                cmd=lambda ctx, fx: "dd if=/dev/zero of=new.bin bs=1M count=%d 2>/dev/null"
                % ctx.sizes["big_mib"]),
        Command("seq write new + fsync", "stack2", group="writes", mutates=True, heavy=True,
                cmd=lambda ctx, fx: "dd if=/dev/zero of=new.bin bs=1M count=%d conv=fsync 2>/dev/null"
                % ctx.sizes["big_mib"]),
        Fio("4k rand write", "stack2", group="writes", mutates=True, heavy=True,
            job=lambda ctx, fx: ["--rw=randwrite", "--filename=fio.dat", "--end_fsync=1",
                                 "--size=%dM" % ctx.sizes["randwrite_size_mib"],
                                 "--io_size=%dM" % ctx.sizes["randwrite_io_mib"]]),
        InProcess("append to big lower file", "big", group="copy-up", cold=True, mutates=True,
                  target="big.bin", op=_append, plain_reuse=True),
        InProcess("chmod big lower file", "big", group="copy-up", cold=True, mutates=True,
                  target="big.bin", op=lambda p: os.chmod(p, 0o600), plain_reuse=True),
        Command("chown -R lower tree", "image", group="copy-up", cold=True, mutates=True,
                cmd=lambda ctx, fx: "chown -R 1234:1234 %s" % fx.tree, subtree=lambda fx: fx.tree),
        Command("untar small files", "stack2", group="churn", mutates=True, heavy=True,
                cmd=lambda ctx, fx: "mkdir -p untar && tar xf %s -C untar" % ctx.tarball()),
        Command("rm -rf lower tree", "image", group="churn", cold=True, mutates=True,
                cmd=lambda ctx, fx: "rm -rf %s" % fx.tree, subtree=lambda fx: fx.tree),
        Launch("start /bin/true", "runimage", key="start"),
        Launch("exec /bin/true", "runimage", key="exec"),
        DaemonRss("daemon RSS after ls -lR", "image"),
        DaemonRss("daemon RSS, %dk-file walk" % (s["many_files"] // 1000), "many", quick=False, nreps=2,
                  walk="find . -printf '%s\\n' >/dev/null"),
        DaemonRss("same, then drop_caches", "many", quick=False, drop=True, nreps=2,
                  walk="find . -printf '%s\\n' >/dev/null"),
        PageCache("page cache after big read", "big"),
        Density("density: memory, 1 container", "runimage"),
        SecondStart("second start, warm: MiB read from disk", "runimage", heavy=True),
        SecondStart("second start, cold: MiB read from disk", "runimage", cold=True, heavy=True),
        Build("build, cold", "runimage", kind="cold", heavy=True, quick=False),
        Build("build, cached rebuild", "runimage", kind="cached", heavy=True, quick=False),
        Build("build, one context file changed", "runimage", kind="changed", heavy=True, quick=False),
    ]
    from . import packed
    W += packed.workloads(ctx)
    for w in W:
        if w.group == "?":
            w.group = "metadata"
    return W
