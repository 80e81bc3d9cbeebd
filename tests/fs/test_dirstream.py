#!/usr/bin/env python3
"""A directory listing resumed by offset while the directory changes.

NFS exporters, telldir/seekdir users and programs that list a directory in
pieces close it and come back with the d_off of the last entry they got.
strata-fs keeps no state per open directory; its offsets come from the
names, so between the pieces names are deleted and created here, and every
name that stayed must still come exactly once (the changed ones may come or
not). Kernel overlayfs is no oracle for this: for a merged directory it ends
such a listing early. Also checked: a plain listing after the churn shows
exactly the names that exist.

usage: test_dirstream.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, conclude, prepare_fs  # noqa: E402
from difftest import getdents  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-dirstream-', dir='/var/tmp')
    for d in ('l', 'l/d', 'u', 'w', 'm'):
        os.mkdir(os.path.join(base, d))
    for i in range(300):
        open(os.path.join(base, 'l/d/f%03d' % i), 'w').close()
    problems = []
    m = FuseMount(fs, [os.path.join(base, 'l')], os.path.join(base, 'u'),
                  os.path.join(base, 'w'), os.path.join(base, 'm'))
    try:
        with mounted(m, problems):
            d = os.path.join(base, 'm', 'd')
            before = set(os.listdir(d))
            seen, changed, rounds = [], set(), 0
            gone, created = set(), set()
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                while True:
                    ents = getdents(fd, 256)
                    if not ents:
                        break
                    rounds += 1
                    seen += [n for n, _, _ in ents if n not in ('.', '..')]
                    for v in sorted(before - set(seen) - changed)[:2]:
                        os.unlink(os.path.join(d, v))
                        changed.add(v)
                        gone.add(v)
                    for i in range(3):
                        name = 'new%d_%d' % (rounds, i)
                        open(os.path.join(d, name), 'w').close()
                        changed.add(name)
                        created.add(name)
                    os.close(fd)
                    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                    os.lseek(fd, ents[-1][1], os.SEEK_SET)
            finally:
                os.close(fd)
            stayed = before - changed
            wrong = sorted(n for n in stayed if seen.count(n) != 1)
            if rounds < 10:
                problems.append('only %d pieces: the test did not exercise resuming' % rounds)
            if wrong:
                problems.append('%d names that stayed came not exactly once, e.g. %s'
                                % (len(wrong), wrong[:5]))
            now = set(os.listdir(d))
            expect = (before - gone) | created
            if now != expect:
                problems.append('listing after the churn differs from what exists: missing %s, extra %s'
                                % (sorted(expect - now)[:5], sorted(now - expect)[:5]))
            print('%d pieces, %d names stayed, %d changed' % (rounds, len(stayed), len(changed)))
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
