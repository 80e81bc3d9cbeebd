"""The filesystem the uppers and mounts live on.

An ext4 without a journal (some VM images are made so) skips, when it
allocates an inode, every free inode whose deletion is less than a minute
old (six if its table block is still dirty): ext4 may only reuse an inode
once its deletion cannot be lost. After a workload deleted tens of thousands
of files, each file the next one creates scans past all of them, for every
contender alike, and the ratios to the kernel shrink towards 1 (figures in
docs/performance.md). Hosts that run containers have a journal; so the run
gets one (unless --host-scratch): an ext4 image with a
journal, in the scratch directory, on a loop device with direct I/O (its
pages are cached once, in the image's filesystem), mounted for the run.
"""

import os
import shutil
import subprocess
import tempfile

from .sysutil import BenchError


def _mount_of(path):
    """(device source, fstype, mount point) of the mount holding PATH."""
    best = None
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            mp = fields[4].replace("\\040", " ")
            rest = fields[fields.index("-") + 1:]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and \
                    (best is None or len(mp) >= len(best[2])):
                best = (rest[1], rest[0], mp)
    return best


def journal_missing(path):
    """The ext4 device name when PATH is on an ext4 without a journal, else None."""
    m = _mount_of(path)
    if not m or m[1] != "ext4" or not m[0].startswith("/dev/"):
        return None
    dev = os.path.basename(os.path.realpath(m[0]))
    try:
        with open("/sys/fs/ext4/%s/journal_task" % dev) as f:
            return dev if f.read().strip() == "<none>" else None
    except OSError:
        return None


class JournaledScratch:
    """A journaled ext4 mounted under BASE for the run, or nothing to do."""

    SIZE = "48G"   # sparse: the image takes what the run writes

    def __init__(self, base):
        self.base = base
        self.dir = None
        self.loop = None
        self.image = None
        self.note = None

    def start(self):
        dev = journal_missing(self.base)
        if dev is None or not shutil.which("mkfs.ext4") or not shutil.which("losetup"):
            return self.base
        top = tempfile.mkdtemp(prefix="strata-bench-fs-", dir=self.base)
        os.chmod(top, 0o755)   # the rootless mode's user works below it
        self.image = os.path.join(top, "scratch.ext4")
        self.dir = os.path.join(top, "mnt")
        os.mkdir(self.dir)
        try:
            self._run(["truncate", "-s", self.SIZE, self.image], "make the scratch image")
            self._run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                       self.image], "mkfs.ext4 of the scratch image")
            self.loop = self._run(["losetup", "--find", "--show", "--direct-io=on", self.image],
                                  "losetup of the scratch image").strip()
            self._run(["mount", "-t", "ext4", self.loop, self.dir], "mount the scratch image")
        except BenchError:
            self.stop()
            raise
        os.chmod(self.dir, 0o1777)
        self.note = ("the scratch directory's filesystem (%s, ext4) has no journal: the run's "
                     "uppers and mounts are on a journaled ext4 made for it (a %s sparse image "
                     "on a loop device with direct I/O), as a container host has"
                     % (dev, self.SIZE))
        return self.dir

    def stop(self):
        if self.dir and os.path.ismount(self.dir):
            if subprocess.run(["umount", self.dir], stderr=subprocess.DEVNULL).returncode:
                subprocess.run(["umount", "-l", self.dir], stderr=subprocess.DEVNULL)
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], stderr=subprocess.DEVNULL)
            self.loop = None
        if self.image:
            shutil.rmtree(os.path.dirname(self.image), ignore_errors=True)
            self.image = None

    @staticmethod
    def _run(argv, what):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode:
            raise BenchError("%s failed (%s): %s" % (what, " ".join(argv), r.stderr.strip()))
        return r.stdout
