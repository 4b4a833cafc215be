"""Editing a profile file in place: the user's comments, order and spacing survive.

A ``ProfileDocument`` holds one profile file as a tomlkit document and the text it was read
from. Operations (allow a syscall or a group, keep one denied with an errno, network mode
and allowlist, limits, binds, env) change the document the smallest way that has the effect, and return a
one-line description of what they did. Nothing touches the disk until ``save``:

- the edited text is validated first with the real loader (``resolve``); an invalid profile
  raises ``ProfileError`` and nothing is written;
- the write is atomic: a temporary file in the target's directory, fsync, rename; the
  previous version is kept as ``NAME.toml.bak``;
- a built-in profile is never modified: saving one writes a user profile (by default
  ``$XDG_CONFIG_HOME/flue/profiles/NAME.toml``) that is a full copy of the edited text, comments
  included, so what is saved is exactly the diff the user reviewed against the built-in.

``resolve`` turns the in-memory text into a ``Profile`` for a run without saving. The loader
reads files only, so the text goes through a private temporary file (see
docs/requests-from-tui.md for the entry point that would avoid it).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Array, InlineTable, Item, Table
from tomlkit.toml_document import TOMLDocument

from engine.errors import EngineError, ProfileError
from engine.profile import groups as _groups
from engine.profile.loader import NETWORK_MODES, load_profile
from engine.profile.model import Profile
from engine.profile.paths import builtin_profile_dir, search_dirs, user_profile_dir
from engine.profile.sizes import format_duration, format_size

LIMIT_KEYS = ("memory", "cpus", "pids", "timeout")
# the lists whose absence means "the model's default", written out in full when first edited
_MODEL_DEFAULTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("seccomp", "socket_families"): ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"),
}
NOTE = "added in flue-tui"  # the comment put beside entries a user adds from the workbench


class SaveError(EngineError):
    """The profile could not be written (nothing was changed on disk)."""


class EditConflict(SaveError):
    """The file changed on disk since it was opened; saving would lose those changes."""


@dataclass(frozen=True, slots=True)
class SaveResult:
    path: Path
    backup: Path | None  # the previous version, when there was one
    created: bool  # a new file (e.g. the user copy of a built-in)


def _is_path(ref: str) -> bool:
    return "/" in ref or ref.endswith(".toml")


def locate(name_or_path: str, search_path: Sequence[str | Path] | None = None) -> Path:
    """The file a profile name or path refers to, as ``load_profile`` would find it."""
    if _is_path(name_or_path):
        path = Path(os.path.expanduser(name_or_path))
        if not path.is_file():
            raise ProfileError("profile file not found", file=str(path),
                               fix="check the path, or `flue profiles list` for profile names")
        return path
    for d in search_dirs(search_path):
        candidate = d / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    # let the loader produce its did-you-mean error
    load_profile(name_or_path, search_path=search_path)
    raise ProfileError(f"no profile named {name_or_path!r}")  # pragma: no cover


def is_builtin(path: Path) -> bool:
    try:
        return path.resolve().parent == builtin_profile_dir().resolve()
    except OSError:
        return False


# --------------------------------------------------------------------------- loading text


def _retarget(err: ProfileError, temp: str, origin: str) -> ProfileError:
    """The same error, naming the file the user edits instead of the private temporary."""
    title = err.title
    if err.file:
        prefix = err.file + (f":{err.line}" if err.line else "") + ": "
        title = title.removeprefix(prefix)
    if err.key:
        title = title.removesuffix(f" (key '{err.key}')")
    file = origin if err.file == temp else err.file
    new = ProfileError(title.replace(temp, origin), file=file, line=err.line, key=err.key,
                       detail=err.detail.replace(temp, origin), fix=err.fix.replace(temp, origin))
    return new


def load_text(text: str, *, name: str, origin: str | Path | None = None,
              search_path: Sequence[str | Path] | None = None) -> Profile:
    """A ``Profile`` from TOML text that is not (yet) on disk.

    ``origin`` is the file the text stands for: errors name it, ``extends`` by relative path
    resolves beside it, and the returned profile's ``source`` is it.
    """
    origin_s = str(origin) if origin is not None else f"<{name}>"
    try:
        data = tomllib.loads(text)
        ext = data.get("extends")
    except tomllib.TOMLDecodeError:
        ext = None
    here = Path(origin).parent if origin is not None else None
    # a relative path in extends resolves against the file's own directory: load from there
    beside = isinstance(ext, str) and _is_path(ext) and not os.path.isabs(
        os.path.expanduser(ext)) and here is not None and os.access(here, os.W_OK)
    tmpdir = tempfile.mkdtemp(prefix=".flue-edit-", dir=str(here) if beside else None)
    temp = os.path.join(tmpdir, f"{name}.toml")
    if beside:  # a sub-directory would break "../base.toml": put the file itself beside
        temp = os.path.join(str(here), f".{name}.flue-edit-{os.getpid()}.toml")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            prof = load_profile(temp, search_path=search_path)
        except ProfileError as err:
            raise _retarget(err, temp, origin_s) from None
    finally:
        if beside:
            try:
                os.unlink(temp)
            except OSError:
                pass
        shutil.rmtree(tmpdir, ignore_errors=True)
    chain = tuple(origin_s if c == temp else c for c in prof.chain)
    return dataclasses.replace(prof, name=name, source=origin_s, chain=chain)


# --------------------------------------------------------------------------- the document


def _plain(v: Any) -> Any:
    return v.unwrap() if hasattr(v, "unwrap") else v


def _strings(arr: Any) -> list[str]:
    return [str(_plain(x)) for x in arr] if arr is not None else []


def _item(table: Any, key: str) -> Item | None:
    """The tomlkit Item at ``key`` (with its comment), not its plain value."""
    if key not in table:
        return None
    try:
        item = table.item(key)
    except (AttributeError, KeyError):
        item = table.get(key)
    return item if isinstance(item, Item) else None


def _line_of(text: str, key: str) -> str:
    for line in text.splitlines():
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return line
    return ""


class ProfileDocument:
    """One profile file, edited in memory."""

    def __init__(self, text: str, *, name: str, path: Path, builtin: bool = False,
                 search_path: Sequence[str | Path] | None = None) -> None:
        self.name = name
        self.path = path
        self.builtin = builtin
        self.search_path = search_path
        self.saved_text = text
        self.doc: TOMLDocument = tomlkit.parse(text)
        self.log: list[str] = []
        # the comment put beside added entries (flue profiles relax/tighten set their own)
        self.note = NOTE

    @classmethod
    def open(cls, name_or_path: str, *,
             search_path: Sequence[str | Path] | None = None) -> ProfileDocument:
        path = locate(name_or_path, search_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ProfileError("cannot read the profile", file=str(path),
                               detail=str(err)) from err
        return cls(text, name=path.stem, path=path, builtin=is_builtin(path),
                   search_path=search_path)

    # --- text, diff, validation --------------------------------------------------------

    def text(self) -> str:
        return tomlkit.dumps(self.doc)

    @property
    def dirty(self) -> bool:
        return self.text() != self.saved_text

    def diff(self, context: int = 2) -> str:
        """A unified diff of the edits against the saved file ("" when there are none)."""
        label = self.path.name
        return "".join(difflib.unified_diff(
            self.saved_text.splitlines(keepends=True), self.text().splitlines(keepends=True),
            fromfile=f"a/{label} (saved)", tofile=f"b/{label} (edited)", n=context))

    def diff_stat(self) -> tuple[int, int]:
        added = removed = 0
        for line in self.diff(0).splitlines():
            if line.startswith("+") and not line.startswith("+++"):
                added += 1
            elif line.startswith("-") and not line.startswith("---"):
                removed += 1
        return added, removed

    def resolve(self) -> Profile:
        """The profile the edited text describes; ``ProfileError`` if it is not valid."""
        return load_text(self.text(), name=self.name, origin=self.path,
                         search_path=self.search_path)

    def validate(self) -> ProfileError | None:
        try:
            self.resolve()
        except ProfileError as err:
            return err
        return None

    def revert(self) -> None:
        self.doc = tomlkit.parse(self.saved_text)
        self.log.append("reverted to the saved file")

    def _done(self, what: str) -> str:
        self.log.append(what)
        return what

    # --- low-level helpers ----------------------------------------------------------------

    def _table(self, name: str, create: bool = True) -> Table | None:
        t = self.doc.get(name)
        if isinstance(t, (Table, InlineTable)):
            return t  # type: ignore[return-value]
        if t is None and create:
            self.doc.add(tomlkit.nl())
            self.doc.add(name, tomlkit.table())
            made: Table = self.doc[name]
            return made
        return None

    def _saved_item(self, section: str, key: str) -> Item | None:
        """``[section] key`` as the saved file has it (with its comment)."""
        table = tomlkit.parse(self.saved_text).get(section)
        return _item(table, key) if isinstance(table, (Table, InlineTable)) else None

    def _set_scalar(self, section: str, key: str, value: Any) -> None:
        """Set ``[section] key = value``, its trailing comment kept at its column. A comment
        describes the value beside it: once the value differs from the saved file's, the
        comment says so instead (``# changed in flue-tui (was "none")``, or the edit's own
        note), and the saved comment comes back with the saved value."""
        table = self._table(section)
        assert table is not None
        old = _item(table, key)  # the Item: table.get() gives a plain bool for a Bool
        if old is None:
            table[key] = value
            return
        old_line = _line_of(tomlkit.dumps(table) if isinstance(table, Table) else "", key)
        comment_col = old_line.find("#") if isinstance(old, Item) and old.trivia.comment else -1
        table[key] = value
        new = _item(table, key)
        saved = self._saved_item(section, key)
        if isinstance(new, Item) and saved is not None and saved.trivia.comment:
            if _plain(new) == _plain(saved):
                new.trivia.comment = saved.trivia.comment
            else:
                note = "changed in flue-tui" if self.note == NOTE else self.note
                new.trivia.comment = f"# {note} (was {saved.as_string().strip()})"
        elif isinstance(old, Item) and isinstance(new, Item) and old.trivia.comment:
            new.trivia.comment = old.trivia.comment
        if isinstance(old, Item) and isinstance(new, Item) and new.trivia.comment and \
                comment_col > 0:
            new_line = f"{key} = {new.as_string()}"
            indent = len(old_line) - len(old_line.lstrip())
            pad = comment_col - indent - len(new_line) if comment_col > 0 else 0
            new.trivia.comment_ws = " " * max(pad, 1) if comment_col > 0 else old.trivia.comment_ws

    def _array(self, section: str, key: str, *, inherit_default: bool = True) -> Array:
        """The document's own list at ``[section] key``, created when absent."""
        table = self._table(section)
        assert table is not None
        arr = table.get(key)
        if isinstance(arr, Array):
            return arr
        seed: list[str] = []
        if inherit_default and not self.extends and (section, key) in _MODEL_DEFAULTS:
            seed = list(_MODEL_DEFAULTS[(section, key)])
        new = tomlkit.array()
        new.extend(seed)
        table[key] = new
        placed: Array = table[key]
        return placed

    def _append(self, arr: Array, value: str, note: str | None = None) -> None:
        """Append to a list in its own style: one entry a line (with a note) or inline."""
        note = self.note if note is None else note
        if "\n" in arr.as_string():
            indent = "    "
            # the indent of the entries (not of a comment-only line among them)
            m = re.search(r"\n([ \t]+)[^\s#]", arr.as_string())
            if m:
                indent = m.group(1)
            arr.add_line(value, indent=indent, comment=note or None)
            if note:
                self._align_last_comment(arr, indent, value)
            # tomlkit puts the closing bracket right after the new entry: keep it on its line
            if not arr.as_string().rstrip().endswith("\n]") and not re.search(
                    r"\n\s*\]\s*$", arr.as_string()):
                arr.add_line(indent="")
        else:
            arr.append(value)

    @staticmethod
    def _align_last_comment(arr: Array, indent: str, value: str) -> None:
        """Line the new entry's comment up with its neighbours' comments."""
        cols = [line.index("#") for line in arr.as_string().splitlines()[:-1]
                if "#" in line and line.strip().startswith('"')]
        if not cols:
            return
        col = max(set(cols), key=cols.count)
        width = len(indent) + len(tomlkit.item(value).as_string()) + 1
        try:
            from tomlkit.items import Comment

            groups = reversed(arr._value)
            last = next(c for g in groups for c in ([g] if isinstance(g, Comment) else
                                                    [getattr(g, "comment", None)])
                        if isinstance(c, Comment))
            last.trivia.indent = " " * max(col - width, 1)
        except (StopIteration, AttributeError):  # pragma: no cover - tomlkit internals moved
            pass

    def _remove(self, arr: Array, value: str) -> bool:
        for i, item in enumerate(arr):
            if str(_plain(item)) == value:
                del arr[i]
                return True
        return False

    def _replace_group(self, arr: Array, group: str, without: str, why: str) -> None:
        """Replace ``group`` in ``arr`` by its members minus ``without``."""
        members = [s for s in _groups.syscall_groups()[group].syscalls if s != without]
        self._remove(arr, group)
        for i, m in enumerate(members):
            self._append(arr, m, f"{group} without {without} ({why})" if i == 0 else "")

    def _set_inline_key(self, section: str, key: str, name: str, value: str | None) -> None:
        """Set (or with ``None`` remove) ``name`` in the table ``[section] key``."""
        table = self._table(section)
        assert table is not None
        cur = table.get(key)
        if isinstance(cur, Table):  # a [section.key] table: edit it in place
            if value is None:
                cur.pop(name, None)
            else:
                cur[name] = value
            return
        entries: dict[str, Any] = {}
        if isinstance(cur, InlineTable):
            entries = {str(k): _plain(v) for k, v in cur.items()}
        if value is None:
            entries.pop(name, None)
        else:
            entries[name] = value
        body = ", ".join(f"{tomlkit.key(k).as_string()} = {tomlkit.item(v).as_string()}"
                         for k, v in entries.items())
        new = tomlkit.parse(f"x = {{ {body} }}" if body else "x = {}")["x"]
        if cur is None:
            table[key] = new
            return
        comment, comment_ws = cur.trivia.comment, cur.trivia.comment_ws
        old_len = len(f"{key} = {cur.as_string()}")
        table[key] = new
        placed = table[key]
        saved = self._saved_item(section, key)
        if saved is not None and saved.trivia.comment and isinstance(saved, InlineTable):
            before = {str(k): _plain(v) for k, v in saved.items()}
            if entries == before:
                comment = saved.trivia.comment
            elif any(entries.get(k) != v for k, v in before.items()):
                # an entry the comment may be about was taken out or changed
                note = "changed in flue-tui" if self.note == NOTE else self.note
                comment = f"# {note} (was {saved.as_string().strip()})"
        if comment:
            placed.trivia.comment = comment
            width = len(f"{key} = {placed.as_string()}")
            pad = old_len + len(comment_ws) - width
            placed.trivia.comment_ws = " " * max(pad, 1)

    # --- what the profile inherits --------------------------------------------------------

    @property
    def extends(self) -> str | None:
        ext = self.doc.get("extends")
        return str(_plain(ext)) if ext is not None else None

    def _parent(self) -> Profile | None:
        ref = self.extends
        if ref is None:
            return None
        try:
            if _is_path(ref):
                return load_profile(str((self.path.parent / ref).resolve()),
                                    search_path=self.search_path)
            if self.builtin:
                return load_profile(str(builtin_profile_dir() / f"{ref}.toml"))
            return load_profile(ref, search_path=self.search_path)
        except ProfileError:
            return None

    def _own(self, section: str, key: str) -> list[str]:
        table = self.doc.get(section)
        if not isinstance(table, (Table, InlineTable)):
            return []
        return _strings(table.get(key))

    def _current(self) -> Profile | None:
        try:
            return self.resolve()
        except ProfileError:
            return None

    # --- seccomp ---------------------------------------------------------------------------

    def allow_syscall(self, name: str) -> str:
        """Let ``name`` through: take it out of deny (and of a denied group) and any errno
        entry, then add it to allow unless an allowed group already covers it."""
        if name not in _groups.known_syscalls():
            raise ProfileError(_groups.unknown_entry_message(name),
                               fix="check the name in syscalls(2)")
        cur = self._current()
        if cur is not None and name in cur.seccomp.allow:
            return self._done(f"{name} is already allowed")
        notes: list[str] = []
        self._undeny(name, notes)
        # an errno answer for it would now be an error ("would never be used")
        errno_own = self._errno_entries()
        if name in errno_own:
            self._set_inline_key("seccomp", "errno", name, None)
            notes.append(f"dropped its errno {errno_own[name]}")
        parent = self._parent()
        if parent is not None and any(n == name for n, _ in parent.seccomp.errno) \
                and name not in errno_own:
            self._set_inline_key("seccomp", "errno", f"!{name}", "")
            notes.append("dropped the inherited errno")
        cur = self._current()
        if cur is None or name not in cur.seccomp.allow:
            self._append(self._array("seccomp", "allow"), name)
        return self._done(f"allow {name}" + (f" ({'; '.join(notes)})" if notes else ""))

    def _undeny(self, name: str, notes: list[str]) -> None:
        own = self._own("seccomp", "deny")
        if own:
            arr = self._array("seccomp", "deny")
            if name in own:
                self._remove(arr, name)
                notes.append("removed from deny")
            for entry in own:
                if entry.startswith("@") and name in _groups.syscall_groups().get(
                        entry, _groups.Group(entry, "", ())).syscalls:
                    self._replace_group(arr, entry, name, "allowed in flue-tui")
                    notes.append(f"{entry} in deny split")
        parent = self._parent()
        if parent is not None:
            for entry in parent.seccomp.deny_spec:
                covers = entry == name or (entry.startswith("@") and name in
                                           _groups.syscall_groups()[entry].syscalls)
                if not covers:
                    continue
                arr = self._array("seccomp", "deny")
                self._append(arr, f"!{entry}", f"inherited {entry} not refused (flue-tui)")
                if entry.startswith("@"):
                    for i, m in enumerate(s for s in _groups.syscall_groups()[entry].syscalls
                                          if s != name):
                        self._append(arr, m, f"{entry} without {name}" if i == 0 else "")
                notes.append(f"inherited {entry} lifted")

    def _errno_entries(self) -> dict[str, str]:
        table = self.doc.get("seccomp")
        if not isinstance(table, (Table, InlineTable)):
            return {}
        errno = table.get("errno")
        if not isinstance(errno, (Table, InlineTable)):
            return {}
        return {str(k): str(_plain(v)) for k, v in errno.items()}

    def allow_group(self, group: str) -> str:
        """Allow every syscall of ``group``: the group goes into allow, and the deny entries
        that name it or its members (own, or inherited through extends) are lifted."""
        groups = _groups.syscall_groups()
        if group not in groups:
            raise ProfileError(_groups.unknown_entry_message(group),
                               fix="`flue explain --groups` lists the groups")
        members = set(groups[group].syscalls)
        notes: list[str] = []
        lifted = [e for e in self._own("seccomp", "deny") if e == group or e in members]
        for entry in lifted:
            self._remove(self._array("seccomp", "deny"), entry)
        if lifted:
            notes.append("lifted deny " + ", ".join(lifted))
        parent = self._parent()
        if parent is not None:
            inherited = [e for e in parent.seccomp.deny_spec if e == group or e in members]
            for entry in inherited:
                self._append(self._array("seccomp", "deny"), f"!{entry}",
                             f"inherited {entry} not refused ({NOTE})")
            if inherited:
                notes.append("lifted inherited deny " + ", ".join(inherited))
        for name in list(self._errno_entries()):
            if name in members or name == group:
                self._set_inline_key("seccomp", "errno", name, None)
                notes.append(f"dropped errno for {name}")
        if group not in self._own("seccomp", "allow"):
            self._append(self._array("seccomp", "allow"), group)
        return self._done(f"allow {group}" + (f" ({'; '.join(notes)})" if notes else ""))

    def deny_syscall(self, name: str, errno: str = "EPERM") -> str:
        """Keep ``name`` refused, answering ``errno`` (an errno name like "EACCES")."""
        if name not in _groups.known_syscalls():
            raise ProfileError(_groups.unknown_entry_message(name),
                               fix="check the name in syscalls(2)")
        errno = errno.upper()
        cur = self._current()
        default = "EPERM"
        if cur is not None:
            import errno as _errno

            default = _errno.errorcode.get(cur.seccomp.default_errno, "EPERM")
        notes: list[str] = []
        if cur is not None and name in cur.seccomp.allow:
            # allowed: an explicit deny entry wins over any allow
            self._append(self._array("seccomp", "deny"), name)
            notes.append("added to deny")
        if errno == default:
            if name in self._errno_entries():
                self._set_inline_key("seccomp", "errno", name, None)
            elif not notes and name not in self._own("seccomp", "deny"):
                self._append(self._array("seccomp", "deny"), name)
                notes.append("explicit")
        else:
            self._set_inline_key("seccomp", "errno", name, errno)
        return self._done(f"deny {name} with {errno}" + (f" ({'; '.join(notes)})" if notes else ""))

    def remove_allow(self, entry: str) -> str:
        """Take ``entry`` (a syscall or "@group") out of the allow list."""
        own = self._own("seccomp", "allow")
        if entry in own:
            self._remove(self._array("seccomp", "allow"), entry)
            return self._done(f"no longer allow {entry}")
        parent = self._parent()
        if parent is not None and entry in parent.seccomp.allow_spec:
            self._append(self._array("seccomp", "allow"), f"!{entry}")
            return self._done(f"no longer allow inherited {entry}")
        raise ProfileError(f"{entry!r} is not in the allow list",
                           fix="allowed through a group? deny it instead")

    def allow_socket_family(self, family: str) -> str:
        """Let ``socket()`` create sockets of ``family`` (e.g. "AF_PACKET")."""
        if family in self._own("seccomp", "socket_families"):
            return self._done(f"{family} is already allowed")
        self._append(self._array("seccomp", "socket_families"), family)
        return self._done(f"allow socket family {family}")

    def allow_namespaces(self, allow: bool = True) -> str:
        """``[seccomp] allow_namespaces``: whether clone/unshare may create namespaces (and
        clone3, whose flags the filter cannot read, is let through at all)."""
        self._set_scalar("seccomp", "allow_namespaces", allow)
        return self._done("allow namespaces" if allow else "no namespaces")

    # --- network, limits, mounts, env ----------------------------------------------------------

    def set_network(self, mode: str) -> str:
        if mode not in NETWORK_MODES:
            raise ProfileError(f"unknown network mode {mode!r}",
                               fix="use one of " + ", ".join(NETWORK_MODES))
        self._set_scalar("network", "mode", mode)
        return self._done(f"network {mode}")

    def _rule(self, rule: str) -> str:
        from engine.network.policy import RuleError, parse_rule

        try:
            return parse_rule(rule).text
        except RuleError as err:
            raise ProfileError(str(err), key="network.allow", fix=err.fix) from None

    def _own_rules(self) -> dict[str, str]:
        """This file's own allow entries: normalised rule -> the entry as written."""
        from engine.network.policy import RuleError, parse_rule

        out = {}
        for entry in self._own("network", "allow"):
            neg = entry.startswith("!")
            try:
                out[("!" if neg else "") + parse_rule(entry[1:] if neg else entry).text] = entry
            except RuleError:
                continue
        return out

    def allow_domain(self, rule: str) -> str:
        """Let the sandbox reach ``rule`` ("pypi.org", "*.example.com", "api.example.org:8443"):
        add it to the network allowlist, switching the mode to allowlist when needed."""
        text = self._rule(rule)
        cur = self._current()
        switched = ""
        if cur is None or cur.network.mode != "allowlist":
            self._set_scalar("network", "mode", "allowlist")
            switched = " (network mode allowlist)"
        own = self._own_rules()
        if f"!{text}" in own:  # an inherited rule this file removed: stop removing it
            self._remove(self._array("network", "allow"), own[f"!{text}"])
        elif cur is not None and text in cur.network.allow:
            return self._done(f"{text} is already allowed{switched}")
        else:
            self._append(self._array("network", "allow"), text)
        return self._done(f"allow {text}{switched}")

    def remove_domain(self, rule: str) -> str:
        """Take ``rule`` out of the network allowlist (an inherited one with "!rule")."""
        text = self._rule(rule)
        own = self._own_rules()
        if text in own:
            self._remove(self._array("network", "allow"), own[text])
            return self._done(f"no longer allow {text}")
        parent = self._parent()
        if parent is not None and text in parent.network.allow:
            self._append(self._array("network", "allow"), f"!{text}")
            return self._done(f"no longer allow inherited {text}")
        raise ProfileError(f"{text!r} is not in the network allowlist", key="network.allow",
                           fix="remove an entry as it is listed in [network] allow")

    def set_limit(self, key: str, value: str | float | None) -> str:
        """``value``: "512M" / 1.5 / 256 / "30s", or ``None`` (or "none") for no limit."""
        if key not in LIMIT_KEYS:
            raise ProfileError(f"unknown limit {key!r}", fix="one of " + ", ".join(LIMIT_KEYS))
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            self._set_scalar("limits", key, "none")
            return self._done(f"no {key} limit")
        if isinstance(value, str):
            v = value.strip()
            if key in ("cpus", "pids"):
                try:
                    num: float = float(v)
                except ValueError:
                    raise ProfileError(f"bad {key} value {v!r}",
                                       fix="write a number, or none") from None
                value = int(num) if key == "pids" or num == int(num) else num
            else:
                value = v
        self._set_scalar("limits", key, value)
        shown = value
        if key == "memory" and isinstance(value, int):
            shown = format_size(value)
        if key == "timeout" and isinstance(value, (int, float)):
            shown = format_duration(float(value))
        return self._done(f"{key} limit {shown}")

    def add_bind(self, src: str, dst: str | None = None, mode: str = "ro") -> str:
        dst = dst or src
        spec = f"{src}:{dst}:{mode}" if dst != src or mode != "ro" else src
        arr = self._array("filesystem", "binds", inherit_default=False)
        for entry in _strings(arr):
            parts = entry.split(":")
            if (parts[1] if len(parts) > 1 and parts[1] else parts[0]) == dst:
                self._remove(arr, entry)
        self._append(arr, spec)
        return self._done(f"bind {src} at {dst} ({mode})")

    def remove_bind(self, dst: str) -> str:
        table = self._table("filesystem")
        assert table is not None
        arr = table.get("binds")
        if isinstance(arr, Array):
            for i, item in enumerate(arr):
                v = _plain(item)
                if isinstance(v, dict):
                    item_dst = v.get("dst", v.get("src"))
                else:
                    parts = str(v).split(":")
                    item_dst = parts[1] if len(parts) > 1 and parts[1] else parts[0]
                if item_dst == dst:
                    del arr[i]
                    return self._done(f"unbind {dst}")
        parent = self._parent()
        if parent is not None and any(b.dst == dst for b in parent.filesystem.binds):
            self._append(self._array("filesystem", "binds", inherit_default=False), f"!{dst}")
            return self._done(f"unbind inherited {dst}")
        raise ProfileError(f"no bind at {dst}", fix="see the binds in [filesystem]")

    def set_env(self, key: str, value: str | None) -> str:
        """Set ``key=value`` in ``[env] set``; ``None`` unsets it."""
        if value is None:
            own = self._env_set()
            if key in own:
                self._set_inline_key("env", "set", key, None)
                return self._done(f"unset {key}")
            self._set_inline_key("env", "set", f"!{key}", "")
            return self._done(f"unset inherited {key}")
        self._set_inline_key("env", "set", key, value)
        return self._done(f"env {key}={value}")

    def _env_set(self) -> dict[str, str]:
        table = self.doc.get("env")
        if not isinstance(table, (Table, InlineTable)):
            return {}
        s = table.get("set")
        if not isinstance(s, (Table, InlineTable)):
            return {}
        return {str(k): str(_plain(v)) for k, v in s.items()}

    # --- saving --------------------------------------------------------------------------

    def default_save_path(self) -> Path:
        """Where ``save()`` writes: the file itself, or for a built-in the user's copy."""
        if self.builtin:
            return user_profile_dir() / f"{self.name}.toml"
        return self.path

    def save(self, target: str | Path | None = None, *, force: bool = False) -> SaveResult:
        """Validate, then write atomically with a backup. Returns where it went.

        ``target``: a path, a bare profile name (saved in the user's profile directory), or
        ``None`` for ``default_save_path()``. Raises ``ProfileError`` when the edited text is
        invalid and ``SaveError`` when the file cannot be written; either way nothing is
        changed on disk.
        """
        if target is None:
            dest = self.default_save_path()
        elif isinstance(target, str) and not _is_path(target):
            dest = user_profile_dir() / f"{target}.toml"
        else:
            dest = Path(os.path.expanduser(str(target)))
        if is_builtin(dest) or dest.resolve().parent == builtin_profile_dir().resolve():
            raise SaveError("built-in profiles are never modified",
                            fix=f"save as a user profile, e.g. {user_profile_dir()}/"
                            f"{self.name}.toml")
        text = self.text()
        name = dest.stem
        load_text(text, name=name, origin=dest, search_path=self.search_path)  # raises
        same_file = dest.resolve() == self.path.resolve() if dest.exists() else False
        if same_file and not force:
            try:
                on_disk = dest.read_text(encoding="utf-8")
            except OSError:
                on_disk = self.saved_text
            if on_disk != self.saved_text:
                raise EditConflict(f"{dest} changed on disk since it was opened",
                                   fix="reopen the profile, or save under another name")
        backup = _atomic_write(dest, text)
        created = backup is None
        self.path = dest
        self.name = name
        self.builtin = False
        self.saved_text = text
        self.log.append(f"saved to {dest}")
        return SaveResult(dest, backup, created)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _temp_beside(dest: Path) -> Iterator[tuple[int, str]]:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
    try:
        yield fd, tmp
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _atomic_write(dest: Path, text: str) -> Path | None:
    """Write ``text`` to ``dest`` atomically; the previous version goes to ``dest.bak``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o644
        previous: bytes | None = None
        if dest.exists():
            mode = dest.stat().st_mode & 0o777
            previous = dest.read_bytes()
        backup: Path | None = None
        if previous is not None:
            backup = dest.with_name(dest.name + ".bak")
            with _temp_beside(backup) as (fd, tmp):
                try:
                    _write_all(fd, previous)
                    os.fchmod(fd, mode)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, backup)
        with _temp_beside(dest) as (fd, tmp):
            try:
                _write_all(fd, text.encode("utf-8"))
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        return backup
    except OSError as err:
        raise SaveError(f"cannot write {dest}: {err.strerror or err}",
                        detail=str(err), fix="check the directory's permissions") from err


__all__ = [
    "LIMIT_KEYS",
    "EditConflict",
    "ProfileDocument",
    "SaveError",
    "SaveResult",
    "is_builtin",
    "load_text",
    "locate",
]

