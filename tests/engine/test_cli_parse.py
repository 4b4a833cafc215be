"""flue run's fast argument parser (no argparse on the hot path) gives what argparse gives, and
leaves to argparse whatever it is not sure of."""

from __future__ import annotations

import pytest

from engine.cli import _parse_run_fast, _parser

SAME = [
    ["run", "--", "true"],
    ["run", "true", "-x", "--memory", "3"],
    ["run", "-p", "strict", "--memory=5M", "--cpus", "0.5", "--pids", "10", "--timeout=3s",
     "--", "ls", "-l"],
    ["run", "-pfoo", "--net", "loopback", "x"],
    ["run", "--allow-domain", "a.org", "--allow-domain=*.b.org", "--resolve", "a.org=1.2.3.4",
     "--bind", "/srv", "--bind=/opt:/o:rw", "--env", "K=V", "--workspace", "ws", "--", "x"],
    ["run", "--report", "r.json", "--events", "e.jsonl", "--host-uid", "1000",
     "--sample-interval", "0.5", "--allow-unlimited", "--no-observe", "--observe-paths", "x"],
    ["run", "-t", "--", "sh"],
    ["run", "--no-tty", "sh", "-c", "echo --"],
    ["run", "--memory=", "x"],
]

FALLBACK = [
    [], ["doctor"], ["profiles", "list"], ["run"], ["run", "--"], ["run", "-h", "x"],
    ["run", "--mem", "5M", "x"],  # an abbreviation: argparse's business
    ["run", "--net", "everything", "x"], ["run", "--host-uid", "many", "x"],
    ["run", "-t", "--no-tty", "x"], ["run", "--memory"], ["run", "--memory", "-5", "x"],
    ["run", "--no-observe=1", "x"], ["run", "-tx", "y"], ["--help"],
]


@pytest.mark.parametrize("argv", SAME, ids=lambda a: " ".join(a))
def test_fast_parser_agrees_with_argparse(argv: list[str]) -> None:
    fast = _parse_run_fast(argv)
    assert fast is not None
    assert vars(fast) == vars(_parser().parse_args(argv))


@pytest.mark.parametrize("argv", FALLBACK, ids=lambda a: " ".join(a) or "(none)")
def test_fast_parser_leaves_the_rest_to_argparse(argv: list[str]) -> None:
    assert _parse_run_fast(argv) is None
