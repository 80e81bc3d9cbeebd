"""Mounting: kernel overlayfs, the FUSE filesystem under test (run with -f
so its pid is ours to wait for), tmpfs scratch space, mountinfo queries."""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from fsmode import Skip, mode, sanitizer_report

# Every deadline below only catches a hang; tests/CMakeLists.txt sets the
# scale so a busy machine never trips one.
SCALE = max(1, int(os.environ.get("STRATA_TEST_SCALE", "1")))


# ---------------------------------------------------------------- mounts


def _unescape_mountinfo(s):
    out, i = [], 0
    while i < len(s):
        if s[i] == '\\' and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return ''.join(out)


def mount_fstype(path):
    """fstype of the mount exactly at path, or None."""
    path = os.path.realpath(path)
    found = None
    with open('/proc/self/mountinfo') as f:
        for line in f:
            parts = line.split(' ')
            sep = parts.index('-')
            if _unescape_mountinfo(parts[4]) == path:
                found = parts[sep + 1]
    return found


def is_mounted(path):
    return mount_fstype(path) is not None


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)


def mount_tmpfs(path):
    r = run(['mount', '-t', 'tmpfs', '-o', 'size=1g,mode=0755', 'strata-test', path])
    if r.returncode:
        raise Skip('cannot mount tmpfs on %s: %s' % (path, r.stderr.strip()))


def umount(path):
    for _ in range(50):
        r = run(['umount', path])
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError('umount %s: %s' % (path, r.stderr.strip()))


def thread_stacks(pid):
    """What a hung daemon's threads wait on: kernel wait channel and stack
    from /proc, and user-space backtraces when gdb is installed."""
    out = []
    try:
        for tid in sorted(os.listdir('/proc/%d/task' % pid), key=int):
            base = '/proc/%d/task/%s/' % (pid, tid)
            parts = []
            for f in ('comm', 'wchan', 'stack'):
                try:
                    with open(base + f) as fh:
                        parts.append(fh.read().strip())
                except OSError:
                    pass
            out.append('thread %s: %s' % (tid, ' | '.join(parts)))
    except OSError as e:
        out.append('cannot read /proc/%d/task: %s' % (pid, e))
    gdb = shutil.which('gdb')
    if gdb:
        r = subprocess.run([gdb, '-p', str(pid), '-batch', '-nx', '-ex', 'thread apply all bt 20'],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=60)
        out.append(r.stdout[-6000:])
    return '\n'.join(out)


class MountBase:
    def optlowers(self):
        # With cwd set, lowers are passed relative to it, as containers-storage
        # does to keep 500 layers under the mount option size limit.
        if self.cwd:
            return [os.path.relpath(l, self.cwd) for l in self.lowers]
        return self.lowers


class KernelMount(MountBase):
    kind = 'kernel'

    def __init__(self, lowers, upper, work, mnt, extra='', cwd=None):
        self.lowers, self.upper, self.work, self.mnt = lowers, upper, work, mnt
        self.extra, self.cwd = extra, cwd

    def options(self):
        o = 'lowerdir=' + ':'.join(reversed(self.optlowers()))
        if self.upper:
            o += ',upperdir=%s,workdir=%s' % (self.upper, self.work)
            if mode.rootless:
                o += ',userxattr'
            else:
                o += ',redirect_dir=on,index=off,metacopy=off'
        if self.extra:
            o += ',' + self.extra
        return o

    def mount(self):
        r = run(['mount', '-t', 'overlay', '-o', self.options(), 'overlay', self.mnt],
                cwd=self.cwd)
        if r.returncode:
            raise Skip('kernel overlayfs mount failed (%s): %s' % (self.options()[:200],
                                                                 r.stderr.strip()))

    def umount(self):
        umount(self.mnt)
        return None


@contextlib.contextmanager
def mounted(m, problems):
    """m (a KernelMount or FuseMount) mounted for the with-block and
    unmounted after it, however it ends; what the unmount finds wrong (a
    daemon that died, hung or reported an error) is added to problems. A
    daemon that was started but never mounted is still waited for."""
    try:
        m.mount()
        yield m
    finally:
        if getattr(m, 'proc', None) is not None or is_mounted(m.mnt):
            problem = m.umount()
            if problem:
                problems.append(problem)


URING_PARAM = '/sys/module/fuse/parameters/enable_uring'


@contextlib.contextmanager
def fuse_uring_enabled():
    """The fuse module's enable_uring turned on for the duration and restored
    after (a host-wide setting: ctest runs the tests that use it one at a
    time, RESOURCE_LOCK fuse_uring). Raises Skip where it cannot be."""
    if os.geteuid() != 0:
        raise Skip('turning on FUSE over io_uring needs root')
    try:
        with open(URING_PARAM) as f:
            before = f.read().strip()
    except OSError:
        raise Skip('this kernel has no FUSE over io_uring (%s missing; Linux 6.14+, CONFIG_FUSE_IO_URING)'
                   % URING_PARAM)
    try:
        with open(URING_PARAM, 'w') as f:
            f.write('Y')
    except OSError as e:
        raise Skip('cannot turn on %s: %s' % (URING_PARAM, e))
    try:
        yield
    finally:
        with open(URING_PARAM, 'w') as f:
            f.write(before)


def named_threads(pid, prefix):
    """{tid: context switches} of pid's threads whose name starts with prefix."""
    out = {}
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/comm' % (pid, tid)) as f:
                if not f.read().startswith(prefix):
                    continue
            out[int(tid)] = thread_switches(pid, int(tid))
        except OSError:
            pass
    return out


def uring_threads(pid):
    """strata-fs's io_uring queue threads (named strata-uringN once their
    queue is registered), as named_threads()."""
    return named_threads(pid, 'strata-uring')


def thread_switches(pid, tid):
    with open('/proc/%d/task/%d/schedstat' % (pid, tid)) as f:
        return int(f.read().split()[2])


class FuseMount(MountBase):
    """Runs the filesystem under test in the foreground (-f) so we hold its pid."""
    kind = 'fuse'

    def __init__(self, fs, lowers, upper, work, mnt, extra='', cwd=None):
        self.fs, self.lowers, self.upper, self.work, self.mnt = fs, lowers, upper, work, mnt
        self.extra, self.cwd = extra, cwd
        self.proc = None
        self.errlog = None

    def options(self):
        o = 'lowerdir=' + ':'.join(reversed(self.optlowers()))
        if self.upper:
            o += ',upperdir=%s,workdir=%s' % (self.upper, self.work)
        if self.extra:
            o += ',' + self.extra
        # STRATA_FS_OPTS: more options for strata-fs (e.g. passthrough=off
        # to test its cached mode as root); other filesystems do not get them
        more = os.environ.get('STRATA_FS_OPTS')
        if more and os.path.basename(self.fs) == 'strata-fs':
            o += ',' + more
        return o

    def mount(self):
        self.errlog = tempfile.TemporaryFile(mode='w+')
        cmd = [self.fs, '-f', '-o', self.options(), self.mnt]
        cred = {}
        if mode.fuse_user:
            cred = dict(user=mode.fuse_user[0], group=mode.fuse_user[1], extra_groups=[])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.errlog,
                                     stderr=self.errlog, cwd=self.cwd, **cred)
        deadline = time.time() + 20 * SCALE
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None:
                raise RuntimeError('%s exited with %d before the mount was live: %s'
                                   % (self.fs, self.proc.returncode, self.stderr()))
            if time.time() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError('%s: mount not live after %ds: %s' % (self.fs, 20 * SCALE, self.stderr()))
            time.sleep(0.02)
        # STRATA_TEST_URING: the run is about requests through io_uring;
        # a mount that fell back to /dev/fuse would test something else
        if os.environ.get('STRATA_TEST_URING') and os.path.basename(self.fs) == 'strata-fs':
            deadline = time.time() + 5 * SCALE
            while not uring_threads(self.proc.pid):
                if time.time() > deadline:
                    raise RuntimeError('%s registered no io_uring queue: %s' % (self.fs, self.stderr()))
                time.sleep(0.02)

    def stderr(self):
        if not self.errlog:
            return ''
        self.errlog.seek(0)
        return self.errlog.read()[-4000:]

    def alive_problem(self):
        if self.proc and self.proc.poll() is not None:
            return 'daemon died with status %d: %s' % (self.proc.returncode, self.stderr())
        return None

    def umount(self):
        """Unmounts and waits for the daemon; returns a problem string or None."""
        problem = self.alive_problem()
        for _ in range(50):
            r = run(['fusermount3', '-u', self.mnt])
            if r.returncode == 0 or not is_mounted(self.mnt):
                break
            time.sleep(0.1)
        else:
            run(['umount', '-l', self.mnt])
            problem = (problem or '') + ' fusermount3 -u failed: ' + r.stderr.strip()
        try:
            rc = self.proc.wait(timeout=20 * SCALE)
            if rc != 0 and not problem:
                problem = 'daemon exited with status %d after unmount: %s' % (rc, self.stderr())
            elif sanitizer_report(self.stderr()):
                problem = 'sanitizer report from daemon: ' + self.stderr()
        except subprocess.TimeoutExpired:
            stacks = thread_stacks(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
            problem = ((problem or '') + ' daemon did not exit within %ds of unmount (killed); ' % (20 * SCALE) +
                       'its threads were:\n' + stacks)
        self.errlog.close()
        return problem


class CountingMount(FuseMount):
    """A FuseMount whose daemon runs with -o debug (in extra), so that
    close() can say how many requests of each kind it got."""

    def p_(self, name):
        return os.path.join(self.mnt, name)

    def close(self):
        """Unmounts; returns how many requests of each kind the daemon got."""
        self.errlog.seek(0)
        log = self.errlog.read()
        problem = self.umount()
        if problem:
            raise RuntimeError(problem)
        counts = {}
        for line in log.splitlines():
            if 'opcode: ' in line:
                op = line.split('opcode: ', 1)[1].split()[0]
                counts[op] = counts.get(op, 0) + 1
        return counts
