#!/usr/bin/env python3
"""The strata command line itself: usage, bad arguments, the store
location rules, and `strata bench` reaching the harness in bench/.

usage: test_cli.py STRATA [--user] [TEST...]"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import Fail, Skip, check, main


def test_usage(env):
    r = env.run('--help')
    for cmd in ('import', 'export', 'images', 'tag', 'rmi', 'history', 'inspect', 'diff', 'layers',
                'commit', 'create', 'run', 'start', 'ps', 'rm', 'bench'):
        check('\n  %s ' % cmd in r.out, '--help lists %s' % cmd)
    r = env.run('frobnicate', ok=False)
    check(r.returncode == 2 and "unknown command 'frobnicate'" in r.err, 'unknown command: ' + r.err)
    r = env.run('import', 'oci:x', ok=False)
    check(r.returncode == 2 and 'usage: strata import' in r.err, 'missing argument: ' + r.err)
    r = env.run('import', 'oci:x', 'bad name!', ok=False)
    check('not a valid NAME[:TAG]' in r.err, 'bad name: ' + r.err)
    r = env.run('ps', '--bogus', ok=False)
    check('unknown argument --bogus' in r.err, 'bad ps option: ' + r.err)
    check(env.run('--version').out.startswith('strata '), '--version')


def test_store_location(env):
    # --store wins over STRATA_STORE, which wins over the default.
    import subprocess
    other = env.path('other')
    e = dict(env.env(), STRATA_STORE=other, HOME=env.dir)
    argv = env.wrap([env.strata, 'images'])
    subprocess.run(argv, env=e, check=True, stdout=subprocess.DEVNULL, cwd=env.dir)
    check(os.path.isdir(os.path.join(other, 'layers')), 'STRATA_STORE used')
    env.run('images')
    check(os.path.isdir(os.path.join(env.store, 'layers')), '--store used')
    if env.user:
        e.pop('STRATA_STORE')
        subprocess.run(argv, env=e, check=True, stdout=subprocess.DEVNULL, cwd=env.dir)
        check(os.path.isdir(os.path.join(env.dir, '.local/share/strata/layers')),
              'unprivileged default is ~/.local/share/strata')
    r = env.run('--store', '/proc/version/x', 'images', ok=False)
    check('open store' in r.err and '/proc/version/x' in r.err and 'STRATA_STORE' in r.err,
          'unusable store: ' + r.err)


def test_bench(env):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'bench', 'run.sh')
    if not os.path.exists(src):
        raise Skip('bench/run.sh is not in this source tree yet')
    r = env.run('bench', '--help')
    check('usage' in r.out.lower(), 'strata bench runs the harness: %r' % r.out[:200])


def test_progress_only_on_a_terminal(env):
    import pty
    import subprocess
    from strata_t import busybox_layer
    with open(env.path('r.tar'), 'wb') as f:
        f.write(busybox_layer() * 1)
    env.give()
    quiet = env.run('import', 'rootfs:' + env.path('r.tar'), 'q:1')
    check(quiet.err == '', 'quiet when stderr is not a terminal: %r' % quiet.err)
    env.run('rmi', 'q:1')
    master, slave = pty.openpty()
    argv = env.wrap([env.strata, '--store', env.store, 'import', 'rootfs:' + env.path('r.tar'), 'q:2'])
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave, env=env.env(), cwd=env.dir)
    os.close(slave)
    out = b''
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    check(p.wait(timeout=60) == 0, 'import on a terminal works')
    text = out.decode(errors='replace')
    check('MiB' in text and 'done' in text and 'r.tar' in text, 'progress shown on a terminal: %r' % text)


if __name__ == '__main__':
    sys.exit(main([test_usage, test_store_location, test_bench, test_progress_only_on_a_terminal]))
