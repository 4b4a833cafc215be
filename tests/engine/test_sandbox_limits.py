"""Resource limits on real sandboxes: memory (OOM), pids (fork bombs), the workspace's size.
As root, and as an unprivileged uid inside a delegated cgroup subtree."""

from __future__ import annotations

import shutil
import signal
import textwrap

import pytest
from helpers import host
from helpers.report import check_report

pytestmark = pytest.mark.sandbox


@pytest.fixture(autouse=True)
def _cgroups(session):
    session.require("root", "cgroups")  # the machine has usable cgroups at all


def test_oom_is_killed_and_reported_with_the_limit(flue):
    code = "b = bytearray(b'x') * (300 << 20); print('allocated', len(b))"
    r = flue.run(["python3", "-c", code], "--memory", "64M", "--timeout", "60")
    assert "allocated" not in r.stdout, r
    assert r.returncode == 128 + signal.SIGKILL, r
    assert len(r.flue_lines) == 1, r
    line = r.flue_lines[0]
    assert "out of memory" in line and "64M" in line, r
    rep = check_report(r, oom_killed=True, signal=signal.SIGKILL, exit_code=137)
    assert rep["limits"]["memory"] == 64 << 20, rep["limits"]
    assert rep["peak_memory"] and rep["peak_memory"] <= (64 << 20) + (4 << 20), rep


def test_memory_below_the_limit_is_fine(flue):
    # the control for the OOM test: the same program with a smaller allocation runs
    code = "b = bytearray(b'x') * (16 << 20); print('allocated', len(b))"
    r = flue.run(["python3", "-c", code], "--memory", "64M")
    assert r.returncode == 0, r
    assert r.stdout.strip() == f"allocated {16 << 20}"
    check_report(r, exit_code=0, signal=None)


def test_fork_bomb_is_contained_by_pids(flue, marker):
    bomb = textwrap.dedent(f"""
        import os, time
        # {marker}
        while True:
            try:
                os.fork()
            except OSError:
                time.sleep(0.01)
    """)
    r = flue.run(["python3", "-c", bomb], "--pids", "64", "--timeout", "2", timeout=60)
    rep = check_report(r, pids_limit_hit=True, timed_out=True, signal=signal.SIGKILL)
    assert rep["limits"]["pids"] == 64
    assert r.returncode == 128 + signal.SIGKILL, r
    assert len(r.flue_lines) == 1 and "timed out" in r.flue_lines[0], r
    assert not host.wait_marker_gone(marker), "the fork bomb outlived flue run"


def test_pids_limit_end_is_reported(flue):
    # a program that stops when fork fails: the run ends by itself on the pids limit
    code = textwrap.dedent("""
        import os, sys, time
        kids = []
        try:
            for _ in range(200):
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                kids.append(pid)
        except OSError as err:
            print("fork failed after", len(kids), err.strerror)
            sys.exit(3)
    """)
    r = flue.run(["python3", "-c", code], "--pids", "16", "--timeout", "30")
    assert r.returncode == 3, r
    assert "fork failed after" in r.stdout, r
    n = int(r.stdout.split("after")[1].split()[0])
    assert n < 16, r
    rep = check_report(r, pids_limit_hit=True, exit_code=3, signal=None)
    assert rep["limits"]["pids"] == 16
    assert len(r.flue_lines) == 1 and "pids limit" in r.flue_lines[0] and "16" in r.flue_lines[0], r


def test_workspace_size_gives_enospc_and_spares_the_host_disk(flue):
    prof = flue.write_profile("""
        extends = "default"
        [filesystem]
        workspace_size = "16M"
    """)
    before = {p: shutil.disk_usage(p).free for p in ("/", "/tmp", str(flue.s.base))}
    script = ("dd if=/dev/zero of=/work/big bs=1M count=100 2>&1; echo dd=$?; "
              "stat -f -c %T /work; ls -l /work/big | awk '{print $5}'")
    r = flue.run(["sh", "-c", script], profile=prof)
    assert r.returncode == 0, r
    out = r.stdout
    assert "No space left on device" in out, r
    assert "dd=1" in out, r
    lines = out.strip().splitlines()
    assert lines[-2] == "tmpfs", r
    assert int(lines[-1]) <= 16 << 20, r
    for p, free in before.items():
        # 100 MB written inside: a host disk that took it would have lost it
        assert free - shutil.disk_usage(p).free < 50 << 20, f"{p} lost space"


def test_without_delegation_a_memory_limit_fails_with_a_fix(flue_user):
    r = flue_user.run(["sh", "-c", "echo LAUNCHED"], "--memory", "64M", delegate=False,
                 allow_unlimited=False)
    assert r.returncode == 125, r
    assert "LAUNCHED" not in r.stdout
    assert r.flue_lines and "memory" in r.flue_lines[0], r
    assert "fix:" in r.stderr, r
    assert r.report is None


def test_without_delegation_allow_unlimited_runs_degraded(flue_user):
    r = flue_user.run(["sh", "-c", "echo LAUNCHED"], delegate=False, allow_unlimited=True)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "LAUNCHED"
    assert any("without resource limits" in d for d in r.report["degraded"]), r.report
    assert any(ln.startswith("flue: degraded:") for ln in r.flue_lines), r

