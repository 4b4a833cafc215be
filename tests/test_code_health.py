"""Project rules that are cheap to check on every run: the engine stays headless, the code
passes ruff and mypy (strict on engine/), and `flue run`'s fast path stays off asyncio."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_engine_never_imports_the_ui() -> None:
    mods = _modules_after(
        "import engine, engine.sandbox, engine.cli, engine.sources, engine.sources.denials, "
        "engine.sources.files, engine.sources.processes, engine.sources.resources, "
        "engine.profile.edit, engine.doctor, engine.spawner, engine.launch"
    )
    bad = sorted(m for m in mods if m.split(".")[0] in ("textual", "rich", "flue_tui"))
    assert not bad, f"engine imported {bad}"


def test_flue_run_fast_path_does_not_import_asyncio() -> None:
    # what `flue run` imports before it launches, without --events
    mods = _modules_after(
        "import engine.cli, engine.sandbox, engine.profile_cache, engine.rootfs, "
        "engine.seccomp, engine.spawner, engine.launch, engine._miniloop, engine.cgroups"
    )
    assert "asyncio" not in mods
    assert "engine.events" not in mods


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: `make test` installs it with the dev extra")
    return found


def test_ruff_is_clean() -> None:
    res = subprocess.run([_tool("ruff"), "check", "engine", "flue_tui", "tests"], cwd=ROOT, check=False,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_strict_on_the_engine_is_clean() -> None:
    res = subprocess.run([_tool("mypy"), "engine"], cwd=ROOT, check=False, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
