"""The tmux driver of the end-to-end tests: a program in a 120x40 tmux pane, typed at and read
off the screen like a person would (``test_tmux_e2e.py``, ``test_tmux_unprivileged.py``).

Every session is on a private tmux server (its own ``-L`` socket, no config file), killed at
the end. Nothing here sleeps for a fixed time to let something happen: the pane holds the
command back until its terminal has the window's final size, and every step waits for the
text it expects on the screen (polling ``capture-pane``, with a generous deadline).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

WIDTH, HEIGHT = 120, 40
EXITED = "FLUE-TUI-EXITED"  # printed by the pane's shell when the program ends, with its code
# a bare Escape is reported only once nothing follows it for this long (Textual's ESCDELAY,
# 100 ms): a key sent sooner would make an alt+key of it
ESCAPE_GAP = 0.25


def missing() -> str | None:
    """Why the tmux tests cannot run here, or None."""
    if shutil.which("tmux") is None:
        return "tmux is not installed (apt-get install tmux)"
    return None


class Tmux:
    """One session running ``command`` (a shell command line) in a 120x40 pane."""

    def __init__(self, command: str) -> None:
        self.sock = f"flue-e2e-{uuid.uuid4().hex[:8]}"
        self.name = "tui"
        # the pane's shell holds the command back until its terminal (the pty, as the app
        # will read it) has the window's size: tmux sets it a moment after the session starts
        settle = (f'i=0; until [ "$(stty size)" = "{HEIGHT} {WIDTH}" ] || [ $i -ge 200 ]; '
                  "do sleep 0.05; i=$((i+1)); done")
        # COLUMNS and LINES, when tmux's environment has them, would win over the terminal's
        # own size (shutil.get_terminal_size, which Textual asks, prefers them)
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(WIDTH), "-y", str(HEIGHT),
                   f"unset COLUMNS LINES; {settle}; {command}; echo {EXITED} $?; sleep 60",
                   check=True)

    def _tmux(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=check, timeout=30)

    def keys(self, *keys: str, literal: bool = False) -> None:
        """Send keys in order (tmux key names, or text with ``literal``)."""
        self._tmux("send-keys", "-t", self.name, *(["-l"] if literal else []), *keys,
                   check=True)
        if keys and keys[-1] == "Escape":
            time.sleep(ESCAPE_GAP)  # not a wait for the app: the terminal protocol's gap

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name, check=True).stdout

    def wait_for(self, *needles: str, timeout: float = 40.0) -> str:
        """The screen once it shows every one of ``needles``."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if all(n in text for n in needles):
                return text
            time.sleep(0.1)
        raise AssertionError(f"never saw {needles!r} on screen:\n{text}")

    def wait_gone(self, needle: str, timeout: float = 10.0) -> str:
        """The screen once ``needle`` is no longer on it."""
        deadline = time.monotonic() + timeout
        text = self.screen()
        while needle in text:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} stayed on screen:\n{text}")
            time.sleep(0.1)
            text = self.screen()
        return text

    def wait_exit(self, code: int = 0, timeout: float = 15.0) -> str:
        """The screen once the program has ended with ``code``."""
        return self.wait_for(f"{EXITED} {code}", timeout=timeout)

    def pane_pid(self) -> int:
        return int(self._tmux("display-message", "-p", "-t", self.name, "#{pane_pid}",
                              check=True).stdout)

    def kill(self) -> None:
        path = self._tmux("display-message", "-p", "#{socket_path}").stdout.strip()
        self._tmux("kill-server")
        if path.endswith(self.sock):  # the server leaves its socket file behind
            try:
                os.unlink(path)
            except OSError:
                pass


def allow_ptrace_and_save(t: Tmux) -> None:
    """As a person would: narrow the denial table to ptrace, allow it, save the built-in
    profile (it goes to the user's own profile directory) and wait for the toast."""
    t.keys("/")
    t.wait_for("filter Denials")
    t.keys("ptrace", literal=True)
    t.keys("Enter")
    t.wait_gone("filter Denials")
    t.wait_for("Allow  r Re-run")
    t.keys("a")
    t.wait_for("allow ptrace")
    t.keys("C-s")
    t.wait_for("Save profile default")
    t.keys("Enter")
    t.wait_for("profile saved")
