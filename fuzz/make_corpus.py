#!/usr/bin/env python3
"""Write the seed corpora in fuzz/corpus/ (checked in; rerun after changing
this file). Small inputs that reach the interesting branches: every tar
member kind, whiteouts, xattrs, gzip/zstd, and the option and config
spellings real callers use."""
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile

here = os.path.dirname(os.path.abspath(__file__))


def put(kind, name, data):
    d = os.path.join(here, 'corpus', kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def tar(members, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=fmt) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def m(name, kind=tarfile.REGTYPE, data=b'', **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mtime = 1000
    ti.mode = kw.pop('mode', 0o755 if kind == tarfile.DIRTYPE else 0o644)
    for k, v in kw.items():
        setattr(ti, k, v)
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
        return ti, data
    return ti, None


def main():
    opts = [
        'lowerdir=/l1:/l2,upperdir=/u,workdir=/w',
        'lowerdir=/a\\:b:/c::/d,upperdir=/u,workdir=/w,volatile',
        'lowerdir=/l,xattr_permissions=2,squash_to_root,uidmap=0:1000:1:1:100000:65536,gidmap=:0:1000:1',
        'lowerdir=/l,redirect_dir=follow,metacopy=off,noacl,timeout=1.5,poll_us=0,passthrough=off,uring=off',
        'lowerdir=/l,fsname=x,subtype=strata,allow_other,nodev,nosuid,ro,default_permissions',
        'lowerdir=/l,squash_to_uid=5,squash_to_gid=6,unlabeled=enodata,writeback=off',
        'static_nlink', 'redirect_dir=nofollow', 'uidmap=0:0:4294967295', 'lowerdir=,,,',
    ]
    for i, s in enumerate(opts):
        put('opts', 'seed%02d' % i, s)

    files = [m('etc', tarfile.DIRTYPE), m('etc/hosts', data=b'127.0.0.1 localhost\n'),
             m('bin', tarfile.DIRTYPE), m('bin/sh', data=b'\x7fELF' + b'\0' * 60, mode=0o4755, uid=33, gid=44),
             m('bin/ls', tarfile.SYMTYPE, linkname='sh'), m('bin/cat', tarfile.LNKTYPE, linkname='bin/sh'),
             m('tmp', tarfile.DIRTYPE, mode=0o1777)]
    base = tar(files)
    put('layer', 'plain.tar', base)
    put('layer', 'plain.tar.gz', gzip.compress(base, mtime=0))
    try:
        z = subprocess.run(['zstd', '-q', '-c'], input=base, stdout=subprocess.PIPE, check=True).stdout
        put('layer', 'plain.tar.zst', z)
    except (OSError, subprocess.CalledProcessError):
        pass
    put('layer', 'whiteouts.tar', tar([m('d', tarfile.DIRTYPE), m('d/.wh..wh..opq'), m('.wh.gone'),
                                        m('dev', tarfile.DIRTYPE),
                                        m('x', tarfile.CHRTYPE, devmajor=0, devminor=0)]))
    put('layer', 'devices.tar', tar([m('dev', tarfile.DIRTYPE),
                                     m('dev/null', tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
                                     m('dev/null2', tarfile.LNKTYPE, linkname='dev/null'),
                                     m('dev/loop0', tarfile.BLKTYPE, devmajor=7, devminor=0),
                                     m('dev/fifo', tarfile.FIFOTYPE)]))
    pax = m('f', data=b'x')
    pax[0].pax_headers = {'SCHILY.xattr.user.a': 'b', 'SCHILY.xattr.trusted.overlay.opaque': 'y',
                          'SCHILY.xattr.security.capability': '\x01\x00\x00\x02'}
    put('layer', 'xattrs.tar', tar([m('d', tarfile.DIRTYPE), pax], fmt=tarfile.PAX_FORMAT))
    put('layer', 'unpadded.tar', base[:base.rfind(b'\0' * 1024) or len(base)][:1024 + 23])
    put('layer', 'replace.tar', tar([m('a', data=b'1'), m('a', tarfile.DIRTYPE), m('a/b', data=b'2'),
                                     m('a', data=b'3'), m('./c/../c/./d', data=b'4')]))

    diff = 'sha256:' + '0' * 64
    cfgs = [
        {'architecture': 'amd64', 'os': 'linux', 'config': {'Cmd': ['/bin/sh'], 'Env': ['PATH=/bin']},
         'rootfs': {'type': 'layers', 'diff_ids': [diff]},
         'history': [{'created': '2024-01-01T00:00:00Z', 'created_by': 'x'}]},
        {'rootfs': {'type': 'layers', 'diff_ids': []}},
        {'rootfs': {'type': 'layers', 'diff_ids': [diff, diff]}},
        {'rootfs': {'diff_ids': ['sha256:zz']}},
        {'rootfs': {'diff_ids': 'sha256:' + '1' * 64}},
        {'config': {'User': '0:0', 'WorkingDir': '/', 'ExposedPorts': {'80/tcp': {}}}},
    ]
    for i, c in enumerate(cfgs):
        put('config', 'seed%02d.json' % i, json.dumps(c))
    put('config', 'nested.json', '[' * 200 + ']' * 200)


if __name__ == '__main__':
    sys.exit(main())
