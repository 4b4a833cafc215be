"""A minimal single-threaded event loop for ``flue run``'s fast path.

Importing asyncio costs tens of milliseconds, more than the whole sandbox set-up. When
nobody consumes the live event stream, ``Sandbox.run_blocking`` drives the same fd- and
timer-callbacks with this loop instead: ``add_reader``/``remove_reader``/``add_writer``/
``remove_writer``/``call_later``/``call_soon``/``time``/``add_signal_handler``/
``remove_signal_handler``, the subset of asyncio's loop API the sandbox lifecycle, the network
proxy and the terminal relay use. Signal handlers run from the loop, as asyncio's do (the
signal only writes its number to a wakeup pipe), never in the middle of another callback.
It polls with epoll itself (``selectors`` would import ``enum`` and more for the same call).
"""

from __future__ import annotations

import heapq
import itertools
import os
import select
import time

from engine._lean import signal

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class TimerHandle:
    __slots__ = ("args", "cancelled", "cb", "when")

    def __init__(self, when: float, cb: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.cb = cb
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class MiniLoop:
    def __init__(self) -> None:
        self._sel = select.epoll()
        self._readers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._writers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._masks: dict[int, int] = {}  # what the selector watches for each fd
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._signals: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._old_handlers: dict[int, Any] = {}
        self._wakeup: tuple[int, int] | None = None  # the pipe the signals write to
        self._old_wakeup = -1

    def time(self) -> float:
        return time.monotonic()

    def _update(self, fd: int) -> None:
        mask = ((select.EPOLLIN if fd in self._readers else 0)
                | (select.EPOLLOUT if fd in self._writers else 0))
        old = self._masks.pop(fd, 0)
        if old:
            if mask:
                try:
                    self._sel.modify(fd, mask)
                    self._masks[fd] = mask
                    return
                except (ValueError, OSError):
                    pass  # closed and reused behind our back: register afresh below
            try:
                self._sel.unregister(fd)
            except (ValueError, OSError):
                pass
        if mask:
            self._sel.register(fd, mask)
            self._masks[fd] = mask

    def add_reader(self, fd: int, cb: Callable[..., Any], *args: Any) -> None:
        self._readers[fd] = (cb, args)
        self._update(fd)

    def remove_reader(self, fd: int) -> bool:
        if self._readers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def add_writer(self, fd: int, cb: Callable[..., Any], *args: Any) -> None:
        self._writers[fd] = (cb, args)
        self._update(fd)

    def remove_writer(self, fd: int) -> bool:
        if self._writers.pop(fd, None) is None:
            return False
        self._update(fd)
        return True

    def add_signal_handler(self, sig: int, cb: Callable[..., Any], *args: Any) -> None:
        if self._wakeup is None:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            self._wakeup = (r, w)
            self.add_reader(r, self._on_signals)
        if sig not in self._old_handlers:
            self._old_handlers[sig] = signal.signal(sig, _noop)
        self._signals[sig] = (cb, args)

    def remove_signal_handler(self, sig: int) -> bool:
        if self._signals.pop(sig, None) is None:
            return False
        signal.signal(sig, self._old_handlers.pop(sig))
        return True

    def _on_signals(self) -> None:
        assert self._wakeup is not None
        try:
            data = os.read(self._wakeup[0], 512)
        except BlockingIOError:
            return
        for signo in data:
            entry = self._signals.get(signo)
            if entry is not None:
                entry[0](*entry[1])

    def call_later(self, delay: float, cb: Callable[..., Any], *args: Any) -> TimerHandle:
        h = TimerHandle(self.time() + delay, cb, args)
        heapq.heappush(self._timers, (h.when, next(self._seq), h))
        return h

    def call_soon(self, cb: Callable[..., Any], *args: Any) -> TimerHandle:
        return self.call_later(0, cb, *args)

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            timeout = None
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - self.time())
            # (epoll rounds the timeout up to a millisecond, and retries after a signal)
            for fd, events in self._sel.poll(-1 if timeout is None else timeout):
                # an error or a hang-up wakes both directions, as with selectors
                if events & ~select.EPOLLOUT:
                    entry = self._readers.get(fd)
                    if entry is not None:
                        entry[0](*entry[1])
                if events & ~select.EPOLLIN:
                    entry = self._writers.get(fd)
                    if entry is not None:
                        entry[0](*entry[1])
            now = self.time()
            while self._timers and (self._timers[0][0] <= now or self._timers[0][2].cancelled):
                _, _, h = heapq.heappop(self._timers)
                if not h.cancelled:
                    h.cb(*h.args)

    def close(self) -> None:
        for sig in list(self._signals):
            self.remove_signal_handler(sig)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None
        self._sel.close()


def _noop(signo: int, frame: Any) -> None:
    """The Python-level handler of a loop signal: the wakeup pipe does the work."""
