"""The monitor: status line and six panels (1-6 toggle them), live from the RunModel.

The Network panel (6) shows itself when a run is in allowlist mode or reaches for the
network, and stays out of the way otherwise, until ``6`` says otherwise."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, TabbedContent, Tabs

from flue_tui.model import RunModel
from flue_tui.widgets import no_blink
from flue_tui.widgets.panels import (
    DenialsPanel,
    FilesPanel,
    NetworkPanel,
    OutputPanel,
    Panel,
    ProcessesPanel,
    ResourcesPanel,
)
from flue_tui.widgets.status import StatusLine
from flue_tui.widgets.stream import StreamView

PANELS = ("denials", "resources", "files", "processes", "output", "network")


class MonitorScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "allow", "Allow", id="monitor.allow",
                tooltip="allow the selected denial's syscall (in the Network panel: the "
                "request's domain) in the draft profile"),
        Binding("g", "allow_group", "Allow group", show=False, id="monitor.allow_group",
                tooltip="allow the whole syscall group of the selected denial"),
        Binding("e", "errno", "Keep denied…", show=False, id="monitor.errno",
                tooltip="keep the selected syscall denied, answering a chosen errno"),
        Binding("w", "allow_wildcard", "Allow *.domain", show=False,
                id="monitor.allow_wildcard",
                tooltip="Network panel: allow every name under the request's parent domain"),
        Binding("d", "deny_domain", "Deny domain", show=False, id="monitor.deny_domain",
                tooltip="Network panel: take the rule that lets the request through out of "
                "the allowlist"),
        Binding("r", "app.rerun", "Re-run", id="monitor.rerun",
                tooltip="run the same command again with the edited profile"),
        Binding("t", "app.tune", "Tune", id="monitor.tune",
                tooltip="the draft profile: diff, network, limits, mounts, env"),
        Binding("x", "app.explain", "Explain", id="monitor.explain",
                tooltip="why the run failed: causes, most likely first, each with its fix"),
        Binding("L", "app.learn", "Learn", show=False, id="monitor.learn",
                tooltip="run the command in learn mode: observed, then a least-privilege "
                "profile proposed"),
        Binding("1", "toggle_panel('denials')", "Denials", show=False, id="monitor.panel1"),
        Binding("2", "toggle_panel('resources')", "Resources", show=False,
                id="monitor.panel2"),
        Binding("3", "toggle_panel('files')", "Files", show=False, id="monitor.panel3"),
        Binding("4", "toggle_panel('processes')", "Processes", show=False,
                id="monitor.panel4"),
        Binding("5", "toggle_panel('output')", "Output", show=False, id="monitor.panel5"),
        Binding("6", "toggle_panel('network')", "Network", show=False, id="monitor.panel6"),
        Binding("space", "pause", "Pause", show=False, id="monitor.pause",
                tooltip="pause or resume the live streams"),
        Binding("slash", "filter", "Filter", show=False, id="monitor.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="monitor.clear"),
        Binding("left_square_bracket", "tab(-1)", "Previous tab", show=False,
                id="monitor.tab_prev"),
        Binding("right_square_bracket", "tab(1)", "Next tab", show=False,
                id="monitor.tab_next"),
        Binding("enter", "details", "Details", show=False, id="monitor.details"),
        Binding("h", "app.history", "History", show=False, id="monitor.history"),
        Binding("n", "app.launch", "New run", show=False, id="monitor.new"),
        Binding("k", "app.stop", "Stop", show=False, id="monitor.stop",
                tooltip="stop the running sandbox (asks first)"),
    ]

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        with Horizontal(id="row-top", classes="row"):
            yield DenialsPanel()
            yield ResourcesPanel()
        with Horizontal(id="row-net", classes="row"):
            yield NetworkPanel()
        with Horizontal(id="row-mid", classes="row"):
            yield FilesPanel()
            yield ProcessesPanel()
        with Horizontal(id="row-bottom", classes="row"):
            yield OutputPanel()
        yield Input(id="filter", placeholder="filter: type to narrow the panel · enter keeps · "
                    "esc clears")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._network_chosen = False  # 6 was pressed: the Network panel no longer shows itself
        self.panel("network").display = False
        self._sync_rows()
        for tabs in self.query(Tabs):  # [ and ] switch tabs: Tab goes from panel to panel
            tabs.can_focus = False
        self.query_one("#denials-table", DataTable).focus()
        no_blink(self)
        self.refresh_all()

    # --- data ------------------------------------------------------------------------------

    def panel(self, key: str) -> Panel:
        return self.query_one(f"#panel-{key}", Panel)

    @property
    def model(self) -> RunModel | None:
        return getattr(self.app, "run_model", None)

    def reset(self) -> None:
        for key in PANELS:
            self.panel(key).reset()
        self.refresh_all()

    def refresh_all(self) -> None:
        self.update_panels(set(PANELS) | {"status"})

    def on_screen_resume(self) -> None:
        """On top again: catch up on what arrived while another screen was (the panels
        marked stale meanwhile, and the status line)."""
        self.update_panels(set())

    def update_panels(self, changed: set[str]) -> None:
        model = self.model
        if changed & {"network", "status"}:
            self._auto_network(model)
        for key in PANELS:
            panel = self.panel(key)
            if key in changed:
                panel.stale = True
            if panel.stale and panel.display:
                panel.refresh_from(model)
        self.update_status()

    def update_status(self) -> None:
        app = self.app
        self.query_one(StatusLine).show(
            self.model, app.clock(), profile_label=app.profile_label(),
            edits=app.draft_stat(), shared=app.shared_paths())

    # --- panels ------------------------------------------------------------------------------

    def _sync_rows(self) -> None:
        for row in self.query(".row"):
            row.display = any(p.display for p in row.query(Panel))

    def _auto_network(self, model: RunModel | None) -> None:
        """Show the Network panel when the run is in allowlist mode or used the network."""
        if self._network_chosen:
            return
        want = model is not None and (model.network_mode == "allowlist" or bool(model.net)
                                      or model.dns_total > 0)
        panel = self.panel("network")
        if panel.display != want:
            panel.display = want
            self._sync_rows()

    def action_toggle_panel(self, key: str) -> None:
        panel = self.panel(key)
        panel.display = not panel.display
        if key == "network":
            self._network_chosen = True
        self._sync_rows()
        if panel.display and panel.stale:
            panel.refresh_from(self.model)
        # the panel coming or going says itself which one it was: no toast for that (one
        # mounted and, 1.5 s later, removed -- two more layouts of the screen per key)
        if not any(self.panel(k).display for k in PANELS):
            self.notify(f"{key} hidden · every panel is hidden: 1-6 bring them back",
                        timeout=3)

    def focused_panel(self) -> Panel:
        node = self.focused
        while node is not None:
            if isinstance(node, Panel):
                return node
            node = node.parent  # type: ignore[assignment]
        return self.panel("denials")

    def action_tab(self, step: int) -> None:
        panel = self.focused_panel()
        tabs = list(panel.query(TabbedContent))
        if not tabs:
            return
        tc = tabs[0]
        ids = [p.id for p in tc.query("TabPane")]
        if tc.active in ids:
            tc.active = ids[(ids.index(tc.active) + step) % len(ids)]
            pane = tc.get_pane(tc.active)
            focusable = [w for w in pane.query("*") if w.can_focus]
            if focusable:
                focusable[0].focus()

    def action_pause(self) -> None:
        streams = list(self.query(StreamView))
        paused = not any(s.paused for s in streams)
        for s in streams:
            s.set_paused(paused)
        self.notify("streams paused: space resumes" if paused else "streams resumed",
                    timeout=1.5)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        self._filter_panel = self.focused_panel()
        box.display = True
        box.value = self._filter_panel.filter_text
        box.border_title = f"filter {self._filter_panel.title[2:]}"
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        panel = getattr(self, "_filter_panel", None) or self.panel("denials")
        panel.set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        box = self.query_one("#filter", Input)
        box.display = False
        panel = getattr(self, "_filter_panel", None) or self.panel("denials")
        self._focus_in(panel)

    @staticmethod
    def _focus_in(panel: Panel) -> None:
        """Focus what the panel shows: its active tab's content (a widget of a hidden tab
        would bring that tab back)."""
        def shown(w: Widget) -> bool:
            node: Widget | None = w
            while node is not None and node is not panel:
                if not node.display:
                    return False
                node = node.parent  # type: ignore[assignment]
            return True

        target = next((w for w in panel.query("*") if w.can_focus and shown(w)), None)
        if target is not None:
            target.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        panel = getattr(self, "_filter_panel", None) or self.focused_panel()
        panel.set_filter("")
        box.value = ""
        if box.display:
            box.display = False
            self._focus_in(panel)

    def key_escape(self) -> None:
        self.action_clear_filter()

    # --- denial actions -----------------------------------------------------------------------

    def selected_denial(self):  # type: ignore[no-untyped-def]
        return self.panel("denials").current_row()  # type: ignore[attr-defined]

    def selected_request(self):  # type: ignore[no-untyped-def]
        """The Network panel's selection (a request, or a DNS question), when it is shown."""
        panel = self.panel("network")
        return panel.current_row() if panel.display else None  # type: ignore[attr-defined]

    def _network_row(self):  # type: ignore[no-untyped-def]
        row = self.selected_request()
        if row is None:
            self.notify("select a request first (panel 6, the Network panel)",
                        severity="warning")
        return row

    def action_allow_wildcard(self) -> None:
        row = self._network_row()
        if row is not None:
            self.app.edit_network("allow_wildcard", row)

    def action_deny_domain(self) -> None:
        row = self._network_row()
        if row is not None:
            self.app.edit_network("deny", row)

    def action_allow(self) -> None:
        if isinstance(self.focused_panel(), NetworkPanel):
            row = self._network_row()
            if row is not None:
                self.app.edit_network("allow", row)
            return
        row = self.selected_denial()
        if row is None:
            self.notify("select a denial first (panel 1)", severity="warning")
            return
        self.app.edit_profile("allow", row)

    def action_allow_group(self) -> None:
        row = self.selected_denial()
        if row is None:
            self.notify("select a denial first (panel 1)", severity="warning")
            return
        self.app.edit_profile("allow_group", row)

    def action_errno(self) -> None:
        row = self.selected_denial()
        if row is None:
            self.notify("select a denial first (panel 1)", severity="warning")
            return
        self.app.edit_profile("errno", row)

    def action_details(self) -> None:
        from flue_tui.screens.modals import RecordModal

        focused = self.focused
        if isinstance(focused, StreamView):
            payload = focused.selected_payload
            if payload is not None:
                self.app.push_screen(RecordModal("record", payload))
            return
        if isinstance(self.focused_panel(), NetworkPanel):
            req = self.selected_request()
            if req is not None and req.last is not None:
                self.app.push_screen(RecordModal(f"{req.target} ({req.state})", req.last))
            return
        row = self.selected_denial()
        if row is not None and row.last is not None:
            self.app.push_screen(RecordModal(f"last {row.name} denial ({row.count} in all)",
                                             row.last))

    @on(StreamView.Selected)
    def _stream_selected(self, event: StreamView.Selected) -> None:
        from flue_tui.screens.modals import RecordModal

        event.stop()
        if event.payload is not None:
            self.app.push_screen(RecordModal("record", event.payload))

    @on(DataTable.RowSelected, "#denials-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_details()

    @on(DataTable.RowSelected, "#network-table")
    def _request_selected(self, event: DataTable.RowSelected) -> None:
        self.action_details()
