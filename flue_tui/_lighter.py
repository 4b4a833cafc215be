"""Textual's ``Strip`` with its caches made when first used, and never holding the strip
itself.

A ``Strip`` (one rendered line) makes seven small caches when it is created (crop, style,
divide, filter, ...), most of which a strip never uses: under a flood the UI makes thousands
of strips a second, and its profile had their creation at a sixth of every repaint, their
caches at two thirds of the objects the garbage collector scans (each older-generation
collection a pause a keypress waits behind). Textual's own ``Content`` already makes its
cache on first use; ``apply()`` does the same for ``Strip``: ``__init__`` sets the other
slots, and reading an unset cache slot (``__getattr__``, asked only when the slot is empty)
makes that cache, of the size Textual gives it. What a strip computes and returns is
unchanged.

A strip also cached *itself* whenever an operation was the identity (``crop_extend`` of a
line already as wide as the view returns the strip): a reference cycle, which only the cyclic
garbage collector frees. Under a flood every line drawn became one, and the UI's memory rose
in a sawtooth of several megabytes between full collections. The lazy caches are
``_OwnCache``: they keep the owner's ``id`` (a number, no reference) and do not store the
owner (alone or in a list, as ``divide`` returns); the answer is the same, recomputed at the
cost of the identity check that returns it.

Textual is pinned to a minor version (pyproject); ``apply()`` checks that ``Strip`` still
has the slots and the constructor it replaces, and leaves Textual as it is otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.segment import Segment
from textual.cache import FIFOCache
from textual.strip import Strip

# the caches Strip.__init__ makes, with the sizes it gives them (Textual 8.2)
_CACHES = {"_divide_cache": 4, "_crop_cache": 16, "_style_cache": 16, "_filter_cache": 4,
           "_line_length_cache": 4, "_crop_extend_cache": 4, "_offsets_cache": 4}
_OTHER_SLOTS = ("_segments", "_cell_length", "_render_cache", "_link_ids", "_cell_count")


def _init(self: Any, segments: Iterable[Segment], cell_length: int | None = None) -> None:
    self._segments = list(segments)
    self._cell_length = cell_length
    self._render_cache = None
    self._link_ids = None
    self._cell_count = None


class _OwnCache(FIFOCache[Any, Any]):
    """A strip's cache that never stores the strip it belongs to (see the module)."""

    __slots__ = ("_owner",)

    def set(self, key: Any, value: Any) -> None:
        owner = self._owner
        if id(value) == owner or (type(value) is list
                                  and any(id(v) == owner for v in value)):
            return
        FIFOCache.set(self, key, value)

    __setitem__ = set


def _getattr(self: Any, name: str) -> Any:
    size = _CACHES.get(name)
    if size is None:
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
    cache = _OwnCache(size)
    cache._owner = id(self)
    object.__setattr__(self, name, cache)
    return cache


def _matches() -> bool:
    """Whether Strip is the one this replaces: the same slots, and an __init__ that makes
    FIFOCaches for exactly these slots, of these sizes (read off its code object, not its
    source: no file read at every start)."""
    slots = set(getattr(Strip, "__slots__", ()))
    if slots != set(_CACHES) | set(_OTHER_SLOTS) or "__getattr__" in Strip.__dict__:
        return False
    code = getattr(Strip.__init__, "__code__", None)
    if code is None:
        return False
    names = set(code.co_names)
    return ("FIFOCache" in names and set(_CACHES) <= names
            and set(_CACHES.values()) <= set(code.co_consts))


def apply() -> bool:
    """Make Strip's caches lazy (once); False if this Textual's Strip is not the one
    expected (then nothing is changed)."""
    if Strip.__init__ is _init:
        return True
    if not _matches():
        return False
    Strip.__init__ = _init  # type: ignore[method-assign]
    Strip.__getattr__ = _getattr  # type: ignore[attr-defined]
    return True
