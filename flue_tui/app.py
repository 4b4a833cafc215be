"""flue-tui: the app, its engine worker, and ``make_app`` (used by the CLI, tests, screenshots).

The app owns the state that outlives a screen: the current ``RunModel`` and the history of
runs, the draft profile (a ``ProfileDocument`` being edited), the last ``RunSpec``. Engine
work happens in one exclusive worker that awaits ``Bridge.run``; its events come back as
``EventBatch`` messages which the app folds into the model before telling the monitor which
panels changed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.worker import Worker, WorkerState

from engine.errors import EngineError
from flue_tui import _lighter
from flue_tui.bridge import Bridge, ReplayBridge
from flue_tui.messages import AskPrompt, EventBatch, ProcessSnapshot, ProfileChanged, RunFinished
from flue_tui.model import DenialRow, NetRow, RunModel, diff_runs
from flue_tui.runspec import Prepared, RunSpec, prepare
from flue_tui.screens.monitor import MonitorScreen

_lighter.apply()  # Textual's Strip, its caches made on first use (see the module)

CSS_FILE = Path(__file__).with_name("app.tcss")
# the monitor's panels are redrawn at most this often (5 Hz) however fast batches come: the
# model folds every batch in at once, the screen follows at a pace a person can read, and
# a keypress rarely has to wait behind a redraw
PANEL_INTERVAL = 0.2
PANEL_KEYS = frozenset({"denials", "resources", "files", "processes", "output", "network"})


class FlueCommands(Provider):
    """The command palette: ``category: Verb`` commands, only those that make sense now."""

    def _commands(self) -> Iterator[tuple[str, str, Callable[[], Any]]]:
        app: FlueApp = self.app  # type: ignore[assignment]
        yield from app.palette_commands()

    async def discover(self) -> Hits:
        for name, help_text, callback in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class FlueApp(App[int]):
    CSS_PATH = str(CSS_FILE)
    # once started, freeze what exists out of the garbage collector's scans (``gc.freeze``):
    # set by flue-tui's main (see flue_tui.__main__.steady_gc), not in tests, where many apps
    # share one process and a frozen app would never be collected
    freeze_after_start = False
    TITLE = "flue-tui"
    COMMANDS = App.COMMANDS | {FlueCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="app.save", priority=True,
                tooltip="save the draft profile (asks where; validates first)"),
        Binding("question_mark,f1", "help", "Help", id="app.help", key_display="?",
                tooltip="every key, with the id to remap it"),
        Binding("q", "quit_app", "Quit", id="app.quit",
                tooltip="quit (asks first if a sandbox runs or edits are unsaved)"),
    ]

    def __init__(self, *, spec: RunSpec | None = None, profile: str = "default",
                 bridge: Bridge | None = None, clock: Callable[[], float] | None = None,
                 remember: bool = True, record_to: str | None = None,
                 keymap: dict[str, str] | None = None, cwd: str | None = None,
                 blink: bool = True, allow_unlimited: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.cwd = cwd or os.getcwd()  # where the launch form resolves relative scripts
        self.blink = blink  # False in tests and snapshots: no cursor blink
        self.profile_ref = spec.profile if spec else profile
        self.allow_unlimited = allow_unlimited
        self.bridge = bridge or Bridge(self.post_message, record_to=record_to,
                                       allow_unlimited=allow_unlimited)
        self._clock = clock
        self.remember = remember
        self.runs: list[RunModel] = []
        self.run_model: RunModel | None = None
        self.prepared: Prepared | None = None
        self.draft: Any = None
        self._draft_error = ""
        self._log_mark = 0
        self._keymap_override = keymap
        self._stat_key: tuple[int, int] | None = None
        self._stat = (0, 0)
        self._unpainted: set[str] = set()  # changed since the panels were last redrawn
        self._queued: RunSpec | None = None  # to start once the killed sandbox has ended
        self._worker_runs: dict[Any, int] = {}  # engine worker -> its run's number
        self._advised_last: tuple[str, str] | None = None  # (action, row) explained last
        self._advised_at = 0.0
        self.learn_session: Any = None  # learn runs merged (flue_tui/screens/learn.py)
        self._shared_anyway: set[str] = set()  # folder warnings the user said yes to
        self._painted_at = 0.0
        self._paint_timer: Any = None
        self.asks: list[AskPrompt] = []  # ask mode: held calls waiting for an answer, in order
        self._ask_deadlines: dict[tuple[int, int], float] = {}

    # --- set-up -------------------------------------------------------------------------

    def get_default_screen(self) -> MonitorScreen:
        return MonitorScreen()

    def compose(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        from flue_tui.state import load_keymap

        keymap = load_keymap() if self._keymap_override is None else self._keymap_override
        if keymap:
            self.set_keymap(keymap)
        self.open_draft(self.profile_ref)
        self.set_interval(0.5, self._tick)
        if self.freeze_after_start:
            self.call_after_refresh(self._freeze_gc)
        if self.spec is not None:
            self.call_after_refresh(self.start, self.spec)
        else:
            self.call_after_refresh(self.action_launch)

    def on_unmount(self) -> None:
        self.bridge.close()

    @staticmethod
    def _freeze_gc() -> None:
        import gc

        gc.collect()
        gc.freeze()

    def clock(self) -> float:
        return self._clock() if self._clock is not None else self.bridge.clock()

    @property
    def monitor(self) -> MonitorScreen | None:
        for screen in self.screen_stack:
            if isinstance(screen, MonitorScreen):
                return screen
        return None

    # --- the draft profile -------------------------------------------------------------------

    def open_draft(self, ref: str) -> bool:
        from engine.profile.edit import ProfileDocument

        try:
            self.draft = ProfileDocument.open(ref)
        except EngineError as err:
            self.draft = None
            self._draft_error = err.render()
            self.notify(err.render(), title="profile", severity="error", timeout=8,
                        markup=False)
            return False
        self.profile_ref = ref
        self._log_mark = 0
        return True

    def profile_label(self) -> str:
        if self.draft is None:
            return f"{self.profile_ref} (unreadable)"
        return self.draft.name + (" (built-in)" if self.draft.builtin else "")

    def draft_stat(self) -> tuple[int, int]:
        """Lines added and removed by the edits. The status line asks on every event batch;
        the diff is recomputed only when the draft changed (every edit, revert and save is
        logged in ``draft.log``)."""
        d = self.draft
        if d is None:
            return (0, 0)
        key = (id(d), len(d.log))
        if self._stat_key != key:
            self._stat_key, self._stat = key, d.diff_stat()
        return self._stat

    def shared_paths(self) -> tuple[tuple[str, str], ...]:
        return self.prepared.shared if self.prepared else ()

    def cli_equivalent(self, profile: str | None = None) -> tuple[str, str]:
        """The ``flue run`` line that runs what flue-tui runs (``profile``: the file it will
        be saved to), and what to do first for it to be the same ("" when nothing)."""
        from flue_tui.runspec import cli_command

        spec = self.spec
        if spec is None:
            return "", "no command yet"
        note = ""
        doc = self.draft
        if profile is None:
            if doc is None:
                profile = spec.profile
            elif doc.dirty:
                profile = str(doc.default_save_path())
                note = "after saving the draft there: ctrl+s"
            elif doc.builtin:
                profile = doc.name
            elif "/" in spec.profile or spec.profile.endswith(".toml"):
                profile = str(doc.path)
            else:
                profile = spec.profile
        prepared = self.prepared if self.prepared is not None else prepare(spec)
        return cli_command(spec, prepared, profile, allow_unlimited=self.allow_unlimited), note

    def action_copy_cli(self) -> None:
        line, note = self.cli_equivalent()
        if not line:
            self.notify(note, severity="warning")
            return
        self.copy_to_clipboard(line)
        self.notify(line + (f"\n({note})" if note else ""), title="copied: the same run from "
                    "a shell", timeout=10, markup=False)

    def apply_edit(self, fn: Callable[[Any], str]) -> bool:
        """Run one edit on the draft; errors become a notification. True when it worked."""
        if self.draft is None:
            self.notify("no profile is open", severity="error")
            return False
        try:
            what = fn(self.draft)
        except EngineError as err:
            self.notify(err.render(), title="not changed", severity="error", timeout=6,
                        markup=False)
            return False
        err = self.draft.validate()
        if err is not None:
            self.notify(err.render(), title="the draft is not valid", severity="warning",
                        markup=False,
                        timeout=8)
        else:
            self.notify(f"{what} · r re-runs, ctrl+s saves", title="draft profile",
                        timeout=3)
        self.post_message(ProfileChanged(what))
        return True

    def edit_profile(self, kind: str, row: DenialRow, *, force: bool = False) -> None:
        """The denial actions: allow (a), allow its group (g), keep denied with an errno (e).
        Allowing what cannot work in a sandbox (flue_tui/advice.py) explains instead; the same
        key again on the same row within a few seconds (or ``force``) edits anyway."""
        name = row.name
        if kind in ("allow", "allow_group") and not self._advised(kind, row, force):
            return
        if kind == "allow":
            family = row.family
            if family:
                self.apply_edit(lambda d: d.allow_socket_family(family))
            else:
                self.apply_edit(lambda d: d.allow_syscall(name))
        elif kind == "allow_group":
            if not row.group:
                self.notify(f"{name} belongs to no group; a allows it alone",
                            severity="warning")
                return
            if row.family:
                self.notify(f"{name} is allowed already: the refusal is its socket family "
                            f"{row.family}; a allows that family", severity="warning")
                return
            group = row.group
            self.apply_edit(lambda d: d.allow_group(group))
        elif kind == "errno":
            from flue_tui.screens.modals import ErrnoPicker

            if row.family:
                self.notify(f"{name} is allowed; {row.family} sockets are refused by the "
                            "socket_families filter, which answers EPERM", severity="warning")
                return

            def chosen(errno: str | None) -> None:
                if errno:
                    self.apply_edit(lambda d: d.deny_syscall(name, errno))

            self.push_screen(ErrnoPicker(name, row.errno_name), chosen)

    def advice(self, row: DenialRow) -> Any:
        """What allowing ``row`` would really do, when that is not "it goes through"."""
        from flue_tui.advice import advise

        try:
            ns = bool(self.draft is not None and self.draft.resolve().seccomp.allow_namespaces)
        except EngineError:
            ns = False
        return advise(row, allow_namespaces=ns)

    def _advised(self, kind: str, row: DenialRow, force: bool) -> bool:
        """True when the allow may go ahead; else the user was told why not (or asked)."""
        from flue_tui.advice import NAMESPACES_WARNING
        from flue_tui.screens.modals import ConfirmModal

        advice = self.advice(row)
        if advice is None:
            return True
        again = self._advised_last == (kind, row.key) and \
            time.monotonic() - self._advised_at < 5
        self._advised_last, self._advised_at = (kind, row.key), time.monotonic()
        key = "a" if kind == "allow" else "g"
        if advice.kind == "namespaces":
            what = row.group if kind == "allow_group" and row.group else row.name

            def answer(yes: bool | None) -> None:
                if yes:
                    self.apply_edit(lambda d: "; ".join(
                        (d.allow_group(what) if what.startswith("@") else
                         d.allow_syscall(what), d.allow_namespaces())))
                else:
                    self.notify(f"not changed: {row.name} stays refused "
                                "(allow_namespaces is false)", timeout=4)

            self.push_screen(ConfirmModal(
                f"Allow {what}? {advice.text[0].upper()}{advice.text[1:]}. "
                f"{NAMESPACES_WARNING}", yes="Allow namespaces"), answer)
            return False
        if force or again:
            self._advised_last = None
            return True
        self.notify(f"{advice.text}. Not changed; {key} again allows it anyway.",
                    title=f"{row.family or row.name}: allowing it would not help"
                    if advice.kind == "capability" else f"{row.name}: nothing to allow",
                    severity="warning" if advice.kind == "capability" else "information",
                    timeout=8, markup=False)
        return False

    def edit_network(self, kind: str, row: NetRow) -> None:
        """The Network panel's actions on a request (or a DNS question): allow its domain
        (a), every name under its parent domain (w), or take out the rules that let it
        through (d). A port other than 443 and 80 goes into the rule."""
        from engine.network.policy import Allowlist, is_ip_literal

        if is_ip_literal(row.host):
            self.notify(f"{row.host} is an IP address: the allowlist holds names. Name it in "
                        "[network] hosts and allow that name", severity="warning", timeout=6)
            return
        if kind == "deny":
            if self.draft is None:
                self.notify("no profile is open", severity="error")
                return
            try:
                rules: tuple[str, ...] = self.draft.resolve().network.allow
            except EngineError:  # an invalid draft: what the run said let it through
                rules = (row.rule,) if row.allowed and row.rule else ()
            lets = [r.text for r in Allowlist(rules).rules
                    if (r.matches(row.host, row.port) if row.port
                        else r.matches_name(row.host))]
            if not lets:
                self.notify(f"{row.target} is not allowed by the draft profile: nothing to "
                            "take out", severity="warning")
                return
            self.apply_edit(lambda d: "; ".join(d.remove_domain(t) for t in lets))
            return
        name = row.host
        if kind == "allow_wildcard":
            parent = name.split(".", 1)[1] if "." in name else ""
            if "." not in parent:
                self.notify(f"{name} has no parent domain to allow (*.{parent or name} would "
                            "be a whole top-level domain); a allows the name itself",
                            severity="warning", timeout=6)
                return
            name = f"*.{parent}"
        from engine.network.policy import DEFAULT_PORTS

        rule = name if not row.port or row.port in DEFAULT_PORTS else f"{name}:{row.port}"
        self.apply_edit(lambda d: d.allow_domain(rule))

    @on(ProfileChanged)
    def _profile_changed(self, message: ProfileChanged) -> None:
        from flue_tui.screens.tune import TuneScreen

        if isinstance(self.screen, TuneScreen):
            self.screen.refresh_draft()
        if self.monitor is not None:
            self.monitor.update_status()

    # --- runs ------------------------------------------------------------------------------

    def start(self, spec: RunSpec) -> None:
        """Start ``spec`` with the draft profile (and the spec's quick limits). While a
        sandbox runs, ask first: yes kills it, and ``spec`` starts once it has ended (one
        run at a time, so every run is accounted for by its number)."""
        from flue_tui.screens.modals import ConfirmModal

        if not self.bridge.running:
            self._start_now(spec)
            return
        if self._queued is not None:  # a restart is on its way: the newest request wins
            self._queued = spec
            self.notify("re-running as soon as the killed sandbox has ended", timeout=3)
            return
        running = self.run_model

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            if not self.bridge.running:  # it ended while the question was open
                self._start_now(spec)
                return
            self._queued = spec
            if running is not None:
                running.replaced = True
            self.bridge.kill()
            # a sandbox that does not end is left to the worker's cancellation
            self.set_timer(10, self._start_queued, name="start queued run")

        number = running.number if running is not None else len(self.runs)
        self.push_screen(ConfirmModal(
            f"Run #{number} is still running. Kill it (everything in the sandbox) and start "
            f"run #{len(self.runs) + 1}?", yes="Kill and re-run"), answer)

    def _start_queued(self) -> None:
        spec, self._queued = self._queued, None
        if spec is not None:
            self._start_now(spec)

    def _start_now(self, spec: RunSpec) -> None:
        from flue_tui.screens.modals import ErrorModal

        if spec.profile != self.profile_ref or self.draft is None:
            if self.draft is not None and self.draft.dirty:
                self.notify(f"the edits to {self.draft.name} were left unsaved: switching to "
                            f"{spec.profile}", severity="warning", timeout=6)
            if not self.open_draft(spec.profile):
                self.push_screen(ErrorModal("cannot open the profile", self._draft_error))
                return
        try:
            profile = self.draft.resolve()
        except EngineError as err:
            self.push_screen(ErrorModal.from_exception(err))
            return
        try:
            profile = spec.limits.apply(profile)
        except ValueError as err:
            self.push_screen(ErrorModal("bad quick limit", str(err)))
            return
        if spec.learn:  # observed: the base's learn profile, not the draft
            profile = self._learn_profile(spec)
            if profile is None:
                return
        self.spec = spec
        prepared = prepare(spec)
        if prepared.problems:  # it would fail with "Permission denied" and nothing more
            p = prepared.problems[0]
            self.push_screen(ErrorModal(p.title, p.detail, p.fix))
            return
        fresh = [w for w in prepared.warnings if w not in self._shared_anyway]
        if fresh:
            from flue_tui.screens.modals import ConfirmModal

            def answer(yes: bool | None) -> None:
                if yes:
                    self._shared_anyway.update(fresh)
                    self._start_now(spec)

            self.push_screen(ConfirmModal(
                "Share the script's whole folder with the agent (--share-dir)? "
                + "; ".join(fresh) + ". Without --share-dir only the script is shared.",
                yes="Share it all"), answer)
            return
        self.prepared = prepared
        if self.remember:
            from flue_tui.state import remember

            remember(spec)
        number = len(self.runs) + 1
        model = RunModel(number, tuple(spec.argv), self.profile_label())
        model.learn, model.profile_used = spec.learn, profile
        model.changes = [c for c in self.draft.log[self._log_mark:]
                         if not c.startswith("saved to ")]
        if not spec.limits.is_empty():
            model.changes.append(f"quick limits: {spec.limits.describe()}")
        self._log_mark = len(self.draft.log)
        model.profile_ref = spec.profile
        self._configure_ask(spec)
        self.runs.append(model)
        self.run_model = model
        monitor = self.monitor
        if monitor is not None:
            monitor.reset()
        worker = self.run_sandbox(number, self.prepared, profile, spec.workspace,
                                  learn=spec.learn)
        self._worker_runs[worker] = number

    @work(group="engine", exclusive=True, exit_on_error=False)
    async def run_sandbox(self, number: int, prepared: Prepared, profile: Any,
                          workspace: str, learn: bool = False) -> Any:
        return await self.bridge.run(number, prepared, profile, workspace=workspace,
                                     learn=learn)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        from flue_tui.screens.modals import ErrorModal

        worker = event.worker
        if worker.group != "engine" or event.state not in (WorkerState.ERROR,
                                                           WorkerState.SUCCESS,
                                                           WorkerState.CANCELLED):
            return
        number = self._worker_runs.pop(worker, None)
        if event.state != WorkerState.ERROR:
            return
        err = worker.error
        model = self._run(number) if number is not None else self.run_model
        if model is not None and model.state != "exited":
            model.state = "failed"
            model.error = getattr(err, "title", None) or str(err)
        if err is not None:
            modal = ErrorModal.from_exception(err)
            from engine.errors import LimitUnavailable

            if isinstance(err, LimitUnavailable) and not self.allow_unlimited:
                also = ("or start flue-tui with --allow-unlimited to run without these limits "
                        "(the status line then says they are off)")
                modal.fix = f"{modal.fix}; {also}" if modal.fix else also
            self.push_screen(modal)
        if self.monitor is not None:
            self.monitor.update_status()

    def _current(self, run: int) -> RunModel | None:
        model = self.run_model
        return model if model is not None and model.number == run else None

    def _run(self, run: int) -> RunModel | None:
        """Run number ``run`` of this session (current or not)."""
        model = self.runs[run - 1] if 0 < run <= len(self.runs) else None
        return model if model is not None and model.number == run else None

    def _changed(self, changed: set[str], *, now: bool = False) -> None:
        """Panels (and "status") whose data changed: redrawn now if the last redraw was
        ``PANEL_INTERVAL`` ago (or ``now``), else once when that time has passed."""
        self._unpainted |= changed
        wait = self._painted_at + PANEL_INTERVAL - time.monotonic()
        if now or wait <= 0:
            self._paint()
        elif self._paint_timer is None:
            self._paint_timer = self.set_timer(wait, self._paint, name="paint panels")

    def _paint(self) -> None:
        if self._paint_timer is not None:
            self._paint_timer.stop()
            self._paint_timer = None
        changed, self._unpainted = self._unpainted, set()
        self._painted_at = time.monotonic()
        monitor = self.monitor
        if monitor is None or not changed:
            return
        from textual.css.query import NoMatches

        try:
            if self._monitor_visible():
                monitor.update_panels(changed)
            else:  # hidden: remember, catch up when shown again
                for key in changed & PANEL_KEYS:
                    monitor.panel(key).stale = True
        except NoMatches:  # the app is quitting: the screen's widgets are gone already
            pass

    def _monitor_visible(self) -> bool:
        """The monitor is the screen, or right behind the ask question (which must not stop
        it from updating)."""
        from flue_tui.screens.ask import AskModal

        monitor = self.monitor
        if monitor is None:
            return False
        if self.screen is monitor:
            return True
        stack = self.screen_stack
        return isinstance(self.screen, AskModal) and len(stack) > 1 and stack[-2] is monitor

    @on(EventBatch)
    def _batch(self, message: EventBatch) -> None:
        try:
            if self.asks:
                self._asks_answered(message.run, message.events)
            model = self._run(message.run)
            if model is not None:
                changed = model.apply(message.events)
                if model is self.run_model:  # an earlier run's last events: folded in only
                    self._changed(changed)
        finally:
            message.ack()  # the bridge may post the next batch

    @on(ProcessSnapshot)
    def _processes(self, message: ProcessSnapshot) -> None:
        model = self._run(message.run)
        if model is not None:
            changed = model.apply((message.table,))
            if model is self.run_model:
                self._changed(changed)

    @on(RunFinished)
    def _finished(self, message: RunFinished) -> None:
        self._asks_ended(message.run)
        model = self._run(message.run)
        if model is None:
            return
        if model.state not in ("exited", "failed"):
            # no exit status: it never got going (killed while starting, or the engine gave
            # up); never left "starting" or "running"
            model.state = "exited" if model.exited is not None else "stopped"
        if self._queued is not None and not self.bridge.running:
            self._start_queued()  # the replaced run is over: the next one starts now
            return
        if model is not self.run_model:
            return
        if model.learn:  # its end is the Learn screen
            self._learned(model)
            self._changed({"status"}, now=True)
            return
        self._explain_hint(model)
        before = next((r for r in reversed(self.runs[:model.number - 1])
                       if r.state == "exited" and not r.replaced), None)
        if before is not None and model.state == "exited" and not model.replaced:
            d = diff_runs(before, model)
            parts = []
            if d.gone:  # seccomp stopped refusing them; whether the call now works is the
                # kernel's and the program's business (a mount still needs capabilities)
                parts.append("no longer denied by seccomp: " + ", ".join(d.gone))
            if d.new:
                parts.append("newly denied: " + ", ".join(d.new))
            if d.net_gone:
                parts.append("network refusals gone: " + ", ".join(d.net_gone))
            if d.net_new:
                parts.append("new network refusals: " + ", ".join(d.net_new))
            self.notify(("; ".join(parts) or "same denials as before") + " · h: history",
                        title=f"run #{model.number} vs #{before.number}", timeout=6)
        self._changed({"status"}, now=True)  # the run's end shows at once

    def _tick(self) -> None:
        model = self.run_model
        if model is not None and model.state in ("starting", "running") and \
                self.monitor is not None and self._monitor_visible():
            self.monitor.update_status()

    # --- ask mode ----------------------------------------------------------------------------

    def _configure_ask(self, spec: RunSpec) -> None:
        """Ask mode for the run about to start: the bridge hands each held call to
        ``_held``, which queues it here as an ``AskPrompt``."""
        self.bridge.ask = self._held if spec.ask else None
        self.bridge.ask_timeout = spec.ask_timeout if spec.ask else None

    def _held(self, req: Any) -> None:
        from flue_tui.bridge import ask_prompt

        run = self.run_model.number if self.run_model is not None else 0
        self.post_message(ask_prompt(run, req, self.bridge.ask_timeout or 0.0))

    @on(AskPrompt)
    def _ask(self, message: AskPrompt) -> None:
        from flue_tui.screens.ask import AskModal

        if any(p.run == message.run and p.id == message.id for p in self.asks):
            return
        self.asks.append(message)
        self._ask_deadlines[(message.run, message.id)] = self.clock() + message.timeout
        modal = next((s for s in self.screen_stack if isinstance(s, AskModal)), None)
        if modal is None:
            self.push_screen(AskModal())
        else:
            modal.refresh_prompt()

    def ask_deadline(self, prompt: AskPrompt) -> float | None:
        return self._ask_deadlines.get((prompt.run, prompt.id))

    def answer_ask(self, prompt: AskPrompt, decision: str) -> None:
        """The user's answer: back to the engine; "allow always" also goes into the draft
        (``engine.profile.tune.change_for_key``), so a re-run and a save keep it."""
        from engine.profile.tune import change_for_key

        self._ask_forget(prompt)
        prompt.answer(decision)
        if decision == "allow-always" and self.draft is not None:
            change = change_for_key(prompt.key, why=f"ask: allowed always in run #{prompt.run}")
            self.apply_edit(change.apply)
        else:
            what = {"allow-once": "allowed once", "deny": "denied",
                    "deny-always": "denied, and from now on in this run"}.get(decision, decision)
            self.notify(f"{prompt.key}: {what}", title=f"run #{prompt.run}", timeout=3,
                        markup=False)
        self._asks_changed()

    def _ask_forget(self, prompt: AskPrompt) -> None:
        self.asks = [p for p in self.asks if p is not prompt]
        self._ask_deadlines.pop((prompt.run, prompt.id), None)

    def _asks_changed(self) -> None:
        from flue_tui.screens.ask import AskModal

        modal = next((s for s in self.screen_stack if isinstance(s, AskModal)), None)
        if modal is not None:
            modal.refresh_prompt()

    def _asks_answered(self, run: int, events: tuple[Any, ...]) -> None:
        """The engine answered on its own (no answer in time, or the run ended): the
        question goes, and the user is told."""
        from engine import events as ev

        gone = False
        for e in events:
            if not isinstance(e, ev.AskAnswered) or e.by == "user":
                continue
            for p in [p for p in self.asks if p.run == run and p.id == e.id]:
                self._ask_forget(p)
                gone = True
                why = (f"no answer in {p.timeout:g} s" if e.by == "timeout" else
                       "the run ended" if e.by == "end" else e.by)
                self.notify(f"{p.key}: {why}, so it was denied (the profile's errno)",
                            title=f"run #{run}: not answered", severity="warning",
                            timeout=6, markup=False)
        if gone:
            self._asks_changed()

    def _asks_ended(self, run: int) -> None:
        left = [p for p in self.asks if p.run == run]
        for p in left:
            self._ask_forget(p)
        if left:
            self._asks_changed()

    def action_toggle_ask(self) -> None:
        """Re-run with ask mode switched (the palette's command)."""
        from dataclasses import replace

        if self.spec is None:
            self.action_launch()
            return
        self.spec = replace(self.spec, ask=not self.spec.ask)
        self.action_rerun()

    # --- relax and tighten ---------------------------------------------------------------------

    def action_relax(self) -> None:
        """The smallest changes that fix what the last run met (``tune.relax``), as hunks to
        accept or reject."""
        from engine.profile import tune

        model = next((r for r in reversed(self.runs) if r.state in ("exited", "failed")
                      and r.record_events), None)
        if self.draft is None or model is None:
            self.notify("no finished run to relax from yet: run the command first",
                        severity="warning")
            return
        try:
            rec = model.record()
            failed = rec.failed
            prop = tune.relax(self.draft, [rec], min_likelihood=0.4 if failed else 0.1)
        except EngineError as err:
            self.notify(err.render(), title="cannot relax", severity="error", markup=False)
            return
        how = model.status_word()
        note = (f"from run #{model.number} ({how}): the smallest change for each cause" if failed
                else f"run #{model.number} succeeded ({how}): these only stop refusals it met "
                "on the way; it may need none of them")
        self._propose("relax", prop, note)

    def action_tighten(self) -> None:
        """Remove what the runs of this session with this profile never used
        (``tune.tighten``), as hunks to accept or reject."""
        from engine.profile import tune

        if self.draft is None:
            self.notify("no profile is open", severity="error")
            return
        mine = [r for r in self.runs if r.profile_ref == self.profile_ref
                and r.state == "exited" and r.record_events]
        records = []
        for r in mine:
            try:
                rec = r.record()
            except EngineError:
                continue
            if rec.observed:
                records.append((r, rec))
        if not records:
            self._no_tighten_runs(len(mine))
            return
        try:
            prop = tune.tighten(self.draft, [rec for _, rec in records])
        except EngineError as err:
            self.notify(err.render(), title="cannot tighten", severity="error", markup=False)
            return
        nums = ", ".join(f"#{r.number}" for r, _ in records)
        self._propose("tighten", prop, f"what run{'s' if len(records) > 1 else ''} {nums} "
                      f"of {self.draft.name} never used")

    def _no_tighten_runs(self, unobserved: int) -> None:
        name = self.draft.name if self.draft is not None else self.profile_ref
        self.notify((f"{unobserved} run(s) with {name} in this session, but none recorded "
                     "what it used (a learn-mode run does)" if unobserved else
                     f"no run with {name} in this session yet") +
                    ": tighten removes only what a recorded run shows unused",
                    title="nothing to tighten from", severity="warning", timeout=8,
                    markup=False)

    def _propose(self, kind: str, prop: Any, note: str) -> None:
        from flue_tui.screens.proposal import ProposalScreen

        if not prop.hunks:
            extra = ("; " + "; ".join(prop.notes)) if prop.notes else ""
            self.notify(f"nothing to change: {note}{extra}", title=kind, timeout=8,
                        markup=False)
            return

        def chosen(ids: list[int] | None) -> None:
            if not ids:
                return
            hunks = [h for h in prop.hunks if h.id in ids]
            self.apply_edit(lambda d: "; ".join(h.change.apply(d) for h in hunks))

        self.push_screen(ProposalScreen(kind, prop, note), chosen)

    # --- actions -----------------------------------------------------------------------------

    def action_rerun(self) -> None:
        if self.spec is None:
            self.action_launch()
            return
        if self.screen is not self.monitor and self.monitor is not None:
            self._to_monitor()
        self.start(self.spec)

    def _to_monitor(self) -> None:
        """Back to the monitor, for a run to start there; a question of ask mode still
        waiting comes back on top (so a re-run the user then cancels leaves it answerable)."""
        from flue_tui.screens.ask import AskModal

        while self.screen is not self.monitor and len(self.screen_stack) > 1:
            self.pop_screen()
        if self.asks and not isinstance(self.screen, AskModal):
            self.push_screen(AskModal())

    def action_launch(self) -> None:
        from flue_tui.screens.launch import LaunchScreen

        def launched(spec: RunSpec | None) -> None:
            if spec is not None:
                self.start(spec)  # the form's learn box is spec.learn

        self.push_screen(LaunchScreen(self.spec), launched)

    def action_tune(self) -> None:
        from flue_tui.screens.tune import TuneScreen

        if self.draft is None:
            self.notify("no profile is open", severity="error")
            return
        self.push_screen(TuneScreen())

    def action_history(self) -> None:
        from flue_tui.screens.history import HistoryScreen

        self.push_screen(HistoryScreen())

    def action_stop(self) -> None:
        from flue_tui.screens.modals import ConfirmModal

        if not self.bridge.running:
            self.notify("nothing is running")
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.bridge.kill()

        self.push_screen(ConfirmModal("Kill the running sandbox and everything in it?",
                                      yes="Kill"), answer)

    def action_save(self) -> None:
        from flue_tui.screens.learn import LearnScreen
        from flue_tui.screens.save import SaveModal

        if isinstance(self.screen, LearnScreen) and not self.accept_learned(quiet=True):
            return
        if self.draft is None:
            self.notify("no profile is open", severity="error")
            return
        if any(isinstance(s, SaveModal) for s in self.screen_stack):
            return

        def saved(result: Any) -> None:
            if result is None:
                return
            self.profile_ref = str(result.path)
            if self.spec is not None:
                from dataclasses import replace

                self.spec = replace(self.spec, profile=self.profile_ref)
            backup = f" (previous version: {result.backup.name})" if result.backup else ""
            session = self.learn_session
            if session is not None and session.doc is self.draft:
                try:  # the observations beside it, as flue learn -o keeps them
                    side = session.write_sidecar(result.path)
                    backup += f"; its observations in {side.name}" if side else ""
                except OSError as err:
                    backup += f"; its observations were not written ({err.strerror})"
            self.notify(f"saved {result.path}{backup}", title="profile saved", timeout=6)
            self.post_message(ProfileChanged("saved"))

        self.push_screen(SaveModal(), saved)

    def action_help(self) -> None:
        from flue_tui.screens.modals import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.help_sections()))

    def help_sections(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        from flue_tui.screens.ask import AskModal
        from flue_tui.screens.explain import ExplainScreen
        from flue_tui.screens.history import HistoryScreen
        from flue_tui.screens.launch import LaunchScreen
        from flue_tui.screens.learn import LearnScreen
        from flue_tui.screens.proposal import ProposalScreen
        from flue_tui.screens.tune import TuneScreen
        from flue_tui.widgets.stream import StreamView

        keymap = dict(getattr(self, "_keymap", {}) or {})

        def rows(bindings: list[Any]) -> list[tuple[str, str, str]]:
            out = []
            for b in bindings:
                if not isinstance(b, Binding):
                    continue
                key = keymap.get(b.id or "", b.key) if b.id else b.key
                shown = ", ".join(self.get_key_display(Binding(k.strip(), ""))
                                  for k in key.split(","))
                what = b.tooltip or b.description
                if not b.tooltip and b.action.startswith("toggle_panel"):
                    what = f"show or hide the {b.description} panel"
                out.append((shown, what, b.id or ""))
            return out

        return [
            ("Everywhere", rows(self.BINDINGS) + [("ctrl+p", "command palette", "")]),
            ("Monitor", rows(MonitorScreen.BINDINGS)),
            ("Streams (denials, files, output)", rows(StreamView.BINDINGS)),
            ("Tune", rows(TuneScreen.BINDINGS)),
            ("Launch", rows(LaunchScreen.BINDINGS)),
            ("Learn", rows(LearnScreen.BINDINGS)),
            ("Explain", rows(ExplainScreen.BINDINGS)),
            ("History", rows(HistoryScreen.BINDINGS)),
            ("Relax / Tighten (the hunks)", rows(ProposalScreen.BINDINGS)),
            ("Ask mode (a held call)", rows(AskModal.BINDINGS)),
        ]

    async def action_quit(self) -> None:
        """Textual's own quit (ctrl+q, the palette's "Quit") asks the same question as q."""
        self.action_quit_app()

    def action_quit_app(self) -> None:
        from flue_tui.screens.modals import ConfirmModal

        if getattr(self.screen, "quit_question", False):
            return  # asked already
        reasons = []
        if self.bridge.running:
            reasons.append("a sandbox is still running (it will be killed)")
        if self.draft is not None and self.draft.dirty:
            reasons.append("the draft profile has unsaved edits")
        learned = self.learn_session
        if learned is not None and learned.text and (
                learned.doc is None or learned.doc is not self.draft and learned.doc.dirty):
            reasons.append("the learned profile is not saved (ctrl+p, Run: Show the learned "
                           "profile, then ctrl+s)")
        if not reasons:
            self.exit(0)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.bridge.kill()
                self.exit(0)

        modal = ConfirmModal("Quit? " + "; ".join(reasons) + ".", yes="Quit")
        modal.quit_question = True
        self.push_screen(modal, answer)

    # --- learn and explain ----------------------------------------------------------------------

    def action_learn(self) -> None:
        """Run the command again in learn mode (``L``; the Learn screen's ``l``): observed,
        and merged into the session's learned profile when it ends."""

        if self.spec is None:
            self.notify("no command yet: n opens the launch form (its learn box learns)",
                        severity="warning")
            return
        s = self.learn_session
        if s is not None and s.doc is self.draft and s.edited():
            from flue_tui.screens.modals import ConfirmModal

            def answer(yes: bool | None) -> None:
                if yes:
                    self._learn_now()

            self.push_screen(ConfirmModal(
                f"Learning again writes {s.doc.name} anew from its learn runs: the edits made "
                "to it since it was accepted (Tune, allow, relax) are lost. Save them first "
                "(ctrl+s) to keep a copy. Learn again?", yes="Learn again"), answer)
            return
        self._learn_now()

    def _learn_now(self) -> None:
        from dataclasses import replace

        if self.spec is None:
            return
        self._to_monitor()
        self.start(replace(self.spec, learn=True))

    def _learn_profile(self, spec: RunSpec) -> Any:
        """The profile a learn run of ``spec`` uses, from the session's base (a new session
        when the base is another one); None, with the error shown, when it cannot be had."""
        from engine.learn import learn_profile
        from engine.profile import load_profile
        from flue_tui.screens.learn import LearnSession
        from flue_tui.screens.modals import ErrorModal

        s = self.learn_session
        ref = spec.profile
        if ("/" in ref or ref.endswith(".toml")) and not os.path.isabs(ref):
            ref = os.path.abspath(os.path.join(spec.cwd, ref))
        if s is None or not (self.draft is s.doc or s.base_ref == ref):
            try:
                base = load_profile(ref)
            except EngineError as err:
                self.push_screen(ErrorModal.from_exception(err))
                return None
            if self.draft is not None and self.draft.dirty:
                self.notify(f"learning on {self.draft.name} as saved: the draft's unsaved "
                            "edits are not part of the base", severity="warning", timeout=6)
            s = self.learn_session = LearnSession(ref, base)
        try:
            return learn_profile(spec.limits.apply(s.base))
        except ValueError as err:
            self.push_screen(ErrorModal("bad quick limit", str(err)))
            return None

    def _learned(self, model: RunModel) -> None:
        """A learn run ended: merge it into the session and show the proposed profile."""
        from flue_tui.screens.learn import LearnScreen

        s = self.learn_session
        if s is None or model.replaced:
            return
        if model.learn_summary is None:
            self.notify("the learn run ended without its observations"
                        + (f": {model.exited.reason}" if model.exited and model.exited.reason
                           else ""), title="learn", severity="error", timeout=8, markup=False)
            return
        try:
            s.add(model.learn_summary, model.number,
                  model.exited.exit_code if model.exited else None)
        except EngineError as err:
            self.notify(err.render(), title="the learned profile is not valid",
                        severity="error", timeout=8, markup=False)
            return
        if s.doc is not None and s.doc is self.draft:
            self.post_message(ProfileChanged("learned again"))
        if isinstance(self.screen, LearnScreen):
            self.screen.refresh_session()
        else:
            self.push_screen(LearnScreen(s))

    def action_learned(self) -> None:
        from flue_tui.screens.learn import LearnScreen

        s = self.learn_session
        if s is None or not s.text:
            self.notify("nothing learned yet: L learns the command", severity="warning")
            return
        if not isinstance(self.screen, LearnScreen):
            self.push_screen(LearnScreen(s))

    def accept_learned(self, quiet: bool = False) -> bool:
        """Make the learned profile the draft (Tune, Save and Re-run then work on it), and
        the command's next run an enforced one. True when there is one."""
        from dataclasses import replace

        s = self.learn_session
        if s is None or not s.text:
            self.notify("nothing learned yet", severity="warning")
            return False
        if s.doc is None and self.draft is not None and self.draft.dirty:
            self.notify(f"the edits to {self.draft.name} were left unsaved: the learned "
                        "profile is the draft now", severity="warning", timeout=6)
        doc = s.accept()
        if self.draft is not doc:
            self.draft = doc
            self._log_mark = 0
        self.profile_ref = str(doc.path)
        if self.spec is not None:
            self.spec = replace(self.spec, profile=self.profile_ref, learn=False)
        self.post_message(ProfileChanged("learned profile accepted"))
        if not quiet:
            self.notify(f"{doc.name} is the draft: r runs the command under it, enforced; "
                        "ctrl+s saves it", title="learned profile", timeout=5)
        return True

    def action_explain(self) -> None:
        from flue_tui.screens.explain import ExplainScreen

        if isinstance(self.screen, ExplainScreen):
            return
        self.push_screen(ExplainScreen())

    def _explain_hint(self, model: RunModel) -> None:
        """A run that failed says so, and that x explains why."""
        x = model.exited
        if model.replaced or x is None or not (
                x.exit_code or x.signal or x.timed_out or x.oom_killed):
            return
        self.notify(f"{model.status_word()}: x explains why, with the fixes", timeout=6,
                    title=f"run #{model.number}")

    # --- the command palette -------------------------------------------------------------------

    def palette_commands(self) -> Iterator[tuple[str, str, Callable[[], Any]]]:
        monitor = self.monitor
        yield ("Run: New command…", "open the launch form", self.action_launch)
        if self.spec is not None:
            yield ("Run: Re-run with the edited profile", "r", self.action_rerun)
        if self.bridge.running:
            yield ("Run: Stop the sandbox", "k (asks first)", self.action_stop)
        if self.runs:
            yield ("Run: History", "what changed between runs (h)", self.action_history)
        if self.spec is not None:
            yield ("Run: Copy the flue run command",
                   "the same run from a shell, with the saved profile", self.action_copy_cli)
            yield ("Run: Learn", "L: run it observed, propose a least-privilege profile",
                   self.action_learn)
        if self.learn_session is not None and self.learn_session.text:
            yield ("Run: Show the learned profile", "what the learn runs propose",
                   self.action_learned)
        if self.run_model is not None:
            yield ("Run: Explain", "x: why the run failed, and the fixes",
                   self.action_explain)
        req = monitor.selected_request() if monitor is not None and self.run_model else None
        if req is not None and self.draft is not None:
            from engine.network.policy import is_ip_literal

            if not is_ip_literal(req.host):
                yield (f"Profile: Allow domain {req.host}", "a (Network panel)",
                       partial(self.edit_network, "allow", req))
                if req.host.count(".") >= 2:
                    yield (f"Profile: Allow *.{req.host.split('.', 1)[1]}", "w",
                           partial(self.edit_network, "allow_wildcard", req))
                yield (f"Profile: Deny domain {req.host}", "d: out of the allowlist",
                       partial(self.edit_network, "deny", req))
        row = monitor.selected_denial() if monitor is not None and self.run_model else None
        if row is not None:
            advice = self.advice(row)
            if advice is not None and advice.kind in ("capability", "expected"):
                yield (f"Profile: Allow {row.family or row.name} anyway",
                       f"{advice.tag}: {advice.text}",
                       partial(self.edit_profile, "allow", row, force=True))
            else:
                yield (f"Profile: Allow {row.family or row.name}", "a",
                       partial(self.edit_profile, "allow", row))
            if row.group and not row.family:
                yield (f"Profile: Allow group {row.group}", "g",
                       partial(self.edit_profile, "allow_group", row))
                yield (f"Profile: Keep {row.name} denied with an errno…", "e",
                       partial(self.edit_profile, "errno", row))
        if self.spec is not None:
            if self.spec.ask:
                yield ("Run: Re-run without asking", "refused calls are denied at once",
                       self.action_toggle_ask)
            else:
                yield ("Run: Re-run asking before denying",
                       "ask mode: each refused call waits for allow or deny",
                       self.action_toggle_ask)
        if self.draft is not None:
            yield ("Profile: Tune (diff, network, limits, mounts, env)", "t", self.action_tune)
            if any(r.state in ("exited", "failed") for r in self.runs):
                yield ("Profile: Relax from last run",
                       "the smallest changes that fix what it met, hunk by hunk",
                       self.action_relax)
                yield ("Profile: Tighten from recorded runs",
                       "remove what this profile's runs never used, hunk by hunk",
                       self.action_tighten)
            yield ("Profile: Save…", "ctrl+s", self.action_save)
            if self.draft.dirty:
                yield ("Profile: Revert every edit", "back to the saved file",
                       lambda: self.apply_edit(lambda d: (d.revert(), "reverted")[1]))
        if monitor is not None:
            for i, key in enumerate(("denials", "resources", "files", "processes", "output",
                                     "network"), 1):
                yield (f"Panel: Toggle {key.capitalize()}", str(i),
                       partial(monitor.action_toggle_panel, key))
            yield ("Panel: Pause or resume the streams", "space", monitor.action_pause)
        yield ("Help: Keys", "? or f1", self.action_help)


def make_app(argv: list[str] | tuple[str, ...] | None = None, *, profile: str = "default",
             cwd: str | None = None, workspace: str = "", limits: Any = None,
             replay: Any = None, replay_speed: float = 0.0,
             replay_upto: int | None = None, clock: Callable[[], float] | None = None,
             remember: bool = True, record_to: str | None = None,
             keymap: dict[str, str] | None = None, blink: bool = True,
             allow_unlimited: bool = False, share_dirs: bool = False,
             ask: bool = False, ask_timeout: float | None = None) -> FlueApp:
    """The app, configured. With ``argv`` it launches at once; with ``replay`` it plays a
    recorded event stream instead of running anything (tests, snapshots)."""
    from flue_tui.runspec import ASK_TIMEOUT, QuickLimits

    spec = None
    if argv:
        spec = RunSpec(argv=tuple(argv), profile=profile, cwd=cwd or os.getcwd(),
                       workspace=workspace, limits=limits or QuickLimits(),
                       share_dirs=share_dirs, ask=ask, ask_timeout=ask_timeout or ASK_TIMEOUT)
    app = FlueApp(spec=spec, profile=profile, clock=clock, remember=remember,
                  record_to=record_to, keymap=keymap, cwd=cwd, blink=blink,
                  allow_unlimited=allow_unlimited)
    if replay is not None:
        app.bridge = ReplayBridge(app.post_message, replay, speed=replay_speed,
                                  upto=replay_upto)
    return app
