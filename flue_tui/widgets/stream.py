"""A virtualised, bounded stream of one-line entries (denials, output, file changes).

Only the visible lines are rendered (``render_line`` over a list, with a strip cache), so a
flood costs what fits on screen. Scrolling up (or ``space``) stops following; new entries are
then counted in the border ("12 new") instead of moving the view. ``/`` filters. The cursor
row can be selected with enter, which posts ``StreamView.Selected`` with the entry's payload.
Entries are ``rich.text.Text`` built by the caller from neutralised strings: never markup.
A high-rate stream (the program's output) can instead hand over ``(None, payload)`` and a
``render`` function: the Text is then built only when the line is drawn or filtered, so a
flood of thousands of lines a second costs what is shown, not what arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Entry = tuple[Text | None, Any]  # (None, payload): built by ``render`` when needed


class StreamView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    StreamView { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False, id="stream.up"),
        Binding("down", "cursor(1)", "Down", show=False, id="stream.down"),
        Binding("pageup", "cursor_page(-1)", "Page up", show=False, id="stream.pageup"),
        Binding("pagedown", "cursor_page(1)", "Page down", show=False, id="stream.pagedown"),
        Binding("home", "cursor_home", "Top", show=False, id="stream.home"),
        Binding("end", "cursor_end", "Follow", show=False, id="stream.end",
                tooltip="jump to the newest entry and follow"),
        Binding("enter", "select", "Details", show=False, id="stream.select",
                tooltip="show the full record of the entry under the cursor"),
    ]

    class Selected(Message):
        def __init__(self, stream: StreamView, payload: Any) -> None:
            super().__init__()
            self.stream = stream
            self.payload = payload

        @property
        def control(self) -> StreamView:
            return self.stream

    class StatusChanged(Message):
        """The stream's status line (filter count, paused, new entries while not following)
        changed; the panel around it shows it on its bottom border (a StreamView has none)."""

        def __init__(self, stream: StreamView, text: str) -> None:
            super().__init__()
            self.stream = stream
            self.text = text

        @property
        def control(self) -> StreamView:
            return self.stream

    follow: reactive[bool] = reactive(True)
    paused: reactive[bool] = reactive(False)

    def __init__(self, *, maxlen: int = 5000, empty: str = "nothing yet",
                 matcher: Callable[[Entry, str], bool] | None = None,
                 render: Callable[[Any], Text] | None = None,
                 width_of: Callable[[Any], int] | None = None,
                 name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.maxlen = maxlen
        self.empty = empty
        self._items: list[Entry] = []
        self._widths: list[int] = []
        self._view: list[int] = []  # indices into _items that pass the filter
        self._held: list[Entry] = []  # arrived while paused
        self.filter_text = ""
        self.matcher = matcher or (lambda e, f: f in e[0].plain.lower())  # type: ignore[union-attr]
        self.render = render  # payload -> Text, for entries given as (None, payload)
        self.width_of = width_of or (lambda payload: 0)  # a lazy entry's width until drawn
        self.cursor = -1  # index into _view
        self.unseen = 0  # entries that arrived while not following
        self.total = 0
        self._max_width = 0
        self._cache: dict[tuple[int, bool, int], Strip] = {}
        self.status_text = ""  # what _update_subtitle last said (StatusChanged)

    # --- content -------------------------------------------------------------------------

    def extend(self, entries: Iterable[Entry]) -> None:
        entries = list(entries)
        if not entries:
            return
        self.total += len(entries)
        if self.paused:
            self._held.extend(entries)
            del self._held[: max(0, len(self._held) - self.maxlen)]
            self.unseen += len(entries)
            self._update_subtitle()
            return
        self._add(entries)

    def _entry(self, item: int, keep: bool = False) -> Entry:
        """The entry at ``item``, its Text built now if it was handed over lazily. It is kept
        (``keep``) only for a filter, which reads every entry at each change of its text;
        one built to be drawn is not: under a flood the output stream would keep a Text per
        line drawn, up to ``maxlen`` of them, megabytes the payload already holds (drawing
        a line again builds it again; its strip is cached)."""
        entry = self._items[item]
        if entry[0] is None:
            assert self.render is not None, "a lazy entry needs StreamView(render=...)"
            entry = (self.render(entry[1]), entry[1])
            if keep:
                self._items[item] = entry
            w = entry[0].cell_len
            self._widths[item] = w
            if w > self._max_width:
                self._max_width = w
                self._resize()
        return entry

    def _add(self, entries: list[Entry]) -> None:
        start = len(self._items)
        f = self.filter_text
        widths = [e[0].cell_len if e[0] is not None else self.width_of(e[1]) for e in entries]
        self._items.extend(entries)
        self._widths.extend(widths)
        self._max_width = max(self._max_width, *widths)
        if not f:
            self._view.extend(range(start, start + len(entries)))
            if not self.follow:
                self.unseen += len(entries)
        else:
            for i in range(start, start + len(entries)):
                if self.matcher(self._entry(i, keep=True), f):
                    self._view.append(i)
                    if not self.follow:
                        self.unseen += 1
        if len(self._items) > self.maxlen:
            # trimmed back to exactly maxlen every time: a full stream keeps its virtual
            # size, so a flood costs no layout pass of the screen per batch
            self._trim()
        self._resize()
        if self.follow:
            self.cursor = len(self._view) - 1
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()
        self._update_subtitle()

    def _trim(self) -> None:
        drop = len(self._items) - self.maxlen
        cursor_item = self._view[self.cursor] if 0 <= self.cursor < len(self._view) else -1
        self._items = self._items[drop:]
        self._widths = self._widths[drop:]
        self._view = [i - drop for i in self._view if i >= drop]
        self._cache.clear()
        if cursor_item >= 0:
            self.cursor = max(0, min(len(self._view) - 1, self._view_index(cursor_item - drop)))

    def _view_index(self, item: int) -> int:
        import bisect

        return bisect.bisect_left(self._view, item)

    def clear(self) -> None:
        self._items.clear()
        self._widths.clear()
        self._view.clear()
        self._held.clear()
        self._cache.clear()
        self.cursor = -1
        self.unseen = self.total = self._max_width = 0
        self.follow = True
        self._resize()
        self.refresh()
        self._update_subtitle()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.lower().strip()
        f = self.filter_text
        self._view = [i for i in range(len(self._items))
                      if not f or self.matcher(self._entry(i, keep=True), f)]
        self._cache.clear()
        self.cursor = len(self._view) - 1 if self.follow else min(self.cursor,
                                                                  len(self._view) - 1)
        self._resize()
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()
        self._update_subtitle()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused and self._held:
            held, self._held = self._held, []
            self.unseen = 0
            self._add(held)
        self._update_subtitle()

    @property
    def selected_payload(self) -> Any:
        if 0 <= self.cursor < len(self._view):
            return self._items[self._view[self.cursor]][1]  # the payload: no Text needed
        return None

    @property
    def line_count(self) -> int:
        return len(self._view)

    def visible_plain(self) -> list[str]:
        """The text of every entry that passes the filter (for tests)."""
        return [self._entry(i)[0].plain for i in self._view]  # type: ignore[union-attr]

    # --- layout and rendering ------------------------------------------------------------

    def _resize(self) -> None:
        """A new virtual size without a layout pass of the whole screen (the ``virtual_size``
        reactive asks for one on every change, i.e. on every batch of a growing stream):
        only the scrollbars are updated, and they ask for a layout only when one appears or
        goes. ``_scroll_update`` is Textual's own (pinned minor) scrollbar update."""
        size = Size(self._max_width, len(self._view))
        old = self.virtual_size
        if size == old:
            return
        cw, ch = self.container_size
        if not (self.is_mounted and cw and ch):
            # not laid out (a hidden tab or panel): its first layout sizes the scrollbars
            self.set_reactive(StreamView.virtual_size, size)
            return
        if (old.height > ch) != (size.height > ch) or (old.width > cw) != (size.width > cw):
            # a scrollbar comes or goes: a layout pass. The scrollbars are shown now, not at
            # that pass: a widget without a vertical scrollbar refuses to scroll, and the
            # scroll to the end that follows (a batch or a filter that first fills more than
            # the view) would leave a following stream at its top until the next batch
            self.virtual_size = size
            self._scroll_update(size)
            return
        self.set_reactive(StreamView.virtual_size, size)
        self._scroll_update(size)
        self.refresh()

    def _update_subtitle(self) -> None:
        parts = []
        if self.filter_text:
            parts.append(f"filter “{self.filter_text}”: {len(self._view)} of {len(self._items)}")
        if self.paused:
            parts.append(f"⏸ paused · {self.unseen} new" if self.unseen else "⏸ paused")
        elif not self.follow and self.unseen:
            parts.append(f"▼ {self.unseen} new (end: follow)")
        text = " · ".join(parts)
        if text != self.status_text:
            self.status_text = text
            self.post_message(self.StatusChanged(self, text))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if not self._view:
            if y == 0:
                return Strip([Segment(self.empty, Style(dim=True))]).crop_extend(0, width, base)
            return Strip.blank(width, base)
        if index >= len(self._view):
            return Strip.blank(width, base)
        is_cursor = index == self.cursor and self.has_focus
        item = self._view[index]
        key = (item, is_cursor, width)
        strip = self._cache.get(key)
        if strip is None:
            text = self._entry(item)[0].copy()  # type: ignore[union-attr]
            text.no_wrap = True
            text.end = ""
            if is_cursor:
                text.stylize(self.get_component_rich_style("stream--cursor"))
            segments = list(text.render(self.app.console))
            strip = Strip(segments, self._widths[item]).apply_style(base)
            if is_cursor:
                strip = strip.extend_cell_length(max(width + scroll_x, self._widths[item]),
                                                 self.get_component_rich_style("stream--cursor"))
            if len(self._cache) > 2000:
                self._cache.clear()
            self._cache[key] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    COMPONENT_CLASSES: ClassVar[set[str]] = {"stream--cursor"}

    # --- follow / scrolling ------------------------------------------------------------------

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        at_end = new >= self.max_scroll_y
        if at_end and not self.follow and not self.paused:
            self.follow = True
            self.unseen = 0
            self._update_subtitle()
        elif not at_end and self.follow and new < old:
            self.follow = False
            self._update_subtitle()

    def on_resize(self, event: events.Resize) -> None:
        self._cache.clear()
        if self.follow and self._view:
            self.call_after_refresh(self.scroll_end, animate=False, immediate=True,
                                    x_axis=False)

    def on_focus(self, event: events.Focus) -> None:
        self._cache.clear()
        self.refresh()

    def on_blur(self, event: events.Blur) -> None:
        self._cache.clear()
        self.refresh()

    def _move_cursor(self, to: int) -> None:
        if not self._view:
            return
        to = max(0, min(len(self._view) - 1, to))
        self.cursor = to
        self._cache.clear()
        last = len(self._view) - 1
        self.follow = to == last and not self.paused
        if self.follow:
            self.unseen = 0
        self.scroll_to_region_line(to)
        self.refresh()
        self._update_subtitle()

    def scroll_to_region_line(self, line: int) -> None:
        top = self.scroll_offset.y
        height = max(1, self.size.height)
        if line < top:
            self.scroll_to(y=line, animate=False, immediate=True)
        elif line >= top + height:
            self.scroll_to(y=line - height + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        start = self.cursor if self.cursor >= 0 else len(self._view) - 1
        self._move_cursor(start + delta)

    def action_cursor_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 1))

    def action_cursor_home(self) -> None:
        self._move_cursor(0)

    def action_cursor_end(self) -> None:
        self._move_cursor(len(self._view) - 1)
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def action_select(self) -> None:
        payload = self.selected_payload
        if payload is not None:
            self.post_message(self.Selected(self, payload))

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < len(self._view):
            self._move_cursor(index)
            if event.chain >= 2:
                self.action_select()
