"""The sandbox's process lifecycle against real kernels: orphans, signals, SIGKILL of flue
itself, exit codes and the report of each special end."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time

import pytest
from helpers import host
from helpers.report import check_report

pytestmark = pytest.mark.sandbox

# --------------------------------------------------------------------------- orphans


def test_fifty_orphans_are_reaped_and_killed_with_the_main_process(flue, marker):
    # 50 orphans that keep running, 50 that exit at once (they become zombies of PID 1
    # unless it reaps them); the shell counts zombies, then exits 7
    script = textwrap.dedent(f"""
        i=0
        while [ $i -lt 50 ]; do
            ( sleep 1000.{marker[-6:].translate(str.maketrans('abcdef', '123456'))} & )
            ( true & )
            i=$((i+1))
        done
        alive=$(grep -l '^State:.[SR]' /proc/[0-9]*/status 2>/dev/null | wc -l)
        n=0
        while [ $n -lt 200 ]; do
            z=$(grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
            [ "$z" -eq 0 ] && break
            sleep 0.02; n=$((n+1))
        done
        echo "alive=$alive zombies=$z"
        exit 7
    """)
    r = flue.run(["sh", "-c", script, marker])
    assert r.returncode == 7, r
    alive, zombies = (int(kv.split("=")[1]) for kv in r.stdout.split())
    assert zombies == 0, r
    assert alive >= 50, r  # the sleepers were really running when the main process exited
    check_report(r, exit_code=7, signal=None)
    survivors = host.wait_marker_gone(marker)
    assert not survivors, host.describe(survivors)


# --------------------------------------------------------------------------- signals


TRAP = textwrap.dedent("""
    trap 'echo "trapped {sig}"; exit 42' {sig}
    echo ready
    while :; do sleep 0.05; done
""")


@pytest.mark.parametrize("sig", ["INT", "TERM", "HUP"])
def test_signal_to_flue_run_reaches_a_trap_inside(flue, sig, marker):
    h = flue.start(["sh", "-c", TRAP.format(sig=sig), marker])
    h.read_until("ready")
    os.kill(h.pid, getattr(signal, f"SIG{sig}"))
    r = h.finish(timeout=20)
    assert f"trapped {sig}" in r.stdout, r
    assert r.returncode == 42, r
    check_report(r, exit_code=42, signal=None)
    assert not host.wait_marker_gone(marker)


def test_sigkill_to_flue_run_leaves_nothing_running_or_mounted(flue, marker):
    before = host.mounts()
    script = f"sleep 1000 & sleep 1000 & (sleep 1000 &); echo ready; exec sleep 1000 # {marker}"
    h = flue.start(["sh", "-c", script])
    h.read_until("ready")
    inside = host.pids_with_marker(marker)
    # flue run and the keeper carry the marker in their argv (PID 1 blanks its copy)
    assert len(inside) >= 2, host.describe(inside)
    tree = host.descendants(h.pid)
    # flue run, the keeper, PID 1, the shell and its three sleeps (the orphan reparented)
    assert len(tree) >= 7, host.describe(list(tree))
    cgroups = _sandbox_cgroups(flue, h)
    assert cgroups, "the sandbox was not in a cgroup"
    os.kill(h.pid, signal.SIGKILL)
    h.proc.wait(timeout=10)
    survivors = host.wait_marker_gone(marker, timeout=15) + host.still_alive(tree)
    assert not survivors, host.describe(survivors)
    deadline = time.monotonic() + 10
    while any(os.path.exists(d) for d in cgroups) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [d for d in cgroups if os.path.exists(d)], "the sandbox's cgroup survived"
    new = host.mounts() - before
    assert not new, f"new mounts on the host: {new}"


def _sandbox_cgroups(flue, h) -> list[str]:
    if h.dlg is not None:
        return h.dlg.leftovers()
    return flue.s.root_leftovers(h.pid)


# --------------------------------------------------------------------------- exit codes


def test_exit_code_is_the_main_process_s(flue):
    r = flue.run(["sh", "-c", "exit 3"])
    assert r.returncode == 3, r
    assert r.flue_lines == [], r
    check_report(r, exit_code=3, signal=None)


def test_exit_code_128_plus_signal(flue):
    r = flue.run(["sh", "-c", "kill -TERM $$"])
    assert r.returncode == 128 + signal.SIGTERM, r
    assert len(r.flue_lines) == 1 and "SIGTERM" in r.flue_lines[0], r
    check_report(r, signal=signal.SIGTERM)


def test_command_not_found_is_127(flue):
    r = flue.run(["no-such-command-xyz"])
    assert r.returncode == 127, r
    assert len(r.flue_lines) == 1 and "not found" in r.flue_lines[0], r
    assert "no-such-command-xyz" in r.flue_lines[0]


def test_not_executable_is_126(flue):
    r = flue.run(["/etc/hostname"])
    assert r.returncode == 126, r
    assert len(r.flue_lines) == 1 and "/etc/hostname" in r.flue_lines[0], r


def test_flue_s_own_failure_is_125(flue):
    missing = flue.tmpdir("ws") / "missing"
    r = flue.run(["true"], "--workspace", str(missing))
    assert r.returncode == 125, r
    assert r.flue_lines and str(missing) in r.stderr, r


# --------------------------------------------------------------------------- special ends


def test_timeout_is_reported(flue, marker):
    r = flue.run(["sh", "-c", f"sleep 1000; : {marker}"], "--timeout", "1")
    assert r.returncode == 128 + signal.SIGKILL, r
    assert len(r.flue_lines) == 1, r
    assert "timed out" in r.flue_lines[0] and "1 s" in r.flue_lines[0], r
    rep = check_report(r, timed_out=True, signal=signal.SIGKILL)
    assert rep["limits"]["timeout"] == 1
    assert rep["wall_seconds"] >= 1
    assert not host.wait_marker_gone(marker)


def test_seccomp_kill_is_reported(flue):
    prof = flue.write_profile("""
        extends = "default"
        [seccomp]
        kill = ["ptrace"]
    """)
    r = flue.run(["python3", "-c", ("import ctypes; ctypes.CDLL(None).ptrace(0, 0, 0, 0); "
                  "print('survived')")], profile=prof)
    assert r.returncode == 128 + signal.SIGSYS, r
    assert "survived" not in r.stdout
    assert len(r.flue_lines) == 1 and "seccomp" in r.flue_lines[0], r
    check_report(r, seccomp_killed=True, signal=signal.SIGSYS)


def test_report_describes_isolation(flue):
    r = flue.run(["true"])
    assert r.returncode == 0, r
    rep = check_report(r, exit_code=0, degraded=[])
    iso = rep["isolation"]
    assert set(iso["namespaces"]) >= {"user", "pid", "mount", "network", "ipc", "uts"}
    assert iso["no_new_privs"] is True
    assert iso["network"].split()[0] == "none"
    assert rep["limits"]["memory"] == 2 << 30 and rep["limits"]["pids"] == 1024, rep["limits"]
    assert rep["cpu_seconds"] is not None and rep["peak_memory"], rep
    json.dumps(rep)


def test_sigterm_ends_a_run_whose_main_process_stopped_itself(flue):
    h = flue.start(["sh", "-c", "echo ready; kill -STOP $$; echo continued"])
    h.read_until("ready")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the shell has really stopped
        if any(_state(p) == "T" for p in host.descendants(h.pid)):
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the main process never stopped")
    os.kill(h.pid, signal.SIGTERM)
    r = h.finish(timeout=20)
    assert r.returncode == 128 + signal.SIGTERM, r
    assert "continued" not in r.stdout
    check_report(r, signal=signal.SIGTERM)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"
