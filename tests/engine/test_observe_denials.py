"""Denials, observed live: a script calls mount, ptrace, socket(AF_INET), unshare and keyctl
under a profile that refuses them; each call is one SyscallDenied event with its decoded
arguments and the errno the script itself saw, and the report sums them up. The same script
under ``--no-observe`` (the plain errno filter) gets the very same errnos."""

from __future__ import annotations

import errno
import json

import pytest
from helpers import observe as ob

from engine import events as ev

pytestmark = pytest.mark.sandbox

CALLS = ("mount", "ptrace", "socket", "unshare", "keyctl")
PROFILE = """
    extends = "default"
    description = "observation tests: five calls refused, sockets limited to AF_UNIX"

    [seccomp]
    deny = ["mount", "ptrace", "unshare", "keyctl"]
    socket_families = ["!AF_INET", "!AF_INET6", "!AF_NETLINK"]
    errno = { mount = "EACCES", ptrace = "ESRCH", unshare = "EINVAL", keyctl = "EOPNOTSUPP" }
"""
# what the profile prescribes; socket falls under default_errno (EPERM)
EXPECTED = {"mount": errno.EACCES, "ptrace": errno.ESRCH, "socket": errno.EPERM,
            "unshare": errno.EINVAL, "keyctl": errno.EOPNOTSUPP}
DECODED = {
    "mount": {"source": "flue-src", "target": "/mnt/flue-target", "fstype": "tmpfs",
              "flags": "MS_NOSUID|MS_NODEV"},
    "ptrace": {"request": "PTRACE_ATTACH", "pid": 1},
    "socket": {"family": "AF_INET", "type": "SOCK_STREAM", "protocol": 0},
    "unshare": {"flags": "CLONE_NEWNS|CLONE_NEWUSER"},
    "keyctl": {"operation": "KEYCTL_GET_KEYRING_ID"},
}


def _command() -> list[str]:
    numbers = {name: ob.nr(name) for name in CALLS}
    return ["python3", "-c", ob.script("denied_calls.py"), json.dumps(numbers)]


_RUNS: dict[tuple[str, tuple[str, ...]], tuple] = {}  # (mode, options) -> run, shared


def _run(flue, *extra: str):
    key = (flue.mode, extra)
    if key not in _RUNS:
        _RUNS[key] = _run_now(flue, *extra)
    return _RUNS[key]


def _run_now(flue, *extra: str):
    profile = flue.write_profile(PROFILE)
    path = ob.events_path(flue)
    r = flue.run(_command(), "--events", str(path), *extra, profile=profile)
    assert r.returncode == 0, r
    return r, ob.last_json_line(r.stdout), ob.read_events(path)


def test_each_denied_call_is_one_event_with_decoded_arguments_and_its_errno(flue):
    r, seen, events = _run(flue)
    # the script saw exactly what the profile prescribes
    assert seen == EXPECTED, r
    denied = [e for e in ob.of(events, ev.SyscallDenied) if e.name in CALLS]
    assert sorted(e.name for e in denied) == sorted(CALLS), denied
    started = ob.one(events, ev.Started)
    for e in denied:
        assert e.count == 1, e
        assert e.errno == seen[e.name], (e, seen)
        assert e.errno_name == errno.errorcode[seen[e.name]], e
        assert e.nr == ob.nr(e.name), e
        for key, want in DECODED[e.name].items():
            assert e.decoded.get(key) == want, (key, e.decoded)
        assert e.sandbox == started.sandbox
        assert e.comm.startswith("python3"), e
        assert e.pid >= 2 and e.host_pid > 0, e  # the script's pid inside and on the host
        assert e.ts >= started.ts
    # the calls were made in this order; so are their events
    assert [e.name for e in denied] == list(CALLS)


def test_report_has_a_denial_summary(flue):
    r, _seen, events = _run(flue)
    summary = r.report["denials"]
    for name in CALLS:
        assert summary[name] == {"count": 1, "errno": EXPECTED[name],
                                 "errno_name": errno.errorcode[EXPECTED[name]]}, summary
    # the summary counts every denial of the run, no more and no fewer than the stream
    for name, entry in summary.items():
        total, _records = ob.denial_counts(events, name)
        assert entry["count"] == total, (name, entry, total)


def test_no_observe_gives_the_same_errnos_and_says_denials_are_not_observed(flue):
    _r, observed, _events = _run(flue)
    r, unobserved, events = _run(flue, "--no-observe")
    assert unobserved == observed == EXPECTED, r
    assert not ob.of(events, ev.SyscallDenied), "the errno filter reports nothing"
    started = ob.one(events, ev.Started)
    assert "not observed" in started.isolation["seccomp"], started.isolation
    assert "not observed" in r.report["isolation"]["seccomp"], r.report["isolation"]
    assert r.report["denials"] == {}, r.report["denials"]
    # still one Exited at the end, as always
    assert isinstance(events[-1], ev.Exited) and events[-1].exit_code == 0
