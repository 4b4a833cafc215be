"""Small modal screens: error, confirm, errno picker, record details, help."""

from __future__ import annotations

import errno as _errno
import json
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Static
from textual.widgets.option_list import Option

from flue_tui.sanitize import neutralise, plain


class ErrorModal(ModalScreen[None]):
    """A failure of the engine (or of a save), with its detail and suggested fix."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter", "dismiss", "Close", id="error.close")]

    def __init__(self, title: str, detail: str = "", fix: str = "") -> None:
        super().__init__(classes="modal")
        self.title_text, self.detail, self.fix = title, detail, fix

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog--error"):
            yield Label(Text(plain(self.title_text, 300), "bold"), classes="dialog-title")
            if self.detail:
                yield Static(Text(self.detail), classes="dialog-body")
            if self.fix:
                yield Static(Text("fix: " + self.fix, "italic"), classes="dialog-fix")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    @classmethod
    def from_exception(cls, err: BaseException) -> ErrorModal:
        title = getattr(err, "title", None) or f"{type(err).__name__}: {err}"
        return cls(str(title), getattr(err, "detail", ""), getattr(err, "fix", ""))


class ConfirmModal(ModalScreen[bool]):
    quit_question = False  # the app's "Quit?": a second ctrl+q does not stack another
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,n", "answer(False)", "No", id="confirm.no"),
                Binding("y", "answer(True)", "Yes", id="confirm.yes")]

    def __init__(self, question: str, yes: str = "Yes", no: str = "Cancel") -> None:
        super().__init__(classes="modal")
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.question), classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button(f"{self.no} (n)", id="no")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


COMMON_ERRNOS = [
    ("EPERM", "Operation not permitted: the usual refusal"),
    ("EACCES", "Permission denied: as if a file permission said no"),
    ("ENOSYS", "Function not implemented: libc falls back to an older call"),
    ("EOPNOTSUPP", "Operation not supported"),
    ("EINVAL", "Invalid argument"),
    ("ENOENT", "No such file or directory"),
    ("EROFS", "Read-only file system"),
    ("EAFNOSUPPORT", "Address family not supported (socket)"),
    ("ENETUNREACH", "Network is unreachable"),
    ("EAGAIN", "Try again later"),
]


class ErrnoPicker(ModalScreen[str | None]):
    """Choose the errno a refused syscall answers."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Cancel", id="errno.cancel")]

    def __init__(self, syscall: str, current: str = "") -> None:
        super().__init__(classes="modal")
        self.syscall, self.current = syscall, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(f"Keep {plain(self.syscall)} denied, answering:", "bold"),
                        classes="dialog-title")
            options = []
            for name, what in COMMON_ERRNOS:
                num = getattr(_errno, name, 0)
                t = Text(f"{name:<13}", "bold")
                t.append(f"{num:>3}  {what}", "dim")
                if name == self.current:
                    t.append("  (now)", "green")
                options.append(Option(t, id=name))
            yield OptionList(*options, id="errno-list")

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        names = [n for n, _ in COMMON_ERRNOS]
        ol.highlighted = names.index(self.current) if self.current in names else 0
        ol.focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


class RecordModal(ModalScreen[None]):
    """The full record of a denial (or any event), as neutralised JSON."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,enter,q", "dismiss", "Close", id="record.close")]

    def __init__(self, title: str, record: Any) -> None:
        super().__init__(classes="modal")
        self.title_text = title
        self.record = record

    def compose(self) -> ComposeResult:
        import dataclasses

        data = self.record
        if hasattr(data, "to_dict"):
            data = data.to_dict()
        elif dataclasses.is_dataclass(data) and not isinstance(data, type):
            data = dataclasses.asdict(data)
        body = json.dumps(data, indent=2, default=str)
        text = Text()
        for line in neutralise(body):
            text.append_text(line)
            text.append("\n")
        with Vertical(classes="dialog dialog--wide"):
            yield Label(Text(plain(self.title_text), "bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(text)
            yield Static(Text("esc closes", "dim"))


class HelpScreen(ModalScreen[None]):
    """Every key of the app and of the screen it was opened from, with its binding id."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help.close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str, str]]]]) -> None:
        super().__init__(classes="modal")
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog--wide", id="help-dialog"):
            yield Label(Text("flue-tui keys", "bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(help_table(self.sections))
            yield Static(Text("esc closes · ctrl+p: every command by name", "dim"))


def help_table(sections: list[tuple[str, list[tuple[str, str, str]]]]) -> Any:
    """Three columns (key, what it does, binding id): a long description wraps inside its
    column and never runs into the id, at any width."""
    from rich.console import Group
    from rich.table import Table

    parts: list[Any] = []
    for title, rows in sections:
        table = Table.grid(padding=(0, 2), expand=True)
        table.add_column(no_wrap=True, style="bold", width=12)  # "question_mark, f1" → "?, f1"
        table.add_column(ratio=1)
        table.add_column(no_wrap=True, style="dim")
        for key, what, bid in rows:
            table.add_row(Text(plain(key, 30)), Text(plain(what[:1].upper() + what[1:], 200)),
                          Text(bid))
        parts += [Text(title, "bold underline"), table, Text("")]
    parts.append(Text("Remap any key by its id in $XDG_CONFIG_HOME/flue/tui.toml, e.g.\n"
                      '  [keymap]\n  "monitor.allow" = "A"', "dim"))
    return Group(*parts)
