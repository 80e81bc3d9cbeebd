#!/usr/bin/env python3
"""Listings that leave attributes out (lean readdirplus) stay correct.

strata-fs answers a directory listing without the attributes of its
non-directory entries while clients do not look them up (a `find -type
f`), and with them while they do (`ls -l`). Either way the merged view must
be the same: a walk that reads names and types only, then a stat of every
entry afterwards, must show the inode numbers the listing gave and the
attributes of the topmost lower file; so must an ls -l-like walk that stats
as it goes. Also: a directory with an upper part always comes with
attributes (its entries may show another inode number once looked up),
and after a change through the mount the new entry is listed and stats
right.

Where tracefs is available (root), the FUSE requests are counted to show
that both kinds of answer happen: the stats after a names-only walk need a
LOOKUP for most files, the ls -l-like walk needs few (the listings switched
to attributes after its first directories).

usage: test_leanlist.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import os
import stat
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, conclude, prepare_fs  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402
from fusetrace import LOOKUP, Requests  # noqa: E402

NDIRS = 40
NFILES = 12


def build(base):
    l1, l2 = os.path.join(base, 'l1'), os.path.join(base, 'l2')
    for d in range(NDIRS):
        p = os.path.join(l1, 'd%02d' % d)
        os.makedirs(os.path.join(p, 'sub'))
        for f in range(NFILES):
            fp = os.path.join(p, 'f%02d' % f)
            with open(fp, 'w') as fh:
                fh.write('x' * (d * NFILES + f))
            os.chmod(fp, 0o600 + (f % 8) * 0o10)
            os.utime(fp, (1000000 + f, 2000000 + d * 100 + f))
        os.symlink('f00', os.path.join(p, 'link'))
        os.mkfifo(os.path.join(p, 'fifo'))
        os.link(os.path.join(p, 'f01'), os.path.join(p, 'hard'))
    # the upper lower layer replaces some files and adds others
    for d in range(0, NDIRS, 3):
        p = os.path.join(l2, 'd%02d' % d)
        os.makedirs(p)
        with open(os.path.join(p, 'f03'), 'w') as fh:
            fh.write('replaced in l2, longer than before')
        with open(os.path.join(p, 'only2'), 'w') as fh:
            fh.write('l2')
    return [l1, l2]     # bottom first, as the harness takes them


def dtype_of(entry):
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    return None


def names_walk(root):
    """find -type f: names and types from the listings, no stat."""
    seen = {}
    stack = ['']
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as it:
            for e in it:
                r = os.path.join(rel, e.name)
                seen[r] = (e.inode(), dtype_of(e))
                if e.is_dir(follow_symlinks=False):
                    stack.append(r)
    return seen


def ls_walk(root):
    """ls -lR: each directory's entries stat'ed right after its listing."""
    seen, stats = {}, {}
    stack = ['']
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel)) as it:
            ents = list(it)
        for e in ents:
            r = os.path.join(rel, e.name)
            seen[r] = (e.inode(), dtype_of(e))
            stats[r] = os.lstat(os.path.join(root, r))
            if stat.S_ISDIR(stats[r].st_mode):
                stack.append(r)
    return seen, stats


def expected(lowers, rel):
    for l in reversed(lowers):
        try:
            return os.lstat(os.path.join(l, rel))
        except FileNotFoundError:
            continue
    return None


def check(problems, what, lowers, seen, stats):
    bad = []
    for rel, (ino, typ) in sorted(seen.items()):
        st = stats[rel]
        want = expected(lowers, rel)
        if want is None:
            bad.append('%s: listed, but in no lower layer' % rel)
            continue
        if st.st_ino != ino:
            bad.append('%s: listed with inode %d, stat says %d' % (rel, ino, st.st_ino))
        if typ is not None and stat.S_IFMT(st.st_mode) != typ:
            bad.append('%s: listed as type %o, stat says %o' % (rel, typ, stat.S_IFMT(st.st_mode)))
        # a merged directory's size and link count are its own
        for f in ('st_mode', 'st_uid', 'st_gid') + \
                (() if stat.S_ISDIR(st.st_mode) else ('st_size', 'st_mtime_ns', 'st_nlink')):
            if getattr(st, f) != getattr(want, f):
                bad.append('%s: %s %r, the lower file has %r'
                           % (rel, f, getattr(st, f), getattr(want, f)))
    if bad:
        problems.append('%s: %d wrong, e.g. %s' % (what, len(bad), bad[:4]))


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-leanlist-', dir='/var/tmp')
    lowers = build(base)
    for d in ('u', 'w', 'm'):
        os.mkdir(os.path.join(base, d))
    mnt = os.path.join(base, 'm')
    problems = []
    # non-directories: per directory its files, link, fifo and hard link,
    # and l2's only2 in every third
    nfiles = NDIRS * (NFILES + 3) + len(range(0, NDIRS, 3))
    counts = {}

    def with_mount(fn):
        with mounted(FuseMount(fs, lowers, os.path.join(base, 'u'), os.path.join(base, 'w'),
                               mnt), problems) as m:
            fn(m)

    def names_then_stat(m):
        seen = names_walk(mnt)
        lk = Requests(mnt, LOOKUP)
        if lk.ok:
            lk.start()
        stats = {rel: os.lstat(os.path.join(mnt, rel)) for rel in seen}
        if lk.ok:
            counts['names'] = lk.stop()
        check(problems, 'names-only walk, then stat', lowers, seen, stats)

    def ls_like(m):
        lk = Requests(mnt, LOOKUP)
        if lk.ok:
            lk.start()
        seen, stats = ls_walk(mnt)
        if lk.ok:
            counts['ls'] = lk.stop()
        check(problems, 'ls -l-like walk', lowers, seen, stats)
        # a directory with an upper part, and the entry made through the mount
        d = os.path.join(mnt, 'd05')
        with open(os.path.join(d, 'new'), 'w') as fh:
            fh.write('new')
        os.unlink(os.path.join(d, 'f07'))
        seen2 = names_walk(mnt)
        if 'd05/new' not in seen2 or 'd05/f07' in seen2:
            problems.append('after a change the listing of d05 is wrong: %s'
                            % sorted(k for k in seen2 if k.startswith('d05/')))
        st = os.lstat(os.path.join(d, 'new'))
        if st.st_size != 3 or seen2.get('d05/new', (None,))[0] != st.st_ino:
            problems.append('d05/new: size %d inode %d, listed with %r'
                            % (st.st_size, st.st_ino, seen2.get('d05/new')))

    try:
        with_mount(names_then_stat)
        with_mount(ls_like)
        if counts:
            print('LOOKUPs: %d after a names-only walk, %d in an ls -l-like walk (%d files)'
                  % (counts['names'], counts['ls'], nfiles))
            # lean: the files were listed without attributes, so each stat
            # looked its file up
            if counts['names'] < nfiles // 2:
                problems.append('a names-only walk got attributes for most files '
                                '(%d LOOKUPs for %d files afterwards): no lean listings'
                                % (counts['names'], nfiles))
            # full: after the first directories the listings carried them
            if counts['ls'] > nfiles // 4:
                problems.append('an ls -l-like walk needed %d LOOKUPs for %d files: '
                                'listings stayed without attributes' % (counts['ls'], nfiles))
        else:
            print('tracefs not available: request counts not checked')
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
