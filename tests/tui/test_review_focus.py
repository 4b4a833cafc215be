"""Review: focus traps and counts in the monitor.

- Tab from Output landed on the Denials tab bar ("Table Stream") while `a` still acted on the
  table's row: the panels' tab bars take no focus now (`[`/`]` switch tabs), Tab goes from the
  contents of one panel to the next.
- The denials cursor was kept by row index across runs: after `r`, row 2 turned from unshare
  into clone3 under the cursor. It is kept by syscall now.
- Home/End in the tables only scrolled sideways; they go to the first/last row.
- Output keeps the last 5000 lines but its border counted them all ("5 Output · 5003 lines").
"""

from __future__ import annotations

from typing import Any

from conftest import DEMO, DEMO_PTRACE, ROOT
from waits import settle

from engine import events as ev
from flue_tui.app import make_app
from flue_tui.model import MAX_OUTPUT
from flue_tui.widgets.panels import DenialsPanel
from flue_tui.widgets.table import RowTable


def app_for(recordings: Any,  # type: ignore[no-untyped-def]
            argv: tuple[str, ...] = ("python3", "examples/demo_agent.py")):
    return make_app(list(argv), cwd=str(ROOT), replay=recordings, remember=False, blink=False)


async def test_tab_never_stops_on_a_tab_bar() -> None:
    app = app_for([DEMO])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        seen = []
        for _ in range(12):
            await pilot.press("tab")
            seen.append(type(app.focused).__name__)
        assert "Tabs" not in seen, seen
        assert "RowTable" in seen


async def test_the_cursor_stays_on_its_syscall_across_runs() -> None:
    app = app_for([DEMO, DEMO_PTRACE])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        panel = app.screen.panel("denials")
        assert isinstance(panel, DenialsPanel)
        table = app.screen.query_one("#denials-table", RowTable)
        table.move_cursor(row=panel._rows.index("unshare"), animate=False)
        await settle(pilot)
        assert panel.current_row().key == "unshare"
        index_before = table.cursor_row
        await pilot.press("r")
        await settle(pilot)
        assert app.run_model is not None and app.run_model.number == 2
        assert panel._rows.index("unshare") != index_before  # the rows did move
        assert panel.current_row().key == "unshare"


async def test_home_and_end_go_to_the_first_and_last_row() -> None:
    app = app_for([DEMO])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#denials-table", RowTable)
        table.focus()
        await pilot.press("end")
        assert table.cursor_row == table.row_count - 1 > 0
        await pilot.press("home")
        assert table.cursor_row == 0


def _output(n: int) -> list[ev.Event]:
    start = ev.Started(sandbox="s", ts=1.0, argv=["sh"], profile="default")
    lines = [ev.Output(sandbox="s", ts=1.0 + i / 1e4, stream="stdout", data=f"line {i}\n")
             for i in range(n)]
    return [start, *lines]


async def test_output_says_when_it_shows_only_the_last_lines() -> None:
    app = app_for([_output(MAX_OUTPUT + 3)], argv=("sh",))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        title = str(app.screen.panel("output").border_title)
        assert f"showing last {MAX_OUTPUT} of {MAX_OUTPUT + 3} lines" in title, title


async def test_one_line_is_one_line() -> None:
    app = app_for([_output(1)], argv=("sh",))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        title = str(app.screen.panel("output").border_title)
        assert title.endswith("· 1 line"), title
