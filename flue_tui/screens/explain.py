"""Explain: why the last run failed, as causes a person can act on, most likely first.

``x`` in the monitor (or "Run: Explain" in the palette) turns the run the monitor shows into
an ``engine.runrecord.RunRecord`` (``RunModel.record()``: the same record ``flue explain``
reads from an events file) and lists ``engine.diagnose.diagnose``'s causes: a refused syscall
(its group, what programs use it for), a path it looked for that is not there, network
attempts under ``none``, OOM with the peak and the limit, the pids limit, a timeout, a /dev
node flue does not provide, a missing user entry or HOME. Each says what would fix it; the
selected one's profile change is shown as the lines it adds to the draft, and ``a`` applies
it (a refused syscall through the monitor's own allow, which knows what allowing cannot do
in a sandbox); ``r`` then re-runs.

What the sandbox's program said or looked for is untrusted: every line here is plain ``Text``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from flue_tui.sanitize import cell, plain

LIKELY_STYLE = {"likely": "bold red", "possible": "yellow", "unlikely": "dim"}


@dataclass
class Explained:
    number: int
    state: str  # the model's status word
    command: str
    causes: list[Any]  # engine.diagnose.Cause, most likely first
    error: str = ""  # why there is nothing to explain


def explain_model(model: Any, draft: Any = None) -> Explained:
    """The causes of ``model``'s run (a ``RunModel``): diagnosed against the profile the run
    used (the draft's, when the model does not hold it)."""
    from engine import diagnose
    from engine.errors import EngineError

    if model is None:
        return Explained(0, "", "", [], "no run yet: n starts one")
    command = " ".join(model.argv)
    try:
        record = model.record() if hasattr(model, "record") else _record_of(model)
    except EngineError as err:
        why = getattr(err, "title", str(err))
        if getattr(model, "started", None) is None:  # not "run #1 hold no flue events"
            why = "nothing to explain yet: the run has not started"
        return Explained(model.number, model.status_word(), command, [], why)
    profile = model.profile_used
    if profile is None and draft is not None:
        try:
            profile = draft.resolve()
        except EngineError:
            profile = None
    causes = diagnose.diagnose(record, profile)
    return Explained(model.number, model.status_word(), command, causes)


def _record_of(model: Any) -> Any:
    """The run as a ``RunRecord`` from what the model aggregates (a ``RunModel`` that keeps
    no event list): the start and end, each denial row's last event with the row's count,
    each request's last event, the stderr lines and the last resource sample."""
    import dataclasses

    from engine import events as ev
    from engine import runrecord

    events: list[ev.Event] = [e for e in (model.started,) if e is not None]
    for row in model.denials.values():
        if row.last is not None:
            events.append(dataclasses.replace(row.last, count=row.count))
    events += [r.last for r in model.net.values() if r.last is not None
               and isinstance(r.last, ev.NetworkRequest)]
    ts = model.last_ts or 0.0
    stderr = "\n".join(ln.text for ln in model.output.lines if ln.stream == "stderr")
    if stderr:
        events.append(ev.Output(model.sandbox_id, ts, stream="stderr", data=stderr + "\n"))
    if model.samples:
        events.append(model.samples[-1])
    if model.learn_summary is not None:
        events.append(ev.LearnSummary(model.sandbox_id, ts, observed=model.learn_summary))
    if model.exited is not None:
        events.append(model.exited)
    return runrecord.from_events(events, source=f"run #{model.number}")


def change_diff(draft: Any, change: Any) -> list[str] | None:
    """The lines ``change`` adds to and removes from the draft (nothing saved, the draft
    itself untouched): none when the draft has it already; None when it cannot be applied
    (or there is no draft)."""
    from engine.errors import EngineError
    from engine.profile.edit import ProfileDocument

    if draft is None:
        return None
    copy = ProfileDocument(draft.text(), name=draft.name, path=draft.path,
                           builtin=draft.builtin, search_path=draft.search_path)
    try:
        change.apply(copy)
    except EngineError:
        return None
    return [ln for ln in copy.diff(0).splitlines()
            if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))][:10]


def cause_text(cause: Any, diff: list[str] | None) -> Text:
    """The cause, its detail, its fix with the lines it adds to the draft (``diff``:
    ``change_diff``'s answer), or that the draft has it already."""
    t = Text()
    t.append(plain(cause.title, 300) + "\n", "bold")
    if cause.detail:
        t.append(plain(cause.detail, 600) + "\n")
    if cause.changes:
        ch = cause.changes[0]
        t.append("\nfix: ", "bold")
        t.append(plain(ch.title, 200))
        if diff == []:  # applied (here or in the monitor): what is left is the re-run
            t.append("  ·  ✓ in the draft already: r re-runs with it\n", "green")
        else:
            t.append("  ·  a applies it to the draft, then r re-runs\n", "dim")
        for line in diff or ():
            t.append("    " + plain(line, 200) + "\n", "green" if line.startswith("+")
                     else "red")
    if cause.advice:
        t.append("\n" + ("or: " if cause.changes else "what to do: "), "bold")
        t.append(plain(cause.advice, 600) + "\n")
    return t


class ExplainScreen(Screen[None]):
    """The causes of the monitor's run (see the module docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "apply", "Apply fix", id="explain.apply",
                tooltip="apply the selected cause's fix to the draft profile"),
        Binding("r", "app.rerun", "Re-run", id="explain.rerun",
                tooltip="run the same command again with the edited profile"),
        Binding("escape,x", "app.pop_screen", "Back", id="explain.back"),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="explain-title")
        yield DataTable(id="explain-table", cursor_type="row", zebra_stripes=False)
        with VerticalScroll(id="explain-detail-scroll"):
            yield Static(id="explain-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#explain-table", DataTable)
        table.add_columns("", "how likely", "cause", "fix")
        self.refresh_causes()
        table.focus()

    def on_screen_resume(self) -> None:
        self.refresh_causes()

    def refresh_causes(self) -> None:
        app: Any = self.app
        self.explained = explain_model(app.run_model, app.draft)
        ex = self.explained
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" explain ", "reverse bold")
        if ex.number:
            t.append(f" run #{ex.number} {ex.state}: ")
            t.append(plain(ex.command, 80))
        t.append("\n ")
        if ex.error:
            t.append(plain(ex.error, 200), "dim")
        elif not ex.causes:
            t.append("nothing went wrong that flue can see", "dim")
        else:
            likely = sum(1 for c in ex.causes if c.label == "likely")
            t.append(f"{len(ex.causes)} cause{'s' if len(ex.causes) != 1 else ''}, most "
                     f"likely first ({likely} likely)", "dim")
        self.query_one("#explain-title", Static).update(t)
        table = self.query_one("#explain-table", DataTable)
        row = table.cursor_row if table.row_count else 0
        table.clear()
        for i, c in enumerate(ex.causes, 1):
            fix = c.changes[0].title if c.changes else ("advice" if c.advice else "")
            table.add_row(cell(str(i), "dim"), cell(c.label, LIKELY_STYLE.get(c.label, "")),
                          cell(c.title, limit=120), cell(fix, limit=60), key=str(i))
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1), animate=False)
        self._show_detail()

    def selected(self) -> Any:
        table = self.query_one("#explain-table", DataTable)
        causes = self.explained.causes
        if not causes or not table.row_count:
            return None
        return causes[min(table.cursor_row, len(causes) - 1)]

    @on(DataTable.RowHighlighted, "#explain-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _show_detail(self) -> None:
        cause = self.selected()
        box = self.query_one("#explain-detail", Static)
        if cause is None:
            box.update(Text(""))
            return
        app: Any = self.app
        diff = change_diff(app.draft, cause.changes[0]) if cause.changes else None
        box.update(cause_text(cause, diff))

    def action_apply(self) -> None:
        app: Any = self.app
        cause = self.selected()
        if cause is None:
            self.notify("no cause selected", severity="warning")
            return
        if not cause.changes:
            self.notify("no profile change fixes this one: " + plain(cause.advice or
                        cause.title, 300), severity="warning", timeout=8, markup=False)
            return
        change = cause.changes[0]
        row = self._denial_row(change)
        if row is not None:  # the monitor's allow: it knows what allowing cannot do here
            app.edit_profile("allow", row)
        else:
            app.apply_edit(lambda d: change.apply(d))
        self._show_detail()

    def _denial_row(self, change: Any) -> Any:
        """The monitor's row for a refused syscall or socket family, when the change allows
        one (so ``a`` here behaves as ``a`` there)."""
        model = getattr(self.app, "run_model", None)
        if model is None:
            return None
        if change.op == "allow_syscall":
            return model.denials.get(change.arg)
        if change.op == "allow_socket_family":
            return next((r for r in model.denials.values() if r.family == change.arg), None)
        return None
