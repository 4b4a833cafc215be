"""The interface both cgroup backends implement.

A backend is found with ``engine.cgroups.detect()``; it creates one group per sandbox below
the supervisor's own cgroup (never at a hierarchy's root), applies the limits, samples it,
and removes it. The sandbox's first process joins by writing its own pid into every path of
``SandboxCgroup.procs_files`` before it unshares its namespaces.
"""

from __future__ import annotations

from engine._record import field, record
from engine.profile.model import Limits

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Protocol
else:
    Protocol = object


@record(frozen=True, slots=True)
class CgroupSample:
    """One reading of a sandbox's cgroup. ``None`` means "not available on this backend"."""

    cpu_usage_ns: int | None = None  # cumulative CPU time of the group
    cpu_throttled_ns: int | None = None  # cumulative time throttled by the quota
    cpu_nr_throttled: int | None = None
    memory_current: int | None = None  # bytes
    memory_peak: int | None = None  # bytes (high-water mark)
    memory_limit: int | None = None  # bytes, None = unlimited
    memory_limit_hits: int | None = None  # times usage hit the limit (v1 failcnt, v2 events max)
    oom_kills: int | None = None  # processes the OOM killer killed in this group
    pids_current: int | None = None
    pids_limit: int | None = None  # None = unlimited
    pids_limit_hits: int | None = None  # forks refused by pids.max


@record(frozen=True, slots=True)
class ControllerStatus:
    name: str  # "memory", "cpu", "pids" (and "cpuacct" on v1)
    available: bool
    path: str | None = None  # the directory sandboxes are created under
    reason: str = ""  # why not available
    fix: str = ""


@record(frozen=True, slots=True)
class CgroupSupport:
    """What ``flue doctor`` prints and what the engine uses to pick a backend."""

    mode: str  # "v2", "v1" or "none"
    delegated: bool  # True when the caller is not root but owns a writable subtree
    controllers: tuple[ControllerStatus, ...] = ()
    reason: str = ""  # when mode == "none" or something is off
    fix: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def controller(self, name: str) -> ControllerStatus | None:
        for c in self.controllers:
            if c.name == name:
                return c
        return None


class SandboxCgroup(Protocol):
    """One sandbox's group (on v1: one directory per hierarchy)."""

    name: str
    procs_files: tuple[str, ...]  # cgroup.procs files the sandbox's first process writes to
    limits: Limits  # the limits actually applied

    def sample(self) -> CgroupSample: ...

    def kill_all(self) -> None:
        """SIGKILL every process still in the group (cgroup.kill on v2, a loop on v1)."""

    def remove(self) -> None:
        """rmdir the group's directories, retrying briefly while processes drain.
        Never raises for an already-removed group. Safe to call twice."""


class CgroupBackend(Protocol):
    mode: str  # "v1" or "v2"
    support: CgroupSupport

    def planned_dirs(self, name: str) -> tuple[str, ...]:
        """The directories ``create(name, ...)`` may make (a superset), none made yet."""

    def origin_procs(self) -> tuple[str, ...]:
        """The ``cgroup.procs`` of the groups a process forked from this one starts in, if
        the backend knows them; empty: the keeper reads them from /proc."""

    def create(self, name: str, limits: Limits) -> SandboxCgroup:
        """Create the group and apply ``limits``. Raises ``LimitUnavailable`` (with a fix)
        when a requested limit cannot be enforced here."""
