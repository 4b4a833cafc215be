"""Workspace and /tmp changes inside the sandbox, watched with watchfiles through
/proc/PID/root, and a manifest of the workspace when the sandbox ends.

The watches are put in place in ``snapshot()``, which the supervisor calls while the main
process waits in its exec (seccomp notification): nothing the program does can happen before
they exist, however late the supervisor gets to start the rest of its sources on a busy
machine. (watchfiles' ``awatch`` would only add them once its task first runs; so this uses
its documented Rust backend, ``RustNotify``, whose constructor adds the watches and starts
collecting.) A thread of ours collects the batches from then on and stats their paths at
once, so a busy event loop neither merges batches nor reads sizes late.

watchfiles batches inotify events; a directory created and filled at once may be reported
only by its deepest file, so every added directory is scanned and anything in it we have not
seen yet is reported too. Each path is reported once per change, with the right kind; a file
made and removed within one batch is reported as added, then deleted.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from typing import Any

from engine import events as ev

MAX_MANIFEST = 20_000
DEBOUNCE_MS, STEP_MS, TIMEOUT_MS = 60, 20, 100


def _lstat(host_path: str) -> os.stat_result | None:
    try:
        return os.lstat(host_path)
    except OSError:
        return None


class FileWatcher:
    def __init__(self, sb: Any, main_host_pid: int, dirs: tuple[str, ...]) -> None:
        self.sb = sb
        self.pid = main_host_pid
        self.dirs = dirs  # inside the sandbox, e.g. ("/work", "/tmp")
        self.prefix = f"/proc/{main_host_pid}/root"
        self.known: dict[str, tuple[bool, int]] = {}  # inside path -> (is_dir, size)
        self._mtimes: dict[str, int] = {}
        self._finishing = False  # stop() asks the watch loop for a last collection
        self._notify: Any = None  # watchfiles' RustNotify, from snapshot() on
        self._thread: threading.Thread | None = None
        self._ws_fd: int | None = None
        self._snapshotted = False
        self._handles: list[asyncio.TimerHandle] = []
        self.workspace = dirs[0] if dirs else "/work"

    def snapshot(self) -> None:
        """What is there before the program runs (a bound workspace's files are not news);
        the watches, and the thread that collects their batches, start here too."""
        if self._snapshotted:
            return
        self._snapshotted = True
        self._open_workspace()
        self._watch()
        for d in self.dirs:
            self._scan(d, emit=False)
        if self._notify is not None:
            self._thread = threading.Thread(target=self._pump,
                                            args=(self._notify, asyncio.get_running_loop()),
                                            name=f"flue-files-{self.pid}", daemon=True)
            self._thread.start()

    def _open_workspace(self) -> None:
        if self._ws_fd is not None:
            return
        try:
            # keeps the workspace's mount alive for the exit manifest, even after the sandbox
            # is gone; closed after the manifest
            self._ws_fd = os.open(self.prefix + self.workspace, os.O_RDONLY | os.O_DIRECTORY
                                  | os.O_CLOEXEC)
        except OSError:
            self._ws_fd = None

    def _watch(self) -> None:
        from watchfiles._rust_notify import RustNotify

        paths = [self.prefix + d for d in self.dirs if os.path.isdir(self.prefix + d)]
        if not paths:
            return
        try:
            # (paths, debug, force_polling, poll_delay_ms, recursive, ignore_permission_denied)
            self._notify = RustNotify(paths, False, False, 300, True, True)
        except (OSError, RuntimeError):
            self._notify = None  # the sandbox is already gone, or no inotify: scans only

    def start(self) -> None:
        self.snapshot()  # (late, when the main exec was not observed: --no-observe)
        self._open_workspace()
        loop = asyncio.get_running_loop()
        # the watches take a moment to be in place: reconcile what happened meanwhile
        for delay in (0.05, 0.25, 1.0):
            self._handles.append(loop.call_later(delay, self._reconcile))

    def _reconcile(self) -> None:
        for d in self.dirs:
            self._scan(d, emit=True)

    async def stop(self) -> None:
        for h in self._handles:
            h.cancel()
        self._finishing = True
        if self._thread is not None:
            # the thread's last batches are queued on the loop before this join returns
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 2.0)
            self._thread = None
        self._final_reconcile()
        self._manifest()

    def _final_reconcile(self) -> None:
        """Compare what we know of the workspace with what is there now (through our fd)."""
        fd = self._ws_fd
        if fd is None:
            return
        now: dict[str, os.stat_result] = {}
        try:
            for root, dirs, files, rootfd in os.fwalk(".", dir_fd=fd):
                for name in dirs + files:
                    try:
                        st = os.lstat(name, dir_fd=rootfd)
                    except OSError:
                        continue
                    rel = os.path.normpath(os.path.join(root, name))
                    now[f"{self.workspace}/{rel}"] = st
        except OSError:
            return
        for path in sorted(now):  # parents first; added, or modified since last seen
            self._seen(path, now[path])
        ws = self.workspace + "/"
        for path in sorted((p for p in self.known if p.startswith(ws) and p not in now),
                           reverse=True):
            self._emit("deleted", path, None, self.known.pop(path)[0])

    def _pump(self, notify: Any, loop: asyncio.AbstractEventLoop) -> None:
        """The watching thread: collect a batch, stat its paths at once (what the batch
        saw, not what is there when a busy event loop gets to it), hand it to the loop."""
        try:
            while True:
                # no stop_event: a stopped watch() drops what it collected; instead, once
                # stop() is called (or the main process is gone), one last short watch()
                # hands over what is left
                final = self._finishing or not os.path.exists(f"/proc/{self.pid}/root")
                raw = notify.watch(DEBOUNCE_MS, STEP_MS, STEP_MS if final else TIMEOUT_MS, None)
                if isinstance(raw, set) and raw:
                    stats = {path: _lstat(path) for _change, path in raw}
                    loop.call_soon_threadsafe(self._batch, raw, stats)
                if final:
                    return
        except (RuntimeError, OSError):
            return  # the sandbox's root vanished under the watcher
        finally:
            self._notify = None
            notify.close()

    def _inside(self, host_path: str) -> str:
        return host_path.removeprefix(self.prefix)

    def _stat(self, inside: str) -> os.stat_result | None:
        try:
            return os.lstat(self.prefix + inside)
        except OSError:
            return None

    def _batch(self, batch: set[tuple[Any, str]],
               stats: dict[str, os.stat_result | None] | None = None) -> None:
        import watchfiles

        stats = stats or {}
        items = sorted(((c, self._inside(p), p) for c, p in batch),
                       key=lambda cp: (cp[0] == watchfiles.Change.deleted, cp[1]))
        deleted = sorted((p for c, p, _h in items if c == watchfiles.Change.deleted),
                         reverse=True)
        for change, path, host in items:
            if change == watchfiles.Change.deleted:
                continue
            st = stats[host] if host in stats else self._stat(path)
            if st is None:
                if path in self.known:
                    self._emit("deleted", path, None, self.known.pop(path)[0])
                elif path in deleted:
                    # made and removed within one batch: it existed, say so
                    self._emit("added", path, None, False)
                    self._emit("deleted", path, None, False)
                continue
            self._ensure_parents(path)
            self._seen(path, st)
            if stat.S_ISDIR(st.st_mode):
                self._scan(path, emit=True)
        for path in deleted:
            if self._stat(path) is not None:
                continue
            for sub in sorted((k for k in self.known if k.startswith(path + "/")), reverse=True):
                self._emit("deleted", sub, None, self.known.pop(sub)[0])
            if path in self.known:
                self._emit("deleted", path, None, self.known.pop(path)[0])

    def _ensure_parents(self, path: str) -> None:
        parts = path.split("/")
        for i in range(2, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.dirs or not parent:
                continue
            if parent not in self.known:
                st = self._stat(parent)
                if st is not None:
                    self._seen(parent, st)

    def _seen(self, path: str, st: os.stat_result) -> None:
        is_dir = stat.S_ISDIR(st.st_mode)
        size = 0 if is_dir else st.st_size
        prev = self.known.get(path)
        prev_mtime = self._mtimes.get(path)
        self.known[path] = (is_dir, size)
        self._mtimes[path] = st.st_mtime_ns
        if prev is None:
            self._emit("added", path, size, is_dir)
        elif not is_dir and (prev[1] != size or prev_mtime != st.st_mtime_ns):
            self._emit("modified", path, size, is_dir)

    def _scan(self, inside: str, *, emit: bool) -> None:
        top = self.prefix + inside
        try:
            walker = os.walk(top)
            for root, dirs, files in walker:
                for name in dirs + files:
                    p = self._inside(os.path.join(root, name))
                    if p in self.known:
                        continue
                    st = self._stat(p)
                    if st is None:
                        continue
                    is_dir = stat.S_ISDIR(st.st_mode)
                    self.known[p] = (is_dir, 0 if is_dir else st.st_size)
                    self._mtimes[p] = st.st_mtime_ns
                    if emit:
                        self._emit("added", p, 0 if is_dir else st.st_size, is_dir)
        except OSError:
            pass

    def _emit(self, change: str, path: str, size: int | None, is_dir: bool) -> None:
        self.sb.emit(ev.FileChanged(self.sb.id, self.sb.now(), change=change, path=path,
                                    size=size, is_dir=is_dir))

    def _manifest(self) -> None:
        fd = self._ws_fd
        if fd is None:
            return
        self._ws_fd = None
        entries: list[tuple[str, int, str]] = []
        try:
            for root, dirs, files, rootfd in os.fwalk(".", dir_fd=fd):
                for name in sorted(dirs + files):
                    try:
                        st = os.lstat(name, dir_fd=rootfd)
                    except OSError:
                        continue
                    rel = os.path.normpath(os.path.join(root, name))
                    entries.append((f"{self.workspace}/{rel}", 0 if stat.S_ISDIR(st.st_mode)
                                    else st.st_size, stat.filemode(st.st_mode)))
                    if len(entries) >= MAX_MANIFEST:
                        break
                if len(entries) >= MAX_MANIFEST:
                    break
        except OSError:
            pass
        finally:
            os.close(fd)
        entries.sort()
        self.sb.emit(ev.WorkspaceManifest(self.sb.id, self.sb.now(), entries=tuple(entries)))
