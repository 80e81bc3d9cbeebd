"""Issue 16's data set: real Debian images made from the archive once and
cached in bench/cache/debian-set-v1/.

  base      debootstrap --variant=minbase bookworm (the rootfs other rows use)
  py        base + python3                         (apt-get install, one layer)
  dev       py + gcc, make, libc6-dev              (a build-essential subset)
  curl      base + curl, ca-certificates           (a second image on the same base)
  squashed  py flattened into one layer            (the same files, other layers)

Each package set is installed in a chroot on a kernel overlay mount whose
upper directory becomes the layer, as a container engine's commit does. The
layers are written as gzip OCI layer blobs (OCI whiteouts and opaque
markers) into one OCI layout, layout/, holding an image per tag:

  base = [base]   py = [base, py]   dev = [base, py, dev]   curl = [base, curl]
  squashed = [flattened py]

The runs import them with `strata import oci:LAYOUT:TAG`; one of them twice,
under a second name. Beside the layout the cache keeps each layer as a
directory (kernel overlay encoding), the flattened trees of py and dev (the
squashfs images and `strata pack`'s input are made from them) and
summary.json (the blobs' sizes and digests)."""

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile

from . import fixtures as F
from . import sysutil
from .sysutil import BenchError

NAME = "debian-set-v1"
# (layer, parent chain bottom first, packages)
LAYERS = [
    ("py", ["base"], ["python3"]),
    ("dev", ["base", "py"], ["gcc", "make", "libc6-dev"]),
    ("curl", ["base"], ["curl", "ca-certificates"]),
]
IMAGES = {
    "base": ["base"],
    "py": ["base", "py"],
    "dev": ["base", "py", "dev"],
    "curl": ["base", "curl"],
    "squashed": ["flat-py"],
}
CREATED = "2026-01-01T00:00:00Z"


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def _strip_overlay_xattrs(root, lowers):
    """The upper directory of a kernel overlay carries the kernel's own
    bookkeeping (trusted.overlay.origin, impure): not part of the layer.
    It also marks every directory it creates inside a merged one opaque;
    where no lower layer has that directory the marker changes nothing, and
    a layer an engine commits would not carry it. Opaque markers over a
    lower directory (one apt removed and made again) are the layer's content."""
    for d, dirs, files in os.walk(root):
        for n in [d] + [os.path.join(d, x) for x in dirs + files]:
            if os.path.islink(n):
                continue
            try:
                names = os.listxattr(n, follow_symlinks=False)
            except OSError:
                continue
            rel = os.path.relpath(n, root)
            for x in names:
                if x == "trusted.overlay.opaque":
                    if any(os.path.isdir(os.path.join(l, rel)) and not os.path.islink(os.path.join(l, rel))
                           for l in lowers):
                        continue
                elif not x.startswith("trusted.overlay."):
                    continue
                os.removexattr(n, x, follow_symlinks=False)


def _install(cache, chain, layer, packages, log):
    """apt-get install in a chroot on kernel overlay (lower: the chain),
    the upper directory kept as the new layer."""
    work = os.path.join(cache, "work-" + layer)
    shutil.rmtree(work, ignore_errors=True)
    upper, wdir, mnt = (os.path.join(work, n) for n in ("upper", "work", "mnt"))
    for d in (upper, wdir, mnt):
        os.makedirs(d)
    lowers = ":".join(os.path.join(cache, "layers", c) for c in reversed(chain))
    sysutil.mount("overlay", mnt, "overlay", "lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,"
                  "index=off,metacopy=off" % (lowers, upper, wdir))
    procdir = os.path.join(mnt, "proc")
    try:
        sysutil.mount("proc", procdir, "proc", "")
        try:
            log("  debian set: apt-get install %s (layer %s)" % (" ".join(packages), layer))
            env = dict(PATH="/usr/sbin:/usr/bin:/sbin:/bin", DEBIAN_FRONTEND="noninteractive",
                       LC_ALL="C", HOME="/root")
            # as a Containerfile's RUN does it: lists fetched, used, removed
            script = ("apt-get update -q && apt-get install -y -q --no-install-recommends %s && "
                      "apt-get clean && rm -rf /var/lib/apt/lists/*" % " ".join(packages))
            p = subprocess.run(["chroot", mnt, "/bin/sh", "-c", script], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=1800)
            if p.returncode != 0:
                raise BenchError("`%s` in a chroot exited %d: %s"
                                 % (script, p.returncode, p.stdout.decode(errors="replace")[-600:]))
        finally:
            sysutil.umount(procdir)
    finally:
        sysutil.umount(mnt)
    _strip_overlay_xattrs(upper, [os.path.join(cache, "layers", c) for c in chain])
    dst = os.path.join(cache, "layers", layer)
    os.rename(upper, dst)
    shutil.rmtree(work, ignore_errors=True)


def _flatten(cache, chain, dst):
    """The merged tree of a chain, copied into an ordinary directory."""
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if len(chain) == 1:
        sysutil.run_setup(["cp", "-a", os.path.join(cache, "layers", chain[0]), tmp],
                          what="copy the layer")
    else:
        mnt = dst + ".mnt"
        os.makedirs(mnt, exist_ok=True)
        lowers = ":".join(os.path.join(cache, "layers", c) for c in reversed(chain))
        sysutil.mount("overlay", mnt, "overlay", "lowerdir=%s,redirect_dir=off" % lowers)
        try:
            sysutil.run_setup(["cp", "-a", mnt, tmp], what="flatten %s" % "+".join(chain),
                              timeout=1800)
        finally:
            sysutil.umount(mnt)
            os.rmdir(mnt)
    os.rename(tmp, dst)


def _layer_tar(src, out):
    """A directory in kernel overlay encoding as an OCI layer tar: char 0/0
    becomes .wh.NAME, an opaque directory gets .wh..wh..opq; xattrs as
    SCHILY.xattr records, hard links as links; owners by number only."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for d, dirs, files in os.walk(src):
            dirs.sort()
            files.sort()
            rel = os.path.relpath(d, src)
            entries = [] if rel == "." else [(d, rel)]
            entries += [(os.path.join(d, n), os.path.normpath(os.path.join(rel, n)))
                        for n in dirs if os.path.islink(os.path.join(d, n))]
            entries += [(os.path.join(d, n), os.path.normpath(os.path.join(rel, n))) for n in files]
            for path, name in entries:
                st = os.lstat(path)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    ti = tarfile.TarInfo(os.path.join(os.path.dirname(name), ".wh." + os.path.basename(name)))
                    ti.mtime = int(st.st_mtime)
                    t.addfile(ti)
                    continue
                if stat.S_ISSOCK(st.st_mode):
                    continue
                ti = t.gettarinfo(path, name)
                ti.uname = ti.gname = ""
                opaque = False
                if not stat.S_ISLNK(st.st_mode):
                    for x in os.listxattr(path, follow_symlinks=False):
                        v = os.getxattr(path, x, follow_symlinks=False)
                        if x == "trusted.overlay.opaque":
                            opaque = v == b"y"
                            continue
                        if x.startswith("trusted.overlay."):
                            continue
                        ti.pax_headers["SCHILY.xattr." + x] = v.decode("utf-8", "surrogateescape")
                if ti.isreg():
                    with open(path, "rb") as f:
                        t.addfile(ti, f)
                else:
                    t.addfile(ti)
                if opaque and stat.S_ISDIR(st.st_mode):
                    wh = tarfile.TarInfo(os.path.join(name, ".wh..wh..opq"))
                    wh.mtime = int(st.st_mtime)
                    t.addfile(wh)


def _blob(layout, data_path, media):
    """Moves a file into the layout's blobs; returns its descriptor."""
    digest = _sha256_file(data_path)
    dst = os.path.join(layout, "blobs", "sha256", digest)
    os.replace(data_path, dst)
    return {"mediaType": media, "digest": "sha256:" + digest, "size": os.path.getsize(dst)}


def _json_blob(layout, obj, media):
    tmp = os.path.join(layout, "tmp.json")
    with open(tmp, "w") as f:
        json.dump(obj, f, sort_keys=True, separators=(",", ":"))
    return _blob(layout, tmp, media)


def _write_layout(cache, log):
    layout = os.path.join(cache, "layout.tmp")
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    layers = {}
    for name in ["base", "py", "dev", "curl", "flat-py"]:
        log("  debian set: writing layer %s as a gzip OCI blob" % name)
        tar = os.path.join(layout, "layer.tar")
        _layer_tar(os.path.join(cache, "layers" if name != "flat-py" else "", name), tar)
        diff_id = "sha256:" + _sha256_file(tar)
        tsize = os.path.getsize(tar)
        gz = tar + ".gz"
        with open(gz, "wb") as o:
            subprocess.run(["gzip", "-n", "-6", "-c", tar], stdout=o, check=True)
        os.unlink(tar)
        desc = _blob(layout, gz, "application/vnd.oci.image.layer.v1.tar+gzip")
        layers[name] = dict(desc=desc, diff_id=diff_id, tar_size=tsize)
    index = {"schemaVersion": 2, "manifests": []}
    images = {}
    for tag, chain in IMAGES.items():
        config = {"architecture": "amd64", "os": "linux", "created": CREATED,
                  "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                             "Cmd": ["/bin/bash"]},
                  "rootfs": {"type": "layers", "diff_ids": [layers[l]["diff_id"] for l in chain]},
                  "history": [{"created": CREATED, "created_by": "bench: layer %s" % l} for l in chain]}
        cdesc = _json_blob(layout, config, "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": cdesc, "layers": [layers[l]["desc"] for l in chain]}
        mdesc = _json_blob(layout, manifest, "application/vnd.oci.image.manifest.v1+json")
        mdesc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        index["manifests"].append(mdesc)
        images[tag] = dict(layers=chain, gzip_bytes=sum(layers[l]["desc"]["size"] for l in chain),
                           tar_bytes=sum(layers[l]["tar_size"] for l in chain))
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    summary = {"layers": {n: dict(gzip_bytes=v["desc"]["size"], tar_bytes=v["tar_size"],
                                  diff_id=v["diff_id"]) for n, v in layers.items()},
               "images": images}
    with open(os.path.join(layout, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    final = os.path.join(cache, "layout")
    shutil.rmtree(final, ignore_errors=True)
    os.rename(layout, final)


class DebSet:
    def __init__(self, root):
        self.root = root
        self.layout = os.path.join(root, "layout")
        with open(os.path.join(self.layout, "summary.json")) as f:
            self.summary = json.load(f)

    def flat(self, image):
        return os.path.join(self.root, "flat-" + image)

    def layer_dir(self, name):
        return os.path.join(self.root, "layers", name)

    def gzip_bytes(self, imports):
        """Each imported image's blobs summed (what that many archives hold),
        and each distinct blob once (what a registry keeps)."""
        per = sum(self.summary["images"][tag]["gzip_bytes"] for tag, _ in imports)
        distinct = {l for tag, _ in imports for l in self.summary["images"][tag]["layers"]}
        return per, sum(self.summary["layers"][l]["gzip_bytes"] for l in distinct)

    def tar_bytes(self, imports):
        return sum(self.summary["images"][tag]["tar_bytes"] for tag, _ in imports)


def ensure(cache_dir, log):
    """The data set, built once (debootstrap, apt-get from the configured
    mirror: minutes, mostly network and disk). Returns a DebSet."""
    root = os.path.join(cache_dir, NAME)
    if os.path.exists(os.path.join(root, "layout", "summary.json")):
        return DebSet(root)
    base = F.ensure_rootfs(cache_dir, log)
    if base is None:
        raise BenchError("issue 16's data set needs the debootstrap rootfs (see the note above)")
    log("building issue 16's Debian data set once in %s (apt-get from the mirror in the "
        "bookworm rootfs: a few minutes)" % root)
    os.makedirs(os.path.join(root, "layers"), exist_ok=True)
    if not os.path.isdir(os.path.join(root, "layers", "base")):
        tmp = os.path.join(root, "layers", "base.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        sysutil.run_setup(["cp", "-a", base, tmp], what="copy the rootfs")
        # as Debian's own container images ship it: no downloaded packages,
        # no package lists (each layer fetches and removes its own)
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for d, _, files in os.walk(os.path.join(tmp, sub)):
                for n in files:
                    if n != "lock":
                        os.unlink(os.path.join(d, n))
        for n in ("pkgcache.bin", "srcpkgcache.bin"):
            if os.path.exists(os.path.join(tmp, "var/cache/apt", n)):
                os.unlink(os.path.join(tmp, "var/cache/apt", n))
        os.rename(os.path.join(root, "layers", "base.tmp"), os.path.join(root, "layers", "base"))
    for layer, chain, packages in LAYERS:
        if not os.path.isdir(os.path.join(root, "layers", layer)):
            _install(root, chain, layer, packages, log)
    for image in ("py", "dev"):
        if not os.path.isdir(os.path.join(root, "flat-" + image)):
            log("  debian set: flattening %s" % image)
            _flatten(root, IMAGES[image], os.path.join(root, "flat-" + image))
    _write_layout(root, log)
    return DebSet(root)


def squashfs(cache_dir, src, name, log):
    """An lz4 squashfs of a tree (cached)."""
    out = os.path.join(cache_dir, NAME, name + ".lz4.sqfs")
    if not os.path.exists(out):
        log("  making %s (mksquashfs -comp lz4) once" % out)
        sysutil.run_setup(["mksquashfs", src, out + ".tmp", "-comp", "lz4", "-noappend",
                           "-quiet", "-no-progress"], what="mksquashfs of %s" % src, timeout=3600)
        os.rename(out + ".tmp", out)
    return out


def big_file(cache_dir, src_tree, size_mib, log):
    """One file of size_mib MiB made of the image's own bytes (binaries,
    libraries, text: lz4 shrinks it as it shrinks the image) in 64 KiB
    blocks, each starting with its number, so no two chunks are equal and
    chunk dedup cannot make the read cheaper than it is. Cached."""
    d = os.path.join(cache_dir, NAME, "big-%dM" % size_mib)
    path = os.path.join(d, "big.bin")
    if os.path.exists(path) and os.path.getsize(path) == size_mib << 20:
        return d
    log("  writing a %d MiB file of the image's bytes once (%s)" % (size_mib, d))
    os.makedirs(d, exist_ok=True)
    blk, need, n = 65536, size_mib << 20, 0
    srcs = []
    for dd, dirs, files in os.walk(src_tree):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(dd, f)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 4096:
                srcs.append(p)
    if not srcs:
        raise BenchError("no files in %s to make the big file of" % src_tree)
    with open(path + ".tmp", "wb") as out:
        while n * blk < need:
            for p in srcs:
                with open(p, "rb") as f:
                    while n * blk < need:
                        b = f.read(blk - 8)
                        if not b:
                            break
                        out.write(n.to_bytes(8, "little") + b.ljust(blk - 8, b"\0"))
                        n += 1
                if n * blk >= need:
                    break
    os.rename(path + ".tmp", path)
    return d
