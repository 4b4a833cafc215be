"""Relax and tighten, hunk by hunk: a ``Proposal`` of ``engine.profile.tune`` (each hunk one
change, with its diff against the draft and its reason) that the user accepts or rejects one
at a time; the accepted ones go into the draft profile (then in Tune's diff, saved with
ctrl+s as any edit: comments kept). Nothing is written before that.

The screen returns the ids of the accepted hunks (``None``: back without applying).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, OptionList, Static
from textual.widgets.option_list import Option

from flue_tui.sanitize import paragraph, plain
from flue_tui.screens.tune import diff_text
from flue_tui.widgets import no_blink

MARKS = {True: ("✓", "green"), False: ("✗", "red"), None: ("·", "dim")}


class ProposalScreen(Screen[list[int] | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "decide(True)", "Accept", id="proposal.accept",
                tooltip="accept the selected hunk (and go to the next)"),
        Binding("x", "decide(False)", "Reject", id="proposal.reject",
                tooltip="reject the selected hunk (and go to the next)"),
        Binding("space", "toggle", "Toggle", show=False, id="proposal.toggle",
                tooltip="accept or reject the selected hunk"),
        Binding("A", "accept_all", "Accept all", id="proposal.accept_all", key_display="A",
                tooltip="accept every hunk"),
        Binding("y", "apply", "Apply", id="proposal.apply",
                tooltip="put the accepted hunks into the draft profile (ctrl+s saves it)"),
        Binding("escape", "cancel", "Back", id="proposal.back", show=False,
                tooltip="back to where you were, the draft unchanged"),
    ]

    def __init__(self, kind: str, proposal: Any, note: str = "") -> None:
        super().__init__()
        self.kind = kind  # relax | tighten
        self.proposal = proposal
        self.note = note
        self.accepted: dict[int, bool | None] = {h.id: None for h in proposal.hunks}

    def compose(self) -> ComposeResult:
        yield Static(id="proposal-title")
        yield OptionList(id="proposal-hunks")
        with VerticalScroll(id="proposal-detail"):
            yield Static(id="proposal-why")
            yield Static(id="proposal-diff")
        yield Static(id="proposal-summary")
        with Horizontal(id="proposal-buttons"):
            yield Button("Accept (a)", id="proposal-accept", variant="success")
            yield Button("Reject (x)", id="proposal-reject", variant="error")
            yield Button("Apply (y)", id="proposal-apply", variant="primary")
            yield Button("Back (esc)", id="proposal-back")
        yield Footer()

    def on_mount(self) -> None:
        doc = self.proposal.doc
        title = Text(no_wrap=True, overflow="ellipsis")
        verb = "Relax" if self.kind == "relax" else "Tighten"
        title.append(f" {verb} profile {plain(doc.name)} ", "reverse bold")
        n = len(self.proposal.hunks)
        title.append(f"  {n} hunk{'s' if n != 1 else ''}: {plain(self.note, 200)}", "dim")
        self.query_one("#proposal-title", Static).update(title)
        ol = self.query_one("#proposal-hunks", OptionList)
        ol.add_options([Option(self._label(h), id=str(h.id)) for h in self.proposal.hunks])
        ol.highlighted = 0
        ol.focus()
        self._show(0)
        self._summary()
        no_blink(self)

    # --- drawing -------------------------------------------------------------------------

    def _label(self, hunk: Any) -> Text:
        mark, style = MARKS[self.accepted.get(hunk.id)]
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{mark} ", style + " bold")
        t.append(f"{hunk.id}. {plain(hunk.title, 70)}", "bold" if style != "dim" else "")
        if hunk.why:
            t.append(f"  {plain(hunk.why.removeprefix(self.kind + ': '), 90)}", "dim")
        return t

    def _selected(self) -> Any:
        i = self.query_one("#proposal-hunks", OptionList).highlighted
        hunks = self.proposal.hunks
        return hunks[i] if i is not None and 0 <= i < len(hunks) else None

    def _show(self, index: int) -> None:
        hunks = self.proposal.hunks
        if not 0 <= index < len(hunks):
            return
        h = hunks[index]
        why = Text()
        why.append(f"{h.id}. {plain(h.title, 120)}", "bold")
        if h.kind:
            why.append(f"  [{plain(h.kind, 30)}]", "cyan")
        if h.why:
            why.append(f"\n{paragraph(h.why, 400)}", "italic")
        self.query_one("#proposal-why", Static).update(why)
        self.query_one("#proposal-diff", Static).update(diff_text(h.diff))

    def _summary(self) -> None:
        values = list(self.accepted.values())
        yes, no = values.count(True), values.count(False)
        t = Text()
        t.append(f"{yes} accepted", "green bold" if yes else "dim")
        t.append(", ")
        t.append(f"{no} rejected", "red" if no else "dim")
        t.append(f", {len(values) - yes - no} undecided · ")
        t.append("y puts the accepted into the draft (Tune shows it, ctrl+s saves)"
                 if yes else "a accepts the selected hunk, A every hunk", "dim")
        notes = getattr(self.proposal, "notes", [])
        if notes:
            t.append("\nno profile change for: " + "; ".join(plain(n, 120) for n in notes[:2]),
                     "yellow")
        self.query_one("#proposal-summary", Static).update(t)

    def _relabel(self, index: int) -> None:
        ol = self.query_one("#proposal-hunks", OptionList)
        h = self.proposal.hunks[index]
        ol.replace_option_prompt_at_index(index, self._label(h))
        self._summary()

    # --- actions -------------------------------------------------------------------------

    @on(OptionList.OptionHighlighted, "#proposal-hunks")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show(event.option_index)

    @on(OptionList.OptionSelected, "#proposal-hunks")
    def _selected_option(self, event: OptionList.OptionSelected) -> None:
        self.action_toggle()

    def action_decide(self, accept: bool) -> None:
        ol = self.query_one("#proposal-hunks", OptionList)
        i = ol.highlighted
        if i is None:
            return
        self.accepted[self.proposal.hunks[i].id] = accept
        self._relabel(i)
        if i + 1 < len(self.proposal.hunks):
            ol.highlighted = i + 1

    def action_toggle(self) -> None:
        ol = self.query_one("#proposal-hunks", OptionList)
        i = ol.highlighted
        if i is None:
            return
        hid = self.proposal.hunks[i].id
        self.accepted[hid] = not self.accepted[hid]
        self._relabel(i)

    def action_accept_all(self) -> None:
        for i, h in enumerate(self.proposal.hunks):
            self.accepted[h.id] = True
            self._relabel(i)

    def accepted_ids(self) -> list[int]:
        return [hid for hid, yes in self.accepted.items() if yes]

    def action_apply(self) -> None:
        ids = self.accepted_ids()
        if not ids:
            self.notify("no hunk accepted yet: a accepts the selected one, A every one",
                        severity="warning")
            return
        self.dismiss(ids)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#proposal-accept")
    def _accept(self) -> None:
        self.action_decide(True)

    @on(Button.Pressed, "#proposal-reject")
    def _reject(self) -> None:
        self.action_decide(False)

    @on(Button.Pressed, "#proposal-apply")
    def _apply(self) -> None:
        self.action_apply()

    @on(Button.Pressed, "#proposal-back")
    def _back(self) -> None:
        self.action_cancel()
