"""End to end, like a person: the installed flue-tui in tmux, typed at, read off the screen."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from tmux_driver import Tmux, allow_ptrace_and_save, missing

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

BIN = Path(sys.executable).parent / "flue-tui"


def _skip_reason() -> str | None:
    if (reason := missing()) is not None:
        return reason
    if not BIN.exists():
        return f"flue-tui is not installed next to {sys.executable} (pip install -e .)"
    return None


def _start(env: dict[str, str], args: tuple[str, ...] = ()) -> Tmux:
    """The installed flue-tui, in the checkout, with ``env`` added to this environment."""
    envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    argv = " ".join(shlex.quote(a) for a in (str(BIN), *args))
    return Tmux(f"cd {shlex.quote(str(ROOT))} && env {envs} {argv}")


def test_person_runs_demo_allows_saves_quits(isolated_xdg: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    env = {k: os.environ[k] for k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    env.update(TERM="xterm-256color", TEXTUAL_ANIMATIONS="none", COLORTERM="truecolor")
    t = _start(env)
    try:
        t.wait_for("New run", "Command")
        t.keys("python3 examples/demo_agent.py", literal=True)
        t.keys("Enter")
        # the denials table is repainted a moment after the status line: wait for both
        t.wait_for("exited 0", "done in", "mount", "ptrace", "unshare", "AF_PACKET",
                   timeout=40)
        allow_ptrace_and_save(t)
        saved = Path(env["XDG_CONFIG_HOME"]) / "flue" / "profiles" / "default.toml"
        assert saved.is_file()
        text = saved.read_text()
        assert '"ptrace",' in text and "# flue's default profile" in text
        # re-run with it: ptrace goes through now
        t.keys("Escape")
        t.keys("r")
        screen = t.wait_for("#2", "exited 0", "done in", timeout=40)
        assert "allowed: the worker can now be debugged" in screen
        t.keys("h")
        screen = t.wait_for("Run history", "1 no longer denied by seccomp")
        assert "ptrace" in screen
        t.keys("Escape")
        t.wait_gone("Run history")
        t.keys("q")
        t.wait_exit(0)
        recent = Path(env["XDG_STATE_HOME"]) / "flue" / "tui-recent.json"
        assert "demo_agent.py" in recent.read_text()
    finally:
        t.kill()


def test_person_allows_a_refused_domain_from_the_palette(isolated_xdg: Path,
                                                         web_server: Any) -> None:
    """--net allowlist and --resolve on the command line (the name is mapped to the test's
    own server on 127.0.0.1, never asked of a resolver), the Network panel showing the
    refusal, the palette's "Allow domain", a re-run that gets through."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    name = "web.flue-tui.test"
    env = {k: os.environ[k] for k in ("XDG_CONFIG_HOME", "XDG_STATE_HOME")}
    env.update(TERM="xterm-256color", TEXTUAL_ANIMATIONS="none", COLORTERM="truecolor")
    t = _start(env, ("--net", "allowlist", "--resolve", f"{name}=127.0.0.1", "--", "python3",
                   "tests/tui/programs/net_agent.py", str(web_server.port), name))
    try:
        screen = t.wait_for("exited 0", "6 Network", "✗ refused", "net refused 2", timeout=40)
        assert "net allowlist 0 rules" in screen
        t.keys("C-p")
        t.wait_for("Search")
        t.keys("allow domain", literal=True)
        t.wait_for(f"Allow domain {name}")
        t.keys("Enter")
        t.wait_for(f"allow {name}:{web_server.port}")
        t.keys("r")
        # the program's line may reach the Output panel a batch after the status line says
        # it exited: wait for every part of the result, not for the first
        t.wait_for("#2", "exited 0", "✓ closed", f"hello from {name}", "net allowlist 1 rule",
                   timeout=40)
        t.keys("q")
        t.wait_for("unsaved edits")
        t.keys("y")
        t.wait_exit(0)
    finally:
        t.kill()
