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
import fcntl, os, select, struct, sys, time
fd, out = int(sys.argv[1]), int(sys.argv[2])
count_only = frozenset(int(x) for x in sys.argv[3].split(",") if x)
RECV, SEND = 0xC0502100, 0xC0182101
NOTIF = struct.Struct("=QIIiIQ6Q")
RESP = struct.Struct("=QqiI")
COUNTS = 0xFFFFFFFFFFFFFFFF  # a record of counts, not a notification
size = NOTIF.size
try:  # Linux 6.6: a notifying task hands its CPU straight to us, so we receive at once
    fcntl.ioctl(fd, 0x40082104, 1)  # NOTIF_SET_FLAGS: SYNC_WAKE_UP (a value, not a pointer)
except OSError:
    pass
os.set_blocking(out, False)
p = select.poll()
p.register(fd, select.POLLIN)
pending = bytearray()  # received, not yet written: never wait on the pipe before receiving
counts = {}
last = time.monotonic()
hup = False

def flush_counts():
    global counts, pending
    for nr, n in counts.items():
        pending += NOTIF.pack(COUNTS, 0, 0, nr, 0, 0, n, 0, 0, 0, 0, 0)
    counts = {}

while not hup or pending:
    try:
        ready = dict(p.poll(100 if counts else -1))
    except InterruptedError:
        continue
    ev = ready.get(fd, 0)
    if ev and not ev & select.POLLIN:
        hup = True  # POLLHUP: no task is left under the filter
        p.unregister(fd)
        flush_counts()
    elif ev:
        buf = bytearray(size)  # the kernel wants it zeroed (EINVAL otherwise)
        try:
            fcntl.ioctl(fd, RECV, buf, True)
        except OSError as err:
            if err.errno != 2:  # ENOENT: the caller died before we got to it
                break
            buf = None
        if buf is not None:
            nid, _pid, _flags, nr = NOTIF.unpack_from(buf)[:4]
            if nr in count_only:
                # nothing to look at: continue it here and count it
                try:
                    fcntl.ioctl(fd, SEND, RESP.pack(nid, 0, 0, 1))
                except OSError:
                    pass
                counts[nr] = counts.get(nr, 0) + 1
            else:
                pending += buf
    now = time.monotonic()
    if counts and (now - last > 0.1 or pending):
        flush_counts()
        last = now
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

COUNTS_ID = 0xFFFFFFFFFFFFFFFF


class Receiver:
    """The supervisor's side: the pipe the helper writes to, read without blocking.

    ``count_only``: syscall numbers the helper continues by itself (nothing to read in the
    caller's memory, nothing to decide): it only counts them, into ``counts``."""

    def __init__(self, listener_fd: int, count_only: frozenset[int] = frozenset()) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        self.fd = r
        self.hup = False
        self.counts: dict[int, int] = {}
        self._buf = b""
        os.set_blocking(r, False)
        try:
            self.proc: Any = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER, str(listener_fd), str(w),
                 ",".join(str(n) for n in sorted(count_only))],
                pass_fds=(listener_fd, w), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(w)

    def next(self) -> notify.Notification | None:
        """The next notification, or None when none is waiting (``hup`` once the helper
        is gone and everything it sent was read)."""
        size = notify._NOTIF.size
        while True:
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
            n = notify.unpack(raw)
            if n.id != COUNTS_ID:
                return n
            self.counts[n.nr] = self.counts.get(n.nr, 0) + n.args[0]

    def close(self) -> None:
        """Wait a moment for the helper's last counts (it ends when no task is left under
        the filter, which is about now), then make sure it is gone."""
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        while not self.hup and self.next() is not None:
            pass  # (what is left is counts: every notification was answered before)
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
