"""A bad profile stops `flue run -p bad.toml -- CMD` before anything is launched: exit 125 and
one clear error naming the file, the line and the key, with a fix."""

from __future__ import annotations

import pytest
from helpers import host

pytestmark = pytest.mark.sandbox

CASES = {
    "unknown-key": ("""
        extends = "default"
        [limits]
        memroy = "1G"
    """, 3, "limits.memroy", ["unknown key 'memroy'", "did you mean 'memory'"]),
    "unknown-top-level-key": ("""
        extends = "default"
        hostnmae = "box"
    """, 2, "hostnmae", ["unknown key 'hostnmae'", "did you mean 'hostname'"]),
    "unknown-syscall": ("""
        extends = "default"
        [seccomp]
        allow = [
            "read",
            "opneat",
        ]
    """, 5, "seccomp.allow", ["unknown syscall 'opneat'", "did you mean 'openat'"]),
    "unknown-group": ("""
        extends = "default"
        [seccomp]
        deny = ["@file-sytem"]
    """, 3, "seccomp.deny", ["unknown syscall group '@file-sytem'", "did you mean '@file-system'"]),
    "bad-size": ("""
        extends = "default"

        [filesystem]
        workspace_size = "12Q"
    """, 4, "filesystem.workspace_size", ["bad size '12Q'", "64M"]),
    "bad-limit-size": ("""
        extends = "default"
        [limits]
        memory = "12Q"
    """, 3, "limits.memory", ["bad size '12Q'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_profile_is_refused_with_file_line_and_key(flue, case, marker):
    text, line, key, needles = CASES[case]
    prof = flue.write_profile(text, name=f"{case}.toml")
    r = flue.run(["sh", "-c", f"echo LAUNCHED {marker}"], profile=prof)
    assert r.returncode == 125, r
    assert "LAUNCHED" not in r.stdout, r
    assert r.report is None, "a report was written: the sandbox ran"
    first = r.flue_lines[0] if r.flue_lines else ""
    assert first.startswith(f"flue: {prof}:{line}: "), r
    assert f"(key '{key}')" in first, r
    for needle in needles:
        assert needle in r.stderr, r
    assert "fix:" in r.stderr, r
    assert len(r.flue_lines) == 1, r
    assert "Traceback" not in r.stderr, r
    assert not host.pids_with_marker(marker)


def test_extends_cycle_is_refused(flue, marker):
    d = flue.tmpdir("cycle")
    a = flue.write_profile('extends = "b.toml"\n', name="a.toml", directory=d)
    flue.write_profile('description = "b"\nextends = "a.toml"\n', name="b.toml", directory=d)
    r = flue.run(["sh", "-c", f"echo LAUNCHED {marker}"], profile=a)
    assert r.returncode == 125, r
    assert "LAUNCHED" not in r.stdout and r.report is None, r
    first = r.flue_lines[0]
    assert "cycle" in first and "(key 'extends')" in first, r
    assert str(d / "a.toml") in first and str(d / "b.toml") in first, r
    # the line of the `extends` that closes the cycle
    assert f"{d / 'b.toml'}:2:" in first or f"{d / 'a.toml'}:1:" in first, r
    assert "fix:" in r.stderr


def test_a_good_profile_file_runs(flue):
    # the control: the same mechanism with a valid file launches the command
    prof = flue.write_profile("""
        extends = "default"
        [limits]
        memory = "1G"
    """)
    r = flue.run(["sh", "-c", "echo LAUNCHED"], profile=prof)
    assert r.returncode == 0, r
    assert r.stdout.strip() == "LAUNCHED"
    assert r.report["limits"]["memory"] == 1 << 30
