"""Why a run failed: causes a person can act on, most likely first (``flue explain``).

``diagnose(run, profile)`` reads a ``RunRecord`` (``engine.runrecord``: a report or an events
file) and returns ``Cause``s, each with a likelihood, what was seen, and the smallest profile
``Change`` that would remove it (``engine.profile.tune``), or advice when no profile change
can. The kinds:

- ``timeout``, ``oom``, ``memory``, ``pids``, ``seccomp-kill``, ``signal``: how the run ended;
- ``syscall``: a refused syscall (its group and what programs use it for, from the groups
  data), ``socket-family``, ``namespaces``, ``terminal-ioctl``;
- ``path``: a lookup that failed inside on a path the host has (the bind or ``/etc`` entry
  that adds it), ``dev`` (a /dev node flue does not provide), ``home`` (the host's home
  directory); ``command``: the command itself is not there;
- ``network``: connections the network mode cannot carry, names the allowlist refused;
- ``user``: the program found no user entry or HOME (from its stderr, when captured).

Likelihood is a judgement, not a measurement: how a run ends outranks what it met on the
way; a refusal or a missing path close to a failing end outranks one early in a successful
run; refusals flue makes on purpose with a known fallback (clone3's ENOSYS) rank last.
"""

from __future__ import annotations

import errno as _errno
import os
import re
from dataclasses import dataclass, field
from typing import Any

from engine.profile import groups as _groups
from engine.profile.model import Profile
from engine.profile.tune import Change
from engine.runrecord import RunRecord
from engine.sources.paths import under

BIN_DIRS = ("/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin")
DEV_PROVIDED = ("null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm",
                "mqueue", "fd", "stdin", "stdout", "stderr")
USER_PATTERNS = (
    (re.compile(r"I have no name!|cannot find name for user ID|getpwuid\(\): uid not found|"
                r"No user exists for uid|unknown uid|who are you\?|user .* does not exist",
                re.IGNORECASE), "user"),
    (re.compile(r"\$?HOME (is )?not set|could not determine (the )?home|HOME environment "
                r"variable|no home directory|cannot (create|write to) .*home", re.IGNORECASE), "home"),
)


@dataclass(frozen=True, slots=True)
class Cause:
    kind: str
    title: str
    detail: str = ""
    likelihood: float = 0.5
    changes: tuple[Change, ...] = ()
    advice: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        p = self.likelihood
        return "likely" if p >= 0.7 else "possible" if p >= 0.35 else "unlikely"


def _size(n: int | None) -> str:
    if not n:
        return "?"
    for unit, s in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= s:
            v = n / s
            return f"{v:.0f}{unit}" if v >= 10 or v == int(v) else f"{v:.1f}{unit}"
    return f"{n} bytes"


def _limit_size(n: int) -> str:
    for unit, s in (("G", 1 << 30), ("M", 1 << 20)):
        if n >= s and n % s == 0:
            return f"{n // s}{unit}"
    return f"{-(-n // (1 << 20))}M"


def _pow2_above(n: int, floor: int) -> int:
    v = floor
    while v < n:
        v *= 2
    return v


def diagnose(run: RunRecord, profile: Profile | None = None) -> list[Cause]:
    causes: list[Cause] = []
    failed = run.failed
    causes += _ending(run, profile)
    causes += _denials(run, profile, failed)
    causes += _paths(run, profile, failed)
    causes += _network(run, failed)
    causes += _user(run, failed)
    if failed and not any(c.likelihood >= 0.35 for c in causes):
        observed = bool(run.observed) or bool(run.paths_missing) or run.kind == "events"
        causes.append(Cause(
            "unknown", f"no cause flue can see: the command exited {run.exit_code}",
            detail="nothing was refused and no limit was reached" + (
                "" if observed else "; paths were not observed in this run"),
            likelihood=0.3,
            advice="run it again with `flue run --observe-paths --events FILE`, or learn what "
            "it needs with `flue learn`" if not observed else
            "the program's own output says why; flue saw nothing refused"))
    causes.sort(key=lambda c: -c.likelihood)
    return causes


def _ending(run: RunRecord, profile: Profile | None) -> list[Cause]:
    out: list[Cause] = []
    lim = run.limits or {}
    if run.timed_out:
        t = lim.get("timeout") or (profile.limits.timeout if profile else None)
        new = max(60.0, 2 * float(t)) if t else 600.0
        out.append(Cause("timeout", f"timed out after {t:g} s" if t else "timed out",
                         detail="the sandbox was killed at the profile's timeout",
                         likelihood=0.97,
                         changes=(Change("set_limit", "timeout", f"{int(new)}s",
                                         why=f"relax: timed out at {t}s"),)))
    if run.oom_killed:
        limit = lim.get("memory") or (profile.limits.memory if profile else None)
        peak = run.peak_memory
        base = max(int(limit or 0) * 2, int(peak or 0) * 2, 256 << 20)
        new = _pow2_above(base, 256 << 20)
        out.append(Cause("oom", f"out of memory: killed at the memory limit ({_size(limit)}); "
                         f"peak {_size(peak)}",
                         detail="the OOM killer ended a process of the sandbox",
                         likelihood=0.96,
                         changes=(Change("set_limit", "memory", _limit_size(new),
                                         why=f"relax: OOM at {_size(limit)}"),),
                         evidence={"peak": peak, "limit": limit}))
    elif run.memory_limit_hit:
        limit = lim.get("memory")
        out.append(Cause("memory", f"memory reached its limit ({_size(limit)}) without an OOM "
                         "kill", detail="the kernel reclaimed and throttled: slow, not fatal",
                         likelihood=0.3))
    if run.pids_limit_hit:
        limit = lim.get("pids") or (profile.limits.pids if profile else None)
        new = max(64, int(limit or 32) * 4)
        out.append(Cause("pids", f"pids limit hit: forks and threads refused at {limit}",
                         detail="fork/clone failed with EAGAIN once the sandbox had that many "
                         "processes and threads", likelihood=0.92,
                         changes=(Change("set_limit", "pids", str(new),
                                         why=f"relax: pids limit {limit} hit"),)))
    if run.seccomp_killed:
        kill = sorted(profile.seccomp.kill) if profile else []
        out.append(Cause("seccomp-kill", "killed by seccomp: a syscall the profile kills on",
                         detail=("the kill list: " + ", ".join(kill[:12])) if kill else
                         "a syscall on the kill list, or one from another ABI (x32, 32-bit)",
                         likelihood=0.9,
                         advice="move it from [seccomp] kill to deny (a refusal the program "
                         "can report) or allow"))
    msg = run.message or ""
    if "command not found" in msg or "cannot execute" in msg:
        out.append(Cause("command", msg.removeprefix("flue: "),
                         detail="the command is looked up in the sandbox's PATH, on its "
                         "filesystem", likelihood=0.95,
                         advice="give the path inside the sandbox, or bind the directory that "
                         "holds it (the bind is proposed below when paths were observed)"))
    if (run.signal is not None and not run.timed_out and not run.oom_killed
            and not run.seccomp_killed):
        out.append(Cause("signal", f"the command was killed by signal {run.signal}",
                         likelihood=0.4))
    return out


def _family_allowed(profile: Profile | None, fam: str) -> bool:
    return profile is not None and fam in profile.seccomp.socket_families


def _denials(run: RunRecord, profile: Profile | None, failed: bool) -> list[Cause]:
    out: list[Cause] = []
    groups = _groups.syscall_groups()
    for name, d in run.denials.items():
        eno = d.errno_name or _errno.errorcode.get(d.errno, str(d.errno))
        times = f"{d.count} time{'s' if d.count != 1 else ''}"
        who = f" by {', '.join(d.comms[:3])}" if d.comms else ""
        base = 0.6 if failed else 0.25
        if failed and eno in ("EPERM", "EACCES"):
            base += 0.1
        if run.exit_ts and d.last_ts and run.exit_ts - d.last_ts < 0.5:
            base += 0.1  # refused right before the end
        if name == "clone3" and eno == "ENOSYS":
            out.append(Cause("syscall", "clone3 answered ENOSYS (on purpose)",
                             detail="its flags sit in memory a filter cannot read; glibc falls "
                             "back to clone, whose flags are checked", likelihood=0.05))
            continue
        fams = [str(s.get("family")) for s in d.samples if s.get("family")]
        if name in ("socket", "socketpair") and fams and not _family_allowed(profile, fams[0]) \
                and (profile is None or name in profile.seccomp.allow):
            fam = fams[0]
            out.append(Cause("socket-family", f"socket family {fam} refused ({eno}, {times}{who})",
                             detail="socket() is allowed, but only for the families in "
                             "[seccomp] socket_families", likelihood=min(0.95, base + 0.05),
                             changes=(Change("allow_socket_family", fam,
                                             why=f"relax: {fam} refused {times}"),),
                             evidence={"samples": d.samples}))
            continue
        reqs = [str(s.get("request")) for s in d.samples if s.get("request")]
        if name == "ioctl" and reqs and reqs[0] in ("TIOCSTI", "TIOCLINUX"):
            out.append(Cause("terminal-ioctl", f"ioctl {reqs[0]} refused ({times}{who})",
                             detail="pushing characters into the terminal's input is refused "
                             "by design: it would type commands into the shell outside",
                             likelihood=0.2, advice="no profile allows it; the program should "
                             "not need it"))
            continue
        flags = " ".join(str(s.get("flags", "")) for s in d.samples)
        if name in ("clone", "unshare", "clone3") and "CLONE_NEW" in flags:
            out.append(Cause("namespaces", f"{name} with namespace flags refused ({times}{who})",
                             detail=f"it tried to create namespaces ({flags.strip()}): a nested "
                             "sandbox or container tool", likelihood=min(0.9, base + 0.1),
                             changes=(Change("allow_namespaces",
                                             why=f"relax: {name} with CLONE_NEW* refused"),),
                             advice="nested namespaces widen what the sandbox can do"))
            continue
        g = _groups.group_of(name)
        what = groups[g].description if g and g in groups else ""
        shown = ""
        paths = [s.get("path") for s in d.samples if s.get("path")]
        if paths:
            shown = f"; path {paths[0]}"
        elif d.samples:
            shown = "; " + ", ".join(f"{k} {v}" for k, v in list(d.samples[0].items())[:3])
        out.append(Cause("syscall", f"{name} refused ({eno}, {times}{who})",
                         detail=(f"{g}: {what}" if g else "in no group") + shown,
                         likelihood=min(0.9, base),
                         changes=(Change("allow_syscall", name,
                                         why=f"relax: refused {times} ({eno})"),),
                         evidence={"group": g, "count": d.count, "errno": eno}))
    return out


def _paths(run: RunRecord, profile: Profile | None, failed: bool) -> list[Cause]:
    from engine.learn.writer import bind_targets

    out: list[Cause] = []
    home = profile.user.home_dir if profile else "/home/agent"
    for m in run.paths_missing:
        place = str(m.get("place", ""))
        path = str(m.get("path", place))
        op = str(m.get("op", ""))
        who = f" by {m.get('comm')}" if m.get("comm") else ""
        probe = op in ("stat", "lstat", "access")
        p = 0.7 if op.startswith("open") or op in ("create", "chdir") else 0.35 if probe else 0.6
        if under(place, ("/etc",)) and op == "open-read":
            p = 0.5  # a configuration file: programs mostly fall back to their defaults
        lookups = [str(x) for x in m.get("lookups", [])] or [path]
        command = any(os.path.dirname(x) in BIN_DIRS for x in lookups)
        if command and (op == "exec" or probe):
            # a program looked for on PATH (make stats cc in each directory): it has none
            p = max(p, 0.9 if failed else 0.45)
            probe = False
        named = " ".join(run.command)
        if any(x in named for x in lookups):
            # a path the command line names: the tool was told to use it
            p = max(p, 0.86 if failed else 0.45)
            probe = False
        if op == "exec":
            p = 0.88 if failed else 0.5
            if run.exit_code in (126, 127):
                p = 0.95
        if not failed:
            p *= 0.5
        seen = f"{path} ({op}{who})" + (f" -> {place} is missing" if place != path else "")
        if under(place, ("/dev",)):
            node = place.removeprefix("/dev/").split("/")[0]
            if node in DEV_PROVIDED:
                continue
            out.append(Cause("dev", f"/dev/{node} is not available inside",
                             detail=f"looked for {seen}; flue's /dev has only null, zero, "
                             "full, random, urandom, tty, pts, shm and mqueue",
                             likelihood=p, advice="device nodes cannot be bound into a "
                             "sandbox (binds are nodev); run the tool outside"))
            continue
        if under(place, ("/root", "/home")) and not under(place, (home,)):
            out.append(Cause("home", f"it looked in a host home directory: {place}",
                             detail=f"looked for {seen}; inside, HOME is {home} (a private "
                             "tmpfs): a path or variable still points at the host's",
                             likelihood=max(p, 0.5),
                             advice=f"point it at {home}, or bind the file read-only with "
                             "--bind SRC:DST"))
            continue
        from engine.learn.writer import NEEDED_OPS

        etc, binds, _notes = bind_targets({place: {**m, "op": op if op in NEEDED_OPS
                                                   else "open-read"}})
        changes: tuple[Change, ...] = ()
        if etc:
            entry = next(iter(etc))
            changes = (Change("add_etc", entry, why=f"relax: {path} not found inside"),)
        elif binds:
            target, info = next(iter(binds.items()))
            mode = "rw" if info.get("write") else "ro"
            changes = (Change("add_bind", target, mode,
                              why=f"relax: {path} not found inside ({op})"),)
        out.append(Cause("path", f"{place} is not visible inside, but the host has it",
                         detail=f"looked for {seen}" + ("; only probed: it may be optional"
                                                        if probe else "")
                         + ("; a command looked for on PATH" if command else ""),
                         likelihood=p, changes=changes,
                         evidence={"place": place, "op": op, "write": m.get("write")}))
    return out


def _network(run: RunRecord, failed: bool) -> list[Cause]:
    out: list[Cause] = []
    mode = run.network_mode or "none"
    if run.network_attempts:
        shown = ", ".join(f"{a.get('address')}:{a.get('port')}" for a in run.network_attempts[:4])
        from engine.sources.observe import _loopback

        loop = all(_loopback(str(a.get("address", ""))) for a in run.network_attempts)
        n = sum(int(a.get("count", 1)) for a in run.network_attempts)
        change = (Change("set_network", value="loopback",
                         why="relax: it connects to loopback"),) if loop else ()
        out.append(Cause("network", f"it tried to connect under network mode {mode}: {shown}",
                         detail=f"{n} attempt{'s' if n != 1 else ''}; "
                         + ("the sandbox has no network at all" if mode == "none" else
                            "only its own loopback is reachable"),
                         likelihood=0.75 if failed else 0.3, changes=change,
                         advice="" if loop else "to reach hosts, use network mode allowlist "
                         "with the names: `--allow-domain NAME` (or [network] allow)"))
    for r in run.network_refused[:8]:
        host = str(r.get("host", ""))
        rule = str(r.get("rule", ""))
        change = (Change("allow_domain", host, why=f"relax: {host} refused"),) \
            if rule == "no-match" and host and not host[0].isdigit() else ()
        out.append(Cause("network", f"the allowlist refused {host}:{r.get('port', '')} "
                         f"({rule})", detail=str(r.get("reason", "")),
                         likelihood=0.7 if failed else 0.3, changes=change))
    return out


def _user(run: RunRecord, failed: bool) -> list[Cause]:
    out: list[Cause] = []
    found: dict[str, str] = {}
    for line in run.stderr:
        for pattern, kind in USER_PATTERNS:
            if kind not in found and pattern.search(line):
                found[kind] = line.strip()[:160]
    if "user" in found:
        out.append(Cause("user", "the program found no user entry for its uid",
                         detail=f"it said: {found['user']}; flue's /etc/passwd has the "
                         "profile's [user] (and root, nobody)", likelihood=0.6 if failed else 0.3,
                         advice="run it as the profile's user ([user] uid), or set [user] to "
                         "the uid it expects"))
    if "home" in found:
        out.append(Cause("home", "the program could not use HOME",
                         detail=f"it said: {found['home']}", likelihood=0.55 if failed else 0.3,
                         advice="HOME is the profile's [user] home (a private tmpfs, "
                         "[filesystem] home_size); set it with --env HOME=..."))
    return out
