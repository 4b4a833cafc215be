"""Review: a recent command whose profile is a file path comes back with `default`.

In tmux: `flue-tui -p ./my-agent.toml -- echo A`, quit, `flue-tui`, pick "echo A   .../my-agent.toml"
in Recent, ctrl+r: the status says "profile default (built-in)". The launch form's Select
lists only named profiles; `_recent_chosen` sets a value it does not have, and the error is
suppressed, so the form keeps whatever it showed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, Select

from flue_tui.app import make_app
from flue_tui.runspec import RunSpec
from flue_tui.screens.launch import LaunchScreen
from flue_tui.state import remember


@pytest.mark.xfail(strict=True, reason="choosing a recent run whose profile is a path silently "
                                       "keeps the default profile")
async def test_recent_entry_keeps_its_profile_path(agent_profile: Path) -> None:
    remember(RunSpec(argv=("echo", "A"), profile=str(agent_profile)))
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.4)
        assert isinstance(app.screen, LaunchScreen)
        ol = app.screen.query_one("#launch-recent", OptionList)
        ol.focus()
        ol.highlighted = 0
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.screen.query_one("#launch-cmd", Input).value == "echo A"
        assert app.screen.query_one("#launch-profile", Select).value == str(agent_profile)
