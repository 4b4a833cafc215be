"""A DataTable of rows, as the monitor and History use them."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import DataTable


class RowTable(DataTable):  # type: ignore[type-arg]
    """Row cursor; ``home``/``end`` go to the first/last row (DataTable's own only scroll
    sideways), and ``moved_by_user`` says whether a person has moved the cursor since it was
    last cleared (a table refilled by a new run keeps its row only until then)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("home", "first_row", "First row", show=False),
        Binding("end", "last_row", "Last row", show=False),
    ]

    def __init__(self, *, id: str | None = None, zebra_stripes: bool = False) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=zebra_stripes)
        self.moved_by_user = False

    def action_first_row(self) -> None:
        self.moved_by_user = True
        self.action_scroll_top()

    def action_last_row(self) -> None:
        self.moved_by_user = True
        self.action_scroll_bottom()

    def action_cursor_up(self) -> None:
        self.moved_by_user = True
        super().action_cursor_up()

    def action_cursor_down(self) -> None:
        self.moved_by_user = True
        super().action_cursor_down()

    def action_page_up(self) -> None:
        self.moved_by_user = True
        super().action_page_up()

    def action_page_down(self) -> None:
        self.moved_by_user = True
        super().action_page_down()

    async def _on_click(self, event: events.Click) -> None:
        self.moved_by_user = True
        await super()._on_click(event)
