"""Learn, Explain and Ask mode used the way a newcomer does, at odd moments and at 80x24.

Real sandboxes (ask mode, where the behaviour is the engine holding a call):
- a question the engine answers (its timeout) while a dialog the user opened covers the modal
  closes the modal, not that dialog (Textual's ``dismiss`` pops the top screen), and never
  leaves a question nobody can answer open;
- a re-run started over a question and then cancelled leaves the question up, answerable.

Replayed recordings of real runs (the screens themselves):
- the Learn screen at 80x24: long lines wrapped with every word kept, the footer's keys in
  view, the keys scrolling the tab shown, a failed learn run's warning whole, the palette's
  commands; learning again asks before it drops edits to the accepted draft; saving over an
  earlier learned profile (a .bak) and under another name (its header names its sidecar);
  quitting asks while the learned profile was never saved; the peak in KiB;
- Explain: a fix in the draft already says so; before the run has started it says that;
- the launch form's ask timeout, ``--ask-timeout inf``, escape sequences in a learned
  command line, the Denials panel's bottom line after a re-run that refused nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import RECORDINGS, ROOT
from rich.text import Text
from test_real_sandbox import wait_exit
from waits import settle, wait_until

from flue_tui.app import make_app


@pytest.fixture
def _chdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


async def wait_for(pilot: Any, cond: Any, what: str) -> None:
    """``cond`` true, then the app settled (a dialog just pushed has its widgets)."""
    await wait_until(pilot, cond, what, timeout=40.0)


@pytest.mark.sandbox
@pytest.mark.slow
async def test_ask_answered_by_the_engine_under_a_dialog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from flue_tui.screens.ask import AskModal
    from flue_tui.screens.monitor import MonitorScreen
    from flue_tui.screens.save import SaveModal

    monkeypatch.chdir(ROOT)
    # two refused calls (kcmp, an AF_ALG socket), each held until the 1 s timeout
    app = make_app(["python3", "tests/tui/programs/ask_agent.py", "needs-kcmp"],
                   remember=False, blink=False, ask=True, ask_timeout=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal) and bool(app.asks),
                       "the first question")
        await pilot.press("ctrl+s")  # the save dialog over the question
        await wait_for(pilot, lambda: isinstance(app.screen, SaveModal), "the save dialog")
        await wait_exit(pilot, app, 1)  # both questions denied at the timeout, run over
        assert not app.asks
        assert isinstance(app.screen, SaveModal), \
            f"the dialog the user opened was closed: {app.screen_stack}"
        modal = next(s for s in app.screen_stack if isinstance(s, AskModal))
        assert "nothing is waiting" in str(modal.query_one("#ask-body").render())
        await pilot.press("escape")  # the dialog goes; the answered question with it
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        assert not any(isinstance(s, AskModal) for s in app.screen_stack)
        notes = [n.message for n in app._notifications]
        assert any("no answer in 1 s" in m for m in notes), notes
        assert app.run_model.denials["kcmp"].count == 1


@pytest.mark.sandbox
@pytest.mark.slow
async def test_ask_question_survives_a_cancelled_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    from flue_tui.screens.ask import AskModal
    from flue_tui.screens.modals import ConfirmModal

    monkeypatch.chdir(ROOT)
    app = make_app(["python3", "tests/tui/programs/ask_agent.py", "needs-kcmp"],
                   remember=False, blink=False, ask=True, ask_timeout=120)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal) and bool(app.asks),
                       "the kcmp question")
        app.action_rerun()  # the palette's "Run: Re-run" over the question
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "kill and re-run?")
        await settle(pilot)
        await pilot.press("n")  # not now: the question is still there to answer
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal), "the question again")
        assert app.asks and app.asks[0].key == "kcmp"
        await pilot.press("o")  # kcmp allowed once: the program gets 0 and exits 0
        await wait_for(pilot, lambda: isinstance(app.screen, AskModal) and bool(app.asks)
                       and app.asks[0].key == "socket AF_ALG", "the AF_ALG question")
        await pilot.press("d")
        await wait_exit(pilot, app, 1)
        assert len(app.runs) == 1 and app.run_model.exited.exit_code == 0


def test_endless_ask_timeout() -> None:
    from flue_tui.__main__ import main
    from flue_tui.messages import AskPrompt
    from flue_tui.screens.ask import prompt_text

    for bad in ("inf", "nan", "0", "-3"):
        assert main(["--ask", "--ask-timeout", bad, "--", "true"]) == 2, bad
    p = AskPrompt(1, id=1, key="kcmp", name="kcmp", pid=2, comm="python3",
                  timeout=float("inf"), answer=lambda d: None)
    text = prompt_text(p, float("inf"))
    assert isinstance(text, Text) and "no timeout" in text.plain


# --------------------------------------------------------------------------- learn, explain
# replayed recordings of real runs (tests/tui/recordings): what is tested is the screens.


def _replay(recording: str):  # type: ignore[no-untyped-def]
    return make_app(["python3", "tests/tui/programs/needs_ptrace.py"], profile="default",
                    cwd="/home/user/project", replay=[RECORDINGS / recording],
                    remember=False, blink=False)


async def _learned(pilot: Any) -> Any:
    from flue_tui.screens.learn import LearnScreen

    await settle(pilot)
    await pilot.press("L")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, LearnScreen), "the Learn screen")
    await settle(pilot)
    return pilot.app.screen


@pytest.mark.usefixtures("_chdir")
async def test_learn_screen_readable_and_scrollable_at_80x24() -> None:
    import re

    app = _replay("learn.jsonl")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _learned(pilot)
        session = app.learn_session
        shown = str(screen.query_one("#learn-profile").render())
        width = screen.query_one("#learn-profile").size.width
        assert all(len(ln.rstrip()) <= width for ln in shown.splitlines()), width
        assert "…" not in shown  # nothing cut off: long lines wrap, comments under themselves

        def words(text: str) -> list[str]:
            return re.findall(r"[^\s#\u00a0]+", text)

        assert words(shown) == words(session.text)  # every word of every comment is there
        changes = str(screen.query_one("#learn-changes").render())
        assert "…" not in changes.replace("… ", "")  # "… N more" is the text's own

        # the footer keeps Help and Quit in view (seven keys at 80 columns)
        from textual.widgets._footer import FooterKey

        keys = [k for k in screen.query(FooterKey) if k.display]
        assert {"a", "r", "l", "q"} <= {k.key for k in keys}
        palette = next(k for k in screen.query(FooterKey) if k.key == "ctrl+p")
        assert all(k.region.right <= palette.region.x for k in keys if k is not palette), \
            [(k.key, k.region) for k in keys]

        # the keys scroll the tab that is shown, on both tabs
        profile = screen.query_one("#learn-profile-scroll")
        await pilot.press("end")
        await settle(pilot)
        assert profile.scroll_y == profile.max_scroll_y > 0
        await pilot.press("right_square_bracket")
        await settle(pilot)
        changes_scroll = screen.query_one("#learn-changes-scroll")
        assert app.focused is changes_scroll
        await pilot.press("end")
        await settle(pilot)
        assert changes_scroll.scroll_y == changes_scroll.max_scroll_y
        await pilot.press("left_square_bracket", "home")
        await settle(pilot)
        assert app.focused is profile and profile.scroll_y == 0

        # the palette's commands for the new modes, named "category: Verb"
        names = [name for name, _, _ in app.palette_commands()]
        for cmd in ("Run: Learn", "Run: Show the learned profile", "Run: Explain",
                    "Run: Re-run asking before denying", "Profile: Relax from last run",
                    "Profile: Tighten from recorded runs"):
            assert cmd in names, names

        # a failed learn run's warning has a line of its own, whole
        session.last_exit = 3
        screen.refresh_session()
        await settle(pilot)
        title = str(screen.query_one("#learn-title").render()).splitlines()
        assert title[-1].strip() == ("last learn run exited 3: the profile may lack what a "
                                     "successful run needs"), title
        assert screen.query_one("#learn-title").size.height == 3


@pytest.mark.usefixtures("_chdir")
async def test_learned_profile_saved_over_an_earlier_one_and_elsewhere(
        isolated_xdg: Path, tmp_path: Path) -> None:
    from flue_tui.screens.save import SaveModal

    app = _replay("learn.jsonl")
    async with app.run_test(size=(80, 24)) as pilot:
        await _learned(pilot)
        session = app.learn_session
        dest = session.save_path()
        # learned yesterday, same command: the file is there already
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text('# learned yesterday\nextends = "default"\n')
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveModal), "the save dialog")
        await settle(pilot)
        assert "learned yesterday" in str(app.screen.query_one("#save-diff Static").render())
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, SaveModal), "the save")
        assert dest.read_text() == session.text  # replaced, not "changed on disk"
        assert dest.with_name(dest.name + ".bak").read_text().startswith("# learned yesterday")
        assert dest.with_name(dest.stem + ".learn.json").is_file()

        # saved elsewhere: its header names the observations written beside it
        other = tmp_path / "agent.toml"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveModal), "the save dialog")
        await settle(pilot)
        app.screen.query_one("#save-target").value = str(other)
        await settle(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, SaveModal), "the save")
        body = other.read_text()
        assert "The observations behind it: agent.learn.json" in body, body[:600]
        assert dest.stem + ".learn.json" not in body
        assert (tmp_path / "agent.learn.json").is_file()
        from engine.learn.writer import previous_observations

        obs, base = previous_observations(other)  # what flue learn -o agent.toml merges into
        assert base == "default" and obs is not None


@pytest.mark.usefixtures("_chdir")
async def test_explain_says_when_the_fix_is_in_the_draft() -> None:
    from flue_tui.screens.explain import ExplainScreen

    app = _replay("fail.jsonl")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ExplainScreen), "Explain")
        await settle(pilot)
        detail = app.screen.query_one("#explain-detail")
        assert "a applies it" in str(detail.render())
        await pilot.press("a")
        await settle(pilot)
        shown = str(detail.render())
        assert "in the draft already: r re-runs with it" in shown, shown
        assert "a applies it" not in shown


@pytest.mark.usefixtures("_chdir")
async def test_learn_again_asks_before_it_drops_the_edits_of_the_accepted_draft() -> None:
    from flue_tui.screens.learn import LearnScreen
    from flue_tui.screens.modals import ConfirmModal

    app = _replay("learn.jsonl")
    async with app.run_test(size=(80, 24)) as pilot:
        await _learned(pilot)
        session = app.learn_session
        await pilot.press("l")  # nothing edited: it goes at once
        await wait_for(pilot, lambda: len(session.runs) == 2 and isinstance(
            app.screen, LearnScreen), "the second learn run")
        await pilot.press("a")
        await settle(pilot)
        assert app.draft is session.doc and not session.edited()
        app.apply_edit(lambda d: d.allow_domain("pypi.org"))  # an edit in Tune, say
        await settle(pilot)
        assert session.edited()
        runs = len(app.runs)
        app.action_learned()
        await settle(pilot)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await settle(pilot)
        assert "are lost" in str(app.screen.query_one(".dialog-body").render())
        await pilot.press("n")
        await settle(pilot)
        assert len(app.runs) == runs and "pypi.org" in app.draft.text()  # kept
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await settle(pilot)
        await pilot.press("y")
        await wait_for(pilot, lambda: len(session.runs) == 3 and isinstance(
            app.screen, LearnScreen), "the third learn run")
        assert app.draft is session.doc and "pypi.org" not in app.draft.text()
        assert not session.edited()


@pytest.mark.usefixtures("_chdir")
async def test_launch_form_ask_timeout() -> None:
    from flue_tui.screens.launch import LaunchScreen

    app = make_app(None, replay=[RECORDINGS / "fail.jsonl"], remember=False, blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchScreen)
                       and bool(app.screen.query("#launch-ask-timeout")), "the form")
        await settle(pilot)
        form = app.screen
        form.query_one("#launch-cmd").value = "python3 -c pass"
        form.query_one("#launch-ask").value = True
        for bad, why in (("abc", "is not a duration"), ("-5", "is not a duration"),
                         ("0", "above 0")):
            form.query_one("#launch-ask-timeout").value = bad
            await pilot.press("ctrl+r")
            await settle(pilot)
            assert app.screen is form and app.spec is None, bad
            error = str(form.query_one("#launch-error").render())
            assert "ask timeout" in error and why in error, (bad, error)
        # unticked, the field has no say: the run starts
        form.query_one("#launch-ask").value = False
        form.query_one("#launch-ask-timeout").value = "abc"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.spec is not None, "the run")
        assert not app.spec.ask and app.spec.ask_timeout == 30


def test_learn_title_peak_memory() -> None:
    from flue_tui.screens.learn import _mib

    # a run without a cgroup (--allow-unlimited) peaks below a MiB: never "0 MiB"
    assert _mib(360 * 1024) == "360 KiB" and _mib(6.3 * 2**20) == "6.3 MiB"


def test_learned_profile_of_a_command_with_escape_sequences() -> None:
    """The command line (and any path) goes into the profile's comments: raw control
    characters there made a file TOML refuses, so learn failed ('not a valid profile')."""
    from engine.profile import load_profile
    from flue_tui.screens.learn import LearnSession, profile_text

    s = LearnSession("default", load_profile("default"))
    cmd = ["sh", "-c", "true \x1b]0;PWNED\x07\x1b[2J\x9b1m"]
    text = s.add({"runs": [{"command": cmd, "exit_code": 0, "wall_seconds": 0.1}]}, 1, 0)
    assert s.runs == [1]  # valid: it loads
    header = text.splitlines()[1]
    assert header.startswith("#") and "\\x1b]0;PWNED\\x07\\x1b[2J\\x9b1m" in header, header
    shown = profile_text(text, 78).plain
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in shown)


@pytest.mark.usefixtures("_chdir")
async def test_rerun_without_denials_leaves_no_stale_denial_line() -> None:
    """Explain, apply, re-run: the run that works refuses nothing, and the Denials panel's
    bottom line no longer describes the last run's refusal as if it were still there."""
    app = make_app(["python3", "tests/tui/programs/needs_ptrace.py"], profile="default",
                   cwd="/home/user/project",
                   replay=[RECORDINGS / "fail.jsonl", RECORDINGS / "learn.jsonl"],
                   remember=False, blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        detail = app.screen.query_one("#denials-detail")
        assert "ptrace" in str(detail.render())
        app.action_rerun()
        await wait_for(pilot, lambda: len(app.runs) == 2 and app.run_model.exited is not None,
                       "the second run")
        await settle(pilot)
        assert not app.run_model.denials
        assert "ptrace" not in str(detail.render())


@pytest.mark.usefixtures("_chdir")
async def test_quit_asks_when_the_learned_profile_is_not_saved() -> None:
    from flue_tui.screens.modals import ConfirmModal

    app = _replay("learn.jsonl")
    async with app.run_test(size=(80, 24)) as pilot:
        await _learned(pilot)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await settle(pilot)
        assert "learned profile is not saved" in str(
            app.screen.query_one(".dialog-body").render())
        await pilot.press("n")
        await pilot.press("ctrl+s")  # accepted and saved: nothing is lost by quitting now
        await settle(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.learn_session.doc is not None
                       and not app.learn_session.doc.dirty, "the save")
        await pilot.press("escape", "q")
        await wait_for(pilot, lambda: app.return_code == 0, "the quit")


@pytest.mark.usefixtures("_chdir")
async def test_explain_before_the_run_has_started() -> None:
    from flue_tui.screens.explain import ExplainScreen

    app = make_app(["python3", "tests/tui/programs/needs_ptrace.py"],
                   replay=[RECORDINGS / "fail.jsonl"], replay_upto=0, remember=False,
                   blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ExplainScreen), "Explain")
        await settle(pilot)
        title = str(app.screen.query_one("#explain-title").render())
        assert "nothing to explain yet: the run has not started" in title, title
        await pilot.press("a")  # nothing selected: said, nothing breaks
        await settle(pilot)
        assert isinstance(app.screen, ExplainScreen)
