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


class AskPrompt(Message):
    """Ask mode: run ``run`` holds a refused syscall until ``answer(decision)`` is called
    with one of ``engine.sources.ask.DECISIONS`` (allow-once, allow-always, deny,
    deny-always); meanwhile the calling thread waits inside the call. Plain data, so a
    bridge in another process can carry it as it is:

    - ``id``: the engine's request id (its ``AskRequested``/``AskAnswered`` events carry it);
    - ``key``: what the decision applies to ("keyctl", "socket AF_PACKET", "ioctl TIOCSTI"),
      ``name``/``nr`` the syscall, ``decoded`` its decoded arguments (str -> str; text from
      the sandbox: untrusted, render it through ``flue_tui.sanitize``);
    - ``pid``/``comm``/``exe``: the caller; ``errno``: what a denial answers;
    - ``timeout``: seconds until the engine denies on its own (an ``AskAnswered`` event with
      ``by="timeout"`` then comes in the run's events).

    ``answer`` may be called from the app's thread (or any other) and at most once counts: a
    late answer (after the timeout) changes nothing.
    """

    def __init__(self, run: int, *, id: int, key: str, name: str, answer: Callable[[str], None],
                 nr: int = 0, decoded: dict[str, str] | None = None, pid: int = 0,
                 comm: str = "", exe: str = "", errno: int = 1, timeout: float = 30.0) -> None:
        super().__init__()
        self.run = run
        self.id = id
        self.key = key
        self.name = name
        self.nr = nr
        self.decoded = dict(decoded or {})
        self.pid = pid
        self.comm = comm
        self.exe = exe
        self.errno = errno
        self.timeout = timeout
        self.answer = answer
