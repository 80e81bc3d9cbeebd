#!/usr/bin/env python3
"""Shrinks a diverging fuzz log (the operation list the 'fuzz' scenario
prints) to a short sequence that still makes the filesystem under test
differ from kernel overlayfs. A developer tool, not a ctest test.

usage: STRATA_FS=PATH fuzz_minimize.py LOGFILE [ENCODING]
LOGFILE holds one operation per line as printed ("rename b d/a 12"; a last
"statall - 0" compares every entry's attributes).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ovltest import Report, become_subreaper, run_scenario  # noqa: E402
from difftest import Fuzz  # noqa: E402


class Replay(Fuzz):
    name = 'replay'

    def __init__(self, labels):
        self.labels = labels

    def run(self, t):
        self.replay(t, self.labels, lambda i, label: '%d: %s' % (i, label))


def diverges(fs, labels, enc):
    """Does the last operation of labels give a different result? (Other
    differences, e.g. in the final tree, are a different bug.)"""
    report = Report()
    # Silence the per-mismatch printing while searching.
    saved, sys.stdout = sys.stdout, open(os.devnull, 'w')
    try:
        run_scenario(Replay(labels), fs, report, enc)
    finally:
        sys.stdout.close()
        sys.stdout = saved
    want = ": %s'" % labels[-1]
    return any(p.startswith('MISMATCH') and want in p.split('\n')[0] for p in report.problems)


def ddmin(fs, labels, enc):
    """Classic delta debugging over every operation but the last."""
    last, labels = labels[-1:], labels[:-1]
    n = 2
    while len(labels) >= 1:
        chunk = max(1, len(labels) // n)
        reduced = False
        for start in range(0, len(labels), chunk):
            rest = labels[:start] + labels[start + chunk:]
            if diverges(fs, rest + last, enc):
                labels = rest
                n = max(n - 1, 2)
                reduced = True
                print('%d operations still diverge' % (len(labels) + 1), flush=True)
                break
        if not reduced:
            if chunk == 1:
                break
            n = min(len(labels), n * 2)
    return labels + last


def main():
    become_subreaper()
    fs = os.environ.get('STRATA_FS')
    labels = [l.strip() for l in open(sys.argv[1]) if l.strip()]
    enc = sys.argv[2] if len(sys.argv) > 2 else 'kernel'
    if not diverges(fs, labels, enc):
        print('the full log does not diverge (on %s encoding)' % enc)
        return 1
    small = ddmin(fs, labels, enc)
    print('minimal sequence (%d operations):' % len(small))
    for l in small:
        print('  ' + l)
    return 0


if __name__ == '__main__':
    sys.exit(main())
