"""flue-tui's widgets."""

from __future__ import annotations

from typing import Any


def no_blink(screen: Any) -> None:
    """Stop the Inputs' cursors blinking when the app says so (tests, snapshots)."""
    if getattr(screen.app, "blink", True):
        return
    from textual.widgets import Input

    for inp in screen.query(Input):
        inp.cursor_blink = False
