"""A world-readable copy of flue for running it as an unprivileged uid.

The test runner's interpreter and virtualenv may live where other uids cannot read (a
user's home). The unprivileged runs therefore use the system's ``python3`` with
``PYTHONPATH`` pointing at a copy, made once per session in a 0755 temp directory, of
``engine/``, ``profiles/`` and the runtime dependencies found in the running interpreter's
site-packages (from ``importlib.metadata``, never from fixed paths). ``tui=True`` adds
``flue_tui/`` and the TUI's dependencies (textual, rich, ...), for running flue-tui itself
as another uid.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# flue's dependencies that the engine does not import (the TUI's)
_NOT_ENGINE = {"textual"}


def site_packages() -> list[Path]:
    paths = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    return [Path(p) for p in sorted(paths)]


def _req_names(dist: md.Distribution) -> list[str]:
    from packaging.requirements import Requirement

    out = []
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(req.name)
    return out


def runtime_distributions(tui: bool = False) -> list[md.Distribution]:
    """flue's runtime dependencies, transitively, minus the TUI's (unless ``tui``)."""
    seen: dict[str, md.Distribution] = {}
    todo = [n for n in _req_names(md.distribution("flue"))
            if tui or n.lower() not in _NOT_ENGINE]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[key] = dist
        todo.extend(_req_names(dist))
    return list(seen.values())


def _copy_dist(dist: md.Distribution, dest: Path) -> None:
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if not parts or parts[0] == ".." or "__pycache__" in parts:
            continue
        if parts[0].endswith((".dist-info", ".egg-info")) or parts[0].endswith(".pth"):
            continue
        src = Path(dist.locate_file(f))
        if not src.is_file():
            continue
        out = dest / Path(*parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)


def _chmod_tree(root: Path) -> None:
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            mode = os.stat(p).st_mode
            os.chmod(p, 0o755 if mode & 0o111 else 0o644)


def make_runtime(dest: Path, tui: bool = False) -> Path:
    """Copy engine/, profiles/ and the dependencies into ``dest`` (with ``tui``: flue_tui/
    and its dependencies too); returns the PYTHONPATH."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "engine", dest / "engine", ignore=ignore)
    shutil.copytree(REPO / "profiles", dest / "profiles", ignore=ignore)
    if tui:
        shutil.copytree(REPO / "flue_tui", dest / "flue_tui", ignore=ignore)
    for dist in runtime_distributions(tui):
        _copy_dist(dist, dest)
    _chmod_tree(dest)
    return dest


def system_python(uid: int | None = None, gid: int | None = None) -> str:
    """An interpreter ``uid`` can run, of the same minor version as the one running the
    tests (compiled dependencies must match its ABI): this one, when its files are readable
    by others (a system or /opt install), else the distribution's python3.X."""
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    name = f"python{want}"
    candidates = [os.path.realpath(sys.executable), os.path.realpath(sys._base_executable),
                  f"/usr/bin/{name}", f"/usr/local/bin/{name}", "/usr/bin/python3"]
    for cand in dict.fromkeys(candidates):
        if not os.access(cand, os.X_OK):
            continue
        if uid is None:
            return cand
        try:
            probe = subprocess.run(
                [cand, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30, check=False, user=uid, group=gid,
                extra_groups=[], cwd="/", env={"PATH": "/usr/bin:/bin"})
        except OSError:  # not executable by uid (a path it cannot search)
            continue
        if probe.returncode == 0 and probe.stdout.strip() == want:
            return cand
    raise FileNotFoundError(
        f"no python {want} that uid {uid} can run (the tests' interpreter is not readable by "
        f"other users; install the distribution's {name})")
