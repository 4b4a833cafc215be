"""The v2 backend against a faithful fake cgroup2 tree (pure-v2 hosts, systemd delegation)."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from engine.cgroups import (
    V2Backend,
    V2SandboxCgroup,
    create_optional,
    detect,
    open_backend,
    sweep_stale,
)
from engine.errors import EngineError, LimitUnavailable
from engine.profile.model import Limits

try:
    from fake_cgroupfs import USER_SCOPE, FakeCgroup2FS, systemd_user_scope
except ImportError:  # tests/ imported as a package
    from tests.engine.fake_cgroupfs import USER_SCOPE, FakeCgroup2FS, systemd_user_scope

PID = 4242
UID = 1000
LIMITS = Limits(memory=64 << 20, cpus=0.5, pids=16)


def _kw(fs: FakeCgroup2FS, cgpath: str = USER_SCOPE, pid: int = PID, euid: int = UID) -> dict:
    return {
        "mountinfo_text": fs.mountinfo(),
        "cgroup_text": f"0::{cgpath}\n",
        "fs": fs,
        "pid": pid,
        "euid": euid,
    }


def _backend(fs: FakeCgroup2FS, **kw: object) -> V2Backend:
    b = open_backend(**{**_kw(fs), **kw})  # type: ignore[arg-type]
    assert isinstance(b, V2Backend)
    return b


# --- the fake itself behaves like the kernel --------------------------------------------------


def test_fake_enforces_kernel_rules(tmp_path: Path) -> None:
    fs = FakeCgroup2FS(str(tmp_path / "cg"), ("cpu", "memory", "pids"))
    a = fs.make_group("/a")
    assert fs.read(f"{a}/cgroup.controllers") == ""
    assert not os.path.exists(f"{a}/memory.max")
    with pytest.raises(FileNotFoundError):  # not offered to /a
        fs.write(f"{a}/cgroup.subtree_control", "+memory")
    fs.write(f"{fs.root}/cgroup.subtree_control", "+memory +pids")
    assert fs.read(f"{a}/cgroup.controllers").split() == ["memory", "pids"]
    assert os.path.exists(f"{a}/memory.max")  # existing children gain the files
    fs.add_procs("/a", 10)
    with pytest.raises(OSError) as ei:  # no internal processes
        fs.write(f"{a}/cgroup.subtree_control", "+memory")
    assert ei.value.errno == errno.EBUSY
    b = fs.make_group("/b")
    fs.write(f"{b}/cgroup.subtree_control", "+pids")
    fs.make_group("/b/c")
    with pytest.raises(OSError) as ei:  # a group that enables controllers takes no processes
        fs.write(f"{b}/cgroup.procs", "11")
    assert ei.value.errno == errno.EBUSY
    fs.add_procs("/b/c", 10)  # moves it out of /a
    assert fs.procs("/a") == [] and fs.procs("/b/c") == [10]
    with pytest.raises(OSError) as ei:
        fs.rmdir(f"{b}/c")
    assert ei.value.errno == errno.EBUSY
    with pytest.raises(OSError) as ei:
        fs.write(f"{b}/c/memory.max", "lots")
    assert ei.value.errno in (errno.EINVAL, errno.ENOENT)  # memory not enabled in /b
    with pytest.raises(OSError) as ei:
        fs.write(f"{b}/c/pids.current", "3")
    assert ei.value.errno == errno.EACCES
    with pytest.raises(OSError) as ei:
        fs.write(f"{fs.root}/cgroup.subtree_control", "-pids")  # /b still enables it
    assert ei.value.errno == errno.EBUSY


# --- detection ---------------------------------------------------------------------------------


def test_detect_systemd_user_scope(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    s = detect(**_kw(fs))
    assert s.mode == "v2"
    assert s.delegated
    base = fs.path(USER_SCOPE)
    for c in ("memory", "cpu", "pids"):
        st = s.controller(c)
        assert st is not None and st.available, st
        assert st.path == base
    assert any("flue-supervisor" in n for n in s.notes)
    assert s.reason == ""


def test_detect_not_delegated(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"), uid=1000)
    # a process of uid 2000 that happens to run in that scope: nothing there is its own
    for p in list(fs.owners):
        fs.not_writable.add(p)
    s = detect(**_kw(fs, euid=2000))
    assert s.mode == "none"
    assert not s.delegated
    st = s.controller("memory")
    assert st is not None and not st.available
    assert "owned by uid 1000" in st.reason and "not delegated to uid 2000" in st.reason
    assert "systemd-run --user --scope -p Delegate=yes" in st.fix
    assert open_backend(**_kw(fs, euid=2000)) is None
    with pytest.raises(LimitUnavailable) as ei:
        create_optional(None, "flue-1-1", Limits(memory=64 << 20), support=s)
    assert "memory limit 64 MiB" in ei.value.title
    assert "not delegated" in ei.value.detail
    assert "Delegate=yes" in ei.value.fix
    assert create_optional(None, "flue-1-1", Limits(), support=s) is None


def test_detect_partial_delegation(tmp_path: Path) -> None:
    # an older systemd delegating only memory and pids to the user manager
    fs = systemd_user_scope(str(tmp_path / "cg"), delegate=("memory", "pids"))
    s = detect(**_kw(fs))
    assert s.mode == "v2"
    cpu = s.controller("cpu")
    assert cpu is not None and not cpu.available
    assert "not delegated" in cpu.reason
    b = _backend(fs)
    cg = b.create("flue-4242-1", Limits(memory=32 << 20))
    try:
        assert fs.read(f"{cg.path}/memory.max").strip() == str(32 << 20)
        with pytest.raises(LimitUnavailable) as ei:
            b.create("flue-4242-2", Limits(cpus=1.0))
        assert "cpu limit 1 CPUs" in ei.value.title
        assert not os.path.exists(fs.path(USER_SCOPE + "/flue-4242-2"))
    finally:
        cg.remove()


# --- the supervisor moves into a leaf ------------------------------------------------------------


def test_create_moves_supervisor_to_leaf_and_applies_limits(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    b = _backend(fs)
    planned = b.planned_dirs("flue-4242-1")  # what the keeper removes if we die mid-way
    assert not any(os.path.exists(d) for d in planned)
    cg = b.create("flue-4242-1", LIMITS)
    try:
        assert set(cg.paths) <= set(planned)
        assert fs.procs(USER_SCOPE) == []
        assert fs.procs(USER_SCOPE + "/flue-supervisor") == [PID]
        assert fs.get(USER_SCOPE, "cgroup.subtree_control").split() == ["cpu", "memory", "pids"]
        assert cg.path == fs.path(USER_SCOPE + "/flue-4242-1")
        assert cg.procs_files == (f"{cg.path}/cgroup.procs",)
        assert fs.read(f"{cg.path}/memory.max") == f"{64 << 20}\n"
        assert fs.read(f"{cg.path}/memory.swap.max") == "0\n"
        assert fs.read(f"{cg.path}/cpu.max") == "50000 100000\n"
        assert fs.read(f"{cg.path}/pids.max") == "16\n"
        assert cg.limits == LIMITS
        # a second group does not move anything again
        cg2 = b.create("flue-4242-2", Limits())
        assert fs.procs(USER_SCOPE + "/flue-supervisor") == [PID]
        assert fs.read(f"{cg2.path}/memory.max") == "max\n"
        cg2.remove()
        # the sandbox's first process joins through procs_files
        fs.write(cg.procs_files[0], "5000")
        assert fs.procs(USER_SCOPE + "/flue-4242-1") == [5000]
    finally:
        cg.kill_all()
        cg.remove()
    assert not os.path.exists(cg.path)


def test_detect_after_move_uses_the_parent(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    _backend(fs).create("flue-4242-1", Limits(pids=4)).remove()
    # /proc/self/cgroup now names the leaf
    s = detect(**_kw(fs, cgpath=USER_SCOPE + "/flue-supervisor"))
    assert s.mode == "v2"
    st = s.controller("pids")
    assert st is not None and st.available and st.path == fs.path(USER_SCOPE)
    b = _backend(fs, cgroup_text=f"0::{USER_SCOPE}/flue-supervisor\n")
    cg = b.create("flue-4242-3", Limits(pids=4))
    assert os.path.dirname(cg.path) == fs.path(USER_SCOPE)
    cg.remove()


def test_other_processes_in_own_cgroup(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"), others=(777,))
    s = detect(**_kw(fs))
    mem = s.controller("memory")
    assert mem is not None and not mem.available
    assert "1 other process" in mem.reason and "no-internal-processes" in mem.reason
    assert "systemd-run --user --scope -p Delegate=yes" in mem.fix
    # still v2 (nothing else here), usable for groups without controllers
    assert s.mode == "v2"
    b = _backend(fs)
    with pytest.raises(LimitUnavailable) as ei:
        b.create("flue-4242-1", Limits(memory=1 << 30))
    assert "Delegate=yes" in ei.value.fix
    assert fs.procs(USER_SCOPE) == [PID, 777]  # nobody was moved
    cg = b.create("flue-4242-2", Limits())
    try:
        sample = cg.sample()
        assert sample.cpu_usage_ns == 0 and sample.memory_current is None
        assert sample.pids_current is None
    finally:
        cg.remove()


def test_ebusy_at_create_time_with_new_processes(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    b = _backend(fs)  # detection saw the supervisor alone
    fs.add_procs(USER_SCOPE, 778)  # then another process arrived
    with pytest.raises(LimitUnavailable) as ei:
        b.create("flue-4242-1", Limits(pids=8))
    assert "1 other process" in ei.value.detail
    assert "no-internal-processes" in ei.value.detail
    assert "systemd-run" in ei.value.fix
    assert fs.procs(USER_SCOPE) == [PID, 778]
    assert not os.path.exists(fs.path(USER_SCOPE + "/flue-4242-1"))


def test_root_cgroup_is_exempt_and_never_limited(tmp_path: Path) -> None:
    # a container with a private cgroup namespace, or root on a pure-v2 host at "/"
    fs = FakeCgroup2FS(str(tmp_path / "cg"), ("cpu", "memory", "pids"))
    fs.add_procs("/", PID, 1, 2, 3)
    s = detect(**_kw(fs, cgpath="/", euid=0))
    assert s.mode == "v2" and not s.delegated
    b = _backend(fs, cgroup_text="0::/\n", euid=0)
    cg = b.create("flue-4242-1", LIMITS)
    try:
        assert fs.procs("/") == [PID, 1, 2, 3]  # the root takes processes and controllers
        assert not os.path.exists(f"{fs.root}/memory.max")
        assert fs.read(f"{cg.path}/pids.max") == "16\n"
    finally:
        cg.remove()


# --- samples, kill, removal --------------------------------------------------------------------


def test_sample_parses_v2_files(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    cg = _backend(fs).create("flue-4242-1", LIMITS)
    rel = USER_SCOPE + "/flue-4242-1"
    fs.put(rel, "memory.current", "1048576\n")
    fs.put(rel, "memory.peak", "2097152\n")
    fs.put(rel, "memory.events", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n")
    fs.put(
        rel,
        "cpu.stat",
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 9\nnr_throttled 4\n"
        "throttled_usec 250\nnr_bursts 0\nburst_usec 0\n",
    )
    fs.put(rel, "pids.current", "3\n")
    fs.put(rel, "pids.events", "max 5\n")
    s = cg.sample()
    assert s.cpu_usage_ns == 1_500_000
    assert s.cpu_throttled_ns == 250_000
    assert s.cpu_nr_throttled == 4
    assert s.memory_current == 1 << 20
    assert s.memory_peak == 2 << 20
    assert s.memory_limit == 64 << 20
    assert s.memory_limit_hits == 7
    assert s.oom_kills == 1
    assert s.pids_current == 3
    assert s.pids_limit == 16
    assert s.pids_limit_hits == 5
    cg.remove()
    gone = cg.sample()  # a removed group samples as "not available", it does not raise
    assert gone.memory_current is None and gone.cpu_usage_ns is None


def test_sample_without_memory_peak_tracks_max(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"), peak=False)
    cg = _backend(fs).create("flue-4242-1", Limits(memory=1 << 30))
    rel = USER_SCOPE + "/flue-4242-1"
    assert not os.path.exists(f"{cg.path}/memory.peak")
    fs.put(rel, "memory.current", "100\n")
    assert cg.sample().memory_peak == 100
    fs.put(rel, "memory.current", "50\n")
    s = cg.sample()
    assert s.memory_current == 50 and s.memory_peak == 100
    assert s.memory_limit == 1 << 30 and s.pids_limit is None
    cg.remove()


def test_no_swap_accounting_skips_swap_max(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"), swap=False)
    cg = _backend(fs).create("flue-4242-1", Limits(memory=1 << 30))
    assert not os.path.exists(f"{cg.path}/memory.swap.max")
    cg.remove()


def test_kill_all_uses_cgroup_kill(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    cg = _backend(fs).create("flue-4242-1", Limits())
    fs.add_procs(USER_SCOPE + "/flue-4242-1", 5001, 5002)
    cg.kill_all()
    assert sorted(fs.killed) == [5001, 5002]
    assert fs.signals == []
    assert cg.pids() == []
    cg.remove()
    cg.remove()  # idempotent
    cg.kill_all()  # and harmless on a removed group


def test_kill_all_loops_without_cgroup_kill(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"), kill_file=False)
    cg = _backend(fs).create("flue-4242-1", Limits())
    fs.add_procs(USER_SCOPE + "/flue-4242-1", 5001, 5002)
    cg.kill_all()
    assert sorted(p for p, _ in fs.signals) == [5001, 5002]
    cg.remove()
    assert not os.path.exists(cg.path)


def test_remove_busy_group_raises_after_retrying(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    cg = _backend(fs).create("flue-4242-1", Limits())
    fs.add_procs(USER_SCOPE + "/flue-4242-1", 5001)
    with pytest.raises(EngineError) as ei:
        cg.remove(timeout=0.05)
    assert "still in use" in ei.value.title
    cg.kill_all()
    cg.remove()


def test_invalid_limits_and_names(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    b = _backend(fs)
    with pytest.raises(LimitUnavailable):
        b.create("flue-4242-1", Limits(cpus=0))
    with pytest.raises(ValueError):
        b.create("../escape", Limits())
    tiny = b.create("flue-4242-2", Limits(cpus=0.001))  # clamped to the kernel's minimum
    assert fs.read(f"{tiny.path}/cpu.max") == "1000 100000\n"
    tiny.remove()


def test_pickle_roundtrip(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    cg = _backend(fs).create("flue-4242-1", LIMITS)
    copy = pickle.loads(pickle.dumps(cg))
    assert isinstance(copy, V2SandboxCgroup)
    assert copy.path == cg.path and copy.procs_files == cg.procs_files
    assert copy.limits == LIMITS
    copy.remove()
    assert not os.path.exists(cg.path)
    cg.remove()


def test_sweep_stale(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    b = _backend(fs)
    fs.alive = {PID, 31337}
    dead = b.create("flue-999991-1", Limits())
    busy = b.create("flue-999992-1", Limits())
    fs.add_procs(USER_SCOPE + "/flue-999992-1", 6000)
    living = b.create("flue-31337-1", Limits())
    other = b.create("not-flue", Limits())
    removed = sweep_stale(b)
    assert removed == [dead.path]
    for cg in (busy, living, other):
        assert os.path.isdir(cg.path)
    assert os.path.isdir(fs.path(USER_SCOPE + "/flue-supervisor"))
    busy.kill_all()
    for cg in (busy, living, other):
        cg.remove()
