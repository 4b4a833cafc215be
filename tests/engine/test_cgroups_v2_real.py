"""The v2 code path against whatever real cgroup2 files this host has.

On a hybrid host the unified hierarchy carries no memory/cpu/pids controllers, yet groups can
still be made there (core cpu.stat, cgroup.kill): the test creates and removes one under our
own v2 cgroup. On a pure-v2 host the same test runs against the real controllers.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from engine._linux import cgroupfs
from engine.cgroups import V2Backend, V2SandboxCgroup, detect, open_backend
from engine.errors import EngineError, LimitUnavailable
from engine.profile.model import Limits


def _unified() -> tuple[str, str] | None:
    """(mount point, our directory in it) or None."""
    mounts = cgroupfs.parse_mountinfo(cgroupfs.read_proc_file("/proc", "self", "mountinfo"))
    lines = cgroupfs.parse_proc_cgroup(cgroupfs.read_proc_file("/proc", "self", "cgroup"))
    m = next((m for m in reversed(mounts) if m.fstype == "cgroup2"), None)
    line = next((ln for ln in lines if ln.hierarchy_id == 0 and not ln.controllers), None)
    if m is None or line is None:
        return None
    d = cgroupfs.map_to_mount(m, line.path)
    return (m.mountpoint, d) if d is not None and os.path.isdir(d) else None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


UNIFIED = _unified()
pytestmark = [
    pytest.mark.skipif(UNIFIED is None, reason="no cgroup2 hierarchy visible"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]


@pytest.fixture
def groups() -> Iterator[list[V2SandboxCgroup]]:
    made: list[V2SandboxCgroup] = []
    yield made
    for cg in made:
        try:
            cg.kill_all()
            cg.remove()
        except EngineError:
            pass


def test_real_unified_files_parse_and_detection_is_truthful() -> None:
    assert UNIFIED is not None
    mp, own = UNIFIED
    offered = _read(os.path.join(own, "cgroup.controllers")).split()
    s = detect(mode="v2")
    for c in ("memory", "cpu", "pids"):
        st = s.controller(c)
        assert st is not None
        if c in offered:
            continue
        assert not st.available
        assert f"does not offer it (cgroup.controllers of {own}: " in st.reason or (
            "not delegated" in st.reason or "offers no" in st.reason
        )
        # the reason quotes the file's real content
        assert (" ".join(offered) if offered else "none") in st.reason
    auto = detect()
    if not ({"memory", "cpu", "pids"} & set(offered)) and auto.mode != "v2":
        (note,) = [n for n in auto.notes if "hybrid" in n]
        assert mp in note
        assert ("only " + " ".join(offered) if offered else "no controllers") in note


def test_real_v2_group_create_sample_kill_remove(groups: list[V2SandboxCgroup]) -> None:
    b = open_backend(mode="v2")
    assert isinstance(b, V2Backend)
    name = f"flue-{os.getpid()}-v2real"
    cg = b.create(name, Limits())
    groups.append(cg)
    assert UNIFIED is not None
    assert os.path.dirname(cg.path) == UNIFIED[1]
    assert _read(os.path.join(cg.path, "cgroup.type")).strip() == "domain"
    # a child's cgroup.controllers is what the parent enabled for it
    parent_enabled = _read(os.path.join(UNIFIED[1], "cgroup.subtree_control")).split()
    assert _read(os.path.join(cg.path, "cgroup.controllers")).split() == parent_enabled
    burner = subprocess.Popen(["/usr/bin/python3", "-c", "while True: pass"])
    try:
        cg.attach(burner.pid)
        assert cg.pids() == [burner.pid]
        deadline = time.monotonic() + 10
        first = cg.sample().cpu_usage_ns
        assert first is not None  # core cpu.stat exists without the cpu controller
        last = first
        while last <= first and time.monotonic() < deadline:
            time.sleep(0.05)
            now = cg.sample().cpu_usage_ns
            assert now is not None and now >= last
            last = now
        assert last > first
        cg.kill_all()
        assert burner.wait(timeout=5) == -9
    finally:
        if burner.poll() is None:
            burner.kill()
            burner.wait()
    cg.remove()
    assert not os.path.exists(cg.path)
    cg.remove()  # idempotent


def test_real_v2_limits_need_controllers(groups: list[V2SandboxCgroup]) -> None:
    assert UNIFIED is not None
    offered = _read(os.path.join(UNIFIED[1], "cgroup.controllers")).split()
    if "memory" in offered:
        pytest.skip("the unified hierarchy has a memory controller here")
    b = open_backend(mode="v2")
    assert b is not None
    with pytest.raises(LimitUnavailable) as ei:
        groups.append(b.create(f"flue-{os.getpid()}-v2lim", Limits(memory=64 << 20)))
    assert "memory limit 64 MiB" in ei.value.title
    assert ei.value.fix
    assert not os.path.exists(os.path.join(UNIFIED[1], f"flue-{os.getpid()}-v2lim"))
