"""cgroup backends (v1 and v2) behind one interface, and their detection.

The engine's calls::

    support = detect()                    # read-only; what `flue doctor` prints
    backend = open_backend()              # V1Backend, V2Backend or None (mode "none")
    cg = create_optional(backend, f"flue-{os.getpid()}-{n}", profile.limits, support=support)
    # cg is None only when no limit was requested and no group could be made;
    # requested limits that cannot be enforced raise LimitUnavailable (title, detail, fix).
    ... the sandbox's first process writes its pid into each of cg.procs_files ...
    cg.sample(); cg.kill_all(); cg.remove()
    sweep_stale(backend)                  # leftovers of dead supervisors

See docs/cgroups.md.
"""

from __future__ import annotations

import os

from engine._linux import cgroupfs
from engine._linux.cgroupfs import CgroupFS
from engine.cgroups.base import (
    CgroupBackend,
    CgroupSample,
    CgroupSupport,
    ControllerStatus,
    SandboxCgroup,
)
from engine.cgroups.detect import Probe, backend_from, detect, open_backend, probe
from engine.cgroups.v1 import V1Backend, V1SandboxCgroup
from engine.cgroups.v2 import (
    V2Backend,
    V2SandboxCgroup,
    describe_limit,
    requested_controllers,
    unavailable_error,
)
from engine.errors import LimitUnavailable
from engine.profile.model import Limits

__all__ = [
    "CgroupBackend",
    "CgroupSample",
    "CgroupSupport",
    "ControllerStatus",
    "Probe",
    "SandboxCgroup",
    "V1Backend",
    "V1SandboxCgroup",
    "V2Backend",
    "V2SandboxCgroup",
    "backend_from",
    "create_optional",
    "describe_limit",
    "detect",
    "open_backend",
    "probe",
    "sweep_stale",
]

def _stale_pid(name: str) -> int | None:
    """The supervisor pid in a ``flue-<pid>-<rest>`` group name (what ``^flue-(\\d+)-.+$``
    matches), else None."""
    pid, sep, rest = name.removeprefix("flue-").partition("-")
    if not name.startswith("flue-") or not sep or not rest or not (pid.isascii() and pid.isdigit()):
        return None
    return int(pid)


def create_optional(
    backend: CgroupBackend | None,
    name: str,
    limits: Limits,
    *,
    support: CgroupSupport | None = None,
) -> SandboxCgroup | None:
    """Create the sandbox's group, or None when none is needed and none can be made.

    With limits requested, anything that stops them being enforced raises
    ``LimitUnavailable`` (from ``support``'s reasons when there is no backend). With no limits
    the group is still created when possible, because it is what the supervisor samples and
    kills through; failing that the sandbox runs without one.
    """
    required = requested_controllers(limits)
    if backend is None:
        if not required:
            return None
        c = required[0]
        st = support.controller(c) if support is not None else None
        reason = (st.reason if st is not None else "") or (
            support.reason if support is not None else "no usable cgroup hierarchy"
        )
        fix = (
            (st.fix if st is not None else "")
            or (support.fix if support is not None else "")
            or "run flue as root"
        )
        raise unavailable_error(list(required), limits, reason, fix)
    try:
        return backend.create(name, limits)
    except LimitUnavailable:
        if required:
            raise
        return None


def _parents_of(target: CgroupBackend | CgroupSupport | Probe) -> tuple[list[str], CgroupFS]:
    if isinstance(target, Probe):
        backend = backend_from(target)
        if backend is None:
            return [], target.fs
        target = backend
    if isinstance(target, (V1Backend, V2Backend)):
        return list(target.paths), target.fs
    if isinstance(target, CgroupSupport):
        paths: list[str] = []
        for st in target.controllers:
            if st.available and st.path and st.path not in paths:
                paths.append(st.path)
        return paths, CgroupFS()
    return [], CgroupFS()


def sweep_stale(target: CgroupBackend | CgroupSupport | Probe) -> list[str]:
    """Remove empty ``flue-<pid>-*`` groups left below the sandbox parents by supervisors
    that are no longer alive. Returns the removed directories; never raises for a group it
    cannot remove (it is left alone)."""
    parents, fs = _parents_of(target)
    removed: list[str] = []
    me = os.getpid()
    for parent in parents:
        try:
            names = fs.subgroups(parent)
        except OSError:
            continue
        for n in names:
            pid = _stale_pid(n)
            if pid is None:
                continue
            if pid == me or fs.pid_alive(pid):
                continue
            path = os.path.join(parent, n)
            try:
                if cgroupfs.group_pids(fs, path):
                    continue
                cgroupfs.remove_tree(fs, path, timeout=0.1)
            except OSError:
                continue
            removed.append(path)
    return removed
