"""A DataTable of rows, as the monitor and History use them; a Tree that keeps its lines
through a change of height."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Tree
from textual.widgets.data_table import CellKey, ColumnKey, RowKey


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
        self._drawn_width: int | None = None  # the width its lines were drawn at

    def update_row(self, row_key: str, cells: Iterable[tuple[str, Any]], *,
                   update_width: bool = False) -> None:
        """``update_cell`` for some cells of one row (``(column key, value)``), repainting
        that row only: DataTable's own repaints the whole table for each cell, which under a
        flood (a count changing 5 times a second) is every row, every time. Column widths
        are kept, as ``update_cell`` keeps them, unless ``update_width`` (as there: a column
        without a fixed width then grows to fit).

        Every entry of DataTable's render caches has the update count in its key, so none is
        of use after it moves on; they are emptied here (DataTable's own leaves them to age
        out of LRU caches of 1 000 lines and 10 000 cells: under a flood the UI's memory
        grew by those, each line a strip with caches of its own, for minutes). ``_data``,
        ``_update_count`` and the caches are DataTable's own, pinned minor."""
        key = RowKey(row_key)
        data = self._data[key]
        for column, value in cells:
            data[ColumnKey(column)] = value
            if update_width:
                self._updated_cells.add(CellKey(key, ColumnKey(column)))
                self._require_update_dimensions = True
        self._update_count += 1
        for cache in (self._row_render_cache, self._cell_render_cache,
                      self._row_renderable_cache, self._line_cache):
            cache.clear()
        self.refresh_row(self.get_row_index(key))

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

    def _on_resize(self, event: events.Resize) -> None:
        # DataTable moves its update count on every resize, which every render cache has in
        # its keys: each line is drawn again. A line depends on the width (the fill after
        # the last column), not on the height: a panel shown or hidden above or below (the
        # other panels grow or shrink in height only) keeps them. (DataTable's is the only
        # resize handler of the MRO, so preventing it stops nothing else.)
        width = event.size.width
        if width == self._drawn_width:
            event.prevent_default()
            return
        self._drawn_width = width


class KeptTree(Tree):  # type: ignore[type-arg]
    """A Tree that, resized in height alone, keeps its lines: Tree's own resize handler
    throws its line cache away, rebuilds every line and asks for another layout of the
    screen, for lines that depend on the width only."""

    def _on_resize(self, event: events.Resize) -> None:
        width = event.size.width
        if width == getattr(self, "_drawn_width", None):
            self._line_cache.grow(event.size.height)  # what Tree's own does besides
            event.prevent_default()
            return
        self._drawn_width = width
