"""What the host sees: processes by a marker in their argv, mounts, leftover cgroups."""

from __future__ import annotations

import os
import time


def pids_with_marker(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    out = []
    me = os.getpid()
    needle = marker.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            out.append(int(name))
    return out


def wait_marker_gone(marker: str, timeout: float = 10.0) -> list[int]:
    """Wait until no process carries ``marker``; returns the survivors (empty when gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = pids_with_marker(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/status") as f:
                state = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("State")), "?")
        except OSError:
            continue
        out.append(f"{pid} [{state}] {cmd[:200]}")
    return out


def mounts() -> set[str]:
    """This process's mount table, one entry per mount (id, mount point, source)."""
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.add(f"{fields[0]} {fields[4]} {fields[sep + 1]} {fields[sep + 2]}")
    return out


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, start time) of ``pid``, or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """Every live descendant of ``root`` (and ``root``): pid -> start time."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                table[int(name)] = st
    out: dict[int, int] = {}
    if root in table:
        out[root] = table[root][1]
    grew = True
    while grew:
        grew = False
        for pid, (ppid, start) in table.items():
            if ppid in out and pid not in out:
                out[pid] = start
                grew = True
    return out


def still_alive(procs: dict[int, int], timeout: float = 10.0) -> list[int]:
    """The processes of ``procs`` (pid -> start time) still alive after waiting up to
    ``timeout``; a reused pid does not count."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p, start in procs.items() if (st := _stat(p)) is not None and st[1] == start]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """The children of ``pid``, as the kernel lists them (/proc/PID/task/*/children)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def inotify_watches(pid: int) -> list[tuple[int, int]]:
    """(device, inode) of every inotify watch ``pid`` holds, from /proc/PID/fdinfo."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.startswith("inotify wd:"):
                continue
            fields = dict(kv.split(":", 1) for kv in line.split()[1:] if ":" in kv)
            sdev = int(fields["sdev"], 16)  # the kernel's dev_t: major << 20 | minor
            out.append((os.makedev(sdev >> 20, sdev & 0xFFFFF), int(fields["ino"], 16)))
    return out


def file_watcher_of(flue_pid: int, timeout: float = 10.0) -> int:
    """The file watcher helper `flue run` (``flue_pid``) started for ``--events``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kid in children(flue_pid):
            if "engine.sources._watch" in cmdline(kid):
                return kid
        time.sleep(0.05)
    raise AssertionError("no file watcher helper process under flue")


def wait_watched(helper: int, path: str, timeout: float = 20.0) -> None:
    """Wait until the watcher ``helper`` holds a watch on the directory ``path``."""
    st = os.stat(path)
    deadline = time.monotonic() + timeout
    while (st.st_dev, st.st_ino) not in inotify_watches(helper):
        if time.monotonic() > deadline:
            raise AssertionError(f"the file watcher never watched {path}")
        time.sleep(0.02)
