"""A pseudo-terminal for the tests: the sandbox's stdin is the slave, the test holds the
master and reads what the terminal echoed; ``pending_input`` counts bytes waiting in the
terminal's input queue (what TIOCSTI would have injected)."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
from dataclasses import dataclass


@dataclass
class Pty:
    master: int
    slave: int
    slave_name: str

    def pending_input(self) -> int:
        """Bytes in the input queue, typed (or injected) but not yet read by anyone."""
        buf = fcntl.ioctl(self.slave, termios.FIONREAD, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])

    def read_master(self, timeout: float = 0.2) -> bytes:
        """Everything the terminal has output so far (echo included)."""
        out = b""
        while True:
            ready, _, _ = select.select([self.master], [], [], timeout)
            if not ready:
                return out
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: no slave open any more
                return out
            if not chunk:
                return out
            out += chunk
            timeout = 0.05

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def open_pty() -> Pty:
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    # echo on: an injected byte shows on the master; non-canonical: FIONREAD counts every
    # queued byte (in canonical mode only complete lines)
    attrs[3] = (attrs[3] | termios.ECHO) & ~termios.ICANON
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return Pty(master, slave, os.ttyname(slave))
