"""A finished run, read back from ``flue run --report FILE`` (JSON) or ``--events FILE``
(JSON lines), as one record: what ``flue explain`` and ``flue profiles relax|tighten`` (and
the workbench's Explain panel) work from.

Both files carry what is needed: the end (exit code, signal, OOM, pids limit, timeout, peak
memory), the limits applied, the denials (with a few decoded calls each: the socket family,
the ioctl request, the path), path lookups that failed where the host has something (when
paths were observed), network attempts and refusals, learn observations, and which profile
ran (its name and file).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import EngineError


class RunRecordError(EngineError):
    """The file is not a report or an events file flue wrote."""


@dataclass
class Denial:
    name: str
    count: int = 0
    errno: int = 0
    errno_name: str = ""
    samples: list[dict[str, Any]] = field(default_factory=list)  # decoded arguments
    comms: list[str] = field(default_factory=list)
    last_ts: float | None = None  # (events only) when it was last refused


@dataclass
class RunRecord:
    source: str = ""  # the file it was read from
    kind: str = "report"  # report | events
    command: list[str] = field(default_factory=list)
    profile: str = ""  # name
    profile_source: str = ""  # the profile's file, when known
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    seccomp_killed: bool = False
    pids_limit_hit: bool = False
    memory_limit_hit: bool = False
    peak_memory: int | None = None
    peak_pids: int | None = None
    wall_seconds: float | None = None
    message: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    denials: dict[str, Denial] = field(default_factory=dict)
    paths_missing: list[dict[str, Any]] = field(default_factory=list)
    network_mode: str = ""
    network_attempts: list[dict[str, Any]] = field(default_factory=list)  # none/loopback
    network_refused: list[dict[str, Any]] = field(default_factory=list)  # allowlist
    observed: dict[str, Any] = field(default_factory=dict)  # learn runs
    stderr: list[str] = field(default_factory=list)  # captured lines (events with output)
    exit_ts: float | None = None

    @property
    def failed(self) -> bool:
        return bool(self.exit_code) or self.signal is not None or self.timed_out


def load(path: str | Path) -> RunRecord:
    """Read a report or an events file (told apart by content, not by name)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise RunRecordError(f"cannot read {p}: {err.strerror or err}",
                             fix="give the file written by flue run --report or --events") from err
    stripped = text.lstrip()
    if not stripped:
        raise RunRecordError(f"{p} is empty", fix="give a finished run's report or events")
    try:
        if stripped.startswith("{") and "\n{" not in stripped.strip():
            return from_report(json.loads(text), source=str(p))
        first = json.loads(stripped.splitlines()[0])
        if isinstance(first, dict) and "kind" in first:
            return from_events(text.splitlines(), source=str(p))
        return from_report(json.loads(text), source=str(p))
    except (ValueError, KeyError, TypeError) as err:
        raise RunRecordError(f"{p} is not a flue report or events file: {err}",
                             fix="flue run --report FILE writes a report; --events FILE "
                             "the events") from err


def from_report(d: dict[str, Any], source: str = "") -> RunRecord:
    if not isinstance(d, dict) or "exit_code" not in d:
        raise RunRecordError(f"{source or 'the report'} has no exit_code: not a flue report",
                             fix="give the file written by flue run --report")
    r = RunRecord(source=source, kind="report")
    r.command = [str(a) for a in d.get("command", [])]
    r.profile = str(d.get("profile", ""))
    r.profile_source = str(d.get("profile_source", "") or "")
    for key in ("exit_code", "signal", "peak_memory", "wall_seconds"):
        setattr(r, key, d.get(key))
    for key in ("oom_killed", "timed_out", "seccomp_killed", "pids_limit_hit",
                "memory_limit_hit"):
        setattr(r, key, bool(d.get(key)))
    r.message = str(d.get("message", ""))
    r.limits = dict(d.get("limits", {}))
    samples = d.get("denied_args", {}) or {}
    for name, v in (d.get("denials") or {}).items():
        r.denials[name] = Denial(name, int(v.get("count", 0)), int(v.get("errno", 0)),
                                 str(v.get("errno_name", "")), list(samples.get(name, [])))
    r.paths_missing = [dict(m) for m in d.get("paths_missing", [])]
    net = d.get("network", {}) or {}
    r.network_mode = str(net.get("mode", ""))
    r.network_attempts = [dict(a) for a in net.get("attempts", [])]
    for host, info in (net.get("hosts") or {}).items():
        if isinstance(info, dict) and info.get("refused"):
            r.network_refused.append({"host": host, **info})
    r.observed = dict(d.get("observed", {}) or {})
    return r


def from_events(lines: Iterable[str | Any], source: str = "") -> RunRecord:
    """From JSON lines, or from the ``engine.events`` records themselves (what flue-tui
    holds in memory)."""
    from engine import events as ev

    r = RunRecord(source=source, kind="events")
    attempts: dict[tuple[str, int], dict[str, Any]] = {}
    seen_place: set[str] = set()
    for line in lines:
        if isinstance(line, ev.Event):
            e = line
        elif not line.strip():
            continue
        else:
            try:
                e = ev.Event.from_json(line)
            except KeyError:
                continue  # a kind from a newer flue
        if isinstance(e, ev.Started):
            r.command = list(e.argv)
            r.profile = e.profile
            r.limits = dict(e.limits)
            r.profile_source = str(getattr(e, "profile_source", "") or "")
            r.network_mode = str(e.isolation.get("network", "")).split(" ")[0]
        elif isinstance(e, ev.SyscallDenied):
            d = r.denials.get(e.name)
            if d is None:
                d = r.denials[e.name] = Denial(e.name, 0, e.errno, e.errno_name)
            d.count += e.count
            d.last_ts = e.ts
            if e.decoded and e.decoded not in d.samples and len(d.samples) < 3:
                d.samples.append(dict(e.decoded))
            if e.comm and e.comm not in d.comms:
                d.comms.append(e.comm)
        elif isinstance(e, ev.PathMissing):
            if e.place in seen_place:  # seen again with a stronger lookup: that one counts
                for m in r.paths_missing:
                    if m["place"] == e.place:
                        m.update(path=e.path, syscall=e.syscall, op=e.op, write=e.write,
                                 comm=e.comm or m["comm"])
                        if e.path not in m["lookups"]:
                            m["lookups"].append(e.path)
            else:
                seen_place.add(e.place)
                r.paths_missing.append({"place": e.place, "path": e.path, "syscall": e.syscall,
                                        "op": e.op, "write": e.write, "kind": e.kind_on_host,
                                        "comm": e.comm, "pid": e.pid, "count": 1,
                                        "lookups": [e.path], "ts": e.ts})
        elif isinstance(e, ev.NetworkRequest):
            if e.rule.startswith("network-"):
                key = (e.address or e.host, e.port)
                cur = attempts.get(key)
                if cur is None:
                    attempts[key] = {"address": e.address or e.host, "port": e.port,
                                     "count": 1, "ts": e.ts}
                else:
                    cur["count"] += 1
            elif e.state == "refused":
                r.network_refused.append({"host": e.host, "port": e.port, "rule": e.rule,
                                          "reason": e.reason})
        elif isinstance(e, ev.ResourceSample):
            if e.memory_peak:
                r.peak_memory = max(r.peak_memory or 0, e.memory_peak)
            if e.pids_current:
                r.peak_pids = max(r.peak_pids or 0, e.pids_current)
            if e.memory_limit and not r.limits.get("memory"):
                r.limits["memory"] = e.memory_limit
            if e.pids_limit and not r.limits.get("pids"):
                r.limits["pids"] = e.pids_limit
        elif isinstance(e, ev.LimitHit):
            if e.limit == "pids":
                r.pids_limit_hit = True
            elif e.limit == "oom_kill":
                r.oom_killed = True
            elif e.limit == "memory":
                r.memory_limit_hit = True
        elif isinstance(e, ev.Output):
            if e.stream == "stderr":
                r.stderr.extend(e.data.splitlines()[-200:])
                r.stderr = r.stderr[-400:]
        elif isinstance(e, ev.LearnSummary):
            r.observed = dict(e.observed)
        elif isinstance(e, ev.Exited):
            r.exit_code = e.exit_code
            r.signal = e.signal
            r.oom_killed = r.oom_killed or e.oom_killed
            r.timed_out = e.timed_out
            r.seccomp_killed = e.seccomp_killed
            r.pids_limit_hit = r.pids_limit_hit or e.pids_limit_hit
            r.memory_limit_hit = r.memory_limit_hit or e.memory_limit_hit
            r.peak_memory = e.peak_memory or r.peak_memory
            r.wall_seconds = e.wall_seconds
            r.message = e.reason
            r.exit_ts = e.ts
    r.network_attempts = list(attempts.values())
    if r.exit_code is None and not r.denials and not r.command:
        raise RunRecordError(f"{source or 'the events'} hold no flue events",
                             fix="give the file written by flue run --events")
    return r
