#!/usr/bin/env python3
"""progcache: programs of a packed layer decompressed once, beside it, for
every mount (strata-fs -o progcache=on; strata turns it on for its store).

A packed layer holds an ELF program and a data file of the same size. The
checks:

- the first mount that reads the program (read and mmap) leaves one copy,
  LAYER.progs/<inode>, holding exactly its bytes; the data file gets none,
  and a mount without the option makes no directory at all;
- a later mount reads the program from the copy, not from the chunk
  store: with every pack file of the store damaged, the program still reads
  whole and right (read, mmap; also in a read-only view, which the kernel
  may pass through to the copy) while the data file gives EIO;
- a damaged copy is never served: with the store repaired and one byte of
  the copy flipped, the program reads right, the log names the copy, and
  the copy is made again;
- a copy-up of the program (a write through the mount) leaves the copy as
  it was, and the mount reads what was written;
- a LAYER.progs that is a symlink is not followed: nothing is written
  where it points, and the program reads right.

usage: test_packedprogs.py [--fs PATH] [--strata PATH]   ($STRATA_FS, $STRATA_BIN)
"""

import errno
import mmap
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, an_elf_file, conclude, prepare_fs  # noqa: E402
from layers import pattern  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402
from test_packed import flip, objects, pack, packer_or_skip  # noqa: E402


def mount_of(fs, base, name, layer, upper=True, progcache=True):
    d = os.path.join(base, name)
    for s in ('u', 'w', 'm'):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    return FuseMount(fs, [layer], os.path.join(d, 'u') if upper else None, os.path.join(d, 'w'),
                     os.path.join(d, 'm'), extra='progcache=on' if progcache else '')


def read_both(path):
    """(read, mmap) of path, or the OSError's errno name."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
            mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            mapped = mm[:]
            mm.close()
        return data, mapped
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)), None


def check_reads(m, prog, data, problems, what, data_ok=True):
    got, mapped = read_both(os.path.join(m.mnt, 'prog'))
    if got != prog or mapped != prog:
        problems.append('%s: the program reads %s' % (
            what, got if isinstance(got, str) else 'different bytes%s' % (' (mmap)' if got == prog else '')))
    got, _ = read_both(os.path.join(m.mnt, 'data'))
    if data_ok and got != data:
        problems.append('%s: the data file reads %s' % (what, got if isinstance(got, str) else 'different bytes'))
    if not data_ok and got != 'EIO':
        problems.append('%s: the data file of a damaged store reads %s, not EIO'
                        % (what, 'its bytes' if got == data else got if isinstance(got, str) else 'wrong bytes'))


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    strata = packer_or_skip(fs, argv)
    if strata is None:
        return SKIP
    elf = an_elf_file()
    if not elf:
        print('SKIP: no ELF program of 256 KiB or more on this host to put in a layer')
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-pkprogs-', dir='/var/tmp')
    problems = []
    try:
        with open(elf, 'rb') as f:
            prog = f.read()
        data = pattern(len(prog), 7)
        src = os.path.join(base, 'src')
        os.mkdir(src)
        with open(os.path.join(src, 'prog'), 'wb') as f:
            f.write(prog)
        os.chmod(os.path.join(src, 'prog'), 0o755)
        with open(os.path.join(src, 'data'), 'wb') as f:
            f.write(data)
        ldir = os.path.join(base, 'layer')
        os.mkdir(ldir)
        layer = os.path.join(ldir, 'l.pk')
        pack(strata, src, layer)
        progs = layer + '.progs'

        # without the option: no copies
        m = mount_of(fs, base, 'off', layer, progcache=False)
        with mounted(m, problems):
            check_reads(m, prog, data, problems, 'progcache off')
        if os.path.lexists(progs):
            problems.append('a mount without progcache made %s' % progs)

        # the first mount makes the copy of the program only
        m = mount_of(fs, base, 'first', layer)
        with mounted(m, problems):
            check_reads(m, prog, data, problems, 'first mount')
            prog_ino = os.stat(os.path.join(m.mnt, 'prog')).st_ino
        copies = sorted(os.listdir(progs)) if os.path.isdir(progs) else None
        print('after the first mount: %s holds %s' % (progs, copies))
        if not copies or len(copies) != 1:
            problems.append('the first mount left copies %r, not one of the program' % copies)
            return conclude(base, problems)
        copy = os.path.join(progs, copies[0])
        with open(copy, 'rb') as f:
            if f.read() != prog:
                problems.append('the copy %s does not hold the program\'s bytes' % copy)

        # later mounts read the copy: the chunk store may be gone bad
        packs = sorted(p for p in objects(os.path.join(ldir, 'chunks')) if p.endswith('.pack'))
        if not packs:
            problems.append('no pack file in the layer\'s chunk store to damage')
            return conclude(base, problems)
        saved = {}
        for p in packs:
            with open(p, 'rb') as f:
                saved[p] = f.read()
            os.chmod(p, 0o644)
            # (every 61st byte: a chunk that compresses well is short)
            bad = bytearray(saved[p])
            for off in range(0, len(bad), 61):
                bad[off] ^= 0xff
            with open(p, 'wb') as f:
                f.write(bad)
        for name, upper in (('second', True), ('second-ro', False)):
            m = mount_of(fs, base, name, layer, upper=upper)
            with mounted(m, problems):
                check_reads(m, prog, data, problems, '%s mount over a damaged store' % name, data_ok=False)
        for p, b in saved.items():
            with open(p, 'wb') as f:
                f.write(b)

        # a damaged copy is made again, never served
        flip(copy, len(prog) // 2)
        m = mount_of(fs, base, 'third', layer)
        with mounted(m, problems):
            check_reads(m, prog, data, problems, 'mount over a damaged copy')
            log = m.stderr()
        if copy not in log:
            problems.append('no log line names the damaged copy: %r' % log[-500:])
        with open(copy, 'rb') as f:
            if f.read() != prog:
                problems.append('the damaged copy was not made again')

        # a copy-up leaves the copy alone
        m = mount_of(fs, base, 'write', layer)
        with mounted(m, problems):
            mp = os.path.join(m.mnt, 'prog')
            got, _ = read_both(mp)
            if got != prog:
                problems.append('copy-up: the program read wrong before the write')
            with open(mp, 'r+b') as rw:
                rw.write(b'X' * 64)
            got, _ = read_both(mp)
            if got != b'X' * 64 + prog[64:]:
                problems.append('copy-up: the written program reads wrong through the mount')
        with open(copy, 'rb') as f:
            if f.read() != prog:
                problems.append('copy-up: the write reached the layer\'s copy')
        if os.stat(os.path.join(base, 'write', 'u', 'prog')).st_size != len(prog):
            problems.append('copy-up: the upper file has the wrong size')

        # a symlinked directory of copies is not followed
        elsewhere = os.path.join(base, 'elsewhere')
        os.mkdir(elsewhere)
        shutil.rmtree(progs)
        os.symlink(elsewhere, progs)
        m = mount_of(fs, base, 'symlink', layer)
        with mounted(m, problems):
            check_reads(m, prog, data, problems, 'mount with a symlinked copies directory')
        if os.listdir(elsewhere):
            problems.append('copies were written through the symlink %s: %r' % (progs, os.listdir(elsewhere)))
        print('program inode %d: copy made, read over a damaged store, remade when damaged' % prog_ino)
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
