"""Checks on `flue run --report FILE` JSON."""

from __future__ import annotations

from typing import Any

REPORT_FIELDS = ("exit_code", "signal", "oom_killed", "timed_out", "pids_limit_hit",
                 "seccomp_killed", "wall_seconds", "cpu_seconds", "peak_memory", "limits",
                 "isolation", "degraded")
SPECIAL = ("oom_killed", "timed_out", "pids_limit_hit", "seccomp_killed")


def check_report(run: Any, **expected: Any) -> dict[str, Any]:
    """Every field is there and consistent with the run; ``expected`` fields have their
    values. Special ends not named in ``expected`` must be false."""
    rep = run.report
    assert rep is not None, f"no report written\n{run}"
    for key in REPORT_FIELDS:
        assert key in rep, f"report lacks {key}: {sorted(rep)}"
    assert rep["exit_code"] == run.returncode, (rep["exit_code"], run)
    if rep["signal"] is not None:
        assert rep["exit_code"] == 128 + rep["signal"], rep
    assert isinstance(rep["wall_seconds"], (int, float)) and rep["wall_seconds"] > 0
    assert set(rep["limits"]) >= {"memory", "pids", "cpus", "timeout"}, rep["limits"]
    assert rep["isolation"].get("namespaces"), rep["isolation"]
    assert isinstance(rep["degraded"], list)
    for key in SPECIAL:
        expected.setdefault(key, False)
    for key, want in expected.items():
        assert rep[key] == want, f"report[{key!r}] = {rep[key]!r}, expected {want!r}\n{run}"
    return rep
