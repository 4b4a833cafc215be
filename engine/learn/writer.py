"""Observations -> a least-privilege profile that ``extends`` the base, every line commented.

The rules, each visible in the comments of what is written:

- **syscalls**: the ones used are the traced ones, the core set the learn filter leaves
  unobserved, and flue's launcher's. A group is chosen only when more than half of its
  members (for this architecture) were used; the rest go in one by one. An entry the base
  allows that was not used is removed (``"!@aio"``); one the base denies that was used is
  lifted (``deny = ["!ptrace"]``), the rest of a lifted denied group denied again by name.
- **paths**: a host path the program opened, executed or entered that was not visible
  inside is bound read-only (read-write when it wrote there), ``/etc`` entries through
  ``[filesystem] etc``. Lookups that only probed (stat, access) are listed, not bound.
  /dev nodes, /sys and the host's home directories are never bound (said in a comment).
- **network**: ``loopback`` when the program listened on a loopback address, ``none``
  otherwise; connection attempts that failed while learning are listed.
- **socket families**: the ones ``socket()`` was asked for.
- **limits**: headroom over the peaks (memory x2, pids x4, timeout x10 the longest run).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import tomlkit

from engine.learn.observation import Observation
from engine.profile import groups as _groups
from engine.profile.loader import LAUNCHER_SYSCALLS
from engine.profile.model import Profile
from engine.sources.paths import under

COMMENT_COL = 41
GROUP_SHARE = 0.5  # a group is chosen when more than this share of it was used
NEEDED_OPS = ("open-read", "open-write", "create", "create-dir", "exec", "chdir")
NO_BIND = ("/dev", "/sys", "/proc", "/home", "/root")


@dataclass
class Line:
    value: str  # a TOML value as written ("\"@file-system\"", "\"/opt/x\"")
    why: str


@dataclass
class Plan:
    """What the profile will say, before it is written (also what the tests look at)."""

    allow: list[Line] = field(default_factory=list)
    deny: list[Line] = field(default_factory=list)
    errno_lift: list[str] = field(default_factory=list)
    families: list[Line] = field(default_factory=list)
    etc: list[Line] = field(default_factory=list)
    binds: list[Line] = field(default_factory=list)
    notes_fs: list[str] = field(default_factory=list)
    network: Line | None = None
    network_allow: list[Line] = field(default_factory=list)
    notes_net: list[str] = field(default_factory=list)
    limits: dict[str, Line] = field(default_factory=dict)
    notes_limits: list[str] = field(default_factory=list)
    notes_seccomp: list[str] = field(default_factory=list)
    used: frozenset[str] = frozenset()
    groups: list[str] = field(default_factory=list)  # chosen groups


def _q(value: Any) -> str:
    return str(tomlkit.item(value).as_string())


def _native() -> frozenset[str]:
    return _groups.native_syscalls() or _groups.known_syscalls()


def leaf_groups() -> dict[str, _groups.Group]:
    """Groups made of syscall names only (not of other groups)."""
    return {n: g for n, g in _groups.syscall_groups().items()
            if g.members and not any(m.startswith("@") for m in g.members)}


def choose_groups(used: Iterable[str]) -> tuple[list[tuple[str, int, int]], list[str]]:
    """([(group, used members, members)], single syscalls): a group when more than half of
    its native members were used; the used syscalls no chosen group covers, one by one."""
    native = _native()
    used_set = set(used) & native
    chosen: list[tuple[str, int, int]] = []
    covered: set[str] = set()
    for name, g in sorted(leaf_groups().items()):
        members = set(g.syscalls) & native
        if not members:
            continue
        hit = members & used_set
        if len(hit) > GROUP_SHARE * len(members):
            chosen.append((name, len(hit), len(members)))
            covered |= members
    singles = sorted(used_set - covered)
    return chosen, singles


def _covering(entries: Iterable[str], name: str) -> list[str]:
    groups = _groups.syscall_groups()
    return [e for e in entries
            if e == name or (e.startswith("@") and e in groups and name in groups[e].syscalls)]


def _fmt_size(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{math.ceil(n / (1 << 20))}M"


def _round_up(n: int, step: int) -> int:
    return ((n + step - 1) // step) * step


def _fmt_seconds(s: float) -> str:
    if s >= 120 and s % 60 == 0:
        return f"{int(s // 60)}m"
    return f"{int(s)}s"


def _human(n: int | None) -> str:
    if not n:
        return "?"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}G"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f}M"
    return f"{n / 1024:.0f}K"


def bind_targets(missing: dict[str, dict[str, Any]]
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], list[str]]:
    """Missing places -> (etc entries, binds, notes). A bind covers the deepest directory
    shared by the lookups below one missing place (the lookup itself when alone)."""
    etc: dict[str, dict[str, Any]] = {}
    binds: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for place, m in sorted(missing.items()):
        op = str(m.get("op", ""))
        lookups = [str(p) for p in m.get("lookups", [])] or [str(m.get("path", place))]
        needed = op in NEEDED_OPS or bool(m.get("kept"))
        if under(place, NO_BIND):
            what = "a /dev node" if under(place, ("/dev",)) else "outside what flue shows"
            notes.append(f"{place}: looked for ({op}), {what}; not bound")
            continue
        if not needed:
            notes.append(f"{place}: only probed ({op}); not bound")
            continue
        if under(place, ("/etc",)):
            entry = place.split("/")[2] if place.count("/") >= 2 else ""
            if not entry:
                continue
            cur = etc.setdefault(entry, {"lookups": [], "count": 0, "op": op})
            cur["lookups"] += lookups
            cur["count"] += int(m.get("count", 1))
            continue
        targets = [p for p in lookups if os.path.lexists(p) and under(p, (place,))]
        if not targets:
            targets = [place]
        common = os.path.commonpath(targets) if len(targets) > 1 else targets[0]
        if not under(common, (place,)):
            common = place
        cur = binds.setdefault(common, {"lookups": [], "count": 0, "write": False, "op": op})
        cur["lookups"] += lookups
        cur["count"] += int(m.get("count", 1))
        cur["write"] = cur["write"] or bool(m.get("write"))
    # a bind below another is covered by it
    for path, info in sorted(binds.items()):
        for other, outer in binds.items():
            if other != path and under(path, (other,)):
                outer["write"] = outer["write"] or info["write"]
                outer["lookups"] += info["lookups"]
    binds = {p: v for p, v in binds.items()
             if not any(o != p and under(p, (o,)) for o in binds)}
    return etc, binds, notes


def plan_profile(obs: Observation, base: Profile) -> Plan:
    plan = Plan()
    native = _native()
    used = (obs.used() | frozenset(LAUNCHER_SYSCALLS)) & native
    plan.used = used
    chosen, singles = choose_groups(used)
    chosen_names = {g for g, _, _ in chosen}
    plan.groups = sorted(chosen_names)
    groups = _groups.syscall_groups()
    counts = obs.syscalls
    core = set(obs.core) | set(LAUNCHER_SYSCALLS)
    kept = set(obs.kept)
    runs = len(obs.runs) or 1
    in_runs = f"in {runs} run{'s' if runs != 1 else ''}"

    def why_single(name: str) -> str:
        g = _groups.group_of(name) or "no group"
        if name in counts:
            return f"{g}: {counts[name]} call{'s' if counts[name] != 1 else ''}"
        if name in core:
            return f"{g}: every program (not traced while learning)"
        if name in kept:
            return f"{g}: kept from the profile this one replaces"
        return g

    # seccomp.allow: what the base allows, taken back when unused; then groups and singles
    base_allow = list(base.seccomp.allow_spec)
    for entry in base_allow:
        if entry.startswith("!"):
            continue
        if entry.startswith("@"):
            g = groups.get(entry)
            members = set(g.syscalls) & native if g else set()
            hit = members & used
            if entry in chosen_names:
                continue  # written below, with its count
            if not hit:
                plan.allow.append(Line(_q(f"!{entry}"),
                                       f"inherited from {base.name}; never used {in_runs}"))
            else:
                plan.allow.append(Line(_q(f"!{entry}"),
                                       f"inherited; only {len(hit)} of {len(members)} used: "
                                       "listed one by one"))
        elif entry not in used and entry in native:
            plan.allow.append(Line(_q(f"!{entry}"), f"inherited; never used {in_runs}"))
    for name, n_hit, total in chosen:
        g = groups[name]
        top = sorted((counts.get(s, 0), s) for s in g.syscalls if s in counts)[-3:]
        calls = ", ".join(f"{s} {c}" for c, s in reversed(top))
        plan.allow.append(Line(_q(name), f"{n_hit} of {total} used (most of the group)"
                               + (f": {calls}" if calls else "")))
    for name in singles:
        plan.allow.append(Line(_q(name), why_single(name)))

    # seccomp.deny: lift what the base refuses that the program used
    deny_spec = list(base.seccomp.deny_spec)
    lifted: set[str] = set()
    for name in sorted(used):
        if name not in base.seccomp.deny:
            continue
        for entry in _covering(deny_spec, name):
            if entry in lifted:
                continue
            lifted.add(entry)
            what = f"refused by {base.name}, used {in_runs}"
            plan.deny.append(Line(_q(f"!{entry}"), what + (f" ({name})" if entry != name else "")))
            if entry.startswith("@"):
                rest = [s for s in groups[entry].syscalls if s not in used]
                for i, s in enumerate(rest):
                    plan.deny.append(Line(_q(s), f"the rest of {entry} stays refused"
                                          if i == 0 else ""))
    errno_of = dict(base.seccomp.errno)
    plan.errno_lift = sorted(n for n in errno_of if n in used and n != "clone3")
    for name, d in sorted(obs.denied.items()):
        if name == "clone3" and not base.seccomp.allow_namespaces:
            continue  # refused on purpose; glibc falls back to clone
        plan.notes_seccomp.append(f"{name}: refused while learning ({d.get('errno')}, "
                                  f"{d.get('count')} calls); the program coped. "
                                  f"`flue profiles relax` can allow it")

    # socket families: the ones socket() asked for
    fams_used = {k.split()[0] for k in obs.families}
    inherited_fams = list(base.seccomp.socket_families)
    for fam in inherited_fams:
        if fam not in fams_used:
            plan.families.append(Line(_q(f"!{fam}"), "inherited; no socket of this family "
                                      + in_runs))
    for fam in sorted(fams_used - set(inherited_fams)):
        if fam.startswith("AF_") and not fam[3:].isdigit():
            n = sum(v for k, v in obs.families.items() if k.split()[0] == fam)
            plan.families.append(Line(_q(fam), f"socket() asked for it {n} times"))
    for fam in sorted(fams_used & set(inherited_fams)):
        n = sum(v for k, v in obs.families.items() if k.split()[0] == fam)
        types = sorted({k.split()[1] for k in obs.families if k.split()[0] == fam})
        plan.families.append(Line(_q(fam), f"{n} socket{'s' if n != 1 else ''} "
                                  f"({', '.join(types)})"))

    # filesystem
    etc, binds, notes = bind_targets(obs.missing)
    have_etc = set(base.filesystem.etc)
    for entry, info in sorted(etc.items()):
        if f"/etc/{entry}" in have_etc:
            continue
        shown = ", ".join(sorted(set(info["lookups"]))[:2])
        plan.etc.append(Line(_q(entry), f"{info['op']} {shown}: on the host, not shown inside"))
    for path, info in sorted(binds.items()):
        value = f"{path}:{path}:rw" if info["write"] else path
        shown = ", ".join(sorted(set(info["lookups"]))[:2])
        mode = "read-write: it wrote there" if info["write"] else "read-only"
        plan.binds.append(Line(_q(value), f"{mode}; {info['op']} {shown}"))
    plan.notes_fs = notes

    # network
    inet = obs.inet()
    listened = [e for e in inet if e.get("op") == "bind"]
    connects = [e for e in inet if e.get("op") == "connect"]
    base_mode = base.network.mode
    if base_mode == "allowlist" and obs.hosts:
        plan.network = Line(_q("allowlist"), "names were asked for through the proxy")
        for h in obs.hosts:
            plan.network_allow.append(Line(_q(h), "requested while learning"))
    elif listened:
        ports = sorted({int(e.get("port") or 0) for e in listened})
        plan.network = Line(_q("loopback"), "it listened on loopback (ports "
                            + ", ".join(str(p) for p in ports) + ")")
    else:
        plan.network = Line(_q("none"), "no listening socket; "
                            + ("no IP connections" if not connects else
                               "its connection attempts failed while learning too"))
    for e in connects[:8]:
        plan.notes_net.append(f"connect {e.get('address')}:{e.get('port')} "
                              f"({e.get('count', 1)}x)")

    # limits
    peaks = obs.peaks
    mem = peaks.get("memory")
    if mem:
        want = max(2 * int(mem), int(mem) + (64 << 20), 128 << 20)
        want = _round_up(want, 64 << 20)
        plan.limits["memory"] = Line(_q(_fmt_size(want)), f"peak {_human(int(mem))} while "
                                     "learning; x2 headroom")
    else:
        plan.notes_limits.append("memory: no peak measured (no cgroup); the base's limit stays")
    pids = peaks.get("pids")
    if pids:
        want_p = max(64, 4 * int(pids))
        plan.limits["pids"] = Line(str(want_p), f"peak {pids} processes and threads; x4 "
                                   "headroom")
    else:
        plan.notes_limits.append("pids: no peak measured; the base's limit stays")
    walls = [float(r.get("wall_seconds") or 0) for r in obs.runs] or [0.0]
    longest = max(walls)
    if longest > 0:
        want_t = max(60.0, math.ceil(longest * 10))
        plan.limits["timeout"] = Line(_q(_fmt_seconds(want_t)), f"the longest run took "
                                      f"{longest:.1f} s while learning; x10 headroom")
    cpu = peaks.get("cpu_percent")
    if cpu:
        plan.notes_limits.append(f"cpus: peak {cpu:.0f}% of one CPU; no quota set (a quota only "
                                 "slows a run down, it never stops it)")
    return plan


def _line(key: str, value: str, why: str, indent: str = "") -> str:
    text = f"{indent}{key} = {value}" if key else f"{indent}{value},"
    if not why:
        return text
    pad = max(1, COMMENT_COL - len(text))
    return f"{text}{' ' * pad}# {_commentable(why)}"


def _commentable(text: str) -> str:
    """``text`` as TOML allows it in a comment: one line, control characters (an escape
    sequence in the command line or a path name, say) written as ``\\xNN``; TOML refuses a
    file with them raw."""
    return "".join(c if c == "\t" or not (ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0)
                   else f"\\x{ord(c):02x}" for c in text.replace("\n", " "))


def _array(key: str, lines: list[Line], why: str) -> list[str]:
    out = [_line(key, "[", why)]
    for ln in lines:
        out.append(_line("", ln.value, ln.why, indent="    "))
    out.append("]")
    return out


def _comment(text: str) -> str:
    return "# " + _commentable(text)


def write_profile(obs: Observation, base_ref: str, base: Profile, *,
                  sidecar: str = "") -> str:
    """The profile's TOML text (validate it with ``engine.profile.edit.load_text``)."""
    plan = plan_profile(obs, base)
    return render(plan, obs, base_ref, base, sidecar=sidecar)


def render(plan: Plan, obs: Observation, base_ref: str, base: Profile, *,
           sidecar: str = "") -> str:
    out: list[str] = []
    runs = obs.runs or [{}]
    out.append(f"# Learned by `flue learn` from {len(obs.runs)} run"
               f"{'s' if len(obs.runs) != 1 else ''} on the profile {base.name!r}:")
    for r in runs[:10]:
        cmd = " ".join(str(a) for a in r.get("command", []))
        out.append(_comment(f"  {cmd[:80]}  (exit {r.get('exit_code')}, "
                            f"{float(r.get('wall_seconds') or 0):.2f} s)"))
    if len(runs) > 10:
        out.append(_comment(f"  ... and {len(runs) - 10} more"))
    out.append("# Least privilege for these runs: every entry says why it is here. Learn again "
               "with the same -o")
    out.append("# to merge more runs; `flue profiles tighten|relax` adjust it from later runs.")
    if sidecar:
        out.append(_comment(f"The observations behind it: {sidecar} (kept beside this file)."))
    out.append("")
    first = " ".join(str(a) for a in runs[0].get("command", []))[:60]
    out.append(_line("description", _q(f"learned: {first}"), "shown by `flue profiles list`"))
    out.append(_line("extends", _q(base_ref), "the base the runs were learned on; what is not "
                     "set here comes from it"))

    out.append("")
    out.append("[filesystem]")
    if plan.etc:
        out += _array("etc", plan.etc, f"host /etc entries it read, added to {base.name}'s")
    if plan.binds:
        out += _array("binds", plan.binds, "host paths it needed that the base does not show")
    if not plan.etc and not plan.binds:
        out.append(_comment(f"nothing to add: every path it opened was visible under "
                            f"{base.name}"))
    for note in plan.notes_fs[:12]:
        out.append(_comment(note))
    if len(plan.notes_fs) > 12:
        out.append(_comment(f"... {len(plan.notes_fs) - 12} more probes not bound"))

    out.append("")
    out.append("[network]")
    assert plan.network is not None
    out.append(_line("mode", plan.network.value, plan.network.why))
    if plan.network_allow:
        out += _array("allow", plan.network_allow, "the names it reached")
    for note in plan.notes_net:
        out.append(_comment(note))

    out.append("")
    out.append("[seccomp]")
    out += _array("allow", plan.allow, f"{len(plan.used)} syscalls used; a group only when "
                  "more than half of it was")
    if plan.deny:
        out += _array("deny", plan.deny, f"{base.name} refuses these; the runs needed them")
    if plan.errno_lift:
        body = ", ".join(f"{_q('!' + n)} = \"\"" for n in plan.errno_lift)
        out.append(_line("errno", "{ " + body + " }", "allowed now, so no errno answer"))
    if plan.families:
        out += _array("socket_families", plan.families, "the address families socket() "
                      "was asked for")
    for note in plan.notes_seccomp:
        out.append(_comment(note))

    out.append("")
    out.append("[limits]")
    for key in ("memory", "pids", "timeout"):
        ln = plan.limits.get(key)
        if ln is not None:
            out.append(_line(key, ln.value, ln.why))
    for note in plan.notes_limits:
        out.append(_comment(note))
    return "\n".join(out) + "\n"


def observation_from_profile(profile: Profile) -> Observation:
    """A stand-in for the observations behind an existing profile whose ``.learn.json`` is
    gone: its syscalls, binds and network count as used, so a merge keeps them."""
    obs = Observation(base=profile.chain[0] if profile.chain else profile.name)
    obs.kept = sorted(profile.seccomp.allow)
    for b in profile.filesystem.binds:
        obs.missing[b.src] = {"place": b.src, "path": b.dst, "op": "open-read",
                              "write": b.rw, "count": 1, "lookups": [b.src], "kept": True}
    if profile.network.mode == "loopback":
        obs.endpoints.append({"op": "bind", "family": "AF_INET", "address": "127.0.0.1",
                              "port": 0, "count": 1, "kept": True})
    for fam in profile.seccomp.socket_families:
        obs.families[f"{fam} kept"] = 1
    return obs


# --------------------------------------------------------------------------- files


def sidecar_of(out: str | os.PathLike[str]) -> str:
    """``NAME.learn.json`` beside ``NAME.toml``: the observations a learned profile is from."""
    p = os.fspath(out)
    base = p.removesuffix(".toml")
    return base + ".learn.json"


def previous_observations(out: str | os.PathLike[str]) -> tuple[Observation | None, str | None]:
    """(the observations already behind a learned profile, the base it was learned on), or
    (None, None) when ``out`` does not exist. Without its ``.learn.json``, what the profile
    allows stands in for them (``observation_from_profile``). Raises ``ProfileError`` when
    the file is not a profile."""
    import json
    import tomllib

    from engine.profile.loader import load_profile

    path = os.fspath(out)
    if not os.path.exists(path):
        return None, None
    side = sidecar_of(path)
    if os.path.exists(side):
        try:
            with open(side, encoding="utf-8") as f:
                obs = Observation.from_dict(json.load(f))
            return obs, obs.base or None
        except (OSError, ValueError):
            pass  # unreadable: fall back to the profile itself
    with open(path, encoding="utf-8") as f:
        base = tomllib.loads(f.read()).get("extends")
    return observation_from_profile(load_profile(path)), base if isinstance(base, str) else None


def save_learned(out: str | os.PathLike[str], obs: Observation, base_ref: str,
                 base: Profile) -> str:
    """Write the profile for ``obs`` (all the runs, merged already) to ``out`` and the
    observations beside it, each atomically; the profile is validated first. Returns the
    text."""
    import json

    from engine.profile.edit import _atomic_write, load_text

    path = os.path.abspath(os.fspath(out))
    side = sidecar_of(path)
    text = write_profile(obs, base_ref, base, sidecar=os.path.basename(side))
    name = os.path.basename(path).removesuffix(".toml")
    load_text(text, name=name, origin=path)  # raises ProfileError if it is not valid
    from pathlib import Path

    _atomic_write(Path(path), text)
    _atomic_write(Path(side), json.dumps(obs.to_dict(), indent=1) + "\n")
    return text


def learn_into(out: str | os.PathLike[str], run: Observation, base_ref: str | None = None,
               base: Profile | None = None) -> tuple[str, Observation]:
    """Merge one learn run into the learned profile at ``out`` (created when absent) and save
    both files; returns (the profile's text, every run's observations). ``base_ref``: the
    profile learned on (default: the one ``out`` was learned on, else "default")."""
    from engine.errors import ProfileError
    from engine.profile.loader import load_profile

    previous, prev_base = previous_observations(out)
    if previous is not None and base_ref and prev_base and base_ref != prev_base:
        raise ProfileError(f"{os.fspath(out)} was learned on {prev_base!r}, not {base_ref!r}",
                           fix=f"learn with -p {prev_base}, or write to another file")
    ref = base_ref or prev_base or "default"
    merged = previous.merge(run) if previous is not None else run
    merged.base = ref
    return save_learned(out, merged, ref, base or load_profile(ref)), merged
