"""Tune: the draft profile as a diff against the saved file, and the knobs that change it."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from flue_tui.sanitize import paragraph, plain
from flue_tui.widgets import no_blink


def diff_text(diff: str) -> Text:
    """A unified diff, coloured line by line (plain Text: profile text is the user's own,
    but nothing here is markup either)."""
    if not diff:
        return Text("no changes: the draft is the saved profile", "dim")
    t = Text(no_wrap=True)
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("@@"):
            style = "cyan"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        else:
            style = "dim"
        t.append(plain(line, 400) + "\n", style)
    return t


def allowlist_text(net: Any) -> Text:
    """The draft's allowlist, one rule a line (and whether the mode uses it)."""
    if not net.allow:
        return Text("no rules: every name is refused" if net.mode == "allowlist" else
                    "no rules", "dim")
    t = Text(no_wrap=True, overflow="ellipsis")
    if net.mode != "allowlist":
        t.append(f"kept, unused in mode {net.mode}:\n", "dim")
    for i, rule in enumerate(net.allow):
        t.append(("\n" if i else "") + f"• {plain(rule, 60)}")
    return t


class TuneScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="tune.back"),
        Binding("r", "app.rerun", "Re-run", id="tune.rerun",
                tooltip="run the same command with the edited profile"),
        Binding("u", "revert", "Revert", id="tune.revert",
                tooltip="throw the draft's edits away (asks first)"),
        Binding("f", "app.relax", "Relax", id="tune.relax",
                tooltip="relax: the smallest changes that fix the last run, hunk by hunk"),
        Binding("t", "app.tighten", "Tighten", id="tune.tighten", show=False,
                tooltip="tighten: remove what this profile's recorded runs never used"),
    ]

    def _draft_profile(self) -> Any:
        try:
            return self.app.draft.resolve()
        except Exception:  # noqa: BLE001 - an invalid draft: the validation line says why
            return None

    def compose(self) -> ComposeResult:
        prof = self._draft_profile()
        # composed with the draft's own mode: the Select's first Changed event then carries
        # the value the draft has, and changes nothing
        mode = prof.network.mode if prof is not None else "none"
        yield Static(id="tune-title")
        with Horizontal(id="tune-body"):
            with VerticalScroll(id="tune-form"):
                yield Label("Network", classes="form-label")
                yield Select([("none: no interfaces at all", "none"),
                              ("loopback: 127.0.0.1 only", "loopback"),
                              ("allowlist: only the names below", "allowlist")],
                             id="tune-network", allow_blank=False, value=mode)
                yield Label("Allow: NAME[:PORT], *.DOMAIN; -RULE drops",
                            classes="form-label")
                yield Input(placeholder="pypi.org", id="tune-allow")
                yield Static(id="tune-allowlist")
                yield Label("Limits (enter applies; none = no limit)", classes="form-label")
                with Horizontal(classes="form-row"):
                    yield Input(placeholder="memory 512M", id="tune-memory",
                                classes="limit-input")
                    yield Input(placeholder="cpus 1.5", id="tune-cpus", classes="limit-input")
                with Horizontal(classes="form-row"):
                    yield Input(placeholder="pids 256", id="tune-pids", classes="limit-input")
                    yield Input(placeholder="timeout 30s", id="tune-timeout",
                                classes="limit-input")
                yield Label("Mounts: SRC[:DST][:rw] adds, -DST removes", classes="form-label")
                yield Input(placeholder="/host/data:/data:ro", id="tune-bind")
                yield Label("Env: KEY=VALUE sets, KEY= unsets", classes="form-label")
                yield Input(placeholder="AGENT_MODE=dry-run", id="tune-env")
                yield Label("Changes in this draft", classes="form-label")
                yield Static(id="tune-log")
            with Vertical(id="tune-diff-pane"):
                yield Static(id="tune-validation")
                with VerticalScroll(id="tune-diff-scroll"):
                    yield Static(id="tune-diff")
                yield Static(id="tune-cli")
        with Horizontal(id="tune-buttons"):
            yield Button("Re-run (r)", id="tune-rerun", variant="primary")
            yield Button("Save… (ctrl+s)", id="tune-save", variant="success")
            yield Button("Revert (u)", id="tune-revert", variant="warning")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_draft()
        self.query_one("#tune-network", Select).focus()
        no_blink(self)

    def refresh_draft(self) -> None:
        app = self.app
        doc = app.draft
        if doc is None:
            return
        where = "built-in: saving writes a user profile" if doc.builtin else str(doc.path)
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(f" Tune profile {plain(doc.name)} ", "reverse bold")
        title.append(f"  {plain(where, 100)}", "dim")
        a, r = doc.diff_stat()
        if a or r:
            title.append(f"   +{a} −{r} lines vs saved", "yellow")
        self.query_one("#tune-title", Static).update(title)
        self.query_one("#tune-diff", Static).update(diff_text(doc.diff()))
        err = doc.validate()
        val = self.query_one("#tune-validation", Static)
        if err is None:
            val.update(Text("✓ valid: r runs it, ctrl+s saves it", "green"))
            val.set_class(False, "invalid")
        else:
            val.update(Text("✗ " + paragraph(err.render(), 600), "bold red"))
            val.set_class(True, "invalid")
        log = doc.log[-12:]
        line, note = app.cli_equivalent()
        cli = Text("same run from a shell: ", "bold")
        cli.append(plain(line, 2000) if line else note, "" if line else "dim")
        if line and note:
            cli.append(f" ({note})", "dim")
        self.query_one("#tune-cli", Static).update(cli)
        self.query_one("#tune-log", Static).update(
            Text("\n".join(f"• {plain(x, 120)}" for x in log), "") if log else
            Text("none yet: a/g/e on a denial, or the fields above", "dim"))
        prof = self._draft_profile()
        if prof is not None:
            sel = self.query_one("#tune-network", Select)
            if sel.value != prof.network.mode:
                with sel.prevent(Select.Changed):
                    sel.value = prof.network.mode
            self.query_one("#tune-allowlist", Static).update(allowlist_text(prof.network))
            from flue_tui.widgets import format as fmt

            lim = prof.limits
            short = {"memory": "mem", "cpus": "cpus", "pids": "pids", "timeout": "timeout"}
            hints = {"memory": fmt.size(lim.memory) if lim.memory else "none",
                     "cpus": f"{lim.cpus:g}" if lim.cpus else "none",
                     "pids": str(lim.pids) if lim.pids else "none",
                     "timeout": f"{lim.timeout:g}s" if lim.timeout else "none"}
            for key, now in hints.items():
                self.query_one(f"#tune-{key}", Input).placeholder = f"{short[key]} {now}"

    # --- knobs ---------------------------------------------------------------------------------

    @on(Select.Changed, "#tune-network")
    def _network(self, event: Select.Changed) -> None:
        if event.value and isinstance(event.value, str):
            doc = self.app.draft
            try:
                cur = doc.resolve().network.mode
            except Exception:  # noqa: BLE001
                cur = None
            if cur != event.value:
                self.app.apply_edit(lambda d: d.set_network(str(event.value)))

    @on(Input.Submitted, ".limit-input")
    def _limit(self, event: Input.Submitted) -> None:
        key = (event.input.id or "").removeprefix("tune-")
        value = event.value.strip()
        if not value:
            return
        if self.app.apply_edit(lambda d: d.set_limit(key, value)):
            event.input.value = ""

    @on(Input.Submitted, "#tune-allow")
    def _allow(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            return
        if value.startswith("-"):
            ok = self.app.apply_edit(lambda d: d.remove_domain(value[1:].strip()))
        else:
            ok = self.app.apply_edit(lambda d: d.allow_domain(value))
        if ok:
            event.input.value = ""

    @on(Input.Submitted, "#tune-bind")
    def _bind(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            return
        if value.startswith("-"):
            ok = self.app.apply_edit(lambda d: d.remove_bind(value[1:].strip()))
        else:
            parts = value.split(":")
            src = parts[0]
            dst = parts[1] if len(parts) > 1 and parts[1] else src
            mode = parts[2] if len(parts) > 2 else "ro"
            ok = self.app.apply_edit(lambda d: d.add_bind(src, dst, mode))
        if ok:
            event.input.value = ""

    @on(Input.Submitted, "#tune-env")
    def _env(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if "=" not in value:
            self.notify("write KEY=VALUE (or KEY= to unset)", severity="warning")
            return
        key, val = value.split("=", 1)
        if self.app.apply_edit(lambda d: d.set_env(key.strip(), val if val else None)):
            event.input.value = ""

    def action_revert(self) -> None:
        from flue_tui.screens.modals import ConfirmModal

        def done(yes: bool | None) -> None:
            if yes:
                self.app.apply_edit(lambda d: (d.revert(), "reverted")[1])

        if self.app.draft is not None and self.app.draft.dirty:
            self.app.push_screen(ConfirmModal("Throw away every edit of the draft profile?",
                                              yes="Revert"), done)

    @on(Button.Pressed, "#tune-rerun")
    def _rerun(self) -> None:
        self.app.action_rerun()

    @on(Button.Pressed, "#tune-save")
    def _save(self) -> None:
        self.app.action_save()

    @on(Button.Pressed, "#tune-revert")
    def _revert(self) -> None:
        self.action_revert()
