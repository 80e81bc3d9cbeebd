#!/usr/bin/env python3
"""Whatever a killed strata leaves in the store, the next command cleans.

A kill -9 can leave: work directories in tmp/ (an import), containers/<id>
directories holding only container.json.tmp.PID, upper/ and work/ (a
create), and NAME.tmp.PID files (any atomic write). The next command of the
store, reader or writer, removes them, leaves alone what belongs to a live
strata, and `ps -a` and `rm` know every container that is left.

usage: test_storeclean.py STRATA [--user] [TEST...]"""
import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import (check, oci_layout, busybox_layer, layer_present, main)


def prepare(env):
    oci_layout(env.path('base'), [(busybox_layer(), 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('base'), 'base:1')


def dead_pid():
    """A PID that is not running (a child that has exited and been reaped)."""
    p = subprocess.Popen(['true'])
    p.wait()
    return p.pid


def own(env, path):
    """Leftovers belong to the store's owner, as a killed strata's would."""
    if env.user:
        for root, dirs, files in os.walk(path):
            os.lchown(root, env.pw.pw_uid, env.pw.pw_gid)
            for n in dirs + files:
                os.lchown(os.path.join(root, n), env.pw.pw_uid, env.pw.pw_gid)
        os.lchown(path, env.pw.pw_uid, env.pw.pw_gid)


def mkfile(env, path, data=b'{}'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    own(env, path)


def containers(env):
    return sorted(os.listdir(os.path.join(env.store, 'containers')))


def ps_ids(env):
    return sorted(c['id'] for c in env.json('ps', '-a', '--json'))


def test_leftovers_by_hand(env):
    prepare(env)
    s = env.store
    keep_id = env.run('create', 'base:1', '--', '/bin/true').out.strip()
    dead = dead_pid()
    live = os.getpid()
    # tmp/: an owner directory nobody holds (killed import), one of the old
    # PID-SEQ form, a stray file; and one a live process holds (flock).
    for d in ('tmp/%d-0badc0de/0/diff/etc' % dead, 'tmp/%d-7/diff' % dead):
        os.makedirs(os.path.join(s, d))
        own(env, os.path.join(s, d.split('/')[0], d.split('/')[1]))
    mkfile(env, os.path.join(s, 'tmp', 'stray'))
    held = os.path.join(s, 'tmp', '%d-0000feed' % live)
    os.makedirs(os.path.join(held, '0', 'diff'))
    own(env, held)
    hfd = os.open(held, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(hfd, fcntl.LOCK_EX)
    # containers/: a killed create, with and without its record's temp file.
    half = ['%064x' % random.getrandbits(256) for _ in range(2)]
    for i, cid in enumerate(half):
        for leaf in ('upper', 'work'):
            os.makedirs(os.path.join(s, 'containers', cid, leaf))
        if i == 0:
            mkfile(env, os.path.join(s, 'containers', cid, 'container.json.tmp.%d' % dead))
        own(env, os.path.join(s, 'containers', cid))
    # NAME.tmp.PID of a dead writer beside real files; one of a live one stays.
    cfg = next(n for n in os.listdir(os.path.join(s, 'images')) if n.endswith('.json'))
    stale = ['tags.json.tmp.%d' % dead, 'images/%s.tmp.%d' % (cfg, dead)]
    beside = os.path.join(s, 'containers', keep_id, 'container.json.tmp.%d' % dead)
    mkfile(env, beside)
    for p in stale:
        mkfile(env, os.path.join(s, p))
    mkfile(env, os.path.join(s, 'images', '%s.tmp.%d' % (cfg, live)))
    # An import killed between storing its layers and tagging its image:
    # its commit marker makes the next command collect the orphans.
    orphan = os.path.join(s, 'layers', '0' * 64)
    mkfile(env, os.path.join(orphan, 'diff', 'f'))
    own(env, orphan)
    mkfile(env, os.path.join(s, 'commit.tmp.%d' % dead))
    layers_before = sorted(os.listdir(os.path.join(s, 'layers')))
    before_ps = ps_ids(env)          # a reader: it cleans when the store is idle
    try:
        check(sorted(os.listdir(os.path.join(s, 'tmp'))) == [os.path.basename(held)],
              'tmp/ keeps only the live owner: %r' % os.listdir(os.path.join(s, 'tmp')))
        check(os.path.isdir(os.path.join(held, '0', 'diff')), 'a live import keeps its work')
    finally:
        os.close(hfd)
    check(containers(env) == [keep_id], 'half-made containers are gone: %r' % containers(env))
    check(sorted(os.listdir(os.path.join(s, 'layers'))) == [l for l in layers_before if l != '0' * 64],
          'the orphan layer is collected, the image\'s stay')
    check(not os.path.exists(os.path.join(s, 'commit.tmp.%d' % dead)), 'commit marker removed')
    for p in stale:
        check(not os.path.exists(os.path.join(s, p)), '%s removed' % p)
    check(os.path.exists(os.path.join(s, 'images', '%s.tmp.%d' % (cfg, live))), 'a live writer\'s temp file stays')
    os.unlink(os.path.join(s, 'images', '%s.tmp.%d' % (cfg, live)))
    check(before_ps == [keep_id], 'ps -a lists the one real container: %r' % before_ps)
    # The holder is gone now: the next command (a writer this time) cleans,
    # also beside each container's record, which readers do not look at.
    env.run('tag', 'base:1', 'base:2')
    check(os.listdir(os.path.join(s, 'tmp')) == [], 'tmp/ empty once its owner is gone')
    check(not os.path.exists(beside), 'a stale temp file beside a record is removed by a writer')
    env.run('rm', keep_id)
    check(containers(env) == [] and ps_ids(env) == [], 'rm removes the container')
    check('base' in env.run('images').out, 'images intact')


def test_kill_create(env):
    """kill -9 of `strata create` at random points, 20 times: afterwards
    every container directory is one that ps -a lists and rm removes."""
    prepare(env)
    rnd = random.Random(int(os.environ.get('STRATA_TEST_SEED', '0')) or None)
    # Kill points spread over how long a create takes here and now.
    t0 = time.monotonic()
    env.run('rm', env.run('create', 'base:1', '--', '/bin/true').out.strip())
    span = (time.monotonic() - t0) / 2
    killed = 0
    for i in range(20):
        argv = env.wrap([env.strata, '--store', env.store, 'create', '--name', 'k%d' % i, 'base:1', '--', '/bin/true'])
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env.env())
        time.sleep(rnd.uniform(0, span * 1.2))
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed += p.returncode == -signal.SIGKILL
    # The next command cleans; then everything left is a listed container.
    ids = ps_ids(env)
    check(containers(env) == ids, 'every container directory is listed by ps -a: dirs %r, ps %r'
          % (containers(env), ids))
    for cid in ids:
        env.run('rm', cid)
    check(containers(env) == [] and ps_ids(env) == [], 'rm removes them all')
    check(os.listdir(os.path.join(env.store, 'tmp')) == [], 'tmp/ empty')
    for root, dirs, files in os.walk(env.store):
        for n in files:
            check('.tmp.' not in n, 'no temp file left: %s' % os.path.join(root, n))
    print('  %d of 20 creates killed' % killed)


def test_kill_import(env):
    """kill -9 of `strata import` at random points, 20 times, alternating
    two images: afterwards every listed image is whole, nothing is left
    in tmp/, and once the images are removed no layer stays behind."""
    prepare(env)
    from strata_t import make_tar, entry
    for i in range(2):
        oci_layout(env.path('img%d' % i), [(busybox_layer(), 'gzip'),
                                           (make_tar([entry('f%d' % i, data=os.urandom(200000))]), 'gzip')])
    env.give()
    rnd = random.Random(int(os.environ.get('STRATA_TEST_SEED', '0')) or None)
    killed = 0
    for i in range(20):
        argv = env.wrap([env.strata, '--store', env.store, 'import', 'oci:' + env.path('img%d' % (i % 2)),
                         'k%d:1' % (i % 2)])
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env.env())
        time.sleep(rnd.uniform(0, 0.15))
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed += p.returncode == -signal.SIGKILL
        if i % 5 == 4:
            env.run('rmi', 'k%d:1' % (i % 2), ok=None)
    images = [l.split()[0] for l in env.run('images').out.splitlines()[1:]]
    check(os.listdir(os.path.join(env.store, 'tmp')) == [], 'tmp/ empty after the next command: %r'
          % os.listdir(os.path.join(env.store, 'tmp')))
    used = set()
    for name in images:
        for l in env.json('inspect', name + ':1')['layers']:
            check(layer_present(l['path']), '%s: layer %s is there' % (name, l['diff_id']))
            used.add(l['diff_id'][7:])
    left = set(os.listdir(os.path.join(env.store, 'layers')))
    check(left == used, 'no layer without an image after a killed import: %r' % sorted(left - used))
    for i in range(2):
        env.run('import', 'oci:' + env.path('img%d' % i), 'k%d:1' % i)
    for name in ('base', 'k0', 'k1'):
        env.run('rmi', name + ':1')
    check(os.listdir(os.path.join(env.store, 'layers')) == [], 'no layer left once every image is gone: %r'
          % os.listdir(os.path.join(env.store, 'layers')))
    check(os.listdir(os.path.join(env.store, 'images')) == [], 'no image config left')
    print('  %d of 20 imports killed' % killed)


def test_kill_commit(env):
    """kill -9 of `strata commit` at random points, 20 times: afterwards
    every tag names a whole image, nothing is left in tmp/, and no layer
    stays that no image uses (the commit marker has the next command
    collect a layer committed before the image and tag)."""
    prepare(env)
    oci_layout(env.path('img'), [(busybox_layer(), 'gzip')])
    env.give()
    env.run('import', 'oci:' + env.path('img'), 'cbase:1')
    cid = env.run('create', '--name', 'c', 'cbase:1', 'true').out.strip()
    upper = os.path.join(env.store, 'containers', cid, 'upper')
    with open(os.path.join(upper, 'payload'), 'wb') as f:
        f.write(os.urandom(3 << 20))
    if env.user:
        os.chown(os.path.join(upper, 'payload'), env.pw.pw_uid, env.pw.pw_gid)
    rnd = random.Random(int(os.environ.get('STRATA_TEST_SEED', '0')) or None)
    killed = 0
    for i in range(20):
        argv = env.wrap([env.strata, '--store', env.store, 'commit', 'c', 'snap:%d' % i])
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env.env())
        time.sleep(rnd.uniform(0, 0.8))
        p.send_signal(signal.SIGKILL)
        p.wait()
        killed += p.returncode == -signal.SIGKILL
    env.run('images')   # the next command: it finds the dead commits' markers
    check(os.listdir(os.path.join(env.store, 'tmp')) == [], 'tmp/ empty after the next command: %r'
          % os.listdir(os.path.join(env.store, 'tmp')))
    used = set()
    for line in env.run('images').out.splitlines()[1:]:
        repo, tag = line.split()[:2]
        for l in env.json('inspect', '%s:%s' % (repo, tag))['layers']:
            check(layer_present(l['path']), '%s:%s: layer %s is there' % (repo, tag, l['diff_id']))
            used.add(l['diff_id'][7:])
    left = set(os.listdir(os.path.join(env.store, 'layers')))
    check(left <= used, 'no layer without an image after a killed commit: %r' % sorted(left - used))
    print('  %d of 20 commits killed' % killed)


if __name__ == '__main__':
    sys.exit(main([test_leftovers_by_hand, test_kill_create, test_kill_import, test_kill_commit]))
