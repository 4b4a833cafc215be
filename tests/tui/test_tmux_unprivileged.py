"""End to end as an unprivileged user: flue-tui in tmux, run as uid ``FLUE_TEST_UID``.

Like ``test_tmux_e2e.py`` but the app itself runs as the test uid, the way a developer runs
it: the distribution's ``python3`` with a world-readable copy of flue, flue_tui and their
dependencies (``helpers/runtime.py``), HOME and the XDG directories owned by that uid, an
agent with the demo's refusals (``programs/quick_agent.py``, a second where the demo takes
five) in a world-readable project directory. Limits are either enforced through a
cgroup subtree delegated to the uid (``helpers/cgroups.py``) or, without one, dropped with
``--allow-unlimited``, which the status line must say. Without either, the error says how
to run anyway. The tmux driver (``tmux_driver.py``) is the one ``test_tmux_e2e.py`` uses.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import cgroups as hcg
from helpers.host import descendants, describe, still_alive
from helpers.runtime import make_runtime
from tmux_driver import Tmux, allow_ptrace_and_save, missing

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

UID = int(os.environ.get("FLUE_TEST_UID", "4242"))
# the demo's refusals in a second (test_tmux_e2e.py drives the demo itself, as root)
QUICK_AGENT = Path(__file__).parent / "programs" / "quick_agent.py"


@pytest.fixture(scope="session")
def tui_runtime(session) -> Path:  # type: ignore[no-untyped-def]
    """flue, flue_tui and their dependencies, world-readable, byte-compiled by root."""
    rt = make_runtime(session.base / "runtime-tui", tui=True)
    subprocess.run([session.py, "-m", "compileall", "-q", str(rt)], check=False,
                   capture_output=True, timeout=300)
    return rt


def _owned_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True)
    os.chmod(path, mode)
    os.chown(path, UID, UID)
    return path


@pytest.fixture
def user_env(session, tmp_path: Path) -> Iterator[dict[str, Path]]:  # type: ignore[no-untyped-def]
    """A HOME with its XDG dirs owned by the uid, and a world-readable project with the
    quick agent, below the session's scratch directory (every uid can reach it)."""
    if (reason := missing()) is not None:
        pytest.skip(reason)
    session.require("user", "user namespaces")
    session.require("user", "seccomp")
    base = Path(session.scratch) / f"unpriv-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    home = _owned_dir(base / "home")
    dirs = {"home": home, "config": _owned_dir(home / ".config"),
            "state": _owned_dir(home / ".local" / "state"), "cache": _owned_dir(home / ".cache")}
    os.chown(home / ".local", UID, UID)
    proj = base / "project"
    (proj / "examples").mkdir(parents=True)
    shutil.copy(QUICK_AGENT, proj / "examples" / "agent.py")
    for p in (proj, proj / "examples", proj / "examples" / "agent.py"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    dirs["project"] = proj
    try:
        yield dirs
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _command(session, runtime: Path, dirs: dict[str, Path],  # type: ignore[no-untyped-def]
             procs: list[str], flue_tui_args: list[str]) -> str:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(dirs["home"]),
        "XDG_CONFIG_HOME": str(dirs["config"]),
        "XDG_STATE_HOME": str(dirs["state"]),
        "XDG_CACHE_HOME": str(dirs["cache"]),
        "PYTHONPATH": str(runtime),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "LANG": "C.UTF-8",
        "TEXTUAL_ANIMATIONS": "none",
    }
    argv = [session.py, str(session.dropprivs), str(UID), str(UID)]
    for f in procs:
        argv += ["--procs", f]
    argv += ["--", session.py, "-m", "flue_tui", *flue_tui_args, "--",
             "python3", "examples/agent.py"]
    return (f"cd {shlex.quote(str(dirs['project']))} && env -i "
            + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
            + shlex.join(argv))


# The full walk (allow, save as the uid, re-run) is done once, with the delegated cgroup:
# what the uid may write and read back does not depend on how the limits are kept. Without a
# delegation (--allow-unlimited) the run, the status line and a re-run (which must keep the
# flag) are checked; both end with nothing flue-tui started left alive.
@pytest.mark.parametrize("limits", ["delegated", "allow-unlimited"])
def test_unprivileged_person_runs_an_agent_allows_reruns_saves(
        session, tui_runtime: Path, user_env: dict[str, Path],  # type: ignore[no-untyped-def]
        limits: str) -> None:
    dlg = hcg.delegate(UID, UID) if limits == "delegated" else None
    args = ["--allow-unlimited"] if dlg is None else []
    t = Tmux(_command(session, tui_runtime, user_env, dlg.procs_files if dlg else [], args))
    procs: dict[int, int] = {}
    try:
        # the denials table is repainted a moment after the status line: wait for both
        screen = t.wait_for("exited 0", "done in", "mount", "ptrace", "unshare", "AF_PACKET",
                            timeout=60)
        procs = descendants(t.pane_pid())  # flue-tui, its fork server, ... (pid -> start)
        if dlg is None:  # the limits are off, and the status line says so
            _assert_limits_off(screen)
            t.keys("r")  # the re-run keeps --allow-unlimited (without it, it would fail)
            screen = t.wait_for("#2", "exited 0", "done in", timeout=60)
            _assert_limits_off(screen)
            procs.update(descendants(t.pane_pid()))
            t.keys("q")
            t.wait_exit(0)
        else:  # the delegated cgroup enforces the profile's limits
            assert "limits off" not in screen and "cgroup v" in screen, screen
            assert "mem 2.0G" in screen and "pids 1024" in screen, screen
            _allow_save_rerun(t, user_env, procs)
            assert dlg.leftovers() == [], dlg.leftovers()
    finally:
        t.kill()
        if dlg is not None:
            dlg.remove()
    left = still_alive(procs)  # everything flue-tui started is gone (others' runs may not be)
    assert not left, describe(left)


def _assert_limits_off(screen: str) -> None:
    assert "⚠ limits off (--allow-unlimited)" in screen, screen
    assert "Memory" in screen and "/ no limit" in screen, screen  # not "/ 2.0G"


def _allow_save_rerun(t: Tmux, user_env: dict[str, Path], procs: dict[int, int]) -> None:
    allow_ptrace_and_save(t)  # as the user, into the user's own profile directory
    saved = user_env["config"] / "flue" / "profiles" / "default.toml"
    assert saved.is_file(), list(user_env["home"].rglob("*"))
    assert saved.stat().st_uid == UID and saved.parent.stat().st_uid == UID
    text = saved.read_text()
    assert '"ptrace",' in text and "# flue's default profile" in text
    # re-run: ptrace goes through now
    t.keys("Escape")
    t.keys("r")
    screen = t.wait_for("#2", "exited 0", "done in", timeout=60)
    assert "allowed: the worker can now be debugged" in screen, screen
    procs.update(descendants(t.pane_pid()))
    t.keys("q")
    t.wait_exit(0)
    recent = user_env["state"] / "flue" / "tui-recent.json"
    assert recent.stat().st_uid == UID
    assert "agent.py" in json.dumps(json.loads(recent.read_text()))


def test_unprivileged_without_delegation_says_how_to_run_anyway(
        session, tui_runtime: Path, user_env: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    t = Tmux(_command(session, tui_runtime, user_env, [], []))
    try:
        screen = t.wait_for("cannot be enforced here", "--allow-unlimited", timeout=60)
        assert "failed" in screen and "delegate" in screen, screen
        t.keys("Escape")
        t.keys("q")
        t.wait_exit(0)
    finally:
        t.kill()
