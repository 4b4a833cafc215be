"""The save dialog: where the draft goes, its diff, and validation errors inline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from flue_tui.sanitize import paragraph, plain
from flue_tui.screens.tune import diff_text
from flue_tui.widgets import no_blink


class SaveModal(ModalScreen[object]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="save.cancel"),
        Binding("ctrl+s", "save", "Save", id="save.confirm", priority=True),
    ]

    def compose(self) -> ComposeResult:
        doc = self.app.draft
        with Vertical(classes="dialog dialog--wide", id="save-dialog"):
            yield Label(Text(f"Save profile {plain(doc.name)}", "bold"), classes="dialog-title")
            note = Text(style="dim")
            if doc.builtin:
                note.append("A built-in profile is never changed: this writes a user profile, "
                            "a full copy with your edits and its comments. Under the same "
                            "name it takes the built-in's place for every run that names it; "
                            "type another name to keep both.")
            else:
                note.append(f"Writes {plain(str(doc.path))} atomically; the previous version "
                            "is kept as .bak. A bare name saves a new user profile.")
            yield Static(note, classes="dialog-body")
            yield Label("Save as (profile name or path)", classes="form-label")
            yield Input(value=self._default_target(), id="save-target")
            yield Static(id="save-warning")
            yield Static(id="save-error")
            with VerticalScroll(id="save-diff"):
                yield Static(diff_text(doc.diff()))
            yield Static(id="save-cli")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (enter)", id="save-ok", variant="success")
                yield Button("Cancel (esc)", id="save-cancel")

    def _default_target(self) -> str:
        doc = self.app.draft
        return str(doc.default_save_path())

    def on_mount(self) -> None:
        err = self.app.draft.validate()
        if err is not None:
            self._show_error(err.render())
        target = self.query_one("#save-target", Input)
        self._target_changed(Input.Changed(target, target.value))
        target.focus()
        no_blink(self)

    def _show_error(self, message: str) -> None:
        box = self.query_one("#save-error", Static)
        box.update(Text("✗ not saved: " + paragraph(message, 800), "bold red"))
        box.add_class("invalid")

    @on(Input.Submitted, "#save-target")
    def _submitted(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#save-ok")
    def _ok(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#save-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Changed, "#save-target")
    def _target_changed(self, event: Input.Changed) -> None:
        warning = self.query_one("#save-warning", Static)
        risk = self._risks(event.value.strip())
        warning.update(Text("⚠ " + " ".join(risk), "bold yellow") if risk else Text(""))
        warning.set_class(bool(risk), "warn")
        target = event.value.strip()
        named = target and "/" not in target and not target.endswith(".toml")
        prof = target if named else str(save_destination(target))  # -p NAME finds it
        line, _ = self.app.cli_equivalent(prof) if target else ("", "")
        self.query_one("#save-cli", Static).update(
            Text("then, from a shell: " + plain(line, 2000)) if line else Text(""))

    def _risks(self, target: str) -> list[str]:
        """What saving to ``target`` does beyond writing this profile: a built-in of another
        name shadowed for every run that names it, another profile's file replaced."""
        if not target:
            return []
        doc = self.app.draft
        dest = save_destination(target)
        out = []
        builtin = shadowed_builtin(dest)
        same_file = _same(dest, doc.path)
        if builtin and not same_file and not (doc.builtin and doc.name == builtin):
            out.append(f"A user profile named {builtin} takes the place of the built-in "
                       f"{builtin} for every later run that names it (flue run -p {builtin}, "
                       f"flue-tui -p {builtin}): they would run with this draft of "
                       f"{doc.name} instead. Type another name to keep both.")
        if dest.exists() and not same_file:
            out.append(f"{dest} exists and is replaced (its previous version is kept as "
                       f"{dest.name}.bak).")
        return out

    def action_save(self) -> None:
        from flue_tui.screens.modals import ConfirmModal

        target = self.query_one("#save-target", Input).value.strip()
        if not target:
            self._show_error("give a profile name or a path")
            return
        risk = self._risks(target)
        if not risk:
            self._save(target)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._save(target)

        self.app.push_screen(ConfirmModal(f"Save as {target}? " + " ".join(risk),
                                          yes="Save anyway"), answer)

    def _save(self, target: str) -> None:
        from engine.errors import EngineError

        doc = self.app.draft
        session = getattr(self.app, "learn_session", None)
        if session is not None and session.doc is doc:  # its header names its sidecar
            session.retarget(save_destination(target))
        try:
            result = doc.save(target)
        except EngineError as err:
            self._show_error(err.render())
            return
        self.dismiss(result)


def save_destination(target: str) -> Path:
    """The file ``ProfileDocument.save(target)`` writes: a bare name is a user profile."""
    from engine.profile.paths import user_profile_dir

    if "/" in target or target.endswith(".toml"):
        return Path(os.path.expanduser(target))
    return user_profile_dir() / f"{target}.toml"


def shadowed_builtin(dest: Path) -> str:
    """The built-in profile a file at ``dest`` would take the place of ("" for none): one of
    the same name, in a directory profile names are looked up in before the built-ins."""
    from engine.profile.paths import builtin_profile_dir, search_dirs

    if dest.suffix != ".toml" or not (builtin_profile_dir() / dest.name).is_file():
        return ""
    dirs = [_real(d) for d in search_dirs()[:-1]]
    return dest.stem if _real(dest.parent) in dirs else ""


def _real(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:
        return p


def _same(a: Path, b: Path) -> bool:
    return _real(a) == _real(b)
