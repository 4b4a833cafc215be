"""Review: the help screen glues long descriptions to their binding ids.

In tmux (`?` at 120x40): "save the draft profile (asks where; validates first)app.save",
"allow the selected denial's syscall in the draft profilemonitor.allow". The description is
padded with f"{what:<42}", so one longer than 42 characters runs straight into the id.
"""

from __future__ import annotations

import pytest

from flue_tui.app import make_app
from flue_tui.screens.modals import HelpScreen


@pytest.mark.xfail(strict=True, reason="help rows: a description over 42 chars touches the id")
async def test_help_rows_keep_a_space_before_the_binding_id() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("escape")
        await pilot.pause(0.2)
        sections = app.help_sections()
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        assert isinstance(app.screen, HelpScreen)
        shown = app.screen.query_one(".dialog-scroll Static").render()
        text = str(shown)
        glued = [f"{what}{bid}" for _, rows in sections for _, what, bid in rows
                 if bid and f"{what}{bid}" in text]
        assert not glued, glued
