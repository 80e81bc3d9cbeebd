#!/usr/bin/env python3
"""sharecache=on: mounts of one lower layer share one copy of its data.

Counted, not timed. Three writable mounts (each its own upper, as three
containers of one image) read the same 8 MiB lower file. The pages cached
are counted per file with cachestat(2) (Linux 6.5+): the lower file's, and
each mount's file's own (a FUSE file in cached mode holds its own copy; one
passed through holds none). With sharecache=on the three mounts together
must cache the data about once (in the lower file) and the daemons get no
READ request; with sharecache=off, the control, each mount holds a copy.

Then the semantics docs/semantics.md gives for sharecache=on, against the
same mount: while a descriptor reads a lower file through it, opening that
file for writing and truncate() fail with ETXTBSY (after a wait for the
descriptor to go), and nothing is copied; chmod, rename and more readers
work and read the same data; once it is closed, a write copies up at once
(no ETXTBSY although the kernel tells the daemon of the close after
close() returned), and every new descriptor reads the new data; the lower
file is never changed. With sharecache=off a descriptor opened before a
copy-up sees the copy (overlayfs's semantics), as fs_diff_copyup checks.

usage: test_sharecache.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import errno
import hashlib
import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import (SKIP, is_mounted, passthrough_missing, prepare_fs, rd, reap_all,  # noqa: E402
                     umount)
from layers import pattern  # noqa: E402
from mounts import CountingMount  # noqa: E402
from testlib import cached_bytes  # noqa: E402,F401

SCALE = max(1, int(os.environ.get('STRATA_TEST_SCALE', '1')))
SIZE = 8 << 20
MOUNTS = 3


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sha(b):
    return hashlib.sha256(b).hexdigest()[:16]


class Mount(CountingMount):
    """strata-fs over base/l with upper base/uN on base/mN, logging requests."""

    def __init__(self, fs, base, i, opts):
        p = lambda d: os.path.join(base, d)  # noqa: E731
        for d in ('u%d' % i, 'w%d' % i, 'm%d' % i):
            subprocess.run(['rm', '-rf', p(d)], check=True)
            os.mkdir(p(d))
        super().__init__(fs, [p('l')], p('u%d' % i), p('w%d' % i), p('m%d' % i),
                         extra=','.join(x for x in ('debug', opts) if x))
        self.mount()


def expect_errno(problems, what, err, fn):
    try:
        fn()
    except OSError as e:
        if e.errno != err:
            problems.append('%s: %s, expected %s' % (what, os.strerror(e.errno), errno.errorcode[err]))
        return
    problems.append('%s: succeeded, expected %s' % (what, errno.errorcode[err]))


def read_shared(fs, base, opts, problems, map_first):
    """MOUNTS mounts with opts read the lower file 'shared' whole (the first
    mapping it, the loader's way, if map_first), its pages evicted first:
    (the mounts' own cached bytes, the lower file's, READ requests the
    daemons got); the byte counts are None without cachestat(2)."""
    lower = os.path.join(base, 'l', 'shared')
    data = rd(lower)
    mounts = []
    try:
        for i in range(MOUNTS):
            mounts.append(Mount(fs, base, i, opts))
        evict(lower)
        for m in mounts:
            evict(m.p_('shared'))
        for i, m in enumerate(mounts):
            if i == 0 and map_first:
                with open(m.p_('shared'), 'rb') as f:
                    mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                    got = mm[:]
                    mm.close()
            else:
                got = rd(m.p_('shared'))
            if got != data:
                problems.append('%s: mount %d reads different data' % (opts, i))
        own = [cached_bytes(m.p_('shared')) for m in mounts]
        lo = cached_bytes(lower)
    finally:
        counts = [m.close() for m in mounts]
    reads = sum(c.get('READ', 0) for c in counts)
    if lo is None or None in own:
        print('%s: cachestat(2) missing; pages not counted' % opts)
        return None, None, reads
    print('%s: %d mounts read %d MiB: lower file %.1f MiB cached, the mounts\' own %s MiB; '
          'in all %.2fx the data; READ requests %d'
          % (opts, MOUNTS, SIZE >> 20, lo / 2**20, ' + '.join('%.1f' % (o / 2**20) for o in own),
             (lo + sum(own)) / SIZE, reads))
    return own, lo, reads


def density(fs, base, problems):
    """The three mounts' copies of one lower file, with sharecache on and off."""
    total, reads = {}, {}
    for opts in ('sharecache=on', 'sharecache=off'):
        own, lo, reads[opts] = read_shared(fs, base, opts, problems, map_first=True)
        if lo is not None:
            total[opts] = lo + sum(own)
    if reads['sharecache=on']:
        problems.append('sharecache=on: the daemons got %d READ requests for a lower file'
                        % reads['sharecache=on'])
    if not reads['sharecache=off']:
        problems.append('sharecache=off: no READ reached the daemons; the count cannot tell the '
                        'modes apart')
    if 'sharecache=on' in total:
        if total['sharecache=on'] > 1.25 * SIZE:
            problems.append('sharecache=on: %d mounts cache %.2fx the data they read, expected '
                            'one copy' % (MOUNTS, total['sharecache=on'] / SIZE))
        if total['sharecache=on'] < 0.9 * SIZE:
            problems.append('sharecache=on: only %.2fx the data is cached after reading it all; '
                            'the count is wrong' % (total['sharecache=on'] / SIZE))
    if 'sharecache=off' in total and total['sharecache=off'] < (MOUNTS - 0.5) * SIZE:
        problems.append('sharecache=off (the control): %d mounts cache only %.2fx the data; the '
                        'count cannot tell the modes apart' % (MOUNTS, total['sharecache=off'] / SIZE))


def write_file(path, data, flags=os.O_WRONLY | os.O_TRUNC):
    fd = os.open(path, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def semantics(fs, base, problems):
    lower_v = os.path.join(base, 'l', 'victim')
    v = rd(lower_v)
    m = Mount(fs, base, 0, 'sharecache=on')
    try:
        ro = os.open(m.p_('victim'), os.O_RDONLY)
        try:
            if os.pread(ro, 64, 0) != v[:64]:
                problems.append('a lower file read through sharecache reads wrong data')
            t0 = time.monotonic()
            expect_errno(problems, 'open for write while a reader reads the lower file', errno.ETXTBSY,
                         lambda: os.close(os.open(m.p_('victim'), os.O_WRONLY)))
            waited = time.monotonic() - t0
            expect_errno(problems, 'O_RDONLY|O_TRUNC while a reader reads the lower file',
                         errno.ETXTBSY, lambda: os.close(os.open(m.p_('victim'), os.O_RDONLY | os.O_TRUNC)))
            expect_errno(problems, 'truncate() while a reader reads the lower file', errno.ETXTBSY,
                         lambda: os.truncate(m.p_('victim'), 10))
            if os.path.exists(os.path.join(base, 'u0', 'victim')):
                problems.append('a refused write left a copy in the upper layer')
            # metadata changes, more readers and a rename all work
            os.chmod(m.p_('victim'), 0o600)
            if os.stat(m.p_('victim')).st_mode & 0o777 != 0o600:
                problems.append('chmod while a reader reads the lower file did not take')
            if rd(m.p_('victim')) != v:
                problems.append('a second reader after chmod reads different data')
            os.rename(m.p_('victim'), m.p_('victim2'))
            if rd(m.p_('victim2')) != v or os.pread(ro, len(v) + 1, 0) != v:
                problems.append('after a rename the readers read different data')
            if os.fstat(ro).st_size != len(v):
                problems.append('fstat of the reader shows size %d, expected %d'
                                % (os.fstat(ro).st_size, len(v)))
            # a writer from another thread gets its turn when the reader goes
            result = {}

            def writer():
                try:
                    write_file(m.p_('victim2'), b'after the reader')
                    result['ok'] = True
                except OSError as e:
                    result['err'] = e
            th = threading.Thread(target=writer)
            th.start()
            time.sleep(0.2)
        finally:
            os.close(ro)
        th.join(60 * SCALE)
        if 'err' in result:
            problems.append('a writer waiting for the reader to close failed: %s' % result['err'])
        elif rd(m.p_('victim2')) != b'after the reader':
            problems.append('the waiting writer\'s data is not what a new reader reads')
        print('open for write refused with ETXTBSY after %.2f s; a writer waiting meanwhile %s'
              % (waited, 'succeeded' if result.get('ok') else 'failed'))
        # close a reader, then write at once: many times, to catch the
        # kernel's late RELEASE
        for i in range(20):
            name = 'f%d' % i
            a = os.open(m.p_(name), os.O_RDONLY)
            os.pread(a, 16, 0)
            os.close(a)
            try:
                write_file(m.p_(name), b'new %d' % i)
            except OSError as e:
                problems.append('open for write right after the reader closed: %s' % e)
                break
            b = os.open(m.p_(name), os.O_RDONLY)
            got = os.pread(b, 100, 0)
            os.close(b)
            if got != b'new %d' % i:
                problems.append('%s: a new reader after the write reads %r' % (name, got[:20]))
                break
        # a metacopy (chmod of a lower file copies no data) reads its
        # lower file directly too: nothing in the mount's own pages
        os.chmod(m.p_('meta'), 0o640)
        got = rd(m.p_('meta'))
        own = cached_bytes(m.p_('meta'))
        if got != pattern(1 << 20, 3):
            problems.append('a metacopy read through sharecache reads different data')
        elif own:
            problems.append('a metacopy read through sharecache left %d bytes in the mount\'s own '
                            'pages; expected its lower file read directly' % own)
        write_file(m.p_('meta'), b'meta written', os.O_WRONLY | os.O_TRUNC)
        if rd(m.p_('meta')) != b'meta written' or os.stat(m.p_('meta')).st_mode & 0o777 != 0o640:
            problems.append('a metacopy written after its readers went reads wrong data or mode')
        # a mapping is a reader too
        with open(m.p_('mapped'), 'rb') as f:
            mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        try:
            expect_errno(problems, 'open for write while a mapping reads the lower file', errno.ETXTBSY,
                         lambda: os.close(os.open(m.p_('mapped'), os.O_RDWR)))
        finally:
            mm.close()
        write_file(m.p_('mapped'), b'MAPPED', os.O_WRONLY)
        if rd(m.p_('mapped'))[:6] != b'MAPPED':
            problems.append('a write after the mapping went is lost')
    finally:
        m.close()
    for name, want in (('victim', v), ('f0', pattern(4096, 0)), ('mapped', pattern(65536, 9)),
                       ('meta', pattern(1 << 20, 3))):
        if rd(os.path.join(base, 'l', name)) != want:
            problems.append('the lower file %s changed' % name)

    # the default: overlayfs's semantics, a reader sees the copy-up
    m = Mount(fs, base, 1, '')
    try:
        ro = os.open(m.p_('victim'), os.O_RDONLY)
        try:
            write_file(m.p_('victim'), b'NEW')
            if os.pread(ro, 10, 0) != b'NEW':
                problems.append('sharecache=off: a reader opened before the copy-up misses it')
        finally:
            os.close(ro)
    finally:
        m.close()


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    why = passthrough_missing()
    if why:
        print('SKIP: ' + why)
        return SKIP
    files = [('shared', pattern(SIZE, 5)), ('victim', pattern(100000, 7)), ('mapped', pattern(65536, 9)),
             ('meta', pattern(1 << 20, 3))] + [('f%d' % i, pattern(4096, i)) for i in range(20)]

    def body(base, problems):
        density(fs, base, problems)
        semantics(fs, base, problems)
    return on_layer('strata-share-', files, body,
                    'sharecache: mounts of one layer share one copy, and writes wait for or refuse '
                    'readers of the lower file as documented')


def on_layer(prefix, files, body, success):
    """body(base, problems) over a lower layer base/l holding files (name,
    data); the mounts base/mN are gone after it. The test's exit status."""
    problems = []
    base = tempfile.mkdtemp(prefix=prefix, dir='/var/tmp')
    os.chmod(base, 0o755)
    os.mkdir(os.path.join(base, 'l'))
    for name, data in files:
        with open(os.path.join(base, 'l', name), 'wb') as f:
            f.write(data)
    try:
        body(base, problems)
    finally:
        for i in range(MOUNTS):
            mnt = os.path.join(base, 'm%d' % i)
            if is_mounted(mnt):
                umount(mnt)
        subprocess.run(['rm', '-rf', base])
        reap_all()
    for p in problems:
        print('FAIL: ' + p)
    if problems:
        return 1
    print(success)
    return 0

if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
