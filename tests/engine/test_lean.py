"""engine._lean: the stand-ins for json, hashlib, signal and socket on flue run's path give
what the real modules give."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from engine import _lean

VALUES = [
    {"t": "cgroup", "procs": ["/sys/fs/cgroup/pids/flue-1/cgroup.procs"], "dirs": []},
    [1, -2, 2.5, 1e300, -0.0, None, True, False, "", "é\u2028\x00\"\\", [], {}],
    {"b": 1, "a": {"z": [1, {"y": 2}]}, "1": 1},
    {3: "int key"}, "plain", 7,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_dumps_is_byte_for_byte_json(value: object) -> None:
    for sort_keys in (False, True):
        assert _lean.dumps(value, sort_keys=sort_keys) == json.dumps(value, sort_keys=sort_keys)
        assert _lean.dumps(value, sort_keys=sort_keys, compact=True) == json.dumps(
            value, sort_keys=sort_keys, separators=(",", ":"))
    text = json.dumps(value)
    assert _lean.loads(text) == json.loads(text)
    assert _lean.loads(f" \n{text}\t".encode()) == json.loads(text)


def test_dumps_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        _lean.dumps({"a": object()})
    assert _lean.dumps([b"x"], default=repr) == json.dumps([b"x"], default=repr)
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        _lean.dumps(loop)
    # an encoding that failed half way leaves nothing behind for the next one
    shared = [1]
    with pytest.raises(TypeError):
        _lean.dumps([shared, object()])
    assert _lean.dumps([shared, shared]) == "[[1], [1]]"


@pytest.mark.parametrize("bad", ["", "  ", "{", "[1,]", "1 2", "nul", '{"a":1}x', "[1", b"\xff"])
def test_loads_raises_valueerror_on_bad_json(bad: str | bytes) -> None:
    with pytest.raises(ValueError):
        _lean.loads(bad)


def test_sha256_signal_and_names() -> None:
    assert _lean.sha256(b"flue").hexdigest() == hashlib.sha256(b"flue").hexdigest()
    assert _lean.signal.SIGKILL == signal.SIGKILL and _lean.signal.SIG_IGN == signal.SIG_IGN
    assert _lean.signal_name(9) == "SIGKILL" and _lean.signal_name(200) == "signal 200"


def test_fds_pass_over_a_socketpair() -> None:
    a, b = _lean.socketpair()
    r, w = os.pipe()
    try:
        assert not os.get_inheritable(a.fileno())
        _lean.send_fds(a, b"msg", [r, w])
        data, fds = _lean.recv_fds(b, 100, 8)
        assert data == b"msg" and len(fds) == 2
        os.write(fds[1], b"through")  # the received write end is the pipe's
        assert os.read(r, 7) == b"through"
        for fd in fds:
            os.close(fd)
        a.send(b"plain")
        assert _lean.recv_fds(b, 100, 8) == (b"plain", [])
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


def test_importing_it_pulls_none_of_what_it_stands_in_for() -> None:
    code = ("import sys, engine._lean; "
            "print(' '.join(sorted({'json', 're', 'enum', 'socket', 'signal', 'hashlib', "
            "'typing', 'collections', 'array'} & set(sys.modules))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_loads_raises_valueerror_where_json_was_never_imported() -> None:
    """``flue run`` reads its caches before anything imports ``json``; _json's scanner
    reports most syntax errors with ``json.decoder.JSONDecodeError``, which Python 3.11 only
    looks up among the imported modules (a SystemError when json is not one of them)."""
    code = textwrap.dedent("""
        import sys
        from engine import _lean
        bad = ['{"deps": [["/x"', '{"a" 1}', '[1 2]', '"abc', '{', b'{"a": 1, "b"',
               '[' * 100000]
        for text in bad:
            try:
                _lean.loads(text)
            except ValueError as err:
                print(type(err).__name__)
            else:
                print("parsed", repr(text)[:20])
        print(_lean.loads('{"ok": [1]}'))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "{'ok': [1]}"
    assert len(lines) == 8 and all(ln in ("JSONDecodeError", "ValueError") for ln in lines[:-1]), lines


def test_an_interpreter_without_the_c_json_module_gets_json() -> None:
    """The fallback: no ``_json`` (other interpreters) means json's own pure-Python code,
    with the same results and the same errors."""
    code = textwrap.dedent("""
        import sys
        sys.modules["_json"] = None  # import _json raises ImportError
        from engine import _lean
        assert _lean._scan is None and _lean._make_encoder is None
        print(_lean.dumps({"b": [1, 2.5, None], "a": "é"}, sort_keys=True, compact=True))
        print(_lean.loads(b' {"x": [true]} '))
        for bad in ("{", "[1 2]", "[" * 100000):
            try:
                _lean.loads(bad)
            except ValueError:
                print("ValueError")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ['{"a":"\\u00e9","b":[1,2.5,null]}', "{'x': [True]}",
                                       "ValueError", "ValueError", "ValueError"]
