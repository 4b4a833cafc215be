"""A stream's status line (filter count, paused, new entries while not following) shows on
its panel's bottom border, for the stream of the tab that is shown."""

from __future__ import annotations

from waits import settle, wait_until

from engine import events as ev
from flue_tui.app import make_app

T0 = 1000.0
SB = "flue-test"


def recording() -> list[ev.Event]:
    out: list[ev.Event] = [ev.Started(sandbox=SB, ts=T0, argv=("sh", "-c", "talk"),
                                      profile="default")]
    out += [ev.Output(sandbox=SB, ts=T0 + 0.01 * i, stream="stdout",
                      data="".join(f"line {i}-{j}\n" for j in range(10))) for i in range(30)]
    return out


async def test_the_output_panel_says_what_its_filter_and_pause_do() -> None:
    app = make_app(["sh", "-c", "talk"], replay=recording(), remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        monitor = app.monitor
        assert monitor is not None
        panel = monitor.panel("output")
        assert not panel.border_subtitle
        stream = monitor.query_one("#output-stream")
        stream.focus()
        await pilot.press("slash", *"line 7-", "enter")
        await wait_until(pilot, lambda: "filter" in str(panel.border_subtitle or ""), "filter shown")
        assert str(panel.border_subtitle) == "filter “line 7-”: 10 of 300"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not panel.border_subtitle, "filter cleared")
        await pilot.press("space")  # pause the streams
        await wait_until(pilot, lambda: "paused" in str(panel.border_subtitle or ""), "paused shown")
        await pilot.press("space")
        await wait_until(pilot, lambda: not panel.border_subtitle, "resumed")
