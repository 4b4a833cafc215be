"""Line numbers of keys and array items in TOML text.

tomllib gives values without positions; errors must name a line. This scanner runs only on
text tomllib has already accepted, so it can be forgiving: it tokenises strings, comments and
brackets, follows ``[table]`` / ``[[array]]`` headers, dotted keys and inline tables, and
records the first line of every key path and array item, e.g.
``("limits", "memory") -> 7`` and ``("seccomp", "allow", 2) -> 12``.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache

Path_ = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_\-+:.]+")
_PUNCT = "[]{}=,."


def _string_value(raw: str) -> str:
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    return value if isinstance(value, str) else raw


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, value, line) with kind in: "str", "bare", "nl" or the punctuation itself."""
    toks: list[tuple[str, str, int]] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r":
            i += 1
        elif c == "\n":
            toks.append(("nl", "", line))
            line += 1
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith('"""', i) or text.startswith("'''", i):
            quote = text[i : i + 3]
            j = i + 3
            while True:
                j = text.find(quote, j)
                if j < 0:
                    j = n
                    break
                if quote == '"""' and _escaped(text, j):
                    j += 1
                    continue
                while text.startswith(quote[0], j + 3):  # up to two quotes may end the body
                    j += 1
                j += 3
                break
            raw = text[i:j]
            toks.append(("str", _string_value(raw), line))
            line += raw.count("\n")
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != "\n":
                if c == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text[j] == c:
                    break
                j += 1
            j = min(j + 1, n)
            toks.append(("str", _string_value(text[i:j]), line))
            i = j
        elif c in _PUNCT and not (c == "." and toks and toks[-1][0] == "bare"):
            toks.append((c, c, line))
            i += 1
        else:
            m = _BARE.match(text, i)
            if not m:  # not TOML we understand: skip the character
                i += 1
                continue
            toks.append(("bare", m.group(0), line))
            i = m.end()
    return toks


def _escaped(text: str, j: int) -> bool:
    k, slashes = j - 1, 0
    while k >= 0 and text[k] == "\\":
        slashes += 1
        k -= 1
    return slashes % 2 == 1


@lru_cache(maxsize=16)
def locate_keys(text: str) -> dict[Path_, int]:
    """Map every key path and array item path in ``text`` to the line it starts on.

    The result is cached by text and shared: do not modify it.
    """
    toks = _tokenize(text)
    out: dict[Path_, int] = {}
    aot: dict[Path_, int] = {}
    pos = 0

    def peek() -> tuple[str, str, int]:
        return toks[pos] if pos < len(toks) else ("eof", "", toks[-1][2] if toks else 1)

    def take() -> tuple[str, str, int]:
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def skip_newlines() -> None:
        while peek()[0] == "nl":
            take()

    def read_key(stop: str) -> tuple[str, ...]:
        parts: list[str] = []
        while peek()[0] not in (stop, "eof", "nl"):
            kind, value, _ = take()
            if kind == "str":
                parts.append(value)
            elif kind == "bare":
                parts.extend(p for p in value.split(".") if p)
        return tuple(parts)

    def record(path: Path_, line: int) -> None:
        for k in range(1, len(path) + 1):
            out.setdefault(path[:k], line)

    def read_value(path: Path_) -> None:
        kind, _, _ = take()
        if kind == "[":
            index = 0
            while True:
                skip_newlines()
                if peek()[0] in ("]", "eof"):
                    take()
                    return
                record(path + (index,), peek()[2])
                read_value(path + (index,))
                skip_newlines()
                if peek()[0] == ",":
                    take()
                index += 1
        elif kind == "{":
            while True:
                skip_newlines()
                if peek()[0] in ("}", "eof"):
                    take()
                    return
                line = peek()[2]
                key = read_key("=")
                take()  # "="
                record(path + key, line)
                read_value(path + key)
                skip_newlines()
                if peek()[0] == ",":
                    take()
        else:  # a scalar: one token (dates with a space make two; the second is skipped)
            while peek()[0] == "bare":
                take()

    table: Path_ = ()
    while pos < len(toks):
        kind, _, line = peek()
        if kind == "nl":
            take()
        elif kind == "[":
            take()
            array = peek()[0] == "["
            if array:
                take()
            header = read_key("]")
            while peek()[0] == "]":
                take()
            if array:
                aot[header] = aot.get(header, -1) + 1
                table = header + (aot[header],)
            else:
                table = header
            record(table, line)
        else:
            key = read_key("=")
            if peek()[0] != "=":  # not a key/value line: skip it
                take()
                continue
            take()
            record(table + key, line)
            read_value(table + key)
    return out


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    for k in range(len(path), 0, -1):
        if path[:k] in lines:
            return lines[path[:k]]
    return None
