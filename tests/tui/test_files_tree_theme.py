"""The files tree's labels follow the theme and the tree's own background: a label built with
the colours of the theme at the time kept them (a dark patch behind each name on a light
theme, and under the cursor line)."""

from __future__ import annotations

from itertools import pairwise

from conftest import DEMO, ROOT
from textual.widgets import Tree
from waits import settle

from flue_tui.app import make_app


def label_styles(tree: Tree) -> list[tuple[str, str | None, str | None]]:  # type: ignore[type-arg]
    """(name, colour, background) of each file's name as the tree draws it."""
    out = []
    for y in range(tree.last_line + 1 - tree.scroll_offset.y):
        segs = [seg for seg in tree.render_line(y) if seg.style is not None]
        for mark, name in pairwise(segs):
            if mark.text in ("+ ", "− ", "~ "):
                for seg in (mark, name):
                    out.append((mark.text + name.text, str(seg.style.color),
                                str(seg.style.bgcolor)))
    return out


async def test_file_labels_take_the_new_themes_colours() -> None:
    app = make_app(["python3", "examples/demo_agent.py"], cwd=str(ROOT), replay=[DEMO],
                   remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        tree = app.screen.query_one("#files-tree", Tree)
        before = label_styles(tree)
        assert before
        tree_bg = str(tree.rich_style.bgcolor)
        # no background of its own: the tree's (and the cursor line's) shows through
        assert {bg for _, _, bg in before} == {tree_bg}, (before, tree_bg)
        app.theme = "solarized-light"
        await settle(pilot)
        after = label_styles(tree)
        new_bg = str(tree.rich_style.bgcolor)
        assert new_bg != tree_bg
        assert {bg for _, _, bg in after} == {new_bg}, (after, new_bg)
        added = app.get_css_variables()["success"]
        assert any(word.startswith("+ ") and added.lower() in colour.lower()
                   for word, colour, _ in after), (after, added)
