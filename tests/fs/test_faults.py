#!/usr/bin/env python3
"""Faults strata-fs must come through: a full upper layer, and unmount
under load. Runs as root in a mount namespace of its own (its tmpfs and
FUSE mounts reach no other process); the upper is a small tmpfs, the lower
on another filesystem (/var/tmp), as for any upper that is not the lower's
filesystem. Counted, not timed:
  - copyup_xdev: with room, a sparse lower file copied up across
    filesystems keeps its data and its holes;
  - copyup_enospc: opening a lower file for writing whose copy-up does not
    fit fails with ENOSPC (it said EXDEV, an errno left over from the
    cross-filesystem copy_file_range tried first), and the upper's use is
    back to what it was;
  - metacopy_enospc: the data fill of a metacopy (chmod first, then open
    for writing) that does not fit fails with ENOSPC and gives the space
    back: the upper's use is what it was before the open, also after a
    remount, the file is still a metacopy reading the lower data with its
    file capabilities, and once the upper has room the same open succeeds;
  - whiteout_inodes: on an upper out of inodes a deletion fails with
    ENOSPC; once inodes are freed, deletions work again and their whiteouts
    are links of one shared whiteout (one ENOSPC turned sharing off for the
    rest of the mount, an inode per deletion);
  - exit_dev, exit_uring: the daemon exits after unmount, through /dev/fuse
    and through FUSE over io_uring, with two CPU hogs running, both after a
    plain unmount and when another mount namespace still holds a copy of
    the mount (another process's unshare -m made while it was mounted): the
    unmount in the daemon's own namespace is the end. Waited for by pid,
    with a generous deadline.

usage: test_faults.py [--fs PATH] [CHECK...]   ($STRATA_FS overrides --fs)
"""

import ctypes
import errno
import os
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, Skip, file_sha, is_mounted, prepare_fs, reap_all, umount  # noqa: E402
from layers import pattern  # noqa: E402
from mounts import FuseMount, fuse_uring_enabled, run, thread_stacks, uring_threads  # noqa: E402
from fsmode import sanitizer_report  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
NS_ENV = 'STRATA_FAULTS_NS'
EXIT_DEADLINE = 60      # seconds a daemon may take to exit after unmount
BIG = 8 << 20


class Upper:
    """A tmpfs of the given size (KiB) and inode count, with u/ and w/."""

    def __init__(self, base, name, size_k, inodes=None):
        self.top = os.path.join(base, name)
        os.makedirs(self.top, exist_ok=True)
        o = 'size=%dk,mode=0755' % size_k
        if inodes:
            o += ',nr_inodes=%d' % inodes
        r = run(['mount', '-t', 'tmpfs', '-o', o, 'strata-faults', self.top])
        if r.returncode:
            raise Skip('cannot mount tmpfs: ' + r.stderr.strip())
        self.upper = os.path.join(self.top, 'u')
        self.work = os.path.join(self.top, 'w')
        os.mkdir(self.upper)
        os.mkdir(self.work)

    def used(self):
        st = os.statvfs(self.top)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def resize(self, size_k):
        r = run(['mount', '-o', 'remount,size=%dk' % size_k, self.top])
        if r.returncode:
            raise RuntimeError('remount tmpfs: ' + r.stderr.strip())

    def close(self):
        if is_mounted(self.top):
            umount(self.top)
        os.rmdir(self.top)


class Mount(FuseMount):
    def __init__(self, fs, base, up, opts=''):
        self.base = base
        super().__init__(fs, [os.path.join(base, 'l')], up.upper, up.work,
                         os.path.join(base, 'm'), extra=opts)

    def path(self, name):
        return os.path.join(self.mnt, name)

    def close(self, problems, label):
        problem = self.umount()
        if problem:
            problems.append('%s: %s' % (label, problem))


def open_error(path, flags):
    """errno of os.open(path, flags), or 0 when it opened."""
    try:
        os.close(os.open(path, flags))
        return 0
    except OSError as e:
        return e.errno


def ename(e):
    return errno.errorcode.get(e, str(e)) if e else 'success'


def workdir_debris(work):
    """Files left in the work directory but the shared whiteout."""
    return sorted(os.path.relpath(os.path.join(d, n), work) for d, _, files in os.walk(work)
                  for n in files if n != 'whiteout')


def check_copyup_enospc(fs, base, problems):
    # 4100 KiB: the copy's last 128 KiB write is short (one page fits)
    up = Upper(base, 't-copyup', 4100)
    try:
        m = Mount(fs, base, up)
        m.mount()
        try:
            before = up.used()
            e = open_error(m.path('big'), os.O_WRONLY)
            if e != errno.ENOSPC:
                problems.append('copyup_enospc: open for writing of a lower file larger than the '
                                'upper\'s room: %s, want ENOSPC' % ename(e))
            after = up.used()
            if after > before + (64 << 10):
                problems.append('copyup_enospc: the failed copy-up keeps %d KiB of the upper'
                                % ((after - before) >> 10))
            if file_sha(m.path('big')) != file_sha(os.path.join(base, 'l', 'big')):
                problems.append('copyup_enospc: the file reads differently after the failed copy-up')
        finally:
            m.close(problems, 'copyup_enospc')
        debris = workdir_debris(up.work)
        if debris:
            problems.append('copyup_enospc: left in the work directory: %s' % debris)
    finally:
        up.close()


def check_copyup_xdev(fs, base, problems):
    """With room: a sparse lower file copied up across filesystems (read and
    write, copy_file_range refused) keeps its data and its holes."""
    up = Upper(base, 't-xdev', 64 << 10)
    src = os.path.join(base, 'l', 'sparse')
    with open(src, 'wb') as f:
        f.write(pattern(100000, 5))
        f.seek(16 << 20)
        f.write(pattern(300000, 7))
        f.truncate(40 << 20)
    try:
        m = Mount(fs, base, up)
        m.mount()
        try:
            os.close(os.open(m.path('sparse'), os.O_WRONLY))
            if file_sha(m.path('sparse')) != file_sha(src):
                problems.append('copyup_xdev: the sparse file reads differently after its copy-up')
            st = os.stat(os.path.join(up.upper, 'sparse'))
            if st.st_size != 40 << 20 or st.st_blocks * 512 > 2 << 20:
                problems.append('copyup_xdev: the copy is %d bytes in %d KiB, want %d in under 2 MiB'
                                % (st.st_size, st.st_blocks // 2, 40 << 20))
        finally:
            m.close(problems, 'copyup_xdev')
    finally:
        os.unlink(src)
        up.close()


# cap_net_raw+ep, as setcap writes it (struct vfs_cap_data, revision 2)
CAPS = struct.pack('<IIIII', 0x02000001, 1 << 13, 0, 0, 0)


def caps(path):
    try:
        return os.getxattr(path, 'security.capability')
    except OSError:
        return None


def check_metacopy_enospc(fs, base, problems):
    up = Upper(base, 't-meta', 4100)
    lower_sha = file_sha(os.path.join(base, 'l', 'big'))
    try:
        m = Mount(fs, base, up)
        m.mount()
        try:
            os.chmod(m.path('big'), 0o600)  # a metacopy: no data copied
            before = up.used()
            if before > (64 << 10):
                problems.append('metacopy_enospc: chmod copied %d KiB (no metacopy?)' % (before >> 10))
            e = open_error(m.path('big'), os.O_WRONLY)
            if e != errno.ENOSPC:
                problems.append('metacopy_enospc: data fill larger than the upper\'s room: %s, '
                                'want ENOSPC' % ename(e))
            after = up.used()
            if after > before + (64 << 10):
                problems.append('metacopy_enospc: the failed fill keeps %d KiB of the upper '
                                '(%d KiB used before it)' % ((after - before) >> 10, before >> 10))
            if file_sha(m.path('big')) != lower_sha:
                problems.append('metacopy_enospc: the file reads differently after the failed fill')
        finally:
            m.close(problems, 'metacopy_enospc')
        upath = os.path.join(up.upper, 'big')
        if 'trusted.overlay.metacopy' not in os.listxattr(upath):
            problems.append('metacopy_enospc: the upper file is no metacopy after the failed fill')
        if caps(upath) != CAPS:
            problems.append('metacopy_enospc: file capabilities after the failed fill: %r, want %r'
                            % (caps(upath), CAPS))
        if os.stat(upath).st_mode & 0o7777 != 0o600:
            problems.append('metacopy_enospc: the upper file lost its mode')

        m = Mount(fs, base, up)
        m.mount()
        try:
            after = up.used()
            if after > before + (64 << 10):
                problems.append('metacopy_enospc: after a remount the upper still holds %d KiB '
                                'more than before the fill' % ((after - before) >> 10))
            if file_sha(m.path('big')) != lower_sha:
                problems.append('metacopy_enospc: after a remount the file reads differently')
            # room again: the fill that failed succeeds
            up.resize(32 << 10)
            try:
                with open(m.path('big'), 'r+b') as f:
                    # filled; the capabilities go with the write below, as
                    # any write's do
                    if caps(upath) != CAPS:
                        problems.append('metacopy_enospc: file capabilities after the fill: %r, '
                                        'want %r' % (caps(upath), CAPS))
                    f.seek(100)
                    f.write(b'filled')
            except OSError as e:
                problems.append('metacopy_enospc: open for writing with room again: %s' % e)
            want = bytearray(pattern(BIG, 3))
            want[100:106] = b'filled'
            with open(m.path('big'), 'rb') as f:
                if f.read() != bytes(want):
                    problems.append('metacopy_enospc: data wrong after the fill that fitted')
        finally:
            m.close(problems, 'metacopy_enospc remount')
        if 'trusted.overlay.metacopy' in os.listxattr(upath):
            problems.append('metacopy_enospc: still a metacopy after its data was filled')
    finally:
        up.close()


def check_whiteout_inodes(fs, base, problems):
    up = Upper(base, 't-inodes', 4096, inodes=64)
    try:
        m = Mount(fs, base, up)
        m.mount()
        try:
            made = []
            for i in range(1000):
                try:
                    with open(m.path('fill%d' % i), 'w'):
                        pass
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                made.append(m.path('fill%d' % i))
            else:
                raise RuntimeError('1000 files fit in an upper of 64 inodes')
            try:
                os.unlink(m.path('lf0'))
                problems.append('whiteout_inodes: a deletion on an upper out of inodes succeeded '
                                '(the test did not reach ENOSPC)')
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    problems.append('whiteout_inodes: deletion on an upper out of inodes: %s, '
                                    'want ENOSPC' % ename(e.errno))
            for p in made[:8]:
                os.unlink(p)
            # a file's inode is freed when the last reference goes, which
            # may be a release the kernel sends after close returned
            deadline = time.time() + 30
            while os.statvfs(up.top).f_ffree < 6 and time.time() < deadline:
                time.sleep(0.05)
            if os.statvfs(up.top).f_ffree < 6:
                problems.append('whiteout_inodes: %d inodes free after 8 files were deleted'
                                % os.statvfs(up.top).f_ffree)
            deleted = []
            for i in range(1, 5):
                try:
                    os.unlink(m.path('lf%d' % i))
                    deleted.append('lf%d' % i)
                except OSError as e:
                    problems.append('whiteout_inodes: deletion %d after inodes were freed: %s'
                                    % (i, ename(e.errno)))
            inos = set()
            for n in deleted:
                st = os.lstat(os.path.join(up.upper, n))
                inos.add((st.st_ino, st.st_nlink))
                if os.path.exists(m.path(n)):
                    problems.append('whiteout_inodes: %s still visible after its deletion' % n)
            if len(inos) != 1 or min(nl for _, nl in inos) < len(deleted):
                problems.append('whiteout_inodes: after one ENOSPC the whiteouts are not links of '
                                'one shared whiteout any more: (inode, links) %s' % sorted(inos))
        finally:
            m.close(problems, 'whiteout_inodes')
    finally:
        up.close()


def start_hogs(n):
    return [subprocess.Popen(['yes'], stdout=subprocess.DEVNULL) for _ in range(n)]


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def exit_round(fs, base, problems, label, uring, copy_elsewhere):
    """Mount, use, unmount; the daemon must exit within EXIT_DEADLINE."""
    up = Upper(base, 't-exit', 64 << 10)
    holder = None
    try:
        m = Mount(fs, base, up)
        m.mount()
        pid = m.proc.pid
        if uring:
            deadline = time.time() + 20
            while not uring_threads(pid) and time.time() < deadline:
                time.sleep(0.05)
            if not uring_threads(pid):
                problems.append('%s: no io_uring queue registered' % label)
        for i in range(20):
            with open(m.path('lf%d' % i)) as f:
                f.read()
        with open(m.path('big'), 'r+b') as f:    # a copy-up, by a worker
            f.write(b'x')
        os.listdir(m.mnt)
        if copy_elsewhere:
            # another mount namespace made now holds a copy of the mount,
            # as any process's unshare -m on the machine would
            holder = subprocess.Popen(['unshare', '-m', '--propagation', 'private', 'sleep', '600'])
            wait_other_ns(holder)
        r = run(['fusermount3', '-u', m.mnt])
        if r.returncode:
            problems.append('%s: fusermount3 -u: %s' % (label, r.stderr.strip()))
            run(['umount', '-l', m.mnt])
        try:
            rc = m.proc.wait(timeout=EXIT_DEADLINE)
            if rc != 0:
                problems.append('%s: daemon exited with %d after unmount: %s' % (label, rc, m.stderr()))
            elif sanitizer_report(m.stderr()):
                problems.append('%s: sanitizer report: %s' % (label, m.stderr()))
        except subprocess.TimeoutExpired:
            stacks = thread_stacks(pid)
            m.proc.kill()
            m.proc.wait()
            problems.append('%s: daemon still running %d s after its unmount (killed); its threads:\n%s'
                            % (label, EXIT_DEADLINE, stacks))
        m.errlog.close()
    finally:
        if holder:
            stop([holder])
        if is_mounted(os.path.join(base, 'm')):
            run(['umount', '-l', os.path.join(base, 'm')])
        up.close()


def exit_fd_round(fs, base, problems, copy_elsewhere):
    """As strata-run does: the mount made here on an open /dev/fuse, the
    daemon given /dev/fd/N, unmounted (MNT_DETACH) here. With a copy of the
    mount elsewhere the connection lives on: then SIGTERM must end it."""
    label = 'exit_fd%s' % (', mount copied elsewhere' if copy_elsewhere else '')
    up = Upper(base, 't-exit', 64 << 10)
    mnt = os.path.join(base, 'm')
    holder = None
    proc = None
    fd = os.open('/dev/fuse', os.O_RDWR)
    try:
        opts = 'fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other' % fd
        if libc.mount(b'strata', mnt.encode(), b'fuse.strata', 0, opts.encode()) != 0:
            raise Skip('mount of a /dev/fuse descriptor: %s' % os.strerror(ctypes.get_errno()))
        log = tempfile.TemporaryFile(mode='w+')
        proc = subprocess.Popen([fs, '-f', '-o', 'lowerdir=%s,upperdir=%s,workdir=%s'
                                 % (os.path.join(base, 'l'), up.upper, up.work), '/dev/fd/%d' % fd],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=[fd])
        os.close(fd)
        fd = -1
        with open(os.path.join(mnt, 'lf1')) as f:   # waits for INIT: served
            f.read()
        with open(os.path.join(mnt, 'big'), 'r+b') as f:
            f.write(b'x')
        if copy_elsewhere:
            holder = subprocess.Popen(['unshare', '-m', '--propagation', 'private', 'sleep', '600'])
            wait_other_ns(holder)
        if libc.umount2(mnt.encode(), 2) != 0:     # MNT_DETACH
            problems.append('%s: umount2: %s' % (label, os.strerror(ctypes.get_errno())))
        if copy_elsewhere:
            # not ours to see go: the connection is alive; asked to stop,
            # it must, whatever the load
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                proc.terminate()
        try:
            rc = proc.wait(timeout=EXIT_DEADLINE)
            log.seek(0)
            err = log.read()
            if rc != 0:
                problems.append('%s: daemon exited with %d: %s' % (label, rc, err[-3000:]))
            elif sanitizer_report(err):
                problems.append('%s: sanitizer report: %s' % (label, err[-3000:]))
        except subprocess.TimeoutExpired:
            stacks = thread_stacks(proc.pid)
            proc.kill()
            proc.wait()
            problems.append('%s: daemon still running %d s after its unmount%s (killed); its '
                            'threads:\n%s' % (label, EXIT_DEADLINE,
                                              ' and SIGTERM' if copy_elsewhere else '', stacks))
        log.close()
    finally:
        if fd >= 0:
            os.close(fd)
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        if holder:
            stop([holder])
        if is_mounted(mnt):
            run(['umount', '-l', mnt])
        up.close()


def wait_other_ns(proc):
    """Until proc runs in a mount namespace of its own."""
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if os.readlink('/proc/%d/ns/mnt' % proc.pid) != os.readlink('/proc/self/ns/mnt'):
                return
        except OSError:
            pass
        time.sleep(0.02)


def check_exit_fd(fs, base, problems):
    hogs = start_hogs(2)
    try:
        for copy in (False, True):
            exit_fd_round(fs, base, problems, copy)
    finally:
        stop(hogs)


def check_exit(fs, base, problems, uring):
    name = 'exit_uring' if uring else 'exit_dev'
    hogs = start_hogs(2)
    try:
        for copy in (False, True):
            exit_round(fs, base, problems, '%s%s' % (name, ', mount copied elsewhere' if copy else ''),
                       uring, copy)
    finally:
        stop(hogs)


def check_exit_dev(fs, base, problems):
    check_exit(fs, base, problems, False)


def check_exit_uring(fs, base, problems):
    try:
        with fuse_uring_enabled():
            check_exit(fs, base, problems, True)
    except Skip as e:
        print('exit_uring skipped: %s' % e)


CHECKS = {
    'copyup_xdev': check_copyup_xdev,
    'copyup_enospc': check_copyup_enospc,
    'metacopy_enospc': check_metacopy_enospc,
    'whiteout_inodes': check_whiteout_inodes,
    'exit_dev': check_exit_dev,
    'exit_uring': check_exit_uring,
    'exit_fd': check_exit_fd,
}


def inner(fs, names):
    problems = []
    base = tempfile.mkdtemp(prefix='strata-faults-', dir='/var/tmp')
    os.chmod(base, 0o755)
    try:
        for d in ('l', 'm'):
            os.mkdir(os.path.join(base, d))
        with open(os.path.join(base, 'l', 'big'), 'wb') as f:
            f.write(pattern(BIG, 3))
        # the fill drops file capabilities as any write does: they must
        # come back whether it succeeds or not
        os.setxattr(os.path.join(base, 'l', 'big'), 'security.capability', CAPS)
        for i in range(40):
            with open(os.path.join(base, 'l', 'lf%d' % i), 'w') as f:
                f.write('lower %d\n' % i)
        for n in names:
            print('== %s' % n, flush=True)
            before = len(problems)
            CHECKS[n](fs, base, problems)
            print('   %s' % ('ok' if len(problems) == before else 'FAILED'), flush=True)
    except Skip as e:
        print('SKIP: %s' % e)
        return SKIP
    finally:
        for d in os.listdir(base):
            p = os.path.join(base, d)
            if is_mounted(p):
                run(['umount', '-l', p])
        subprocess.run(['rm', '-rf', base])
        reap_all()
    for pr in problems:
        print('FAIL: ' + pr)
    return 1 if problems else 0


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    args = argv[1:]
    if '--fs' in args:
        i = args.index('--fs')
        del args[i:i + 2]
    names = args or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print('unknown checks %s; known: %s' % (unknown, ' '.join(CHECKS)))
        return 2
    if os.environ.get(NS_ENV):
        return inner(fs, names)
    if os.geteuid() != 0:
        print('SKIP: needs root (tmpfs uppers in a mount namespace of its own)')
        return SKIP
    env = dict(os.environ, **{NS_ENV: '1'})
    r = subprocess.run(['unshare', '-m', '--propagation', 'private', sys.executable,
                        os.path.abspath(__file__), '--fs', fs] + names, env=env)
    return r.returncode


if __name__ == '__main__':
    sys.exit(main(sys.argv))
