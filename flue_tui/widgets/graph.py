"""A small fixed-scale bar graph: one column per sample, the limit drawn as a line.

Unlike Sparkline it does not rescale to its own maximum when a limit is near: the limit sits
at a fixed height, so a value creeping towards it is visible as such. A limit far above the
values (a 2G memory limit for a 30M process) is reported as off scale instead of flattening
the bars into nothing. Event markers (OOM kills, limit hits) are drawn under their column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
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

    def set_data(self, values: Sequence[float | None], *, limit: float | None = None,
                 floor: float = 1.0, markers: dict[int, str] | None = None) -> None:
        self.values = list(values)
        self.limit = limit
        self.floor = floor
        self.markers = dict(markers or {})
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

    def render(self) -> Text:
        width = max(1, self.size.width)
        has_markers = bool(self.markers)
        height = max(1, self.size.height - (1 if has_markers else 0))
        start = max(0, len(self.values) - width)
        shown = self.values[start:]
        top = self._scale(shown)
        bar = self.get_component_rich_style("graph--bar")
        high = self.get_component_rich_style("graph--high")
        lim_style = self.get_component_rich_style("graph--limit")
        limit_row = None
        if self.limit and not self.off_scale:
            limit_row = height - 1 - min(height - 1, int(self.limit / top * height))
        pad = width - len(shown)  # bars are right-aligned: the newest at the right edge
        text = Text(no_wrap=True, end="")
        for row in range(height):
            level_base = (height - 1 - row) * 8
            if pad:
                text.append(("┄" if row == limit_row else " ") * pad,
                            lim_style if row == limit_row else None)
            for v in shown:
                if v is None:
                    text.append("┄" if row == limit_row else " ",
                                lim_style if row == limit_row else None)
                    continue
                eighths = round(v / top * height * 8) if top else 0
                if v > 0 and eighths == 0:
                    eighths = 1
                level = max(0, min(8, eighths - level_base))
                if level == 0 and row == limit_row:
                    text.append("┄", lim_style)
                else:
                    near = self.limit is not None and v >= 0.9 * self.limit
                    text.append(BLOCKS[level], high if near else bar)
            if row < height - 1 or has_markers:
                text.append("\n")
        if has_markers:
            mark = self.get_component_rich_style("graph--marker")
            line = [" "] * width
            for idx, ch in self.markers.items():
                col = pad + idx - start
                if 0 <= col < width:
                    line[col] = ch
            text.append("".join(line), mark)
        return text
