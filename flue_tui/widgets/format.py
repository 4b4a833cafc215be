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
