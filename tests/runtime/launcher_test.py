#!/usr/bin/env python3
"""Integration tests for strata-run, the container launcher.

usage: launcher_test.py STRATA_RUN FS_PROGRAM MODE GROUP
  MODE   root      run as real root
         rootless  run as the unprivileged user strata-test (created if
                   missing); /dev/fuse is made usable for it only inside a
                   private mount namespace, the host's node is not touched
  GROUP  behaviour | errors | concurrent

Every container runs on layers built here from Debian's busybox-static. The
test process is a child subreaper, so anything the launcher leaves running
(or as a zombie) after it exits becomes our child and is caught. Exit 77
means skipped, with the reason on stderr.
"""
import ctypes
import hashlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import testlib  # noqa: E402
from testlib import SKIP, USER as TEST_USER  # noqa: E402

BUSYBOX = "/bin/busybox"
APPLETS = ["sh", "ls", "cat", "echo", "id", "hostname", "grep", "sleep", "touch",
           "rm", "kill", "env", "pwd", "true", "mkdir", "wc", "stat", "head", "cut"]
# docker's default capability set: chown dac_override fowner fsetid kill
# setgid setuid setpcap net_bind_service net_raw sys_chroot mknod
# audit_write setfcap (bits 0 1 3 4 5 6 7 8 10 13 18 27 29 31)
DEFAULT_CAPS = sum(1 << b for b in (0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31))
CAP_NET_ADMIN = 12

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWUSER = 0x10000000


# the names the runtime tests have always used for the shared helpers
Failure = testlib.Fail
expect = testlib.check


def skip(reason):
    print(f"SKIP: {reason}", file=sys.stderr)
    sys.exit(SKIP)


class Env:
    def __init__(self, strata_run, fs, mode):
        self.strata_run = os.path.abspath(strata_run)
        self.fs = fs
        self.mode = mode
        self.tmp = tempfile.mkdtemp(prefix="strata-runtime-test.")
        os.chmod(self.tmp, 0o755)
        self.rt = self.mkdir("rt")          # TMPDIR: the launcher's mount points
        self.uid, self.gid = 0, 0
        if mode == "rootless":
            self.uid, self.gid = ensure_user()
            self.fusenode = os.path.join(self.tmp, "fuse")
            os.mknod(self.fusenode, 0o666 | stat.S_IFCHR, os.makedev(10, 229))
            os.chmod(self.fusenode, 0o666)
        self.chown(self.rt)
        self.lower = [self.make_layer_top(), self.make_layer_base()]
        self.lowerdir = ":".join(self.lower)
        self.n = 0

    # -- layers and directories -------------------------------------------
    def mkdir(self, name):
        p = os.path.join(self.tmp, name)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, 0o755)
        return p

    def chown(self, path):
        if self.uid == 0:
            return
        for root, dirs, files in os.walk(path):
            os.lchown(root, self.uid, self.gid)
            for n in dirs + files:
                os.lchown(os.path.join(root, n), self.uid, self.gid)

    def make_layer_base(self):
        d = self.mkdir("layer-base")
        for sub in ("bin", "proc", "dev", "sys", "tmp", "etc", "data", "ro", "rw"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(BUSYBOX, "rb") as src, open(os.path.join(d, "bin/busybox"), "wb") as dst:
            dst.write(src.read())
        os.chmod(os.path.join(d, "bin/busybox"), 0o755)
        for a in APPLETS:
            os.symlink("busybox", os.path.join(d, "bin", a))
        for name, text in (("greeting", "hello\n"), ("remove-me", "bye\n"), ("change-me", "old\n")):
            with open(os.path.join(d, "etc", name), "w") as f:
                f.write(text)
        self.chown(d)
        return d

    def make_layer_top(self):
        d = self.mkdir("layer-top")
        os.makedirs(os.path.join(d, "etc"))
        with open(os.path.join(d, "etc", "greeting"), "w") as f:
            f.write("hello from the top layer\n")
        self.chown(d)
        return d

    def new_upper(self):
        self.n += 1
        u, w = self.mkdir(f"upper{self.n}"), self.mkdir(f"work{self.n}")
        self.chown(u)
        self.chown(w)
        return u, w

    def shared_dir(self):
        self.n += 1
        d = self.mkdir(f"shared{self.n}")
        self.chown(d)
        return d

    # -- running the launcher ---------------------------------------------
    def argv(self, args, fuse="ok"):
        run = [self.strata_run, "--fs-program", self.fs] + args
        if self.mode == "root":
            if fuse == "ok":
                return run
            return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    'mount -t tmpfs tmpfs /dev && exec "$@"', "sh"] + run
        setup = ('mount --bind "$0" /dev/fuse' if fuse == "ok" else "mount -t tmpfs tmpfs /dev")
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                setup + f' && exec setpriv --reuid={self.uid} --regid={self.gid} --init-groups "$@"',
                self.fusenode if fuse == "ok" else "sh"] + run

    def environ(self):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": self.rt, "HOME": self.tmp}
        # a leak in a sanitizer build of strata-run makes it exit non-zero,
        # which fails the test that ran it
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        return env

    def popen(self, args, fuse="ok"):
        return subprocess.Popen(self.argv(args, fuse), env=self.environ(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, args, fuse="ok", timeout=60):
        p = self.popen(args, fuse)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise Failure(f"strata-run {args} did not finish in {timeout}s; stderr: {err}")
        # a test expecting strata-run to fail would take a sanitizer's abort
        # for the refusal it wanted
        found = testlib.sanitizer_report(err)
        expect(not found, f"{found} report from strata-run {args} (or its strata-fs): {err[-6000:]}")
        self.check_clean(args)
        return p.returncode, out, err

    def base(self, upper=True):
        args = ["--lowerdir", self.lowerdir]
        if upper:
            u, w = self.new_upper()
            args += ["--upperdir", u, "--workdir", w]
            return args, u
        return args, None

    # -- leftovers --------------------------------------------------------
    def check_clean(self, what):
        """Nothing of a finished launcher may remain: no mount point, no
        process (the daemon would be re-parented to us, the subreaper), no
        mount of our directories in this namespace."""
        problems = []
        left = os.listdir(self.rt)
        if left:
            problems.append(f"mount point directories left in TMPDIR: {left}")
        for _ in range(50):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                kids = children_of(os.getpid())
                problems.append(f"processes outlived the launcher: {kids}")
                for k in kids:
                    try:
                        os.kill(k, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                for k in kids:
                    try:
                        os.waitpid(k, 0)
                    except ChildProcessError:
                        pass
                break
            problems.append(f"orphan pid {pid} outlived the launcher (status {status})")
        with open("/proc/self/mounts") as f:
            stale = [l for l in f if self.tmp in l]
        if stale:
            problems.append(f"mounts left: {stale}")
        expect(not problems, f"after {what}: " + "; ".join(problems))

    def lower_digest(self):
        h = hashlib.sha256()
        for layer in self.lower:
            for root, dirs, files in os.walk(layer):
                dirs.sort()
                for n in sorted(dirs + files) + ["."]:
                    p = os.path.join(root, n)
                    st = os.lstat(p)
                    h.update(f"{p} {st.st_mode} {st.st_uid} {st.st_gid} {st.st_size} "
                             f"{st.st_mtime_ns}\n".encode())
                    if stat.S_ISREG(st.st_mode):
                        with open(p, "rb") as f:
                            h.update(f.read())
                    elif stat.S_ISLNK(st.st_mode):
                        h.update(os.readlink(p).encode())
        return h.hexdigest()

    def cleanup(self):
        subprocess.run(["rm", "-rf", "--one-file-system", self.tmp])


def children_of(ppid):
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            kids.append(int(d))
    return kids


def ensure_user():
    """(uid, gid) of the test user, created when missing; skips the run when
    it cannot be created."""
    try:
        pw = testlib.ensure_user(TEST_USER)
    except testlib.Skip as e:
        skip(str(e))
    return pw.pw_uid, pw.pw_gid


def subid_range(path, name):
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] == name:
                    return int(parts[1]), int(parts[2])
    except OSError:
        pass
    return None


def wait_for(path, proc, secs=20):
    end = time.time() + secs
    while time.time() < end:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise Failure(f"container exited ({proc.returncode}) before {path} appeared: "
                          f"{proc.stderr.read()}")
        time.sleep(0.05)
    raise Failure(f"{path} never appeared")


def status_field(out, key):
    for line in out.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise Failure(f"{key} missing in {out!r}")


# -- behaviour ---------------------------------------------------------------
def t_writes_go_to_upper(e):
    before = e.lower_digest()
    args, upper = e.base()
    rc, out, err = e.run(args + ["--", "sh", "-c",
                                 "cat /etc/greeting; echo new > /etc/new-file; "
                                 "echo changed > /etc/change-me; rm /etc/remove-me; "
                                 "test -e /etc/remove-me && echo still-there; cat /etc/change-me"])
    expect(rc == 0, f"rc {rc}, stderr {err}")
    expect(out == "hello from the top layer\nchanged\n", f"container saw {out!r}")
    expect(e.lower_digest() == before, "a lower layer changed")
    with open(os.path.join(upper, "etc/new-file")) as f:
        expect(f.read() == "new\n", "new file not in upper")
    with open(os.path.join(upper, "etc/change-me")) as f:
        expect(f.read() == "changed\n", "modified file not copied up")
    wh = os.path.join(upper, "etc/remove-me")
    oci = os.path.join(upper, "etc/.wh.remove-me")
    if os.path.lexists(wh):
        st = os.lstat(wh)
        expect(stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, "deletion left a non-whiteout")
    else:
        expect(os.path.exists(oci), "deletion left no whiteout in upper")
    # and a second container on the same upper sees the same state
    rc, out, err = e.run(args + ["--", "sh", "-c", "ls /etc; cat /etc/new-file"])
    expect(rc == 0 and "remove-me" not in out and out.endswith("new\n"), f"remount saw {out!r} {err}")


def t_read_only_without_upper(e):
    before = e.lower_digest()
    args, _ = e.base(upper=False)
    rc, out, err = e.run(args + ["--", "sh", "-c", "touch /etc/x 2>/dev/null && echo wrote; cat /etc/greeting"])
    expect(rc == 0 and out == "hello from the top layer\n", f"rc {rc} out {out!r} err {err}")
    expect(e.lower_digest() == before, "a lower layer changed")


def t_pid_namespace(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "sh", "-c", "echo $$; ls /proc"])
    expect(rc == 0, f"rc {rc} {err}")
    lines = out.split()
    expect(lines[0] == "2", f"command is pid {lines[0]}, expected 2 (init is 1)")
    pids = sorted(int(x) for x in lines[1:] if x.isdigit())
    expect(len(pids) <= 3 and pids[:2] == [1, 2], f"container sees processes {pids}")


def t_hostname(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--hostname", "box-1", "--", "hostname"])
    expect(rc == 0 and out == "box-1\n", f"hostname {out!r} {err}")
    rc, out, err = e.run(args + ["--", "hostname"])
    expect(rc == 0 and out == "strata\n", f"default hostname {out!r}")


def t_capabilities(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "cat", "/proc/self/status"])
    expect(rc == 0, err)
    for key in ("CapEff", "CapPrm", "CapBnd"):
        got = int(status_field(out, key), 16)
        expect(got == DEFAULT_CAPS, f"{key} {got:x}, expected docker's default {DEFAULT_CAPS:x}")
    expect(int(status_field(out, "CapInh"), 16) == 0, "inheritable set not empty")
    expect(status_field(out, "NoNewPrivs") == "1", "no_new_privs not set")
    rc, out, err = e.run(args + ["--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--", "cat", "/proc/self/status"])
    expect(int(status_field(out, "CapEff"), 16) == 1 << CAP_NET_ADMIN, f"cap-add after drop ALL: {out}")
    rc, out, err = e.run(args + ["--cap-drop", "chown", "--", "cat", "/proc/self/status"])
    expect(int(status_field(out, "CapEff"), 16) == DEFAULT_CAPS & ~1, "cap-drop chown")


def t_exit_codes(e):
    args, _ = e.base()
    for script, want in (("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -15 $$", 143)):
        rc, out, err = e.run(args + ["--", "sh", "-c", script])
        expect(rc == want, f"'{script}' gave {rc}, expected {want}; {err}")
    rc, out, err = e.run(args + ["--", "no-such-command", "x"])
    expect(rc == 127 and "no-such-command" in err, f"missing command: rc {rc} err {err!r}")


def t_signal_forwarding(e):
    args, _ = e.base()
    for sig, want in ((signal.SIGUSR1, 40 + signal.SIGUSR1), (signal.SIGHUP, 40 + signal.SIGHUP),
                      (signal.SIGINT, 40 + signal.SIGINT)):
        d = e.shared_dir()
        n = sig.name[3:]
        p = e.popen(args + ["--bind", f"{d}:/data", "--", "sh", "-c",
                            f'trap "exit {int(want)}" {n}; touch /data/ready; '
                            "while :; do sleep 0.05; done"])
        wait_for(os.path.join(d, "ready"), p)
        os.kill(p.pid, sig)
        out, err = p.communicate(timeout=30)
        expect(p.returncode == want, f"{n}: exit {p.returncode}, expected {want} (trap ran); {err}")
        e.check_clean(f"signal {n}")
    # a launcher told to stop stops the command (no trap: killed by it)
    d = e.shared_dir()
    p = e.popen(args + ["--bind", f"{d}:/data", "--", "sh", "-c",
                        "touch /data/ready; while :; do sleep 0.05; done"])
    wait_for(os.path.join(d, "ready"), p)
    os.kill(p.pid, signal.SIGTERM)
    p.communicate(timeout=30)
    expect(p.returncode == 128 + signal.SIGTERM, f"SIGTERM to launcher: exit {p.returncode}")
    e.check_clean("SIGTERM to the launcher")


def t_launcher_killed(e):
    """SIGKILL cannot be forwarded: the tree must still go away by itself
    (parent-death signals), leaving at most the empty mount point dir."""
    args, _ = e.base()
    d = e.shared_dir()
    p = e.popen(args + ["--bind", f"{d}:/data", "--", "sh", "-c",
                        "touch /data/ready; while :; do sleep 0.05; done"])
    wait_for(os.path.join(d, "ready"), p)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    end = time.time() + 10
    while time.time() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    for left in os.listdir(e.rt):
        os.rmdir(os.path.join(e.rt, left))  # fails (and so fails the test) if still mounted
    e.check_clean("SIGKILL to the launcher")


def t_terminal(e):
    """On a terminal the command is in the foreground: it reads the
    terminal, and a typed ^C reaches it (from the kernel, not relayed)."""
    import pty
    import select
    args, _ = e.base()
    argv = e.argv(args + ["--", "sh", "-c",
                          'trap "echo trapped; exit 7" INT; read line; echo "got:$line"; '
                          'echo ready; while :; do sleep 0.05; done'])
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvpe(argv[0], argv, e.environ())
        finally:
            os._exit(127)
    buf = b""

    def read_until(token, secs=20):
        nonlocal buf
        end = time.time() + secs
        while token not in buf and time.time() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    buf += os.read(fd, 4096)
                except OSError:
                    break
        return token in buf

    try:
        time.sleep(0.3)
        os.write(fd, b"hello\n")
        expect(read_until(b"ready"), f"no output after typing a line: {buf!r}")
        expect(b"got:hello" in buf, f"the command did not read the terminal: {buf!r}")
        os.write(fd, b"\x03")
        expect(read_until(b"trapped"), f"^C did not reach the command: {buf!r}")
    finally:
        end = time.time() + 20
        while time.time() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = -1
        os.close(fd)
    expect(os.waitstatus_to_exitcode(status) == 7, f"exit {status} after ^C, expected 7; {buf!r}")
    e.check_clean("terminal")


def t_binds(e):
    args, _ = e.base()
    d = e.shared_dir()
    with open(os.path.join(d, "host-file"), "w") as f:
        f.write("from host\n")
    e.chown(d)
    rc, out, err = e.run(args + ["--bind", f"{d}:/ro:ro", "--", "sh", "-c",
                                 "cat /ro/host-file; echo x > /ro/host-file && echo WROTE; "
                                 "touch /ro/new && echo CREATED; true"])
    expect(rc == 0 and out == "from host\n", f"ro bind: {out!r} {err}")
    with open(os.path.join(d, "host-file")) as f:
        expect(f.read() == "from host\n", "read-only bind was written")
    expect(not os.path.exists(os.path.join(d, "new")), "read-only bind got a new file")
    rc, out, err = e.run(args + ["--bind", f"{d}:/rw", "--", "sh", "-c", "echo written > /rw/out"])
    expect(rc == 0, f"rw bind: {err}")
    with open(os.path.join(d, "out")) as f:
        expect(f.read() == "written\n", "rw bind write not on the host")
    # a bind target missing in the image is created in the upper layer
    rc, out, err = e.run(args + ["--bind", f"{d}:/made/here:ro", "--", "cat", "/made/here/host-file"])
    expect(rc == 0 and out == "from host\n", f"bind to a new directory: {out!r} {err}")


def t_user_env_cwd(e):
    args, _ = e.base()
    extra = []
    if e.mode == "rootless":
        sub_u = subid_range("/etc/subuid", TEST_USER)
        sub_g = subid_range("/etc/subgid", TEST_USER)
        if not sub_u or not sub_g:
            raise Failure(f"{TEST_USER} has no /etc/subuid or /etc/subgid range for --uidmap")
        extra = ["--uidmap", f"0:{e.uid}:1", "--uidmap", f"1:{sub_u[0]}:{min(sub_u[1], 65536)}",
                 "--gidmap", f"0:{e.gid}:1", "--gidmap", f"1:{sub_g[0]}:{min(sub_g[1], 65536)}"]
    rc, out, err = e.run(args + extra + ["--user", "1234:4321", "--cwd", "/tmp", "--env", "FOO=bar baz",
                                         "--", "sh", "-c",
                                         "id -u; id -g; pwd; grep CapEff /proc/self/status; env | sort"])
    expect(rc == 0, f"rc {rc} {err}")
    lines = out.splitlines()
    expect(lines[:3] == ["1234", "4321", "/tmp"], f"user/cwd: {lines[:3]}")
    expect(int(lines[3].split()[1], 16) == 0, f"a non-root user kept capabilities: {lines[3]}")
    env = sorted(l for l in lines[4:] if not l.startswith(("PWD=", "SHLVL=", "_=")))
    expect(env == ["FOO=bar baz", "HOME=/", "HOSTNAME=strata",
                   "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
           f"environment is not minimal and explicit: {env}")
    rc, out, err = e.run(args + ["--env", "PATH=/bin", "--", "sh", "-c", 'echo "$PATH $HOME"'])
    expect(out == "/bin /root\n", f"--env PATH override: {out!r}")


def t_rlimit(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--rlimit", "nofile=100:200", "--rlimit", "core=0", "--", "sh", "-c",
                                 "ulimit -n; ulimit -Hn; ulimit -c"])
    expect(rc == 0 and out.split() == ["100", "200", "0"], f"rlimits: {out!r} {err}")


def t_init_reaps_orphans(e):
    """A grandchild whose parent exits is re-parented to init, which must
    reap it: no zombie may stay in the container."""
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "sh", "-c",
                                 'sh -c "sleep 0.1 & exit 0"; sleep 0.5; cat /proc/[0-9]*/stat'])
    expect(rc == 0, f"rc {rc} {err}")
    states = [l.rsplit(")", 1)[1].split()[0] for l in out.splitlines() if ")" in l]
    expect(states and "Z" not in states, f"zombies in the container: {out!r}")


def t_kernel_paths_masked(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "sh", "-c",
                                 "cat /proc/keys | wc -c; ls /sys/firmware | wc -l; "
                                 "echo 1 > /proc/sys/kernel/hostname && echo WROTE-SYSCTL; "
                                 "echo h > /proc/sysrq-trigger && echo WROTE-SYSRQ; true"])
    expect(rc == 0 and out.split() == ["0", "0"], f"masked paths visible or writable: {out!r} {err}")


def t_no_leaked_fds(e):
    """Descriptors the caller left open must not reach the command."""
    args, _ = e.base()
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        p = subprocess.Popen(e.argv(args + ["--", "ls", "/proc/self/fd"]), env=e.environ(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             pass_fds=(w,))
        out, err = p.communicate(timeout=60)
    finally:
        os.close(w)
        os.close(r)
    e.check_clean("fd leak check")
    fds = sorted(int(x) for x in out.split())
    # 0-2 plus the one ls itself opens to read the directory
    expect(p.returncode == 0 and fds == [0, 1, 2, 3], f"command inherited fds {fds} {err}")


def t_root_with_idmap(e):
    """Root asking for a user namespace: the ranges are written directly,
    the command is root of the namespace, its files land on the host as
    the mapped id. Layers must belong to the range, as in a rootless store."""
    if e.mode != "root":
        return
    base = 400000
    layers = []
    for i, layer in enumerate(e.lower):
        copy = os.path.join(e.tmp, f"mapped-layer{i}")
        subprocess.run(["cp", "-a", layer, copy], check=True)
        subprocess.run(["chown", "-R", f"{base}:{base}", copy], check=True)
        layers.append(copy)
    u, w = e.new_upper()
    os.chown(u, base, base)
    os.chown(w, base, base)
    rc, out, err = e.run(["--lowerdir", ":".join(layers), "--upperdir", u, "--workdir", w,
                          "--uidmap", f"0:{base}:65536", "--gidmap", f"0:{base}:65536", "--", "sh", "-c",
                          "id -u; id -g; cat /proc/self/uid_map; stat -c %u /etc/greeting; echo x > /newf"])
    expect(rc == 0, f"rc {rc} {err}")
    lines = out.splitlines()
    expect(lines[:2] == ["0", "0"] and lines[2].split() == ["0", str(base), "65536"] and lines[3] == "0",
           f"inside the mapped namespace: {lines}")
    st = os.stat(os.path.join(u, "newf"))
    expect((st.st_uid, st.st_gid) == (base, base), f"new file owned by {st.st_uid}:{st.st_gid} on the host")


def t_minimal_dev(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "sh", "-c",
                                 "ls /dev; echo discard > /dev/null && echo null-ok; "
                                 "head -c 4 /dev/zero | wc -c; head -c 4 /dev/urandom | wc -c; "
                                 "echo x > /dev/shm/f && echo shm-ok; test -c /dev/pts/ptmx && echo pts-ok; "
                                 "grep -E ' /dev/(pts|shm) ' /proc/self/mounts | cut -d' ' -f3"])
    expect(rc == 0, f"rc {rc} {err}")
    lines = out.split()
    listing = set(lines[:lines.index("null-ok")])
    want = {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx",
            "fd", "stdin", "stdout", "stderr"}
    expect(listing == want, f"/dev holds {sorted(listing)}, expected {sorted(want)}")
    expect(lines[lines.index("null-ok"):] == ["null-ok", "4", "4", "shm-ok", "pts-ok", "devpts", "tmpfs"],
           f"devices do not work: {out!r}")


def t_net_none(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--net", "none", "--", "ls", "/sys/class/net"])
    expect(rc == 0 and out.split() == ["lo"], f"--net none interfaces: {out!r} {err}")
    rc, out, err = e.run(args + ["--net", "none", "--", "cat", "/sys/class/net/lo/operstate"])
    expect(rc == 0 and out.strip() in ("up", "unknown"), f"lo not up: {out!r}")
    rc, out, err = e.run(args + ["--", "sh", "-c", "touch /sys/x 2>/dev/null && echo WROTE; true"])
    expect(rc == 0 and "WROTE" not in out, "/sys is writable")


# -- errors ----------------------------------------------------------------
def t_missing_layer(e):
    rc, out, err = e.run(["--lowerdir", e.lowerdir + ":" + e.tmp + "/no-such-layer", "--", "true"])
    expect(rc == 125 and "no-such-layer" in err and "No such file" in err, f"rc {rc} err {err!r}")


def t_missing_command(e):
    args, upper = e.base()
    rc, out, err = e.run(args + ["--", "/usr/bin/not-here"])
    expect(rc == 127 and "/usr/bin/not-here" in err, f"rc {rc} err {err!r}")


def t_missing_bind_source(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--bind", f"{e.tmp}/nope:/data", "--", "true"])
    expect(rc == 125 and f"{e.tmp}/nope" in err, f"rc {rc} err {err!r}")


def t_no_dev_fuse(e):
    args, _ = e.base()
    rc, out, err = e.run(args + ["--", "true"], fuse="none")
    expect(rc == 125 and "/dev/fuse" in err, f"rc {rc} err {err!r}")


def t_daemon_fails(e):
    """A daemon that exits without serving the mount is a setup failure
    naming it, not a hang, and leaves nothing behind."""
    args, _ = e.base()
    argv = e.argv(args + ["--", "true"])
    i = argv.index("--fs-program")
    argv[i + 1] = "/bin/false"
    p = subprocess.run(argv, env=e.environ(), capture_output=True, text=True, timeout=60)
    e.check_clean("daemon that fails")
    expect(p.returncode == 125 and "/bin/false" in p.stderr, f"rc {p.returncode} err {p.stderr!r}")


def t_cli(e):
    p = subprocess.run([e.strata_run, "--help"], capture_output=True, text=True)
    expect(p.returncode == 0 and "--lowerdir" in p.stdout and "--uidmap" in p.stdout, "--help")
    p = subprocess.run([e.strata_run, "--version"], capture_output=True, text=True)
    expect(p.returncode == 0 and p.stdout.startswith("strata-run "), f"--version: {p.stdout!r}")
    p = subprocess.run([e.strata_run, "--lowerdir", e.lowerdir], capture_output=True, text=True)
    expect(p.returncode == 125 and "no command" in p.stderr, f"no command: {p.stderr!r}")


def t_bad_options(e):
    for bad in (["--cap-add", "NOT_A_CAP"], ["--rlimit", "nofile=9:1"], ["--net", "bridge"],
                ["--user", "bob"], ["--bind", "relative"], ["--upperdir", e.tmp],
                ["--hostname", "h" * 65], ["--env", "NOEQUALS"], ["--uidmap", "0:1"]):
        rc, out, err = e.run(["--lowerdir", e.lowerdir] + bad + ["--", "true"])
        expect(rc == 125 and err.strip(), f"{bad}: rc {rc} err {err!r}")


def t_errors_reach_the_caller(e):
    """A step that fails inside the container (the command's chdir, the
    command's exec, init's cgroup, the mount) is reported by the caller,
    once, as "strata-run: OP PATH: CAUSE (HINT)": the helper processes send
    their error on the error pipe instead of printing it themselves."""
    args, _ = e.base()
    cases = [
        (["--cwd", "/no-such-dir", "--", "true"], 125, "strata-run: chdir /no-such-dir: No such file or directory ("),
        (["--", "no-such-command"], 127, "strata-run: exec no-such-command: No such file or directory ("),
        (["-t", "--", "no-such-command"], 127, "strata-run: exec no-such-command: No such file or directory ("),
    ]
    for extra, want_rc, want in cases:
        rc, out, err = e.run(args + extra)
        lines = [l for l in err.splitlines() if l.strip()]
        expect(rc == want_rc and len(lines) == 1 and lines[0].startswith(want),
               f"{extra}: rc {rc} (want {want_rc}), stderr {err!r}; want one line starting {want!r}")


def t_userns_disabled(e):
    """A user namespace whose max_user_namespaces is 0 stands in for a host
    with user namespaces disabled."""
    if e.mode != "rootless":
        return
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    err_r, err_w = os.pipe()
    argv = [e.strata_run, "--fs-program", e.fs, "--lowerdir", e.lowerdir, "--", "true"]
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(go_w)
            if libc.unshare(CLONE_NEWUSER) != 0:
                os._exit(90)
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            with open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write("0")
            os.dup2(err_w, 2)
            os.setgroups([])
            os.setresgid(e.gid, e.gid, e.gid)
            os.setresuid(e.uid, e.uid, e.uid)
            os.execve(argv[0], argv, e.environ())
        finally:
            os._exit(91)
    os.close(ready_w)
    os.close(go_r)
    os.close(err_w)
    if os.read(ready_r, 1) == b"x":
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write("0 0 65536\n")
    os.write(go_w, b"g")
    err = b""
    while chunk := os.read(err_r, 4096):
        err += chunk
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    err = err.decode()
    expect(rc == 125 and "user" in err and "namespace" in err, f"rc {rc} err {err!r}")
    e.check_clean("user namespaces disabled")


# -- concurrency -------------------------------------------------------------
def t_two_containers(e):
    before = e.lower_digest()
    runs = []
    for name in ("a", "b"):
        args, upper = e.base()
        p = e.popen(args + ["--", "sh", "-c",
                            f"echo {name} > /etc/greeting; touch /only-{name}; sleep 0.5; "
                            "cat /etc/greeting; ls /"])
        runs.append((name, upper, p))
    for name, upper, p in runs:
        out, err = p.communicate(timeout=60)
        other = "b" if name == "a" else "a"
        expect(p.returncode == 0, f"container {name}: rc {p.returncode} {err}")
        lines = out.split()
        expect(lines[0] == name, f"container {name} read {lines[0]!r} from its own write")
        expect(f"only-{name}" in lines and f"only-{other}" not in lines,
               f"container {name} sees {lines}")
        expect(os.path.exists(os.path.join(upper, f"only-{name}")) and
               not os.path.exists(os.path.join(upper, f"only-{other}")), f"upper of {name} mixed")
    e.check_clean("two containers")
    expect(e.lower_digest() == before, "a lower layer changed")


GROUPS = {
    "behaviour": [t_writes_go_to_upper, t_read_only_without_upper, t_pid_namespace, t_hostname,
                  t_capabilities, t_exit_codes, t_signal_forwarding, t_launcher_killed, t_terminal, t_binds, t_user_env_cwd,
                  t_rlimit, t_init_reaps_orphans, t_kernel_paths_masked, t_no_leaked_fds,
                  t_root_with_idmap, t_minimal_dev, t_net_none],
    "errors": [t_missing_layer, t_missing_command, t_missing_bind_source, t_no_dev_fuse,
               t_daemon_fails, t_cli, t_bad_options, t_errors_reach_the_caller, t_userns_disabled],
    "concurrent": [t_two_containers],
}



def run_tests(e, mode, tests):
    """Run each test(e) and print ok/FAIL; returns how many failed. A
    harness error fails its test too. Shared by the runtime suites."""
    failed = 0
    for t in tests:
        name = getattr(t, "__name__", None) or t.func.__name__   # functools.partial
        try:
            t(e)
            print(f"ok   {mode} {name}", flush=True)
        except Failure as f:
            failed += 1
            print(f"FAIL {mode} {name}: {f}", flush=True)
        except Exception as ex:  # a harness error is a failure too
            failed += 1
            print(f"FAIL {mode} {name}: {type(ex).__name__}: {ex}", flush=True)
    return failed

def harness_ready(*programs):
    """What every runtime suite checks before it starts (it skips
    otherwise): root, since it builds the rootless set-up for the test user
    itself; the programs it runs; /dev/fuse. Then this process becomes the
    subreaper of whatever the containers under test leave behind."""
    if os.geteuid() != 0:
        skip("the harness needs root (it builds the rootless setup for the test user itself)")
    for need in list(programs) + [BUSYBOX]:
        if not os.access(need, os.X_OK):
            skip(f"{need} is not an executable")
    if not os.path.exists("/dev/fuse"):
        skip("no /dev/fuse on this machine")
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def run_suite(e, mode, tests, before=None):
    """run_tests() with e cleaned up whatever happens; the exit code."""
    failed = 0
    try:
        if before:
            before(e)
        failed += run_tests(e, mode, tests)
    finally:
        e.cleanup()
    return 1 if failed else 0


def main():
    if len(sys.argv) != 5 or sys.argv[3] not in ("root", "rootless") or sys.argv[4] not in GROUPS:
        print(__doc__, file=sys.stderr)
        return 2
    strata_run, fs, mode, group = sys.argv[1:]
    harness_ready(strata_run, fs)
    return run_suite(Env(strata_run, fs, mode), mode, GROUPS[group])


if __name__ == "__main__":
    sys.exit(main())
