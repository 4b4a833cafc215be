"""The denial table's count column is five characters wide: a flood's count must still read
right (360 400 calls showed as "36040", the last digit cut)."""

from __future__ import annotations

import pytest

from flue_tui.widgets.format import count


@pytest.mark.parametrize(("n", "text"), [
    (0, "0"), (7, "7"), (99_999, "99999"), (100_000, "100k"), (360_400, "360k"),
    (999_999, "1.0M"), (999_499, "999k"), (1_000_000, "1.0M"), (3_640_000, "3.6M"), (9_999_999, "10M"),
    (10_000_000, "10M"), (360_400_000, "360M"), (1_000_000_000, "1.0G"),
    (123_000_000_000, "123G"),
])
def test_a_count_fits_the_column_and_keeps_its_magnitude(n: int, text: str) -> None:
    assert count(n) == text
    assert len(count(n)) <= 5


def test_the_denial_row_shows_a_large_count_whole() -> None:
    from flue_tui.model import DenialRow
    from flue_tui.widgets.panels import DenialsPanel

    row = DenialRow("keyctl", "keyctl", "@keyring", count=360_400, errno=1, errno_name="EPERM")
    cells = DenialsPanel._cells(row)
    assert str(cells[1]) == "360k"
