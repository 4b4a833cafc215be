"""The sandbox's own terminal, and the relay between it and the caller's.

A sandbox never holds the caller's terminal: with it, a backgrounded or stopped ``flue run``
would keep reading the keyboard (the sandbox's main process calls ``setsid``, so the
terminal's job control, SIGTTIN, never applies to it). When flue's stdin, stdout or stderr is
a terminal, PID 1 opens a pty in the sandbox's own devpts instance, the main process gets its
slave as controlling terminal on those of fds 0-2 that were terminals (job control, ``isatty``,
``ttyname``, the window size and line editing work inside), and the master comes to the
supervisor, which relays on its event loop (MiniLoop or asyncio):

- the caller's terminal is put in raw mode while relaying input (restored on every way out:
  the end, an error, SIGTSTP); keys such as ^C, ^Z and ^\\ are bytes then and reach the
  sandbox's pty, whose line discipline makes them signals for the sandbox's foreground job,
  as with ssh and docker. (The main process is a session leader whose parent is in another
  session, an orphaned process group: the kernel discards ^Z's SIGTSTP for it, so a program
  run directly is not stopped; a shell inside stops its own jobs.) flue itself stops on
  SIGTSTP sent to it (``kill -TSTP``): it restores the terminal first, and resumes on SIGCONT;
- flue reads the terminal only while it is in the terminal's foreground process group: in
  the background (``flue run ... &``, or ``bg``) it stops reading (SIGTTIN is ignored, so a
  read there fails with EIO instead of taking input) and looks again on SIGCONT and every
  0.2 s; the sandbox's output still comes through, as any background job's does (with
  ``stty tostop`` flue is stopped by SIGTTOU, as any job is);
- SIGWINCH sets the pty's window size (the kernel tells the sandbox's foreground job);
- what the sandbox writes reaches the caller's terminal byte for byte: it is the caller's
  own terminal, as with any program they run (flue-tui neutralises output separately).

Non-terminal stdio (pipes, files) is passed to the sandbox directly, as before; ``--tty``
puts all of 0-2 on the pty whatever they are, ``--no-tty`` passes the caller's terminal
itself (the old behaviour, for those who want it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import termios
from dataclasses import dataclass
from typing import Any

LIMIT = 1 << 16  # bytes buffered per direction before the other side is paused
POLL = 0.2  # seconds between foreground checks while in the background
DRAIN_TIMEOUT = 5.0  # the last output at the end


def ensure_std_fds() -> None:
    """Open /dev/null on whichever of fds 0-2 is closed, so that nothing flue opens later
    (its event loop's epoll, a socket) lands there and is handed to the sandbox as stdio."""
    for fd in (0, 1, 2):
        try:
            fcntl.fcntl(fd, fcntl.F_GETFD)
        except OSError as err:
            if err.errno != errno.EBADF:
                continue
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


@dataclass(frozen=True)
class TtyPlan:
    """Which of the sandbox's fds 0-2 are its pty, and where the relay reads and writes."""

    fds: tuple[int, ...]  # the sandbox's fds (of 0-2) that are the pty's slave
    input: int | None  # the caller's fd relayed into the pty (None: nothing is)
    output: int | None  # the caller's fd the pty's output goes to
    term: int | None  # the caller's terminal: its modes, size and job control
    raw: bool  # input comes from a terminal: raw mode on it while relaying
    attrs: tuple[Any, ...] = ()  # the caller's terminal modes, for the pty to start with
    winsize: tuple[int, int] = (0, 0)  # rows, columns


def plan_tty(mode: str = "auto", stdio: tuple[int, int, int] = (0, 1, 2)) -> TtyPlan | None:
    """``auto``: a pty when any of stdio is a terminal, for those that are; ``on``: a pty for
    all three; ``off``: none (the caller's fds are passed as they are)."""
    if mode == "off":
        return None
    ttys = tuple(i for i in range(3) if _isatty(stdio[i]))
    if mode == "auto" and not ttys:
        return None
    fds = (0, 1, 2) if mode == "on" else ttys
    inp = stdio[0] if 0 in fds else None
    out = next((stdio[i] for i in (1, 2) if i in fds), None)
    if out is None and inp is not None and _isatty(inp):
        out = inp  # only stdin is a terminal: the pty's echo goes back to it
    term = next((stdio[i] for i in (0, 1, 2) if i in fds and _isatty(stdio[i])), None)
    attrs: tuple[Any, ...] = ()
    winsize = (0, 0)
    if term is not None:
        try:
            a = termios.tcgetattr(term)
            attrs = (*a[:6], tuple(a[6]))
        except termios.error:
            pass
        try:
            winsize = termios.tcgetwinsize(term)
        except termios.error:
            pass
    return TtyPlan(fds=fds, input=inp, output=out, term=term,
                   raw=inp is not None and _isatty(inp), attrs=attrs, winsize=winsize)


def _raw(attrs: list[Any], full: bool) -> list[Any]:
    """cfmakeraw (``full``), or output processing off only (only output is relayed)."""
    a = [*attrs[:6], list(attrs[6])]
    a[1] &= ~termios.OPOST
    if full:
        a[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                  | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
        a[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG
                  | termios.IEXTEN)
        a[2] &= ~(termios.CSIZE | termios.PARENB)
        a[2] |= termios.CS8
        a[6][termios.VMIN] = 1
        a[6][termios.VTIME] = 0
    return a


def _reopen(fd: int, flags: int) -> tuple[int, bool]:
    """A non-blocking descriptor of our own for the caller's terminal or pipe ``fd`` (setting
    O_NONBLOCK on ``fd`` itself would change it for the caller's shell too). Returns the fd
    and whether it is ours to close; other kinds (files, sockets) are used as they are."""
    try:
        st = os.fstat(fd)
    except OSError:
        return fd, False
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return fd, False
    try:
        new = os.open(f"/proc/self/fd/{fd}", flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return fd, False
    nst = os.fstat(new)
    if (nst.st_dev, nst.st_ino, nst.st_rdev) != (st.st_dev, st.st_ino, st.st_rdev):
        os.close(new)  # not the same terminal (a pty master reopens as a new pty): no
        return fd, False
    return new, True


class TerminalRelay:
    """Relays between the caller's terminal (or pipes, with ``--tty``) and the pty master."""

    def __init__(self, loop: Any, plan: TtyPlan) -> None:
        self.loop = loop
        self.plan = plan
        self.master = -1
        self._in = self._out = -1
        self._own: list[int] = []
        self._to_master = bytearray()
        self._to_out = bytearray()
        self._saved: list[Any] | None = None  # the terminal's modes before ours
        self._applied: list[Any] | None = None  # ours, as the kernel keeps them
        self._reading = False  # the input is registered with the loop
        self._input_done = plan.input is None
        self._last_in = b"\n"
        self._master_reading = False
        self._master_writing = False
        self._out_writing = False
        self._master_done = False
        self._out_dead = False
        self._poll: Any = None
        self._signals: list[int] = []
        self._old_ttin: Any = None
        self.started = False
        self.closed = False

    # --- set-up -----------------------------------------------------------------------------

    def start(self, master: int) -> None:
        if self.closed:
            os.close(master)
            return
        self.started = True
        self.master = master
        os.set_blocking(master, False)
        if self.plan.input is not None:
            self._in, own = _reopen(self.plan.input, os.O_RDONLY)
            if own:
                self._own.append(self._in)
        if self.plan.output is not None:
            self._out, own = _reopen(self.plan.output, os.O_WRONLY)
            if own:
                self._own.append(self._out)
        try:
            # a read of the terminal from the background then fails (EIO) instead of
            # stopping the whole supervisor: we stop reading and look again later
            self._old_ttin = signal.signal(signal.SIGTTIN, signal.SIG_IGN)
            for sig, cb in ((signal.SIGTSTP, self._on_tstp), (signal.SIGCONT, self._check_fg)):
                self.loop.add_signal_handler(sig, cb)
                self._signals.append(sig)
        except (ValueError, RuntimeError, AttributeError):
            pass  # not the main thread: no job control for this relay
        self._read_master(True)
        self._check_fg()

    # --- job control ----------------------------------------------------------------------------

    def _foreground(self) -> bool:
        term = self.plan.term
        if term is None:
            return True
        try:
            return os.tcgetpgrp(term) == os.getpgrp()
        except OSError:
            return True  # not our controlling terminal: job control does not apply to us

    def _check_fg(self) -> None:
        """On start, SIGCONT and the background poll: relay input only in the foreground."""
        if self.closed:
            return
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._foreground():
            self._enter()
            self.resize()  # the size may have changed while we were away
        else:
            self._give_back()
            self._leave(restore=False)
            self._poll = self.loop.call_later(POLL, self._check_fg)

    def _give_back(self) -> None:
        """We are in the background with our modes possibly still on the terminal: after a
        SIGSTOP (which nobody can catch) and ``bg``, a shell that does not reset the
        terminal for a stopped job would be left raw. When the modes are exactly ours
        still, nobody has changed them since: put the caller's back (ignoring SIGTTOU for
        that one call, which would stop us in the background). Modes someone else set are
        left alone."""
        term = self.plan.term
        if term is None or self._applied is None or self._saved is None:
            return
        try:
            if termios.tcgetattr(term) != self._applied:
                return
            old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            try:
                termios.tcsetattr(term, termios.TCSANOW, self._saved)
            finally:
                signal.signal(signal.SIGTTOU, old)
        except (termios.error, ValueError, OSError):
            pass

    def _enter(self) -> None:
        term = self.plan.term
        if term is not None and (self.plan.raw or self.plan.output == term):
            try:
                cur = termios.tcgetattr(term)
                if self._applied is None or cur != self._applied:
                    # first time, or someone (the shell, after a stop) set other modes
                    self._saved = cur
                    termios.tcsetattr(term, termios.TCSADRAIN, _raw(cur, self.plan.raw))
                    self._applied = termios.tcgetattr(term)
            except termios.error:
                pass
        self._read_input(True)

    def _leave(self, restore: bool) -> None:
        self._read_input(False)
        term = self.plan.term
        if restore and term is not None and self._applied is not None and self._saved is not None:
            try:
                termios.tcsetattr(term, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass
        self._applied = None

    def _on_tstp(self) -> None:
        """flue was asked to stop: give the terminal back as it was, stop, and on SIGCONT
        take it again if we are in the foreground."""
        self._leave(restore=self._foreground())
        try:
            import threading

            old = signal.signal(signal.SIGTSTP, signal.SIG_DFL)
            try:
                signal.pthread_kill(threading.get_ident(), signal.SIGTSTP)  # stops here
            finally:
                signal.signal(signal.SIGTSTP, old)
        except (OSError, ValueError):
            pass
        self._check_fg()

    def resize(self) -> None:
        if self.master < 0 or self.plan.term is None:
            return
        try:
            termios.tcsetwinsize(self.master, termios.tcgetwinsize(self.plan.term))
        except termios.error:
            pass

    # --- the two directions ------------------------------------------------------------------

    def _read_input(self, on: bool) -> None:
        on = on and not self._input_done and self._in >= 0 and len(self._to_master) < LIMIT
        if on == self._reading:
            return
        self._reading = on
        if on:
            try:
                self.loop.add_reader(self._in, self._on_input)
            except (OSError, ValueError):
                # not pollable (a regular file with --tty): always ready, read it in turns
                self.loop.call_soon(self._poll_file)
        else:
            self.loop.remove_reader(self._in)

    def _poll_file(self) -> None:
        if self._reading and not self.closed:
            self._on_input()
            if self._reading:
                self.loop.call_soon(self._poll_file)

    def _on_input(self) -> None:
        if not self._foreground():
            self._check_fg()
            return
        try:
            data = os.read(self._in, 4096)
        except BlockingIOError:
            return
        except OSError as err:
            if err.errno == errno.EIO and not self._foreground():
                self._check_fg()  # put in the background between the check and the read
                return
            data = b""  # hung up
        if not data:
            self._read_input(False)
            self._input_done = True
            if not self.plan.raw and self.plan.attrs:  # the end of piped input: EOF inside
                veof = self.plan.attrs[6][termios.VEOF]
                veof = veof if isinstance(veof, bytes) else bytes([veof])
                self._to_master += veof if self._last_in.endswith(b"\n") else veof * 2
                self._write_master()
            elif not self.plan.raw:
                self._to_master += b"\x04" if self._last_in.endswith(b"\n") else b"\x04\x04"
                self._write_master()
            return
        self._last_in = data[-1:]
        self._to_master += data
        self._write_master()

    def _write_master(self) -> None:
        while self._to_master:
            try:
                n = os.write(self.master, self._to_master)
            except BlockingIOError:
                break
            except OSError:
                self._to_master.clear()  # the sandbox has gone
                break
            del self._to_master[:n]
        want = bool(self._to_master)
        if want != self._master_writing:
            self._master_writing = want
            if want:
                self.loop.add_writer(self.master, self._write_master)
            else:
                self.loop.remove_writer(self.master)
        if self._foreground():
            self._read_input(len(self._to_master) < LIMIT)
        else:
            self._read_input(False)

    def _read_master(self, on: bool) -> None:
        on = on and not self._master_done and len(self._to_out) < LIMIT
        if on == self._master_reading:
            return
        self._master_reading = on
        if on:
            self.loop.add_reader(self.master, self._on_master)
        else:
            self.loop.remove_reader(self.master)

    def _on_master(self) -> None:
        try:
            data = os.read(self.master, LIMIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: every slave descriptor is closed (the sandbox has ended)
        if not data:
            self._read_master(False)
            self._master_done = True
            return
        self._to_out += data
        self._write_out()

    def _write_out(self) -> None:
        while self._to_out and not self._out_dead:
            if self._out < 0:
                self._to_out.clear()
                break
            try:
                n = os.write(self._out, self._to_out)
            except BlockingIOError:
                break
            except OSError:
                self._out_dead = True  # a closed pipe, a hung-up terminal: output is dropped
                self._to_out.clear()
                break
            del self._to_out[:n]
        want = bool(self._to_out)
        if want != self._out_writing:
            self._out_writing = want
            if want:
                self.loop.add_writer(self._out, self._write_out)
            else:
                self.loop.remove_writer(self._out)
        self._read_master(len(self._to_out) < LIMIT)

    # --- the end ---------------------------------------------------------------------------

    def close(self) -> None:
        """The sandbox has ended (or flue is failing): the last output, the terminal's modes
        back, everything released. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        for sig in self._signals:
            try:
                self.loop.remove_signal_handler(sig)
            except (ValueError, RuntimeError):
                pass
        self._signals.clear()
        if not self.started:
            return
        self._read_input(False)
        self._read_master(False)
        if self._master_writing:
            self.loop.remove_writer(self.master)
        if self._out_writing:
            self.loop.remove_writer(self._out)
        self._drain()
        if self._foreground():
            self._leave(restore=True)
        if self._old_ttin is not None:
            try:
                signal.signal(signal.SIGTTIN, self._old_ttin)
            except (ValueError, OSError):
                pass
        os.close(self.master)
        self.master = -1
        for fd in self._own:
            os.close(fd)
        self._own.clear()

    def _drain(self) -> None:
        import select
        import time

        while not self._master_done:
            try:
                data = os.read(self.master, LIMIT)
            except OSError:
                break  # EIO (no slave left) or EAGAIN (someone still holds one)
            if not data:
                break
            self._to_out += data
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self._to_out and not self._out_dead and self._out >= 0:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                select.select([], [self._out], [], left)
                n = os.write(self._out, self._to_out)
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                break
            del self._to_out[:n]
