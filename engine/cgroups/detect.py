"""Finding the cgroup hierarchies, the supervisor's place in them, and the backend to use.

Everything comes from ``/proc/self/mountinfo`` (fstype ``cgroup`` with the v1 controllers in
its super options, fstype ``cgroup2``) and ``/proc/self/cgroup``; both, the procfs root and
the filesystem object are parameters, so detection runs on fixture trees too. ``detect()`` is
read-only; the v2 backend makes its one change to the host (enabling controllers for child
groups, and if needed moving the supervisor into a leaf) on its first ``create()``.

Decision:
1. v2 when the unified hierarchy offers memory, cpu and pids to the supervisor's cgroup and
   that cgroup is ours to manage (root, or a writable delegated subtree) and the controllers
   are enabled for children or can be (no other processes in the way).
2. else v1 when at least as many of memory/cpu/pids are usable in v1 hierarchies as in v2
   (and at least one is).
3. else v2 when some controller, or at least a bare group (cpu usage from cpu.stat,
   cgroup.kill), is usable there.
4. else "none": ``open_backend()`` returns None; requested limits raise ``LimitUnavailable``
   with the reason and fix detection found.
"""

from __future__ import annotations

import os
import pwd

from engine._linux import cgroupfs
from engine._linux.cgroupfs import CgroupFS, Mount, ProcCgroup
from engine._record import field, record
from engine.cgroups.base import CgroupBackend, CgroupSupport, ControllerStatus
from engine.cgroups.v1 import V1_CONTROLLERS, V1Backend, delegation_fix
from engine.cgroups.v2 import DELEGATE_FIX, NEEDED, SUPERVISOR_LEAF, V2Backend

__all__ = ["Probe", "backend_from", "detect", "open_backend", "probe", "v1_controllers"]

_NOT_CONTROLLERS = frozenset(
    {
        "rw",
        "ro",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
        "nofavordynmods",
        "none",
        "all",
        "nsdelegate",
        "memory_localevents",
        "memory_recursiveprot",
        "memory_hugetlb_accounting",
        "pids_localevents",
    }
)


def v1_controllers(mount: Mount) -> tuple[str, ...]:
    """The controllers a v1 mount carries (``name=systemd`` style named hierarchies carry
    none)."""
    return tuple(o for o in mount.super_options if o not in _NOT_CONTROLLERS and "=" not in o)


def _who(uid: int) -> str:
    if uid == 0:
        return "root"
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


@record(slots=True)
class _V1:
    statuses: dict[str, ControllerStatus] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)  # usable controller -> directory
    mounted: set[str] = field(default_factory=set)  # controllers some v1 hierarchy carries

    def score(self) -> int:
        return sum(1 for c in NEEDED if c in self.parents)


@record(slots=True)
class _V2:
    mount: Mount
    base: str | None = None  # directory sandboxes go under
    offered: tuple[str, ...] = ()
    enabled: tuple[str, ...] = ()
    statuses: dict[str, ControllerStatus] = field(default_factory=dict)
    bare_ok: bool = False  # a group without controllers can be created (and joined)
    reason: str = ""
    fix: str = ""
    notes: list[str] = field(default_factory=list)

    def score(self) -> int:
        return sum(1 for s in self.statuses.values() if s.available)


@record(frozen=True, slots=True)
class Probe:
    """What detection found, with what the backends need beyond ``CgroupSupport``."""

    support: CgroupSupport
    v1_parents: dict[str, str]
    v2_base: str | None
    pid: int
    euid: int
    fs: CgroupFS
    procfs: str = "/proc"


def _probe_v1(mounts: list[Mount], lines: list[ProcCgroup], euid: int, fs: CgroupFS) -> _V1:
    out = _V1()
    v1_mounts = [m for m in mounts if m.fstype == "cgroup"]
    for c in V1_CONTROLLERS:
        candidates = [m for m in v1_mounts if c in v1_controllers(m)]
        if not candidates:
            out.statuses[c] = ControllerStatus(
                c, False, reason=f"no cgroup v1 hierarchy with the {c} controller is mounted"
            )
            continue
        out.mounted.add(c)
        line = next((ln for ln in lines if c in ln.controllers), None)
        if line is None:
            out.statuses[c] = ControllerStatus(
                c, False, reason=f"/proc/self/cgroup names no {c} hierarchy"
            )
            continue
        directory: str | None = None
        mount = candidates[0]
        for m in candidates:
            directory = cgroupfs.map_to_mount(m, line.path)
            if directory is not None:
                mount = m
                break
        if directory is None:
            out.statuses[c] = ControllerStatus(
                c,
                False,
                reason=f"the supervisor's {c} cgroup {line.path} is not visible under "
                f"{mount.mountpoint} (mounted from {mount.root})",
                fix="run flue where the cgroup filesystem shows its own cgroup "
                "(e.g. a container with a private cgroup namespace)",
            )
            continue
        where = f"cgroup v1 {c} hierarchy at {directory}"
        if not fs.isdir(directory):
            out.statuses[c] = ControllerStatus(
                c, False, directory, reason=f"{where} does not exist"
            )
            continue
        if mount.read_only:
            out.statuses[c] = ControllerStatus(
                c,
                False,
                directory,
                reason=f"{where} is mounted read-only",
                fix="mount the cgroup filesystem read-write (e.g. docker --cgroupns=private "
                "with a writable /sys/fs/cgroup) or run flue on the host",
            )
            continue
        if fs.writable(directory) and fs.writable(os.path.join(directory, "cgroup.procs")):
            out.statuses[c] = ControllerStatus(c, True, directory)
            out.parents[c] = directory
            continue
        try:
            owner = fs.owner(directory)
        except OSError:
            owner = 0
        if owner != euid:
            why = f"{where} is owned by {_who(owner)} and not delegated to uid {euid}"
        else:
            why = f"{where} (or its cgroup.procs) is not writable by uid {euid}"
        out.statuses[c] = ControllerStatus(
            c, False, directory, reason=why, fix=delegation_fix(directory, euid)
        )
    return out


def _probe_v2(
    mounts: list[Mount],
    lines: list[ProcCgroup],
    pid: int,
    euid: int,
    fs: CgroupFS,
    v1_mounted: set[str],
) -> _V2 | None:
    mount = next((m for m in reversed(mounts) if m.fstype == "cgroup2"), None)
    if mount is None:
        return None
    out = _V2(mount)
    line = next((ln for ln in lines if ln.hierarchy_id == 0 and not ln.controllers), None)
    if line is None:
        out.reason = "/proc/self/cgroup has no entry for the unified hierarchy"
        return out
    own = line.path
    in_leaf = own.rstrip("/").rsplit("/", 1)[-1] == SUPERVISOR_LEAF
    base_cg = (own.rstrip("/").rsplit("/", 1)[0] or "/") if in_leaf else own
    base = None
    for m in [x for x in mounts if x.fstype == "cgroup2"]:
        base = cgroupfs.map_to_mount(m, base_cg)
        if base is not None:
            out.mount = m
            break
    mp = out.mount.mountpoint
    if base is None or not fs.isdir(base):
        out.reason = f"the supervisor's cgroup {base_cg} is not visible under {mp}"
        out.fix = "run flue where the cgroup filesystem shows its own cgroup"
        return out
    out.base = base
    try:
        out.offered = tuple(fs.read(os.path.join(base, "cgroup.controllers")).split())
        out.enabled = tuple(fs.read(os.path.join(base, "cgroup.subtree_control")).split())
        procs = cgroupfs.parse_pids(fs.read(os.path.join(base, "cgroup.procs")))
    except OSError as err:
        out.reason = f"cannot read the cgroup v2 files in {base}: {err}"
        return out
    is_root = not fs.exists(os.path.join(base, "cgroup.type"))  # only the root lacks it
    others = [p for p in procs if p != pid]
    if mount.read_only:
        writable, subtree_w = False, False
        not_writable = f"the cgroup2 filesystem at {mp} is mounted read-only"
    else:
        writable = fs.writable(base) and fs.writable(os.path.join(base, "cgroup.procs"))
        subtree_w = fs.writable(os.path.join(base, "cgroup.subtree_control"))
        try:
            owner = fs.owner(base)
        except OSError:
            owner = 0
        not_writable = (
            f"cgroup v2 group {base} is owned by {_who(owner)} and not delegated to uid {euid}"
            if owner != euid
            else f"cgroup v2 group {base} is not writable by uid {euid}"
        )
    out.bare_ok = writable
    offered_txt = " ".join(out.offered) if out.offered else "none"
    moving = False
    for c in NEEDED:
        if c not in out.offered:
            if c in v1_mounted:
                reason = (
                    f"the {c} controller is bound to a cgroup v1 hierarchy, so the unified "
                    f"hierarchy at {mp} does not offer it (cgroup.controllers of {base}: "
                    f"{offered_txt})"
                )
                fix = (
                    "flue uses the v1 hierarchy instead; for pure cgroup v2 boot with "
                    "systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1=all)"
                )
            elif is_root:
                reason = f"the kernel offers no {c} controller on cgroup v2 ({mp})"
                fix = f"use a kernel built with the {c} controller"
            else:
                reason = (
                    f"the {c} controller is not delegated to {base} (its cgroup.controllers: "
                    f"{offered_txt})"
                )
                fix = DELEGATE_FIX
            out.statuses[c] = ControllerStatus(c, False, base, reason, fix)
        elif not writable:
            out.statuses[c] = ControllerStatus(c, False, base, not_writable, DELEGATE_FIX)
        elif c in out.enabled:
            out.statuses[c] = ControllerStatus(c, True, base)
        elif not subtree_w:
            out.statuses[c] = ControllerStatus(
                c,
                False,
                base,
                f"{base}/cgroup.subtree_control is not writable by uid {euid}",
                DELEGATE_FIX,
            )
        elif others and not is_root:
            out.statuses[c] = ControllerStatus(
                c,
                False,
                base,
                f"{base} holds {len(others)} other process(es), so controllers cannot be "
                "enabled for child groups (cgroup v2 no-internal-processes rule)",
                DELEGATE_FIX,
            )
        else:
            out.statuses[c] = ControllerStatus(c, True, base)
            moving = moving or (pid in procs and not is_root)
    if moving:
        out.notes.append(
            f"the supervisor will move into {base}/{SUPERVISOR_LEAF} so that controllers can "
            "be enabled for sandbox groups (cgroup v2 no-internal-processes rule)"
        )
    if not writable and not out.reason:
        out.reason = not_writable
        out.fix = DELEGATE_FIX
    return out


def _read(procfs: str, name: str, text: str | None) -> str:
    if text is not None:
        return text
    try:
        return cgroupfs.read_proc_file(procfs, "self", name)
    except OSError:
        return ""


def probe(
    *,
    procfs: str = "/proc",
    pid: int | None = None,
    euid: int | None = None,
    mountinfo_text: str | None = None,
    cgroup_text: str | None = None,
    fs: CgroupFS | None = None,
    mode: str | None = None,
) -> Probe:
    """Detect, keeping what the backends need. See ``detect`` for the parameters."""
    if mode not in (None, "v1", "v2"):
        raise ValueError(f"mode must be None, 'v1' or 'v2', not {mode!r}")
    pid = os.getpid() if pid is None else pid
    euid = os.geteuid() if euid is None else euid
    fs = fs if fs is not None else CgroupFS()
    mounts = cgroupfs.parse_mountinfo(_read(procfs, "mountinfo", mountinfo_text))
    lines = cgroupfs.parse_proc_cgroup(_read(procfs, "cgroup", cgroup_text))
    v1 = _probe_v1(mounts, lines, euid, fs)
    v2 = _probe_v2(mounts, lines, pid, euid, fs, v1.mounted)
    v2_score = v2.score() if v2 is not None else 0
    v1_score = v1.score()

    chosen: str
    if mode is not None:
        chosen = mode
    elif v2 is not None and v2_score == len(NEEDED):
        chosen = "v2"
    elif v1_score > 0 and v1_score >= v2_score:
        chosen = "v1"
    elif v2 is not None and (v2_score > 0 or v2.bare_ok):
        chosen = "v2"
    else:
        chosen = "none"
    if chosen == "v1" and not v1.parents:
        chosen = "none" if mode is None else chosen
    if chosen == "v2" and (v2 is None or v2.base is None or not (v2_score or v2.bare_ok)):
        chosen = "none" if mode is None else chosen

    notes: list[str] = []
    if v2 is not None and v1.mounted & set(NEEDED):
        notes.append(
            f"hybrid layout: cgroup2 at {v2.mount.mountpoint} offers "
            f"{'only ' + ' '.join(v2.offered) if v2.offered else 'no controllers'}; "
            f"{', '.join(c for c in NEEDED if c in v1.mounted)} are bound to cgroup v1 "
            "hierarchies"
        )
    elif v2 is None and not v1.mounted:
        notes.append("no cgroup filesystem is mounted (neither cgroup2 nor v1 hierarchies)")
    controllers: tuple[ControllerStatus, ...]
    use_v1 = chosen == "v1" or (chosen == "none" and (v1.mounted or v2 is None))
    if use_v1:
        controllers = tuple(v1.statuses[c] for c in V1_CONTROLLERS)
        if "cpuacct" not in v1.parents and chosen == "v1":
            notes.append("cpuacct is unavailable: cpu usage is not sampled")
    elif v2 is not None:
        controllers = tuple(
            v2.statuses.get(c) or ControllerStatus(c, False, reason=v2.reason, fix=v2.fix)
            for c in NEEDED
        )
        notes.extend(v2.notes)
        if chosen == "v2" and v2_score == 0:
            notes.append(
                "no controller is usable: sandbox groups only give cpu usage (cpu.stat) and "
                "cgroup.kill; limits cannot be enforced"
            )
    else:
        controllers = ()
    off = [s for s in controllers if s.name in NEEDED and not s.available]
    reason = "; ".join(dict.fromkeys(s.reason for s in off if s.reason))
    fix = next((s.fix for s in off if s.fix), "")
    if chosen == "none":
        if not reason:
            reason = (v2.reason if v2 is not None else "") or "no usable cgroup hierarchy"
        if not fix:
            fix = (v2.fix if v2 is not None else "") or "run flue as root"
    support = CgroupSupport(
        mode=chosen,
        delegated=chosen != "none" and euid != 0,
        controllers=controllers,
        reason=reason,
        fix=fix,
        notes=tuple(notes),
    )
    return Probe(
        support=support,
        v1_parents=dict(v1.parents),
        v2_base=v2.base if v2 is not None else None,
        pid=pid,
        euid=euid,
        fs=fs,
        procfs=procfs,
    )


def detect(
    *,
    procfs: str = "/proc",
    pid: int | None = None,
    euid: int | None = None,
    mountinfo_text: str | None = None,
    cgroup_text: str | None = None,
    fs: CgroupFS | None = None,
    mode: str | None = None,
) -> CgroupSupport:
    """What cgroup support this process has (read-only; what ``flue doctor`` prints).

    ``procfs``: where ``self/mountinfo`` and ``self/cgroup`` are read, unless
    ``mountinfo_text``/``cgroup_text`` give their content. ``pid``/``euid``: the supervisor's
    (default: this process). ``fs``: the filesystem object (tests pass a fake tree's).
    ``mode``: force "v1" or "v2" instead of choosing.
    """
    return probe(
        procfs=procfs,
        pid=pid,
        euid=euid,
        mountinfo_text=mountinfo_text,
        cgroup_text=cgroup_text,
        fs=fs,
        mode=mode,
    ).support


def backend_from(p: Probe) -> CgroupBackend | None:
    s = p.support
    if s.mode == "v1":
        return V1Backend(s, p.v1_parents, euid=p.euid, fs=p.fs, procfs=p.procfs)
    if s.mode == "v2" and p.v2_base is not None:
        return V2Backend(s, p.v2_base, pid=p.pid, fs=p.fs)
    return None


def open_backend(
    *,
    procfs: str = "/proc",
    pid: int | None = None,
    euid: int | None = None,
    mountinfo_text: str | None = None,
    cgroup_text: str | None = None,
    fs: CgroupFS | None = None,
    mode: str | None = None,
) -> CgroupBackend | None:
    """Detect and return the backend to use, or None when mode is "none" (or the forced
    mode has no place to create groups). Parameters as for ``detect``."""
    return backend_from(
        probe(
            procfs=procfs,
            pid=pid,
            euid=euid,
            mountinfo_text=mountinfo_text,
            cgroup_text=cgroup_text,
            fs=fs,
            mode=mode,
        )
    )
