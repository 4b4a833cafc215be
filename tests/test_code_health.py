"""Project rules that are cheap to check on every run: the engine stays headless, the code
passes ruff and mypy (strict on engine/), and `flue run`'s fast path stays off asyncio."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# what a plain `flue run -- CMD` (no pty, no --events, no --report, default network) must not
# import, before or during the run: each costs milliseconds of a cold start, and each belongs
# to a feature the run does not use (kept off by engine.cli's own argument parser, lazy imports
# and engine._record)
OFF_THE_PLAIN_PATH = (
    "argparse", "asyncio", "dataclasses", "inspect", "json.tool", "pathlib", "pickle",
    "platform", "shutil", "subprocess", "threading", "engine.events", "engine.terminal",
    "engine.cli_tools", "engine.network.policy", "engine.sources.observe",
    "engine.sources.paths", "engine.sources.decode", "engine.profile.loader",
    # engine._lean stands in for these (each pulled re, enum, selectors, collections or
    # OpenSSL into every start)
    "typing", "json", "socket", "signal", "hashlib", "_hashlib", "selectors", "re", "enum",
    "collections", "functools", "contextlib", "array",
)


def test_a_plain_flue_run_imports_only_what_it_uses(flue: Any) -> None:
    # a real run (root and unprivileged) with the profile cache warm (a first run in another
    # process fills it): the module list is taken after main() returned, the sandbox's
    # set-up and teardown included
    # (nothing imported here but os and sys: the list is printed with repr, read with ast)
    code = """
import os, sys
args = ["run"] + (["--allow-unlimited"] if os.geteuid() else []) + ["--", "/bin/true"]
first = os.spawnv(os.P_WAIT, sys.executable, [sys.executable, "-m", "engine", *args])
from engine.cli import main
rc = main(args)
print(repr([first, rc, sorted(sys.modules)]))
"""
    run = flue.start_python(code, delegate=False).finish()
    first, rc, mods = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert (first, rc) == (0, 0), str(run)
    assert "engine.sandbox" in mods and "engine.launch" in mods  # it did run a sandbox
    assert not sorted(set(mods) & set(OFF_THE_PLAIN_PATH))


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
