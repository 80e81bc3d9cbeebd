"""Differential test harness: a FUSE overlay filesystem against kernel overlayfs.

A scenario describes layers and a sequence of operations. For each whiteout
encoding (kernel: char 0/0 + trusted.overlay.opaque; oci: .wh.NAME and
.wh..wh..opq) the harness builds the layers twice, mounts kernel overlayfs on
one copy (always the kernel encoding, the only one the kernel reads) and the
filesystem under test on the other, runs every operation on both and compares
the outcomes, then compares the whole merged trees, checks the lower layers
were not touched and that both views survive unmount + remount unchanged.

Only relations between inode numbers are compared (hard-link groups, "same
inode as before"), never raw numbers: the two mounts sit on different copies.

The filesystem under test is $STRATA_FS, else the path given with --fs.
Exit status: 0 pass, 1 mismatch, 77 skip (with the reason on stdout).

This module runs scenarios; layers.py builds layer directories, mounts.py
mounts, observe.py snapshots and compares, fsmode.py holds the run mode.
It re-exports their names, so scenario files import from here only.
"""

import ctypes
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from fsmode import SKIP, Skip, Fail, check, ensure_user, mode  # noqa: F401  (re-exported)
from layers import F, D, L, H, W, O, P, C, B, S, E, LayerBuilder, T_OLD  # noqa: F401
from mounts import (KernelMount, FuseMount, is_mounted, mount_fstype, mount_tmpfs,  # noqa: F401
                    umount, run, thread_stacks)
from observe import (OLD_LIMIT_NS, xattrs_of, stt, file_sha, rd, ls, data_map, walk,  # noqa: F401
                     tree_snapshot, link_groups, layer_snapshot, upper_copied, short,
                     compare_trees, ino_stability, compare_ino_stability, check_unique_inos)


libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def nofile_wrapper(fs, base, nofile):
    """A program that runs fs (same pid, by exec) under an open-file limit of
    nofile, soft and hard (capped at this process's hard limit), for a
    FuseMount to start: the daemon sizes its descriptor budget from it."""
    import resource
    nofile = min(nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    w = os.path.join(base, 'fs-nofile%d' % nofile)
    with open(w, 'w') as f:
        f.write('#!/bin/sh\nulimit -n %d || exit 1\nexec %s "$@"\n' % (nofile, fs))
    os.chmod(w, 0o755)
    return w


def become_subreaper():
    # A daemon that backgrounds itself must still be reaped by us: PID 1 on
    # this host does not reap orphans.
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def conclude(base, problems):
    """End of a standalone test: its scratch tree removed, daemons reaped,
    problems printed; the exit code."""
    subprocess.run(['rm', '-rf', base])
    reap_all()
    for pr in problems:
        print('FAIL: ' + pr)
    return 1 if problems else 0


def on_tmpfs(prefix, body):
    """A standalone test's body(base, problems) run in a scratch tmpfs of
    its own (the same file system under every run, whatever /tmp is),
    unmounted and concluded whatever happens; the exit code."""
    base = tempfile.mkdtemp(prefix=prefix)
    mount_tmpfs(base)
    problems = []
    try:
        body(base, problems)
    finally:
        umount(base)
        code = conclude(base, problems)
    return code


def in_threads(n, fn):
    """Runs fn(i) in n threads at once; re-raises the first failure."""
    errs = []
    barrier = threading.Barrier(n)

    def body(i):
        try:
            barrier.wait()
            fn(i)
        except BaseException as e:  # noqa: reported below
            errs.append(e)
    ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t_ in ts:
        t_.start()
    for t_ in ts:
        t_.join()
    if errs:
        raise errs[0]


def write(p, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o644):
    """One write(2) of data to p opened with flags; its return value."""
    fd = os.open(p, flags, mode)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def renameat2(old, new, flags):
    AT_FDCWD = -100
    r = libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new),
                       ctypes.c_uint(flags))
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def as_user(uid, gid, fn, *args):
    """Runs fn in a forked child with the credentials of uid/gid (as setpriv
    --reuid --regid --clear-groups would) and returns its outcome."""
    import pickle
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            res = outcome(fn, *args)
        except BaseException as e:  # noqa: report anything to the parent
            res = ('EXC', repr(e))
        with os.fdopen(w, 'wb') as f:
            pickle.dump(res, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, 'rb') as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data)


def outcome(fn, *args):
    try:
        return ('ok', fn(*args))
    except OSError as e:
        return ('ERR', errno.errorcode.get(e.errno, str(e.errno)))


class Side:
    """One mount as seen by an operation: c.p('rel') is the absolute path."""

    def __init__(self, mount, start_inos):
        self.m = mount
        self.root = mount.mnt
        self.start_inos = start_inos

    def p(self, rel=''):
        return os.path.join(self.root, rel) if rel else self.root

    def same_ino_as_start(self, rel):
        return os.lstat(self.p(rel)).st_ino == self.start_inos.get(rel)


class Twin:
    """Runs each operation on the kernel side then the FUSE side and records
    every difference (the scenario continues, so one report shows them all)."""

    def __init__(self, name, k, f, report):
        self.name, self.k, self.f, self.report = name, k, f, report
        self.nops = 0

    def op(self, label, fn, *args, user=None, unsupported=()):
        """unsupported: errno names the FUSE side may answer where the
        contract says "if possible" (noted, not a mismatch)."""
        self.nops += 1
        user = user or mode.fuse_user
        res = []
        for side in (self.k, self.f):
            if user:
                res.append(as_user(user[0], user[1], fn, side, *args))
            else:
                res.append(outcome(fn, side, *args))
        if os.environ.get('STRATA_DIFF_VERBOSE'):
            print('op %s: %s' % (label, short(res[0], 300)), flush=True)
        if res[1][0] == 'ERR' and res[1][1] in unsupported:
            self.report.note('%s: %s: unsupported by the filesystem under test (%s)'
                             % (self.name, label, res[1][1]))
        elif res[0] != res[1]:
            self.report.mismatch('%s: op %r' % (self.name, label), res[0], res[1])
        return res[1]

    def fuse_only(self, label, fn, expected):
        """Where kernel overlayfs is no oracle (e.g. it cannot redirect a
        directory rename under userxattr), check the FUSE side against the
        contract's expected outcome; fn must leave the tree as it found it."""
        r = as_user(mode.fuse_user[0], mode.fuse_user[1], fn, self.f) if mode.fuse_user else outcome(fn, self.f)
        if r != expected:
            self.report.fail('%s: op %r' % (self.name, label),
                             'expected %s, got %s' % (short(expected), short(r)))
        return r


def recycle(t, source='own'):
    """Mid-scenario: both sides unmounted, each upper made the top lower layer
    (as a committed container becomes an image layer), each mounted again on
    it with a fresh upper. source='kernel': both sides take a copy of the
    kernel side's upper instead, so the FUSE side reads what kernel
    overlayfs wrote (relative redirects, its whiteouts and markers)."""
    for side in (t.f, t.k):
        p = side.m.umount()
        if p:
            t.report.fail(t.name + ' recycle', p)
    kernel_upper = t.k.m.upper
    for side in (t.k, t.f):
        m = side.m
        d = os.path.dirname(m.upper)
        n = len(m.lowers)
        layer = os.path.join(d, 'l%d' % n)
        if source == 'kernel':
            r = run(['cp', '-a', kernel_upper, layer])
            if r.returncode:
                raise RuntimeError('cp -a of the kernel upper: ' + r.stderr.strip())
        else:
            os.rename(m.upper, layer)
        m.lowers = m.lowers + [layer]
        m.upper = os.path.join(d, 'upper%d' % n)
        m.work = os.path.join(d, 'work%d' % n)
        os.makedirs(m.upper)
        os.makedirs(m.work)
        if mode.fuse_user:
            chown_tree(d, *mode.fuse_user)
    for side in (t.k, t.f):
        side.m.mount()


class Report:
    def __init__(self):
        self.problems = []
        self.notes = []
        self.seen = set()

    def mismatch(self, where, kernel, fuse):
        ref = 'ref' if mode.reference_fs else 'kernel'
        self.problems.append('MISMATCH %s\n    %-7s %s\n    fuse:   %s'
                             % (where, ref + ':', short(kernel, 1500), short(fuse, 1500)))
        print(self.problems[-1], flush=True)

    def fail(self, where, msg):
        self.problems.append('FAIL %s: %s' % (where, msg))
        print(self.problems[-1], flush=True)

    def note(self, msg):
        self.notes.append(msg)
        print('NOTE ' + msg, flush=True)


class Scenario:
    """layers: list (bottom first) of entry lists. run(t): the operations.
    user_layers: whether layer entries get their owners (root only)."""
    name = '?'
    layers = []
    upper = True
    relative_lowers = False
    fuse_options = ''
    kernel_options = ''   # more options for the kernel overlayfs mount
    # False where the reference is no oracle for the whole tree and the
    # scenario checks the filesystem under test against the contract only.
    reference_trees = True
    # Each lower layer on its own tmpfs: inode numbers then collide across
    # layers, and the filesystem must still present unique ones.
    layer_per_fs = False
    # Whether the kernel's "same inode number as at the start" answers are
    # deterministic for this scenario (not under racing copy-ups).
    kernel_ino_oracle = True
    # Whether the scenario also runs over packed lower layers.
    packed = True

    def run(self, t):
        pass

    def prepare(self, base):
        """Called with the scenario's private tmpfs before layers are built."""
        self.base = base

    def encodings(self):
        # Every opaque marker the contract lists is read; the variants only
        # differ for scenarios whose layers have opaque directories.
        # An unprivileged daemon cannot read trusted.* markers.
        unpriv = mode.rootless or mode.fuse_user
        base = ['userxattr', 'oci'] if unpriv else ['kernel', 'oci']
        if any(e.kind == 'opaque' for l in self.layers for e in l):
            base += ['fovl'] if unpriv else ['userxattr', 'fovl']
        # packed: the FUSE side's lower layers packed by `strata pack`
        # (docs/packed-format.md), when the filesystem reads them
        if not unpriv and packer() and self.packed:
            base += ['packed']
        return base


PACKER = {}


def packer():
    """The strata binary that packs layers for the packed encoding: $STRATA_BIN,
    else the one beside the strata-fs under test (a build tree); None when
    the filesystem under test is not strata-fs or no strata is found."""
    if 'bin' not in PACKER:
        fs = PACKER.get('fs') or ''
        b = os.environ.get('STRATA_BIN') or os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(fs))), 'tools', 'strata')
        ok = os.path.basename(fs) == 'strata-fs' and os.path.exists(b)
        PACKER['bin'] = b if ok else None
    return PACKER['bin']


def pack_layer(ld):
    """Packs layer directory ld into ld + '.pk' (its chunks in the chunk store
    beside it, shared by the scenario's layers); the packed layer's path."""
    dest = ld + '.pk'
    r = run([packer(), 'pack', ld, dest])
    if r.returncode:
        raise RuntimeError('strata pack %s: %s' % (ld, r.stderr.strip()))
    return dest


def lower_snapshot(l):
    """layer_snapshot() of a layer directory, or of a packed layer: its
    metadata file and its chunk store."""
    if os.path.isdir(l):
        return layer_snapshot(l)
    return {'meta': file_sha(l), 'chunks': layer_snapshot(os.path.join(os.path.dirname(l), 'chunks'))}


def check_fs(fs):
    if os.geteuid() != 0:
        raise Skip('needs root (kernel overlayfs and FUSE mounts)')
    if not fs or not os.path.exists(fs):
        raise Skip('filesystem under test not built: %r (set STRATA_FS)' % fs)
    if not os.path.exists('/dev/fuse'):
        raise Skip('no /dev/fuse')
    with open('/proc/filesystems') as f:
        if 'overlay' not in f.read():
            run(['modprobe', 'overlay'])


def chown_tree(root, uid, gid):
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            os.chown(os.path.join(d, n), uid, gid, follow_symlinks=False)
    os.chown(root, uid, gid)


def snapshot_as_fuse_user(mnt):
    """The reference side's tree, seen with the same credentials as the FUSE
    side (trusted.* xattrs, for one, are only visible to root)."""
    if mode.fuse_user:
        r = as_user(mode.fuse_user[0], mode.fuse_user[1], tree_snapshot, mnt)
        if r[0] != 'ok':
            raise OSError(errno.EIO, 'as user: %s' % (r,))
        return r[1]
    return tree_snapshot(mnt)


def snapshot_or_report(report, where, m):
    """The FUSE side's tree; a failing walk (e.g. a crashed daemon) is a
    reported failure and yields an empty tree so the comparison goes on."""
    try:
        if mode.fuse_user:
            # Without allow_other only the mounting user may look inside.
            r = as_user(mode.fuse_user[0], mode.fuse_user[1], tree_snapshot, m.mnt)
            if r[0] != 'ok':
                raise OSError(errno.EIO, 'as user: %s' % (r,))
            return r[1]
        return tree_snapshot(m.mnt)
    except OSError as e:
        report.fail(where, 'walking the FUSE mount: %s %s' % (e, m.alive_problem() or ''))
        return {}, {}


def run_scenario(sc, fs, report, encoding):
    where = '%s[%s]' % (sc.name, encoding)
    base = tempfile.mkdtemp(prefix='strata-fs-diff-')
    mount_tmpfs(base)
    mounts = []
    layer_mounts = []
    try:
        sides = {}
        sc.prepare(base)
        kenc = 'userxattr' if mode.rootless else 'kernel'
        if mode.reference_fs:
            kenc = encoding
        for kind, enc in (('kernel', kenc), ('fuse', encoding)):
            d = os.path.join(base, kind)
            lowers = []
            b = LayerBuilder(kenc if enc == 'packed' else enc)
            for i, entries in enumerate(sc.layers):
                ld = os.path.join(d, 'l%d' % i)
                if sc.layer_per_fs:
                    os.makedirs(ld)
                    mount_tmpfs(ld)
                    layer_mounts.append(ld)
                b.build(ld, entries)
                if kind == 'fuse' and enc == 'packed':
                    ld = pack_layer(ld)
                lowers.append(ld)
            upper = work = None
            if sc.upper:
                upper, work = os.path.join(d, 'upper'), os.path.join(d, 'work')
                os.makedirs(upper)
                os.makedirs(work)
            mnt = os.path.join(d, 'mnt')
            os.makedirs(mnt)
            cwd = d if sc.relative_lowers else None
            if kind == 'kernel' and mode.reference_fs:
                m = FuseMount(mode.reference_fs, lowers, upper, work, mnt, cwd=cwd,
                              extra=sc.fuse_options)
            elif kind == 'kernel':
                m = KernelMount(lowers, upper, work, mnt, cwd=cwd, extra=sc.kernel_options)
            else:
                m = FuseMount(fs, lowers, upper, work, mnt, cwd=cwd, extra=sc.fuse_options)
            sides[kind] = m
        if mode.fuse_user:
            chown_tree(base, *mode.fuse_user)
        lower_before = {kind: [lower_snapshot(l) for l in m.lowers] for kind, m in sides.items()}

        k, f = sides['kernel'], sides['fuse']
        k.mount()
        mounts.append(k)
        f.mount()
        mounts.append(f)

        ks = snapshot_as_fuse_user(k.mnt)
        fsnap = snapshot_or_report(report, where + ' initial tree', f)
        if sc.reference_trees:
            # Without xino the kernel repeats numbers across filesystems.
            compare_trees(report, where + ' initial tree', ks, fsnap, groups=not sc.layer_per_fs)

        t = Twin(where, Side(k, ks[1]), Side(f, fsnap[1]), report)
        try:
            sc.run(t)
        except Exception:
            report.fail(where, 'scenario raised:\n' + traceback.format_exc())

        ka = snapshot_as_fuse_user(k.mnt)
        fa = snapshot_or_report(report, where + ' final tree', f)
        check_unique_inos(report, where + ' final tree', fa)
        # Hard-link groups are compared on fresh lookups only (after the
        # remount): kernel overlayfs with index=off can report two inode
        # numbers for one upper inode while an old dentry stays cached.
        if sc.reference_trees:
            compare_trees(report, where + ' final tree', ka, fa, groups=False)
            # Under userxattr the kernel's copy-up origin is not always
            # followed, so its inode numbers are no oracle there either.
            if sc.kernel_ino_oracle and not mode.rootless:
                compare_ino_stability(report, where + ' start->final', ks[1], ka[1], fsnap[1],
                                      fa[1])
        if sc.upper and sc.reference_trees:
            # Copying up less than the kernel is fine (metacopy, no-op chown):
            # the remount check below proves nothing was lost. Copying up more
            # is not: reads and deletes must never copy data.
            extra = upper_copied(f.upper) - upper_copied(k.upper)
            if extra:
                report.fail(where, 'copied up or created in upper, kernel did not: %s'
                            % short(sorted(extra)))

        # Unmount + remount the same upper: both views must be unchanged.
        mounts.remove(f)
        p = f.umount()
        if p:
            report.fail(where + ' fuse daemon', p)
        if f.work:
            # Copy-ups are built in workdir and renamed into place: after a
            # clean unmount nothing may be left half-made there.
            debris = [os.path.relpath(os.path.join(d, n), f.work)
                      for d, _, files in os.walk(f.work) for n in files]
            if debris:
                report.fail(where, 'files left in workdir after unmount: %s' % short(debris))
        mounts.remove(k)
        k.umount()
        for kind, m in sides.items():
            after = [lower_snapshot(l) for l in m.lowers]
            for i, (b0, a0) in enumerate(zip(lower_before[kind], after)):
                if b0 != a0:
                    changed = sorted(r for r in set(b0) | set(a0) if b0.get(r) != a0.get(r))
                    report.fail(where, '%s lower layer l%d was modified: %s'
                                % (kind, i, short(changed)))
        k.mount()
        mounts.append(k)
        f.mount()
        mounts.append(f)
        kr = snapshot_as_fuse_user(k.mnt)
        fr = snapshot_or_report(report, where + ' tree after remount', f)
        compare_trees(report, where + ' fuse view before/after remount', fa, fr, groups=False)
        if sc.reference_trees:
            compare_trees(report, where + ' tree after remount', kr, fr,
                          groups=not sc.layer_per_fs)
        # The kernel is no oracle here (an origin it cannot follow gives a new
        # number after remount); the contract is simply: numbers do not change.
        moved = sorted(r for r in fa[1] if r in fr[1] and fa[1][r] != fr[1][r])
        if moved:
            report.fail(where, 'inode numbers changed across unmount+remount for %d paths: %s'
                        % (len(moved), short(moved)))
    finally:
        for m in reversed(mounts):
            try:
                p = m.umount()
                if p:
                    report.fail(where + ' fuse daemon', p)
            except Exception as e:
                report.fail(where, 'cleanup: %s' % e)
        for lm in reversed(layer_mounts):
            umount(lm)
        umount(base)
        os.rmdir(base)
        reap_all()


def fs_under_test(argv):
    fs = os.environ.get('STRATA_FS')
    if not fs and '--fs' in argv:
        fs = argv[argv.index('--fs') + 1]
    return fs


def prepare_fs(argv):
    """What every test script does first: adopt orphans, pick the filesystem
    under test and check it can run here. Returns its path, or None after
    printing why the test skips."""
    become_subreaper()
    fs = fs_under_test(argv)
    PACKER['fs'] = fs
    try:
        check_fs(fs)
    except Skip as e:
        print('SKIP: %s' % e)
        return None
    return fs


def main(scenarios, argv):
    """argv: [--fs PATH] NAME... ; runs the named scenarios (all if none)."""
    names = []
    i = 0
    while i < len(argv):
        if argv[i] == '--fs':
            i += 2
            continue
        names.append(argv[i])
        i += 1
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP
    known = known_failures(fs)
    byname = {s.name: s for s in scenarios}
    todo = [byname[n] for n in names] if names else scenarios
    report = Report()
    print('filesystem under test: %s' % fs, flush=True)
    failed = set()
    try:
        for sc in todo:
            for enc in sc.encodings():
                t0 = time.time()
                n0 = len(report.problems)
                run_scenario(sc, fs, report, enc)
                if len(report.problems) > n0:
                    failed.add(sc.name)
                print('%s[%s]: %s (%.1fs)' % (sc.name, enc,
                                              'ok' if len(report.problems) == n0 else
                                              '%d problems' % (len(report.problems) - n0),
                                              time.time() - t0), flush=True)
    except Skip as e:
        print('SKIP: %s' % e)
        return SKIP
    failed = {mode_prefix() + n for n in failed}
    for sc in todo:
        if mode_prefix() + sc.name in known and mode_prefix() + sc.name not in failed:
            print('NOTE: %s is listed in known_failures.txt but passed: remove it from the list'
                  % (mode_prefix() + sc.name))
    if report.problems:
        print('\n%d problems' % len(report.problems))
        if failed and all(n in known for n in failed):
            # Still printed in full above; reported as skipped, not passed,
            # so the gap stays visible in the ctest summary.
            print('SKIP: known failures of the filesystem under test: ' +
                  '; '.join('%s: %s' % (n, known[n]) for n in sorted(failed)))
            return SKIP
        return 1
    print('all scenarios match kernel overlayfs')
    return 0


def mode_prefix():
    """known_failures.txt keys: NAME for runs as root, cached:NAME for root
    runs with passthrough=off (the writeback cache), rootless:NAME inside a
    user namespace, fusermount:NAME for the daemon run by a user."""
    if mode.rootless:
        return 'rootless:'
    if mode.fuse_user:
        return 'fusermount:'
    if 'passthrough=off' in os.environ.get('STRATA_FS_OPTS', '') or not kernel_has_passthrough():
        return 'cached:'
    return ''


def drop_caches():
    """Write back and drop the page cache (root), for cold reads and page counts."""
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def resident_bytes(path):
    """How much of path the page cache holds (fincore), or None without it."""
    r = subprocess.run(['fincore', '--bytes', '--noheadings', '--output', 'RES', path],
                       capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.strip() else None


def passthrough_missing():
    """None where this process can use FUSE passthrough, else why not."""
    if os.geteuid() != 0:
        return 'passthrough needs CAP_SYS_ADMIN; run as root'
    if not kernel_has_passthrough():
        return 'this kernel has no FUSE passthrough (CONFIG_FUSE_PASSTHROUGH, Linux 6.9+)'
    return None


def kernel_has_passthrough():
    """Does this kernel offer FUSE passthrough (CONFIG_FUSE_PASSTHROUGH,
    Linux 6.9+)? Where it does not, strata-fs as root keeps the writeback
    cache, as with passthrough=off."""
    import gzip
    try:
        with gzip.open('/proc/config.gz', 'rt') as f:
            return 'CONFIG_FUSE_PASSTHROUGH=y' in f.read()
    except OSError:
        rel = os.uname().release.split('.')
        try:
            return (int(rel[0]), int(rel[1].split('-')[0])) >= (6, 9)
        except ValueError:
            return False


def known_failures(fs):
    """Scenarios strata-fs is known to fail (known_failures.txt: NAME REASON),
    only for strata-fs itself: any other filesystem is held to everything."""
    if not fs or os.path.basename(fs) != 'strata-fs':
        return {}
    out = {}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'known_failures.txt')
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith('#'):
                    name, _, reason = line.partition(' ')
                    out[name] = reason.strip()
    return out


def an_elf_file():
    """An ELF program of this host of at least 256 KiB."""
    for name in ('busybox', 'bash', 'python3', 'perl', 'ls'):
        p = shutil.which(name)
        if p:
            p = os.path.realpath(p)
            with open(p, 'rb') as f:
                if f.read(4) == b'\x7fELF' and os.path.getsize(p) >= 256 << 10:
                    return p
    return None
