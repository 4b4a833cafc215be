"""flue-tui's side of the engine host: what the host trims of a flood's output is still
counted, and the lines the Output panel keeps are the same as without the trimming."""

from __future__ import annotations

from engine import events as ev
from engine.remote import _Collector
from flue_tui.model import MAX_OUTPUT, RunModel


def test_a_trimmed_flood_is_counted_and_keeps_the_last_lines() -> None:
    lines = [f"line {i}" for i in range(3 * MAX_OUTPUT)]
    text = "half a line, " + "\n".join(lines) + "\nand a partial"
    whole, trimmed = RunModel(1, ("x",), "p"), RunModel(1, ("x",), "p")
    whole.apply([ev.Output("s", 1.0, stream="stdout", data="before\nthe start of ")])
    trimmed.apply([ev.Output("s", 1.0, stream="stdout", data="before\nthe start of ")])
    c = _Collector(keep_lines=MAX_OUTPUT)
    for i in range(0, len(text), 4096):  # as the engine reads it
        piece = ev.Output("s", 2.0, stream="stdout", data=text[i:i + 4096])
        whole.apply([piece])
        c.add(piece)
    batch = [ev.Event.from_dict(d) for d in c.take()]
    assert len(batch) == 1 and batch[0].data.count("\n") == MAX_OUTPUT
    trimmed.apply(batch)
    for m in (whole, trimmed):
        m.output.flush()
    assert trimmed.output.total == whole.output.total == 1 + 3 * MAX_OUTPUT + 1
    assert [x.text for x in trimmed.output.lines] == [x.text for x in whole.output.lines]
    assert trimmed.output.lines[-1].text == "and a partial"
