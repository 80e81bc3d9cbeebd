#!/usr/bin/env python3
"""Rootless path: an unprivileged user, inside `unshare -Urm`, mounts the
filesystem under test over layers it owns and compares it with kernel
overlayfs (-o userxattr) mounted in the same user namespace.

usage (as root): test_rootless.py [--fs PATH]     ($STRATA_FS overrides --fs)
It creates the user strata-test if needed and re-runs itself as that user
with --inner. /dev/fuse is often 0600 on test hosts (Debian makes it 0666):
then the test makes its own 0666 fuse device node on its private tmpfs and
bind-mounts it over /dev/fuse inside the namespace, so nothing global
changes.
"""

import os
import pwd
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ovltest  # noqa: E402
from ovltest import (F, D, L, W, O, SKIP, Scenario, fs_under_test, main, mount_tmpfs,  # noqa: E402
                     umount, stt, rd, ls, write)

USER = 'strata-test'


class RootlessBasic(Scenario):
    name = 'rootless_basic'
    layers = [
        [F('a', b'lower a'), F('b', b'lower b', mode=0o600), F('d/x', b'x'), F('d/y', b'y'),
         F('gone/1', b'1'), F('keep/k', b'k', xattrs={'user.k': b'v'}), L('s', 'a'),
         F('opq/old', b'old'), D('e')],
        [W('d/y'), F('d/z', b'z'), O('opq'), F('opq/new', b'new'), F('b', b'mid b')],
    ]

    def run(self, t):
        t.op('read', lambda c: (rd(c.p('a')), rd(c.p('b')), ls(c.p('d')), ls(c.p('opq'))))
        t.op('write copies up', lambda c: (write(c.p('a'), b'A', os.O_WRONLY | os.O_APPEND),
                                           rd(c.p('a')), stt(c.p('a')), c.same_ino_as_start('a')))
        t.op('chmod copies up', lambda c: (os.chmod(c.p('b'), 0o640), stt(c.p('b'))))
        t.op('setxattr copies up', lambda c: (os.setxattr(c.p('keep/k'), 'user.n', b'1'),
                                              stt(c.p('keep/k'))))
        t.op('unlink lower', lambda c: (os.unlink(c.p('d/x')), ls(c.p('d'))))
        t.op('recreate', lambda c: (write(c.p('d/x'), b'again'), rd(c.p('d/x'))))
        t.op('rm -r lower dir', lambda c: (os.unlink(c.p('gone/1')), os.rmdir(c.p('gone')),
                                           os.path.exists(c.p('gone'))))
        t.op('mkdir over removed dir is empty', lambda c: (os.mkdir(c.p('gone')), ls(c.p('gone'))))
        t.op('rmdir empty lower dir and recreate', lambda c: (os.rmdir(c.p('e')), os.mkdir(c.p('e')),
                                                              ls(c.p('e'))))
        t.op('rename lower file', lambda c: (os.rename(c.p('d/z'), c.p('z')), ls(c.p('d')), rd(c.p('z'))))
        t.op('hard link lower', lambda c: (os.link(c.p('keep/k'), c.p('k2')), stt(c.p('k2'))))
        t.op('symlink', lambda c: (os.symlink('a', c.p('s2')), stt(c.p('s2'))))
        t.op('mkfifo', lambda c: (os.mkfifo(c.p('fifo')), stt(c.p('fifo'))))
        t.op('chown to mapped root', lambda c: (os.chown(c.p('z'), 0, 0), stt(c.p('z'))))
        t.op('chown to unmapped uid', lambda c: os.chown(c.p('z'), 1, 1))
        t.op('mknod device', lambda c: os.mknod(c.p('dev'), stat.S_IFCHR | 0o600, os.makedev(1, 3)))
        # Kernel overlayfs refuses this with EXDEV under userxattr (no
        # redirect_dir); the strata-fs contract says directory rename works.
        t.fuse_only('lower dir rename and back', lambda c: (
            os.rename(c.p('d'), c.p('d2')), ls(c.p('d2')), rd(c.p('d2/x')),
            os.rename(c.p('d2'), c.p('d'))), ('ok', (None, ['x'], b'again', None)))


def fusermount_path(argv):
    """The other rootless path: the user runs the daemon directly, without a
    user namespace; libfuse mounts through the setuid fusermount3. Compared
    with kernel overlayfs mounted by root over identical user-owned layers,
    every operation done as the user on both."""
    pw = pwd.getpwnam(USER)
    if not os.path.exists('/usr/bin/fusermount3') or not os.stat('/usr/bin/fusermount3').st_mode & 0o4000:
        print('SKIP: no setuid /usr/bin/fusermount3')
        return SKIP
    # libfuse opens /dev/fuse itself and falls back to fusermount3 only when
    # mount(2) is refused, so a 0600 /dev/fuse (this kind of test host;
    # Debian installs it 0666) rules this path out.
    if subprocess.run(['setpriv', '--reuid=%d' % pw.pw_uid, '--regid=%d' % pw.pw_gid,
                       '--init-groups', 'sh', '-c', 'exec 3<>/dev/fuse'],
                      stderr=subprocess.DEVNULL).returncode:
        print('SKIP: /dev/fuse is not open to %s (mode %o): libfuse cannot reach fusermount3'
              % (USER, stat.S_IMODE(os.stat('/dev/fuse').st_mode)))
        return SKIP
    ovltest.mode.fuse_user = (pw.pw_uid, pw.pw_gid)
    sc = RootlessBasic()
    sc.name = 'fusermount_basic'
    import difftest
    shared = [s for s in difftest.SCENARIOS if s.name in FUSERMOUNT_SHARED]
    return main([sc] + shared, argv)


# Scenarios whose daemon code paths differ when it cannot use trusted.*
# xattrs, chown or mknod: whiteouts, opaque dirs, redirects, origins, copy-up.
FUSERMOUNT_SHARED = ('reads', 'copyup', 'unlink', 'rmrf', 'rename_files', 'rename_dirs',
                     'rename_nested', 'hardlinks', 'special', 'open_unlinked', 'readonly', 'sparse',
                     'fuzz', 'fuzzreg_chmod_dir_owner_no_access')


def inner(argv):
    if '--fusedev' in argv:
        dev = argv[argv.index('--fusedev') + 1]
        r = subprocess.run(['mount', '--bind', dev, '/dev/fuse'], stderr=subprocess.PIPE, text=True)
        if r.returncode:
            print('SKIP: cannot bind the test fuse device over /dev/fuse in the namespace: '
                  + r.stderr.strip())
            return SKIP
        del argv[argv.index('--fusedev'):argv.index('--fusedev') + 2]
    ovltest.mode.rootless = True
    # The shared scenarios whose layers an unprivileged user can build (owner
    # 0 = the user, no devices, no trusted.* xattrs) and whose operations the
    # kernel can do without redirect_dir (which userxattr excludes).
    import difftest
    shared = [s for s in difftest.SCENARIOS if s.name in ROOTLESS_SHARED]
    return main([RootlessBasic()] + shared, argv)


ROOTLESS_SHARED = ('rmrf', 'dir_offsets', 'bigdir', 'sparse', 'file_io', 'mmap', 'concurrent')


def user_python():
    # The interpreter running us may live under /root (pyenv): not for the user.
    for p in ('/usr/bin/python3', '/usr/local/bin/python3', sys.executable):
        if os.access(p, os.X_OK) and all(os.stat(d).st_mode & 0o001 for d in
                                          parents(os.path.realpath(p))):
            return p
    return sys.executable


def parents(p):
    while p != '/':
        p = os.path.dirname(p)
        yield p


def outer(argv):
    if os.geteuid() != 0:
        print('SKIP: run as root; the test switches to the unprivileged user %s itself' % USER)
        return SKIP
    fs = fs_under_test(argv)
    if not fs or not os.path.exists(fs):
        print('SKIP: filesystem under test not built: %r (set STRATA_FS)' % fs)
        return SKIP
    pw = ovltest.ensure_user(USER)
    r = subprocess.run(['setpriv', '--reuid=%d' % pw.pw_uid, '--regid=%d' % pw.pw_gid,
                        '--init-groups', 'unshare', '-Urm', 'true'], stderr=subprocess.PIPE, text=True)
    if r.returncode:
        print('SKIP: unprivileged user namespaces unavailable: ' + r.stderr.strip())
        return SKIP

    base = tempfile.mkdtemp(prefix='strata-fs-rootless-')
    mount_tmpfs(base)
    try:
        os.chown(base, pw.pw_uid, pw.pw_gid)
        extra = []
        fuse_ok = subprocess.run(['setpriv', '--reuid=%d' % pw.pw_uid, '--regid=%d' % pw.pw_gid,
                                  '--init-groups', 'sh', '-c', 'exec 3<>/dev/fuse'],
                                 stderr=subprocess.DEVNULL).returncode == 0
        if not fuse_ok:
            devdir = os.path.join(base, 'dev')
            os.mkdir(devdir)
            st = os.stat('/dev/fuse')
            os.mknod(os.path.join(devdir, 'fuse'), stat.S_IFCHR | 0o666, st.st_rdev)
            os.chmod(os.path.join(devdir, 'fuse'), 0o666)
            extra = ['--fusedev', os.path.join(devdir, 'fuse')]
            print('note: /dev/fuse is not open to %s here; using a private 0666 node' % USER,
                  flush=True)
        env = dict(os.environ, HOME=pw.pw_dir, USER=USER, TMPDIR=base)
        env.pop('STRATA_FS', None)
        cmd = ['setpriv', '--reuid=%d' % pw.pw_uid, '--regid=%d' % pw.pw_gid, '--init-groups',
               'unshare', '-Urm', user_python(), os.path.abspath(__file__), '--inner',
               '--fs', fs] + extra
        r = subprocess.run(cmd, env=env, cwd='/')
        return r.returncode
    finally:
        umount(base)
        os.rmdir(base)


def fusermount_outer(argv):
    """With /dev/fuse closed to users, re-run in a private mount namespace
    (still root, no user namespace) where a private 0666 node covers
    /dev/fuse: the daemon then runs as the user and mounts through the setuid
    fusermount3, exactly as on a stock Debian host."""
    if os.geteuid() != 0:
        print('SKIP: run as root; the test switches to the unprivileged user %s itself' % USER)
        return SKIP
    ovltest.ensure_user(USER)
    base = tempfile.mkdtemp(prefix='strata-fs-fusermount-')
    mount_tmpfs(base)
    try:
        node = os.path.join(base, 'fuse')
        os.mknod(node, stat.S_IFCHR | 0o666, os.stat('/dev/fuse').st_rdev)
        os.chmod(node, 0o666)
        r = subprocess.run(['unshare', '-m', '--propagation', 'private', sys.executable,
                            os.path.abspath(__file__), '--fusermount-inner', '--fusedev', node]
                           + argv)
        return r.returncode
    finally:
        umount(base)
        os.rmdir(base)


if __name__ == '__main__':
    if '--fusermount' in sys.argv:
        sys.exit(fusermount_outer([a for a in sys.argv[1:] if a != '--fusermount']))
    if '--fusermount-inner' in sys.argv:
        args = [a for a in sys.argv[1:] if a != '--fusermount-inner']
        i = args.index('--fusedev')
        r = subprocess.run(['mount', '--bind', args[i + 1], '/dev/fuse'], stderr=subprocess.PIPE,
                           text=True)
        if r.returncode:
            print('SKIP: cannot cover /dev/fuse in a private mount namespace: ' + r.stderr.strip())
            sys.exit(SKIP)
        del args[i:i + 2]
        sys.exit(fusermount_path(args))
    if '--inner' in sys.argv:
        args = [a for a in sys.argv[1:] if a != '--inner']
        sys.exit(inner(args))
    sys.exit(outer(sys.argv[1:]))
