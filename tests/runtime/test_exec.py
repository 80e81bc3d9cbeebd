#!/usr/bin/env python3
"""strata_exec(): a process started in a running container joins it.

usage: test_exec.py STRATA_RUN FS_PROGRAM EXEC_HELPER MODE GROUP
  MODE   root | rootless (as strata-test, who starts the container too)
  GROUP  exec

The container is strata-run in the background with a long sleep; its
init's host pid is found through /proc (the descendant whose innermost pid
is 1), and EXEC_HELPER (exec_helper.c) calls strata_exec() on it.
"""
import os
import signal
import subprocess
import sys
import time

from lifecycle_common import SCALE, Env, Failure, expect, find_init, stop, run_tests
import launcher_test as lt


class ExecEnv(Env):
    def __init__(self, strata_run, fs, helper, mode):
        super().__init__(strata_run, fs, mode)
        self.helper = os.path.abspath(helper)

    def start(self, extra=(), script="sleep 1000"):
        args, upper = self.base()
        d = self.shared_dir()
        p = self.popen(args + ["--hostname", "exec-box", "--bind", f"{d}:/data"] + list(extra) +
                       ["--", "sh", "-c", f"echo container > /tmp/mark; touch /data/ready; {script}"])
        lt.wait_for(os.path.join(d, "ready"), p)
        return p, find_init(p.pid, p), d

    def exec(self, init, cmd, opts=(), timeout=60, stdin=subprocess.DEVNULL):
        timeout *= SCALE
        argv = self.wrap([self.helper] + list(opts) + [str(init)] + cmd)
        p = subprocess.run(argv, env=self.environ(), capture_output=True, text=True, timeout=timeout,
                           stdin=stdin)
        return p.returncode, p.stdout, p.stderr


def t_sees_the_container(e):
    p, init, d = e.start()
    try:
        rc, out, err = e.exec(init, ["sh", "-c", "hostname; cat /tmp/mark /etc/greeting; echo $$; "
                                     "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; echo; "
                                     "cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/2/cmdline | tr '\\0' ' '"])
        expect(rc == 0, f"exec rc {rc}: {err}")
        lines = out.splitlines()
        expect(lines[0] == "exec-box", f"hostname {lines[0]!r}: not the container's uts namespace")
        expect(lines[1:3] == ["container", "hello from the top layer"],
               f"files {lines[1:3]}: not the container's mount namespace and root")
        mypid = int(lines[3])
        pids = [int(x) for x in lines[4].split()]
        expect(pids[:2] == [1, 2] and mypid in pids and mypid > 2 and max(pids) < 50,
               f"pids {pids} (mine {mypid}): not the container's pid namespace")
        expect("sleep 1000" in lines[6], f"pid 2 is {lines[6]!r}, not the container's command")
        rc, out, err = e.exec(init, ["sh", "-c", "for n in mnt uts ipc net user; do readlink /proc/self/ns/$n; done"])
        want = [os.readlink(f"/proc/{init}/ns/{n}") for n in ("mnt", "uts", "ipc", "net", "user")]
        expect(rc == 0 and out.split() == want, f"namespaces {out.split()}, init's {want}")
    finally:
        stop(e, p, "exec: sees the container")


def t_root_with_idmap(e):
    """Root's container with its own user namespace: exec is its root
    (the mapped id), not the host's."""
    if e.mode != "root":
        return
    from lifecycle_common import mapped_layers
    d = e.shared_dir()
    os.chown(d, 400000, 400000)
    p = e.popen(mapped_layers(e) + ["--bind", f"{d}:/data", "--", "sh", "-c", "touch /data/ready; sleep 1000"])
    try:
        lt.wait_for(os.path.join(d, "ready"), p)
        init = find_init(p.pid, p)
        rc, out, err = e.exec(init, ["sh", "-c", "id -u; cat /proc/self/uid_map; echo x > /data/by-exec"])
        lines = out.splitlines()
        expect(rc == 0 and lines[0] == "0" and lines[1].split() == ["0", "400000", "65536"],
               f"exec in a mapped container: {out!r} {err}")
        st = os.stat(os.path.join(d, "by-exec"))
        expect(st.st_uid == 400000, f"a file exec wrote is owned by {st.st_uid} on the host, not 400000")
    finally:
        stop(e, p, "exec: --uidmap")


def t_exit_codes(e):
    p, init, d = e.start()
    try:
        for cmd, want in ((["sh", "-c", "exit 0"], 0), (["sh", "-c", "exit 7"], 7),
                          (["sh", "-c", "kill -9 $$"], 137), (["sh", "-c", "kill -15 $$"], 143),
                          (["no-such-command"], 127), (["/tmp/not-exec"], 126)):
            if cmd == ["/tmp/not-exec"]:
                e.exec(init, ["sh", "-c", "echo 'echo hi' > /tmp/not-exec; chmod 644 /tmp/not-exec"])
            rc, out, err = e.exec(init, cmd)
            expect(rc == want, f"{cmd}: exit {rc}, expected {want}; {err}")
            if want in (126, 127):
                expect(cmd[0] in err, f"{cmd}: the message does not name it: {err!r}")
    finally:
        stop(e, p, "exec: exit codes")
    # a container that is gone: a setup failure, saying so
    rc, out, err = e.exec(init, ["true"])
    expect(rc == 125 and "running" in err, f"exec into a stopped container: rc {rc} err {err!r}")


def t_identity_caps_env(e):
    p, init, d = e.start()
    try:
        rc, out, err = e.exec(init, ["sh", "-c", "id -u; id -g; pwd; grep -E '^(CapEff|CapBnd|CapInh|NoNewPrivs)' "
                                     "/proc/self/status; env | sort"],
                              opts=["-w", "/tmp", "-e", "FOO=bar baz", "-e", "PATH=/bin"])
        expect(rc == 0, f"rc {rc} {err}")
        lines = out.splitlines()
        expect(lines[:3] == ["0", "0", "/tmp"], f"id/cwd {lines[:3]}")
        st = {l.split(":")[0]: l.split(":")[1].strip() for l in lines[3:7]}
        expect(int(st["CapEff"], 16) == lt.DEFAULT_CAPS and int(st["CapBnd"], 16) == lt.DEFAULT_CAPS,
               f"capabilities {st}, expected docker's default {lt.DEFAULT_CAPS:x}")
        expect(int(st["CapInh"], 16) == 0 and st["NoNewPrivs"] == "1", f"{st}")
        env = sorted(l for l in lines[7:] if not l.startswith(("PWD=", "SHLVL=", "_=")))
        expect(env == ["FOO=bar baz", "HOME=/root", "PATH=/bin"], f"environment {env}")
        rc, out, err = e.exec(init, ["grep", "CapEff", "/proc/self/status"],
                              opts=["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"])
        expect(rc == 0 and int(out.split()[1], 16) == 1 << lt.CAP_NET_ADMIN, f"cap-add after drop ALL: {out} {err}")
        if e.mode == "root":
            rc, out, err = e.exec(init, ["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"],
                                  opts=["-u", "1234:4321"])
            lines = out.splitlines()
            expect(rc == 0 and lines[:2] == ["1234", "4321"] and int(lines[2].split()[1], 16) == 0,
                   f"--user: {out!r} {err}")
        else:
            # only the caller is mapped: another uid is a clear setup error
            rc, out, err = e.exec(init, ["id"], opts=["-u", "1234"])
            expect(rc == 125 and "1234" in err and "mapped" in err, f"unmapped user: rc {rc} err {err!r}")
    finally:
        stop(e, p, "exec: identity")


def t_network_namespace(e):
    p, init, d = e.start(extra=["--net", "none"])
    try:
        rc, out, err = e.exec(init, ["cat", "/proc/net/dev"])
        ifaces = sorted(l.split(":")[0].strip() for l in out.splitlines()[2:])
        expect(rc == 0 and ifaces == ["lo"], f"exec into --net none sees interfaces {ifaces} {err}")
    finally:
        stop(e, p, "exec: network namespace")


def t_detach(e):
    p, init, d = e.start()
    try:
        # the process waits for our word: the exec must return before it
        rc, out, err = e.exec(init, ["sh", "-c", "while [ ! -e /data/go ]; do sleep 0.05; done; "
                                     "hostname > /data/detached.tmp; mv /data/detached.tmp /data/detached"],
                              opts=["-d"])
        expect(rc == 0, f"detached exec rc {rc} {err}")
        expect(not os.path.exists(os.path.join(d, "detached")), "the detached process ran before its cue")
        open(os.path.join(d, "go"), "w").close()
        lt.wait_for(os.path.join(d, "detached"), p)
        with open(os.path.join(d, "detached")) as f:
            expect(f.read() == "exec-box\n", "the detached process ran outside the container")
        rc, out, err = e.exec(init, ["no-such-command"], opts=["-d"])
        expect(rc == 127 and "no-such-command" in err, f"detached missing command: rc {rc} err {err!r}")
        # adopted by the container's init, not by whoever started the exec
        # (that would keep the container's pid 1 from ever finishing)
        strays = [k for k in lt.children_of(os.getpid()) if k != p.pid]
        expect(not strays, f"detached processes re-parented outside the container: {strays}")
    finally:
        stop(e, p, "exec: detach")


def t_signals(e):
    p, init, d = e.start()
    try:
        argv = e.wrap([e.helper, str(init), "sh", "-c",
                       'trap "exit 42" TERM; touch /data/exec-ready; while :; do sleep 0.05; done'])
        x = subprocess.Popen(argv, env=e.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lt.wait_for(os.path.join(d, "exec-ready"), x)
        os.kill(x.pid, signal.SIGTERM)  # the wrappers exec, so this is the helper
        out, err = x.communicate(timeout=60 * SCALE)
        expect(x.returncode == 42, f"SIGTERM to the exec caller: exit {x.returncode}, expected 42 (trap); {err}")
    finally:
        stop(e, p, "exec: signals")


def t_cgroup(e):
    """Root: a container put in its own cgroup (here by hand, in the pids
    controller of v1 or the unified hierarchy) is joined by exec."""
    if e.mode != "root":
        return
    base = None
    for cand in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(cand, "cgroup.procs")) and os.access(cand, os.W_OK):
            base = cand
            break
    if base is None:
        print("  (no writable pids or unified cgroup hierarchy: cgroup join not tested)")
        return
    with open("/proc/self/cgroup") as f:
        line = [l.strip() for l in f if (":pids:" in l if base.endswith("pids") else l.startswith("0::"))][0]
    mine = line.split(":", 2)[2]
    cg = os.path.join(base + mine, f"strata-exec-test.{os.getpid()}")
    os.mkdir(cg)
    p = None
    try:
        p, init, d = e.start()
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(init))
        argv = e.wrap([e.helper, str(init), "sh", "-c", "touch /data/in-cgroup; exec sleep 1000"])
        x = subprocess.Popen(argv, env=e.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lt.wait_for(os.path.join(d, "in-cgroup"), x)
            with open(os.path.join(cg, "cgroup.procs")) as f:
                members = [int(m) for m in f.read().split()]
            cmds = []
            for m in members:
                try:
                    with open(f"/proc/{m}/cmdline") as f:
                        cmds.append(f.read().replace("\0", " ").strip())
                except OSError:
                    pass
            expect(init in members and "sleep 1000" in cmds,
                   f"the exec'd process is not in the container's cgroup: members {members} {cmds}")
        finally:
            x.terminate()
            x.communicate(timeout=60 * SCALE)
    finally:
        if p:
            stop(e, p, "exec: cgroup")
        end = time.time() + 10
        while True:
            try:
                os.rmdir(cg)
                break
            except OSError:
                if time.time() > end:
                    raise
                time.sleep(0.1)


GROUPS = {"exec": [t_sees_the_container, t_root_with_idmap, t_exit_codes, t_identity_caps_env, t_network_namespace,
                   t_detach, t_signals, t_cgroup]}


def main():
    return run_tests(GROUPS, 6, __doc__,
                     lambda mode: ExecEnv(sys.argv[1], sys.argv[2], sys.argv[3], mode))


if __name__ == "__main__":
    sys.exit(main())
