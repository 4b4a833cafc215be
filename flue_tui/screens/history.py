"""Run history: each run of this session, what changed in the profile before it, and which
denials (and network refusals) went away or appeared compared with the run before."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from flue_tui.model import RunModel, diff_runs
from flue_tui.sanitize import cell, plain
from flue_tui.widgets.table import RowTable


def compare(before: RunModel | None, after: RunModel) -> Text:
    t = Text()
    t.append(f"Run #{after.number} ", "bold")
    t.append(f"  {plain(' '.join(after.argv), 80)}  profile {plain(after.profile)}\n", "dim")
    if after.changes:
        t.append("changes before this run: ", "bold")
        t.append("; ".join(plain(c, 100) for c in after.changes) + "\n")
    if before is None:
        t.append("the first run: nothing to compare with\n", "dim")
    else:
        d = diff_runs(before, after)
        t.append(f"vs run #{before.number}: ", "bold")
        t.append(f"{len(d.gone)} no longer denied by seccomp", "green" if d.gone else "dim")
        t.append(", ")
        t.append(f"{len(d.new)} new", "red" if d.new else "dim")
        t.append(f", {len(d.kept)} still refused\n")
        for key in d.gone:
            t.append(f"  − {plain(key)}", "green")
            t.append(f"  (was ×{before.denials[key].count})\n", "dim")
        for key in d.new:
            t.append(f"  + {plain(key)}", "red")
            t.append(f"  ×{after.denials[key].count}\n", "dim")
        for key in d.kept:
            a, b = before.denials[key].count, after.denials[key].count
            t.append(f"  = {plain(key)} ×{b}", "dim")
            if a != b:
                t.append(f" (was ×{a})", "yellow")
            t.append("\n")
        if before.net_refusals or after.net_refusals:
            t.append("network: ", "bold")
            t.append(f"{len(d.net_gone)} refusal(s) gone", "green" if d.net_gone else "dim")
            t.append(", ")
            t.append(f"{len(d.net_new)} new", "red" if d.net_new else "dim")
            t.append(f", {len(d.net_kept)} still refused\n")
            for key in d.net_gone:
                t.append(f"  − {plain(key)}", "green")
                t.append(f"  (was refused ×{before.net_refusals[key]})\n", "dim")
            for key in d.net_new:
                t.append(f"  + {plain(key)}", "red")
                t.append(f"  refused ×{after.net_refusals[key]}\n", "dim")
            for key in d.net_kept:
                t.append(f"  = {plain(key)} refused ×{after.net_refusals[key]}\n", "dim")
        if before.exited and after.exited:
            t.append(f"exit: {before.status_word()} → {after.status_word()}\n")
    return t


class HistoryScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,h", "app.pop_screen", "Back", id="history.back")]

    def compose(self) -> ComposeResult:
        yield Static(Text(" Run history ", "reverse bold"), id="history-title")
        yield RowTable(id="history-table")
        yield Static(id="history-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key, width in (("#", "n", 3), ("status", "status", 11),
                                  ("denials", "denials", 8), ("kinds", "kinds", 6),
                                  ("profile", "profile", 14), ("changes", "changes", None),
                                  ("command", "cmd", None)):
            table.add_column(label, key=key, width=width)
        runs = self.app.runs
        for r in runs:
            table.add_row(Text(str(r.number)), cell(r.status_word()), Text(str(r.denial_total)),
                          Text(str(len(r.denials))), cell(r.profile, limit=20),
                          cell("; ".join(r.changes) or "–", limit=50),
                          cell(" ".join(r.argv), limit=60), key=str(r.number))
        if runs:
            table.move_cursor(row=len(runs) - 1, animate=False)
            self._show(len(runs) - 1)
        else:
            self.query_one("#history-detail", Static).update(Text("no runs yet", "dim"))
        table.focus()

    def _show(self, index: int) -> None:
        runs = self.app.runs
        if 0 <= index < len(runs):
            self.query_one("#history-detail", Static).update(
                compare(runs[index - 1] if index > 0 else None, runs[index]))

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show(event.cursor_row)
