"""Relax and tighten a profile from recorded runs, as hunks a person accepts one by one.

- ``relax(profile, runs)``: from what went wrong in failed runs (``engine.diagnose``), the
  smallest change that fixes each cause: one syscall before a group, one socket family, a
  read-only bind before a read-write one (read-write only when the program wrote there), an
  ``/etc`` entry, a network mode, a limit with headroom.
- ``tighten(profile, runs)``: from runs recorded in learn mode (``flue learn --report``, a
  learned profile's ``.learn.json``, or an events file with a ``learn_summary``), the entries
  nothing used: groups and syscalls, binds and ``/etc`` entries no path went through,
  socket families no ``socket()`` asked for, a network mode no socket needed.

Both return a ``Proposal``: ``hunks`` (each one ``Change`` with its own unified diff against
the file, its title and its reason), ``apply(ids)`` (a ``ProfileDocument`` with the accepted
hunks, ready for ``diff()`` or ``save()``), ``diff(ids)``. The document keeps comments and
order (tomlkit); each line added carries a comment saying why. The TUI shows the hunks with
accept/reject; ``flue profiles relax|tighten`` prints the diff and ``--write`` saves it
(atomically, with a ``.bak``; a built-in is never modified: the user's copy is written).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tomlkit.items import Array

from engine.errors import ProfileError
from engine.profile import groups as _groups
from engine.profile.edit import ProfileDocument
from engine.profile.loader import LAUNCHER_SYSCALLS


@dataclass(frozen=True, slots=True)
class Change:
    """One edit of a profile; ``apply`` performs it on a ``ProfileDocument``."""

    op: str  # see OPS
    arg: str = ""
    value: str = ""
    why: str = ""

    @property
    def title(self) -> str:
        return {
            "allow_syscall": f"allow {self.arg}",
            "allow_group": f"allow {self.arg}",
            "allow_socket_family": f"allow socket family {self.arg}",
            "allow_namespaces": "allow namespaces (clone/unshare with CLONE_NEW*)",
            "add_bind": f"bind {self.arg} ({self.value or 'ro'})",
            "add_etc": f"show /etc/{self.arg}",
            "allow_domain": f"allow the network to reach {self.arg}",
            "set_network": f"network mode {self.value}",
            "set_limit": f"{self.arg} limit {self.value}",
            "remove_allow": f"stop allowing {self.arg}",
            "replace_group": f"allow only the used members of {self.arg}",
            "remove_bind": f"remove the bind at {self.arg}",
            "remove_etc": f"stop showing /etc/{self.arg.removeprefix('/etc/')}",
            "remove_socket_family": f"stop allowing socket family {self.arg}",
        }.get(self.op, f"{self.op} {self.arg} {self.value}".strip())

    def apply(self, doc: ProfileDocument) -> str:
        note = doc.note
        doc.note = self.why[:90] if self.why else note
        try:
            return _apply(self, doc)
        finally:
            doc.note = note


OPS = ("allow_syscall", "allow_group", "allow_socket_family", "allow_namespaces", "add_bind",
       "add_etc", "allow_domain", "set_network", "set_limit", "remove_allow", "replace_group",
       "remove_bind", "remove_etc", "remove_socket_family")


def _own_list(doc: ProfileDocument, section: str, key: str) -> list[str]:
    return doc._own(section, key)


def _apply(c: Change, doc: ProfileDocument) -> str:
    if c.op == "allow_syscall":
        return doc.allow_syscall(c.arg)
    if c.op == "allow_group":
        return doc.allow_group(c.arg)
    if c.op == "allow_socket_family":
        own = _own_list(doc, "seccomp", "socket_families")
        if f"!{c.arg}" in own:
            doc._remove(doc._array("seccomp", "socket_families"), f"!{c.arg}")
            return doc._done(f"allow socket family {c.arg} (no longer removed)")
        return doc.allow_socket_family(c.arg)
    if c.op == "allow_namespaces":
        doc._set_scalar("seccomp", "allow_namespaces", True)
        return doc._done("allow namespaces")
    if c.op == "add_bind":
        return doc.add_bind(c.arg, c.arg, c.value or "ro")
    if c.op == "add_etc":
        arr = doc._array("filesystem", "etc", inherit_default=False)
        if f"!{c.arg}" in _own_list(doc, "filesystem", "etc"):
            doc._remove(arr, f"!{c.arg}")
        else:
            doc._append(arr, c.arg)
        return doc._done(f"show /etc/{c.arg}")
    if c.op == "allow_domain":
        return doc.allow_domain(c.arg)
    if c.op == "set_network":
        return doc.set_network(c.value)
    if c.op == "set_limit":
        return doc.set_limit(c.arg, c.value)
    if c.op == "remove_allow":
        return doc.remove_allow(c.arg)
    if c.op == "replace_group":
        out = doc.remove_allow(c.arg)
        # the members were allowed through the group, so nothing denies them: append the
        # ones no other entry still allows (one resolve, not one per member)
        cur = doc._current()
        still = cur.seccomp.allow if cur is not None else frozenset()
        arr = doc._array("seccomp", "allow")
        for name in c.value.split():
            if name not in still:
                doc._append(arr, name)
        return doc._done(out + f", then allow {c.value.replace(' ', ', ')}")
    if c.op == "remove_bind":
        return doc.remove_bind(c.arg)
    if c.op == "remove_etc":
        return _remove_entry(doc, "filesystem", "etc", c.arg, ("/etc/" + c.arg).rstrip("/"))
    if c.op == "remove_socket_family":
        return _remove_entry(doc, "seccomp", "socket_families", c.arg, c.arg)
    raise ProfileError(f"unknown change {c.op!r}", fix="one of " + ", ".join(OPS))


def _remove_entry(doc: ProfileDocument, section: str, key: str, entry: str,
                  resolved: str) -> str:
    own = _own_list(doc, section, key)
    table = doc._table(section)
    arr = table.get(key) if table is not None else None
    for cand in (entry, resolved, resolved.removeprefix("/etc/")):
        if cand in own and isinstance(arr, Array):
            doc._remove(arr, cand)
            return doc._done(f"no longer {key} {entry}")
    doc._append(doc._array(section, key, inherit_default=False), f"!{entry}")
    return doc._done(f"no longer inherited {key} {entry}")


@dataclass
class Hunk:
    id: int
    change: Change
    title: str
    why: str
    diff: str  # this change alone, against the file
    kind: str = ""  # the cause it fixes (relax) or "unused" (tighten)
    likelihood: float = 0.0


@dataclass
class Proposal:
    doc: ProfileDocument  # the profile as it is (not modified)
    hunks: list[Hunk] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # causes no profile change fixes

    def apply(self, accepted: Iterable[int] | None = None) -> ProfileDocument:
        """A new document with the accepted hunks (all when ``accepted`` is None)."""
        ids = None if accepted is None else set(accepted)
        out = _copy(self.doc)
        for h in self.hunks:
            if ids is None or h.id in ids:
                h.change.apply(out)
        return out

    def diff(self, accepted: Iterable[int] | None = None) -> str:
        return self.apply(accepted).diff()


def _copy(doc: ProfileDocument) -> ProfileDocument:
    new = ProfileDocument(doc.text(), name=doc.name, path=doc.path, builtin=doc.builtin,
                          search_path=doc.search_path)
    return new


def _hunks(doc: ProfileDocument, items: Sequence[tuple[Change, str, float]]) -> list[Hunk]:
    out: list[Hunk] = []
    seen: set[tuple[str, str, str]] = set()
    for change, kind, likelihood in items:
        key = (change.op, change.arg, change.value)
        if key in seen:
            continue
        seen.add(key)
        one = _copy(doc)
        try:
            change.apply(one)
            err = one.validate()
        except ProfileError as e:
            err = e
        if err is not None:
            continue  # a change the profile cannot take (already so, say): not proposed
        diff = one.diff()
        if not diff:
            continue
        out.append(Hunk(len(out) + 1, change, change.title, change.why, diff, kind,
                        likelihood))
    return out


def open_profile(ref: str | Path, search_path: Sequence[str | Path] | None = None
                 ) -> ProfileDocument:
    return ProfileDocument.open(str(ref), search_path=search_path)


# --------------------------------------------------------------------------- relax


def relax(profile: str | Path | ProfileDocument, runs: Iterable[Any], *,
          min_likelihood: float = 0.4) -> Proposal:
    """The smallest changes that fix the causes the runs show (``RunRecord``s or paths)."""
    from engine import diagnose, runrecord

    doc = profile if isinstance(profile, ProfileDocument) else open_profile(profile)
    prof = doc.resolve()
    items: list[tuple[Change, str, float]] = []
    notes: list[str] = []
    for run in runs:
        rec = run if isinstance(run, runrecord.RunRecord) else runrecord.load(run)
        for cause in diagnose.diagnose(rec, prof):
            if cause.likelihood < min_likelihood:
                continue
            if not cause.changes:
                if cause.advice:
                    notes.append(f"{cause.title}: {cause.advice}")
                continue
            items.append((cause.changes[0], cause.kind, cause.likelihood))
    items.sort(key=lambda t: -t[2])
    return Proposal(doc, _hunks(doc, items), notes)


def change_for_key(key: str, why: str = "") -> Change:
    """Ask mode's "allow always" as a profile change: ``"socket AF_PACKET"`` -> allow the
    family; ``"clone CLONE_NEWUSER"`` -> allow namespaces; ``"keyctl"`` -> allow keyctl."""
    name, _, qual = key.partition(" ")
    if name in ("socket", "socketpair") and qual:
        return Change("allow_socket_family", qual, why=why)
    if name in ("clone", "unshare") and "CLONE_NEW" in qual:
        return Change("allow_namespaces", why=why)
    return Change("allow_syscall", name, why=why)


# --------------------------------------------------------------------------- tighten


def tighten(profile: str | Path | ProfileDocument, runs: Iterable[Any]) -> Proposal:
    """Remove what the recorded learn runs never used. ``runs``: ``RunRecord``s,
    ``Observation``s, or paths of reports, events files or ``.learn.json`` files."""
    from engine.learn.observation import Observation, merge_all

    doc = profile if isinstance(profile, ProfileDocument) else open_profile(profile)
    prof = doc.resolve()
    observations = [_observation(r) for r in runs]
    if not observations:
        raise ProfileError("no runs to tighten from",
                           fix="record runs with `flue learn -p PROFILE --report R.json -- CMD`")
    obs: Observation = merge_all(observations)
    native = _groups.native_syscalls() or _groups.known_syscalls()
    used = (obs.used() | frozenset(LAUNCHER_SYSCALLS)) & native
    groups = _groups.syscall_groups()
    n = len(obs.runs) or len(observations)
    in_runs = f"in {n} recorded run{'s' if n != 1 else ''}"
    items: list[tuple[Change, str, float]] = []
    for entry in prof.seccomp.allow_spec:
        if entry.startswith("@"):
            g = groups.get(entry)
            if g is None:
                continue
            members = set(g.syscalls) & native
            hit = sorted(members & used)
            if not members:
                continue
            if not hit:
                items.append((Change("remove_allow", entry, why=f"never used {in_runs}"),
                              "unused", 1.0))
            elif len(hit) * 2 <= len(members):
                # replacing a group by its used members only helps if they are not allowed
                # through another entry anyway
                items.append((Change("replace_group", entry, " ".join(hit),
                                     why=f"only {len(hit)} of {len(members)} used {in_runs}"),
                              "unused", 0.8))
        elif entry in native and entry not in used:
            items.append((Change("remove_allow", entry, why=f"never used {in_runs}"),
                          "unused", 1.0))
    if obs.paths:
        seen = list(obs.paths)
        for b in prof.filesystem.binds:
            if not any(p == b.dst or p.startswith(b.dst.rstrip("/") + "/") for p in seen):
                items.append((Change("remove_bind", b.dst, why=f"no path under it {in_runs}"),
                              "unused", 0.9))
        for etc in prof.filesystem.etc:
            if not os.path.lexists(etc):
                continue  # not on this host: it is not shown anyway
            if not any(p == etc or p.startswith(etc.rstrip("/") + "/") for p in seen):
                entry = etc.removeprefix("/etc/")
                items.append((Change("remove_etc", entry, why=f"never opened {in_runs}"),
                              "unused", 0.7))
    fams = obs.family_names()
    for fam in prof.seccomp.socket_families:
        if fam not in fams:
            items.append((Change("remove_socket_family", fam,
                                 why=f"no socket of this family {in_runs}"), "unused", 0.8))
    if prof.network.mode != "none" and not obs.inet() and not obs.hosts:
        items.append((Change("set_network", value="none", why=f"no IP socket {in_runs}"),
                      "unused", 0.9))
    return Proposal(doc, _hunks(doc, items), [])


def _observation(run: Any) -> Any:
    from engine import runrecord
    from engine.learn.observation import Observation

    if isinstance(run, Observation):
        return run
    if isinstance(run, runrecord.RunRecord):
        rec = run
    else:
        p = Path(run)
        if p.name.endswith(".learn.json"):
            import json

            return Observation.from_dict(json.loads(p.read_text(encoding="utf-8")))
        rec = runrecord.load(p)
    if not rec.observed:
        raise ProfileError(f"{rec.source or 'a run'} was not recorded in learn mode: it says "
                           "what was refused, not what was used",
                           fix="record runs with `flue learn -p PROFILE --report R.json -- CMD`")
    return Observation.from_dict(rec.observed)
