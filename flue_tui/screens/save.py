"""The save dialog: where the draft goes, its diff, and validation errors inline."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from flue_tui.sanitize import plain
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
            yield Static(id="save-error")
            with VerticalScroll(id="save-diff"):
                yield Static(diff_text(doc.diff()))
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
        self.query_one("#save-target", Input).focus()
        no_blink(self)

    def _show_error(self, message: str) -> None:
        box = self.query_one("#save-error", Static)
        box.update(Text("✗ not saved: " + plain(message, 800), "bold red"))
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

    def action_save(self) -> None:
        from engine.errors import EngineError

        target = self.query_one("#save-target", Input).value.strip()
        if not target:
            self._show_error("give a profile name or a path")
            return
        doc = self.app.draft
        dest: str | Path = target
        try:
            result = doc.save(dest)
        except EngineError as err:
            self._show_error(err.render())
            return
        self.dismiss(result)
