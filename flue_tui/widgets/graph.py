"""A small fixed-scale bar graph: one column per sample, the limit drawn as a line.

Unlike Sparkline it does not rescale to its own maximum when a limit is near: the limit sits
at a fixed height, so a value creeping towards it is visible as such. A limit far above the
values (a 2G memory limit for a 30M process) is reported as off scale instead of flattening
the bars into nothing. Event markers (OOM kills, limit hits) are drawn under their column.

Drawn with the line API: the rows are built once per change of data or size (runs of one
style as segments, no ``Text`` to lay out), so a repaint of the screen around it (a panel
shown or hidden, which resizes it) costs a few list lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.strip import Strip
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"


class Graph(Widget):
    DEFAULT_CSS = """
    Graph { height: 4; }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {"graph--bar", "graph--high", "graph--limit", "graph--marker",
                         "graph--empty"}

    def __init__(self, *, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.values: list[float | None] = []
        self.limit: float | None = None
        self.floor = 1.0  # the scale never goes below this (e.g. 100% CPU, 64 MiB)
        self.markers: dict[int, str] = {}  # index into values -> marker character
        self.off_scale = False
        self._strips: list[Strip] | None = None  # the rows as drawn, until data or size change
        self._strips_for: tuple[int, int] = (0, 0)

    def set_data(self, values: Sequence[float | None], *, limit: float | None = None,
                 floor: float = 1.0, markers: dict[int, str] | None = None) -> None:
        values = list(values)
        markers = dict(markers or {})
        if (values, limit, floor, markers) == (self.values, self.limit, self.floor,
                                               self.markers):
            return  # nothing new to draw
        self.values = values
        self.limit = limit
        self.floor = floor
        self.markers = markers
        width = self.size.width
        if width:  # the scale of what will be shown (off_scale is read right after)
            self._scale(self.values[max(0, len(self.values) - width):])
        self._strips = None
        self.refresh()

    def _scale(self, shown: Sequence[float | None]) -> float:
        peak = max((v for v in shown if v is not None), default=0.0)
        top = max(peak * 1.15, self.floor)
        self.off_scale = False
        if self.limit:
            if self.limit <= max(top, peak) * 3:
                top = max(top, self.limit * 1.08)
            else:
                self.off_scale = True
        return top

    def on_resize(self, event: events.Resize) -> None:
        self._strips = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips = None  # the theme or a class changed the colours

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self._strips is None or self._strips_for != (width, height):
            self._strips = self._build(max(1, width), max(1, height))
            self._strips_for = (width, height)
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(width, self.rich_style)

    def _build(self, width: int, full_height: int) -> list[Strip]:
        has_markers = bool(self.markers)
        height = max(1, full_height - (1 if has_markers else 0))
        start = max(0, len(self.values) - width)
        shown = self.values[start:]
        top = self._scale(shown)
        base = self.rich_style
        bar = self.get_component_rich_style("graph--bar")
        high = self.get_component_rich_style("graph--high")
        lim_style = self.get_component_rich_style("graph--limit")
        limit_row = None
        if self.limit and not self.off_scale:
            limit_row = height - 1 - min(height - 1, int(self.limit / top * height))
        pad = width - len(shown)  # bars are right-aligned: the newest at the right edge
        eighths: list[int | None] = []
        near: list[bool] = []
        for v in shown:
            if v is None:
                eighths.append(None)
                near.append(False)
                continue
            n = round(v / top * height * 8) if top else 0
            eighths.append(1 if v > 0 and n == 0 else n)
            near.append(self.limit is not None and v >= 0.9 * self.limit)
        strips = []
        for row in range(height):
            level_base = (height - 1 - row) * 8
            on_limit = row == limit_row
            cells: list[tuple[str, Style | None]] = []
            if pad:
                cells.append(("┄" * pad, lim_style) if on_limit else (" " * pad, None))
            for e8, hot in zip(eighths, near, strict=True):
                if e8 is None:
                    cells.append(("┄", lim_style) if on_limit else (" ", None))
                    continue
                level = max(0, min(8, e8 - level_base))
                if level == 0 and on_limit:
                    cells.append(("┄", lim_style))
                else:
                    cells.append((BLOCKS[level], high if hot else bar))
            strips.append(self._strip(cells, width, base))
        if has_markers:
            line = [" "] * width
            for idx, ch in self.markers.items():
                col = pad + idx - start
                if 0 <= col < width:
                    line[col] = ch
            strips.append(self._strip([("".join(line),
                                        self.get_component_rich_style("graph--marker"))],
                                      width, base))
        return strips

    @staticmethod
    def _strip(cells: list[tuple[str, Style | None]], width: int, base: Style) -> Strip:
        """One row: runs of one style as one segment each, on the widget's own style."""
        segments: list[Segment] = []
        run: list[str] = []
        style: Style | None = None
        for text, st in cells:
            if run and st != style:
                segments.append(Segment("".join(run), style))
                run = []
            style = st
            run.append(text)
        if run:
            segments.append(Segment("".join(run), style))
        return Strip(segments, width).apply_style(base)
