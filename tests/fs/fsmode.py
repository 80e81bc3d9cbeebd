"""How a test run is set up, shared by every module of the harness.

Runs as root against kernel overlayfs unless a script switches a mode:
test_rootless.py (user namespace, or the daemon run by a user), test_compat.py
(fuse-overlayfs as the reference).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from testlib import SKIP, Skip, Fail, check, ensure_user, sanitizer_report  # noqa: E402,F401  (shared by every area)


class Mode:
    # Inside a user namespace: kernel overlayfs then needs userxattr (which
    # excludes redirect_dir=on) and opaque markers are user.*.
    rootless = False
    # (uid, gid) of the unprivileged user who runs the FUSE daemon (through
    # setuid fusermount3, no user namespace) and every operation on both sides.
    fuse_user = None
    # A reference FUSE filesystem (fuse-overlayfs) replaces kernel overlayfs,
    # for the options only fuse-overlayfs defines.
    reference_fs = None
    # fuse-overlayfs counts a merged directory's links, the kernel reports 1:
    # not what test_compat.py is about.
    ignore_dir_nlink = False


mode = Mode()
