#!/usr/bin/env python3
"""A layer whose root is opaque hides every layer below it (an OCI layer
that replaces the whole tree; kernel overlayfs ignores opacity on layer
roots, so there is no kernel oracle here).

strata-fs finds out which layer roots are opaque only when a request first
needs the root's whole stack, not at mount. Checked here, for each opaque
encoding, read-only and with an upper, and whatever the first request is
(a lookup of a hidden name, of a visible one, a listing, or many lookups
racing each other as the first requests): hidden names stay hidden, names
above the opaque root and in it show, listings agree with lookups, and the
root's inode number does not change. A stack without an opaque root shows
everything (so the hiding seen is the opaque root's doing).

usage: test_rootopaque.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, conclude, in_threads, prepare_fs  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402

ENCODINGS = ('oci', 'trusted.overlay.opaque', 'user.overlay.opaque', 'none')


def make_layers(base, enc):
    """bottom (hidden under an opaque middle), middle (opaque root), top."""
    root = os.path.join(base, 'layers-' + enc)
    lay = {n: os.path.join(root, n) for n in ('bottom', 'middle', 'top')}
    for n, d in lay.items():
        os.makedirs(os.path.join(d, 'dir'))
        with open(os.path.join(d, 'in_' + n), 'w') as f:
            f.write(n)
        with open(os.path.join(d, 'dir', 'sub_' + n), 'w') as f:
            f.write(n)
    with open(os.path.join(lay['bottom'], 'shared'), 'w') as f:
        f.write('bottom')
    if enc == 'oci':
        open(os.path.join(lay['middle'], '.wh..wh..opq'), 'w').close()
    elif enc != 'none':
        os.setxattr(lay['middle'], enc, b'y')
    return [lay['bottom'], lay['middle'], lay['top']]


def lookups(mnt):
    """What a lookup of each name finds (True: exists)."""
    names = ('in_top', 'in_middle', 'in_bottom', 'shared', 'dir/sub_top', 'dir/sub_middle',
             'dir/sub_bottom')
    return {n: os.path.exists(os.path.join(mnt, n)) for n in names}


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    if os.geteuid() != 0:
        print('SKIP: trusted.* opaque markers on the layers need root')
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-rootopaque-', dir='/var/tmp')
    problems = []
    firsts = {
        'lookup of a hidden name': lambda mnt: os.path.exists(os.path.join(mnt, 'in_bottom')),
        'lookup of a visible name': lambda mnt: os.path.exists(os.path.join(mnt, 'in_top')),
        'listing': lambda mnt: os.listdir(mnt),
        'racing lookups': race,
    }
    try:
        n = 0
        for enc in ENCODINGS:
            lowers = make_layers(base, enc)
            hidden = enc != 'none'
            want_names = sorted(['dir', 'in_top', 'in_middle'] +
                                ([] if hidden else ['in_bottom', 'shared']))
            want_sub = sorted(['sub_top', 'sub_middle'] + ([] if hidden else ['sub_bottom']))
            want_look = {'in_top': True, 'in_middle': True, 'in_bottom': not hidden,
                         'shared': not hidden, 'dir/sub_top': True, 'dir/sub_middle': True,
                         'dir/sub_bottom': not hidden}
            for upper in (False, True):
                for first_name, first in firsts.items():
                    n += 1
                    sub = os.path.join(base, 'm%d' % n)
                    for d in ('u', 'w', 'm'):
                        os.makedirs(os.path.join(sub, d))
                    mnt = os.path.join(sub, 'm')
                    what = '%s, %s, first request a %s' % (
                        enc, 'with an upper' if upper else 'read-only', first_name)
                    m = FuseMount(fs, lowers, os.path.join(sub, 'u') if upper else None,
                                  os.path.join(sub, 'w'), mnt)
                    with mounted(m, problems):
                        ino0 = os.stat(mnt).st_ino
                        first(mnt)
                        got_look = lookups(mnt)
                        got_names = sorted(os.listdir(mnt))
                        got_sub = sorted(os.listdir(os.path.join(mnt, 'dir')))
                        if got_look != want_look:
                            problems.append('%s: lookups found %s, expected %s'
                                            % (what, got_look, want_look))
                        if got_names != want_names:
                            problems.append('%s: root lists %s, expected %s'
                                            % (what, got_names, want_names))
                        if got_sub != want_sub:
                            problems.append('%s: dir lists %s, expected %s'
                                            % (what, got_sub, want_sub))
                        if os.stat(mnt).st_ino != ino0:
                            problems.append('%s: the root inode number changed from %d to %d'
                                            % (what, ino0, os.stat(mnt).st_ino))
                        if upper:
                            # a hidden name is free: creating it needs no whiteout
                            with open(os.path.join(mnt, 'in_bottom'), 'w') as f:
                                f.write('new')
                            with open(os.path.join(mnt, 'in_bottom')) as f:
                                if f.read() != 'new':
                                    problems.append('%s: in_bottom created through the mount '
                                                    'does not read back' % what)
                    print('%s: ok so far (%d problems)' % (what, len(problems)), flush=True)
    finally:
        code = conclude(base, problems)
    return code


def race(mnt):
    """Many lookups at once as the mount's first requests."""
    names = ('in_bottom', 'in_top', 'shared', 'in_middle') * 4

    def one(i):
        try:
            os.stat(os.path.join(mnt, names[i]))
        except FileNotFoundError:
            pass
    in_threads(len(names), one)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
