"""Review: `r` while a sandbox runs.

In tmux: `flue-tui -- sleep 1000`, press `r`, then `k` -> "nothing is running" although run #2
is running; `q` then quits without asking. The cancelled run's `finally` in Bridge.run sets
`self._sandbox = None` after the new run has set it. And the replaced runs stay "starting" /
"running" in the history for ever (RunFinished for a run that is no longer current is ignored).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flue_tui.app import FlueApp, make_app

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


async def wait_running(pilot: Any, app: FlueApp, number: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        m = app.run_model
        if m is not None and m.number == number and m.state == "running":
            return
        await pilot.pause(0.1)
    raise AssertionError(f"run {number} never ran: {app.run_model and app.run_model.state}")


@pytest.mark.xfail(strict=True, reason="after r replaces a running sandbox, the bridge forgets "
                                       "the new one: k says 'nothing is running'")
async def test_rerun_while_running_keeps_the_new_sandbox_killable() -> None:
    app = make_app(["sleep", "60"], remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_running(pilot, app, 1)
        await pilot.press("r")
        await wait_running(pilot, app, 2)
        await pilot.pause(1.0)  # the cancelled run finishes its clean-up
        try:
            assert app.bridge.running, "run #2 is running but the bridge says nothing is"
        finally:
            if app.bridge._sandbox is not None:
                app.bridge.kill()


@pytest.mark.xfail(strict=True, reason="runs replaced by r stay 'starting'/'running' in history")
async def test_replaced_runs_do_not_stay_running_in_history() -> None:
    app = make_app(["sleep", "60"], remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_running(pilot, app, 1)
        await pilot.press("r", "r")
        await wait_running(pilot, app, 3)
        await pilot.pause(1.0)
        states = [m.state for m in app.runs[:-1]]
        assert all(s not in ("starting", "running") for s in states), states
