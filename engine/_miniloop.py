"""A minimal single-threaded event loop for ``flue run``'s fast path.

Importing asyncio costs tens of milliseconds, more than the whole sandbox set-up. When
nobody consumes the live event stream, ``Sandbox.run_blocking`` drives the same fd- and
timer-callbacks with this loop instead: ``add_reader``/``remove_reader``/``add_writer``/
``remove_writer``/``call_later``/``call_soon``/``time``, the subset of asyncio's loop API the
sandbox lifecycle and the network proxy use.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
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
        self._sel = selectors.DefaultSelector()
        self._readers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._writers: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._masks: dict[int, int] = {}  # what the selector watches for each fd
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return time.monotonic()

    def _update(self, fd: int) -> None:
        mask = ((selectors.EVENT_READ if fd in self._readers else 0)
                | (selectors.EVENT_WRITE if fd in self._writers else 0))
        old = self._masks.pop(fd, 0)
        if old:
            if mask:
                try:
                    self._sel.modify(fd, mask)
                    self._masks[fd] = mask
                    return
                except (KeyError, ValueError, OSError):
                    pass  # closed and reused behind our back: register afresh below
            try:
                self._sel.unregister(fd)
            except (KeyError, ValueError, OSError):
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
            for key, mask in self._sel.select(timeout):
                fd = int(key.fd)
                if mask & selectors.EVENT_READ:
                    entry = self._readers.get(fd)
                    if entry is not None:
                        entry[0](*entry[1])
                if mask & selectors.EVENT_WRITE:
                    entry = self._writers.get(fd)
                    if entry is not None:
                        entry[0](*entry[1])
            now = self.time()
            while self._timers and (self._timers[0][0] <= now or self._timers[0][2].cancelled):
                _, _, h = heapq.heappop(self._timers)
                if not h.cancelled:
                    h.cb(*h.args)

    def close(self) -> None:
        self._sel.close()
