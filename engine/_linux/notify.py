"""seccomp user notification: receive, answer and validate notifications (ioctl on the
listener fd). Raises OSError only."""

from __future__ import annotations

import fcntl
import struct

from engine._record import record

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1

_NOTIF = struct.Struct("=QIIiIQ6Q")  # id, pid, flags, nr, arch, ip, args[6]
_RESP = struct.Struct("=QqiI")  # id, val, error, flags


@record(frozen=True, slots=True)
class Notification:
    id: int
    pid: int  # in the supervisor's PID namespace
    nr: int
    arch: int
    ip: int
    args: tuple[int, int, int, int, int, int]


def receive(fd: int) -> Notification:
    buf = bytearray(_NOTIF.size)
    fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    nid, pid, _flags, nr, arch, ip, a0, a1, a2, a3, a4, a5 = _NOTIF.unpack(buf)
    return Notification(nid, pid, nr, arch, ip, (a0, a1, a2, a3, a4, a5))


def respond_errno(fd: int, nid: int, errno: int) -> None:
    fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, _RESP.pack(nid, 0, -errno, 0))


def respond_continue(fd: int, nid: int) -> None:
    fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, _RESP.pack(nid, 0, 0,
                                                         SECCOMP_USER_NOTIF_FLAG_CONTINUE))


def id_valid(fd: int, nid: int) -> bool:
    try:
        fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, struct.pack("=Q", nid))
        return True
    except OSError:
        return False


def unpack(raw: bytes) -> Notification:
    """A notification from the bytes of a ``struct seccomp_notif`` (as RECV fills it)."""
    nid, pid, _flags, nr, arch, ip, a0, a1, a2, a3, a4, a5 = _NOTIF.unpack(raw)
    return Notification(nid, pid, nr, arch, ip, (a0, a1, a2, a3, a4, a5))
