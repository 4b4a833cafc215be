"""Review: saving under another built-in's name shadows it without a word.

In tmux: with the `default` draft (or any user profile) open, ctrl+s, type `strict`, enter:
`$XDG_CONFIG_HOME/flue/profiles/strict.toml` is written at once -- a copy of *default* -- and from
then on `flue run -p strict` everywhere runs with it (`flue profiles list` shows the user strict
first, with default's description). The dialog's shadowing note only appears for a built-in
saved under its own name; nothing asks before replacing a *different*, stricter built-in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from flue_tui.app import make_app


@pytest.mark.xfail(strict=True, reason="saving the default draft as 'strict' shadows the built-in "
                                       "strict profile without asking")
async def test_saving_as_another_builtin_name_asks_first(isolated_xdg: Path) -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("escape")  # leave the launch form
        await pilot.pause(0.2)
        assert app.apply_edit(lambda d: d.allow_syscall("ptrace"))
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        target = app.screen.query_one("#save-target", Input)
        target.value = "strict"
        await pilot.press("enter")
        await pilot.pause(0.3)
    written = isolated_xdg / "xdg_config_home" / "flue" / "profiles" / "strict.toml"
    assert not written.exists(), "strict.toml was written without a confirmation"
