#!/usr/bin/env python3
"""security.selinux of files without a label.

Where no security module keeps labels (the only case in which the request
reaches a FUSE daemon), strata-fs answers getxattr of security.selinux for
a file without one with EOPNOTSUPP rather than ENODATA, so that ls -l and
libselinux stop asking for every file of the mount. Checked here:
- a file without a label, lower or upper, answers EOPNOTSUPP; other
  missing names still answer ENODATA;
- a label a lower layer holds is shown, listed, and survives a copy-up;
  a label set through the mount reads back;
- a warm `ls -l` of a directory of many files asks for it about once
  (GETXATTR requests counted through tracefs), against once per file with
  -o unlabeled=enodata;
- with -o unlabeled=enodata a missing label answers ENODATA, as on the
  kernel's overlayfs (compared with it where it can be mounted);
- with -o noacl (as containers-storage may pass it) reading or setting a
  POSIX ACL answers EOPNOTSUPP, a lower file's ACL is not listed, and a warm
  `ls -l` asks about once (the kernel caches no ACLs on such a mount, and
  ls stops asking where they are not supported).

usage: test_labels.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import errno
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, conclude, prepare_fs  # noqa: E402
from mounts import FuseMount, KernelMount, Skip, mounted  # noqa: E402
from fusetrace import GETXATTR, Requests  # noqa: E402

LABEL = 'security.selinux'
ACL = 'system.posix_acl_access'
VALUE = b'system_u:object_r:etc_t:s0\0'
NFILES = 60


def err_of(fn):
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    if os.path.exists('/sys/fs/selinux/enforce'):
        # SELinux answers security.selinux itself: the daemon is never asked
        print('SKIP: SELinux runs on this host; the kernel answers for labels')
        return SKIP
    if os.geteuid() != 0:
        print('SKIP: setting security.* xattrs on the lower layer needs root')
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-labels-', dir='/var/tmp')
    low = os.path.join(base, 'l')
    os.makedirs(os.path.join(low, 'many'))
    for i in range(NFILES):
        with open(os.path.join(low, 'many', 'f%02d' % i), 'w') as fh:
            fh.write('x')
    for name in ('plain', 'labeled', 'acl'):
        with open(os.path.join(low, name), 'w') as fh:
            fh.write(name)
    problems = []
    try:
        os.setxattr(os.path.join(low, 'labeled'), LABEL, VALUE)
    except OSError as e:
        conclude(base, [])
        print('SKIP: the lower filesystem keeps no %s (%s)' % (LABEL, os.strerror(e.errno)))
        return SKIP

    def with_mount(kind, extra, fn):
        sub = os.path.join(base, kind + extra.replace('=', '-'))
        for d in ('u', 'w', 'm'):
            os.makedirs(os.path.join(sub, d))
        args = ([low], os.path.join(sub, 'u'), os.path.join(sub, 'w'), os.path.join(sub, 'm'))
        m = FuseMount(fs, *args, extra=extra) if kind == 'strata' else KernelMount(*args)
        with mounted(m, problems):
            fn(os.path.join(sub, 'm'))

    def expect(what, got, want):
        if got != want:
            problems.append('%s: %s, expected %s'
                            % (what, errno.errorcode.get(got, got) if isinstance(got, int) else got,
                               errno.errorcode.get(want, want) if isinstance(want, int) else want))

    def warm_ls_getxattrs(mnt):
        d = os.path.join(mnt, 'many')
        subprocess.run(['ls', '-l', d], stdout=subprocess.DEVNULL, check=True)
        rq = Requests(mnt, GETXATTR)
        if not rq.ok:
            return None
        return rq.count(lambda: subprocess.run(['ls', '-l', d], stdout=subprocess.DEVNULL,
                                               check=True))

    counts = {}

    def default_mode(mnt):
        p = lambda n: os.path.join(mnt, n)  # noqa: E731
        expect('lower file without a label', err_of(lambda: os.getxattr(p('plain'), LABEL)),
               errno.EOPNOTSUPP)
        expect('lower file, missing user xattr', err_of(lambda: os.getxattr(p('plain'), 'user.x')),
               errno.ENODATA)
        expect('lower label', os.getxattr(p('labeled'), LABEL), VALUE)
        expect('listed names of the labeled file', os.listxattr(p('labeled')), [LABEL])
        with open(p('new'), 'w') as fh:
            fh.write('new')
        expect('upper file without a label', err_of(lambda: os.getxattr(p('new'), LABEL)),
               errno.EOPNOTSUPP)
        os.setxattr(p('new'), LABEL, VALUE)
        expect('label set through the mount', os.getxattr(p('new'), LABEL), VALUE)
        with open(p('labeled'), 'a') as fh:
            fh.write(' appended')
        expect('lower label after a copy-up', os.getxattr(p('labeled'), LABEL), VALUE)
        counts['enotsup'] = warm_ls_getxattrs(mnt)

    def enodata_mode(mnt):
        p = lambda n: os.path.join(mnt, n)  # noqa: E731
        expect('unlabeled=enodata, lower file without a label',
               err_of(lambda: os.getxattr(p('plain'), LABEL)), errno.ENODATA)
        expect('unlabeled=enodata, lower label', os.getxattr(p('labeled'), LABEL), VALUE)
        counts['enodata'] = warm_ls_getxattrs(mnt)

    def noacl_mode(mnt):
        p = lambda n: os.path.join(mnt, n)  # noqa: E731
        expect('noacl, reading the ACL of a lower file that has one',
               err_of(lambda: os.getxattr(p('acl'), ACL)), errno.EOPNOTSUPP)
        expect('noacl, reading the ACL of a file without one',
               err_of(lambda: os.getxattr(p('plain'), ACL)), errno.EOPNOTSUPP)
        expect('noacl, setting an ACL',
               err_of(lambda: os.setxattr(p('plain'), ACL, acl_value)), errno.EOPNOTSUPP)
        expect('noacl, ACL listed', ACL in os.listxattr(p('acl')), False)
        counts['noacl'] = warm_ls_getxattrs(mnt)

    acl_value = None
    if subprocess.run(['setfacl', '-m', 'u:65534:r', os.path.join(low, 'acl')],
                      capture_output=True).returncode == 0:
        acl_value = os.getxattr(os.path.join(low, 'acl'), ACL)
    try:
        with_mount('strata', '', default_mode)
        with_mount('strata', 'unlabeled=enodata', enodata_mode)
        if acl_value is not None:
            with_mount('strata', 'noacl', noacl_mode)
        else:
            print('noacl not checked: the lower filesystem keeps no ACLs')
        try:
            with_mount('kernel', '', lambda mnt: expect(
                'kernel overlayfs, lower file without a label',
                err_of(lambda: os.getxattr(os.path.join(mnt, 'plain'), LABEL)), errno.ENODATA))
        except Skip as e:
            print('kernel overlayfs not compared: %s' % e)
        if counts.get('enotsup') is not None:
            print('GETXATTR in a warm ls -l of %d files: %d by default, %d with unlabeled=enodata, '
                  '%s with noacl' % (NFILES, counts['enotsup'], counts['enodata'], counts.get('noacl')))
            if counts['enotsup'] > 3:
                problems.append('a warm ls -l of %d unlabeled files sent %d GETXATTR: '
                                'ls kept asking for %s' % (NFILES, counts['enotsup'], LABEL))
            if counts.get('noacl') is not None and counts['noacl'] > 3:
                problems.append('with noacl a warm ls -l of %d files sent %d GETXATTR: ls kept '
                                'asking for each file\'s ACL' % (NFILES, counts['noacl']))
            if counts['enodata'] < NFILES:
                problems.append('with unlabeled=enodata a warm ls -l of %d files sent only %d '
                                'GETXATTR' % (NFILES, counts['enodata']))
        else:
            print('tracefs not available: request counts not checked')
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
