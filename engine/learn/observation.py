"""What learn mode saw a program do: one record per run, merged across runs.

Plain data with ``to_dict``/``from_dict`` (JSON): the report's ``observed`` field, the
``LearnSummary`` event, and the ``.learn.json`` file kept beside a learned profile all hold
this shape, so several runs (``flue learn -o OUT.toml`` again) merge into one profile and
``flue profiles tighten`` can read any of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

VERSION = 1


@dataclass
class Observation:
    runs: list[dict[str, Any]] = field(default_factory=list)  # command, exit code, wall time
    base: str = ""  # the profile the runs were learned on
    syscalls: dict[str, int] = field(default_factory=dict)  # traced syscall -> calls
    core: list[str] = field(default_factory=list)  # not traced, counted as used
    denied: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> count, errno
    # path inside -> {"ops": [...], "count": n, "exists": bool}
    paths: dict[str, dict[str, Any]] = field(default_factory=dict)
    paths_dropped: int = 0  # distinct paths past the cap (counted, not kept)
    # place (first missing component inside) -> lookup record (host has it)
    missing: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "AF_INET SOCK_STREAM" -> count (socket and socketpair calls)
    families: dict[str, int] = field(default_factory=dict)
    # (op, family, address, port) as dicts with a count
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    ioctls: dict[str, int] = field(default_factory=dict)  # request name -> count
    hosts: list[str] = field(default_factory=list)  # names asked for in allowlist mode
    peaks: dict[str, Any] = field(default_factory=dict)  # memory, pids, cpu_seconds, wall ...
    kept: list[str] = field(default_factory=list)  # syscalls kept from an existing profile

    # --- serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION, "base": self.base, "runs": list(self.runs),
            "syscalls": dict(sorted(self.syscalls.items())), "core": sorted(self.core),
            "denied": dict(sorted(self.denied.items())),
            "paths": {p: {"ops": sorted(r["ops"]), "count": r["count"],
                          "exists": bool(r.get("exists"))}
                      for p, r in sorted(self.paths.items())},
            "paths_dropped": self.paths_dropped,
            "missing": dict(sorted(self.missing.items())),
            "families": dict(sorted(self.families.items())),
            "endpoints": list(self.endpoints), "ioctls": dict(sorted(self.ioctls.items())),
            "hosts": sorted(self.hosts), "peaks": dict(self.peaks), "kept": sorted(self.kept),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        return cls(
            runs=list(d.get("runs", [])), base=str(d.get("base", "")),
            syscalls={str(k): int(v) for k, v in d.get("syscalls", {}).items()},
            core=list(d.get("core", [])),
            denied={str(k): dict(v) for k, v in d.get("denied", {}).items()},
            paths={str(p): {"ops": set(r.get("ops", ())), "count": int(r.get("count", 0)),
                            "exists": bool(r.get("exists"))}
                   for p, r in d.get("paths", {}).items()},
            paths_dropped=int(d.get("paths_dropped", 0)),
            missing={str(k): dict(v) for k, v in d.get("missing", {}).items()},
            families={str(k): int(v) for k, v in d.get("families", {}).items()},
            endpoints=[dict(e) for e in d.get("endpoints", [])],
            ioctls={str(k): int(v) for k, v in d.get("ioctls", {}).items()},
            hosts=list(d.get("hosts", [])), peaks=dict(d.get("peaks", {})),
            kept=list(d.get("kept", [])),
        )

    # --- what it means ---------------------------------------------------------------------

    def used(self) -> frozenset[str]:
        """Every syscall the runs needed: the traced ones, the core set, and any kept."""
        return frozenset(self.syscalls) | frozenset(self.core) | frozenset(self.kept)

    def inet(self) -> list[dict[str, Any]]:
        return [e for e in self.endpoints if e.get("family") in ("AF_INET", "AF_INET6")]

    def family_names(self) -> set[str]:
        out = {k.split()[0] for k in self.families}
        out |= {str(e["family"]) for e in self.endpoints if e.get("family")}
        return out

    # --- merging ---------------------------------------------------------------------------

    def merge(self, other: Observation) -> Observation:
        """A new record holding both runs' observations (counts added, peaks the larger)."""
        out = Observation.from_dict(self.to_dict())
        out.runs += other.runs
        out.base = out.base or other.base
        for k, v in other.syscalls.items():
            out.syscalls[k] = out.syscalls.get(k, 0) + v
        out.core = sorted(set(out.core) | set(other.core))
        out.kept = sorted(set(out.kept) | set(other.kept))
        for k, d in other.denied.items():
            cur = out.denied.setdefault(k, {"count": 0, "errno": d.get("errno", "")})
            cur["count"] = int(cur.get("count", 0)) + int(d.get("count", 0))
        for p, r in other.paths.items():
            cur2 = out.paths.setdefault(p, {"ops": set(), "count": 0, "exists": False})
            cur2["ops"] = set(cur2["ops"]) | set(r["ops"])
            cur2["count"] += r["count"]
            cur2["exists"] = cur2["exists"] or r.get("exists", False)
        out.paths_dropped += other.paths_dropped
        for place, m in other.missing.items():
            known = out.missing.get(place)
            if known is None:
                out.missing[place] = dict(m)
                continue
            known["count"] = int(known.get("count", 0)) + int(m.get("count", 0))
            known["write"] = bool(known.get("write")) or bool(m.get("write"))
            known["lookups"] = sorted(set(known.get("lookups", [])) | set(m.get("lookups", [])))
        for k, v in other.families.items():
            out.families[k] = out.families.get(k, 0) + v
        out.endpoints = merge_endpoints(out.endpoints, other.endpoints)
        for k, v in other.ioctls.items():
            out.ioctls[k] = out.ioctls.get(k, 0) + v
        out.hosts = sorted(set(out.hosts) | set(other.hosts))
        for k, v in other.peaks.items():
            if v is None:
                continue
            cur3 = out.peaks.get(k)
            out.peaks[k] = v if cur3 is None else max(cur3, v)
        # paths whose place turned out to exist in some run are not missing after all
        for place in list(out.missing):
            if out.paths.get(place, {}).get("exists"):
                del out.missing[place]
        return out


def merge_endpoints(a: Iterable[dict[str, Any]], b: Iterable[dict[str, Any]]
                    ) -> list[dict[str, Any]]:
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in (*a, *b):
        key = (e.get("op"), e.get("family"), e.get("address"), e.get("port"))
        cur = out.get(key)
        if cur is None:
            out[key] = dict(e)
        else:
            cur["count"] = int(cur.get("count", 1)) + int(e.get("count", 1))
    return sorted(out.values(), key=lambda e: (str(e.get("family")), str(e.get("address")),
                                               int(e.get("port") or 0), str(e.get("op"))))


def merge_all(observations: Iterable[Observation]) -> Observation:
    out = Observation()
    for o in observations:
        out = out.merge(o)
    return out
