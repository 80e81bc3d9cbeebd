"""Workloads: what is timed on a mounted view. Each measures one thing and
reports its value, the client's CPU time and the daemon's CPU time."""

import json
import os
import subprocess
import time

from . import sysutil
from .sysutil import BenchError


class Sample:
    def __init__(self, value, client_cpu=None, daemon_cpu=None, note=""):
        self.value = value
        self.client_cpu = client_cpu
        self.daemon_cpu = daemon_cpu
        self.note = note


class Workload:
    group = "?"
    unit = "s"
    cold = False       # drop the page cache (and dentries/inodes) first
    warm = False       # one untimed run first
    mutates = False    # needs a private writable tree (plain gets a copy)
    quick = True       # part of --quick
    drop_before_mount = False
    reference = "kernel"
    only_kinds = None  # e.g. ("fuse",): who can report this at all
    subtree = None     # fixture -> the one relative path a mutating workload touches
    plain_reuse = False  # repeating it on the same private copy measures the same thing
    heavy = False      # GiB-sized: fewer repetitions in the full run

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
            t0 = time.perf_counter()
            self.op(path)
            return time.perf_counter() - t0
        wall = sysutil.call_with_timeout(timed, ctx.timeout, inst.path, self.name)
        d1 = inst.daemon_cpu()
        return Sample(wall, None, (d1 - d0) if d0 is not None and d1 is not None else None)


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
        return Sample(inst.mount_s)


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
    """Seconds per container start of /bin/true, averaged over a batch."""
    group = "launcher"
    reference = "bwrap"

    def measure(self, ctx, inst, fixture):
        n = ctx.sizes["launch_batch"]
        argv = inst.argv
        t0 = time.perf_counter()
        cpu = 0.0
        for _ in range(n):
            r = sysutil.run_measured(argv, cwd=fixture.root, timeout=60)
            if r.rc != 0:
                raise BenchError("`%s` exited %d: %s" % (" ".join(argv), r.rc, r.err.strip()[-300:]))
            cpu += r.cpu
        return Sample((time.perf_counter() - t0) / n, cpu / n)


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
        Launch("start /bin/true", "image"),
        DaemonRss("daemon RSS after ls -lR", "image"),
        DaemonRss("daemon RSS, %dk-file walk" % (s["many_files"] // 1000), "many", quick=False, nreps=2,
                  walk="find . -printf '%s\\n' >/dev/null"),
        DaemonRss("same, then drop_caches", "many", quick=False, drop=True, nreps=2,
                  walk="find . -printf '%s\\n' >/dev/null"),
        PageCache("page cache after big read", "big"),
    ]
    for w in W:
        if w.group == "?":
            w.group = "metadata"
    return W
