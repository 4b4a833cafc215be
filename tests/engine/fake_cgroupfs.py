"""Faithful fake cgroup trees in a temp directory, for the cgroup backends' tests.

``FakeCgroup2FS`` and ``FakeCgroupV1FS`` subclass the real ``CgroupFS`` and emulate what the
kernel does on top of plain files, so the backends run their real code path:

cgroup2
* ``mkdir`` creates the interface files a kernel would: the core ``cgroup.*`` files, the core
  ``cpu.stat``, and the files of every controller enabled in the parent's subtree_control;
  a child's ``cgroup.controllers`` is its parent's ``cgroup.subtree_control``.
* ``+ctrl`` in subtree_control needs ``ctrl`` in the group's own cgroup.controllers (ENOENT)
  and, outside the root, no processes in the group (EBUSY: no-internal-processes rule);
  ``-ctrl`` is refused while a child still enables it (EBUSY). Existing children gain or lose
  the controller's files.
* writing a pid into cgroup.procs moves it (out of every other group); a group that enables
  controllers for its children refuses processes (EBUSY).
* ``cgroup.kill`` empties the subtree (the pids are recorded in ``killed``); rmdir refuses
  groups with processes or children (EBUSY); read-only files refuse writes (EACCES); limit
  files check their syntax (EINVAL).

cgroup v1: one directory per hierarchy under the root, named by its controllers
(``cpu,cpuacct``); mkdir populates that hierarchy's files; memsw must stay >= the memory limit.

Ownership is emulated for unprivileged scenarios: ``owners`` maps paths to uids and
``not_writable`` lists paths the caller may not write.
"""

from __future__ import annotations

import errno
import os
import signal

from engine._linux.cgroupfs import CgroupFS, parse_pids

ALL_V2 = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
_RO = object()  # marker: read-only interface file


def _err(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class _FakeBase(CgroupFS):
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.owners: dict[str, int] = {}
        self.not_writable: set[str] = set()
        self.alive: set[int] = set()
        self.signals: list[tuple[int, int]] = []
        self.killed: list[int] = []
        self.readonly_files: set[str] = set()

    # plain-file helpers the fake itself uses (no kernel rules)
    def _put(self, path: str, content: str, ro: bool = False) -> None:
        with open(path, "w") as f:
            f.write(content)
        if ro:
            self.readonly_files.add(path)
        else:
            self.readonly_files.discard(path)

    def _get(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def _procs(self, group: str) -> list[int]:
        try:
            return parse_pids(self._get(os.path.join(group, "cgroup.procs")))
        except FileNotFoundError:
            return []

    def _set_procs(self, group: str, pids: list[int]) -> None:
        self._put(os.path.join(group, "cgroup.procs"), "".join(f"{p}\n" for p in pids))

    def _groups(self, top: str) -> list[str]:
        out = []
        for dirpath, _dirs, _files in os.walk(top):
            out.append(dirpath)
        return out

    def _move(self, top: str, group: str, pid: int) -> None:
        for g in self._groups(top):
            ps = self._procs(g)
            if pid in ps:
                self._set_procs(g, [p for p in ps if p != pid])
        self._set_procs(group, [*self._procs(group), pid])

    # test conveniences
    def path(self, cgpath: str) -> str:
        return os.path.normpath(self.root + "/" + cgpath.strip("/")) if cgpath != "/" else self.root

    def put(self, cgpath: str, name: str, content: str) -> None:
        """Set an interface file's content as the kernel would report it."""
        self._put(
            os.path.join(self.path(cgpath), name),
            content,
            os.path.join(self.path(cgpath), name) in self.readonly_files,
        )

    def get(self, cgpath: str, name: str) -> str:
        return self._get(os.path.join(self.path(cgpath), name))

    def procs(self, cgpath: str) -> list[int]:
        return self._procs(self.path(cgpath))

    # CgroupFS overrides shared by both fakes
    def writable(self, path: str) -> bool:
        p = os.path.abspath(path)
        if p in self.not_writable or os.path.dirname(p) in self.not_writable:
            return False
        return os.path.exists(p)

    def owner(self, path: str) -> int:
        p = os.path.abspath(path)
        if not os.path.exists(p):
            raise _err(errno.ENOENT, p)
        return self.owners.get(p, 0)

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        self.signals.append((pid, sig))
        if sig == signal.SIGKILL:
            for g in self._groups(self.root):
                ps = self._procs(g)
                if pid in ps:
                    self._set_procs(g, [p for p in ps if p != pid])

    def pid_alive(self, pid: int) -> bool:
        return pid in self.alive

    def rmdir(self, path: str) -> None:
        p = os.path.abspath(path)
        if not os.path.isdir(p):
            raise _err(errno.ENOENT, p)
        if p == self.root or self._is_hierarchy_root(p):
            raise _err(errno.EBUSY, p)
        if self.subgroups(p) or self._procs(p):
            raise _err(errno.EBUSY, p)
        if os.path.dirname(p) in self.not_writable:
            raise _err(errno.EACCES, p)
        for name in os.listdir(p):
            os.unlink(os.path.join(p, name))
            self.readonly_files.discard(os.path.join(p, name))
        os.rmdir(p)

    def _is_hierarchy_root(self, p: str) -> bool:
        return False

    def _check_write(self, path: str) -> str:
        p = os.path.abspath(path)
        if not os.path.isfile(p):
            raise _err(errno.ENOENT, p)
        if p in self.readonly_files:
            raise _err(errno.EACCES, p)
        if not self.writable(p):
            raise _err(errno.EACCES, p)
        return p


def _limit_ok(value: str) -> bool:
    return value == "max" or (value.isdigit() and int(value) >= 0)


class FakeCgroup2FS(_FakeBase):
    """A cgroup2 mount at ``root`` offering ``controllers`` (see the module docstring)."""

    def __init__(
        self,
        root: str,
        controllers: tuple[str, ...] = ALL_V2,
        *,
        peak: bool = True,
        swap: bool = True,
        kill_file: bool = True,
    ) -> None:
        super().__init__(root)
        self.peak = peak
        self.swap = swap
        self.kill_file = kill_file
        os.makedirs(self.root, exist_ok=True)
        r = self.root
        self._put(f"{r}/cgroup.controllers", " ".join(controllers) + "\n", ro=True)
        self._put(f"{r}/cgroup.subtree_control", "")
        self._put(f"{r}/cgroup.procs", "")
        self._put(f"{r}/cgroup.threads", "")
        self._put(f"{r}/cgroup.max.depth", "max\n")
        self._put(f"{r}/cgroup.stat", "nr_descendants 0\nnr_dying_descendants 0\n", ro=True)
        self._put(f"{r}/cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n", ro=True)

    def mountinfo(self, mount_id: int = 30) -> str:
        return (
            f"{mount_id} 23 0:26 / {self.root} rw,nosuid,nodev,noexec,relatime shared:4 - "
            "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
        )

    # --- kernel emulation ---

    def _enabled(self, group: str) -> list[str]:
        return self._get(os.path.join(group, "cgroup.subtree_control")).split()

    def _controller_files(self, group: str, c: str) -> None:
        g = group
        if c == "memory":
            self._put(f"{g}/memory.max", "max\n")
            self._put(f"{g}/memory.high", "max\n")
            self._put(f"{g}/memory.low", "0\n")
            self._put(f"{g}/memory.min", "0\n")
            self._put(f"{g}/memory.oom.group", "0\n")
            self._put(f"{g}/memory.current", "0\n", ro=True)
            if self.peak:
                self._put(f"{g}/memory.peak", "0\n", ro=True)
            self._put(
                f"{g}/memory.events",
                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
                ro=True,
            )
            self._put(f"{g}/memory.stat", "anon 0\nfile 0\n", ro=True)
            if self.swap:
                self._put(f"{g}/memory.swap.max", "max\n")
                self._put(f"{g}/memory.swap.current", "0\n", ro=True)
        elif c == "cpu":
            self._put(f"{g}/cpu.max", "max 100000\n")
            self._put(f"{g}/cpu.weight", "100\n")
            self._put(
                f"{g}/cpu.stat",
                "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\n"
                "throttled_usec 0\nnr_bursts 0\nburst_usec 0\n",
                ro=True,
            )
        elif c == "pids":
            self._put(f"{g}/pids.max", "max\n")
            self._put(f"{g}/pids.current", "0\n", ro=True)
            self._put(f"{g}/pids.peak", "0\n", ro=True)
            self._put(f"{g}/pids.events", "max 0\n", ro=True)
        elif c == "io":
            self._put(f"{g}/io.max", "")
            self._put(f"{g}/io.stat", "", ro=True)

    def _drop_controller_files(self, group: str, c: str) -> None:
        for name in os.listdir(group):
            if name.startswith(c + ".") and c != "cgroup":
                os.unlink(os.path.join(group, name))
                self.readonly_files.discard(os.path.join(group, name))
        if c == "cpu":
            self._put(f"{group}/cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n", ro=True)

    def mkdir(self, path: str) -> None:
        p = os.path.abspath(path)
        parent = os.path.dirname(p)
        if not p.startswith(self.root + "/") or not os.path.isfile(f"{parent}/cgroup.procs"):
            raise _err(errno.ENOENT, p)
        if os.path.exists(p):
            raise _err(errno.EEXIST, p)
        if parent in self.not_writable:
            raise _err(errno.EACCES, p)
        os.mkdir(p)
        enabled = self._enabled(parent)
        self._put(f"{p}/cgroup.controllers", " ".join(enabled) + ("\n" if enabled else ""), ro=True)
        self._put(f"{p}/cgroup.subtree_control", "")
        self._put(f"{p}/cgroup.procs", "")
        self._put(f"{p}/cgroup.threads", "")
        self._put(f"{p}/cgroup.type", "domain\n")
        self._put(f"{p}/cgroup.events", "populated 0\nfrozen 0\n", ro=True)
        self._put(f"{p}/cgroup.freeze", "0\n")
        self._put(f"{p}/cgroup.max.depth", "max\n")
        self._put(f"{p}/cgroup.stat", "nr_descendants 0\nnr_dying_descendants 0\n", ro=True)
        if self.kill_file:
            self._put(f"{p}/cgroup.kill", "")
        self._put(f"{p}/cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n", ro=True)
        for c in enabled:
            self._controller_files(p, c)

    def write(self, path: str, data: str) -> None:
        p = self._check_write(path)
        group, name = os.path.split(p)
        value = data.strip()
        if name == "cgroup.procs":
            if not value.isdigit() or int(value) == 0:
                raise _err(errno.EINVAL, p)
            if group != self.root and self._enabled(group):
                raise _err(errno.EBUSY, p)
            self._move(self.root, group, int(value))
        elif name == "cgroup.subtree_control":
            self._subtree_write(group, p, value)
        elif name == "cgroup.kill":
            if value != "1":
                raise _err(errno.EINVAL, p)
            for g in self._groups(group):
                self.killed.extend(self._procs(g))
                self._set_procs(g, [])
        elif name in ("memory.max", "memory.high", "memory.swap.max", "pids.max"):
            if not _limit_ok(value):
                raise _err(errno.EINVAL, p)
            self._put(p, value + "\n")
        elif name == "cpu.max":
            parts = value.split()
            ok = 1 <= len(parts) <= 2 and (parts[0] == "max" or parts[0].isdigit())
            if ok and len(parts) == 2:
                ok = parts[1].isdigit() and 1000 <= int(parts[1]) <= 1_000_000
            if ok and parts[0] != "max":
                ok = int(parts[0]) >= 1000
            if not ok:
                raise _err(errno.EINVAL, p)
            period = parts[1] if len(parts) == 2 else self._get(p).split()[1]
            self._put(p, f"{parts[0]} {period}\n")
        else:
            self._put(p, data)

    def _subtree_write(self, group: str, p: str, value: str) -> None:
        ops = value.split()
        offered = self._get(os.path.join(group, "cgroup.controllers")).split()
        enabled = self._enabled(group)
        for op in ops:
            if len(op) < 2 or op[0] not in "+-":
                raise _err(errno.EINVAL, p)
            if op[0] == "+" and op[1:] not in offered:
                raise _err(errno.ENOENT, p)
        children = [os.path.join(group, n) for n in self.subgroups(group)]
        if any(op[0] == "+" for op in ops) and group != self.root and self._procs(group):
            raise _err(errno.EBUSY, p)
        for op in ops:
            if op[0] == "-" and any(op[1:] in self._enabled(ch) for ch in children):
                raise _err(errno.EBUSY, p)
        new = list(enabled)
        for op in ops:
            c = op[1:]
            if op[0] == "+" and c not in new:
                new.append(c)
            elif op[0] == "-" and c in new:
                new.remove(c)
        new = [c for c in offered if c in new]  # the kernel prints them in its own order
        self._put(p, " ".join(new) + ("\n" if new else ""))
        for ch in children:
            self._put(f"{ch}/cgroup.controllers", " ".join(new) + ("\n" if new else ""), ro=True)
            for c in new:
                if c not in enabled:
                    self._controller_files(ch, c)
            for c in enabled:
                if c not in new:
                    self._drop_controller_files(ch, c)

    # --- building layouts ---

    def make_group(self, cgpath: str, *, enable: tuple[str, ...] = ()) -> str:
        """mkdir -p ``cgpath`` by the kernel rules, enabling ``enable`` in subtree_control
        on the way down (so a leaf at the end receives them)."""
        cur = self.root
        for c in enable:
            if c not in self._enabled(cur):
                self.write(f"{cur}/cgroup.subtree_control", f"+{c}")
        parts = [x for x in cgpath.strip("/").split("/") if x]
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            if not os.path.isdir(cur):
                self.mkdir(cur)
            if i < len(parts) - 1:
                offered = self._get(f"{cur}/cgroup.controllers").split()
                todo = [c for c in enable if c in offered and c not in self._enabled(cur)]
                if todo:
                    self.write(f"{cur}/cgroup.subtree_control", " ".join(f"+{c}" for c in todo))
        return cur

    def add_procs(self, cgpath: str, *pids: int) -> None:
        """Move ``pids`` into ``cgpath`` by the kernel rules, as root would."""
        saved, self.not_writable = self.not_writable, set()
        try:
            for pid in pids:
                self.write(os.path.join(self.path(cgpath), "cgroup.procs"), str(pid))
        finally:
            self.not_writable = saved


class FakeCgroupV1FS(_FakeBase):
    """cgroup v1 hierarchies under ``root``, one directory per hierarchy named by its
    controllers (e.g. ``memory``, ``cpu,cpuacct``, ``pids``)."""

    def __init__(self, root: str, hierarchies: tuple[str, ...]) -> None:
        super().__init__(root)
        self.hierarchies = hierarchies
        for h in hierarchies:
            d = os.path.join(self.root, h)
            os.makedirs(d, exist_ok=True)
            self._populate(d, h, is_root=True)

    def hierarchy_dir(self, h: str) -> str:
        return os.path.join(self.root, h)

    def mountinfo(self) -> str:
        lines = []
        for i, h in enumerate(self.hierarchies):
            lines.append(
                f"{40 + i} 31 0:{40 + i} / {self.root}/{h} rw,nosuid,nodev,noexec,relatime "
                f"shared:{10 + i} - cgroup cgroup rw,{h}\n"
            )
        return "".join(lines)

    def _hierarchy(self, p: str) -> str:
        rel = os.path.relpath(p, self.root)
        return rel.split("/")[0]

    def _is_hierarchy_root(self, p: str) -> bool:
        return os.path.dirname(p) == self.root

    def _populate(self, d: str, h: str, is_root: bool = False) -> None:
        self._put(f"{d}/cgroup.procs", "")
        self._put(f"{d}/tasks", "")
        self._put(f"{d}/notify_on_release", "0\n")
        for c in h.split(","):
            if c == "memory":
                self._put(f"{d}/memory.limit_in_bytes", "9223372036854771712\n")
                self._put(f"{d}/memory.memsw.limit_in_bytes", "9223372036854771712\n")
                self._put(f"{d}/memory.usage_in_bytes", "0\n", ro=True)
                self._put(f"{d}/memory.max_usage_in_bytes", "0\n")
                self._put(f"{d}/memory.failcnt", "0\n")
                self._put(f"{d}/memory.memsw.failcnt", "0\n")
                self._put(
                    f"{d}/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"
                )
            elif c == "cpu":
                self._put(f"{d}/cpu.cfs_period_us", "100000\n")
                self._put(f"{d}/cpu.cfs_quota_us", "-1\n")
                self._put(f"{d}/cpu.shares", "1024\n")
                self._put(
                    f"{d}/cpu.stat", "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n", ro=True
                )
            elif c == "cpuacct":
                self._put(f"{d}/cpuacct.usage", "0\n")
                self._put(f"{d}/cpuacct.stat", "user 0\nsystem 0\n", ro=True)
            elif c == "pids":
                self._put(f"{d}/pids.max", "max\n")
                self._put(f"{d}/pids.current", "0\n", ro=True)
                self._put(f"{d}/pids.events", "max 0\n", ro=True)

    def mkdir(self, path: str) -> None:
        p = os.path.abspath(path)
        parent = os.path.dirname(p)
        if not p.startswith(self.root + "/") or not os.path.isfile(f"{parent}/cgroup.procs"):
            raise _err(errno.ENOENT, p)
        if os.path.exists(p):
            raise _err(errno.EEXIST, p)
        if parent in self.not_writable:
            raise _err(errno.EACCES, p)
        os.mkdir(p)
        self._populate(p, self._hierarchy(p))

    def write(self, path: str, data: str) -> None:
        p = self._check_write(path)
        group, name = os.path.split(p)
        value = data.strip()
        if name in ("cgroup.procs", "tasks"):
            if not value.isdigit() or int(value) == 0:
                raise _err(errno.EINVAL, p)
            self._move(self.hierarchy_dir(self._hierarchy(p)), group, int(value))
        elif name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
            if not (value.isdigit() or value == "-1"):
                raise _err(errno.EINVAL, p)
            v = 9223372036854771712 if value == "-1" else int(value)
            mem = int(self._get(f"{group}/memory.limit_in_bytes"))
            memsw = int(self._get(f"{group}/memory.memsw.limit_in_bytes"))
            if name == "memory.limit_in_bytes" and v > memsw:
                raise _err(errno.EINVAL, p)
            if name == "memory.memsw.limit_in_bytes" and v < mem:
                raise _err(errno.EINVAL, p)
            self._put(p, f"{v}\n")
        elif name in ("cpu.cfs_quota_us", "cpu.cfs_period_us"):
            try:
                v = int(value)
            except ValueError:
                raise _err(errno.EINVAL, p) from None
            if name == "cpu.cfs_quota_us" and v != -1 and v < 1000:
                raise _err(errno.EINVAL, p)
            if name == "cpu.cfs_period_us" and not 1000 <= v <= 1_000_000:
                raise _err(errno.EINVAL, p)
            self._put(p, f"{v}\n")
        elif name == "pids.max":
            if not _limit_ok(value):
                raise _err(errno.EINVAL, p)
            self._put(p, value + "\n")
        else:
            self._put(p, data)

    def make_group(self, h: str, cgpath: str) -> str:
        cur = self.hierarchy_dir(h)
        for part in [x for x in cgpath.strip("/").split("/") if x]:
            cur = os.path.join(cur, part)
            if not os.path.isdir(cur):
                self.mkdir(cur)
        return cur

    def add_procs_at(self, directory: str, *pids: int) -> None:
        for pid in pids:
            self.write(os.path.join(directory, "cgroup.procs"), str(pid))


class HybridFS(CgroupFS):
    """Routes each call to the fake whose root holds the path (a hybrid v1 + v2 layout)."""

    def __init__(self, *fakes: _FakeBase) -> None:
        self.fakes = fakes

    def _pick(self, path: str) -> _FakeBase:
        p = os.path.abspath(path)
        best: _FakeBase | None = None
        for f in self.fakes:
            if (p == f.root or p.startswith(f.root + "/")) and (
                best is None or len(f.root) > len(best.root)
            ):
                best = f
        if best is None:
            raise _err(errno.ENOENT, p)
        return best

    def read(self, path: str) -> str:
        return self._pick(path).read(path)

    def write(self, path: str, data: str) -> None:
        self._pick(path).write(path, data)

    def mkdir(self, path: str) -> None:
        self._pick(path).mkdir(path)

    def rmdir(self, path: str) -> None:
        self._pick(path).rmdir(path)

    def writable(self, path: str) -> bool:
        return self._pick(path).writable(path)

    def owner(self, path: str) -> int:
        return self._pick(path).owner(path)

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        for f in self.fakes:
            f.kill(pid, sig)

    def pid_alive(self, pid: int) -> bool:
        return any(f.pid_alive(pid) for f in self.fakes)


# --- ready-made layouts -----------------------------------------------------------------------

USER_SCOPE = "/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"


def systemd_user_scope(
    root: str,
    *,
    uid: int = 1000,
    pid: int = 4242,
    others: tuple[int, ...] = (),
    delegate: tuple[str, ...] = ("cpu", "memory", "pids"),
    **kw: bool,
) -> FakeCgroup2FS:
    """A pure cgroup v2 host where systemd delegated ``user@1000.service`` to ``uid`` and the
    supervisor ``pid`` runs in a ``systemd-run --user --scope -p Delegate=yes`` scope
    (``USER_SCOPE``) together with ``others``."""
    fs = FakeCgroup2FS(root, **kw)
    fs.make_group("/init.scope")
    fs.add_procs("/init.scope", 1)
    svc = fs.make_group(
        "/user.slice/user-1000.slice/user@1000.service", enable=("cpu", "io", "memory", "pids")
    )
    if delegate:
        fs.write(f"{svc}/cgroup.subtree_control", " ".join(f"+{c}" for c in delegate))
    fs.make_group("/user.slice/user-1000.slice/user@1000.service/init.scope")
    fs.add_procs("/user.slice/user-1000.slice/user@1000.service/init.scope", 900)
    app = fs.make_group("/user.slice/user-1000.slice/user@1000.service/app.slice")
    if delegate:
        fs.write(f"{app}/cgroup.subtree_control", " ".join(f"+{c}" for c in delegate))
    fs.make_group(USER_SCOPE)
    fs.add_procs(USER_SCOPE, pid, *others)
    # ownership: root's above the delegation point, the user's from user@1000.service down
    for dirpath, _dirs, files in os.walk(fs.root):
        owned = dirpath.startswith(svc)
        for name in [".", *files]:
            p = os.path.normpath(os.path.join(dirpath, name))
            if owned:
                fs.owners[p] = uid
        if not owned:
            fs.not_writable.add(dirpath)
    return fs
