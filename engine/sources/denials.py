"""Syscall denials through seccomp user notification.

The supervisor holds the listener; every syscall the profile refuses with an errno arrives
here, is answered at once with exactly that errno (so the program sees what a plain errno
filter would give it), and is recorded. Identical denials in a row (same syscall, process and
arguments) are coalesced into one counted record, so a flood keeps memory bounded while
counts stay exact. A flood whose arguments change on every call cannot be merged that way:
past ``NEW_RECORDS_PER_FLUSH`` new records in one flush interval, or past
``DISTINCT_PER_CALLER`` records of one syscall from one process in the run, further denials
are merged per syscall and process into one record per interval (``args_varied`` when their
arguments differed; ``args`` and ``decoded`` are the first call's), and only the first of
them is decoded: a flood of any length costs a few records a second. The listener handles at most ``rate`` notifications a second per sandbox:
beyond that the flooding process waits inside its syscall, so it -- not the supervisor, nor
other sandboxes -- pays for the flood.
"""

from __future__ import annotations

import errno as _errno
import select

from engine._linux import notify
from engine.seccomp import CompiledFilter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from engine import events as ev

BATCH = 512
FLUSH_INTERVAL = 0.1
DEFAULT_RATE = 100_000  # notifications per second per sandbox
NEW_RECORDS_PER_FLUSH = 50  # distinct denials recorded one by one per flush interval
DISTINCT_PER_CALLER = 200  # ... and per (syscall, process) over the whole run; then merged
CALLERS_REMEMBERED = 4096  # (syscall, process) pairs whose records are counted
OVERFLOW_KEYS = 32  # merged (syscall, process) records per interval; beyond: per syscall


def errno_name(n: int) -> str:
    return _errno.errorcode.get(n, str(n))


class DenialListener:
    def __init__(self, sandbox: Any, fd: int, filt: CompiledFilter, *,
                 rate: int = DEFAULT_RATE, decoder: Any = None) -> None:
        self.sb = sandbox
        self.fd = fd
        self.filt = filt
        self.rate = rate
        self.total = 0
        self.by_name: dict[str, list[int]] = {}  # name -> [count, errno]
        self._pending: dict[str, Any] | None = None
        self._pending_key: tuple[Any, ...] | None = None
        self._new_records = 0  # records started in this flush interval
        # past that budget: (nr, host tid) -> the merged record of this interval
        self._overflow: dict[tuple[int, int], dict[str, Any]] = {}
        self._distinct: dict[tuple[int, int], int] = {}  # (nr, host tid) -> records made
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._loop = sandbox._loop  # the asyncio loop, or the blocking path's MiniLoop
        # nobody listens (flue run without --events): count exactly, describe nothing
        self.quiet = not sandbox._wants_events()
        self._window_start = self._loop.time()
        self._window_count = 0
        self._paused = False
        self._flush_handle: Any = None
        self._stopped = False
        self._decoder = decoder
        self.tracker: Any = None
        self.observer: Any = None  # engine.sources.observe.Observer: learn, paths, network
        self.ask: Any = None  # engine.sources.ask.AskBroker: refused calls held for a decision
        self.samples: dict[str, list[dict[str, Any]]] = {}  # name -> a few decoded calls
        # engine.sources.receiver.Receiver: a helper receives notifications at once (heavy
        # tracing); we read them from its pipe instead of the listener
        self.receiver: Any = None
        if self._decoder is None and not self.quiet:
            from engine.sources.decode import Decoder

            self._decoder = Decoder(fd)

    def start(self) -> None:
        self._loop.add_reader(self._reader(), self._on_ready)
        self._flush_handle = self._loop.call_later(FLUSH_INTERVAL, self._tick)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if not self._paused:
            self._loop.remove_reader(self._reader())
        if self._flush_handle:
            self._flush_handle.cancel()
        if self.ask is not None:
            self.ask.close()
        if self.receiver is not None:
            self.receiver.close()
        self._flush()

    def _reader(self) -> int:
        return int(self.receiver.fd) if self.receiver is not None else self.fd

    def summary(self) -> dict[str, dict[str, Any]]:
        return {name: {"count": c, "errno": e, "errno_name": errno_name(e)}
                for name, (c, e) in sorted(self.by_name.items(), key=lambda kv: -kv[1][0])}

    def _tick(self) -> None:
        self._flush()
        if not self._stopped:
            self._flush_handle = self._loop.call_later(FLUSH_INTERVAL, self._tick)

    def _hangup(self) -> None:
        if not self._paused and not self._stopped:
            self._loop.remove_reader(self._reader())
            self._paused = True  # stop() must not remove it again

    def _resume(self) -> None:
        if self._stopped:
            return
        self._paused = False
        self._window_start = self._loop.time()
        self._window_count = 0
        self._loop.add_reader(self._reader(), self._on_ready)

    def _on_ready(self) -> None:
        window = 0.05
        budget = max(1, int(self.rate * window))
        for _ in range(BATCH):
            if self.receiver is not None:
                got = self.receiver.next()
                if got is None:
                    if self.receiver.hup:
                        self._hangup()
                        return
                    break
                n = got
            else:
                ready = self._poll.poll(0)
                if not ready:
                    break
                if not ready[0][1] & select.POLLIN:
                    # POLLHUP: no process is left under the filter; nothing more will come
                    self._hangup()
                    return
            try:
                if self.receiver is None:
                    n = notify.receive(self.fd)
            except OSError as err:
                if err.errno == _errno.ENOENT:  # the caller died before we got to it
                    continue
                if err.errno in (_errno.EINTR, _errno.EAGAIN):
                    break
                self.stop()
                return
            verdict = self.filt.table.get(n.nr)
            if verdict is not None and verdict.action == "trace":
                self._trace(n, verdict.name)
                self._window_count += 1
                continue
            eno = self.filt.errno_for(n.nr)
            name = self.filt.name_of(n.nr)
            if self.ask is not None and verdict is not None and self.ask.offer(n, name, eno):
                self._window_count += 1
                continue  # held for a decision (or allowed by one)
            key = (n.nr, n.pid, n.args)
            # a new kind of denial is described while the caller still waits, so its memory
            # can be read and validated; repeats (and merged overflow) are answered at once
            if self.quiet or key == self._pending_key:
                info = None
            elif not self._over_budget(n) or self._overflow_key(n) not in self._overflow:
                info = self._decoder.describe(n, name)
            else:
                info = None
            try:
                notify.respond_errno(self.fd, n.id, eno)
            except OSError:
                pass  # ENOENT: the caller was killed meanwhile; still count the attempt
            self._record(n, name, key, eno, info)
            self._window_count += 1
        now = self._loop.time()
        if now - self._window_start >= window:
            self._window_start, self._window_count = now, 0
        elif self._window_count >= budget:
            self._paused = True
            self._loop.remove_reader(self._reader())
            self._loop.call_later(window - (now - self._window_start), self._resume)

    def _trace(self, n: notify.Notification, name: str) -> None:
        """An allowed syscall we observe (exec, exit, connect): look, then let it continue
        (a connect the network policy refuses anyway is answered with its errno at once)."""
        tracker = self.tracker
        answer = 0
        try:
            if self.observer is not None:
                self.observer.on_trace(n, name)
            if name == "connect":
                answer = self._connect(n)
            elif tracker is not None and name in ("execve", "execveat"):
                path, argv = self._decoder.exec_args(n, name)
                if notify.id_valid(self.fd, n.id):
                    tracker.on_exec(n.pid, argv, path)
            elif tracker is not None and name == "exit_group":
                tracker.on_exit(n.pid, n.args[0] & 0xFF)
        finally:
            try:
                if answer:
                    notify.respond_errno(self.fd, n.id, answer)
                else:
                    notify.respond_continue(self.fd, n.id)
            except OSError:
                pass

    def _connect(self, n: notify.Notification) -> int:
        """allowlist mode: show the destination to the network service. The namespace has
        no route out whatever we answer; the answer only makes a refusal immediate and
        clear, so memory read here (possibly changed by another thread meanwhile) never
        widens what the sandbox can reach."""
        net = getattr(self.sb, "network", None)
        if net is None:
            return 0
        from engine.sources.decode import read_bytes, socket_type

        raw = read_bytes(n.pid, n.args[1], min(n.args[2] & 0xFFFFFFFF, 128))
        if not raw or not notify.id_valid(self.fd, n.id):
            return 0
        answer: int = net.on_connect(raw, lambda: socket_type(n.pid, n.args[0] & 0xFFFFFFFF))
        return answer

    def deny_now(self, n: notify.Notification, name: str, eno: int,
                 info: dict[str, Any] | None) -> None:
        """Answer a call held in ask mode with its errno, and record the denial."""
        try:
            notify.respond_errno(self.fd, n.id, eno)
        except OSError:
            pass
        self._record(n, name, (n.nr, n.pid, n.args), eno, info)

    def _record(self, n: notify.Notification, name: str, key: tuple[Any, ...], eno: int,
                info: dict[str, Any] | None) -> None:
        self.total += 1
        entry = self.by_name.get(name)
        if entry is None:
            self.by_name[name] = [1, eno]
        else:
            entry[0] += 1
            entry[1] = eno
        if self.quiet:
            return
        now = self.sb.now()
        if key == self._pending_key and self._pending is not None:
            self._pending["count"] += 1
            self._pending["ts"] = now
            return
        if self._over_budget(n):
            # over budget: merge per syscall and process until the next flush
            # (per syscall alone once many processes flood at once)
            okey = self._overflow_key(n)
            merged = self._overflow.get(okey)
            if merged is not None:
                merged["count"] += 1
                merged["ts"] = now
                merged["varied"] = merged["varied"] or n.args != merged["rec"].args
                return
            self._overflow[okey] = {
                "rec": self._new_record(n, name, eno, info, now), "count": 1, "ts": now,
                "varied": False}
            return
        self._flush_pending()
        rec = self._new_record(n, name, eno, info, now)
        self.sb.emit(rec)
        self._new_records += 1
        caller = (n.nr, n.pid)
        made = self._distinct.pop(caller, 0)
        self._distinct[caller] = made + 1  # the most recent last
        if len(self._distinct) > CALLERS_REMEMBERED:
            del self._distinct[next(iter(self._distinct))]
        self._pending_key = key
        self._pending = {"rec": rec, "count": 0, "ts": now, "first": now}

    def _over_budget(self, n: notify.Notification) -> bool:
        """Past this interval's new records, or past this caller's share of the run."""
        return (self._new_records >= NEW_RECORDS_PER_FLUSH
                or self._distinct.get((n.nr, n.pid), 0) >= DISTINCT_PER_CALLER)

    def _overflow_key(self, n: notify.Notification) -> tuple[int, int]:
        key = (n.nr, n.pid)
        if key in self._overflow or len(self._overflow) < OVERFLOW_KEYS:
            return key
        return (n.nr, 0)

    def _new_record(self, n: notify.Notification, name: str, eno: int,
                    info: dict[str, Any] | None, now: float) -> ev.SyscallDenied:
        from engine import events as ev

        info = info or {}
        if info.get("decoded"):
            kept = self.samples.setdefault(name, [])
            if len(kept) < 3 and info["decoded"] not in kept:
                kept.append(dict(info["decoded"]))
        return ev.SyscallDenied(self.sb.id, now, name=name, nr=n.nr, args=n.args,
                                decoded=info.get("decoded", {}), errno=eno,
                                errno_name=errno_name(eno), pid=info.get("pid", 0),
                                host_pid=n.pid, tid=info.get("tid", n.pid),
                                comm=info.get("comm", ""), exe=info.get("exe", ""), count=1,
                                first_ts=now)

    def _flush(self) -> None:
        """Emit what was counted since the last flush; a new interval (and budget) begins."""
        self._flush_pending()
        overflow, self._overflow = self._overflow, {}
        if overflow:
            import dataclasses  # only now: its import costs more than a short run's set-up
        for m in overflow.values():
            rec: ev.SyscallDenied = m["rec"]
            self.sb.emit(dataclasses.replace(rec, ts=m["ts"], count=m["count"],
                                             args_varied=m["varied"]))
        self._new_records = 0

    def _flush_pending(self) -> None:
        p = self._pending
        if p is None or p["count"] == 0:
            return
        rec: ev.SyscallDenied = p["rec"]
        import dataclasses

        self.sb.emit(dataclasses.replace(rec, ts=p["ts"], count=p["count"], first_ts=p["first"]))
        p["count"] = 0
        p["first"] = p["ts"]

