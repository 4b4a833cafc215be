"""Name resolution for the supervisor's proxy, off the event loop.

The resolver map (``[network] hosts`` or the ``Sandbox(hosts=...)`` option) answers first
and at once. Other names go to ``socket.getaddrinfo`` in a small pool of daemon threads; a
finished lookup wakes the loop through a pipe, so this works the same on asyncio and on the
blocking path's MiniLoop. Addresses the system resolver gives that point back at this machine
(loopback, unspecified) or at link-local services (169.254.0.0/16, where cloud metadata
lives) are dropped: an allowlisted name must not become a way into the host. Addresses from
the map are used as written: the map is the user's own statement.
"""

from __future__ import annotations

import collections
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from engine.network.policy import HostsMap

Addr = tuple[int, tuple[Any, ...]]  # (family, sockaddr)
Callback = Callable[[list[Addr], str], None]  # (addresses, error)

WORKERS = 4


def unsafe_address(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast


def sockaddr_for(addr: str, port: int) -> Addr:
    ip = ipaddress.ip_address(addr)
    if ip.version == 6:
        return socket.AF_INET6, (addr, port, 0, 0)
    return socket.AF_INET, (addr, port)


class Resolver:
    def __init__(self, loop: Any, hosts: HostsMap,
                 getaddrinfo: Callable[..., Any] = socket.getaddrinfo) -> None:
        self.loop = loop
        self.hosts = hosts
        self._gai = getaddrinfo
        self._jobs: collections.deque[tuple[str, int, Callback]] = collections.deque()
        self._done: collections.deque[tuple[Callback, list[Addr], str]] = collections.deque()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        loop.add_reader(self._r, self._drain)

    def resolve(self, host: str, port: int, cb: Callback) -> str:
        """Calls ``cb(addresses, error)`` later, on the loop. Returns how: "map" or "system"."""
        mapped = self.hosts.lookup(host)
        if mapped is not None:
            self.loop.call_soon(cb, [sockaddr_for(mapped, port)], "")
            return "map"
        with self._cond:
            self._jobs.append((host, port, cb))
            if self._idle:
                self._cond.notify()
            elif self._threads < WORKERS:
                self._threads += 1
                threading.Thread(target=self._worker, name="flue-resolver", daemon=True).start()
        return "system"

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if self._closed:
                    self._threads -= 1
                    return
                host, port, cb = self._jobs.popleft()
            addrs, err = self._lookup(host, port)
            with self._lock:  # close() holds it too: the pipe is still ours while we write
                if self._closed:
                    continue
                self._done.append((cb, addrs, err))
                try:
                    os.write(self._w, b"x")
                except OSError:
                    pass

    def _lookup(self, host: str, port: int) -> tuple[list[Addr], str]:
        try:
            infos = self._gai(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            return [], f"cannot resolve {host}: {err.strerror or err}"
        out: list[Addr] = []
        dropped = []
        for fam, _type, _proto, _canon, sa in infos:
            if fam not in (socket.AF_INET, socket.AF_INET6):
                continue
            if unsafe_address(sa[0]):
                dropped.append(sa[0])
                continue
            if (fam, sa) not in out:
                out.append((fam, sa))
        if not out and dropped:
            return [], (f"{host} resolves to {', '.join(dropped)}: this machine's own or "
                        "link-local addresses are never reached through the proxy")
        if not out:
            return [], f"cannot resolve {host}: no address"
        return out, ""

    def _drain(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        except OSError:
            return
        while True:
            with self._lock:
                if not self._done:
                    return
                cb, addrs, err = self._done.popleft()
            cb(addrs, err)

    def close(self) -> None:
        if self._closed:
            return
        self.loop.remove_reader(self._r)
        with self._cond:
            self._closed = True
            self._jobs.clear()
            self._done.clear()
            self._cond.notify_all()
            os.close(self._r)
            os.close(self._w)
