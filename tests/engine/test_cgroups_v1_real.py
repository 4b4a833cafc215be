"""The v1 backend on the real kernel, as root (hybrid or pure-v1 hosts only).

Values are checked for presence and monotonicity only, never for speed.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.cgroups import V1Backend, V1SandboxCgroup, detect, open_backend, sweep_stale
from engine.errors import EngineError
from engine.profile.model import Limits

PY = "/usr/bin/python3"


def _v1_usable() -> bool:
    if os.geteuid() != 0 or not os.path.exists(PY):
        return False
    s = detect(mode="v1")
    return all(
        (st := s.controller(c)) is not None and st.available for c in ("memory", "cpu", "pids")
    )


pytestmark = pytest.mark.skipif(not _v1_usable(), reason="needs root and v1 memory/cpu/pids")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.fixture
def backend() -> V1Backend:
    b = open_backend(mode="v1")
    assert isinstance(b, V1Backend)
    return b


class Groups:
    """Groups and processes a test makes; the fixture kills and removes them even when the
    test fails."""

    def __init__(self, backend: V1Backend) -> None:
        self.backend = backend
        self.made: list[V1SandboxCgroup] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def create(self, suffix: str, limits: Limits) -> V1SandboxCgroup:
        cg = self.backend.create(f"flue-{os.getpid()}-{suffix}", limits)
        self.made.append(cg)
        return cg

    def spawn_in(self, cg: V1SandboxCgroup, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` already inside ``cg`` (a shell joins every hierarchy, then execs)."""
        script = 'for f in $FLUE_PROCS; do echo $$ > "$f" || exit 99; done; exec "$@"'
        env = {**os.environ, "FLUE_PROCS": " ".join(cg.procs_files)}
        p = subprocess.Popen(["/bin/sh", "-c", script, "sh", *argv], env=env, **kw)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for cg in self.made:
            cg.kill_all()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for cg in self.made:
            try:
                cg.remove()
            except EngineError:
                pass


@pytest.fixture
def groups(backend: V1Backend) -> Iterator[Groups]:
    g = Groups(backend)
    yield g
    g.cleanup()
    for cg in g.made:
        assert not any(os.path.exists(p) for p in cg.paths)


def test_the_planned_dirs_cover_what_create_makes(groups: Groups) -> None:
    """The keeper exists before the groups and removes ``planned_dirs`` if the supervisor
    dies mid-way: they must include every directory ``create`` makes."""
    name = f"flue-{os.getpid()}-plan"
    planned = groups.backend.planned_dirs(name)
    assert planned and not any(os.path.exists(d) for d in planned)
    cg = groups.create("plan", Limits(memory=64 << 20, pids=16))
    assert cg.paths and set(cg.paths) <= set(planned)
    # the keeper steps back into these (passed in the plan, not read from /proc by it): this
    # process's own groups, one per hierarchy, each the parent of a new group
    own = groups.backend.origin_procs()
    assert sorted(own) == sorted(os.path.join(os.path.dirname(d), "cgroup.procs")
                                 for d in planned)
    for line in _read("/proc/self/cgroup").splitlines():
        _, ctrls, path = line.split(":", 2)
        for f in own:
            if f"/{ctrls}/" in f or f"/{ctrls}," in f:
                assert os.path.dirname(f).endswith(path.rstrip("/")), (f, line)


def test_limits_written(groups: Groups) -> None:
    cg = groups.create("lim", Limits(memory=64 << 20, cpus=0.5, pids=16))
    d = dict(cg.dirs)
    assert _read(f"{d['memory']}/memory.limit_in_bytes").strip() == str(64 << 20)
    memsw = f"{d['memory']}/memory.memsw.limit_in_bytes"
    if os.path.exists(memsw) and groups.backend.memsw:  # swap in use: cap memory+swap too
        assert _read(memsw).strip() == str(64 << 20)
    assert _read(f"{d['cpu']}/cpu.cfs_period_us").strip() == "100000"
    assert _read(f"{d['cpu']}/cpu.cfs_quota_us").strip() == "50000"
    assert _read(f"{d['pids']}/pids.max").strip() == "16"
    # created below the supervisor's own cgroup in every hierarchy, never at a root
    s = detect(mode="v1")
    for c, path in cg.dirs:
        st = s.controller(c)
        assert st is not None and os.path.dirname(path) == st.path
    assert pickle.loads(pickle.dumps(cg)).paths == cg.paths


def test_sample_child_and_cpu_usage(groups: Groups) -> None:
    cg = groups.create("sample", Limits(memory=64 << 20, cpus=0.5, pids=16))
    sleeper = subprocess.Popen(["sleep", "60"])
    groups.procs.append(sleeper)
    cg.attach(sleeper.pid)
    s = cg.sample()
    assert s.pids_current == 1 and s.pids_limit == 16 and s.pids_limit_hits == 0
    assert s.memory_current is not None and s.memory_peak is not None
    assert s.memory_limit == 64 << 20 and s.oom_kills == 0 and s.memory_limit_hits is not None
    assert cg.pids() == [sleeper.pid]
    cg.kill_all()
    assert sleeper.wait(timeout=5) == -9

    burner = groups.spawn_in(cg, [PY, "-c", "while True: pass"])
    first = cg.sample()
    assert first.cpu_usage_ns is not None and first.cpu_nr_throttled is not None
    assert first.cpu_throttled_ns is not None
    last = first.cpu_usage_ns
    deadline = time.monotonic() + 15
    seen_more = False
    while time.monotonic() < deadline and not seen_more:
        time.sleep(0.05)
        now = cg.sample()
        assert now.cpu_usage_ns is not None and now.cpu_usage_ns >= last
        assert now.pids_current == 1
        seen_more = now.cpu_usage_ns > first.cpu_usage_ns
        last = now.cpu_usage_ns
    assert seen_more
    cg.kill_all()
    assert burner.wait(timeout=5) == -9


def test_pids_limit_hit(groups: Groups) -> None:
    cg = groups.create("pids", Limits(pids=16))
    forker = groups.spawn_in(
        cg,
        ["/bin/sh", "-c", "for i in $(seq 40); do sleep 30 & done; echo started"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    forker.wait(timeout=20)
    s = cg.sample()
    assert s.pids_limit_hits is not None and s.pids_limit_hits > 0
    assert s.pids_current is not None and 0 < s.pids_current <= 16
    cg.kill_all()
    assert cg.pids() == []
    cg.remove()
    assert not any(os.path.exists(p) for p in cg.paths)


def test_memory_oom_kill(groups: Groups) -> None:
    cg = groups.create("oom", Limits(memory=32 << 20))
    hog = groups.spawn_in(cg, [PY, "-c", "b = bytearray(200 << 20)\nb[:] = b'x' * len(b)"])
    assert hog.wait(timeout=60) == -9
    s = cg.sample()
    assert s.oom_kills is not None and s.oom_kills >= 1
    assert s.memory_limit_hits is not None
    if not groups.backend.memsw:  # memsw refusals are not counted by kernels >= 6.12
        assert s.memory_limit_hits > 0
    assert s.memory_peak is not None and s.memory_peak <= 32 << 20


def test_kill_all_and_remove_leave_nothing(
    groups: Groups,
) -> None:
    cg = groups.create("kill", Limits(memory=64 << 20, pids=32))
    tree = groups.spawn_in(cg, ["/bin/sh", "-c", "sleep 60 & sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 10
    while len(cg.pids()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(cg.pids()) == 4
    cg.kill_all()
    assert cg.pids() == []
    tree.wait(timeout=5)
    cg.remove()
    assert not any(os.path.exists(p) for p in cg.paths)
    cg.remove()  # twice is fine


def test_sweep_removes_dead_supervisors_groups(backend: V1Backend) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    cg = backend.create(f"flue-{dead.pid}-1", Limits())
    mine = backend.create(f"flue-{os.getpid()}-sweep", Limits())
    try:
        removed = sweep_stale(backend)
        assert set(cg.paths) <= set(removed)  # (plus any other dead supervisor's leftovers)
        assert not set(mine.paths) & set(removed)
        assert all(os.path.isdir(p) for p in mine.paths)
    finally:
        cg.remove()
        mine.remove()


def test_the_keeper_joins_every_hierarchy_through_tasks(groups: Groups) -> None:
    # the keeper's join (engine.launch._join_cgroup: "0" to each group's tasks, the calling
    # thread alone) puts the whole one-thread process in every hierarchy of the group
    from engine.launch import _join_cgroup

    cg = groups.create("join", Limits(memory=64 << 20, pids=32))
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            for procs in cg.procs_files:
                _join_cgroup(procs)
            os.write(w, b"in")
            os.read(go_r, 1)  # stay until the parent looked
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 2) == b"in"
        for d in cg.paths:
            assert pid in [int(x) for x in _read(os.path.join(d, "cgroup.procs")).split()], d
            assert pid in [int(x) for x in _read(os.path.join(d, "tasks")).split()], d
        assert cg.pids() == [pid]
    finally:
        os.write(go_w, b"x")
        os.waitpid(pid, 0)
        for fd in (r, go_r, go_w):
            os.close(fd)


def test_the_join_falls_back_to_cgroup_procs(tmp_path: Any) -> None:
    # no tasks file (cgroup v2) or one we may not write: the pid goes to cgroup.procs
    from engine.launch import _join_cgroup

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.procs").write_text("")
    _join_cgroup(str(v2 / "cgroup.procs"))
    assert (v2 / "cgroup.procs").read_text() == str(os.getpid())
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "cgroup.procs").write_text("")
    (v1 / "tasks").mkdir()  # unwritable as a file, even for root
    _join_cgroup(str(v1 / "cgroup.procs"))
    assert (v1 / "cgroup.procs").read_text() == str(os.getpid())
    (v1 / "tasks").rmdir()
    (v1 / "tasks").write_text("")
    (v1 / "cgroup.procs").write_text("")
    _join_cgroup(str(v1 / "cgroup.procs"))
    assert (v1 / "tasks").read_text() == "0" and (v1 / "cgroup.procs").read_text() == ""
