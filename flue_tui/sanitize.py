"""Neutralising what a sandboxed program prints before any of it reaches the screen.

A program in the sandbox must not be able to drive or spoof the user's terminal: move the
cursor, clear the screen, set the window title (OSC 0), write the clipboard (OSC 52), print
a fake prompt over the workbench, or reorder text with bidi controls. Everything it emits is
turned into plain, visible characters here and rendered as ``rich.text.Text`` (never markup):

- SGR colour sequences (``ESC [ ... m``) are dropped: harmless, and noise if shown;
- every other escape sequence (CSI, OSC, DCS, SOS/PM/APC, two-byte ESC x) and every 8-bit
  C1 control is shown escaped, dimmed: ``␛[2J``, ``␛]52;c;…␇``, ``<U+009B>``;
- C0 controls except newline and tab are shown in caret notation (``^G``), DEL as ``^?``;
- bidi overrides and isolates (U+202A-202E, U+2066-2069) and U+200E/F are shown as ``<U+202E>``;
- a carriage return overwrites the line, as a terminal would show a progress bar, but inside
  the widget: only the text after the last CR is kept.
"""

from __future__ import annotations

import re

from rich.text import Text

ESCAPED_STYLE = "dim reverse"
MAX_SEQ = 48  # an escape sequence longer than this is shown truncated

# one token: an escape sequence (7- or 8-bit), or one control character
_TOKEN = re.compile(
    r"""
    (?P<csi>(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?)          # CSI ... final (final may be missing)
  | (?P<osc>(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?)   # OSC ... BEL or ST
  | (?P<str>(?:\x1b[PX^_]|[\x90\x98\x9e\x9f])[^\x1b\x9c]*(?:\x1b\\|\x9c)?)  # DCS SOS PM APC
  | (?P<esc>\x1b[\x20-\x7e]?)                           # ESC x (or a lone ESC)
  | (?P<c1>[\x80-\x9f])
  | (?P<c0>[\x00-\x08\x0b-\x1f\x7f])
  | (?P<bidi>[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c])
    """,
    re.VERBOSE,
)
_SGR = re.compile(r"(?:\x1b\[|\x9b)[0-9;:]*m\Z")


def _visible(seq: str) -> str:
    out = []
    for ch in seq:
        o = ord(ch)
        if ch == "\x1b":
            out.append("␛")
        elif ch == "\x07":
            out.append("␇")
        elif o < 0x20:
            out.append("^" + chr(o + 64))
        elif o == 0x7F:
            out.append("^?")
        elif 0x80 <= o <= 0x9F or 0x2000 <= o <= 0x206F or o == 0x061C:
            out.append(f"<U+{o:04X}>")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= MAX_SEQ else text[: MAX_SEQ - 1] + "…"


def _overwrite(line: str) -> str:
    """A line with carriage returns, as the terminal would leave it: the last segment."""
    if "\r" not in line:
        return line
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""


def neutralise_line(line: str, *, style: str = "") -> Text:
    """One line (no newline) of untrusted text as a safe ``Text``."""
    line = _overwrite(line).expandtabs(8)
    text = Text(style=style, no_wrap=True, end="")
    pos = 0
    for m in _TOKEN.finditer(line):
        if m.start() > pos:
            text.append(line[pos:m.start()])
        seq = m.group(0)
        if not (m.lastgroup == "csi" and _SGR.match(seq)):
            text.append(_visible(seq), ESCAPED_STYLE)
        pos = m.end()
    if pos < len(line):
        text.append(line[pos:])
    return text


def neutralise(data: str, *, style: str = "") -> list[Text]:
    """Untrusted text, possibly many lines, as safe one-line ``Text`` objects."""
    return [neutralise_line(line, style=style) for line in data.replace("\r\n", "\n").split("\n")]


def plain(value: object, limit: int = 200) -> str:
    """A one-line plain string for a table cell or a title: newlines shown as ⏎, controls
    escaped, truncated to ``limit`` characters."""
    s = str(value).replace("\r\n", "\n").replace("\n", "⏎")
    s = neutralise_line(s).plain
    return s if len(s) <= limit else s[: limit - 1] + "…"


def paragraph(value: object, limit: int = 2000) -> str:
    """Like ``plain`` but keeping line breaks, for a widget that shows several lines (an
    error with its "fix:" line): each line neutralised, the whole truncated."""
    lines = str(value).replace("\r\n", "\n").split("\n")
    s = "\n".join(plain(line, limit) for line in lines)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def cell(value: object, style: str = "", limit: int = 200) -> Text:
    """A safe ``Text`` for a DataTable cell (a ``str`` cell would be parsed as markup)."""
    return Text(plain(value, limit), style=style, no_wrap=True, end="")
