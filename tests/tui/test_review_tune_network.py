"""Review: re-opening Tune must not change the draft.

Reproduces what a user sees in tmux: set Network to loopback in Tune, go back (esc), press
`t` again -- the select shows "none" again and the draft's diff loses the [network] hunk
(the monitor said "edited +18 −6", the re-opened Tune says "+17 −5"). The Select is composed
with value="none"; its Changed event for that initial value arrives after on_mount has set the
real mode, and the handler writes "none" into the draft. (Fixed: the Select is composed with
the draft's own mode.)
"""

from __future__ import annotations

from flue_tui.app import make_app
from flue_tui.screens.tune import TuneScreen


async def test_reopening_tune_keeps_network_loopback() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("escape")  # leave the launch form
        await pilot.pause(0.2)
        assert app.apply_edit(lambda d: d.set_network("loopback"))
        await pilot.pause(0.2)
        assert app.draft.resolve().network.mode == "loopback"
        app.action_tune()
        await pilot.pause(0.5)
        assert isinstance(app.screen, TuneScreen)
        assert app.draft.resolve().network.mode == "loopback"
