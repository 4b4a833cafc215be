"""Helpers for the live-observation tests: read a ``--events`` file back, pick events by
kind, build the C denial looper, and the scripts that run inside the sandbox.

The scripts are standalone files next to this one (``denied_calls.py``, ``looper.c``);
the tests pass them to the sandbox (``python3 -c SOURCE``) or compile them on the host and
bind the result read-only, so nothing here depends on where the checkout lives.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from engine import events as ev

HERE = Path(__file__).resolve().parent
BIND_DIR = "/opt/flue-test"  # where a host directory of test programs appears inside
E = TypeVar("E", bound=ev.Event)


def events_path(flue: Any, name: str = "events.jsonl") -> Path:
    """A path the flue run (root or the test uid) can write its event stream to."""
    return flue.tmpdir("events") / name


def read_lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n"), f"{path}: the last event line is not terminated"
    return text.splitlines()


def read_events(path: Path) -> list[ev.Event]:
    return [ev.Event.from_json(line) for line in read_lines(path)]


def of(events: Iterable[ev.Event], cls: type[E]) -> list[E]:
    return [e for e in events if type(e) is cls]


def one(events: Iterable[ev.Event], cls: type[E]) -> E:
    found = of(events, cls)
    assert len(found) == 1, f"expected one {cls.__name__}, found {len(found)}: {found}"
    return found[0]


def script(name: str) -> str:
    """The source of a helper script that runs inside the sandbox."""
    return (HERE / name).read_text()


@functools.cache
def syscall_numbers() -> dict[str, int]:
    """Native syscall name -> number (what the sandbox's filter uses)."""
    from engine.seccomp import native_syscalls

    return native_syscalls()


def nr(name: str) -> int:
    return syscall_numbers()[name]


def build_looper(directory: Path) -> Path:
    """Compile ``looper.c`` into ``directory`` (world-readable); returns the binary's path."""
    import pytest

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc) to build the denial looper")
    src = directory / "looper.c"
    shutil.copyfile(HERE / "looper.c", src)
    out = directory / "looper"
    subprocess.run([gcc, "-O2", "-o", str(out), str(src)], check=True, capture_output=True,
                   timeout=120)
    os.chmod(out, 0o755)
    os.chmod(src, 0o644)
    return out


def denial_counts(events: Iterable[ev.Event], name: str) -> tuple[int, int]:
    """(sum of ``count``, number of records) of the SyscallDenied records for ``name``."""
    recs = [e for e in of(events, ev.SyscallDenied) if e.name == name]
    return sum(e.count for e in recs), len(recs)


def last_json_line(text: str) -> Any:
    """The last line of a program's output that parses as JSON."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in the output:\n{text}")
