"""Results: raw CSV (every repetition), summary CSV (median, min, max, ratios),
a terminal table, and a gnuplot chart of ratios to kernel overlayfs."""

import csv
import io
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ORDER = ["plain", "kernel", "kernel-metacopy", "fuse-overlayfs", "strata-fs", "strata-fs+uring",
         "strata-fs+sharecache", "strata-fs+sharedirect", "bwrap", "strata-run", "strata-run+upper",
         "strata-run+upper packed", "strata-run+fuse-ovl",
         "strata-run+sharecache", "strata-run+sharedirect", "strata", "strata run -d",
         "podman+strata-fs", "podman+fuse-ovl", "strata build", "podman build+strata-fs",
         "podman build+fuse-ovl", "strata-fs packed", "squashfuse", "gzip blobs", "dir store",
         "packed store"]
SHORT = {"kernel-metacopy": "k-metacopy", "fuse-overlayfs": "fuse-ovl", "strata-fs+uring": "s-fs+uring",
         "strata-fs packed": "s-fs packed", "strata-fs+sharecache": "s-fs+sharecache",
         "strata-fs+sharedirect": "s-fs+sharedirect"}
# groups whose contenders start containers rather than mount trees, and the
# contender each is compared with
SPECIAL = {"launcher": "bwrap", "density": "kernel", "build": "podman build+fuse-ovl",
           "packed": "strata-fs"}
FS_CONTENDERS = ("plain", "kernel", "kernel-metacopy", "fuse-overlayfs", "strata-fs", "strata-fs+uring")


def short(c):
    return SHORT.get(c, c)
RAW_FIELDS = ["group", "workload", "contender", "unit", "rep", "value", "client_cpu_s",
              "daemon_cpu_s", "fixture", "note"]
SUM_FIELDS = ["group", "workload", "contender", "unit", "n", "median", "min", "max",
              "reference", "ratio_to_reference", "ratio_to_fuse_overlayfs",
              "client_cpu_s_median", "daemon_cpu_s_median", "errors", "note"]


def summarize(rows):
    keyed = {}
    order = []
    for r in rows:
        k = (r["workload"], r["contender"])
        if k not in keyed:
            keyed[k] = []
            order.append(k)
        keyed[k].append(r)
    out = []
    for k in order:
        rs = keyed[k]
        vals = [float(r["value"]) for r in rs if r["value"] != ""]
        cc = [float(r["client_cpu_s"]) for r in rs if r["client_cpu_s"] != ""]
        dc = [float(r["daemon_cpu_s"]) for r in rs if r["daemon_cpu_s"] != ""]
        errs = [r["note"] for r in rs if r["note"].startswith("error")]
        notes = [r["note"] for r in rs if r["note"] and not r["note"].startswith("error")]
        out.append(dict(group=rs[0]["group"], workload=k[0], contender=k[1], unit=rs[0]["unit"],
                        n=len(vals),
                        median=statistics.median(vals) if vals else None,
                        min=min(vals) if vals else None, max=max(vals) if vals else None,
                        client_cpu_s_median=statistics.median(cc) if cc else None,
                        daemon_cpu_s_median=statistics.median(dc) if dc else None,
                        errors=len(errs), note=(errs[:1] or notes[-1:] or [""])[0],
                        ref=rs[0].get("ref") or None))
    by = {(s["workload"], s["contender"]): s for s in out}
    for s in out:
        ref = s.pop("ref", None) or SPECIAL.get(s["group"], "kernel")
        s["reference"] = ref
        s["ratio_to_reference"] = _ratio(s, by.get((s["workload"], ref)))
        s["ratio_to_fuse_overlayfs"] = _ratio(s, by.get((s["workload"], "fuse-overlayfs")))
    return out


def _ratio(s, ref):
    # a ratio of ratios (density's "x data read") compares nothing
    if not ref or not s["median"] or not ref["median"] or s["unit"] == "x":
        return None
    return s["median"] / ref["median"]


def _fmt(v, unit):
    if v is None:
        return "-"
    if unit == "MiB":
        return "%.0fM" % v if v >= 10 or v <= -10 else "%.1fM" % v
    if unit == "x":
        return "%.2fx" % v
    if unit == "MB/s":
        return "%.0f MB/s" % v
    if v >= 100:
        return "%.0fs" % v
    if v >= 1:
        return "%.2fs" % v
    if v >= 0.001:
        return "%.1fms" % (v * 1000)
    return "%.0fus" % (v * 1e6)


def _fmt_ratio(v):
    return "-" if v is None else ("%.2fx" % v if v < 10 else "%.1fx" % v)


def table(summary, out=sys.stdout):
    present = [c for c in ORDER if any(s["contender"] == c for s in summary)]
    present += sorted({s["contender"] for s in summary} - set(present))
    fs = [c for c in present if c in FS_CONTENDERS]
    ratio_cols = [c for c in ("fuse-overlayfs", "strata-fs", "strata-fs+uring", "kernel-metacopy")
                  if c in present]
    by = {(s["workload"], s["contender"]): s for s in summary}
    workloads = []
    for s in summary:
        if (s["group"], s["workload"]) not in workloads:
            workloads.append((s["group"], s["workload"]))
    judge = "strata-fs" in present
    head = ["group", "workload"] + [short(c) for c in fs] + [short(c) + "/k" for c in ratio_cols]
    if judge:
        head.append("target")
    lines = []
    for g, w in workloads:
        if g in SPECIAL:
            continue
        cells = [g, w]
        for c in fs:
            s = by.get((w, c))
            cells.append(_cell(s))
        for c in ratio_cols:
            s = by.get((w, c))
            cells.append(_fmt_ratio(s["ratio_to_reference"]) if s else "")
        if judge:
            cells.append(target_met(by.get((w, "strata-fs")), by.get((w, "fuse-overlayfs"))))
        lines.append(cells)
    special = []
    for g, w in workloads:
        # issue 16's rows have a table of their own (packed_table)
        if g not in SPECIAL or g == "packed":
            continue
        for c in present:
            s = by.get((w, c))
            if s:
                cpu = _cpu_cell(s)
                special.append([g, "%s: %s" % (short(c), w), _cell(s),
                                "%s vs %s" % (_fmt_ratio(s["ratio_to_reference"]), short(SPECIAL[g])),
                                ("CPU " + cpu) if cpu != "-" else ""])
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in [head] + lines)
              for i in range(len(head))]
    if lines:
        print("  ".join(h.ljust(widths[i]) for i, h in enumerate(head)), file=out)
        print("  ".join("-" * widths[i] for i in range(len(head))), file=out)
    for r in lines:
        print("  ".join(str(v).ljust(widths[i]) if i < 2 else str(v).rjust(widths[i])
                        for i, v in enumerate(r)), file=out)
    if special:
        print(file=out)
        lw = [max(len(r[i]) for r in special) for i in range(5)]
        for r in special:
            print("  ".join(v.ljust(lw[i]) if i in (0, 1, 4) else v.rjust(lw[i])
                            for i, v in enumerate(r)).rstrip(), file=out)
    print("~ : max-min spread above %d%% of the median (noisy; see the CSV)" % (NOISY * 100),
          file=out)
    if judge and lines:
        verdicts = [r[-1] for r in lines]
        met, judged = verdicts.count("ok"), verdicts.count("ok") + verdicts.count("MISS")
        print("strata-fs meets its target on %d of %d workloads (target: <= 1.5x kernel and "
              "<= 1.05x fuse-overlayfs; page cache <= 1.05x kernel; memory <= fuse-overlayfs)"
              % (met, judged), file=out)


def target_met(s, fo):
    """strata-fs's targets (issue 5): within 1.5x of kernel overlayfs and never
    slower than fuse-overlayfs; no second copy of a lower file in the page
    cache; daemon memory no larger than fuse-overlayfs's."""
    if not s or s["median"] is None:
        return ""
    # 5% slack: "never slower than fuse-overlayfs" should not flip on noise
    slower_than_fo = (fo is not None and fo["median"] is not None
                      and s["median"] > fo["median"] * 1.05)
    if s["workload"].startswith("page cache"):
        r = s["ratio_to_reference"]
        return "-" if r is None else ("ok" if r <= 1.05 else "MISS")
    if s["unit"] != "s":
        return "-" if fo is None else ("MISS" if slower_than_fo else "ok")
    r = s["ratio_to_reference"]
    if r is None:
        return "-"
    return "ok" if r <= 1.5 and not slower_than_fo else "MISS"


NOISY = 0.5


def _cell(s):
    if not s:
        return ""
    if s["median"] is None:
        return "FAIL"
    # flag medians whose repetitions disagree a lot: rerun those on a quiet machine
    noisy = s["n"] > 1 and s["median"] > 0 and (s["max"] - s["min"]) / s["median"] > NOISY
    return _fmt(s["median"], s["unit"]) + ("~" if noisy else " ")


def _cpu_cell(s):
    c, d = s["client_cpu_s_median"], s["daemon_cpu_s_median"]
    if c is None and d is None:
        return "-"
    if d is None:
        return "%.3f" % c
    return "%s + %.3f" % ("-" if c is None else "%.3f" % c, d)


def cpu_table(summary, out=sys.stdout):
    """CPU seconds (medians) of every filesystem contender: client (wait4 of
    the command, or the harness thread for in-process operations) + daemon
    (/proc/PID/stat). Kernel overlayfs does inside the client's system time
    what a FUSE daemon does in its own process, so compare the sums."""
    fs = [c for c in FS_CONTENDERS if any(s["contender"] == c for s in summary)]
    if not fs:
        return
    by = {(s["workload"], s["contender"]): s for s in summary}
    rows, seen = [], set()
    for s in summary:
        w = s["workload"]
        if w in seen or s["group"] in SPECIAL or s["contender"] not in fs:
            continue
        seen.add(w)
        cells = [w] + [_cpu_cell(by[(w, c)]) if (w, c) in by else "" for c in fs]
        if all(x in ("-", "") for x in cells[1:]):
            continue
        k = by.get((w, "kernel"))
        ks = _cpu_sum(k)
        for c in ("strata-fs", "strata-fs+uring", "fuse-overlayfs"):
            f = by.get((w, c))
            if c in fs:
                # below the 10 ms granularity of /proc/PID/stat a ratio means nothing
                cells.append(_fmt_ratio(_cpu_sum(f) / ks) if ks and ks >= 0.01
                             and _cpu_sum(f) is not None else "-")
        rows.append(cells)
    if not rows:
        return
    head = ["CPU seconds (median, client + daemon)"] + [short(c) for c in fs] + [
        "%s/k" % short(c) for c in ("strata-fs", "strata-fs+uring", "fuse-overlayfs") if c in fs]
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    print(file=out)
    print("  ".join(h.ljust(widths[i]) for i, h in enumerate(head)), file=out)
    for r in rows:
        print("  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i])
                        for i, v in enumerate(r)), file=out)


def targets(summary, out=sys.stdout):
    """The targets of issues 19 (filesystem time, CPU, density), 15
    (launcher) and 18 (build), judged on this run's medians."""
    by = {(s["workload"], s["contender"]): s for s in summary}

    def med(w, c):
        s = by.get((w, c))
        return s["median"] if s else None

    lines = []
    timed = [s for s in summary if s["contender"] == "strata-fs" and s["group"] not in SPECIAL
             and s["unit"] == "s" and s["median"] is not None and not s["workload"].startswith("mount")]
    if timed:
        k = [s for s in timed if s["ratio_to_reference"] is not None]
        ok = [s for s in k if s["ratio_to_reference"] <= 1.5]
        worst = max(k, key=lambda s: s["ratio_to_reference"]) if k else None
        lines.append("time within 1.5x of kernel (mount aside): %d of %d%s" % (
            len(ok), len(k), "; worst %s %.2fx" % (worst["workload"], worst["ratio_to_reference"])
            if worst else ""))
        slower = [s["workload"] for s in timed if s["ratio_to_fuse_overlayfs"] is not None
                  and s["ratio_to_fuse_overlayfs"] > 1.05]
        lines.append("never slower than fuse-overlayfs (5%% slack): %s" % (
            "ok" if not slower else "MISS on " + ", ".join(slower[:6])))
        cpu = []
        for s in timed:
            ks, fs_ = _cpu_sum(by.get((s["workload"], "kernel"))), _cpu_sum(s)
            if ks and ks >= 0.01 and fs_ is not None:
                cpu.append((fs_ / ks, s["workload"]))
        if cpu:
            lines.append("CPU (client + daemon) within 1.5x of kernel's: %d of %d; worst %s %.2fx" % (
                sum(1 for r, _ in cpu if r <= 1.5), len(cpu), max(cpu)[1], max(cpu)[0]))
    per_w = "density: each container after the 1st adds (x data read)"
    counted_w = "density: each container after the 1st adds, counted (x data read)"
    for c in ("strata-fs", "strata-fs+sharecache", "strata-fs+sharedirect", "strata-run",
              "strata-run+sharecache", "strata-run+sharedirect", "strata run -d"):
        per, counted = med(per_w, c), med(counted_w, c)
        if per is None:
            continue
        kc = med(counted_w, "kernel")
        lines.append("density: each %s container after the 1st adds %.2fx the data it reads "
                     "(meminfo)%s (target 0.15x; kernel %s%s)" % (
                         c, per, ", %.2fx counted per file" % counted if counted is not None else "",
                         _fmt(med(per_w, "kernel"), "x"),
                         ", %.2fx counted" % kc if kc is not None and counted is not None else ""))
    fc = sorted((s["workload"], s["contender"], s["median"]) for s in summary
                if s["workload"].startswith("density: /data in the page cache")
                and s["median"] is not None
                and s["contender"] in ("kernel", "strata-fs", "strata-fs+sharecache",
                                       "strata-fs+sharedirect", "strata-run", "strata-run+sharecache",
                                       "strata-run+sharedirect"))
    if fc:
        last = max(fc, key=lambda x: int(x[0].split("), ")[1].split()[0]))[0]
        vals = {c: v for w, c, v in fc if w == last}
        lines.append("density, counted: %s: %s" % (last.split(", ")[-1], ", ".join(
            "%s %.1f MiB" % (c, v) for c, v in sorted(vals.items()))) + " of /data cached "
            "(cachestat per file, each page once; kernel overlayfs caches it once)")
    starts = sorted(((int(s["workload"].rsplit(" ", 1)[1]), s["median"]) for s in summary
                     if s["contender"] == "strata-fs" and s["median"] is not None
                     and s["workload"].startswith("density: start-to-ready of container ")))
    if len(starts) > 1:
        lines.append("density: strata-fs container %d starts in %s, container 1 in %s (target: as fast)"
                     % (starts[-1][0], _fmt(starts[-1][1], "s"), _fmt(starts[0][1], "s")))
    for c in ("strata-fs", "strata-fs+sharedirect", "strata run -d"):
        warm = med("second start, warm: MiB read from disk", c)
        if warm is not None:
            lines.append("second start, warm: %s read %.1f MiB from disk (target: nothing the "
                         "first start read)" % (c, warm))
    run, sr, ex, bw = (med("start /bin/true", "strata"), med("start /bin/true", "strata-run"),
                       med("exec /bin/true", "strata"), med("exec /bin/true", "bwrap"))
    pod = [v for v in (med("start /bin/true", "podman+strata-fs"),
                       med("start /bin/true", "podman+fuse-ovl")) if v]
    if run and sr:
        srw = med("start /bin/true", "strata-run+upper")
        srp = med("start /bin/true", "strata-run+upper packed")
        lines.append("strata run --rm: %.2fx strata-run alone (target 1.5x)%s%s%s" % (
            run / sr,
            "; %.2fx strata-run with a writable layer" % (run / srw) if srw else "",
            "; %.2fx strata-run with a writable layer over the store's packed layer, the same job"
            % (run / srp) if srp else "",
            "; %.2fx podman's fastest (target 0.1x)" % (run / min(pod)) if pod else ""))
    if ex and bw:
        lines.append("strata exec: %.2fx bwrap (target 1.5x)" % (ex / bw))
    cold, pcold = med("build, cold", "strata build"), med("build, cold", "podman build+fuse-ovl")
    cached = med("build, cached rebuild", "strata build")
    if cold and pcold:
        lines.append("strata build cold: %.2fx podman build with fuse-overlayfs (target <= 1)"
                     % (cold / pcold))
    if cached is not None:
        lines.append("strata build fully cached: %s (target < 0.3 s)" % _fmt(cached, "s"))
    changed = by.get(("build, one context file changed", "strata build"))
    if changed and changed["median"] is not None:
        mark = "only the steps from the COPY on: "
        only = changed["note"].split(mark)[-1].split(";")[0] if mark in changed["note"] else "?"
        lines.append("strata build after one context file changed: %s; only the steps from its "
                     "COPY on ran: %s (target: yes)" % (_fmt(changed["median"], "s"), only))
    if lines:
        print("\ntargets (issues 19, 15, 18), this run's medians:", file=out)
        for l in lines:
            print("  " + l, file=out)


def _cpu_sum(s):
    if not s or (s["client_cpu_s_median"] is None and s["daemon_cpu_s_median"] is None):
        return None
    return (s["client_cpu_s_median"] or 0.0) + (s["daemon_cpu_s_median"] or 0.0)


def plot(summary, png, dat):
    """Bars of median/kernel per workload, one colour per contender, log scale."""
    series = [c for c in ("plain", "kernel-metacopy", "fuse-overlayfs", "strata-fs", "strata-fs+uring")
              if any(s["contender"] == c for s in summary)]
    by = {(s["workload"], s["contender"]): s for s in summary}
    wl = []
    for s in summary:
        if s["group"] in SPECIAL or s["unit"] != "s":
            continue
        if s["workload"] not in wl and by.get((s["workload"], "kernel")):
            wl.append(s["workload"])
    if not wl or not series:
        return False
    ratios = [by[(w, c)]["ratio_to_reference"] for w in wl for c in series
              if by.get((w, c)) and by[(w, c)]["ratio_to_reference"]]
    lo = 2.0 ** math.floor(math.log2(min(ratios + [0.5])))
    hi = 2.0 ** math.ceil(math.log2(max(ratios + [2.0]) * 1.2))
    with open(dat, "w") as f:
        f.write("workload " + " ".join('"%s"' % c for c in series) + "\n")
        for w in wl:
            vals = []
            for c in series:
                s = by.get((w, c))
                r = s["ratio_to_reference"] if s else None
                vals.append("%.4f" % r if r else "NaN")
            f.write('"%s" %s\n' % (w.replace('"', "'"), " ".join(vals)))
    script = """
set terminal pngcairo size 1500,720 font ",9" noenhanced
set output '%s'
set title "median time relative to kernel overlayfs in the same run (1 = kernel, lower is better, log scale; dashed: strata-fs target 1.5x)"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [%g:%g]
set grid ytics
set xtics rotate by -40 scale 0
set key top center horizontal opaque box
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black"
set arrow from graph 0, first 1.5 to graph 1, first 1.5 nohead dt 2 lc rgb "dark-green"
plot %s
""" % (png, lo, hi, ", ".join("'%s' using %d:xtic(1) title columnhead(%d)" % (dat, i + 2, i + 2)
                      for i in range(len(series))))
    gp = dat[:-4] + ".gp"
    with open(gp, "w") as f:
        f.write(script)
    if not shutil.which("gnuplot"):
        print("note: gnuplot is not installed (make setup); chart script left in %s" % gp,
              file=sys.stderr)
        return False
    p = subprocess.run(["gnuplot", gp], stderr=subprocess.PIPE)
    if p.returncode != 0:
        # pngcairo is missing from some gnuplot builds; plain png has it all
        script = script.replace("pngcairo", "png")
        with open(gp, "w") as f:
            f.write(script)
        p = subprocess.run(["gnuplot", gp], stderr=subprocess.PIPE)
    if p.returncode != 0:
        print("note: gnuplot failed on %s: %s" % (gp, p.stderr.decode(errors="replace")[-300:]),
              file=sys.stderr)
        return False
    return True


def write_all(ctx, rows, started):
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    base = os.path.join(ctx.results, "%s-%s" % (stamp, ctx.label))
    with open(base + "-raw.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RAW_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    summary = summarize(rows)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUM_FIELDS)
        w.writeheader()
        for s in summary:
            w.writerow({k: ("%.6g" % v if isinstance(v, float) else ("" if v is None else v))
                        for k, v in s.items()})
    text = io.StringIO()
    _print_report(ctx, summary, started, text)
    sys.stdout.write("\n" + text.getvalue())
    with open(base + ".txt", "w") as f:
        f.write(text.getvalue())
        f.write("\nlog:\n" + "\n".join(ctx.logged) + "\n")
    png = base + ".png"
    made = plot(summary, png, base + "-ratios.dat")
    print("\nresults: %s.csv (summary), %s-raw.csv (every repetition), %s.txt (this table)%s"
          % (base, base, base, (", chart %s" % png) if made else ""))
    for suffix in (".csv", "-raw.csv", ".txt") + ((".png",) if made else ()):
        link = os.path.join(ctx.results, "latest-%s%s" % (ctx.label, suffix))
        try:
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(os.path.basename(base + suffix), link)
        except OSError:
            pass


def _print_report(ctx, summary, started, out):
    print("strata bench, %s mode, %s UTC, kernel %s, %d CPUs, load %.2f at start, %.2f at end; %s"
          % (ctx.label, time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)),
             platform.release(), os.cpu_count(), ctx.load_start, os.getloadavg()[0],
             "median of %d repetitions (CSV has min/max)" % ctx.sizes["reps"]), file=out)
    if ctx.mode == "smoke":
        print("SMOKE RUN: tiny sizes, one repetition; it proves the workloads run, its figures "
              "are sanity values, not measurements", file=out)
    table(summary, out)
    cpu_table(summary, out)
    targets(summary, out)
    for s in summary:
        if s["note"] and (s["group"] in ("resources", "build")
                          or s["workload"].startswith("density: memory")
                          or s["workload"] == "density"):
            print("  %s, %s: %s" % (s["workload"], s["contender"], s["note"]), file=out)
    for s in summary:
        if s["errors"]:
            print("FAIL %s on %s (%d failed runs): %s"
                  % (s["workload"], s["contender"], s["errors"], s["note"][:400]), file=out)
    packed_table(summary, out)
    for n in ctx.notes:
        print("note: " + n, file=out)


# issue 16: packed layers. The store rows compare the packed store with the
# dir store and the images' gzip blobs; the read rows compare strata-fs over
# packed layer files with strata-fs over the same image's directory layers,
# squashfuse beside them.
STORE_COLS = ("gzip blobs", "dir store", "packed store")
READ_COLS = ("strata-fs", "strata-fs packed", "squashfuse")
PACKED_READ_TARGET = 1.3


def _packed_ratio(by, w, a, b):
    x, y = by.get((w, a)), by.get((w, b))
    if not x or not y or x["median"] is None or not y["median"]:
        return None
    return x["median"] / y["median"]


def _print_grid(head, rows, out):
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    print("  ".join(h.ljust(widths[i]) for i, h in enumerate(head)).rstrip(), file=out)
    for r in rows:
        print("  ".join(v.ljust(widths[i]) if i == 0 else v.rjust(widths[i])
                        for i, v in enumerate(r)).rstrip(), file=out)


def packed_table(summary, out=sys.stdout):
    rows = [s for s in summary if s["group"] == "packed"]
    if not rows:
        return
    by = {(s["workload"], s["contender"]): s for s in rows}
    names = []
    for s in rows:
        if s["workload"] not in names:
            names.append(s["workload"])
    store_rows = [w for w in names if any((w, c) in by for c in STORE_COLS)]
    grid = []
    for w in store_rows:
        cells = [w] + [_cell(by.get((w, c))) for c in STORE_COLS]
        pd, pg = _packed_ratio(by, w, "packed store", "dir store"), _packed_ratio(
            by, w, "packed store", "gzip blobs")
        unit = next(by[(w, c)]["unit"] for c in STORE_COLS if (w, c) in by)
        if unit == "x":
            pd = pg = None
        cells += [_fmt_ratio(pd), _fmt_ratio(pg)]
        cpu = [by[(w, c)] for c in ("dir store", "packed store") if (w, c) in by]
        cells.append(" / ".join(_cpu_cell(c) for c in cpu) if unit == "s" else "")
        verdict = ""
        if w == "import the data set" and pd is not None:
            verdict = "ok" if pd <= 1.0 else "MISS"
        elif w == "store size on disk" and pd is not None and pg is not None:
            verdict = "ok" if pd <= 0.2 and pg <= 0.5 else "MISS"
        elif w == "strata pack throughput":
            s = by.get((w, "packed store"))
            if s and s["median"] is not None:
                verdict = "ok" if s["median"] >= 200 else "MISS"
        cells.append(verdict)
        grid.append(cells)
    if grid:
        print("\nissue 16, packed layers: the store (the Debian data set; medians)", file=out)
        _print_grid(["row"] + list(STORE_COLS) + ["packed/dir", "packed/gzip", "CPU s (dir / packed)",
                                                  "target"], grid, out)
    read_rows = [w for w in names if w not in store_rows]
    grid = []
    judged = []
    for w in read_rows:
        cells = [w] + [_cell(by.get((w, c))) for c in READ_COLS]
        pd = _packed_ratio(by, w, "strata-fs packed", "strata-fs")
        sd = _packed_ratio(by, w, "squashfuse", "strata-fs")
        cells += [_fmt_ratio(pd), _fmt_ratio(sd)]
        cpus = [_cpu_sum(by.get((w, c))) for c in READ_COLS]
        cells += ["-" if v is None else "%.3f" % v for v in cpus]
        cells.append(_fmt_ratio(cpus[1] / cpus[0]) if cpus[0] and cpus[0] >= 0.01
                     and cpus[1] is not None else "-")
        verdict = ""
        # memory is reported, not judged: bounded, not equal, is the target
        if pd is not None and by[(w, "strata-fs packed")]["unit"] == "s":
            verdict = "ok" if pd <= PACKED_READ_TARGET else "MISS"
            judged.append((pd, w, verdict))
        cells.append(verdict)
        grid.append(cells)
    if grid:
        print("\nissue 16, packed layers: reads of the same image (medians; CPU = client + daemon)",
              file=out)
        _print_grid(["row", "strata-fs dir", "s-fs packed", "squashfuse", "packed/dir", "sqfuse/dir",
                     "CPU dir", "CPU packed", "CPU sqfuse", "CPU p/d", "target"], grid, out)
    med = lambda w, c: by[(w, c)]["median"] if (w, c) in by else None
    tl = []
    size = [med("store size on disk", c) for c in STORE_COLS]
    distinct = med("gzip blobs, each distinct one once", "gzip blobs")
    if size[2] is not None:
        tl.append("store: packed %s = %s the images' gzip blobs summed over the images (target "
                  "<= 0.5x; %s each distinct blob once), %s the dir store (target <= 0.2x)"
                  % (_fmt(size[2], "MiB"), _fmt_ratio(size[2] / size[0]) if size[0] else "-",
                     _fmt_ratio(size[2] / distinct) if distinct else "-",
                     _fmt_ratio(size[2] / size[1]) if size[1] else "-"))
    f, c, l = (med("df: " + k, "packed store") for k in ("file-level dedup", "chunk-level dedup",
                                                         "lz4 ratio"))
    if f is not None:
        tl.append("packed store (system df): file-level dedup %.2fx, chunk-level dedup %.2fx, "
                  "lz4 %.2fx" % (f, c or 0, l or 0))
    imp = _packed_ratio(by, "import the data set", "packed store", "dir store")
    if imp is not None:
        tl.append("import: packed %.2fx the dir store's time (target <= 1x)" % imp)
    tp = med("strata pack throughput", "packed store")
    if tp is not None:
        tl.append("strata pack: %.0f MB/s of input (target >= 200 MB/s)" % tp)
    if judged:
        ok = sum(1 for r in judged if r[2] == "ok")
        worst = max(judged)
        tl.append("reads: strata-fs packed within %.1fx of directory layers on %d of %d rows; "
                  "worst %s %.2fx" % (PACKED_READ_TARGET, ok, len(judged), worst[1], worst[0]))
    for w in read_rows:
        if "RSS" in w:
            tl.append("%s: %s" % (w, ", ".join("%s %s" % (short(c), _fmt(med(w, c), "MiB"))
                                               for c in READ_COLS if med(w, c) is not None)))
    if tl:
        print("\ntargets (issue 16), this run's medians:", file=out)
        for t in tl:
            print("  " + t, file=out)
