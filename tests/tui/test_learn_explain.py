"""Learn mode and the Explain screen against real sandboxes, plus their snapshots (replayed).

The program, ``programs/needs_ptrace.py``, needs ``ptrace``, which the default profile
refuses: under it the run fails; learned, the profile allows it and the run works enforced.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import RECORDINGS, ROOT
from test_real_sandbox import output_text, wait_exit
from test_snapshots import SIZES, steps
from waits import settle

from flue_tui.app import make_app

PROGRAM = ["python3", "tests/tui/programs/needs_ptrace.py"]


@pytest.mark.sandbox
@pytest.mark.slow
async def test_learn_accept_rerun_enforced_save(monkeypatch: pytest.MonkeyPatch,
                                                isolated_xdg: Path) -> None:
    from flue_tui.screens.learn import LearnScreen

    monkeypatch.chdir(ROOT)
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        # the launch form's learn box
        app.screen.query_one("#launch-cmd").value = " ".join(PROGRAM)
        app.screen.query_one("#launch-learn").value = True
        await pilot.press("ctrl+r")
        await wait_exit(pilot, app, 1)
        first = app.runs[0]
        assert first.learn and first.exited is not None and first.exited.exit_code == 0
        assert "ptrace(PTRACE_TRACEME): allowed" in output_text(app)  # observed, not refused
        assert not first.denials
        await settle(pilot)
        assert isinstance(app.screen, LearnScreen)
        session = app.learn_session
        assert session.base_ref == "default" and session.runs == [1]
        text = session.text
        ptrace_line = next(ln for ln in text.splitlines() if ln.strip().startswith('"ptrace"'))
        assert "# @debug: 1 call" in ptrace_line  # every line says why it is there
        assert 'extends = "default"' in text
        changes = str(app.screen.query_one("#learn-changes").render())
        assert "+ allow ptrace (@debug; refused by the base)" in changes

        # learn again: the second run merges in
        await pilot.press("l")
        await wait_exit(pilot, app, 2)
        await settle(pilot)
        assert isinstance(app.screen, LearnScreen) and session.runs == [1, 2]
        assert "from 2 runs" in session.text

        # accept and re-run enforced: it works, nothing refused
        await pilot.press("r")
        await wait_exit(pilot, app, 3)
        third = app.run_model
        assert third.number == 3 and not third.learn
        assert third.exited is not None and third.exited.exit_code == 0, output_text(app)
        assert not third.denials, list(third.denials)
        assert app.draft is session.doc and app.draft.dirty
        assert third.profile_used.seccomp.allow == app.draft.resolve().seccomp.allow
        assert "ptrace" in third.profile_used.seccomp.allow

        # save: the file keeps its comments, its observations beside it
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        saved = isolated_xdg / "xdg_config_home" / "flue" / "profiles" / \
            "learned-python3-needs-ptrace-py.toml"
        assert saved.is_file(), list((isolated_xdg / "xdg_config_home").rglob("*"))
        body = saved.read_text()
        assert body == session.text
        assert "# Learned by `flue learn` from 2 runs" in body
        assert tomllib.loads(body)["extends"] == "default"
        side = saved.with_name("learned-python3-needs-ptrace-py.learn.json")
        assert side.is_file() and '"ptrace"' in side.read_text()
        assert not app.draft.dirty
        from engine.learn.writer import previous_observations

        obs, base = previous_observations(saved)  # what flue learn -o merges into
        assert base == "default" and obs is not None and len(obs.runs) == 2


@pytest.mark.sandbox
@pytest.mark.slow
async def test_explain_names_the_refusal_and_its_fix_works(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flue_tui.screens.explain import ExplainScreen

    monkeypatch.chdir(ROOT)
    app = make_app(PROGRAM, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_exit(pilot, app, 1)
        assert app.run_model.exited.exit_code != 0
        assert "refused (Operation not permitted)" in output_text(app)
        await pilot.press("x")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, ExplainScreen)
        first = screen.explained.causes[0]
        assert first.kind == "syscall" and first.title.startswith("ptrace refused")
        assert first.label == "likely"
        detail = str(screen.query_one("#explain-detail").render())
        assert "fix: allow ptrace" in detail and '+    "ptrace",' in detail
        await pilot.press("a")
        await settle(pilot)
        assert "ptrace" in app.draft.resolve().seccomp.allow
        await pilot.press("r")
        await wait_exit(pilot, app, 2)
        second = app.run_model
        assert second.exited is not None and second.exited.exit_code == 0
        assert "ptrace" not in second.denials
        assert "ptrace(PTRACE_TRACEME): allowed" in output_text(app)
        await pilot.press("x")
        await settle(pilot)
        assert isinstance(app.screen, ExplainScreen)
        assert not [c for c in app.screen.explained.causes if c.likelihood >= 0.35]


# --------------------------------------------------------------------------- snapshots


def replay_app(recording: str):  # type: ignore[no-untyped-def]
    return make_app(PROGRAM, profile="default", cwd="/home/user/project",
                    replay=[RECORDINGS / recording], remember=False, blink=False)


@pytest.fixture
def _chdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.usefixtures("_chdir")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_learn_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    async def learn(pilot: Any) -> None:
        await pilot.press("L")

    assert snap_compare(replay_app("learn.jsonl"), terminal_size=size,
                        run_before=steps(learn))


@pytest.mark.usefixtures("_chdir")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_explain_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    async def explain(pilot: Any) -> None:
        await pilot.press("x")

    assert snap_compare(replay_app("fail.jsonl"), terminal_size=size,
                        run_before=steps(explain))
