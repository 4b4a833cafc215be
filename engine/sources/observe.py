"""What traced syscalls tell, beyond exec and exit: the learn recorder, path lookups and
network attempts.

The denial listener hands every traced notification (answered *continue*) to an
``Observer`` while the caller still waits, so its arguments can be read from its memory and
checked to belong to it (``id_valid``). Nothing here decides anything.

- ``learn``: every traced syscall is counted; sockets (family and type), the endpoints of
  connect/bind/sendto (family, address, port), ioctl requests, and every path lookup (with
  whether it exists inside) are recorded; resource peaks come from the samples. At the end,
  ``observation()`` is the run's ``engine.learn.observation.Observation``.
- ``paths``: path lookups are resolved inside the sandbox (``engine.sources.paths``); one that
  fails where the host has something is a ``PathMissing`` event and a report entry.
- network attempts: in ``none`` and ``loopback`` modes a connect the namespace cannot carry
  (any IP address under ``none``, a non-loopback one under ``loopback``) is a refused
  ``NetworkRequest`` (``via`` "direct", ``rule`` "network-none"/"network-loopback"); the
  kernel answers it (ENETUNREACH), we only say so.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from engine._linux import notify
from engine.sources.decode import IOCTLS, SOCK_TYPES, family_name, read_bytes
from engine.sources.paths import LOOKUPS, PathObserver

SOCKADDR_CALLS = {"connect": (1, 2), "bind": (1, 2), "sendto": (4, 5)}
# traced calls the supervisor looks at (beyond path lookups); the helper continues and counts
# every other traced call by itself (engine.sources.receiver)
INSPECTED = frozenset({"execve", "execveat", "exit_group", "socket", "socketpair", "ioctl",
                       *SOCKADDR_CALLS})
MAX_ENDPOINTS = 256
MAX_ATTEMPTS = 64


def parse_sockaddr(raw: bytes | None) -> dict[str, Any] | None:
    """family, address and port of a struct sockaddr (AF_INET, AF_INET6, AF_UNIX, others by
    family only)."""
    if not raw or len(raw) < 2:
        return None
    fam = int.from_bytes(raw[:2], "little")
    out: dict[str, Any] = {"family": family_name(fam)}
    if fam == socket.AF_INET and len(raw) >= 8:
        out["port"] = int.from_bytes(raw[2:4], "big")
        out["address"] = socket.inet_ntop(socket.AF_INET, raw[4:8])
    elif fam == socket.AF_INET6 and len(raw) >= 24:
        out["port"] = int.from_bytes(raw[2:4], "big")
        out["address"] = socket.inet_ntop(socket.AF_INET6, raw[8:24])
    elif fam == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            out["address"] = "@" + path[1:].split(b"\0", 1)[0].decode("utf-8", "replace")
        else:
            out["address"] = path.split(b"\0", 1)[0].decode("utf-8", "replace")
    return out


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


class Observer:
    def __init__(self, sb: Any, listener: Any, *, learn: bool = False, paths: bool = False,
                 attempts: bool = False) -> None:
        self.sb = sb
        self.listener = listener
        self.learn = learn
        decoder = listener._decoder
        if decoder is None:
            from engine.sources.decode import Decoder

            decoder = Decoder(listener.fd)
        self.decoder = decoder
        self.fd = listener.fd
        home = sb.profile.user.home_dir
        self.paths = PathObserver(sb, decoder, emit=True, home=home) if paths or learn else None
        self.attempts_on = attempts
        self.mode = sb.profile.network.mode
        self.counts: dict[str, int] = {}
        self.families: dict[str, int] = {}
        self.endpoints: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.ioctls: dict[str, int] = {}
        self.attempts: dict[tuple[str, int], dict[str, Any]] = {}
        self.peak_pids = 0
        self.peak_memory = 0
        self.peak_cpu_percent = 0.0
        self.processes = 0
        self.errors = 0
        self._hosts: set[str] = set()  # names asked for through the allowlist proxy
        if learn:
            sb.subscribe(self._on_event)

    # --- the listener's hook -------------------------------------------------------------

    def on_trace(self, n: notify.Notification, name: str) -> None:
        try:
            self._on_trace(n, name)
        except Exception:  # noqa: BLE001 - observation must never break the sandbox
            self.errors += 1

    def _on_trace(self, n: notify.Notification, name: str) -> None:
        if self.learn:
            self.counts[name] = self.counts.get(name, 0) + 1
        if self.paths is not None and name in LOOKUPS:
            self.paths.on_lookup(n, name, lambda: notify.id_valid(self.fd, n.id))
            return
        if not self.learn and not self.attempts_on:
            return
        if name in ("socket", "socketpair") and self.learn:
            fam = family_name(n.args[0] & 0xFFFFFFFF)
            typ = SOCK_TYPES.get(n.args[1] & 0xF, str(n.args[1] & 0xF))
            key = f"{fam} {typ}"
            self.families[key] = self.families.get(key, 0) + 1
        elif name == "ioctl" and self.learn:
            req = n.args[1] & 0xFFFFFFFF
            rname = IOCTLS.get(req, hex(req))
            self.ioctls[rname] = self.ioctls.get(rname, 0) + 1
        elif name in SOCKADDR_CALLS:
            ai, li = SOCKADDR_CALLS[name]
            if not n.args[ai]:
                return  # sendto on a connected socket: no address
            raw = read_bytes(n.pid, n.args[ai], min(n.args[li] & 0xFFFFFFFF, 128))
            addr = parse_sockaddr(raw)
            if addr is None or not notify.id_valid(self.fd, n.id):
                return
            if self.learn:
                self._endpoint(name, addr)
            if name == "connect" and self.attempts_on:
                self._attempt(addr)

    def _endpoint(self, op: str, addr: dict[str, Any]) -> None:
        key = (op, addr.get("family"), addr.get("address"), addr.get("port"))
        cur = self.endpoints.get(key)
        if cur is not None:
            cur["count"] += 1
        elif len(self.endpoints) < MAX_ENDPOINTS:
            self.endpoints[key] = {"op": op, **addr, "count": 1}

    def _attempt(self, addr: dict[str, Any]) -> None:
        """A connect the network mode cannot carry: say so (the kernel refuses it)."""
        if addr.get("family") not in ("AF_INET", "AF_INET6") or self.mode == "allowlist":
            return
        address = str(addr.get("address", ""))
        if self.mode == "loopback" and _loopback(address):
            return
        port = int(addr.get("port") or 0)
        key = (address, port)
        cur = self.attempts.get(key)
        if cur is not None:
            cur["count"] += 1
            return
        if len(self.attempts) >= MAX_ATTEMPTS:
            return
        self.attempts[key] = {"address": address, "port": port, "family": addr["family"],
                              "count": 1}
        from engine import events as ev

        why = ("network mode none: the sandbox has no network interfaces"
               if self.mode == "none" else
               "network mode loopback: only the sandbox's own loopback is reachable")
        self.sb.emit(ev.NetworkRequest(self.sb.id, self.sb.now(), id=len(self.attempts),
                                       state="refused", host=address, port=port,
                                       allowed=False, rule=f"network-{self.mode}", reason=why,
                                       via="direct", address=address))

    def _on_event(self, e: Any) -> None:
        kind = getattr(e, "kind", "")
        if kind == "resource_sample":
            if e.pids_current:
                self.peak_pids = max(self.peak_pids, int(e.pids_current))
            if e.memory_peak:
                self.peak_memory = max(self.peak_memory, int(e.memory_peak))
            elif e.memory_current:
                self.peak_memory = max(self.peak_memory, int(e.memory_current))
            if e.cpu_percent:
                self.peak_cpu_percent = max(self.peak_cpu_percent, float(e.cpu_percent))
        elif kind == "process_started":
            self.processes += 1
        elif kind == "network_request" and getattr(e, "via", "") != "direct":
            host = getattr(e, "host", "")
            if host:
                self._hosts.add(host)

    # --- the end ---------------------------------------------------------------------------

    def finish(self, result: Any) -> None:
        """Put what was seen into the result (and, learning, the LearnSummary event)."""
        if self.paths is not None:
            result.paths_missing = self.paths.summary()
            self.paths.close()
        if self.attempts:
            result.network = dict(result.network)
            result.network["attempts"] = list(self.attempts.values())
        if self.learn:
            obs = self.observation(result)
            result.observed = obs.to_dict()
            from engine import events as ev

            d = result.observed
            self.sb.emit(ev.LearnSummary(self.sb.id, self.sb.now(), observed=d))

    def observation(self, result: Any) -> Any:
        from engine.learn.observation import Observation
        from engine.seccomp import LEARN_CORE

        obs = Observation(base=self.sb.profile.name)
        obs.runs.append({"command": list(self.sb.argv), "exit_code": result.exit_code,
                         "wall_seconds": result.wall_seconds})
        obs.syscalls = dict(self.counts)
        receiver = getattr(self.listener, "receiver", None)
        for nr, n in (receiver.counts.items() if receiver is not None else ()):
            name = self.listener.filt.name_of(nr)
            obs.syscalls[name] = obs.syscalls.get(name, 0) + n
        allowed = self.sb.profile.seccomp.allow
        obs.core = sorted(n for n in LEARN_CORE if n in allowed)
        obs.denied = {k: {"count": v["count"], "errno": v["errno_name"]}
                      for k, v in (result.denials or {}).items()}
        if self.paths is not None:
            obs.paths = {p: {"ops": set(r["ops"]), "count": r["count"], "exists": r["exists"]}
                         for p, r in self.paths.seen.items()}
            obs.paths_dropped = self.paths.dropped
            obs.missing = {m["place"]: {k: v for k, v in m.items() if k not in ("pid",)}
                           for m in self.paths.missing.values()}
        obs.families = dict(self.families)
        obs.endpoints = sorted(self.endpoints.values(),
                               key=lambda e: (str(e.get("family")), str(e.get("address"))))
        obs.ioctls = dict(self.ioctls)
        obs.hosts = sorted(self._hosts)
        peak_mem = max(result.peak_memory or 0, self.peak_memory) or None
        obs.peaks = {"memory": peak_mem, "pids": self.peak_pids or None,
                     "cpu_seconds": result.cpu_seconds, "wall_seconds": result.wall_seconds,
                     "cpu_percent": round(self.peak_cpu_percent, 1) or None,
                     "processes": self.processes or None}
        return obs


def traced_calls(sb: Any, notify_on: bool) -> tuple[str, ...]:
    """The allowed syscalls a sandbox's options want reported (besides exec and exit)."""
    if not notify_on or sb.learn:
        return ()  # learn mode traces everything outside the core anyway
    out: tuple[str, ...] = ()
    if sb.observe_paths:
        out += tuple(LOOKUPS)
    if _attempts_wanted(sb):
        out += ("connect",)
    return out


def _attempts_wanted(sb: Any) -> bool:
    """Connection attempts are reported when anyone looks: a live run, or observed paths
    (a report for flue explain)."""
    return bool((sb.live or sb.observe_paths) and sb.profile.network.mode in ("none", "loopback"))


def attach(sb: Any, listener: Any) -> None:
    """Give the denial listener the observer and the ask broker the sandbox's options ask
    for (called once, when the listener arrives)."""
    attempts = _attempts_wanted(sb)
    if sb.learn or sb.observe_paths or attempts:
        sb.observer = Observer(sb, listener, learn=sb.learn, paths=sb.observe_paths,
                               attempts=attempts)
        listener.observer = sb.observer
    if sb.learn or sb.observe_paths:
        # every lookup is traced: receive at once, so no waiting call is left interruptible
        from engine.sources.receiver import Receiver

        inspect = set(LOOKUPS) | INSPECTED
        count_only = frozenset(nr for nr, v in listener.filt.table.items()
                               if v.action == "trace" and v.name not in inspect)
        try:
            listener.receiver = Receiver(listener.fd, count_only if sb.learn else frozenset())
        except OSError as err:
            sb.degraded.append(f"no notification receiver ({err}): a signal may interrupt a "
                               "traced syscall with EINTR")
    if sb.ask is not None:
        from engine.sources.ask import AskBroker

        if listener._decoder is None:
            from engine.sources.decode import Decoder

            listener._decoder = Decoder(listener.fd)
        listener.ask = AskBroker(sb, listener, sb.ask)
