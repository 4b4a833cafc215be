"""The pieces under the widgets: the run model, run specs, recent commands, the bridge batcher."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEMO, DEMO_PTRACE

from engine import events as ev
from engine.profile.model import Profile
from flue_tui.bridge import ReplayBridge, _Batcher
from flue_tui.messages import EventBatch, ProcessSnapshot
from flue_tui.model import OutputBuffer, RunModel, diff_runs, fresh
from flue_tui.runspec import HOST_MOUNT, QuickLimits, RunSpec, prepare
from flue_tui.state import load_recent, remember


def _model(path: Path) -> RunModel:
    m = RunModel()
    m.apply(ReplayBridge(lambda _m: None, path).events)
    return m


def test_recorded_demo_aggregates() -> None:
    m = _model(DEMO)
    assert m.state == "exited" and m.exited is not None and m.exited.exit_code == 0
    assert {"mount", "ptrace", "unshare", "socket:AF_PACKET"} <= set(m.denials)
    mount = m.denials["mount"]
    assert mount.count == 3 and mount.group == "@mount" and mount.errno_name == "EPERM"
    assert mount.decoded.get("fstype") == "tmpfs"
    assert m.denials["socket:AF_PACKET"].family == "AF_PACKET"
    assert m.denial_total == sum(r.count for r in m.denials.values())
    assert m.samples and max(s.memory_current or 0 for s in m.samples) > 100 << 20
    assert m.files["/work/notes/report.json"].change == "added"
    assert m.files["/work/build/scratch.tmp"].change == "deleted"
    tree = m.process_tree()
    assert tree[0][0] == 0 and "demo_agent.py" in tree[0][1].command
    assert any(depth == 2 for depth, _ in tree)  # sh -> ls, wc, sleep


def test_diff_between_runs() -> None:
    d = diff_runs(_model(DEMO), _model(DEMO_PTRACE))
    assert d.gone == ("ptrace",) and d.new == ()
    assert "mount" in d.kept


def test_markers_for_limit_hits() -> None:
    m = RunModel()
    m.apply([ev.ResourceSample("s", 1.0, oom_kills=0, memory_limit_hits=0),
             ev.ResourceSample("s", 1.25, oom_kills=1, memory_limit_hits=4),
             ev.ResourceSample("s", 1.5, oom_kills=1, memory_limit_hits=4)])
    assert [k.kind for k in m.markers] == ["oom", "memory-limit"]


def test_output_buffer_joins_partial_lines() -> None:
    b = OutputBuffer(maxlen=3)
    b.add("stdout", "a\nb", 1.0)
    b.add("stdout", "c\nd\ne\n", 2.0)
    assert [x.text for x in b.lines] == ["bc", "d", "e"] and b.total == 4
    assert [x.text for x in fresh(b.lines, b.total, 2)] == ["d", "e"]
    assert fresh(b.lines, b.total, 4) == []


def test_batcher_keeps_denials_replaces_tables() -> None:
    posted: list[object] = []
    b = _Batcher(posted.append, 7)
    for i in range(3):
        b.add(ev.SyscallDenied("s", float(i), name="mount"))
        b.add(ev.ProcessTable("s", float(i), rows=((2, 0, 1, "x", 0.0, 1),)))
    b.flush()
    batch = [p for p in posted if isinstance(p, EventBatch)]
    tables = [p for p in posted if isinstance(p, ProcessSnapshot)]
    assert len(batch) == 1 and len(batch[0].events) == 3 and batch[0].run == 7
    assert len(tables) == 1 and tables[0].table.ts == 2.0
    assert tables[0].can_replace(ProcessSnapshot(7, tables[0].table))


def test_batcher_posts_one_batch_at_a_time() -> None:
    """Until the app has applied a batch, events wait in the next one: a flood makes larger
    batches, never a growing queue; the run's last flush goes out regardless."""
    posted: list[object] = []
    b = _Batcher(posted.append, 1)
    b.add(ev.SyscallDenied("s", 0.0, name="mount"))
    b.flush()
    b.add(ev.SyscallDenied("s", 1.0, name="ptrace"))
    b.flush()  # the first is not applied yet: held
    assert [len(p.events) for p in posted] == [1]
    b.add(ev.SyscallDenied("s", 2.0, name="ptrace"))
    posted[0].ack()
    b.flush()
    assert [len(p.events) for p in posted] == [1, 2]
    b.add(ev.SyscallDenied("s", 3.0, name="unshare"))
    b.flush(force=True)  # the end of the run: posted although #2 is not applied
    assert [len(p.events) for p in posted] == [1, 2, 1]
    assert [e.ts for p in posted for e in p.events] == [0.0, 1.0, 2.0, 3.0]


def test_prepare_binds_the_script_read_only(tmp_path: Path) -> None:
    (tmp_path / "agents").mkdir()
    script = tmp_path / "agents" / "run.py"
    script.write_text("print(1)\n")
    spec = RunSpec(argv=("python3", "agents/run.py", "--task", "x", "/usr/bin/env"),
                   cwd=str(tmp_path))
    p = prepare(spec)
    assert p.argv == ("python3", f"{HOST_MOUNT}/agents/run.py", "--task", "x", "/usr/bin/env")
    assert len(p.binds) == 1 and p.binds[0].src == str(script)  # the file, not its folder
    assert p.binds[0].dst == f"{HOST_MOUNT}/agents/run.py" and not p.binds[0].rw
    folder = prepare(RunSpec(argv=spec.argv, cwd=str(tmp_path), share_dirs=True))
    assert [(b.src, b.dst) for b in folder.binds] == [(str(tmp_path / "agents"),
                                                      f"{HOST_MOUNT}/agents")]


def test_quick_limits() -> None:
    prof = QuickLimits(memory="256M", pids="64", timeout="30s", network="loopback").apply(
        Profile("x"))
    assert prof.limits.memory == 256 << 20 and prof.limits.pids == 64
    assert prof.limits.timeout == 30 and prof.network.mode == "loopback"
    assert QuickLimits(memory="none").apply(Profile("x")).limits.memory is None
    with pytest.raises(ValueError):
        QuickLimits(cpus="lots").apply(Profile("x"))


def test_recent_commands_round_trip() -> None:
    assert load_recent() == []
    a = RunSpec(argv=("python3", "a.py"), cwd="/srv")
    b = RunSpec(argv=("sh", "-c", "echo hi"), cwd="/srv", limits=QuickLimits(memory="1G"))
    remember(a)
    remember(b)
    remember(a)
    got = load_recent()
    assert [s.argv for s in got] == [a.argv, b.argv]
    assert got[1].limits.memory == "1G"
