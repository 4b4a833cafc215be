"""Thin ctypes wrappers over the libc calls the engine needs.

This is the only module that talks to libc directly. Every function checks the return value
and raises ``OSError(errno, "<call>: <strerror>")``; nothing here knows about profiles.
"""

from __future__ import annotations

import ctypes
import os
import struct

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long

# --- constants -------------------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_NEW_ALL = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
    | CLONE_NEWNET | CLONE_NEWTIME
)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_CHILD_SUBREAPER = 36

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
# Linux 5.19: once the supervisor has received a notification, only a fatal signal interrupts
# the waiting syscall (else a SIGCHLD handler without SA_RESTART makes fork or open fail EINTR)
SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
SECCOMP_RET_USER_NOTIF = 0x7FC00000

_MACHINE = os.uname().machine  # platform.machine(), without importing platform
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "seccomp": 317, "pivot_root": 155, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "close_range": 436, "openat2": 437, "capset": 126,
        "capget": 125, "unshare": 272, "setns": 308, "mount_setattr": 442,
    },
    "aarch64": {
        "seccomp": 277, "pivot_root": 41, "pidfd_open": 434, "pidfd_getfd": 438,
        "pidfd_send_signal": 424, "close_range": 436, "openat2": 437, "capset": 91,
        "capget": 90, "unshare": 97, "setns": 268, "mount_setattr": 442,
    },
}
NR = _SYSCALLS.get(_MACHINE, _SYSCALLS["x86_64"])


def _check(res: int, call: str) -> int:
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")
    return res


def syscall(name: str, *args: int | bytes | None | ctypes._CData) -> int:
    return _check(_libc.syscall(ctypes.c_long(NR[name]), *args), name)


# --- namespaces, mounts ----------------------------------------------------------------

def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    res = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source or fstype} on {target}: {os.strerror(err)}")


def umount2(target: str, flags: int = 0) -> None:
    res = _libc.umount2(_b(target), ctypes.c_int(flags))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
    """mount_setattr(2) (Linux 5.12): with ``AT_RECURSIVE`` it changes a whole mount tree at
    once. Raises OSError(ENOSYS) on older kernels."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    res = _libc.syscall(ctypes.c_long(NR["mount_setattr"]), ctypes.c_int(dirfd), _b(path),
                        ctypes.c_uint(flags), ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr)))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount_setattr {path or dirfd}: {os.strerror(err)}")


def pivot_root(new_root: str, put_old: str) -> None:
    syscall("pivot_root", _b(new_root), _b(put_old))


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


# --- process attributes ------------------------------------------------------------------

def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                    ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
        "prctl",
    )


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def drop_all_capabilities(top: int | None = None) -> None:
    """Empty the bounding and ambient sets, then effective/permitted/inheritable."""
    top = last_cap() if top is None else top
    for cap in range(top + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as err:
            if err.errno != 22:  # EINVAL: capability unknown to this kernel
                raise
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as err:
        if err.errno != 22:
            raise
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(ctypes.c_long(NR["capset"]), ctypes.byref(hdr), data), "capset")


def capabilities(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    _check(_libc.syscall(ctypes.c_long(NR["capget"]), ctypes.byref(hdr), data), "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    try:
        syscall("close_range", ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(0))
    except OSError as err:
        if err.errno != 38:  # ENOSYS on old kernels: fall back
            raise
        os.closerange(first, min(last, 65536) + 1)


# --- pidfds ----------------------------------------------------------------------------------

def pidfd_open(pid: int) -> int:
    return syscall("pidfd_open", ctypes.c_int(pid), ctypes.c_uint(0))


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    return syscall("pidfd_getfd", ctypes.c_int(pidfd), ctypes.c_int(targetfd), ctypes.c_uint(0))


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    syscall("pidfd_send_signal", ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0))


# --- seccomp ---------------------------------------------------------------------------------

class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_load_bpf(program: bytes, flags: int = 0) -> int:
    """Load a classic-BPF seccomp program (8 bytes per instruction). Returns the listener fd
    when ``SECCOMP_FILTER_FLAG_NEW_LISTENER`` is in ``flags``, else 0."""
    if len(program) % 8:
        raise OSError(22, "seccomp: program length is not a multiple of 8")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    return _check(
        _libc.syscall(ctypes.c_long(NR["seccomp"]), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                      ctypes.c_uint(flags), ctypes.byref(prog)),
        "seccomp",
    )


# what flue doctor and a degraded sandbox both say when the kernel lacks user notification
NO_USER_NOTIF_REASON = ("seccomp user notification is not supported by this kernel (Linux >= "
                        "5.0): denials still get their errno but are not observable")


def seccomp_action_available(action: int) -> bool:
    val = ctypes.c_uint32(action)
    res = _libc.syscall(ctypes.c_long(NR["seccomp"]), ctypes.c_uint(SECCOMP_GET_ACTION_AVAIL),
                        ctypes.c_uint(0), ctypes.byref(val))
    return bool(res == 0)


def seccomp_notif_sizes() -> tuple[int, int, int]:
    sizes = (ctypes.c_uint16 * 3)()
    _check(_libc.syscall(ctypes.c_long(NR["seccomp"]), ctypes.c_uint(SECCOMP_GET_NOTIF_SIZES),
                         ctypes.c_uint(0), sizes), "seccomp")
    return sizes[0], sizes[1], sizes[2]


# --- openat2 -----------------------------------------------------------------------------

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = struct.pack("QQQ", flags, mode, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    res = _libc.syscall(ctypes.c_long(NR["openat2"]), ctypes.c_int(dirfd), _b(path), buf,
                        ctypes.c_size_t(len(how)))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"openat2 {path}: {os.strerror(err)}")
    return int(res)


# --- inotify -----------------------------------------------------------------------------

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC


def inotify_init1(flags: int = 0) -> int:
    return _check(_libc.inotify_init1(ctypes.c_int(flags)), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    res = _libc.inotify_add_watch(ctypes.c_int(fd), _b(path), ctypes.c_uint32(mask))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
    return int(res)


def inotify_rm_watch(fd: int, wd: int) -> None:
    _check(_libc.inotify_rm_watch(ctypes.c_int(fd), ctypes.c_int(wd)), "inotify_rm_watch")
