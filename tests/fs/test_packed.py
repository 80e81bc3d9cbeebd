#!/usr/bin/env python3
"""strata-fs over packed lower layers (docs/packed-format.md), beside the
differential suite's packed encoding:

- a stack mixing packed and plain lowers (packed bottom and third, plain
  second) shows the same tree as the same stack of plain directories: types,
  modes, owners, times, sizes, contents, xattrs, hard-link groups;
- the same changes on both (append, a write into a sparse file's hole,
  chmod and setxattr of packed files, a rename of a packed directory,
  removals, a hard link of a packed file) give the same trees; the copies
  keep their holes; the packed layers and their chunk store are unchanged;
- after a remount the view and every inode number are unchanged;
- mmap of a packed file reads its bytes (shared and private maps);
- a flipped byte in a chunk gives the reader EIO (and a log line naming the
  layer), never wrong data, while the other files read on;
- a truncated or corrupt metadata file is refused at mount with a message
  naming it;
- owners kept in the override xattr (xattr_permissions=2) read the same.

usage: test_packed.py [--fs PATH] [--strata PATH]   ($STRATA_FS, $STRATA_BIN)
"""

import errno
import hashlib
import mmap
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, Report, conclude, prepare_fs  # noqa: E402
from layers import F, D, L, H, W, O, LayerBuilder, pattern  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402
from observe import tree_snapshot, compare_trees, walk  # noqa: E402

SCALE = max(1, int(os.environ.get('STRATA_TEST_SCALE', '1')))

LAYERS = [
    [  # bottom: packed
        F('a', b'bottom a\n', xattrs={'user.a': b'1'}), F('keep', b'keep'),
        F('big', pattern(1 << 20, 3)), F('hl1', b'hardlinked', uid=12, gid=34), H('hl2', 'hl1'),
        F('sparse', size=300000, chunks=[(0, pattern(5000, 1)), (200000, pattern(9000, 2))]),
        D('dir', mode=0o750, uid=7, gid=8, xattrs={'user.d': b'dv'}), F('dir/x', b'x'),
        F('dir/y', b'y'), F('dir/sub/deep', b'deep'), L('sym', 'a'), L('dangling', 'none'),
        F('gone', b'gone'), F('opq/old', b'old'), D('emptydir'), F('exec', b'#!/bin/sh\n', mode=0o755),
        F('setuid', b'', mode=0o4755),
    ],
    [  # middle: plain
        F('a', b'middle a\n'), W('gone'), O('opq'), F('opq/new', b'new'), W('dir/y'),
        F('dir/m', b'm'), F('plainonly', b'plain'),
    ],
    [  # third: packed
        F('dir/z', b'z', xattrs={'user.z': b'zz'}), D('newdir'), F('newdir/f', pattern(70000, 9)),
        F('keep', b'keep top'),
    ],
]
PACKED = (0, 2)


def strata_bin(fs, argv):
    if os.environ.get('STRATA_BIN'):
        return os.environ['STRATA_BIN']
    if '--strata' in argv:
        return argv[argv.index('--strata') + 1]
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(fs))), 'tools', 'strata')


def packer_or_skip(fs, argv):
    """The strata binary that packs layers, or None (a SKIP line printed)."""
    strata = strata_bin(fs, argv)
    if not os.path.exists(strata):
        print('SKIP: no strata binary to pack layers with (%s; set STRATA_BIN)' % strata)
        return None
    return strata


def pack(strata, src, dest, loose=False):
    """strata pack; loose: as strata did before pack files (one file per
    chunk, a layer without the packs feature)."""
    env = dict(os.environ)
    if loose:
        env['STRATA_TEST_LOOSE_OBJECTS'] = '1'
    r = subprocess.run([strata, 'pack', src, dest], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError('strata pack %s %s: %s' % (src, dest, r.stderr.strip()))


def fingerprint(paths):
    """sha256 of every file under paths (files or trees), with mode and size."""
    out = {}
    for p in paths:
        if os.path.isfile(p):
            items = {'': os.lstat(p)}
        else:
            items = walk(p)
        for rel, st in items.items():
            q = os.path.join(p, rel) if rel else p
            v = (st.st_mode, st.st_size, st.st_mtime_ns)
            if os.path.isfile(q) and not os.path.islink(q):
                with open(q, 'rb') as f:
                    v += (hashlib.sha256(f.read()).hexdigest(),)
            out[q] = v
    return out


def changes(mnt):
    """The same changes on either mount; what they return."""
    p = lambda r: os.path.join(mnt, r)  # noqa: E731
    out = []
    with open(p('a'), 'ab') as f:
        f.write(b'appended\n')
    with open(p('big'), 'r+b') as f:          # a packed file, not the top layer's
        f.seek(300000)
        f.write(b'X' * 10)
    fd = os.open(p('sparse'), os.O_WRONLY)
    os.pwrite(fd, b'in the hole', 100000)
    os.close(fd)
    os.chmod(p('newdir/f'), 0o600)           # metadata only: a metacopy
    os.setxattr(p('hl1'), 'user.new', b'n')
    os.rename(p('dir'), p('dir2'))           # a packed directory moves
    os.unlink(p('keep'))
    os.rmdir(p('emptydir'))
    os.link(p('dir2/x'), p('xlink'))
    out.append(sorted(os.listdir(mnt)))
    out.append(sorted(os.listdir(p('dir2'))))
    with open(p('newdir/f'), 'rb') as f:
        out.append(hashlib.sha256(f.read()).hexdigest())
    return out


def inos(mnt):
    return {rel: st.st_ino for rel, st in walk(mnt).items()}


def mkmount(fs, base, name, lowers, upper=True):
    d = os.path.join(base, name)
    for s in ('u', 'w', 'm'):
        os.makedirs(os.path.join(d, s), exist_ok=True)
    return FuseMount(fs, lowers, os.path.join(d, 'u') if upper else None, os.path.join(d, 'w'),
                     os.path.join(d, 'm'))


def check_mixed(fs, strata, base, problems):
    report = Report()
    plain, mixed = [], []
    b = LayerBuilder('kernel')
    for i, entries in enumerate(LAYERS):
        d = os.path.join(base, 'plain', 'l%d' % i)
        b.build(d, entries)
        plain.append(d)
        if i in PACKED:
            src = os.path.join(base, 'src', 'l%d' % i)
            b.build(src, entries)
            dest = os.path.join(base, 'packed', 'l%d.pk' % i)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            pack(strata, src, dest)
            mixed.append(dest)
        else:
            d2 = os.path.join(base, 'packed', 'l%d' % i)
            b.build(d2, entries)
            mixed.append(d2)
    before = fingerprint([os.path.join(base, 'packed')])
    ref = mkmount(fs, base, 'ref', plain)
    pk = mkmount(fs, base, 'pk', mixed)
    with mounted(ref, problems), mounted(pk, problems):
        compare_trees(report, 'mixed stack, initial tree', tree_snapshot(ref.mnt), tree_snapshot(pk.mnt))
        # mmap, shared and private
        want = pattern(1 << 20, 3)
        with open(os.path.join(pk.mnt, 'big'), 'rb') as f:
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            if m[:] != want:
                problems.append('mmap of a packed file: bytes differ')
            m.close()
            m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            m[0:4] = b'ABCD'
            if m[4:1 << 20] != want[4:]:
                problems.append('private mmap of a packed file: bytes differ')
            m.close()
        if open(os.path.join(pk.mnt, 'big'), 'rb').read() != want:
            problems.append('a private map changed the packed file')
        try:
            cr, cp = changes(ref.mnt), changes(pk.mnt)
            if cr != cp:
                problems.append('changes: plain stack %r, mixed stack %r' % (cr, cp))
        except OSError as e:
            problems.append('changes on the mixed stack: %s' % e)
        compare_trees(report, 'mixed stack, after changes', tree_snapshot(ref.mnt), tree_snapshot(pk.mnt))
        up = os.path.join(pk.upper, 'sparse')
        st = os.stat(up)
        if st.st_blocks * 512 > 64 * 1024:
            problems.append('the copy-up of a sparse packed file is not sparse: %d blocks for %d bytes'
                            % (st.st_blocks, st.st_size))
        view, ino0 = tree_snapshot(pk.mnt)
    if before != fingerprint([os.path.join(base, 'packed')]):
        problems.append('a packed layer or its chunk store changed')
    with mounted(pk, problems):
        view2, ino2 = tree_snapshot(pk.mnt)
        compare_trees(report, 'mixed stack, before/after remount', (view, ino0), (view2, ino2))
        moved = sorted(r for r in ino0 if ino2.get(r) != ino0[r])
        if moved:
            problems.append('inode numbers changed across a remount: %s' % moved[:20])
    problems.extend(report.problems)
    return mixed


def flip(path, off):
    with open(path, 'r+b') as f:
        f.seek(off)
        c = f.read(1)
        f.seek(off)
        f.write(bytes([c[0] ^ 0xff]))


def objects(store):
    """The files holding chunks: packs (and loose objects of old stores)."""
    return {os.path.join(d, n) for d, _, files in os.walk(store) for n in files
            if n != 'lock' and not n.endswith('.idx') and os.path.basename(d) != 'tmp'}


def check_damage(fs, strata, base, problems):
    """A damaged chunk: EIO for its file, the others read on."""
    ddir = os.path.join(base, 'damaged')
    os.makedirs(ddir)
    alone = os.path.join(base, 'fine-src')
    LayerBuilder('kernel').build(alone, [F('fine', pattern(100000, 6))])
    pack(strata, alone, os.path.join(ddir, 'fine.pk'))
    fine_objs = objects(os.path.join(ddir, 'chunks'))
    src = os.path.join(base, 'dsrc')
    LayerBuilder('kernel').build(src, [F('victim', pattern(300000, 5)), F('fine', pattern(100000, 6))])
    dest = os.path.join(ddir, 'l.pk')
    pack(strata, src, dest)
    victims = objects(os.path.join(ddir, 'chunks')) - fine_objs
    if len(victims) != 1 or not all(v.endswith('.pack') for v in victims):
        problems.append('damage: the second layer added %r, not one pack file' % sorted(victims))
    for p in victims:
        os.chmod(p, 0o644)
        flip(p, os.path.getsize(p) // 2)
    if not victims:
        problems.append('damage: no object of the victim file to flip')
        return
    m = mkmount(fs, base, 'dmg', [dest], upper=False)
    with mounted(m, problems):
        try:
            with open(os.path.join(m.mnt, 'victim'), 'rb') as f:
                f.read()
            problems.append('a damaged chunk read without error')
        except OSError as e:
            if e.errno != errno.EIO:
                problems.append('a damaged chunk gave %s, not EIO' % errno.errorcode.get(e.errno))
        try:
            if open(os.path.join(m.mnt, 'fine'), 'rb').read() != pattern(100000, 6):
                problems.append('an undamaged file of the layer reads wrong')
        except OSError as e:
            problems.append('an undamaged file of the layer: %s' % e)
        log = m.stderr()
    if dest not in log:
        problems.append('no log line names the layer of the damaged chunk: %r' % log[-500:])


def check_loose(fs, strata, base, problems):
    """A layer of loose objects (a store written before pack files) mounts
    and reads, beside a packed layer sharing its data in one stack, and a
    damaged object still gives EIO."""
    ldir = os.path.join(base, 'loose')
    os.makedirs(ldir)
    src = os.path.join(base, 'loose-src')
    LayerBuilder('kernel').build(src, [F('old', pattern(200000, 8)), F('both', pattern(70000, 9))])
    src2 = os.path.join(base, 'loose-src2')
    LayerBuilder('kernel').build(src2, [F('new', pattern(150000, 10)), F('both', pattern(70000, 9))])
    old, new = os.path.join(ldir, 'old.pk'), os.path.join(ldir, 'new.pk')
    pack(strata, src, old, loose=True)
    objs = objects(os.path.join(ldir, 'chunks'))
    if not objs or any(o.endswith('.pack') for o in objs):
        problems.append('loose: the old-style layer wrote %r' % sorted(objs))
        return
    pack(strata, src2, new)
    m = mkmount(fs, base, 'loose', [new, old], upper=False)
    with mounted(m, problems):
        for name, want in (('old', pattern(200000, 8)), ('both', pattern(70000, 9)), ('new', pattern(150000, 10))):
            try:
                if open(os.path.join(m.mnt, name), 'rb').read() != want:
                    problems.append('loose: %s reads wrong' % name)
            except OSError as e:
                problems.append('loose: %s: %s' % (name, e))
    victim = max(objs, key=os.path.getsize)
    os.chmod(victim, 0o644)
    flip(victim, os.path.getsize(victim) // 2)
    m = mkmount(fs, base, 'loose-dmg', [old], upper=False)
    with mounted(m, problems):
        try:
            open(os.path.join(m.mnt, 'old'), 'rb').read()
            open(os.path.join(m.mnt, 'both'), 'rb').read()
            problems.append('loose: a damaged object read without error')
        except OSError as e:
            if e.errno != errno.EIO:
                problems.append('loose: a damaged object gave %s, not EIO' % errno.errorcode.get(e.errno))


def check_refused(fs, strata, base, problems):
    src = os.path.join(base, 'rsrc')
    LayerBuilder('kernel').build(src, [F('f', b'f'), D('d')])
    good = os.path.join(base, 'refuse', 'good.pk')
    os.makedirs(os.path.dirname(good))
    pack(strata, src, good)
    data = open(good, 'rb').read()
    cases = {'truncated': data[:len(data) // 2], 'corrupt': None, 'garbage': b'STRATAPK' + b'\0' * 100}
    corrupt = bytearray(data)
    corrupt[400] ^= 0xff   # inside the first section: its checksum no longer matches
    cases['corrupt'] = bytes(corrupt)
    for name, content in cases.items():
        bad = os.path.join(base, 'refuse', name + '.pk')
        with open(bad, 'wb') as f:
            f.write(content)
        m = mkmount(fs, base, 'refuse-' + name, [bad], upper=False)
        try:
            m.mount()
            problems.append('%s metadata file: mounted' % name)
            m.umount()
            continue
        except RuntimeError:
            pass
        err = m.stderr()
        if bad not in err:
            problems.append('%s metadata file: the refusal does not name it: %r' % (name, err[-300:]))


def check_override(fs, strata, base, problems):
    """Owners kept in user.containers.override_stat (a rootless layer's) read
    from a packed layer as from a plain one (xattr_permissions=2)."""
    entries = [F('ov', b'ov', xattrs={'user.containers.override_stat': b'1:2:0600'}), D('d'),
               F('d/plain', b'p')]
    plain = os.path.join(base, 'ov-plain')
    LayerBuilder('kernel').build(plain, entries)
    dest = os.path.join(base, 'ov-packed', 'l.pk')
    os.makedirs(os.path.dirname(dest))
    pack(strata, plain, dest)
    seen = []
    for name, lower in (('plain', plain), ('packed', dest)):
        m = mkmount(fs, base, 'ov-' + name + '-m', [lower])
        m.extra = 'xattr_permissions=2'
        with mounted(m, problems):
            seen.append({r: (st.st_uid, st.st_gid, oct(st.st_mode)) for r, st in walk(m.mnt).items()})
    if seen[0] != seen[1]:
        problems.append('override_stat: plain layer shows %r, packed %r' % (seen[0], seen[1]))
    elif seen[0].get('ov') != (1, 2, oct(0o100600)):
        problems.append('override_stat not applied: %r' % (seen[0].get('ov'),))


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    strata = packer_or_skip(fs, argv)
    if strata is None:
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-packed-', dir='/var/tmp')
    problems = []
    try:
        for what, fn in (('mixed stack', check_mixed), ('damaged chunk', check_damage), ('loose objects', check_loose),
                         ('refused metadata', check_refused), ('override owners', check_override)):
            n = len(problems)
            fn(fs, strata, base, problems)
            print('%s: %s' % (what, 'ok' if len(problems) == n else '%d problems' % (len(problems) - n)),
                  flush=True)
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
