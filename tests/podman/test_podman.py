#!/usr/bin/env python3
"""podman end to end: podman's overlay driver with mount_program = strata-fs.

usage (as root): test_podman.py STRATA_FS root|rootless

Everything happens in a private store under a fresh tmpfs (storage.conf via
CONTAINERS_STORAGE_CONF, plus --root/--runroot/--tmpdir), inside a private
mount namespace of this process, so the system's containers store, mounts
and cgroups are never touched.  The scenario:

  podman import   a tiny busybox rootfs tarball as an image
  podman run c1   writes /newfile, deletes /etc/doomed, appends to
                  /etc/greeting (copy-up), lists /, and prints its
                  mountinfo: / must be a strata-fs FUSE mount
  podman run      a second container from the same image must see the
                  image unchanged (no /newfile, /etc/doomed intact)
  podman diff c1  shows A /newfile, D /etc/doomed, C /etc/greeting
  podman commit   c1 as a new image; a container of it sees c1's changes
  podman rm/rmi   leaves no strata-fs mount and no strata-fs daemon behind

"rootless" runs podman as the unprivileged user strata-podman (created if
missing, with a subordinate id range).

Host workarounds (docs/podman.md, "On a host like the test machine"): the cgroup
v2 mount at /sys/fs/cgroup/unified is unmounted in the private namespace
(crun refuses the hybrid layout otherwise), root passes explicit
--ulimit nofile/nproc (no CAP_SYS_RESOURCE here), and podman runs with
--cgroup-manager=cgroupfs --events-backend=file --network=none.

The test process is a child subreaper: the backgrounded strata-fs daemons,
conmon, podman's cleanup processes and the rootless pause process are
re-parented to it, and it waits for every one of them.

Set STRATA_PODMAN_DEBUG=1 to run every podman command with
--log-level=debug.  Exit status: 0 pass, 1 fail, 77 skip.
"""

import ctypes
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time

SKIP = 77
USER = 'strata-podman'
BUSYBOX = '/bin/busybox'
IMAGE = 'localhost/strata-podman-test'
TIMEOUT = 60            # seconds, per podman command

libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_BIND = 0x1000
MNT_DETACH = 2


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testlib import Fail as Failure, Skip, check as expect, ensure_user  # noqa: E402


T0 = time.monotonic()


def log(msg):
    print('%5.1fs %s' % (time.monotonic() - T0, msg), flush=True)


def mount(src, target, fstype, flags, data=None):
    if libc.mount(src and src.encode(), target.encode(), fstype and fstype.encode(),
                  flags, data and data.encode()) != 0:
        e = ctypes.get_errno()
        raise OSError(e, 'mount %s on %s: %s' % (src or fstype, target, os.strerror(e)))


def umount(target, flags=MNT_DETACH):
    return libc.umount2(target.encode(), flags) == 0


def mountinfo(pid='self'):
    """[(mount point, fstype, source)] of a process's mount namespace."""
    out = []
    with open('/proc/%s/mountinfo' % pid) as f:
        for line in f:
            left, right = line.split(' - ', 1)
            l, r = left.split(), right.split()
            out.append((l[4].replace('\\040', ' '), r[0], r[1]))
    return out


def private_namespace():
    """A mount namespace of our own: no mount made here reaches the host."""
    if libc.unshare(CLONE_NEWNS) != 0:
        raise Skip('unshare(CLONE_NEWNS): %s' % os.strerror(ctypes.get_errno()))
    mount(None, '/', None, MS_REC | MS_SLAVE)
    # Slave of the host, and shared inside: podman (rootless) wants / shared.
    mount(None, '/', None, MS_REC | MS_SHARED)
    if any(m[0] == '/sys/fs/cgroup/unified' for m in mountinfo()):
        umount('/sys/fs/cgroup/unified')


# -- processes ----------------------------------------------------------------

def proc_stats():
    """(pid, comm, state, ppid) of every process, from /proc/PID/stat."""
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(')') + 2:].split()
        yield int(d), st[st.index('(') + 1:st.rindex(')')], fields[0], int(fields[1])


def children(pid):
    return [(p, comm) for p, comm, state, ppid in proc_stats() if ppid == pid and state != 'Z']


def descendants():
    out, todo = [], [os.getpid()]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c[0])
    return out


def reap_zombies(keep):
    """Reap our exited children but keep: podman takes a zombie conmon
    (re-parented to us, the subreaper) for a live one and waits 20 s."""
    me = os.getpid()
    for p, _, state, ppid in proc_stats():
        if p != keep and state == 'Z' and ppid == me:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass


def run_reaping(argv, env, cwd, timeout):
    """(exit code or None on timeout, stdout, stderr) of argv, reaping
    the processes re-parented to us meanwhile."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                             stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while p.poll() is None:
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                p.returncode = None
                break
            reap_zombies(p.pid)
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode(errors='replace'),
                err.read().decode(errors='replace'))


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def settle(grace):
    """Wait up to grace seconds for every descendant to exit; return those
    still alive (pid, comm)."""
    deadline = time.monotonic() + grace
    while True:
        reap()
        left = descendants()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def kill_all(procs):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in procs:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        procs = settle(3)
        if not procs:
            return
    reap()


# -- the test environment -----------------------------------------------------

class Podman:
    def __init__(self, fs, mode):
        self.mode = mode
        self.fs = os.path.abspath(fs)
        self.base = tempfile.mkdtemp(prefix='strata-pm-%s.' % mode)
        os.chmod(self.base, 0o755)
        self.tmpfs = False
        self.pw = None
        self.runroot = self.p('run')

    def setup(self):
        private_namespace()
        # A tmpfs (dev allowed, user xattrs) holds the whole store: it goes
        # away with the namespace whatever happens.
        mount('strata-podman', self.base, 'tmpfs', 0, 'mode=755')
        self.tmpfs = True
        self.env = {'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                    'LANG': 'C.UTF-8'}
        # A sanitizer build of strata-fs gets its options through podman.
        self.env.update((k, v) for k, v in os.environ.items() if k.endswith('SAN_OPTIONS'))
        for d in ('store', 'run', 'tmp', 'home', 'xdg', 'networks'):
            os.mkdir(self.p(d), 0o700)
        if self.mode == 'rootless':
            self.setup_rootless()
        else:
            # Root's blob info cache is /var/lib/containers/cache whatever
            # the store: give this namespace its own /var/lib/containers.
            os.makedirs('/var/lib/containers', mode=0o700, exist_ok=True)
            os.mkdir(self.p('var-lib-containers'), 0o700)
            mount(self.p('var-lib-containers'), '/var/lib/containers', None, MS_BIND)
            # crun's state directory for root.
            os.makedirs('/run/crun', mode=0o700, exist_ok=True)
            mount('strata-podman-crun', '/run/crun', 'tmpfs', 0, 'mode=700')
        self.env.update(HOME=self.p('home'), TMPDIR=self.p('tmp'),
                        CONTAINERS_STORAGE_CONF=self.p('storage.conf'),
                        CONTAINERS_CONF=self.p('containers.conf'))
        # Only this file is read (not /etc/containers/containers.conf).
        with open(self.p('containers.conf'), 'w') as f:
            f.write('[engine]\nimage_copy_tmp_dir = "%s"\n\n[network]\n'
                    'network_config_dir = "%s"\n' % (self.p('tmp'), self.p('networks')))
        # What a user writes to point podman at strata-fs (README).
        with open(self.p('storage.conf'), 'w') as f:
            f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n'
                    'rootless_storage_path = "%s"\n'
                    '\n[storage.options.overlay]\nmount_program = "%s"\n'
                    % (self.p('store'), self.p('run'), self.p('store'), self.fs))
        make_rootfs(self.p('rootfs.tar'))
        if self.pw:
            for dirpath, dirnames, filenames in os.walk(self.base):
                for n in dirnames + filenames:
                    os.lchown(os.path.join(dirpath, n), self.pw.pw_uid, self.pw.pw_gid)
            os.chown(self.base, self.pw.pw_uid, self.pw.pw_gid)

    def setup_rootless(self):
        for tool in ('setpriv', 'newuidmap', 'newgidmap'):
            if not shutil.which(tool):
                raise Skip('%s not installed (Debian packages util-linux, uidmap)' % tool)
        self.pw = ensure_user(USER)
        for f, opt in (('/etc/subuid', '--add-subuids'), ('/etc/subgid', '--add-subgids')):
            if not subid_entry(f, USER):
                start = subid_free_start(f)
                r = subprocess.run(['usermod', opt, '%d-%d' % (start, start + 65535), USER],
                                   stderr=subprocess.PIPE, text=True)
                if r.returncode:
                    raise Skip('no %s range for %s and usermod %s failed: %s'
                               % (f, USER, opt, r.stderr.strip()))
        r = subprocess.run(self.as_user(['unshare', '-U', 'true']),
                           stderr=subprocess.PIPE, text=True)
        if r.returncode:
            raise Skip('unprivileged user namespaces unavailable: ' + r.stderr.strip())
        # Debian's /dev/fuse is 0666; test hosts often have 0600. Then bind a
        # private 0666 node over it, in this namespace only.
        if subprocess.run(self.as_user(['sh', '-c', 'exec 3<>/dev/fuse']),
                          stderr=subprocess.DEVNULL).returncode:
            node = self.p('fuse')
            os.mknod(node, stat.S_IFCHR | 0o666, os.stat('/dev/fuse').st_rdev)
            os.chmod(node, 0o666)
            mount(node, '/dev/fuse', None, MS_BIND)
            log('note: /dev/fuse is not open to %s here; bound a private 0666 node over it'
                % USER)
        # The daemon must be executable by the user (a build under /root is not).
        if subprocess.run(self.as_user(['test', '-x', self.fs])).returncode:
            shutil.copy2(self.fs, self.p('strata-fs'))
            self.fs = self.p('strata-fs')
            log('note: %s is not executable by %s; using a copy' % (self.fs, USER))
        self.env.update(USER=USER, LOGNAME=USER, XDG_RUNTIME_DIR=self.p('xdg'))

    def p(self, *names):
        return os.path.join(self.base, *names)

    def as_user(self, argv):
        if not self.pw:
            return argv
        return ['setpriv', '--reuid=%d' % self.pw.pw_uid, '--regid=%d' % self.pw.pw_gid,
                '--init-groups', '--'] + argv

    def podman(self, *args, check=True, flags=False):
        # The store comes from storage.conf (CONTAINERS_STORAGE_CONF) as a
        # user would write it. Note that podman's --root/--runroot drop the
        # driver options of storage.conf (mount_program among them): with
        # flags=True the store is given entirely on the command line.
        argv = ['podman', '--tmpdir', self.p('tmp'), '--cgroup-manager=cgroupfs',
                '--events-backend=file']
        if flags:
            argv += ['--root', self.p('store'), '--runroot', self.runroot,
                     '--storage-driver', 'overlay',
                     '--storage-opt', 'overlay.mount_program=' + self.fs]
        if os.environ.get('STRATA_PODMAN_DEBUG'):
            argv.append('--log-level=debug')
        argv += list(args)
        rc, out, err = run_reaping(self.as_user(argv), self.env, self.base, TIMEOUT)
        if rc is None:
            raise Failure('timed out after %ds: %s\nstdout: %s\nstderr: %s'
                          % (TIMEOUT, ' '.join(argv), out, err))
        if check and rc != 0:
            raise Failure('exit %d: %s\nstdout:\n%s\nstderr:\n%s'
                          % (rc, ' '.join(argv), out, err))
        if err.strip() and os.environ.get('STRATA_PODMAN_DEBUG'):
            sys.stderr.write(err)
        return out

    def run(self, *args, flags=False):
        opts = ['run', '--network=none', '--pull=never']
        if self.mode == 'root':
            opts += ['--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=4096:4096']
        return self.podman(*(opts + list(args)), flags=flags)

    def strata_mounts(self):
        """strata-fs mounts under our store, in podman's mount namespace
        (ours as root, the pause process's when rootless)."""
        pids = ['self']
        pause = self.pause_pid()
        if pause:
            pids.append(pause)
        out = []
        for pid in pids:
            try:
                out += [m for m in mountinfo(pid)
                        if m[0].startswith(self.p('store')) and m[1].startswith('fuse')]
            except OSError:
                pass
        return out

    def pause_pid(self):
        for f in (self.p('xdg', 'libpod', 'tmp', 'pause.pid'), self.p('tmp', 'pause.pid')):
            try:
                with open(f) as fh:
                    return int(fh.read().strip())
            except (OSError, ValueError):
                pass
        return None

    def cleanup(self):
        log('cleanup')
        problems = []
        try:
            self.podman('rm', '--all', '--force', check=False)
            self.podman('rmi', '--all', '--force', check=False)
        except Failure as f:
            problems.append('cleanup: %s' % f)
        left = self.strata_mounts()
        if left:
            problems.append('strata-fs mounts left after podman rm/rmi: %s' % left)
        pause = self.pause_pid()
        if pause:
            try:
                os.kill(pause, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # Daemons exit once unmounted; conmon and podman's cleanup process
        # exit with their container.
        alive = [p for p in settle(10) if p[0] != pause]
        log('cleanup: processes settled')
        daemons = [p for p in alive if p[1] == 'strata-fs']
        if daemons:
            problems.append('strata-fs daemons still running after podman rm/rmi: %s' % daemons)
        if alive:
            log('note: ending leftover processes %s' % alive)
        kill_all(descendants())
        for m in reversed(mountinfo()):
            if m[0].startswith(self.base + '/'):
                umount(m[0])
        if self.tmpfs:
            umount(self.base)
        shutil.rmtree(self.base, ignore_errors=True)
        return problems


def subid_entry(path, user):
    try:
        with open(path) as f:
            return any(line.split(':')[0] == user for line in f)
    except OSError:
        return False


def subid_free_start(path):
    end = 100000
    try:
        with open(path) as f:
            for line in f:
                parts = line.strip().split(':')
                if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                    end = max(end, int(parts[1]) + int(parts[2]))
    except OSError:
        pass
    return end


def make_rootfs(path):
    """bin/busybox with a few applet links, and two image files in /etc."""
    def entry(name, kind, mode, data=None, link=None):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, 0, 0, 1700000000
        if link:
            ti.linkname = link
        if data is not None:
            ti.size = len(data)
        return ti

    with open(BUSYBOX, 'rb') as f:
        bb = f.read()
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as t:
        for d in ('bin', 'etc', 'tmp'):
            t.addfile(entry(d, tarfile.DIRTYPE, 0o1777 if d == 'tmp' else 0o755))
        t.addfile(entry('bin/busybox', tarfile.REGTYPE, 0o755, bb), io.BytesIO(bb))
        for applet in ('sh', 'ls', 'cat', 'echo', 'rm', 'mkdir', 'test', 'chown'):
            t.addfile(entry('bin/' + applet, tarfile.SYMTYPE, 0o777, link='busybox'))
        for name, text in (('etc/greeting', b'hello from the image\n'),
                           ('etc/doomed', b'delete me\n'), ('etc/chowned', b'x\n'),
                           ('etc/user-file', b'owned by 1000\n')):
            ti = entry(name, tarfile.REGTYPE, 0o644, text)
            if name == 'etc/user-file':
                ti.uid = ti.gid = 1000
            t.addfile(ti, io.BytesIO(text))


def is_static(path):
    """No PT_INTERP: the binary runs in an image without a libc."""
    r = subprocess.run(['ldd', path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    return 'not a dynamic executable' in r.stdout or 'statically linked' in r.stdout


# -- the scenario -------------------------------------------------------------

def root_mount(mountinfo_text):
    """(fstype, source) of the last mount on / in a mountinfo text."""
    found = None
    for line in mountinfo_text.splitlines():
        if ' - ' not in line:
            continue
        left, right = line.split(' - ', 1)
        l, r = left.split(), right.split()
        if len(l) >= 5 and l[4] == '/' and len(r) >= 2:
            found = (r[0], r[1])
    return found


# c1 changes the image once (a restart finds /newfile and changes nothing),
# then shows what it sees.
C1 = ('if [ ! -e /newfile ]; then echo written-by-c1 > /newfile && rm /etc/doomed && '
      'echo appended >> /etc/greeting && chown 2000:2000 /etc/chowned || exit 9; fi; '
      'ls / && echo ==etc && ls /etc && echo ==greeting && cat /etc/greeting && '
      'echo ==owners && ls -ln /etc/greeting /newfile /etc/user-file /etc/chowned && '
      'echo ==mountinfo && cat /proc/self/mountinfo')


def check_c1(out, what):
    expect(out.count('==etc\n') == 1 and '==mountinfo\n' in out,
           '%s: unexpected output %r' % (what, out[:500]))
    listing, rest = out.split('==etc\n', 1)
    etc, rest = rest.split('==greeting\n', 1)
    greeting, rest = rest.split('==owners\n', 1)
    owners, mi = rest.split('==mountinfo\n', 1)
    listing, etc = listing.split(), etc.split()
    owners = sorted(tuple(line.split()[-1:] + line.split()[2:4]) for line in owners.splitlines())
    want = [('/etc/chowned', '2000', '2000'), ('/etc/greeting', '0', '0'),
            ('/etc/user-file', '1000', '1000'), ('/newfile', '0', '0')]
    expect(owners == want, '%s: owners (name uid gid): %s, want %s' % (what, owners, want))
    expect({'bin', 'etc', 'tmp', 'newfile'} <= set(listing),
           '%s: ls / after writing /newfile: %s' % (what, listing))
    expect('doomed' not in etc and 'greeting' in etc,
           '%s: ls /etc after rm /etc/doomed: %s' % (what, etc))
    expect(greeting == 'hello from the image\nappended\n',
           '%s: /etc/greeting after appending to it (copy-up): %r' % (what, greeting))
    rm = root_mount(mi)
    expect(rm is not None, '%s: no mount for / in the container mountinfo:\n%s' % (what, mi))
    expect(rm[0].startswith('fuse') and ('strata' in rm[0] or rm[1] == 'strata-fs'),
           "%s: the container's / is not served by strata-fs: fstype %s, source %s"
           % ((what,) + rm))
    return rm


def scenario(pm):
    img1, img2 = IMAGE + ':base', IMAGE + ':committed'
    info = pm.podman('info', '--format',
                     '{{.Store.GraphRoot}} {{.Store.RunRoot}} {{.Store.GraphOptions}}')
    # Rootless, the run root is $XDG_RUNTIME_DIR/containers (private too).
    pm.runroot = info.split()[1]
    expect(info.split()[0] == pm.p('store') and pm.runroot.startswith(pm.base + '/')
           and pm.fs in info,
           'podman does not use the private store and mount_program of %s: %s'
           % (pm.p('storage.conf'), info))
    pm.podman('import', pm.p('rootfs.tar'), img1)
    log('ok   podman import of a busybox rootfs')

    rm = check_c1(pm.run('--name', 'c1', img1, 'sh', '-c', C1), 'c1')
    log('ok   container c1 wrote, deleted, copied up and chowned; its / is %s (%s)' % rm)

    out = pm.run('--rm', img1, 'sh', '-c',
                 'ls /; echo ==; cat /etc/greeting /etc/doomed; '
                 'test -e /newfile && echo LEAK || echo no-newfile; ls -ln /etc/chowned')
    listing, rest = out.split('==\n', 1)
    expect('newfile' not in listing.split(), 'second container sees c1\'s /newfile: %s'
           % listing.split())
    rest, chowned = rest.rsplit('no-newfile\n', 1) if 'no-newfile\n' in rest else (rest, '')
    expect(rest == 'hello from the image\ndelete me\n' and chowned.split()[2:4] == ['0', '0'],
           'second container does not see the image as imported: %r' % (rest + chowned))
    log('ok   a second container of the image does not see c1\'s changes')

    diff = set(pm.podman('diff', 'c1').split('\n'))
    for want in ('A /newfile', 'D /etc/doomed', 'C /etc/greeting', 'C /etc/chowned'):
        expect(want in diff, 'podman diff c1 lacks %r: %s' % (want, sorted(diff)))
    log('ok   podman diff c1: A /newfile, D /etc/doomed, C /etc/greeting, C /etc/chowned')

    pm.podman('commit', '--quiet', 'c1', img2)
    out = pm.run('--rm', img2, 'sh', '-c',
                 'cat /newfile /etc/greeting; test -e /etc/doomed && echo LEAK || echo no-doomed;'
                 'ls -ln /etc/chowned | { read m n u g r; echo $u:$g; }')
    expect(out == 'written-by-c1\nhello from the image\nappended\nno-doomed\n2000:2000\n',
           'container of the committed image: %r' % out)
    log('ok   podman commit c1: a container of the new image sees c1\'s changes')

    # A restart mounts c1's filesystem again: the upper strata-fs wrote
    # (new file, whiteout, copied-up file) must read back the same.
    check_c1(pm.podman('start', '--attach', 'c1'), 'restarted c1')
    log('ok   restarted c1 sees its own changes again')

    # The same, with everything on podman's command line instead of in
    # storage.conf (the form README quotes).
    out = pm.run('--rm', img2, 'sh', '-c', 'cat /newfile; cat /proc/self/mountinfo',
                 flags=True)
    expect(out.startswith('written-by-c1\n'), 'command-line form: %r' % out[:300])
    rm = root_mount(out)
    expect(rm and rm[0].startswith('fuse') and ('strata' in rm[0] or rm[1] == 'strata-fs'),
           "command-line form: the container's / is not served by strata-fs: %s" % (rm,))
    log('ok   podman --storage-opt overlay.mount_program=strata-fs run: / is %s (%s)' % rm)

    pm.podman('rm', 'c1')
    pm.podman('rmi', img2, img1)
    left = pm.strata_mounts()
    expect(not left, 'strata-fs mounts left after podman rm and rmi: %s' % left)
    log('ok   podman rm/rmi leave no strata-fs mount behind')


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ('root', 'rootless'):
        print(__doc__, file=sys.stderr)
        return 2
    fs, mode = sys.argv[1], sys.argv[2]
    try:
        if os.geteuid() != 0:
            raise Skip('run as root (the rootless case switches to %s itself)' % USER)
        for tool in ('podman', 'conmon'):
            if not shutil.which(tool):
                raise Skip('%s not installed (Debian package %s; make setup)' % (tool, tool))
        if not (shutil.which('crun') or shutil.which('runc')):
            raise Skip('no OCI runtime (Debian package crun)')
        if not os.access(fs, os.X_OK):
            raise Skip('%s is not built' % fs)
        if not os.path.exists('/dev/fuse'):
            raise Skip('no /dev/fuse on this machine')
        if not os.access(BUSYBOX, os.X_OK) or not is_static(BUSYBOX):
            raise Skip('%s is not a static busybox (Debian package busybox-static)' % BUSYBOX)
    except Skip as s:
        print('SKIP: %s' % s)
        return SKIP

    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # Stopped (ctest's timeout, ^C): still clean up.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda n, f: sys.exit(128 + n))
    pm = Podman(fs, mode)
    status = 0
    try:
        pm.setup()
        scenario(pm)
    except Skip as s:
        print('SKIP: %s' % s)
        status = SKIP
    except Failure as f:
        log('FAIL %s: %s' % (mode, f))
        status = 1
    except Exception as ex:  # a harness error is a failure too
        log('FAIL %s: %s: %s' % (mode, type(ex).__name__, ex))
        status = 1
    finally:
        for problem in pm.cleanup():
            log('FAIL %s: %s' % (mode, problem))
            status = 1 if status != SKIP else status
    if status == 0:
        log('PASS %s: podman with mount_program=%s' % (mode, fs))
    return status


if __name__ == '__main__':
    sys.exit(main())
