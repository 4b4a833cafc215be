"""Lean stand-ins for the standard library modules ``flue run`` would otherwise import.

A cold ``flue run -- /bin/true`` is a few tens of milliseconds, and importing ``json``,
``socket``, ``signal``, ``hashlib`` and ``typing`` was a third of it: each pulls ``re``,
``enum``, ``selectors`` or OpenSSL, for a run that needs none of what they add. The C modules
under them do the work:

- ``signal``: ``_signal`` (the same functions; numbers and handlers come back as plain ints,
  not enums: ``signal_name()`` gives a number's name).
- ``sha256``: the built-in ``_sha256`` (``_sha2`` on newer Pythons), not OpenSSL's.
- ``dumps``/``loads``: JSON through ``_json``'s C encoder and scanner, the ones ``json`` itself
  uses, with ``json``'s defaults (``dumps(obj)`` is byte for byte ``json.dumps(obj)``). A Python
  without them falls back to ``json``.
- ``socketpair``/``send_fds``/``recv_fds``: ``_socket`` sockets and SCM_RIGHTS by hand.

Type checkers see the real modules (``TYPE_CHECKING``); at run time nothing here imports more
than the C modules, and anything else (``json``'s pretty printing, ``signal.Signals``) is
imported by the caller that needs it, when it needs it.
"""

from __future__ import annotations

import _socket
import _struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Sequence
    from hashlib import sha256
    from typing import Any
else:
    import _signal as signal

    try:
        from _sha256 import sha256
    except ImportError:  # Python 3.12+
        try:
            from _sha2 import sha256
        except ImportError:  # a Python built without its own hashes: OpenSSL's
            from hashlib import sha256

__all__ = ["dumps", "loads", "recv_fds", "send_fds", "sha256", "signal", "signal_name",
           "socketpair"]


def signal_name(sig: int) -> str:
    """``SIGKILL`` for 9; ``signal 77`` for a number with no name."""
    import signal as full

    try:
        return full.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


# --- JSON ---------------------------------------------------------------------------------

class _ScanContext:
    """What ``_json.make_scanner`` reads off a decoder: json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]


def _no_default(obj: object) -> object:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_WS = " \t\n\r"
_scan: Any = None
_make_encoder: Any = None
try:
    import _json

    _scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]  # duck-typed
    _make_encoder = _json.make_encoder
    _ASCII = _json.encode_basestring_ascii
except (ImportError, AttributeError, TypeError):  # an interpreter without (this) _json: json
    _scan = _make_encoder = None


def dumps(obj: object, *, sort_keys: bool = False, default: Callable[[Any], object] | None = None,
          compact: bool = False) -> str:
    """``json.dumps(obj, sort_keys=..., default=...)``; ``compact`` means
    ``separators=(",", ":")``."""
    if _make_encoder is None:
        import json

        return json.dumps(obj, sort_keys=sort_keys, default=default,
                          separators=(",", ":") if compact else None)
    # a new encoder each time, as json does: its dict of the containers being encoded (the
    # circular-reference check) must start empty even after an earlier call raised
    enc = _make_encoder({}, default or _no_default, _ASCII, None, ":" if compact else ": ",
                             "," if compact else ", ", sort_keys, False, True)
    return "".join(enc(obj, 0))


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads(data)``; raises ValueError (``json.JSONDecodeError`` on a syntax error),
    also for a document nested deeper than Python recurses (``json`` lets that
    RecursionError through: a cut or mangled cache file must read as "not JSON", never end
    the run)."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")  # what JSON on our sockets and in our caches is
    if _scan is None:
        return _json_loads(data)
    start = len(data) - len(data.lstrip(_WS))
    try:
        obj, end = _scan(data, start)
    except StopIteration as stop:
        raise ValueError(f"Expecting value: char {stop.value}") from None
    except SystemError:
        # the scanner reports a syntax error as json.decoder.JSONDecodeError, which _json
        # (Python 3.11) only looks up among the modules already imported, and on flue run's
        # path none imported json: a SystemError instead. An error path: let json say it.
        return _json_loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if data[end:].strip(_WS):
        raise ValueError(f"Extra data: char {end}")
    return obj


def _json_loads(data: str) -> Any:
    import json

    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


# --- sockets --------------------------------------------------------------------------------

def socketpair(kind: int = _socket.SOCK_SEQPACKET) -> tuple[_socket.socket, _socket.socket]:
    """A connected pair of Unix sockets (close-on-exec, as every socket Python makes)."""
    a, b = _socket.socketpair(_socket.AF_UNIX, kind)
    return a, b


def send_fds(sock: _socket.socket, data: bytes, fds: Sequence[int]) -> int:
    """Send ``data`` with ``fds`` attached (SCM_RIGHTS). (``struct``, not ``array``: array
    registers itself with ``collections.abc``, importing ``collections``.)"""
    packed = _struct.pack(f"{len(fds)}i", *fds)
    return sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, packed)])


def recv_fds(sock: _socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """One message and the fds that came with it (as ``socket.recv_fds``: not close-on-exec)."""
    data, anc, _flags, _addr = sock.recvmsg(bufsize, _socket.CMSG_SPACE(maxfds * 4))
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(payload) // 4
            fds.extend(_struct.unpack(f"{n}i", payload[:n * 4]))
    return data, fds
