"""Event sources that watch a running sandbox: each is fd- or timer-driven on the event loop
and has ``start()`` and ``async stop()``.

- ``denials``: seccomp user notification (denials answered with the profile's errno; exec and
  exit observed and continued) -- started as soon as the listener arrives;
- ``resources``: cgroup (or psutil) samples at ``sample_interval``;
- ``processes``: the process tree (with the listener's exec/exit reports);
- ``files``: workspace and /tmp changes, watched by a helper inside the sandbox's user and
  mount namespaces, and the exit manifest.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any


def main_host_pid(init_pid: int, inside_pid: int | None) -> int | None:
    """The host pid of the sandbox's main process: the child of PID 1 with that inner pid."""
    try:
        with open(f"/proc/{init_pid}/task/{init_pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == init_pid:
                kids.append(int(name))
    for k in kids:
        try:
            with open(f"/proc/{k}/status") as f:
                for line in f:
                    if line.startswith("NStgid:") and (
                            inside_pid is None or int(line.split()[-1]) == inside_pid):
                        return k
        except OSError:
            continue
    return kids[0] if kids else None


def start_sources(sb: Any) -> list[Any]:
    """Start the observation sources of a sandbox that has just started; returns them."""
    from engine.sources.resources import ResourceSampler

    sources: list[Any] = []
    sampler = ResourceSampler(sb, sb.sample_interval)
    sampler.start()
    sources.append(sampler)
    sb.resources = sampler
    if sb.processes is None:
        from engine.sources.processes import ProcessTracker

        sb.processes = ProcessTracker(sb, sb.sample_interval)
    sb.processes.start()
    sources.append(sb.processes)
    if sb.init_pid and not sb.main_host_pid:  # (its exec, when observed, told us already)
        sb.main_host_pid = main_host_pid(sb.init_pid, sb.main_pid_inside)
    # a watcher that took its snapshot at the main exec is stopped with the others, for the
    # exit manifest, even when the main process is gone by now (a quick command)
    if sb.watch_files and (sb.main_host_pid or sb.files is not None):
        watcher = make_file_watcher(sb, sb.main_host_pid)
        watcher.start()
        sources.append(watcher)
    return sources


def make_file_watcher(sb: Any, host_pid: int | None) -> Any:
    """The sandbox's file watcher (made once: ``prewarm`` may have started its helper)."""
    from engine.sources.files import FileWatcher

    if sb.files is None:
        sb.files = FileWatcher(sb, host_pid, ("/work", "/tmp"))
    elif sb.files.pid is None:
        sb.files.pid = host_pid
    return sb.files


def prewarm_file_watcher(sb: Any) -> None:
    """Start the file watcher's helper now, while the sandbox is set up."""
    make_file_watcher(sb, None).prewarm()
