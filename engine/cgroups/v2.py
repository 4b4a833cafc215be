"""The cgroup v2 (unified hierarchy) backend.

Sandboxes are created as ``<base>/<name>`` where ``<base>`` is the supervisor's own cgroup
(or its parent when the supervisor already moved itself into ``<base>/flue-supervisor``).
Before the first group is created the backend enables ``memory cpu pids`` (those offered) in
``<base>/cgroup.subtree_control``. The kernel refuses that with EBUSY while ``<base>`` itself
holds processes (the no-internal-processes rule); when the supervisor is the only one there it
moves itself into the leaf ``<base>/flue-supervisor`` and retries, otherwise the limits are
unavailable and the error says how to get a delegated subtree.

This module also holds the small helpers both backends share (limit names, quotas).
"""

from __future__ import annotations

import errno
import os

from engine._linux import cgroupfs
from engine._linux.cgroupfs import CgroupFS
from engine._record import field, record
from engine.cgroups.base import CgroupSample, CgroupSupport
from engine.errors import EngineError, LimitUnavailable
from engine.profile.model import Limits

__all__ = [
    "CPU_PERIOD_US",
    "NEEDED",
    "SUPERVISOR_LEAF",
    "V2Backend",
    "V2SandboxCgroup",
    "check_name",
    "cpu_quota_us",
    "describe_limit",
    "requested_controllers",
    "unavailable_error",
]

NEEDED = ("memory", "cpu", "pids")  # the controllers flue's limits use
CPU_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel refuses smaller quotas
SUPERVISOR_LEAF = "flue-supervisor"
DELEGATE_FIX = (
    "run flue in a delegated cgroup subtree, e.g. `systemd-run --user --scope -p Delegate=yes "
    "flue …` (the user manager must delegate the controllers: `systemctl edit user@.service` "
    "with `[Service]` `Delegate=cpu memory pids`), or run flue as root"
)


# --- helpers shared by both backends ------------------------------------------------------


def requested_controllers(limits: Limits) -> tuple[str, ...]:
    """The controllers the limits that are set need (a subset of ``NEEDED``)."""
    out: list[str] = []
    if limits.memory is not None:
        out.append("memory")
    if limits.cpus is not None:
        out.append("cpu")
    if limits.pids is not None:
        out.append("pids")
    return tuple(out)


def _human_bytes(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def describe_limit(controller: str, limits: Limits) -> str:
    if controller == "memory" and limits.memory is not None:
        return f"memory limit {_human_bytes(limits.memory)}"
    if controller == "cpu" and limits.cpus is not None:
        return f"cpu limit {limits.cpus:g} CPUs"
    if controller == "pids" and limits.pids is not None:
        return f"pids limit {limits.pids}"
    return f"{controller} limit"


def unavailable_error(
    controllers: tuple[str, ...] | list[str], limits: Limits, reason: str, fix: str
) -> LimitUnavailable:
    names = ", ".join(describe_limit(c, limits) for c in controllers) or "a cgroup"
    verb = "cannot be enforced" if controllers else "cannot be created"
    return LimitUnavailable(f"{names} {verb} here", reason, fix)


def check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"invalid cgroup name {name!r}")


def cpu_quota_us(cpus: float, period_us: int = CPU_PERIOD_US) -> int:
    return max(MIN_QUOTA_US, round(cpus * period_us))


def check_limits(limits: Limits) -> None:
    """Values the kernel would refuse, reported before anything is created."""
    if limits.memory is not None and limits.memory <= 0:
        raise LimitUnavailable(
            f"memory limit {limits.memory} is not a positive number of bytes",
            fix='set limits.memory to a size such as "512M"',
        )
    if limits.cpus is not None and not limits.cpus > 0:
        raise LimitUnavailable(
            f"cpu limit {limits.cpus} is not a positive number of CPUs",
            fix="set limits.cpus to a number such as 0.5 or 2",
        )
    if limits.pids is not None and limits.pids <= 0:
        raise LimitUnavailable(
            f"pids limit {limits.pids} is not a positive number",
            fix="set limits.pids to a number such as 256",
        )


def read_opt(fs: CgroupFS, path: str) -> str | None:
    """A file's text, or None when it cannot be read (absent, group gone)."""
    try:
        return fs.read(path)
    except OSError:
        return None


def read_int(fs: CgroupFS, path: str) -> int | None:
    text = read_opt(fs, path)
    if text is None:
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def read_max(fs: CgroupFS, path: str) -> int | None:
    """A limit file holding a number or ``max`` (→ None)."""
    return read_int(fs, path)


def read_keyed(fs: CgroupFS, path: str) -> dict[str, int]:
    text = read_opt(fs, path)
    return cgroupfs.parse_keyed(text) if text is not None else {}


def remove_error(path: str, err: OSError) -> EngineError:
    if err.errno == errno.EBUSY:
        return EngineError(
            f"cgroup {path} is still in use",
            f"rmdir: {err.strerror}: processes are still inside it",
            "call kill_all() first; a process in uninterruptible sleep can delay the removal",
        )
    return EngineError(f"cannot remove cgroup {path}", str(err), "remove it as root (rmdir)")


# --- the v2 sandbox group -----------------------------------------------------------------


@record(slots=True)
class V2SandboxCgroup:
    """One sandbox's group in the unified hierarchy. Picklable; holds absolute paths only, so
    use it from processes that share the host's mount namespace (see docs/cgroups.md)."""

    name: str
    path: str
    limits: Limits
    procs_files: tuple[str, ...]
    fs: CgroupFS = field(default_factory=CgroupFS)
    _peak: int = 0  # max of memory.current samples, for kernels without memory.peak

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,)

    def _f(self, name: str) -> str:
        return os.path.join(self.path, name)

    def attach(self, pid: int) -> None:
        """Move ``pid`` into the group (the supervisor's way; the sandbox itself writes
        into ``procs_files``). Raises OSError."""
        self.fs.write(self._f("cgroup.procs"), f"{pid}\n")

    def pids(self) -> list[int]:
        return cgroupfs.group_pids(self.fs, self.path)

    def sample(self) -> CgroupSample:
        fs = self.fs
        cpu = read_keyed(fs, self._f("cpu.stat"))
        mem_current = read_int(fs, self._f("memory.current"))
        peak = read_int(fs, self._f("memory.peak"))
        if mem_current is not None:
            self._peak = max(self._peak, mem_current)
            if peak is None:
                peak = self._peak
        mem_events = read_keyed(fs, self._f("memory.events"))
        pids_events = read_keyed(fs, self._f("pids.events"))
        has_mem = mem_current is not None
        pids_current = read_int(fs, self._f("pids.current"))
        usage = cpu.get("usage_usec")
        throttled = cpu.get("throttled_usec")
        return CgroupSample(
            cpu_usage_ns=usage * 1000 if usage is not None else None,
            cpu_throttled_ns=throttled * 1000 if throttled is not None else None,
            cpu_nr_throttled=cpu.get("nr_throttled"),
            memory_current=mem_current,
            memory_peak=peak,
            memory_limit=read_max(fs, self._f("memory.max")) if has_mem else None,
            memory_limit_hits=mem_events.get("max"),
            oom_kills=mem_events.get("oom_kill"),
            pids_current=pids_current,
            pids_limit=read_max(fs, self._f("pids.max")) if pids_current is not None else None,
            pids_limit_hits=pids_events.get("max"),
        )

    def kill_all(self, timeout: float = 2.0) -> None:
        kill_file = self._f("cgroup.kill")
        if self.fs.exists(kill_file):
            try:
                self.fs.write(kill_file, "1\n")
            except FileNotFoundError:
                return  # group already gone
            except OSError:
                pass  # fall back to the loop
            else:
                if cgroupfs.wait_until_empty(self.fs, [self.path], timeout):
                    return
        cgroupfs.kill_until_empty(self.fs, [self.path], timeout)

    def remove(self, timeout: float = 2.0) -> None:
        try:
            cgroupfs.remove_tree(self.fs, self.path, timeout)
        except OSError as err:
            raise remove_error(self.path, err) from err


# --- the backend ---------------------------------------------------------------------------


class V2Backend:
    """Creates sandbox groups under ``base`` in the unified hierarchy."""

    mode = "v2"

    def __init__(
        self,
        support: CgroupSupport,
        base: str,
        *,
        pid: int | None = None,
        fs: CgroupFS | None = None,
    ) -> None:
        self.support = support
        self.base = base
        self.pid = os.getpid() if pid is None else pid
        self.fs = fs if fs is not None else CgroupFS()
        self._enabled: frozenset[str] | None = None  # controllers enabled for children

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.base,)

    def _available(self, controller: str) -> bool:
        st = self.support.controller(controller)
        return st is not None and st.available

    def _status_error(self, controller: str, limits: Limits) -> LimitUnavailable:
        st = self.support.controller(controller)
        reason = st.reason if st is not None else f"no {controller} controller"
        fix = st.fix if st is not None and st.fix else DELEGATE_FIX
        return unavailable_error([controller], limits, reason, fix)

    def _subtree(self) -> set[str]:
        return set(self.fs.read(os.path.join(self.base, "cgroup.subtree_control")).split())

    def _move_self_to_leaf(self) -> None:
        leaf = os.path.join(self.base, SUPERVISOR_LEAF)
        try:
            self.fs.mkdir(leaf)
        except FileExistsError:
            pass
        self.fs.write(os.path.join(leaf, "cgroup.procs"), f"{self.pid}\n")

    def prepare(
        self, required: tuple[str, ...] = (), limits: Limits | None = None
    ) -> frozenset[str]:
        """Enable the available controllers for child groups (once). Returns the enabled set.
        Raises LimitUnavailable only when a controller in ``required`` cannot be enabled."""
        limits = limits if limits is not None else Limits()
        if self._enabled is not None and set(required) <= self._enabled:
            return self._enabled
        want = [c for c in NEEDED if self._available(c)]
        try:
            have = self._subtree()
        except OSError as err:
            if required:
                raise unavailable_error(
                    required,
                    limits,
                    f"cannot read {self.base}/cgroup.subtree_control: {err}",
                    DELEGATE_FIX,
                ) from err
            self._enabled = frozenset()
            return self._enabled
        missing = [c for c in want if c not in have]
        if missing:
            target = os.path.join(self.base, "cgroup.subtree_control")
            data = " ".join(f"+{c}" for c in missing) + "\n"
            try:
                try:
                    self.fs.write(target, data)
                except OSError as err:
                    if err.errno != errno.EBUSY:
                        raise
                    procs = cgroupfs.parse_pids(
                        self.fs.read(os.path.join(self.base, "cgroup.procs"))
                    )
                    others = [p for p in procs if p != self.pid]
                    if others or self.pid not in procs:
                        raise OSError(
                            errno.EBUSY,
                            f"{self.base} holds {len(others)} other process(es) "
                            f"(e.g. pid {others[0] if others else '?'}), so controllers "
                            "cannot be enabled for child groups (cgroup v2 "
                            "no-internal-processes rule)",
                            target,
                        ) from err
                    self._move_self_to_leaf()
                    self.fs.write(target, data)
                have = self._subtree()
            except OSError as err:
                if required:
                    reason = err.strerror if err.errno == errno.EBUSY else str(err)
                    raise unavailable_error(
                        [c for c in required if c not in have],
                        limits,
                        f"cannot enable {' '.join(missing)} in {target}: {reason}",
                        DELEGATE_FIX,
                    ) from err
        self._enabled = frozenset(c for c in want if c in have)
        return self._enabled

    def origin_procs(self) -> tuple[str, ...]:
        # the supervisor may have been moved into a leaf of its own (no internal processes):
        # the keeper finds where it is in /proc
        return ()

    def planned_dirs(self, name: str) -> tuple[str, ...]:
        check_name(name)
        return (os.path.join(self.base, name),)

    def create(self, name: str, limits: Limits) -> V2SandboxCgroup:
        check_name(name)
        check_limits(limits)
        required = requested_controllers(limits)
        for c in required:
            if not self._available(c):
                raise self._status_error(c, limits)
        enabled = self.prepare(required, limits)
        for c in required:
            if c not in enabled:
                raise unavailable_error(
                    [c],
                    limits,
                    f"the {c} controller is not enabled in {self.base}/cgroup.subtree_control",
                    DELEGATE_FIX,
                )
        path = os.path.join(self.base, name)
        try:
            try:
                self.fs.mkdir(path)
            except FileExistsError:
                # a leftover of a dead supervisor whose pid was reused: take it over if empty
                cgroupfs.remove_tree(self.fs, path, timeout=0.2)
                self.fs.mkdir(path)
        except OSError as err:
            raise unavailable_error(
                required,
                limits,
                f"cannot create the cgroup {path}: {err.strerror}",
                DELEGATE_FIX
                if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
                else "remove the stale group (rmdir it) and retry",
            ) from err
        cg = V2SandboxCgroup(
            name=name,
            path=path,
            limits=limits,
            procs_files=(os.path.join(path, "cgroup.procs"),),
            fs=self.fs,
        )
        try:
            self._apply(cg, limits)
        except BaseException:
            try:
                cg.remove(timeout=0.5)
            except EngineError:
                pass
            raise
        return cg

    def _apply(self, cg: V2SandboxCgroup, limits: Limits) -> None:
        writes: list[tuple[str, str, str]] = []  # (controller, file, value)
        if limits.memory is not None:
            writes.append(("memory", "memory.max", str(limits.memory)))
            if self.fs.exists(os.path.join(cg.path, "memory.swap.max")):
                writes.append(("memory", "memory.swap.max", "0"))
        if limits.cpus is not None:
            writes.append(("cpu", "cpu.max", f"{cpu_quota_us(limits.cpus)} {CPU_PERIOD_US}"))
        if limits.pids is not None:
            writes.append(("pids", "pids.max", str(limits.pids)))
        for controller, fname, value in writes:
            target = os.path.join(cg.path, fname)
            try:
                self.fs.write(target, value + "\n")
            except OSError as err:
                raise unavailable_error(
                    [controller],
                    limits,
                    f"writing {value!r} to {target} failed: {err.strerror}",
                    DELEGATE_FIX
                    if err.errno in (errno.EACCES, errno.EPERM)
                    else "check the value against the parent group's limits",
                ) from err
