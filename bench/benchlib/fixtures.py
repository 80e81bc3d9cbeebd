"""Layer stacks the workloads run on. Expensive inputs (the Debian rootfs, the
big file, the tarball) are cached under bench/cache/; the small layers above
them are rebuilt per run in the scratch directory, which is cheap.

Layers use the kernel's own encodings (whiteout = char 0/0, opaque =
trusted.overlay.opaque=y) because that is the one format every contender
reads. Layer directories get short relative names ("0" is the bottom) so a
500-layer lowerdir string fits in the one page mount(2) accepts."""

import io
import os
import random
import shutil
import stat
import subprocess
import tarfile

from . import sysutil

ROOTFS_NAME = "rootfs-bookworm-minbase"


class Fixture:
    def __init__(self, name, root, nlayers, expect_names=None, info=""):
        self.name = name
        self.root = root
        # top first, as lowerdir wants them
        self.lowers = [str(i) for i in reversed(range(nlayers))]
        self.expect_names = expect_names
        self.info = info

    def layer_path(self, i):
        return os.path.realpath(os.path.join(self.root, str(i)))


def whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


# --rootless: trusted.* is closed to a user namespace; kernel overlayfs
# (userxattr), strata-fs and fuse-overlayfs all read the user.* names there
ROOTLESS = False


def opaque(path):
    if ROOTLESS:
        os.setxattr(path, "user.overlay.opaque", b"y")
        os.setxattr(path, "user.fuseoverlayfs.opaque", b"y")
    else:
        os.setxattr(path, "trusted.overlay.opaque", b"y")


def write_file(path, size, rng):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(rng.randbytes(size))


def apt_mirror():
    """The Debian mirror apt is configured with here (deb822 or one-line)."""
    paths = ["/etc/apt/sources.list"]
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        paths += [os.path.join(d, n) for n in sorted(os.listdir(d))]
    for p in paths:
        try:
            text = open(p).read()
        except OSError:
            continue
        uris = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#"):
                continue
            if line.startswith("URIs:"):
                uris = line.split()[1:]
            if line.startswith("Suites:") and uris and "bookworm" in line.split():
                return uris[0]
            if line.startswith("deb ") and " bookworm " in line:
                for w in line.split()[1:]:
                    if w.startswith("http"):
                        return w
    return "http://deb.debian.org/debian"


def ensure_rootfs(cache, log):
    """A debootstrap minbase bookworm, made once. Returns its path, or None
    (with the reason logged) when it cannot be made here."""
    final = os.path.join(cache, ROOTFS_NAME)
    if os.path.isdir(os.path.join(final, "usr", "bin")):
        return final
    if not shutil.which("debootstrap"):
        log("note: debootstrap is not installed (run `make setup`); using a synthetic base layer")
        return None
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    mirror = apt_mirror()
    log("preparing the Debian base layer once: debootstrap --variant=minbase bookworm from %s "
        "(about 30 s; cached in %s)" % (mirror, final))
    p = subprocess.run(["debootstrap", "--variant=minbase", "bookworm", tmp, mirror],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        log("note: debootstrap failed (exit %d, last output: %s); using a synthetic base layer"
            % (p.returncode, p.stdout.decode(errors="replace").strip()[-300:]))
        return None
    os.rename(tmp, final)
    return final


def synthetic_base(cache, nfiles):
    """A rootfs-shaped tree for hosts where debootstrap cannot run."""
    path = os.path.join(cache, "synthetic-base-%d" % nfiles)
    if os.path.isdir(path):
        return path
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = random.Random(1)
    for i in range(nfiles):
        r = rng.random()
        if r < 0.4:
            p = "usr/share/doc/pkg%d/file%d" % (i % 300, i)
        elif r < 0.6:
            p = "usr/lib/x86_64-linux-gnu/lib%d.so" % i
        elif r < 0.75:
            p = "usr/bin/tool%d" % i
        elif r < 0.85:
            p = "etc/conf%d/file%d" % (i % 40, i)
        else:
            p = "var/lib/dpkg/info/pkg%d.list" % i
        size = int(rng.paretovariate(1.2) * 800) if r >= 0.2 else 300
        write_file(os.path.join(tmp, p), min(size, 4 << 20), rng)
    os.rename(tmp, path)
    return path


def _pick(base, candidates):
    for c in candidates:
        if os.path.isdir(os.path.join(base, c)):
            return c
    return None


def image(ctx):
    """Debian rootfs + two layers with whiteouts, new and changed files, and
    an opaque directory: what a small application image looks like."""
    base = ensure_rootfs(ctx.cache, ctx.log) if not ctx.args.synthetic_base else None
    info = "debootstrap minbase bookworm + 2 layers"
    if base is None:
        base = synthetic_base(ctx.cache, ctx.sizes["synthetic_base_files"])
        info = "synthetic base (%d files) + 2 layers" % ctx.sizes["synthetic_base_files"]
    root = os.path.join(ctx.scratch, "fx-image")
    os.mkdir(root)
    os.symlink(base, os.path.join(root, "0"))
    rng = random.Random(2)
    l1 = os.path.join(root, "1")
    os.mkdir(l1)
    doc = _pick(base, ["usr/share/doc"])
    if doc:
        os.makedirs(os.path.join(l1, doc))
        for i, n in enumerate(sorted(os.listdir(os.path.join(base, doc)))):
            if i % 3 == 0:
                whiteout(os.path.join(l1, doc, n))
    for i in range(300):
        write_file(os.path.join(l1, "opt/app/lib/m%d/f%d.py" % (i % 20, i)),
                   rng.randint(100, 8000), rng)
    etc = os.path.join(base, "etc")
    changed = 0
    for n in sorted(os.listdir(etc)) if os.path.isdir(etc) else []:
        src = os.path.join(etc, n)
        if os.path.isfile(src) and not os.path.islink(src) and changed < 20:
            os.makedirs(os.path.join(l1, "etc"), exist_ok=True)
            shutil.copy2(src, os.path.join(l1, "etc", n))
            with open(os.path.join(l1, "etc", n), "a") as f:
                f.write("# changed by layer 1\n")
            changed += 1

    l2 = os.path.join(root, "2")
    os.mkdir(l2)
    opq = _pick(base, ["var/lib/dpkg/info", "usr/share/locale", "var/cache/debconf", "etc"])
    if opq:
        os.makedirs(os.path.join(l2, opq))
        opaque(os.path.join(l2, opq))
        for i in range(50):
            write_file(os.path.join(l2, opq, "new%d.list" % i), rng.randint(50, 2000), rng)
    bindir = os.path.join(base, "usr/bin")
    if os.path.isdir(bindir):
        os.makedirs(os.path.join(l2, "usr/bin"))
        victims = [n for n in sorted(os.listdir(bindir))
                   if not os.path.isdir(os.path.join(bindir, n))][::5][:30]
        for n in victims:
            whiteout(os.path.join(l2, "usr/bin", n))
    for i in range(100):
        write_file(os.path.join(l2, "opt/app2/f%d" % i), rng.randint(100, 4000), rng)
    fx = Fixture("image", root, 3, info=info)
    # a lower tree for chown -R and rm -rf: big enough to matter, small
    # enough to copy for the plain baseline
    fx.tree = _pick(base, ctx.sizes["tree"]) or "opt"
    return fx


def stack(ctx, n):
    """n small layers, each adding files, overriding one shared file and
    whiting out a file of the layer below; an opaque dir every 50 layers."""
    root = os.path.join(ctx.scratch, "fx-stack%d" % n)
    os.mkdir(root)
    rng = random.Random(n)
    for i in range(n):
        l = os.path.join(root, str(i))
        for k in range(8):
            write_file(os.path.join(l, "d%d/l%d_%d" % (i % 16, i, k)), rng.randint(200, 1500), rng)
        write_file(os.path.join(l, "shared/config"), 100, rng)
        if i > 0:
            whiteout(os.path.join(l, "d%d/l%d_0" % ((i - 1) % 16, i - 1)))
        if i % 50 == 0:
            os.makedirs(os.path.join(l, "o"), exist_ok=True)
            if i > 0:
                opaque(os.path.join(l, "o"))
            write_file(os.path.join(l, "o/from%d" % i), 100, rng)
    return Fixture("stack%d" % n, root, n, info="%d layers x 10 files" % n)


def big(ctx, size_mib):
    """One layer holding one incompressible file (cached)."""
    d = os.path.join(ctx.cache, "big-%dM" % size_mib)
    path = os.path.join(d, "big.bin")
    if not (os.path.exists(path) and os.path.getsize(path) == size_mib << 20):
        ctx.log("writing a %d MiB test file once (cached in %s)" % (size_mib, d))
        os.makedirs(d, exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            for _ in range(size_mib):
                f.write(os.urandom(1 << 20))
        os.rename(path + ".tmp", path)
    root = os.path.join(ctx.scratch, "fx-big")
    os.mkdir(root)
    os.symlink(d, os.path.join(root, "0"))
    fx = Fixture("big", root, 1, info="one %d MiB file" % size_mib)
    fx.size_mib = size_mib
    return fx


def many(ctx, nfiles):
    """One layer of many empty files: how daemon memory grows with the
    number of inodes a walk makes it know (cached)."""
    d = os.path.join(ctx.cache, "many-%d" % nfiles)
    if not os.path.isdir(d):
        ctx.log("creating %d empty files once (cached in %s)" % (nfiles, d))
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(nfiles):
            sub = os.path.join(tmp, "d%03d" % (i // 1000))
            if i % 1000 == 0:
                os.makedirs(sub)
            open(os.path.join(sub, "file-with-a-longer-name-%07d" % i), "wb").close()
        os.rename(tmp, d)
    root = os.path.join(ctx.scratch, "fx-many")
    os.mkdir(root)
    os.symlink(d, os.path.join(root, "0"))
    return Fixture("many", root, 1, info="one layer of %d empty files" % nfiles)


def probe(ctx):
    root = os.path.join(ctx.scratch, "fx-probe")
    if not os.path.isdir(root):
        os.makedirs(os.path.join(root, "0"))
        os.makedirs(os.path.join(root, "1"))
        for n in ("a", "b"):
            with open(os.path.join(root, "0", n), "w") as f:
                f.write(n)
        with open(os.path.join(root, "1", "c"), "w") as f:
            f.write("c")
        whiteout(os.path.join(root, "1", "b"))
    return Fixture("probe", root, 2, expect_names=["a", "c"])


def untar_tarball(ctx, nfiles):
    path = os.path.join(ctx.cache, "untar-%d.tar" % nfiles)
    if os.path.exists(path):
        return path
    rng = random.Random(3)
    with tarfile.open(path + ".tmp", "w", format=tarfile.GNU_FORMAT) as t:
        for i in range(nfiles):
            data = rng.randbytes(rng.choice([0, 100, 500, 1500, 4000]))
            ti = tarfile.TarInfo("src/d%d/f%d.c" % (i // 100, i))
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data))
    os.rename(path + ".tmp", path)
    return path


def flatten(ctx, fixture, via, dst):
    """The plain baseline: the merged tree copied into an ordinary directory,
    through whichever overlay contender mounts here (kernel preferred)."""
    if len(fixture.lowers) == 1:
        return fixture.layer_path(0)
    # a copy an earlier attempt left would take this one inside it
    shutil.rmtree(dst, ignore_errors=True)
    inst = via.mount(ctx, fixture)
    try:
        copy_tree(ctx, inst.path, dst, "flatten %s for plain" % fixture.name)
    finally:
        via.unmount(inst)
    return dst


def copy_tree(ctx, src, dst, what):
    """cp -a src dst. Rootless, the image's device nodes (/dev/null,
    /dev/tty, ...) cannot be made in a user namespace, as strata's rootless
    import leaves them out: the copy goes without them, with a note; any
    other error fails it."""
    argv = ["cp", "-a", src, dst]
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=900)
    if p.returncode == 0:
        return
    errs = [l for l in p.stderr.decode(errors="replace").splitlines() if l.strip()]
    if not errs or not all("cannot create special file" in l for l in errs):
        raise sysutil.BenchError("%s: `%s` exited %d: %s"
                                 % (what, " ".join(argv), p.returncode, "\n".join(errs)[-500:]))
    ctx.note("%s: %d device nodes left out (a user namespace cannot make them)" % (what, len(errs)))


def busybox_tree(dst):
    """A minimal root filesystem from the host's static busybox: every
    applet as a symlink, so sh, cat, find, sleep and true exist."""
    bb = shutil.which("busybox")
    if not bb:
        raise sysutil.BenchError("neither a debootstrap rootfs nor busybox to build a runnable "
                                 "image from (apt-get install busybox-static, or make setup)")
    for d in ("bin", "etc", "tmp", "proc", "dev", "sys", "root"):
        os.makedirs(os.path.join(dst, d), exist_ok=True)
    os.chmod(os.path.join(dst, "tmp"), 0o1777)
    shutil.copy2(os.path.realpath(bb), os.path.join(dst, "bin", "busybox"))
    out = subprocess.run([bb, "--list"], stdout=subprocess.PIPE, text=True).stdout.split()
    for applet in out:
        if applet != "busybox":
            os.symlink("busybox", os.path.join(dst, "bin", applet))
    os.symlink("bin", os.path.join(dst, "sbin"))
    os.makedirs(os.path.join(dst, "usr"), exist_ok=True)
    os.symlink("../bin", os.path.join(dst, "usr", "bin"))
    with open(os.path.join(dst, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(dst, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")


def runimage(ctx, data_mib):
    """One layer the containers run from: the debootstrap rootfs (busybox
    when there is none) plus /data, data_mib MiB of incompressible files in
    a few directories, which every density container reads, and /ready, where
    each container says it has. Cached; with --rootless the copy belongs to
    the user (made by root before the switch)."""
    base = None if ctx.args.synthetic_base else ensure_rootfs(ctx.cache, ctx.log)
    kind = "debian" if base else "busybox"
    d = os.path.join(ctx.cache, "runimage-%s-%dM" % (kind, data_mib))
    if not os.path.isdir(d):
        ctx.log("making the container image once: %s base + %d MiB of data (cached in %s)"
                % (kind, data_mib, d))
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if base:
            copy_tree(ctx, base, tmp, "copy the rootfs")
        else:
            busybox_tree(tmp)
        rng = random.Random(4)
        left, i = data_mib << 20, 0
        while left > 0:
            size = min(left, rng.choice([16 << 10, 64 << 10, 256 << 10, 1 << 20]))
            p = os.path.join(tmp, "data", "d%d" % (i % 8), "f%d" % i)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(os.urandom(size))
            left -= size
            i += 1
        os.makedirs(os.path.join(tmp, "ready"), exist_ok=True)
        os.rename(tmp, d)
    root = os.path.join(ctx.scratch, "fx-runimage")
    os.makedirs(root, exist_ok=True)
    if not os.path.lexists(os.path.join(root, "0")):
        os.symlink(d, os.path.join(root, "0"))
    fx = Fixture("runimage", root, 1, info="%s + %d MiB /data" % (kind, data_mib))
    fx.data_mib = data_mib
    return fx


def build_context(ctx, nfiles):
    """A build context of nfiles small files and a multi-step Containerfile:
    a base image, a RUN that writes files, a COPY of the context, ENV, CMD."""
    d = os.path.join(ctx.cache, "buildctx-%d" % nfiles)
    if not os.path.isdir(d):
        tmp = d + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        rng = random.Random(5)
        for i in range(nfiles):
            p = os.path.join(tmp, "src", "d%d" % (i // 200), "f%d.txt" % i)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(rng.randbytes(rng.choice([100, 500, 2000, 8000])))
        os.rename(tmp, d)
    return d


CONTAINERFILE = """FROM localhost/bench-img:1
RUN mkdir -p /gen && i=0 && while [ $i -lt 200 ]; do echo "$i" > /gen/f$i; i=$((i+1)); done
COPY src/ /app/src/
ENV APP_HOME=/app
CMD ["/bin/sh"]
"""
