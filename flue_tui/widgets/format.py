"""Small formatting helpers shared by the panels."""

from __future__ import annotations


def size(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            v = n / scale
            return f"{v:.1f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return f"{int(n)}B"


def seconds(t: float | None) -> str:
    if t is None:
        return "–"
    if t < 60:
        return f"{t:4.1f}s"
    m, s = divmod(int(t), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def percent(p: float | None) -> str:
    return "–" if p is None else f"{p:.0f}%"


def cpus(c: float | None) -> str:
    if c is None:
        return "none"
    return f"{c:g} CPU" + ("s" if c != 1 else "")


def count(n: int) -> str:
    """A count in at most five characters (the denial table's column): exact below 100 000,
    then 360k, 3.6M, 360M, 3.6G -- a flood's total must not lose its last digits."""
    if n < 100_000:
        return str(n)
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        v = n / scale
        if unit != "k" and round(v, 1) < 10:
            return f"{v:.1f}{unit}"
        if round(v) < 1000:
            return f"{round(v)}{unit}"
    return f"{round(n / 1e12)}T"
