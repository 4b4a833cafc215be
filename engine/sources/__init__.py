"""Event sources that watch a running sandbox: each is fd- or timer-driven on the event loop
and has ``start()`` and ``async stop()``."""

from __future__ import annotations

from typing import Any


def start_sources(sandbox: Any) -> list[Any]:
    """Start the observation sources the sandbox asked for; returns them (stopped at exit)."""
    sources: list[Any] = []
    return sources
