#!/usr/bin/env python3
"""Device nodes must not reach the host's devices from a container.

usage: test_security.py STRATA_RUN FS_PROGRAM MODE   (MODE: root | rootless)

An image layer ships a block device node (b 7 0, the host's /dev/loop0)
and character nodes (c 1 1, /dev/mem; c 1 3, a /dev/null twin), a bound
host directory holds one too, and the command tries mknod in /tmp (the
merged root), /dev and /dev/shm. None of those nodes may open: the merged
root, /dev and binds are nodev, and a root container's device cgroup
refuses every device but the standard set (mknod included). The standard
nodes (/dev/null, zero, urandom, ptmx, tty) keep working.

Uses launcher_test's environment (layers from busybox, the rootless setup
for the test user, the leftover checks). Exit 77: skipped.
"""
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launcher_test as lt  # noqa: E402

Failure, expect = lt.Failure, lt.expect
APPLETS = ["mknod", "head", "dd", "tty", "printf"]
DENIED = ("Permission denied", "Operation not permitted")


class Env(lt.Env):
    def __init__(self, strata_run, fs, mode):
        super().__init__(strata_run, fs, mode)
        d = self.mkdir("layer-devices")
        for a in APPLETS:
            os.makedirs(os.path.join(d, "bin"), exist_ok=True)
            os.symlink("/bin/busybox", os.path.join(d, "bin", a))
        os.makedirs(os.path.join(d, "nodes"))
        for name, kind, major, minor in (("blk", stat.S_IFBLK, 7, 0), ("mem", stat.S_IFCHR, 1, 1),
                                         ("nul", stat.S_IFCHR, 1, 3), ("zero", stat.S_IFCHR, 1, 5)):
            os.mknod(os.path.join(d, "nodes", name), 0o666 | kind, os.makedev(major, minor))
            os.chmod(os.path.join(d, "nodes", name), 0o666)
        self.chown(d)
        self.devlayer = d
        self.lower = [d] + self.lower
        self.lowerdir = ":".join(self.lower)


def open_probe(paths):
    """A shell loop that reports, per node, OPENED or the error text."""
    return " ".join(f'if m=$(head -c 1 {p} 2>&1 >/dev/null); then echo "OPENED {p}"; '
                    f'else echo "DENIED {p} $m"; fi;' for p in paths)


def check_denied(out, paths):
    for p in paths:
        line = next((l for l in out.splitlines()
                     if l.startswith(("OPENED", "DENIED")) and l.split()[1:2] == [p]), None)
        expect(line is not None, f"no verdict for {p} in {out!r}")
        expect(line.startswith("DENIED") and any(d in line for d in DENIED),
               f"{p} is not refused with EACCES/EPERM: {line!r}")


def t_image_device_nodes(e):
    """Nodes shipped in a layer exist in the container but never open."""
    # the nodes are real: the host opens the /dev/null twin
    with open(os.path.join(e.devlayer, "nodes", "nul"), "rb") as f:
        expect(f.read(1) == b"", "the host cannot open the layer's /dev/null twin")
    nodes = ["/nodes/blk", "/nodes/mem", "/nodes/nul", "/nodes/zero"]
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "sh", "-c", "ls -l /nodes | grep -c '^[bc]'; " + open_probe(nodes)])
    expect(rc == 0, f"rc {rc} {err}")
    expect(out.splitlines()[0] == "4", f"the image's device nodes are not all visible: {out!r}")
    check_denied(out, nodes)
    # read-only root (no upper) too
    args, _ = e.base(upper=False)
    rc, out, err = e.run(args + ["--", "sh", "-c", open_probe(["/nodes/blk", "/nodes/nul"])])
    expect(rc == 0, f"rc {rc} {err}")
    check_denied(out, ["/nodes/blk", "/nodes/nul"])


def t_mknod_inside(e):
    """mknod in the merged root, in /dev and in /dev/shm: refused, or the
    node does not open."""
    args, upper = e.base()
    places = ["/tmp/d", "/dev/x", "/dev/shm/y", "/tmp/c"]
    script = ("mknod /tmp/d b 7 0; mknod /dev/x b 7 0; mknod /dev/shm/y c 1 3; mknod /tmp/c c 1 3; "
              "for p in " + " ".join(places) + "; do test -e $p && echo MADE $p; done; " + open_probe(places))
    rc, out, err = e.run(args + ["--", "sh", "-c", script])
    expect(rc == 0, f"rc {rc} {err}")
    made = [l.split()[1] for l in out.splitlines() if l.startswith("MADE")]
    for p in places:
        if p in made:
            check_denied(out, [p])
    if e.mode == "root":
        # the device cgroup refuses mknod outright, even of an allowed
        # device where it is not one of the standard set's majors
        expect("/tmp/d" not in made and "/dev/x" not in made,
               f"a root container made a block device node: {out!r} {err!r}")
        expect("Operation not permitted" in err, f"mknod was not refused with EPERM: {err!r}")
    else:
        expect(not made, f"a rootless container made device nodes: {made}")
    # and nothing of the kind reached the upper layer on the host
    for root, dirs, files in os.walk(upper):
        for n in files:
            st = os.lstat(os.path.join(root, n))
            expect(not stat.S_ISBLK(st.st_mode), f"block device node in the upper: {root}/{n}")


def t_bind_nodev(e):
    """A host directory bound into the container holds a device node: it
    must not open there (binds are nodev)."""
    d = e.shared_dir()
    os.mknod(os.path.join(d, "nul"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(os.path.join(d, "nul"), 0o666)
    e.chown(d)
    args, _ = e.base()
    rc, out, err = e.run(args + ["--bind", f"{d}:/data", "--", "sh", "-c",
                                 open_probe(["/data/nul"]) + " echo x > /data/file && echo WROTE"])
    expect(rc == 0 and "WROTE" in out, f"rc {rc} {out!r} {err}")
    check_denied(out, ["/data/nul"])


def t_standard_devices_work(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "sh", "-c",
                                 "echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; "
                                 "head -c 4 /dev/urandom | wc -c; head -c 4 /dev/random | wc -c; "
                                 "echo x > /dev/full 2>/dev/null || echo full-ok; "
                                 "exec 3<>/dev/ptmx && echo ptmx-ok; exec 4<>/dev/pts/ptmx && echo pts-ptmx-ok"])
    expect(rc == 0, f"rc {rc} {err}")
    expect(out.split() == ["null-ok", "4", "4", "4", "full-ok", "ptmx-ok", "pts-ptmx-ok"],
           f"standard devices do not work: {out!r} {err!r}")


def run_on_terminal(e, args, secs=60):
    """Run strata-run on a new pseudo-terminal; returns (exit code, output)."""
    argv = e.argv(args)
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvpe(argv[0], argv, e.environ())
        finally:
            os._exit(127)
    buf = b""
    end = time.time() + secs
    status = None
    try:
        while time.time() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                buf += chunk
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise Failure(f"strata-run on a terminal did not finish in {secs}s: {buf!r}")
        while select.select([fd], [], [], 0.2)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    finally:
        os.close(fd)
    e.check_clean("terminal")
    return os.waitstatus_to_exitcode(status), buf.decode(errors="replace")


def t_terminal_devices(e):
    """The controlling terminal (/dev/tty) and a terminal of the
    container's own devpts (-t) still work."""
    args, _ = e.base()
    rc, out = run_on_terminal(e, args + ["--", "sh", "-c", "echo via-dev-tty > /dev/tty && echo tty-ok"])
    expect(rc == 0 and "via-dev-tty" in out and "tty-ok" in out, f"/dev/tty: rc {rc} {out!r}")
    rc, out = run_on_terminal(e, args + ["-t", "--", "tty"])
    expect(rc == 0 and "/dev/pts/0" in out, f"tty under -t: rc {rc} {out!r}")


def t_device_program_v2(e):
    """Where the cgroup v1 device controller is not mounted (a hybrid host
    without it, as a unified one has none), a root container's device
    rules are a BPF program on its cgroup in the unified hierarchy: mknod
    of a block device is refused there too. The v1 controller is hidden
    for the launcher in a mount namespace of its own."""
    if e.mode != "root":
        return
    with open("/proc/self/mountinfo") as f:
        mounts = [l.split(" - ")[1].split()[0] + " " + l.split()[4] for l in f]
    if "cgroup /sys/fs/cgroup/devices" not in mounts or not any(m.startswith("cgroup2 ") for m in mounts):
        print("     (no v1 device controller plus unified hierarchy here; the plain tests cover v2)")
        return
    args, _ = e.base()
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'umount -l /sys/fs/cgroup/devices && exec "$@"', "sh"] + e.argv(
        args + ["--", "sh", "-c", "grep '^0::' /proc/self/cgroup; mknod /tmp/b b 7 0 && echo MADE-b; "
                "mknod /dev/shm/m c 1 1 && echo MADE-m; mknod /dev/shm/n c 1 3 && echo MADE-n; "
                "echo x > /dev/null && echo null-ok"])
    p = subprocess.run(argv, env=e.environ(), capture_output=True, text=True, timeout=60)
    e.check_clean("device program")
    out = p.stdout.split()
    expect(p.returncode == 0, f"rc {p.returncode} {p.stderr}")
    expect(out[0].startswith("0::/") and out[0] != "0::/", f"not in a unified cgroup of its own: {out}")
    expect("MADE-b" not in out and "MADE-m" not in out and "MADE-n" in out and "null-ok" in out,
           f"the device program let through or refused the wrong nodes: {out} {p.stderr!r}")


TESTS = [t_image_device_nodes, t_mknod_inside, t_bind_nodev, t_standard_devices_work, t_terminal_devices,
         t_device_program_v2]


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("root", "rootless"):
        print(__doc__, file=sys.stderr)
        return 2
    strata_run, fs, mode = sys.argv[1:]
    lt.harness_ready(strata_run, fs)
    return lt.run_suite(Env(strata_run, fs, mode), mode, TESTS)


if __name__ == "__main__":
    sys.exit(main())
