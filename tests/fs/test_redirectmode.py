#!/usr/bin/env python3
"""redirect_dir= modes against kernel overlayfs given the same option, on
layers with directories renamed (redirected) in a lower layer and in the
upper, and malformed redirects: what a lookup, a listing and a directory
rename answer.

  on        redirects followed and written (the default)
  follow    followed, never written: moving a directory with lower layers
            is EXDEV (mv then copies)
  off       as follow (kernel overlayfs with redirect_always_follow, its
            default)
  nofollow  neither: a lookup that would follow one is EPERM

usage: test_redirectmode.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, on_tmpfs, prepare_fs  # noqa: E402
from layers import D, F, W, LayerBuilder  # noqa: E402
from mounts import FuseMount, KernelMount, mounted  # noqa: E402

RED = 'trusted.overlay.redirect'
LAYERS = [
    [F('a/f', b'f'), F('plain/p', b'p'), F('rel/r', b'r')],
    [D('b', xattrs={RED: b'/a'}), F('b/g', b'g'), W('a'),
     D('c', xattrs={RED: b'rel'}), W('rel'),
     # malformed (a relative one with a '/', an empty component): the
     # lookup fails, the listing still shows the names
     D('bad1', xattrs={RED: b'x/y'}), D('bad2', xattrs={RED: b'/a//f'})],
]
UPPER = [D('u', xattrs={RED: b'/plain'}), W('plain')]
MODES = ('on', 'follow', 'off', 'nofollow')


def outcome(fn):
    try:
        return fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, e.errno)


def probe(mnt):
    p = lambda *a: os.path.join(mnt, *a)  # noqa: E731
    out = {}
    for d in ('b', 'c', 'u', 'plain', 'bad1', 'bad2'):
        out['list ' + d] = outcome(lambda: sorted(os.listdir(p(d))))
    out['root'] = outcome(lambda: sorted(os.listdir(mnt)))
    out['move lower dir'] = outcome(lambda: os.rename(p('b'), p('b2')))
    out['move new dir'] = outcome(lambda: (os.mkdir(p('n')), os.rename(p('n'), p('n2'))))
    out['after'] = outcome(lambda: sorted(os.listdir(mnt)))
    return out


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP

    def body(base, problems):
        for mode in MODES:
            got = {}
            for kind in ('kernel', 'fuse'):
                d = os.path.join(base, mode, kind)
                lowers = []
                for i, entries in enumerate(LAYERS):
                    lowers.append(os.path.join(d, 'l%d' % i))
                    LayerBuilder('kernel').build(lowers[-1], entries)
                LayerBuilder('kernel').build(os.path.join(d, 'u'), UPPER)
                os.makedirs(os.path.join(d, 'w'))
                os.makedirs(os.path.join(d, 'm'))
                args = (lowers, os.path.join(d, 'u'), os.path.join(d, 'w'), os.path.join(d, 'm'))
                opt = 'redirect_dir=' + mode
                m = KernelMount(*args, extra=opt) if kind == 'kernel' else FuseMount(fs, *args,
                                                                                     extra=opt)
                with mounted(m, problems):
                    got[kind] = probe(m.mnt)
            for k in got['kernel']:
                if got['kernel'][k] != got['fuse'][k]:
                    problems.append('redirect_dir=%s: %s: kernel %s, fuse %s'
                                    % (mode, k, got['kernel'][k], got['fuse'][k]))
            print('redirect_dir=%s: %s' % (mode, got['fuse']), flush=True)

    return on_tmpfs('strata-redirectmode-', body)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
