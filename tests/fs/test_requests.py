#!/usr/bin/env python3
"""Requests per operation, counted.

Where strata-fs is slower than kernel overlayfs on the churn workloads
bench/ measures, what it costs is FUSE requests the kernel makes of the
daemon, one round trip each (docs/performance.md counts them). This pins
those counts down, so that a change adding a request per file shows here
and not only as a slower bench:

- extracting files (tar x, as root: owner, mode and times restored): one
  CREATE per file and at most 9 requests per file in all (11 with the
  writeback cache, which writes each file back once and may flush its
  times with one more SETATTR, depending on when the kernel writes the
  inode back: seen for 0-20% of the files); security.capability is asked
  at most twice per file;
- a new file written in 256 writes of 4 KiB: security.capability asked
  once, not per write (FUSE_HANDLE_KILLPRIV_V2), and with the writeback
  cache the writes reach the daemon merged;
- reading small lower files (tar c): one OPEN per file, no READ (the
  daemon stores a small lower file's bytes in the kernel's cache when it
  is first opened, and the kernel's cache is what the mount then reads:
  checked byte for byte), at most 3 requests per file; from a directory
  layer (whose own pages are dropped after, as after a READ: counted) and
  from a packed one;
- removing a lower tree (rm -rf): one UNLINK per file, one RMDIR per
  directory, at most 3 requests per entry (4 with the writeback cache: the
  kernel then flushes each unlinked file's ctime with a SETATTR);
- no directory is opened: OPENDIR is declined once, RELEASEDIR never sent.

Each with passthrough (root's default) and without (passthrough=off, the
writeback cache: the rootless daemon's mode). Needs root and tracefs
(counting is global to the machine: ctest gives it the tracefs lock);
skips otherwise.

usage: test_requests.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, conclude, packer, prepare_fs  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402
from fusetrace import Requests  # noqa: E402

# Requests through /dev/fuse: a test running beside this one may turn the
# fuse module's enable_uring on, and a daemon started then serves over
# io_uring, where other rules hold (no prefill).
URING_OFF = 'uring=off'
NDIRS = 10
NFILES = 30
N = NDIRS * NFILES


def make_tree(root, owners):
    for d in range(NDIRS):
        p = os.path.join(root, 't', 'd%d' % d)
        os.makedirs(p)
        for f in range(NFILES):
            fp = os.path.join(p, 'f%d' % f)
            with open(fp, 'w') as fh:
                fh.write(('d%d f%d ' % (d, f)) * (10 + f))   # each file's own bytes
            # root reading a file of another owner has the kernel fetch
            # its ACL once (a GETXATTR): the lower tree is root's, as an
            # image's files mostly are
            if owners:
                os.chown(fp, 1000 + f, 1000 + d)
            os.chmod(fp, 0o640)


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    if os.geteuid() != 0:
        print('SKIP: counting requests needs tracefs, which needs root')
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-requests-', dir='/var/tmp')
    low, src = os.path.join(base, 'low'), os.path.join(base, 'src')
    make_tree(low, False)
    make_tree(src, True)
    archive = os.path.join(base, 'a.tar')
    subprocess.run(['tar', 'cf', archive, '-C', src, 't'], check=True)
    mnt = os.path.join(base, 'm')
    problems = []
    report = []

    def counted(m, what, fn):
        r = Requests(m.mnt)
        if not r.ok:
            return None
        r.start()
        try:
            fn()
        finally:
            c = r.by_opcode()
        report.append('%s: %d requests %s' % (what, sum(c.values()), dict(sorted(c.items()))))
        return c

    def expect(what, cond, c):
        if not cond:
            problems.append('%s: %s' % (what, dict(sorted(c.items()))))

    def fresh(extra):
        for d in ('u', 'w', 'm'):
            subprocess.run(['rm', '-rf', os.path.join(base, d)], check=True)
            os.mkdir(os.path.join(base, d))
        return mounted(FuseMount(fs, [low], os.path.join(base, 'u'), os.path.join(base, 'w'), mnt,
                                 extra=','.join(x for x in (URING_OFF, extra) if x)), problems)

    def tar_c(m, label, dir_lower):
        subprocess.run(['sh', '-c', 'sync; echo 3 >/proc/sys/vm/drop_caches'], check=True)
        c = counted(m, 'tar c (%s)' % label, lambda: subprocess.run(
            'tar cf - -C %s t | cat >/dev/null' % mnt, shell=True, check=True))
        expect('tar c (%s): one OPEN per file' % label, c.get('FUSE_OPEN') == N, c)
        # small lower files are in the kernel's cache once opened
        # (prefill): no READ, and so no GETATTR after one
        expect('tar c (%s): a READ for a small lower file' % label, not c.get('FUSE_READ'), c)
        expect('tar c (%s): more than 3 requests per file' % label,
               sum(c.values()) <= 3 * N + 10 * NDIRS, c)
        expect('tar c (%s): directories opened' % label,
               c.get('FUSE_OPENDIR', 0) <= 1 and not c.get('FUSE_RELEASEDIR'), c)
        lows = [os.path.join(d, fn) for d, _, fns in os.walk(os.path.join(low, 't')) for fn in fns]
        if dir_lower:
            # the lower files' own pages were dropped after the store, as
            # after a READ: the bytes are cached once, in the mount's file
            pages = subprocess.run(['fincore', '--raw', '--noheadings', '--output', 'PAGES'] + lows,
                                   capture_output=True, text=True, check=True).stdout.split()
            if sum(int(x) for x in pages) > 0:
                problems.append('tar c (%s): %d pages of the lower files stay cached beside the mount\'s'
                                % (label, sum(int(x) for x in pages)))
        # and what the kernel was given is each file's bytes
        for p in lows:
            with open(p, 'rb') as a, open(os.path.join(mnt, os.path.relpath(p, low)), 'rb') as b:
                if a.read() != b.read():
                    problems.append('tar c (%s): %s reads other bytes through the mount' % (label, p))

    for extra, label in (('', 'passthrough'), ('passthrough=off', 'writeback cache')):
        wb = bool(extra)
        with fresh(extra) as m:
            os.mkdir(os.path.join(mnt, 'x'))
            c = counted(m, 'tar x (%s)' % label, lambda: subprocess.run(
                ['tar', 'xf', archive, '-C', os.path.join(mnt, 'x')], check=True))
            if c is None:
                conclude(base, [])
                print('SKIP: no fuse tracepoints in tracefs here')
                return SKIP
            total = sum(c.values())
            expect('tar x (%s): one CREATE per file' % label, c.get('FUSE_CREATE') == N, c)
            expect('tar x (%s): security.capability asked more than twice per file' % label,
                   c.get('FUSE_GETXATTR', 0) <= 2 * N, c)
            expect('tar x (%s): more than %d requests per file' % (label, 9 + 2 * wb),
                   total <= (9 + 2 * wb) * N + 10 * NDIRS, c)
            # the archive's owners came through
            st = os.lstat(os.path.join(mnt, 'x', 't', 'd3', 'f7'))
            if (st.st_uid, st.st_gid) != (1007, 1003):
                problems.append('tar x (%s): d3/f7 owned by %d:%d, not 1007:1003'
                                % (label, st.st_uid, st.st_gid))

            def write_4k():
                fd = os.open(os.path.join(mnt, 'new'), os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    for _ in range(256):
                        os.write(fd, b'y' * 4096)
                finally:
                    os.close(fd)
            c = counted(m, '256 writes of 4 KiB (%s)' % label, write_4k)
            expect('256 writes (%s): security.capability asked per write' % label,
                   c.get('FUSE_GETXATTR', 0) <= 1, c)
            expect('256 writes (%s): the writes reached the daemon one by one' % label,
                   c.get('FUSE_WRITE', 0) <= (4 if wb else 0), c)
            if os.path.getsize(os.path.join(mnt, 'new')) != 256 * 4096:
                problems.append('256 writes (%s): the file has %d bytes'
                                % (label, os.path.getsize(os.path.join(mnt, 'new'))))

        with fresh(extra) as m:
            tar_c(m, label, True)

        with fresh(extra) as m:
            c = counted(m, 'rm -rf (%s)' % label, lambda: subprocess.run(
                ['rm', '-rf', os.path.join(mnt, 't')], check=True))
            entries = N + NDIRS + 1
            expect('rm -rf (%s): one UNLINK per file, one RMDIR per directory' % label,
                   c.get('FUSE_UNLINK') == N and c.get('FUSE_RMDIR') == NDIRS + 1, c)
            expect('rm -rf (%s): more than %d requests per entry' % (label, 3 + wb),
                   sum(c.values()) <= (3 + wb) * entries, c)
            if os.path.exists(os.path.join(mnt, 't')):
                problems.append('rm -rf (%s): t is still there' % label)

    # the same over a packed lower layer, its bytes from the chunk cache
    strata = packer()
    if strata:
        pk = os.path.join(base, 'low.pk')
        subprocess.run([strata, 'pack', low, pk], check=True)
        for d in ('u', 'w'):
            subprocess.run(['rm', '-rf', os.path.join(base, d)], check=True)
            os.mkdir(os.path.join(base, d))
        with mounted(FuseMount(fs, [pk], os.path.join(base, 'u'), os.path.join(base, 'w'), mnt, extra=URING_OFF),
                     problems) as m:
            tar_c(m, 'packed lower', False)
    else:
        report.append('packed lower: not counted (no strata binary beside strata-fs; set STRATA_BIN)')

    for line in report:
        print(line)
    return conclude(base, problems)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
