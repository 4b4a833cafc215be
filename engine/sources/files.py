"""Workspace and /tmp changes inside the sandbox, and a manifest of the workspace when the
sandbox ends.

The watching runs in a helper process (``engine/sources/_watch.py``) that joins the sandbox's
user and mount namespaces and its root, where ``/work`` and ``/tmp`` mean what they mean to the
sandbox, and that never resolves a symlink on top of it: a symlink planted in the workspace
(``ws/u -> /usr``, ``ws/hostroot -> /``) is a file entry, neither watched through nor reported
through. The supervisor itself touches no sandbox path: it opens the main process's
namespaces and root (``/proc/PID/ns/user``, ``/proc/PID/ns/mnt``, ``/proc/PID/root``), hands
the fds to the helper and turns the helper's JSON lines into events.

The helper is started as soon as the sandbox is (``prewarm``), so its interpreter is up by the
time it is needed; the watches are put in place in ``snapshot()``, which the supervisor calls
while the main process waits in its exec (seccomp notification): ``snapshot()`` returns once
the helper says the watches exist and the first snapshot is taken, so nothing the program does
can happen before. (``start()`` does it late when the exec was not observed: --no-observe.)

Each path is reported once per change, with the right kind; a directory created and filled at
once is scanned when its watch is added; a file made and removed within one batch is reported
as added, then deleted; reconcile scans after the start and a last comparison of the workspace
at the end catch what inotify could not say. The manifest is read by the helper, which keeps
the sandbox's mount namespace (and so the workspace mount) alive until it is done.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from typing import Any

from engine import events as ev
from engine.sources._watch import MAX_DEPTH, MAX_MANIFEST

__all__ = ["MAX_DEPTH", "MAX_MANIFEST", "FileWatcher"]

READY_TIMEOUT = 10.0  # the helper's start, joining and first snapshot (the exec waits)
STOP_TIMEOUT = 30.0  # the last collection, comparison and manifest (a wide tree on a busy machine)


def _same_ns(fd: int, name: str) -> bool:
    try:
        mine = os.stat(f"/proc/self/ns/{name}")
    except OSError:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


class FileWatcher:
    def __init__(self, sb: Any, main_host_pid: int | None, dirs: tuple[str, ...]) -> None:
        self.sb = sb
        self.pid = main_host_pid
        self.dirs = dirs  # inside the sandbox, e.g. ("/work", "/tmp")
        self._proc: subprocess.Popen[bytes] | None = None
        self._cmd: socket.socket | None = None  # to the helper: the fds, then "stop"
        self._out: int | None = None  # from the helper: JSON lines
        self._buf = b""
        self._snapshotted = False
        self._reading = False
        self._done = False
        self._stopped: Any = None  # a future, while stop() waits for "done"

    # --- the helper ------------------------------------------------------------------------

    def prewarm(self) -> None:
        """Start the helper (it waits for the sandbox's fds); idempotent, best effort."""
        if self._proc is not None or self._done:
            return
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "engine.sources._watch", str(child.fileno())],
                pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                start_new_session=True)  # the terminal's ^C or ^Z is not for it
        except OSError as err:
            parent.close()
            self._fail(f"could not start the file watcher: {err}")
            return
        finally:
            child.close()
        self._cmd = parent
        assert self._proc.stdout is not None
        self._out = os.dup(self._proc.stdout.fileno())
        self._proc.stdout.close()
        os.set_blocking(self._out, False)

    def _fail(self, why: str) -> None:
        self.sb.degraded.append(f"no file events: {why}")
        self.close()

    def _open_sandbox(self) -> list[int]:
        """The main process's user and mount namespaces and root, checked to be the sandbox's
        (not this process's: the pid could have been reused by a host process)."""
        assert self.pid is not None
        fds: list[int] = []
        try:
            for name in ("user", "mnt"):
                fds.append(os.open(f"/proc/{self.pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
                if _same_ns(fds[-1], name):
                    raise OSError(f"process {self.pid} is not in the sandbox")
            fds.append(os.open(f"/proc/{self.pid}/root", os.O_RDONLY | os.O_DIRECTORY
                               | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def snapshot(self) -> None:
        """What is there before the program runs (a bound workspace's files are not news);
        the watches start here too. Returns when the helper is ready (or gave up)."""
        if self._snapshotted:
            return
        self._snapshotted = True
        self.prewarm()
        if self._cmd is None or self.pid is None:
            return
        try:
            fds = self._open_sandbox()
        except OSError as err:
            self._fail(f"the sandbox's namespaces: {err}")
            return
        try:
            socket.send_fds(self._cmd, [json.dumps({"dirs": list(self.dirs)}).encode()], fds)
        except OSError as err:
            self._fail(f"the file watcher: {err}")
            return
        finally:
            for fd in fds:
                os.close(fd)
        if not self._wait_for("ready", READY_TIMEOUT):
            self._fail("the file watcher did not start in time")
            return
        self._reading = True
        self.sb._loop.add_reader(self._out, self._on_out)

    def _wait_for(self, kind: str, timeout: float) -> bool:
        """Read the helper's lines (blocking, bounded) until one of ``kind``."""
        assert self._out is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._out], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self._out, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return False
            if self._feed(chunk, until=kind):
                return True

    def _on_out(self) -> None:
        assert self._out is not None
        for _ in range(16):
            try:
                chunk = os.read(self._out, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._eof()
                return
            self._feed(chunk)

    def _eof(self) -> None:
        if self._out is not None and self._reading:
            self.sb._loop.remove_reader(self._out)
            self._reading = False
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _feed(self, chunk: bytes, until: str = "") -> bool:
        """Handle the complete lines in what has come; True once a line of kind ``until``
        was handled (the rest stays buffered for the next call)."""
        self._buf += chunk
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            t = rec.get("t")
            if t == "fc":
                self.sb.emit(ev.FileChanged(self.sb.id, self.sb.now(), change=str(rec["c"]),
                                            path=str(rec["p"]), size=rec.get("s"),
                                            is_dir=bool(rec.get("d"))))
            elif t == "manifest":
                entries = tuple(tuple(e) for e in rec.get("e", ()))
                self.sb.emit(ev.WorkspaceManifest(
                    self.sb.id, self.sb.now(), entries=entries,
                    truncated=str(rec.get("truncated", "")),
                    max_depth=int(rec.get("max_depth", MAX_DEPTH)),
                    max_entries=int(rec.get("max_entries", MAX_MANIFEST))))
            elif t == "note":
                self.sb.degraded.append(f"file events: {rec.get('msg')}")
            elif t == "done":
                self._done = True
                if self._stopped is not None and not self._stopped.done():
                    self._stopped.set_result(None)
            if until and t == until:
                return True
        return False

    # --- the source interface ------------------------------------------------------------------

    def start(self) -> None:
        self.snapshot()  # (late, when the main exec was not observed: --no-observe)

    async def stop(self) -> None:
        import asyncio

        if self._cmd is not None and self._reading and not self._done:
            self._stopped = asyncio.get_running_loop().create_future()
            try:
                self._cmd.send(b"stop")
            except OSError:
                self._stopped.set_result(None)
            try:
                await asyncio.wait_for(asyncio.shield(self._stopped), STOP_TIMEOUT)
            except TimeoutError:
                self.sb.degraded.append("file events: the watcher did not finish in time")
        self.close()

    def close(self) -> None:
        """Stop the helper and release everything; idempotent."""
        self._done = True
        if self._out is not None:
            if self._reading:
                self.sb._loop.remove_reader(self._out)
                self._reading = False
            os.close(self._out)
            self._out = None
        if self._cmd is not None:
            self._cmd.close()  # EOF: the helper ends
            self._cmd = None
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
