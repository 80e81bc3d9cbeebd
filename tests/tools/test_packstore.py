#!/usr/bin/env python3
"""The store's packed layer format (STRATA_STORE_FORMAT=packed; tools/pkstore.h,
docs/packed-format.md "The store's packed layers"): import keeps a packed
layer and a tar-split record instead of the tree and the blob; export
rebuilds every layer's tar byte for byte, so DiffIDs and the image ID survive
import -> export -> import through oci:, oci-archive: and docker-archive:,
for hard links, PAX xattrs, sparse files (GNU and PAX), long names, device
nodes, whiteouts and opaque dirs; system df, check, migrate and prune; kill -9
during import, migrate and the chunk GC leaves a store that checks clean.

usage: test_packstore.py STRATA [--user] [TEST...]"""
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import Fail, check, entry, make_tar, oci_layout, busybox_layer, sha, main

os.environ['STRATA_STORE_FORMAT'] = 'packed'
SCALE = max(1, int(os.environ.get('STRATA_TEST_SCALE', '1')))


CHUNK = 32768   # the chunk size of the layers a store writes


def rnd(n, seed):
    return random.Random(seed).randbytes(n)


def long_name(i):
    return 'long/' + ('d%02d-' % i + 'x' * 60 + '/') * 2 + 'file-' + 'y' * 80


def gnu_layer():
    """GNU format: long names ('L' and 'K'), hard links, devices, fifos,
    a char 0/0 whiteout, .wh. whiteouts and an opaque dir."""
    es = [entry('long', 'dir')]
    for i in range(3):
        es.append(entry(long_name(i), data=rnd(70000 + i, i)))
    es += [entry('data', 'dir'), entry('data/a', data=b'A' * 5000),
           entry('data/b', 'hardlink', target='data/a'),
           entry('data/longlink', 'hardlink', target=long_name(0)),
           entry('data/sym', 'symlink', target='/' + 'z' * 150),
           entry('dev', 'dir'), entry('dev/null', 'chr', dev=(1, 3)), entry('dev/sda', 'blk', dev=(8, 0)),
           entry('dev/fifo', 'fifo'), entry('gone', 'chr', dev=(0, 0)),
           entry('etc', 'dir'), entry('etc/.wh.hello'),
           entry('opq', 'dir'), entry('opq/.wh..wh..opq'), entry('opq/kept', data=b'kept\n'),
           entry('big', data=rnd(3 * 65536 + 123, 7)), entry('zeros', data=bytes(200000)),
           entry('empty', data=b'')]
    return make_tar(es)


def pax_layer():
    """PAX format: xattrs, long paths, an owner, a big file."""
    es = [entry('x', 'dir', xattrs={'user.dir': 'd'}),
          entry('x/attr', data=b'with xattrs\n', xattrs={'user.one': '1', 'user.two': 'zwei' * 100}),
          entry('x/' + 'p' * 200, data=rnd(100000, 11), uid=1000, gid=1000, xattrs={'user.long': 'y'}),
          entry('x/small', data=b'tiny', mode=0o4755)]
    return make_tar(es)


def sparse_layer(env, fmt):
    """A sparse file as GNU tar writes it (format gnu: 'S' members; pax: the
    GNU.sparse map in the body)."""
    src = env.path('sparse-src-' + fmt)
    os.makedirs(os.path.join(src, 'sp'))
    with open(os.path.join(src, 'sp', 'file'), 'wb') as f:
        f.truncate(8 << 20)
        for off in (0, 1 << 20, 5 << 20, (8 << 20) - 10):
            f.seek(off)
            f.write(rnd(4000, off)[: min(4000, (8 << 20) - off)])
    out = env.path('sparse-%s.tar' % fmt)
    subprocess.run(['tar', '--sparse', '--format=' + fmt, '--owner=0', '--group=0', '--mtime=@1000',
                    '-C', src, '-cf', out, 'sp'], check=True)
    with open(out, 'rb') as f:
        return f.read()


def layers(env):
    return [gnu_layer(), pax_layer(), sparse_layer(env, 'gnu'), sparse_layer(env, 'pax'), busybox_layer()]


def store_layer_dirs(env):
    d = os.path.join(env.store, 'layers')
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def layer_tars_of(path, kind):
    """The layer tars of an exported image, by DiffID."""
    out = {}
    if kind == 'docker-archive':
        with tarfile.open(path) as t:
            man = json.load(t.extractfile('manifest.json'))
            for name in man[0]['Layers']:
                data = t.extractfile(name).read()
                out[sha(data)] = data
        return out
    if kind == 'oci-archive':
        tmp = path + '.d'
        with tarfile.open(path) as t:
            t.extractall(tmp)
        path = tmp
    idx = json.load(open(os.path.join(path, 'index.json')))
    md = idx['manifests'][-1]['digest']
    man = json.load(open(os.path.join(path, 'blobs/sha256', md[7:])))
    for l in man['layers']:
        data = open(os.path.join(path, 'blobs/sha256', l['digest'][7:]), 'rb').read()
        check(l['mediaType'].endswith('.tar'), 'a rebuilt layer is exported as a plain tar: %s' % l['mediaType'])
        out[sha(data)] = data
    return out


def system_check(env, what):
    r = env.run('system', 'check', ok=None)
    check(r.returncode == 0, '%s: system check is clean (code %d): %s %s' % (what, r.returncode, r.out, r.err))


def import_src(env, tars, tag='v1', comp='gzip'):
    src = env.path('src-' + tag)
    cd, ids = oci_layout(src, [(t, comp) for t in tars], tag=tag)
    env.give()
    env.run('import', 'oci:%s:%s' % (src, tag), 'img:' + tag)
    return cd, ids


# ---------------------------------------------------------------- round trips

def test_roundtrip(env):
    tars = layers(env)
    cd, ids = import_src(env, tars)
    for hexd in store_layer_dirs(env):
        names = sorted(os.listdir(os.path.join(env.store, 'layers', hexd)))
        check(names == ['chunks', 'layer.json', 'layer.pk', 'tar-split'],
              'a packed layer keeps no tree and no blob: %s' % names)
        link = os.readlink(os.path.join(env.store, 'layers', hexd, 'chunks'))
        check(link == '../../chunks', 'the layer finds the chunk store relative to itself: %s' % link)
        info = json.load(open(os.path.join(env.store, 'layers', hexd, 'layer.json')))
        check(info.get('format') == 'packed' and info.get('tar') == 'tar-split', 'layer.json says packed')
    system_check(env, 'after import')
    # layers and diff read packed layers as they read trees
    dirstore = env.path('store-dir')
    oci_layout(env.path('src-other'), [(busybox_layer(), 'gzip'), (pax_layer(), 'gzip')], tag='o')
    env.give()
    env.run('import', 'oci:%s:o' % env.path('src-other'), 'other:1')
    os.environ['STRATA_STORE_FORMAT'] = 'dir'
    try:
        env.run('--store', dirstore, 'import', 'oci:%s:v1' % env.path('src-v1'), 'img:v1')
        env.run('--store', dirstore, 'import', 'oci:%s:o' % env.path('src-other'), 'other:1')
        for args in (('layers', 'img:v1', '--all', '--json'), ('diff', 'other:1', 'img:v1', '--json')):
            d = env.run('--store', dirstore, *args).out
            p = env.run(*args).out
            check(d == p and len(p) > 100, '%s: the same output over packed layers as over trees' % args[0])
    finally:
        os.environ['STRATA_STORE_FORMAT'] = 'packed'
    want = {sha(t): t for t in tars}
    for kind in ('oci', 'oci-archive', 'docker-archive'):
        out = env.path('out-' + kind)
        env.run('export', 'img:v1', '%s:%s' % (kind, out))
        got = layer_tars_of(out, kind)
        check(sorted(got) == sorted(ids), '%s: the exported layers are the DiffIDs' % kind)
        for d, data in got.items():
            check(data == want[d], '%s: layer %s rebuilt byte for byte' % (kind, d))
        # and back, into a fresh store
        again = env.path('store-' + kind)
        spec = '%s:%s' % (kind, out) + (':v1' if kind == 'oci' else '')
        env.give()
        r = env.run('--store', again, 'import', spec, 'back:1')
        check(r.out.strip() == cd, '%s: the same image ID after import -> export -> import' % kind)
        ins = json.loads(env.run('--store', again, 'inspect', 'back:1').out)
        check([l['diff_id'] for l in ins['layers']] == ids, '%s: the same DiffIDs' % kind)


def test_rootfs_and_tar_kinds(env):
    """A plain and a zstd layer, a rootfs tarball, and a tar without its end
    blocks and last padding (umoci 0.4.7) rebuild exactly too."""
    short = make_tar([entry('a', data=b'x' * 1000), entry('b', data=b'y' * 700)], footer=False, pad_last=False)
    tars = [busybox_layer(), gnu_layer(), short]
    src = env.path('src')
    cd, ids = oci_layout(src, [(tars[0], 'tar'), (tars[1], 'zstd'), (tars[2], 'gzip')], tag='t')
    with open(env.path('root.tar'), 'wb') as f:
        f.write(pax_layer())
    env.give()
    env.run('import', 'oci:%s:t' % src, 'mix:1')
    env.run('import', 'rootfs:' + env.path('root.tar'), 'rootfs:1')
    # A path twice (the later member wins on disk): the record cannot rebuild
    # the first body from the layer, so the blob is kept and exported.
    dup = make_tar([entry('d', data=b'first' * 300), entry('l', 'hardlink', target='d'),
                    entry('d', data=b'second' * 300)])
    dcd, dids = oci_layout(env.path('dup'), [(dup, 'gzip')], tag='t')
    env.give()
    env.run('import', 'oci:%s:t' % env.path('dup'), 'dup:1')
    ldir = os.path.join(env.store, 'layers', dids[0][7:])
    info = json.load(open(os.path.join(ldir, 'layer.json')))
    check(info.get('tar') == 'blob' and sorted(os.listdir(ldir)) == ['blob', 'chunks', 'layer.json', 'layer.pk'],
          'a tar the record cannot rebuild keeps its blob: %s %s' % (info, os.listdir(ldir)))
    system_check(env, 'with a kept blob')
    for img, want in (('mix:1', tars), ('rootfs:1', [pax_layer()]), ('dup:1', [dup])):
        out = env.path('out-' + img.replace(':', '-'))
        env.run('export', img, 'docker-archive:' + out)
        got = layer_tars_of(out, 'docker-archive')
        for t in want:
            check(got.get(sha(t)) == t, '%s: a layer rebuilt byte for byte' % img)


def test_commit(env):
    """commit writes a packed layer (its lower view read from packed layers),
    which diff shows and export round-trips."""
    import_src(env, [busybox_layer()])
    env.run('create', '--name', 'c1', 'img:v1', 'true')
    cdir = os.path.join(env.store, 'containers')
    upper = os.path.join(cdir, os.listdir(cdir)[0], 'upper')
    os.makedirs(os.path.join(upper, 'etc'), exist_ok=True)
    with open(os.path.join(upper, 'etc', 'added'), 'w') as f:
        f.write('added\n')
    env.give()
    env.run('commit', 'c1', 'new:1')
    out = env.run('diff', 'img:v1', 'new:1').out
    check('A /etc/added' in out, 'diff shows the committed file: %s' % out)
    for hexd in store_layer_dirs(env):
        check('layer.pk' in os.listdir(os.path.join(env.store, 'layers', hexd)), 'the committed layer is packed')
    system_check(env, 'after commit')
    env.run('export', 'new:1', 'oci-archive:' + env.path('new.tar'))
    ins = json.loads(env.run('inspect', 'new:1').out)
    r = env.run('--store', env.path('s2'), 'import', 'oci-archive:' + env.path('new.tar'), 'back:1')
    check(r.out.strip() == ins['id'], 'the committed image round-trips with its ID')


# ---------------------------------------------------------------- df

def df(env):
    return json.loads(env.run('system', 'df', '--json').out)


def test_df(env):
    same = rnd(300000, 5)
    tar = make_tar([entry('one', data=same), entry('two', data=same), entry('three', data=same[:200000]),
                    entry('text', data=b'all work and no play\n' * 20000)])
    import_src(env, [tar, busybox_layer()])
    a = df(env)
    check(len(a['images']) == 1, 'one image')
    t = a['total']
    logical = 2 * 300000 + 200000 + 21 * 20000
    check(t['logical_bytes'] >= logical, 'logical bytes count every file (%d)' % t['logical_bytes'])
    r = t['ratios']
    check(t['logical_bytes'] - t['file_dedup_bytes'] == 300000, 'the identical file is counted once: %s' % t)
    # 'three' is the start of 'one': its whole chunks are shared
    check(t['file_dedup_bytes'] - t['chunk_dedup_bytes'] == 200000 // CHUNK * CHUNK,
          'shared chunks are counted once: %s' % t)
    check(r['file_dedup'] > 1 and r['chunk_dedup'] > 1, 'both dedup ratios above 1: %s' % r)
    check(r['lz4'] > 1.3, 'the text compresses: %s' % r)
    check(t['stored_bytes'] < t['logical_bytes'], 'stored < logical')
    # the same image under a second name adds nothing
    env.run('tag', 'img:v1', 'other:2')
    src = env.path('src-v1')
    env.run('import', 'oci:%s:v1' % src, 'third:3')
    b = df(env)
    check(b['total']['stored_bytes'] == t['stored_bytes'], 'a second name stores no byte more')
    # an image sharing the base adds its own layer only
    import_src(env, [make_tar([entry('new', data=rnd(200000, 9))]), busybox_layer()], tag='v2')
    c = df(env)
    check(len(c['images']) == 2, 'two images')
    added = c['total']['stored_bytes'] - t['stored_bytes']
    check(0 < added < 200000 + CHUNK, 'the shared base is stored once (added %d)' % added)
    text = env.run('system', 'df').out
    check('TOTAL' in text and 'img:v1' in text, 'the table names the images and the total')


# ---------------------------------------------------------------- check

def objects(env):
    """The files holding chunks: pack files (and loose objects, of stores
    written before packs)."""
    out = []
    root = os.path.join(env.store, 'chunks')
    for d in sorted(os.listdir(root)):
        p = os.path.join(root, d)
        if len(d) == 2 and os.path.isdir(p):
            out += [os.path.join(p, n) for n in sorted(os.listdir(p))]
    pd = os.path.join(root, 'packs')
    if os.path.isdir(pd):
        out += [os.path.join(pd, n) for n in sorted(os.listdir(pd)) if n.endswith('.pack')]
    return out


def chunk_count(env):
    """Chunks in the store: loose objects and the records of pack indexes
    (an index header: magic, version, record size, pack, count)."""
    n = sum(1 for o in objects(env) if not o.endswith('.pack'))
    pd = os.path.join(env.store, 'chunks', 'packs')
    for name in os.listdir(pd) if os.path.isdir(pd) else []:
        if name.endswith('.idx'):
            with open(os.path.join(pd, name), 'rb') as f:
                n += int.from_bytes(f.read(40)[24:32], 'little')
    return n


def check_packs_indexed(env, what):
    """Every pack has its index and every index its pack: nothing a killed
    writer or collector left survives a collection."""
    pd = os.path.join(env.store, 'chunks', 'packs')
    names = os.listdir(pd) if os.path.isdir(pd) else []
    packs = sorted(n[:-5] for n in names if n.endswith('.pack'))
    idx = sorted(n[:-4] for n in names if n.endswith('.idx'))
    check(packs == idx and not [n for n in names if n.endswith('.tmp')],
          '%s: packs and indexes pair up: %s' % (what, sorted(names)))


def blocks(paths):
    return sum(os.stat(p).st_blocks for p in paths if os.path.exists(p))


def test_check_damage(env):
    import_src(env, [make_tar([entry('f', data=rnd(200000, 1)), entry('g', data=rnd(100000, 2))])])
    system_check(env, 'fresh')
    objs = objects(env)
    check(chunk_count(env) >= 4 and len(objs) == 1 and objs[0].endswith('.pack'),
          'the files are chunked into one pack (%d chunks, %s)' % (chunk_count(env), objs))
    victim = objs[0]
    data = open(victim, 'rb').read()
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x40
    os.chmod(victim, 0o644)
    with open(victim, 'wb') as f:
        f.write(flipped)
    r = env.run('system', 'check', ok=None)
    check(r.returncode == 1 and 'corrupt' in r.out, 'a flipped byte is found: %d %s' % (r.returncode, r.out))
    r = env.run('export', 'img:v1', 'oci:' + env.path('bad'), ok=None)
    check(r.returncode != 0, 'export of a damaged layer fails rather than writing a wrong blob')
    with open(victim, 'wb') as f:
        f.write(data)
    system_check(env, 'restored')
    os.unlink(objs[-1])
    r = env.run('system', 'check', ok=None)
    check(r.returncode == 1 and 'missing' in r.out, 'a deleted chunk is found: %d %s' % (r.returncode, r.out))
    # a truncated record
    hexd = store_layer_dirs(env)[0]
    ts = os.path.join(env.store, 'layers', hexd, 'tar-split')
    with open(ts, 'r+b') as f:
        f.truncate(os.path.getsize(ts) - 3)
    r = env.run('system', 'check', ok=None)
    check(r.returncode == 1 and 'tar-split' in r.out, 'a truncated record is found: %s' % r.out)


# ---------------------------------------------------------------- migrate, gc

def test_migrate(env):
    tars = layers(env)
    src = env.path('src')
    cd, ids = oci_layout(src, [(t, 'gzip') for t in tars], tag='v1')
    env.give()
    os.environ['STRATA_STORE_FORMAT'] = 'dir'
    try:
        env.run('import', 'oci:%s:v1' % src, 'img:v1')
        env.run('export', 'img:v1', 'oci-archive:' + env.path('before'))
    finally:
        os.environ['STRATA_STORE_FORMAT'] = 'packed'
    for hexd in store_layer_dirs(env):
        check(os.path.isdir(os.path.join(env.store, 'layers', hexd, 'diff')), 'dir format first')
    out = env.run('system', 'migrate').out
    check('%d layers migrated' % len(tars) in out, 'every layer migrated: %s' % out)
    out = env.run('system', 'migrate').out
    check('0 layers migrated, %d already packed' % len(tars) in out, 'migrate again changes nothing: %s' % out)
    for hexd in store_layer_dirs(env):
        names = sorted(os.listdir(os.path.join(env.store, 'layers', hexd)))
        check(names == ['chunks', 'layer.json', 'layer.pk', 'tar-split'], 'migrated: %s' % names)
    system_check(env, 'after migrate')
    env.run('export', 'img:v1', 'oci-archive:' + env.path('after'))
    want = {sha(t): t for t in tars}
    got = layer_tars_of(env.path('after'), 'oci-archive')
    check(all(got[d] == want[d] for d in ids), 'the migrated layers rebuild their tars byte for byte')
    again = env.path('store2')
    r = env.run('--store', again, 'import', 'oci-archive:' + env.path('after'), 'back:1')
    check(r.out.strip() == cd, 'the same image ID after migrate -> export -> import')


def quirk_layer():
    """What real and hostile tars do that a streaming writer must take as
    the unpacker does: children before their parent's entry, a parent never
    listed, a path listed twice (file over file, file over a directory, a
    directory again with other attributes), a hard link to a file replaced
    later, a symlinked parent inside the layer, overlay opaque xattrs, a
    sparse-looking file of zeros and a 600-byte file (chunked, not inline)."""
    es = [entry('late/child', data=b'before its parent\n'),
          entry('late', 'dir', mode=0o700, uid=7, gid=8),
          entry('deep/no/parents/f', data=rnd(1000, 3)),
          entry('twice', data=b'first'), entry('twice', data=b'second', mode=0o600),
          entry('wasdir', 'dir'), entry('wasdir/in', data=b'gone'), entry('wasdir', data=b'now a file'),
          entry('d2', 'dir', mode=0o755), entry('d2/x', data=b'x'), entry('d2', 'dir', mode=0o711, uid=3),
          entry('orig', data=b'linked'), entry('hl', 'hardlink', target='orig'),
          entry('orig', data=b'replaced'),
          entry('real', 'dir'), entry('via', 'symlink', target='real'), entry('via/x', data=b'through a link'),
          entry('o1', 'dir', xattrs={'trusted.overlay.opaque': 'y', 'user.keep': 'k'}),
          entry('o2', 'dir', xattrs={'user.overlay.opaque': 'y'}), entry('o2/f', data=b'f'),
          entry('z', data=bytes(70000)), entry('mid', data=rnd(600, 4), mode=0o2755)]
    return make_tar(es)


def tree_of(root):
    """Everything a layer's unpacked tree says, but times the importer sets
    to now (directories it made, its whiteouts and opaque markers)."""
    out, links = {}, {}
    for d, dirs, files in os.walk(root):
        for n in sorted(dirs + files):
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            x = {k: os.getxattr(p, k, follow_symlinks=False) for k in sorted(os.listxattr(p, follow_symlinks=False))}
            rec = [st.st_mode, st.st_uid, st.st_gid, x]
            if stat_isreg(st.st_mode):
                rec += [open(p, 'rb').read(), None if n.startswith('.wh.') else st.st_mtime_ns]
                if not n.startswith('.wh.'):
                    links.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif os.path.islink(p):
                rec += [os.readlink(p), st.st_mtime_ns]
            elif not (os.path.isdir(p) or n.startswith('.wh.')):
                rec += [st.st_rdev]
            out[rel] = rec
    return out, sorted(sorted(v) for v in links.values() if len(v) > 1)


def stat_isreg(m):
    import stat
    return stat.S_ISREG(m)


def test_streaming_equals_unpacked(env):
    """The streaming import's layer (tar entries straight into the packed
    writer) holds what packing the tree the unpacker makes holds: import
    into a dir store and migrate, import into a packed store, unpack both
    layer files and compare the trees."""
    tars = layers(env) + [quirk_layer()]
    src = env.path('src')
    cd, ids = oci_layout(src, [(t, 'gzip') for t in tars], tag='v1')
    env.give()
    dstore = env.path('dstore')
    os.environ['STRATA_STORE_FORMAT'] = 'dir'
    try:
        env.run('--store', dstore, 'import', 'oci:%s:v1' % src, 'img:v1')
        env.run('--store', dstore, 'system', 'migrate')
    finally:
        os.environ['STRATA_STORE_FORMAT'] = 'packed'
    env.run('import', 'oci:%s:v1' % src, 'img:v1')
    system_check(env, 'after the streaming import')
    for d in ids:
        trees = []
        for st in (dstore, env.store):
            out = env.path('unpacked-%s-%d' % (d[7:19], len(trees)))
            env.run('unpack', os.path.join(st, 'layers', d[7:], 'layer.pk'), out)
            trees.append(tree_of(out))
        (a, al), (b, bl) = trees
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        check(not diff, 'layer %s: the streamed layer differs from the packed tree at %s: %r / %r' %
              (d, diff[:3], [a.get(k) for k in diff[:2]], [b.get(k) for k in diff[:2]]))
        check(al == bl, 'layer %s: the same hard links: %r / %r' % (d, al, bl))
    # (the quirk layer's record cannot rebuild a tar naming paths twice: its
    # blob is kept, and docker-archive writes it uncompressed)
    env.run('export', 'img:v1', 'docker-archive:' + env.path('out'))
    want = {sha(t): t for t in tars}
    got = layer_tars_of(env.path('out'), 'docker-archive')
    check(all(got[d] == want[d] for d in ids), 'the streamed layers give back their tars byte for byte')


def test_gc(env):
    shared = rnd(300000, 5)
    import_src(env, [make_tar([entry('mine', data=rnd(300000, 3))]), busybox_layer()], tag='a')
    n1 = chunk_count(env)
    packs_a = objects(env)
    bytes_a = sum(os.path.getsize(p) for p in packs_a)
    import_src(env, [make_tar([entry('yours', data=rnd(300000, 4))]), busybox_layer()], tag='b')
    n2 = chunk_count(env)
    check(n2 == n1 + -(-300000 // CHUNK), 'the second image added its own file\'s chunks only (%d, %d)' % (n1, n2))
    grown = sum(os.path.getsize(p) for p in objects(env)) - bytes_a
    check(300000 <= grown < 300000 + 4096, 'its shared base layer is stored once (%d bytes more)' % grown)
    env.run('rmi', 'img:b')
    check(chunk_count(env) == n1 and objects(env) == packs_a,
          'rmi freed the chunks only the removed image used, and their pack (%d, %d)' % (chunk_count(env), n1))
    system_check(env, 'after rmi')
    # A layer sharing a file with c's: removing c keeps the shared chunks
    # in c's pack and punches the others out of it.
    import_src(env, [make_tar([entry('gone', data=rnd(600000, 6)), entry('shared', data=shared)])], tag='c')
    pack_c = [p for p in objects(env) if p not in packs_a]
    import_src(env, [make_tar([entry('shared', data=shared), entry('new', data=rnd(100000, 7))])], tag='d')
    before = blocks(pack_c)
    env.run('rmi', 'img:c')
    check(len(pack_c) == 1 and os.path.exists(pack_c[0]) and blocks(pack_c) * 512 < before * 512 - 500000,
          'the dead chunks were punched out of the pack (%d -> %d blocks)' % (before, blocks(pack_c)))
    system_check(env, 'after punching')
    env.run('export', 'img:d', 'docker-archive:' + env.path('d.tar'))
    got = layer_tars_of(env.path('d.tar'), 'docker-archive')
    check(len(got) == 1, 'the image sharing the punched pack exports whole')
    env.run('rmi', 'img:d')
    env.run('export', 'img:a', 'oci:' + env.path('still'))
    env.run('rmi', 'img:a')
    out = env.run('system', 'prune').out
    check(objects(env) == [], 'no chunk is left once no image is: %s' % out)
    check(store_layer_dirs(env) == [], 'no layer is left')


# ---------------------------------------------------------------- kill -9

def killed_runs(env, argv, setup, rounds, what, after=None):
    """Run strata argv (after setup()) and SIGKILL it at random points of its
    run; after each kill the store checks clean."""
    setup()
    t0 = time.monotonic()
    env.run(*argv)
    full = time.monotonic() - t0
    rng = random.Random(42)
    for i in range(rounds):
        setup()
        p = subprocess.Popen(env.wrap([env.strata, '--store', env.store] + list(argv)), env=env.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=env.dir)
        time.sleep(rng.uniform(0, full))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stderr.close()
        system_check(env, '%s killed (round %d)' % (what, i))
        if after:
            after()


def test_kill_import(env):
    tars = [make_tar([entry('f%d' % i, data=rnd(400000, i)) for i in range(12)]), busybox_layer(), gnu_layer()]
    src = env.path('src')
    cd, ids = oci_layout(src, [(t, 'gzip') for t in tars], tag='v1')
    env.give()

    def setup():
        env.run('rmi', 'img:v1', ok=None)
        env.run('system', 'prune')

    killed_runs(env, ['import', 'oci:%s:v1' % src, 'img:v1'], setup, 6 * min(SCALE, 2), 'import')
    r = env.run('import', 'oci:%s:v1' % src, 'img:v1')
    check(r.out.strip() == cd, 'import after the kills gives the image')
    system_check(env, 'final import')
    env.run('system', 'prune')
    tmp = os.path.join(env.store, 'tmp')
    check(not os.path.isdir(tmp) or os.listdir(tmp) == [], 'nothing is left in tmp/: %s' % os.listdir(tmp))
    check_packs_indexed(env, 'after killed imports and a prune')


def test_kill_commit(env):
    """commit killed anywhere (its pack written, indexed or not, its layer
    not yet in place) leaves a store that checks clean, and commit again
    works."""
    import_src(env, [busybox_layer()])
    env.run('create', '--name', 'c1', 'img:v1', 'true')
    cdir = os.path.join(env.store, 'containers')
    upper = os.path.join(cdir, os.listdir(cdir)[0], 'upper')
    os.makedirs(os.path.join(upper, 'data'), exist_ok=True)
    for i in range(16):
        with open(os.path.join(upper, 'data', 'f%d' % i), 'wb') as f:
            f.write(rnd(400000, 500 + i))
    env.give()

    def setup():
        env.run('rmi', 'new:1', ok=None)
        env.run('system', 'prune')

    def after():
        env.run('commit', 'c1', 'new:1')
        system_check(env, 'commit after a killed commit')
        out = env.run('diff', 'img:v1', 'new:1').out
        check('A /data/f15' in out, 'the commit after a kill has the data: %s' % out[-300:])

    killed_runs(env, ['commit', 'c1', 'new:1'], setup, 4 * min(SCALE, 2), 'commit', after)
    env.run('rmi', 'new:1')
    env.run('system', 'prune')
    check_packs_indexed(env, 'after killed commits and a prune')


def test_kill_migrate(env):
    tars = [make_tar([entry('f%d' % i, data=rnd(400000, i)) for i in range(12)]), busybox_layer(), gnu_layer()]
    src = env.path('src')
    cd, ids = oci_layout(src, [(t, 'gzip') for t in tars], tag='v1')
    env.give()

    def setup():
        os.environ['STRATA_STORE_FORMAT'] = 'dir'
        try:
            env.run('rmi', 'img:v1', ok=None)
            env.run('system', 'prune')
            env.run('import', 'oci:%s:v1' % src, 'img:v1')
        finally:
            os.environ['STRATA_STORE_FORMAT'] = 'packed'

    def after():
        env.run('system', 'migrate')
        system_check(env, 'migrate finished after a kill')
        env.run('export', 'img:v1', 'docker-archive:' + env.path('x.tar'))
        got = layer_tars_of(env.path('x.tar'), 'docker-archive')
        check(sorted(got) == sorted(ids), 'export after a killed migrate rebuilds every layer')
        os.unlink(env.path('x.tar'))

    killed_runs(env, ['system', 'migrate'], setup, 5 * min(SCALE, 2), 'migrate', after)


def test_kill_gc(env):
    tars = [make_tar([entry('f%d' % i, data=rnd(200000, i)) for i in range(30)]), busybox_layer()]
    src = env.path('src')
    oci_layout(src, [(t, 'gzip') for t in tars], tag='v1')
    keep = make_tar([entry('keep', data=rnd(300000, 99))])
    oci_layout(env.path('keep'), [(keep, 'gzip'), (busybox_layer(), 'gzip')], tag='k')
    env.give()
    env.run('import', 'oci:%s:k' % env.path('keep'), 'keep:1')

    def setup():
        env.run('import', 'oci:%s:v1' % src, 'img:v1')

    def after():
        env.run('export', 'keep:1', 'oci:' + env.path('k-out'))
        shutil.rmtree(env.path('k-out'))
        # what the killed rmi was removing comes back whole
        env.run('import', 'oci:%s:v1' % src, 'img:v1')
        system_check(env, 'imported again after a killed rmi')
        env.run('export', 'img:v1', 'docker-archive:' + env.path('v.tar'))
        got = layer_tars_of(env.path('v.tar'), 'docker-archive')
        check(sorted(got) == sorted(sha(t) for t in tars), 'the image exports whole after a killed rmi')
        os.unlink(env.path('v.tar'))

    killed_runs(env, ['rmi', 'img:v1'], setup, 6 * min(SCALE, 2), 'rmi with chunk GC', after)
    env.run('system', 'prune')
    check_packs_indexed(env, 'after killed collections and a prune')
    env.run('export', 'keep:1', 'oci:' + env.path('k-out'))


TESTS = [test_roundtrip, test_rootfs_and_tar_kinds, test_commit, test_df, test_check_damage, test_migrate,
         test_streaming_equals_unpacked, test_gc,
         test_kill_import, test_kill_commit, test_kill_migrate, test_kill_gc]

if __name__ == '__main__':
    sys.exit(main(TESTS))
