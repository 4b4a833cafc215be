"""Ask mode: hold a refused syscall until someone decides.

With ``Sandbox(..., ask=Ask(handler))`` a syscall the profile refuses, whose key has no
decision yet, is *not* answered at once: the calling thread keeps waiting inside it (its
seccomp notification stays pending) while ``handler`` gets an ``AskRequest`` on the
supervisor's loop. The request is answered with

- ``allow-once``: this call (and the calls of the same key held with it) runs;
- ``allow-always``: so does every later call of that key in this sandbox (the caller writes
  it into the profile if it wants, e.g. ``engine.profile.tune.change_for_key``);
- ``deny``: these calls get the profile's errno; ``deny-always``: later ones too, at once.

An unanswered request falls back to ``deny`` after ``timeout`` seconds. A key is the syscall
name, plus for ``socket``/``socketpair`` the address family, for ``ioctl`` the request, for
``clone``/``unshare`` the namespace flags and for ``personality`` the persona: all values
the filter itself saw in registers. Pointer arguments (paths, buffers) never take part: the
program could change that memory between our look and the kernel's, so nothing is ever
allowed because of what it pointed to.

Allowing means answering the notification *continue*: the kernel runs the syscall with the
registers the filter saw. Calls of a key held together are released together; at most
``max_held`` calls wait at once (beyond that they are denied at once), so a flood cannot pile
up in the supervisor.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine._linux import notify
from engine.sources.decode import CLONE_FLAGS, IOCTLS, family_name

DECISIONS = ("allow-once", "allow-always", "deny", "deny-always")
DEFAULT_TIMEOUT = 30.0
NS_BITS = {bit: name for bit, name in CLONE_FLAGS.items() if "NEW" in name}

_ids = itertools.count(1)


def ask_key(name: str, args: tuple[int, ...]) -> str:
    """What a decision applies to: the syscall and its register-valued qualifier."""
    if name in ("socket", "socketpair"):
        return f"{name} {family_name(args[0] & 0xFFFFFFFF)}"
    if name == "ioctl":
        req = args[1] & 0xFFFFFFFF
        return f"ioctl {IOCTLS.get(req, hex(req))}"
    if name in ("clone", "unshare"):
        flags = [n for bit, n in sorted(NS_BITS.items()) if args[0] & bit]
        return f"{name} {'|'.join(flags)}" if flags else name
    if name == "personality":
        return f"personality {hex(args[0] & 0xFFFFFFFF)}"
    return name


@dataclass
class Ask:
    """The ask-mode settings of a sandbox."""

    handler: Callable[[AskRequest], None]
    timeout: float = DEFAULT_TIMEOUT
    # decisions known before the run (e.g. from an earlier session): key -> allow | deny
    decided: Mapping[str, str] = field(default_factory=dict)
    max_held: int = 256


class AskRequest:
    """One held key: the first call's details; ``answer()`` releases every call held."""

    def __init__(self, broker: AskBroker, key: str, name: str, nr: int, eno: int,
                 info: dict[str, Any]) -> None:
        self.id = next(_ids)
        self.broker = broker
        self.key = key
        self.name = name
        self.nr = nr
        self.errno = eno
        self.decoded: dict[str, Any] = dict(info.get("decoded", {}))
        self.pid = int(info.get("pid", 0))
        self.comm = str(info.get("comm", ""))
        self.exe = str(info.get("exe", ""))
        self.held: list[tuple[notify.Notification, dict[str, Any] | None]] = []
        self.decision: str | None = None
        self.timer: Any = None

    @property
    def calls(self) -> int:
        return len(self.held)

    def answer(self, decision: str) -> None:
        """Decide; callable from any thread (the answer is applied on the sandbox's loop)."""
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}; one of {', '.join(DECISIONS)}")
        self.broker.answer(self, decision, "user")

    def __repr__(self) -> str:
        return f"AskRequest({self.id}, {self.key!r}, calls={self.calls})"


class AskBroker:
    def __init__(self, sb: Any, listener: Any, ask: Ask) -> None:
        self.sb = sb
        self.listener = listener
        self.ask = ask
        self.rules: dict[str, str] = {}
        for k, v in ask.decided.items():
            self.rules[k] = "allow" if v.startswith("allow") else "deny"
        self.pending: dict[str, AskRequest] = {}
        self.held_count = 0
        self.loop = listener._loop
        self._thread = threading.get_ident()
        self.answered = 0

    # --- from the listener -----------------------------------------------------------------

    def offer(self, n: notify.Notification, name: str, eno: int) -> bool:
        """A refused call arrived. True: we took it (held, or continued by a rule); False:
        the listener answers it as usual (a denial)."""
        key = ask_key(name, n.args)
        rule = self.rules.get(key)
        if rule == "deny":
            return False
        if rule == "allow":
            self._continue(n)
            return True
        req = self.pending.get(key)
        if self.held_count >= self.ask.max_held:
            return False
        if req is None:
            info = self.listener._decoder.describe(n, name) if self.listener._decoder else {}
            req = AskRequest(self, key, name, n.nr, eno, info)
            self.pending[key] = req
            req.held.append((n, info))
            self.held_count += 1
            from engine import events as ev

            self.sb.emit(ev.AskRequested(self.sb.id, self.sb.now(), id=req.id, key=key,
                                         name=name, nr=n.nr, decoded=req.decoded, pid=req.pid,
                                         comm=req.comm, exe=req.exe, errno=eno,
                                         timeout=float(self.ask.timeout)))
            req.timer = self.loop.call_later(self.ask.timeout, self._expire, req)
            try:
                self.ask.handler(req)
            except Exception as err:  # noqa: BLE001 - a broken handler must not hang the call
                self.sb.degraded.append(f"ask handler failed: {err!r}")
                self._apply(req, "deny", "end")
            return True
        req.held.append((n, None))
        self.held_count += 1
        return True

    # --- answers ---------------------------------------------------------------------------

    def answer(self, req: AskRequest, decision: str, by: str) -> None:
        if threading.get_ident() != self._thread:
            call = getattr(self.loop, "call_soon_threadsafe", None) or self.loop.call_soon
            call(self._apply, req, decision, by)
            return
        self._apply(req, decision, by)

    def _expire(self, req: AskRequest) -> None:
        self._apply(req, "deny", "timeout")

    def _apply(self, req: AskRequest, decision: str, by: str) -> None:
        if req.decision is not None:
            return  # answered already (a late click after the timeout, say)
        req.decision = decision
        if req.timer is not None:
            req.timer.cancel()
        self.pending.pop(req.key, None)
        if decision == "allow-always":
            self.rules[req.key] = "allow"
        elif decision == "deny-always":
            self.rules[req.key] = "deny"
        held, req.held = req.held, []
        self.held_count -= len(held)
        for n, info in held:
            if decision.startswith("allow"):
                self._continue(n)
            else:
                self.listener.deny_now(n, req.name, req.errno, info)
        self.answered += 1
        from engine import events as ev

        self.sb.emit(ev.AskAnswered(self.sb.id, self.sb.now(), id=req.id, key=req.key,
                                    decision=decision, by=by, calls=len(held)))
        req.held = held  # kept for inspection: what was released

    def _continue(self, n: notify.Notification) -> None:
        try:
            notify.respond_continue(self.listener.fd, n.id)
        except OSError:
            pass  # the caller is gone

    def close(self) -> None:
        """The sandbox is ending: whatever still waits is denied (its callers are dying)."""
        for req in list(self.pending.values()):
            self._apply(req, "deny", "end")
