"""Waiting in Pilot tests on what the app has done, never for a fixed time.

``settle``: every message handled, every animation done, and no panel repaint pending (the
app repaints its panels at most every ``PANEL_INTERVAL``; a change within that time is painted
by a timer). ``wait_until``: a condition on the app's state, polled, with a generous deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def settle(pilot: Any, timeout: float = 10.0) -> None:
    app = pilot.app
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    deadline = asyncio.get_running_loop().time() + timeout
    while getattr(app, "_paint_timer", None) is not None or getattr(app, "_unpainted", None):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the panels' repaint never came")
        await pilot.pause(0.02)
    await pilot.pause()


async def wait_until(pilot: Any, cond: Callable[[], Any], what: str,
                     timeout: float = 20.0, fail: bool = True) -> None:
    """Poll ``cond`` (between app steps) until it is true; fail naming ``what`` (or, with
    ``fail=False``, return at the deadline and leave it to the test's own assertion)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            if fail:
                raise AssertionError(f"never happened: {what}")
            break
        await pilot.pause(0.02)
    await settle(pilot)
