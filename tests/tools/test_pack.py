#!/usr/bin/env python3
"""strata pack / strata unpack (docs/packed-format.md): a tree packed and
unpacked comes back identical; chunks are deduplicated across layers; damage
to a chunk or to a metadata file is caught; the GC removes only unreferenced
chunks; a pack killed with SIGKILL leaves a store the next pack and unpack use.

usage: test_pack.py STRATA [--user] [TEST...]"""
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import Fail, check, main

CHUNK = 32768   # what a layer written with the default options uses


def rnd(n, seed):
    import random
    return random.Random(seed).randbytes(n)


def write(path, data, mode=0o644):
    with open(path, 'wb') as f:
        f.write(data)
    os.chmod(path, mode)


def sparse(path, size, pieces):
    """A file of size bytes with data only at (offset, bytes) pieces."""
    with open(path, 'wb') as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)


def make_tree(env, root, seed=0):
    """Every kind of thing the format records, in the source encodings a
    layer may use. As root: other owners, devices, trusted.* xattrs."""
    priv = not env.user
    os.makedirs(root)
    os.chmod(root, 0o755)
    j = lambda *p: os.path.join(root, *p)
    for d, mode in (('etc', 0o755), ('etc/deep/er/than/you/think', 0o755), ('private', 0o700),
                    ('tmp', 0o1777), ('opq_marker', 0o755), ('opq_xattr', 0o755), ('ro', 0o555)):
        os.makedirs(j(d), exist_ok=True)
    write(j('etc', 'hello'), b'hello\n')
    write(j('empty'), b'')
    write(j('exact_chunk'), rnd(CHUNK, seed + 1))
    write(j('exact_chunk+1'), rnd(CHUNK + 1, seed + 2))
    write(j('exact_64k+1'), rnd(65537, seed + 6))
    write(j('five_mb'), rnd(5 * 1000 * 1000, seed + 3), 0o600)
    write(j('zeros'), bytes(3 * CHUNK + 17))
    write(j('text'), b'the quick brown fox jumps over the lazy dog\n' * 5000, 0o444)
    write(j('setuid'), b'#!/bin/sh\n', 0o4755)
    write(j('private', 'secret'), b'x' * 600, 0o600)
    write(j('etc/deep/er/than/you/think', 'leaf'), b'leaf')
    write(j('x' * 255), b'long name')
    write(j('etc/deep/er/than/you/think', 'y' * 200), b'long name, deep')
    # Sparse: a hole at the start, in the middle (inside one chunk), at the
    # end, and a file that is only a hole.
    sparse(j('sparse_mid'), 3 * CHUNK, [(0, b'a' * 4096), (8192, b'b' * 4096), (2 * CHUNK + 4096, b'c' * 100)])
    sparse(j('sparse_start'), 1 << 20, [(600 * 1024, rnd(5000, seed + 4))])
    sparse(j('sparse_tail'), 10 << 20, [(0, b'head' * 1000)])
    sparse(j('sparse_all'), 8 << 20, [])
    # Hard links, across directories.
    write(j('etc', 'hl1'), b'linked' * 2000)
    os.link(j('etc', 'hl1'), j('hl2'))
    os.link(j('etc', 'hl1'), j('private', 'hl3'))
    write(j('small_hl'), b'tiny')
    os.link(j('small_hl'), j('etc', 'small_hl2'))
    # Symlinks: relative, absolute, dangling, to a directory.
    os.symlink('hello', j('etc', 'rel'))
    os.symlink('/etc/passwd', j('abs'))
    os.symlink('../nowhere/at/all', j('etc', 'dangling'))
    os.symlink('etc/deep', j('dirlink'))
    # Special files.
    os.mkfifo(j('fifo'), 0o640)
    s = socket.socket(socket.AF_UNIX)
    s.bind(j('sock'))
    s.close()
    if priv:
        os.mknod(j('null'), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(j('loop'), 0o660 | stat.S_IFBLK, os.makedev(7, 200))
    # Whiteouts in both encodings, and opaque directories both ways.
    os.mknod(j('etc', 'gone_chr'), 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    write(j('etc', '.wh.gone_oci'), b'', 0o600)
    write(j('etc', '.wh.hello'), b'')          # beside a real "hello"
    write(j('.wh.opq_marker'), b'')            # beside a real directory: opaque
    write(j('opq_marker', '.wh..wh..opq'), b'')
    write(j('opq_marker', 'kept'), b'k')
    write(j('.wh..wh.plnk'), b'')              # aufs metadata name
    os.makedirs(j('etc', '.wh.dir_wh'))        # odd, but a whiteout to overlayfs
    write(j('etc', '.wh.dir_wh', 'inside'), b'in a whiteout')
    os.symlink('x', j('etc', '.wh.sym_wh'))
    os.mknod(j('etc', '.wh.chr_wh'), 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(j('opq_xattr'), 'user.overlay.opaque', b'y')
    if priv:
        os.setxattr(j('opq_xattr'), 'trusted.overlay.opaque', b'y')
    # xattrs.
    os.setxattr(j('etc', 'hello'), 'user.mime', b'text/plain')
    os.setxattr(j('etc', 'hello'), 'user.empty', b'')
    os.setxattr(j('five_mb'), 'user.big', rnd(3000, seed + 5))
    os.setxattr(j('etc'), 'user.dir', b'on a dir')
    os.setxattr(root, 'user.root', b'on the root')
    if priv:
        os.setxattr(j('etc', 'hello'), 'trusted.t', b'trusted value')
        os.setxattr(j('etc', 'gone_chr'), 'trusted.overlay.x', b'1')
    # Owners (as root) and times (ns) on everything, directories last.
    all_paths = []
    for dp, dns, fns in os.walk(root):
        all_paths += [os.path.join(dp, n) for n in fns + dns]
    if priv:
        for i, p in enumerate(sorted(all_paths)):
            os.lchown(p, [0, 1000, 1234, 65534][i % 4], [0, 1000, 5678, 65534][(i // 2) % 4])
    else:
        env.give()
    for i, p in enumerate(sorted(all_paths, key=lambda p: -p.count('/')) + [root]):
        t = 1_600_000_000_000_000_000 + i * 1_000_003_007
        os.utime(p, ns=(t + 5, t), follow_symlinks=False)


def holes(path):
    """The data ranges of a file, by SEEK_DATA/SEEK_HOLE."""
    out = []
    with open(path, 'rb') as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, h))
            pos = h
    return out


def walk(root):
    """Everything unpack must give back, keyed by path; hard links as groups."""
    out, inodes = {}, {}
    for dp, dns, fns in os.walk(root):
        names = [(dp, '')] if dp == root else []
        names += [(dp, n) for n in fns + dns]
        for d, n in names:
            p = os.path.join(d, n) if n else d
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            xs = {}
            for x in os.listxattr(p, follow_symlinks=False):
                xs[x] = os.getxattr(p, x, follow_symlinks=False)
            rec = dict(type=stat.S_IFMT(st.st_mode), mode=stat.S_IMODE(st.st_mode), uid=st.st_uid,
                       gid=st.st_gid, mtime=st.st_mtime_ns, xattrs=xs)
            if stat.S_ISREG(st.st_mode):
                with open(p, 'rb') as f:
                    rec['data'] = f.read()
                rec['holes'] = holes(p)
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                rec['target'] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec['rdev'] = (os.major(st.st_rdev), os.minor(st.st_rdev))
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            out[rel] = rec
    # Links to files outside the tree are not the tree's business.
    groups = sorted(sorted(g) for g in inodes.values() if len(g) > 1)
    return out, groups


def compare(a, b):
    ta, ga = walk(a)
    tb, gb = walk(b)
    check(sorted(ta) == sorted(tb), 'same names: only in source %s, only in copy %s'
          % (sorted(set(ta) - set(tb))[:10], sorted(set(tb) - set(ta))[:10]))
    for k in sorted(ta):
        for field in ta[k]:
            if ta[k][field] != tb[k].get(field):
                va, vb = ta[k][field], tb[k].get(field)
                if isinstance(va, bytes):
                    va, vb = '%d bytes' % len(va), '%d bytes' % len(vb or b'')
                raise Fail('%s differs in %s: source %r, unpacked %r' % (k, field, va, vb))
    check(ga == gb, 'same hard-link groups: %r vs %r' % (ga, gb))
    return ta


def loose(chunks):
    """Loose objects (one file per chunk, as strata stored them before packs)."""
    n = 0
    for dp, dns, fns in os.walk(chunks):
        if os.path.basename(dp) not in ('tmp', 'packs'):
            n += sum(1 for f in fns if f.endswith('.lz4') or f.endswith('.raw'))
    return n


def packs(chunks):
    """The pack files of a store and their index files, by name."""
    d = os.path.join(chunks, 'packs')
    names = os.listdir(d) if os.path.isdir(d) else []
    return sorted(n for n in names if n.endswith('.pack')), sorted(n for n in names if n.endswith('.idx'))


def objects(chunks):
    """The chunks a store holds: loose objects, and the records of the pack
    indexes (an index header: magic, version, record size, pack, count)."""
    n = loose(chunks)
    for i in packs(chunks)[1]:
        with open(os.path.join(chunks, 'packs', i), 'rb') as f:
            head = f.read(40)
        check(head[:8] == b'STRATAPI', 'a pack index: %s' % i)
        n += int.from_bytes(head[24:32], 'little')
    return n


def pack_bytes(chunks):
    """Bytes written to the store's packs so far (their sizes)."""
    d = os.path.join(chunks, 'packs')
    return sum(os.path.getsize(os.path.join(d, n)) for n in packs(chunks)[0])


def stats(r):
    m = re.search(r'(\d+) new objects', r.out)
    check(m, 'pack --stats prints the new objects: %r' % r.out)
    return int(m.group(1))


def packdir(env):
    d = env.path('packed')
    os.makedirs(d, exist_ok=True)
    if env.user:
        os.chown(d, env.pw.pw_uid, env.pw.pw_gid)
    return d


# ---------------------------------------------------------------- tests

def test_roundtrip(env):
    make_tree(env, env.path('src'))
    pd = packdir(env)
    env.run('pack', env.path('src'), os.path.join(pd, 'L1'))
    env.run('unpack', os.path.join(pd, 'L1'), env.path('out'))
    t = compare(env.path('src'), env.path('out'))
    # The tree holds what the test meant it to.
    check(t['etc/gone_chr']['type'] == stat.S_IFCHR and t['etc/.wh.gone_oci']['type'] == stat.S_IFREG,
          'both whiteout encodings present')
    check(t['sparse_mid']['holes'] and t['sparse_all']['holes'] == [], 'the source has holes')
    # Every chunk size the format allows gives the tree back, in one chunk
    # store with the default's layer (64k: what layers were written with
    # before 32k became the default).
    for size in ('4k', '16384', '64KiB'):
        env.run('pack', env.path('src'), os.path.join(pd, 'L' + size), '--chunk-size', size)
        env.run('unpack', os.path.join(pd, 'L' + size), env.path('out' + size))
        compare(env.path('src'), env.path('out' + size))
    for bad in ('3000', '128k', '2k', 'big', '-1'):
        r = env.run('pack', env.path('src'), os.path.join(pd, 'Lbad'), '--chunk-size', bad, ok=False)
        check(r.returncode == 2 and '--chunk-size' in r.err and 'power of two' in r.err
              and not os.path.exists(os.path.join(pd, 'Lbad')),
              'pack --chunk-size %s refused, nothing written: %d %r' % (bad, r.returncode, r.err))
    # Unpacking twice into one place is refused, not merged.
    r = env.run('unpack', os.path.join(pd, 'L1'), env.path('out'), ok=False)
    check('File exists' in r.err, 'unpack over a tree says why: %r' % r.err)
    # A layer written inside its own source would pack its own chunks.
    r = env.run('pack', env.path('src'), env.path('src', 'L'), ok=False)
    check('inside it' in r.err and not os.path.exists(env.path('src', 'L'))
          and not os.path.exists(env.path('src', 'chunks')), 'pack into the source refused: %r' % r.err)


def test_dedup(env):
    make_tree(env, env.path('a'), seed=0)
    pd = packdir(env)
    chunks = os.path.join(pd, 'chunks')
    n1 = stats(env.run('pack', '--stats', env.path('a'), os.path.join(pd, 'A')))
    c1 = objects(chunks)
    check(n1 == c1 and c1 > 80, 'first pack stores its chunks (%d, %d)' % (n1, c1))
    p1 = packs(chunks)
    check(loose(chunks) == 0 and len(p1[0]) == 1 and p1[1] == [p1[0][0][:-5] + '.idx'],
          'one pack file and its index, no loose object: %r, %d loose' % (p1, loose(chunks)))
    n2 = stats(env.run('pack', '--stats', env.path('a'), os.path.join(pd, 'A2')))
    check(n2 == 0 and objects(chunks) == c1 and packs(chunks) == p1,
          'the same tree again adds no chunks and no pack (%d new)' % n2)
    # Another tree sharing only the 5 MB file: that file is stored once.
    os.makedirs(env.path('b'))
    os.link(env.path('a', 'five_mb'), env.path('b', 'same_5mb'))
    write(env.path('b', 'new'), rnd(3 * CHUNK, 99))
    if env.user:
        env.give()
    n3 = stats(env.run('pack', '--stats', env.path('b'), os.path.join(pd, 'B'), '--chunks', chunks))
    check(n3 == 3 and objects(chunks) == c1 + 3 and len(packs(chunks)[0]) == 2,
          'a shared file is stored once, the new chunks in a pack of their own (%d new)' % n3)
    env.run('unpack', os.path.join(pd, 'B'), env.path('outb'))
    with open(env.path('outb', 'same_5mb'), 'rb') as f, open(env.path('a', 'five_mb'), 'rb') as g:
        check(f.read() == g.read(), 'the shared file reads back')


def test_damaged_chunk(env):
    os.makedirs(env.path('src'))
    write(env.path('src', 'data'), rnd(300000, 5))
    env.give()
    pd = packdir(env)
    env.run('pack', env.path('src'), os.path.join(pd, 'L'))
    # a byte of the first chunk of the pack (random bytes: kept raw)
    obj = os.path.join(pd, 'chunks', 'packs', packs(os.path.join(pd, 'chunks'))[0][0])
    os.chmod(obj, 0o644)
    with open(obj, 'r+b') as f:
        f.seek(500)
        b = f.read(1)
        f.seek(500)
        f.write(bytes([b[0] ^ 0x10]))
    r = env.run('unpack', os.path.join(pd, 'L'), env.path('out'), ok=False)
    check('Input/output error' in r.err and os.path.basename(obj) + '@' in r.err and '/data' in r.err
          and os.path.join(pd, 'L') in r.err,
          'EIO naming the chunk, the file and the layer: %r' % r.err)
    # A new pack of the same data does not reuse the damaged object.
    env.run('pack', env.path('src'), os.path.join(pd, 'L2'))
    env.run('unpack', os.path.join(pd, 'L2'), env.path('out2'))
    with open(env.path('out2', 'data'), 'rb') as f:
        check(f.read() == rnd(300000, 5), 'a later pack stores good bytes beside the damaged ones')


def test_damaged_meta(env):
    os.makedirs(env.path('src'))
    for i in range(50):
        write(env.path('src', 'f%d' % i), b'%d' % i * 100)
    env.give()
    pd = packdir(env)
    L = os.path.join(pd, 'L')
    env.run('pack', env.path('src'), L)
    good = open(L, 'rb').read()
    cases = [('truncated', good[:len(good) - 7]), ('truncated', good[:200]),
             ('checksum mismatch', good[:2000] + bytes([good[2000] ^ 1]) + good[2001:]),
             ('superblock checksum', good[:60] + bytes([good[60] ^ 1]) + good[61:]),
             ('magic', b'not a layer at all' * 40), ('trailing bytes', good + b'x')]
    for what, data in cases:
        with open(L, 'wb') as f:
            f.write(data)
        r = env.run('unpack', L, env.path('out'), ok=False)
        check(what in r.err and L in r.err, '%s: refused with a clear error: %r' % (what, r.err))
        check(not os.path.exists(env.path('out')) or not os.listdir(env.path('out')), 'nothing unpacked')


def test_gc(env):
    make_tree(env, env.path('a'), seed=0)
    os.makedirs(env.path('b'))
    os.link(env.path('a', 'five_mb'), env.path('b', 'shared'))
    write(env.path('b', 'only_b'), rnd(4 * CHUNK, 77))
    env.give()
    pd = packdir(env)
    chunks = os.path.join(pd, 'chunks')
    A, B = os.path.join(pd, 'A'), os.path.join(pd, 'B')
    env.run('pack', env.path('a'), A)
    before = objects(chunks)
    env.run('pack', env.path('b'), B)
    check(objects(chunks) == before + 4, 'B added its own 4 chunks')
    r = env.run('pack', '--gc', '--chunks', chunks, A)
    check('4 removed' in r.out, 'the GC removed what only B used: %r' % r.out)
    check(objects(chunks) == before, 'A\'s chunks all kept')
    env.run('unpack', A, env.path('outa'))
    compare(env.path('a'), env.path('outa'))
    r = env.run('unpack', B, env.path('outb'), ok=False)
    check('missing from the chunk store' in r.err, 'B now lacks chunks, and says so: %r' % r.err)
    # A live layer that cannot be read stops the GC before it removes anything.
    env.run('pack', '--gc', '--chunks', chunks, A, env.path('nonexistent'), ok=False)
    check(objects(chunks) == before, 'nothing removed when a live layer is unreadable')
    env.run('pack', '--gc', '--chunks', chunks)
    check(objects(chunks) == 0, 'no live layer: every chunk goes')


def test_concurrent_writers(env):
    # Two packs of one tree into one store at once race on every object's
    # name (O_EXCL; the loser compares with the winner's object, maybe while
    # it is half written, and then takes the next suffix): both layers read
    # back whole, and stay whole after a GC that keeps them.
    os.makedirs(env.path('src'))
    for i in range(40):
        write(env.path('src', 'f%02d' % i), rnd(300000, 2000 + i) + bytes(100000))
    env.give()
    pd = packdir(env)
    chunks = os.path.join(pd, 'chunks')
    layers = [os.path.join(pd, n) for n in ('A', 'B')]
    procs = [subprocess.Popen(env.wrap([env.strata, 'pack', env.path('src'), L]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env.env())
             for L in layers]
    for p in procs:
        err = p.communicate()[1]
        check(p.returncode == 0, 'a concurrent pack succeeds: %r' % err)
    env.run('pack', '--gc', '--chunks', chunks, *layers)
    for i, L in enumerate(layers):
        out = env.path('out%d' % i)
        env.run('unpack', L, out)
        compare(env.path('src'), out)


def test_kill9(env):
    os.makedirs(env.path('src'))
    for i in range(60):
        write(env.path('src', 'f%02d' % i), rnd(600000, 1000 + i))
    env.give()
    pd = packdir(env)
    chunks = os.path.join(pd, 'chunks')
    L = os.path.join(pd, 'L')
    argv = env.wrap([env.strata, 'pack', '--threads', '1', env.path('src'), L])
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env.env())
    deadline = time.monotonic() + 120
    while p.poll() is None and pack_bytes(chunks) < 10 << 20 and time.monotonic() < deadline:
        time.sleep(0.005)
    killed = p.poll() is None
    if killed:
        # setpriv exec's strata: the pid is strata's.
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    if killed:
        check(not os.path.exists(L), 'no layer file after a pack killed midway')
        check(pack_bytes(chunks) > 0, 'the killed pack had written chunks')
        pk, ix = packs(chunks)
        check(len(pk) == 1 and ix == [], 'the killed pack left its pack without an index: %r %r' % (pk, ix))
    else:
        print('note: pack finished before it could be killed; checking the store anyway')
    # The next pack and unpack work, and the result is complete.
    env.run('pack', env.path('src'), L)
    env.run('unpack', L, env.path('out'))
    compare(env.path('src'), env.path('out'))
    left = [f for f in os.listdir(pd) if '.tmp.' in f]
    r = env.run('pack', '--gc', '--chunks', chunks, L)
    check(os.listdir(os.path.join(chunks, 'tmp')) == [], 'the GC cleared temporary files: %r' % r.out)
    pk, ix = packs(chunks)
    check([n[:-5] for n in pk] == [n[:-4] for n in ix], 'the GC removed the pack without an index: %r %r' % (pk, ix))
    env.run('unpack', L, env.path('out2'))
    if left:
        print('note: killed pack left %s (not a layer: the rename never happened)' % left)


if __name__ == '__main__':
    sys.exit(main([test_roundtrip, test_dedup, test_damaged_chunk, test_damaged_meta, test_gc, test_concurrent_writers,
                      test_kill9]))
