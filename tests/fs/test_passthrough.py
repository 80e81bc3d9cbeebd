#!/usr/bin/env python3
"""strata-fs's use of the kernel's FUSE passthrough (Linux 6.9+, as root).

Counted, not timed: the daemon runs with -d, which logs every request it
gets. Data of a file in the upper layer must not pass through the daemon:
  - writing and reading a new file in passthrough mode: no WRITE or READ
    request at all; the same with passthrough=off: WRITE requests (so the
    count can tell the modes apart), and one FLUSH at most for six closes
    (answered "not implemented", the kernel stops sending it);
and the data must be right when passthrough and cached mode meet:
  - a lower file held open read-only (cached mode) while another descriptor
    copies it up and writes; both see the new data, and after both close a
    new open (passthrough) sees it too;
  - mmap writes to an upper file, read back through another descriptor;
  - a set-user-ID file written by a user without CAP_FSETID loses the bit
    in both modes, although the kernel never shows the daemon such a write
    in passthrough mode;
and without an upper layer lower files go passthrough as well: reading and
mmap of a lower file send no READ (with passthrough=off they do), and the
layer's page cache keeps the data after unmount.

usage: test_passthrough.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import mmap
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import (SKIP, drop_caches, is_mounted, passthrough_missing, prepare_fs, rd,  # noqa: E402
                     reap_all, resident_bytes, umount)
from layers import pattern  # noqa: E402
from mounts import CountingMount, FuseMount  # noqa: E402


class Mount(CountingMount):
    """strata-fs over base/l (upper base/u) on base/m, logging every request."""

    def __init__(self, fs, base, opts=''):
        p = lambda d: os.path.join(base, d)  # noqa: E731
        super().__init__(fs, [p('l')], p('u'), p('w'), p('m'),
                         extra=','.join(x for x in ('debug', opts) if x))
        self.mount()


def write_in_4k(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(data), 4096):
            os.pwrite(fd, data[off:off + 4096], off)
    finally:
        os.close(fd)


def fresh(base):
    for d in ('u', 'w'):
        subprocess.run(['rm', '-rf', os.path.join(base, d)], check=True)
        os.mkdir(os.path.join(base, d))


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    why = passthrough_missing()
    if why:
        print('SKIP: ' + why)
        return SKIP
    problems = []
    base = tempfile.mkdtemp(prefix='strata-pt-', dir='/var/tmp')
    os.chmod(base, 0o755)
    for d in ('l', 'm'):
        os.mkdir(os.path.join(base, d))
    lower_data = pattern(1 << 20, 3)
    with open(os.path.join(base, 'l', 'lowerfile'), 'wb') as f:
        f.write(lower_data)
    with open(os.path.join(base, 'l', 'suid'), 'wb') as f:
        f.write(b'#!/bin/sh\n')
    os.chmod(os.path.join(base, 'l', 'suid'), 0o4777)
    data = pattern(1 << 20, 11)
    try:
        # 1. the data path of an upper file bypasses the daemon
        counts = {}
        for opts in ('', 'passthrough=off'):
            fresh(base)
            m = Mount(fs, base, opts)
            try:
                write_in_4k(m.p_('new'), data)
                # a second open reads what the first wrote
                got = rd(m.p_('new'))
                for i in range(4):
                    write_in_4k(m.p_('small%d' % i), data[:4096])
            finally:
                counts[opts] = m.close()
            if got != data:
                problems.append('%s: a file written in 4 KiB pieces reads back different data'
                                % (opts or 'passthrough'))
        pt, cached = counts[''], counts['passthrough=off']
        if pt.get('WRITE', 0) or pt.get('READ', 0):
            problems.append('passthrough: the daemon still got %d WRITE and %d READ requests '
                            'for an upper file' % (pt.get('WRITE', 0), pt.get('READ', 0)))
        if not cached.get('WRITE', 0):
            problems.append('passthrough=off: no WRITE request reached the daemon; the count '
                            'cannot tell the modes apart')
        # FLUSH would only release locks, which the kernel keeps: answered
        # "not implemented" once, the kernel stops sending it (the writeback
        # cache of cached mode sends it at every close otherwise)
        if cached.get('FLUSH', 0) > 1:
            problems.append('passthrough=off: %d FLUSH requests for 6 closes; the kernel should '
                            'have stopped after the first' % cached['FLUSH'])
        print('requests: passthrough WRITE=%d READ=%d; passthrough=off WRITE=%d FLUSH=%d'
              % (pt.get('WRITE', 0), pt.get('READ', 0), cached.get('WRITE', 0),
                 cached.get('FLUSH', 0)))

        # 2. cached and passthrough opens of one file meet
        fresh(base)
        m = Mount(fs, base)
        try:
            ro = os.open(m.p_('lowerfile'), os.O_RDONLY)
            if os.pread(ro, 16, 0) != lower_data[:16]:
                problems.append('lower file reads wrong data')
            rw = os.open(m.p_('lowerfile'), os.O_RDWR)
            os.pwrite(rw, b'X' * 4096, 8192)
            expect = lower_data[:8192] + b'X' * 4096 + lower_data[12288:]
            if os.pread(ro, 4096, 8192) != b'X' * 4096:
                problems.append('a read-only descriptor opened before copy-up misses a write '
                                'made after it')
            os.close(rw)
            os.close(ro)
            if rd(m.p_('lowerfile')) != expect:
                problems.append('a new open after copy-up reads different data')
            # passthrough now; append and read back through another fd
            with open(m.p_('lowerfile'), 'ab') as f:
                f.write(b'tail')
            if rd(m.p_('lowerfile')) != expect + b'tail':
                problems.append('append in passthrough mode lost data')
            if os.stat(m.p_('lowerfile')).st_size != len(expect) + 4:
                problems.append('size after an append in passthrough mode is wrong')
            # 3. mmap writes to an upper file
            write_in_4k(m.p_('mapped'), data)
            with open(m.p_('mapped'), 'r+b') as f:
                mm = mmap.mmap(f.fileno(), 0)
                mm[100:105] = b'mmapd'
                mm.flush()
                mm.close()
            if rd(m.p_('mapped'))[100:105] != b'mmapd':
                problems.append('mmap write not seen by a later read')
            # 4. set-user-ID dropped on a write by a user without CAP_FSETID
            os.chmod(m.p_('suid'), 0o4777)   # copy-up: now in the upper
            r = subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                                'sh', '-c', 'printf x >> "$1"', 'sh', m.p_('suid')],
                               capture_output=True, text=True)
            if r.returncode:
                problems.append('append as nobody failed: %s' % r.stderr.strip())
            mode = os.stat(m.p_('suid')).st_mode & 0o7777
            if mode != 0o777:
                problems.append('after a write by nobody the mode is %o, expected 777' % mode)
        finally:
            m.close()

        # 5. without an upper nothing can change, and lower files go
        # passthrough too: reads and mmap bypass the daemon, and the data
        # stays in the layer's page cache (warm for the next mount, never
        # cached twice); with passthrough=off the daemon serves the reads
        # and drops the layer's copy
        lower = os.path.join(base, 'l', 'lowerfile')
        ro_counts, resident = {}, {}
        for opts in ('', 'passthrough=off'):
            drop_caches()
            m = FuseMount(fs, [os.path.join(base, 'l')], None, None, os.path.join(base, 'm'),
                          extra=','.join(x for x in ('debug', opts) if x))
            m.mount()
            try:
                got = rd(os.path.join(m.mnt, 'lowerfile'))
                with open(os.path.join(m.mnt, 'lowerfile'), 'rb') as f:
                    mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                    mapped = mm[:]
                    mm.close()
            finally:
                ro_counts[opts] = Mount.close(m)
            resident[opts] = resident_bytes(lower)
            if got != lower_data or mapped != lower_data:
                problems.append('read-only mount%s: a lower file reads%s different data'
                                % (opts and ', ' + opts, '' if got != lower_data else ' (mmap)'))
        pt, cached = ro_counts[''], ro_counts['passthrough=off']
        print('read-only mount: READ requests %d with passthrough, %d without; the layer\'s '
              'copy after unmount %s / %s bytes resident' % (pt.get('READ', 0), cached.get('READ', 0),
                                                            resident[''], resident['passthrough=off']))
        if pt.get('READ', 0):
            problems.append('read-only mount: the daemon got %d READ requests for a lower file'
                            % pt['READ'])
        if not cached.get('READ', 0):
            problems.append('read-only mount, passthrough=off: no READ reached the daemon; the '
                            'count cannot tell the modes apart')
        if resident[''] is not None and resident[''] < len(lower_data):
            problems.append('read-only mount: after reading the lower file through the mount only '
                            '%d of its %d bytes are in the page cache' % (resident[''], len(lower_data)))
    finally:
        if is_mounted(os.path.join(base, 'm')):
            umount(os.path.join(base, 'm'))
        subprocess.run(['rm', '-rf', base])
        reap_all()
    for p in problems:
        print('FAIL: ' + p)
    if problems:
        return 1
    print('passthrough: data path bypasses the daemon, and data and modes are right')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
