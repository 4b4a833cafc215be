"""Turn a seccomp notification into something a person can read.

Names for socket families and types, clone/unshare and open flags, ioctl requests, ptrace
requests, and the paths of path-taking calls, read from the process's memory through
/proc/PID/mem for display only (never to decide anything). A notification is checked to be
still valid *after* reading, so a recycled pid cannot feed us another process's memory.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from engine._linux import notify

PATH_ARGS: dict[str, tuple[int, ...]] = {
    "open": (0,), "openat": (1,), "openat2": (1,), "creat": (0,), "stat": (0,), "lstat": (0,),
    "newfstatat": (1,), "statx": (1,), "access": (0,), "faccessat": (1,), "faccessat2": (1,),
    "execve": (0,), "execveat": (1,), "mkdir": (0,), "mkdirat": (1,), "unlink": (0,),
    "unlinkat": (1,), "rmdir": (0,), "rename": (0, 1), "renameat": (1, 3), "renameat2": (1, 3),
    "link": (0, 1), "linkat": (1, 3), "symlink": (0, 1), "symlinkat": (0, 2), "chmod": (0,),
    "fchmodat": (1,), "fchmodat2": (1,), "chown": (0,), "lchown": (0,), "fchownat": (1,),
    "mount": (0, 1), "umount2": (0,), "chdir": (0,), "chroot": (0,), "truncate": (0,),
    "readlink": (0,), "readlinkat": (1,), "utimensat": (1,), "utimes": (0,), "mknod": (0,),
    "mknodat": (1,), "pivot_root": (0, 1), "swapon": (0,), "swapoff": (0,), "acct": (0,),
    "getxattr": (0,), "setxattr": (0,), "lgetxattr": (0,), "lsetxattr": (0,),
    "listxattr": (0,), "removexattr": (0,), "statfs": (0,), "inotify_add_watch": (1,),
    "fanotify_mark": (4,), "name_to_handle_at": (1,), "open_tree": (1,), "move_mount": (1, 3),
    "fspick": (1,), "quotactl": (1,),
}
MOUNT_FSTYPE_ARG = 2

CLONE_FLAGS = {
    0x00000100: "CLONE_VM", 0x00000200: "CLONE_FS", 0x00000400: "CLONE_FILES",
    0x00000800: "CLONE_SIGHAND", 0x00001000: "CLONE_PIDFD", 0x00002000: "CLONE_PTRACE",
    0x00004000: "CLONE_VFORK", 0x00008000: "CLONE_PARENT", 0x00010000: "CLONE_THREAD",
    0x00020000: "CLONE_NEWNS", 0x00040000: "CLONE_SYSVSEM", 0x00080000: "CLONE_SETTLS",
    0x00100000: "CLONE_PARENT_SETTID", 0x00200000: "CLONE_CHILD_CLEARTID",
    0x00800000: "CLONE_UNTRACED", 0x01000000: "CLONE_CHILD_SETTID",
    0x02000000: "CLONE_NEWCGROUP", 0x04000000: "CLONE_NEWUTS", 0x08000000: "CLONE_NEWIPC",
    0x10000000: "CLONE_NEWUSER", 0x20000000: "CLONE_NEWPID", 0x40000000: "CLONE_NEWNET",
    0x80000000: "CLONE_IO", 0x00000080: "CLONE_NEWTIME",
}
OPEN_FLAGS = {
    0o100: "O_CREAT", 0o200: "O_EXCL", 0o400: "O_NOCTTY", 0o1000: "O_TRUNC", 0o2000: "O_APPEND",
    0o4000: "O_NONBLOCK", 0o10000: "O_DSYNC", 0o200000: "O_DIRECTORY", 0o400000: "O_NOFOLLOW",
    0o2000000: "O_CLOEXEC", 0o10000000: "O_PATH", 0o20200000: "O_TMPFILE",
}
IOCTLS = {
    0x5401: "TCGETS", 0x5402: "TCSETS", 0x5403: "TCSETSW", 0x5404: "TCSETSF", 0x540B: "TCFLSH",
    0x540E: "TIOCSCTTY", 0x540F: "TIOCGPGRP", 0x5410: "TIOCSPGRP", 0x5412: "TIOCSTI",
    0x5413: "TIOCGWINSZ", 0x5414: "TIOCSWINSZ", 0x541B: "FIONREAD", 0x541C: "TIOCLINUX",
    0x5421: "FIONBIO", 0x5422: "TIOCNOTTY", 0x5451: "FIOCLEX", 0x5450: "FIONCLEX",
    0x8912: "SIOCGIFCONF", 0x8913: "SIOCGIFFLAGS", 0x8914: "SIOCSIFFLAGS",
}
PTRACE = {0: "PTRACE_TRACEME", 1: "PTRACE_PEEKTEXT", 2: "PTRACE_PEEKDATA", 4: "PTRACE_POKETEXT",
          7: "PTRACE_CONT", 8: "PTRACE_KILL", 9: "PTRACE_SINGLESTEP", 12: "PTRACE_GETREGS",
          16: "PTRACE_ATTACH", 17: "PTRACE_DETACH", 0x4200: "PTRACE_SETOPTIONS",
          0x4206: "PTRACE_SEIZE", 0x4207: "PTRACE_INTERRUPT"}
KEYCTL = {0: "KEYCTL_GET_KEYRING_ID", 1: "KEYCTL_JOIN_SESSION_KEYRING", 2: "KEYCTL_UPDATE",
          6: "KEYCTL_CLEAR", 8: "KEYCTL_LINK", 11: "KEYCTL_READ", 14: "KEYCTL_SET_REQKEY_KEYRING"}
MOUNT_FLAGS = {
    0x1: "MS_RDONLY", 0x2: "MS_NOSUID", 0x4: "MS_NODEV", 0x8: "MS_NOEXEC",
    0x10: "MS_SYNCHRONOUS", 0x20: "MS_REMOUNT", 0x40: "MS_MANDLOCK", 0x80: "MS_DIRSYNC",
    0x100: "MS_NOSYMFOLLOW", 0x400: "MS_NOATIME", 0x800: "MS_NODIRATIME", 0x1000: "MS_BIND",
    0x2000: "MS_MOVE", 0x4000: "MS_REC", 0x8000: "MS_SILENT", 0x10000: "MS_POSIXACL",
    0x20000: "MS_UNBINDABLE", 0x40000: "MS_PRIVATE", 0x80000: "MS_SLAVE",
    0x100000: "MS_SHARED", 0x200000: "MS_RELATIME", 0x400000: "MS_KERNMOUNT",
    0x800000: "MS_I_VERSION", 0x1000000: "MS_STRICTATIME", 0x2000000: "MS_LAZYTIME",
}
# the path-taking calls whose paths have names of their own (else path, or path0, path1 ...)
PATH_NAMES: dict[str, tuple[str, ...]] = {
    "mount": ("source", "target"), "pivot_root": ("new_root", "put_old"),
    "rename": ("old", "new"), "renameat": ("old", "new"), "renameat2": ("old", "new"),
    "link": ("old", "new"), "linkat": ("old", "new"), "symlink": ("target", "path"),
    "symlinkat": ("target", "path"), "move_mount": ("from", "to"),
}
SOCK_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM",
              5: "SOCK_SEQPACKET", 10: "SOCK_PACKET"}


def family_name(n: int) -> str:
    try:
        return socket.AddressFamily(n).name
    except ValueError:
        return {16: "AF_NETLINK", 17: "AF_PACKET"}.get(n, f"AF_{n}")


def flag_names(value: int, table: dict[int, str], rest_name: str = "") -> str:
    names = [name for bit, name in sorted(table.items()) if bit and value & bit == bit]
    known = 0
    for bit in table:
        if value & bit == bit:
            known |= bit
    rest = value & ~known
    if rest:
        names.append(hex(rest) if not rest_name else f"{rest_name}={rest}")
    return "|".join(names) or "0"


def decode_args(name: str, args: tuple[int, ...]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    a = args
    if name in ("socket", "socketpair"):
        d["family"] = family_name(a[0] & 0xFFFFFFFF)
        t = a[1] & 0xF
        d["type"] = SOCK_TYPES.get(t, str(t))
        extra = []
        if a[1] & 0o4000:
            extra.append("SOCK_NONBLOCK")
        if a[1] & 0o2000000:
            extra.append("SOCK_CLOEXEC")
        if extra:
            d["type"] += "|" + "|".join(extra)
        d["protocol"] = a[2]
    elif name in ("clone", "unshare"):
        d["flags"] = flag_names(a[0] & ~0xFF if name == "clone" else a[0], CLONE_FLAGS)
    elif name in ("open", "creat"):
        d["flags"] = _open_flags(a[1])
    elif name in ("openat", "openat2"):
        if name == "openat":
            d["flags"] = _open_flags(a[2])
    elif name == "ioctl":
        req = a[1] & 0xFFFFFFFF
        d["fd"] = a[0]
        d["request"] = IOCTLS.get(req, hex(req))
        if a[1] >> 32:
            d["request_high_bits"] = hex(a[1] >> 32)
    elif name == "ptrace":
        d["request"] = PTRACE.get(a[0], str(a[0]))
        d["pid"] = _sint(a[1])
    elif name == "keyctl":
        d["operation"] = KEYCTL.get(a[0], str(a[0]))
    elif name == "kill" or name == "tkill":
        d["pid"], d["signal"] = _sint(a[0]), a[1]
    elif name == "personality":
        d["persona"] = hex(a[0] & 0xFFFFFFFF)
    elif name == "mount":
        d["flags"] = flag_names(a[3] & 0xFFFFFFFF, MOUNT_FLAGS)
    elif name in ("connect", "bind"):
        d["fd"] = a[0]
    return d


def _sint(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _open_flags(v: int) -> str:
    acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(v & 3, "O_ACC3")
    rest = flag_names(v & ~3, OPEN_FLAGS)
    return acc if rest == "0" else f"{acc}|{rest}"


def read_bytes(tid: int, addr: int, size: int, procfs: str = "/proc") -> bytes | None:
    """``size`` bytes of thread ``tid``'s memory at ``addr`` (a syscall's struct argument)."""
    if not addr or size <= 0:
        return None
    try:
        fd = os.open(f"{procfs}/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.pread(fd, size, addr)
    except OSError:
        return None
    finally:
        os.close(fd)


def socket_type(tid: int, fd: int, procfs: str = "/proc") -> int | None:
    """SOCK_STREAM, SOCK_DGRAM ... of thread ``tid``'s fd ``fd`` (a copy taken with
    pidfd_getfd, then closed), or None when it cannot be seen."""
    from engine._linux import libc

    try:
        with open(f"{procfs}/{tid}/status") as f:
            tgid = next(int(ln.split()[1]) for ln in f if ln.startswith("Tgid:"))
        pidfd = libc.pidfd_open(tgid)
    except (OSError, StopIteration, ValueError):
        return None
    try:
        copy = libc.pidfd_getfd(pidfd, fd)
    except OSError:
        return None
    finally:
        os.close(pidfd)
    try:
        sock = socket.socket(fileno=copy)
    except OSError:
        os.close(copy)
        return None
    try:
        return int(sock.type) & 0xF
    finally:
        sock.close()


class Decoder:
    def __init__(self, listener_fd: int, *, procfs: str = "/proc") -> None:
        self.fd = listener_fd
        self.procfs = procfs

    def _status(self, tid: int) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            with open(f"{self.procfs}/{tid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("Name", "Tgid", "NSpid", "NStgid"):
                        out[k] = v.strip()
        except OSError:
            pass
        return out

    def _read_str(self, tid: int, addr: int, limit: int = 4096) -> str | None:
        if not addr:
            return None
        try:
            fd = os.open(f"{self.procfs}/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            out = b""
            while len(out) < limit:
                try:
                    chunk = os.pread(fd, 256, addr + len(out))
                except OSError:
                    break
                if not chunk:
                    break
                nul = chunk.find(b"\0")
                if nul >= 0:
                    out += chunk[:nul]
                    break
                out += chunk
            return out.decode("utf-8", "replace")
        finally:
            os.close(fd)

    def _read_ptrs(self, tid: int, addr: int, limit: int = 256) -> list[int]:
        if not addr:
            return []
        try:
            fd = os.open(f"{self.procfs}/{tid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return []
        out: list[int] = []
        try:
            while len(out) < limit:
                try:
                    raw = os.pread(fd, 8 * 32, addr + 8 * len(out))
                except OSError:
                    break
                if len(raw) < 8:
                    break
                for i in range(0, len(raw) - 7, 8):
                    ptr = int.from_bytes(raw[i:i + 8], "little")
                    if ptr == 0:
                        return out
                    out.append(ptr)
        finally:
            os.close(fd)
        return out

    def exec_args(self, n: notify.Notification, name: str) -> tuple[str, tuple[str, ...]]:
        """The path and argv of an execve/execveat, for display."""
        pi, ai = (0, 1) if name == "execve" else (1, 2)
        path = self._read_str(n.pid, n.args[pi]) or ""
        argv = []
        for ptr in self._read_ptrs(n.pid, n.args[ai], 64):
            s = self._read_str(n.pid, ptr, 1024)
            if s is None:
                break
            argv.append(s)
        return path, tuple(argv)

    def describe(self, n: notify.Notification, name: str) -> dict[str, Any]:
        st = self._status(n.pid)
        info: dict[str, Any] = {"tid": n.pid, "comm": st.get("Name", "")}
        nstgid = st.get("NStgid", "").split()
        info["pid"] = int(nstgid[-1]) if nstgid else 0
        tgid = int(st.get("Tgid", n.pid) or n.pid)
        try:
            info["exe"] = os.readlink(f"{self.procfs}/{tgid}/exe")
        except OSError:
            info["exe"] = ""
        decoded = decode_args(name, n.args)
        paths = PATH_ARGS.get(name, ())
        if paths:
            read: dict[str, Any] = {}
            names = PATH_NAMES.get(name) or (
                ("path",) if len(paths) == 1 else tuple(f"path{i}" for i in paths))
            for idx, key in zip(paths, names, strict=True):
                s = self._read_str(n.pid, n.args[idx])
                if s is not None:
                    read[key] = s
            if name == "mount":
                fst = self._read_str(n.pid, n.args[MOUNT_FSTYPE_ARG])
                if fst:
                    read["fstype"] = fst
            # the memory we read only counts if the notification is still the same call
            if notify.id_valid(self.fd, n.id):
                decoded.update(read)
        info["decoded"] = decoded
        return info
