"""Review: Textual's own quit paths skip flue-tui's "unsaved edits / sandbox running" question.

In tmux: `flue-tui -- sleep 1000`, press ctrl+q -> the app exits at once (exit 0), no question;
ctrl+c even shows Textual's toast "Do you want to quit? Press ctrl+q to quit the app". The command
palette's "Quit -- Quit the application as soon as possible" does the same with unsaved edits.
`q` asked (app.quit -> action_quit_app); App.action_quit did not. FlueApp.action_quit now asks
the same question.
"""

from __future__ import annotations

from waits import settle

from flue_tui.app import make_app
from flue_tui.screens.modals import ConfirmModal


async def test_ctrl_q_asks_when_edits_are_unsaved() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("escape")  # leave the launch form
        await settle(pilot)
        assert app.apply_edit(lambda d: d.allow_syscall("ptrace"))
        await settle(pilot)
        await pilot.press("ctrl+q")
        await settle(pilot)
        assert app.is_running and isinstance(app.screen, ConfirmModal)


async def test_palette_quit_asks_when_edits_are_unsaved() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert app.apply_edit(lambda d: d.allow_syscall("ptrace"))
        await settle(pilot)
        await app.run_action("quit")  # what the palette's "Quit" command calls
        await settle(pilot)
        assert app.is_running and isinstance(app.screen, ConfirmModal)
