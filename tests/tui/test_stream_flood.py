"""The output stream under a flood: lines are neutralised only when drawn, a full stream
keeps its size (no layout pass of the screen per batch), filters still see every line."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult

from flue_tui.model import OutputLine
from flue_tui.widgets.stream import StreamView


class StreamApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[str] = []

    def compose(self) -> ComposeResult:
        yield StreamView(id="s", maxlen=1000, render=self._render,
                         width_of=lambda line: len(line.text))

    def _render(self, line: Any) -> Text:
        self.rendered.append(line.text)
        return Text(line.text)


async def test_lazy_lines_cost_what_is_shown() -> None:
    app = StreamApp()
    async with app.run_test(size=(60, 12)) as pilot:
        view = app.query_one(StreamView)
        for batch in range(5):
            view.extend((None, OutputLine("stdout", f"line {batch}-{i}", 0.0))
                        for i in range(700))
            await pilot.pause()
        assert view.total == 3500 and view.line_count == 1000  # bounded at maxlen
        assert view.virtual_size.height == 1000
        # only what was on screen (a few screens' worth at most) was ever built
        assert 0 < len(app.rendered) < 100, len(app.rendered)
        assert "line 4-699" in app.rendered  # following: the newest line is shown
        view.set_filter("4-69")  # a filter builds the lines it has to look at
        await pilot.pause()
        assert view.visible_plain() == ["line 4-69"] + [f"line 4-69{i}" for i in range(10)]
        assert view.selected_payload.text == "line 4-699"


async def test_full_stream_keeps_its_virtual_size() -> None:
    app = StreamApp()
    async with app.run_test(size=(60, 12)) as pilot:
        view = app.query_one(StreamView)
        view.extend((None, OutputLine("stdout", f"x{i}", 0.0)) for i in range(1500))
        await pilot.pause()
        sizes = set()
        for n in range(5):
            view.extend((None, OutputLine("stdout", f"y{n}-{i}", 0.0)) for i in range(300))
            sizes.add(view.virtual_size.height)
            await pilot.pause()
        assert sizes == {1000}
        assert view.show_vertical_scrollbar


def drawn(view: StreamView) -> list[str]:
    return [view.render_line(y).text.rstrip() for y in range(view.size.height)]


async def test_a_batch_that_first_overflows_the_view_is_followed_to_its_end() -> None:
    # the batch (or the filter's end) that makes the vertical scrollbar appear: the scroll
    # to the end came before the scrollbar and was refused, and a following stream stayed at
    # its top until another batch came (a program's whole output in one batch: never)
    app = StreamApp()
    async with app.run_test(size=(60, 12)) as pilot:
        view = app.query_one(StreamView)
        await pilot.pause()
        view.extend((None, OutputLine("stdout", f"line {i}", 0.0)) for i in range(100))
        await pilot.pause()
        assert view.follow and view.show_vertical_scrollbar
        assert view.scroll_y == view.max_scroll_y > 0
        assert drawn(view)[-1] == "line 99", drawn(view)
        assert view.vertical_scrollbar.position == view.scroll_y  # its thumb at the end
        view.set_filter("line 9")  # 11 lines: still more than the view
        await pilot.pause()
        view.set_filter("line 99")  # one: no scrollbar
        await pilot.pause()
        assert not view.show_vertical_scrollbar and drawn(view)[0] == "line 99"
        view.set_filter("")  # all of them again: the end is shown, as it is followed
        await pilot.pause()
        assert view.follow and view.scroll_y == view.max_scroll_y > 0
        assert drawn(view)[-1] == "line 99", drawn(view)
