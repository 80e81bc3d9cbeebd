#!/usr/bin/env python3
"""Containers that live like docker's: detached under a monitor, stopped,
killed, restarted, waited for, exec'd into, logged, published, limited and
removed, with `ps` telling the truth after any process is killed, and
nothing left behind (mounts, processes, cgroups, store directories).

The big reliability loops (200 detached containers, 1000 sequential
run --rm) run only with STRATA_SOAK=1 (ctest label soak).

usage: test_lifecycle.py STRATA [--user] [TEST...]"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_t import Fail, Skip, check, entry, make_tar, oci_layout, busybox_layer, main, dev_wrap

SOAK = os.environ.get('STRATA_SOAK') == '1'


def image(env, name='bb', config=None):
    extra = [entry('dev', 'dir'), entry('proc', 'dir'), entry('sys', 'dir'), entry('www', 'dir'),
             entry('www/index.html', data=b'hello from strata\n')]
    cfg = {'Env': ['PATH=/bin', 'FROM_IMAGE=yes'], 'Cmd': ['sh', '-c', 'echo started; exec sleep 1000']}
    cfg.update(config or {})
    oci_layout(env.path(name), [(busybox_layer(), 'gzip'), (make_tar(extra), 'tar')], config=cfg)
    env.give()
    env.run('import', 'oci:' + env.path(name), name)


class Ctx:
    """strata with the /dev/fuse wrapper the user mode needs."""

    def __init__(self, env, tun=False):
        self.env = env
        self.w = dev_wrap(env, tun)

    def run(self, *args, **kw):
        kw.setdefault('wrap', self.w)
        return self.env.run(*args, **kw)

    def json(self, *args):
        return json.loads(self.run(*args).out)

    def state(self, name):
        return self.json('inspect', name)['State']

    def until(self, what, cond, timeout=60, seen=None):
        """seen: what to report if it times out (what was seen instead)."""
        end = time.time() + timeout * max(1, int(os.environ.get('STRATA_TEST_SCALE', '1')))
        while time.time() < end:
            v = cond()
            if v:
                return v
            time.sleep(0.05)
        raise Fail('timed out waiting for %s%s' % (what, '; saw %r' % (seen(),) if seen else ''))

    def status(self, name):
        for c in self.json('ps', '-a', '--json'):
            if c['name'] == name:
                return c['state']
        return None


SCALE = max(1, int(os.environ.get('STRATA_TEST_SCALE', '1')))


def status_text(x, name):
    for c in x.json('ps', '-a', '--json'):
        if c['name'] == name:
            return c['status']
    return None


def proc_of(pid):
    """What a process is doing: its state and where it waits in the kernel."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        with open('/proc/%d/wchan' % pid) as f:
            return 'pid %d: state %s, wchan %s' % (pid, state, f.read())
    except (OSError, TypeError, IndexError) as e:
        return 'pid %r: %s' % (pid, e)


def leftovers(env):
    """Mounts, processes and cgroups of this test's store."""
    out = []
    with open('/proc/self/mountinfo') as f:
        out += ['mount: ' + l.strip() for l in f if env.store in l]
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace')
        except OSError:
            continue
        if env.store in cmd:
            out.append('process %s: %s' % (pid, cmd[:200]))
    mine = known_ids.get(env.store, set())
    for root, dirs, files in os.walk('/sys/fs/cgroup'):
        for d in dirs:
            if d.startswith('strata-') and d[7:] in mine:
                out.append('cgroup ' + os.path.join(root, d))
        if root.count('/') > 9:
            dirs[:] = []
    return out


known_ids = {}


def remember(env, cid):
    known_ids.setdefault(env.store, set()).add(cid[:12])


def check_clean(env, what):
    end = time.time() + 30
    left = leftovers(env)
    while left and time.time() < end:
        time.sleep(0.1)
        left = leftovers(env)
    check(not left, '%s: left behind: %s' % (what, '\n'.join(left[:10])))


def test_detached_lifecycle(env):
    x = Ctx(env)
    image(env)
    t0 = time.time()
    r = x.run('run', '-d', '--name', 'web', 'bb')
    cid = r.out.strip()
    remember(env, cid)
    check(len(cid) == 64, 'run -d prints the id: %r' % r.out)
    check(time.time() - t0 < 30, 'run -d returns while the command runs')
    check(x.status('web') == 'running', 'ps shows it running')
    check([c['name'] for c in x.json('ps', '--json')] == ['web'], 'ps without -a lists it')
    st = x.state('web')
    check(st['Running'] and st['Pid'] > 0 and st['StartedAt'], 'inspect State: %r' % st)
    # running means the root is built: init's "/" is the merged view (an
    # exec at once joins that root, never the host's)
    with open('/proc/%d/mountinfo' % st['Pid']) as f:
        root = [l.split(' - ')[1].split()[0] for l in f if l.split()[4] == '/']
    check(root and root[-1].startswith('fuse'), 'the container\'s root is built once run -d returns: %r' % root)
    x.until('the first log line', lambda: 'started' in x.run('logs', 'web').out)
    r = x.run('exec', 'web', 'sh', '-c', 'echo $FROM_IMAGE; exit 3', ok=None)
    check(r.returncode == 3 and r.out == 'yes\n', 'exec: exit code and the image env: %d %r %s' % (r.returncode, r.out, r.err))
    r = x.run('exec', '-e', 'K=V', '-w', '/www', '-u', '1:2', 'web', 'sh', '-c', 'echo $K $(pwd) $(id -u):$(id -g)', ok=None)
    if env.user and r.returncode:
        check('map' in r.err or 'uid' in r.err.lower() or 'Invalid' in r.err, 'rootless exec -u explains: ' + r.err)
    else:
        check(r.out == 'V /www 1:2\n', 'exec -e -w -u: %r %s' % (r.out, r.err))
    r = x.run('exec', 'web', '/no/such', ok=None)
    check(r.returncode == 127, 'exec of a missing command: 127, got %d %s' % (r.returncode, r.err))
    top = x.run('top', 'web').out
    check('sleep 1000' in top, 'top shows the command: %r' % top)
    check(top.split('\n')[0].split() == ['UID', 'PID', 'PPID', 'C', 'STIME', 'TTY', 'TIME', 'CMD'],
          "top has ps -ef's columns: %r" % top)
    check(len(top.strip().split('\n')) == 2 and '--store' not in top,
          "top shows the command, not strata's init: %r" % top)
    stats = x.json('stats', '--no-stream', '--json', 'web')
    check(stats[0]['pids'] >= 1 and stats[0]['memory_usage'] > 0, 'stats: %r' % stats)

    t0 = time.time()
    x.run('stop', '-t', '20', 'web')
    check(time.time() - t0 < 15, 'SIGTERM stopped it without waiting for SIGKILL')
    st = x.state('web')
    check(st['Status'] == 'exited' and st['ExitCode'] == 143 and not st['Running'], 'after stop: %r' % st)
    check(x.run('wait', 'web').out == '143\n', 'wait prints the exit code')
    ps = {c['name']: c['status'] for c in x.json('ps', '-a', '--json')}
    check(ps['web'] in ('exited (143)', 'killed (SIGTERM)'), 'ps -a: %r' % ps)
    check('started' in x.run('logs', 'web').out, 'logs after exit')

    x.run('start', 'web')
    check(x.status('web') == 'running', 'started again')
    x.run('restart', '-t', '1', 'web')
    check(x.status('web') == 'running', 'running after restart')
    r = x.run('rm', 'web', ok=False)
    check('stop it first or use rm -f' in r.err and r.returncode == 1, 'rm of a running container: %d %s' % (r.returncode, r.err))
    x.run('rm', '-f', 'web')
    check(x.json('ps', '-a', '--json') == [], 'gone from ps -a')
    check(os.listdir(os.path.join(env.store, 'containers')) == [], 'no container directory left')
    check_clean(env, 'rm -f')


def read_or(path):
    """A small file's text, or why it could not be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return '(%s)' % e.strerror


def test_stop_signal_and_kill(env):
    x = Ctx(env)
    # An image whose StopSignal is USR1: sh traps it and exits 7.
    image(env, 'sig', {'StopSignal': 'SIGUSR1',
                       'Cmd': ['sh', '-c', 'trap "exit 7" USR1; echo up; while :; do sleep 0.1; done']})
    cid = x.run('run', '-d', '--name', 's', 'sig').out.strip()
    remember(env, cid)
    x.until('the trap is set', lambda: 'up' in x.run('logs', 's').out)
    x.run('stop', 's')
    check(x.state('s')['ExitCode'] == 7, "stop used the image's StopSignal: %r" % x.state('s'))
    x.run('start', 's')
    x.until('the trap is set again', lambda: x.run('logs', 's').out.count('up') == 2)
    x.run('kill', '-s', 'USR1', 's')
    check(x.run('wait', 's').out == '7\n', 'kill -s USR1 reached the command')
    x.run('start', 's')
    x.run('kill', 's')
    r = x.run('wait', 's')
    if r.out != '137\n':
        # seen once (wait said 0, the state then 137): what the files and a
        # second wait say, for whoever meets it next
        d = os.path.join(env.store, 'containers', cid)
        raise Fail('kill is SIGKILL by default: wait said %r %r; then the exit file %r, state.json %r, '
                   'a second wait %r, inspect %r' % (r.out, r.err, read_or(os.path.join(d, 'exit')),
                                                     read_or(os.path.join(d, 'state.json')),
                                                     x.run('wait', 's').out, x.state('s')))
    r = x.run('kill', 's', ok=False)
    check('not running' in r.err, 'kill of a stopped container: ' + r.err)
    x.run('rm', 's')
    check_clean(env, 'kill')


def test_restart_policy(env):
    x = Ctx(env)
    image(env)
    cid = x.run('run', '-d', '--name', 'flaky', '--restart', 'on-failure:2', 'bb', 'sh', '-c', 'echo try; exit 3').out.strip()
    remember(env, cid)
    x.until('the retries to end', lambda: x.status('flaky') == 'exited')
    st = x.state('flaky')
    check(st['RestartCount'] == 2 and st['ExitCode'] == 3, 'on-failure:2 restarted twice: %r' % st)
    check(x.run('logs', 'flaky').out == 'try\n' * 3, 'three runs logged: %r' % x.run('logs', 'flaky').out)
    cid = x.run('run', '-d', '--name', 'always', '--restart', 'always', 'bb', 'sh', '-c', 'echo a; exec sleep 1000').out.strip()
    remember(env, cid)
    x.run('kill', '-s', 'HUP', 'always')   # not the stop signal: the policy restarts it
    x.until('a restart', lambda: x.state('always')['RestartCount'] >= 1 and x.status('always') == 'running')
    x.run('stop', '-t', '1', 'always')
    time.sleep(0.5)
    check(x.status('always') == 'exited', 'stop beats --restart always')
    r = x.run('run', '--rm', '--restart', 'always', 'bb', 'true', ok=False)
    check('conflict' in r.err, '--rm with --restart: ' + r.err)
    x.run('rm', 'flaky', 'always')
    check_clean(env, 'restart policy')


def test_rm_detached_and_foreground(env):
    x = Ctx(env)
    image(env)
    r = x.run('run', '-d', '--rm', 'bb', 'sh', '-c', 'echo bye')
    remember(env, r.out.strip())
    x.until('the --rm container to go', lambda: os.listdir(os.path.join(env.store, 'containers')) == [])
    check(x.json('ps', '-a', '--json') == [], '--rm -d leaves nothing in ps')
    # wait must start before the container ends and goes (as with docker,
    # a --rm container that is gone has no exit code left to wait for):
    # the command lives long enough on a busy machine too
    scale = max(1, int(os.environ.get('STRATA_TEST_SCALE', '1')))
    cid = x.run('run', '-d', '--rm', 'bb', 'sh', '-c', 'sleep %d; exit 6' % (2 * scale)).out.strip()
    remember(env, cid)
    w = x.run('wait', cid)
    check(w.out == '6\n', 'wait gets the code of a --rm container: %r %r' % (w.out, w.err))
    # wait that sees the removal under way (the state file gone, the
    # record not yet) must not take it for a container that never ran
    for i in range(8):
        cid = x.run('run', '-d', '--rm', 'bb', 'sh', '-c', 'sleep 0.5; exit 6').out.strip()
        remember(env, cid)
        w = x.run('wait', cid, ok=None)
        check(w.out == '6\n' or (w.returncode and 'no such container' in w.err),
              'wait during a --rm removal: %r %r' % (w.out, w.err))
    r = x.run('run', '--rm', 'bb', 'sh', '-c', 'exit 5', ok=None)
    check(r.returncode == 5, 'run --rm: exit code %d %s' % (r.returncode, r.err))
    # gone from the store when run returns; its files are deleted behind
    check(os.listdir(os.path.join(env.store, 'containers')) == [] and x.json('ps', '-a', '--json') == [],
          'a foreground --rm container is gone when run returns')
    x.until('tmp/ to empty', lambda: os.listdir(os.path.join(env.store, 'tmp')) == [])
    r = x.run('run', '--rm', 'bb', 'sh', '-c', 'kill -TERM $$', ok=None)
    check(r.returncode == 143, 'killed by signal 15: 143, got %d' % r.returncode)
    r = x.run('run', '--rm', 'bb', '/etc/hello', ok=None)
    check(r.returncode == 126, 'not executable: 126, got %d %s' % (r.returncode, r.err))
    r = x.run('run', '--bogus', 'bb', ok=None)
    check(r.returncode == 125 and '--bogus' in r.err, 'strata usage error: 125, got %d %s' % (r.returncode, r.err))
    r = x.run('run', '-d', 'bb', '/no/such', ok=None)
    if r.returncode == 0:
        remember(env, r.out.strip())
        x.run('wait', r.out.strip())
        check(x.state(r.out.strip())['ExitCode'] == 127, 'missing command recorded as 127')
        x.run('rm', r.out.strip())
    else:
        check(r.returncode == 127, 'run -d of a missing command: %d' % r.returncode)
    check(os.listdir(os.path.join(env.store, 'containers')) == [], 'nothing left')
    check_clean(env, '--rm')


def popen(env, x, *args):
    argv = env.wrap([env.strata, '--store', env.store] + list(args))
    if x.w:
        argv = x.w(argv)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env.env(), cwd=env.dir)


def test_kill9_monitor_and_cli(env):
    x = Ctx(env)
    image(env)
    cid = x.run('run', '-d', '--name', 'm', 'bb').out.strip()
    remember(env, cid)
    mon = x.state('m')['MonitorPid']
    os.kill(mon, signal.SIGKILL)
    x.until('ps to say dead', lambda: x.status('m') == 'dead')
    x.run('rm', '-f', 'm')
    check_clean(env, 'kill -9 of the monitor')

    # A container that ran before keeps that run's FinishedAt while it runs
    # again; its monitor killed then, wait says 137 (this run's end was
    # never recorded), not the ExitCode 0 of the running state.
    cid = x.run('run', '-d', '--name', 'again', 'bb', 'sh', '-c',
                'test -f /ran && exec sleep 1000; touch /ran; exit 3').out.strip()
    remember(env, cid)
    x.until('the first run to end', lambda: x.status('again') == 'exited')
    check(x.state('again')['ExitCode'] == 3, 'first run: %r' % x.state('again'))
    x.run('start', 'again')
    x.until('the second run', lambda: x.status('again') == 'running')
    os.kill(x.state('again')['MonitorPid'], signal.SIGKILL)
    x.until('ps to say dead', lambda: x.status('again') == 'dead')
    r = x.run('wait', 'again')
    check(r.out == '137\n', 'wait on a container whose monitor died in its second run: %r' % r.out)
    x.run('rm', '-f', 'again')
    check_clean(env, 'kill -9 of the monitor of a second run')

    # The CLI of a foreground run is its monitor.
    p = popen(env, x, 'run', '--name', 'fg', 'bb')
    x.until('the foreground container to run', lambda: x.status('fg') == 'running')
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    x.until('ps to say dead', lambda: x.status('fg') == 'dead')
    check(x.state('fg')['Dead'], 'inspect says Dead')
    x.run('rm', '-f', 'fg')
    check_clean(env, 'kill -9 of strata run')

    # The container's init killed: its monitor records it.
    cid = x.run('run', '-d', '--name', 'i', 'bb').out.strip()
    remember(env, cid)
    os.kill(x.state('i')['Pid'], signal.SIGKILL)
    check(x.run('wait', 'i').out == '137\n', 'kill -9 of init: 137')
    check(x.status('i') == 'exited', 'ps after kill -9 of init: %r' % x.status('i'))
    x.run('rm', 'i')
    check_clean(env, 'kill -9 of the init')

    # The FUSE daemon killed: the container cannot go on; its monitor
    # sees it, stops the container and ps says why.
    cid = x.run('run', '-d', '--name', 'd', 'bb').out.strip()
    remember(env, cid)
    st = json.load(open(os.path.join(env.store, 'containers', cid, 'state.json')))
    os.kill(st['DaemonPid'], signal.SIGKILL)
    x.until('ps to say the daemon died', lambda: status_text(x, 'd') == 'dead (filesystem daemon died)',
            seen=lambda: (status_text(x, 'd'), x.state('d'), leftovers(env), proc_of(x.state('d').get('Pid'))))
    st = x.state('d')
    check(st['Dead'] and not st['Running'] and st['Pid'] == 0 and 'daemon' in st['Error'], 'inspect: %r' % st)
    x.run('rm', '-f', 'd')
    check_clean(env, 'kill -9 of the daemon')

    # The same under a foreground run: it ends, says why, ps agrees.
    p = popen(env, x, 'run', '--name', 'fgd', 'bb')
    x.until('the foreground container to run', lambda: x.status('fgd') == 'running')
    cid = x.json('inspect', 'fgd')['id']
    remember(env, cid)

    def daemon():
        with open(os.path.join(env.store, 'containers', cid, 'state.json')) as f:
            return json.load(f).get('DaemonPid')
    os.kill(x.until('the daemon recorded', daemon), signal.SIGKILL)
    out, err = p.communicate(timeout=120 * SCALE)
    # 137: init killed by the watcher, whatever the command met first (a
    # SIGBUS of its mapped files, an exec that found nothing)
    check(p.returncode == 137 and b'filesystem daemon died' in err,
          'attached run after its daemon died: %d %r' % (p.returncode, err))
    check(status_text(x, 'fgd') == 'dead (filesystem daemon died)', 'ps: %r' % status_text(x, 'fgd'))
    x.run('rm', '-f', 'fgd')
    check_clean(env, 'kill -9 of the daemon of a foreground run')


def test_concurrent_cli(env):
    x = Ctx(env)
    image(env)
    cid = x.run('run', '-d', '--name', 'c', 'bb').out.strip()
    remember(env, cid)
    ps = [popen(env, x, 'rm', '-f', 'c') for _ in range(2)]
    res = [(p.wait(timeout=120), p.stderr.read().decode()) for p in ps]
    check(sorted(r for r, _ in res)[0] == 0, 'one rm -f succeeded: %r' % res)
    check(all(r == 0 or 'no such container' in e for r, e in res), 'the other says no such container: %r' % res)
    check(x.json('ps', '-a', '--json') == [], 'gone')
    x.run('create', '--name', 'c2', 'bb')
    p = popen(env, x, 'start', 'c2')
    for _ in range(20):
        x.json('ps', '-a', '--json')
    check(p.wait(timeout=120) == 0, 'start while ps runs')
    x.run('rm', '-f', 'c2')
    check_clean(env, 'concurrent CLI')


def test_logs(env):
    x = Ctx(env)
    image(env)
    cid = x.run('run', '-d', '--name', 'l', 'bb', 'sh', '-c',
                'for i in 1 2 3 4 5; do echo line$i; done; echo err >&2; sleep 2; echo late').out.strip()
    remember(env, cid)
    p = popen(env, x, 'logs', '-f', 'l')
    out, err = p.communicate(timeout=120)
    check(out.decode() == 'line1\nline2\nline3\nline4\nline5\nlate\n' and err.decode() == 'err\n',
          'logs -f follows to the end: %r %r' % (out, err))
    r = x.run('logs', '--tail', '2', 'l')
    check(r.out == 'late\n' and r.err == 'err\n', '--tail 2: %r %r' % (r.out, r.err))
    r = x.run('logs', '-t', 'l')
    check(r.out.splitlines()[0].endswith(' line1') and r.out[:2] == '20', '-t: %r' % r.out)
    r = x.run('logs', '--since', '2099-01-01T00:00:00Z', 'l')
    check(r.out == '', '--since the future: %r' % r.out)
    dd = os.path.join(env.store, 'containers')
    check(os.path.exists(os.path.join(dd, cid, 'ctr.log')),
          'ctr.log of %s stays after its logs were read: the store holds %r' %
          (cid, [(d, sorted(os.listdir(os.path.join(dd, d)))) for d in os.listdir(dd)]))
    with open(os.path.join(dd, cid, 'ctr.log')) as f:
        first = json.loads(f.readline())
    check(set(first) == {'log', 'stream', 'time'} and first['log'] == 'line1\n', "docker's json-file: %r" % first)
    # Rotation at --log-opt max-size: the older file is kept.
    cid = x.run('run', '-d', '--log-opt', 'max-size=20k', '--name', 'big', 'bb', 'sh', '-c',
                'i=0; while [ $i -lt 2000 ]; do echo "line $i of the big log"; i=$((i+1)); done').out.strip()
    remember(env, cid)
    x.run('wait', 'big')
    d = os.path.join(env.store, 'containers', cid)
    check(os.path.exists(os.path.join(d, 'ctr.log.1')) and os.path.getsize(os.path.join(d, 'ctr.log')) <= 20 << 10,
          'rotated at 20k')
    r = x.run('logs', '--tail', '1', 'big')
    check(r.out == 'line 1999 of the big log\n', 'the last line survives rotation: %r' % r.out)
    x.run('rm', 'l', 'big')
    check_clean(env, 'logs')


def test_foreground_logs(env):
    """A foreground run's output reaches the caller and the log, as docker's."""
    x = Ctx(env)
    image(env)
    r = x.run('run', '--name', 'fg', 'bb', 'sh', '-c', 'echo out1; echo err1 >&2; echo out2; exit 3', ok=None)
    check(r.returncode == 3 and r.out == 'out1\nout2\n' and r.err == 'err1\n',
          'the caller gets the output: %d %r %r' % (r.returncode, r.out, r.err))
    r = x.run('logs', 'fg')
    check(r.out == 'out1\nout2\n' and r.err == 'err1\n', 'logs of a foreground run: %r %r' % (r.out, r.err))
    # while it runs, too
    p = popen(env, x, 'run', '--name', 'fg2', 'bb', 'sh', '-c', 'echo early; exec sleep 1000')
    x.until('the early line in the log', lambda: x.run('logs', 'fg2', ok=None).out == 'early\n')
    x.run('stop', '-t', '1', 'fg2')
    out, _ = p.communicate(timeout=120 * SCALE)
    check(out == b'early\n', 'the caller got it as well: %r' % out)
    x.run('rm', 'fg', 'fg2')
    # -e NAME takes the caller's value, or nothing when it has none (docker)
    os.environ['LIFECYCLE_FROM_CALLER'] = 'yes'
    os.environ.pop('LIFECYCLE_UNSET', None)
    r = x.run('run', '--rm', '-e', 'LIFECYCLE_FROM_CALLER', '-e', 'LIFECYCLE_UNSET', 'bb', 'sh', '-c',
              'echo $LIFECYCLE_FROM_CALLER ${LIFECYCLE_UNSET-unset}')
    check(r.out == 'yes unset\n', 'run -e NAME: %r %r' % (r.out, r.err))
    check_clean(env, 'foreground logs')


def test_tty_logs(env):
    """A -t container's terminal reaches the caller and the log, attached
    and detached, as docker logs shows it (stream stdout, \\r\\n kept)."""
    x = Ctx(env)
    image(env)
    cmd = ['sh', '-c', 'echo one; echo two >&2; tty']
    want = 'one\r\ntwo\r\n/dev/pts/0\r\n'
    r = x.run('run', '-t', '--name', 'tl', 'bb', *cmd)
    check(r.out == want, 'the caller gets the terminal: %r %r' % (r.out, r.err))
    cid = x.run('run', '-d', '-t', '--name', 'tld', 'bb', *cmd).out.strip()
    remember(env, cid)
    check(x.run('wait', 'tld').out.strip() == '0', 'the detached -t container ran')
    for name in ('tl', 'tld'):
        r = x.run('logs', name)
        check(r.out == want and r.err == '', 'logs of a -t container (%s): %r %r' % (name, r.out, r.err))
    with open(os.path.join(env.store, 'containers', cid, 'ctr.log')) as f:
        streams = {json.loads(l)['stream'] for l in f}
    check(streams == {'stdout'}, 'a terminal is logged as stdout: %r' % streams)
    # --rm -t: the caller still gets all of it
    r = x.run('run', '--rm', '-t', 'bb', 'sh', '-c', 'i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done')
    check(r.out.count('\r\n') == 300 and r.out.endswith('line 299\r\n'), 'run --rm -t output: %r' % r.out[-80:])
    x.run('rm', 'tl', 'tld')
    check_clean(env, 'tty logs')


def test_env_file(env):
    """--env-file in docker's format for run, create and exec; -e wins."""
    x = Ctx(env)
    image(env)
    ef = env.path('vars.env')
    with open(ef, 'w') as f:
        f.write('# a comment\n\nA=1\n  B=two words\nC="quoted"\nLIFECYCLE_EF_CALLER\nLIFECYCLE_EF_UNSET\nD=x\r\n')
    bad = env.path('bad.env')
    with open(bad, 'w') as f:
        f.write('# fine\n=novar\n')
    env.give()
    os.environ['LIFECYCLE_EF_CALLER'] = 'yes'
    os.environ.pop('LIFECYCLE_EF_UNSET', None)
    show = 'echo "$A|$B|$C|$LIFECYCLE_EF_CALLER|${LIFECYCLE_EF_UNSET-unset}|$D|$FROM_IMAGE"'
    want = 'override|two words|"quoted"|yes|unset|x|yes\n'
    for args in (['--env-file', ef, '-e', 'A=override'], ['-e', 'A=override', '--env-file=' + ef]):
        r = x.run('run', '--rm', *args, 'bb', 'sh', '-c', show)
        check(r.out == want, 'run %r: %r %r' % (args, r.out, r.err))
    x.run('create', '--name', 'efc', '--env-file', ef, 'bb', 'sh', '-c', show.replace('$A', '$A$A'))
    r = x.run('start', '-a', 'efc')
    check(r.out == want.replace('override', '11'), 'create --env-file: %r %r' % (r.out, r.err))
    x.run('run', '-d', '--name', 'efx', 'bb')
    r = x.run('exec', '--env-file', ef, '-e', 'D=y', 'efx', 'sh', '-c', show)
    check(r.out == '1|two words|"quoted"|yes|unset|y|yes\n', 'exec --env-file: %r %r' % (r.out, r.err))
    r = x.run('run', '--rm', '--env-file', bad, 'bb', 'true', ok=None)
    check(r.returncode == 125 and 'line 2' in r.err and bad in r.err, 'a bad env file: %d %r' % (r.returncode, r.err))
    r = x.run('exec', '--env-file', env.path('missing.env'), 'efx', 'true', ok=None)
    check(r.returncode == 125 and 'missing.env' in r.err, 'a missing env file: %d %r' % (r.returncode, r.err))
    x.run('rm', '-f', 'efc', 'efx')
    check_clean(env, 'env file')


def test_lean_cli(env):
    """strata run does not load libarchive or libcrypto (10-15 ms of
    dynamic loading at every start): only the commands that use them do."""
    x = Ctx(env)
    image(env)
    p = popen(env, x, 'run', '--name', 'lean', 'bb')
    x.until('the foreground container to run', lambda: x.status('lean') == 'running')
    pid = x.state('lean')['MonitorPid']
    with open('/proc/%d/maps' % pid) as f:
        maps = f.read()
    x.run('rm', '-f', 'lean')
    p.communicate(timeout=120 * SCALE)
    check('libarchive' not in maps and 'libcrypto' not in maps,
          'strata run maps: %r' % sorted(set(l.split()[-1] for l in maps.splitlines() if '.so' in l)))
    check_clean(env, 'lean')


def test_many(env):
    x = Ctx(env)
    image(env)
    total, batch = (200, 20) if SOAK else (20, 5)
    for b in range(0, total, batch):
        ids = [x.run('run', '-d', 'bb').out.strip() for _ in range(batch)]
        for i in ids:
            remember(env, i)
        running = [c for c in x.json('ps', '--json')]
        check(len(running) == batch, 'batch running: %d' % len(running))
        x.run('stop', '-t', '5', *ids)
        x.run('rm', *ids)
    check(x.json('ps', '-a', '--json') == [], 'none left in ps')
    check(os.listdir(os.path.join(env.store, 'containers')) == [], 'no container directory left')
    if SOAK:
        for _ in range(1000):
            x.run('run', '--rm', 'bb', 'test', '1')
    check_clean(env, 'many containers')


def test_published_port(env):
    x = Ctx(env, tun=True)
    image(env, config={'ExposedPorts': {'8080/tcp': {}}})
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    r = x.run('run', '-d', '--name', 'httpd', '-p', '127.0.0.1:%d:8080' % port, 'bb',
              '/bin/busybox', 'httpd', '-f', '-p', '8080', '-h', '/www', ok=None)
    if r.returncode:
        if 'pasta' in r.err and ('not found' in r.err or 'install' in r.err):
            raise Skip('no user-mode network stack: ' + r.err.strip())
        raise Fail('run -d -p: %s' % r.err)
    remember(env, r.out.strip())
    check(x.run('port', 'httpd').out == '8080/tcp -> 127.0.0.1:%d\n' % port, 'port: %r' % x.run('port', 'httpd').out)
    d = x.json('inspect', 'httpd')
    check(d['NetworkSettings']['Ports'] == {'8080/tcp': [{'HostIp': '127.0.0.1', 'HostPort': str(port)}]} and
          '8080/tcp' in d['Config']['ExposedPorts'] and d['HostConfig']['NetworkMode'] == 'private',
          "inspect's ports as docker's: %r" % {k: d.get(k) for k in ('NetworkSettings', 'Config', 'HostConfig')})

    def get():
        c = subprocess.run(['curl', '-s', '--max-time', '5', 'http://127.0.0.1:%d/' % port], stdout=subprocess.PIPE)
        return c.stdout if c.returncode == 0 else None
    body = x.until('httpd to answer', get, timeout=60)
    check(body == b'hello from strata\n', 'the page: %r' % body)
    x.run('rm', '-f', 'httpd')
    check_clean(env, 'published port')


def test_limits(env):
    x = Ctx(env)
    image(env)
    r = x.run('run', '--rm', '--memory', '32m', '--memory-swap', '32m', 'bb', 'sh', '-c',
              'x=a; while :; do x="$x$x"; done', ok=None)
    if r.returncode == 125 and ('cgroup' in r.err or 'delegat' in r.err):
        raise Skip('no cgroup for limits here: ' + r.err.strip())
    check(r.returncode == 137, 'OOM-killed: 137, got %d %s' % (r.returncode, r.err))
    # OOMKilled is the kernel's count in the container's memory cgroup,
    # not a guess from 137
    r = x.run('run', '--name', 'oom', '--memory', '32m', '--memory-swap', '32m', 'bb', 'sh', '-c',
              'x=a; while :; do x="$x$x"; done', ok=None)
    st = x.state('oom')
    check(st['ExitCode'] == 137 and st['OOMKilled'] is True, 'an OOM kill in inspect: %r' % st)
    r = x.run('run', '--name', 'k9', '--memory', '64m', 'bb', 'sh', '-c', 'kill -9 $$', ok=None)
    st = x.state('k9')
    check(st['ExitCode'] == 137 and st['OOMKilled'] is False, 'kill -9 under --memory is no OOM kill: %r' % st)
    x.run('rm', 'oom', 'k9')
    cid = x.run('run', '-d', '--name', 'p', '--pids-limit', '20', '--memory', '256m', '--cpus', '1.5', 'bb').out.strip()
    remember(env, cid)
    hc = x.json('inspect', 'p')['HostConfig']
    check(hc['PidsLimit'] == 20 and hc['Memory'] == 256 << 20 and hc['NanoCpus'] == 1500000000,
          "inspect's limits as docker's HostConfig: %r" % hc)
    r = x.run('exec', 'p', 'sh', '-c', 'i=0; while [ $i -lt 60 ]; do sleep 3 & i=$((i+1)); done 2>/dev/null', ok=None)
    stats = x.json('stats', '--no-stream', '--json', 'p')
    check(stats[0]['pids'] <= 20, 'pids held to the limit: %r' % stats)
    x.until('the container to be usable again',
            lambda: x.run('exec', 'p', 'echo', 'ok', ok=None).out == 'ok\n', timeout=30)
    x.run('rm', '-f', 'p')
    check_clean(env, 'limits')


def test_pause(env):
    x = Ctx(env)
    image(env)
    cid = x.run('run', '-d', '--name', 'z', 'bb', 'sh', '-c', 'while :; do date +%s%N > /tmp/t; sleep 0.05; done').out.strip()
    remember(env, cid)
    r = x.run('pause', 'z', ok=None)
    if r.returncode:
        check('freezer' in r.err or 'cgroup' in r.err, 'pause says why it cannot: ' + r.err)
        x.run('rm', '-f', 'z')
        raise Skip('no freezer: ' + r.err.strip())
    check(x.status('z') == 'paused', 'ps says paused')
    r = x.run('exec', 'z', 'true', ok=False)
    check('paused' in r.err, 'exec into a paused container: ' + r.err)
    x.run('unpause', 'z')
    check(x.status('z') == 'running', 'running again')
    x.run('pause', 'z')
    x.run('rm', '-f', 'z')
    check_clean(env, 'pause')


def test_help(env):
    r = env.run('--help')
    cmds = [l.split()[0] for l in r.out.split('commands:\n')[1].split('\n\n')[0].splitlines()]
    check('stop' in cmds and 'exec' in cmds and 'logs' in cmds, 'commands listed: %r' % cmds)
    for c in cmds:
        if c in ('bench', 'help'):
            continue
        h = env.run(c, '--help')
        check(h.out.startswith('usage: strata') and (' %s ' % c) in h.out.splitlines()[0], '%s --help: %r' % (c, h.out[:200]))
        check(env.run('help', c).out == h.out, 'help %s is %s --help' % (c, c))
    h = env.run('run', '--help').out
    for flag in ('--detach', '--publish', '--network', '--memory', '--memory-swap', '--cpus', '--cpu-shares',
                 '--pids-limit', '--restart', '--rm', '--name', '--env', '--volume', '--user', '--workdir',
                 '--hostname', '--cap-add', '--cap-drop', '--uidmap', '--gidmap', '--rlimit', '--fs-program',
                 '--interactive', '--tty', '--env-file'):
        check(flag in h, 'run --help lists ' + flag)
    check('--env-file' in env.run('exec', '--help').out, 'exec --help lists --env-file')
    check(env.run('layers', '--help').returncode == 0, 'layers --help')


def test_rootless_map_message(env):
    if not env.user:
        raise Skip('rootless only')
    x = Ctx(env)
    image(env)
    r = x.run('run', '--rm', '--uidmap', '0:100000:65536', '--gidmap', '0:100000:65536', 'bb', 'true', ok=False)
    check('--uidmap 0:%d:1' % env.pw.pw_uid in r.err and 'Permission denied' not in r.err,
          'the map error says how to write it: ' + r.err)


if __name__ == '__main__':
    sys.exit(main([test_help, test_detached_lifecycle, test_stop_signal_and_kill, test_restart_policy,
                   test_rm_detached_and_foreground, test_kill9_monitor_and_cli, test_concurrent_cli, test_logs,
                   test_foreground_logs, test_tty_logs, test_env_file, test_lean_cli,
                   test_many, test_published_port, test_limits, test_pause, test_rootless_map_message]))
