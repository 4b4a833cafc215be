"""The launch form: command, directories, profile, quick limits, recent commands."""

from __future__ import annotations

import os
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, Footer, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from flue_tui.runspec import ASK_TIMEOUT, QuickLimits, RunSpec
from flue_tui.sanitize import plain
from flue_tui.widgets import no_blink


class LaunchScreen(Screen[RunSpec | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Run", id="launch.run", priority=True,
                tooltip="start the command in a sandbox"),
        Binding("escape", "cancel", "Back", id="launch.back"),
    ]

    def __init__(self, spec: RunSpec | None = None) -> None:
        super().__init__()
        self.spec = spec
        self._extra = spec.limits if spec else QuickLimits()  # --allow-domain, --resolve

    def compose(self) -> ComposeResult:
        from engine.profile import list_profiles

        spec = self.spec
        profiles = []
        for info in list_profiles():
            if info.shadowed:
                continue
            kind = "built-in" if info.builtin else "user"
            label = f"{info.name} ({kind}): {info.description}"
            label = label if len(label) <= 64 else label[:63] + "…"
            profiles.append((label, info.name))
        current = spec.profile if spec else self.app.profile_ref
        if current not in [v for _, v in profiles]:
            profiles.append((current, current))
        self._profile_options = profiles
        self._profile_values = {v for _, v in profiles}
        lim = spec.limits if spec else QuickLimits()
        yield Static(Text(" New run ", "reverse bold"), id="launch-title")
        with VerticalScroll(id="launch-form"):
            yield Label("Command (as you would type it after flue run --)", classes="form-label")
            yield Input(value=spec.command_line if spec else "", id="launch-cmd",
                        placeholder="e.g. python3 agent.py --task fix-tests")
            with Horizontal(classes="form-row"):
                with Vertical(classes="form-col"):
                    yield Label("Directory (relative paths start here)", classes="form-label")
                    yield Input(value=spec.cwd if spec else self.app.cwd, id="launch-cwd")
                with Vertical(classes="form-col"):
                    yield Label("Workspace: rw at /work (empty: tmpfs)", classes="form-label")
                    yield Input(value=spec.workspace if spec else "", id="launch-workspace",
                                placeholder="(private tmpfs)")
            yield Label("Profile", classes="form-label")
            yield Select(profiles, value=current, id="launch-profile", allow_blank=False)
            yield Input(id="launch-profile-path",
                        placeholder="…or a profile file: ./my-agent.toml (enter picks it)")
            yield Label("Quick limits for this run (empty keeps the profile's; none removes)",
                        classes="form-label")
            with Horizontal(classes="form-row"):
                yield Input(value=lim.memory, placeholder="memory 512M", id="launch-memory",
                            classes="limit-input")
                yield Input(value=lim.cpus, placeholder="cpus 1", id="launch-cpus",
                            classes="limit-input")
                yield Input(value=lim.pids, placeholder="pids 256", id="launch-pids",
                            classes="limit-input")
                yield Input(value=lim.timeout, placeholder="timeout 30s", id="launch-timeout",
                            classes="limit-input")
                yield Select([("net: profile's", ""), ("none", "none"),
                              ("loopback", "loopback"), ("allowlist", "allowlist")],
                             value=lim.network, allow_blank=False, id="launch-network")
            with Horizontal(classes="form-row", id="launch-ask-row"):
                yield Checkbox("ask before denying", value=bool(spec and spec.ask),
                               id="launch-ask")
                yield Input(value=f"{spec.ask_timeout:g}" if spec else "",
                            placeholder=f"ask timeout {ASK_TIMEOUT:g}s", id="launch-ask-timeout",
                            classes="limit-input")
            yield Checkbox("Learn: run it observed and propose a least-privilege profile",
                           value=bool(spec and spec.learn), id="launch-learn")
            yield Static(id="launch-error")
            yield Label("Recent (enter fills the form)", classes="form-label")
            yield OptionList(id="launch-recent")
        with Horizontal(id="launch-buttons"):
            yield Button("Run (ctrl+r)", id="launch-run", variant="primary")
            yield Button("Back (esc)", id="launch-cancel")
        yield Footer()

    def on_mount(self) -> None:
        from flue_tui.state import load_recent

        self._recent = load_recent()
        ol = self.query_one("#launch-recent", OptionList)
        for i, spec in enumerate(self._recent):
            t = Text(plain(spec.command_line, 90))
            t.append(f"   {plain(spec.profile, 30)}", "dim")
            if not spec.limits.is_empty():
                t.append(f"  {plain(spec.limits.describe(), 40)}", "dim")
            ol.add_option(Option(t, id=str(i)))
        if not self._recent:
            ol.add_option(Option(Text("none yet", "dim"), id="none", disabled=True))
        self.query_one("#launch-cmd", Input).focus()
        no_blink(self)

    @on(OptionList.OptionSelected, "#launch-recent")
    def _recent_chosen(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is None or not event.option.id.isdigit():
            return
        spec = self._recent[int(event.option.id)]
        self.query_one("#launch-cmd", Input).value = spec.command_line
        self.query_one("#launch-cwd", Input).value = spec.cwd
        self.query_one("#launch-workspace", Input).value = spec.workspace
        if not self.pick_profile(spec.profile):
            self._error(f"the profile of that run, {spec.profile}, cannot be opened any more: "
                        "pick another")
        for key in ("memory", "cpus", "pids", "timeout"):
            self.query_one(f"#launch-{key}", Input).value = getattr(spec.limits, key)
        self.query_one("#launch-network", Select).value = spec.limits.network
        self.query_one("#launch-ask", Checkbox).value = spec.ask
        self.query_one("#launch-ask-timeout", Input).value = f"{spec.ask_timeout:g}"
        self._extra = spec.limits
        self.query_one("#launch-cmd", Input).focus()

    def pick_profile(self, ref: str) -> bool:
        """Select profile ``ref`` (a name, or a path: added to the picker's choices). False
        when there is no such profile."""
        from engine.errors import EngineError
        from engine.profile.edit import locate

        sel = self.query_one("#launch-profile", Select)
        if ref not in self._profile_values:
            try:
                path = locate(ref)
            except EngineError:
                return False
            label = f"{path.name} (file)"  # short: the picker is narrow at 80 columns
            if label in (lbl for lbl, _ in self._profile_options):
                label = f"{path.name} (file in {path.parent})"
            self._profile_options.append((label, ref))
            self._profile_values.add(ref)
            sel.set_options(self._profile_options)
        sel.value = ref
        return True

    @on(Input.Submitted, "#launch-profile-path")
    def _profile_path(self, event: Input.Submitted) -> None:
        event.stop()
        if self._typed_profile():
            self.query_one("#launch-error", Static).update("")
            self.query_one("#launch-profile", Select).focus()

    def _typed_profile(self) -> bool:
        """The profile typed in the file field, picked (and the field emptied); False, with
        the error shown, when there is none by that path or name."""
        box = self.query_one("#launch-profile-path", Input)
        ref = os.path.expanduser(box.value.strip())
        if not ref:
            return True
        if ("/" in ref or ref.endswith(".toml")) and not os.path.isabs(ref):
            # a relative path: from the form's directory, like the command's scripts
            cwd = self.query_one("#launch-cwd", Input).value.strip() or os.getcwd()
            ref = os.path.normpath(os.path.join(cwd, ref))
        if not self.pick_profile(ref):
            self._error(f"no profile {ref}: give a .toml file's path (or a profile's name)")
            return False
        box.value = ""
        return True

    def _error(self, msg: str) -> None:
        self.query_one("#launch-error", Static).update(Text("✗ " + msg, "bold red"))

    def build(self) -> RunSpec | None:
        cmd = self.query_one("#launch-cmd", Input).value.strip()
        try:
            argv = RunSpec.parse(cmd)
        except ValueError as err:
            self._error(str(err))
            return None
        if not argv:
            self._error("type a command first")
            return None
        cwd = self.query_one("#launch-cwd", Input).value.strip() or os.getcwd()
        if not os.path.isdir(cwd):
            self._error(f"directory {cwd} does not exist")
            return None
        ws = self.query_one("#launch-workspace", Input).value.strip()
        if ws and not os.path.isdir(ws):
            self._error(f"workspace {ws} does not exist")
            return None
        if not self._typed_profile():
            return None
        net = self.query_one("#launch-network", Select).value
        # the command line's --allow-domain and --resolve stay (the form has no field
        # for them); none or loopback chosen here turns the extra domains off
        before = self._extra
        net = net if isinstance(net, str) else ""
        limits = QuickLimits(*(self.query_one(f"#launch-{k}", Input).value.strip()
                               for k in ("memory", "cpus", "pids", "timeout")),
                             network=net, resolve=before.resolve,
                             allow=before.allow if net in ("", "allowlist") else ())
        profile = self.query_one("#launch-profile", Select).value
        ask = self.query_one("#launch-ask", Checkbox).value
        timeout_text = self.query_one("#launch-ask-timeout", Input).value.strip()
        try:
            from engine.profile.sizes import parse_duration

            ask_timeout = parse_duration(timeout_text) if timeout_text else ASK_TIMEOUT
        except ValueError as err:
            if not ask:  # the field of a box left unticked: it has no say in this run
                ask_timeout = ASK_TIMEOUT
            else:
                self._error(f"ask timeout: {err}")
                return None
        if not ask and not ask_timeout:
            ask_timeout = ASK_TIMEOUT
        if not ask_timeout or ask_timeout <= 0:
            self._error("ask timeout: give seconds above 0, e.g. 30s")
            return None
        spec = RunSpec(argv=argv, profile=str(profile), cwd=cwd, workspace=ws, limits=limits,
                       ask=ask, ask_timeout=float(ask_timeout))
        if self.query_one("#launch-learn", Checkbox).value:
            from dataclasses import replace

            spec = replace(spec, learn=True)
        try:
            from engine.profile.model import Profile

            limits.apply(Profile(name="check"))
        except ValueError as err:
            self._error(str(err))
            return None
        return spec

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "launch-profile-path":  # that one picks a profile
            self.action_run()

    @on(Button.Pressed, "#launch-run")
    def _run_pressed(self) -> None:
        self.action_run()

    @on(Button.Pressed, "#launch-cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_run(self) -> None:
        spec = self.build()
        if spec is not None:
            self.dismiss(spec)

    def action_cancel(self) -> None:
        self.dismiss(None)
