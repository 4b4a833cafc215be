"""A resolved-profile cache for the hot path.

Reading a profile means parsing TOML, layering ``extends`` and expanding syscall groups: tens
of milliseconds. ``flue run`` starts many times with the same profile, so the resolved
``Profile`` is kept under the user's cache directory (``flue/profiles/KEY.json``) together with
the files it came from (path, mtime, size, plus the user profile directory, whose mtime changes
when a profile is added that could shadow a built-in). Any change to any of them misses the
cache and reloads with full validation, so a bad edit is always reported.

The file is JSON of the profile's records (``engine.profile.model.to_data``), read back with
every field's type checked: plain data, so whoever managed to write it cannot make the next
supervisor run code (a pickle could). It is used only when ``engine.cachedir`` trusts it (ours,
writable by nobody else, in directories of the same kind).
"""

from __future__ import annotations

import os

from engine import __version__, cachedir
from engine._lean import dumps, loads, sha256

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any
from engine.profile.model import MODEL_VERSION, Profile, profile_from_data, to_data

KIND = "profiles"


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
    key = sha256(dumps([__version__, MODEL_VERSION, ident, overrides, _user_dir()],
                                    sort_keys=True, default=str).encode()).hexdigest()[:32]
    file = f"{key}.json"
    raw = cachedir.load(KIND, file)
    if raw is not None:
        try:
            cached = loads(raw)
            stamps = cached["deps"]
            if (isinstance(stamps, list) and all(
                    isinstance(d, list) and len(d) == 3 and isinstance(d[0], str)
                    and (_stamp(d[0]) or (d[0], 0, 0)) == tuple(d) for d in stamps)):
                return profile_from_data(cached["profile"])
        except (ValueError, TypeError, KeyError):
            pass  # not ours after all, or of another shape: read the profile again
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
    doc = {"deps": deps, "profile": to_data(profile)}
    cachedir.store(KIND, file, dumps(doc, compact=True).encode())
    return profile
