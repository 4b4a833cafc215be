"""Paths the sandboxed program looks up, seen from the supervisor.

A path-taking syscall that is traced (learn mode, or ``observe_paths``) is reported before it
runs. While the caller waits we read the path from its memory (for display: the call itself
re-reads it), make it absolute against the caller's working directory or directory fd, and
resolve it *inside the sandbox* with ``openat2(RESOLVE_IN_ROOT)`` on ``/proc/PID/root``,
following symlinks one at a time, so a lookup that will fail is known with the place where
it fails: ``/usr/bin/cc`` -> ``/etc/alternatives/cc`` -> missing ``/etc/alternatives``. The
host is then asked whether it has that path (``lexists`` as the supervisor sees it).

A lookup that fails inside on a path the host has is a ``PathMissing`` event (once per
missing place): the bind, ``[filesystem] etc`` entry or /dev node that would make it visible.
Nothing here decides anything: the syscall is always continued.
"""

from __future__ import annotations

import errno as _errno
import os
import stat
from dataclasses import dataclass
from typing import Any

from engine._linux import libc

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
O_CREAT = 0o100
O_ACCMODE = 3
O_NOFOLLOW = 0o400000
O_DIRECTORY = 0o200000
O_TMPFILE = 0o20200000
MAX_SYMLINKS = 40

# syscall -> (dirfd arg or None, path arg, flags arg or None, operation)
LOOKUPS: dict[str, tuple[int | None, int, int | None, str]] = {
    "open": (None, 0, 1, "open"), "openat": (0, 1, 2, "open"), "openat2": (0, 1, None, "open"),
    "creat": (None, 0, None, "create"),
    "execve": (None, 0, None, "exec"), "execveat": (0, 1, None, "exec"),
    "stat": (None, 0, None, "stat"), "lstat": (None, 0, None, "lstat"),
    "newfstatat": (0, 1, 3, "stat"), "statx": (0, 1, 2, "stat"),
    "access": (None, 0, None, "access"), "faccessat": (0, 1, None, "access"),
    "faccessat2": (0, 1, None, "access"),
    "readlink": (None, 0, None, "lstat"), "readlinkat": (0, 1, None, "lstat"),
    "chdir": (None, 0, None, "chdir"),
    "mkdir": (None, 0, None, "create"), "mkdirat": (0, 1, None, "create"),
}
# where the sandbox has its own mounts: a path missing there is the program's business, never
# a host path to bind
SANDBOX_OWNED = ("/proc", "/dev/shm", "/dev/pts", "/dev/mqueue", "/tmp", "/var/tmp", "/work",
                 "/run")
# flue provides no sysfs; binding pieces of it would show host details, and programs cope
NOT_BINDABLE = ("/sys",)
# how much a lookup says the program needs the path: an exec or an open more than a stat
OP_RANK = {"exec": 5, "open-write": 4, "create": 4, "create-dir": 4, "open-read": 3, "chdir": 3,
           "stat": 1, "lstat": 1, "access": 1}


def under(path: str, roots: tuple[str, ...] | list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


@dataclass(frozen=True, slots=True)
class Resolution:
    path: str  # absolute, inside the sandbox (as the program named it, normalised)
    exists: bool
    missing: str = ""  # the first place resolution failed (after symlinks), when not exists
    target: str = ""  # the final target when symlinks were followed


def _norm(path: str) -> str:
    norm = os.path.normpath(path)
    return "/" + norm.lstrip("/")


def resolve_in(rootfd: int, path: str, *, follow: bool = True) -> Resolution:
    """Resolve absolute ``path`` beneath ``rootfd`` (a sandbox's root), symlinks one at a
    time and relative to that root, and say where it fails, if it does."""
    path = _norm(path)
    try:  # the common case in one call: it is there
        flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
        os.close(libc.openat2(rootfd, path, flags, 0, libc.RESOLVE_IN_ROOT))
        return Resolution(path, True)
    except OSError as err:
        if err.errno not in (_errno.ENOENT, _errno.ENOTDIR):
            return Resolution(path, True)
    parent = os.path.dirname(path)
    if parent != path:  # the next most common: a name missing in a directory that is there
        try:
            pfd = libc.openat2(rootfd, parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                               libc.RESOLVE_IN_ROOT)
        except OSError:
            pfd = -1
        if pfd >= 0:
            try:
                os.stat(os.path.basename(path), dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError:
                return Resolution(path, False, missing=path)
            except OSError:
                pass
            finally:
                os.close(pfd)
    todo = [p for p in path.split("/") if p]
    done = "/"
    hops = 0
    while todo:
        comp = todo.pop(0)
        if comp == ".":
            continue
        if comp == "..":
            done = os.path.dirname(done.rstrip("/")) or "/"
            continue
        cand = os.path.join(done, comp)
        last = not todo
        try:
            fd = libc.openat2(rootfd, cand, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, 0,
                              libc.RESOLVE_IN_ROOT)
        except OSError as err:
            if err.errno in (_errno.ENOENT, _errno.ENOTDIR):
                return Resolution(path, False, missing=cand)
            return Resolution(path, True)  # EACCES and friends: it is there
        try:
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode) and (follow or not last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    return Resolution(path, True)  # ELOOP: there, just unusable
                link = _readlink_fd(fd)
                if link.startswith("/"):
                    done = "/"
                todo = [p for p in link.split("/") if p] + todo
                continue
        finally:
            os.close(fd)
        done = cand
    return Resolution(path, True, target=done if done != path else "")  # raced: now there


def _readlink_fd(fd: int) -> str:
    # readlinkat(fd, "") reads the link an O_PATH|O_NOFOLLOW fd stands for
    return os.readlink("", dir_fd=fd)


def host_has(path: str) -> bool:
    try:
        os.lstat(path)
        return True
    except OSError:
        return False


class PathObserver:
    """Resolves the path of each traced lookup inside the sandbox; keeps what it saw.

    ``seen``: path -> {"ops": set, "count": int, "exists": bool} (capped at ``limit``);
    ``missing``: place -> the first lookup that failed there, for places the host has.
    """

    def __init__(self, sb: Any, decoder: Any, *, limit: int = 4096, emit: bool = True,
                 home: str = "") -> None:
        self.sb = sb
        self.decoder = decoder
        self.limit = limit
        self.emit = emit
        self.home = home
        self.seen: dict[str, dict[str, Any]] = {}
        self.dropped = 0  # distinct paths not kept once the cap was reached
        self.missing: dict[str, dict[str, Any]] = {}
        self._roots: dict[int, int] = {}  # host tgid -> O_PATH fd of its /proc/PID/root
        self.lookups = 0

    def close(self) -> None:
        for fd in self._roots.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._roots.clear()

    def _root(self, tid: int) -> int | None:
        # every process of a sandbox shares its root; one fd serves them all, taken from the
        # first caller (still waiting in its syscall, so its pid is its own)
        if self._roots:
            return next(iter(self._roots.values()))
        try:
            fd = os.open(f"/proc/{tid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
        self._roots[tid] = fd
        return fd

    def _base(self, tid: int, dirfd: int | None) -> str | None:
        try:
            if dirfd is None or dirfd == AT_FDCWD:
                return os.readlink(f"/proc/{tid}/cwd")
            return os.readlink(f"/proc/{tid}/fd/{dirfd}")
        except OSError:
            return None

    def on_lookup(self, n: Any, name: str, valid: Any) -> dict[str, Any] | None:
        """A traced path lookup; ``valid()`` says whether the notification still stands.
        Returns what was recorded (for the learn recorder), or None."""
        spec = LOOKUPS.get(name)
        if spec is None:
            return None
        dir_arg, path_arg, flags_arg, op = spec
        raw = self.decoder._read_str(n.pid, n.args[path_arg])
        if raw is None:
            return None
        flags = n.args[flags_arg] & 0xFFFFFFFF if flags_arg is not None else 0
        if name == "openat2":
            from engine.sources.decode import read_bytes

            how = read_bytes(n.pid, n.args[2], 8)
            flags = int.from_bytes(how, "little") if how and len(how) == 8 else 0
        if name in ("newfstatat", "statx") and flags & AT_EMPTY_PATH and raw == "":
            return None  # fstat by fd: no lookup
        if raw == "":
            return None
        dirfd = None
        if dir_arg is not None:
            d = n.args[dir_arg] & 0xFFFFFFFF
            dirfd = d - (1 << 32) if d & 0x80000000 else d
        base = "/" if raw.startswith("/") else self._base(n.pid, dirfd)
        if base is None or not base.startswith("/"):
            return None  # a pipe or socket as dirfd, or the caller is gone
        if not valid():
            return None  # the pid may be another process now: what we read is not its
        write = False
        if op == "open":
            write = bool(flags & O_ACCMODE) or bool(flags & O_CREAT)
            if flags & O_CREAT and (flags & O_TMPFILE) != O_TMPFILE:
                op = "create"
            elif (flags & O_TMPFILE) == O_TMPFILE:
                op = "create-dir"
            elif write:
                op = "open-write"
            else:
                op = "open-read"
        elif op == "create":
            write = True
        path = _norm(os.path.join(base, raw))
        root = self._root(n.pid)
        if root is None:
            return None
        follow = not (op == "lstat" or (name in ("newfstatat", "statx")
                                        and flags & AT_SYMLINK_NOFOLLOW)
                      or (op.startswith("open") and flags & O_NOFOLLOW))
        self.lookups += 1
        if op in ("create", "create-dir"):
            # the file may be missing: it is being made; its directory must exist
            probe = path if op == "create-dir" else (os.path.dirname(path) or "/")
            res = resolve_in(root, probe)
            exists_now = resolve_in(root, path).exists if res.exists else False
        else:
            res = resolve_in(root, path, follow=follow)
            exists_now = res.exists
        rec = self._remember(path, op, exists_now)
        if not res.exists and res.missing:
            self._missing(res, path, op, write, n, name)
        return rec

    def _remember(self, path: str, op: str, exists: bool) -> dict[str, Any]:
        rec = self.seen.get(path)
        if rec is None:
            if len(self.seen) >= self.limit:
                self.dropped += 1
                return {"path": path, "op": op, "exists": exists}
            rec = self.seen[path] = {"ops": set(), "count": 0, "exists": exists}
        rec["ops"].add(op)
        rec["count"] += 1
        if exists:
            rec["exists"] = True
        return {"path": path, "op": op, "exists": exists}

    def _missing(self, res: Resolution, path: str, op: str, write: bool, n: Any,
                 name: str) -> None:
        place = res.missing
        if under(place, SANDBOX_OWNED) or under(place, NOT_BINDABLE):
            return
        if self.home and under(place, (self.home,)):
            return
        if not host_has(place):
            return  # the host has nothing there either: a probe, not a missing mount
        known = self.missing.get(place)
        if known is not None:
            known["count"] += 1
            known["write"] = known["write"] or write
            if path not in known["lookups"] and len(known["lookups"]) < 16:
                known["lookups"].append(path)
            if OP_RANK.get(op, 0) <= OP_RANK.get(known["op"], 0):
                return
            # a stronger lookup of the same place (make stats cc on PATH, then execs it):
            # the record and the stream say so
            st = self.decoder._status(n.pid) if hasattr(self.decoder, "_status") else {}
            ns = st.get("NStgid", "").split()
            known.update(op=op, syscall=name, path=path, comm=str(st.get("Name", "")),
                         pid=int(ns[-1]) if ns else 0)
            if self.emit:
                from engine import events as ev

                self.sb.emit(ev.PathMissing(self.sb.id, self.sb.now(), path=path, place=place,
                                            syscall=name, op=op, write=known["write"],
                                            kind_on_host=known["kind"], pid=known["pid"],
                                            comm=known["comm"]))
            return
        st = self.decoder._status(n.pid) if hasattr(self.decoder, "_status") else {}
        comm = str(st.get("Name", ""))
        ns = st.get("NStgid", "").split()
        pid = int(ns[-1]) if ns else 0
        kind = _kind(place)
        self.missing[place] = {"place": place, "path": path, "syscall": name, "op": op,
                               "write": write, "count": 1, "lookups": [path], "kind": kind,
                               "pid": pid, "comm": comm}
        if self.emit and len(self.missing) <= 256:
            from engine import events as ev

            self.sb.emit(ev.PathMissing(self.sb.id, self.sb.now(), path=path, place=place,
                                        syscall=name, op=op, write=write, kind_on_host=kind,
                                        pid=pid, comm=comm))

    def summary(self) -> list[dict[str, Any]]:
        """The missing places, for the report (``paths_missing``)."""
        return [dict(m) for m in self.missing.values()]


def _kind(path: str) -> str:
    try:
        st = os.lstat(path)
    except OSError:
        return "missing"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "device"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "file"
