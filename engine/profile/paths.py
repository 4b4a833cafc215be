"""Where profiles live: the built-in directory and the user's search path."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import engine


@lru_cache(maxsize=1)
def builtin_profile_dir() -> Path:
    """The directory of the built-in profiles and of ``syscalls.toml``.

    In an installed wheel they sit inside the package (``engine/_builtin_profiles``, see the
    force-include in pyproject.toml); in a source checkout, in ``<repo>/profiles``.
    """
    try:
        packaged = resources.files("engine") / "_builtin_profiles"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover - odd installs
        pass
    return Path(engine.__file__).resolve().parent.parent / "profiles"


def user_profile_dir() -> Path:
    """``$XDG_CONFIG_HOME/flue/profiles``, by default ``~/.config/flue/profiles``."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "flue" / "profiles"


def search_dirs(search_path: Sequence[str | Path] | None = None) -> list[Path]:
    """The directories searched for a profile name, in order; the built-ins are always last."""
    dirs = [user_profile_dir()] if search_path is None else [Path(p) for p in search_path]
    builtin = builtin_profile_dir()
    return [d for d in dirs if d != builtin] + [builtin]
