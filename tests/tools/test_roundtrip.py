#!/usr/bin/env python3
"""Round trips through the formats other tools speak: what strata exports,
skopeo reads and umoci unpacks, and strata imports again with identical
DiffIDs and image id; what skopeo and umoci write, strata imports.

usage: test_roundtrip.py STRATA [--user] [TEST...]"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (Fail, Skip, check, entry, make_tar, oci_layout, busybox_layer, sha, main)


def need(tool):
    if not shutil.which(tool):
        raise Skip('%s is not installed (scripts/setup.sh installs it)' % tool)


def two_layer_image(env):
    top = make_tar([entry('etc', 'dir'), entry('etc/.wh.hello'), entry('etc/new', data=b'new\n'),
                    entry('data', 'dir'), entry('data/a', data=b'A' * 5000), entry('data/b', 'hardlink', target='data/a')])
    cd, ids = oci_layout(env.path('src'), [(busybox_layer(), 'gzip'), (top, 'gzip')], tag='v1',
                         config={'Env': ['PATH=/bin', 'X=1'], 'WorkingDir': '/data'})
    env.give()
    env.run('import', 'oci:' + env.path('src') + ':v1', 'img:1')
    return cd, ids


def test_oci_dir(env):
    need('skopeo')
    need('umoci')
    cd, ids = two_layer_image(env)
    env.run('export', 'img:1', 'oci:' + env.path('out') + ':exp')
    ins = env.json('inspect', 'img:1')
    sk = json.loads(env.tool('skopeo', 'inspect', 'oci:' + env.path('out') + ':exp').out)
    check(sk['Layers'] == [l['digest'] for l in ins['layers']], 'skopeo sees our layer digests')
    check('X=1' in sk['Env'], 'skopeo sees the config')
    raw = json.loads(env.tool('skopeo', 'inspect', '--config', '--raw', 'oci:' + env.path('out') + ':exp').out)
    check(raw['rootfs']['diff_ids'] == ids, 'DiffIDs survive export')
    unpack = ['umoci', 'unpack'] + (['--rootless'] if env.user else []) + \
             ['--image', env.path('out') + ':exp', env.path('bundle')]
    env.tool(*unpack)
    rootfs = env.path('bundle', 'rootfs')
    check(open(os.path.join(rootfs, 'etc/new')).read() == 'new\n', 'umoci unpacked the top layer')
    check(not os.path.exists(os.path.join(rootfs, 'etc/hello')), 'umoci applied our whiteout')
    check(os.path.exists(os.path.join(rootfs, 'bin/busybox')), 'umoci unpacked the bottom layer')
    # Back into strata: the same image.
    d = env.run('import', 'oci:' + env.path('out') + ':exp', 'again:1').out.strip()
    check(d == cd, 'same image id after the round trip')
    check([l['diff_id'] for l in env.json('inspect', 'again:1')['layers']] == ids, 'identical DiffIDs')
    # Exporting a second tag into the same layout keeps the first.
    env.run('export', 'again:1', 'oci:' + env.path('out') + ':second')
    env.tool('skopeo', 'inspect', 'oci:' + env.path('out') + ':exp')
    env.tool('skopeo', 'inspect', 'oci:' + env.path('out') + ':second')


def test_archives(env):
    need('skopeo')
    cd, ids = two_layer_image(env)
    env.run('export', 'img:1', 'oci-archive:' + env.path('o.tar'))
    env.run('export', 'img:1', 'docker-archive:' + env.path('d.tar'))
    so = json.loads(env.tool('skopeo', 'inspect', 'oci-archive:' + env.path('o.tar')).out)
    sd = json.loads(env.tool('skopeo', 'inspect', 'docker-archive:' + env.path('d.tar')).out)
    check(len(so['Layers']) == 2 and len(sd['Layers']) == 2, 'skopeo reads both archives')
    check(sd['Layers'] == ids, 'docker-archive layers are the uncompressed tars (digest = DiffID)')
    import tarfile
    with tarfile.open(env.path('d.tar')) as t:
        man = json.load(t.extractfile('manifest.json'))
    check(man[0]['RepoTags'] == ['img:1'], 'docker-archive carries the tag: %r' % man)
    a = env.run('import', 'oci-archive:' + env.path('o.tar'), 'fromo').out.strip()
    b = env.run('import', 'docker-archive:' + env.path('d.tar'), 'fromd').out.strip()
    check(a == cd and b == cd, 'both archives import as the same image')
    # skopeo can move it on, e.g. towards a registry, through the layout.
    env.tool('skopeo', 'copy', '-q', 'docker-archive:' + env.path('d.tar'), 'oci:' + env.path('viaskopeo') + ':x')
    c = env.run('import', 'oci:' + env.path('viaskopeo') + ':x', 'viaskopeo').out.strip()
    check([l['diff_id'] for l in env.json('inspect', 'viaskopeo')['layers']] == ids, 'DiffIDs via skopeo')


def test_skopeo_zstd(env):
    need('skopeo')
    two_layer_image(env)
    env.run('export', 'img:1', 'oci:' + env.path('out') + ':exp')
    r = env.tool('skopeo', 'copy', '-q', '--dest-compress-format', 'zstd', '--dest-compress',
                 'oci:' + env.path('out') + ':exp', 'oci:' + env.path('z') + ':z', ok=False)
    if r.returncode:
        raise Skip('this skopeo cannot write zstd: ' + r.err.strip())
    env.give()
    want = [l['diff_id'] for l in env.json('inspect', 'img:1')['layers']]
    env.run('rmi', 'img:1')     # else the layers are there already, stored once
    env.run('import', 'oci:' + env.path('z') + ':z', 'z')
    ins = env.json('inspect', 'z')
    if env.packed():
        # No blob is kept: inspect shows what export writes, the plain tar.
        check(all(l['media_type'] == 'application/vnd.oci.image.layer.v1.tar' for l in ins['layers']),
              'a packed layer exports as the tar: %r' % [l['media_type'] for l in ins['layers']])
    else:
        check(all(l['media_type'].endswith('zstd') for l in ins['layers']), 'zstd layers')
    check([l['diff_id'] for l in ins['layers']] == want, 'same DiffIDs from zstd')


def test_umoci_insert(env):
    need('umoci')
    os.makedirs(env.path('files/sub'))
    with open(env.path('files/sub/f'), 'w') as f:
        f.write('from umoci\n')
    env.give()
    lay = env.path('ul')
    env.tool('umoci', 'init', '--layout', lay)
    env.tool('umoci', 'new', '--image', lay + ':t')
    env.tool('umoci', 'insert', '--image', lay + ':t', env.path('files/sub'), '/opt')
    env.tool('umoci', 'insert', '--image', lay + ':t', '--opaque', env.path('files/sub'), '/opt')
    env.tool('umoci', 'insert', '--image', lay + ':t', '--whiteout', '/opt/f')
    env.tool('umoci', 'config', '--image', lay + ':t', '--config.env', 'A=b')   # an empty_layer entry
    env.run('import', 'oci:' + lay + ':t', 'umo')
    h = env.json('history', 'umo', '--json')
    check(len(h) == 4 and h[0]['empty_layer'], 'config change is an empty_layer history entry')
    j = env.json('layers', 'umo', '--json')
    check(len(j['layers']) == 3, 'three layers')
    ch2 = {(c['kind'], c['path']) for c in j['layers'][2]['changes']}
    check(('D', '/opt/f') in ch2, 'whiteout layer deletes /opt/f: %r' % ch2)


if __name__ == '__main__':
    sys.exit(main([test_oci_dir, test_archives, test_skopeo_zstd, test_umoci_insert]))
