#!/usr/bin/env python3
"""strata-fs taking requests through FUSE over io_uring (Linux 6.14+).

The fuse module's enable_uring is turned on for the test and restored
after. Counted, not timed (context switches of the daemon's threads, from
/proc/PID/task/TID/schedstat):
  - by default strata-fs registers one queue per possible CPU (threads
    strata-uringN), and 2000 getxattr round trips are served there: the
    queue threads switch at least once per request, the /dev/fuse reader
    (the main thread) stays nearly still;
  - data through the rings is intact both ways: a lower file read in 1 MiB
    requests (cached mode), a new file written in 1 MiB requests with
    passthrough=off, a copy-up on open (served by a worker, whose reply
    travels back to the queue thread);
  - the queue threads, which run SCHED_IDLE while the machine is quiet,
    have best-effort I/O priority of their own (left unset, SCHED_IDLE
    would make every disk read they do for a client idle-class I/O), and a
    daemon started under `ionice -c 3` keeps its idle class;
  - uring=off, and a daemon without CAP_SYS_NICE (its queue threads could
    not leave SCHED_IDLE under load), register no queue and serve through
    /dev/fuse with the same results.

usage: test_uring.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, Skip, file_sha, prepare_fs, rd, reap_all  # noqa: E402
from layers import pattern  # noqa: E402
from mounts import FuseMount, fuse_uring_enabled, thread_switches, uring_threads  # noqa: E402


def possible_cpus():
    with open('/sys/devices/system/cpu/possible') as f:
        return int(f.read().strip().split(',')[-1].split('-')[-1]) + 1


class Mount(FuseMount):
    def __init__(self, fs, base, opts=''):
        p = lambda d: os.path.join(base, d)  # noqa: E731
        for d in ('u', 'w'):
            shutil.rmtree(p(d), ignore_errors=True)
            os.mkdir(p(d))
        super().__init__(fs, [p('l')], p('u'), p('w'), p('m'), extra=opts)
        self.mount()

    def path(self, name):
        return os.path.join(self.mnt, name)

    def close(self):
        problem = self.umount()
        if problem:
            raise RuntimeError(problem)


def getxattr_trips(path, n):
    """n getxattr calls; the kernel caches no xattrs, so each is a request."""
    for _ in range(n):
        try:
            os.getxattr(path, 'user.nothing')
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise


def data_round(m, base, problems, label):
    """Reads, writes and a copy-up through mount m; appends what went wrong."""
    if file_sha(m.path('big')) != file_sha(os.path.join(base, 'l', 'big')):
        problems.append('%s: lower file read back differently' % label)
    new = pattern(8 << 20, 5)
    fd = os.open(m.path('new'), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for off in range(0, len(new), 1 << 20):
        os.pwrite(fd, new[off:off + (1 << 20)], off)
    os.close(fd)
    if rd(m.path('new')) != new:
        problems.append('%s: new file read back differently' % label)
    # open for writing copies the lower file up (a worker's job)
    with open(m.path('big'), 'r+b') as f:
        f.seek(4096)
        f.write(b'changed')
    want = bytearray(pattern(8 << 20, 3))
    want[4096:4103] = b'changed'
    if rd(m.path('big')) != bytes(want):
        problems.append('%s: copied-up file differs' % label)


def queues_of(pid, want=1):
    """The queue threads once (at least want of them are) registered: the
    mount is live before they are (INIT is answered first), and on a loaded
    machine they may take a moment; what there is after 5 s otherwise."""
    deadline = time.time() + 5
    while True:
        q = uring_threads(pid)
        if len(q) >= want or time.time() > deadline:
            return q
        time.sleep(0.02)


def io_classes(pid):
    """ionice's class name of each io_uring queue thread."""
    out = {}
    for tid in queues_of(pid):
        r = subprocess.run(['ionice', '-p', str(tid)], capture_output=True, text=True)
        out[tid] = r.stdout.split(':')[0].strip() if r.returncode == 0 else 'error ' + r.stderr
    return out


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    problems = []
    base = tempfile.mkdtemp(prefix='strata-uring-', dir='/var/tmp')
    os.chmod(base, 0o755)
    try:
        for d in ('l', 'm'):
            os.mkdir(os.path.join(base, d))
        with open(os.path.join(base, 'l', 'big'), 'wb') as f:
            f.write(pattern(8 << 20, 3))
        with open(os.path.join(base, 'l', 'small'), 'w') as f:
            f.write('x')
        # the same binary, without CAP_SYS_NICE in its bounding set
        nonice = os.path.join(base, 'nonice')
        os.mkdir(nonice)
        with open(os.path.join(nonice, 'strata-fs'), 'w') as f:
            f.write('#!/bin/sh\nexec setpriv --bounding-set=-sys_nice %s "$@"\n' % fs)
        os.chmod(os.path.join(nonice, 'strata-fs'), 0o755)
        idle = os.path.join(base, 'idle')
        os.mkdir(idle)
        with open(os.path.join(idle, 'strata-fs'), 'w') as f:
            f.write('#!/bin/sh\nexec ionice -c 3 %s "$@"\n' % fs)
        os.chmod(os.path.join(idle, 'strata-fs'), 0o755)

        with fuse_uring_enabled():
            # 1. queues registered, requests served there
            m = Mount(fs, base)
            try:
                pid = m.proc.pid
                queues = queues_of(pid, possible_cpus())
                if len(queues) != possible_cpus():
                    problems.append('%d io_uring queue threads, want one per possible CPU (%d)'
                                    % (len(queues), possible_cpus()))
                main_before = thread_switches(pid, pid)
                getxattr_trips(m.path('small'), 2000)
                after = uring_threads(pid)
                served = sum(after[t] - queues.get(t, 0) for t in after)
                main_delta = thread_switches(pid, pid) - main_before
                if served < 2000:
                    problems.append('queue threads switched %d times for 2000 requests' % served)
                if main_delta > 200:
                    problems.append('the /dev/fuse reader switched %d times during 2000 io_uring '
                                    'requests' % main_delta)
                data_round(m, base, problems, 'io_uring')
                classes = io_classes(pid)
                if not classes or any(c != 'best-effort' for c in classes.values()):
                    problems.append('queue threads\' I/O classes %s, want best-effort' % classes)
            finally:
                m.close()

            # 1b. an idle I/O class given to the daemon stays
            m = Mount(os.path.join(idle, 'strata-fs'), base)
            try:
                classes = io_classes(m.proc.pid)
                if not classes or any(c != 'idle' for c in classes.values()):
                    problems.append('under ionice -c 3: queue threads\' I/O classes %s, want idle'
                                    % classes)
            finally:
                m.close()

            # 2. cached mode: WRITE payloads through the rings
            m = Mount(fs, base, 'passthrough=off')
            try:
                if not queues_of(m.proc.pid):
                    problems.append('passthrough=off: no io_uring queue registered')
                data_round(m, base, problems, 'io_uring, passthrough=off')
            finally:
                m.close()

            # 3. not used when switched off, or without CAP_SYS_NICE
            for label, binary, opts in (('uring=off', fs, 'uring=off'),
                                        ('no CAP_SYS_NICE', os.path.join(nonice, 'strata-fs'), '')):
                m = Mount(binary, base, opts)
                try:
                    if uring_threads(m.proc.pid):
                        problems.append('%s: io_uring queues registered' % label)
                    getxattr_trips(m.path('small'), 100)
                    data_round(m, base, problems, label)
                finally:
                    m.close()
    except Skip as e:
        print('SKIP: %s' % e)
        return SKIP
    finally:
        subprocess.run(['rm', '-rf', base])
        reap_all()
    for p in problems:
        print('FAIL', p)
    if not problems:
        print('ok: io_uring queues serve requests and move data intact; off where it should be')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
