"""Review: saving under another built-in's name shadows it without a word.

In tmux: with the `default` draft (or any user profile) open, ctrl+s, type `strict`, enter:
`$XDG_CONFIG_HOME/flue/profiles/strict.toml` was written at once -- a copy of *default* -- and
from then on `flue run -p strict` everywhere ran with it (`flue profiles list` shows the user
strict first, with default's description). The dialog's shadowing note only appeared for a
built-in saved under its own name. Now the dialog warns as the name is typed, and enter asks.
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, Static
from waits import settle

from flue_tui.app import make_app
from flue_tui.screens.modals import ConfirmModal
from flue_tui.screens.save import SaveModal


async def _save_as(pilot, app, name: str) -> None:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await pilot.press("escape")  # leave the launch form
    await settle(pilot)
    assert app.apply_edit(lambda d: d.allow_syscall("ptrace"))
    await pilot.press("ctrl+s")
    await settle(pilot)
    target = app.screen.query_one("#save-target", Input)
    target.value = name
    await settle(pilot)


async def test_saving_as_another_builtin_name_asks_first(isolated_xdg: Path) -> None:
    written = isolated_xdg / "xdg_config_home" / "flue" / "profiles" / "strict.toml"
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await _save_as(pilot, app, "strict")
        warning = str(app.screen.query_one("#save-warning", Static).content)
        assert "built-in strict" in warning and "flue run -p strict" in warning, warning
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal), "strict.toml was written without a question"
        assert "takes the place of the built-in strict" in app.screen.question
        assert not written.exists()
        await pilot.press("n")  # no: back in the dialog, nothing written
        await settle(pilot)
        assert isinstance(app.screen, SaveModal) and not written.exists()
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert written.exists() and "ptrace" in written.read_text()


async def test_saving_under_a_new_name_does_not_ask(isolated_xdg: Path) -> None:
    written = isolated_xdg / "xdg_config_home" / "flue" / "profiles" / "mine.toml"
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await _save_as(pilot, app, "mine")
        assert not str(app.screen.query_one("#save-warning", Static).content)
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmModal)
        assert written.exists()
