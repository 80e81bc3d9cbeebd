#!/usr/bin/env python3
"""Options that only fuse-overlayfs defines (xattr_permissions, squash_to_*,
uidmapping/gidmapping): containers-storage relies on their exact behaviour,
so here fuse-overlayfs is the reference instead of kernel overlayfs. Same
harness, same comparisons (each operation, whole tree, upper remount).

usage: test_compat.py [--fs PATH] [--reference PATH] [SCENARIO...]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ovltest  # noqa: E402
from ovltest import F, D, L, SKIP, Scenario, main, stt, rd, write, xattrs_of  # noqa: E402

OVR = 'user.containers.override_stat'


def upper_stat(c, rel):
    """What lands on disk in the upper: containers-storage reads it back."""
    p = os.path.join(c.m.upper, rel)
    st = os.lstat(p)
    return {'uid': st.st_uid, 'gid': st.st_gid, 'mode': oct(st.st_mode & 0o7777),
            'override': xattrs_of(p).get(OVR) if isinstance(xattrs_of(p), dict) else None}


def owner(c, rel):
    st = os.lstat(c.p(rel))
    return st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)


class OverrideStat(Scenario):
    """xattr_permissions=2: owner and mode come from user.containers.override_stat
    (uid:gid:mode[:type]) and changes go there. fuse-overlayfs 1.10 (Debian 12)
    predates this xattr name, so the checks are against the contract alone."""
    name = 'override_stat'
    fuse_options = 'xattr_permissions=2'
    reference_trees = False
    layers = [[F('f', b'f', mode=0o600, xattrs={OVR: b'1000:1001:0755'}),
               F('typed', b't', mode=0o600, xattrs={OVR: b'7:8:0640:file'}),
               D('d', mode=0o700, xattrs={OVR: b'0:0:0755'}), F('d/in', b'in'),
               F('plain', b'p', mode=0o644, uid=33, gid=34)]]

    def run(self, t):
        t.fuse_only('presented owner and mode',
                    lambda c: [owner(c, x) for x in ('f', 'typed', 'd', 'plain')],
                    ('ok', [(1000, 1001, '0o755'), (7, 8, '0o640'), (0, 0, '0o755'),
                            (33, 34, '0o644')]))
        t.fuse_only('chmod changes the presented mode, keeps the owner',
                    lambda c: (os.chmod(c.p('f'), 0o640), owner(c, 'f')),
                    ('ok', (None, (1000, 1001, '0o640'))))
        t.fuse_only('chown changes the presented owner, keeps the mode',
                    lambda c: (os.chown(c.p('typed'), 5, 6), owner(c, 'typed')),
                    ('ok', (None, (5, 6, '0o640'))))
        t.fuse_only('copy-up of a child keeps the parent override',
                    lambda c: (write(c.p('d/in'), b'x', os.O_WRONLY | os.O_APPEND), owner(c, 'd'),
                               os.getxattr(os.path.join(c.m.upper, 'd'), OVR)[:9]),
                    ('ok', (1, (0, 0, '0o755'), b'0:0:0755')))
        t.fuse_only('overrides survive in the upper', lambda c: (
            os.getxattr(os.path.join(c.m.upper, 'f'), OVR).split(b':')[:3],
            os.getxattr(os.path.join(c.m.upper, 'typed'), OVR).split(b':')[:3]),
            ('ok', ([b'1000', b'1001', b'0640'], [b'5', b'6', b'0640'])))


class SquashToRoot(Scenario):
    name = 'squash_to_root'
    fuse_options = 'squash_to_root'
    layers = [[F('a', b'a', uid=1234, gid=5678), D('d', uid=7, gid=8), F('d/b', b'b', uid=3)]]

    def run(self, t):
        t.op('stat', lambda c: [stt(c.p(x)) for x in ('a', 'd', 'd/b')])
        t.op('create', lambda c: (write(c.p('d/n'), b'n'), stt(c.p('d/n')), upper_stat(c, 'd/n')))
        t.op('chown', lambda c: (os.chown(c.p('a'), 9, 9), stt(c.p('a')), upper_stat(c, 'a')))


class SquashToId(Scenario):
    name = 'squash_to_id'
    fuse_options = 'squash_to_uid=7,squash_to_gid=8'
    layers = [[F('a', b'a', uid=1234, gid=5678), D('d', uid=0, gid=0)]]

    def run(self, t):
        t.op('stat', lambda c: [stt(c.p(x)) for x in ('a', 'd')])
        t.op('create', lambda c: (write(c.p('d/n'), b'n'), stt(c.p('d/n')), upper_stat(c, 'd/n')))


class IdMapping(Scenario):
    name = 'idmapping'
    fuse_options = 'uidmapping=0:1000:10,gidmapping=0:2000:10'
    layers = [[F('root', b'r', uid=1000, gid=2000), F('five', b'5', uid=1005, gid=2005),
               F('unmapped', b'u', uid=5000, gid=5000), D('d', uid=1000, gid=2000)]]

    def run(self, t):
        t.op('stat', lambda c: [stt(c.p(x)) for x in ('root', 'five', 'unmapped', 'd')])
        t.op('create as root', lambda c: (write(c.p('d/n'), b'n'), stt(c.p('d/n')),
                                          upper_stat(c, 'd/n')))
        t.op('chown inside range', lambda c: (os.chown(c.p('five'), 3, 4), stt(c.p('five')),
                                              upper_stat(c, 'five')))
        t.op('chown outside range', lambda c: os.chown(c.p('root'), 50, 50))
        t.op('mkdir', lambda c: (os.mkdir(c.p('nd')), upper_stat(c, 'nd')))


class IdMappingColon(IdMapping):
    """containers-storage writes each mapping with a leading colon."""
    name = 'idmapping_colon'
    fuse_options = 'uidmapping=:0:1000:10,gidmapping=:0:2000:10'


if __name__ == '__main__':
    argv = sys.argv[1:]
    ref = '/usr/bin/fuse-overlayfs'
    if '--reference' in argv:
        i = argv.index('--reference')
        ref = argv[i + 1]
        del argv[i:i + 2]
    if not os.path.exists(ref):
        print('SKIP: reference filesystem %s not installed' % ref)
        sys.exit(SKIP)
    ovltest.mode.reference_fs = ref
    ovltest.mode.ignore_dir_nlink = True
    sys.exit(main([OverrideStat(), SquashToRoot(), SquashToId(), IdMapping(), IdMappingColon()],
                  argv))
