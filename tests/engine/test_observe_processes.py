"""Processes inside, observed live: a python child forked and ``os._exit(7)``-ed without
exec, one reaped late (a zombie meanwhile), a burst of such children, and a shell's ``(exit 3)`` subshell each show up as one
ProcessStarted and one ProcessExited with the exit code, under the pid the program saw."""

from __future__ import annotations

import collections
import json
import textwrap

import pytest
from helpers import observe as ob

from engine import events as ev

pytestmark = pytest.mark.sandbox

BURST = 20
PY = textwrap.dedent(f"""
    import json, os, time
    kids = {{}}
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    kids[pid] = 7
    codes = {{pid: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}}
    pid = os.fork()
    if pid == 0:
        os._exit(5)
    kids[pid] = 5
    time.sleep(0.3)  # reaped late: a zombie meanwhile, polled a few times
    codes[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    for i in range({BURST}):  # a burst: some exit before the poller ever sees them
        pid = os.fork()
        if pid == 0:
            if i % 2:
                time.sleep(0.15)  # ... and some live long enough to be polled
            os._exit(10 + i)
        kids[pid] = 10 + i
    for _ in range({BURST}):
        pid, status = os.wait()
        codes[pid] = os.waitstatus_to_exitcode(status)
    print(json.dumps({{"me": os.getpid(), "kids": kids, "codes": codes}}), flush=True)
""")
SH = 'python3 -c "$1"; (exit 3); echo "subshell=$?"; echo "sh=$$"'


_RUNS: dict[str, tuple] = {}  # mode -> its run's (info, sh pid, events), shared by 2 tests


def _run(flue):
    if flue.mode not in _RUNS:
        _RUNS[flue.mode] = _run_now(flue)
    return _RUNS[flue.mode]


def _run_now(flue):
    path = ob.events_path(flue)
    r = flue.run(["sh", "-c", SH, "sh", PY], "--events", str(path), "--sample-interval", "0.05")
    assert r.returncode == 0, r
    assert "subshell=3" in r.stdout, r
    info = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("{")))
    sh_pid = int(next(ln for ln in r.stdout.splitlines() if ln.startswith("sh="))[3:])
    return info, sh_pid, ob.read_events(path)


def test_forked_children_and_a_subshell_each_start_and_exit_once_with_their_code(flue):
    info, sh_pid, events = _run(flue)
    kids = {int(k): v for k, v in info["kids"].items()}
    assert {int(k): v for k, v in info["codes"].items()} == kids, info
    started = ob.of(events, ev.ProcessStarted)
    exited = ob.of(events, ev.ProcessExited)
    n_started = collections.Counter(e.pid for e in started)
    n_exited = collections.Counter(e.pid for e in exited)
    dup = {p: n for p, n in (n_started + n_exited).items() if n != 2}
    assert not dup, "pids not seen exactly once starting and once exiting: " + "\n".join(
        repr(e) for e in started + exited if e.pid in dup)
    codes = {e.pid: e.exit_code for e in exited}
    for pid, code in kids.items():
        assert codes.get(pid) == code, (pid, code, codes)
    py = info["me"]
    by_pid = {e.pid: e for e in started}
    for pid in kids:
        assert by_pid[pid].ppid == py, by_pid[pid]
        assert by_pid[pid].cmdline[:2] == ("python3", "-c"), by_pid[pid]
        assert by_pid[pid].host_pid > 0
    # the subshell: a child of the shell that ran no program and exited 3
    subshells = [p for p, e in by_pid.items() if e.ppid == sh_pid and p != py]
    assert [codes[p] for p in subshells] == [3], (subshells, codes)
    assert by_pid[subshells[0]].cmdline[0] == "sh", by_pid[subshells[0]]
    # the shell itself and the python it ran exited 0
    assert codes[sh_pid] == 0 and codes[py] == 0, codes
    assert by_pid[py].ppid == sh_pid


def test_process_events_are_in_order_for_each_pid(flue):
    _info, _sh, events = _run(flue)
    first_start: dict[int, int] = {}
    for i, e in enumerate(events):
        if isinstance(e, ev.ProcessStarted):
            first_start.setdefault(e.pid, i)
        elif isinstance(e, ev.ProcessExited):
            assert e.pid in first_start, f"pid {e.pid} exited before it was announced"
    exited = ob.one(events, ev.Exited)
    assert events[-1] is exited
    # the last table is empty: nothing outlived the run
    assert ob.of(events, ev.ProcessTable)[-1].rows == ()
