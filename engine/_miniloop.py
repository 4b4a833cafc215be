"""A minimal single-threaded event loop for ``flue run``'s fast path.

Importing asyncio costs tens of milliseconds, more than the whole sandbox set-up. When
nobody consumes the live event stream, ``Sandbox.run_blocking`` drives the same fd- and
timer-callbacks with this loop instead: ``add_reader``/``remove_reader``/``call_later``/
``time``, the subset of asyncio's loop API the sandbox lifecycle uses.
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
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return time.monotonic()

    def add_reader(self, fd: int, cb: Callable[..., Any], *args: Any) -> None:
        if fd in self._readers:
            self._sel.modify(fd, selectors.EVENT_READ)
        else:
            self._sel.register(fd, selectors.EVENT_READ)
        self._readers[fd] = (cb, args)

    def remove_reader(self, fd: int) -> bool:
        if self._readers.pop(fd, None) is None:
            return False
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass
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
            for key, _mask in self._sel.select(timeout):
                entry = self._readers.get(int(key.fd))
                if entry is not None:
                    entry[0](*entry[1])
            now = self.time()
            while self._timers and (self._timers[0][0] <= now or self._timers[0][2].cancelled):
                _, _, h = heapq.heappop(self._timers)
                if not h.cancelled:
                    h.cb(*h.args)

    def close(self) -> None:
        self._sel.close()
