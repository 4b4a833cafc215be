"""Review: re-opening Tune must not change the draft.

Reproduces what a user sees in tmux: set Network to loopback in Tune, go back (esc), press
`t` again -- the select shows "none" again and the draft's diff loses the [network] hunk
(the monitor said "edited +18 −6", the re-opened Tune says "+17 −5"). The Select is composed
with value="none"; its Changed event for that initial value arrives after on_mount has set the
real mode, and the handler writes "none" into the draft. (Fixed: the Select is composed with
the draft's own mode.)
"""

from __future__ import annotations

from waits import settle

from flue_tui.app import make_app
from flue_tui.screens.tune import TuneScreen


async def test_reopening_tune_keeps_network_loopback() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("escape")  # leave the launch form
        await settle(pilot)
        assert app.apply_edit(lambda d: d.set_network("loopback"))
        await settle(pilot)
        assert app.draft.resolve().network.mode == "loopback"
        app.action_tune()
        await pilot.pause(0.5)
        assert isinstance(app.screen, TuneScreen)
        assert app.draft.resolve().network.mode == "loopback"


async def test_the_changed_line_keeps_no_comment_that_now_lies() -> None:
    """The built-in's `mode = "none"  # ... no interfaces, not even loopback` must not say
    that beside loopback once Tune has changed it."""
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        app.action_tune()
        await pilot.pause(0.5)
        assert app.apply_edit(lambda d: d.set_network("loopback"))
        await settle(pilot)
        line = next(ln for ln in app.draft.text().splitlines() if ln.startswith("mode ="))
        assert "not even loopback" not in line and "changed in flue-tui" in line, line
        diff = str(app.screen.query_one("#tune-diff").content)
        assert '(was "none")' in diff
