"""What test_exec.py, test_tty.py and test_net.py share: launcher_test's
environment (busybox layers, the rootless setup for the test user, the
leftover checks) plus a few applets, the tun device for a rootless private
network, and finding a running container's init."""
import os
import signal
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launcher_test as lt  # noqa: E402

Failure, expect, skip, SKIP = lt.Failure, lt.expect, lt.skip, lt.SKIP
EXTRA_APPLETS = ["ps", "tty", "stty", "httpd", "ip", "wget", "chmod", "printf", "tr"]
TUN = "/dev/net/tun"
# deadlines only catch hangs; a busy machine stretches them (tests/CMakeLists.txt)
SCALE = max(1.0, float(os.environ.get("STRATA_TEST_SCALE", "1") or 1))


def tun_usable_by(uid, gid):
    """Can uid open the host's tun node? pasta opens it inside the
    container's user namespace, where only its own permission bits count."""
    st = os.stat(TUN)
    mode = st.st_mode
    if uid == 0:
        return True
    if st.st_uid == uid:
        return mode & 0o600 == 0o600
    if st.st_gid == gid:
        return mode & 0o060 == 0o060
    return mode & 0o006 == 0o006


class Env(lt.Env):
    """launcher_test's Env; in rootless mode a host whose /dev/net/tun is
    root-only (mode 0600; most distributions ship 0666) gets a usable node
    bound over it inside the private mount namespace the harness already
    makes for /dev/fuse. The host's node is not touched."""

    def __init__(self, strata_run, fs, mode):
        super().__init__(strata_run, fs, mode)
        base = self.lower[1]
        for a in EXTRA_APPLETS:
            p = os.path.join(base, "bin", a)
            if not os.path.lexists(p):
                os.symlink("busybox", p)
                if self.uid:
                    os.lchown(p, self.uid, self.gid)
        www = os.path.join(base, "www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("hello from strata httpd\n")
        self.chown(www)
        self.tunnode = None
        self.bind_tun = True
        if mode == "rootless" and os.path.exists(TUN) and not tun_usable_by(self.uid, self.gid):
            self.tunnode = os.path.join(self.tmp, "tun")
            os.mknod(self.tunnode, 0o666 | stat.S_IFCHR, os.stat(TUN).st_rdev)
            os.chmod(self.tunnode, 0o666)

    def wrap(self, cmd, fuse="ok"):
        """Any command, run the way the launcher is run in this mode."""
        if self.mode == "root":
            return cmd
        setup = 'mount --bind "$0" /dev/fuse' if fuse == "ok" else "mount -t tmpfs tmpfs /dev"
        if self.tunnode and self.bind_tun:
            setup += f" && mount --bind {self.tunnode} {TUN}"
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                setup + f' && exec setpriv --reuid={self.uid} --regid={self.gid} --init-groups "$@"',
                self.fusenode if fuse == "ok" else "sh"] + cmd

    def argv(self, args, fuse="ok"):
        return self.wrap([self.strata_run, "--fs-program", self.fs] + args, fuse)


def mapped_layers(e, base=400000):
    """Root with --uidmap: copies of the layers owned by the range, as in
    a rootless store. Returns the strata-run arguments for them."""
    import subprocess
    layers = []
    for i, layer in enumerate(e.lower):
        copy = os.path.join(e.tmp, f"mapped-layer{i}")
        if not os.path.exists(copy):
            subprocess.run(["cp", "-a", layer, copy], check=True)
            subprocess.run(["chown", "-R", f"{base}:{base}", copy], check=True)
        layers.append(copy)
    u, w = e.new_upper()
    os.chown(u, base, base)
    os.chown(w, base, base)
    return ["--lowerdir", ":".join(layers), "--upperdir", u, "--workdir", w,
            "--uidmap", f"0:{base}:65536", "--gidmap", f"0:{base}:65536"]


def find_init(launcher_pid, proc=None, secs=30):
    secs *= SCALE
    """The container's pid 1 as the host sees it: the descendant of the
    launcher whose innermost pid is 1."""
    end = time.time() + secs
    while time.time() < end:
        todo = [launcher_pid]
        while todo:
            p = todo.pop()
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if len(ids) > 1 and ids[-1] == "1":
                                return p
            except OSError:
                pass
            todo += lt.children_of(p)
        if proc is not None and proc.poll() is not None:
            raise Failure(f"container exited ({proc.returncode}) before it ran: {proc.stderr.read()}")
        time.sleep(0.05)
    raise Failure(f"no container init under pid {launcher_pid}")


def stop(e, p, what, sig=signal.SIGTERM):
    """Stop a background launcher by pid and check nothing is left."""
    if p.poll() is None:
        os.kill(p.pid, sig)
    try:
        out, err = p.communicate(timeout=60 * SCALE)
    except Exception:
        p.kill()
        out, err = p.communicate()
    e.check_clean(what)
    return p.returncode, out, err


def processes_named(name):
    """Processes started as name (argv[0]'s last component): pasta runs
    on as passt.avx2 or the like, so its comm does not say."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0")[0].decode(errors="replace")
                if os.path.basename(argv0) == name:
                    found.append(int(d))
            except OSError:
                pass
    return found


def run_tests(groups, argv_len, usage, make_env, check=None):
    """main() of each test script: MODE GROUP are the last two arguments."""
    if len(sys.argv) != argv_len or sys.argv[-2] not in ("root", "rootless") or sys.argv[-1] not in groups:
        print(usage, file=sys.stderr)
        return 2
    mode, group = sys.argv[-2], sys.argv[-1]
    lt.harness_ready(*[a for a in sys.argv[1:-2] if a.startswith("/")])
    return lt.run_suite(make_env(mode), mode, groups[group], before=check)
