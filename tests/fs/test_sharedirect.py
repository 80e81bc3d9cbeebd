#!/usr/bin/env python3
"""sharecache=direct: mounts of one lower layer share one copy of its data,
without passthrough and without sharecache=on's ETXTBSY.

Counted, not timed. Three writable mounts (each its own upper, as three
containers of one image) read the same 8 MiB lower file with read(2); the
pages cached are counted per file with cachestat(2): with sharecache=direct
the mounts' own files hold none of it and the lower file holds it once
(the daemons read it, READ requests reach them); with sharecache=off, the
control, each mount holds a copy and the lower file's is dropped. A shared
read-only mapping of a lower file works (FUSE_DIRECT_IO_ALLOW_MMAP).

Then overlayfs's semantics, which sharecache=direct keeps: a descriptor
opened before a copy-up reads what a writer wrote, also while the writer's
pages could sit in the kernel's writeback cache (passthrough=off), and
after a truncate; opening for write is never refused; the lower file is
never changed. Both as root with passthrough and with passthrough=off (the
writeback cache, as a rootless mount has).

usage: test_sharedirect.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import mmap
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, prepare_fs, rd  # noqa: E402
from layers import pattern  # noqa: E402
from test_sharecache import MOUNTS, SIZE, Mount, on_layer, read_shared, write_file  # noqa: E402


def density(fs, base, problems):
    total, own, lo, reads = {}, {}, {}, {}
    for opts in ('sharecache=direct', 'sharecache=off'):
        own[opts], lo[opts], reads[opts] = read_shared(fs, base, opts, problems, map_first=False)
        if lo[opts] is not None:
            total[opts] = lo[opts] + sum(own[opts])
    if not reads['sharecache=direct']:
        problems.append('sharecache=direct: no READ reached the daemons; the data came from elsewhere')
    if 'sharecache=direct' in total:
        if sum(own['sharecache=direct']) > SIZE // 8:
            problems.append('sharecache=direct: the mounts\' own files cache %s bytes; expected none'
                            % own['sharecache=direct'])
        if lo['sharecache=direct'] < 0.9 * SIZE:
            problems.append('sharecache=direct: the lower file caches only %.2fx the data; it is '
                            'the one copy every mount reads' % (lo['sharecache=direct'] / SIZE))
        if total['sharecache=direct'] > 1.25 * SIZE:
            problems.append('sharecache=direct: %d mounts cache %.2fx the data they read, expected '
                            'one copy' % (MOUNTS, total['sharecache=direct'] / SIZE))
    if 'sharecache=off' in total and total['sharecache=off'] < (MOUNTS - 0.5) * SIZE:
        problems.append('sharecache=off (the control): %d mounts cache only %.2fx the data; the '
                        'count cannot tell the modes apart' % (MOUNTS, total['sharecache=off'] / SIZE))


def semantics(fs, base, problems, opts):
    m = Mount(fs, base, 0, opts)
    names = ('victim', 'trunc', 'mapped')
    try:
        v = rd(os.path.join(base, 'l', 'victim'))
        ro = os.open(m.p_('victim'), os.O_RDONLY)
        try:
            if os.pread(ro, 64, 0) != v[:64]:
                problems.append('%s: a lower file reads wrong data' % opts)
            # the writer stays open: its data may still be in its pages
            wfd = os.open(m.p_('victim'), os.O_WRONLY)
            try:
                os.pwrite(wfd, b'NEW', 0)
                got = os.pread(ro, 8, 0)
                if got != b'NEW' + v[3:8]:
                    problems.append('%s: a reader opened before the copy-up reads %r after a write '
                                    'through a descriptor still open' % (opts, got))
            finally:
                os.close(wfd)
            if os.pread(ro, len(v) + 1, 0) != b'NEW' + v[3:]:
                problems.append('%s: after the writer closed, the early reader reads different data' % opts)
        finally:
            os.close(ro)
        # a truncate, by name, while a reader is open
        ro = os.open(m.p_('trunc'), os.O_RDONLY)
        try:
            os.pread(ro, 16, 0)
            os.truncate(m.p_('trunc'), 10)
            got = os.pread(ro, 100, 0)
            if got != pattern(4096, 4)[:10]:
                problems.append('%s: a reader after truncate(10) reads %d bytes' % (opts, len(got)))
        finally:
            os.close(ro)
        # a shared read-only mapping of a lower file, and a write beside it
        with open(m.p_('mapped'), 'rb') as f:
            mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            if mm[:] != pattern(65536, 9):
                problems.append('%s: a shared mapping of a lower file reads different data' % opts)
            write_file(m.p_('mapped'), b'MAPPED', os.O_WRONLY)
        finally:
            mm.close()
        if rd(m.p_('mapped'))[:6] != b'MAPPED':
            problems.append('%s: a write beside a mapping is lost' % opts)
    finally:
        m.close()
    for name, want in zip(names, (pattern(100000, 7), pattern(4096, 4), pattern(65536, 9))):
        if rd(os.path.join(base, 'l', name)) != want:
            problems.append('%s: the lower file %s changed' % (opts, name))


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    files = [('shared', pattern(SIZE, 5)), ('victim', pattern(100000, 7)), ('trunc', pattern(4096, 4)),
             ('mapped', pattern(65536, 9))]

    def body(base, problems):
        density(fs, base, problems)
        for opts in ('sharecache=direct', 'sharecache=direct,passthrough=off'):
            semantics(fs, base, problems, opts)
    return on_layer('strata-sharedirect-', files, body,
                    'sharecache=direct: mounts of one layer share one copy, and a reader sees writes '
                    'as with overlayfs')

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
