"""A denial flood: 100,000 refused calls in a tight C loop are all counted (exactly), while
the supervisor's memory stays flat (identical denials are coalesced into a few counted
records) and another sandbox running meanwhile (the flood lasting until it is done) still
gets every one of its own denials answered and counted, the flood's counted exactly too."""

from __future__ import annotations

import errno
import itertools
import subprocess

import psutil
import pytest
from helpers import observe as ob

from engine import events as ev

pytestmark = pytest.mark.sandbox

FLOOD = 100_000
FLOOD_CALL = "keyctl"  # refused by the default profile (@keyring) with EPERM
OTHER = 2_000
OTHER_CALL = "acct"  # refused by the default profile with EPERM
RSS_GROWTH_LIMIT = 24 << 20  # 100,000 uncoalesced records would take far more
MAX_RECORDS = 1_000  # coalesced: a few records per flush interval, not one per call


def _looper(flue):
    d = flue.tmpdir("looper")
    ob.build_looper(d)
    return d


def _done(text: str) -> tuple[int, int]:
    """(failed calls, errno) from the looper's "done N errno E end" line."""
    for line in text.splitlines():
        if line.startswith("done "):
            _, failed, _, eno, _end = line.split()
            return int(failed), int(eno)
    raise AssertionError(f"no result line in {text!r}")


# Which calls flood (identical or varying arguments) and who runs flue (root or the uid) are
# independent: the coalescing is the supervisor's own code, the same whatever its uid, and the
# listener that counts is the same in both modes. So each kind of flood runs in one mode
# (identical as root, varying as the uid) instead of every pair: both kinds and both modes
# are covered, in half the runs.
@pytest.mark.parametrize(("flue", "vary"), [("root", False), ("user", True)],
                         ids=["root-identical", "user-varying-args"], indirect=["flue"])
def test_a_flood_of_denials_is_counted_exactly_in_bounded_memory(flue, vary):
    """Identical calls coalesce into one record per flush; calls whose arguments differ
    every time (what coalescing by arguments cannot merge) must not cost a record each."""
    d = _looper(flue)
    path = ob.events_path(flue)
    h = flue.start([f"{ob.BIND_DIR}/looper", str(ob.nr(FLOOD_CALL)), str(FLOOD), "wait",
                    *(["vary"] if vary else [])],
                   "--events", str(path), "--bind", f"{d}:{ob.BIND_DIR}:ro",
                   stdin=subprocess.PIPE)
    assert h.proc.stdin is not None
    h.read_until("ready\n")
    supervisor = psutil.Process(h.pid)  # `flue run` itself: it holds the listener
    before = supervisor.memory_info().rss
    h.proc.stdin.write(b"go\n")
    h.proc.stdin.flush()
    out = h.read_until(" end\n")
    after = supervisor.memory_info().rss
    h.proc.stdin.write(b"end\n")
    h.proc.stdin.flush()
    r = h.finish()
    assert r.returncode == 0, r
    failed, eno = _done(out + r.stdout)
    assert (failed, eno) == (FLOOD, errno.EPERM), "every call failed with the profile's errno"

    events = ob.read_events(path)
    total, records = ob.denial_counts(events, FLOOD_CALL)
    assert total == FLOOD, f"{total} counted over {records} records"
    assert records <= MAX_RECORDS, f"{records} records: the denials were not coalesced"
    assert len(events) < FLOOD // 10, len(events)
    assert r.report["denials"][FLOOD_CALL] == {"count": FLOOD, "errno": errno.EPERM,
                                               "errno_name": "EPERM"}, r.report["denials"]
    # the records are consistent with each other: one pid, increasing time
    recs = [e for e in ob.of(events, ev.SyscallDenied) if e.name == FLOOD_CALL]
    assert len({e.host_pid for e in recs}) == 1
    assert all(e.first_ts <= e.ts for e in recs)
    assert all(a.first_ts <= b.first_ts for a, b in itertools.pairwise(recs))
    if vary:  # a record that merged calls with other arguments says so
        assert any(e.args_varied and e.count > 1 for e in recs), recs[:5]
        assert all(e.args_varied or e.count == 1 for e in recs)
    else:
        assert not any(e.args_varied for e in recs)
        assert all(a.ts <= b.first_ts for a, b in itertools.pairwise(recs))
    assert after - before < RSS_GROWTH_LIMIT, (
        f"the supervisor grew by {(after - before) >> 20} MiB during the flood")


def test_another_sandbox_is_served_exactly_while_one_floods(flue):
    d = _looper(flue)
    flood_events = ob.events_path(flue, "flood.jsonl")
    # the flood goes on until told: it lasts the whole of the other run, however long
    flood = flue.start([f"{ob.BIND_DIR}/looper", str(ob.nr(FLOOD_CALL)), "0", "wait", "until"],
                       "--events", str(flood_events), "--bind", f"{d}:{ob.BIND_DIR}:ro",
                       stdin=subprocess.PIPE)
    assert flood.proc.stdin is not None
    flood.read_until("ready\n")
    flood.proc.stdin.write(b"go\n")
    flood.proc.stdin.flush()
    try:
        other_events = ob.events_path(flue, "other.jsonl")
        other = flue.run([f"{ob.BIND_DIR}/looper", str(ob.nr(OTHER_CALL)), str(OTHER)],
                         "--events", str(other_events), "--bind", f"{d}:{ob.BIND_DIR}:ro")
        assert other.returncode == 0, other
        assert _done(other.stdout) == (OTHER, errno.EPERM), other
        total, _records = ob.denial_counts(ob.read_events(other_events), OTHER_CALL)
        assert total == OTHER
        assert other.report["denials"][OTHER_CALL]["count"] == OTHER, other.report["denials"]
        assert FLOOD_CALL not in other.report["denials"], "each sandbox counts its own"
    finally:
        flood.proc.stdin.write(b"stop\n")  # the flood ends, prints its count ...
        flood.proc.stdin.write(b"end\n")  # ... and exits
        flood.proc.stdin.flush()
    r = flood.finish()
    assert r.returncode == 0, r
    failed, eno = _done(r.stdout)
    assert eno == errno.EPERM and failed > OTHER, r  # it flooded all along
    total, _records = ob.denial_counts(ob.read_events(flood_events), FLOOD_CALL)
    assert total == failed, f"{failed} calls refused, {total} counted"
    assert r.report["denials"][FLOOD_CALL]["count"] == failed, r.report["denials"]
    assert OTHER_CALL not in r.report["denials"]
