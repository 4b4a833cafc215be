"""Review: the help screen glues long descriptions to their binding ids.

In tmux (`?` at 120x40): "save the draft profile (asks where; validates first)app.save",
"allow the selected denial's syscall in the draft profilemonitor.allow". The description was
padded with f"{what:<42}", so one longer than 42 characters ran straight into the id. The rows
are now three columns (the description wraps inside its own); these tests read what is drawn.
"""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from waits import settle

from flue_tui.app import make_app
from flue_tui.screens.modals import HelpScreen


def drawn_lines(widget: Any) -> list[str]:
    console = Console(width=widget.content_size.width, record=True, color_system=None,
                      file=open("/dev/null", "w"))  # noqa: SIM115 - closed with the console
    console.print(widget.content)
    return console.export_text().splitlines()


@pytest.mark.parametrize("size", [(160, 50), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_help_rows_keep_a_space_before_the_binding_id(size: tuple[int, int]) -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        sections = app.help_sections()
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        dialog = app.screen.query_one("#help-dialog")
        assert dialog.region.right <= size[0] and dialog.region.bottom <= size[1]
        lines = drawn_lines(app.screen.query_one(".dialog-scroll Static"))
        ids = [bid for _, rows in sections for _, _, bid in rows if bid]
        for bid in ids:
            at = [ln for ln in lines if ln.rstrip().endswith(bid)]
            assert at, f"{bid} is not drawn at the end of a line"
            assert all(ln.rstrip()[: -len(bid)].endswith("  ") for ln in at), at
        # one capitalisation: every description starts with a capital letter
        for _, rows in sections:
            for _, what, _ in rows:
                first = what[:1].upper() + what[1:]
                assert any(first[:20] in ln for ln in lines), first
