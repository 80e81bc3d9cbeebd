"""Low-level helpers: mount(2) without a helper process, page-cache control,
timed child processes with their CPU time, and /proc readings of daemons."""

import ctypes
import ctypes.util
import os
import resource
import select
import signal
import subprocess
import threading
import time

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MNT_DETACH = 2
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure the harness reports and survives (one contender, one workload)."""
    timed_out = False


def mount(source, target, fstype, data, cwd=None):
    """mount(2) directly, so the timed region holds no fork/exec of mount(8).
    cwd matters: overlayfs resolves relative lowerdir names against it, which
    is how 500 layers fit into the one-page option string."""
    old = os.getcwd()
    if cwd:
        os.chdir(cwd)
    try:
        rc = _libc.mount(source.encode(), target.encode(), fstype.encode(), 0,
                         data.encode())
        err = ctypes.get_errno()
    finally:
        os.chdir(old)
    if rc != 0:
        raise BenchError("mount -t %s on %s failed: %s (options %.200s)"
                         % (fstype, target, os.strerror(err), data))


def umount(target, lazy_fallback=True):
    for _ in range(20):
        if _libc.umount2(target.encode(), 0) == 0:
            return
        err = ctypes.get_errno()
        if err == 22:  # EINVAL: not mounted (any more)
            return
        if err != 16:  # anything but EBUSY will not get better by waiting
            break
        time.sleep(0.05)
    if lazy_fallback and _libc.umount2(target.encode(), MNT_DETACH) == 0:
        return
    raise BenchError("umount %s failed: %s; check `findmnt %s` and unmount it by hand"
                     % (target, os.strerror(ctypes.get_errno()), target))


def mountinfo_has(target):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and fields[4] == target:
                return True
    return False


def fuse_abort(target):
    """Break a hung FUSE connection so nothing stays stuck on it. The
    connection number comes from mountinfo: a stat of the hung mount would
    hang too."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and fields[4] == target:
                minor = fields[2].split(":")[1]
                try:
                    with open("/sys/fs/fuse/connections/%s/abort" % minor, "w") as a:
                        a.write("1")
                except OSError:
                    pass


def call_with_timeout(fn, timeout, mnt, what):
    """Runs fn() that touches a mount, in a thread: a hung daemon must cost a
    timeout and an aborted connection, not the whole run."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed over to the caller below
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        fuse_abort(mnt)
        t.join(5)
        e = BenchError("%s on %s did not return within %ds; aborted the FUSE connection"
                       % (what, mnt, timeout))
        e.timed_out = True
        raise e
    if "error" in box:
        raise box["error"]
    return box.get("value")


# In --rootless mode the harness runs as an unprivileged user in a user
# namespace, where /proc/sys/vm/drop_caches is closed; the root process that
# started it drops the caches on request over this socket (one byte asks,
# one byte answers: 1 done, 0 refused).
DROP_FD_ENV = "STRATA_BENCH_DROP_FD"
_drop_lock = threading.Lock()


def _drop_via_helper(fd, level):
    with _drop_lock:
        os.write(fd, bytes([level]))
        r = os.read(fd, 1)
    if r != b"\x01":
        raise OSError(1, "the root helper could not drop the caches")


def drop_caches(level=3):
    """Cold runs: write back dirty data first, else it stays cached."""
    os.sync()
    fd = os.environ.get(DROP_FD_ENV)
    if fd:
        _drop_via_helper(int(fd), level)
        return
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write(str(level))


def can_drop_caches():
    try:
        drop_caches(1)
        return True
    except OSError:
        return False


def serve_drop_requests(sock):
    """The root side of the rootless cache drop: a daemon thread answering
    until the other end closes."""
    def loop():
        while True:
            try:
                b = sock.recv(1)
            except OSError:
                return
            if not b:
                return
            try:
                os.sync()
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write(str(b[0] if b[0] in (1, 2, 3) else 3))
                ok = b"\x01"
            except OSError:
                ok = b"\x00"
            try:
                sock.send(ok)
            except OSError:
                return
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def machine_cpu_seconds():
    """Busy CPU time of the whole machine (user, nice, system, irq,
    softirq, steal of every CPU) from /proc/stat: what many processes
    (launchers, monitors, daemons, containers) cost together. Only a quiet
    machine makes a delta of it mean something."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


def thread_cpu_seconds():
    """CPU time of the calling thread (an operation timed in-process)."""
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime + ru.ru_stime


def disk_read_bytes():
    """Bytes read from block devices since boot, summed over whole disks
    (loop, ram and zram devices left out: their reads land on a disk too or
    are memory)."""
    total = 0
    for dev in os.listdir("/sys/block"):
        if dev.startswith(("loop", "ram", "zram")):
            continue
        try:
            with open("/sys/block/%s/stat" % dev) as f:
                total += int(f.read().split()[2]) * 512
        except (OSError, IndexError, ValueError):
            pass
    return total


def descendants(pid):
    """Every live process below pid (children first seen through
    /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tids:
            try:
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def proc_comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return None


def proc_cpu_seconds(pid):
    """utime+stime of a process (all its threads) from /proc/PID/stat."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is state (field 3); utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def meminfo_kib(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class RunResult:
    def __init__(self, wall, cpu, rc, out, err):
        self.wall = wall
        self.cpu = cpu
        self.rc = rc
        self.out = out
        self.err = err


def run_setup(argv, cwd=None, timeout=900, what=None):
    """Untimed preparation step; fails loudly with the command's own stderr."""
    p = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    if p.returncode != 0:
        raise BenchError("%s: `%s` exited %d: %s"
                         % (what or "setup", " ".join(argv), p.returncode,
                            p.stderr.decode(errors="replace").strip()[-500:]))
    return p.stdout.decode(errors="replace")


def run_measured(argv, cwd=None, timeout=600, shell=False, env=None):
    """Runs one command; returns wall time and the child's user+sys CPU time
    (reaped with wait4, so it covers the children it waited for)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         shell=shell, start_new_session=True, env=env)
    try:
        return _collect(p, t0, timeout, argv, cwd, shell)
    except BaseException:
        # interrupted (SIGTERM, ^C): the child is in its own session, so it
        # would outlive us and hold the mount busy; end it and reap it
        if p.returncode is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
                os.wait4(p.pid, 0)
            except (OSError, ChildProcessError):
                pass
            p.returncode = -9
        raise


def _collect(p, t0, timeout, argv, cwd, shell):
    err = b""
    deadline = t0 + timeout
    fd = p.stderr.fileno()
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            os.killpg(p.pid, signal.SIGKILL)
            os.wait4(p.pid, 0)
            p.returncode = -9
            p.stderr.close()
            e = BenchError("`%s` timed out after %ds in %s"
                           % (argv if shell else " ".join(argv), timeout, cwd))
            e.timed_out = True
            raise e
        r, _, _ = select.select([fd], [], [], min(left, 1.0))
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if len(err) < 65536:
                err += chunk
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    return RunResult(wall, ru.ru_utime + ru.ru_stime, p.returncode, b"",
                     err.decode(errors="replace"))
