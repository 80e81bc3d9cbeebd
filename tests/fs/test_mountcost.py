#!/usr/bin/env python3
"""Mount cost, counted rather than timed (docs/design/mount-cost.md: mount time does not grow
with layer size, and grows at most linearly and cheaply with layer count;
nothing walks the whole tree at mount). The daemon runs under strace until
its mount is live; the system calls it made by then are counted:
  - a layer of 20000 files: no directory reads at all beyond a constant
    and far fewer file-system calls than files;
  - 100 and 400 layers: the cost grows linearly, a small constant per layer
    (no layer's root directory is read until a request in the root).

usage: test_mountcost.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import (SKIP, is_mounted, mount_tmpfs, reap_all, prepare_fs, umount)  # noqa: E402

FS_CALLS = ('getdents64', 'openat', 'newfstatat', 'statx', 'fstatat64', 'lstat', 'stat',
            'readlinkat', 'fgetxattr', 'getxattr', 'lgetxattr', 'flistxattr', 'llistxattr',
            'listxattr')


def count_mount_calls(fs, opts, mnt, log, cwd=None):
    """Starts fs under strace, waits for the mount, unmounts; returns
    {syscall: count} for everything the daemon did."""
    p = subprocess.Popen(['strace', '-f', '-qq', '-o', log, '-e', 'trace=' + ','.join(FS_CALLS),
                          fs, '-f', '-o', opts, mnt], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=cwd)
    deadline = time.time() + 60
    while not is_mounted(mnt):
        if p.poll() is not None:
            raise RuntimeError('%s exited before mounting: %s' % (fs, p.stderr.read()))
        if time.time() > deadline:
            p.kill()
            p.wait()
            raise RuntimeError('%s: no mount after 60s under strace' % fs)
        time.sleep(0.05)
    subprocess.run(['fusermount3', '-u', mnt])
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    counts = {}
    with open(log) as f:
        for line in f:
            parts = line.split(None, 1)
            if len(parts) < 2:
                continue
            name = parts[1].split('(', 1)[0]
            if name in FS_CALLS:
                counts[name] = counts.get(name, 0) + 1
    return counts


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    if not shutil.which('strace'):
        print('SKIP: strace not installed')
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-fs-mountcost-')
    mount_tmpfs(base)
    problems = []
    try:
        for d in ('big', 'up', 'work', 'mnt', 'many'):
            os.mkdir(os.path.join(base, d))
        for i in range(20000):
            sub = os.path.join(base, 'big', 'd%02d' % (i % 50))
            if i < 50:
                os.mkdir(sub)
            open(os.path.join(sub, 'f%05d' % i), 'w').close()
        opts = 'lowerdir=%s,upperdir=%s,workdir=%s' % tuple(
            os.path.join(base, d) for d in ('big', 'up', 'work'))
        c = count_mount_calls(fs, opts, os.path.join(base, 'mnt'), os.path.join(base, 'log1'))
        total = sum(c.values())
        print('one layer of 20000 files: %d file-system calls at mount %s' % (total, c))
        if c.get('getdents64', 0) > 20:
            problems.append('mounting read directories %d times: the layer is walked at mount'
                            % c['getdents64'])
        if total > 2000:
            problems.append('mounting made %d file-system calls for a 20000-file layer' % total)

        # Linear in the layer count: 400 layers may cost at most ~4x what
        # 100 cost (a quadratic walk costs 16x), and each layer stays cheap.
        per = {}
        for n in (100, 400):
            names = []
            for i in range(n):
                ld = os.path.join(base, 'many', 'n%d_%d' % (n, i))
                os.mkdir(ld)
                open(os.path.join(ld, 'f%d' % i), 'w').close()
                names.append(os.path.relpath(ld, base))
            # Relative paths, as containers-storage passes them, keep -o short.
            opts = 'lowerdir=%s,upperdir=up,workdir=work' % ':'.join(reversed(names))
            shutil.rmtree(os.path.join(base, 'work'))
            os.mkdir(os.path.join(base, 'work'))
            c = count_mount_calls(fs, opts, os.path.join(base, 'mnt'),
                                  os.path.join(base, 'log%d' % n), cwd=base)
            per[n] = sum(c.values())
            print('%d layers: %d file-system calls at mount (%.1f per layer) %s'
                  % (n, per[n], per[n] / float(n), c))
        if per[400] > 6 * max(per[100], 1):
            problems.append('mount cost grows faster than the layer count: %d calls for 100 '
                            'layers, %d for 400' % (per[100], per[400]))
        # Opening and checking a layer takes a handful of calls; reading its
        # root directory (a disk read each when cold) waits for a request
        # in the root, and overlap checks stop at the parent layers share.
        if per[400] > 400 * 12:
            problems.append('mounting 400 layers made %d file-system calls (> 12 per layer)'
                            % per[400])
    except RuntimeError as e:
        problems.append(str(e))
    finally:
        if is_mounted(os.path.join(base, 'mnt')):
            umount(os.path.join(base, 'mnt'))
        reap_all()
        umount(base)
        os.rmdir(base)
    for p in problems:
        print('FAIL ' + p)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
