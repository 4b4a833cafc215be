"""The supervisor's side of ``allowlist`` networking: proxy, DNS stub, captured connections.

The sandbox's network namespace has only ``lo``. Its PID 1 creates the listening sockets
inside that namespace and hands them over the control socket (``engine.network.inside``), so
nothing of ours runs in the sandbox; this module serves them on the supervisor's loop:

- **proxy** (127.0.0.1:3128 inside): HTTP ``CONNECT host:port`` (tunnels, TLS untouched) and
  plain-HTTP forwarding (``GET http://host/...``, sent on as origin-form with
  ``Connection: close``). A refusal is an HTTP 403 whose reason phrase says why.
- **DNS stub** (127.0.0.1:53 inside, UDP and TCP): an allowlisted name gets an address from
  127.100.0.0/16 that stands for it; every other name gets NXDOMAIN at once.
- **capture** (0.0.0.0:PORT inside, for every port the allowlist names): a program that
  ignores the proxy variables resolves a name through the stub and connects to its stand-in
  address; the supervisor maps that address back to the name, checks the port, and connects
  to the real host itself.
- **direct connects** (seen by the seccomp listener, which reports ``connect`` calls in this
  mode): a connection to an IP address is refused at once (the namespace has no route; the
  answer is ENETUNREACH, or ECONNREFUSED for a stand-in address on a port not allowed) and
  becomes an event.

Every socket is non-blocking and driven by ``add_reader``/``add_writer``/``call_later`` of the
loop the sandbox runs on (asyncio, or the blocking path's MiniLoop). Names are resolved
through the resolver map, else ``getaddrinfo`` in a thread (``engine.network.resolver``).
"""

from __future__ import annotations

import errno as _errno
import fcntl
import ipaddress
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from engine.network import dns
from engine.network.policy import (
    FAKE_NET,
    PROXY_HOST,
    PROXY_PORT,
    Allowlist,
    Decision,
    HostsMap,
    RuleError,
    check_name,
    is_ip_literal,
    normalise_host,
)
from engine.network.resolver import Addr, Resolver

CHUNK = 1 << 20  # spliced at most per call
COPY_CHUNK = 256 * 1024  # read at most per call where bytes pass through our memory
HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
DNS_TCP_TIMEOUT = 10.0
LINGER = 2.0
MAX_CONNECTIONS = 1024
EVENTS_PER_SECOND = 500  # opened/refused requests and DNS queries; beyond: counted, not sent
SUMMARY_HOSTS = 500  # distinct host:port entries kept in the report; the rest are counted
HOP_BY_HOP = {b"connection", b"proxy-connection", b"keep-alive", b"proxy-authorization",
              b"proxy-authenticate", b"te", b"trailer", b"upgrade"}


class FakeAddresses:
    """Stand-in addresses for names, stable for the sandbox's lifetime."""

    def __init__(self, net: ipaddress.IPv4Network = FAKE_NET) -> None:
        self._next = int(net.network_address) + 1
        self._last = int(net.broadcast_address) - 1
        self._by_name: dict[str, str] = {}
        self._by_addr: dict[str, str] = {}

    def address_for(self, name: str) -> str | None:
        addr = self._by_name.get(name)
        if addr is None:
            if self._next > self._last:
                return None
            addr = str(ipaddress.IPv4Address(self._next))
            self._next += 1
            self._by_name[name] = addr
            self._by_addr[addr] = name
        return addr

    def name_of(self, addr: str) -> str | None:
        return self._by_addr.get(addr)


def _guard(fn: Callable[..., None]) -> Callable[..., None]:
    """A loop callback must never raise into the loop (MiniLoop would stop the supervisor):
    a bug closes the connection it concerns and is reported once."""

    def wrapped(self: Any, *args: Any) -> None:
        try:
            fn(self, *args)
        except Exception as err:  # noqa: BLE001
            svc = self if isinstance(self, NetworkService) else self.svc
            svc.internal_error(err)
            if not isinstance(self, NetworkService):
                self.close()

    return wrapped


def _rst_close(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def tls_server_name(data: bytes) -> str:
    """The SNI of a TLS ClientHello at the start of ``data``, or ""."""
    try:
        if len(data) < 5 or data[0] != 0x16 or data[5] != 0x01:
            return ""
        pos = 5 + 4 + 2 + 32  # record header, handshake header, version, random
        pos += 1 + data[pos]  # session id
        (n,) = struct.unpack_from("!H", data, pos)
        pos += 2 + n  # cipher suites
        pos += 1 + data[pos]  # compression methods
        (ext_len,) = struct.unpack_from("!H", data, pos)
        pos += 2
        end = min(len(data), pos + ext_len)
        while pos + 4 <= end:
            etype, elen = struct.unpack_from("!HH", data, pos)
            pos += 4
            if etype == 0:  # server_name
                p = pos + 2
                while p + 3 <= pos + elen:
                    ntype, nlen = data[p], struct.unpack_from("!H", data, p + 1)[0]
                    if ntype == 0:
                        return data[p + 3:p + 3 + nlen].decode("ascii", "replace").lower()
                    p += 3 + nlen
                return ""
            pos += elen
    except (IndexError, struct.error):
        pass
    return ""


class Request:
    """The record of one connection attempt, turned into NetworkRequest events."""

    _ids = itertools.count(1)

    def __init__(self, svc: NetworkService, via: str, host: str, port: int) -> None:
        self.svc = svc
        self.id = next(Request._ids)
        self.via = via
        self.host = host
        self.port = port
        self.t0 = time.monotonic()
        self.rule = ""
        self.reason = ""
        self.allowed = False
        self.address = ""
        self.sni = ""
        self.up = 0
        self.down = 0
        self.ended = False

    def event(self, state: str) -> Any:
        from engine import events as ev

        return ev.NetworkRequest(
            self.svc.sb.id, self.svc.sb.now(), id=self.id, state=state, host=self.host,
            port=self.port, allowed=self.allowed, rule=self.rule, reason=self.reason,
            via=self.via, address=self.address, sni=self.sni, bytes_up=self.up,
            bytes_down=self.down, duration=round(time.monotonic() - self.t0, 6))

    def refused(self, d: Decision) -> None:
        self.allowed, self.rule, self.reason = False, d.rule, d.reason
        self._end("refused")

    def opened(self, address: str) -> None:
        self.address = address
        self.svc.emit_request(self, "open")

    def failed(self, reason: str) -> None:
        self.reason = reason
        self._end("failed")

    def closed(self) -> None:
        self._end("closed")

    def _end(self, state: str) -> None:
        if self.ended or not self.host:  # never got as far as a request: nothing to report
            return
        self.ended = True
        self.svc.emit_request(self, state)


# --- connections -------------------------------------------------------------------------


class _Conn:
    """Registration bookkeeping shared by every connection object."""

    def __init__(self, svc: NetworkService) -> None:
        self.svc = svc
        self.loop = svc.loop
        self._readers: set[int] = set()
        self._writers: set[int] = set()
        self._timer: Any = None
        self.dead = False
        svc.conns.add(self)

    def want_read(self, sock: socket.socket, cb: Callable[..., None], *args: Any) -> None:
        fd = sock.fileno()
        self.loop.add_reader(fd, cb, *args)
        self._readers.add(fd)

    def unwant_read(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._readers:
            self._readers.discard(fd)
            self.loop.remove_reader(fd)

    def want_write(self, sock: socket.socket, cb: Callable[..., None], *args: Any) -> None:
        fd = sock.fileno()
        self.loop.add_writer(fd, cb, *args)
        self._writers.add(fd)

    def unwant_write(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._writers:
            self._writers.discard(fd)
            self.loop.remove_writer(fd)

    def timer(self, delay: float, cb: Callable[[], None]) -> None:
        self.cancel_timer()
        self._timer = self.loop.call_later(delay, cb)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def unregister(self) -> None:
        for fd in self._readers:
            self.loop.remove_reader(fd)
        for fd in self._writers:
            self.loop.remove_writer(fd)
        self._readers.clear()
        self._writers.clear()
        self.cancel_timer()
        self.svc.conns.discard(self)

    def close(self) -> None:
        raise NotImplementedError


_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20


def _pipe() -> tuple[int, int] | None:
    """A pipe for splice(2): bytes go socket -> pipe -> socket inside the kernel, never
    through our memory. None where splice is unavailable (the copying path is used)."""
    if not hasattr(os, "splice"):
        return None
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass
    return r, w


class _Direction:
    __slots__ = ("count", "done", "dst", "eof", "first", "in_pipe", "pending", "pipe", "src")

    def __init__(self, src: socket.socket, dst: socket.socket, sniff: bool) -> None:
        self.src = src
        self.dst = dst
        self.pending: memoryview | None = None  # copied bytes dst has not taken yet
        self.pipe = _pipe()
        self.in_pipe = 0  # spliced bytes dst has not taken yet
        self.eof = False
        self.done = False
        self.count = 0
        self.first = sniff  # the first chunk is read (and looked at) rather than spliced

    @property
    def backlog(self) -> bool:
        return self.pending is not None or self.in_pipe > 0

    def close_pipe(self) -> None:
        if self.pipe is not None:
            os.close(self.pipe[0])
            os.close(self.pipe[1])
            self.pipe = None


class Tunnel(_Conn):
    """Bytes both ways between the sandbox's socket and the upstream one (spliced inside the
    kernel where possible), with back pressure (a side is read only while the other has
    taken everything so far) and half-close (EOF one way is passed on as shutdown(SHUT_WR)).
    The sandbox's first chunk is read rather than spliced, to record its TLS server name."""

    def __init__(self, svc: NetworkService, req: Request, client: socket.socket,
                 upstream: socket.socket, initial_up: bytes = b"") -> None:
        super().__init__(svc)
        self.req = req
        self.client = client
        self.upstream = upstream
        self.up = _Direction(client, upstream, sniff=True)
        self.down = _Direction(upstream, client, sniff=False)
        if initial_up:
            self._sniff(self.up, initial_up)
            self.up.count += len(initial_up)
            if not self._send(self.up, initial_up):
                return
        if not self.up.backlog:
            self.want_read(client, self._on_read, self.up)
        self.want_read(upstream, self._on_read, self.down)

    def _sniff(self, d: _Direction, data: bytes) -> None:
        if d.first:
            d.first = False
            self.req.sni = tls_server_name(data)

    def _blocked(self, d: _Direction) -> None:
        """dst takes no more for now: stop reading src until it does."""
        self.unwant_read(d.src)
        self.want_write(d.dst, self._on_write, d)

    def _send(self, d: _Direction, data: bytes | memoryview) -> bool:
        """Send what the other side takes now; keep the rest. False: the tunnel died."""
        try:
            n = d.dst.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.close()
            return False
        if n < len(data):
            d.pending = memoryview(data)[n:]
            self._blocked(d)
        return True

    def _drain(self, d: _Direction) -> bool:
        """Move spliced bytes on to dst while it takes them. False: the tunnel died."""
        assert d.pipe is not None
        while d.in_pipe:
            try:
                k = os.splice(d.pipe[0], d.dst.fileno(), d.in_pipe, flags=_SPLICE_FLAGS)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self.close()
                return False
            if k <= 0:
                return True
            d.in_pipe -= k
        return True

    @_guard
    def _on_read(self, d: _Direction) -> None:
        for _ in range(4):
            if d.pipe is not None and not d.first:
                try:
                    n = os.splice(d.src.fileno(), d.pipe[1], CHUNK, flags=_SPLICE_FLAGS)
                except (BlockingIOError, InterruptedError):
                    return  # nothing to read: the pipe is always empty when we read
                except OSError as err:
                    if err.errno == _errno.EINVAL:  # not spliceable here: copy instead
                        d.close_pipe()
                        continue
                    self.close()
                    return
                if n == 0:
                    self._eof(d)
                    return
                d.count += n
                d.in_pipe += n
                if not self._drain(d):
                    return
                if d.in_pipe:
                    self._blocked(d)
                    return
                if n < CHUNK:
                    return
                continue
            try:
                data = d.src.recv(COPY_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not data:
                self._eof(d)
                return
            self._sniff(d, data)
            d.count += len(data)
            if not self._send(d, data) or d.pending is not None:
                return
            if len(data) < COPY_CHUNK:
                return

    def _eof(self, d: _Direction) -> None:
        d.eof = True
        self.unwant_read(d.src)
        self._shut(d)

    @_guard
    def _on_write(self, d: _Direction) -> None:
        if d.pending is not None:
            try:
                n = d.dst.send(d.pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            d.pending = d.pending[n:] if n < len(d.pending) else None
        elif d.in_pipe and not self._drain(d):
            return
        if d.backlog:
            return
        self.unwant_write(d.dst)
        if d.eof:
            self._shut(d)
        else:
            self.want_read(d.src, self._on_read, d)

    def _shut(self, d: _Direction) -> None:
        if d.backlog or d.done:
            return
        d.done = True
        try:
            d.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if self.up.done and self.down.done:
            self.close()

    def close(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.unregister()
        self.req.up, self.req.down = self.up.count, self.down.count
        self.up.close_pipe()
        self.down.close_pipe()
        self.client.close()
        self.upstream.close()
        self.req.closed()


class Connector(_Conn):
    """Connect to the first address of ``addrs`` that answers, non-blocking."""

    def __init__(self, svc: NetworkService, addrs: list[Addr],
                 done: Callable[[socket.socket | None, str, str], None]) -> None:
        super().__init__(svc)
        self.addrs = list(addrs)
        self.done = done
        self.sock: socket.socket | None = None
        self.last_err = "no address"
        self._next()

    def _next(self) -> None:
        while self.addrs:
            fam, sa = self.addrs.pop(0)
            s = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            err = s.connect_ex(sa)
            if err == 0:
                self._finish(s, sa)
                return
            if err == _errno.EINPROGRESS:
                self.sock = s
                self.sa = sa
                self.want_write(s, self._on_writable)
                self.timer(CONNECT_TIMEOUT, self._on_timeout)
                return
            self.last_err = f"{_fmt(sa)}: {os.strerror(err)}"
            s.close()
        self._fail()

    @_guard
    def _on_writable(self) -> None:
        s = self.sock
        assert s is not None
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            try:
                s.getpeername()
            except OSError:
                return  # woken early (an fd number reused in the same round): still connecting
        self.unwant_write(s)
        self.cancel_timer()
        self.sock = None
        if err == 0:
            self._finish(s, self.sa)
            return
        self.last_err = f"{_fmt(self.sa)}: {os.strerror(err)}"
        s.close()
        self._next()

    @_guard
    def _on_timeout(self) -> None:
        self._timer = None
        if self.sock is not None:
            self.unwant_write(self.sock)
            self.sock.close()
            self.sock = None
            self.last_err = f"{_fmt(self.sa)}: timed out after {CONNECT_TIMEOUT:g} s"
        self._next()

    def _finish(self, s: socket.socket, sa: tuple[Any, ...]) -> None:
        self.dead = True
        self.unregister()
        self.done(s, "", _fmt(sa))

    def _fail(self) -> None:
        self.dead = True
        self.unregister()
        self.done(None, self.last_err, "")

    def close(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.unregister()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _fmt(sa: tuple[Any, ...]) -> str:
    host = sa[0]
    return f"[{host}]:{sa[1]}" if ":" in host else f"{host}:{sa[1]}"


class _Upstream(_Conn):
    """Something that resolves a name, connects, then becomes a Tunnel."""

    def __init__(self, svc: NetworkService, client: socket.socket, req: Request) -> None:
        super().__init__(svc)
        self.client = client
        self.req = req
        self.connector: Connector | None = None
        self.gave_up = False  # answered already (timeout): late results are dropped

    def go(self) -> None:
        self.svc.resolver.resolve(self.req.host, self.req.port, self._resolved)
        self.timer(CONNECT_TIMEOUT * 3, self._on_slow)

    @_guard
    def _resolved(self, addrs: list[Addr], err: str) -> None:
        if self.dead or self.gave_up:
            return
        if err:
            self.cancel_timer()
            self.upstream_failed(502, err)
            return
        self.connector = Connector(self.svc, addrs, self._connected)

    @_guard
    def _on_slow(self) -> None:
        self._timer = None
        self.gave_up = True
        if self.connector is not None:
            self.connector.close()
        self.upstream_failed(504, f"no answer from {self.req.host}:{self.req.port}")

    @_guard
    def _connected(self, sock: socket.socket | None, err: str, address: str) -> None:
        self.connector = None
        self.cancel_timer()
        if self.dead or self.gave_up:
            if sock is not None:
                sock.close()
            return
        if sock is None:
            self.upstream_failed(502, f"cannot connect to {self.req.host}:{self.req.port} ({err})")
            return
        self.req.opened(address)
        self.dead = True
        self.unregister()
        self.start_tunnel(sock)

    def start_tunnel(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def upstream_failed(self, status: int, reason: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.unregister()
        if self.connector is not None:
            self.connector.close()
        self.client.close()
        self.req.failed("the connection ended before the host was reached")


class Captured(_Upstream):
    """A connection to a stand-in address: the name is known from the DNS stub."""

    def start_tunnel(self, sock: socket.socket) -> None:
        Tunnel(self.svc, self.req, self.client, sock)

    def upstream_failed(self, status: int, reason: str) -> None:
        self.dead = True
        self.unregister()
        _rst_close(self.client)
        self.req.failed(reason)


class ProxyClient(_Upstream):
    """One connection to the proxy: read the request head, decide, then tunnel."""

    def __init__(self, svc: NetworkService, client: socket.socket) -> None:
        super().__init__(svc, client, Request(svc, "proxy", "", 0))
        self.buf = b""
        self.head_out = b""  # what goes upstream first (a forwarded request's head)
        self.rest = b""  # what the client sent after the head
        self.connect_method = True
        self.answered = False
        self.want_read(client, self._on_head)
        self.timer(HEAD_TIMEOUT, self._on_head_timeout)

    @_guard
    def _on_head_timeout(self) -> None:
        self._timer = None
        self._answer(408, "flue: no request from the client")

    @_guard
    def _on_head(self) -> None:
        try:
            data = self.client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.dead = True
            self.unregister()
            self.client.close()
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        sep = 4
        if end < 0:
            end, sep = self.buf.find(b"\n\n"), 2
        if end < 0:
            if len(self.buf) > HEAD_LIMIT:
                self._answer(431, "flue: request head too large")
            return
        self.unwant_read(self.client)
        self.cancel_timer()
        head, rest = self.buf[:end], self.buf[end + sep:]
        self.buf = b""
        self._request(head, rest)

    def _request(self, head: bytes, rest: bytes) -> None:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            self._answer(400, "flue: not an HTTP proxy request")
            return
        method, target, version = (p.decode("latin-1") for p in parts)
        if method.upper() == "CONNECT":
            host, port = _authority(target, 443)
            via = "proxy"
        else:
            self.connect_method = False
            via = "http"
            try:
                u = urlsplit(target)
                host, port, scheme = (u.hostname or ""), (u.port or 80), u.scheme.lower()
            except ValueError:
                host, port, scheme = "", 0, ""
            if scheme != "http" or not host:
                self._answer(400, "flue: the proxy takes CONNECT, or a request for an "
                             "http:// URL")
                return
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            self.head_out = _forward_head(method, path, version, lines[1:], host, port)
        self.req.via = via
        self.req.host = normalise_host(host) if host else target
        self.req.port = port
        decision = self.svc.decide(self.req.host, port)
        if not decision.allowed:
            self.req.refused(decision)
            self._answer(403, f"flue: {decision.reason}")
            return
        self.req.allowed, self.req.rule, self.req.reason = True, decision.rule, decision.reason
        self.rest = rest
        self.go()

    def start_tunnel(self, sock: socket.socket) -> None:
        if self.connect_method:
            try:
                self.client.send(b"HTTP/1.1 200 Connection established\r\n"
                                 b"Via: 1.1 flue\r\n\r\n")
            except OSError:
                sock.close()
                self.client.close()
                self.req.closed()
                return
            Tunnel(self.svc, self.req, self.client, sock, self.rest)
        else:
            Tunnel(self.svc, self.req, self.client, sock, self.head_out + self.rest)

    def upstream_failed(self, status: int, reason: str) -> None:
        self.req.failed(reason)
        self._answer(status, f"flue: {reason}")

    def _answer(self, status: int, reason: str) -> None:
        """Send an error response and close (reading until EOF first, so that what the
        client had already sent does not turn our answer into a reset)."""
        self.answered = True
        reason = reason.replace("\r", " ").replace("\n", " ")
        body = (reason + "\n").encode("utf-8", "replace")
        resp = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\nX-Flue: refused\r\n\r\n"
                ).encode("utf-8", "replace") + body
        self.unregister()
        self.svc.conns.add(self)
        try:
            self.client.send(resp)
            self.client.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop()
            return
        self.want_read(self.client, self._drain)
        self.timer(LINGER, self._drop)

    @_guard
    def _drain(self) -> None:
        try:
            data = self.client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop()

    def _drop(self) -> None:
        self._timer = None
        self.dead = True
        self.unregister()
        self.client.close()

    def close(self) -> None:
        if self.answered:
            if not self.dead:
                self._drop()
            return
        super().close()


def _authority(target: str, default_port: int) -> tuple[str, int]:
    host, port = target, default_port
    if target.startswith("["):
        end = target.find("]")
        host = target[1:end] if end > 0 else target
        rest = target[end + 1:] if end > 0 else ""
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif target.count(":") == 1:
        h, _, p = target.partition(":")
        if p.isdigit():
            host, port = h, int(p)
    return host, port if 0 < port < 65536 else 0


def _forward_head(method: str, path: str, version: str, header_lines: list[bytes], host: str,
                  port: int) -> bytes:
    out = [f"{method} {path} {version}".encode("latin-1")]
    hop = set(HOP_BY_HOP)
    for line in header_lines:
        name = line.split(b":", 1)[0].strip().lower()
        if name == b"connection":
            hop |= {t.strip().lower() for t in line.split(b":", 1)[1].split(b",")}
    for line in header_lines:
        if not line.strip():
            continue
        name = line.split(b":", 1)[0].strip().lower()
        if name in hop or name == b"host":
            continue
        out.append(line)
    authority = host if port == 80 else f"{host}:{port}"
    out.insert(1, f"Host: {authority}".encode("latin-1"))
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n"


class DnsTcp(_Conn):
    """DNS over TCP: two-byte length, message, as many as the client sends."""

    def __init__(self, svc: NetworkService, sock: socket.socket) -> None:
        super().__init__(svc)
        self.sock = sock
        self.buf = b""
        self.want_read(sock, self._on_read)
        self.timer(DNS_TCP_TIMEOUT, self.close)

    @_guard
    def _on_read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.buf += data
        while len(self.buf) >= 2:
            (n,) = struct.unpack_from("!H", self.buf)
            if len(self.buf) < 2 + n:
                break
            msg, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
            resp = self.svc.dns_answer(msg, "tcp")
            if resp is not None:
                try:
                    self.sock.sendall(struct.pack("!H", len(resp)) + resp)
                except OSError:
                    self.close()
                    return
        if len(self.buf) > 70000:
            self.close()

    def close(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.unregister()
        self.sock.close()


# --- the service ----------------------------------------------------------------------------


class NetworkService:
    def __init__(self, sandbox: Any, allow: tuple[str, ...], hosts: HostsMap,
                 sockets: dict[str, socket.socket]) -> None:
        self.sb = sandbox
        self.loop = sandbox._loop
        self.allowlist = Allowlist(allow)
        self.hosts = hosts
        self.sockets = sockets
        self.capture_ports = frozenset(int(k.split(":", 1)[1]) for k in sockets
                                       if k.startswith("capture:"))
        self.fake = FakeAddresses()
        self.resolver = Resolver(self.loop, hosts)
        self.conns: set[_Conn] = set()
        self.stopped = False
        self._errors = 0
        # the summary
        self.totals = {"allowed": 0, "refused": 0, "failed": 0, "bytes_up": 0, "bytes_down": 0}
        self.hosts_seen: dict[str, dict[str, Any]] = {}
        self.other_hosts = 0
        self.dns = {"queries": 0, "answered": 0, "refused": 0}
        self.dns_names: dict[str, dict[str, Any]] = {}
        self._window = 0.0
        self._window_count = 0
        self._suppressed = 0

    # --- set-up and teardown

    def start(self) -> None:
        for key, s in self.sockets.items():
            s.setblocking(False)
            if key == "dns-udp":
                self.loop.add_reader(s.fileno(), self._on_dns_udp, s)
            else:
                self.loop.add_reader(s.fileno(), self._on_accept, key, s)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for s in self.sockets.values():
            self.loop.remove_reader(s.fileno())
            s.close()
        self.sockets = {}
        for c in list(self.conns):
            c.close()
        self.conns.clear()
        self.resolver.close()
        if self.sb._wants_events():
            self._flush_suppressed()

    def internal_error(self, err: BaseException) -> None:
        self._errors += 1
        if self._errors == 1:
            self.sb.degraded.append(f"network proxy: {type(err).__name__}: {err}")

    # --- decisions

    def decide(self, host: str, port: int) -> Decision:
        """The allowlist's verdict; a stand-in address counts as the name it stands for."""
        if not port:
            return Decision(False, "bad-request", f"{host}: no valid port")
        if is_ip_literal(host):
            name = self.fake.name_of(host.strip("[]"))
            return self.allowlist.decide(name or host, port)
        try:
            check_name(host)
        except RuleError as err:
            return Decision(False, "bad-name", str(err))
        return self.allowlist.decide(host, port)

    # --- listeners

    def _on_accept(self, key: str, lsock: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, _peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            if len(self.conns) >= MAX_CONNECTIONS:
                _rst_close(conn)
                self.internal_error(OSError(_errno.EMFILE, f"more than {MAX_CONNECTIONS} "
                                            "connections at once; refusing new ones"))
                continue
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if key == "proxy":
                    ProxyClient(self, conn)
                elif key == "dns-tcp":
                    DnsTcp(self, conn)
                else:
                    self._captured(conn)
            except Exception as err:  # noqa: BLE001
                self.internal_error(err)
                conn.close()

    def _captured(self, conn: socket.socket) -> None:
        addr, port = conn.getsockname()[:2]
        name = self.fake.name_of(addr)
        req = Request(self, "capture", name or addr, port)
        d = self.decide(name, port) if name else Decision(
            False, "ip-address", f"{addr}:{port} is an address, not a name the DNS stub gave out")
        if not d.allowed:
            req.refused(d)
            _rst_close(conn)
            return
        req.allowed, req.rule, req.reason = True, d.rule, d.reason
        Captured(self, conn, req).go()

    # --- DNS

    def _on_dns_udp(self, s: socket.socket) -> None:
        for _ in range(64):
            try:
                data, peer = s.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                resp = self.dns_answer(data, "udp")
            except Exception as err:  # noqa: BLE001
                self.internal_error(err)
                resp = dns.error_response(data, dns.SERVFAIL)
            if resp is not None:
                try:
                    s.sendto(resp, peer)
                except OSError:
                    pass

    def dns_answer(self, data: bytes, transport: str) -> bytes | None:
        self.dns["queries"] += 1
        try:
            q = dns.parse_query(data)
        except dns.BadQuery:
            self.dns["refused"] += 1
            return dns.error_response(data, dns.FORMERR)
        rule = self.allowlist.name_allowed(q.name) if q.name else None
        answers: tuple[str, ...] = ()
        if (q.flags >> 11) & 0xF:
            rcode = dns.NOTIMP
        elif q.qclass != dns.CLASS_IN or rule is None:
            rcode = dns.NXDOMAIN if q.qclass == dns.CLASS_IN else dns.REFUSED
        else:
            rcode = dns.NOERROR
            if q.qtype == dns.TYPE_A:
                addr = self.fake.address_for(q.name)
                if addr is None:
                    rcode = dns.SERVFAIL
                else:
                    answers = (addr,)
        allowed = rcode == dns.NOERROR
        self.dns["answered" if allowed else "refused"] += 1
        entry = self.dns_names.get(q.name)
        if entry is None and len(self.dns_names) < SUMMARY_HOSTS:
            entry = self.dns_names[q.name] = {"queries": 0, "allowed": allowed,
                                              "rule": rule.text if rule else ""}
        if entry is not None:
            entry["queries"] += 1
        if self._may_emit():
            from engine import events as ev

            self.sb.emit(ev.DnsQuery(self.sb.id, self.sb.now(), name=q.name,
                                     qtype=q.qtype_name, allowed=allowed,
                                     rule=rule.text if rule else "", answers=answers,
                                     rcode=dns.RCODES.get(rcode, str(rcode)),
                                     transport=transport))
        return dns.response(q, rcode, answers)

    # --- direct connects (from the seccomp listener)

    def on_connect(self, sockaddr: bytes, sock_type: Callable[[], int | None]) -> int:
        """A process in the sandbox calls connect(); returns the errno to answer with, or 0
        to let the kernel go on. The namespace enforces the same on its own (no route); this
        only makes a refusal immediate and clear, and records it."""
        if len(sockaddr) < 2:
            return 0
        fam = int.from_bytes(sockaddr[:2], "little")
        if fam == socket.AF_INET and len(sockaddr) >= 8:
            port = int.from_bytes(sockaddr[2:4], "big")
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
                sockaddr[4:8])
        elif fam == socket.AF_INET6 and len(sockaddr) >= 24:
            port = int.from_bytes(sockaddr[2:4], "big")
            ip = ipaddress.IPv6Address(sockaddr[8:24])
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
        else:
            return 0
        addr = str(ip)
        if isinstance(ip, ipaddress.IPv4Address) and ip in FAKE_NET:
            name = self.fake.name_of(addr)
            if name is not None:
                d = self.allowlist.decide(name, port)
                if d.allowed and port in self.capture_ports:
                    return 0
                if d.allowed:  # allowed, but on a port PID 1 does not listen on (3128, 53)
                    d = Decision(False, "port", f"{name}:{port} is reached through the proxy "
                                 f"only ({PROXY_HOST}:{PROXY_PORT})")
            else:
                d = Decision(False, "ip-address", f"{addr}:{port} stands for no name")
            return self._direct_refusal(name or addr, port, d, _errno.ECONNREFUSED, sock_type,
                                        local=True)
        if ip.is_loopback or ip.is_unspecified:
            if port in self.capture_ports and isinstance(ip, ipaddress.IPv4Address):
                d = Decision(False, "ip-address", f"{addr}:{port} is an address; only "
                             "allowlisted names are reachable")
                return self._direct_refusal(addr, port, d, _errno.ECONNREFUSED, sock_type,
                                            local=True)
            return 0  # the sandbox's own loopback
        d = Decision(False, "ip-address", f"{addr}:{port} is an IP address; only allowlisted "
                     "names are reachable (the sandbox has no route out)")
        return self._direct_refusal(addr, port, d, _errno.ENETUNREACH, sock_type, local=False)

    def _direct_refusal(self, host: str, port: int, d: Decision, eno: int,
                        sock_type: Callable[[], int | None], *, local: bool) -> int:
        """Record a refused connect(). A UDP socket's connect() sends nothing: on the
        sandbox's own loopback it is let be, elsewhere recorded and left to the kernel."""
        if sock_type() == socket.SOCK_DGRAM:
            if not local:
                Request(self, "direct-udp", host, port).refused(d)
            return 0
        Request(self, "direct", host, port).refused(d)
        return eno

    # --- events and the summary

    def emit_request(self, req: Request, state: str) -> None:
        if state != "open":
            total = "allowed" if state == "closed" else state
            self.totals[total] += 1
            self.totals["bytes_up"] += req.up
            self.totals["bytes_down"] += req.down
            key = f"{req.host}:{req.port}"
            entry = self.hosts_seen.get(key)
            if entry is None:
                if len(self.hosts_seen) >= SUMMARY_HOSTS:
                    self.other_hosts += 1
                else:
                    entry = self.hosts_seen[key] = {
                        "allowed": req.allowed, "rule": req.rule, "requests": 0,
                        "refused": 0, "failed": 0, "bytes_up": 0, "bytes_down": 0,
                        "via": []}
            if entry is not None:
                entry["requests"] += 1
                if state in ("refused", "failed"):
                    entry[state] += 1
                    entry["reason"] = req.reason
                entry["bytes_up"] += req.up
                entry["bytes_down"] += req.down
                if req.via not in entry["via"]:
                    entry["via"].append(req.via)
        if state in ("closed", "failed") and self.sb._wants_events():
            self.sb.emit(req.event(state))  # never dropped: each ends what "open" began
        elif self._may_emit():
            self.sb.emit(req.event(state))

    def _may_emit(self) -> bool:
        """At most EVENTS_PER_SECOND a second: a flood of connects or queries is counted in
        the summary, and a notice says how many were not reported one by one."""
        if not self.sb._wants_events():
            return False
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._flush_suppressed()
            self._window, self._window_count = now, 0
        if self._window_count >= EVENTS_PER_SECOND:
            self._suppressed += 1
            return False
        self._window_count += 1
        return True

    def _flush_suppressed(self) -> None:
        if not self._suppressed:
            return
        from engine import events as ev

        self.sb.emit(ev.Notice(self.sb.id, self.sb.now(), level="warning", source="network",
                               message=f"{self._suppressed} network requests and DNS queries "
                               "in the last second were counted but not reported one by one"))
        self._suppressed = 0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": "allowlist",
            "allow": [r.text for r in self.allowlist.rules],
            "proxy": f"{PROXY_HOST}:{PROXY_PORT}",
            "requests": dict(self.totals),
            "hosts": self.hosts_seen,
            "dns": {**self.dns, "names": self.dns_names},
        }
        if self.other_hosts:
            out["hosts_not_listed"] = self.other_hosts
        return out


def adopt_sockets(names: list[str], fds: list[int]) -> dict[str, socket.socket]:
    """The listening sockets PID 1 sent, by name ("proxy", "dns-udp", "dns-tcp",
    "capture:443" ...). Extra fds are closed."""
    out: dict[str, socket.socket] = {}
    for i, fd in enumerate(fds):
        if i < len(names):
            out[names[i]] = socket.socket(fileno=fd)
        else:
            os.close(fd)
    return out
