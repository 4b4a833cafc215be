"""flue_tui._lighter: Textual's Strip makes its caches on first use, and computes the same."""

from __future__ import annotations

import pytest
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip

import flue_tui.app  # noqa: F401 - applies it
from flue_tui import _lighter


def test_it_is_applied_and_a_new_strip_has_no_cache_until_one_is_used() -> None:
    assert _lighter.apply() and Strip.__init__ is _lighter._init
    s = Strip([Segment("hello "), Segment("world", Style(bold=True))])
    for name in _lighter._CACHES:
        assert not _set(s, name)
    assert s.crop(0, 5).text == "hello" and _set(s, "_crop_cache")
    assert s.crop(0, 5) is s.crop(0, 5)  # the cache serves the second
    assert not _set(s, "_style_cache")
    assert [p.text for p in s.divide([3, 8, 11])] == ["hel", "lo wo", "rld"]
    assert s.cell_length == 11 and s.text == "hello world"
    with pytest.raises(AttributeError):
        s._no_such_slot  # noqa: B018 - other names still fail


def _set(s: Strip, name: str) -> bool:
    try:
        object.__getattribute__(s, name)
    except AttributeError:
        return False
    return True


def test_a_strip_never_caches_itself() -> None:
    # Textual's own caches stored the strip itself when an operation was the identity: a
    # reference cycle per line drawn, freed only by a full garbage collection
    import sys

    s = Strip([Segment("x" * 20)], 20)
    refs = sys.getrefcount(s)
    assert s.crop_extend(0, 20, Style()) is s and s.crop(0, 20) is s
    assert [p.text for p in s.divide([20])] == ["x" * 20]
    assert sys.getrefcount(s) == refs  # nothing of its own holds it
    wider = s.crop_extend(0, 30, Style())
    assert wider is not s and wider.cell_length == 30
    assert s.crop_extend(0, 30, Style()) is wider  # other results are still cached
