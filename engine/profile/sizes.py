"""Sizes ("64M") and durations ("10m") as profiles and the command line write them."""

from __future__ import annotations

import math
import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]?)\s*")
SIZE_HINT = "sizes are a number with an optional k, M, G or T suffix, like 64M"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_DURATION_PART = re.compile(rf"({_NUMBER.pattern})(ms|s|m|h|d)")
DURATION_HINT = "durations are seconds, or a number with s, m, h or d, like 30s, 10m or 1h30m"


def parse_size(value: str | float) -> int:
    """Bytes from ``"64M"``, ``"1.5G"``, ``"512k"`` or a plain number of bytes.

    Suffixes are powers of 1024 and case-insensitive. Raises ``ValueError`` with a message
    that says what a size looks like.
    """
    # ValueError for every bad input, wrong types included: callers report one kind of error
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; {SIZE_HINT}")  # noqa: TRY004
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative ({value}); {SIZE_HINT}")
        return value
    if isinstance(value, float):
        if value < 0 or not math.isfinite(value) or value != int(value):
            raise ValueError(f"{value!r} is not a whole number of bytes; {SIZE_HINT}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size; {SIZE_HINT}")  # noqa: TRY004
    m = _SIZE_RE.fullmatch(value)
    if not m:
        raise ValueError(f"{value!r} is not a size; {SIZE_HINT}")
    number, unit = m.group(1), m.group(2).upper()
    if not unit and "." in number:
        raise ValueError(f"{value!r} is not a whole number of bytes; {SIZE_HINT}")
    return int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]


def format_size(n: int) -> str:
    """The shortest exact spelling of ``n`` bytes: 67108864 -> "64M", 1610612736 -> "1.5G"."""
    if n < 0:
        raise ValueError(f"a size cannot be negative ({n})")
    for unit in ("T", "G", "M", "K"):
        scale = _UNITS[unit]
        if n < scale:
            continue
        for digits in (0, 1, 2):
            text = f"{n / scale:.{digits}f}"
            if parse_size(text + unit) == n:
                return text + unit
    return str(n)


def parse_duration(value: str | float) -> float:
    """Seconds from ``600``, ``"30s"``, ``"10m"``, ``"1h30m"``, ``"500ms"`` or ``"1.5h"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")  # noqa: TRY004
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")  # noqa: TRY004
    text = value.strip().replace(" ", "")
    if _NUMBER.fullmatch(text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    return total


def format_duration(seconds: float) -> str:
    """A short spelling of a duration: 600 -> "10m", 90 -> "1m30s", 0.5 -> "500ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    out = ""
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= scale:
            out += f"{rest // scale}{unit}"
            rest %= scale
    return out
