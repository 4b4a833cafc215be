"""Security profiles: TOML files layered with ``extends``, resolved into a ``Profile``.

The model (``engine.profile.model``) is what the rest of the engine consumes; this package
reads, layers and validates the TOML, and owns the syscall groups (``profiles/syscalls.toml``).
The format is documented in docs/profiles.md.
"""

from __future__ import annotations

# Imported lazily (PEP 562): the hot path (`flue run` with a cached profile) needs only the
# model, and the loader, groups and regex tables cost tens of milliseconds to import.
_LAZY = {
    "Group": "groups", "expand_syscalls": "groups", "group_of": "groups",
    "known_syscalls": "groups", "syscall_groups": "groups",
    "LAUNCHER_SYSCALLS": "loader", "NETWORK_MODES": "loader", "ProfileInfo": "loader",
    "list_profiles": "loader", "load_profile": "loader",
    "Bind": "model", "EnvPolicy": "model", "FilesystemPolicy": "model", "Limits": "model",
    "NetworkPolicy": "model", "Profile": "model", "SeccompPolicy": "model",
    "UserPolicy": "model",
    "builtin_profile_dir": "paths", "user_profile_dir": "paths",
    "format_duration": "sizes", "format_size": "sizes", "parse_duration": "sizes",
    "parse_size": "sizes",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'engine.profile' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"engine.profile.{mod}"), name)
    globals()[name] = value
    return value


TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from engine.profile.groups import (
        Group,
        expand_syscalls,
        group_of,
        known_syscalls,
        syscall_groups,
    )
    from engine.profile.loader import (
        LAUNCHER_SYSCALLS,
        NETWORK_MODES,
        ProfileInfo,
        list_profiles,
        load_profile,
    )
    from engine.profile.model import (
        Bind,
        EnvPolicy,
        FilesystemPolicy,
        Limits,
        NetworkPolicy,
        Profile,
        SeccompPolicy,
        UserPolicy,
    )
    from engine.profile.paths import builtin_profile_dir, user_profile_dir
    from engine.profile.sizes import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "LAUNCHER_SYSCALLS",
    "NETWORK_MODES",
    "Bind",
    "EnvPolicy",
    "FilesystemPolicy",
    "Group",
    "Limits",
    "NetworkPolicy",
    "Profile",
    "ProfileInfo",
    "SeccompPolicy",
    "UserPolicy",
    "builtin_profile_dir",
    "expand_syscalls",
    "format_duration",
    "format_size",
    "group_of",
    "known_syscalls",
    "list_profiles",
    "load_profile",
    "parse_duration",
    "parse_size",
    "syscall_groups",
    "user_profile_dir",
]
