#!/usr/bin/env python3
"""The seeds' story with real containers: one image, two containers, each
writing its own layer; diff, commit, run the new image, the base image
unchanged, remove a container. Containers run through the launcher library
and strata-fs of this build.

As --user the test gives strata-test a usable /dev/fuse (a private 0666
node bound over it in a mount namespace of this test's own) when the host's
is root-only, as Debian's default 0666 would be.

usage: test_containers.py STRATA [--user] [TEST...]"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (Fail, Skip, check, entry, make_tar, oci_layout, busybox_layer, main)


def tree_digest(path):
    """Names, types, modes, owners, contents and xattrs of a directory tree."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for n in sorted(files + dirs):
            p = os.path.join(root, n)
            st = os.lstat(p)
            h.update(('%s %o %d %d\n' % (os.path.relpath(p, path), st.st_mode, st.st_uid, st.st_gid)).encode())
            if stat.S_ISREG(st.st_mode):
                with open(p, 'rb') as f:
                    h.update(f.read())
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
            if not stat.S_ISLNK(st.st_mode):
                for x in sorted(os.listxattr(p)):
                    h.update(x.encode() + os.getxattr(p, x))
    return h.hexdigest()


def fuse_wrap(env):
    """How to run strata so that it can open /dev/fuse."""
    fs = os.path.join(os.path.dirname(env.strata), '..', 'fs', 'strata-fs')
    if not os.path.exists(fs) and not os.environ.get('STRATA_FS'):
        raise Skip('strata-fs is not built next to strata (%s)' % fs)
    if not env.user:
        return None
    ok = subprocess.run(env.wrap(['sh', '-c', 'exec 3<>/dev/fuse']), stderr=subprocess.DEVNULL).returncode == 0
    if ok:
        return None
    d = env.path('fusedev')
    os.mkdir(d)
    rdev = os.stat('/dev/fuse').st_rdev
    script = ('mount -t tmpfs -o mode=755 strata-test-dev "$0" && mknod -m 666 "$0/fuse" c %d %d && '
              'mount --bind "$0/fuse" /dev/fuse && exec "$@"' % (os.major(rdev), os.minor(rdev)))
    return lambda argv: ['unshare', '-m', '--propagation', 'private', 'sh', '-c', script, d] + argv


def base(env):
    conf = [entry('etc/conf', data=b'k=v\n'), entry('dev', 'dir'), entry('proc', 'dir'), entry('sys', 'dir')]
    oci_layout(env.path('img'), [(busybox_layer(), 'gzip'), (make_tar(conf), 'gzip')],
               config={'Env': ['PATH=/bin', 'GREETING=from-the-image'], 'WorkingDir': '/etc',
                       'Cmd': ['sh', '-c', 'echo $GREETING; pwd']})
    env.give()
    env.run('import', 'oci:' + env.path('img'), 'base:1')


def etc_changes(env, c, w):
    j = json.loads(env.run('diff', c, '--json', wrap=w).out)
    return {(x['kind'], x['path']) for x in j if x['path'].startswith('/etc')}


def test_story(env):
    w = fuse_wrap(env)
    base(env)
    ins = env.json('inspect', 'base:1')
    layer_sums = [tree_digest(env.layer_tree(l['path'])) for l in ins['layers']]

    r = env.run('run', '--rm', 'base:1', wrap=w)
    check(r.out == 'from-the-image\n/etc\n', "image Cmd, Env and WorkingDir honoured: %r %s" % (r.out, r.err))

    env.run('create', '--name', 'a', 'base:1', '--', 'sh', '-c',
            'echo A > /etc/a-file && rm /etc/hello && chmod 600 /etc/conf', wrap=w)
    env.run('create', '--name', 'b', 'base:1', '--', 'sh', '-c', 'echo B > /etc/b-file; exit 7', wrap=w)
    check(env.run('start', '-a', 'a', wrap=w).returncode == 0, 'a ran')
    r = env.run('start', '-a', 'b', ok=None, wrap=w)
    check(r.returncode == 7, 'exit code of the command: %d %s' % (r.returncode, r.err))

    check(etc_changes(env, 'a', w) == {('C', '/etc'), ('A', '/etc/a-file'), ('D', '/etc/hello'), ('C', '/etc/conf')},
          'diff a: %r' % etc_changes(env, 'a', w))
    check(etc_changes(env, 'b', w) == {('C', '/etc'), ('A', '/etc/b-file')}, 'diff b: %r' % etc_changes(env, 'b', w))
    text = env.run('diff', 'a').out.splitlines()
    check('A /etc/a-file' in text and 'D /etc/hello' in text, 'docker diff format: %r' % text)

    ps = env.json('ps', '-a', '--json')
    st = {c['name']: (c['state'], c.get('exit_code')) for c in ps}
    check(st == {'a': ('exited', 0), 'b': ('exited', 7)}, 'ps -a: %r' % st)
    check(env.json('ps', '--json') == [], 'nothing running')
    check(env.json('inspect', 'a')['image'] == ins['id'], 'inspect a container')

    upper_a = os.path.join(env.store, 'containers', env.json('inspect', 'a')['id'], 'upper')
    before_commit = tree_digest(upper_a)
    d = env.run('commit', 'a', 'new:1', '--message', 'a file for a').out.strip()
    check(d.startswith('sha256:'), 'commit prints the image id')
    check(tree_digest(upper_a) == before_commit, 'commit leaves the container untouched')
    newtop = env.json('inspect', 'new:1')['layers'][-1]['path']
    if env.packed():
        check(newtop.endswith('/layer.pk') and os.path.isfile(newtop), 'commit writes a packed layer: %s' % newtop)
    else:
        check(os.path.isdir(newtop), 'commit writes a dir layer: %s' % newtop)
    h = env.json('history', 'new:1', '--json')
    check(h[0]['comment'] == 'a file for a' and len(h) == 3, 'history gained an entry: %r' % h[0])

    r = env.run('run', '--rm', 'new:1', '--', 'sh', '-c',
                'cat /etc/a-file; test -e /etc/hello || echo no-hello; ls -l /etc/conf', wrap=w)
    check(r.out.startswith('A\nno-hello\n-rw-------'), 'the committed image has the change: %r' % r.out)
    # What the layer says to other tools: root owns what the container's
    # root wrote, also in a rootless store; the chmod is there.
    env.run('export', 'new:1', 'oci:' + env.path('exported') + ':new')
    import tarfile, io
    # The layer as export wrote it: gzip from a dir store, the plain tar
    # (its digest the DiffID) from a packed one; tarfile reads either.
    top = env.json('inspect', 'new:1')['layers'][-1]['digest']
    with open(os.path.join(env.path('exported'), 'blobs', 'sha256', top[7:]), 'rb') as f:
        members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(f.read()))}
    check((members['etc/a-file'].uid, members['etc/a-file'].gid) == (0, 0), 'new file owned by root in the layer')
    check(members['etc/conf'].mode & 0o7777 == 0o600, 'chmod in the layer: %o' % members['etc/conf'].mode)
    # chmod made a metacopy in the container: commit took the data from the
    # image's layer (read in place from a packed one)
    check(members['etc/conf'].size == 4, 'the chmod-ed file keeps its data: %d bytes' % members['etc/conf'].size)
    check('etc/.wh.hello' in members, 'deletion as an OCI whiteout')
    r = env.run('run', '--rm', 'base:1', '--', 'sh', '-c', 'cat /etc/hello; test -e /etc/a-file || echo clean', wrap=w)
    check(r.out == 'hello\nclean\n', 'the base image is unchanged: %r' % r.out)
    check([tree_digest(env.layer_tree(l['path'])) for l in ins['layers']] == layer_sums, 'base layers byte-identical')
    check({c['name'] for c in env.json('ps', '-a', '--json')} == {'a', 'b'}, '--rm containers are gone')

    env.run('rm', 'b')
    check({c['name'] for c in env.json('ps', '-a', '--json')} == {'a'}, 'b removed')
    check(len(os.listdir(os.path.join(env.store, 'containers'))) == 1, "b's layer removed")
    r = env.run('diff', 'new:1', 'base:1', '--json')
    dd = {(x['kind'], x['path']) for x in json.loads(r.out)}
    check(('A', '/etc/hello') in dd and ('D', '/etc/a-file') in dd, 'image diff: %r' % dd)
    env.run('rm', 'a')
    env.run('rmi', 'base:1')
    r = env.run('run', '--rm', 'new:1', '--', 'cat', '/etc/a-file', wrap=w)
    check(r.out == 'A\n', 'new image still runs without the base tag')


def test_exit_codes_and_names(env):
    w = fuse_wrap(env)
    base(env)
    r = env.run('run', '--rm', 'base:1', '--', 'sh', '-c', 'kill -9 $$', ok=None, wrap=w)
    check(r.returncode == 137, 'killed by SIGKILL: 128+9, got %d' % r.returncode)
    r = env.run('run', '--rm', 'base:1', '--', '/no/such/command', ok=None, wrap=w)
    check(r.returncode == 127, 'missing command: 127, got %d' % r.returncode)
    env.run('create', '--name', 'x', 'base:1', wrap=w)
    r = env.run('create', '--name', 'x', 'base:1', ok=False, wrap=w)
    check('exists already' in r.err, 'duplicate name refused: ' + r.err)
    r = env.run('run', '--rm', '-e', 'GREETING=override', '-w', '/bin', 'base:1', wrap=w)
    check(r.out == 'override\n/bin\n', 'options beat the image config: %r' % r.out)
    # The image's User, by name through the image's own /etc/passwd.
    users = make_tar([entry('etc/passwd', data=b'root:x:0:0::/root:/bin/sh\napp:x:1234:2345::/:/bin/sh\n'),
                      entry('etc/group', data=b'root:x:0:\nstaff:x:50:\n')])
    oci_layout(env.path('u'), [(busybox_layer(), 'gzip'), (users, 'tar')],
               config={'User': 'app', 'Cmd': ['sh', '-c', 'echo $(id -u):$(id -g)']})
    env.give()
    env.run('import', 'oci:' + env.path('u'), 'withuser')
    r = env.run('run', '--rm', 'withuser', wrap=w, ok=None)
    if env.user and r.returncode:
        # Without a subuid range the rootless container maps only root.
        check('/etc/passwd' not in r.err and ('1234' in r.err or 'map' in r.err), 'rootless user error is clear: ' + r.err)
    else:
        check(r.out == '1234:2345\n', 'image User by name: %r %s' % (r.out, r.err))
        r = env.run('run', '--rm', '--user', 'app:staff', 'withuser', wrap=w)
        check(r.out == '1234:50\n', '--user NAME:GROUP: %r' % r.out)
    # Launcher options are kept with the container: start runs it the same way.
    os.mkdir(env.path('shared'))
    with open(env.path('shared', 'in'), 'w') as f:
        f.write('from the host\n')
    env.give()
    env.run('create', '--name', 'binder', '-v', env.path('shared') + ':/mnt', '--net', 'none', '--hostname', 'box',
            'base:1', '--', 'sh', '-c', 'cat /mnt/in; hostname; echo out > /mnt/out', wrap=w)
    for _ in range(2):
        r = env.run('start', '--attach', 'binder', wrap=w)
        check(r.out == 'from the host\nbox\n', 'bind, hostname kept across starts: %r %s' % (r.out, r.err))
    check(open(env.path('shared', 'out')).read() == 'out\n', 'writes through the bind reach the host')
    check(not any(x['path'].startswith('/mnt/') for x in json.loads(env.run('diff', 'binder', '--json').out)),
          'bind mount writes are not in the container layer')
    # Entrypoint stays; arguments after the image replace Cmd.
    oci_layout(env.path('ep'), [(busybox_layer(), 'gzip')],
               config={'Entrypoint': ['sh', '-c'], 'Cmd': ['echo default-cmd']})
    env.give()
    env.run('import', 'oci:' + env.path('ep'), 'ep')
    r = env.run('run', '--rm', 'ep', wrap=w)
    check(r.out == 'default-cmd\n', 'Entrypoint + Cmd: %r' % r.out)
    r = env.run('run', '--rm', 'ep', '--', 'echo given', wrap=w)
    check(r.out == 'given\n', 'Entrypoint + arguments: %r' % r.out)
    r = env.run('run', '--rm', '--rlimit', 'nofile=64:64', 'base:1', '--', 'sh', '-c', 'ulimit -n', wrap=w)
    check(r.out == '64\n', '--rlimit reaches the container: %r' % r.out)
    r = env.run('run', '--rm', '--rlimit', 'bogus=1', 'base:1', '--', 'true', wrap=w, ok=False)
    check('bogus' in r.err, 'bad --rlimit named: ' + r.err)
    r = env.run('run', '--rm', '--user', 'nobody-here', 'withuser', wrap=w, ok=False)
    check("not in the image's /etc/passwd" in r.err, 'unknown user: ' + r.err)


def test_renamed_and_replaced_dirs(env):
    """A renamed image directory (a redirect in upper, no data copied) and
    a directory emptied and refilled (opaque) must diff like docker diff and
    commit into an OCI layer that holds the whole renamed tree."""
    w = fuse_wrap(env)
    low = make_tar([entry('srv', 'dir'), entry('srv/one', data=b'1'), entry('srv/sub', 'dir'),
                    entry('srv/sub/two', data=b'2'), entry('var', 'dir'), entry('var/old', data=b'o')])
    mid = make_tar([entry('srv/three', data=b'3')])
    oci_layout(env.path('img'), [(busybox_layer(), 'gzip'), (low, 'gzip'), (mid, 'tar')])
    env.give()
    env.run('import', 'oci:' + env.path('img'), 'base:1')
    env.run('run', '--name', 'c', 'base:1', '--', 'sh', '-c',
            'mv /srv /moved && rm /moved/sub/two && rm -r /var && mkdir /var && echo n > /var/new', wrap=w)
    ch = {(x['kind'], x['path']) for x in json.loads(env.run('diff', 'c', '--json').out)
          if x['path'].startswith(('/srv', '/moved', '/var'))}
    want = {('D', '/srv'), ('A', '/moved'), ('A', '/moved/one'), ('A', '/moved/three'), ('A', '/moved/sub'),
            ('C', '/var'), ('A', '/var/new'), ('D', '/var/old')}
    check(ch == want, 'diff of renamed and replaced dirs: extra %r missing %r' % (ch - want, want - ch))
    env.run('commit', 'c', 'moved:1')
    r = env.run('run', '--rm', 'moved:1', '--', 'sh', '-c',
                'cat /moved/one /moved/three; ls /moved/sub; ls /var; test -e /srv || echo no-srv', wrap=w)
    check(r.out == '13new\nno-srv\n', 'committed image has the renamed tree: %r' % r.out)
    # The layer itself is plain OCI: another tool sees the same tree.
    j = env.json('layers', 'moved:1', '--json')
    top = {(x['kind'], x['path']) for x in j['layers'][-1]['changes']}
    check(('A', '/moved/three') in top and ('D', '/srv') in top, 'top layer copies the moved data: %r' % top)


def test_running_state(env):
    import time
    w = fuse_wrap(env)
    base(env)
    argv = [env.strata, '--store', env.store, 'run', '--name', 'sleeper', 'base:1', '--', 'sleep', '5']
    argv = env.wrap(argv)
    if w:
        argv = w(argv)
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env.env(), cwd=env.dir)
    try:
        deadline = time.time() + 20
        running = []
        while time.time() < deadline and not running:
            running = [c['name'] for c in env.json('ps', '--json')]
            time.sleep(0.1)
        check(running == ['sleeper'], 'ps shows the running container: %r' % running)
        r = env.run('rm', 'sleeper', ok=False)
        check('is running' in r.err and 'rm -f' in r.err, 'rm refuses a running container: ' + r.err)
        r = env.run('start', 'sleeper', ok=None, wrap=w)
        check(r.returncode != 0 and 'already running' in r.err, 'no second start: ' + r.err)
    finally:
        err = p.communicate(timeout=60)[1]
    check(p.returncode == 0, 'sleeper exited 0: %s' % err)
    st = {c['name']: c['state'] for c in env.json('ps', '-a', '--json')}
    check(st == {'sleeper': 'exited'} and env.json('ps', '--json') == [], 'exited afterwards: %r' % st)
    env.run('rm', 'sleeper')


if __name__ == '__main__':
    sys.exit(main([test_story, test_exit_codes_and_names, test_renamed_and_replaced_dirs, test_running_state]))
