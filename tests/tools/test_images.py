#!/usr/bin/env python3
"""strata image commands end to end: import of every source kind, the
quirks real producers write, images/tag/rmi/history/inspect/layers/diff.

usage: test_images.py STRATA [--user] [TEST...]"""
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (Fail, check, entry, make_tar, oci_layout, busybox_layer, sha, gz, zst,
                      main, MT)


def layer_path(env, image, i):
    """Layer i's tree (a packed layer's unpacked)."""
    return env.layer_tree(env.json('inspect', image)['layers'][i]['path'])


def base_image(env, name='base:1'):
    oci_layout(env.path('base'), [(busybox_layer(), 'gzip')], tag='v1')
    env.give()
    return env.run('import', 'oci:' + env.path('base') + ':v1', name).out.strip()


def test_rootfs_dir_and_tar(env):
    os.makedirs(env.path('rootfs/etc'))
    with open(env.path('rootfs/etc/motd'), 'w') as f:
        f.write('hi\n')
    os.symlink('motd', env.path('rootfs/etc/link'))
    with open(env.path('rootfs.tar.gz'), 'wb') as f:
        f.write(gz(make_tar([entry('etc', 'dir'), entry('etc/motd', data=b'hi\n')])))
    env.give()
    d1 = env.run('import', 'rootfs:' + env.path('rootfs'), 'fromdir').out.strip()
    d2 = env.run('import', 'rootfs:' + env.path('rootfs.tar.gz'), 'fromtar:2').out.strip()
    check(d1.startswith('sha256:') and d2.startswith('sha256:') and d1 != d2, 'two image ids')
    p = layer_path(env, 'fromdir', 0)
    with open(os.path.join(p, 'etc/motd')) as f:
        check(f.read() == 'hi\n', 'rootfs dir content')
    check(os.readlink(os.path.join(p, 'etc/link')) == 'motd', 'symlink kept')
    imgs = env.json('images', '--json')
    names = sorted('%s:%s' % (i['repository'], i['tag']) for i in imgs)
    check(names == ['fromdir:latest', 'fromtar:2'], 'images lists both: %r' % names)
    # The tar's layer is the tar itself: its DiffID is the tar's sha256.
    with open(env.path('rootfs.tar.gz'), 'rb') as f:
        import gzip
        tar = gzip.decompress(f.read())
    check(env.json('inspect', 'fromtar:2')['layers'][0]['diff_id'] == sha(tar), 'DiffID = sha256(tar)')


def test_tag_rmi_shared_layers(env):
    did = base_image(env)
    env.run('tag', 'base:1', 'other:x')
    env.run('tag', did[7:19], 'third')        # short id, as `images` prints it
    ids = {i['id'] for i in env.json('images', '--json')}
    check(ids == {did}, 'all tags name one image')
    # A second image sharing the bottom layer stores it once.
    top = make_tar([entry('etc', 'dir'), entry('etc/extra', data=b'x')])
    oci_layout(env.path('two'), [(busybox_layer(), 'gzip'), (top, 'gzip')], tag='v2')
    env.give()
    env.run('import', 'oci:' + env.path('two') + ':v2', 'two')
    layers = os.listdir(os.path.join(env.store, 'layers'))
    check(len(layers) == 2, 'shared layer stored once: %r' % layers)
    env.run('rmi', 'base:1')
    env.run('rmi', 'other:x', 'third')
    check(len(os.listdir(os.path.join(env.store, 'layers'))) == 2, 'layer of two kept')
    env.run('rmi', 'two')
    check(os.listdir(os.path.join(env.store, 'layers')) == [], 'layers gone with their last image')
    check(os.listdir(os.path.join(env.store, 'images')) == [], 'configs gone')
    r = env.run('rmi', 'two', ok=False)
    check('no such image' in r.err, 'rmi of a missing name says so: ' + r.err)


def test_history_inspect_empty_layer(env):
    hist = [{'created': '2024-01-01T00:00:00Z', 'created_by': 'ADD busybox'},
            {'created': '2024-01-02T00:00:00Z', 'created_by': 'ENV A=b', 'empty_layer': True},
            {'created': '2024-01-03T00:00:00Z', 'created_by': 'RUN touch x'}]
    top = make_tar([entry('x', data=b'12345')])
    cd, ids = oci_layout(env.path('h'), [(busybox_layer(), 'gzip'), (top, 'tar')], history=hist)
    env.give()
    env.run('import', 'oci:' + env.path('h'), 'h:1')
    h = env.json('history', 'h:1', '--json')
    check([e['created_by'] for e in h] == ['RUN touch x', 'ENV A=b', 'ADD busybox'], 'history order')
    check(h[1]['empty_layer'] and 'diff_id' not in h[1], 'empty layer has no layer')
    check(h[0]['diff_id'] == ids[1] and h[2]['diff_id'] == ids[0], 'history maps to layers')
    check(h[0]['size'] == len(top), 'size of the top layer')
    ins = env.json('inspect', 'h:1')
    check(ins['id'] == cd, 'image id is the config digest')
    check([l['diff_id'] for l in ins['layers']] == ids, 'inspect layers')
    chain1 = sha(('%s %s' % (ids[0], ids[1])).encode())
    check(ins['layers'][0]['chain_id'] == ids[0] and ins['layers'][1]['chain_id'] == chain1, 'chain ids')
    check(ins['repo_tags'] == ['h:1'], 'tags')
    text = env.run('history', 'h:1').out
    check('ENV A=b' in text and '<empty>' in text, 'text history')


def test_quirk_parents_missing(env):
    t = make_tar([entry('a/b/c/file', data=b'deep')])
    oci_layout(env.path('q'), [(t, 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    p = layer_path(env, 'q', 0)
    with open(os.path.join(p, 'a/b/c/file')) as f:
        check(f.read() == 'deep', 'file under created parents')
    check(stat.S_IMODE(os.stat(os.path.join(p, 'a/b')).st_mode) & 0o755 == 0o755, 'parents are 0755')


def test_quirk_opaque_marker_order(env):
    low = make_tar([entry('d', 'dir'), entry('d/old', data=b'old'), entry('e', 'dir'), entry('e/old', data=b'o')])
    # d: marker before its directory entry; e: marker after it.
    up = make_tar([entry('d/.wh..wh..opq'), entry('d', 'dir', mode=0o700), entry('d/new', data=b'n'),
                   entry('e', 'dir', mode=0o711), entry('e/.wh..wh..opq')])
    oci_layout(env.path('lo'), [(low, 'gzip')])
    oci_layout(env.path('q'), [(low, 'gzip'), (up, 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('lo'), 'lo')
    env.run('import', 'oci:' + env.path('q'), 'q')
    p = layer_path(env, 'q', 1)
    check(os.path.exists(os.path.join(p, 'd/.wh..wh..opq')), 'marker kept for strata-fs (before)')
    check(os.path.exists(os.path.join(p, 'e/.wh..wh..opq')), 'marker kept (after)')
    if not env.user:
        check(stat.S_IMODE(os.stat(os.path.join(p, 'd')).st_mode) == 0o700, 'dir entry after marker sets mode')
        check(stat.S_IMODE(os.stat(os.path.join(p, 'e')).st_mode) == 0o711, 'dir mode with marker after')
    d = {(c['kind'], c['path']) for c in env.json('diff', 'lo', 'q', '--json')}
    check(('D', '/d/old') in d and ('D', '/e/old') in d and ('A', '/d/new') in d,
          'opaque hides the lower files in both orders: %r' % sorted(d))


def test_quirk_type_bits_in_mode(env):
    t = make_tar([entry('dir', 'dir', mode=0o750), entry('dir/f', data=b'x', mode=0o640)],
                 type_bits_in_mode=True)
    oci_layout(env.path('q'), [(t, 'tar')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    p = layer_path(env, 'q', 0)
    check(stat.S_ISDIR(os.lstat(os.path.join(p, 'dir')).st_mode), 'dir is a dir')
    st = os.lstat(os.path.join(p, 'dir/f'))
    check(stat.S_ISREG(st.st_mode), 'file is a file')
    if env.user:
        v = os.getxattr(os.path.join(p, 'dir/f'), 'user.containers.override_stat').decode()
        check(v == '0:0:0640', 'rootless mode in xattr: ' + v)
    else:
        check(stat.S_IMODE(st.st_mode) == 0o640, 'permission bits kept')


def test_quirk_hardlinks(env):
    t = make_tar([entry('a', data=b'shared'), entry('sub/b', 'hardlink', target='a'),
                  entry('./c', 'hardlink', target='./a')])
    oci_layout(env.path('q'), [(t, 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    p = layer_path(env, 'q', 0)
    ino = os.stat(os.path.join(p, 'a')).st_ino
    check(os.stat(os.path.join(p, 'sub/b')).st_ino == ino and os.stat(os.path.join(p, 'c')).st_ino == ino,
          'hard links share the inode')
    check(os.stat(os.path.join(p, 'a')).st_nlink == 3, 'three links')


def test_quirk_no_footer(env):
    t1 = make_tar([entry('f1', data=b'abc')], footer=False)
    t2 = make_tar([entry('f2', data=b'abcd')], footer=False, pad_last=False)
    cd, ids = oci_layout(env.path('q'), [(t1, 'gzip'), (t2, 'tar')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    got = [l['diff_id'] for l in env.json('inspect', 'q')['layers']]
    check(got == ids, 'DiffIDs are of the bytes as written')
    with open(os.path.join(layer_path(env, 'q', 1), 'f2')) as f:
        check(f.read() == 'abcd', 'unpadded last file complete')


def test_quirk_zstd_and_formats(env):
    t = make_tar([entry('z', data=b'zstd' * 1000)])
    oci_layout(env.path('q'), [(busybox_layer(), 'zstd'), (t, 'zstd')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    ins = env.json('inspect', 'q')
    if env.packed():
        # No blob is kept: inspect shows what export writes, the plain tar.
        check(all(l['media_type'] == 'application/vnd.oci.image.layer.v1.tar' for l in ins['layers']),
              'a packed layer exports as the tar: %r' % [l['media_type'] for l in ins['layers']])
    else:
        check(all(l['media_type'].endswith('+zstd') for l in ins['layers']), 'zstd kept as zstd')
    with open(os.path.join(env.layer_tree(ins['layers'][1]['path']), 'z')) as f:
        check(f.read() == 'zstd' * 1000, 'zstd content')


def test_devices_and_owners(env):
    t = make_tar([entry('dev', 'dir'), entry('dev/null', 'chr', dev=(1, 3), mode=0o666),
                  entry('owned', data=b'x', uid=33, gid=44, mode=0o4755), entry('p', 'fifo')])
    oci_layout(env.path('q'), [(t, 'tar')])
    env.give()
    if env.user:
        # Left out, as rootless podman does (test_badinput: test_devices_rootless).
        r = env.run('import', 'oci:' + env.path('q'), 'q')
        check('left out 1 device node' in r.err and 'dev/null' in r.err, 'says what was left out: ' + r.err)
        p = layer_path(env, 'q', 0)
        check(not os.path.lexists(os.path.join(p, 'dev/null')), 'no device node in a rootless store')
        check(stat.S_ISFIFO(os.lstat(os.path.join(p, 'p')).st_mode), 'fifo')
        return
    env.run('import', 'oci:' + env.path('q'), 'q')
    p = layer_path(env, 'q', 0)
    st = os.lstat(os.path.join(p, 'dev/null'))
    check(stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3, 'char dev')
    st = os.lstat(os.path.join(p, 'owned'))
    check((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (33, 44, 0o4755), 'owner and setuid kept')
    check(stat.S_ISFIFO(os.lstat(os.path.join(p, 'p')).st_mode), 'fifo')


def test_rootless_owners_in_xattr(env):
    if not env.user:
        return
    t = make_tar([entry('d', 'dir', uid=5, gid=6, mode=0o555), entry('d/f', data=b'x', uid=33, gid=44, mode=0o4750)])
    oci_layout(env.path('q'), [(t, 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    p = layer_path(env, 'q', 0)
    st = os.lstat(os.path.join(p, 'd/f'))
    check(st.st_uid == env.pw.pw_uid, 'file belongs to the user on disk')
    check(os.getxattr(os.path.join(p, 'd/f'), 'user.containers.override_stat') == b'33:44:04750', 'file owner xattr')
    check(os.getxattr(os.path.join(p, 'd'), 'user.containers.override_stat') == b'5:6:0555', 'dir owner xattr')


def test_layers_wasted(env):
    l0 = make_tar([entry('big', data=b'x' * 1000), entry('gone', data=b'y' * 300), entry('keep', data=b'k')])
    l1 = make_tar([entry('big', data=b'z' * 10), entry('.wh.gone')])
    oci_layout(env.path('q'), [(l0, 'gzip'), (l1, 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    j = env.json('layers', 'q', '--json')
    check(j['layers'][0]['wasted'] == 1300, 'replaced + deleted bytes of layer 0: %r' % j['layers'][0]['wasted'])
    check(j['wasted'] == 1300 and j['size'] == 1311, 'totals')
    ch = {(c['kind'], c['path']) for c in j['layers'][1]['changes']}
    check(ch == {('C', '/big'), ('D', '/gone')}, 'layer 1 changes: %r' % ch)
    text = env.run('layers', 'q').out
    check('wasted' in text and '  C big  (10B)' in text and '  D gone' in text, 'text output: %r' % text)
    many = make_tar([entry('many', 'dir')] + [entry('many/f%02d' % i, data=b'x') for i in range(30)])
    oci_layout(env.path('m'), [(many, 'tar')])
    env.give()
    env.run('import', 'oci:' + env.path('m'), 'many')
    text = env.run('layers', 'many').out
    check('A many/  (30 entries, 30B; --all shows them)' in text and 'f07' not in text, 'folded: %r' % text)
    text = env.run('layers', '--all', 'many').out
    check('    A f07  (1B)' in text, 'unfolded with --all: %r' % text)


def test_layers_and_diff_dir_vs_packed(env):
    """`layers` and `diff IMAGE IMAGE` print the same for one image whether
    its layers are stored as directories, packed (read in place through the
    packed reader), or both in one store: whiteouts of files, directories
    and symlinks, opaque directories, a directory replaced by a file and
    back, hard links, symlinks, xattrs."""
    l0 = make_tar([entry('etc', 'dir'), entry('etc/a', data=b'a' * 100), entry('etc/b', data=b'bb'),
                   entry('d', 'dir'), entry('d/x', data=b'x'), entry('d/sub', 'dir'),
                   entry('d/sub/y', data=b'y' * 5000), entry('lnk', 'symlink', target='etc/a'),
                   entry('e', 'dir'), entry('e/old', data=b'o'), entry('f', data=b'file f'),
                   entry('r', 'dir'), entry('r/in', data=b'in', uid=7, gid=8),
                   entry('x', data=b'xa', xattrs={'user.k': 'v'})])
    l1 = make_tar([entry('etc', 'dir'), entry('etc/.wh.a'), entry('etc/b', data=b'bbb', mode=0o600),
                   entry('d', 'dir'), entry('d/.wh..wh..opq'), entry('d/new', data=b'n'),
                   entry('.wh.e'), entry('e', 'dir'), entry('e/fresh', data=b'f'),
                   entry('.wh.f'), entry('g', data=b'g' * 70000), entry('h', 'hardlink', target='g'),
                   entry('.wh.r'), entry('r', data=b'now a file')])
    l2 = make_tar([entry('.wh.lnk'), entry('lnk', 'dir'), entry('lnk/z', data=b'z'),
                   entry('g', data=b'gg'), entry('.wh.r'), entry('r', 'dir'), entry('r/back', data=b'b'),
                   entry('many', 'dir')] + [entry('many/f%02d' % i, data=b'q' * i) for i in range(25)])
    oci_layout(env.path('img'), [(l0, 'gzip'), (l1, 'gzip'), (l2, 'tar')],
               history=[{'created_by': 'l%d' % i} for i in range(3)])
    oci_layout(env.path('base'), [(l0, 'gzip')])
    env.give()

    def views(fmt_base, fmt_img, store):
        env.store = env.path(store)
        env.store_format = fmt_base
        env.run('import', 'oci:' + env.path('base'), 'base:1')
        env.store_format = fmt_img
        env.run('import', 'oci:' + env.path('img'), 'img:1')
        env.store_format = None
        paths = [l['path'] for l in env.json('inspect', 'img:1')['layers']]
        out = {args: env.run(*args).out for args in (
            ('layers', 'img:1', '--json'), ('layers', 'img:1'), ('layers', '--all', 'img:1'),
            ('layers', 'base:1', '--json'), ('diff', 'base:1', 'img:1', '--json'),
            ('diff', 'img:1', 'base:1'))}
        return paths, out

    saved = env.store
    try:
        dpaths, dirs = views('dir', 'dir', 'store-dir')
        ppaths, packed = views('packed', 'packed', 'store-packed')
        mpaths, mixed = views('dir', 'packed', 'store-mixed')
    finally:
        env.store = saved
    check(all(os.path.isdir(p) for p in dpaths), 'dir layers: %r' % dpaths)
    check(all(p.endswith('/layer.pk') and os.path.isfile(p) for p in ppaths), 'packed layers: %r' % ppaths)
    check(os.path.isdir(mpaths[0]) and all(p.endswith('/layer.pk') for p in mpaths[1:]),
          'a mixed store: the shared base layer a directory, the others packed: %r' % mpaths)
    for args, want in dirs.items():
        check(packed[args] == want, '%s: packed prints what dir prints:\n%s\n---\n%s' % (' '.join(args), want, packed[args]))
        check(mixed[args] == want, '%s: a mixed store prints the same:\n%s\n---\n%s' % (' '.join(args), want, mixed[args]))
    j = json.loads(dirs[('layers', 'img:1', '--json')])
    ch = {(c['kind'], c['path']) for c in j['layers'][1]['changes']}
    check({('D', '/etc/a'), ('C', '/etc/b'), ('D', '/e'), ('A', '/e'), ('D', '/f'), ('A', '/h'),
           ('D', '/r'), ('A', '/r')} <= ch, 'layer 1 changes: %r' % sorted(ch))
    d = {(c['kind'], c['path']) for c in json.loads(dirs[('diff', 'base:1', 'img:1', '--json')])}
    check({('D', '/etc/a'), ('C', '/etc/b'), ('D', '/d/x'), ('D', '/d/sub'), ('A', '/d/new'), ('D', '/e/old'),
           ('A', '/e/fresh'), ('D', '/f'), ('C', '/lnk'), ('A', '/lnk/z'), ('D', '/r/in'), ('A', '/r/back'),
           ('A', '/g'), ('A', '/h')} <= d, 'image diff: %r' % sorted(d))


def test_docker_and_oci_archives(env):
    base_image(env)
    if subprocess.run(['which', 'skopeo'], stdout=subprocess.DEVNULL).returncode:
        return
    env.tool('skopeo', 'copy', '-q', 'oci:' + env.path('base') + ':v1', 'docker-archive:' + env.path('d.tar') + ':x/y:z')
    env.tool('skopeo', 'copy', '-q', 'oci:' + env.path('base') + ':v1', 'oci-archive:' + env.path('o.tar'))
    a = env.run('import', 'docker-archive:' + env.path('d.tar'), 'fromdocker').out.strip()
    b = env.run('import', 'oci-archive:' + env.path('o.tar'), 'fromoci').out.strip()
    c = env.run('import', 'docker-archive:' + env.path('d.tar') + ':x/y:z', 'byref').out.strip()
    ids = {l['diff_id'] for i in ('base:1', 'fromdocker', 'fromoci') for l in env.json('inspect', i)['layers']}
    check(len(ids) == 1, 'same DiffID through every format')
    check(b == env.json('inspect', 'base:1')['id'] and a == c, 'ids stable')


def test_docker_save_duplicate_layer(env):
    """docker save (before 25) writes a layer that appears twice in an image
    once, and the second copy as a symlink to it; symlinks are never read as
    blobs, so the duplicate must be recognised by its DiffID."""
    import io
    import json as js
    import tarfile
    layer = make_tar([entry('f', data=b'same')])
    top = make_tar([entry('g', data=b'top')])
    cfg = js.dumps({'architecture': 'amd64', 'os': 'linux', 'config': {'Cmd': ['/bin/sh']},
                    'rootfs': {'type': 'layers', 'diff_ids': [sha(layer), sha(layer), sha(top)]}}).encode()
    man = js.dumps([{'Config': 'c.json', 'RepoTags': ['dup:1'],
                     'Layers': ['a/layer.tar', 'b/layer.tar', 'c/layer.tar']}]).encode()
    with tarfile.open(env.path('dup.tar'), 'w') as t:
        for name, data in (('c.json', cfg), ('manifest.json', man), ('a/layer.tar', layer), ('c/layer.tar', top)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo('b/layer.tar')
        ti.type = tarfile.SYMTYPE
        ti.linkname = '../a/layer.tar'
        t.addfile(ti)
    env.give()
    env.run('import', 'docker-archive:' + env.path('dup.tar'), 'dup:1')
    ls = env.json('inspect', 'dup:1')['layers']
    check([l['diff_id'] for l in ls] == [sha(layer), sha(layer), sha(top)], 'three layers, two alike')


def test_overlay_xattrs_dropped(env):
    """An archive cannot plant overlay bookkeeping (a redirect would make
    strata-fs serve another path's data); an opaque flag becomes the OCI
    marker; ordinary xattrs stay."""
    t = make_tar([entry('d', 'dir', xattrs={'trusted.overlay.opaque': 'y'}),
                  entry('f', data=b'x', xattrs={'trusted.overlay.redirect': '/etc/shadow',
                                                'user.overlay.metacopy': '', 'user.keep': 'yes'})])
    oci_layout(env.path('q'), [(t, 'tar')])
    env.give()
    env.run('import', 'oci:' + env.path('q'), 'q')
    p = layer_path(env, 'q', 0)
    check(os.path.exists(os.path.join(p, 'd/.wh..wh..opq')), 'opaque xattr kept as the marker')
    names = os.listxattr(os.path.join(p, 'f'))
    check(not any('overlay' in n for n in names), 'no overlay xattr on f: %r' % names)
    check(os.getxattr(os.path.join(p, 'f'), 'user.keep') == b'yes', 'ordinary xattr kept')


def test_nested_index(env):
    """A multi-platform image: the index points at an index of per-platform
    manifests; the host's platform is chosen."""
    import json as js
    amd = make_tar([entry('arch', data=b'amd64')])
    arm = make_tar([entry('arch', data=b'arm64')])
    lay = env.path('multi')
    oci_layout(env.path('a'), [(amd, 'gzip')])
    oci_layout(env.path('b'), [(arm, 'gzip')])
    os.makedirs(os.path.join(lay, 'blobs', 'sha256'))
    descs = []
    for src, arch in (('b', 'arm64'), ('a', 'amd64')):
        d = os.path.join(env.path(src), 'blobs', 'sha256')
        for n in os.listdir(d):
            with open(os.path.join(d, n), 'rb') as f, open(os.path.join(lay, 'blobs', 'sha256', n), 'wb') as g:
                g.write(f.read())
        m = js.load(open(os.path.join(env.path(src), 'index.json')))['manifests'][0]
        m.pop('annotations')
        m['platform'] = {'architecture': arch, 'os': 'linux'}
        descs.append(m)
    inner = js.dumps({'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.index.v1+json',
                      'manifests': descs}).encode()
    with open(os.path.join(lay, 'blobs', 'sha256', sha(inner)[7:]), 'wb') as f:
        f.write(inner)
    with open(os.path.join(lay, 'index.json'), 'w') as f:
        js.dump({'schemaVersion': 2, 'manifests': [
            {'mediaType': 'application/vnd.oci.image.index.v1+json', 'digest': sha(inner), 'size': len(inner),
             'annotations': {'org.opencontainers.image.ref.name': 'multi'}}]}, f)
    with open(os.path.join(lay, 'oci-layout'), 'w') as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    env.give()
    env.run('import', 'oci:' + lay + ':multi', 'm')
    import platform
    want = 'amd64' if platform.machine() == 'x86_64' else 'arm64'
    with open(os.path.join(layer_path(env, 'm', 0), 'arch')) as f:
        check(f.read() == want, 'the host platform was chosen')


def test_rmi_image_in_use(env):
    """Removing the last name of an image a container uses keeps the image
    (listed as <none>) until the container goes."""
    did = base_image(env)
    env.run('create', '--name', 'user-of-base', 'base:1', '--', 'true')
    env.run('rmi', 'base:1')
    imgs = env.json('images', '--json')
    check([(i['repository'], i['tag'], i['id']) for i in imgs] == [('<none>', '<none>', did)],
          'in-use image listed as <none>: %r' % imgs)
    check(len(os.listdir(os.path.join(env.store, 'layers'))) == 1, 'its layer kept')
    env.run('rm', 'user-of-base')
    check(env.json('images', '--json') == [], 'image gone with its last container')
    check(os.listdir(os.path.join(env.store, 'layers')) == [], 'layer gone too')
    # Importing another image under a used name drops the unused old one.
    base_image(env, 'x:1')
    oci_layout(env.path('other'), [(make_tar([entry('f', data=b'other')]), 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('other'), 'x:1')
    check(len(os.listdir(os.path.join(env.store, 'images'))) == 1, 'old image of x:1 collected')
    check(len(os.listdir(os.path.join(env.store, 'layers'))) == 1, 'and its layer')


def test_concurrent_imports(env):
    """Writers take the store lock: imports of images sharing a layer, run
    at the same time, both land and the layer is stored once."""
    top1 = make_tar([entry('one', data=b'1')])
    top2 = make_tar([entry('two', data=b'2')])
    oci_layout(env.path('a'), [(busybox_layer(), 'gzip'), (top1, 'gzip')])
    oci_layout(env.path('b'), [(busybox_layer(), 'gzip'), (top2, 'gzip')])
    env.give()
    procs = [subprocess.Popen(env.wrap([env.strata, '--store', env.store, 'import', 'oci:' + env.path(n), n]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env.env())
             for n in ('a', 'b')]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    check(all(p.returncode == 0 for p in procs), 'both imports succeed: %r' % errs)
    check(len(os.listdir(os.path.join(env.store, 'layers'))) == 3, 'shared layer stored once')
    check({i['repository'] for i in env.json('images', '--json')} == {'a', 'b'}, 'both tagged')



def tmp_cleaner(tmp):
    """Clean tmp/ as every store command that finds the store idle does
    (tools/store.c clean_tmp: take a directory's flock without waiting,
    remove it), in a loop, so that a command making its tmp/<owner>/ meets
    a cleaner between its mkdir and its flock."""
    while True:
        try:
            names = os.listdir(tmp)
        except OSError:
            continue
        for n in names:
            try:
                fd = os.open(os.path.join(tmp, n), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rmdir(os.path.join(tmp, n))
            except OSError:
                pass
            os.close(fd)


def test_imports_beside_cleaners(env):
    """A store command's tmp/<owner>/ is unlocked between its mkdir and its
    flock: a cleaner may remove it there, and the command must make another
    rather than fail with "create temporary directory ...: No such file or
    directory" (about 1 import in 30 did, here with two cleaners at work)."""
    n = 300
    for i in range(n):
        oci_layout(env.path('i%d' % i), [(make_tar([entry('f', data=b'%d' % i)]), 'tar')])
    env.give()
    env.run('images')
    cleaners = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                tmp_cleaner(os.path.join(env.store, 'tmp'))
            finally:
                os._exit(0)
        cleaners.append(pid)
    failed = []
    try:
        for i in range(n):
            r = env.run('import', 'oci:' + env.path('i%d' % i), 'i%d' % i, ok=None)
            if r.returncode:
                failed.append(r.err.strip())
    finally:
        for pid in cleaners:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    check(not failed, '%d of %d imports failed beside cleaners: %s' % (len(failed), n, failed[:2]))
    check(len(env.json('images', '--json')) == n, 'every import landed')


if __name__ == '__main__':
    sys.exit(main([test_rootfs_dir_and_tar, test_tag_rmi_shared_layers, test_history_inspect_empty_layer,
                   test_quirk_parents_missing, test_quirk_opaque_marker_order, test_quirk_type_bits_in_mode,
                   test_quirk_hardlinks, test_quirk_no_footer, test_quirk_zstd_and_formats,
                   test_devices_and_owners, test_rootless_owners_in_xattr, test_layers_wasted,
                   test_layers_and_diff_dir_vs_packed,
                   test_docker_and_oci_archives, test_docker_save_duplicate_layer, test_overlay_xattrs_dropped, test_nested_index, test_rmi_image_in_use,
                   test_concurrent_imports, test_imports_beside_cleaners]))
