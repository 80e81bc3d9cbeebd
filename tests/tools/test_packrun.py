#!/usr/bin/env python3
"""Containers over a packed store (STRATA_STORE_FORMAT=packed): the launcher
takes the store's layer.pk files as lower layers and strata-fs mounts them.
run (files of every layer, a user from the image's /etc/passwd), run -d
and exec, commit and diff, a build with RUN steps, and a store moved to
another path (each layer finds its chunk store relative to itself); the
store checks clean after each. As --user the rootless daemon reads the
packed layers.

usage: test_packrun.py STRATA [--user] [TEST...]"""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import Fail, Skip, check, entry, make_tar, oci_layout, busybox_layer, dev_wrap, main

os.environ['STRATA_STORE_FORMAT'] = 'packed'
SCALE = max(1, int(os.environ.get('STRATA_TEST_SCALE', '1')))


def image(env):
    """Three layers, each with a file of its own; the top one adds a user
    and removes a file of the bottom one."""
    mid = [entry('etc/conf', data=b'k=v\n'), entry('data', 'dir'), entry('data/big', data=bytes(range(256)) * 1024),
           entry('dev', 'dir'), entry('proc', 'dir'), entry('sys', 'dir')]
    top = [entry('etc/passwd', data=b'root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n'),
           entry('etc/group', data=b'root:x:0:\napp:x:1000:\n'),
           entry('etc/top', data=b'top\n'), entry('etc/.wh.hello')]
    oci_layout(env.path('img'), [(busybox_layer(), 'gzip'), (make_tar(mid), 'gzip'), (make_tar(top), 'gzip')],
               config={'Env': ['PATH=/bin'], 'Cmd': ['sh']})
    env.give()
    env.run('import', 'oci:' + env.path('img'), 'pk:1')
    layers = env.json('inspect', 'pk:1')['layers']
    for l in layers:
        check(l['path'].endswith('/layer.pk') and os.path.isfile(l['path']),
              'the store keeps packed layers: %r' % l['path'])


def store_checks_clean(env, what):
    r = env.run('system', 'check', ok=None)
    check(r.returncode == 0, '%s: system check: %s %s' % (what, r.out, r.err))


READ_ALL = 'cat /etc/conf /etc/top; test -e /etc/hello || echo no-hello; md5sum /data/big | cut -c1-8; busybox | head -1 | cut -c1-7'


def test_run_commit_diff(env):
    w = dev_wrap(env)
    image(env)
    r = env.run('run', '--rm', 'pk:1', '--', 'sh', '-c', READ_ALL, wrap=w)
    check(r.out.startswith('k=v\ntop\nno-hello\n') and r.out.endswith('BusyBox\n'),
          'files of every layer, the whiteout applied: %r %s' % (r.out, r.err))
    r = env.run('run', '--rm', '--user', 'app', 'pk:1', '--', 'sh', '-c', 'id -u; id -g', wrap=w, ok=None)
    if env.user and r.returncode:
        check('map' in r.err or 'uid' in r.err.lower(), 'rootless --user explains: %s' % r.err)
    else:
        check(r.out == '1000\n1000\n', 'user from the packed /etc/passwd: %r %s' % (r.out, r.err))

    env.run('create', '--name', 'c', 'pk:1', '--', 'sh', '-c',
            'echo new > /etc/new && rm /etc/conf && echo more >> /data/big && mkdir /made', wrap=w)
    check(env.run('start', '-a', 'c', wrap=w).returncode == 0, 'the container ran')
    d = {(x['kind'], x['path']) for x in json.loads(env.run('diff', 'c', '--json', wrap=w).out)}
    for want in (('A', '/etc/new'), ('D', '/etc/conf'), ('C', '/data/big'), ('A', '/made')):
        check(want in d, 'container diff has %r: %r' % (want, d))
    env.run('commit', 'c', 'pk:2')
    top = env.json('inspect', 'pk:2')['layers'][-1]['path']
    check(top.endswith('/layer.pk'), 'commit writes a packed layer: %s' % top)
    r = env.run('run', '--rm', 'pk:2', '--', 'sh', '-c',
                'cat /etc/new /etc/top; test -e /etc/conf || echo no-conf; tail -c 5 /data/big', wrap=w)
    check(r.out == 'new\ntop\nno-conf\nmore\n', 'the committed image over packed layers: %r %s' % (r.out, r.err))
    d = {(x['kind'], x['path']) for x in json.loads(env.run('diff', 'pk:2', 'pk:1', '--json').out)}
    # as for plain layers: what the second image has that the first lacks
    check(('D', '/etc/new') in d and ('A', '/etc/conf') in d and ('D', '/made') in d, 'image diff: %r' % d)
    r = env.run('run', '--rm', 'pk:1', '--', 'sh', '-c', READ_ALL, wrap=w)
    check(r.out.startswith('k=v\ntop\nno-hello\n'), 'the base image unchanged: %r' % r.out)
    env.run('rm', 'c')
    store_checks_clean(env, 'after run, commit and diff')


def test_detached_exec(env):
    w = dev_wrap(env)
    image(env)
    cid = env.run('run', '-d', '--name', 'd', 'pk:1', '--', 'sleep', '1000', wrap=w).out.strip()
    check(len(cid) == 64, 'run -d prints the id: %r' % cid)
    try:
        r = env.run('exec', 'd', 'sh', '-c', 'cat /etc/top /etc/conf; echo x > /tmp/x; cat /tmp/x', wrap=w)
        check(r.out == 'top\nk=v\nx\n', 'exec reads the packed layers and writes: %r %s' % (r.out, r.err))
        d = {(x['kind'], x['path']) for x in json.loads(env.run('diff', 'd', '--json', wrap=w).out)}
        check(('A', '/tmp/x') in d, 'diff of the running container: %r' % d)
    finally:
        env.run('stop', '-t', str(10 * SCALE), 'd', wrap=w, timeout=120 * SCALE)
    env.run('rm', 'd')
    store_checks_clean(env, 'after run -d and exec')


# Prints the bytes each path caches in its own inode (cachestat(2)), or
# "none" where the call is missing; run as the user that owns the mounts.
CACHED = """import sys
sys.path.insert(0, sys.argv[1])
from testlib import cached_bytes
print(' '.join(str(cached_bytes(p)) for p in sys.argv[2:]))"""


def test_shared_cache(env):
    """Containers of one image read its files from one page cache (strata
    sets strata-fs sharecache=direct): a data file two running containers
    have read (with read(2): md5sum) is not cached in either container's
    mount, but is in a third's run with --storage-opt sharecache=off; a program, which keeps the cached mode as it is mapped, is, which
    shows the count sees pages. Counted from the host through /proc/PID/root
    (as root: a rootless container's is closed to its user)."""
    w = dev_wrap(env)
    image(env)
    r = env.run('run', '--rm', '--storage-opt', 'size=10G', 'pk:1', '--', 'true', wrap=w, ok=None)
    check(r.returncode == 125 and 'size=10G' in r.err and 'sharecache=off' in r.err,
          'an unknown --storage-opt: 125 naming it and what strata knows: %d %r' % (r.returncode, r.err))
    names = ('s1', 's2', 'own')
    try:
        for n in names:
            own = ['--storage-opt', 'sharecache=off'] if n == 'own' else []
            env.run('run', '-d', '--name', n, *own, 'pk:1', '--', 'sh', '-c',
                    'md5sum /data/big >/dev/null && busybox cat /bin/busybox >/dev/null && echo ready && '
                    'exec sleep 1000', wrap=w)
        deadline = time.monotonic() + 60 * SCALE
        while not all(env.run('logs', n, wrap=w).out == 'ready\n' for n in names):
            check(time.monotonic() < deadline, 'the containers did not read their files: %r'
                  % [env.run('logs', n, wrap=w, ok=None).out for n in names])
            time.sleep(0.1)
        tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # (the interpreter running us may live under /root, closed to the user)
        py = '/usr/bin/python3' if env.user and os.path.exists('/usr/bin/python3') else sys.executable
        for n in names:
            pid = env.json('inspect', n)['State']['Pid']
            root = '/proc/%d/root' % pid
            r = subprocess.run(env.wrap([py, '-c', CACHED, tests, root + '/data/big',
                                         root + '/bin/busybox']),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60 * SCALE)
            if env.user and 'PermissionError' in r.stderr:
                # /proc/PID/root of a process in the container's user
                # namespace is closed to its user; fs_rootless_sharedirect
                # and bench's rootless density rows cover the rootless mount
                print('note: %s: the rootless container\'s files cannot be opened from outside '
                      'it (/proc/%d/root: EACCES); pages not counted' % (n, pid))
                continue
            check(r.returncode == 0, 'counting the pages of %s: %s' % (n, r.stderr))
            data, prog = r.stdout.split()
            if data == 'None':
                raise Skip('no cachestat(2) here (Linux 6.5+) to count the pages')
            check(int(prog) > 0, '%s: the program read and run holds no pages in the container\'s '
                  'mount, so the count cannot tell' % n)
            if n == 'own':
                check(int(data) > 0, '--storage-opt sharecache=off: the container\'s mount holds no '
                      'pages of /data/big it read')
            else:
                check(int(data) == 0, '%s: the container\'s mount caches %s bytes of /data/big itself; '
                      'expected it read from the layer\'s cache' % (n, data))
    finally:
        for n in names:
            env.run('rm', '-f', n, wrap=w, ok=None, timeout=120 * SCALE)
    store_checks_clean(env, 'after two containers shared a cache')


def test_build_run(env):
    w = dev_wrap(env, tun=True)
    image(env)
    ctx = env.path('ctx')
    os.makedirs(ctx)
    with open(os.path.join(ctx, 'Containerfile'), 'w') as f:
        f.write('FROM pk:1\nRUN cat /etc/top /etc/conf > /etc/both && rm /etc/top\n'
                'COPY file /etc/copied\nRUN cat /etc/copied >> /etc/both\n')
    with open(os.path.join(ctx, 'file'), 'w') as f:
        f.write('copied\n')
    env.give()
    r = env.run('build', '-t', 'built:1', ctx, wrap=w, timeout=600 * SCALE)
    r = env.run('run', '--rm', 'built:1', '--', 'sh', '-c', 'cat /etc/both; test -e /etc/top || echo no-top', wrap=w)
    check(r.out == 'top\nk=v\ncopied\nno-top\n', 'RUN steps over packed layers: %r %s' % (r.out, r.err))
    for l in env.json('inspect', 'built:1')['layers']:
        check(l['path'].endswith('/layer.pk'), 'the build writes packed layers: %s' % l['path'])
    store_checks_clean(env, 'after a build')


def test_program_copies(env):
    """A container's mount keeps the programs it starts decompressed beside
    their layer (strata-fs progcache), owned by the store's owner; the next
    container starts them from that copy, not from the chunk store."""
    w = dev_wrap(env)
    image(env)
    bottom = env.json('inspect', 'pk:1')['layers'][0]['path']
    progs = bottom + '.progs'
    env.run('run', '--rm', 'pk:1', '--', 'busybox', 'true', wrap=w)
    copies = os.listdir(progs) if os.path.isdir(progs) else []
    check(len(copies) == 1, 'one program copy beside the bottom layer after a run: %r' % copies)
    copy = os.path.join(progs, copies[0])
    with open(copy, 'rb') as f, open('/bin/busybox', 'rb') as b:
        check(f.read() == b.read(), 'the copy holds the program\'s bytes')
    owner = env.pw.pw_uid if env.user else 0
    check(os.stat(copy).st_uid == owner and os.stat(progs).st_uid == owner,
          'the copies belong to the store\'s owner (%d): %d' % (owner, os.stat(copy).st_uid))
    r = env.run('system', 'df')
    check('programs kept decompressed for containers' in r.out, 'system df counts the copies: %r' % r.out)
    # every pack damaged: the program still starts (from its copy), a data
    # file of the store fails
    packs = [os.path.join(d, n) for d, _, fs in os.walk(os.path.join(env.store, 'chunks'))
             for n in fs if n.endswith('.pack')]
    saved = {}
    for p in packs:
        with open(p, 'rb') as f:
            saved[p] = f.read()
        bad = bytearray(saved[p])
        for off in range(0, len(bad), 61):
            bad[off] ^= 0xff
        os.chmod(p, 0o644)
        with open(p, 'wb') as f:
            f.write(bad)
    try:
        r = env.run('run', '--rm', 'pk:1', '--', 'busybox', 'true', wrap=w, ok=None)
        check(r.returncode == 0, 'the program starts from its copy with the chunk store damaged: %d %s'
              % (r.returncode, r.err))
        r = env.run('run', '--rm', 'pk:1', '--', 'busybox', 'cat', '/data/big', wrap=w, ok=None)
        check(r.returncode != 0, 'a data file of the damaged store does not read: %r' % r.out[:80])
    finally:
        for p, b in saved.items():
            with open(p, 'wb') as f:
                f.write(b)
    store_checks_clean(env, 'after runs that made program copies')
    env.run('rmi', 'pk:1')
    check(not os.path.exists(progs), 'rmi removes the layer with its program copies')


def test_moved_store(env):
    """Each layer names its chunk store relative to itself: a store moved
    (or copied) elsewhere keeps working."""
    w = dev_wrap(env)
    image(env)
    pk = env.json('inspect', 'pk:1')['layers'][0]['path']
    with open(pk, 'rb') as f:
        meta = f.read()
    check(env.store.encode() not in meta, 'a layer file does not record the store path')
    moved = env.path('moved')
    os.rename(env.store, moved)
    copy = env.path('copy')
    subprocess.run(['cp', '-a', moved, copy], check=True)
    env.store = moved
    r = env.run('run', '--rm', 'pk:1', '--', 'sh', '-c', READ_ALL, wrap=w)
    check(r.out.startswith('k=v\ntop\nno-hello\n'), 'the moved store runs: %r %s' % (r.out, r.err))
    store_checks_clean(env, 'moved store')
    shutil.rmtree(moved)
    env.store = copy
    env.run('export', 'pk:1', 'oci:' + env.path('out') + ':x')
    r = env.run('run', '--rm', 'pk:1', '--', 'sh', '-c', READ_ALL, wrap=w)
    check(r.out.startswith('k=v\ntop\nno-hello\n'), 'a copy of the store runs: %r %s' % (r.out, r.err))
    store_checks_clean(env, 'copied store')


def test_not_a_layer(env):
    """The launcher takes a lower that is a packed layer file, not any file."""
    w = dev_wrap(env)
    image(env)
    rt = os.path.join(os.path.dirname(env.strata), '..', 'runtime', 'strata-run')
    if not os.path.exists(rt):
        return
    bogus = env.path('bogus.pk')
    with open(bogus, 'wb') as f:
        f.write(b'NOTAPACK' + bytes(100))
    os.mkfifo(env.path('fifo'))
    env.give()
    for lower, why in ((bogus, 'packed layer file'), (env.path('fifo'), 'packed layer file')):
        argv = env.wrap([rt, '--lowerdir', lower, '--', '/bin/sh', '-c', 'true'])
        if w:
            argv = w(argv)
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60 * SCALE)
        err = r.stderr.decode(errors='replace')
        check(r.returncode != 0 and why in err and lower in err, 'refused %s: %d %s' % (lower, r.returncode, err))


if __name__ == '__main__':
    sys.exit(main([test_run_commit_diff, test_detached_exec, test_shared_cache, test_build_run, test_program_copies,
                   test_moved_store,
                   test_not_a_layer]))
