"""Review: the monitor never catches up on what happened while another screen was on top.

In tmux with the demo: press `h` (or `t`, `?`, `k`…) a second into the run, wait until it has
finished, `esc`: the monitor still says "running  #4 … 0.2s … denials 0" with two output lines
and empty panels, for good (no further batch arrives to refresh them). `_changed` only marks
panels stale while the monitor is hidden, drops "status", and nothing refreshes the stale
panels when the monitor is shown again. Now the monitor catches up when it is resumed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from waits import settle, wait_until

from flue_tui.app import FlueApp, make_app
from flue_tui.widgets.status import StatusLine

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


async def wait_state(pilot: Any, app: FlueApp, states: tuple[str, ...], timeout: float = 30.0
                     ) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        m = app.run_model
        if m is not None and m.state in states and (states != ("exited",) or
                                                   not app.bridge.running):
            return
        await pilot.pause(0.1)
    raise AssertionError(f"never reached {states}: {app.run_model and app.run_model.state}")


async def test_monitor_catches_up_after_history() -> None:
    app = make_app(["sh", "-c", "echo first; sleep 1.5; echo second"], remember=False,
                   blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_state(pilot, app, ("running",))
        await wait_until(pilot, lambda: any("first" in ln.text
                                            for ln in app.run_model.output.lines),
                         "the first line")
        await pilot.press("h")
        await wait_state(pilot, app, ("exited",))
        await settle(pilot)  # the last batches applied while the history is on top
        await pilot.press("escape")
        await settle(pilot)
        status = str(app.screen.query_one(StatusLine).render())
        assert app.monitor is not None
        output = app.monitor.panel("output")
        assert "exited 0" in status, status
        assert not output.stale
