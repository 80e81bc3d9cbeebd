#!/usr/bin/env python3
"""Deep trees: `rm -rf` of a lower tree deeper than the daemon can keep a
directory descriptor open for each level, as kernel overlayfs removes it.

strata-fs keeps an fd per directory and layer within a budget (half the
open-file limit); beyond it a directory is opened again when needed, by
walking down from the nearest ancestor that still holds one. The shapes
(each checked against kernel overlayfs on the same layers, and the result
kept across a remount):

  nofile:   a 600-level lower tree under an open-file limit of 1024;
  renamed:  a 5000-level lower tree whose top was renamed first (its lower
            layers are then reached through the redirect), under a limit
            of 20000 (this host's default; the daemon keeps an fd per
            level in the upper, as copy-up needs them).

usage: test_deeptree.py [--fs PATH] [SHAPE...]   ($STRATA_FS overrides --fs)
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, on_tmpfs, nofile_wrapper, prepare_fs  # noqa: E402
from mounts import FuseMount, KernelMount, mounted  # noqa: E402

# name: (depth, open-file limit of the daemon or None, rename the top first)
SHAPES = {
    'nofile': (600, 1024, False),
    'renamed': (5000, 20000, True),
}


def make_chain(root, depth):
    """root/top/d/d/.../d (depth directories below top), a file in each:
    built with *at calls, as the path is longer than PATH_MAX."""
    os.makedirs(root)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    name = 'top'
    try:
        for i in range(depth + 1):
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            with open(os.open('f', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), 'w') as f:
                f.write('level %d\n' % i)
            name = 'd'
    finally:
        os.close(fd)


def chain_depth(path):
    """How many directories the chain under path still has (0: path gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return 0
    n = 1
    try:
        while True:
            try:
                nfd = os.open('d', os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                return n
            os.close(fd)
            fd = nfd
            n += 1
    finally:
        os.close(fd)


def remove(mnt, rename):
    """Renames top (if asked), then rm -rf of what it became: a problem or None."""
    top = os.path.join(mnt, 'top')
    if rename:
        os.rename(top, os.path.join(mnt, 'moved'))
        top = os.path.join(mnt, 'moved')
        if chain_depth(top) < 2:
            return 'the renamed top lost its content (depth %d)' % chain_depth(top)
    r = subprocess.run(['rm', '-rf', top], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        return 'rm -rf failed (%d): %s' % (r.returncode, r.stdout.strip()[-500:])
    if os.path.lexists(top):
        return 'rm -rf succeeded but %s still exists (depth %d)' % (top, chain_depth(top))
    left = sorted(os.listdir(mnt))
    if left:
        return 'the mount root still lists %s' % left
    return None


def run_shape(fs, base, name, problems):
    depth, nofile, rename = SHAPES[name]
    sub = os.path.join(base, name)
    lower = os.path.join(sub, 'lower')
    make_chain(lower, depth)
    for kind in ('kernel', 'fuse'):
        d = os.path.join(sub, kind)
        for x in ('u', 'w', 'm'):
            os.makedirs(os.path.join(d, x))
        args = ([lower], os.path.join(d, 'u'), os.path.join(d, 'w'), os.path.join(d, 'm'))
        if kind == 'kernel':
            m = KernelMount(*args)
        else:
            m = FuseMount(nofile_wrapper(fs, base, nofile), *args)
        what = '%s (%d levels%s%s) on %s' % (name, depth, ', top renamed' if rename else '',
                                            ', nofile %d' % nofile if nofile else '', kind)
        mine = []
        m.mount()
        try:
            pr = remove(m.mnt, rename)
            if pr:
                mine.append('%s: %s' % (what, pr))
        finally:
            problem = m.umount()
            if problem:
                mine.append('%s: %s' % (what, problem))
        if not mine:
            # the deletion holds across a remount
            with mounted(m, mine):
                left = sorted(os.listdir(m.mnt))
                if left:
                    mine.append('%s: after a remount the root lists %s' % (what, left))
        if kind == 'kernel' and mine:
            raise RuntimeError('kernel overlayfs itself fails the shape: %s' % mine)
        problems += mine
        print('%s: %s' % (what, 'ok' if not mine else 'FAILED'), flush=True)


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    names = [a for a in argv if a in SHAPES] or list(SHAPES)
    def body(base, problems):
        for name in names:
            run_shape(fs, base, name, problems)

    return on_tmpfs('strata-deeptree-', body)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
