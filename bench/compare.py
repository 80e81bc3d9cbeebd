#!/usr/bin/env python3
"""Compares two summary CSVs of bench/run.sh (before and after a change):
per workload and contender, the new median over the old one, and whether the
new median falls outside the old run's min..max (a change the noise does not
explain), and the ratio to the reference (kernel overlayfs) in each run, which
is the fairer comparison when the machine was busier in one of them. Usage: python3 bench/compare.py OLD.csv NEW.csv [--contender strata-fs]"""

import argparse
import csv
import signal
import sys


def load(path):
    try:
        with open(path, newline="") as f:
            return {(r["workload"], r["contender"]): r for r in csv.DictReader(f)}
    except OSError as e:
        sys.exit("compare: cannot read %s: %s; pass summary CSVs from bench/results/ "
                 "(not the -raw ones)" % (path, e.strerror))
    except KeyError:
        sys.exit("compare: %s is not a bench summary CSV (no workload/contender columns)" % path)


def num(r, k):
    try:
        return float(r[k])
    except (KeyError, TypeError, ValueError):
        return None


def fmt_ratio(v):
    return "-" if v is None else "%.2fx" % v


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--contender", help="only this contender (e.g. strata-fs)")
    a = p.parse_args()
    old, new = load(a.old), load(a.new)
    rows = []
    for key, n in new.items():
        if a.contender and key[1] != a.contender:
            continue
        o = old.get(key)
        if not o:
            continue
        om, nm = num(o, "median"), num(n, "median")
        if not om or nm is None:
            continue
        lo, hi = num(o, "min"), num(o, "max")
        outside = lo is not None and hi is not None and not (lo <= nm <= hi)
        rows.append((key[0], key[1], om, nm, nm / om,
                     ("faster" if nm < lo else "slower") if outside else "within noise",
                     fmt_ratio(num(o, "ratio_to_reference")), fmt_ratio(num(n, "ratio_to_reference"))))
    if not rows:
        sys.exit("compare: the two files share no workload with a median")
    w = max(len(r[0]) for r in rows)
    print("%-*s  %-15s  %10s  %10s  %7s  %-15s  %s" % (
        w, "workload", "contender", "old", "new", "new/old", "vs old min..max",
        "x reference old -> new"))
    for r in rows:
        print("%-*s  %-15s  %10.4g  %10.4g  %6.2fx  %-15s  %s -> %s" % ((w,) + r))


if __name__ == "__main__":
    main()
