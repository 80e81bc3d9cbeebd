#!/usr/bin/env python3
"""Read-ahead for tree walks (fs/walkahead.c) changes nothing but time.

strata-fs reads the subdirectories of what a walk lists ahead of it, on
threads of its own, from the layers. Checked here:
- a single listing starts no read-ahead (no strata-ahead thread);
- a walk does, and (as root, from a cold cache) those threads read from
  the disk themselves (/proc/TID/io);
- walks racing with renames, rm -rf, rmdir and new directories through
  the mount see no error but ENOENT of what was just removed, and the tree
  afterwards is exactly what the changes make of the layers;
- a lower layer's symlink to a directory outside stays a symlink that
  no walk enters (it is part of the trees compared);
- the daemon's descriptor table is sized when it starts (FDSize in
  /proc/PID/status), so opening the directories of a walk never waits for
  the kernel to grow it (an RCU grace period, milliseconds, once threads
  share the table).

usage: test_walkahead.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import os
import resource
import shutil
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, conclude, prepare_fs  # noqa: E402
from mounts import FuseMount, mounted, named_threads  # noqa: E402

TOP, SUB, FILES = 24, 6, 4


def build(base):
    lo, hi = os.path.join(base, 'lo'), os.path.join(base, 'hi')
    outside = os.path.join(base, 'outside')
    os.makedirs(os.path.join(outside, 'secret'))
    for t in range(TOP):
        for s in range(SUB):
            d = os.path.join(lo, 't%02d' % t, 's%d' % s)
            os.makedirs(os.path.join(d, 'deep'))
            for f in range(FILES):
                with open(os.path.join(d, 'f%d' % f), 'w') as fh:
                    fh.write('%d/%d/%d' % (t, s, f))
        # the upper lower layer adds to every third top directory
        if t % 3 == 0:
            os.makedirs(os.path.join(hi, 't%02d' % t, 'from_hi'))
    os.symlink(outside, os.path.join(lo, 't00', 'escape'))
    return [lo, hi], outside


def tree(root):
    """{relative path: 'd' | 'f' | 'l'} of everything under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in dirs + files:
            p = os.path.normpath(os.path.join(rel, n))
            full = os.path.join(dirpath, n)
            out[p] = 'l' if os.path.islink(full) else 'd' if os.path.isdir(full) else 'f'
    return out


def ahead_read_bytes(pid):
    total = 0
    for tid in named_threads(pid, 'strata-ahead'):
        try:
            with open('/proc/%d/task/%d/io' % (pid, tid)) as fh:
                for line in fh:
                    if line.startswith('read_bytes:'):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    base = tempfile.mkdtemp(prefix='strata-walkahead-', dir='/var/tmp')
    lowers, outside = build(base)
    for d in ('u', 'w', 'm'):
        os.mkdir(os.path.join(base, d))
    mnt = os.path.join(base, 'm')
    problems = []
    m = FuseMount(fs, lowers, os.path.join(base, 'u'), os.path.join(base, 'w'), mnt)
    try:
        with mounted(m, problems):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            want = min((hard // 2 if hard > 2048 else hard // 4) + 1024, hard, 1 << 15)
            with open('/proc/%d/status' % m.proc.pid) as fh:
                fdsize = int([line.split()[1] for line in fh if line.startswith('FDSize:')][0])
            if fdsize < want:
                problems.append('descriptor table of %d at start, want at least %d' % (fdsize, want))
            os.listdir(mnt)
            if named_threads(m.proc.pid, 'strata-ahead'):
                problems.append('one listing of the root started read-ahead threads')

            expected = tree(lowers[0])
            expected.update(tree(lowers[1]))
            # disk reads to count: root (to drop caches) and layers on a block
            # device (tmpfs or an overlay root has none to read)
            cold = os.geteuid() == 0 and os.major(os.stat(lowers[0]).st_dev) != 0
            if cold:
                os.sync()
                with open('/proc/sys/vm/drop_caches', 'w') as fh:
                    fh.write('3\n')
            got = tree(mnt)
            if got != expected:
                problems.append('first walk: %d entries differ from the layers, e.g. %s'
                                % (len(set(got.items()) ^ set(expected.items())),
                                   sorted(set(got.items()) ^ set(expected.items()))[:4]))
            if not named_threads(m.proc.pid, 'strata-ahead'):
                problems.append('a walk of %d directories started no read-ahead thread'
                                % (TOP * SUB * 2))
            elif cold:
                rb = ahead_read_bytes(m.proc.pid)
                print('read-ahead threads read %d bytes from the disk during a cold walk' % rb)
                if rb == 0:
                    problems.append('read-ahead threads read nothing from the disk in a cold walk')

            # walks racing with changes
            errors = []
            stop = threading.Event()

            def walker():
                while not stop.is_set():
                    for dirpath, dirs, files in os.walk(mnt, onerror=lambda e: errors.append(e)):
                        for n in files:
                            try:
                                os.lstat(os.path.join(dirpath, n))
                            except FileNotFoundError:
                                pass
                            except OSError as e:
                                errors.append(e)

            ws = [threading.Thread(target=walker) for _ in range(2)]
            for w in ws:
                w.start()
            try:
                for t in range(0, TOP, 2):
                    top = os.path.join(mnt, 't%02d' % t)
                    shutil.rmtree(os.path.join(top, 's1'))
                    os.rename(os.path.join(top, 's2'), os.path.join(top, 'moved'))
                    os.rmdir(os.path.join(top, 's3', 'deep'))
                    os.makedirs(os.path.join(top, 'new', 'inner'))
                    with open(os.path.join(top, 'new', 'inner', 'n'), 'w') as fh:
                        fh.write('n')
            finally:
                stop.set()
                for w in ws:
                    w.join()
            bad = [e for e in errors if not isinstance(e, FileNotFoundError)]
            if bad:
                problems.append('walks during changes failed: %s' % bad[:4])
            for t in range(0, TOP, 2):
                tp = 't%02d' % t
                for k in [k for k in expected if k.startswith(tp + '/s1')]:
                    del expected[k]
                for k in [k for k in expected if k.startswith(tp + '/s2')]:
                    expected[tp + '/moved' + k[len(tp + '/s2'):]] = expected.pop(k)
                del expected[tp + '/s3/deep']
                expected.update({tp + '/new': 'd', tp + '/new/inner': 'd', tp + '/new/inner/n': 'f'})
            got = tree(mnt)
            if got != expected:
                diff = sorted(set(got.items()) ^ set(expected.items()))
                problems.append('after the changes: %d entries differ from what they make of '
                                'the layers, e.g. %s' % (len(diff), diff[:4]))
            alive = m.alive_problem()
            if alive:
                problems.append(alive)
    finally:
        code = conclude(base, problems)
    return code


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
