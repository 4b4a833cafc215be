"""Sizes and durations as profiles write them."""

from __future__ import annotations

import pytest

from engine.profile import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64M", 64 << 20),
        ("64m", 64 << 20),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        ("2G", 2 << 30),
        ("1T", 1 << 40),
        ("1.5G", 3 << 29),
        ("4096", 4096),
        (4096, 4096),
        ("0", 0),
        (" 8M ", 8 << 20),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["12Q", "", "M", "-1", -1, "1.5", "1e3", "64 MB", True, None, [1]])
def test_parse_size_rejects_with_a_helpful_message(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(bad)  # type: ignore[arg-type]
    assert "like 64M" in str(info.value)


@pytest.mark.parametrize(
    "n", [0, 1, 1000, 1024, 1536, 64 << 20, 67108864, 3 << 29, 2 << 30, 5 << 40, (1 << 30) + 1]
)
def test_sizes_round_trip(n: int) -> None:
    assert parse_size(format_size(n)) == n


def test_format_size_is_short() -> None:
    assert format_size(67108864) == "64M"
    assert format_size(3 << 29) == "1.5G"
    assert format_size(2 << 30) == "2G"
    assert format_size(1000) == "1000"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(600, 600.0), ("600", 600.0), ("30s", 30.0), ("10m", 600.0), ("1h30m", 5400.0),
     ("1.5h", 5400.0), ("500ms", 0.5), ("2d", 172800.0), (0.25, 0.25)],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["10x", "m", "", "1h30", "-5", -5, "inf", True])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="durations are"):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0.5, 1, 59, 60, 90, 3600, 5400, 86400 + 61])
def test_durations_round_trip(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
