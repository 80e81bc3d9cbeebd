#!/usr/bin/env python3
"""Bad input gets a clear error and changes nothing in the store.

Each case starts from a store holding one image, feeds strata something
broken or hostile, and checks: non-zero exit, a message naming the
operation, the path and the cause, and a store listing identical to the one
before (layers, configs, tags; tmp/ is scratch space that the next writer
empties). Hostile names must not have written anything outside the layer.

usage: test_badinput.py STRATA [--user] [TEST...]"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (Fail, Skip, check, entry, make_tar, oci_layout, busybox_layer, sha, gz, main, MT)


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
    """A debootstrap-style tar holds /dev/null and friends. Rootless, they
    are left out as rootless podman leaves them out, with one line that
    says so; the rest of the image (a FIFO, a hard link to a device too)
    imports. As root they are kept (test_images)."""
    if not env.user:
        return
    prepare(env)
    devs = [('null', 'chr', (1, 3)), ('zero', 'chr', (1, 5)), ('random', 'chr', (1, 8)),
            ('urandom', 'chr', (1, 9)), ('tty', 'chr', (5, 0)), ('console', 'chr', (5, 1)),
            ('ptmx', 'chr', (5, 2)), ('loop0', 'blk', (7, 0))]
    es = [entry('dev', 'dir')] + [entry('dev/' + n, k, dev=d, mode=0o666) for n, k, d in devs]
    es += [entry('dev/null2', 'hardlink', target='dev/null'), entry('dev/initctl', 'fifo'),
           entry('etc', 'dir'), entry('etc/hostname', data=b'deb\n')]
    t = make_tar(es)
    with open(env.path('deb.tar'), 'wb') as f:
        f.write(t)
    t2 = make_tar(es + [entry('etc/other', data=b'2')])
    oci_layout(env.path('x'), [(t2, 'gzip')])
    env.give()
    for src, name, t in (('rootfs:' + env.path('deb.tar'), 'deb:1', t), ('oci:' + env.path('x'), 'debo:1', t2)):
        r = env.run('import', src, name)
        lines = [l for l in r.err.splitlines() if 'left out' in l]
        check(len(lines) == 1, 'one line says what was left out: %r' % r.err)
        check('9 device nodes' in lines[0] and 'dev/null' in lines[0] and 'rootless' in lines[0],
              'the line counts and names them: ' + lines[0])
        ins = env.json('inspect', name)
        p = env.layer_tree(ins['layers'][0]['path'])
        check(not os.path.lexists(os.path.join(p, 'dev', 'null')), 'no device in the layer')
        check(not os.path.lexists(os.path.join(p, 'dev', 'null2')), 'no link to a left-out device')
        check(os.path.isdir(os.path.join(p, 'dev')), 'dev/ itself kept')
        check(stat.S_ISFIFO(os.lstat(os.path.join(p, 'dev', 'initctl')).st_mode), 'a FIFO is kept')
        with open(os.path.join(p, 'etc', 'hostname')) as f:
            check(f.read() == 'deb\n', 'files imported')
        check(ins['layers'][0]['diff_id'] == sha(t), 'the DiffID is the tar as shipped')


def blob_path(layout, digest):
    return os.path.join(layout, 'blobs', 'sha256', digest[7:])


def layout_digests(layout):
    """(manifest digest, config digest, [layer digests]) of a one-image layout."""
    idx = json.load(open(os.path.join(layout, 'index.json')))
    md = idx['manifests'][0]['digest']
    man = json.load(open(blob_path(layout, md)))
    return md, man['config']['digest'], [l['digest'] for l in man['layers']]


def test_hostile_layout(env):
    """index.json or a blob that is a FIFO, a device or a symlink to
    /dev/zero, and a blob bigger than its descriptor says: each is refused
    at once (strata used to wait on the FIFO for ever, holding the store's
    lock), with a message naming the file and what it is."""
    before = prepare(env)
    tar = make_tar([entry('f', data=b'x' * 5000)])
    n = [0]

    def layout():
        n[0] += 1
        d = env.path('h%d' % n[0])
        oci_layout(d, [(tar, 'gzip')])
        return d

    def refuse(d, *needles):
        expect_refusal(env, before, 'oci:' + d, *needles)

    d = layout()
    os.unlink(os.path.join(d, 'index.json'))
    os.mkfifo(os.path.join(d, 'index.json'))
    refuse(d, 'index.json', 'FIFO')
    d = layout()
    os.unlink(os.path.join(d, 'index.json'))
    os.symlink('/dev/zero', os.path.join(d, 'index.json'))
    refuse(d, 'index.json', 'symlink')
    d = layout()
    os.unlink(os.path.join(d, 'index.json'))
    os.mknod(os.path.join(d, 'index.json'), 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    refuse(d, 'index.json', 'character device')
    # The manifest, the config and the layer blob in turn.
    for which in range(3):
        for kind in ('fifo', 'zero', 'chr'):
            d = layout()
            md, cd, lds = layout_digests(d)
            p = blob_path(d, (md, cd, lds[0])[which])
            os.unlink(p)
            if kind == 'fifo':
                os.mkfifo(p)
            elif kind == 'zero':
                os.symlink('/dev/zero', p)
            else:
                os.mknod(p, 0o644 | stat.S_IFCHR, os.makedev(1, 5))
            refuse(d, os.path.basename(p), {'fifo': 'FIFO', 'zero': 'symlink', 'chr': 'character device'}[kind])
    # A symlinked blobs/ directory leading out of the layout.
    d = layout()
    md, cd, lds = layout_digests(d)
    outside = env.path('outside-blobs')
    shutil.move(os.path.join(d, 'blobs', 'sha256'), outside)
    os.symlink(outside, os.path.join(d, 'blobs', 'sha256'))
    refuse(d, 'leads out of the image layout')
    # A layer blob 256 MiB bigger than its descriptor says (sparse): refused
    # before a byte of it is read, so nothing is copied into the store.
    d = layout()
    md, cd, lds = layout_digests(d)
    with open(blob_path(d, lds[0]), 'r+b') as f:
        f.truncate(os.fstat(f.fileno()).st_size + (256 << 20))
    refuse(d, 'size mismatch', 'descriptor')
    # The same in an oci-archive: the member's header gives its size.
    arch = env.path('big.tar')
    with tarfile.open(arch, 'w') as t:
        t.add(d, arcname='.')
    expect_refusal(env, before, 'oci-archive:' + arch, 'size mismatch', 'descriptor')
    # Archives are read more than once: a FIFO or device as the archive is
    # refused, and a rootfs tar may be a FIFO (test_slow_input) but not a device.
    fifo = env.path('fifo.tar')
    os.mkfifo(fifo)
    expect_refusal(env, before, 'oci-archive:' + fifo, 'FIFO')
    expect_refusal(env, before, 'docker-archive:' + fifo, 'FIFO')
    os.symlink('/dev/zero', env.path('zero.tar'))
    expect_refusal(env, before, 'rootfs:' + env.path('zero.tar'), 'character device')
    expect_refusal(env, before, 'oci-archive:' + env.path('zero.tar'), 'character device')


def test_slow_input(env):
    """An import waiting on a slow input holds no lock: `images`, another
    import and `rm` of nothing complete meanwhile; then the slow import
    finishes."""
    prepare(env)
    fifo = env.path('slow.tar')
    os.mkfifo(fifo)
    tar = busybox_layer()
    with open(env.path('other.tar'), 'wb') as f:
        f.write(make_tar([entry('other', data=b'o')]))
    env.give()
    argv = env.wrap([env.strata, '--store', env.store, 'import', 'rootfs:' + fifo, 'slow:1'])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env.env())
    try:
        with open(fifo, 'wb') as w:
            w.write(tar[:len(tar) // 2])
            w.flush()
            # strata is now reading (it has had half of the tar) and waits
            # for the rest: the store must serve everyone else meanwhile.
            # The timeouts are generous: before, these waited for ever.
            out = env.run('images', timeout=90).out
            check('base' in out and 'slow' not in out, 'images lists the store during the import: ' + out)
            env.run('import', 'rootfs:' + env.path('other.tar'), 'other:1', timeout=90)
            env.run('tag', 'base:1', 'base:2', timeout=90)
            check(p.poll() is None, 'the slow import still waits for its input')
            w.write(tar[len(tar) // 2:])
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    check(p.returncode == 0, 'the slow import succeeds: %s' % err.decode(errors='replace'))
    out = env.run('images').out
    for name in ('base', 'slow', 'other'):
        check(name in out, '%s is listed: %s' % (name, out))
    check(os.listdir(os.path.join(env.store, 'tmp')) == [], 'tmp/ is empty afterwards')


def test_full_store(env):
    """A store on a full filesystem: the error says the store's filesystem is
    full and where, not that the archive is corrupt. The store is a 2 MiB
    tmpfs (then one with room for 16 inodes) mounted in a mount namespace
    of the test's own (unshare -m)."""
    if not shutil.which('unshare'):
        raise Skip('no unshare')
    data = os.urandom(3 << 20)
    tar = make_tar([entry('big', data=data)])
    for name, blob in (('big.tar', tar), ('big.tar.gz', gz(tar))):
        with open(env.path(name), 'wb') as f:
            f.write(blob)
    oci_layout(env.path('x'), [(tar, 'gzip')])
    # 300 files: an inode each in a directory store; a packed store keeps
    # them in one pack file, and 16 inodes are too few for the chunk store,
    # the pack, its index and the layer's files, which each step of the
    # import that writes must report as a full store
    many = make_tar([entry('d', 'dir')] + [entry('d/f%d' % i, data=os.urandom(600)) for i in range(300)])
    with open(env.path('many.tar'), 'wb') as f:
        f.write(many)
    env.give()
    os.makedirs(env.store, exist_ok=True)
    owner = '%d:%d' % ((env.pw.pw_uid, env.pw.pw_gid) if env.user else (0, 0))

    def small_store(opts):
        def wrap(argv):
            # The mount lives as long as this namespace: the command, then
            # a listing of what it left in tmp/.
            script = ('mount -t tmpfs -o %s,mode=0700 strata-test-full "$0" && chown %s "$0" && '
                      '"$@"; rc=$?; ls -A "$0/tmp"; exit $rc' % (opts, owner))
            return ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, env.store] + argv
        return wrap

    for src, opts in (('rootfs:' + env.path('big.tar'), 'size=2m'), ('rootfs:' + env.path('big.tar.gz'), 'size=2m'),
                      ('oci:' + env.path('x'), 'size=2m'), ('rootfs:' + env.path('many.tar'), 'size=64m,nr_inodes=16')):
        r = env.run('import', src, 'big:1', ok=False, wrap=small_store(opts))
        check('truncated or corrupt' not in r.err, 'a full store is not a corrupt archive: ' + r.err.strip())
        check('No space left on device' in r.err and "store's filesystem is full" in r.err,
              'says the store is full: ' + r.err.strip())
        check('mounted at ' + env.store in r.err, 'says where: ' + r.err.strip())
        check(r.out.strip() == '', 'the failed import left nothing in tmp/: %r' % r.out)
    with open('/proc/self/mountinfo') as f:
        check('strata-test-full' not in f.read(), 'the tmpfs stayed in its namespace')


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
                   test_hostile_layout, test_slow_input, test_full_store,
                   test_missing_names, test_interrupted_import]))
