#!/usr/bin/env python3
"""Copy-up is atomic: the daemon is killed (SIGKILL) while it copies a large
lower file up, and after a remount of the same upper the file must be the
lower file, whole, never a partial copy (semantics: built in the workdir and
renamed into place).

usage: test_crash.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import hashlib
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import (SKIP, FuseMount, file_sha, is_mounted, mount_tmpfs, reap_all, prepare_fs, umount)  # noqa: E402

SIZE = 48 << 20


def workdir_files(work):
    return [os.path.join(d, n) for d, _, files in os.walk(work) for n in files]


def one_run(fs, base, lower_sha, attempt):
    """Returns a problem string or None; None also when the copy finished
    before the kill could land (then the run proves nothing and says so)."""
    up, work, mnt = (os.path.join(base, '%s%d' % (n, attempt)) for n in ('u', 'w', 'm'))
    for d in (up, work, mnt):
        os.mkdir(d)
    m = FuseMount(fs, [os.path.join(base, 'l')], up, work, mnt)
    m.mount()
    # The copy-up runs in a child so that its blocked open() cannot hang us.
    child = subprocess.Popen([sys.executable, '-c', 'import os,sys; os.close(os.open(sys.argv[1], '
                              'os.O_WRONLY))', os.path.join(mnt, 'big')],
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    landed = False
    while time.time() < deadline and child.poll() is None:
        tmp = workdir_files(work)
        try:
            started = tmp and (attempt == 0 or os.stat(tmp[0]).st_size > 0)
        except OSError:
            started = False
        # The first run kills as soon as the temporary file exists, the
        # others once data is flowing into it.
        if started:
            m.proc.kill()
            landed = True
            try:
                print('killed with %s at %d of %d bytes' % (os.path.relpath(tmp[0], work),
                                                             os.stat(tmp[0]).st_size, SIZE))
            except OSError:
                pass
            break
    child.wait()
    if not landed:
        m.proc.kill()
    m.proc.wait()
    subprocess.run(['fusermount3', '-u', mnt], stderr=subprocess.DEVNULL)
    if is_mounted(mnt):
        umount(mnt)
    m.errlog.close()
    reap_all()

    m2 = FuseMount(fs, [os.path.join(base, 'l')], up, work, mnt)
    m2.mount()
    try:
        p = os.path.join(mnt, 'big')
        size = os.stat(p).st_size
        sha = file_sha(p)
    finally:
        problem = m2.umount()
    if problem:
        return 'remount after the kill: ' + problem
    if (size, sha) != (SIZE, lower_sha):
        return ('after a SIGKILL during copy-up and a remount, big has size %d (want %d) and '
                'different content: a partial copy became visible' % (size, SIZE))
    # Not visible in the view, but each crash would leak a partial copy for
    # good: the mount empties workdir (as kernel overlayfs does).
    debris = workdir_files(work)
    if debris:
        return ('a clean mount+unmount after the crash left %s in workdir'
                % [os.path.relpath(d, work) for d in debris])
    return None if landed else 'skip'


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-fs-crash-')
    mount_tmpfs(base)
    try:
        os.mkdir(os.path.join(base, 'l'))
        h = hashlib.sha256()
        with open(os.path.join(base, 'l', 'big'), 'wb') as f:
            block = os.urandom(1 << 20)
            for _ in range(SIZE >> 20):
                f.write(block)
                h.update(block)
        lower_sha = file_sha(os.path.join(base, 'l', 'big'))
        landed = 0
        for attempt in range(5):
            r = one_run(fs, base, lower_sha, attempt)
            if r == 'skip':
                continue
            if r:
                print('FAIL ' + r)
                return 1
            landed += 1
        if not landed:
            print('SKIP: every copy-up finished before the kill could land (workdir not used?)')
            return SKIP
        print('%d kills during copy-up, the file stayed whole every time' % landed)
        return 0
    finally:
        umount(base)
        os.rmdir(base)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
