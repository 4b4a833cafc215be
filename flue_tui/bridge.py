"""The one place flue-tui talks to the engine.

``Bridge.run`` is awaited inside the app's engine worker (``@work(group="engine",
exclusive=True)``): it starts a sandbox in the engine host (``engine.remote``: a process of
flue's own that supervises it on its own loop), collects the events the host streams back,
and posts them to the app in batches every ``interval`` seconds -- one ``EventBatch`` per
tick (never replaced), plus the latest process table as a ``ProcessSnapshot`` (which
replaces an older one still waiting). At most one batch is in the
app's queue at a time: while the app has not applied the last one, events keep collecting
into the next, so a flood the app cannot fold in 75 ms makes fewer, larger batches instead
of a queue that grows without bound (and that every keypress would wait behind). Screens
and widgets never call the engine; they read the app's ``RunModel``.

``ReplayBridge`` plays a recorded JSONL event stream through the same messages, for
deterministic tests, snapshots and demos without a kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine import events as ev
from flue_tui.messages import AskPrompt, EventBatch, ProcessSnapshot, RunFinished
from flue_tui.model import MAX_OUTPUT
from flue_tui.runspec import Prepared

DEFAULT_INTERVAL = 0.075


def _open_recording(path: str) -> Any:
    return open(path, "a", encoding="utf-8")


class _Batcher:
    """Collects events from a synchronous callback; ``flush`` posts what was collected."""

    def __init__(self, post: Callable[[Any], Any], run: int,
                 record: Callable[[ev.Event], None] | None = None,
                 busy: Callable[[bool], None] | None = None) -> None:
        self.post = post
        self.run = run
        self.record = record
        self.busy = busy  # told when a batch goes out (True) and when it was applied
        self.pending: list[ev.Event] = []
        self.table: ev.ProcessTable | None = None
        self.count = 0
        self.in_flight = False  # a batch was posted and the app has not applied it yet
        self.batches = 0

    def add(self, e: ev.Event) -> None:
        self.count += 1
        if self.record is not None:
            self.record(e)
        if isinstance(e, ev.ProcessTable):
            self.table = e  # latest value wins
        else:
            self.pending.append(e)

    def applied(self) -> None:
        """The app folded the last batch in (``EventBatch.ack``): the next one may go."""
        self.in_flight = False
        if self.busy is not None:
            self.busy(False)

    def flush(self, force: bool = False) -> None:
        """Post what was collected, unless the previous batch is still waiting to be applied
        (``force``: the run is over, post it anyway, so nothing is lost)."""
        if self.table is not None:
            table, self.table = self.table, None
            self.post(ProcessSnapshot(self.run, table))
        if self.pending and (force or not self.in_flight):
            batch, self.pending = tuple(self.pending), []
            self.in_flight = True
            self.batches += 1
            if self.busy is not None:
                self.busy(True)
            self.post(EventBatch(self.run, batch, ack=self.applied))


class Bridge:
    """Owns the engine host (the process that supervises the sandboxes) and the current run.

    The sandbox's supervisor -- its seccomp listener, output pipes, samplers -- runs in the
    engine host (``engine.remote``), not on the app's loop: a flood is answered there while
    the app draws. The host streams events back in batches; they go into the app's
    ``EventBatch`` messages as before.

    Ask mode: set ``ask`` (and ``ask_timeout``, ``ask_decided``) before ``run``. ``ask`` is
    called on the app's loop with each request held in the sandbox (an object with the
    fields of ``engine.sources.ask.AskRequest`` and ``answer(decision)``, callable from any
    thread); a request not answered within ``ask_timeout`` is denied by the engine.
    """

    def __init__(self, post: Callable[[Any], Any], *, interval: float = DEFAULT_INTERVAL,
                 record_to: str | None = None, allow_unlimited: bool = False) -> None:
        self.post = post
        self.interval = interval
        self.record_to = record_to
        # like `flue run --allow-unlimited`: limits that cannot be enforced here are dropped
        # (the sandbox reports it as degraded) instead of failing the run
        self.allow_unlimited = allow_unlimited
        self._host: Any = None
        self._run: int | None = None  # the run the host supervises for us now
        self.clock: Callable[[], float] = time.monotonic
        self.ask: Callable[[Any], None] | None = None
        self.ask_timeout: float | None = None  # None: the engine's default
        self.ask_decided: dict[str, str] = {}

    # --- the engine host ------------------------------------------------------------------

    def start_spawner(self) -> None:
        """Start the engine host (again, if it died). Call on the main thread: its
        parent-death signal is tied to the thread that created it."""
        if self._host is not None and not self._host.alive():
            self._host.close(timeout=0)
            self._host = None
        if self._host is None:
            from engine.remote import EngineHost

            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("the engine host must be started on the main thread")
            self._host = EngineHost()

    @property
    def host_pid(self) -> int | None:
        return self._host.pid if self._host is not None else None

    def close(self) -> None:
        self.kill()
        if self._host is not None:
            try:
                self._host.close()
            finally:
                self._host = None

    @property
    def running(self) -> bool:
        return self._run is not None

    # --- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the sandbox to stop (SIGTERM to its PID 1, which forwards it)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self._run is not None and self._host is not None:
            self._host.signal(self._run, sig)

    # --- a run ----------------------------------------------------------------------------

    async def run(self, run: int, prepared: Prepared, profile: Any, *,
                  workspace: str = "", env: Sequence[tuple[str, str]] = (),
                  learn: bool = False) -> Any:
        from engine.remote import RunHandlers

        self.start_spawner()
        host = self._host
        recorder = _open_recording(self.record_to) if self.record_to else None

        def busy(yes: bool) -> None:
            # while the app folds a batch in, the host keeps what comes (merged into fewer,
            # larger chunks, bounded there) rather than this process reading and holding it
            if yes:
                host.pause_reading()
            else:
                host.resume_reading()

        batch = _Batcher(self.post, run,
                         (lambda e: recorder.write(e.to_json() + "\n")) if recorder else None,
                         busy)
        name = f"flue-tui-{os.getpid()}-{run}"
        ask = None
        if self.ask is not None:
            from engine.sources.ask import DEFAULT_TIMEOUT

            ask = {"timeout": DEFAULT_TIMEOUT if self.ask_timeout is None else self.ask_timeout,
                   "decided": dict(self.ask_decided)}
        request = {"argv": list(prepared.argv), "profile": profile,
                   "workspace": workspace or None, "binds": tuple(prepared.binds),
                   "env": (("FLUE_SANDBOX_ID", name), *env), "name": name,
                   "allow_unlimited": self.allow_unlimited, "ask": ask,
                   "learn": learn,  # learn: traced, ends with a LearnSummary
                   # the output panel keeps its last MAX_OUTPUT lines: the host sends no more
                   # of a batch's (the others are counted)
                   "keep_lines": MAX_OUTPUT}

        def on_events(events: list[ev.Event]) -> None:
            for e in events:
                batch.add(e)

        def on_ask(req: Any) -> None:
            batch.flush(force=True)  # the AskRequested event before the prompt
            if self.ask is not None:
                self.ask(req)
            else:
                req.answer("deny")

        handlers = RunHandlers(on_events, on_ask if ask is not None else None)
        self._run = run
        ticker = asyncio.create_task(self._tick(batch))
        result = None
        try:
            result = await host.run(run, request, handlers)
            return result
        except asyncio.CancelledError:
            host.signal(run, signal.SIGKILL)
            with contextlib.suppress(Exception):  # gone already, or never started
                result = await asyncio.wait_for(asyncio.shield(handlers.future), 5)
            raise
        finally:
            ticker.cancel()
            batch.flush(force=True)
            host.resume_reading()
            if self._run == run:  # not a later run's (the app runs one at a time anyway)
                self._run = None
            if recorder is not None:
                recorder.close()
            self.post(RunFinished(run, result))

    async def _tick(self, batch: _Batcher) -> None:
        while True:
            await asyncio.sleep(self.interval)
            batch.flush()


def ask_prompt(run: int, req: Any, timeout: float) -> AskPrompt:
    """The app's message for a held request (``engine.sources.ask.AskRequest``, the engine
    host's ``RemoteAskRequest`` or a replayed one: the same fields and ``answer``)."""
    return AskPrompt(int(getattr(req, "run", run) or run), id=req.id, key=req.key,
                     name=req.name, nr=req.nr,
                     decoded={str(k): str(v) for k, v in dict(req.decoded).items()},
                     pid=req.pid, comm=req.comm, exe=req.exe, errno=req.errno,
                     timeout=float(getattr(req, "timeout", 0.0) or timeout),
                     answer=req.answer)


class _Replayed:
    """A recorded ``AskRequested`` as a request; its answer goes nowhere (nothing runs)."""

    def __init__(self, run: int, e: ev.AskRequested) -> None:
        self.run, self.id, self.key, self.name, self.nr = run, e.id, e.key, e.name, e.nr
        self.decoded, self.pid, self.comm, self.exe = dict(e.decoded), e.pid, e.comm, e.exe
        self.errno, self.timeout = e.errno, e.timeout
        self.decision: str | None = None

    def answer(self, decision: str) -> None:
        self.decision = decision


class ReplayBridge(Bridge):
    """Plays a recorded event stream instead of running a sandbox.

    ``speed``: 0 posts everything at once (snapshots); 1 replays in real time. ``upto``:
    stop after that many events (a mid-run snapshot). The clock is fixed at the last event
    played, so elapsed times are deterministic.
    """

    def __init__(self, post: Callable[[Any], Any],
                 recording: str | os.PathLike[str] | Sequence[Any],
                 *, speed: float = 0.0, upto: int | None = None,
                 interval: float = DEFAULT_INTERVAL) -> None:
        super().__init__(post, interval=interval)
        # one recording, or a list of them: run N plays the Nth (the last one repeats)
        if isinstance(recording, (str, os.PathLike)) or recording and isinstance(recording[0], ev.Event):
            recordings = [recording]
        else:
            recordings = list(recording)
        self.recordings = [self._load(r) for r in recordings]
        self.events = self.recordings[0] if self.recordings else []
        self.speed = speed
        self.upto = upto
        self._now = self.events[0].ts if self.events else 0.0
        self.clock = lambda: self._now
        self.runs: list[tuple[tuple[str, ...], Any]] = []  # what the app asked to run
        self._stop = False

    @staticmethod
    def _load(recording: Any) -> list[ev.Event]:
        if isinstance(recording, (str, os.PathLike)):
            lines = Path(recording).read_text(encoding="utf-8").splitlines()
            return [ev.Event.from_json(line) for line in lines if line.strip()]
        return list(recording)

    def start_spawner(self) -> None:  # no kernel needed
        pass

    def stop(self) -> None:
        self._stop = True

    kill = stop

    async def run(self, run: int, prepared: Prepared, profile: Any, *,
                  workspace: str = "", env: Sequence[tuple[str, str]] = (),
                  learn: bool = False) -> Any:
        self.runs.append((prepared.argv, profile))
        self._stop = False
        batch = _Batcher(self.post, run)
        self.events = self.recordings[min(len(self.runs), len(self.recordings)) - 1] \
            if self.recordings else []
        events = self.events[: self.upto] if self.upto is not None else self.events
        prev_ts = events[0].ts if events else 0.0
        try:
            for e in events:
                if self._stop:
                    break
                if self.speed > 0 and e.ts > prev_ts:
                    await asyncio.sleep((e.ts - prev_ts) / self.speed)
                    batch.flush()
                prev_ts = e.ts
                self._now = e.ts
                batch.add(e)
                if isinstance(e, ev.AskRequested) and self.ask is not None:
                    batch.flush(force=True)
                    self.ask(_Replayed(run, e))
            return None
        finally:
            batch.flush(force=True)
            self.post(RunFinished(run, None))
