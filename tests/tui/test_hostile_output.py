"""Hostile output: a sandboxed program cannot drive or spoof the user's terminal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import HERE, ROOT
from rich.text import Text
from waits import settle, wait_until

from engine import events as ev
from flue_tui.app import make_app
from flue_tui.sanitize import neutralise, neutralise_line, plain

PROGRAM = HERE / "programs" / "hostile.py"


def test_neutralise_escapes_every_control() -> None:
    data = PROGRAM.read_text()
    # run the program's writes through the sanitizer directly (without a sandbox)
    ns: dict[str, Any] = {}
    import io
    import sys

    buf = io.StringIO()
    real = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = buf
    try:
        exec(compile(data, str(PROGRAM), "exec"), ns)  # noqa: S102 - our own test program
    finally:
        sys.stdout, sys.stderr = real
    lines = neutralise(buf.getvalue())
    joined = "\n".join(t.plain for t in lines)
    for bad in ("\x1b", "\x07", "\x08", "\x9b", "\u202e", "\r"):
        assert bad not in joined, repr(bad)
    assert "␛[2J" in joined and "␛]0;PWNED TITLE␇" in joined and "␛]52;c;" in joined
    assert "<U+009B>" not in joined or "8-bit CSI" in joined
    assert "<U+202E>txt.exe" in joined and "^H^H" in joined
    assert "[red]not markup[/red]" in joined  # markup stays literal text
    assert "downloading 100%" in joined and "downloading 10%" not in joined
    assert "user@host:~$ sudo rm -rf /" in joined  # colour dropped, text kept, contained


def test_plain_cells_are_one_line() -> None:
    assert plain("a\nb\x1b]0;x\x07") == "a⏎b␛]0;x␇"
    t = neutralise_line("\x1b[1;31mred\x1b[0m")
    assert isinstance(t, Text) and t.plain == "red"


def _hostile_events() -> list[ev.Event]:
    out = [
        "normal line before\n\x1b[2J\x1b[H\x1b[10;5Hcursor moved here\n",
        "\x1b]0;PWNED TITLE\x07\x1b]52;c;ZWNobyBwd25lZA==\x07\n",
        "\x1b[?1049l\x1b[?25h\n[red]not markup[/red]\n",
        "\x1b[32muser@host\x1b[0m:~$ sudo rm -rf /",
    ]
    evs: list[ev.Event] = [ev.Started("sb", 1.0, argv=("python3", "hostile.py"),
                                      profile="default")]
    evs += [ev.Output("sb", 1.1 + i / 10, stream="stdout", data=d) for i, d in enumerate(out)]
    evs.append(ev.Exited("sb", 2.0, exit_code=0, wall_seconds=1.0))
    return evs


async def test_hostile_output_replayed_leaves_app_intact() -> None:
    app = make_app(["python3", "hostile.py"], replay=[_hostile_events()], remember=False,
                   blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.run_model is not None
                         and app.run_model.state == "exited" and not app.bridge.running,
                         "the replayed run's end")
        stack_before = list(app.screen_stack)
        title = app.title
        stream = app.screen.query_one("#output-stream")
        shown = "\n".join(stream.visible_plain())
        assert "␛[2J" in shown and "␛]52;c;" in shown and "\x1b" not in shown
        svg = app.export_screenshot()
        assert "PWNED" not in title and app.title == title == "flue-tui"
        assert "\x1b" not in svg and "\x07" not in svg
        assert list(app.screen_stack) == stack_before
        assert "user@host:~$ sudo rm -rf /" in shown  # shown inside the panel, as text


@pytest.mark.sandbox
async def test_hostile_program_in_real_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    app = make_app(["python3", str(PROGRAM.relative_to(ROOT))], remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline and (app.run_model is None
                                          or app.run_model.state != "exited"
                                          or app.bridge.running):
            await pilot.pause(0.1)
        await settle(pilot)
        model = app.run_model
        assert model is not None and model.exited is not None and model.exited.exit_code == 0
        raw = "".join(line.text for line in model.output.lines)
        assert "\x1b]52;" in raw  # the program really did emit it...
        stream = app.screen.query_one("#output-stream")
        shown = "\n".join(stream.visible_plain())
        for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert bad not in shown  # ...and none of it reached the widget raw
        assert "␛]52;c;ZWNobyBwd25lZA==␇" in shown
        assert "␛]0;PWNED TITLE␇" in shown
        assert "[red]not markup[/red]" in shown
        assert "error in red" in shown
        assert app.title == "flue-tui" and len(app.screen_stack) == 1
        for y in range(stream.size.height):  # what is painted holds no control either
            for seg in stream.render_line(y):
                assert "\x1b" not in seg.text and "\x07" not in seg.text
