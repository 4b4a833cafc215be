"""The sandbox's own terminal: when flue's stdio is a terminal, the sandbox gets a pty of its
own and the supervisor relays; the caller's terminal never goes in. So a backgrounded or
stopped ``flue run`` takes no keystrokes meant for the shell (before, the sandbox held the
caller's tty fds directly and, after its ``setsid``, SIGTTIN never applied to it), while
interactive use keeps working: echo, ``isatty``/``tty``, the window size and its changes,
^C, exit codes and signals; the caller's terminal modes are restored on every way out.
Also: flue started with fd 0, 1 or 2 closed gives the sandbox /dev/null there, never one of
its own descriptors.

Each test runs flue on a pty the test holds (its master is "the keyboard and the screen"),
as root and as the unprivileged uid; the job-control tests drive a real shell on it.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.sandbox

NOBODY = 65534
# make fd 0 (the pty slave) the controlling terminal of a new session, then exec the rest
CTTY = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execvp(sys.argv[1], sys.argv[1:])")


class Term:
    """A pty; a process on its slave as session leader with it as controlling terminal."""

    def __init__(self, rows: int = 30, cols: int = 100) -> None:
        self.master, self.slave = os.openpty()
        termios.tcsetwinsize(self.slave, (rows, cols))
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = b""

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path | str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CTTY, *argv], stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, env=env, cwd=cwd,
                                     start_new_session=True)

    def modes(self) -> list:
        return termios.tcgetattr(self.slave)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float = 0.3) -> bytes:
        got = b""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([self.master], [], [], left)
            if not r:
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
        self.out += got
        return got

    def read_until(self, pattern: bytes | str, timeout: float = 20.0) -> bytes:
        """Read until ``pattern`` (a regex) matches what came since the last call."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        start = len(self.out)
        end = time.monotonic() + timeout
        while not re.search(pattern, self.out[start:]):
            if time.monotonic() > end:
                raise AssertionError(f"{pattern!r} never came; screen: {self.out[start:]!r}")
            self.read(0.1)
        m = re.search(pattern, self.out[start:])
        assert m is not None
        seen = self.out[start:start + m.end()]
        self.out = self.out[:start] + self.out[start + m.end():]  # consumed
        return seen

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        end = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > end:
                raise AssertionError(f"did not end; screen: {self.out!r}")
            self.read(0.1)
        self.read(0.1)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc is not None:
            # the shell's background jobs are process groups of their own: kill every
            # descendant (a SIGKILLed flue's keeper takes its sandbox down)
            for pid in _descendants(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def term():
    t = Term()
    yield t
    t.close()


def _flue_argv(flue, command: list[str], *args: str) -> tuple[list[str], Path | None, object]:
    argv, rep, dlg = flue._prepare(command, args, profile=None, report=True, delegate=None,
                                   allow_unlimited=None)
    return argv, rep, dlg


def _report(rep: Path | None) -> dict:
    assert rep is not None and rep.exists(), "flue wrote no report"
    return json.loads(rep.read_text())


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _find(pid: int, comm: str, timeout: float = 20) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p in _descendants(pid):
            if _comm(p) == comm:
                return p
        time.sleep(0.05)
    raise AssertionError(f"no {comm} below {pid}")


# --------------------------------------------------------------------------- interactive use


LOOPS = ["miniloop", "asyncio"]  # flue run's fast path, and with --events (asyncio)


def _loop_args(flue, loop: str) -> list[str]:
    return [] if loop == "miniloop" else ["--events", str(flue.tmpdir("events") / "e.jsonl")]


@pytest.mark.parametrize("loop", LOOPS)
def test_interactive_cat_echoes_through_the_relay_on_a_pty_of_the_sandbox_s_own(flue, term,
                                                                                loop):
    before = term.modes()
    script = "tty; test -t 0 && test -t 1 && echo TTY-OK; cat; echo cat-ended"
    argv, rep, _ = _flue_argv(flue, ["sh", "-c", script], *_loop_args(flue, loop))
    term.spawn(argv, flue.env(), flue.s.scratch)
    seen = term.read_until(rb"TTY-OK\r\n")
    assert b"/dev/pts/0\r\n" in seen, seen  # ttyname works: the sandbox's own devpts
    cat = _find(term.proc.pid, "cat")
    # the sandbox's stdin is its own pty, not the caller's terminal
    inside, caller = os.stat(f"/proc/{cat}/fd/0"), os.fstat(term.slave)
    assert (inside.st_dev, inside.st_rdev) != (caller.st_dev, caller.st_rdev)
    assert os.readlink(f"/proc/{cat}/fd/0") == "/dev/pts/0"
    # the caller's terminal is raw while the relay runs (the sandbox's pty does the echo)
    during = term.modes()
    assert not during[3] & (termios.ECHO | termios.ICANON | termios.ISIG), during
    term.type(b"hello there\n")
    # the pty's echo, then cat's copy: both through the relay, CR LF from the sandbox's pty
    term.read_until(rb"hello there\r\nhello there\r\n")
    term.type(b"\x04")  # ^D: EOF for cat, from the sandbox's line discipline
    term.read_until(rb"cat-ended\r\n")
    assert term.wait() == 0
    assert term.modes() == before, "the caller's terminal modes were not restored"
    assert _report(rep)["exit_code"] == 0


def test_stty_size_sees_the_window_size_and_a_resize_once(flue, term):
    script = ('stty size; trap "echo winch; stty size" WINCH; echo ready; '
              "while :; do sleep 0.05; done")
    argv, rep, _ = _flue_argv(flue, ["sh", "-c", script])
    term.spawn(argv, flue.env(), flue.s.scratch)
    term.read_until(rb"30 100\r\nready\r\n")
    termios.tcsetwinsize(term.master, (40, 120))  # the kernel sends flue SIGWINCH
    term.read_until(rb"winch\r\n40 120\r\n")
    time.sleep(0.5)
    term.read()
    assert term.out.count(b"winch") == 0, f"the change came more than once: {term.out!r}"
    term.type(b"\x03")  # ^C: SIGINT for the sandbox's foreground job, through its pty
    assert term.wait() == 130
    r = _report(rep)
    assert r["signal"] == signal.SIGINT and r["exit_code"] == 130, r


def test_output_reaches_the_terminal_byte_for_byte(flue, term):
    code = ("import sys, tty; tty.setraw(1); sys.stdout.buffer.write(bytes(range(256)) "
            "+ b'\\x1b]0;title\\x07\\x1b[2J' + bytes(range(256))); sys.stdout.flush()")
    argv, _rep, _ = _flue_argv(flue, ["python3", "-c", code])
    term.spawn(argv, flue.env(), flue.s.scratch)
    assert term.wait() == 0
    want = bytes(range(256)) + b"\x1b]0;title\x07\x1b[2J" + bytes(range(256))
    assert want in term.out, term.out[-600:]


@pytest.mark.parametrize("case", ["exit 7", "kill -TERM $$", "not-a-command",
                                  "sigterm to flue", "timeout"])
def test_exit_codes_and_signals_are_unchanged_and_modes_restored(flue, term, case):
    before = term.modes()
    args: list[str] = []
    command = ["sh", "-c", case]
    want = {"exit 7": 7, "kill -TERM $$": 143, "not-a-command": 127,
            "sigterm to flue": 143, "timeout": 137}[case]
    if case == "not-a-command":
        command = ["not-a-command"]
    elif case == "sigterm to flue":
        command = ["sh", "-c", "echo up; sleep 30"]
    elif case == "timeout":
        command = ["sh", "-c", "echo up; sleep 30"]
        args = ["--timeout", "1"]
    argv, rep, _ = _flue_argv(flue, command, *args)
    term.spawn(argv, flue.env(), flue.s.scratch)
    if case == "sigterm to flue":
        term.read_until(rb"up\r\n")
        os.kill(term.proc.pid, signal.SIGTERM)
    assert term.wait() == want, term.out
    assert term.modes() == before, f"{case}: the caller's terminal modes were not restored"
    assert _report(rep)["exit_code"] == want


def test_a_hangup_of_the_terminal_is_forwarded_and_the_report_still_written(flue, term):
    """The terminal goes away under a running flue (a dropped ssh session, a killed tmux):
    flue, its controlling process, gets SIGHUP and forwards it. Its `flue:` line then has
    nowhere to go (EIO on the hung-up terminal), which must cost neither the report nor the
    exit code, nor leave anything behind."""
    argv, rep, dlg = _flue_argv(flue, ["sh", "-c", "echo up; sleep 30"])
    term.spawn(argv, flue.env(), flue.s.scratch)
    term.read_until(rb"up\r\n")
    for name in ("slave", "master"):  # closing the master hangs the terminal up
        os.close(getattr(term, name))
        setattr(term, name, -1)
    assert term.proc is not None
    assert term.proc.wait(timeout=60) == 128 + signal.SIGHUP
    report = _report(rep)
    assert report["signal"] == signal.SIGHUP and "SIGHUP" in report["message"], report
    left = dlg.leftovers() if dlg else flue.s.root_leftovers(term.proc.pid)
    assert not left, left


# --------------------------------------------------------------------------- stdio choices


def test_pipes_are_passed_as_they_are_and_tty_forces_a_pty(flue):
    r = flue.run(["sh", "-c", "readlink /proc/self/fd/0 /proc/self/fd/1; tty || true"],
                 input="")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].startswith("pipe:") and lines[1].startswith("pipe:"), r
    assert lines[2] == "not a tty", r
    r = flue.run(["sh", "-c", "tty; cat; echo end"], "--tty", input="piped in\n")
    assert r.returncode == 0, r
    # the pty's line discipline: CR LF; the piped input echoed (as it arrives) and read by
    # cat, then the pipe's end is EOF inside
    assert "/dev/pts/0\r\n" in r.stdout, r
    assert r.stdout.count("piped in\r\n") == 2 and r.stdout.endswith("end\r\n"), r


def test_no_tty_passes_the_terminal_itself(flue, term):
    argv, _rep, _ = _flue_argv(flue, ["sh", "-c", "echo up; read x; echo got-$x"], "--no-tty")
    term.spawn(argv, flue.env(), flue.s.scratch)
    term.read_until(rb"up")
    sh = _find(term.proc.pid, "sh")
    inside, caller = os.stat(f"/proc/{sh}/fd/0"), os.fstat(term.slave)
    assert (inside.st_dev, inside.st_rdev) == (caller.st_dev, caller.st_rdev)
    term.type(b"y\n")
    term.read_until(rb"got-y")
    assert term.wait() == 0


@pytest.mark.parametrize("closed", [0, 1, 2])
def test_a_closed_std_fd_becomes_dev_null_inside(flue, closed):
    other = 2 if closed == 1 else 1
    code = f"import os; os.write({other}, os.readlink('/proc/self/fd/{closed}').encode())"
    r = flue.run(["python3", "-c", code],
                 wrap=["sh", "-c", f'exec "$@" {closed}>&-', "sh"], stdin=subprocess.DEVNULL)
    out = (r.stderr if other == 2 else r.stdout).strip().splitlines()
    assert r.returncode == 0, r
    assert out and out[-1] == "/dev/null", r


# --------------------------------------------------------------------------- job control


def _shell() -> list[str]:
    if shutil.which("dash"):  # no line editing, and it never resets the terminal's modes
        return ["dash", "-i"]
    return ["bash", "--norc", "--noprofile", "--noediting", "-i"]


class Shell:
    def __init__(self, flue, term: Term) -> None:
        self.t = term
        env = flue.env({"PS1": "PROMPT> ", "ENV": "/dev/null"})
        term.spawn(_shell(), env, flue.s.scratch)
        self.t.read_until(rb"PROMPT> ")

    def run(self, line: str, until: bytes = rb"PROMPT> ") -> bytes:
        self.t.type(line.encode() + b"\n")
        return self.t.read_until(until)

    def modes(self) -> str:
        out = self.run("stty -g").decode()
        return out.splitlines()[1].strip()


def _flue_line(flue, command: list[str], ws: Path, *args: str) -> tuple[str, Path | None]:
    argv, rep, _ = _flue_argv(flue, command, "--workspace", str(ws), *args)
    return shlex.join(argv), rep


def _wait_for(path: Path, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def _wait_modes(term: Term, raw: bool, want: list | None = None, timeout: float = 20) -> None:
    """Wait until the terminal is raw (``raw``: flue's relay has it, in the foreground), or
    has the modes ``want`` again."""
    end = time.monotonic() + timeout
    while True:
        modes = term.modes()
        if (not modes[3] & (termios.ECHO | termios.ICANON) if raw else modes == want):
            return
        if time.monotonic() > end:
            raise AssertionError(f"the terminal never became {'raw' if raw else want}: {modes}")
        time.sleep(0.02)


def _ws(flue) -> Path:
    return flue.tmpdir("ws", owner=NOBODY if flue.mode == "root" else None)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_backgrounded_flue_run_takes_no_keystrokes(flue, term, loop):
    ws = _ws(flue)
    sh = Shell(flue, term)
    before = sh.modes()
    line, rep = _flue_line(flue, ["sh", "-c", "cat > /work/keys"], ws, *_loop_args(flue, loop))
    sh.run(line + " &")
    _wait_for(ws / "keys")
    time.sleep(0.5)  # the relay is up and has looked at the terminal
    assert b"typed-42" in sh.run("echo typed-$((6*7))")  # the shell got it, not the sandbox
    assert b"still-6" in sh.run("echo still-$((2*3))")
    assert sh.modes() == before, "a background flue changed the terminal's modes"
    assert (ws / "keys").read_text() == "", "keystrokes for the shell went into the sandbox"
    # in the foreground it does relay: what is typed now is the sandbox's
    term.type(b"fg\n")
    _wait_modes(term, raw=True)  # in the foreground, flue's relay has the terminal
    term.type(b"to-sandbox\n")
    term.read_until(rb"to-sandbox\r\n")
    term.type(b"\x04")
    term.read_until(rb"PROMPT> ")
    assert (ws / "keys").read_text() == "to-sandbox\n"
    assert b"\n0\r\n" in sh.run("echo $?")
    assert sh.modes() == before, "the terminal's modes were not restored"
    assert _report(rep)["exit_code"] == 0


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stopped_flue_run_gives_the_terminal_back_and_takes_it_again(flue, term, loop):
    ws = _ws(flue)
    sh = Shell(flue, term)
    before = sh.modes()
    line, rep = _flue_line(flue, ["sh", "-c", "cat > /work/keys"], ws, *_loop_args(flue, loop))
    term.type(line.encode() + b"\n")
    _wait_for(ws / "keys")
    _wait_modes(term, raw=True)
    term.type(b"first\n")
    term.read_until(rb"first\r\n")
    flue_pid = next(p for p in _descendants(term.proc.pid) if _parent(p) == term.proc.pid)
    # ^Z is a byte in raw mode (it goes to the sandbox); flue itself stops on SIGTSTP
    os.kill(flue_pid, signal.SIGTSTP)
    term.read_until(rb"PROMPT> ")
    assert sh.modes() == before, "flue stopped without restoring the terminal's modes"
    assert b"typed-42" in sh.run("echo typed-$((6*7))")
    sh.run("bg")
    time.sleep(0.5)
    assert b"still-6" in sh.run("echo still-$((2*3))")
    assert (ws / "keys").read_text() == "first\n", "input for the shell went into the sandbox"
    term.type(b"fg\n")
    _wait_modes(term, raw=True)
    term.type(b"second\n")
    term.read_until(rb"second\r\n")
    term.type(b"\x04")
    term.read_until(rb"PROMPT> ")
    assert (ws / "keys").read_text() == "first\nsecond\n"
    assert sh.modes() == before
    assert _report(rep)["exit_code"] == 0



def test_after_an_uncatchable_stop_and_bg_the_terminal_gets_its_modes_back(flue, term):
    """SIGSTOP leaves the terminal raw (flue cannot catch it) and a shell such as dash does
    not reset it for a stopped job: once continued in the background, flue sees its own
    modes still there and puts the caller's back."""
    ws = _ws(flue)
    sh = Shell(flue, term)
    before = sh.modes()
    cooked = term.modes()
    line, rep = _flue_line(flue, ["sh", "-c", "cat > /work/keys"], ws)
    term.type(line.encode() + b"\n")
    _wait_for(ws / "keys")
    _wait_modes(term, raw=True)
    flue_pid = next(p for p in _descendants(term.proc.pid) if _parent(p) == term.proc.pid)
    os.kill(flue_pid, signal.SIGSTOP)
    term.read_until(rb"PROMPT> ")
    term.type(b"bg\n")
    _wait_modes(term, raw=False, want=cooked)  # continued, flue puts the caller's back
    term.read()
    assert sh.modes() == before, "the terminal was left in flue's modes"
    assert b"typed-42" in sh.run("echo typed-$((6*7))")
    assert (ws / "keys").read_text() == ""
    term.type(b"fg\n")
    _wait_modes(term, raw=True)
    term.type(b"\x04")
    term.read_until(rb"PROMPT> ")
    assert sh.modes() == before
    assert _report(rep)["exit_code"] == 0
