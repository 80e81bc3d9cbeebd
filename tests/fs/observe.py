"""Observing a mount: the stat fields both sides must agree on, whole-tree
snapshots, layer fingerprints, and the comparisons between them."""

import errno
import hashlib
import os
import stat

from fsmode import mode
from layers import T_OLD

OLD_LIMIT_NS = (T_OLD + 86400) * 10**9


def xattrs_of(p):
    """user.* and trusted.* xattrs (security.* and ACLs are out of scope)."""
    out = {}
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError as e:
        return 'ERR ' + errno.errorcode.get(e.errno, str(e.errno))
    for n in sorted(names):
        if n.startswith('user.') or n.startswith('trusted.'):
            try:
                out[n] = os.getxattr(p, n, follow_symlinks=False)
            except OSError as e:
                out[n] = 'ERR ' + errno.errorcode.get(e.errno, str(e.errno))
    return out


def stt(p, content=False):
    """The stat fields both filesystems must agree on."""
    st = os.lstat(p)
    fmt = stat.S_IFMT(st.st_mode)
    d = {'type': stat.filemode(fmt)[0], 'mode': oct(stat.S_IMODE(st.st_mode)),
         'nlink': st.st_nlink, 'uid': st.st_uid, 'gid': st.st_gid}
    if fmt != stat.S_IFDIR:
        d['size'] = st.st_size
    elif mode.ignore_dir_nlink:
        del d['nlink']
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        d['rdev'] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if fmt == stat.S_IFLNK:
        d['target'] = os.readlink(p)
    # Times older than the test were set by the layer builder and must
    # survive copy-up; newer ones only need to be "new" on both.
    d['mtime'] = st.st_mtime_ns if st.st_mtime_ns < OLD_LIMIT_NS else 'new'
    d['xattrs'] = xattrs_of(p)
    if content and fmt == stat.S_IFREG:
        try:
            d['sha'] = file_sha(p)
        except PermissionError:
            d['sha'] = 'EACCES'
    return d


def file_sha(p):
    h = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()[:16]


def rd(p):
    with open(p, 'rb') as f:
        return f.read()


def ls(p):
    return sorted(os.listdir(p))


def data_map(p):
    """[(data_start, data_end)...] by SEEK_DATA/SEEK_HOLE."""
    out = []
    fd = os.open(p, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                s = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            h = os.lseek(fd, s, os.SEEK_HOLE)
            out.append((s, h))
            off = h
    finally:
        os.close(fd)
    return out


def walk(root):
    """rel path -> lstat result, for every entry under root (root is '')."""
    out = {'': os.lstat(root)}
    stack = ['']
    while stack:
        rel = stack.pop()
        try:
            names = os.listdir(os.path.join(root, rel) if rel else root)
        except PermissionError:
            continue  # a directory the observer may not read: its mode says so
        for n in names:
            r = os.path.join(rel, n) if rel else n
            try:
                st = os.lstat(os.path.join(root, r))
            except PermissionError:
                continue  # listable but not searchable (r-- directory)
            out[r] = st
            if stat.S_ISDIR(st.st_mode):
                stack.append(r)
    return out


def tree_snapshot(root):
    """Normalised merged tree: rel -> fields, plus inode numbers kept apart."""
    sts = walk(root)
    tree, inos = {}, {}
    for rel, st in sts.items():
        p = os.path.join(root, rel) if rel else root
        tree[rel] = stt(p, content=True)
        inos[rel] = st.st_ino
    return tree, inos


def link_groups(tree, inos):
    """Partition of non-directories by inode: the hard-link relation."""
    g = {}
    for rel, ino in inos.items():
        if tree[rel]['type'] != 'd':
            g.setdefault(ino, []).append(rel)
    return sorted(sorted(v) for v in g.values() if len(v) > 1)


def layer_snapshot(root):
    """Everything about a layer that must never change (not atime)."""
    out = {}
    for rel, st in walk(root).items():
        p = os.path.join(root, rel) if rel else root
        d = (st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_ino, st.st_rdev,
             st.st_mtime_ns, st.st_ctime_ns,
             st.st_size if not stat.S_ISDIR(st.st_mode) else 0)
        x = {}
        for n in os.listxattr(p, follow_symlinks=False):
            x[n] = os.getxattr(p, n, follow_symlinks=False)
        d += (tuple(sorted(x.items())),)
        if stat.S_ISREG(st.st_mode):
            d += (file_sha(p),)
        elif stat.S_ISLNK(st.st_mode):
            d += (os.readlink(p),)
        out[rel] = d
    return out


def upper_copied(upper):
    """Non-directory entries in an upper dir that are not whiteouts/markers:
    what was copied up or created."""
    out = set()
    for rel, st in walk(upper).items():
        n = os.path.basename(rel)
        if stat.S_ISDIR(st.st_mode) or n.startswith('.wh.'):
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            continue
        out.add(rel)
    return out


def short(v, n=400):
    s = repr(v)
    return s if len(s) <= n else s[:n] + '...(%d chars)' % len(s)


def compare_trees(report, where, k, f, groups=True):
    ktree, kinos = k
    ftree, finos = f
    kk, fk = set(ktree), set(ftree)
    if kk != fk:
        report.mismatch(where + ': paths only on one side',
                        sorted(kk - fk)[:50], sorted(fk - kk)[:50])
    for rel in sorted(kk & fk):
        if ktree[rel] != ftree[rel]:
            diff = {x: (ktree[rel].get(x), ftree[rel].get(x))
                    for x in set(ktree[rel]) | set(ftree[rel])
                    if ktree[rel].get(x) != ftree[rel].get(x)}
            kv = {x: v[0] for x, v in diff.items()}
            fv = {x: v[1] for x, v in diff.items()}
            # The same difference seen again in a later snapshot is one problem.
            key = (where.split(' ')[0], rel, short(kv), short(fv))
            if key in report.seen:
                continue
            report.seen.add(key)
            report.mismatch('%s: %r differs in %s' % (where, rel, sorted(diff)), kv, fv)
    if not groups:
        return
    kg = [g for g in link_groups(ktree, kinos) if all(r in fk for r in g)]
    fg = [g for g in link_groups(ftree, finos) if all(r in kk for r in g)]
    if kg != fg:
        report.mismatch(where + ': hard-link groups', kg, fg)


def ino_stability(before, after):
    """For each path present in both: same inode number?"""
    return {rel: before[rel] == after[rel] for rel in before if rel in after}


def compare_ino_stability(report, where, kb, ka, fb, fa):
    ks, fs = ino_stability(kb, ka), ino_stability(fb, fa)
    bad = {rel: (ks[rel], fs[rel]) for rel in ks if rel in fs and ks[rel] != fs[rel]}
    if bad:
        items = sorted(bad.items())[:30]
        report.mismatch(where + ': inode number unchanged? (per path)',
                        {r: v[0] for r, v in items}, {r: v[1] for r, v in items})


def check_unique_inos(report, where, snap):
    """Contract: inode numbers are unique across layers: paths sharing one
    are hard links (nlink covers them all), never unrelated objects."""
    tree, inos = snap
    groups = {}
    for rel, ino in inos.items():
        groups.setdefault(ino, []).append(rel)
    bad = [sorted(g) for g in groups.values() if len(g) > 1 and
           any(tree[r]['type'] == 'd' or tree[r]['nlink'] < len(g) for r in g)]
    if bad:
        report.fail(where, 'unrelated paths share an inode number: %s' % short(sorted(bad)))
