"""Ask mode, relax and tighten in the workbench, against real sandboxes.

- ask: one run of tests/tui/programs/ask_agent.py, whose refused calls (kcmp, an AF_ALG
  socket) wait inside the kernel while the modal asks; allow once lets the call through,
  deny answers EPERM, allow always lets the next call through unasked and puts the family
  into the draft, and an unanswered question is denied at the (short) timeout, the modal
  closing with a notice;
- relax: a run that fails because kcmp is refused; the proposal's kcmp hunk accepted, the
  others rejected, applied to the draft, and the re-run succeeds;
- tighten: after a learn run, the proposal removes what it never used; all accepted, the
  re-run under the tightened draft still succeeds.
"""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_real_sandbox import output_text, wait_exit
from waits import settle

from flue_tui.app import FlueApp, make_app

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

PROGRAM = "tests/tui/programs/ask_agent.py"


async def wait_for(pilot: Any, cond: Any, what: str, timeout: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"never happened: {what}")


def body_text(app: FlueApp) -> str:
    try:
        return str(app.screen.query_one("#ask-body").render())
    except Exception:  # noqa: BLE001 - not mounted yet
        return ""


async def test_ask_once_deny_always_and_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from flue_tui.screens.ask import AskModal

    monkeypatch.chdir(ROOT)
    # the timeout must leave room for a slow machine to answer the other questions (each is
    # answered the moment it shows, well within it), and is what the last question waits for
    app = make_app(["python3", PROGRAM], remember=False, blink=False, ask=True,
                   ask_timeout=5)
    async with app.run_test(size=(120, 40)) as pilot:
        answers = [("kcmp", "o"), ("kcmp", "d"), ("socket AF_ALG", "a")]
        for key, press in answers:
            await wait_for(pilot, lambda: isinstance(app.screen, AskModal) and app.asks
                           and "denied in" in body_text(app), f"a question about {key}")
            assert app.asks[0].key == key, [p.key for p in app.asks]
            assert key.split()[0] in body_text(app), body_text(app)
            await pilot.press(press)
            await pilot.pause(0.05)
        # the fourth question is left alone: the engine denies it at the timeout
        await wait_for(pilot, lambda: bool(app.asks), "the last question")
        assert app.asks[0].key == "kcmp"
        await wait_exit(pilot, app, 1)
        assert not app.asks and not isinstance(app.screen, AskModal), \
            "the timed-out question closed"
        line = next(ln for ln in output_text(app).splitlines() if ln.startswith("ASK "))
        out = json.loads(line[4:])
        assert out["once"] == 0, out  # allowed once: the kernel ran it
        assert out["deny"] == errno.EPERM, out
        assert out["alg"] != errno.EPERM and out["alg_again"] != errno.EPERM, out
        assert out["unanswered"] == errno.EPERM, out
        # allow always went into the draft; what was denied shows as denials
        assert "AF_ALG" in app.draft.resolve().seccomp.socket_families
        assert app.draft.dirty
        assert app.run_model.denials["kcmp"].count == 2
        notes = [n.message for n in app._notifications]
        assert any("no answer in 5 s" in m for m in notes), notes


async def wait_screen(pilot: Any, app: FlueApp, name: str) -> None:
    await wait_for(pilot, lambda: type(app.screen).__name__ == name, name, timeout=20)


async def test_relax_accept_one_reject_the_rest_rerun_succeeds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    app = make_app(["python3", PROGRAM, "needs-kcmp"], remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_exit(pilot, app, 1)
        assert app.run_model.exited.exit_code == 3
        await pilot.press("t")  # Tune, then f: relax from the last run
        await wait_screen(pilot, app, "TuneScreen")
        await pilot.press("f")
        await wait_screen(pilot, app, "ProposalScreen")
        screen = app.screen
        titles = [h.title for h in screen.proposal.hunks]
        assert "allow kcmp" in titles, titles
        for h in screen.proposal.hunks:
            await pilot.press("a" if h.title == "allow kcmp" else "x")
        assert screen.accepted_ids() == [h.id for h in screen.proposal.hunks
                                         if h.title == "allow kcmp"]
        await pilot.press("y")
        await wait_screen(pilot, app, "TuneScreen")
        prof = app.draft.resolve()
        assert "kcmp" in prof.seccomp.allow
        assert "AF_ALG" not in prof.seccomp.socket_families  # rejected hunks stay out
        assert "kcmp" in str(app.screen.query_one("#tune-diff").render())
        await pilot.press("r")
        await wait_exit(pilot, app, 2)
        assert app.run_model.exited.exit_code == 0, output_text(app)
        assert "kcmp errno 0" in output_text(app)


async def test_tighten_after_a_learn_run_rerun_still_succeeds(
        monkeypatch: pytest.MonkeyPatch, agent_profile: Path) -> None:
    from dataclasses import replace

    monkeypatch.chdir(ROOT)
    app = make_app(["python3", "-c", "print('tight enough')"], profile=str(agent_profile),
                   remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_exit(pilot, app, 1)
        app.action_tighten()  # a plain run says what it used nothing about
        await settle(pilot)
        assert type(app.screen).__name__ == "MonitorScreen"
        assert any("none recorded what it used" in n.message for n in app._notifications)
        app.start(replace(app.spec, learn=True))
        await wait_exit(pilot, app, 2)
        while type(app.screen).__name__ != "MonitorScreen":  # the learn screen, if shown
            app.pop_screen()
            await pilot.pause(0.1)
        orig = set(app.draft.resolve().seccomp.allow)
        app.action_tighten()
        await wait_screen(pilot, app, "ProposalScreen")
        hunks = app.screen.proposal.hunks
        assert any(h.change.op in ("remove_allow", "replace_group") for h in hunks), \
            [h.title for h in hunks]
        await pilot.press("A", "y")
        await wait_screen(pilot, app, "MonitorScreen")
        tightened = set(app.draft.resolve().seccomp.allow)
        assert tightened < orig, "something was taken out"
        assert app.draft.dirty
        app.action_rerun()
        await wait_exit(pilot, app, 3)
        assert app.run_model.exited.exit_code == 0, output_text(app)
        assert "tight enough" in output_text(app)
