"""Sandboxes supervised in a helper process: the engine host.

A multi-threaded, busy caller (flue-tui: a Textual app drawing frames) makes a poor
supervisor: a denied call waits while the caller draws, stdout blocks when its pipe is full,
and both compete for one GIL. ``EngineHost`` starts ``python -m engine.remote`` once (from
the main thread, like the fork server) and runs every sandbox there, each a ``Sandbox`` on
the host's own asyncio loop; the caller only reads what the host streams back.

The host dies with its caller: a parent-death signal (SIGKILL) when it was started from
the caller's main thread, and EOF on its socket otherwise (then it kills its sandboxes and
waits for their ends). A sandbox whose host is SIGKILLed dies too and leaves no cgroup (its
keeper holds the other end of the sandbox's control socket, see ``engine.sandbox``).

The protocol, over one ``SOCK_STREAM`` socket pair: frames of a 4-byte big-endian length,
a one-byte kind and a body. Caller -> host frames are pickles (``b"p"``: a run request
carries the resolved ``Profile`` and ``Bind`` objects; only flue's own caller writes them).
Host -> caller frames are JSON only (``b"j"``), produced by the host: the sandbox's output
is a string value inside them, so nothing a sandbox prints can make or end a frame, and the
caller never unpickles what comes from the process that reads the sandbox's bytes.

Host -> caller: ``{"t": "events", "run", "events": [Event.to_dict(), ...]}`` batches
(consecutive output of a stream merged into one chunk, the process table latest-wins, sent
only when the previous batch has left the host: a slow reader gets fewer, larger
batches); ``{"t": "ask", "run", "id", ...}`` (an ask-mode request to answer);
``{"t": "result", "run", "result": Result.to_dict()}`` or ``{"t": "error", "run",
"error": {...}}`` last. Caller -> host: ``{"t": "run", "run", "argv", "profile",
"workspace", "binds", "env", "name", "allow_unlimited", "ask"}``, ``{"t": "signal", "run",
"sig"}``, ``{"t": "answer", "run", "id", "decision"}``.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from engine import errors as _errors
from engine.errors import EngineError, LaunchError

HEADER = struct.Struct(">IB")
KIND_JSON = ord("j")
KIND_PICKLE = ord("p")
MAX_FRAME = 64 << 20  # a frame longer than this is a broken peer, never a big batch
INTERVAL = 0.05  # host-side batching
MAX_PENDING_TEXT = 8 << 20  # output held for a reader that does not read: then trimmed


class ProtocolError(Exception):
    pass


def frame(obj: Any, kind: int = KIND_JSON) -> bytes:
    if kind == KIND_JSON:
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode(
            "utf-8", "surrogatepass")
    else:
        body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes is over the limit")
    return HEADER.pack(len(body), kind) + body


class FrameReader:
    """Splits a byte stream into frames; accepts only the kinds given."""

    def __init__(self, kinds: tuple[int, ...]) -> None:
        self.kinds = kinds
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buf += data
        out: list[Any] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= HEADER.size:
            size, kind = HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME or kind not in self.kinds:
                raise ProtocolError(f"bad frame header (size {size}, kind {kind})")
            end = pos + HEADER.size + size
            if len(buf) < end:
                break
            body = bytes(buf[pos + HEADER.size:end])
            pos = end
            if kind == KIND_JSON:
                out.append(json.loads(body.decode("utf-8", "surrogatepass")))
            else:
                out.append(pickle.loads(body))
        del buf[:pos]
        return out


def recv_some(sock: socket.socket) -> bytes | None:
    """What a non-blocking socket has now: None when nothing (yet), b"" at EOF or on an
    error (the peer is gone either way)."""
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def error_to_dict(err: BaseException) -> dict[str, Any]:
    d: dict[str, Any] = {"cls": type(err).__name__, "title": str(err)}
    if isinstance(err, EngineError):
        d.update(title=err.title, detail=err.detail, fix=err.fix,
                 attrs={k: v for k, v in vars(err).items()
                        if k not in ("title", "detail", "fix")
                        and isinstance(v, (str, int, float, bool, type(None)))})
    return d


def error_from_dict(d: dict[str, Any]) -> BaseException:
    """The engine error the host raised, rebuilt (same class, title, detail, fix)."""
    cls = getattr(_errors, str(d.get("cls", "")), None)
    if isinstance(cls, type) and issubclass(cls, EngineError):
        err = cls.__new__(cls)
        EngineError.__init__(err, str(d.get("title", "")), str(d.get("detail", "")),
                             str(d.get("fix", "")))
        for k, v in dict(d.get("attrs") or {}).items():
            setattr(err, k, v)
        return err
    return LaunchError(f"engine host: {d.get('cls')}: {d.get('title')}")


def result_from_dict(d: dict[str, Any]) -> Any:
    import dataclasses

    from engine.sandbox import Result

    names = {f.name for f in dataclasses.fields(Result)}
    return Result(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------- caller side


class RemoteAskRequest:
    """An ask-mode request held in the host, as the caller sees it: the same fields as
    ``engine.sources.ask.AskRequest``; ``answer()`` sends the decision back (from any
    thread). The timeout's fallback to deny stays in the host."""

    def __init__(self, host: EngineHost, run: int, d: dict[str, Any]) -> None:
        self.host = host
        self.run = run
        self.id = int(d.get("id", 0))
        self.key = str(d.get("key", ""))
        self.name = str(d.get("name", ""))
        self.nr = int(d.get("nr", 0))
        self.errno = int(d.get("errno", 0))
        self.decoded: dict[str, Any] = dict(d.get("decoded") or {})
        self.pid = int(d.get("pid", 0))
        self.comm = str(d.get("comm", ""))
        self.exe = str(d.get("exe", ""))
        self.timeout = float(d.get("timeout", 0.0))
        self.decision: str | None = None

    def answer(self, decision: str) -> None:
        from engine.sources.ask import DECISIONS

        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}")
        self.decision = decision
        self.host.send({"t": "answer", "run": self.run, "id": self.id, "decision": decision})

    def __repr__(self) -> str:
        return f"RemoteAskRequest({self.id}, {self.key!r})"


class RunHandlers:
    """What the caller wants told about one run (called on the caller's loop)."""

    def __init__(self, on_events: Callable[[list[Any]], None],
                 on_ask: Callable[[RemoteAskRequest], None] | None = None) -> None:
        self.on_events = on_events
        self.on_ask = on_ask
        self.future: Any = None  # asyncio.Future: the Result, or the engine's error


class EngineHost:
    """The caller's end: starts the host process and talks to it from an asyncio loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[int, RunHandlers] = {}
        self._loop: Any = None
        self._start()

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "engine.remote", str(child.fileno()), str(os.getpid())]
        if threading.current_thread() is threading.main_thread():
            argv.append("--pdeathsig")
        # nothing of the host reaches the caller's terminal (a TUI draws there)
        self.proc = subprocess.Popen(argv, pass_fds=(child.fileno(),), env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=True)
        child.close()
        self.sock = parent
        self._reader = FrameReader((KIND_JSON,))
        self._loop = None
        self._paused = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None and self.sock.fileno() >= 0

    def send(self, msg: dict[str, Any]) -> None:
        import select

        view = memoryview(frame(msg, KIND_PICKLE))
        with self._lock:
            try:
                while view:  # the socket is non-blocking once read from a loop
                    try:
                        view = view[self.sock.send(view):]
                    except BlockingIOError:
                        if not select.select([], [self.sock], [], 10.0)[1]:
                            raise OSError("the engine host reads nothing") from None
            except OSError as err:
                raise LaunchError("the engine host is gone", detail=str(err),
                                  fix="rerun; flue-tui starts a new one") from err

    def _attach(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            raise RuntimeError("the engine host is read from one event loop")
        self._loop = loop
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._on_readable)

    def pause_reading(self) -> None:
        """Read nothing until ``resume_reading``: the host keeps what comes meanwhile (merged,
        bounded) instead of this process. For a caller busy with the last batch."""
        if self._loop is not None and not self._paused and self.sock.fileno() >= 0:
            self._paused = True
            self._loop.remove_reader(self.sock.fileno())

    def resume_reading(self) -> None:
        if self._loop is not None and self._paused and self.sock.fileno() >= 0:
            self._paused = False
            self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        data = recv_some(self.sock)
        if data is None:
            return
        if not data:
            self._gone("the engine host exited")
            return
        try:
            msgs = self._reader.feed(data)
        except (ProtocolError, ValueError) as err:
            self._gone(f"the engine host sent a bad frame: {err}")
            return
        for msg in msgs:
            self._dispatch(msg)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        h = self._runs.get(int(msg.get("run", -1)))
        if h is None:
            return
        t = msg.get("t")
        if t == "events":
            from engine import events as ev

            h.on_events([ev.Event.from_dict(d) for d in msg.get("events", ())])
        elif t == "ask":
            req = RemoteAskRequest(self, int(msg["run"]), msg)
            if h.on_ask is None:
                req.answer("deny")
            else:
                h.on_ask(req)
        elif t in ("result", "error"):
            self._runs.pop(int(msg["run"]), None)
            if h.future is not None and not h.future.done():
                if t == "result":
                    h.future.set_result(result_from_dict(msg["result"]))
                else:
                    h.future.set_exception(error_from_dict(msg["error"]))

    def _gone(self, why: str) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
        self.sock.close()
        try:
            status = self.proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            status = None
        how = ("" if status is None else f" (killed by signal {-status})" if status < 0
               else f" (exit status {status})")
        runs, self._runs = self._runs, {}
        for h in runs.values():
            if h.future is not None and not h.future.done():
                h.future.set_exception(LaunchError(
                    why + how, detail="the sandbox it supervised was killed with it",
                    fix="rerun; flue-tui starts a new engine host"))

    async def run(self, run: int, request: dict[str, Any], handlers: RunHandlers) -> Any:
        """Start a sandbox in the host and wait for its ``Result`` (events and ask requests
        go to ``handlers`` meanwhile). Raises the engine's error if it could not start."""
        import asyncio

        self._attach()
        handlers.future = asyncio.get_running_loop().create_future()
        self._runs[run] = handlers
        try:
            self.send({**request, "t": "run", "run": run})
        except BaseException:
            self._runs.pop(run, None)
            raise
        return await asyncio.shield(handlers.future)

    def signal(self, run: int, sig: int) -> None:
        if run in self._runs:
            try:
                self.send({"t": "signal", "run": run, "sig": int(sig)})
            except LaunchError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        """EOF to the host: it kills what still runs, waits for the ends, and exits."""
        if self._loop is not None and self.sock.fileno() >= 0:
            try:
                self._loop.remove_reader(self.sock.fileno())
            except (ValueError, OSError):
                pass
        self.sock.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------- host side


class _Collector:
    """One run's events in the host, between two batches: a stream's output since the
    last event of another kind is one chunk (its parts joined when the batch goes). With
    ``keep_lines``, a chunk keeps only its last that many lines (what a display shows), the
    others counted in ``Output.skipped_lines``; a chunk held for a reader that does not read
    is cut the same way at ``MAX_PENDING_TEXT``."""

    def __init__(self, keep_lines: int = 0) -> None:
        self.keep_lines = keep_lines
        self.pending: list[Any] = []  # events, and _Chunk
        self.table: Any = None
        self.chunks: dict[str, _Chunk] = {}  # stream -> its open chunk in pending
        self.text = 0

    def add(self, e: Any) -> None:
        from engine import events as ev

        if isinstance(e, ev.ProcessTable):
            self.table = e
            return
        if isinstance(e, ev.Output):
            self.text += len(e.data)
            chunk = self.chunks.get(e.stream)
            if chunk is None:
                chunk = _Chunk(e)
                self.chunks[e.stream] = chunk
                self.pending.append(chunk)
            chunk.parts.append(e.data)
            chunk.skipped += e.skipped_lines
            if self.text > MAX_PENDING_TEXT:
                self.text -= chunk.cut(len(chunk.data()) // 2)
            return
        if not isinstance(e, ev.SyscallDenied | ev.ResourceSample):
            # anything else keeps its place: later output goes after it
            self.chunks.clear()
        self.pending.append(e)

    def take(self) -> list[dict[str, Any]]:
        out = []
        for item in self.pending:
            if isinstance(item, _Chunk):
                item = item.event(self.keep_lines)
            out.append(item.to_dict())
        if self.table is not None:
            out.append(self.table.to_dict())
        self.pending, self.table, self.chunks, self.text = [], None, {}, 0
        return out


class _Chunk:
    def __init__(self, first: Any) -> None:
        self.first = first
        self.parts: list[str] = []
        self.skipped = 0

    def data(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def cut(self, at: int) -> int:
        """Leave out the complete lines that start before ``at``; returns the characters
        left out."""
        data = self.data()
        nl = data.rfind("\n", 0, at + 1)
        if nl < 0:
            return 0
        self.skipped += data.count("\n", 0, nl + 1)
        self.parts = [data[nl + 1:]]
        return nl + 1

    def event(self, keep_lines: int) -> Any:
        from dataclasses import replace

        data = self.data()
        if keep_lines:
            lines = data.count("\n")
            if lines > keep_lines:
                pos = len(data)
                for _ in range(keep_lines + 1):
                    pos = data.rfind("\n", 0, pos)
                self.cut(pos)
                data = self.data()
        return replace(self.first, data=data, skipped_lines=self.skipped)


class _Host:
    def __init__(self, sock: socket.socket) -> None:
        import asyncio

        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.reader = FrameReader((KIND_PICKLE,))
        self.out = bytearray()
        self.writing = False
        self.sandboxes: dict[int, Any] = {}
        self.collectors: dict[int, _Collector] = {}
        self.asks: dict[tuple[int, int], Any] = {}
        self.tasks: set[Any] = set()
        self.eof = asyncio.Event()
        self.active = asyncio.Event()  # some run has a collector

    # --- writing ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.out += data
        self._flush_out()

    def _flush_out(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except BlockingIOError:
                break
            except OSError:
                self.out.clear()
                self.eof.set()
                break
            del self.out[:n]
        if self.out and not self.writing:
            self.writing = True
            self.loop.add_writer(self.sock.fileno(), self._flush_out)
        elif not self.out and self.writing:
            self.writing = False
            self.loop.remove_writer(self.sock.fileno())

    def send(self, msg: dict[str, Any]) -> None:
        self.write(frame(msg))

    def flush(self, run: int, force: bool = False) -> None:
        """Send the run's batch, unless the last one has not left yet (``force``: the run's
        end or an ask request, which must come after the events before it)."""
        c = self.collectors.get(run)
        if c is None or (self.out and not force) or not (c.pending or c.table is not None):
            return
        self.send({"t": "events", "run": run, "events": c.take()})

    async def ticker(self) -> None:
        import asyncio

        while True:
            if not self.collectors:  # nothing runs: no wake-ups
                self.active.clear()
                await self.active.wait()
            await asyncio.sleep(INTERVAL)
            for run in list(self.collectors):
                self.flush(run)

    # --- reading ------------------------------------------------------------------------

    def on_readable(self) -> None:
        data = recv_some(self.sock)
        if data is None:
            return
        if not data:
            self.loop.remove_reader(self.sock.fileno())
            self.eof.set()
            return
        for msg in self.reader.feed(data):
            self.handle(msg)

    def handle(self, msg: dict[str, Any]) -> None:
        t = msg.get("t")
        run = int(msg.get("run", 0))
        if t == "run":
            sb = self.make_sandbox(run, msg)  # now: a signal right behind finds it
            if sb is not None:
                task = self.loop.create_task(self.run(run, sb))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif t == "signal":
            sb = self.sandboxes.get(run)
            if sb is not None:
                sb.send_signal(int(msg["sig"]))
        elif t == "answer":
            req = self.asks.pop((run, int(msg["id"])), None)
            if req is not None and req.decision is None:
                req.answer(str(msg["decision"]))

    def make_sandbox(self, run: int, msg: dict[str, Any]) -> Any:
        from engine.sandbox import Sandbox

        ask = None
        if msg.get("ask") is not None:
            from engine.sources.ask import Ask

            a = dict(msg["ask"])
            ask = Ask(lambda req: self.on_ask(run, req), timeout=float(a["timeout"]),
                      decided=dict(a.get("decided") or {}))
        try:
            sb = Sandbox(list(msg["argv"]), msg["profile"], workspace=msg.get("workspace"),
                         binds=msg.get("binds", ()), env=msg.get("env", ()),
                         name=msg.get("name"), capture_output=True, watch_files=True,
                         observe=True, allow_unlimited=bool(msg.get("allow_unlimited")),
                         ask=ask, learn=bool(msg.get("learn")))
        except Exception as err:  # noqa: BLE001 - the caller shows it
            self.send({"t": "error", "run": run, "error": error_to_dict(err)})
            return None
        c = _Collector(int(msg.get("keep_lines") or 0))
        sb.subscribe(c.add)
        self.collectors[run] = c
        self.sandboxes[run] = sb
        self.active.set()
        return sb

    async def run(self, run: int, sb: Any) -> None:
        try:
            await sb.start()
            result = await sb.wait()
        except Exception as err:  # noqa: BLE001 - the caller shows it
            self.flush(run, force=True)
            self.send({"t": "error", "run": run, "error": error_to_dict(err)})
        else:
            self.flush(run, force=True)
            self.send({"t": "result", "run": run, "result": result.to_dict()})
        finally:
            self.collectors.pop(run, None)
            self.sandboxes.pop(run, None)
            for key in [k for k in self.asks if k[0] == run]:
                del self.asks[key]

    def on_ask(self, run: int, req: Any) -> None:
        self.asks[(run, req.id)] = req
        self.flush(run, force=True)  # its AskRequested event first
        self.send({"t": "ask", "run": run, "id": req.id, "key": req.key, "name": req.name,
                   "nr": req.nr, "errno": req.errno, "decoded": req.decoded, "pid": req.pid,
                   "comm": req.comm, "exe": req.exe,
                   "timeout": float(req.broker.ask.timeout)})

    async def main(self) -> None:
        import asyncio

        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self.on_readable)
        tick = self.loop.create_task(self.ticker())
        await self.eof.wait()
        # the caller is gone: nothing runs on without it
        for sb in list(self.sandboxes.values()):
            sb.kill()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5.0)
        tick.cancel()


def serve(fd: int, parent: int, pdeathsig: bool) -> None:  # pragma: no cover - the host
    import asyncio

    if pdeathsig:
        from engine._linux import libc

        libc.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:  # the caller died before the signal was armed
            return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl+c in the terminal is the UI's
    sock = socket.socket(fileno=fd)

    async def go() -> None:
        await _Host(sock).main()

    asyncio.run(go())


if __name__ == "__main__":  # pragma: no cover
    serve(int(sys.argv[1]), int(sys.argv[2]), "--pdeathsig" in sys.argv[3:])
