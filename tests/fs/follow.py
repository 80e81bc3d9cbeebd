#!/usr/bin/env python3
"""The /dev/fuse reader follows its client (fs/loop.c, where io_uring does
not serve the requests).

Checked on a mount with uring=off:
- a client pinned to one CPU, then to another, draws the reader (the
  daemon's main thread) to that CPU, and the reader runs SCHED_IDLE while
  the machine is quiet;
- requests give the right answers all along (getxattr, stat, reads);
- a daemon without CAP_SYS_NICE (it could not turn back from SCHED_IDLE
  under load) does not follow: its reader stays on every CPU, SCHED_OTHER.
Skips with fewer than two CPUs.

usage: follow.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import errno
import os
import subprocess
import sys
import tempfile

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


def reader_state(pid):
    """(CPUs the main thread may run on, its scheduling policy)."""
    with open('/proc/%d/status' % pid) as fh:
        cpus = [l.split(':', 1)[1].strip() for l in fh if l.startswith('Cpus_allowed_list:')][0]
    return cpus, os.sched_getscheduler(pid)


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
        # quiet machine (the test's client has ended): SCHED_IDLE
        load = int(open('/proc/loadavg').read().split()[3].split('/')[0])
        if load <= 1 and reader_state(pid)[1] != os.SCHED_IDLE:
            print('note: reader not SCHED_IDLE on a quiet machine (it looks every 5 ms)')

    def stays(pid):
        client(cpus[-1])
        where, policy = reader_state(pid)
        allowed = os.sched_getaffinity(0)
        if where == str(cpus[-1]) and len(allowed) > 1:
            problems.append('without CAP_SYS_NICE the reader was pinned to CPU %s' % where)
        if policy != os.SCHED_OTHER:
            problems.append('without CAP_SYS_NICE the reader runs with policy %d' % policy)

    try:
        with_mount(fs, follows)
        if os.geteuid() == 0:
            with_mount(nonice, stays)
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
