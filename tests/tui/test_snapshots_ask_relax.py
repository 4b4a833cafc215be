"""SVG snapshots of the relax proposal and the ask question at 80x24 and 120x40, from the
recorded demo run (``ReplayBridge``: the clock fixed at its last event, so the countdown
stands still). The real features are tested on real sandboxes in test_ask_tune_real.py."""

from __future__ import annotations

from typing import Any

import pytest
from test_snapshots import SIZES, app_for, steps

from flue_tui.messages import AskPrompt


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_relax_proposal(snap_compare: Any, size: tuple[int, int]) -> None:
    async def relax(pilot: Any) -> None:
        await pilot.press("t", "f")

    async def decide(pilot: Any) -> None:
        await pilot.press("a", "x")  # the first accepted, the second rejected

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(relax, decide))


def _prompt(app: Any, n: int, key: str, name: str, decoded: dict[str, str]) -> AskPrompt:
    return AskPrompt(1, id=n, key=key, name=name, decoded=decoded, pid=7, comm="python3",
                     exe="/usr/bin/python3.11", errno=1, timeout=30, answer=lambda _d: None)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ask_modal(snap_compare: Any, size: tuple[int, int]) -> None:
    def ask(pilot: Any) -> None:
        app = pilot.app
        # the sandbox's text is untrusted: an escape sequence in a decoded value is shown
        # escaped, never sent to the terminal
        app.post_message(_prompt(app, 1, "socket AF_PACKET", "socket",
                                 {"family": "AF_PACKET", "type": "SOCK_RAW\x1b[2J"}))
        app.post_message(_prompt(app, 2, "keyctl", "keyctl", {}))

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(ask))


async def test_a_second_question_before_the_modal_is_composed_waits_its_turn() -> None:
    """Two questions in one tick: the modal is on the stack but not composed when the second
    comes; refreshing it then raised NoMatches and took the app down."""
    from flue_tui.screens.ask import AskModal

    app = app_for()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        app._ask(_prompt(app, 1, "socket AF_PACKET", "socket", {"family": "AF_PACKET"}))
        app._ask(_prompt(app, 2, "keyctl", "keyctl", {}))
        await pilot.pause()
        assert isinstance(app.screen, AskModal)
        title = str(app.screen.query_one("#ask-title").render())
        assert "socket AF_PACKET" in title and "1 more waiting" in title, title
