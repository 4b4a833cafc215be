"""Private: talking to cgroupfs and reading the procfs files that describe cgroups.

Everything here raises ``OSError`` only (with the errno and the path); the domain layer
(``engine.cgroups``) translates. Parsers are pure functions over text so they can be fed
fixture files.

``CgroupFS`` is the one object the backends use for every filesystem operation on a cgroup
tree. The real kernel needs nothing but the plain calls below; tests subclass it to emulate
kernel rules (interface files appearing on ``mkdir``, ``EBUSY`` from ``cgroup.subtree_control``)
on a temp directory, so the backends run the same code path against both.
"""

from __future__ import annotations

import errno
import os
import time

from engine._lean import signal
from engine._record import record

__all__ = [
    "CgroupFS",
    "Mount",
    "ProcCgroup",
    "group_pids",
    "kill_until_empty",
    "map_to_mount",
    "parse_keyed",
    "parse_mountinfo",
    "parse_pids",
    "parse_proc_cgroup",
    "read_proc_file",
    "remove_tree",
    "swap_active",
    "wait_until_empty",
]


class CgroupFS:
    """Real cgroupfs access. Stateless, hence picklable; subclasses must stay picklable."""

    def read(self, path: str) -> str:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()

    def write(self, path: str, data: str) -> None:
        """One ``write(2)`` of ``data`` into an existing file (never creates it)."""
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            raw = data.encode("ascii")
            try:
                n = os.write(fd, raw)
            except OSError as err:
                raise OSError(err.errno, f"write {data.strip()!r}: {err.strerror}", path) from None
            if n != len(raw):
                raise OSError(errno.EIO, f"short write ({n} of {len(raw)} bytes)", path)
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def subgroups(self, path: str) -> list[str]:
        """Names of the child groups (subdirectories) of ``path``."""
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))

    def writable(self, path: str) -> bool:
        """Whether the calling process (effective ids) may write ``path``."""
        if os.access in os.supports_effective_ids:
            return os.access(path, os.W_OK, effective_ids=True)
        return os.access(path, os.W_OK)

    def owner(self, path: str) -> int:
        return os.stat(path).st_uid

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        os.kill(pid, sig)

    def pid_alive(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


# --- procfs -------------------------------------------------------------------------------


def read_proc_file(procfs: str, pid: int | str, name: str) -> str:
    """``{procfs}/{pid}/{name}``, e.g. ``read_proc_file("/proc", "self", "mountinfo")``."""
    with open(os.path.join(procfs, str(pid), name), encoding="utf-8", errors="replace") as f:
        return f.read()


def swap_active(procfs: str = "/proc") -> bool:
    """Whether any swap area is in use (``{procfs}/swaps`` lists more than its header)."""
    with open(os.path.join(procfs, "swaps"), encoding="utf-8", errors="replace") as f:
        return len([ln for ln in f.read().splitlines() if ln.strip()]) > 1


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (octal)
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        c = field[i]
        code = field[i + 1 : i + 4]
        if c == "\\" and len(code) == 3 and all(d in "01234567" for d in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


@record(frozen=True, slots=True)
class Mount:
    """One line of /proc/PID/mountinfo."""

    mount_id: int
    parent_id: int
    root: str  # the directory of the filesystem (here: of the hierarchy) mounted here
    mountpoint: str
    mount_options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.mount_options or "ro" in self.super_options


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo (proc(5)); malformed lines are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        parts = line.split()
        try:
            sep = parts.index("-", 6)
            mounts.append(
                Mount(
                    mount_id=int(parts[0]),
                    parent_id=int(parts[1]),
                    root=_unescape(parts[3]),
                    mountpoint=_unescape(parts[4]),
                    mount_options=tuple(parts[5].split(",")),
                    fstype=parts[sep + 1],
                    source=_unescape(parts[sep + 2]) if len(parts) > sep + 2 else "",
                    super_options=tuple(parts[sep + 3].split(",")) if len(parts) > sep + 3 else (),
                )
            )
        except (ValueError, IndexError):
            continue
    return mounts


@record(frozen=True, slots=True)
class ProcCgroup:
    """One line of /proc/PID/cgroup: ``hierarchy-id:controller-list:path``."""

    hierarchy_id: int
    controllers: tuple[str, ...]  # () for the unified hierarchy; may hold "name=systemd"
    path: str


def parse_proc_cgroup(text: str) -> list[ProcCgroup]:
    out: list[ProcCgroup] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        try:
            hid = int(parts[0])
        except ValueError:
            continue
        ctrls = tuple(c for c in parts[1].split(",") if c)
        out.append(ProcCgroup(hid, ctrls, parts[2]))
    return out


def map_to_mount(mount: Mount, cgroup_path: str) -> str | None:
    """The directory of ``cgroup_path`` (as /proc/PID/cgroup names it) under ``mount``, or
    None when that group is not visible through this mount."""
    root = mount.root.rstrip("/")
    path = cgroup_path if cgroup_path.startswith("/") else "/" + cgroup_path
    if root == "":
        rel = path
    elif path == root:
        rel = "/"
    elif path.startswith(root + "/"):
        rel = path[len(root) :]
    else:
        return None
    if "/.." in rel or rel.startswith(".."):
        return None
    return os.path.normpath(mount.mountpoint.rstrip("/") + rel) if rel != "/" else mount.mountpoint


# --- cgroupfs file formats ------------------------------------------------------------------


def parse_keyed(text: str) -> dict[str, int]:
    """Flat keyed files (``key value`` per line: memory.events, cpu.stat, pids.events,
    memory.oom_control). Non-integer values are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out[parts[0]] = int(parts[1])
        except ValueError:
            continue
    return out


def parse_pids(text: str) -> list[int]:
    """cgroup.procs / tasks: one pid per line."""
    out: list[int] = []
    for tok in text.split():
        try:
            out.append(int(tok))
        except ValueError:
            continue
    return out


# --- multi-step operations (still OS-level) ----------------------------------------------


def _walk_bottom_up(fs: CgroupFS, path: str) -> list[str]:
    """``path`` and its descendant groups, deepest first. Missing ``path`` → []."""
    try:
        names = fs.subgroups(path)
    except FileNotFoundError:
        return []
    out: list[str] = []
    for n in names:
        out.extend(_walk_bottom_up(fs, os.path.join(path, n)))
    out.append(path)
    return out


def remove_tree(fs: CgroupFS, path: str, timeout: float = 2.0) -> None:
    """rmdir ``path`` and any child groups, retrying on EBUSY until ``timeout``; ENOENT is
    success. Raises the last OSError otherwise."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            for p in _walk_bottom_up(fs, path):
                try:
                    fs.rmdir(p)
                except FileNotFoundError:
                    pass
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def group_pids(fs: CgroupFS, path: str) -> list[int]:
    """Processes in ``path`` and its child groups (missing groups contribute none)."""
    pids: list[int] = []
    for p in _walk_bottom_up(fs, path):
        try:
            pids.extend(parse_pids(fs.read(os.path.join(p, "cgroup.procs"))))
        except FileNotFoundError:
            continue
    return pids


def kill_until_empty(fs: CgroupFS, paths: list[str], timeout: float = 2.0) -> bool:
    """SIGKILL every process in the groups ``paths`` (and their children) until none is left
    or ``timeout`` passes. Returns True when the groups ended up empty."""
    deadline = time.monotonic() + timeout
    while True:
        pids = sorted({pid for p in paths for pid in group_pids(fs, p)})
        if not pids:
            return True
        if time.monotonic() >= deadline:
            return False
        for pid in pids:
            try:
                fs.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def wait_until_empty(fs: CgroupFS, paths: list[str], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not any(group_pids(fs, p) for p in paths):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
