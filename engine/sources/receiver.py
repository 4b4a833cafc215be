"""A helper process that receives seccomp notifications the moment they are queued.

Why: a task waiting in a notification that the supervisor has not *received* yet is
interruptible. A signal then (a SIGCHLD whose handler lacks SA_RESTART, as in dash) makes its
syscall fail with EINTR: ``fork`` or ``open`` fail for no reason of the program's. Once the
notification is received, ``SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`` (Linux 5.19) lets only a
fatal signal interrupt it. When every path lookup is traced (learn mode, observed paths) the
supervisor is busy reading memory and resolving paths, and a queue builds up: that window
grows from microseconds to milliseconds and a shell script fails in one run out of three.

So in those modes a small single-threaded process does nothing but wait in ``poll`` on the
listener, receive each notification at once, and write its 80 bytes into a pipe the
supervisor reads. The supervisor still decides nothing new: it answers on its own listener
fd, exactly as before. The helper exits when no task is left under the filter (POLLHUP) and
is killed when the sandbox ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from engine._linux import notify

_HELPER = r"""
import fcntl, os, select, sys
fd, out = int(sys.argv[1]), int(sys.argv[2])
RECV = 0xC0502100
size = 80
try:  # Linux 6.6: a notifying task hands its CPU straight to us, so we receive at once
    fcntl.ioctl(fd, 0x40082104, 1)  # NOTIF_SET_FLAGS: SYNC_WAKE_UP (a value, not a pointer)
except OSError:
    pass
os.set_blocking(out, False)
p = select.poll()
p.register(fd, select.POLLIN)
pending = bytearray()  # received, not yet written: never wait on the pipe before receiving
hup = False
while not hup or pending:
    try:
        ready = dict(p.poll())
    except InterruptedError:
        continue
    ev = ready.get(fd, 0)
    if ev and not ev & select.POLLIN:
        hup = True  # POLLHUP: no task is left under the filter
        p.unregister(fd)
    elif ev:
        buf = bytearray(size)  # the kernel wants it zeroed (EINVAL otherwise)
        try:
            fcntl.ioctl(fd, RECV, buf, True)
            pending += buf
        except OSError as err:
            if err.errno != 2:  # ENOENT: the caller died before we got to it
                break
    if pending:
        try:
            n = os.write(out, pending)
            del pending[:n]
        except BlockingIOError:
            pass
        except OSError:
            break
    if pending:
        p.register(out, select.POLLOUT)
    else:
        try:
            p.unregister(out)
        except KeyError:
            pass
"""


class Receiver:
    """The supervisor's side: the pipe the helper writes to, read without blocking."""

    def __init__(self, listener_fd: int) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        self.fd = r
        self.hup = False
        self._buf = b""
        os.set_blocking(r, False)
        try:
            self.proc: Any = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER, str(listener_fd), str(w)],
                pass_fds=(listener_fd, w), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(w)

    def next(self) -> notify.Notification | None:
        """The next notification, or None when none is waiting (``hup`` once the helper
        is gone and everything it sent was read)."""
        size = notify._NOTIF.size
        while len(self._buf) < size:
            try:
                chunk = os.read(self.fd, 64 * size)
            except BlockingIOError:
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self.hup = True
                return None
            self._buf += chunk
        raw, self._buf = self._buf[:size], self._buf[size:]
        return notify.unpack(raw)

    def close(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass
