"""Typed, frozen records of everything that happens in a sandbox.

Each record has the sandbox id and a monotonic timestamp (``time.monotonic()`` seconds) and
serialises to one JSON line (``to_json``) and back (``Event.from_json``). The same stream feeds
flue-tui, ``flue run --events FILE``, recordings and tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Event:
    kind: ClassVar[str] = "event"
    sandbox: str
    ts: float

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            d[f.name] = _plain(getattr(self, f.name))
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Event:
        d = dict(d)
        cls = REGISTRY[d.pop("kind")]
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                kwargs[f.name] = _typed(f.type, d[f.name])
        return cls(**kwargs)

    @staticmethod
    def from_json(line: str) -> Event:
        return Event.from_dict(json.loads(line))


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _typed(tp: Any, v: Any) -> Any:
    t = str(tp)
    if isinstance(v, list):
        if "tuple[tuple" in t:
            return tuple(tuple(x) if isinstance(x, list) else x for x in v)
        return tuple(v)
    return v


@dataclass(frozen=True, slots=True)
class Started(Event):
    kind: ClassVar[str] = "started"
    argv: tuple[str, ...] = ()
    profile: str = ""
    pid: int = 0  # host pid of the sandbox's PID 1
    isolation: dict[str, Any] = field(default_factory=dict)  # what was really applied
    limits: dict[str, Any] = field(default_factory=dict)
    degraded: tuple[str, ...] = ()
    profile_source: str = ""  # the profile's file (flue explain and relax find it there)


@dataclass(frozen=True, slots=True)
class SyscallDenied(Event):
    kind: ClassVar[str] = "syscall_denied"
    name: str = ""
    nr: int = 0
    args: tuple[int, ...] = ()
    decoded: dict[str, Any] = field(default_factory=dict)  # human-readable arguments
    errno: int = 0
    errno_name: str = ""
    pid: int = 0  # inside the sandbox
    host_pid: int = 0
    tid: int = 0
    comm: str = ""
    exe: str = ""
    count: int = 1  # > 1 when identical denials in a row were coalesced
    first_ts: float = 0.0
    # a flood's overflow, merged per syscall and process: the calls' arguments differed
    # (args and decoded are the first one's)
    args_varied: bool = False


@dataclass(frozen=True, slots=True)
class ResourceSample(Event):
    kind: ClassVar[str] = "resource_sample"
    source: str = "cgroup-v1"  # cgroup-v1 | cgroup-v2 | psutil
    cpu_usage_ns: int | None = None
    cpu_percent: float | None = None  # over the last interval, 100 = one CPU
    cpu_throttled_ns: int | None = None
    cpu_nr_throttled: int | None = None
    cpu_limit: float | None = None  # CPUs
    memory_current: int | None = None
    memory_peak: int | None = None
    memory_limit: int | None = None
    memory_limit_hits: int | None = None
    oom_kills: int | None = None
    pids_current: int | None = None
    pids_limit: int | None = None
    pids_limit_hits: int | None = None


@dataclass(frozen=True, slots=True)
class LimitHit(Event):
    kind: ClassVar[str] = "limit_hit"
    limit: str = "oom_kill"  # oom_kill | pids | memory
    count: int = 0  # the counter's value now
    delta: int = 0  # how much it grew since the last sample
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FileChanged(Event):
    kind: ClassVar[str] = "file_changed"
    change: str = "added"  # added | modified | deleted
    path: str = ""  # inside the sandbox
    size: int | None = None
    is_dir: bool = False


@dataclass(frozen=True, slots=True)
class ProcessStarted(Event):
    kind: ClassVar[str] = "process_started"
    pid: int = 0  # inside
    host_pid: int = 0
    ppid: int = 0  # inside
    cmdline: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessExited(Event):
    kind: ClassVar[str] = "process_exited"
    pid: int = 0
    host_pid: int = 0
    cmdline: tuple[str, ...] = ()
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessTable(Event):
    kind: ClassVar[str] = "process_table"
    # (pid inside, host pid, ppid inside, command, cpu percent, rss bytes)
    rows: tuple[tuple[Any, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkspaceManifest(Event):
    kind: ClassVar[str] = "workspace_manifest"
    entries: tuple[tuple[Any, ...], ...] = ()  # (path, size, mode)
    # why entries are missing: "" (none are), "depth" (directories max_depth levels down were
    # not entered) or "entries" (the walk stopped at max_entries)
    truncated: str = ""
    max_depth: int = 0
    max_entries: int = 0


@dataclass(frozen=True, slots=True)
class Output(Event):
    kind: ClassVar[str] = "output"
    stream: str = "stdout"
    data: str = ""  # decoded with errors="replace"; never written raw to a terminal
    # complete lines of the stream before ``data`` that were left out (the engine host keeps
    # only a display's last lines of a flood); the first of them ended any partial line
    skipped_lines: int = 0


@dataclass(frozen=True, slots=True)
class Notice(Event):
    kind: ClassVar[str] = "notice"
    level: str = "info"  # info | warning | error
    source: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class NetworkRequest(Event):
    """One outbound connection attempt in ``allowlist`` mode. An allowed one is reported
    twice with the same ``id``: ``open`` when the supervisor reached the host, then
    ``closed`` (with bytes and duration) or ``failed``; a refused one once, ``refused``."""

    kind: ClassVar[str] = "network_request"
    id: int = 0
    state: str = "refused"  # open | closed | refused | failed
    host: str = ""  # the name asked for (or the address, for a direct connect)
    port: int = 0
    allowed: bool = False
    rule: str = ""  # the allow entry that matched, or why not: no-match | port | ip-address ...
    reason: str = ""  # one line for a person
    via: str = ""  # proxy (CONNECT) | http (forwarded request) | capture (DNS stub) | direct
    address: str = ""  # the address the supervisor connected to
    sni: str = ""  # the TLS server name the client sent, when it sent one
    bytes_up: int = 0
    bytes_down: int = 0
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class DnsQuery(Event):
    """One question to the sandbox's DNS stub and its answer."""

    kind: ClassVar[str] = "dns_query"
    name: str = ""
    qtype: str = "A"
    allowed: bool = False
    rule: str = ""  # the allow entry that matched the name, "" when none did
    answers: tuple[str, ...] = ()
    rcode: str = "NOERROR"  # NOERROR | NXDOMAIN | REFUSED | FORMERR | NOTIMP | SERVFAIL
    transport: str = "udp"


@dataclass(frozen=True, slots=True)
class PathMissing(Event):
    """A path lookup that fails inside the sandbox where the host has something: the bind,
    ``[filesystem] etc`` entry or /dev node that would make it visible (seen when paths are
    observed: ``flue learn``, ``flue run --observe-paths``). Once per missing place."""

    kind: ClassVar[str] = "path_missing"
    path: str = ""  # as the program asked for it, absolute inside
    place: str = ""  # the first component that is missing inside, after symlinks
    syscall: str = ""  # openat, execve, newfstatat ...
    op: str = ""  # open-read | open-write | create | exec | stat | lstat | access | chdir
    write: bool = False  # the lookup would write there (a read-write bind would be needed)
    kind_on_host: str = ""  # what the host has at ``place``: file | dir | device | symlink
    pid: int = 0  # inside
    comm: str = ""


@dataclass(frozen=True, slots=True)
class LearnSummary(Event):
    """Everything learn mode saw (``engine.learn.observation.Observation.to_dict()``), sent
    once just before ``Exited``."""

    kind: ClassVar[str] = "learn_summary"
    observed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AskRequested(Event):
    """Ask mode: a syscall the profile refuses is held while someone decides (the calling
    thread waits in it). ``key`` is what a decision applies to: the syscall, and for socket,
    ioctl, clone and personality the decoded argument that matters (never a pointer's)."""

    kind: ClassVar[str] = "ask_requested"
    id: int = 0
    key: str = ""  # "keyctl", "socket AF_PACKET", "ioctl TIOCSTI"
    name: str = ""
    nr: int = 0
    decoded: dict[str, Any] = field(default_factory=dict)
    pid: int = 0
    comm: str = ""
    exe: str = ""
    errno: int = 0  # what a denial answers
    timeout: float = 0.0  # seconds until it falls back to deny


@dataclass(frozen=True, slots=True)
class AskAnswered(Event):
    kind: ClassVar[str] = "ask_answered"
    id: int = 0
    key: str = ""
    decision: str = ""  # allow-once | allow-always | deny | deny-always
    by: str = "user"  # user | timeout | rule (an earlier -always decision) | end
    calls: int = 1  # how many held calls this answer released


@dataclass(frozen=True, slots=True)
class Exited(Event):
    kind: ClassVar[str] = "exited"
    exit_code: int = 0
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    seccomp_killed: bool = False
    pids_limit_hit: bool = False
    memory_limit_hit: bool = False
    wall_seconds: float = 0.0
    cpu_seconds: float | None = None
    peak_memory: int | None = None
    reason: str = ""  # the one-line `flue:` message, when there is one


REGISTRY: dict[str, type[Event]] = {
    c.kind: c
    for c in (Started, SyscallDenied, ResourceSample, LimitHit, FileChanged, ProcessStarted, ProcessExited,
              ProcessTable, WorkspaceManifest, Output, Notice, NetworkRequest, DnsQuery,
              PathMissing, LearnSummary, AskRequested, AskAnswered, Exited)
}
