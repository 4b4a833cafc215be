"""TOML profiles -> ``Profile``: reading, ``extends`` layering, validation.

Every file of an ``extends`` chain is read and validated on its own first (keys, types,
values), so an error names the file and line where it was written. The layers are then
merged base first:

- scalars: the child wins; a limit set to "none" (or a timeout of 0) unsets it;
- lists (seccomp allow/deny/kill, filesystem system/etc/binds, env pass, socket_families):
  appended with de-duplication; an entry "!x" removes an inherited entry x;
- tables (seccomp errno, env set, filesystem tmpfs): merged key by key; a key "!x" removes x.

Last come the checks that need the whole profile (deny wins over allow, errno entries that
would never apply, the syscalls the launcher needs).
"""

from __future__ import annotations

import errno as _errno
import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from engine.errors import ProfileError
from engine.profile import groups as _groups
from engine.profile.hints import did_you_mean
from engine.profile.locate import Path_, line_of, locate_keys
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
from engine.profile.paths import builtin_profile_dir, search_dirs
from engine.profile.sizes import DURATION_HINT, SIZE_HINT, parse_duration, parse_size

NETWORK_MODES = ("none", "loopback", "allowlist")
# what flue's launcher runs between loading the filter and the program's first instruction
LAUNCHER_SYSCALLS = ("read", "write", "close", "execve", "exit", "exit_group", "rt_sigreturn")
# files flue writes into the sandbox's /etc itself; binding the host's would clash
GENERATED_ETC = ("passwd", "group", "hosts", "hostname", "resolv.conf", "nsswitch.conf")
OVERRIDES = "<overrides>"
_NONE = "none"


# --------------------------------------------------------------------------- positions


@dataclass(frozen=True, slots=True)
class _Source:
    """One layer's file: its display name and its text (scanned for lines only on an error)."""

    file: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class _Where:
    source: _Source
    path: Path_

    @property
    def key(self) -> str:
        return ".".join(str(p) for p in self.path if isinstance(p, str))

    def at(self, *more: str | int) -> _Where:
        return _Where(self.source, self.path + more)

    def error(self, title: str, fix: str = "", detail: str = "") -> ProfileError:
        return ProfileError(
            title,
            file=self.source.file,
            line=line_of(locate_keys(self.source.text), self.path),
            key=self.key or None,
            detail=detail,
            fix=fix,
        )

    def fail(self, title: str, fix: str = "", detail: str = "") -> NoReturn:
        raise self.error(title, fix, detail)


# --------------------------------------------------------------------------- value checks

Convert = Callable[[Any, _Where], Any]
_ABS_HINT = "write an absolute path, starting with /"


def _type_name(v: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(v), type(v).__name__)


def _string(v: Any, w: _Where) -> str:
    if not isinstance(v, str):
        w.fail(f"expected a string, found {_type_name(v)}", fix=f'quote the value: "{v}"')
    return v


def _boolean(v: Any, w: _Where) -> bool:
    if not isinstance(v, bool):
        w.fail(f"expected true or false, found {_type_name(v)} ({v!r})",
               fix="write true or false, without quotes")
    return v


def _abs_path(v: Any, w: _Where) -> str:
    s = _string(v, w)
    if not s.startswith("/"):
        w.fail(f"{s!r} is not an absolute path", fix=_ABS_HINT)
    if "\0" in s:
        w.fail("a path cannot contain a NUL byte", fix=_ABS_HINT)
    if ".." in s.split("/"):
        w.fail(f"{s!r} contains '..'", fix="write the path without '..' components")
    norm = os.path.normpath(s)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _hostname(v: Any, w: _Where) -> str:
    s = _string(v, w)
    if len(s) > 64 or not _HOSTNAME.fullmatch(s):
        w.fail(f"{s!r} is not a valid hostname",
               fix="use letters, digits and '-' (at most 64 characters), like \"flue\"")
    return s


def _username(v: Any, w: _Where) -> str:
    s = _string(v, w)
    if not _USERNAME.fullmatch(s):
        w.fail(f"{s!r} is not a valid user name",
               fix="use lower-case letters, digits, '_' and '-', starting with a letter, "
               'like "agent"')
    return s


def _id(v: Any, w: _Where) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        w.fail(f"expected a whole number, found {_type_name(v)} ({v!r})",
               fix="write a number like 1000, without quotes")
    if not 0 <= v < 2**32 - 1:
        w.fail(f"{v} is out of range for a user or group id", fix="use 0 to 4294967294")
    return v


def _home(v: Any, w: _Where) -> str:
    s = _string(v, w)
    return "" if s == "" else _abs_path(s, w)


def _size(v: Any, w: _Where) -> int:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        w.fail(f"expected a size, found {_type_name(v)}", fix=SIZE_HINT)
    try:
        return parse_size(v)
    except ValueError:
        w.fail(f"bad size {v!r}", fix=SIZE_HINT)


def _limit_size(v: Any, w: _Where) -> int | None:
    if v == _NONE:
        return None
    n = _size(v, w)
    if n == 0:
        w.fail("a memory limit of 0 would stop everything",
               fix='write a size like "2G", or "none" for no limit')
    return n


def _limit_cpus(v: Any, w: _Where) -> float | None:
    if v == _NONE:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        w.fail(f"expected a number of CPUs, found {_type_name(v)} ({v!r})",
               fix='write a number like 2 or 0.5, or "none" for no limit')
    if not 0 < v <= 65536:
        w.fail(f"{v} is not a usable number of CPUs",
               fix='write a number above 0, like 2 or 0.5, or "none" for no limit')
    return float(v)


def _limit_pids(v: Any, w: _Where) -> int | None:
    if v == _NONE:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        w.fail(f"expected a whole number of processes, found {_type_name(v)} ({v!r})",
               fix='write a number like 1024, or "none" for no limit')
    if v < 1:
        w.fail(f"a pids limit of {v} would not even let the command start",
               fix='write a number like 1024, or "none" for no limit')
    return v


def _limit_count(v: Any, w: _Where) -> int | None:
    if v == _NONE:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        w.fail(f"expected a whole number, found {_type_name(v)} ({v!r})",
               fix='write a number like 64, or "none" for the host\'s limit only')
    if not 1 <= v < 2**31:
        w.fail(f"{v} is out of range", fix='write a number from 1 to 2147483647, or "none"')
    return v


def _limit_timeout(v: Any, w: _Where) -> float | None:
    if v == _NONE:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        w.fail(f"expected a duration, found {_type_name(v)}", fix=DURATION_HINT)
    try:
        seconds = parse_duration(v)
    except ValueError:
        w.fail(f"bad duration {v!r}", fix=DURATION_HINT + ', or "none" for no timeout')
    return seconds or None


def _network_mode(v: Any, w: _Where) -> str:
    s = _string(v, w)
    if s not in NETWORK_MODES:
        valid = ", ".join(f'"{m}"' for m in NETWORK_MODES)
        hint = did_you_mean(s, NETWORK_MODES)
        w.fail(f"unknown network mode {s!r}",
               fix=f"use one of {valid}" + (f" ({hint})" if hint else ""))
    return s


def _allow_rule(v: Any, w: _Where) -> str:
    from engine.network.policy import RuleError, parse_rule

    s = _string(v, w)
    try:
        return parse_rule(s).text
    except RuleError as err:
        w.fail(str(err), fix=err.fix)


def _hosts_name(v: Any, w: _Where) -> str:
    from engine.network.policy import RuleError, check_name, is_ip_literal

    s = _string(v, w)
    wild = s.startswith("*.")
    if is_ip_literal(s):
        w.fail(f"{s!r} is an address; hosts maps names to addresses",
               fix='write a name and the address it stands for: "db.internal" = "10.0.0.5"')
    try:
        return ("*." if wild else "") + check_name(s[2:] if wild else s)
    except RuleError as err:
        w.fail(str(err), fix=err.fix)


def _hosts_address(v: Any, w: _Where) -> str:
    from engine.network.policy import RuleError, check_address

    s = _string(v, w)
    try:
        return check_address(s)
    except RuleError as err:
        w.fail(str(err), fix=err.fix)


def _errno_value(v: Any, w: _Where) -> int:
    if isinstance(v, bool):
        w.fail("expected an errno name or number, found a boolean", fix='write a name like "EPERM"')
    if isinstance(v, int):
        if v == 0:
            w.fail("errno 0 would make a refused syscall look as if it succeeded",
                   fix='use an error such as "EPERM" or "ENOSYS"')
        if not 0 < v < 4096:
            w.fail(f"{v} is not an errno number", fix='use 1 to 4095, or a name like "EPERM"')
        return v
    s = _string(v, w)
    number = getattr(_errno, s, None) if s.startswith("E") else None
    if not isinstance(number, int) or _errno.errorcode.get(number) is None:
        hint = did_you_mean(s, sorted(set(_errno.errorcode.values())))
        w.fail(f"unknown errno name {s!r}",
               fix=(hint + " " if hint else "") + 'use a name from errno(3), like "EPERM" or "ENOSYS"')
    return number


def _family(v: Any, w: _Where) -> str:
    s = _string(v, w)
    if s not in _socket_families():
        hint = did_you_mean(s if s.startswith("AF_") else "AF_" + s.upper(), _socket_families())
        w.fail(f"unknown socket family {s!r}",
               fix=(hint + " " if hint else "") + "use names like AF_UNIX, AF_INET, AF_INET6")
    return s


def _socket_families() -> frozenset[str]:
    names = {n for n in dir(socket) if n.startswith("AF_")}
    return frozenset(names | {"AF_NETLINK", "AF_PACKET", "AF_VSOCK", "AF_ALG"})


def _env_name(v: Any, w: _Where) -> str:
    s = _string(v, w)
    if not _ENV_NAME.fullmatch(s):
        w.fail(f"{s!r} is not an environment variable name",
               fix="use letters, digits and '_', not starting with a digit")
    return s


def _env_pattern(v: Any, w: _Where) -> str:
    s = _string(v, w)
    if not _ENV_NAME.fullmatch(s.removesuffix("*")) and s != "*":
        w.fail(f"{s!r} is not an environment variable name or prefix",
               fix='write a name like "TERM", or a prefix ending in * like "LC_*"')
    if s == "*":
        w.fail("passing the whole environment defeats the sandbox",
               fix='list the variables to pass, or prefixes like "LC_*"')
    return s


def _etc_entry(v: Any, w: _Where) -> str:
    s = _string(v, w)
    name = s.removeprefix("/etc/") if s.startswith("/etc/") else s
    if name.startswith("/"):
        w.fail(f"{s!r} is not under /etc",
               fix='name a file or directory of /etc, like "ssl"; bind other paths with binds')
    parts = [p for p in name.split("/") if p]
    if not parts or ".." in parts or "." in parts:
        w.fail(f"{s!r} is not a file or directory of /etc", fix='write a name like "ssl" or "ld.so.cache"')
    name = "/".join(parts)
    if name in GENERATED_ETC:
        w.fail(f"flue writes /etc/{name} into the sandbox itself", fix="remove the entry")
    return f"/etc/{name}"


def _syscall_entry(v: Any, w: _Where) -> str:
    s = _string(v, w)
    tables = _groups.syscall_groups()
    if s.startswith("@"):
        if s not in tables:
            hint = did_you_mean(s, tables)
            w.fail(f"unknown syscall group {s!r}",
                   fix=hint or "groups: " + ", ".join(sorted(tables)))
    elif s not in _groups.known_syscalls():
        if s in _groups.unsupported_recent():
            w.fail(f"{s!r} is newer than the installed libseccomp, which cannot filter it",
                   fix="upgrade libseccomp, or remove the entry")
        hint = _groups.suggest_entry(s)
        w.fail(f"unknown syscall {s!r}",
               fix=(hint + " " if hint else "") + "check the name in syscalls(2), or use a @group")
    return s


_BIND_KEYS = ("src", "dst", "mode", "optional")
_BIND_HINT = 'write "/src:/dst:ro" (or :rw), or a table {src = "/src", dst = "/dst", mode = "ro"}'


def _bind(v: Any, w: _Where) -> Bind:
    if isinstance(v, str):
        parts = v.split(":")
        if len(parts) > 3:
            w.fail(f"bad bind {v!r}", fix=_BIND_HINT)
        src = parts[0]
        dst = parts[1] if len(parts) > 1 and parts[1] else src
        mode = parts[2] if len(parts) > 2 else "ro"
        optional = False
    elif isinstance(v, dict):
        for k in v:
            if k not in _BIND_KEYS:
                hint = did_you_mean(k, _BIND_KEYS)
                w.at(k).fail(f"unknown key {k!r} in a bind",
                             fix=hint or "a bind has src, dst, mode and optional")
        if "src" not in v:
            w.fail("a bind needs src", fix=_BIND_HINT)
        src = _string(v["src"], w.at("src"))
        dst = _string(v.get("dst", src), w.at("dst"))
        mode = _string(v.get("mode", "ro"), w.at("mode"))
        optional = _boolean(v.get("optional", False), w.at("optional"))
    else:
        w.fail(f"expected a bind, found {_type_name(v)}", fix=_BIND_HINT)
    if mode not in ("ro", "rw"):
        w.fail(f"bad bind mode {mode!r}", fix='use "ro" (read-only) or "rw" (read-write)')
    return Bind(src=_abs_path(src, w), dst=_abs_path(dst, w), rw=mode == "rw", optional=optional)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class _Scalar:
    convert: Convert


@dataclass(frozen=True, slots=True)
class _List:
    convert: Convert
    ident: Callable[[Any], str] = str  # what "!x" matches and what de-duplicates


@dataclass(frozen=True, slots=True)
class _Table:
    key: Convert
    value: Convert


_Field = _Scalar | _List | _Table

_SCHEMA: dict[str, _Field | dict[str, _Field]] = {
    "description": _Scalar(_string),
    "extends": _Scalar(_string),
    "hostname": _Scalar(_hostname),
    "user": {
        "name": _Scalar(_username),
        "uid": _Scalar(_id),
        "gid": _Scalar(_id),
        "home": _Scalar(_home),
    },
    "filesystem": {
        "root_size": _Scalar(_size),
        "tmp_size": _Scalar(_size),
        "workspace_size": _Scalar(_size),
        "home_size": _Scalar(_size),
        "shm_size": _Scalar(_size),
        "workdir": _Scalar(_abs_path),
        "system": _List(_abs_path),
        "etc": _List(_etc_entry),
        "binds": _List(_bind, ident=lambda b: b.dst),
        "tmpfs": _Table(_abs_path, _size),
    },
    "network": {
        "mode": _Scalar(_network_mode),
        "allow": _List(_allow_rule),
        "hosts": _Table(_hosts_name, _hosts_address),
    },
    "seccomp": {
        "allow": _List(_syscall_entry),
        "deny": _List(_syscall_entry),
        "kill": _List(_syscall_entry),
        "default_errno": _Scalar(_errno_value),
        "errno": _Table(_syscall_entry, _errno_value),
        "allow_namespaces": _Scalar(_boolean),
        "allow_openat2": _Scalar(_boolean),
        "socket_families": _List(_family),
    },
    "limits": {
        "memory": _Scalar(_limit_size),
        "cpus": _Scalar(_limit_cpus),
        "pids": _Scalar(_limit_pids),
        "timeout": _Scalar(_limit_timeout),
        "inotify_instances": _Scalar(_limit_count),
        "inotify_watches": _Scalar(_limit_count),
    },
    "env": {"pass": _List(_env_pattern), "set": _Table(_env_name, _string)},
}


def _all_leaf_keys() -> dict[str, str]:
    """leaf key -> the table it belongs to, for "memory belongs in [limits]" hints."""
    out: dict[str, str] = {}
    for table, spec in _SCHEMA.items():
        if isinstance(spec, dict):
            for k in spec:
                out.setdefault(k, table)
    return out


# --------------------------------------------------------------------------- one layer


@dataclass(frozen=True, slots=True)
class _Item:
    value: Any
    where: _Where


@dataclass(slots=True)
class _Layer:
    source: _Source
    extends: _Item | None = None
    scalars: dict[str, _Item] = field(default_factory=dict)
    # key -> [(remove?, ident, item)]
    lists: dict[str, list[tuple[bool, str, _Item]]] = field(default_factory=dict)
    tables: dict[str, list[tuple[bool, str, _Item]]] = field(default_factory=dict)


def _unknown_key(k: str, siblings: Iterable[str], w: _Where, table: str) -> NoReturn:
    hint = did_you_mean(k, siblings)
    elsewhere = _all_leaf_keys().get(k)
    if not hint and elsewhere and elsewhere != table:
        hint = f"'{k}' belongs in [{elsewhere}]"
    where = f"[{table}]" if table else "the top level"
    valid = ", ".join(sorted(siblings))
    w.fail(f"unknown key {k!r} in {where}", fix=(hint + "; " if hint else "") + f"valid keys: {valid}")


def _parse_layer(data: Mapping[str, Any], source: _Source) -> _Layer:
    layer = _Layer(source)
    root = _Where(source, ())
    for top, value in data.items():
        spec = _SCHEMA.get(top)
        if spec is None:
            _unknown_key(top, _SCHEMA, root.at(top), "")
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                root.at(top).fail(f"expected a table, found {_type_name(value)}",
                                  fix=f"write the settings under a [{top}] header")
            for k, v in value.items():
                if k not in spec:
                    _unknown_key(k, spec, root.at(top, k), top)
                _parse_field(layer, f"{top}.{k}", spec[k], v, root.at(top, k))
        elif top == "extends":
            layer.extends = _Item(_string(value, root.at(top)), root.at(top))
        else:
            _parse_field(layer, top, spec, value, root.at(top))
    return layer


def _parse_field(layer: _Layer, key: str, spec: _Field, value: Any, w: _Where) -> None:
    if isinstance(spec, _Scalar):
        layer.scalars[key] = _Item(spec.convert(value, w), w)
    elif isinstance(spec, _List):
        if not isinstance(value, list):
            w.fail(f"expected a list, found {_type_name(value)}",
                   fix=f"write a list in brackets: {key.rsplit('.', 1)[-1]} = [{value!r}]")
        entries = layer.lists.setdefault(key, [])
        for i, raw in enumerate(value):
            iw = w.at(i)
            if isinstance(raw, str) and raw.startswith("!"):
                target = raw[1:]
                entries.append((True, spec.ident(spec.convert(target, iw)), _Item(target, iw)))
            else:
                converted = spec.convert(raw, iw)
                entries.append((False, spec.ident(converted), _Item(converted, iw)))
    else:
        if not isinstance(value, dict):
            w.fail(f"expected a table, found {_type_name(value)}",
                   fix=f'write a table: {key.rsplit(".", 1)[-1]} = {{ name = "value" }}')
        entries = layer.tables.setdefault(key, [])
        for k, raw in value.items():
            kw = w.at(k)
            if k.startswith("!"):
                entries.append((True, spec.key(k[1:], kw), _Item(None, kw)))
            else:
                entries.append((False, spec.key(k, kw), _Item(spec.value(raw, kw), kw)))


# --------------------------------------------------------------------------- files


def _read(path: Path) -> tuple[dict[str, Any], _Source]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ProfileError("profile file not found", file=file,
                           fix="check the path, or `flue profiles list`") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError("cannot read the profile", file=file, detail=str(err)) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(err))
        raise ProfileError(
            f"not valid TOML: {err}", file=file, line=int(m.group(1)) if m else None,
            fix="fix the syntax at the line and column shown (strings need quotes, "
            "tables are [name], lists are [a, b])",
        ) from err
    return data, _Source(file, text)


def _is_path(ref: str) -> bool:
    return "/" in ref or ref.endswith(".toml")


def _profile_files(dirs: Sequence[Path]) -> list[tuple[str, Path, bool]]:
    """(name, path, builtin) of every profile in ``dirs``, in search order."""
    builtin = builtin_profile_dir()
    out = []
    for d in dirs:
        try:
            files = sorted(d.glob("*.toml"))
        except OSError:
            continue
        for f in files:
            if d == builtin and f.name == _groups.GROUPS_FILE:
                continue
            out.append((f.stem, f, d == builtin))
    return out


def _find(name: str, dirs: Sequence[Path], *, skip: Path | None = None) -> Path | None:
    for d in dirs:
        candidate = d / f"{name}.toml"
        if candidate.is_file() and (skip is None or candidate.resolve() != skip.resolve()):
            return candidate
    return None


def _not_found(name: str, dirs: Sequence[Path], where: _Where | None) -> ProfileError:
    names = sorted({n for n, _, _ in _profile_files(dirs)})
    hint = did_you_mean(name, names)
    title = f"no profile named {name!r}"
    fix = (hint + " " if hint else "") + ("available: " + ", ".join(names) if names else "")
    detail = "searched: " + ", ".join(str(d) for d in dirs)
    if where is not None:
        return where.error(title, fix=fix, detail=detail)
    return ProfileError(title, fix=fix, detail=detail)


def _chain(start: Path, dirs: Sequence[Path]) -> list[_Layer]:
    """The layers of ``start`` and everything it extends, base first."""
    builtin = builtin_profile_dir().resolve()
    layers: list[_Layer] = []
    seen: list[Path] = []
    path = start
    while True:
        resolved = path.resolve()
        if resolved in seen:
            names = " -> ".join(str(p) for p in seen + [resolved])
            ext = layers[-1].extends
            assert ext is not None
            ext.where.fail(f"profiles extend each other in a cycle: {names}",
                           fix="remove `extends` from one of these files")
        seen.append(resolved)
        data, source = _read(path)
        layer = _parse_layer(data, source)
        layers.append(layer)
        if layer.extends is None:
            break
        ref: str = layer.extends.value
        if _is_path(ref):
            target = (path.parent / os.path.expanduser(ref)).resolve()
            if not target.is_file():
                layer.extends.where.fail(f"extends {ref!r}: no such file ({target})",
                                         fix="a path in extends is relative to this file")
            path = target
        else:
            # a built-in extends built-ins only; a user's profile may extend any profile,
            # but not itself (so ~/.config/flue/profiles/default.toml can extend "default")
            search = [builtin_profile_dir()] if resolved.parent == builtin else list(dirs)
            found = _find(ref, search, skip=resolved)
            if found is None:
                raise _not_found(ref, search, layer.extends.where)
            path = found
    layers.reverse()
    return layers


# --------------------------------------------------------------------------- merging


@dataclass(slots=True)
class _Merged:
    scalars: dict[str, _Item] = field(default_factory=dict)
    lists: dict[str, dict[str, _Item]] = field(default_factory=dict)
    tables: dict[str, dict[str, _Item]] = field(default_factory=dict)
    last_set: dict[str, _Where] = field(default_factory=dict)  # list key -> last layer's key


def _merge(layers: Sequence[_Layer]) -> _Merged:
    m = _Merged()
    for layer in layers:
        m.scalars.update(layer.scalars)
        for kind, merged in (("list", m.lists), ("table", m.tables)):
            entries_by_key = layer.lists if kind == "list" else layer.tables
            for key, entries in entries_by_key.items():
                acc = merged.setdefault(key, {})
                m.last_set[key] = _Where(layer.source, tuple(key.split(".")))
                for remove, ident, item in entries:
                    if not remove:
                        acc[ident] = item
                    elif ident in acc:
                        del acc[ident]
                    else:
                        shown = item.where.path[-1] if kind == "table" else f"!{item.value}"
                        hint = did_you_mean(ident, acc)
                        fix = (hint + " " if hint else "") + (
                            "a '!' entry removes an entry inherited through extends"
                            + ("; to refuse a syscall an inherited group allows, add it to deny"
                               if key.startswith("seccomp.") and kind == "list" else "")
                        )
                        item.where.fail(f"{shown!r} removes nothing: no inherited {key} entry "
                                        f"{ident!r}", fix=fix)
    return m


# --------------------------------------------------------------------------- the profile


def _build(name: str, chain: Sequence[str], merged: _Merged) -> Profile:
    s, lists, tables = merged.scalars, merged.lists, merged.tables

    def scalar(key: str, default: Any) -> Any:
        item = s.get(key)
        return default if item is None else item.value

    def values(key: str, default: tuple[Any, ...]) -> tuple[Any, ...]:
        if key not in lists:
            return default
        return tuple(item.value for item in lists[key].values())

    fs_default, env_default, sc_default = FilesystemPolicy(), EnvPolicy(), SeccompPolicy()
    filesystem = FilesystemPolicy(
        root_size=scalar("filesystem.root_size", fs_default.root_size),
        tmp_size=scalar("filesystem.tmp_size", fs_default.tmp_size),
        workspace_size=scalar("filesystem.workspace_size", fs_default.workspace_size),
        home_size=scalar("filesystem.home_size", fs_default.home_size),
        shm_size=scalar("filesystem.shm_size", fs_default.shm_size),
        workdir=scalar("filesystem.workdir", fs_default.workdir),
        system=values("filesystem.system", fs_default.system),
        etc=values("filesystem.etc", fs_default.etc),
        binds=values("filesystem.binds", fs_default.binds),
        tmpfs=tuple((k, i.value) for k, i in tables.get("filesystem.tmpfs", {}).items()),
    )
    user_default = UserPolicy()
    user = UserPolicy(
        name=scalar("user.name", user_default.name),
        uid=scalar("user.uid", user_default.uid),
        gid=scalar("user.gid", user_default.gid),
        home=scalar("user.home", user_default.home),
    )
    limits = Limits(
        memory=scalar("limits.memory", None),
        cpus=scalar("limits.cpus", None),
        pids=scalar("limits.pids", None),
        timeout=scalar("limits.timeout", None),
        inotify_instances=scalar("limits.inotify_instances", Limits().inotify_instances),
        inotify_watches=scalar("limits.inotify_watches", Limits().inotify_watches),
    )
    env = EnvPolicy(
        passthrough=values("env.pass", env_default.passthrough),
        set=tuple((k, i.value) for k, i in tables.get("env.set", {}).items()),
    )
    return Profile(
        name=name,
        source=chain[-1] if chain else None,
        chain=tuple(chain),
        description=scalar("description", ""),
        hostname=scalar("hostname", Profile.__dataclass_fields__["hostname"].default),
        filesystem=filesystem,
        network=_build_network(merged),
        seccomp=_build_seccomp(merged, sc_default),
        limits=limits,
        env=env,
        user=user,
    )


def _build_network(merged: _Merged) -> NetworkPolicy:
    from engine.network.policy import MAX_PORTS, Allowlist

    mode_item = merged.scalars.get("network.mode")
    allow = tuple(item.value for item in merged.lists.get("network.allow", {}).values())
    ports = Allowlist(allow).ports()
    if len(ports) > MAX_PORTS:
        where = merged.last_set["network.allow"]
        where.fail(f"the allowlist names {len(ports)} different ports; at most {MAX_PORTS}",
                   fix="the sandbox listens on each allowed port: allow fewer distinct ports")
    hosts = tuple((k, i.value) for k, i in merged.tables.get("network.hosts", {}).items())
    return NetworkPolicy(mode=mode_item.value if mode_item else NetworkPolicy().mode,
                         allow=allow, hosts=hosts)


def _build_seccomp(merged: _Merged, default: SeccompPolicy) -> SeccompPolicy:
    lists, tables = merged.lists, merged.tables
    allow_items = lists.get("seccomp.allow", {})
    deny_items = lists.get("seccomp.deny", {})
    kill_items = lists.get("seccomp.kill", {})
    deny = _groups.expand_syscalls(deny_items)
    kill = _groups.expand_syscalls(kill_items)
    allow = _groups.expand_syscalls(allow_items) - deny - kill

    # per-syscall errno answers: groups first, so a plain name beside a group wins
    errno_items = tables.get("seccomp.errno", {})
    answers: dict[str, tuple[int, _Item]] = {}
    for entry, item in sorted(errno_items.items(), key=lambda kv: not kv[0].startswith("@")):
        for name in _groups.expand_syscalls([entry]):
            answers[name] = (item.value, item)
    for name, (_, item) in answers.items():
        if name in allow:
            item.where.fail(
                f"errno for {name} would never be used: the profile allows {name}",
                fix=f'an errno entry only sets the answer to a refused syscall; add "{name}" to '
                "seccomp.deny, or remove the errno entry",
            )

    # the launcher runs these between loading the filter and exec: refusing one stops everything
    for name in LAUNCHER_SYSCALLS:
        if name in allow:
            continue
        culprit = _covering(name, kill_items) or _covering(name, deny_items)
        where = culprit.where if culprit else merged.last_set.get("seccomp.allow")
        how = "kills on" if culprit and culprit in kill_items.values() else "refuses"
        title = f"the profile {how} {name}, which flue's launcher needs to start the command: nothing could run"
        fix = ('allow "@basic-io", "@process" and "@signal" (or extend "default"), and do not '
               f"deny or kill {name}")
        if where is None:
            raise ProfileError(title, key="seccomp.allow", fix=fix)
        where.fail(title, fix=fix)

    return SeccompPolicy(
        allow=allow,
        deny=deny,
        default_errno=merged.scalars["seccomp.default_errno"].value
        if "seccomp.default_errno" in merged.scalars else default.default_errno,
        errno=tuple(sorted((n, e) for n, (e, _) in answers.items())),
        kill=kill,
        allow_spec=tuple(allow_items),
        deny_spec=tuple(deny_items),
        allow_namespaces=merged.scalars["seccomp.allow_namespaces"].value
        if "seccomp.allow_namespaces" in merged.scalars else default.allow_namespaces,
        allow_openat2=merged.scalars["seccomp.allow_openat2"].value
        if "seccomp.allow_openat2" in merged.scalars else default.allow_openat2,
        socket_families=tuple(i.value for i in lists["seccomp.socket_families"].values())
        if "seccomp.socket_families" in lists else default.socket_families,
    )


def _covering(name: str, items: Mapping[str, _Item]) -> _Item | None:
    for entry, item in items.items():
        if name == entry or (entry.startswith("@") and name in _groups.expand_syscalls([entry])):
            return item
    return None


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    name: str
    path: Path
    description: str
    builtin: bool
    shadowed: bool = False  # an earlier directory of the search path has a profile of this name
    error: str = ""  # why the file could not be read ("" when it parses)


def load_profile(
    name_or_path: str,
    *,
    search_path: Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Profile:
    """Read, layer and validate a profile.

    ``name_or_path``: a profile name looked up in ``search_path`` (default: the user's
    ``~/.config/flue/profiles``), then among the built-ins; or a path to a TOML file (anything
    containing "/" or ending in ".toml"). ``overrides`` is a nested dict shaped like the TOML,
    e.g. ``{"limits": {"memory": "64M"}}``, layered on top and validated the same way.
    Raises ``ProfileError`` naming the file, line and key of the first problem.
    """
    dirs = search_dirs(search_path)
    if _is_path(name_or_path):
        path = Path(os.path.expanduser(name_or_path))
        name = path.stem
        if not path.is_file():
            raise ProfileError("profile file not found", file=str(path),
                               fix="check the path, or `flue profiles list` for profile names")
    else:
        name = name_or_path
        found = _find(name, dirs)
        if found is None:
            raise _not_found(name, dirs, None)
        path = found
    layers = _chain(path, dirs)
    if overrides:
        extra = _parse_layer(dict(overrides), _Source(OVERRIDES))
        if extra.extends is not None:
            extra.extends.where.fail("overrides cannot change extends",
                                     fix="load the other profile instead")
        layers.append(extra)
    chain = [layer.source.file for layer in layers if layer.source.file != OVERRIDES]
    return _build(name, chain, _merge(layers))


def list_profiles(search_path: Sequence[str | Path] | None = None) -> list[ProfileInfo]:
    """Every profile in the search path and the built-ins, in lookup order.

    A file that does not parse is listed with ``error`` set rather than raising.
    """
    seen: set[str] = set()
    out = []
    for name, path, builtin in _profile_files(search_dirs(search_path)):
        description, error = "", ""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            desc = data.get("description", "")
            description = desc if isinstance(desc, str) else ""
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            error = str(err)
        out.append(ProfileInfo(name, path, description, builtin, name in seen, error))
        seen.add(name)
    return out
