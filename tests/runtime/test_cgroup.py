#!/usr/bin/env python3
"""Resource limits through the container's cgroup.

usage: test_cgroup.py STRATA_RUN FS_PROGRAM MODE   (MODE: root | rootless)

Root: a command beyond --memory is OOM-killed (exit 137); --pids-limit 50
stops a fork loop and the container stays usable; the limits are written
to the container's cgroup, which is made beneath the launcher's own cgroup
(the launcher runs inside a test cgroup made here) in every hierarchy, and
no directory of it is left after the container ends. Rootless without a
delegated cgroup: a limit is a clear error (exit 125), no limit needs no
cgroup at all.

v1 controllers (memory, cpu, pids, ...) are what this kind of host has;
on a unified (v2) host the same checks read memory.max, cpu.max, pids.max.
Exit 77: skipped.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import launcher_test as lt  # noqa: E402

Failure, expect = lt.Failure, lt.expect
APPLETS = ["head", "tr", "seq"]
CONTROLLERS = ["memory", "cpu", "cpuacct", "pids", "freezer", "devices"]
SCALE = max(1.0, float(os.environ.get("STRATA_TEST_SCALE", "1") or 1))


def unified():
    return subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True,
                          text=True).stdout.strip() == "cgroup2fs"


def own_cgroup_dirs(pid="self"):
    """{controller: directory of pid's cgroup} for the mounted hierarchies."""
    dirs = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            num, ctrls, path = line.rstrip("\n").split(":", 2)
            if unified():
                if num == "0":
                    dirs["unified"] = "/sys/fs/cgroup" + path.rstrip("/")
                continue
            for c in ctrls.split(","):
                if c in CONTROLLERS and os.path.isdir(f"/sys/fs/cgroup/{c}"):
                    dirs[c] = f"/sys/fs/cgroup/{c}" + path.rstrip("/")
    return dirs


class Env(lt.Env):
    def __init__(self, strata_run, fs, mode):
        super().__init__(strata_run, fs, mode)
        base = self.lower[1]
        for a in APPLETS:
            p = os.path.join(base, "bin", a)
            if not os.path.lexists(p):
                os.symlink("busybox", p)
                if self.uid:
                    os.lchown(p, self.uid, self.gid)
        self.testcg = {}

    def make_test_cgroup(self):
        """A cgroup of our own in every hierarchy, beneath ours, that the
        launcher is started in."""
        name = f"strata-cgtest-{os.getpid()}"
        for c, d in own_cgroup_dirs().items():
            p = os.path.join(d, name)
            os.makedirs(p, exist_ok=True)
            self.testcg[c] = p
        return self.testcg

    def in_test_cgroup(self, argv):
        writes = "; ".join(f'echo $$ > {d}/cgroup.procs' for d in self.testcg.values())
        return ["sh", "-c", writes + '; exec "$@"', "sh"] + argv

    def popen_cg(self, args):
        return subprocess.Popen(self.in_test_cgroup(self.argv(args)), env=self.environ(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def remove_test_cgroup(self):
        for d in self.testcg.values():
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
        self.testcg = {}


def leftover_cgroups(names):
    """Directories of those names anywhere below our own cgroups (the
    launcher's default name is strata-PID)."""
    left = []
    for c, d in own_cgroup_dirs().items():
        for root, dirs, _ in os.walk(d):
            left += [os.path.join(root, n) for n in dirs if n in names]
    return left


def wait_path(path, proc, secs=30):
    end = time.time() + secs * SCALE
    while time.time() < end:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise Failure(f"container exited ({proc.returncode}) early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise Failure(f"{path} never appeared")


def read(path):
    with open(path) as f:
        return f.read().strip()


# -- root --------------------------------------------------------------------
def t_oom_kill(e):
    args, _ = e.base()
    name = f"oom-{os.getpid()}"
    rc, out, err = e.run(args + ["--memory", "32m", "--cgroup-name", name, "--", "sh", "-c",
                                 "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
                         timeout=120 * SCALE)
    expect(rc == 137 and "survived" not in out, f"beyond --memory 32m: rc {rc} out {out!r} err {err!r}")
    # below the limit the same command runs
    rc, out, err = e.run(args + ["--memory", "64m", "--", "sh", "-c",
                                 "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo survived"])
    expect(rc == 0 and out == "survived\n", f"within --memory: rc {rc} out {out!r} err {err!r}")
    left = leftover_cgroups({name})
    expect(not left, f"cgroups left after the OOM kill: {left}")


def t_pids_limit(e):
    args, _ = e.base()
    script = ("sh -c 'i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done' 2>/dev/null; "
              "set -- /proc/[0-9]*; echo procs=$#; kill -9 -1; "
              # builtins only until the killed are reaped: a failed fork ends sh
              "n=0; while [ $n -lt 1000000 ]; do set -- /proc/[0-9]*; [ $# -le 2 ] && break; n=$((n+1)); done; "
              "echo usable; cat /etc/greeting")
    rc, out, err = e.run(args + ["--pids-limit", "50", "--", "sh", "-c", script], timeout=120 * SCALE)
    lines = out.splitlines()
    expect(rc == 0, f"rc {rc} out {out!r} err {err!r}")
    procs = int(lines[0].split("=")[1])
    expect(10 <= procs <= 50, f"{procs} processes ran under --pids-limit 50")
    expect(lines[1:] == ["usable", "hello from the top layer"], f"the container is not usable: {out!r}")


def t_limits_and_placement(e):
    """The cgroup is beneath the launcher's (a test cgroup), holds the
    limits and the container's processes, and is gone afterwards."""
    testcg = e.make_test_cgroup()
    try:
        d = e.shared_dir()
        name = f"cgt-{os.getpid()}"
        args, _ = e.base()
        p = e.popen_cg(args + ["--memory", "48m", "--memory-swap", "96m", "--cpus", "0.5",
                               "--cpu-shares", "512", "--pids-limit", "30", "--cgroup-name", name,
                               "--bind", f"{d}:/data", "--", "sh", "-c",
                               "touch /data/ready; while [ ! -e /data/stop ]; do sleep 0.05; done"])
        try:
            wait_path(os.path.join(d, "ready"), p)
            for c, parent in testcg.items():
                cg = os.path.join(parent, name)
                expect(os.path.isdir(cg), f"no container cgroup {cg} beneath the launcher's ({c})")
                procs = read(os.path.join(cg, "cgroup.procs")).split()
                expect(len(procs) >= 2, f"{cg} holds {procs}, expected init and the command")
            # the launcher and its daemon stay in the test cgroup itself
            for c, parent in testcg.items():
                outer = read(os.path.join(parent, "cgroup.procs")).split()
                expect(str(p.pid) in outer, f"the launcher left its own cgroup ({c}): {outer}")
            if "memory" in testcg:
                cg = os.path.join(testcg["memory"], name)
                expect(int(read(f"{cg}/memory.limit_in_bytes")) == 48 << 20, "memory.limit_in_bytes")
                if os.path.exists(f"{cg}/memory.memsw.limit_in_bytes"):
                    expect(int(read(f"{cg}/memory.memsw.limit_in_bytes")) == 96 << 20, "memsw limit")
            if "cpu" in testcg:
                cg = os.path.join(testcg["cpu"], name)
                expect(read(f"{cg}/cpu.cfs_quota_us") == "50000" and read(f"{cg}/cpu.cfs_period_us") == "100000",
                       "cpu quota/period for --cpus 0.5")
                expect(read(f"{cg}/cpu.shares") == "512", "cpu.shares")
            if "pids" in testcg:
                expect(read(os.path.join(testcg["pids"], name, "pids.max")) == "30", "pids.max")
            if "devices" in testcg:
                rules = read(os.path.join(testcg["devices"], name, "devices.list")).splitlines()
                expect("a *:* rwm" not in rules and "c 1:3 rwm" in rules and "c 136:* rwm" in rules,
                       f"device rules {rules}")
            if "unified" in testcg:
                cg = os.path.join(testcg["unified"], name)
                expect(read(f"{cg}/memory.max") == str(48 << 20) and read(f"{cg}/pids.max") == "30" and
                       read(f"{cg}/cpu.max") == "50000 100000", "v2 limits")
        finally:
            open(os.path.join(d, "stop"), "w").close()
            out, err = p.communicate(timeout=60 * SCALE)
        expect(p.returncode == 0, f"rc {p.returncode} {err}")
        e.check_clean("limits")
        left = leftover_cgroups({name})
        expect(not left, f"cgroup directories left after the container: {left}")
    finally:
        e.remove_test_cgroup()


def t_default_name_removed(e):
    """Root always gets the device cgroup (strata-PID of the launcher),
    with or without limits; neither is left behind, also when the command
    is killed or the setup fails."""
    args, _ = e.base()
    for extra, script, want in (([], "true", 0), (["--cpus", "1"], "kill -9 $$", 137),
                                (["--pids-limit", "20"], "exit 3", 3)):
        p = e.popen(args + extra + ["--", "sh", "-c", script])
        out, err = p.communicate(timeout=60 * SCALE)
        e.check_clean(script)
        expect(p.returncode == want, f"{script}: rc {p.returncode}, expected {want}; {err}")
        left = leftover_cgroups({f"strata-{p.pid}"})
        expect(not left, f"cgroups left after '{script}': {left}")
    p = e.popen(args + ["--memory", "16m", "--", "/no/such/command"])
    out, err = p.communicate(timeout=60 * SCALE)
    expect(p.returncode == 127, f"missing command: rc {p.returncode}")
    expect(not leftover_cgroups({f"strata-{p.pid}"}), "cgroups left after a missing command")


def t_bad_limits(e):
    for bad in (["--memory", "lots"], ["--memory", "0"], ["--cpus", "0"], ["--cpus", "-1"],
                ["--cpu-shares", "1"], ["--pids-limit", "0"], ["--memory-swap", "1g"],
                ["--memory", "64m", "--memory-swap", "32m"], ["--cgroup-name", "a/b"],
                ["--cgroup-name", ".."]):
        rc, out, err = e.run(["--lowerdir", e.lowerdir] + bad + ["--", "true"])
        expect(rc == 125 and err.strip(), f"{bad}: rc {rc} err {err!r}")


# -- rootless ------------------------------------------------------------------
def t_rootless_limit_refused(e):
    args, _ = e.base()
    for flag in (["--memory", "32m"], ["--pids-limit", "50"], ["--cpus", "0.5"]):
        rc, out, err = e.run(args + flag + ["--", "true"])
        expect(rc == 125 and "cgroup" in err and flag[0] in err,
               f"rootless {flag}: rc {rc}, expected 125 with a clear error; err {err!r}")
    # no limit: no cgroup needed, also with a name asked for
    rc, out, err = e.run(args + ["--cgroup-name", f"cgt-{os.getpid()}", "--", "echo", "ran"])
    expect(rc == 0 and out == "ran\n", f"rootless without limits: rc {rc} {err!r}")
    expect(not leftover_cgroups({f"cgt-{os.getpid()}"}), "a rootless run left a cgroup")


def t_rootless_delegated(e):
    """A cgroup delegated to the user (its directory and cgroup.procs
    chowned, as systemd's Delegate=yes does): the launcher, started in it,
    makes the container's cgroup beneath it and the limits hold."""
    dirs = own_cgroup_dirs()
    ctrls = [c for c in ("memory", "pids", "unified") if c in dirs]
    name = f"strata-deleg-{os.getpid()}"
    deleg = {}
    try:
        for c in ctrls:
            d = os.path.join(dirs[c], name)
            os.makedirs(d, exist_ok=True)
            deleg[c] = d
            for f in ("", "cgroup.procs", "tasks", "cgroup.subtree_control"):
                if os.path.exists(os.path.join(d, f)):
                    os.chown(os.path.join(d, f), e.uid, e.gid)
        e.testcg = deleg
        args, _ = e.base()
        p = e.popen_cg(args + ["--memory", "32m", "--", "sh", "-c",
                               "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"])
        out, err = p.communicate(timeout=120 * SCALE)
        e.check_clean("delegated")
        if "unified" in deleg and "memory" not in deleg and p.returncode == 125:
            print(f"     (the unified hierarchy here has no memory controller to delegate: {err.strip()})")
            return
        expect(p.returncode == 137 and "survived" not in out,
               f"rootless --memory in a delegated cgroup: rc {p.returncode} {out!r} {err!r}")
        left = [os.path.join(d, n) for d in deleg.values() for n in os.listdir(d) if n.startswith("strata-")]
        expect(not left, f"cgroups left in the delegated subtree: {left}")
    finally:
        e.remove_test_cgroup()


GROUPS = {
    "root": [t_oom_kill, t_pids_limit, t_limits_and_placement, t_default_name_removed, t_bad_limits],
    "rootless": [t_rootless_limit_refused, t_rootless_delegated, t_bad_limits],
}


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in GROUPS:
        print(__doc__, file=sys.stderr)
        return 2
    strata_run, fs, mode = sys.argv[1:]
    lt.harness_ready(strata_run, fs)
    dirs = own_cgroup_dirs()
    if mode == "root" and not (("memory" in dirs and "pids" in dirs) or "unified" in dirs):
        lt.skip("no cgroup memory and pids controllers mounted under /sys/fs/cgroup")
    if mode == "rootless" and any(os.access(d, os.W_OK) for d in dirs.values()):
        pass  # root can write them; the test user cannot, which is what is tested
    e = Env(strata_run, fs, mode)
    failed = 0
    try:
        failed += lt.run_tests(e, mode, GROUPS[mode])
    finally:
        e.remove_test_cgroup()
        e.cleanup()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
