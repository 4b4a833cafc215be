"""Learn, Explain and Ask mode used the way a newcomer does, at odd moments and at 80x24.

- ask: a question answered by the engine (its timeout) while a dialog the user opened covers
  the modal closes the modal, not the dialog on top of it (Textual's ``dismiss`` pops the top
  screen), and never leaves a question nobody can answer open; an endless ``--ask-timeout``
  is refused on the command line and shown as "no timeout" if it comes anyway.
"""

from __future__ import annotations

import pytest
from conftest import ROOT
from rich.text import Text
from test_ask_tune_real import wait_for
from test_real_sandbox import wait_exit

from flue_tui.app import make_app


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
