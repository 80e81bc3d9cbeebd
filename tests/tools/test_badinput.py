#!/usr/bin/env python3
"""Bad input gets a clear error and changes nothing in the store.

Each case starts from a store holding one image, feeds strata something
broken or hostile, and checks: non-zero exit, a message naming the
operation, the path and the cause, and a store listing identical to the one
before (layers, configs, tags; tmp/ is scratch space that the next writer
empties). Hostile names must not have written anything outside the layer.

usage: test_badinput.py STRATA [--user] [TEST...]"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (Fail, check, entry, make_tar, oci_layout, busybox_layer, sha, gz, main, MT)


def prepare(env):
    oci_layout(env.path('base'), [(busybox_layer(), 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('base'), 'base:1')
    return env.listing()


def expect_refusal(env, before, src, *needles, name='bad:1'):
    env.give()
    r = env.run('import', src, name, ok=False)
    for n in needles:
        check(n in r.err, 'error should mention %r: %s' % (n, r.err.strip()))
    check(r.err.startswith('strata: ') and ('import' in r.err or 'read' in r.err),
          'message names the operation: ' + r.err.strip())
    where = src.split(':', 1)[1].split(':')[0]
    check(os.path.basename(where) in r.err, 'message names the source: ' + r.err.strip())
    after = env.listing()
    check(after == before, 'store changed: %r' % sorted(set(after) ^ set(before)))
    check('bad' not in env.run('images').out, 'no image appeared')
    # tmp/ is emptied by the next writer, and that writer succeeds.
    env.run('tag', 'base:1', 'probe:1')
    env.run('rmi', 'probe:1')
    check(os.listdir(os.path.join(env.store, 'tmp')) == [], 'tmp/ emptied by the next writer')


def test_dotdot(env):
    before = prepare(env)
    t = make_tar([entry('ok', data=b'1'), entry('../escaped', data=b'evil')])
    # Under two good layers, so the refusal must also drop them.
    oci_layout(env.path('x'), [(make_tar([entry('fine', data=b'f')]), 'gzip'), (t, 'gzip')])
    expect_refusal(env, before, 'oci:' + env.path('x'), "'..'", '../escaped')
    check(not os.path.exists(os.path.join(env.store, 'escaped')) and
          not os.path.exists(os.path.join(env.store, 'tmp', 'escaped')), 'nothing written outside')


def test_absolute(env):
    before = prepare(env)
    t = make_tar([entry('/abs-evil', data=b'evil')])
    oci_layout(env.path('x'), [(t, 'tar')])
    expect_refusal(env, before, 'oci:' + env.path('x'), 'absolute', '/abs-evil')
    check(not os.path.exists('/abs-evil'), 'nothing written at /')


def test_symlinked_parent(env):
    before = prepare(env)
    outside = env.path('outside')
    os.mkdir(outside)
    for target in (outside, '../../../../../../../..' + outside):
        t = make_tar([entry('link', 'symlink', target=target), entry('link/planted', data=b'evil')])
        oci_layout(env.path('x'), [(t, 'tar')])
        expect_refusal(env, before, 'oci:' + env.path('x'), 'link/planted', 'symlink')
        check(os.listdir(outside) == [], 'nothing planted through the symlink')
    # A hard link may not point out of the layer either.
    t = make_tar([entry('h', 'hardlink', target='../../../../etc/passwd')])
    oci_layout(env.path('y'), [(t, 'tar')])
    expect_refusal(env, before, 'oci:' + env.path('y'), 'hard link')


def test_truncated_and_corrupt(env):
    before = prepare(env)
    tar = busybox_layer()
    blob = gz(tar)
    with open(env.path('trunc.tar.gz'), 'wb') as f:
        f.write(blob[:len(blob) // 2])
    expect_refusal(env, before, 'rootfs:' + env.path('trunc.tar.gz'), 'truncated or corrupt')
    with open(env.path('trunc.tar'), 'wb') as f:
        f.write(tar[:len(tar) // 2 + 100])
    expect_refusal(env, before, 'rootfs:' + env.path('trunc.tar'), 'truncated or corrupt')
    bad = bytearray(blob)
    for i in range(len(bad) // 2, len(bad) // 2 + 64):
        bad[i] ^= 0x5a
    with open(env.path('corrupt.tar.gz'), 'wb') as f:
        f.write(bytes(bad))
    expect_refusal(env, before, 'rootfs:' + env.path('corrupt.tar.gz'), 'corrupt')
    with open(env.path('garbage'), 'wb') as f:
        f.write(os.urandom(4096))
    expect_refusal(env, before, 'rootfs:' + env.path('garbage'))


def test_digest_mismatch(env):
    before = prepare(env)
    tar = make_tar([entry('f', data=b'original')])
    oci_layout(env.path('x'), [(tar, 'tar')])
    # Same length, other bytes: the tar still parses, only the digest tells.
    blob = os.path.join(env.path('x'), 'blobs', 'sha256', sha(tar)[7:])
    with open(blob, 'r+b') as f:
        data = f.read()
        f.seek(data.index(b'original'))
        f.write(b'ORIGINAL')
    expect_refusal(env, before, 'oci:' + env.path('x'), 'digest mismatch')
    # A config whose diff_ids do not match the layers.
    def wrong_diffid(man, cfg):
        cfg['rootfs']['diff_ids'][0] = sha(b'something else')
    oci_layout(env.path('y'), [(tar, 'gzip')], mutate=wrong_diffid)
    expect_refusal(env, before, 'oci:' + env.path('y'), 'DiffID mismatch')
    # A manifest blob that is not what the index says.
    oci_layout(env.path('z'), [(tar, 'gzip')])
    import json
    idx = json.load(open(os.path.join(env.path('z'), 'index.json')))
    idx['manifests'][0]['digest'] = sha(b'no such manifest')
    json.dump(idx, open(os.path.join(env.path('z'), 'index.json'), 'w'))
    expect_refusal(env, before, 'oci:' + env.path('z'), 'blobs/sha256/')


def test_unknown_media_type(env):
    before = prepare(env)
    tar = make_tar([entry('f', data=b'x')])
    oci_layout(env.path('x'), [(tar, 'application/vnd.oci.image.layer.v1.tar+bzip2', sha(tar))])
    expect_refusal(env, before, 'oci:' + env.path('x'), 'tar+bzip2', 'cannot read')
    # Declared gzip, shipped plain.
    oci_layout(env.path('y'), [(tar, MT['gzip'], sha(tar))])
    expect_refusal(env, before, 'oci:' + env.path('y'), 'media type says gzip')
    # Hostile digests never become paths.
    def evil(man, cfg):
        man['layers'][0]['digest'] = 'sha256:../../../../etc/passwd'
    oci_layout(env.path('z'), [(tar, 'tar')], mutate=evil)
    expect_refusal(env, before, 'oci:' + env.path('z'), 'digest')


def test_malformed_documents(env):
    before = prepare(env)
    tar = make_tar([entry('f', data=b'x')])
    cases = []

    def layers_not_list(man, cfg):
        man['layers'] = {'oops': 1}
    def count_mismatch(man, cfg):
        cfg['rootfs']['diff_ids'].append(sha(b'extra'))
    def no_rootfs(man, cfg):
        del cfg['rootfs']
    def diffid_not_digest(man, cfg):
        cfg['rootfs']['diff_ids'][0] = 'sha256:zz'
    def config_type(man, cfg):
        man['config'] = {'mediaType': 'application/vnd.example.not-an-image', 'digest': sha(b'{}'), 'size': 2}
    def wrong_size(man, cfg):
        man['layers'][0]['size'] += 1
    for i, (mut, needle) in enumerate([(layers_not_list, 'layers'), (count_mismatch, 'diff_ids'),
                                        (no_rootfs, 'diff_ids'), (diffid_not_digest, 'diff_ids'),
                                        (config_type, 'config media type'), (wrong_size, 'size mismatch')]):
        d = env.path('m%d' % i)
        oci_layout(d, [(tar, 'gzip')], mutate=mut)
        if mut is config_type:
            with open(os.path.join(d, 'blobs', 'sha256', sha(b'{}')[7:]), 'wb') as f:
                f.write(b'{}')
        expect_refusal(env, before, 'oci:' + d, needle)
    d = env.path('broken-index')
    oci_layout(d, [(tar, 'gzip')])
    with open(os.path.join(d, 'index.json'), 'w') as f:
        f.write('{"schemaVersion": 2, "manifests": [')
    expect_refusal(env, before, 'oci:' + d, 'index.json')
    with open(os.path.join(d, 'index.json'), 'w') as f:
        f.write('{"schemaVersion": 2, "manifests": []}')
    expect_refusal(env, before, 'oci:' + d, 'no manifests')
    # docker-archive with a manifest.json that is not a list
    import tarfile, io
    with tarfile.open(env.path('bad-docker.tar'), 'w') as t:
        data = b'{"Config": "x.json"}'
        ti = tarfile.TarInfo('manifest.json')
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    expect_refusal(env, before, 'docker-archive:' + env.path('bad-docker.tar'), 'manifest.json')


def test_devices_rootless(env):
    if not env.user:
        return      # root can create them; test_images checks that they import
    before = prepare(env)
    t = make_tar([entry('dev', 'dir'), entry('dev/sda', 'blk', dev=(8, 0))])
    oci_layout(env.path('x'), [(t, 'tar')])
    expect_refusal(env, before, 'oci:' + env.path('x'), 'dev/sda', 'device nodes cannot be created')


def test_missing_names(env):
    before = prepare(env)
    for args in (['export', 'nope:1', 'oci:' + env.path('out')], ['history', 'nope:1'],
                 ['inspect', 'nope:1'], ['rmi', 'nope:1'], ['tag', 'nope:1', 'x:1'],
                 ['layers', 'nope'], ['diff', 'base:1', 'nope:2'], ['create', 'nope:1'],
                 ['run', 'nope:1', '--', 'true'], ['rm', 'nocontainer'], ['commit', 'nocontainer', 'x:1'],
                 ['start', 'nocontainer'], ['diff', 'nocontainer']):
        r = env.run(*args, ok=False)
        missing = next(a for a in args[1:] if a.startswith('no'))
        check('no such' in r.err and missing in r.err, '%s: error names what is missing: %s' % (args[0], r.err))
        check(env.listing() == before, '%s changed the store' % args[0])
    r = env.run('import', 'oci:' + env.path('does-not-exist'), 'x:1', ok=False)
    check('does-not-exist' in r.err and 'No such file' in r.err, 'missing source: ' + r.err)
    r = env.run('import', 'ftp:x', 'x:1', ok=False)
    check('unknown transport' in r.err, 'unknown transport: ' + r.err)
    check(not os.path.exists(env.path('out')), 'export of a missing image wrote nothing')
    check(env.listing() == before, 'store unchanged')


def test_interrupted_import(env):
    before = prepare(env)
    fifo = env.path('slow.tar')
    os.mkfifo(fifo)
    env.give()
    argv = env.wrap([env.strata, '--store', env.store, 'import', 'rootfs:' + fifo, 'half:1'])
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env.env())
    try:
        tar = busybox_layer()
        with open(fifo, 'wb') as w:
            w.write(tar[:len(tar) // 2])
            w.flush()
            # Wait until strata has unpacked into tmp/, then kill it midway.
            deadline = time.time() + 30
            while time.time() < deadline and not any(
                    os.listdir(os.path.join(env.store, 'tmp', d)) for d in os.listdir(os.path.join(env.store, 'tmp'))):
                time.sleep(0.05)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
    except BrokenPipeError:
        pass
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    check(p.returncode == -signal.SIGKILL, 'strata was killed midway (%r)' % p.returncode)
    check(env.listing() == before, 'a killed import leaves nothing visible')
    check('half' not in env.run('images').out, 'no half image')
    with open(env.path('full.tar'), 'wb') as f:
        f.write(busybox_layer())
    env.give()
    env.run('import', 'rootfs:' + env.path('full.tar'), 'half:1')
    check(os.listdir(os.path.join(env.store, 'tmp')) == [], 'leftovers cleaned by the next import')
    check('half' in env.run('images').out, 'the next import succeeds')


if __name__ == '__main__':
    sys.exit(main([test_dotdot, test_absolute, test_symlinked_parent, test_truncated_and_corrupt,
                   test_digest_mismatch, test_unknown_media_type, test_malformed_documents, test_devices_rootless,
                   test_missing_names, test_interrupted_import]))
