"""SVG snapshots of every screen at 80x24 and 120x40, fed from a recorded real run.

The recordings (tests/tui/recordings/, made by make_recording.py from real sandboxes) are
replayed all at once through ``ReplayBridge``; the clock is fixed at the last event, cursors do
not blink, XDG dirs are isolated and the profile is a fixture file, so the pictures are the
same on every machine. Update with ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import AGENT_PROFILE, DEMO, DEMO_PTRACE, RECORDINGS, ROOT
from waits import settle

from flue_tui.app import make_app

SIZES = [(80, 24), (120, 40)]
PROFILE = str(AGENT_PROFILE.relative_to(ROOT))
NET = RECORDINGS / "net.jsonl"  # net_agent.py in allowlist mode: one name allowed, two refused


def app_for(**kw: Any):  # type: ignore[no-untyped-def]
    return make_app(["python3", "examples/demo_agent.py"], profile=PROFILE, cwd="/home/user/project",
                    replay=[DEMO, DEMO_PTRACE], remember=False, blink=False, **kw)


def net_app():  # type: ignore[no-untyped-def]
    import json

    with NET.open(encoding="utf-8") as f:
        recorded = json.loads(f.readline())["argv"]  # the port the recording's server had
    argv = ["python3", "tests/tui/programs/net_agent.py", *recorded[2:]]
    return make_app(argv, profile=PROFILE, cwd="/home/user/project", replay=[NET],
                    remember=False, blink=False)


def select_denial(pilot: Any, key: str) -> None:
    screen = pilot.app.screen
    rows = screen.panel("denials")._rows
    screen.query_one("#denials-table").move_cursor(row=rows.index(key), animate=False)


def steps(*actions: Callable[[Any], Awaitable[None] | None]) -> Callable[[Any], Awaitable[None]]:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        for act in actions:
            # the toasts of the step before go first: a dialog opened next would otherwise
            # show them, or not, behind it depending on when the screen below was drawn
            pilot.app.clear_notifications()
            res = act(pilot)
            if res is not None:
                await res
            await settle(pilot)
        pilot.app.clear_notifications()
        await settle(pilot)

    return run_before


async def allow_ptrace(pilot: Any) -> None:
    select_denial(pilot, "ptrace")
    await pilot.press("a")


@pytest.fixture(autouse=True)
def _chdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_monitor(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(app_for(), terminal_size=size, run_before=steps())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_monitor_stream_filtered(snap_compare: Any, size: tuple[int, int]) -> None:
    async def stream(pilot: Any) -> None:
        await pilot.press("right_square_bracket", "slash", *"mount", "enter")

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(stream))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tune_with_diff(snap_compare: Any, size: tuple[int, int]) -> None:
    async def tune(pilot: Any) -> None:
        await pilot.press("t")

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(allow_ptrace, tune))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_save_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    async def save(pilot: Any) -> None:
        await pilot.press("ctrl+s")

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(allow_ptrace, save))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_errno_picker(snap_compare: Any, size: tuple[int, int]) -> None:
    async def errno(pilot: Any) -> None:
        select_denial(pilot, "mount")
        await pilot.press("e")

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(errno))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history_after_rerun(snap_compare: Any, size: tuple[int, int]) -> None:
    async def rerun(pilot: Any) -> None:
        await pilot.press("r")

    async def history(pilot: Any) -> None:
        await pilot.press("h")

    assert snap_compare(app_for(), terminal_size=size,
                        run_before=steps(allow_ptrace, rerun, history))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_launch(snap_compare: Any, size: tuple[int, int]) -> None:
    async def launch(pilot: Any) -> None:
        await pilot.press("n")

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(launch))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare: Any, size: tuple[int, int]) -> None:
    async def help_(pilot: Any) -> None:
        await pilot.press("question_mark")

    assert snap_compare(app_for(), terminal_size=size, run_before=steps(help_))


def focus_requests(pilot: Any, host: str | None = None) -> None:
    screen = pilot.app.screen
    table = screen.query_one("#network-table")
    table.focus()
    if host is not None:
        model = pilot.app.run_model
        rid = next(str(r.id) for r in model.net.values() if r.host == host)
        table.move_cursor(row=screen.panel("network")._rows.index(rid), animate=False)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_network(snap_compare: Any, size: tuple[int, int]) -> None:
    async def network(pilot: Any) -> None:
        focus_requests(pilot, "tracker.example.test")

    assert snap_compare(net_app(), terminal_size=size, run_before=steps(network))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_network_dns(snap_compare: Any, size: tuple[int, int]) -> None:
    async def dns(pilot: Any) -> None:
        focus_requests(pilot)
        await pilot.press("right_square_bracket")

    assert snap_compare(net_app(), terminal_size=size, run_before=steps(dns))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_network_allowed_in_tune(snap_compare: Any, size: tuple[int, int]) -> None:
    async def allow(pilot: Any) -> None:
        focus_requests(pilot, "tracker.example.test")
        await pilot.press("a")

    async def tune(pilot: Any) -> None:
        await pilot.press("t")

    assert snap_compare(net_app(), terminal_size=size, run_before=steps(allow, tune))
