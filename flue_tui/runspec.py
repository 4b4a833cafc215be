"""What to run: the command, the profile, per-run limits, and the host files it needs.

A command typed as ``python3 examples/demo_agent.py`` names a script on the host, which the
sandbox cannot see (its root is a private tmpfs). flue-tui makes such scripts available
read-only: every argument that names an existing regular file on the host (relative to the
directory flue-tui was started in, or absolute) outside the system directories the profile
already binds is bound, *that file alone*, read-only at ``/opt/host/<its folder's name>/<its
name>`` and the argument rewritten to the path inside. Nothing else of the host is shared:
not the script's folder (``flue-tui -- python3 ~/agent.py`` must not hand ``~/.ssh`` to the
agent). A script that needs its folder (it imports its neighbours) gets it with
``share_dirs`` (``--share-dir``), and a folder that is the home directory, holds it, or has
dotfiles is warned about loudly. The status line says what was bound, and ``cli_command``
gives the ``flue run`` line that reproduces the run. (Binding at the same absolute path was
tried first: it collides with the sandbox's own /work, /tmp and HOME when the project lives
there.)

Before the launch, ``prepare`` checks that the sandbox's user can read what is bound: as root
the sandbox runs as an unprivileged host uid (65534, or the workspace's owner), and a script
under a 0700 folder would otherwise fail with nothing but "Permission denied".
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from engine.profile.loader import NETWORK_MODES
from engine.profile.model import Bind, Limits, NetworkPolicy, Profile
from engine.sources.ask import DEFAULT_TIMEOUT as ASK_TIMEOUT

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
    share_dirs: bool = False  # bind each script's whole folder, not only the script
    learn: bool = False  # a learn run (flue_tui/screens/learn.py); not kept in the recent list
    ask: bool = False  # hold each refused syscall for a decision (ask mode)
    ask_timeout: float = ASK_TIMEOUT  # seconds a held call waits before it is denied

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
                "workspace": self.workspace, "limits": self.limits.to_json(),
                "share_dirs": self.share_dirs, "ask": self.ask,
                "ask_timeout": self.ask_timeout}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunSpec:
        return cls(argv=tuple(d.get("argv", ())), profile=str(d.get("profile", "default")),
                   cwd=str(d.get("cwd") or os.getcwd()), workspace=str(d.get("workspace", "")),
                   limits=QuickLimits.from_json(d.get("limits") or {}),
                   share_dirs=d.get("share_dirs") is True, ask=d.get("ask") is True,
                   ask_timeout=_seconds(d.get("ask_timeout"), ASK_TIMEOUT))


def _seconds(v: Any, default: float) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return f if f > 0 else default


@dataclass(frozen=True)
class Problem:
    """Why the run would fail before it starts, and what to do about it."""

    title: str
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Prepared:
    argv: tuple[str, ...]  # as run inside
    binds: tuple[Bind, ...]
    shared: tuple[tuple[str, str], ...]  # (host path, inside path) bound read-only for scripts
    warnings: tuple[str, ...] = ()  # a shared folder that holds more than it should
    problems: tuple[Problem, ...] = ()  # what the sandbox's user cannot read


def prepare(spec: RunSpec) -> Prepared:
    """Bind the host scripts the command names and rewrite their paths (see module doc)."""
    binds: list[Bind] = []
    shared: dict[str, str] = {}
    folders: dict[str, str] = {}  # host folder -> its place inside
    warnings: list[str] = []
    problems: list[Problem] = []
    out: list[str] = []
    used: set[str] = set()
    ids = sandbox_host_ids(spec.workspace)
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
        if d not in folders:
            base = os.path.basename(d) or "root"
            inside = f"{HOST_MOUNT}/{base}"
            n = 2
            while inside in used:
                inside = f"{HOST_MOUNT}/{base}-{n}"
                n += 1
            used.add(inside)
            folders[d] = inside
            if spec.share_dirs:
                shared[d] = inside
                binds.append(Bind(src=d, dst=inside, rw=False))
                warnings += folder_warnings(d)
        target = f"{folders[d]}/{os.path.basename(host)}"
        if not spec.share_dirs and host not in shared:
            shared[host] = target
            binds.append(Bind(src=host, dst=target, rw=False))
        problem = unreadable(arg, host, ids, execute=i == 0)
        if problem is not None and problem not in problems:
            problems.append(problem)
        out.append(target)
    return Prepared(tuple(out), tuple(binds), tuple(shared.items()), tuple(warnings),
                    tuple(problems))


def folder_warnings(folder: str) -> list[str]:
    """What sharing ``folder`` whole hands the agent besides the script."""
    out = []
    real = os.path.realpath(folder)
    home = os.path.realpath(os.path.expanduser("~"))
    if real == home:
        out.append(f"{folder} is your home folder: the agent can read all of it")
    elif home.startswith(real.rstrip("/") + "/"):
        out.append(f"{folder} holds your home folder: the agent can read all of it")
    try:
        dots = sorted(n for n in os.listdir(folder) if n.startswith("."))
    except OSError:
        dots = []
    if dots:
        shown = ", ".join(dots[:5]) + (f" and {len(dots) - 5} more" if len(dots) > 5 else "")
        out.append(f"{folder} has dotfiles ({shown}): they are shared too")
    return out


def sandbox_host_ids(workspace: str = "") -> tuple[int, int, bool]:
    """The host uid and gid the sandbox's user maps to, as ``Sandbox`` chooses them (as root:
    the workspace's owner when it is not root, else 65534; unprivileged: you), and whether
    they are this process's own."""
    euid = os.geteuid()
    if euid != 0:
        return euid, os.getegid(), True
    from engine.sandbox import NOBODY

    if workspace:
        try:
            st = os.stat(workspace)
        except OSError:
            return NOBODY, NOBODY, False
        if st.st_uid != 0:
            return st.st_uid, st.st_gid, False
    return NOBODY, NOBODY, False


def _allows(st: os.stat_result, uid: int, gid: int, bits: int) -> bool:
    if st.st_uid == uid:
        mode = st.st_mode >> 6
    elif st.st_gid == gid:
        mode = st.st_mode >> 3
    else:
        mode = st.st_mode
    return mode & bits == bits


def unreadable(arg: str, host: str, ids: tuple[int, int, bool], *,
               execute: bool = False) -> Problem | None:
    """A ``Problem`` when the sandbox's user could not get at ``host``: every folder on the
    way must let it search (x), the file let it read (r; and run, x, for the command itself).
    The bind itself is made as that user, so a closed folder fails the launch outright."""
    import stat

    uid, gid, own = ids
    need = os.R_OK | (os.X_OK if execute else 0)
    what = "read and run" if execute else "read"
    parts = host.split("/")
    for n in range(2, len(parts) + 1):
        path = "/".join(parts[:n]) or "/"
        is_file = n == len(parts)
        try:
            st = os.stat(path)
        except OSError:
            return None  # gone meanwhile: the launch says so
        if own:
            ok = os.access(path, need if is_file else os.X_OK)
        else:
            ok = _allows(st, uid, gid, (4 | (1 if execute else 0)) if is_file else 1)
        if ok:
            continue
        try:
            import pwd

            owner = pwd.getpwuid(st.st_uid).pw_name
        except (KeyError, ImportError):
            owner = str(st.st_uid)
        who = (f"uid {uid} on the host" if own else
               f"uid {uid} on the host (as root, flue runs the sandbox as an unprivileged "
               "uid: 65534, or the owner of --workspace)")
        if is_file:
            why = f"{path} ({stat.filemode(st.st_mode)} {owner}) does not let it {what} it"
            fix = (f"chmod o+r{'x' if execute else ''} {shlex.quote(path)}" if not own else
                   f"chmod u+r{'x' if execute else ''} {shlex.quote(path)}")
        else:
            why = f"the folder {path} ({stat.filemode(st.st_mode)} {owner}) is closed to it"
            fix = f"chmod o+x {shlex.quote(path)}" if not own else \
                f"chmod u+x {shlex.quote(path)}"
        return Problem(
            f"{arg} cannot be read inside the sandbox",
            f"The sandbox's user is {who}, and {why}: the run would fail with only "
            "\"Permission denied\".",
            "copy the script to a folder the sandbox's user can read (or into the workspace, "
            f"and run it from /work), or open the way: {fix}")
    return None


def cli_command(spec: RunSpec, prepared: Prepared, profile: str, *,
                allow_unlimited: bool = False) -> str:
    """The ``flue run`` command line that runs what flue-tui runs: the same profile (the
    saved file), the script binds, workspace, quick limits and command."""
    args = ["flue", "run", "-p", profile]
    lim = spec.limits
    for flag, value in (("--memory", lim.memory), ("--cpus", lim.cpus), ("--pids", lim.pids),
                        ("--timeout", lim.timeout), ("--net", lim.network)):
        if value:
            args += [flag, value]
    for rule in lim.allow:
        args += ["--allow-domain", rule]
    for item in lim.resolve:
        args += ["--resolve", item]
    for b in prepared.binds:
        args += ["--bind", f"{b.src}:{b.dst}:{'rw' if b.rw else 'ro'}"]
    if spec.workspace:
        args += ["--workspace", spec.workspace]
    for key, value in spec.env:
        args += ["--env", f"{key}={value}"]
    if allow_unlimited:
        args.append("--allow-unlimited")
    return f"{shlex.join(args)} -- {shlex.join(prepared.argv)}"


