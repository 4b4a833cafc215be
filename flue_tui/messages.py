"""App-wide messages. Widget-specific messages live on their widgets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.message import Message

from engine import events as ev


class EventBatch(Message):
    """Events of one run, in order, posted every 50-100 ms. Never replaced in the queue.
    The handler calls ``ack()`` once it has applied them: the bridge posts no other batch
    before that (the events wait in the next one)."""

    def __init__(self, run: int, events: tuple[ev.Event, ...],
                 ack: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.run = run
        self.events = events
        self.ack = ack or (lambda: None)


class ProcessSnapshot(Message):
    """The latest process table: a newer one replaces an older one still in the queue."""

    def __init__(self, run: int, table: ev.ProcessTable) -> None:
        super().__init__()
        self.run = run
        self.table = table

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ProcessSnapshot) and message.run == self.run


class RunFinished(Message):
    """The sandbox is gone; ``result`` is the engine's Result (or None after a failure)."""

    def __init__(self, run: int, result: Any, error: str = "") -> None:
        super().__init__()
        self.run = run
        self.result = result
        self.error = error


class ProfileChanged(Message):
    """The draft profile was edited (or saved, or replaced)."""

    def __init__(self, what: str = "") -> None:
        super().__init__()
        self.what = what
