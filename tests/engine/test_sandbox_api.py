"""The engine's API from a multi-threaded caller (what the TUI is): sandboxes are forked by
the fork server, and still die, and leave no cgroup, when the caller is SIGKILLed."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from helpers import host

pytestmark = pytest.mark.sandbox

THREADED = '''
import json, os, sys, threading
from engine import sandbox
from engine.profile import load_profile
from engine.sandbox import run_sync

threading.Thread(target=threading.Event().wait, daemon=True).start()  # now multi-threaded
r, w = os.pipe()
res = run_sync(["sh", "-c", "echo hello-$((6*7)); exit 5"], load_profile("default"),
               stdio=(0, w, 2))
os.close(w)
out = os.read(r, 100).decode()
res2 = run_sync(["sleep", "100"], load_profile("default", overrides={"limits": {"timeout": 1}}))
print(json.dumps({"out": out, "exit": res.exit_code, "degraded": res.degraded,
                  "spawner": type(sandbox._fork_server).__name__,
                  "timeout_exit": res2.exit_code, "timed_out": res2.timed_out}))
'''


def test_fork_server_runs_sandboxes_for_a_threaded_caller(flue):
    h = flue.start_python(THREADED)
    r = h.finish(timeout=60)
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert got == {"out": "hello-42\n", "exit": 5, "degraded": [], "spawner": "ForkServer",
                   "timeout_exit": 137, "timed_out": True}, got
    assert not r.cgroup_leftovers, r


KILLED = '''
import os, sys, threading
from engine.profile import load_profile
from engine.sandbox import run_sync

threading.Thread(target=threading.Event().wait, daemon=True).start()
run_sync(["sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait # " + sys.argv[1]],
         load_profile("default"))
'''


def test_sigkill_of_a_threaded_caller_takes_its_sandboxes_down(flue, marker):
    before = host.mounts()
    h = flue.start_python(KILLED, marker)
    h.read_until("ready")
    assert host.pids_with_marker(marker)
    tree = host.descendants(h.pid)
    # the caller, the fork server, the keeper, PID 1, the shell and its sleeps
    assert len(tree) >= 7, host.describe(list(tree))
    cgroups = h.dlg.leftovers() if h.dlg else flue.s.root_leftovers(h.pid)
    assert cgroups, "the sandbox was not in a cgroup"
    os.kill(h.pid, signal.SIGKILL)
    h.proc.wait(timeout=10)
    survivors = host.wait_marker_gone(marker, timeout=15) + host.still_alive(tree)
    assert not survivors, host.describe(survivors)
    deadline = time.monotonic() + 10
    while any(os.path.exists(d) for d in cgroups) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [d for d in cgroups if os.path.exists(d)], "the sandbox's cgroup survived"
    assert not host.mounts() - before


HANDOFF_FAILS = '''
import errno, json
from engine._linux import libc
from engine.profile import load_profile
from engine.sandbox import run_sync

def refuse(pidfd, fd):  # as under Yama ptrace_scope=3 or an LSM that refuses pidfd_getfd
    raise OSError(errno.EPERM, "pidfd_getfd refused")

libc.pidfd_getfd = refuse
res = run_sync(["sh", "-c", "echo LAUNCHED"], load_profile("default"))
print(json.dumps({"exit": res.exit_code, "message": res.message}))
'''


def test_failed_listener_handoff_stops_the_launch(flue):
    h = flue.start_python(HANDOFF_FAILS)
    r = h.finish(timeout=60)
    assert r.returncode == 0, r
    assert "LAUNCHED" not in r.stdout, r
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["exit"] == 125, got
    assert "seccomp listener" in got["message"] and "--no-observe" in got["message"], got


FROM_A_THREAD = '''
import json, sys, threading
from engine import sandbox
from engine.profile import load_profile
from engine.sandbox import run_sync

threading.Thread(target=threading.Event().wait, daemon=True).start()
codes = []
t = threading.Thread(target=lambda: codes.append(run_sync(["true"], load_profile("default")).exit_code))
t.start(); t.join()  # the fork server was started by this thread, which is gone now
codes.append(run_sync(["sh", "-c", "exit 4"], load_profile("default")).exit_code)
print(json.dumps({"codes": codes, "server": sandbox._fork_server._proc.pid}), flush=True)
if sys.argv[1:] == ["hang"]:
    print("ready", flush=True)
    threading.Event().wait()
'''


def test_fork_server_started_by_a_finished_thread_keeps_serving(flue):
    h = flue.start_python(FROM_A_THREAD)
    r = h.finish(timeout=60)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["codes"] == [0, 4], r


def test_fork_server_ends_with_its_caller(flue):
    h = flue.start_python(FROM_A_THREAD, "hang")
    out = h.read_until("ready")
    server = json.loads(out.splitlines()[0])["server"]
    tree = host.descendants(h.pid)
    assert server in tree, host.describe(list(tree))
    os.kill(h.pid, signal.SIGKILL)
    h.proc.wait(timeout=10)
    assert not host.still_alive({server: tree[server]}), "the fork server outlived its caller"
