"""A cgroup subtree delegated to an unprivileged uid, the way a delegating system makes one.

As root, below this process's own cgroup in every hierarchy flue uses (on v1: memory, cpu,
cpuacct, pids; on v2: the unified one), create a group, chown it and its interface files to
the uid, and let the unprivileged child start inside it (``procs_files``: the child writes
its own pid there before dropping privileges). ``remove()`` kills whatever is left and
removes the whole subtree; ``leftovers()`` names sandbox groups that outlived their run.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass, field

_seq = itertools.count(1)
# the v2 backend moves an unprivileged supervisor into this leaf (not a sandbox leftover)
SUPERVISOR_LEAF = "flue-supervisor"


@dataclass
class Delegation:
    uid: int
    gid: int
    mode: str  # "v1" | "v2"
    dirs: list[str] = field(default_factory=list)

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def leftovers(self) -> list[str]:
        out = []
        for d in self.dirs:
            try:
                names = sorted(e.name for e in os.scandir(d) if e.is_dir())
            except FileNotFoundError:
                continue
            out += [os.path.join(d, n) for n in names if n != SUPERVISOR_LEAF]
        return out

    def remove(self, timeout: float = 5.0) -> None:
        errors = []
        for d in self.dirs:
            try:
                _remove_tree(d, timeout)
            except OSError as err:
                errors.append(f"{d}: {err}")
        self.dirs = []
        if errors:
            raise RuntimeError("could not remove the delegated cgroups: " + "; ".join(errors))


def _pids(d: str) -> list[int]:
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def _remove_tree(top: str, timeout: float) -> None:
    if not os.path.isdir(top):
        return
    order = []
    for dirpath, _dirs, _files in os.walk(top):
        order.append(dirpath)
    deadline = time.monotonic() + timeout
    for d in reversed(order):  # children first
        while True:
            for pid in _pids(d):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def _chown_group(d: str, uid: int, gid: int) -> None:
    os.chown(d, uid, gid)
    for name in os.listdir(d):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            os.chown(p, uid, gid)


def delegate(uid: int, gid: int) -> Delegation:
    """Create the delegated subtree below this (root) process's own cgroups."""
    from engine import cgroups

    pr = cgroups.probe()
    mode = pr.support.mode
    name = f"flue-test-uid{uid}-{os.getpid()}-{next(_seq)}"
    dlg = Delegation(uid, gid, mode)
    if mode == "v1":
        parents = list(dict.fromkeys(pr.v1_parents.values()))
        if not parents:
            raise RuntimeError(f"no usable cgroup v1 hierarchy: {pr.support.reason}")
    elif mode == "v2" and pr.v2_base is not None:
        parents = [pr.v2_base]
    else:
        raise RuntimeError(f"no usable cgroup hierarchy to delegate: {pr.support.reason}")
    try:
        for parent in parents:
            d = os.path.join(parent, name)
            os.mkdir(d, 0o755)
            dlg.dirs.append(d)
            if mode == "v2":
                with open(os.path.join(parent, "cgroup.controllers")) as f:
                    ctl = f.read().split()
                want = [c for c in ("cpu", "memory", "pids") if c in ctl]
                with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                    f.write(" ".join("+" + c for c in want))
            _chown_group(d, uid, gid)
    except BaseException:
        dlg.remove()
        raise
    return dlg
