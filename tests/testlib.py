"""What every test area shares: the failure and skip exceptions, the one
assertion helper, and the unprivileged test user.

Each area's harness (fs/ovltest.py through fs/fsmode.py, tools/strata_t.py,
runtime/launcher_test.py, podman/test_podman.py) puts tests/ on sys.path and
re-exports these names, so a test script keeps importing from its area's
harness only.
"""

import ctypes
import fcntl
import os
import platform
import pwd
import subprocess

SKIP = 77          # exit status ctest reports as skipped (SKIP_RETURN_CODE)
USER = 'strata-test'
# Tests run in parallel (ctest -j) and may all find the user missing at once:
# creation is serialized under this lock instead of racing useradd.
USERADD_LOCK = '/tmp/strata-test-useradd.lock'


class Fail(Exception):
    """The behaviour under test is wrong; the message says how."""


class Skip(Exception):
    """The machine lacks something the test needs; the message says what."""


def check(cond, what):
    """Assert cond; what describes the failure (what was expected, what was seen)."""
    if not cond:
        raise Fail(what)


# What the sanitizers print when they find something (UBSan's "runtime
# error:" has no prefix of its own).
SANITIZER_MARKERS = ('ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
                     'WARNING: ThreadSanitizer')


def sanitizer_report(text):
    """The first sanitizer marker found in a program's stderr, or None."""
    return next((m for m in SANITIZER_MARKERS if m in text), None)


def ensure_user(name=USER):
    """pwd entry of the unprivileged test user, created (with a home) when
    missing. Skip when it cannot be created: not a failure of the code under
    test."""
    with open(USERADD_LOCK, 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        r = subprocess.run(['useradd', '-m', '-s', '/bin/sh', name],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise Skip('cannot create the test user %s: useradd: %s'
                       % (name, r.stderr.strip() or 'exit %d' % r.returncode)) from None


# cachestat(2) (Linux 6.5+): the pages a file's own inode caches, which tells
# a FUSE file served from its mount's cache from one read elsewhere.
_NR_CACHESTAT = {'x86_64': 451, 'aarch64': 451}.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)


class _CachestatRange(ctypes.Structure):
    _fields_ = [('off', ctypes.c_uint64), ('len', ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [('nr_cache', ctypes.c_uint64), ('nr_dirty', ctypes.c_uint64),
                ('nr_writeback', ctypes.c_uint64), ('nr_evicted', ctypes.c_uint64),
                ('nr_recently_evicted', ctypes.c_uint64)]


def cached_bytes(path):
    """Bytes of path's own page cache (its inode's, not a backing file's),
    or None where cachestat(2) is missing."""
    if _NR_CACHESTAT is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        rng, cs = _CachestatRange(0, 0), _Cachestat()
        if _libc.syscall(_NR_CACHESTAT, fd, ctypes.byref(rng), ctypes.byref(cs), 0) != 0:
            return None
        return cs.nr_cache * os.sysconf('SC_PAGE_SIZE')
    finally:
        os.close(fd)
