#!/usr/bin/env python3
"""strata build: Containerfiles into layered images, as root and as an
unprivileged user. Each test builds from a context made here on top of a
busybox base image, then checks the image by running it and by reading its
config: layers, history, Env, Labels, ExposedPorts, owners and modes of
what COPY wrote, what .dockerignore left out; the cache (an unchanged
rebuild runs nothing and gives the same image; one changed file reruns the
steps from its COPY on); multi-stage builds with --target; a failing RUN
stops the build with its exit code and leaves nothing behind.

usage: test_build.py STRATA [--user] [TEST...]"""
import io
import json
import os
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (Fail, check, entry, make_tar, oci_layout, BUSYBOX, dev_wrap, main)

TOOLS = ('sh', 'ls', 'cat', 'echo', 'id', 'rm', 'mkdir', 'test', 'chmod', 'touch', 'pwd', 'env',
         'stat', 'wc', 'true', 'false')


def base_image(env):
    with open(BUSYBOX, 'rb') as f:
        bb = f.read()
    es = [entry('bin', 'dir'), entry('bin/busybox', data=bb, mode=0o755)]
    es += [entry('bin/' + t, 'symlink', target='busybox') for t in TOOLS]
    es += [entry('etc', 'dir'), entry('etc/passwd', data=b'root:x:0:0::/:/bin/sh\napp:x:1000:1000::/:/bin/sh\n'),
           entry('etc/group', data=b'root:x:0:\napp:x:1000:\n'), entry('tmp', 'dir', mode=0o1777),
           entry('usr', 'dir', mode=0o711)]
    oci_layout(env.path('base'), [(make_tar(es), 'gzip')], tag='latest')
    env.give()
    env.run('import', 'oci:' + env.path('base') + ':latest', 'base')


def context(env, files, containerfile, name='ctx'):
    d = env.path(name)
    os.makedirs(d, exist_ok=True)
    for rel, data in files.items():
        p = os.path.join(d, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'wb') as f:
            f.write(data)
    with open(os.path.join(d, 'Containerfile'), 'w') as f:
        f.write(containerfile)
    env.give()
    return d


def wrap(env):
    """Once per test: as --user on a host whose /dev/fuse and /dev/net/tun
    are root-only, private usable nodes (RUN steps get a private network)."""
    if not hasattr(env, 'devs'):
        env.devs = dev_wrap(env, tun=True)
    return env.devs


def build(env, *args, ok=True):
    return env.run('build', *args, ok=ok, wrap=wrap(env), timeout=600)


def image_of(r):
    """The image id a build prints last (a RUN's output comes before it)."""
    return r.out.strip().splitlines()[-1]


def run(env, image, *cmd, opts=()):
    return env.run('run', '--rm', *opts, image, *cmd, wrap=wrap(env)).out


def image_id(env, ref):
    return env.json('inspect', ref).get('Id') or env.json('inspect', ref).get('id')


def config(env, ref):
    j = env.json('inspect', ref)
    return j.get('Config') or j.get('config') or j


def tgz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as t:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o600
            ti.uid = 7
            ti.gid = 8
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


MAIN = '''# syntax=docker/dockerfile:1
FROM base
ARG GREETING=hello
ENV APP=/app \\
    NAME="strata build"
WORKDIR $APP
COPY --chown=app:app --chmod=0640 greeting.txt ./
COPY dir/ sub/
ADD files.tar.gz /unpacked/
RUN echo "RAN-$((1+1))"; echo "$GREETING from $NAME" > made.txt
LABEL version=1 maintainer="the strata tests"
EXPOSE 8080/tcp 53/udp
USER app
STOPSIGNAL SIGINT
CMD ["cat", "/app/made.txt"]
'''


def main_context(env):
    return context(env, {'greeting.txt': b'hi there\n', 'dir/a': b'a\n', 'dir/deep/b': b'b\n',
                         'files.tar.gz': tgz({'x/inner.txt': b'inner\n'})}, MAIN)


def test_build_and_run(env):
    base_image(env)
    ctx = main_context(env)
    r = build(env, '-t', 'app:1', '--build-arg', 'GREETING=howdy', ctx)
    check('RAN-2' in r.out + r.err, 'the RUN step ran and its output was shown: %s' % r.err)
    check('STEP 1/' in r.err, 'one line per step: %s' % r.err[:400])
    # rootless with only the caller mapped, uid 1000 has no place in the
    # container: run as its root there
    asroot = ('-u', '0') if env.user else ()
    check(run(env, 'app:1', opts=asroot) == 'howdy from strata build\n', 'CMD runs the file RUN wrote, with the build arg')
    if not env.user:
        check(run(env, 'app:1', 'id', '-u').strip() == '1000', 'USER app applies')
    ls = run(env, 'app:1', 'stat', '-c', '%u:%g %a %n', '/app/greeting.txt', '/app/sub/a', '/app/sub/deep/b',
             '/unpacked/x/inner.txt', opts=asroot)
    lines = ls.splitlines()
    if env.user:
        # one id mapped: every owner shows as root; the image's owners are
        # in the layer, in the ownership xattr of a rootless store
        layers = env.json('inspect', 'app:1')['layers']
        owner = None
        for l in layers:
            p = os.path.join(env.layer_tree(l['path']), 'app', 'greeting.txt')
            if os.path.exists(p):
                owner = os.getxattr(p, 'user.containers.override_stat').decode()
        check(owner == '1000:1000:0640', 'COPY --chown --chmod in a rootless store: %r' % owner)
        check(lines[0].split()[1] == '640', 'mode 640: %r' % lines[0])
    else:
        check(lines[0] == '1000:1000 640 /app/greeting.txt', 'COPY --chown --chmod: %r' % lines[0])
    check(lines[1].startswith('0:0 ') and lines[2].endswith('/app/sub/deep/b'),
          'COPY dir/ copies the contents, owned by root: %r' % lines[1:3])
    check(lines[3] == ('0:0 600 /unpacked/x/inner.txt' if env.user else '7:8 600 /unpacked/x/inner.txt'),
          'ADD unpacks a local tar with its owners: %r' % lines[3])
    check(run(env, 'app:1', 'stat', '-c', '%a', '/usr', opts=asroot).strip() == '711',
          'a directory of the base keeps its mode')
    c = config(env, 'app:1')
    cc = c['config']
    check('APP=/app' in cc['Env'] and 'NAME=strata build' in cc['Env'], 'ENV: %s' % cc['Env'])
    check(not any(e.startswith('GREETING=') for e in cc['Env']), 'a build arg is not kept in the image')
    check(cc['WorkingDir'] == '/app', 'WORKDIR')
    check(cc['Labels'] == {'version': '1', 'maintainer': 'the strata tests'}, 'LABEL: %s' % cc.get('Labels'))
    check(set(cc['ExposedPorts']) == {'8080/tcp', '53/udp'}, 'EXPOSE: %s' % cc.get('ExposedPorts'))
    check(cc['Cmd'] == ['cat', '/app/made.txt'] and cc['User'] == 'app' and cc['StopSignal'] == 'SIGINT',
          'CMD, USER, STOPSIGNAL')
    hist = c['history']
    layers = c['rootfs']['diff_ids']
    check(len(layers) == sum(1 for h in hist if not h.get('empty_layer')),
          'one history entry per layer: %d layers' % len(layers))
    # base, WORKDIR (creates /app), COPY, COPY, ADD, RUN
    check(len(layers) == 6, 'one layer per changing step: %d' % len(layers))
    check(any(h['created_by'].startswith('ENV ') and h.get('empty_layer') for h in hist),
          'ENV is an empty_layer history entry')
    h = env.run('history', 'app:1').out
    check('RUN echo "RAN-$((1+1))"' in h and 'COPY --chown=app:app' in h, 'history shows each instruction:\n' + h)


def steps(r):
    """The build's steps in order, each (instruction, came from the cache)."""
    out = []
    for line in r.err.splitlines():
        if line.startswith('STEP '):
            out.append([line.split(': ', 1)[1], False])
        elif line.startswith('--> using cache') and out:
            out[-1][1] = True
    return [tuple(s) for s in out]


def ran(r):
    return [s for s, cached in steps(r) if not cached and not s.startswith('FROM ')]


def test_cache(env):
    base_image(env)
    ctx = main_context(env)
    first = image_of(build(env, '-t', 'app:1', ctx))
    again = build(env, '-t', 'app:2', ctx)
    check('RAN-2' not in again.out + again.err and ran(again) == [] and len(steps(again)) == 13,
          'an unchanged rebuild runs nothing: %s' % steps(again))
    check(image_of(again) == first, 'an unchanged rebuild gives the same image: %s %s' % (again.out, first))
    # removing the names collects nothing the cache refers to
    env.run('rmi', 'app:1', 'app:2')
    after_rmi = build(env, '-t', 'app:1', ctx)
    check('RAN-2' not in after_rmi.out and image_of(after_rmi) == first,
          'the cache survives rmi and its garbage collection')
    # change the file of the second COPY: the first COPY is reused, the rest reruns
    with open(os.path.join(ctx, 'dir', 'a'), 'wb') as f:
        f.write(b'changed\n')
    env.give()
    third = build(env, '-t', 'app:3', ctx)
    err = third.err
    # exactly the steps from the COPY of the changed file on come from
    # no cache, and all before it do
    got = ran(third)
    check([s.split()[0] for s in got] == ['COPY', 'ADD', 'RUN', 'LABEL', 'EXPOSE', 'USER', 'STOPSIGNAL', 'CMD']
          and got[0] == 'COPY dir/ sub/', 'only the steps from the changed COPY on run: %s' % got)
    cached = [s.split()[0] for s, c in steps(third) if c]
    check(cached == ['ARG', 'ENV', 'WORKDIR', 'COPY'],
          'ARG, ENV, WORKDIR and the first COPY come from the cache: %s' % err)
    check('RAN-2' in third.out + err, 'the RUN after the changed COPY runs again')
    check(image_of(third) != first, 'a new image')
    check(run(env, 'app:3', 'cat', '/app/sub/a', opts=('-u', '0')) == 'changed\n', 'the new content is in the image')
    nc = build(env, '--no-cache', '-t', 'app:4', ctx)
    check('using cache' not in nc.err and 'RAN-2' in nc.out + nc.err, '--no-cache runs every step')
    # a build arg that RUN sees is part of its key
    ba = build(env, '--build-arg', 'GREETING=bonjour', '-t', 'app:5', ctx)
    check('RAN-2' in ba.out + ba.err, 'another build arg reruns the RUN')


def test_cache_memo(env):
    """The memo of file hashes (a file is not read again while its size,
    times and inode are unchanged) never hides a change: the same size
    and the old mtime put back still rerun the COPY, so does a file
    replaced by another of the same size and times; a damaged memo is
    no memo."""
    base_image(env)
    files = {'d/%03d.txt' % i: b'%03d\n' % i for i in range(300)}
    files['d/f.txt'] = b'one\n'
    ctx = context(env, files, 'FROM base\nCOPY d/ /d/\nRUN cat /d/f.txt > /seen\n')
    # the memo keeps only hashes of files whose ctime is older than the
    # build by more than a clock tick (50 ms; 2 s where the filesystem
    # keeps whole seconds): a second change within the tick would keep
    # the stamps
    time.sleep(2.5)
    first = build(env, '-t', 'memo:1', ctx)
    check(ran(first) == ['COPY d/ /d/', 'RUN cat /d/f.txt > /seen'], 'the first build runs all: %s' % steps(first))
    memo = os.path.join(env.store, 'build-cache', 'contexts')
    names = os.listdir(memo) if os.path.isdir(memo) else []
    check(len(names) == 1 and os.path.getsize(os.path.join(memo, names[0])) > 301 * 64,
          'the hashes of the context files are remembered: %s' % names)
    memo_file = os.path.join(memo, names[0])
    stamp = os.stat(memo_file).st_mtime_ns
    again = build(env, '-t', 'memo:2', ctx)
    check(ran(again) == [] and image_of(again) == image_of(first), 'an unchanged rebuild runs nothing')
    check(os.stat(memo_file).st_mtime_ns == stamp, 'a rebuild that learnt nothing does not write the memo')

    p = os.path.join(ctx, 'd', 'f.txt')
    st = os.stat(p)
    with open(p, 'wb') as f:
        f.write(b'two\n')
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    check(os.stat(p).st_size == st.st_size and os.stat(p).st_mtime_ns == st.st_mtime_ns, 'same size and mtime')
    third = build(env, '-t', 'memo:3', ctx)
    check(ran(third) == ['COPY d/ /d/', 'RUN cat /d/f.txt > /seen'],
          'new content of the same size under the old mtime reruns the COPY: %s' % steps(third))
    check(run(env, 'memo:3', 'cat', '/seen') == 'two\n', 'the new content is in the image')

    # another file of the same size and times renamed over it
    q = os.path.join(ctx, 'd', 'g.tmp')
    with open(q, 'wb') as f:
        f.write(b'six\n')
    st = os.stat(p)
    os.utime(q, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(q, p)
    env.give()
    fourth = build(env, '-t', 'memo:4', ctx)
    check(ran(fourth) == ['COPY d/ /d/', 'RUN cat /d/f.txt > /seen'],
          'a file replaced by one of the same size and mtime reruns the COPY: %s' % steps(fourth))
    check(run(env, 'memo:4', 'cat', '/seen') == 'six\n', 'the replacing content is in the image')

    with open(memo_file, 'r+b') as f:
        f.seek(100)
        f.write(b'garbage')
    fifth = build(env, '-t', 'memo:5', ctx)
    check(ran(fifth) == [] and image_of(fifth) == image_of(fourth),
          'a damaged memo is ignored (the files are read again, to the same key): %s' % steps(fifth))


def test_multistage_and_target(env):
    base_image(env)
    ctx = context(env, {}, '''FROM base AS builder
RUN echo built > /out.txt
FROM base AS other
RUN echo other > /other.txt
FROM base
COPY --from=builder /out.txt /res.txt
CMD cat /res.txt
''')
    build(env, '-t', 'ms:1', ctx)
    check(run(env, 'ms:1') == 'built\n', 'COPY --from=stage')
    r = env.run('run', '--rm', 'ms:1', 'test', '-e', '/other.txt', ok=None, wrap=wrap(env))
    check(r.returncode == 1, 'the final stage has nothing of the others')
    build(env, '--target', 'builder', '-t', 'ms:builder', ctx)
    check(run(env, 'ms:builder', 'cat', '/out.txt') == 'built\n', '--target builds that stage')
    r = env.run('build', '--target', 'nope', ctx, ok=False)
    check('nope' in r.err, 'an unknown --target is named')


def test_ignore_and_globs(env):
    base_image(env)
    ctx = context(env, {'a.txt': b'a', 'b.txt': b'b', 'c.md': b'c', 'secret.key': b'k',
                        'sub/keep.txt': b'keep', 'sub/drop.log': b'drop'},
                  'FROM base\nCOPY *.txt /g/\nCOPY . /all/\n')
    with open(os.path.join(ctx, '.dockerignore'), 'w') as f:
        f.write('# not for the image\n*.key\n**/*.log\n')
    env.give()
    build(env, '-t', 'ig:1', ctx)
    g = run(env, 'ig:1', 'ls', '/g').split()
    check(g == ['a.txt', 'b.txt'], 'COPY *.txt: %s' % g)
    a = run(env, 'ig:1', 'ls', '-a', '/all', '/all/sub').split()
    check('secret.key' not in a and 'drop.log' not in a and 'keep.txt' in a and 'c.md' in a,
          '.dockerignore leaves out what it names: %s' % a)
    r = env.run('build', ctx + '/..', '-f', os.path.join(ctx, 'Containerfile'), ok=False,
                wrap=wrap(env))
    check(r.returncode == 125 and 'no such file' in r.err, 'a source missing from the context: %s' % r.err)


def test_failing_run(env):
    base_image(env)
    ctx = context(env, {}, 'FROM base\nRUN echo partial > /half && echo the-step-said-this && exit 3\n')
    before = set(os.listdir(os.path.join(env.store, 'images')))
    r = build(env, '-t', 'bad:1', ctx, ok=False)
    check(r.returncode == 3, 'the build exits with the RUN\'s code: %d' % r.returncode)
    check('the-step-said-this' in r.out + r.err, "the step's output is shown")
    check(set(os.listdir(os.path.join(env.store, 'images'))) == before, 'no image was added')
    tmp = os.path.join(env.store, 'tmp')
    check(not os.path.isdir(tmp) or not os.listdir(tmp), 'nothing left in tmp/: %s' % os.listdir(tmp))
    tags = env.json('images', '--json')
    check(not any('bad' in json.dumps(t) for t in tags), 'no tag for a failed build')
    with open('/proc/self/mountinfo') as f:
        check(env.store not in f.read(), 'no mount left')


def test_bad_input(env):
    base_image(env)
    ctx = context(env, {}, 'FROM base\nFROB x\n')
    r = env.run('build', ctx, ok=False)
    check(r.returncode == 125 and 'Containerfile:2' in r.err and 'FROB' in r.err,
          'an unknown instruction is named with its line: %s' % r.err)
    os.unlink(os.path.join(ctx, 'Containerfile'))
    r = env.run('build', ctx, ok=False)
    check(r.returncode == 125 and 'Containerfile' in r.err, 'no Containerfile: %s' % r.err)
    ctx2 = context(env, {}, 'FROM nosuchimage:7\n', name='ctx2')
    r = env.run('build', ctx2, ok=False)
    check(r.returncode == 125 and 'nosuchimage' in r.err, 'an unknown base is named: %s' % r.err)
    ctx3 = context(env, {}, 'FROM base\nCOPY ../../etc/passwd /x\n', name='ctx3')
    r = env.run('build', ctx3, ok=False)
    check(r.returncode == 125 and 'context' in r.err, 'a source outside the context is refused: %s' % r.err)


def test_dockerfile_and_scratch(env):
    base_image(env)
    d = context(env, {'hello': b'hello from scratch\n'}, '')
    os.unlink(os.path.join(d, 'Containerfile'))
    with open(os.path.join(d, 'Dockerfile'), 'w') as f:
        f.write('FROM scratch\nCOPY hello /hello\nCOPY --from=base /bin/busybox /bin/busybox\n'
                'ENTRYPOINT ["/bin/busybox"]\nCMD ["cat", "/hello"]\n')
    env.give()
    build(env, '-t', 'sc:1', d)
    check(run(env, 'sc:1') == 'hello from scratch\n', 'Dockerfile from scratch, ENTRYPOINT + CMD, COPY --from=image')
    c = config(env, 'sc:1')
    check(len(c['rootfs']['diff_ids']) == 2, 'two layers')


if __name__ == '__main__':
    sys.exit(main([test_build_and_run, test_cache, test_cache_memo, test_multistage_and_target, test_ignore_and_globs,
                   test_failing_run, test_bad_input, test_dockerfile_and_scratch]))
