"""Issue 16's rows (group "packed"): packed layers against directory layers.

Store rows: the Debian data set (benchlib/debset.py) imported into a fresh
store of each format (STRATA_STORE_FORMAT=dir, =packed), timed, then the
store's size on disk beside the images' gzip blobs, and `strata system df
--json`'s file-level dedup, chunk-level dedup and lz4 ratios; `strata pack`
of the flattened image, in MB/s of input.

Read rows: the image mounted by strata-fs from the dir store's layer
directories and from the packed store's layer files, and by squashfuse from
an lz4 squashfs of the same tree; the big-file rows read one file (of the
image's own bytes) from a directory layer, a packed layer and a squashfs."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from . import debset
from . import fixtures as F
from . import sysutil
from . import workloads as W
from .sysutil import BenchError

GROUP = "packed"
READERS = ("strata-fs", "strata-fs packed", "squashfuse")
# the reads are judged against strata-fs over the same image's directory layers
READ_REF = "strata-fs"
READ_TARGET = 1.3


def data_set(ctx):
    if getattr(ctx, "_debset", None) is None:
        if ctx.args.synthetic_base:
            ctx._debset = BenchError("--synthetic-base: no Debian data set (it needs debootstrap "
                                     "and the archive)")
            return data_set(ctx)
        try:
            ctx._debset = debset.ensure(ctx.cache, ctx.log)
        except subprocess.TimeoutExpired as e:
            ctx._debset = BenchError("making the Debian data set: %s" % e)
        except BenchError as e:
            ctx._debset = e
    if isinstance(ctx._debset, BenchError):
        raise ctx._debset
    return ctx._debset


def imports(ctx):
    """(tag in the layout, name imported as), in import order."""
    return ctx.sizes["packed_imports"]


def import_all(ctx, store, fmt, timeout):
    """Imports the data set into store; returns (wall s, CPU s) summed over
    the imports (CPU from wait4 of each strata process)."""
    ds = data_set(ctx)
    env = dict(os.environ, STRATA_STORE_FORMAT=fmt)
    env.pop("STRATA_STORE", None)
    wall = cpu = 0.0
    for tag, name in imports(ctx):
        r = sysutil.run_measured([ctx.strata, "--store", store, "import",
                                  "oci:%s:%s" % (ds.layout, tag), name],
                                 timeout=timeout, env=env)
        if r.rc != 0:
            raise BenchError("STRATA_STORE_FORMAT=%s strata import oci:...:%s %s exited %d: %s"
                             % (fmt, tag, name, r.rc, r.err.strip()[-300:]))
        wall += r.wall
        cpu += r.cpu
    return wall, cpu


def store(ctx, fmt):
    """A store of the given format holding the data set, made once per run
    (untimed; the import rows hand theirs over when they ran first)."""
    stores = ctx.__dict__.setdefault("_pkstores", {})
    if fmt not in stores:
        path = os.path.join(ctx.scratch, "store-" + fmt)
        shutil.rmtree(path, ignore_errors=True)
        ctx.log("importing the Debian data set into a %s store (untimed)" % fmt)
        import_all(ctx, path, fmt, 3600)
        stores[fmt] = path
    return stores[fmt]


def adopt_store(ctx, fmt, path):
    """The first store a timed import made serves the read rows; later
    ones are removed."""
    stores = ctx.__dict__.setdefault("_pkstores", {})
    if fmt not in stores:
        stores[fmt] = path
    else:
        shutil.rmtree(path, ignore_errors=True)


def image_layers(store_dir, name):
    """The layer directories of an image in a store, bottom first, read
    from the store's own files (tags.json, images/, layers/)."""
    with open(os.path.join(store_dir, "tags.json")) as f:
        tags = json.load(f)
    iid = tags.get(name) or tags.get(name + ":latest")
    if not iid:
        raise BenchError("%s has no image %s (tags: %s)" % (store_dir, name, ", ".join(tags)))
    with open(os.path.join(store_dir, "images", iid.split(":", 1)[1] + ".json")) as f:
        cfg = json.load(f)
    return [os.path.join(store_dir, "layers", d.split(":", 1)[1]) for d in cfg["rootfs"]["diff_ids"]]


def du_bytes(path):
    """Bytes a tree takes on disk (allocated blocks, as du counts them)."""
    total, seen = 0, set()
    for d, dirs, files in os.walk(path):
        for n in [d] + [os.path.join(d, x) for x in files]:
            try:
                st = os.lstat(n)
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def apparent_bytes(path):
    total = 0
    for d, _, files in os.walk(path):
        for n in files:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def strata_pack(ctx, src, dest, chunks, timeout):
    """strata pack with --stats; returns the measured run and the input
    bytes it reports."""
    r = sysutil.run_measured(["sh", "-c", 'exec "$@" 1>&2', "sh", ctx.strata, "pack", src, dest,
                              "--chunks", chunks, "--stats"], timeout=timeout)
    if r.rc != 0:
        raise BenchError("strata pack %s exited %d: %s" % (src, r.rc, r.err.strip()[-300:]))
    m = re.search(r"files, ([0-9.]+) MB in", r.err)
    return r, (float(m.group(1)) * 1e6 if m else None)


# -- fixtures ------------------------------------------------------------------

def fixture(ctx, name):
    try:
        return _fixture(ctx, name)
    except subprocess.TimeoutExpired as e:
        raise BenchError("fixture %s: %s" % (name, e))


def _fixture(ctx, name):
    ds = data_set(ctx)
    if name == "debset":
        return F.Fixture("debset", ds.root, 0, info="Debian data set, %d imports (%s)"
                         % (len(imports(ctx)), ", ".join(n for _, n in imports(ctx))))
    if name == "debimage":
        image = ctx.sizes["packed_image"]
        want = [n for t, n in imports(ctx) if t == image][0]
        dirs = image_layers(store(ctx, "dir"), want)
        packs = image_layers(store(ctx, "packed"), want)
        root = os.path.join(ctx.scratch, "fx-debimage")
        os.makedirs(root)
        for i, d in enumerate(dirs):
            os.symlink(os.path.join(d, "diff"), os.path.join(root, str(i)))
        fx = F.Fixture("debimage", root, len(dirs),
                       info="Debian %s image, %d layers" % (image, len(dirs)))
        # absolute: strata-fs finds a packed layer's chunk store from the file's own path
        fx.packed = [os.path.join(p, "layer.pk") for p in reversed(packs)]
        fx.sqfs = debset.squashfs(ctx.cache, ds.flat(image), "flat-" + image, ctx.log)
        fx.flat = ds.flat(image)
        return fx
    if name == "pkbig":
        mib = ctx.sizes["big_mib"]
        d = debset.big_file(ctx.cache, ds.flat("py"), mib, ctx.log)
        root = os.path.join(ctx.scratch, "fx-pkbig")
        os.makedirs(root)
        os.symlink(d, os.path.join(root, "0"))
        fx = F.Fixture("pkbig", root, 1, info="one %d MiB file of the image's bytes" % mib)
        dest = os.path.join(ctx.scratch, "pkbig.pk")
        strata_pack(ctx, d, dest, os.path.join(ctx.scratch, "pkbig-chunks"), 3600)
        fx.packed = [dest]
        fx.sqfs = debset.squashfs(ctx.cache, d, "big-%dM" % mib, ctx.log)
        return fx
    raise BenchError("unknown fixture %s" % name)


def probe_packed(ctx, fx):
    """The two-layer probe stack as packed layers (for 'strata-fs packed')."""
    if not getattr(fx, "packed", None):
        out = []
        for i in reversed(range(len(fx.lowers))):
            dest = os.path.join(ctx.scratch, "probe-%d.pk" % i)
            r, _ = strata_pack(ctx, fx.layer_path(i), dest, os.path.join(ctx.scratch, "probe-chunks"), 60)
            out.append(dest)
        fx.packed = out
    return fx


def probe_sqfs(ctx, fx):
    """The probe stack's merged tree (a, c) as a squashfs (for squashfuse)."""
    if not getattr(fx, "sqfs", None):
        flat = os.path.join(ctx.scratch, "probe-flat")
        os.makedirs(flat, exist_ok=True)
        for n in ("a", "c"):
            with open(os.path.join(flat, n), "w") as f:
                f.write(n)
        out = os.path.join(ctx.scratch, "probe.sqfs")
        sysutil.run_setup(["mksquashfs", flat, out, "-comp", "lz4", "-noappend", "-quiet",
                           "-no-progress"], what="mksquashfs of the probe tree")
        fx.sqfs = out
    return fx


# -- workloads -------------------------------------------------------------------

class StoreImport(W.Workload):
    """The whole data set imported into a fresh store of the contender's
    format; then the store's size and, for packed, system df's ratios."""
    group = GROUP
    only_kinds = ("store",)
    heavy = True

    def measure(self, ctx, inst, fixture):
        ds = data_set(ctx)
        # beside the scratch of the instance, not in it: the last one may be kept
        path = os.path.join(ctx.scratch, "store-%s-%d" % (inst.contender.fmt, next(ctx.counter)))
        try:
            wall, cpu = import_all(ctx, path, inst.contender.fmt, ctx.build_timeout)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        size = du_bytes(path) / 1048576.0
        extra = [("store size on disk", "MiB", size, "du of the store (%d images imported)"
                  % len(imports(ctx)))]
        per, distinct = ds.gzip_bytes(imports(ctx))
        tars = ds.tar_bytes(imports(ctx))
        # issue 16's measure: each image's gzip blobs, summed over the images
        # (as that many archives hold them); each distinct blob once beside it
        extra.append(("store size on disk", "MiB", per / 1048576.0,
                      "each imported image's gzip blobs, summed over the %d imports (%.0f MiB "
                      "of tar)" % (len(imports(ctx)), tars / 1048576.0), "gzip blobs"))
        extra.append(("gzip blobs, each distinct one once", "MiB", distinct / 1048576.0,
                      "what a registry keeps of these images", "gzip blobs"))
        if inst.contender.fmt == "packed":
            out = sysutil.run_setup([ctx.strata, "--store", path, "system", "df", "--json"],
                                    what="strata system df --json")
            t = json.loads(out)["total"]
            r = t["ratios"]
            note = ("logical %.0f MiB, after file dedup %.0f MiB, after chunk dedup %.0f MiB, "
                    "stored %.0f MiB (layers %.0f MiB, chunks %.0f MiB on disk)"
                    % tuple(x / 1048576.0 for x in (t["logical_bytes"], t["file_dedup_bytes"],
                                                    t["chunk_dedup_bytes"], t["stored_bytes"],
                                                    t["disk_layers_bytes"], t["disk_chunks_bytes"])))
            extra += [("df: logical bytes", "MiB", t["logical_bytes"] / 1048576.0, note),
                      ("df: stored bytes", "MiB", t["stored_bytes"] / 1048576.0, note),
                      ("df: file-level dedup", "x", r["file_dedup"], "logical / after identical files once"),
                      ("df: chunk-level dedup", "x", r["chunk_dedup"],
                       "after file dedup / after identical 64 KiB chunks once"),
                      ("df: lz4 ratio", "x", r["lz4"], "distinct chunks: uncompressed / stored"),
                      ("df: total ratio", "x", r["total"], "logical / stored")]
        adopt_store(ctx, inst.contender.fmt, path)
        return W.Sample(wall, cpu, None, note="%d imports, client CPU summed" % len(imports(ctx)),
                        extra=extra)


class PackThroughput(W.Workload):
    """`strata pack` of the flattened image into a fresh chunk store, its
    input in the page cache (one untimed read first): MB/s of input."""
    group = GROUP
    only_kinds = ("store",)
    only_contenders = ("packed store",)

    def measure(self, ctx, inst, fixture):
        ds = data_set(ctx)
        src = ds.flat(ctx.sizes["packed_image"])
        sysutil.run_setup(["sh", "-c", "tar cf - . | cat >/dev/null"], cwd=src,
                          what="warm the pack input", timeout=900)
        r, nbytes = strata_pack(ctx, src, os.path.join(inst.scratch, "image.pk"),
                                os.path.join(inst.scratch, "chunks"), ctx.build_timeout)
        if nbytes is None:
            nbytes = apparent_bytes(src)
        mbs = nbytes / 1e6 / r.wall
        return W.Sample(r.wall, r.cpu, None,
                        note="%.0f MB of files in %.2f s" % (nbytes / 1e6, r.wall),
                        extra=[("strata pack throughput", "MB/s", mbs,
                                "%.0f MB of input (files of %s), input cached"
                                % (nbytes / 1e6, os.path.basename(src)))])


def workloads(ctx):
    """The group's rows, in run order: the default mode only (the data set
    is made as root; the busy and rootless modes judge other issues)."""
    if ctx.rootless or ctx.busy:
        return []
    s = ctx.sizes
    big = "%s MiB" % s["big_mib"] if s["big_mib"] < 1024 else "%d GiB" % (s["big_mib"] // 1024)
    # a quick run is the two-minute before/after check: these rows (minutes
    # of imports) join it when --only names them
    rd = dict(group=GROUP, only_contenders=READERS, ratio_ref=READ_REF, quick="only")
    full_read = "tar cf - . | cat >/dev/null"
    return [
        StoreImport("import the data set", "debset", ratio_ref="dir store", quick="only"),
        PackThroughput("strata pack of the image", "debset", quick="only"),
        W.MountTime("packed: mount image", "debimage", **rd),
        W.Command("packed: tar c image, cold", "debimage", cold=True,
                  cmd=lambda ctx, fx: "tar cf - %s | cat >/dev/null"
                  % ("." if ctx.mode == "full" else ctx.sizes["tar_path"]), **rd),
        W.Command("packed: seq read %s, cold" % big, "pkbig", cold=True, heavy=True,
                  cmd="dd if=big.bin of=/dev/null bs=1M 2>/dev/null", **rd),
        W.Command("packed: seq read %s, warm" % big, "pkbig", warm=True, heavy=True,
                  cmd="dd if=big.bin of=/dev/null bs=1M 2>/dev/null", **rd),
        W.Fio("packed: 4k rand read, cold", "pkbig", cold=True, heavy=True,
              job=lambda ctx, fx: ["--rw=randread", "--readonly", "--filename=big.bin",
                                   "--io_size=%dM" % ctx.sizes["randread_mib"]], **rd),
        W.Command("packed: find -type f, cold", "debimage", cold=True,
                  cmd="find . -type f >/dev/null", **rd),
        W.Command("packed: find -type f, warm", "debimage", warm=True,
                  cmd="find . -type f >/dev/null", **rd),
        W.Command("packed: ls -lR, cold", "debimage", cold=True, cmd="ls -lR >/dev/null", **rd),
        W.Command("packed: ls -lR, warm", "debimage", warm=True, cmd="ls -lR >/dev/null", **rd),
        W.DaemonRss("packed: daemon RSS after a full read", "debimage", walk=full_read, **rd),
    ]


def check_views(ctx, contenders):
    """strata-fs packed and squashfuse must show the image as strata-fs
    shows its directory layers before their reads are reported."""
    ref = next((c for c in contenders if c.name == READ_REF), None)
    others = [c for c in contenders if c.name in READERS and c.name != READ_REF]
    if ref is None or not others:
        return
    from .harness import _mounted_manifest
    try:
        fx = ctx.fixture("debimage")
        want = _mounted_manifest(ref, ctx, fx)
    except (BenchError, OSError, subprocess.TimeoutExpired) as e:
        ctx.note("could not check the packed image's views: %s" % e)
        return
    for c in others:
        try:
            got = _mounted_manifest(c, ctx, fx)
        except (BenchError, OSError, subprocess.TimeoutExpired) as e:
            ctx.note("%s: view of the Debian image could not be read: %s" % (c.name, e))
            continue
        bad = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        if bad:
            ctx.note("%s shows the Debian image differently from strata-fs over its directory "
                     "layers in %d of %d entries, e.g. %s: %s vs %s"
                     % (c.name, len(bad), len(want), bad[0], want.get(bad[0]), got.get(bad[0])))
        else:
            ctx.log("%s shows the Debian image exactly as strata-fs over directory layers does "
                    "(%d entries)" % (c.name, len(want)))
