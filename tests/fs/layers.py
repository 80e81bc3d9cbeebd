"""Layer directories from a small description: entries (F file, D dir,
L symlink, H hard link, W whiteout, O opaque dir, P fifo, C/B devices,
S socket) written in one of the whiteout encodings."""

import os
import stat

T_OLD = 1577836800          # 2020-01-01: every layer entry gets this mtime


def pattern(n, salt):
    """n bytes of file data that differ with salt and position (byte i is
    7i + salt mod 256), so a misplaced or stale block shows."""
    block = bytes((i * 7 + salt) & 0xff for i in range(1 << 16))
    return (block * (n // len(block) + 1))[:n]


class E:
    """One entry of a layer. kind: file dir symlink hardlink whiteout opaque
    fifo chr blk sock."""

    def __init__(self, kind, path, **kw):
        self.kind, self.path, self.kw = kind, path, kw


def F(path, data=b'', mode=0o644, uid=0, gid=0, xattrs=None, size=None, chunks=None):
    return E('file', path, data=data, mode=mode, uid=uid, gid=gid, xattrs=xattrs or {},
             size=size, chunks=chunks)


def D(path, mode=0o755, uid=0, gid=0, xattrs=None):
    return E('dir', path, mode=mode, uid=uid, gid=gid, xattrs=xattrs or {})


def L(path, target, uid=0, gid=0):
    return E('symlink', path, target=target, uid=uid, gid=gid)


def H(path, target):
    return E('hardlink', path, target=target)


def W(path):
    return E('whiteout', path)


def O(path):
    return E('opaque', path)


def P(path, mode=0o644):
    return E('fifo', path, mode=mode)


def C(path, major, minor, mode=0o644):
    return E('chr', path, major=major, minor=minor, mode=mode)


def B(path, major, minor, mode=0o644):
    return E('blk', path, major=major, minor=minor, mode=mode)


def S(path):
    return E('sock', path)


class LayerBuilder:
    """Writes entries into a layer directory in one whiteout encoding:
      kernel     char 0/0 whiteouts, trusted.overlay.opaque=y
      userxattr  char 0/0 whiteouts, user.overlay.opaque=y (kernel -o userxattr)
      oci        .wh.NAME files, .wh..wh..opq marker files
      fovl       .wh.NAME files, user.fuseoverlayfs.opaque=y (fuse-overlayfs)"""

    OPAQUE_XATTR = {'kernel': 'trusted.overlay.opaque', 'userxattr': 'user.overlay.opaque',
                    'fovl': 'user.fuseoverlayfs.opaque'}

    def __init__(self, encoding, chown=True):
        self.encoding, self.chown = encoding, chown

    def build(self, root, entries):
        os.makedirs(root, exist_ok=True)
        for e in entries:
            self._entry(root, e)
        self._set_times(root)

    def _parents(self, root, path):
        d = os.path.dirname(path)
        if d and not os.path.isdir(os.path.join(root, d)):
            os.makedirs(os.path.join(root, d))

    def _owner(self, p, kw):
        if self.chown and ('uid' in kw or 'gid' in kw):
            os.chown(p, kw.get('uid', 0), kw.get('gid', 0), follow_symlinks=False)

    def _entry(self, root, e):
        p = os.path.join(root, e.path)
        kw = e.kw
        self._parents(root, e.path)
        if e.kind == 'file':
            with open(p, 'wb') as f:
                if kw['size'] is not None:
                    f.truncate(kw['size'])
                for off, data in kw['chunks'] or []:
                    f.seek(off)
                    f.write(data)
                if kw['data']:
                    f.write(kw['data'])
            self._owner(p, kw)
            os.chmod(p, kw['mode'])
            for k, v in kw['xattrs'].items():
                os.setxattr(p, k, v)
        elif e.kind == 'dir':
            os.makedirs(p, exist_ok=True)
            self._owner(p, kw)
            os.chmod(p, kw['mode'])
            for k, v in kw['xattrs'].items():
                os.setxattr(p, k, v)
        elif e.kind == 'symlink':
            os.symlink(kw['target'], p)
            self._owner(p, kw)
        elif e.kind == 'hardlink':
            os.link(os.path.join(root, kw['target']), p)
        elif e.kind == 'fifo':
            os.mkfifo(p, kw['mode'])
        elif e.kind in ('chr', 'blk'):
            t = stat.S_IFCHR if e.kind == 'chr' else stat.S_IFBLK
            os.mknod(p, t | kw['mode'], os.makedev(kw['major'], kw['minor']))
        elif e.kind == 'sock':
            import socket
            s = socket.socket(socket.AF_UNIX)
            # bind() takes at most 107 bytes: go through the parent directory.
            cwd = os.getcwd()
            os.chdir(os.path.dirname(p))
            try:
                s.bind(os.path.basename(p))
            finally:
                os.chdir(cwd)
                s.close()
        elif e.kind == 'whiteout':
            if self.encoding in ('kernel', 'userxattr'):
                os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            else:
                d, n = os.path.split(p)
                open(os.path.join(d, '.wh.' + n), 'wb').close()
        elif e.kind == 'opaque':
            os.makedirs(p, exist_ok=True)
            if self.encoding in self.OPAQUE_XATTR:
                os.setxattr(p, self.OPAQUE_XATTR[self.encoding], b'y')
            else:
                open(os.path.join(p, '.wh..wh..opq'), 'wb').close()
        else:
            raise ValueError(e.kind)

    def _set_times(self, root):
        for d, dirs, files in os.walk(root, topdown=False):
            for n in files + dirs:
                os.utime(os.path.join(d, n), ns=(T_OLD * 10**9, T_OLD * 10**9),
                         follow_symlinks=False)
        os.utime(root, ns=(T_OLD * 10**9, T_OLD * 10**9))
