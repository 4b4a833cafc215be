"""A resolved-profile cache for the hot path.

Reading a profile means parsing TOML, layering ``extends`` and expanding syscall groups: tens
of milliseconds. ``flue run`` starts many times with the same profile, so the resolved
``Profile`` is pickled under the user's cache directory together with the files it came from
(path, mtime, size, plus the user profile directory, whose mtime changes when a profile is
added that could shadow a built-in). Any change to any of them misses the cache and reloads
with full validation, so a bad edit is always reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

from engine import __version__
from engine.profile.model import MODEL_VERSION, Profile


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flue" / "profiles"


def _stamp(path: str) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_mtime_ns, st.st_size)


def _user_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "flue", "profiles")


def load_profile_cached(name: str, overrides: dict[str, Any] | None = None) -> Profile:
    is_path = "/" in name or name.endswith(".toml")
    ident = os.path.abspath(name) if is_path else name
    key = hashlib.sha256(json.dumps([__version__, MODEL_VERSION, ident, overrides, _user_dir()],
                                    sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = _cache_dir() / f"{key}.pickle"
    try:
        with open(path, "rb") as f:
            deps, profile = pickle.load(f)
        if all((_stamp(d[0]) or (d[0], 0, 0)) == tuple(d) for d in deps) and isinstance(
                profile, Profile):
            return profile
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError):
        pass
    from engine.profile import load_profile
    from engine.profile.groups import __file__ as _groups_py  # noqa: F401
    from engine.profile.paths import builtin_profile_dir

    profile = load_profile(name, overrides=overrides)
    files = [*profile.chain]
    if profile.source:
        files.append(profile.source)
    files.append(str(builtin_profile_dir() / "syscalls.toml"))
    files.append(_user_dir())
    deps = [s for s in (_stamp(p) for p in dict.fromkeys(files)) if s is not None]
    if not any(d[0] == _user_dir() for d in deps):
        deps.append((_user_dir(), 0, 0))  # absent now: creating it must miss the cache
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump((deps, profile), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass
    return profile
