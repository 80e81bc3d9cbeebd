#!/usr/bin/env python3
"""Command-line contract of the filesystem under test (no -f, as
containers-storage runs it): bad input fails with a message naming the
culprit and leaves no mount and no process behind; good input exits 0 only
once the mount is live, and the backgrounded daemon exits on unmount.

usage: test_badinput.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import (SKIP, is_mounted, mount_tmpfs, prepare_fs, umount)  # noqa: E402

problems = []


def fail(msg):
    problems.append(msg)
    print('FAIL ' + msg, flush=True)


def children():
    out = []
    for t in os.listdir('/proc/self/task'):
        with open('/proc/self/task/%s/children' % t) as f:
            out += [int(x) for x in f.read().split()]
    return out


def reap(timeout):
    """Waits for every child (we are a subreaper, so a daemonized grandchild
    counts); returns pids still alive after timeout, which are then killed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return []
        if pid == 0:
            time.sleep(0.05)
    left = children()
    for pid in left:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    return left


def start(fs, opts, mnt, extra=()):
    return subprocess.run([fs] + list(extra) + ['-o', opts, mnt], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)


def expect_failure(fs, name, opts, mnt, must_name):
    r = start(fs, opts, mnt)
    msg = (r.stdout + r.stderr).strip()
    mounted = is_mounted(mnt)
    if mounted:
        subprocess.run(['fusermount3', '-u', mnt])
    left = reap(2)
    print('%s: exit %d: %s' % (name, r.returncode, msg[:300]), flush=True)
    if r.returncode == 0:
        fail('%s: exit status 0, expected failure (-o %s)' % (name, opts))
    if must_name.lower() not in msg.lower():
        fail('%s: message does not name %r: %r' % (name, must_name, msg[:500]))
    if mounted:
        fail('%s: left a mount on %s' % (name, mnt))
    if left:
        fail('%s: left processes %s running' % (name, left))


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-fs-bad-')
    other = tempfile.mkdtemp(prefix='strata-fs-bad-other-')
    mount_tmpfs(base)
    mount_tmpfs(other)
    try:
        for d in ('l1', 'l2', 'upper', 'work', 'mnt'):
            os.mkdir(os.path.join(base, d))
        os.mkdir(os.path.join(other, 'work'))
        with open(os.path.join(base, 'l1', 'f'), 'w') as f:
            f.write('lower')
        with open(os.path.join(base, 'afile'), 'w') as f:
            f.write('not a dir')
        p = lambda n: os.path.join(base, n)  # noqa: E731
        mnt = p('mnt')
        good = 'lowerdir=%s:%s,upperdir=%s,workdir=%s' % (p('l2'), p('l1'), p('upper'), p('work'))

        expect_failure(fs, 'missing lower layer',
                       'lowerdir=%s:%s,upperdir=%s,workdir=%s' % (p('l2'), p('nosuch'), p('upper'), p('work')),
                       mnt, p('nosuch'))
        expect_failure(fs, 'lower layer is a file',
                       'lowerdir=%s:%s,upperdir=%s,workdir=%s' % (p('afile'), p('l1'), p('upper'), p('work')),
                       mnt, p('afile'))
        expect_failure(fs, 'missing upperdir',
                       'lowerdir=%s,upperdir=%s,workdir=%s' % (p('l1'), p('noupper'), p('work')),
                       mnt, p('noupper'))
        expect_failure(fs, 'workdir on another filesystem than upperdir',
                       'lowerdir=%s,upperdir=%s,workdir=%s' % (p('l1'), p('upper'), os.path.join(other, 'work')),
                       mnt, os.path.join(other, 'work'))
        expect_failure(fs, 'upperdir is also a lower layer',
                       'lowerdir=%s:%s,upperdir=%s,workdir=%s' % (p('upper'), p('l1'), p('upper'), p('work')),
                       mnt, p('upper'))
        # Overlapping layers, in every nesting: refused before anything is
        # written (the upper or work inside a lower would change the image).
        for d in ('l1/up', 'l1/wk', 'upper/low', 'work/low', 'upper/wk', 'work/up'):
            os.mkdir(p(d))
        overlaps = [
            ('upperdir inside a lower layer', (p('l1'), p('l1/up'), p('work')), p('l1/up')),
            ('lower layer inside upperdir', (p('upper/low') + ':' + p('l1'), p('upper'), p('work')),
             p('upper')),
            ('workdir inside a lower layer', (p('l2') + ':' + p('l1'), p('upper'), p('l1/wk')),
             p('l1/wk')),
            ('lower layer inside workdir', (p('l1') + ':' + p('work/low'), p('upper'), p('work')),
             p('work')),
            ('workdir inside upperdir', (p('l1'), p('upper'), p('upper/wk')), p('upper/wk')),
            ('upperdir inside workdir', (p('l1'), p('work/up'), p('work')), p('work')),
            ('workdir is upperdir', (p('l1'), p('upper'), p('upper')), p('upper')),
        ]
        for name, dirs, culprit in overlaps:
            expect_failure(fs, name, 'lowerdir=%s,upperdir=%s,workdir=%s' % dirs, mnt, culprit)
            if os.path.exists(os.path.join(culprit, 'strata')):
                fail('%s: created %s before refusing' % (name, os.path.join(culprit, 'strata')))
        expect_failure(fs, 'unknown option', good + ',bogus_option=1', mnt, 'bogus_option')
        expect_failure(fs, 'missing mountpoint', good, p('nomnt'), p('nomnt'))
        expect_failure(fs, 'no lowerdir', 'upperdir=%s,workdir=%s' % (p('upper'), p('work')),
                       mnt, 'lower')

        # Good input: status 0 means the mount is already live.
        r = start(fs, good, mnt)
        live = is_mounted(mnt)
        if r.returncode != 0:
            fail('good mount: exit %d: %s' % (r.returncode, r.stderr.strip()[:500]))
        elif not live:
            fail('good mount: exited 0 before the mount was live')
        if live:
            try:
                with open(os.path.join(mnt, 'f')) as f:
                    if f.read() != 'lower':
                        fail('good mount: wrong content through the mount')
            finally:
                u = subprocess.run(['fusermount3', '-u', mnt], stderr=subprocess.PIPE, text=True)
                if u.returncode:
                    fail('good mount: fusermount3 -u: %s' % u.stderr.strip())
                    umount(mnt)
        left = reap(10)
        if left:
            fail('daemon still running 10s after unmount: %s' % left)

        # Options containers-storage passes must be accepted.
        cs = good + ',,volatile,noacl,context="system_u:object_r:container_file_t:s0"'
        r = start(fs, cs, mnt)
        if r.returncode != 0 or not is_mounted(mnt):
            fail('containers-storage options rejected (-o %s): exit %d: %s'
                 % (cs, r.returncode, r.stderr.strip()[:500]))
        if is_mounted(mnt):
            subprocess.run(['fusermount3', '-u', mnt])
        left = reap(10)
        if left:
            fail('daemon (containers-storage options) still running after unmount: %s' % left)

        # Plain umount(8) (what a runtime tearing down a mount namespace
        # does) must end the daemon as fusermount3 -u does.
        r = start(fs, good, mnt)
        if r.returncode == 0 and is_mounted(mnt):
            umount(mnt)
            left = reap(10)
            if left:
                fail('daemon still running 10s after umount(8): %s' % left)
        else:
            fail('second good mount failed: %s' % r.stderr.strip()[:300])

        # SIGTERM to a foreground daemon: it unmounts and exits.
        p = subprocess.Popen([fs, '-f', '-o', good, mnt], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while not is_mounted(mnt) and p.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if is_mounted(mnt):
            p.terminate()
            try:
                p.wait(timeout=10)
                if is_mounted(mnt):
                    fail('SIGTERM: daemon exited but left the mount')
                    umount(mnt)
            except subprocess.TimeoutExpired:
                fail('SIGTERM: daemon still running after 10s')
                p.kill()
                p.wait()
                if is_mounted(mnt):
                    umount(mnt)
        else:
            fail('-f mount did not come up: %s' % (p.stderr.read() if p.poll() is not None else ''))
            if p.poll() is None:
                p.kill()
                p.wait()
        reap(1)

        r = subprocess.run([fs, '--version'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=10)
        if r.returncode != 0 or not (r.stdout + r.stderr).strip():
            fail('--version: exit %d, output %r' % (r.returncode, r.stdout + r.stderr))
        reap(1)
    finally:
        for d in (os.path.join(base, 'mnt'),):
            if is_mounted(d):
                umount(d)
        umount(base)
        umount(other)
        os.rmdir(base)
        os.rmdir(other)
    if problems:
        print('\n%d problems' % len(problems))
        return 1
    print('all bad-input checks passed')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
