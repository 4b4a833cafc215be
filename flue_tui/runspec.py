"""What to run: the command, the profile, per-run limits, and the host files it needs.

A command typed as ``python3 examples/demo_agent.py`` names a script on the host, which the
sandbox cannot see (its root is a private tmpfs). flue-tui makes such scripts available
read-only: every argument that names an existing regular file on the host (relative to the
directory flue-tui was started in, or absolute) outside the system directories the profile
already binds gets its *directory* bound read-only at ``/opt/host/<name>`` and the argument
rewritten to the path inside. Nothing else of the host is shared; the launch screen and the
status line say what was bound. (Binding at the same absolute path was tried first: it
collides with the sandbox's own /work, /tmp and HOME when the project lives there.)
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from engine.profile.loader import NETWORK_MODES
from engine.profile.model import Bind, Limits, NetworkPolicy, Profile

HOST_MOUNT = "/opt/host"
SYSTEM_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/", "/etc/",
                   "/proc/", "/sys/", "/dev/")


@dataclass(frozen=True)
class QuickLimits:
    """Per-run overrides from the launch screen and the command line (not saved in the
    profile): limits, the network mode, domains added to the allowlist (``--allow-domain``,
    which implies ``allowlist``) and resolver-map entries (``--resolve NAME=ADDRESS``)."""

    memory: str = ""  # "" keeps the profile's value; "none" removes the limit
    cpus: str = ""
    pids: str = ""
    timeout: str = ""
    network: str = ""  # "" keeps the profile's mode
    allow: tuple[str, ...] = ()  # added to the profile's allowlist for this run
    resolve: tuple[str, ...] = ()  # "NAME=ADDRESS", used instead of the system resolver

    def is_empty(self) -> bool:
        return not any((self.memory, self.cpus, self.pids, self.timeout, self.network,
                        self.allow, self.resolve))

    def describe(self) -> str:
        parts = []
        for k, v in dataclasses.asdict(self).items():
            if v:
                parts.append(f"{k} {' '.join(v) if isinstance(v, (list, tuple)) else v}")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QuickLimits:
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in ("allow", "resolve"):
                kw[k] = tuple(str(x) for x in v) if isinstance(v, (list, tuple)) else ()
            elif k in cls.__dataclass_fields__:
                kw[k] = str(v)
        return cls(**kw)

    def apply(self, profile: Profile) -> Profile:
        """The profile with these overrides; ``ValueError`` with a readable message."""
        from engine.profile.sizes import parse_duration, parse_size

        lim = profile.limits
        memory, cpus, pids, timeout = lim.memory, lim.cpus, lim.pids, lim.timeout

        def none(v: str) -> bool:
            return v.strip().lower() in ("none", "0", "off", "unlimited")

        if self.memory:
            memory = None if none(self.memory) else parse_size(self.memory.strip())
        if self.cpus:
            try:
                cpus = None if none(self.cpus) else float(self.cpus)
            except ValueError:
                raise ValueError(f"CPUs: {self.cpus!r} is not a number (e.g. 0.5, 2)") from None
            if cpus is not None and cpus <= 0:
                raise ValueError("CPUs must be above 0")
        if self.pids:
            try:
                pids = None if none(self.pids) else int(self.pids)
            except ValueError:
                raise ValueError(f"pids: {self.pids!r} is not a whole number") from None
            if pids is not None and pids < 1:
                raise ValueError("pids must be at least 1")
        if self.timeout:
            timeout = None if none(self.timeout) else (parse_duration(self.timeout) or None)
        return dataclasses.replace(profile, limits=Limits(memory, cpus, pids, timeout),
                                   network=self._network(profile.network))

    def _network(self, network: NetworkPolicy) -> NetworkPolicy:
        """The profile's network policy with the mode, domains and resolver entries of this
        run (its own ``allow`` and ``hosts`` kept: ``--net none`` turns them off, as in the
        profile itself)."""
        from engine.network.policy import RuleError, check_address, check_name, parse_rule

        mode = self.network or network.mode
        if self.network and self.network not in NETWORK_MODES:
            raise ValueError(f"network: {self.network!r} is not one of "
                             + ", ".join(NETWORK_MODES))
        if self.allow:
            if self.network and self.network != "allowlist":
                raise ValueError(f"--allow-domain needs network allowlist, not {self.network}")
            mode = "allowlist"
        allow = list(network.allow)
        for rule in self.allow:
            try:
                text = parse_rule(rule).text
            except RuleError as err:
                raise ValueError(f"allow {rule!r}: {err}; {err.fix}") from None
            if text not in allow:
                allow.append(text)
        hosts = list(network.hosts)
        for item in self.resolve:
            name, sep, addr = item.partition("=")
            try:
                if not sep or not name.strip():
                    raise RuleError("write NAME=ADDRESS", fix="e.g. pkgs.example.test=127.0.0.1")
                wild = name.strip().startswith("*.")
                key = ("*." if wild else "") + check_name(name.strip()[2:] if wild else name)
                hosts.append((key, check_address(addr)))
            except RuleError as err:
                raise ValueError(f"resolve {item!r}: {err}; {err.fix}") from None
        return dataclasses.replace(network, mode=mode, allow=tuple(allow), hosts=tuple(hosts))


@dataclass(frozen=True)
class RunSpec:
    argv: tuple[str, ...]
    profile: str = "default"  # name or path
    cwd: str = field(default_factory=os.getcwd)  # where relative script paths resolve
    workspace: str = ""  # host directory bound read-write as /work ("" = private tmpfs)
    limits: QuickLimits = field(default_factory=QuickLimits)
    env: tuple[tuple[str, str], ...] = ()

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    @staticmethod
    def parse(command: str) -> tuple[str, ...]:
        try:
            return tuple(shlex.split(command))
        except ValueError as err:
            raise ValueError(f"cannot parse the command: {err}") from None

    def to_json(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "profile": self.profile, "cwd": self.cwd,
                "workspace": self.workspace, "limits": self.limits.to_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunSpec:
        return cls(argv=tuple(d.get("argv", ())), profile=str(d.get("profile", "default")),
                   cwd=str(d.get("cwd") or os.getcwd()), workspace=str(d.get("workspace", "")),
                   limits=QuickLimits.from_json(d.get("limits") or {}))


@dataclass(frozen=True)
class Prepared:
    argv: tuple[str, ...]  # as run inside
    binds: tuple[Bind, ...]
    shared: tuple[tuple[str, str], ...]  # (host dir, inside dir) bound read-only for scripts


def prepare(spec: RunSpec) -> Prepared:
    """Bind the host scripts the command names and rewrite their paths (see module doc)."""
    binds: list[Bind] = []
    shared: dict[str, str] = {}
    out: list[str] = []
    used: set[str] = set()
    for i, arg in enumerate(spec.argv):
        if (i == 0 and "/" not in arg) or arg.startswith("-") or not arg:
            out.append(arg)
            continue
        host = arg if os.path.isabs(arg) else os.path.join(spec.cwd, arg)
        host = os.path.normpath(host)
        if not os.path.isfile(host) or host.startswith(SYSTEM_PREFIXES):
            out.append(arg)
            continue
        d = os.path.dirname(host)
        if d not in shared:
            base = os.path.basename(d) or "root"
            inside = f"{HOST_MOUNT}/{base}"
            n = 2
            while inside in used:
                inside = f"{HOST_MOUNT}/{base}-{n}"
                n += 1
            used.add(inside)
            shared[d] = inside
            binds.append(Bind(src=d, dst=inside, rw=False))
        out.append(f"{shared[d]}/{os.path.basename(host)}")
    return Prepared(tuple(out), tuple(binds), tuple(shared.items()))


