"""Ask mode's question: a refused syscall is held, the program waits inside it, the user
decides (allow once, allow always, deny, deny always).

The app keeps the queue (``FlueApp.asks``: ``AskPrompt`` messages not answered yet, in
arrival order); this modal shows its head, how many wait behind it, and a countdown to the
engine's own fallback (deny). An answer goes back through ``AskPrompt.answer``; the next
question (if any) takes its place. When the engine answers first (the timeout, or the run
ended) the app takes the prompt out of the queue and says so. The monitor keeps updating
behind the modal.
"""

from __future__ import annotations

import errno as _errno
import math
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static

from flue_tui.sanitize import plain

if TYPE_CHECKING:
    from flue_tui.messages import AskPrompt

# (decision, button label, its key, button variant)
CHOICES = (("allow-once", "Allow once", "o", "success"),
           ("allow-always", "Always", "a", "primary"),
           ("deny", "Deny", "d", "error"),
           ("deny-always", "Never", "n", "warning"))


def errno_label(eno: int) -> str:
    return _errno.errorcode.get(eno, str(eno))


def prompt_text(p: AskPrompt, remaining: float | None) -> Text:
    """The question: the key, the call's decoded arguments (the sandbox's text: escaped and
    cut), who made it, and how long until it is denied."""
    t = Text()
    t.append(plain(p.comm or "a process", 40), "bold")
    t.append(f" (pid {p.pid}) " if p.pid else " ", "dim")
    t.append("called ")
    t.append(plain(p.key, 80), "bold yellow")
    t.append(", which the profile refuses. It waits inside the call until you answer.\n",
             "")
    if p.decoded:
        args = ", ".join(f"{plain(k, 30)}={plain(v, 120)}" for k, v in p.decoded.items())
        t.append("  arguments: ", "dim")
        t.append(plain(args, 400) + "\n")
    if p.exe:
        t.append("  program:   ", "dim")
        t.append(plain(p.exe, 200) + "\n")
    t.append("  a denial answers ", "dim")
    t.append(errno_label(p.errno), "bold")
    t.append("; allowing lets the kernel run it as called (pointer arguments play no part "
             "in the decision)\n", "dim")
    if remaining is not None and not math.isfinite(remaining):
        t.append("no timeout: it waits for your answer", "yellow")
    elif remaining is not None:
        secs = max(0, int(remaining + 0.999))
        t.append(f"denied in {secs} s without an answer" if secs else
                 "no answer: being denied…", "bold red" if secs <= 5 else "yellow")
    return t


class AskModal(ModalScreen[None]):
    """One held request at a time, the head of the app's queue."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "decide('allow-once')", "Allow once", id="ask.allow_once",
                tooltip="let this call (and the ones held with it) run"),
        Binding("a", "decide('allow-always')", "Always", id="ask.allow_always",
                tooltip="allow this key for the rest of the run, and in the draft profile"),
        Binding("d,escape", "decide('deny')", "Deny", id="ask.deny",
                tooltip="answer the profile's errno"),
        Binding("n", "decide('deny-always')", "Never", id="ask.deny_always",
                tooltip="deny this key for the rest of the run without asking again"),
    ]

    def __init__(self) -> None:
        super().__init__(classes="modal")
        self._shown: Any = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog--wide", id="ask-dialog"):
            yield Label(id="ask-title", classes="dialog-title")
            yield Static(id="ask-body", classes="dialog-body")
            yield Static("always: for the rest of the run, and into the draft profile "
                         "(r re-runs with it, ctrl+s saves it) · never: denied for the rest "
                         "of the run without asking · esc denies", id="ask-hint")
            with Horizontal(classes="dialog-buttons", id="ask-buttons"):
                for decision, label, key, variant in CHOICES:
                    yield Button(f"{label} ({key})", id=f"ask-{decision}",
                                 variant=variant)  # type: ignore[arg-type]
        yield Footer()  # its own keys, not the monitor's (whose a/r mean something else)

    def on_mount(self) -> None:
        self.refresh_prompt()
        self.set_interval(0.5, self._countdown, name="ask countdown")
        self.query_one("#ask-allow-once", Button).focus()

    @property
    def current(self) -> AskPrompt | None:
        asks = getattr(self.app, "asks", [])
        return asks[0] if asks else None

    def refresh_prompt(self) -> None:
        """Show the queue's head (the app calls this when the queue changes); close when it
        is empty. Under another screen (a save or quit dialog opened over the question) it
        closes when it is on top again: dismissing pops whatever screen is on top."""
        if not self._composed():
            return  # pushed, not composed yet (a second question came at once): on_mount shows it
        p = self.current
        if p is None:
            self._shown = None
            if self.app.screen is self:
                self.dismiss(None)
            else:
                self.query_one("#ask-body", Static).update(
                    Text("answered: nothing is waiting", "dim"))
            return
        self._shown = p
        waiting = len(self.app.asks) - 1  # type: ignore[attr-defined]
        title = Text(f" Run #{p.run} asks: {plain(p.key, 60)} ", "reverse bold")
        if waiting:
            title.append(f"  {waiting} more waiting", "bold yellow")
        self.query_one("#ask-title", Label).update(title)
        self._countdown()

    def _composed(self) -> bool:
        try:
            self.query_one("#ask-title", Label)
            self.query_one("#ask-body", Static)
        except NoMatches:
            return False
        return True

    def on_screen_resume(self) -> None:
        if self.current is None:  # answered (or ended) while a dialog covered it
            self.dismiss(None)

    def _countdown(self) -> None:
        p = self._shown
        if p is None or not self._composed():
            return
        deadline = self.app.ask_deadline(p)  # type: ignore[attr-defined]
        remaining = deadline - self.app.clock() if deadline is not None else None  # type: ignore[attr-defined]
        self.query_one("#ask-body", Static).update(prompt_text(p, remaining))

    def action_decide(self, decision: str) -> None:
        p = self.current
        if p is not None:
            self.app.answer_ask(p, decision)  # type: ignore[attr-defined]
        elif self.app.screen is self:  # nothing left to answer: never a modal stuck open
            self.dismiss(None)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        decision = (event.button.id or "").removeprefix("ask-")
        if decision:
            self.action_decide(decision)
