#!/usr/bin/env python3
"""SIGKILL of the daemon in the middle of churn leaves nothing half-done:

  untar    files are extracted into the merged view while the daemon is
           killed at a random moment; after a remount every file the view
           shows is whole (its content is the archive's), none is empty or
           short
  rm -rf   a lower tree is being removed when the daemon is killed; after a
           remount every file still shown has its lower content, every
           name removed stays removed, and the lower layer is unchanged
  fill     a metacopy file (chmod'ed, data still in the lower) is opened
           for writing, which fills in its data, when the daemon is killed;
           after a remount the file has its whole lower content
In every case the workdir is empty after a clean mount and unmount.

usage: test_crash_churn.py [--fs PATH] [ROUNDS]   ($STRATA_FS overrides --fs)
"""

import hashlib
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import (SKIP, FuseMount, file_sha, is_mounted, mount_tmpfs, reap_all, prepare_fs, umount)  # noqa: E402

SCALE = max(1, int(os.environ.get("STRATA_TEST_SCALE", "1")))
NFILES = 2000


def tree_digest(root):
    """name -> sha256 of every regular file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = file_sha(p)
    return out


def kill_mount(m, mnt):
    m.proc.kill()
    m.proc.wait()
    subprocess.run(['fusermount3', '-u', mnt], stderr=subprocess.DEVNULL)
    if is_mounted(mnt):
        umount(mnt)
    m.errlog.close()
    reap_all()


class Round:
    def __init__(self, fs, base, lower, name):
        self.fs, self.lower = fs, lower
        self.up, self.work, self.mnt = (os.path.join(base, '%s-%s' % (name, n)) for n in ('u', 'w', 'm'))
        for d in (self.up, self.work, self.mnt):
            os.mkdir(d)

    def mount(self):
        m = FuseMount(self.fs, [self.lower], self.up, self.work, self.mnt)
        m.mount()
        return m

    def churn_and_kill(self, argv, delay):
        """Run argv (a client working in the view), kill the daemon after
        delay seconds, return whether it was still working then."""
        m = self.mount()
        client = subprocess.Popen(argv, cwd=self.mnt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        busy = client.poll() is None
        kill_mount(m, self.mnt)
        client.wait()
        return busy

    def after(self, check):
        """Remount, run check(view) -> problem or None, unmount; then the
        workdir must be empty."""
        m = self.mount()
        try:
            problem = check(self.mnt)
        finally:
            p2 = m.umount()
        if p2:
            return 'remount after the kill: ' + p2
        if problem:
            return problem
        debris = [os.path.join(d, n) for d, _, f in os.walk(self.work) for n in f]
        if debris:
            return 'a clean mount+unmount after the kill left %s in workdir' % debris[:3]
        return None


def make_archive(path):
    rnd = random.Random(7)
    want = {}
    with tarfile.open(path, 'w') as t:
        for i in range(NFILES):
            data = rnd.randbytes(rnd.choice((0, 1, 100, 5000, 70000)))
            name = 'x/d%02d/f%04d' % (i % 40, i)
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
            want[name] = hashlib.sha256(data).hexdigest()[:16]   # as file_sha gives it
    return want


def main(argv):
    fs = prepare_fs(argv[:2] if argv[:1] == ['--fs'] else [])
    if fs is None:
        return SKIP
    rounds = int(argv[-1]) if argv and argv[-1].isdigit() else 4
    base = tempfile.mkdtemp(prefix='strata-fs-crash-churn-')
    mount_tmpfs(base)
    failures, killed_busy = [], {'untar': 0, 'rm': 0, 'fill': 0}
    try:
        lower = os.path.join(base, 'l')
        os.mkdir(lower)
        archive = os.path.join(base, 'a.tar')
        want = make_archive(archive)
        subprocess.run(['tar', '-xf', archive, '-C', lower], check=True)
        with open(os.path.join(lower, 'big'), 'wb') as f:
            f.write(os.urandom(32 << 20))
        lower_digest = tree_digest(lower)
        rnd = random.Random()
        for i in range(rounds):
            # untar into a fresh directory of the view
            r = Round(fs, base, lower, 'untar%d' % i)
            if r.churn_and_kill(['sh', '-c', 'mkdir new && tar -xf "$0" -C new', archive],
                                rnd.uniform(0.05, 0.6)):
                killed_busy['untar'] += 1

            def untar_check(view):
                for d, _, files in os.walk(os.path.join(view, 'new')):
                    for n in files:
                        p = os.path.join(d, n)
                        rel = os.path.relpath(p, os.path.join(view, 'new'))
                        # a file tar had not finished (or whose unsynced
                        # data died with the daemon) may be short; one of
                        # the archive's size must hold the archive's bytes
                        if rel not in want:
                            return 'untar: %s is not in the archive' % rel
                        if os.path.getsize(p) == len_of(want, rel, archive) and file_sha(p) != want[rel]:
                            with open(p, 'rb') as f:
                                zeros = not f.read().strip(b'\0')
                            return ('untar: %s has the archive\'s size (%d) but %s' %
                                    (rel, os.path.getsize(p), 'only zeros: its data was lost' if zeros
                                     else 'other content'))
                return None
            failures.append(r.after(untar_check))

            # rm -rf of the lower tree
            r = Round(fs, base, lower, 'rm%d' % i)
            if r.churn_and_kill(['rm', '-rf', 'x'], rnd.uniform(0.02, 0.3)):
                killed_busy['rm'] += 1

            def rm_check(view):
                got = tree_digest(os.path.join(view, 'x')) if os.path.isdir(os.path.join(view, 'x')) else {}
                for rel, sha in got.items():
                    if lower_digest.get('x/' + rel) != sha:
                        return 'rm -rf: x/%s is shown with other content than the lower\'s' % rel
                return None
            failures.append(r.after(rm_check))

            # metacopy fill of a 32 MiB file
            r = Round(fs, base, lower, 'fill%d' % i)
            m = r.mount()
            os.chmod(os.path.join(r.mnt, 'big'), 0o600)
            m.umount()
            if r.churn_and_kill([sys.executable, '-c', 'import os; os.close(os.open("big", os.O_WRONLY))'],
                                rnd.uniform(0.0, 0.2)):
                killed_busy['fill'] += 1

            def fill_check(view):
                p = os.path.join(view, 'big')
                if file_sha(p) != lower_digest['big']:
                    return 'fill: big lost its lower data after a kill during the fill'
                if os.stat(p).st_mode & 0o777 != 0o600:
                    return 'fill: big lost its chmod'
                return None
            failures.append(r.after(fill_check))
        if tree_digest(lower) != lower_digest:
            failures.append('the lower layer changed')
    finally:
        reap_all()
        umount(base)
        shutil.rmtree(base, ignore_errors=True)
    failures = [f for f in failures if f]
    for f in failures:
        print('FAIL ' + f)
    print('%d rounds; kills that landed while the client worked: %s' % (rounds, killed_busy))
    return 1 if failures else 0


_sizes = {}


def len_of(want, rel, archive):
    if not _sizes:
        with tarfile.open(archive) as t:
            for ti in t.getmembers():
                if ti.isfile():
                    _sizes[ti.name] = ti.size
    return _sizes.get(rel, -1)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
