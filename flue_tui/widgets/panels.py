"""The monitor's six panels. Each one refreshes from the ``RunModel`` only while shown.

``Panel.refresh_from(model)`` is called by the monitor screen after each event batch for the
panels whose data changed and that are displayed; a hidden panel just remembers it is stale
and catches up when it is shown again.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Region
from textual.message import Message
from textual.widgets import DataTable, Static, TabbedContent, TabPane, Tree
from textual.widgets.tree import TreeNode

from flue_tui.model import (
    DenialRow,
    FileState,
    NetRow,
    RunModel,
    format_args,
    fresh,
    net_row_of_dns,
    short_path,
)
from flue_tui.sanitize import cell, neutralise_line, plain
from flue_tui.widgets import format as fmt
from flue_tui.widgets.graph import Graph
from flue_tui.widgets.stream import StreamView
from flue_tui.widgets.table import KeptTree, RowTable


class Panel(Vertical):
    """A bordered panel of the monitor."""

    panel_key = ""
    title = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id or f"panel-{self.panel_key}", classes="panel")
        self.stale = True
        self.filter_text = ""
        self._title_shown: str | None = None

    def on_mount(self) -> None:
        self.set_title(self.title)

    def set_title(self, title: str) -> None:
        """The border title. Textual's ``border_title`` repaints the whole panel, every line
        of every widget in it, each time it is set, even to the same text; the monitor sets
        the titles' counts up to 5 times a second under a flood. Here nothing is repainted
        when the title is the same, and only the top border line when it changed (the
        setter's own conversion, then a refresh of that line: ``_border_title`` is Textual's
        own, pinned minor)."""
        if title == self._title_shown:
            return
        self._title_shown = title
        size = self.outer_size
        if not self.is_mounted or not size:
            self.border_title = title
            return
        self._border_title = self.render_str(title).expand_tabs(4).split()[0]
        top = self.content_offset
        self.refresh(Region(-top.x, -top.y, size.width, 1))

    # the bottom border: the status line of the stream shown in the panel (filter count,
    # paused, entries that arrived while not following); a panel with hints of its own there
    # (Network) keeps them
    uses_subtitle = False

    @on(StreamView.StatusChanged)
    def _stream_status(self, event: StreamView.StatusChanged) -> None:
        event.stop()
        self._show_stream_status()

    @on(TabbedContent.TabActivated)
    def _tab_status(self, event: TabbedContent.TabActivated) -> None:
        self._show_stream_status()

    def _show_stream_status(self) -> None:
        if self.uses_subtitle:
            return
        text = ""
        for stream in self.query(StreamView):
            node: Any = stream
            while node is not None and node is not self and node.display:
                node = node.parent
            if node is self:  # the stream and its tab are shown
                text = stream.status_text
                break
        if text != (self.border_subtitle or ""):
            self.border_subtitle = text

    def refresh_from(self, model: RunModel | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        self.stale = True

    def set_filter(self, text: str) -> None:
        self.filter_text = text

    @property
    def filter_target(self) -> StreamView | None:
        return None


# --------------------------------------------------------------------------- denials


def denial_entry(e: Any, t0: float) -> tuple[Text, Any]:
    t = Text(no_wrap=True, end="")
    t.append(f"{e.ts - t0:7.2f}s ", "dim")
    t.append(plain(e.name, 24), "bold")
    t.append(f" → {e.errno_name or e.errno}", "red")
    if e.count > 1:
        t.append(f" ×{e.count}", "yellow")
    t.append(f"  pid {e.pid} {plain(e.comm, 16)}", "dim")
    args = format_args(e.decoded, e.args)
    if args:
        t.append("  " + plain(args, 160))
    return t, e


class DenialsPanel(Panel):
    panel_key = "denials"
    title = "1 Denials"

    class RowHighlighted(Message):
        def __init__(self, row: DenialRow | None) -> None:
            super().__init__()
            self.row = row

    def compose(self) -> ComposeResult:
        with TabbedContent(id="denials-tabs"):
            with TabPane("Table", id="denials-table-tab"):
                yield RowTable(id="denials-table")
            with TabPane("Stream", id="denials-stream-tab"):
                yield StreamView(id="denials-stream", empty="no denials yet")
        yield Static(id="denials-detail", classes="detail")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#denials-table", DataTable)
        table.add_column("syscall", key="name", width=16)
        table.add_column("count", key="count", width=5)
        table.add_column("errno", key="errno", width=6)
        table.add_column("group", key="group", width=11)
        table.add_column("pid", key="pid", width=3)
        table.add_column("command", key="comm", width=8)
        table.add_column("last arguments", key="args")
        self._rows: list[str] = []
        self._wanted: str | None = None  # the row to put the cursor on once it shows up
        self._shown_cells: dict[str, list[str]] = {}  # row key -> the cells' text on screen
        self._streamed = 0
        self._model: RunModel | None = None
        self._show_hint()

    def _show_hint(self) -> None:
        self._detail_shown: Text | None = None
        self.query_one("#denials-detail", Static).update(Text(
            "a allow · g allow group · e keep denied with an errno · enter details", "dim"))

    @property
    def filter_target(self) -> StreamView | None:
        tabs = self.query_one("#denials-tabs", TabbedContent)
        if tabs.active == "denials-stream-tab":
            return self.query_one("#denials-stream", StreamView)
        return None

    def reset(self) -> None:
        super().reset()
        # the row the cursor was on comes back to it when the next run refuses it again
        # (by syscall, not by position: the order of the rows changes between runs)
        row = self.current_row()
        self._wanted = row.key if row is not None else self._wanted
        self._streamed = 0
        self._rows = []
        table = self.query_one("#denials-table", RowTable)
        table.clear()
        table.moved_by_user = False
        self.query_one("#denials-stream", StreamView).clear()
        self._show_hint()  # not the last run's selected denial: a re-run may refuse nothing

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.query_one("#denials-stream", StreamView).set_filter(text)
        if self._model is not None:
            self._refresh_table(self._model, force=True)

    def _visible_rows(self, model: RunModel) -> list[DenialRow]:
        rows = sorted(model.denials.values(), key=lambda r: (-r.count, r.key))
        f = self.filter_text.lower().strip()
        if f:
            rows = [r for r in rows if f in r.key.lower() or f in r.group.lower()
                    or f in r.comm.lower() or f in r.errno_name.lower()]
        return rows

    def refresh_from(self, model: RunModel | None) -> None:
        self.stale = False
        self._model = model
        if model is None:
            return
        self._refresh_table(model)
        stream = self.query_one("#denials-stream", StreamView)
        t0 = model.t0 or 0.0
        stream.extend(denial_entry(e, t0)
                      for e in fresh(model.denial_stream, model.denial_records, self._streamed))
        self._streamed = model.denial_records
        self.set_title(f"1 Denials · {model.denial_total}" if model.denial_total else
                       "1 Denials")

    def _refresh_table(self, model: RunModel, force: bool = False) -> None:
        table = self.query_one("#denials-table", RowTable)
        rows = self._visible_rows(model)
        keys = [r.key for r in rows]
        cursor_key = self._rows[table.cursor_row] if 0 <= table.cursor_row < len(self._rows) \
            else None
        if self._wanted is not None and getattr(table, "moved_by_user", False):
            self._wanted = None  # the user has chosen another row meanwhile
        if self._wanted is not None and self._wanted in keys:
            cursor_key, self._wanted = self._wanted, None
        if keys != self._rows or force:
            table.clear()
            self._shown_cells = {}
            for r in rows:
                cells = self._cells(r)
                table.add_row(*cells, key=r.key)
                self._shown_cells[r.key] = [c.plain for c in cells]
            self._rows = keys
            if cursor_key in keys:
                table.move_cursor(row=keys.index(cursor_key), animate=False)
        else:  # only the cells whose text changed (a flood changes the count, little else)
            for r in rows:
                shown = self._shown_cells.setdefault(r.key, [""] * 7)
                changed = []
                for i, (col, value) in enumerate(zip(("name", "count", "errno", "group", "pid",
                                                      "comm", "args"), self._cells(r),
                                                     strict=True)):
                    if value.plain != shown[i]:
                        changed.append((col, value))
                        shown[i] = value.plain
                if changed:
                    table.update_row(r.key, changed)
        self._show_detail(self.current_row())

    @staticmethod
    def _cells(r: DenialRow) -> tuple[Text, ...]:
        from flue_tui.advice import advise

        name = r.name + (f" {r.family}" if r.family else "")
        advice = advise(r)
        if advice is not None and advice.kind == "expected":  # libc's fallback: all dim
            return (cell(name, "dim"), Text(fmt.count(r.count), justify="right", style="dim"),
                    cell(r.errno_name or str(r.errno), "dim"), cell(advice.tag, "dim italic"),
                    cell(r.pid, "dim"), cell(r.comm, "dim", limit=24),
                    cell(format_args(r.decoded, r.args), "dim", limit=120))
        group = cell(r.group or "–", "dim")
        if advice is not None and advice.kind == "capability":  # refused by the kernel anyway
            group = cell(advice.tag, "yellow")
        return (cell(name, "bold"),
                Text(fmt.count(r.count), justify="right", style="yellow" if r.count > 1 else ""),
                cell(r.errno_name or str(r.errno), "red"), group,
                cell(r.pid), cell(r.comm, limit=24),
                cell(format_args(r.decoded, r.args), limit=120))

    def current_row(self) -> DenialRow | None:
        if self._model is None:
            return None
        table = self.query_one("#denials-table", DataTable)
        tabs = self.query_one("#denials-tabs", TabbedContent)
        if tabs.active == "denials-stream-tab":
            e = self.query_one("#denials-stream", StreamView).selected_payload
            if e is not None:
                from flue_tui.model import denial_key

                return self._model.denials.get(denial_key(e))
        if 0 <= table.cursor_row < len(self._rows):
            return self._model.denials.get(self._rows[table.cursor_row])
        return None

    def _show_detail(self, row: DenialRow | None) -> None:
        detail = self.query_one("#denials-detail", Static)
        if row is None:
            return
        from flue_tui.advice import advise

        t = Text(no_wrap=True, overflow="ellipsis", end="")
        t.append(plain(row.name), "bold")
        t.append(f" {row.group or 'no group'}", "dim")
        t.append(f" {row.errno_name} ×{row.count}")
        advice = advise(row)
        if advice is not None:  # what allowing it would (not) do, first: a line is narrow
            t.append(f" · {advice.text}", "yellow" if advice.kind != "expected" else "dim")
        t.append(f" · pid {row.pid} {plain(row.comm, 20)}", "dim")
        args = format_args(row.decoded, row.args)
        if args:
            t.append(f" · {plain(args, 160)}")
        if t != self._detail_shown:  # the same line again (a flood's count moved on)
            self._detail_shown = t
            detail.update(t, layout=False)  # height 1 (app.tcss): no layout pass

    @on(DataTable.RowHighlighted, "#denials-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self.current_row()
        self._show_detail(row)
        self.post_message(self.RowHighlighted(row))


# --------------------------------------------------------------------------- resources


class ResourcesPanel(Panel):
    panel_key = "resources"
    title = "2 Resources"

    def compose(self) -> ComposeResult:
        yield Static(id="cpu-label", classes="graph-label")
        yield Graph(id="cpu-graph")
        yield Static(id="mem-label", classes="graph-label")
        yield Graph(id="mem-graph")
        yield Static(id="pids-label", classes="graph-label")

    def refresh_from(self, model: RunModel | None) -> None:
        self.stale = False
        if model is None:
            return
        samples = list(model.samples)
        last = samples[-1] if samples else None
        lim = (model.started.limits if model.started else {}) or {}
        cpu_limit = (last.cpu_limit if last and last.cpu_limit else None) or lim.get("cpus")
        mem_limit = (last.memory_limit if last and last.memory_limit else None) or \
            lim.get("memory")
        pids_limit = (last.pids_limit if last and last.pids_limit else None) or lim.get("pids")
        iso = (model.started.isolation if model.started else {}) or {}
        if iso.get("cgroup") == "none":  # no cgroup (--allow-unlimited): nothing is enforced
            cpu_limit = mem_limit = pids_limit = None
        markers: dict[int, str] = {}
        for m in model.markers:
            idx = next((i for i, s in enumerate(samples) if s.ts >= m.ts), len(samples) - 1)
            markers[idx] = {"oom": "✖", "memory-limit": "▲", "pids-limit": "◆"}.get(m.kind, "•")
        cpu = [s.cpu_percent for s in samples]
        cpu_now = last.cpu_percent if last else None
        peak_cpu = max((c for c in cpu if c is not None), default=None)
        lbl = Text(no_wrap=True, overflow="ellipsis", end="")
        lbl.append("CPU ", "bold")
        lbl.append(fmt.percent(cpu_now).rjust(5), "bold")
        lbl.append(f"  limit {fmt.cpus(cpu_limit)}" if cpu_limit else "  no limit", "dim")
        lbl.append(f"  peak {fmt.percent(peak_cpu)}", "dim")
        if last and last.cpu_nr_throttled:
            lbl.append(f"  throttled ×{last.cpu_nr_throttled}", "yellow")
        self.query_one("#cpu-label", Static).update(lbl, layout=False)  # labels: height 1
        self.query_one("#cpu-graph", Graph).set_data(
            cpu, limit=cpu_limit * 100 if cpu_limit else None, floor=100.0)
        mem = [s.memory_current for s in samples]
        lbl = Text(no_wrap=True, overflow="ellipsis", end="")
        lbl.append("Memory ", "bold")
        lbl.append(fmt.size(last.memory_current if last else None).rjust(5), "bold")
        lbl.append(f" / {fmt.size(mem_limit) if mem_limit else 'no limit'}", "dim")
        lbl.append(f" peak {fmt.size(last.memory_peak if last else None)}", "dim")
        graph = self.query_one("#mem-graph", Graph)
        graph.set_data(mem, limit=mem_limit, floor=32 << 20, markers=markers)
        if graph.off_scale and mem_limit:
            lbl.append(" (off scale)", "dim")
        self.query_one("#mem-label", Static).update(lbl, layout=False)
        lbl = Text(no_wrap=True, overflow="ellipsis", end="")
        lbl.append("pids ", "bold")
        lbl.append(f"{last.pids_current if last and last.pids_current is not None else '–'}",
                   "bold")
        lbl.append(f" / {pids_limit or 'no limit'}", "dim")
        if last and last.cpu_usage_ns is not None:
            lbl.append(f"  cpu time {last.cpu_usage_ns / 1e9:.2f}s", "dim")
        for m in model.markers[-3:]:
            lbl.append(f"  {m.detail} at {m.ts - (model.t0 or m.ts):.1f}s", "red")
        if not samples:
            lbl.append("  (no samples yet)", "dim")
        self.query_one("#pids-label", Static).update(lbl, layout=False)


# --------------------------------------------------------------------------- files

MARK = {"added": ("+", "files--added"), "modified": ("~", "files--modified"),
        "deleted": ("−", "files--deleted"), "present": (" ", "files--present")}


def file_entry(e: Any, t0: float) -> tuple[Text, Any]:
    mark, _ = MARK.get(e.change, ("?", ""))
    style = {"added": "green", "modified": "yellow", "deleted": "red"}.get(e.change, "")
    t = Text(no_wrap=True, end="")
    t.append(f"{e.ts - t0:7.2f}s ", "dim")
    t.append(f"{mark} {e.change:<8} ", style)
    t.append(plain(e.path, 200) + ("/" if e.is_dir else ""))
    if e.size is not None and not e.is_dir:
        t.append(f"  {fmt.size(e.size)}", "dim")
    return t, e


class FilesPanel(Panel):
    panel_key = "files"
    title = "3 Files"
    COMPONENT_CLASSES: ClassVar[set[str]] = {"files--added", "files--modified", "files--deleted", "files--present"}

    def compose(self) -> ComposeResult:
        with TabbedContent(id="files-tabs"):
            with TabPane("Tree", id="files-tree-tab"):
                yield KeptTree("/work", id="files-tree")
            with TabPane("Changes", id="files-log-tab"):
                yield StreamView(id="files-log", empty="no file changes yet")

    def on_mount(self) -> None:
        super().on_mount()
        self._logged = 0
        self._tree_nodes: dict[str, TreeNode[Any]] = {}
        tree = self.query_one("#files-tree", Tree)
        tree.show_root = True
        tree.root.expand()
        tree.guide_depth = 2
        self._files: dict[str, FileState] = {}
        self.app.theme_changed_signal.subscribe(self, self._relabel)

    def _relabel(self, _theme: object) -> None:
        """A label holds the colours of the theme it was built in: build them again."""
        for path, node in self._tree_nodes.items():
            f = self._files.get(path)
            if f is not None:
                node.set_label(self._label(f, os.path.basename(path)))

    @property
    def filter_target(self) -> StreamView | None:
        if self.query_one("#files-tabs", TabbedContent).active == "files-log-tab":
            return self.query_one("#files-log", StreamView)
        return None

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.query_one("#files-log", StreamView).set_filter(text)

    def reset(self) -> None:
        super().reset()
        self._logged = 0
        self._tree_nodes = {}
        self._files = {}
        tree = self.query_one("#files-tree", Tree)
        tree.clear()
        self.query_one("#files-log", StreamView).clear()

    def _label(self, f: FileState, name: str) -> Text:
        # partial: the class's colour and strike only; a label with the panel's background
        # baked in drew a patch of it over the tree's own and over the cursor line
        mark, cls = MARK.get(f.change, ("?", "files--present"))
        style = self.get_component_rich_style(cls, partial=True)
        t = Text(no_wrap=True, end="")
        t.append(f"{mark} ", style)
        t.append(plain(name, 80) + ("/" if f.is_dir else ""), style)
        if f.size is not None and not f.is_dir and f.change != "deleted":
            t.append(f"  {fmt.size(f.size)}", "dim")
        return t

    def refresh_from(self, model: RunModel | None) -> None:
        self.stale = False
        if model is None:
            return
        self.query_one("#files-log", StreamView).extend(
            file_entry(e, model.t0 or 0.0)
            for e in fresh(model.file_log, model.file_events, self._logged))
        self._logged = model.file_events
        self._rebuild_tree(model)
        counts = {"added": 0, "modified": 0, "deleted": 0}
        for f in model.files.values():
            if f.change in counts:
                counts[f.change] += 1
        summary = " ".join(f"{MARK[k][0]}{v}" for k, v in counts.items() if v)
        self.set_title("3 Files" + (f" · {summary}" if summary else ""))

    def _rebuild_tree(self, model: RunModel) -> None:
        tree = self.query_one("#files-tree", Tree)
        self._files = model.files
        roots = {"/work": tree.root}
        for path in sorted(model.files):
            f = model.files[path]
            if path in self._tree_nodes:
                node = self._tree_nodes[path]
                node.set_label(self._label(f, os.path.basename(path)))
                continue
            top = "/work" if path == "/work" or path.startswith("/work/") else \
                "/" + path.strip("/").split("/")[0]
            if top not in roots:
                roots[top] = self._tree_nodes.get(top) or tree.root.add(Text(top, "bold"),
                                                                  expand=True)
                self._tree_nodes.setdefault(top, roots[top])
            if path == top:
                continue
            parent_path = os.path.dirname(path)
            parent = self._tree_nodes.get(parent_path) or roots.get(parent_path)
            if parent is None:
                parent = self._ensure_dir(tree, roots[top], top, parent_path)
            label = self._label(f, os.path.basename(path))
            if f.is_dir:
                node = parent.add(label, expand=True)
            else:
                node = parent.add_leaf(label)
            node.data = path
            self._tree_nodes[path] = node
        tree.root.set_label(Text("/work (workspace)", "bold"))

    def _ensure_dir(self, tree: Tree[Any], root: TreeNode[Any], top: str,
                    path: str) -> TreeNode[Any]:
        node = root
        cur = top
        for part in short_path(path, top).split("/"):
            if part in ("", "."):
                continue
            cur = f"{cur}/{part}"
            nxt = self._tree_nodes.get(cur)
            if nxt is None:
                nxt = node.add(Text(plain(part) + "/", "dim"), expand=True)
                self._tree_nodes[cur] = nxt
            node = nxt
        return node


# --------------------------------------------------------------------------- processes


PROC_COLUMNS = ("pid", "cpu", "rss", "cmd")


def _looks(t: Text) -> tuple[Any, ...]:
    """What a cell shows (Text's own == compares the characters and spans, not the style)."""
    return t.plain, str(t.style), tuple(t.spans), t.justify


class ProcessesPanel(Panel):
    panel_key = "processes"
    title = "4 Processes"

    def compose(self) -> ComposeResult:
        yield RowTable(id="proc-table")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#proc-table", DataTable)
        table.add_column("pid", key="pid", width=5)
        table.add_column("CPU", key="cpu", width=5)
        table.add_column("RSS", key="rss", width=6)
        table.add_column("command", key="cmd")
        self._shown: list[tuple[str, list[Text]]] = []  # (row key, cells) as on screen

    def reset(self) -> None:
        super().reset()
        self.query_one("#proc-table", DataTable).clear()
        self._shown = []

    def refresh_from(self, model: RunModel | None) -> None:
        self.stale = False
        if model is None:
            return
        table = self.query_one("#proc-table", RowTable)
        alive = 0
        f = self.filter_text.lower()
        rows: list[tuple[str, list[Text]]] = []
        for depth, row in model.process_tree():
            if f and f not in row.command.lower():
                continue
            alive += row.alive
            style = "" if row.alive else "dim"
            branch = ("  " * (depth - 1) + "└ ") if depth else ""
            cmd = Text(no_wrap=True, end="", style=style)
            cmd.append(branch, "dim")
            cmd.append(plain(row.command, 160))
            if not row.alive and row.exit_code is not None:
                cmd.append(f"  (exit {row.exit_code})", "dim")
            cpu = fmt.percent(row.cpu) if row.alive else ""
            rss = fmt.size(row.rss) if row.alive and row.rss else ""
            rows.append((str(row.pid), [
                Text(str(row.pid), style=style, justify="right"),
                Text(cpu, justify="right", style="bold" if (row.cpu or 0) > 50 else style),
                Text(rss, justify="right", style=style), cmd]))
        if [k for k, _ in rows] == [k for k, _ in self._shown]:
            # the same processes in the same places: only the cells that changed (CPU, RSS,
            # the style of one that exited)
            for (key, cells), (_, before) in zip(rows, self._shown, strict=True):
                changed = [(col, new) for col, new, old in zip(PROC_COLUMNS, cells, before,
                                                               strict=True)
                           if _looks(new) != _looks(old)]
                if changed:  # the command column fits its longest, as a rebuild makes it
                    table.update_row(key, changed, update_width=True)
        else:
            cursor = table.cursor_row
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            if 0 <= cursor < table.row_count:
                table.move_cursor(row=cursor, animate=False)
        self._shown = rows
        total = len(model.processes)
        self.set_title(f"4 Processes · {alive} running" + (
            f", {total - alive} exited" if total - alive else ""))


# --------------------------------------------------------------------------- output


class OutputPanel(Panel):
    panel_key = "output"
    title = "5 Output"

    def compose(self) -> ComposeResult:
        yield StreamView(id="output-stream", empty="the program's stdout and stderr appear here",
                         render=self._render_line, width_of=lambda line: len(line.text))

    def on_mount(self) -> None:
        super().on_mount()
        self._shown = 0

    @property
    def filter_target(self) -> StreamView | None:
        return self.query_one("#output-stream", StreamView)

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.query_one("#output-stream", StreamView).set_filter(text)

    def reset(self) -> None:
        super().reset()
        self._shown = 0
        self.query_one("#output-stream", StreamView).clear()

    def refresh_from(self, model: RunModel | None) -> None:
        self.stale = False
        if model is None:
            return
        out = model.output
        # lazily: a line is neutralised and styled only when it is drawn (or filtered)
        self.query_one("#output-stream", StreamView).extend(
            (None, line) for line in fresh(out.lines, out.total, self._shown))
        self._shown = out.total
        kept = len(out.lines)
        if out.total > kept:  # the oldest were dropped: say the numbers are not the same
            self.set_title(f"5 Output · showing last {kept} of {out.total} lines")
        elif out.total:
            self.set_title(f"5 Output · {out.total} line{'s' if out.total != 1 else ''}")
        else:
            self.set_title("5 Output")

    def _render_line(self, line: Any) -> Text:
        t = neutralise_line(line.text)  # an OutputLine holds no newline
        if line.stream == "stderr":
            t.stylize(self.get_component_rich_style("output--stderr"))
        return t

    COMPONENT_CLASSES: ClassVar[set[str]] = {"output--stderr"}

    @on(StreamView.Selected, "#output-stream")
    def _selected(self, event: StreamView.Selected) -> None:
        event.stop()


# --------------------------------------------------------------------------- network

NET_STATE = {"open": ("● open", "network--open"), "closed": ("✓ closed", "network--closed"),
             "refused": ("✗ refused", "network--refused"),
             "failed": ("! failed", "network--failed")}
NET_COLUMNS = ("state", "host", "port", "via", "bytes", "time", "rule")


def dns_entry(e: Any, t0: float, styles: dict[str, Any]) -> tuple[Text, Any]:
    t = Text(no_wrap=True, end="")
    t.append(f"{e.ts - t0:7.2f}s ", "dim")
    t.append(f"{plain(e.qtype, 6):<5} ", "dim")
    t.append(plain(e.name, 80), styles["refused"] if not e.allowed else "bold")
    if e.allowed:
        t.append(" → " + (", ".join(plain(a, 40) for a in e.answers) or "(no records)"),
                 styles["closed"])
        if e.rule:
            t.append(f"  by {plain(e.rule, 60)}", "dim")
    else:
        t.append(f" → {plain(e.rcode, 10)}", styles["refused"])
        t.append("  not in the allowlist", "dim")
    if e.transport != "udp":
        t.append(f"  ({plain(e.transport, 6)})", "dim")
    return t, e


class NetworkPanel(Panel):
    """Every connection attempt in ``allowlist`` mode (refused ones highlighted) and, in a
    DNS tab, every question to the sandbox's DNS stub. Shown by itself when a run is in
    allowlist mode or reaches for the network; ``6`` toggles it."""

    uses_subtitle = True  # its bottom border explains the selected request

    panel_key = "network"
    title = "6 Network"
    COMPONENT_CLASSES: ClassVar[set[str]] = {"network--open", "network--closed",
                                             "network--refused", "network--failed"}

    class RowHighlighted(Message):
        def __init__(self, row: NetRow | None) -> None:
            super().__init__()
            self.row = row

    def compose(self) -> ComposeResult:
        with TabbedContent(id="network-tabs"):
            with TabPane("Requests", id="network-table-tab"):
                yield RowTable(id="network-table")
            with TabPane("DNS", id="network-dns-tab"):
                yield StreamView(id="network-dns", empty="no DNS questions yet")

    def on_mount(self) -> None:
        super().on_mount()
        table = self.query_one("#network-table", DataTable)
        table.add_column("state", key="state", width=9)
        table.add_column("host", key="host", width=22)
        table.add_column("port", key="port", width=5)
        table.add_column("via", key="via", width=7)
        table.add_column("↑/↓ bytes", key="bytes", width=11)
        table.add_column("time", key="time", width=6)
        table.add_column("rule", key="rule")
        self._rows: list[str] = []
        self._seen = 0  # RunModel.net_version at the last refresh
        self._dns_shown = 0
        self._model: RunModel | None = None
        self._hint()

    def _hint(self) -> None:
        # the selection's summary and the keys go on the bottom border: a line saved for
        # the table, which has little height to spare on a small terminal
        self.border_subtitle = Text(" a allow the domain · w allow *.its parent · d deny "
                                    "(out of the allowlist) · enter details ", "dim")

    @property
    def filter_target(self) -> StreamView | None:
        if self.query_one("#network-tabs", TabbedContent).active == "network-dns-tab":
            return self.query_one("#network-dns", StreamView)
        return None

    def reset(self) -> None:
        super().reset()
        self._rows = []
        self._seen = 0
        self._dns_shown = 0
        self.query_one("#network-table", DataTable).clear()
        self.query_one("#network-dns", StreamView).clear()
        self._hint()

    def set_filter(self, text: str) -> None:
        super().set_filter(text)
        self.query_one("#network-dns", StreamView).set_filter(text)
        if self._model is not None:
            self._refresh_table(self._model, force=True)

    def _styles(self) -> dict[str, Any]:
        """The state colours, without the component's background (a table cell keeps the
        row's own, the cursor's included)."""
        from rich.style import Style

        out = {}
        for k in NET_STATE:
            st = self.get_component_rich_style(f"network--{k}")
            out[k] = Style(color=st.color, bold=st.bold, italic=st.italic)
        return out

    def _visible(self, model: RunModel) -> list[NetRow]:
        rows = list(model.net.values())
        f = self.filter_text.lower().strip()
        if f:
            rows = [r for r in rows if f in r.host.lower() or f in r.state
                    or f in r.rule.lower() or f in r.via or f == str(r.port)]
        return rows

    def refresh_from(self, model: RunModel | None) -> None:
        self.stale = False
        self._model = model
        if model is None:
            return
        self._refresh_table(model)
        styles = self._styles()
        t0 = model.t0 or 0.0
        self.query_one("#network-dns", StreamView).extend(
            dns_entry(e, t0, styles) for e in fresh(model.dns, model.dns_total, self._dns_shown))
        self._dns_shown = model.dns_total
        title = "6 Network"
        if model.net_requests or model.dns_total:
            c = model.net_counts
            parts = [f"{model.net_requests} requests"]
            if c.get("refused"):
                parts.append(f"{c['refused']} refused")
            if c.get("failed"):
                parts.append(f"{c['failed']} failed")
            up, down = model.net_bytes
            if up or down:
                parts.append(f"↑{fmt.size(up)} ↓{fmt.size(down)}")
            title += " · " + ", ".join(parts)
        self.set_title(title)

    def _refresh_table(self, model: RunModel, force: bool = False) -> None:
        table = self.query_one("#network-table", RowTable)
        rows = self._visible(model)
        keys = [str(r.id) for r in rows]
        cursor = table.cursor_row
        cursor_key = self._rows[cursor] if 0 <= cursor < len(self._rows) else None
        follow = cursor_key is None or cursor == len(self._rows) - 1
        styles = self._styles()
        n = len(self._rows)
        if force or keys[:n] != self._rows:
            table.clear()
            for r in rows:
                table.add_row(*self._cells(r, styles), key=str(r.id))
        else:
            for r in rows[:n]:  # the rows already shown whose request moved on
                if r.version > self._seen:
                    table.update_row(str(r.id), zip(NET_COLUMNS, self._cells(r, styles),
                                                    strict=True))
            for r in rows[n:]:
                table.add_row(*self._cells(r, styles), key=str(r.id))
        self._rows = keys
        self._seen = model.net_version
        if keys:
            if follow:  # on the newest row: stay on the newest
                table.move_cursor(row=len(keys) - 1, animate=False)
            elif cursor_key in keys and keys.index(cursor_key) != table.cursor_row:
                table.move_cursor(row=keys.index(cursor_key), animate=False)
        self._show_detail(self.current_row())

    @staticmethod
    def _cells(r: NetRow, styles: dict[str, Any]) -> tuple[Text, ...]:
        word, _ = NET_STATE.get(r.state, (r.state, ""))
        style = styles.get(r.state, "")
        refused = r.state == "refused"
        done = r.state in ("closed", "failed")
        return (cell(word, style),
                cell(r.host, style if refused else "bold", limit=80),
                Text(str(r.port), justify="right", style=style if refused else ""),
                cell(r.via, "dim", limit=10),
                Text(f"{fmt.size(r.bytes_up)}/{fmt.size(r.bytes_down)}" if done else "–",
                     justify="right", style="" if done else "dim"),
                Text(f"{r.duration * 1000:.0f}ms" if r.duration < 1 else f"{r.duration:.1f}s",
                     justify="right", style="dim") if done else Text("–", style="dim"),
                cell(r.rule or "–", style if refused else "dim", limit=60))

    def current_row(self) -> NetRow | None:
        """The selection: the request under the cursor, or the DNS question in the DNS tab."""
        if self._model is None:
            return None
        if self.query_one("#network-tabs", TabbedContent).active == "network-dns-tab":
            e = self.query_one("#network-dns", StreamView).selected_payload
            return net_row_of_dns(e) if e is not None else None
        table = self.query_one("#network-table", DataTable)
        if 0 <= table.cursor_row < len(self._rows):
            return self._model.net.get(int(self._rows[table.cursor_row]))
        return None

    def _show_detail(self, row: NetRow | None) -> None:
        if row is None:
            return
        styles = self._styles()
        t = Text(no_wrap=True, overflow="ellipsis", end="")
        t.append(" " + NET_STATE.get(row.state, (row.state, ""))[0] + " ",
                 styles.get(row.state, ""))
        reason = plain(row.reason, 120)
        target = plain(row.target, 80)
        if reason.startswith(target):  # "x:443 is not in the network allowlist"
            reason = reason[len(target):]
        elif reason:
            reason = ": " + reason
        t.append(target, "bold")
        t.append(reason)
        extra = [f"via {row.via}"] if row.via else []
        if row.address:
            extra.append(f"to {plain(row.address, 50)}")
        if row.sni:
            extra.append(f"sni {plain(row.sni, 60)}")
        if extra:
            t.append(" · " + " ".join(extra), "dim")
        t.append(" · a allow · w *.parent · d deny ", "dim")
        self.border_subtitle = t

    @on(DataTable.RowHighlighted, "#network-table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        row = self.current_row()
        self._show_detail(row)
        self.post_message(self.RowHighlighted(row))
