#!/usr/bin/env python3
"""Out of descriptors, an operation fails whole: never half done.

The daemon runs under a small open-file limit; files opened through the
mount use up its descriptors, and a rename then needs to open a lower
directory again (it asks whether the old name is in a lower layer, to leave
a whiteout there). That must fail the rename (EMFILE), not be taken as
"no lower copy": the rename would go through without the whiteout and the
lower file come back under its old name. Either outcome is checked: the
rename fails and nothing changed, or it worked and the old name is gone;
also after the files are closed and after a remount.

usage: test_emfile.py [--fs PATH]   ($STRATA_FS overrides --fs)
"""

import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import SKIP, on_tmpfs, nofile_wrapper, prepare_fs  # noqa: E402
from mounts import FuseMount, mounted  # noqa: E402

NOFILE = 256      # the daemon's directory-fd budget is then 64
PAD = 100         # lower directories looked up to use that budget up


def make_lower(root):
    os.makedirs(os.path.join(root, 'd'))
    for name, data in (('f', 'lower f'), ('other', 'other')):
        with open(os.path.join(root, 'd', name), 'w') as f:
            f.write(data)
    with open(os.path.join(root, 'top'), 'w') as f:
        f.write('top')
    for i in range(PAD):
        os.makedirs(os.path.join(root, 'pad', '%03d' % i))


def state(mnt):
    names = sorted(os.listdir(os.path.join(mnt, 'd')))
    data = {}
    for n in ('f', 'g'):
        try:
            with open(os.path.join(mnt, 'd', n)) as f:
                data[n] = f.read()
        except FileNotFoundError:
            pass
    return names, data


def main(argv):
    fs = prepare_fs(argv)
    if fs is None:
        return SKIP

    def body(base, problems):
        lower = os.path.join(base, 'lower')
        make_lower(lower)
        for x in ('u', 'w', 'm'):
            os.makedirs(os.path.join(base, x))
        mnt = os.path.join(base, 'm')
        # cached mode: each open holds a descriptor of the daemon's own
        m = FuseMount(nofile_wrapper(fs, base, NOFILE), [lower], os.path.join(base, 'u'),
                      os.path.join(base, 'w'), mnt, extra='passthrough=off')
        with mounted(m, problems):
            d = os.path.join(mnt, 'd')
            os.listdir(d)                       # lookups of new names need no fd
            for i in range(PAD):
                os.stat(os.path.join(mnt, 'pad', '%03d' % i))
            with open(os.path.join(d, 'f'), 'w') as f:
                f.write('upper f')              # d and f copied up
            os.path.exists(os.path.join(d, 'g'))
            fds, err = [], None
            try:
                # a file in the root: its directory's fd is kept, so each
                # open takes exactly one and the last one goes too
                for _ in range(4 * NOFILE):
                    fds.append(os.open(os.path.join(mnt, 'top'), os.O_RDONLY))
            except OSError as e:
                err = e.errno
            rename_err = None
            try:
                if err in (errno.EMFILE, errno.ENFILE):
                    os.rename(os.path.join(d, 'f'), os.path.join(d, 'g'))
            except OSError as e:
                rename_err = e.errno
            for fd in fds:
                os.close(fd)
            if err not in (errno.EMFILE, errno.ENFILE):
                problems.append('%d opens through the mount did not use up the daemon\'s %d '
                                'descriptors (last error: %s)' % (len(fds), NOFILE, err))
            else:
                want = ((['f', 'other'], {'f': 'upper f'}) if rename_err is not None
                        else (['g', 'other'], {'g': 'upper f'}))
                got = state(mnt)
                print('opens until %s: %d; rename: %s; d now: %s'
                      % (errno.errorcode[err], len(fds),
                         errno.errorcode.get(rename_err, 'ok'), got), flush=True)
                if got != want:
                    problems.append('rename of d/f to d/g with the daemon out of descriptors '
                                    '(%s): d holds %s, expected %s'
                                    % (errno.errorcode.get(rename_err, 'it succeeded'), got, want))
        if not problems:
            with mounted(m, problems):
                if state(mnt) != want:
                    problems.append('after a remount d holds %s, expected %s' % (state(mnt), want))

    return on_tmpfs('strata-emfile-', body)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
