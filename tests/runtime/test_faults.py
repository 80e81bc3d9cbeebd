#!/usr/bin/env python3
"""The launcher's faults: nothing outlives it, however it ends.

usage: test_faults.py STRATA_RUN FS_PROGRAM MODE [ITERATIONS]   (MODE: root | rootless)

- kill -9 of strata-run at random moments of its set-up and while the
  command runs: afterwards no strata-run.* directory in TMPDIR, no process
  of ours (the daemon, the container's), no mount, no cgroup of it.
- every normal return (exit codes, a killed command, a forwarded SIGTERM,
  a failed set-up): the daemon is gone by the time strata-run returns.
  The daemon is started through a wrapper --fs-program that records its
  pid and then execs the real one.

Uses launcher_test's environment. Exit 77: skipped.
"""
import functools
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launcher_test as lt  # noqa: E402

Failure, expect = lt.Failure, lt.expect
SCALE = max(1.0, float(os.environ.get("STRATA_TEST_SCALE", "1") or 1))


def procs_with(marker):
    """Processes whose command line holds marker (not us)."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if marker.encode() in cmd:
            found.append((int(d), cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


def strata_cgroups(names):
    left = []
    for hier in os.listdir("/sys/fs/cgroup"):
        base = os.path.join("/sys/fs/cgroup", hier)
        if not os.path.isdir(base) or os.path.islink(base):
            continue
        for root, dirs, _ in os.walk(base):
            left += [os.path.join(root, n) for n in dirs if n in names]
    return left


def reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Env(lt.Env):
    def __init__(self, strata_run, fs, mode):
        super().__init__(strata_run, fs, mode)
        self.pidlog = os.path.join(self.tmp, "daemon-pids")
        open(self.pidlog, "w").close()
        os.chmod(self.pidlog, 0o666)
        self.wrapper = os.path.join(self.tmp, "fs-wrapper")
        with open(self.wrapper, "w") as f:
            f.write(f'#!/bin/sh\necho $$ >> {self.pidlog}\nexec {fs} "$@"\n')
        os.chmod(self.wrapper, 0o755)
        self.fs = self.wrapper

    def daemon_pids(self):
        with open(self.pidlog) as f:
            pids = [int(x) for x in f.read().split()]
        open(self.pidlog, "w").close()
        return pids


def wait_gone(e, marker, what, daemons, secs=60):
    """After a kill -9 the tree goes by itself (outer stops the container,
    waits for the daemon, removes the cgroup): wait for that, then check."""
    end = time.time() + secs * SCALE
    while time.time() < end:
        reap_orphans()
        if (not procs_with(marker) and not lt.children_of(os.getpid()) and
                not any(os.path.exists(f"/proc/{d}") for d in daemons)):
            break
        time.sleep(0.05)
    left = procs_with(marker) + [(d, "daemon") for d in daemons if os.path.exists(f"/proc/{d}")]
    kids = lt.children_of(os.getpid())
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    expect(not left, f"{what}: processes outlived the launcher: {left}")
    expect(not kids, f"{what}: orphans outlived the launcher: {kids}")
    dirs = os.listdir(e.rt)
    expect(not dirs, f"{what}: left in TMPDIR: {dirs}")
    with open("/proc/self/mountinfo") as f:
        stale = [l for l in f if e.tmp in l]
    expect(not stale, f"{what}: mounts left: {stale}")


def t_kill_launcher(e, iterations):
    """kill -9 of the launcher at a random moment of set-up (0-150 ms
    after its start) or while the command runs."""
    failures = []
    stats = {"setup": 0, "running": 0}
    for i in range(iterations):
        d = e.shared_dir()
        marker = f"strata-fault-marker-{os.getpid()}-{i}"
        args, _ = e.base()
        p = e.popen(args + ["--bind", f"{d}:/data", "--", "sh", "-c",
                            "touch /data/running; while :; do sleep 0.05; done", marker])
        if i % 4 == 3:
            end = time.time() + 30 * SCALE
            while not os.path.exists(os.path.join(d, "running")) and time.time() < end and p.poll() is None:
                time.sleep(0.01)
        else:
            time.sleep(random.uniform(0, 0.15))
        stats["running" if os.path.exists(os.path.join(d, "running")) else "setup"] += 1
        p.kill()
        p.communicate(timeout=30 * SCALE)
        try:
            wait_gone(e, marker, f"kill -9 #{i}", e.daemon_pids())
            left = strata_cgroups({f"strata-{p.pid}"})
            expect(not left, f"kill -9 #{i}: cgroups left: {left}")
        except Failure as f:
            failures.append(str(f))
    print(f"     {iterations} kills: {stats['setup']} during set-up, {stats['running']} while running")
    expect(not failures, f"{len(failures)} of {iterations} kills left something: " + "; ".join(failures[:3]))


def t_daemon_gone_at_return(e):
    """Whenever strata-run returns, its daemon has exited and been reaped
    (not left running, not handed to us as an orphan)."""
    args, _ = e.base()
    cases = [(["--", "true"], 0), (["--", "sh", "-c", "exit 7"], 7), (["--", "sh", "-c", "kill -9 $$"], 137),
             (["--", "/no/such/command"], 127), (["--bind", "/nonexistent:/x", "--", "true"], 125)]
    for i, (extra, want) in enumerate(cases * 3):
        p = e.popen(args + extra)
        out, err = p.communicate(timeout=60 * SCALE)
        pids = e.daemon_pids()
        alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        expect(not alive, f"{extra}: strata-run returned while its daemon {alive} still existed")
        expect(p.returncode == want, f"{extra}: rc {p.returncode}, expected {want}; {err}")
        if want != 125:
            expect(len(pids) == 1, f"{extra}: daemon pids recorded: {pids}")
        e.check_clean(extra)
    # a launcher told to stop (SIGTERM forwarded to the command)
    d = e.shared_dir()
    p = e.popen(args + ["--bind", f"{d}:/data", "--", "sh", "-c",
                        "touch /data/ready; while :; do sleep 0.05; done"])
    lt.wait_for(os.path.join(d, "ready"), p, 30 * SCALE)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60 * SCALE)
    pids = e.daemon_pids()
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    expect(p.returncode == 143 and not alive, f"SIGTERM: rc {p.returncode}, daemon alive {alive}")
    e.check_clean("SIGTERM")


def main():
    if len(sys.argv) not in (4, 5) or sys.argv[3] not in ("root", "rootless"):
        print(__doc__, file=sys.stderr)
        return 2
    strata_run, fs, mode = sys.argv[1:4]
    # make soak (STRATA_SOAK=1) kills ten times as often
    iterations = int(sys.argv[4]) if len(sys.argv) == 5 else (400 if os.environ.get("STRATA_SOAK") == "1" else 40)
    lt.harness_ready(strata_run, fs)
    tests = [t_daemon_gone_at_return, functools.partial(t_kill_launcher, iterations=iterations)]
    return lt.run_suite(Env(strata_run, fs, mode), mode, tests)


if __name__ == "__main__":
    sys.exit(main())
