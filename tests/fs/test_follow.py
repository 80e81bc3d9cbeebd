#!/usr/bin/env python3
"""The /dev/fuse reader follows its client (fs/loop.c, where io_uring does
not serve the requests).

Checked on a mount with uring=off:
- a client pinned to one CPU, then to another, draws the reader (the
  daemon's main thread) to that CPU, at SCHED_IDLE or SCHED_OTHER (which
  one depends on the machine's load at the reader's last look, a moment
  the test cannot see or control, so it is not asserted: a test must not
  need an idle machine);
- requests give the right answers all along (getxattr, stat, reads);
- a daemon without CAP_SYS_NICE (as rootless ones run: a thread cannot
  turn back from SCHED_IDLE) follows as well, with a standby thread parked
  at SCHED_OTHER; with every CPU kept busy by other processes the reading
  passes to a thread at SCHED_OTHER (strata-reader), requests still get
  the right answers, and it follows its client again once they stop.
Skips with fewer than two CPUs.

usage: test_follow.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import errno
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, conclude, prepare_fs  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402

CLIENT = r'''
import os, sys
cpu, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
os.sched_setaffinity(0, {cpu})
want = open(os.path.join(path, 'data'), 'rb').read()
for i in range(n):
    try:
        os.getxattr(os.path.join(path, 'data'), 'user.nothing')
    except OSError as e:
        assert e.errno == 61, e
    if i % 50 == 0:
        assert open(os.path.join(path, 'data'), 'rb').read() == want
        os.stat(os.path.join(path, 'data'))
'''


def threads(pid):
    """{tid: name} of the daemon's threads."""
    out = {}
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/comm' % (pid, tid)) as fh:
                out[int(tid)] = fh.read().strip()
        except OSError:
            pass
    return out


def reader_of(pid):
    """The thread reading requests: the main thread, or the strata-reader
    it handed the reading to."""
    relayed = [t for t, name in threads(pid).items() if name == 'strata-reader']
    return max(relayed) if relayed else pid


def reader_state(pid):
    """(CPUs the reading thread may run on, its scheduling policy)."""
    tid = reader_of(pid)
    with open('/proc/%d/task/%d/status' % (pid, tid)) as fh:
        cpus = [l.split(':', 1)[1].strip() for l in fh if l.startswith('Cpus_allowed_list:')][0]
    return cpus, os.sched_getscheduler(tid)


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print('SKIP: one CPU: nothing to follow')
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-follow-', dir='/var/tmp')
    os.chmod(base, 0o755)
    for d in ('l', 'u', 'w', 'm'):
        os.mkdir(os.path.join(base, d))
    with open(os.path.join(base, 'l', 'data'), 'wb') as fh:
        fh.write(os.urandom(100000))
    nonice = os.path.join(base, 'strata-fs-nonice')
    with open(nonice, 'w') as fh:
        fh.write('#!/bin/sh\nexec setpriv --bounding-set=-sys_nice %s "$@"\n' % fs)
    os.chmod(nonice, 0o755)
    problems = []
    mnt = os.path.join(base, 'm')

    def client(cpu, n=600):
        r = subprocess.run([sys.executable, '-c', CLIENT, str(cpu), mnt, str(n)],
                           capture_output=True, text=True)
        if r.returncode:
            problems.append('client on CPU %d failed: %s' % (cpu, r.stderr.strip()[-300:]))

    def with_mount(binary, fn):
        with mounted(FuseMount(binary, [os.path.join(base, 'l')], os.path.join(base, 'u'),
                               os.path.join(base, 'w'), mnt, extra='uring=off'), problems) as m:
            fn(m.proc.pid)

    def follows(pid):
        for cpu in (cpus[-1], cpus[0]):
            client(cpu)
            where, policy = reader_state(pid)
            if where != str(cpu):
                problems.append('after requests from CPU %d the reader may run on %s'
                                % (cpu, where))
            if policy not in (os.SCHED_IDLE, os.SCHED_OTHER):
                problems.append('reader policy %d' % policy)

    def relays(pid):
        follows(pid)
        standby = [t for t, name in threads(pid).items() if name == 'strata-standby']
        if reader_state(pid)[1] == os.SCHED_IDLE and len(standby) != 1:
            problems.append('without CAP_SYS_NICE the reader went SCHED_IDLE with %d standby '
                            'threads (one expected)' % len(standby))
        for t in standby:
            if os.sched_getscheduler(t) != os.SCHED_OTHER:
                problems.append('the standby thread runs with policy %d, not SCHED_OTHER'
                                % os.sched_getscheduler(t))
        # every CPU busy: the reading must pass to a thread that competes
        # (a new one if it was SCHED_IDLE: that one cannot come back; on a
        # machine already busy, as under ctest -j, it may never have left)
        idle_before = reader_state(pid)[1] == os.SCHED_IDLE
        reader_before = reader_of(pid)
        hogs = [subprocess.Popen([sys.executable, '-c', 'while True: pass'])
                for _ in range(2 * len(cpus))]
        try:
            deadline = time.time() + 20
            while time.time() < deadline:
                client(cpus[0], n=100)
                if reader_state(pid)[1] == os.SCHED_OTHER and \
                        (not idle_before or reader_of(pid) != reader_before):
                    break
            else:
                problems.append('with every CPU busy the reading stayed with a thread at '
                                'policy %d (%s)' % (reader_state(pid)[1], threads(pid)))
            print('busy CPUs: reading thread %d (%s), policy %d'
                  % (reader_of(pid), threads(pid).get(reader_of(pid)), reader_state(pid)[1]))
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        # quiet again: it follows once more (with a standby of its own)
        follows(pid)
        print('quiet again: reading thread %d, CPUs %s, policy %d'
              % ((reader_of(pid),) + reader_state(pid)))

    try:
        with_mount(fs, follows)
        if os.geteuid() == 0:
            with_mount(nonice, relays)
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
