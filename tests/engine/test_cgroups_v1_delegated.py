"""Unprivileged v1: a delegated parent group works; no delegation gives LimitUnavailable.

As root the test creates ``flue-deleg-<pid>`` below its own cgroup in every hierarchy flue
uses, chowns it (and its files) to an unprivileged uid, and runs a ``/usr/bin/python3`` child
that joins it, drops to that uid and drives the backend. The child imports a world-readable
copy of the engine package (the venv and the checkout may not be readable by other uids).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine._linux import cgroupfs
from engine.cgroups import detect

PY = "/usr/bin/python3"
DELEGATE_UID = 4242
NOBODY = 65534
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")


def _own_dirs() -> dict[str, str] | None:
    if os.geteuid() != 0 or not os.path.exists(PY) or sys.platform != "linux":
        return None
    s = detect(mode="v1")
    out: dict[str, str] = {}
    for c in CONTROLLERS:
        st = s.controller(c)
        if st is None or not st.available or st.path is None:
            return None
        out[c] = st.path
    return out


OWN = _own_dirs()
pytestmark = pytest.mark.skipif(OWN is None, reason="needs root and v1 memory/cpu/cpuacct/pids")


@pytest.fixture
def engine_copy() -> Iterator[str]:
    """A world-readable copy of the engine package; yields the PYTHONPATH entry."""
    top = tempfile.mkdtemp(prefix="flue-cgtest-")
    src = Path(engine.__file__).parent
    shutil.copytree(src, os.path.join(top, "engine"), ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, dirs, files in os.walk(top):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def delegated() -> Iterator[dict[str, str]]:
    """controller -> a parent group chowned to DELEGATE_UID below our own cgroup."""
    assert OWN is not None
    name = f"flue-deleg-{os.getpid()}"
    made: list[str] = []
    parents: dict[str, str] = {}
    fs = cgroupfs.CgroupFS()
    try:
        for c in CONTROLLERS:
            d = os.path.join(OWN[c], name)
            if d not in made:
                os.mkdir(d)
                made.append(d)
                os.chown(d, DELEGATE_UID, DELEGATE_UID)
                for f in os.listdir(d):
                    p = os.path.join(d, f)
                    if stat.S_ISREG(os.lstat(p).st_mode):
                        os.chown(p, DELEGATE_UID, DELEGATE_UID)
            parents[c] = d
        yield parents
    finally:
        cgroupfs.kill_until_empty(fs, made)
        for d in made:
            cgroupfs.remove_tree(fs, d)
        assert not any(os.path.exists(d) for d in made)


CHILD = r"""
import json, os, subprocess, sys, time
uid = int(sys.argv[1])
for procs in sys.argv[2:]:
    with open(procs, "w") as f:  # still root: join the delegated parents
        f.write(str(os.getpid()))
os.setgroups([])
os.setgid(uid)
os.setuid(uid)
from engine.cgroups import create_optional, detect, open_backend
from engine.errors import LimitUnavailable
from engine.profile.model import Limits
out = {}
s = detect()
out["mode"], out["delegated"] = s.mode, s.delegated
out["paths"] = {c.name: c.path for c in s.controllers if c.available}
out["reasons"] = {c.name: c.reason for c in s.controllers if not c.available}
limits = Limits(memory=64 << 20, cpus=0.5, pids=16)
b = open_backend()
if b is None:
    try:
        create_optional(b, f"flue-{os.getpid()}-1", limits, support=s)
    except LimitUnavailable as err:
        out["error"] = {"title": err.title, "detail": err.detail, "fix": err.fix}
    out["optional"] = repr(create_optional(b, f"flue-{os.getpid()}-2", Limits(), support=s))
    print(json.dumps(out))
    sys.exit(0)
cg = b.create(f"flue-{os.getpid()}-1", limits)
out["dirs"] = dict(cg.dirs)
d = dict(cg.dirs)
def rd(p):
    with open(p) as f:
        return f.read().strip()
out["files"] = {
    "memory": rd(d["memory"] + "/memory.limit_in_bytes"),
    "quota": rd(d["cpu"] + "/cpu.cfs_quota_us"),
    "period": rd(d["cpu"] + "/cpu.cfs_period_us"),
    "pids": rd(d["pids"] + "/pids.max"),
}
p = subprocess.Popen(["sleep", "60"])
cg.attach(p.pid)
s1 = cg.sample()
time.sleep(0.05)
s2 = cg.sample()
out["sample"] = {
    "pids_current": s1.pids_current, "pids_limit": s1.pids_limit,
    "memory_current": s1.memory_current, "memory_limit": s1.memory_limit,
    "cpu1": s1.cpu_usage_ns, "cpu2": s2.cpu_usage_ns,
}
cg.kill_all()
out["rc"] = p.wait(timeout=5)
cg.remove()
out["left"] = [x for x in cg.paths if os.path.exists(x)]
print(json.dumps(out))
"""


def _run_child(pythonpath: str, uid: int, procs: list[str]) -> dict[str, object]:
    r = subprocess.run(
        [PY, "-c", CHILD, str(uid), *procs],
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout)
    return result


def test_unprivileged_delegated_parent(engine_copy: str, delegated: dict[str, str]) -> None:
    procs = sorted({os.path.join(d, "cgroup.procs") for d in delegated.values()})
    out = _run_child(engine_copy, DELEGATE_UID, procs)
    assert out["mode"] == "v1" and out["delegated"] is True
    assert out["paths"] == delegated
    dirs = out["dirs"]
    assert isinstance(dirs, dict)
    for c, d in dirs.items():
        assert os.path.dirname(d) == delegated[c]
    assert out["files"] == {
        "memory": str(64 << 20),
        "quota": "50000",
        "period": "100000",
        "pids": "16",
    }
    sample = out["sample"]
    assert isinstance(sample, dict)
    assert sample["pids_current"] == 1 and sample["pids_limit"] == 16
    assert sample["memory_limit"] == 64 << 20 and sample["memory_current"] is not None
    assert sample["cpu1"] is not None and sample["cpu2"] >= sample["cpu1"]
    assert out["rc"] == -9
    assert out["left"] == []


def test_unprivileged_without_delegation(engine_copy: str) -> None:
    out = _run_child(engine_copy, NOBODY, [])
    assert out["mode"] == "none" and out["delegated"] is False
    reasons = out["reasons"]
    assert isinstance(reasons, dict)
    assert OWN is not None
    assert reasons["memory"] == (
        f"cgroup v1 memory hierarchy at {OWN['memory']} is owned by root and not delegated "
        f"to uid {NOBODY}"
    )
    err = out["error"]
    assert isinstance(err, dict)
    assert (
        err["title"]
        == "memory limit 64 MiB, cpu limit 0.5 CPUs, pids limit 16 cannot be enforced here"
    )
    assert "not delegated to uid 65534" in err["detail"]
    assert "chown" in err["fix"] and "run flue as root" in err["fix"]
    assert out["optional"] == "None"
