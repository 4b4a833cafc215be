"""The cgroup v1 backend.

Each v1 controller lives in its own hierarchy (``memory``, ``cpu``, ``cpuacct``, ``pids``;
``cpu`` and ``cpuacct`` are often co-mounted as ``cpu,cpuacct``, then they share a directory).
One sandbox group is one directory per hierarchy, each created below the supervisor's own
cgroup in that hierarchy; the sandbox's first process writes its pid into every
``cgroup.procs`` of ``procs_files``.

Unprivileged use needs a delegation: the supervisor's own cgroup directory in each hierarchy
(with its ``cgroup.procs``/``tasks``) chowned to the user; new groups below it then belong to
the user and the kernel lets the user move its own processes in.
"""

from __future__ import annotations

import errno
import os

from engine._linux import cgroupfs
from engine._linux.cgroupfs import CgroupFS
from engine._record import field, record
from engine.cgroups.base import CgroupSample, CgroupSupport
from engine.cgroups.v2 import (
    CPU_PERIOD_US,
    check_limits,
    check_name,
    cpu_quota_us,
    read_int,
    read_keyed,
    remove_error,
    requested_controllers,
    unavailable_error,
)
from engine.errors import EngineError, LimitUnavailable
from engine.profile.model import Limits

__all__ = ["V1_CONTROLLERS", "V1Backend", "V1SandboxCgroup"]

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
_UNLIMITED = 1 << 62  # memory.limit_in_bytes reads 9223372036854771712 when unlimited


def delegation_fix(path: str, uid: int) -> str:
    return (
        f"run flue as root, or delegate a group to uid {uid} in each hierarchy: "
        f"`sudo mkdir {path}/flue-{uid} && sudo chown -R {uid} {path}/flue-{uid}`, move "
        f"your shell into it (`echo $$ > {path}/flue-{uid}/cgroup.procs`) and run flue "
        "from that shell"
    )


def _sum(a: int | None, b: int | None) -> int | None:
    # a charge refused by the memsw counter never reaches the memory counter: disjoint events
    if a is None:
        return b
    return a + (b or 0)


@record(slots=True)
class V1SandboxCgroup:
    """One sandbox's groups, one directory per v1 hierarchy. Picklable; holds absolute paths
    only, so use it from processes that share the host's mount namespace."""

    name: str
    dirs: tuple[tuple[str, str], ...]  # (controller, directory); co-mounted ones repeat a dir
    limits: Limits
    procs_files: tuple[str, ...]
    fs: CgroupFS = field(default_factory=CgroupFS)

    @property
    def paths(self) -> tuple[str, ...]:
        """The distinct directories of this group."""
        seen: list[str] = []
        for _, d in self.dirs:
            if d not in seen:
                seen.append(d)
        return tuple(seen)

    def _dir(self, controller: str) -> str | None:
        for c, d in self.dirs:
            if c == controller:
                return d
        return None

    def _f(self, controller: str, name: str) -> str | None:
        d = self._dir(controller)
        return os.path.join(d, name) if d is not None else None

    def attach(self, pid: int) -> None:
        """Move ``pid`` into every hierarchy of the group. Raises OSError."""
        for procs in self.procs_files:
            self.fs.write(procs, f"{pid}\n")

    def pids(self) -> list[int]:
        return sorted({p for d in self.paths for p in cgroupfs.group_pids(self.fs, d)})

    def sample(self) -> CgroupSample:
        fs = self.fs

        def num(controller: str, name: str) -> int | None:
            f = self._f(controller, name)
            return read_int(fs, f) if f is not None else None

        def keyed(controller: str, name: str) -> dict[str, int]:
            f = self._f(controller, name)
            return read_keyed(fs, f) if f is not None else {}

        mem_limit = num("memory", "memory.limit_in_bytes")
        if mem_limit is not None and mem_limit >= _UNLIMITED:
            mem_limit = None
        cpu = keyed("cpu", "cpu.stat")
        throttled = cpu.get("throttled_time")
        pids_current = num("pids", "pids.current")
        pids_limit = num("pids", "pids.max") if pids_current is not None else None
        return CgroupSample(
            cpu_usage_ns=num("cpuacct", "cpuacct.usage"),
            cpu_throttled_ns=throttled,
            cpu_nr_throttled=cpu.get("nr_throttled"),
            memory_current=num("memory", "memory.usage_in_bytes"),
            memory_peak=num("memory", "memory.max_usage_in_bytes"),
            memory_limit=mem_limit,
            memory_limit_hits=_sum(
                num("memory", "memory.failcnt"), num("memory", "memory.memsw.failcnt")
            ),
            oom_kills=keyed("memory", "memory.oom_control").get("oom_kill"),
            pids_current=pids_current,
            pids_limit=pids_limit,
            pids_limit_hits=keyed("pids", "pids.events").get("max"),
        )

    def kill_all(self, timeout: float = 2.0) -> None:
        cgroupfs.kill_until_empty(self.fs, list(self.paths), timeout)

    def remove(self, timeout: float = 2.0) -> None:
        first: tuple[str, OSError] | None = None
        for d in self.paths:
            try:
                cgroupfs.remove_tree(self.fs, d, timeout)
            except OSError as err:
                first = first or (d, err)
        if first is not None:
            raise remove_error(first[0], first[1]) from first[1]


class V1Backend:
    """Creates sandbox groups under the supervisor's own cgroup in each v1 hierarchy.

    ``parents`` maps each usable controller to the directory groups are created under
    (controllers missing from it are unavailable; ``support`` says why)."""

    mode = "v1"

    def __init__(
        self,
        support: CgroupSupport,
        parents: dict[str, str],
        *,
        euid: int | None = None,
        fs: CgroupFS | None = None,
        procfs: str = "/proc",
        memsw: bool | None = None,
    ) -> None:
        self.support = support
        self.parents = dict(parents)
        self.euid = os.geteuid() if euid is None else euid
        self.fs = fs if fs is not None else CgroupFS()
        if memsw is None:
            try:
                memsw = cgroupfs.swap_active(procfs)
            except OSError:
                memsw = True
        # Also cap memory+swap (memory.memsw.limit_in_bytes, when the kernel has it) so that
        # swapping cannot dodge the limit. Only done while swap is in use: with memsw set,
        # the memsw counter refuses the charges first and kernels >= 6.12 keep no failcnt
        # for it, so limit hits would always read 0.
        self.memsw = memsw

    @property
    def paths(self) -> tuple[str, ...]:
        seen: list[str] = []
        for d in self.parents.values():
            if d not in seen:
                seen.append(d)
        return tuple(seen)

    def _status_error(self, controller: str, limits: Limits) -> LimitUnavailable:
        st = self.support.controller(controller)
        reason = st.reason if st is not None and st.reason else f"no usable {controller} hierarchy"
        fix = st.fix if st is not None and st.fix else "run flue as root"
        return unavailable_error([controller], limits, reason, fix)

    def origin_procs(self) -> tuple[str, ...]:
        """The cgroup.procs of this process's own groups, the parents of every new group."""
        return tuple(os.path.join(d, "cgroup.procs") for d in self.paths)

    def planned_dirs(self, name: str) -> tuple[str, ...]:
        check_name(name)
        return tuple(os.path.join(parent, name) for parent in self.paths)

    def create(self, name: str, limits: Limits) -> V1SandboxCgroup:
        check_name(name)
        check_limits(limits)
        required = requested_controllers(limits)
        for c in required:
            if c not in self.parents:
                raise self._status_error(c, limits)
        made: dict[str, str] = {}  # parent dir -> new dir
        dirs: list[tuple[str, str]] = []
        cg = V1SandboxCgroup(name=name, dirs=(), limits=limits, procs_files=(), fs=self.fs)
        try:
            for controller in V1_CONTROLLERS:
                parent = self.parents.get(controller)
                if parent is None:
                    continue
                if parent not in made:
                    path = os.path.join(parent, name)
                    try:
                        self._mkdir(path)
                    except OSError as err:
                        if controller in required:
                            raise unavailable_error(
                                [controller],
                                limits,
                                f"cannot create the cgroup {path}: {err.strerror}",
                                delegation_fix(parent, self.euid)
                                if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                                else "remove stale groups (rmdir) and retry",
                            ) from err
                        continue  # optional hierarchy (sampling only): go without it
                    made[parent] = path
                dirs.append((controller, made[parent]))
                cg.dirs = tuple(dirs)  # so a failure below removes what exists
            if not dirs:
                raise unavailable_error(
                    [], limits, "no cgroup v1 hierarchy accepted a new group", "run flue as root"
                )
            cg.procs_files = tuple(os.path.join(d, "cgroup.procs") for d in cg.paths)
            self._apply(cg, limits)
        except BaseException:
            try:
                cg.remove(timeout=0.5)
            except EngineError:
                pass
            raise
        return cg

    def _mkdir(self, path: str) -> None:
        try:
            self.fs.mkdir(path)
        except FileExistsError:
            cgroupfs.remove_tree(self.fs, path, timeout=0.2)  # a dead supervisor's leftover
            self.fs.mkdir(path)

    def _apply(self, cg: V1SandboxCgroup, limits: Limits) -> None:
        writes: list[tuple[str, str, str]] = []
        if limits.memory is not None:
            writes.append(("memory", "memory.limit_in_bytes", str(limits.memory)))
            # with swap accounting, memsw caps memory+swap so swapping cannot dodge the limit;
            # it must be written after memory.limit_in_bytes (memsw >= limit at all times)
            memsw = cg._f("memory", "memory.memsw.limit_in_bytes")
            if self.memsw and memsw is not None and self.fs.exists(memsw):
                writes.append(("memory", "memory.memsw.limit_in_bytes", str(limits.memory)))
        if limits.cpus is not None:
            writes.append(("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)))
            writes.append(("cpu", "cpu.cfs_quota_us", str(cpu_quota_us(limits.cpus))))
        if limits.pids is not None:
            writes.append(("pids", "pids.max", str(limits.pids)))
        for controller, fname, value in writes:
            target = cg._f(controller, fname)
            assert target is not None  # required controllers have a directory
            try:
                self.fs.write(target, value + "\n")
            except OSError as err:
                raise unavailable_error(
                    [controller],
                    limits,
                    f"writing {value!r} to {target} failed: {err.strerror}",
                    delegation_fix(self.parents[controller], self.euid)
                    if err.errno in (errno.EACCES, errno.EPERM)
                    else "check the value against the parent group's limits",
                ) from err
