"""The monitor's tables and titles are updated in place under a flood (the cells that changed,
the title's border line) instead of being rebuilt and repainted whole: what they show must be
what a table filled from scratch shows, styles included, and what they draw must follow."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from rich.text import Text
from textual.geometry import Region
from waits import settle

from engine import events as ev
from flue_tui.app import make_app
from flue_tui.widgets.table import RowTable

T0 = 1000.0
SB = "flue-test"


def recording() -> list[ev.Event]:
    return [
        ev.Started(sandbox=SB, ts=T0, argv=("sh", "-c", "worker"), profile="default"),
        ev.ProcessStarted(sandbox=SB, ts=T0 + 0.1, pid=1, ppid=0, cmdline=("sh", "-c", "worker")),
        ev.ProcessStarted(sandbox=SB, ts=T0 + 0.2, pid=2, ppid=1, cmdline=("worker", "--fast")),
        ev.ProcessTable(sandbox=SB, ts=T0 + 0.3, rows=((1, 101, 0, "sh -c worker", 0.0, 1 << 20),
                                           (2, 102, 1, "worker --fast", 12.0, 8 << 20))),
        ev.SyscallDenied(sandbox=SB, ts=T0 + 0.4, name="ptrace", nr=101, errno=1, errno_name="EPERM",
                         pid=2, comm="worker", count=1),
        ev.SyscallDenied(sandbox=SB, ts=T0 + 0.5, name="keyctl", nr=250, errno=1, errno_name="EPERM",
                         pid=2, comm="worker", count=3),
    ]


def shown(table: RowTable) -> list[list[tuple[str, str, str]]]:
    """Every cell as (text, style, spans): what a rebuild would give must be this."""
    out = []
    for i in range(table.row_count):
        row = []
        for c in table.get_row_at(i):
            t = c if isinstance(c, Text) else Text(str(c))
            row.append((t.plain, str(t.style), repr(t.spans)))
        out.append(row)
    return out


def drawn(table: RowTable) -> list[str]:
    return [table.render_line(y).text for y in range(table.size.height)]


@contextlib.asynccontextmanager
async def replayed() -> AsyncIterator[tuple[Any, Any, Any]]:
    """The app, its pilot and its monitor, the recording played in."""
    app = make_app(["sh", "-c", "worker"], replay=recording(), remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.monitor is not None
        yield app, pilot, app.monitor


async def test_tables_and_titles_updated_in_place_show_what_a_rebuild_shows() -> None:
    async with replayed() as (app, pilot, monitor):
        model = app.run_model
        procs, denials = monitor.panel("processes"), monitor.panel("denials")
        ptable = monitor.query_one("#proc-table", RowTable)
        dtable = monitor.query_one("#denials-table", RowTable)
        assert ptable.row_count == 2 and dtable.row_count == 2
        keyctl_before = drawn(dtable)
        # the flood goes on: the same processes with other figures, then one exits; the
        # keyctl row's count moves on
        steps: list[Any] = [
            [ev.ProcessTable(sandbox=SB, ts=T0 + 1, rows=((1, 101, 0, "sh -c worker", 0.5, 1 << 20),
                                              (2, 102, 1, "worker --fast", 97.0, 9 << 20)))],
            [ev.SyscallDenied(sandbox=SB, ts=T0 + 1.1, name="keyctl", nr=250, errno=1,
                              errno_name="EPERM", pid=2, comm="worker", count=40)],
            [ev.ProcessExited(sandbox=SB, ts=T0 + 1.2, pid=2, host_pid=102,
                              cmdline=("worker", "--fast"), exit_code=3)],
        ]
        for batch in steps:
            app._changed(model.apply(batch), now=True)
            await settle(pilot)
            in_place = (shown(ptable), shown(dtable), drawn(ptable), drawn(dtable))
            # the same panels filled from scratch
            procs._shown = []
            denials._rows = []
            procs.refresh_from(model)
            denials.refresh_from(model)
            await settle(pilot)
            assert in_place == (shown(ptable), shown(dtable), drawn(ptable), drawn(dtable))
        # and they did change: the exit is dim, the CPU gone, the count moved on
        text = " ".join(drawn(ptable))
        assert "(exit 3)" in text and "97%" not in text
        assert drawn(dtable) != keyctl_before and any("43" in line for line in drawn(dtable))
        assert str(ptable.get_row_at(1)[0].style) == "dim"
        # titles: set in place, and what the border draws
        assert str(denials.border_title) == "1 Denials · 44"
        assert str(procs.border_title) == "4 Processes · 1 running, 1 exited"
        for panel, title in ((denials, "1 Denials · 44"),
                             (procs, "4 Processes · 1 running, 1 exited")):
            top = panel.render_lines(Region(0, 0, panel.outer_size.width, 1))[0].text
            assert title in top, top


async def test_a_panel_hidden_below_keeps_the_lines_of_the_tables_and_tree_above() -> None:
    # hiding Output changes only the heights of the panels above: the tables and the files
    # tree keep their drawn lines (no new update count, no rebuilt tree) and draw what they
    # drew, with more rows where there is more room; a change of width draws them again
    async with replayed() as (_app, pilot, monitor):
        dtable = monitor.query_one("#denials-table", RowTable)
        tree = monitor.query_one("#files-tree")
        before = drawn(dtable)
        count, tree_updates = dtable._update_count, tree._updates
        width, height = dtable.size
        await pilot.press("5")  # Output hidden: the rows above grow
        await settle(pilot)
        assert dtable.size.width == width and dtable.size.height > height
        assert (dtable._update_count, tree._updates) == (count, tree_updates)
        after = drawn(dtable)
        assert after[: len(before)] == before and after[0].strip()
        await pilot.press("5")
        await settle(pilot)
        assert dtable.size == (width, height) and drawn(dtable) == before
        await pilot.resize_terminal(100, 40)  # narrower: every line is drawn again
        await settle(pilot)
        assert dtable._update_count != count and tree._updates != tree_updates
        assert all(len(line) == dtable.size.width for line in drawn(dtable))
