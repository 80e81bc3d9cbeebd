#!/usr/bin/env python3
"""--net private and published ports (pasta), as root and rootless.

usage: test_net.py STRATA_RUN FS_PROGRAM MODE GROUP
  MODE   root | rootless
  GROUP  net (through pasta) | slirp (through slirp4netns, forced by
         STRATA_NET_HELPER, the fallback when pasta is not installed)

Only 127.0.0.1 is ever contacted. A busybox httpd in the container,
published on 127.0.0.1:HOSTPORT, must answer from the host; afterwards no
pasta may be left running and the port must be free again.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from lifecycle_common import (SCALE, TUN, Env, Failure, expect, find_init, processes_named, run_tests, skip,
                              stop)
from lifecycle_common import mapped_layers as lt_mapped
import launcher_test as lt


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url, p, secs=30):
    end = time.time() + secs * SCALE
    last = None
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=5 * SCALE) as r:
                return r.read().decode()
        except OSError as ex:
            last = ex
        if p.poll() is not None:
            raise Failure(f"container exited ({p.returncode}) before answering: {p.stderr.read()}")
        time.sleep(0.1)
    raise Failure(f"{url} never answered: {last}")


def port_closed(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def helper_of(e, p):
    """The network helper under this launcher (other tests may run their
    own at the same time, so no machine-wide count will do)."""
    found, todo = [], [p.pid]
    named = set(processes_named(e.helper))
    while todo:
        q = todo.pop()
        if q in named:
            found.append(q)
        todo += lt.children_of(q)
    return found


def gone(pids, secs=20):
    """pids (a helper) no longer run the helper: not even as a zombie."""
    end = time.time() + secs * SCALE
    while time.time() < end:
        left = [q for q in pids if os.path.exists(f"/proc/{q}")]
        if not left:
            return True
        time.sleep(0.05)
    return False


def t_publish_httpd(e):
    port = free_port()
    args, _ = e.base()
    p = e.popen(args + ["-p", f"127.0.0.1:{port}:8080", "--", "httpd", "-f", "-p", "8080", "-h", "/www"])
    helpers = []
    try:
        body = fetch(f"http://127.0.0.1:{port}/index.html", p)
        expect(body == "hello from strata httpd\n", f"answer {body!r}")
        helpers = helper_of(e, p)
        expect(helpers, f"no {e.helper} process while the container runs")
    finally:
        rc, out, err = stop(e, p, "published httpd")
    expect(rc == 128 + signal.SIGTERM, f"httpd container: exit {rc} {err}")
    expect(gone(helpers), f"{e.helper} left after the container: {helpers}")
    expect(port_closed(port), f"port {port} still answers after the container")


def t_root_with_idmap(e):
    """Root giving the container its own user namespace (--uidmap)."""
    if e.mode != "root":
        return
    port = free_port()
    p = e.popen(lt_mapped(e) + ["-p", f"127.0.0.1:{port}:8080", "--", "httpd", "-f", "-p", "8080", "-h", "/www"])
    helpers = []
    try:
        body = fetch(f"http://127.0.0.1:{port}/index.html", p)
        expect(body == "hello from strata httpd\n", f"answer {body!r}")
        helpers = helper_of(e, p)
    finally:
        stop(e, p, "published httpd with --uidmap")
    expect(helpers and gone(helpers), f"{e.helper} {helpers} not seen, or left after the container")


def t_private_network(e):
    """Its own namespace: an interface besides lo with an address and a
    default route."""
    args, _ = e.base()
    rc, out, err = e.run(args + ["--net", "private", "--", "sh", "-c",
                                 "cat /proc/net/dev; echo ROUTES; ip -4 route; echo ADDR; ip -4 addr"])
    expect(rc == 0, f"rc {rc} {err}")
    devs = sorted(l.split(":")[0].strip() for l in out.split("ROUTES")[0].splitlines()[2:])
    expect("lo" in devs and len(devs) >= 2, f"interfaces {devs}")
    routes = out.split("ROUTES")[1].split("ADDR")[0]
    expect("default" in routes, f"no default route: {routes!r}")
    addrs = out.split("ADDR")[1]
    expect(any("inet " in l and "127.0.0.1" not in l for l in addrs.splitlines()), f"no address: {addrs!r}")
    host = set(os.listdir("/sys/class/net"))
    expect(os.readlink("/proc/self/ns/net") and "lo" in host, "host view")


def t_two_ports_udp_and_all_addresses(e):
    """Two published ports, one bound on every address (no IP given), and
    a udp one accepted next to them."""
    p1, p2, pu = free_port(), free_port(), free_port()
    args, _ = e.base()
    p = e.popen(args + ["-p", f"127.0.0.1:{p1}:8080", "-p", f"{p2}:8081", "-p", f"127.0.0.1:{pu}:9000/udp",
                        "--", "sh", "-c", "httpd -p 8081 -h /www; exec httpd -f -p 8080 -h /www"])
    helpers = []
    try:
        expect(fetch(f"http://127.0.0.1:{p1}/index.html", p) == "hello from strata httpd\n", "first port")
        helpers = helper_of(e, p)
        expect(fetch(f"http://127.0.0.1:{p2}/index.html", p) == "hello from strata httpd\n", "second port")
        out = subprocess.run(["ss", "-Hlnt", f"sport = :{p2}"], capture_output=True, text=True).stdout
        expect("*:" in out or "0.0.0.0:" in out or "[::]:" in out, f"port without IP not on every address: {out!r}")
    finally:
        stop(e, p, "two ports")
    expect(helpers and gone(helpers), f"{e.helper} {helpers} not seen, or left after the container")


def t_udp(e):
    """A published udp port: a datagram sent to 127.0.0.1:HOSTPORT reaches
    a receiver in the container (the host's python, bound in read-only:
    busybox has no udp server)."""
    port = free_port()
    d = e.shared_dir()
    args, _ = e.base()
    binds = []
    for host in ("/usr", "/lib", "/lib64"):
        if os.path.exists(host):
            binds += ["--bind", f"{os.path.realpath(host)}:{host}:ro"]
    recv = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 9000)); "
            "open('/data/ready', 'w').close(); data, _ = s.recvfrom(100); "
            "open('/data/udp.tmp', 'wb').write(data); __import__('os').rename('/data/udp.tmp', '/data/udp')")
    p = e.popen(args + binds + ["--bind", f"{d}:/data", "-p", f"127.0.0.1:{port}:9000/udp", "--",
                                "/usr/bin/python3", "-c", recv])
    try:
        lt.wait_for(os.path.join(d, "ready"), p)
        end = time.time() + 30 * SCALE
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # udp may drop a datagram: send until one arrives
            while not os.path.exists(os.path.join(d, "udp")) and time.time() < end and p.poll() is None:
                s.sendto(b"datagram", ("127.0.0.1", port))
                time.sleep(0.1)
        expect(os.path.exists(os.path.join(d, "udp")), f"no datagram reached the container: {p.poll()}")
        with open(os.path.join(d, "udp"), "rb") as f:
            expect(f.read() == b"datagram", "the datagram changed on the way")
        p.communicate(timeout=60 * SCALE)
        expect(p.returncode == 0, f"receiver exit {p.returncode}")
    finally:
        stop(e, p, "udp")


def t_launcher_killed(e):
    """SIGKILL of the launcher: pasta goes with it (its death signal)."""
    port = free_port()
    args, _ = e.base()
    p = e.popen(args + ["-p", f"127.0.0.1:{port}:8080", "--", "httpd", "-f", "-p", "8080", "-h", "/www"])
    fetch(f"http://127.0.0.1:{port}/index.html", p)
    helpers = helper_of(e, p)
    expect(helpers, f"no {e.helper} process while the container runs")
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=60 * SCALE)
    end = time.time() + 20 * SCALE
    while time.time() < end and lt.children_of(os.getpid()):
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    expect(gone(helpers), f"{e.helper} survived its launcher: {helpers}")
    for left in os.listdir(e.rt):
        os.rmdir(os.path.join(e.rt, left))
    e.check_clean("SIGKILL to a launcher with a private network")
    expect(port_closed(port), f"port {port} still answers")


def t_errors(e):
    args, _ = e.base(upper=False)
    for bad, what in ((["--net", "host", "-p", "8080:80"], "private"), (["-p", "70000:80"], "65535"),
                      (["-p", "1.2.3:80:80"], "IP"), (["-p", "8080"], "HOSTPORT"),
                      (["-p", "8080:80/sctp"], "tcp")):
        rc, out, err = e.run(args + bad + ["--", "true"])
        expect(rc == 125 and what in err, f"{bad}: rc {rc} err {err!r}")
    # a host port that is taken: pasta's own message, a setup failure, nothing left
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, out, err = e.run(args + ["-p", f"127.0.0.1:{port}:8080", "--", "true"])
    expect(rc == 125 and e.helper in err and str(port) in err, f"taken port: rc {rc} err {err!r}")
    if e.mode == "rootless" and e.tunnode:
        # without the harness's usable tun node: the host's 0600 one
        e.bind_tun = False
        try:
            rc, out, err = e.run(args + ["--net", "private", "--", "true"])
        finally:
            e.bind_tun = True
        expect(rc == 125 and TUN in err and "0666" in err, f"unusable tun: rc {rc} err {err!r}")


class NetEnv(Env):
    def __init__(self, strata_run, fs, mode, helper):
        super().__init__(strata_run, fs, mode)
        self.helper = helper

    def environ(self):
        env = super().environ()
        env["STRATA_NET_HELPER"] = self.helper
        return env


def check(e):
    if not shutil.which(e.helper, path="/usr/local/bin:/usr/bin:/bin"):
        skip(f"{e.helper} is not installed (Debian package {'passt' if e.helper == 'pasta' else e.helper})")
    if not os.path.exists(TUN):
        skip(f"no {TUN} on this host: a user-mode network stack needs the tun device")


GROUPS = {"net": [t_publish_httpd, t_root_with_idmap, t_private_network, t_two_ports_udp_and_all_addresses,
                  t_udp, t_launcher_killed, t_errors]}
GROUPS["slirp"] = GROUPS["net"]


def main():
    helper = "slirp4netns" if sys.argv[-1] == "slirp" else "pasta"
    return run_tests(GROUPS, 5, __doc__, lambda mode: NetEnv(sys.argv[1], sys.argv[2], mode, helper), check)


if __name__ == "__main__":
    sys.exit(main())
