"""Events serialise to JSON lines and back to equal records: every kind, from a real
``--events`` file (root and unprivileged) and from a sandbox run in this process (the
records as the engine made them, before any serialisation), plus hand-made records of
every kind with every field set."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import textwrap

import pytest
from helpers import observe as ob

from engine import events as ev

# one run that makes every kind the CLI writes: a denial, a file, a forked child, samples,
# then an OOM kill (LimitHit) and the end
EVERYTHING = textwrap.dedent("""
    import ctypes, os, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(int(sys.argv[1]), 0, 0, 0, 0, 0, 0)   # a denied keyctl
    with open("/work/out.txt", "w") as f:
        f.write("hello\\n")
    pid = os.fork()
    if pid == 0:
        os._exit(4)
    os.waitpid(pid, 0)
    print("output", flush=True)
    time.sleep(0.3)
    chunks = []
    while True:
        chunks.append(b"\\x01" * (4 << 20))
        time.sleep(0.01)
""")
# what that run must show (others -- output, notices, network, learn, ask -- need options of
# their own; whatever appears must round-trip all the same)
CLI_KINDS = {"started", "syscall_denied", "resource_sample", "limit_hit", "file_changed",
             "process_started", "process_exited", "process_table", "workspace_manifest",
             "exited"}
# path lookups, learn mode and ask mode have runs of their own (test_learn*.py, test_ask.py)
CLI_KINDS -= {"path_missing", "learn_summary", "ask_requested", "ask_answered"}


def _roundtrip(e: ev.Event) -> None:
    line = e.to_json()
    back = ev.Event.from_json(line)
    assert type(back) is type(e), (line, back)
    assert back == e, f"\n{e!r}\n{back!r}"
    assert back.to_json() == line
    assert json.loads(line)["kind"] == type(e).kind


@pytest.mark.sandbox
def test_every_line_of_a_real_events_file_round_trips(flue):
    path = ob.events_path(flue)
    r = flue.run(["python3", "-c", EVERYTHING, str(ob.nr("keyctl"))], "--events", str(path),
                 "--memory", "64M", "--sample-interval", "0.05")
    assert r.returncode == 137, r
    lines = ob.read_lines(path)
    kinds = set()
    for line in lines:
        e = ev.Event.from_json(line)
        assert e.to_json() == line, "serialising what was read gives the same line"
        _roundtrip(e)
        kinds.add(e.kind)
    assert kinds >= CLI_KINDS, f"missing {CLI_KINDS - kinds}"
    assert json.loads(lines[0])["kind"] == "started"
    assert json.loads(lines[-1])["kind"] == "exited"


@pytest.mark.sandbox
def test_the_events_file_is_written_as_the_run_goes(flue):
    """Whoever tails --events sees the run while it runs (the file was block-buffered: the
    lines came only at the end, or 8 KiB at a time)."""
    import time

    path = ob.events_path(flue)
    # samples rare, so a buffer would not fill up and be written by itself within the wait
    h = flue.start(["sh", "-c", "echo started; exec sleep 60"], "--events", str(path),
                   "--sample-interval", "30")
    try:
        h.read_until("started")
        deadline = time.monotonic() + 30
        kinds: list[str] = []
        while time.monotonic() < deadline and "process_started" not in kinds:
            text = path.read_text() if path.exists() else ""
            kinds = [json.loads(line)["kind"] for line in text.splitlines() if line.strip()]
            time.sleep(0.05)
        assert h.proc.poll() is None, "the run ended: this proves nothing"
        assert kinds[:1] == ["started"] and "process_started" in kinds, kinds
    finally:
        h.kill_all()
        h.proc.wait(timeout=30)


@pytest.mark.sandbox
def test_the_engine_s_own_records_round_trip():
    """The records as emitted, not as read back: a tuple kept inside a dict, a list where a
    tuple is declared, would survive a file but not this."""
    if os.geteuid() != 0:
        pytest.skip("runs a sandbox in this process, as root")
    from engine.profile import load_profile
    from engine.sandbox import Sandbox

    seen: list[ev.Event] = []

    async def go() -> None:
        sb = Sandbox(["python3", "-c", EVERYTHING, str(ob.nr("keyctl"))],
                     load_profile("default", overrides={"limits": {"memory": 64 << 20}}),
                     watch_files=True, capture_output=True, sample_interval=0.05)
        sb.subscribe(seen.append)
        result = await sb.run()
        assert result.oom_killed, result

    asyncio.run(go())
    assert {e.kind for e in seen} >= CLI_KINDS | {"output"}, {e.kind for e in seen}
    for e in seen:
        _roundtrip(e)
    out = "".join(e.data for e in ob.of(seen, ev.Output) if e.stream == "stdout")
    assert out == "output\n"


def _sample_of(cls: type[ev.Event]) -> ev.Event:
    """An instance with every field set to something other than its default."""
    values = {
        "sandbox": "flue-1-1", "ts": 12.5, "argv": ("sh", "-c", "true"), "profile": "default",
        "pid": 7, "isolation": {"namespaces": ["user", "pid"], "no_new_privs": True},
        "limits": {"memory": 1 << 30, "cpus": 0.5, "timeout": None},
        "degraded": ("no cgroup",), "name": "keyctl", "nr": 250, "args": (0, 2 ** 64 - 3, 0),
        "decoded": {"operation": "KEYCTL_GET_KEYRING_ID"}, "errno": 95,
        "errno_name": "ENOTSUP", "host_pid": 4242, "tid": 4243, "comm": "python3",
        "exe": "/usr/bin/python3", "count": 100_000, "first_ts": 11.25, "args_varied": True,
        "source": "psutil",
        "cpu_usage_ns": 10 ** 12, "cpu_percent": 99.5, "cpu_throttled_ns": 5,
        "cpu_nr_throttled": 3, "cpu_limit": 0.5, "memory_current": 1 << 20,
        "memory_peak": 2 << 20, "memory_limit": 4 << 20, "memory_limit_hits": 2,
        "oom_kills": 1, "pids_current": 3, "pids_limit": 10, "pids_limit_hits": 1,
        "limit": "pids", "delta": 1, "detail": "forks refused", "change": "deleted",
        "path": "/work/ünïcode \"quoted\"\n", "size": None, "is_dir": True, "ppid": 1,
        "cmdline": ("python3", "-c", ""), "exit_code": 3,
        "rows": ((2, 4242, 1, "sh -c x", 0.0, 4096), (3, 4243, 2, "sleep 1", 1.5, 8192)),
        "entries": (("/work/a", 5, "-rw-r--r--"), ("/work/d", 0, "drwxr-xr-x")),
        "stream": "stderr", "data": "\x1b[31mred\x1b[0m\r\n\x00", "level": "warning",
        "message": "denials are not observable", "signal": 9, "oom_killed": True,
        "timed_out": True, "seccomp_killed": True, "pids_limit_hit": True,
        "memory_limit_hit": True, "wall_seconds": 1.25, "cpu_seconds": 0.75,
        "peak_memory": 1 << 20, "reason": "flue: out of memory", "id": 3, "state": "closed",
        "host": "pypi.org", "port": 443, "allowed": True, "rule": "*.pypi.org",
        "via": "proxy", "address": "192.0.2.1", "sni": "pypi.org", "bytes_up": 512,
        "bytes_down": 4096, "duration": 0.5, "qtype": "AAAA",
        "answers": ("2001:db8::1", "2001:db8::2"), "rcode": "NXDOMAIN", "transport": "tcp",
        "place": "/etc/alternatives", "syscall": "execve", "op": "exec", "write": True,
        "kind_on_host": "dir", "observed": {"syscalls": {"openat": 3}, "core": ["read"],
                                            "peaks": {"memory": None, "pids": 4}},
        "key": "socket AF_PACKET", "timeout": 2.5, "decision": "allow-always", "by": "timeout",
        "calls": 3, "profile_source": "/etc/flue/p.toml",
    }
    kw = {f.name: values[f.name] if f.name in values else _value_for(f)
          for f in dataclasses.fields(cls)}
    return cls(**kw)


def _value_for(f: dataclasses.Field) -> object:
    """A value of a field's declared type that is not its default (kinds added later)."""
    t = str(f.type).replace(" ", "").removesuffix("|None")
    default = f.default
    simple = {"str": "a \"value\"\n é", "int": 7 if default != 7 else 8, "float": 2.5,
              "bool": default is not True, "Any": "any"}
    if t in simple:
        return simple[t]
    if t.startswith("tuple[tuple"):
        return ((1, "a", 2.5, None), (2, "b", 0.0, True))
    if t.startswith("tuple[str"):
        return ("a", "b c")
    if t.startswith("tuple[int"):
        return (1, 2 ** 63)
    if t.startswith("dict["):
        return {"name": "v", "n": 1, "list": [1, "two", [3]], "map": {"k": None}}
    raise AssertionError(f"no test value for {f.name}: {f.type}")


@pytest.mark.parametrize("kind", sorted(ev.REGISTRY))
def test_every_kind_with_every_field_set_round_trips(kind):
    e = _sample_of(ev.REGISTRY[kind])
    _roundtrip(e)
    defaults = ev.REGISTRY[kind]("flue-1-1", 1.0)
    _roundtrip(defaults)


def test_every_event_class_is_registered_under_its_kind():
    # (not Event.__subclasses__(): slots=True leaves the classes it replaced behind)
    classes = {c for c in vars(ev).values()
               if isinstance(c, type) and issubclass(c, ev.Event) and c is not ev.Event}
    assert {c.kind: c for c in classes} == ev.REGISTRY
    assert len({c.kind for c in classes}) == len(classes), "kinds are unique"


def test_a_line_from_a_newer_flue_with_an_unknown_field_still_reads():
    line = json.dumps({"kind": "notice", "sandbox": "s", "ts": 1.0, "message": "m",
                       "added_later": [1, 2]})
    e = ev.Event.from_json(line)
    assert e == ev.Notice("s", 1.0, message="m")
