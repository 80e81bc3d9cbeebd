#!/usr/bin/env python3
"""podman with `overlay.mount_program` pointed at the filesystem under test
(issue 2's "done when"): import a busybox rootfs, run containers that write
and delete, and check a new container still sees the image untouched.

usage: podman.py [--fs PATH]   ($STRATA_FS overrides --fs)
Storage lives in a private mktemp dir; podman runs in a private mount
namespace with the host workarounds DESIGN.md lists (cgroup v1 'unified'
unmounted, explicit ulimits, cgroupfs, file events, no network).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, become_subreaper, fs_under_test  # noqa: E402

APPLETS = ('sh', 'echo', 'cat', 'rm', 'ls', 'test', 'mkdir', 'stat')


def reap_children(timeout):
    """Waits for everything podman left (we are the subreaper, so the
    backgrounded mount program ends up here); kills by pid what stays."""
    deadline = time.time() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return []
        if pid:
            continue
        if time.time() > deadline:
            break
        time.sleep(0.05)
    left = []
    for t in os.listdir('/proc/self/task'):
        with open('/proc/self/task/%s/children' % t) as f:
            left += [int(x) for x in f.read().split()]
    for pid in left:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    return left


def main(argv):
    fs = fs_under_test(argv)
    if os.geteuid() != 0:
        print('SKIP: needs root (rootful podman)')
        return SKIP
    if not fs or not os.path.exists(fs):
        print('SKIP: filesystem under test not built: %r (set STRATA_FS)' % fs)
        return SKIP
    busybox = shutil.which('busybox')
    if not shutil.which('podman') or not busybox:
        print('SKIP: podman or busybox not installed')
        return SKIP
    become_subreaper()
    d = tempfile.mkdtemp(prefix='strata-fs-podman-')
    try:
        rootfs = os.path.join(d, 'rootfs')
        os.makedirs(os.path.join(rootfs, 'bin'))
        shutil.copy(busybox, os.path.join(rootfs, 'bin', 'busybox'))
        for a in APPLETS:
            os.symlink('busybox', os.path.join(rootfs, 'bin', a))
        subprocess.run(['tar', '-C', rootfs, '-cf', os.path.join(d, 'rootfs.tar'), '.'], check=True)
        podman = ('podman --root {d}/root --runroot {d}/runroot --storage-driver overlay '
                  '--storage-opt overlay.mount_program={fs} --cgroup-manager=cgroupfs '
                  '--events-backend=file').format(d=d, fs=fs)
        run = ('run --rm --network=none --ulimit nofile=20000:20000 '
               '--ulimit nproc=4096:4096 strata-fs-test')
        script = '\n'.join([
            'umount /sys/fs/cgroup/unified 2>/dev/null',
            'set -e',
            '%s import %s/rootfs.tar strata-fs-test >/dev/null' % (podman, d),
            # A container writes, deletes and renames inside the image...
            "%s %s sh -c 'echo hi > /x && cat /x && rm /bin/cat && mkdir /d && echo w1 && "
            "test ! -e /bin/cat && echo deleted'" % (podman, run),
            # ...and the next container still sees the image as it was.
            "%s %s sh -c 'test ! -e /x && test -e /bin/cat && test ! -e /d && echo image untouched'"
            % (podman, run),
            '%s rmi -a -f >/dev/null' % podman,
        ])
        r = subprocess.run(['unshare', '-m', '--propagation', 'slave', 'sh', '-c', script],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        out = r.stdout.split()
        print(r.stdout + r.stderr)
        left = reap_children(20)
        problems = []
        if r.returncode:
            problems.append('podman script exited %d' % r.returncode)
        for word in ('hi', 'w1', 'deleted', 'untouched'):
            if word not in out:
                problems.append('missing %r in the containers\' output' % word)
        if left:
            problems.append('processes left behind after podman finished: %s' % left)
        for p in problems:
            print('FAIL ' + p)
        if not problems:
            print('podman ran containers on %s as its mount_program' % fs)
        return 1 if problems else 0
    finally:
        reap_children(5)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
