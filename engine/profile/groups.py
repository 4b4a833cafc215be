"""Syscall groups ("@file-system") from ``profiles/syscalls.toml``, and the syscall names flue knows.

The data file is read once per process. Its own mistakes (a member that is not a syscall, a
reference to a missing group, a cycle) are reported as ``ProfileError`` naming the file and
line, like any profile's.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.errors import ProfileError
from engine.profile.hints import did_you_mean
from engine.profile.locate import locate_keys
from engine.profile.paths import builtin_profile_dir

GROUPS_FILE = "syscalls.toml"


@dataclass(frozen=True, slots=True)
class Group:
    name: str  # "@file-system"
    description: str  # one line: what programs use it for
    syscalls: tuple[str, ...]  # fully expanded, sorted
    members: tuple[str, ...] = ()  # as written: syscall names and "@groups"


@dataclass(frozen=True, slots=True)
class _Tables:
    groups: dict[str, Group]
    native: frozenset[str]  # libseccomp's names for the native architecture
    known: frozenset[str]  # native | every name in a group
    recent_unsupported: frozenset[str]  # real syscalls the installed libseccomp cannot name
    ungrouped: frozenset[str]


def _libseccomp_native() -> tuple[frozenset[str], object]:
    """(native names, a resolver name -> int) or (empty, None) without libseccomp."""
    try:
        import pyseccomp  # type: ignore[import-untyped, unused-ignore]
    except (ImportError, OSError):
        return frozenset(), None
    arch = pyseccomp.system_arch()
    names = set()
    for nr in range(1024):
        try:
            names.add(pyseccomp.resolve_syscall(arch, nr).decode())
        except Exception:  # noqa: BLE001, S112 - libseccomp raises for numbers it does not know
            continue
    return frozenset(names), lambda name: pyseccomp.resolve_syscall(arch, name)


def _load(path: Path) -> _Tables:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ProfileError(
            "cannot read the syscall groups file", file=file, detail=str(err),
            fix="reinstall flue; the groups file ships with it",
        ) from err
    native, resolve = _libseccomp_native()
    recent = frozenset(data.get("recent", ()))
    ungrouped = frozenset(data.get("ungrouped", ()))
    raw = {k: v for k, v in data.items() if k.startswith("@")}

    def where(*key: str | int) -> int | None:
        return locate_keys(text).get(tuple(key))  # only on an error: scanning costs time

    # names libseccomp cannot resolve anywhere (-1) are typos unless listed as recent
    unsupported: set[str] = set()
    for gname, table in raw.items():
        for i, member in enumerate(table.get("syscalls", ())):
            if member.startswith("@"):
                if member not in raw:
                    raise ProfileError(
                        f"group {gname} includes unknown group {member}", file=file,
                        line=where(gname, "syscalls", i), key=f"{gname}.syscalls",
                        fix=did_you_mean(member, raw) or "define the group or remove the entry",
                    )
                continue
            if resolve is None or resolve(member) != -1:  # type: ignore[operator]
                continue
            if member in recent:
                unsupported.add(member)
                continue
            raise ProfileError(
                f"group {gname} lists {member!r}, which is not a syscall on any architecture",
                file=file, line=where(gname, "syscalls", i), key=f"{gname}.syscalls",
                fix=did_you_mean(member, native) or "remove it, or add it to `recent` if it is new",
            )

    expanded: dict[str, tuple[str, ...]] = {}

    def expand(gname: str, stack: tuple[str, ...]) -> tuple[str, ...]:
        if gname in expanded:
            return expanded[gname]
        if gname in stack:
            raise ProfileError(
                "syscall groups include each other in a cycle: " + " -> ".join(stack + (gname,)),
                file=file, line=where(gname), key=gname, fix="remove one of the inclusions",
            )
        out: set[str] = set()
        for member in raw[gname].get("syscalls", ()):
            if member.startswith("@"):
                out.update(expand(member, stack + (gname,)))
            elif member not in unsupported:
                out.add(member)
        expanded[gname] = tuple(sorted(out))
        return expanded[gname]

    groups = {
        g: Group(
            name=g,
            description=str(t.get("description", "")),
            syscalls=expand(g, ()),
            members=tuple(m for m in t.get("syscalls", ()) if m not in unsupported),
        )
        for g, t in raw.items()
    }
    in_groups = {s for g in groups.values() for s in g.syscalls}
    return _Tables(
        groups=groups,
        native=native,
        known=frozenset(native | in_groups | (ungrouped - unsupported)),
        recent_unsupported=frozenset(unsupported),
        ungrouped=ungrouped,
    )


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    return _load(builtin_profile_dir() / GROUPS_FILE)


def groups_file() -> Path:
    return builtin_profile_dir() / GROUPS_FILE


def syscall_groups() -> dict[str, Group]:
    """Every group by name ("@file-system"), its syscalls fully expanded."""
    return dict(_tables().groups)


def known_syscalls() -> frozenset[str]:
    """libseccomp's names for the native architecture, and every name any group uses."""
    return _tables().known


def native_syscalls() -> frozenset[str]:
    """libseccomp's names for the native architecture (empty without libseccomp)."""
    return _tables().native


def unsupported_recent() -> frozenset[str]:
    """Real syscalls the groups file lists but the installed libseccomp cannot name."""
    return _tables().recent_unsupported


def group_of(syscall: str) -> str | None:
    """The most specific group holding ``syscall``: the smallest one, for display."""
    best: Group | None = None
    for g in _tables().groups.values():
        if syscall in g.syscalls and (best is None or len(g.syscalls) < len(best.syscalls)):
            best = g
    return best.name if best else None


def expand_syscalls(entries: Iterable[str]) -> frozenset[str]:
    """Syscall names from entries that are names or "@groups". Unknown -> ``ValueError``."""
    tables = _tables()
    out: set[str] = set()
    for entry in entries:
        if entry.startswith("@"):
            group = tables.groups.get(entry)
            if group is None:
                raise ValueError(unknown_entry_message(entry))
            out.update(group.syscalls)
        elif entry in tables.known:
            out.add(entry)
        else:
            raise ValueError(unknown_entry_message(entry))
    return frozenset(out)


def unknown_entry_message(entry: str) -> str:
    """Why ``entry`` is not a syscall or group, with a did-you-mean when one is close."""
    if entry.startswith("@"):
        hint = did_you_mean(entry, _tables().groups)
        return f"unknown syscall group {entry!r}" + (f"; {hint}" if hint else "")
    if entry in _tables().recent_unsupported:
        return (
            f"{entry!r} is a syscall newer than the installed libseccomp, which cannot filter "
            "it; upgrade libseccomp or remove the entry"
        )
    hint = did_you_mean(entry, _tables().known)
    return f"unknown syscall {entry!r}" + (f"; {hint}" if hint else "")


def suggest_entry(entry: str) -> str:
    """ "did you mean ...?" for a syscall or group name, or ""."""
    pool: Iterable[str] = _tables().groups if entry.startswith("@") else _tables().known
    return did_you_mean(entry, pool)
