#!/usr/bin/env python3
"""The container's own terminal (-t, -i), for strata-run and strata_exec().

usage: test_tty.py STRATA_RUN FS_PROGRAM EXEC_HELPER MODE GROUP
  MODE   root | rootless
  GROUP  tty

The caller's terminal is a pseudo-terminal this script holds the master
of. On it a small driver records the terminal's mode, runs the launcher,
and reports the exit code and whether the mode came back unchanged.
"""
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from lifecycle_common import SCALE, Env, Failure, expect, find_init, stop, run_tests
import launcher_test as lt

DRIVER = r"""
import subprocess, sys, termios
before = termios.tcgetattr(0)
p = subprocess.Popen(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(p.pid))
rc = p.wait()
after = termios.tcgetattr(0)
print(f"\nDRIVER rc={rc} restored={before == after}", flush=True)
"""


class Term:
    """argv run on a new pseudo-terminal of rows x cols."""

    def __init__(self, e, argv, rows, cols):
        self.pidfile = os.path.join(e.tmp, f"driver.{time.time_ns()}")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                os.execvpe(sys.executable, [sys.executable, "-c", DRIVER, self.pidfile] + argv, e.environ())
            finally:
                os._exit(127)
        self.buf = b""

    def read_until(self, token, secs=30):
        end = time.time() + secs * SCALE
        while token not in self.buf and time.time() < end:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.buf += chunk
        return token in self.buf

    def text(self):
        return self.buf.decode(errors="replace").replace("\r", "")

    def resize(self, rows, cols):
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def launcher_pid(self):
        end = time.time() + 30 * SCALE
        while time.time() < end:
            try:
                with open(self.pidfile) as f:
                    return int(f.read())
            except (OSError, ValueError):
                time.sleep(0.05)
        raise Failure("the driver never started the launcher")

    def finish(self):
        """Returns (exit code, terminal restored) from the driver's report."""
        ok = self.read_until(b"restored=", 60)
        self.read_until(b"\n", 5) if ok else None
        end = time.time() + 30 * SCALE
        while time.time() < end:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)
        t = self.text()
        if "DRIVER rc=" not in t:
            raise Failure(f"no report from the driver: {t!r}")
        tail = t[t.rindex("DRIVER rc="):].split()
        return int(tail[1].split("=")[1]), tail[2].startswith("restored=True")


def t_run_tty(e):
    args, _ = e.base()
    term = Term(e, e.argv(args + ["-t", "--", "sh", "-c", "tty; stty size; echo TERM=$TERM; "
                                  "test -t 0 && test -t 1 && test -t 2 && echo all-tty"]), 33, 91)
    rc, restored = term.finish()
    lines = term.text().split("\n")
    expect(rc == 0, f"rc {rc}: {term.text()!r}")
    expect("/dev/pts/0" in lines, f"tty inside is not /dev/pts/0: {lines}")
    expect("33 91" in lines, f"window size not passed in: {lines}")
    expect("TERM=xterm" in lines and "all-tty" in lines, f"{lines}")
    expect(restored, "the caller's terminal mode changed")
    e.check_clean("tty run")


def t_interactive_resize_ctrl_c(e):
    args, _ = e.base()
    script = ('trap "echo trapped; exit 7" INT; echo ready; read line; echo "got:$line"; stty size; '
              'read x; stty size; echo looping; while :; do sleep 0.05; done')
    term = Term(e, e.argv(args + ["-t", "-i", "--", "sh", "-c", script]), 20, 70)
    expect(term.read_until(b"ready"), f"no prompt: {term.buf!r}")
    os.write(term.fd, b"hello\r")
    expect(term.read_until(b"20 70"), f"typed line or first size missing: {term.text()!r}")
    expect("got:hello" in term.text(), f"stdin not relayed: {term.text()!r}")
    term.resize(40, 100)
    time.sleep(0.2)
    os.write(term.fd, b"x\r")
    expect(term.read_until(b"looping"), f"no second size: {term.text()!r}")
    expect("40 100" in term.text(), f"SIGWINCH did not resize the container's terminal: {term.text()!r}")
    os.write(term.fd, b"\x03")
    expect(term.read_until(b"trapped"), f"^C did not reach the command: {term.text()!r}")
    rc, restored = term.finish()
    expect(rc == 7, f"exit {rc} after ^C, expected 7")
    expect(restored, "the caller's terminal mode was not restored")
    e.check_clean("interactive tty")


def t_restored_on_error_and_signal(e):
    args, _ = e.base()
    term = Term(e, e.argv(args + ["-t", "-i", "--", "no-such-command"]), 24, 80)
    rc, restored = term.finish()
    expect(rc == 127 and "no-such-command" in term.text(), f"rc {rc} {term.text()!r}")
    expect(restored, "terminal mode not restored after a failed command")
    term = Term(e, e.argv(args + ["-t", "-i", "--", "sh", "-c", "echo ready; while :; do sleep 0.05; done"]), 24, 80)
    expect(term.read_until(b"ready"), f"{term.text()!r}")
    os.kill(term.launcher_pid(), signal.SIGTERM)
    rc, restored = term.finish()
    expect(rc == 128 + signal.SIGTERM, f"SIGTERM to the launcher: exit {rc}")
    expect(restored, "terminal mode not restored after SIGTERM")
    e.check_clean("tty error and signal")


def t_stdout_not_a_terminal(e):
    """The lifecycle monitor's case: stdout is a log, stdin nothing or a pipe."""
    args, _ = e.base()
    p = subprocess.run(e.argv(args + ["-t", "--", "sh", "-c", "tty; echo out"]), env=e.environ(),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60 * SCALE)
    expect(p.returncode == 0 and p.stdout == b"/dev/pts/0\r\nout\r\n", f"rc {p.returncode} {p.stdout!r} {p.stderr!r}")
    p = subprocess.run(e.argv(args + ["-t", "-i", "--", "sh", "-c", 'read l; echo "got:$l"; cat']),
                       env=e.environ(), input=b"hello\nmore\n", capture_output=True, timeout=60 * SCALE)
    out = p.stdout.replace(b"\r", b"")
    expect(p.returncode == 0 and b"got:hello" in out and out.count(b"more") >= 1,
           f"piped stdin: rc {p.returncode} {p.stdout!r} {p.stderr!r}")
    e.check_clean("tty to a pipe")


def t_exec_tty(e):
    args, _ = e.base()
    d = e.shared_dir()
    p = e.popen(args + ["--bind", f"{d}:/data", "--", "sh", "-c", "touch /data/ready; sleep 1000"])
    try:
        lt.wait_for(os.path.join(d, "ready"), p)
        init = find_init(p.pid, p)
        term = Term(e, e.wrap([e.helper, "-t", "-i", str(init), "sh", "-c",
                               "tty; stty size; echo ready; read l; echo got:$l"]), 27, 77)
        expect(term.read_until(b"ready"), f"{term.text()!r}")
        os.write(term.fd, b"typed\r")
        rc, restored = term.finish()
        lines = term.text().split("\n")
        expect(rc == 0, f"exec -t rc {rc}: {lines}")
        expect("/dev/pts/0" in lines and "27 77" in lines and "got:typed" in lines,
               f"exec's terminal: {lines}")
        expect(restored, "terminal mode not restored after exec -t")
    finally:
        stop(e, p, "exec tty")


class TtyEnv(Env):
    def __init__(self, strata_run, fs, helper, mode):
        super().__init__(strata_run, fs, mode)
        self.helper = os.path.abspath(helper)


GROUPS = {"tty": [t_run_tty, t_interactive_resize_ctrl_c, t_restored_on_error_and_signal,
                  t_stdout_not_a_terminal, t_exec_tty]}


def main():
    return run_tests(GROUPS, 6, __doc__, lambda mode: TtyEnv(sys.argv[1], sys.argv[2], sys.argv[3], mode))


if __name__ == "__main__":
    sys.exit(main())
