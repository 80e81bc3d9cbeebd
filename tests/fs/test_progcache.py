#!/usr/bin/env python3
"""Programs keep the layer's page cache (counted in pages, as root).

With an upper layer, strata-fs serves reads of lower files itself and the
kernel caches the data in the merged file's pages; it then drops the layer
file's own copy, so that data is not cached twice. A program or shared
library (an ELF file) is the exception: every container of an image maps
the same ones at its start, each container in a mount of its own, and with
the layer's copy dropped each start would read them from the disk again.

The test reads an ELF file and a data file of the same size through the
mount (the ELF file also mapped, as a loader maps it), unmounts, and counts
the layer files' pages in the page cache (fincore): the ELF file must be
resident whole, the data file (dropped) must not. Both read back exactly.

usage: test_progcache.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import mmap
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import (SKIP, an_elf_file, drop_caches, is_mounted, prepare_fs, rd, reap_all,  # noqa: E402
                     resident_bytes, umount)
from layers import pattern  # noqa: E402
from mounts import FuseMount  # noqa: E402


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    if os.geteuid() != 0:
        print('SKIP: counting the layer\'s cached pages needs a cold cache: drop_caches needs root')
        return SKIP
    if resident_bytes('/proc/self/exe') is None:
        print('SKIP: fincore (util-linux) is missing')
        return SKIP
    elf = an_elf_file()
    if not elf:
        print('SKIP: no ELF program of 256 KiB or more on this host to copy into a layer')
        return SKIP
    problems = []
    base = tempfile.mkdtemp(prefix='strata-pc-', dir='/var/tmp')
    try:
        for d in ('l', 'u', 'w', 'm'):
            os.mkdir(os.path.join(base, d))
        prog = os.path.join(base, 'l', 'prog')
        shutil.copyfile(elf, prog)
        os.chmod(prog, 0o755)
        with open(prog, 'rb') as f:
            prog_data = f.read()
        data = pattern(len(prog_data), 5)
        with open(os.path.join(base, 'l', 'data'), 'wb') as f:
            f.write(data)
        drop_caches()
        m = FuseMount(fs, [os.path.join(base, 'l')], os.path.join(base, 'u'), os.path.join(base, 'w'),
                      os.path.join(base, 'm'))
        m.mount()
        try:
            got_prog = rd(os.path.join(m.mnt, 'prog'))
            with open(os.path.join(m.mnt, 'prog'), 'rb') as f:
                mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                mapped = mm[:]
                mm.close()
            got_data = rd(os.path.join(m.mnt, 'data'))
        finally:
            problem = m.umount()
            if problem:
                problems.append(problem)
        if got_prog != prog_data or mapped != prog_data:
            problems.append('the ELF file reads different data through the mount%s'
                            % ('' if got_prog != prog_data else ' (mmap)'))
        if got_data != data:
            problems.append('the data file reads different data through the mount')
        res_prog = resident_bytes(prog)
        res_data = resident_bytes(os.path.join(base, 'l', 'data'))
        print('after unmount, of %d bytes each: ELF file %s resident in the layer, data file %s'
              % (len(data), res_prog, res_data))
        if res_prog is None or res_prog < len(prog_data) // 4096 * 4096:
            problems.append('the layer\'s copy of the ELF file was dropped: %s of %d bytes resident'
                            % (res_prog, len(prog_data)))
        if res_data is None or res_data > len(data) // 4:
            problems.append('the layer\'s copy of the data file was kept (%s of %d bytes resident): '
                            'the count cannot tell the two apart' % (res_data, len(data)))
    finally:
        if is_mounted(os.path.join(base, 'm')):
            umount(os.path.join(base, 'm'))
        reap_all()
        shutil.rmtree(base, ignore_errors=True)
    for p in problems:
        print('FAIL: ' + p)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
