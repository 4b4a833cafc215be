"""Detection on fixture layouts: pure v2, hybrid like a Firecracker VM, pure v1 with cpu,cpuacct
co-mounted, unprivileged without delegation, nothing mounted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cgroups import V1Backend, V2Backend, create_optional, detect, open_backend
from engine.errors import LimitUnavailable
from engine.profile.model import Limits

try:
    from fake_cgroupfs import (
        USER_SCOPE,
        FakeCgroup2FS,
        FakeCgroupV1FS,
        HybridFS,
        systemd_user_scope,
    )
except ImportError:  # tests/ imported as a package
    from tests.engine.fake_cgroupfs import (
        USER_SCOPE,
        FakeCgroup2FS,
        FakeCgroupV1FS,
        HybridFS,
        systemd_user_scope,
    )

HYBRID_HIERARCHIES = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "name=systemd",
)
MEM_GROUP = "/process_api/99ab2497305bcb40196f060cf2f1490d"
HYBRID_CGROUP = f"""\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:{MEM_GROUP}
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


def hybrid(tmp: Path) -> tuple[FakeCgroupV1FS, FakeCgroup2FS, HybridFS, dict[str, object]]:
    """Like this project's Firecracker VMs: v1 hierarchies each on their own, a cgroup2 at
    .../unified that offers only hugetlb, the process at / except in memory."""
    v1 = FakeCgroupV1FS(str(tmp / "v1"), HYBRID_HIERARCHIES)
    v1.make_group("memory", MEM_GROUP)
    v1.add_procs_at(v1.hierarchy_dir("memory") + MEM_GROUP, 100, 4242)
    v2 = FakeCgroup2FS(str(tmp / "unified"), ("hugetlb",))
    v2.add_procs("/", 1, 100, 4242)
    fs = HybridFS(v1, v2)
    kw: dict[str, object] = {
        "mountinfo_text": v1.mountinfo() + v2.mountinfo(mount_id=99),
        "cgroup_text": HYBRID_CGROUP,
        "fs": fs,
        "pid": 4242,
        "euid": 0,
    }
    return v1, v2, fs, kw


def test_pure_v2_systemd_scope(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    kw = {
        "mountinfo_text": fs.mountinfo(),
        "cgroup_text": f"0::{USER_SCOPE}\n",
        "fs": fs,
        "pid": 4242,
        "euid": 1000,
    }
    s = detect(**kw)  # type: ignore[arg-type]
    assert (s.mode, s.delegated) == ("v2", True)
    assert [c.name for c in s.controllers] == ["memory", "cpu", "pids"]
    assert all(c.available for c in s.controllers)
    assert isinstance(open_backend(**kw), V2Backend)  # type: ignore[arg-type]
    # detect() is read-only: nothing moved, nothing enabled
    assert fs.procs(USER_SCOPE) == [4242]
    assert fs.get(USER_SCOPE, "cgroup.subtree_control") == ""


def test_hybrid_like_this_vm(tmp_path: Path) -> None:
    v1, _v2, _fs, kw = hybrid(tmp_path)
    s = detect(**kw)  # type: ignore[arg-type]
    assert s.mode == "v1" and not s.delegated
    paths = {c.name: c.path for c in s.controllers if c.available}
    assert paths == {
        "memory": v1.hierarchy_dir("memory") + MEM_GROUP,
        "cpu": v1.hierarchy_dir("cpu"),
        "cpuacct": v1.hierarchy_dir("cpuacct"),
        "pids": v1.hierarchy_dir("pids"),
    }
    (note,) = [n for n in s.notes if "hybrid" in n]
    assert "offers only hugetlb" in note and "memory, cpu, pids" in note
    # forcing v2 shows why it is not used, truthfully
    s2 = detect(**kw, mode="v2")  # type: ignore[arg-type]
    mem = s2.controller("memory")
    assert mem is not None and not mem.available
    assert "bound to a cgroup v1 hierarchy" in mem.reason and "hugetlb" in mem.reason
    b = open_backend(**kw)  # type: ignore[arg-type]
    assert isinstance(b, V1Backend)
    cg = b.create("flue-4242-1", Limits(memory=64 << 20, cpus=0.5, pids=16))
    try:
        assert cg.paths == (
            v1.hierarchy_dir("memory") + MEM_GROUP + "/flue-4242-1",
            v1.hierarchy_dir("cpu") + "/flue-4242-1",
            v1.hierarchy_dir("cpuacct") + "/flue-4242-1",
            v1.hierarchy_dir("pids") + "/flue-4242-1",
        )
        # never a limit in a hierarchy's root or in the supervisor's own group
        assert v1.get("/cpu", "cpu.cfs_quota_us") == "-1\n"
        assert v1.get("/memory" + MEM_GROUP, "memory.limit_in_bytes") == "9223372036854771712\n"
    finally:
        cg.remove()
    assert not any(os.path.exists(p) for p in cg.paths)


def test_hybrid_unprivileged_without_delegation(tmp_path: Path) -> None:
    v1, v2, _fs, kw = hybrid(tmp_path)
    for f in (v1, v2):
        for dirpath, _d, _f in os.walk(f.root):
            f.not_writable.add(dirpath)
    kw["euid"] = 1000
    s = detect(**kw)  # type: ignore[arg-type]
    assert s.mode == "none" and not s.delegated
    mem = s.controller("memory")
    assert mem is not None and not mem.available
    mem_dir = v1.hierarchy_dir("memory") + MEM_GROUP
    assert mem.reason == (
        f"cgroup v1 memory hierarchy at {mem_dir} is owned by root and not delegated to uid 1000"
    )
    assert "chown" in mem.fix and "run flue as root" in mem.fix
    assert s.reason.startswith("cgroup v1 memory hierarchy")
    assert open_backend(**kw) is None  # type: ignore[arg-type]
    with pytest.raises(LimitUnavailable) as ei:
        create_optional(None, "flue-4242-1", Limits(pids=10), support=s)
    assert ei.value.title == "pids limit 10 cannot be enforced here"
    assert "not delegated to uid 1000" in ei.value.detail
    assert "chown" in ei.value.fix
    assert create_optional(None, "flue-4242-1", Limits(), support=s) is None


def test_pure_v1_comounted_cpu_cpuacct(tmp_path: Path) -> None:
    v1 = FakeCgroupV1FS(str(tmp_path / "v1"), ("cpu,cpuacct", "memory", "pids", "name=systemd"))
    for h in ("cpu,cpuacct", "memory", "pids"):
        v1.make_group(h, "/user.slice")
    cg_text = (
        "4:cpu,cpuacct:/user.slice\n3:memory:/user.slice\n2:pids:/user.slice\n1:name=systemd:/\n"
    )
    kw: dict[str, object] = {
        "mountinfo_text": v1.mountinfo(),
        "cgroup_text": cg_text,
        "fs": v1,
        "pid": 4242,
        "euid": 0,
    }
    s = detect(**kw)  # type: ignore[arg-type]
    assert s.mode == "v1"
    cpu, acct = s.controller("cpu"), s.controller("cpuacct")
    assert cpu is not None and acct is not None
    assert cpu.path == acct.path == v1.hierarchy_dir("cpu,cpuacct") + "/user.slice"
    assert not any("hybrid" in n for n in s.notes)
    b = open_backend(**kw)  # type: ignore[arg-type]
    assert isinstance(b, V1Backend)
    b.memsw = True  # as on a host with swap in use
    cg = b.create("flue-4242-1", Limits(memory=32 << 20, cpus=1.5, pids=5))
    try:
        assert len(cg.procs_files) == 3  # one directory serves both cpu and cpuacct
        cpu_dir = v1.hierarchy_dir("cpu,cpuacct") + "/user.slice/flue-4242-1"
        assert v1.read(f"{cpu_dir}/cpu.cfs_quota_us") == "150000\n"
        assert v1.read(f"{cpu_dir}/cpu.cfs_period_us") == "100000\n"
        mem_dir = v1.hierarchy_dir("memory") + "/user.slice/flue-4242-1"
        assert v1.read(f"{mem_dir}/memory.limit_in_bytes") == f"{32 << 20}\n"
        assert v1.read(f"{mem_dir}/memory.memsw.limit_in_bytes") == f"{32 << 20}\n"
        v1.write(f"{cpu_dir}/cpuacct.usage", "123456789\n")
        v1.write(f"{mem_dir}/memory.max_usage_in_bytes", "4096\n")
        v1.write(f"{mem_dir}/memory.failcnt", "2\n")
        v1.write(f"{mem_dir}/memory.memsw.failcnt", "1\n")
        v1.write(f"{mem_dir}/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
        v1.put(
            "/cpu,cpuacct/user.slice/flue-4242-1",
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 5000\n",
        )
        v1.put("/pids/user.slice/flue-4242-1", "pids.events", "max 9\n")
        v1.put("/pids/user.slice/flue-4242-1", "pids.current", "2\n")
        sm = cg.sample()
        assert sm.cpu_usage_ns == 123456789
        assert (sm.cpu_nr_throttled, sm.cpu_throttled_ns) == (4, 5000)
        assert sm.memory_limit == 32 << 20 and sm.memory_peak == 4096
        assert (sm.memory_limit_hits, sm.oom_kills) == (3, 2)
        assert (sm.pids_current, sm.pids_limit, sm.pids_limit_hits) == (2, 5, 9)
        cg.attach(777)
        assert v1.procs("/memory/user.slice/flue-4242-1") == [777]
        assert v1.procs("/cpu,cpuacct/user.slice/flue-4242-1") == [777]
        cg.kill_all()
        assert [p for p, _ in v1.signals] == [777]
    finally:
        cg.remove()
    assert not any(os.path.exists(p) for p in cg.paths)
    b.memsw = False  # no swap: memory.limit_in_bytes alone, so failcnt keeps counting
    cg = b.create("flue-4242-2", Limits(memory=32 << 20))
    mem_dir = v1.hierarchy_dir("memory") + "/user.slice/flue-4242-2"
    assert v1.read(f"{mem_dir}/memory.memsw.limit_in_bytes") == "9223372036854771712\n"
    cg.remove()


def test_v1_missing_controller_is_named(tmp_path: Path) -> None:
    v1 = FakeCgroupV1FS(str(tmp_path / "v1"), ("memory",))
    kw: dict[str, object] = {
        "mountinfo_text": v1.mountinfo(),
        "cgroup_text": "1:memory:/\n",
        "fs": v1,
        "euid": 0,
    }
    s = detect(**kw)  # type: ignore[arg-type]
    assert s.mode == "v1"
    pids = s.controller("pids")
    assert pids is not None and not pids.available
    assert pids.reason == "no cgroup v1 hierarchy with the pids controller is mounted"
    assert "cpuacct is unavailable: cpu usage is not sampled" in s.notes
    b = open_backend(**kw)  # type: ignore[arg-type]
    assert b is not None
    with pytest.raises(LimitUnavailable) as ei:
        b.create("flue-1-1", Limits(memory=1 << 20, pids=3))
    assert "pids limit 3" in ei.value.title
    assert not os.path.exists(v1.hierarchy_dir("memory") + "/flue-1-1")  # nothing half-made
    cg = b.create("flue-1-2", Limits(memory=1 << 20))
    assert cg.sample().pids_current is None
    cg.remove()


def test_nothing_mounted(tmp_path: Path) -> None:
    s = detect(mountinfo_text="", cgroup_text="", euid=1000)
    assert s.mode == "none"
    assert "no cgroup filesystem is mounted (neither cgroup2 nor v1 hierarchies)" in s.notes
    assert s.reason
    assert open_backend(mountinfo_text="", cgroup_text="") is None


def test_procfs_root_is_a_parameter(tmp_path: Path) -> None:
    fs = systemd_user_scope(str(tmp_path / "cg"))
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "mountinfo").write_text(fs.mountinfo())
    (proc / "cgroup").write_text(f"0::{USER_SCOPE}\n")
    s = detect(procfs=str(tmp_path / "proc"), fs=fs, pid=4242, euid=1000)
    assert s.mode == "v2" and s.delegated


def test_readonly_cgroupfs(tmp_path: Path) -> None:
    fs = FakeCgroup2FS(str(tmp_path / "cg"), ("cpu", "memory", "pids"))
    mi = fs.mountinfo().replace(" rw,nosuid", " ro,nosuid")
    s = detect(mountinfo_text=mi, cgroup_text="0::/\n", fs=fs, euid=0)
    assert s.mode == "none"
    assert "read-only" in s.reason
