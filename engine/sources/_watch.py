"""The file watcher's helper process: ``python -m engine.sources._watch FD``.

The supervisor starts it with ``subprocess`` (never a fork of a possibly multi-threaded
supervisor) and, when the sandbox's main process is about to exec, sends it over the
SEQPACKET socket ``FD`` the sandbox's user and mount namespaces and its root directory
(``/proc/PID/ns/user``, ``/proc/PID/ns/mnt``, ``/proc/PID/root``, opened by the supervisor).
The helper joins both namespaces (``setns``) and ``chroot``s into that root: there, ``/work``
and ``/tmp`` mean what they mean to the sandbox, and an absolute symlink resolves inside it,
never against the host. On top of that it resolves no symlink at all: every directory is
opened with ``openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)`` below ``/work``'s or
``/tmp``'s own fd, every stat is an ``fstatat(AT_SYMLINK_NOFOLLOW)`` in such a directory, and
each inotify watch is added on ``"."`` after ``fchdir`` to a directory opened that way (an
inotify watch takes a path, and this one can name nothing else). A symlink in the workspace
is a file entry, whatever it points to; ``ws/u -> /usr`` adds no watch.

What it writes on stdout, one JSON object a line: ``{"t": "ready"}`` once the watches exist
and the first snapshot is taken (the supervisor answers the exec only then), then
``{"t": "fc", "c": added|modified|deleted, "p": path, "s": size, "d": is_dir}`` for each change,
``{"t": "note", "msg": ...}`` when it watches less than everything, and at the end (the
supervisor sent ``stop``, or closed the socket) the final reconcile's changes,
``{"t": "manifest", "e": [[path, size, mode], ...]}`` of the workspace and ``{"t": "done"}``.
The mount namespace stays alive while the helper is in it, so the manifest is read after the
sandbox has ended.

The rules are those ``files.py`` promises: every change once, with the right kind; inotify
events are debounced into batches and each batch's paths are statted after it, so a file
written in pieces is one ``added``; a directory created and filled at once is scanned when
its watch is added, so nothing in it is missed; a file made and removed within one batch is
reported as added, then deleted.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import stat
import struct
import sys
import time
from typing import Any

from engine._linux import libc

MAX_MANIFEST = 20_000  # entries in the exit manifest
MAX_DEPTH = 256  # levels below /work (or /tmp) that are watched, scanned and listed
MAX_WATCHES = 8192  # beyond this, changes below the rest come from periodic scans
# a batch ends once quiet for STEP, at most DEBOUNCE after its first event; while a file in it
# is still open for writing (no IN_CLOSE_WRITE since its creation or last write), it waits for
# the close up to HOLD, so a file written in pieces is one change with its final size
DEBOUNCE, STEP, HOLD = 0.06, 0.02, 0.5
RECONCILE_AT = (0.05, 0.25, 1.0)  # after ready: scans that add what the watches missed
PARTIAL_SCAN = 1.0  # period of the full comparison when not everything is watched
MASK = (libc.IN_CREATE | libc.IN_DELETE | libc.IN_MODIFY | libc.IN_ATTRIB | libc.IN_CLOSE_WRITE
        | libc.IN_MOVED_FROM | libc.IN_MOVED_TO | libc.IN_ONLYDIR | libc.IN_DONT_FOLLOW
        | libc.IN_EXCL_UNLINK)
_EVENT = struct.Struct("iIII")
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_NOFOLLOW_BENEATH = libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_BENEATH

# per path in a batch: what inotify said about it
CREATED, DELETED, CHANGED, MOVED = 1, 2, 4, 8


def _openat2_works() -> bool:
    try:
        os.close(libc.openat2(-100, "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                              libc.RESOLVE_NO_SYMLINKS))
        return True
    except OSError as err:
        return err.errno != errno.ENOSYS


class Watch:
    def __init__(self, out: int, dirs: list[str]) -> None:
        self.out = out
        self.dirs = dirs  # inside the sandbox, e.g. ["/work", "/tmp"]
        self.workspace = dirs[0] if dirs else "/work"
        self.bases: dict[str, int] = {}  # dir -> O_DIRECTORY fd
        self.known: dict[str, tuple[bool, int]] = {}  # path -> (is_dir, size)
        self.mtimes: dict[str, int] = {}
        self.wds: dict[int, str] = {}  # watch descriptor -> directory path
        self.ino = libc.inotify_init1(libc.IN_NONBLOCK | libc.IN_CLOEXEC)
        self.partial = ""  # why not everything is watched, once said
        self.overflow = False
        self.writing: set[str] = set()  # files written and not closed yet
        self.openat2 = _openat2_works()

    # --- output ----------------------------------------------------------------------------

    def send(self, rec: dict[str, Any]) -> None:
        data = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        while data:
            try:
                n = os.write(self.out, data)
            except InterruptedError:
                continue
            data = data[n:]

    def emit(self, change: str, path: str, size: int | None, is_dir: bool) -> None:
        self.send({"t": "fc", "c": change, "p": path, "s": size, "d": is_dir})

    def note(self, why: str) -> None:
        if not self.partial:
            self.partial = why
            self.send({"t": "note", "msg": why})

    # --- symlink-free path operations --------------------------------------------------------

    def _split(self, path: str) -> tuple[int, str] | None:
        """The base fd holding ``path`` and the path relative to it ("." for the base)."""
        for d, fd in self.bases.items():
            if path == d:
                return fd, "."
            if path.startswith(d + "/"):
                return fd, path[len(d) + 1:]
        return None

    def _base_of(self, path: str) -> int:
        """The number of slashes in the base directory holding ``path``."""
        for d in self.bases:
            if path == d or path.startswith(d + "/"):
                return d.count("/")
        return path.count("/")

    def _open(self, path: str, flags: int) -> int:
        where = self._split(path)
        if where is None:
            raise OSError(errno.ENOENT, path)
        base, rel = where
        flags |= os.O_CLOEXEC | os.O_NOFOLLOW
        if self.openat2:
            return libc.openat2(base, rel, flags, 0, _NOFOLLOW_BENEATH)
        # pre-5.6 kernel: one component at a time, never following a symlink
        fd = os.dup(base)
        try:
            for part in rel.split("/"):
                if part in ("", "."):
                    continue
                if part == "..":
                    raise OSError(errno.EXDEV, path)
                nfd = os.open(part, os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | _O_PATH,
                              dir_fd=fd)
                os.close(fd)
                fd = nfd
            nfd = os.open(".", flags, dir_fd=fd)
        finally:
            os.close(fd)
        return nfd

    def lstat(self, path: str) -> os.stat_result | None:
        parent, _, name = path.rpartition("/")
        try:
            if path in self.bases:
                return os.fstat(self.bases[path])
            pfd = self._open(parent, _O_PATH | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            return os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(pfd)

    def _add_watch(self, fd: int, path: str) -> None:
        if len(self.wds) >= MAX_WATCHES:
            self.note(f"more than {MAX_WATCHES} directories: changes below the rest are found "
                      "by periodic scans")
            return
        try:
            os.fchdir(fd)
            wd = libc.inotify_add_watch(self.ino, ".", MASK)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                self.note("the inotify watch limit is reached: changes below the rest are "
                          "found by periodic scans")
            return
        self.wds[wd] = path

    def scan(self, top: str, *, emit: bool, record: bool = True,
             watch: bool = True) -> dict[str, os.stat_result]:
        """Walk ``top`` (no symlink followed), adding watches (``watch``) and recording what
        was not known (``record``; reported when ``emit``). Returns what it saw, path -> stat."""
        seen: dict[str, os.stat_result] = {}
        base = self._base_of(top)
        todo = [top]
        while todo:
            d = todo.pop()
            try:
                fd = self._open(d, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                continue
            try:
                if watch:
                    self._add_watch(fd, d)
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name)
                subdirs = []
                for e in entries:
                    p = f"{d}/{e.name}"
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    seen[p] = st
                    is_dir = stat.S_ISDIR(st.st_mode)
                    if record and p not in self.known:
                        self.known[p] = (is_dir, 0 if is_dir else st.st_size)
                        self.mtimes[p] = st.st_mtime_ns
                        if emit:
                            self.emit("added", p, 0 if is_dir else st.st_size, is_dir)
                    if is_dir and p.count("/") - base < MAX_DEPTH:
                        subdirs.append(p)
                todo.extend(reversed(subdirs))  # depth first, in name order
            except OSError:
                pass
            finally:
                os.close(fd)
        return seen

    # --- state -----------------------------------------------------------------------------

    def seen(self, path: str, st: os.stat_result) -> None:
        is_dir = stat.S_ISDIR(st.st_mode)
        size = 0 if is_dir else st.st_size
        prev = self.known.get(path)
        prev_mtime = self.mtimes.get(path)
        self.known[path] = (is_dir, size)
        self.mtimes[path] = st.st_mtime_ns
        if prev is None:
            self.emit("added", path, size, is_dir)
        elif not is_dir and (prev[1] != size or prev_mtime != st.st_mtime_ns):
            self.emit("modified", path, size, is_dir)

    def forget(self, path: str) -> None:
        """``path`` is gone: a directory's subtree first, then itself."""
        if self.known.get(path, (True, 0))[0]:  # a directory (or unknown): what was below it
            for sub in sorted((k for k in self.known if k.startswith(path + "/")), reverse=True):
                self.emit("deleted", sub, None, self.known.pop(sub)[0])
                self.mtimes.pop(sub, None)
        if path in self.known:
            self.emit("deleted", path, None, self.known.pop(path)[0])
            self.mtimes.pop(path, None)

    def ensure_parents(self, path: str) -> None:
        parts = path.split("/")
        for i in range(2, len(parts)):
            parent = "/".join(parts[:i])
            if not parent or parent in self.bases or parent in self.known:
                continue
            if self._split(parent) is None:
                continue
            st = self.lstat(parent)
            if st is not None:
                self.seen(parent, st)

    def batch(self, changes: dict[str, int]) -> None:
        stats = {p: self.lstat(p) for p in changes}
        gone = []
        for path in sorted(changes):  # parents before children
            st = stats[path]
            if st is None:
                gone.append(path)
                continue
            self.ensure_parents(path)
            self.seen(path, st)
            if stat.S_ISDIR(st.st_mode):
                self.scan(path, emit=True)
        moved = []
        for path in sorted(gone, reverse=True):  # children before parents
            if path in self.known:
                if self.known[path][0] and changes[path] & MOVED:
                    moved.append(path)
                self.forget(path)
            elif changes[path] & (CREATED | DELETED):
                # made and removed within one batch: it existed, say so
                self.emit("added", path, None, False)
                self.emit("deleted", path, None, False)
        if moved:
            self._drop_stale_watches(moved)

    def _drop_stale_watches(self, moved: list[str]) -> None:
        """Watches left on directories moved away from ``moved``: where the new place is
        watched, scanning it re-labelled the same watch; the rest are removed."""
        for wd, p in list(self.wds.items()):
            if any(p == g or p.startswith(g + "/") for g in moved):
                del self.wds[wd]
                try:
                    libc.inotify_rm_watch(self.ino, wd)
                except OSError:
                    pass

    def discover(self, changes: dict[str, int]) -> None:
        """Add to ``changes`` what is there but neither known nor in ``changes`` yet."""
        for top in self.bases:
            for path in self.scan(top, emit=False, record=False):
                if path not in self.known and path not in changes:
                    changes[path] = CREATED

    def compare(self, tops: list[str], *, watch: bool = True) -> None:
        """Compare what we know below ``tops`` with what is there now: added, modified,
        deleted."""
        now: dict[str, os.stat_result] = {}
        for top in tops:
            if top in self.bases:
                now.update(self.scan(top, emit=False, record=False, watch=watch))
        for path in sorted(now):  # parents first
            self.seen(path, now[path])
        for path in sorted((p for p in self.known if p not in now
                            and any(p.startswith(t + "/") for t in tops)), reverse=True):
            self.emit("deleted", path, None, self.known.pop(path)[0])
            self.mtimes.pop(path, None)

    # --- inotify -----------------------------------------------------------------------------

    def read_events(self, changes: dict[str, int]) -> bool:
        """Read what inotify has queued into ``changes``; False when nothing was there."""
        got = False
        while True:
            try:
                buf = os.read(self.ino, 65536)
            except BlockingIOError:
                return got
            except InterruptedError:
                continue
            got = True
            off = 0
            while off + _EVENT.size <= len(buf):
                wd, mask, _cookie, ln = _EVENT.unpack_from(buf, off)
                raw = buf[off + _EVENT.size: off + _EVENT.size + ln].rstrip(b"\0")
                off += _EVENT.size + ln
                if mask & libc.IN_Q_OVERFLOW:
                    self.overflow = True
                    continue
                if mask & libc.IN_IGNORED:
                    self.wds.pop(wd, None)
                    continue
                d = self.wds.get(wd)
                if d is None or not raw:
                    continue
                path = f"{d}/{os.fsdecode(raw)}"
                if mask & libc.IN_CLOSE_WRITE or mask & (libc.IN_DELETE | libc.IN_MOVED_FROM):
                    self.writing.discard(path)
                elif mask & libc.IN_MODIFY or (mask & libc.IN_CREATE
                                               and not mask & libc.IN_ISDIR):
                    self.writing.add(path)
                kind = (CREATED if mask & (libc.IN_CREATE | libc.IN_MOVED_TO)
                        else DELETED if mask & libc.IN_DELETE
                        else DELETED | MOVED if mask & libc.IN_MOVED_FROM
                        else CHANGED)
                changes[path] = changes.get(path, 0) | kind


def _join(ns_user: int, ns_mnt: int, root: int) -> str:
    """Enter the sandbox's user and mount namespaces and its root. Returns "" or why not."""
    try:
        libc.setns(ns_user, libc.CLONE_NEWUSER)
        libc.setns(ns_mnt, libc.CLONE_NEWNS)
        os.fchdir(root)
        os.chroot(".")
        os.chdir("/")
        return ""
    except OSError as err:
        return str(err)


def _open_base(root: int, d: str, openat2: bool) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
    if openat2:
        return libc.openat2(root, d.lstrip("/"), flags, 0,
                            libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_SYMLINKS)
    fd = os.dup(root)
    for part in [p for p in d.split("/") if p]:
        try:
            nfd = os.open(part, flags, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nfd
    return fd


def serve(sock: socket.socket, out: int) -> int:
    try:
        msg, fds, _flags, _addr = socket.recv_fds(sock, 65536, 8)
    except OSError:
        return 0
    if not msg or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return 0
    req = json.loads(msg)
    ns_user, ns_mnt, root = fds
    why = _join(ns_user, ns_mnt, root)
    os.close(ns_user)
    os.close(ns_mnt)
    w = Watch(out, [str(d) for d in req.get("dirs", ["/work", "/tmp"])])
    if why:
        # still safe (nothing below is resolved through a symlink), but say it
        w.send({"t": "note", "msg": f"file watcher outside the sandbox's namespaces: {why}"})
    for d in w.dirs:
        try:
            w.bases[d] = _open_base(root, d, w.openat2)
        except OSError:
            continue
    os.close(root)
    for d in w.dirs:
        if d in w.bases:
            w.scan(d, emit=False)
    w.send({"t": "ready"})
    return _loop(w, sock)


def _loop(w: Watch, sock: socket.socket) -> int:
    t0 = time.monotonic()
    reconciles = [t0 + d for d in RECONCILE_AT]
    next_full = t0 + PARTIAL_SCAN
    changes: dict[str, int] = {}
    first = last = 0.0
    while True:
        now = time.monotonic()
        due = [*reconciles[:1]]
        if w.partial or w.overflow:
            due.append(next_full)
        if changes:
            due.append(_batch_due(w, changes, first, last))
        timeout = max(0.0, min(due) - now) if due else None
        try:
            ready, _, _ = select.select([w.ino, sock.fileno()], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        if sock.fileno() in ready:
            try:
                cmd = sock.recv(64)
            except OSError:
                cmd = b""
            if cmd in (b"", b"stop"):
                return _finish(w, changes)
        if w.ino in ready and w.read_events(changes):
            first = first if first and changes else now
            last = now
        if changes and now >= _batch_due(w, changes, first, last):
            batch, changes, first = changes, {}, 0.0
            w.batch(batch)
        if w.overflow or ((w.partial) and now >= next_full):
            w.overflow = False
            next_full = now + PARTIAL_SCAN
            w.compare(list(w.bases))
        if reconciles and now >= reconciles[0]:
            while reconciles and now >= reconciles[0]:
                reconciles.pop(0)
            # what the watches missed joins the pending batch (and its debounce: a file
            # found while still being written is reported once, when written)
            w.read_events(changes)
            before = len(changes)
            w.discover(changes)
            if len(changes) > before or (changes and not first):
                first = first or now
                last = now


def _batch_due(w: Watch, changes: dict[str, int], first: float, last: float) -> float:
    if w.writing and not w.writing.isdisjoint(changes):
        return first + HOLD
    return min(first + DEBOUNCE, last + STEP)


def _finish(w: Watch, changes: dict[str, int]) -> int:
    """The sandbox has ended: what inotify still holds, a last comparison of the workspace,
    the manifest."""
    w.read_events(changes)
    if changes:
        w.batch(changes)
    w.compare(list(w.bases) if w.overflow or w.partial else [w.workspace], watch=False)
    w.send(_manifest(w))
    w.send({"t": "done"})
    return 0


def _manifest(w: Watch) -> dict[str, Any]:
    """The workspace as it is now: (path, size, mode) sorted by path, at most MAX_MANIFEST
    entries, MAX_DEPTH levels down. Iterative (no recursion limit), one directory open at a
    time (no fd limit), each opened below the workspace's fd with no symlink followed."""
    rec: dict[str, Any] = {"t": "manifest", "e": [], "truncated": "", "max_depth": MAX_DEPTH,
                           "max_entries": MAX_MANIFEST}
    if w.workspace not in w.bases:
        return rec
    entries: list[tuple[str, int, str]] = []
    todo: list[tuple[str, int]] = [(w.workspace, 0)]
    while todo:
        d, depth = todo.pop()
        try:
            dfd = w._open(d, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        subdirs = []
        try:
            with os.scandir(dfd) as it:
                found = sorted(it, key=lambda e: e.name)
            for e in found:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if len(entries) >= MAX_MANIFEST:
                    rec["truncated"] = "entries"
                    break
                is_dir = stat.S_ISDIR(st.st_mode)
                entries.append((f"{d}/{e.name}", 0 if is_dir else st.st_size,
                                stat.filemode(st.st_mode)))
                if is_dir:
                    if depth + 1 >= MAX_DEPTH:
                        rec["truncated"] = rec["truncated"] or "depth"
                    else:
                        subdirs.append((f"{d}/{e.name}", depth + 1))
        except OSError:
            pass
        finally:
            os.close(dfd)
        if rec["truncated"] == "entries":
            break
        todo.extend(reversed(subdirs))
    entries.sort()
    rec["e"] = entries
    return rec


def main(argv: list[str]) -> int:
    import resource

    sock = socket.socket(fileno=int(argv[1]))
    out = sys.stdout.fileno()
    try:  # as many fds as we may: a wide tree is walked one directory at a time anyway
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    try:
        return serve(sock, out)
    except BrokenPipeError:
        return 0  # the supervisor is gone
    except Exception as err:  # noqa: BLE001 - say it, so the report does
        try:
            os.write(out, (json.dumps({"t": "note", "msg": f"the file watcher failed: {err!r}"})
                           + "\n" + json.dumps({"t": "done"}) + "\n").encode())
        except OSError:
            pass
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv))
