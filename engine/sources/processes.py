"""Processes inside the sandbox.

Two feeds make this exact without root: every ``execve``/``execveat``/``exit_group`` is
reported to the supervisor through the seccomp listener (answered with "continue": observed,
never decided), so even processes that live for a millisecond show up with their command
line and exit code; and the process tree is polled (psutil) for the live table with CPU and
RSS, which also catches deaths by signal.
"""

from __future__ import annotations

import asyncio
from typing import Any

from engine import events as ev


def _status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Tgid", "PPid", "NSpid", "NStgid", "Name"):
                    out[k] = v.strip()
    except OSError:
        pass
    return out


def _starttime(pid: int) -> int | None:
    """When the process started (clock ticks since boot): tells a pid from its reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> tuple[str, ...]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ()
    return tuple(p.decode("utf-8", "replace") for p in raw.split(b"\0") if p)


class ProcessTracker:
    def __init__(self, sb: Any, interval: float = 0.25) -> None:
        self.sb = sb
        self.interval = max(0.05, interval)
        self.live: dict[int, dict[str, Any]] = {}  # host tgid -> info
        self._task: asyncio.Task[None] | None = None
        self._cpu: dict[int, Any] = {}
        self._first_exec = True
        # host tgid -> start time, of processes whose exit_group was reported: they stay
        # visible to the poller for a moment (exiting, then a zombie until reaped) and must
        # not be announced again
        self._exited: dict[int, int | None] = {}

    # --- from the seccomp listener ------------------------------------------------------------

    def _identify(self, host_tid: int) -> tuple[int, int, int]:
        st = _status(host_tid)
        tgid = int(st.get("Tgid") or host_tid)
        nstgid = st.get("NStgid", "").split()
        inside = int(nstgid[-1]) if nstgid else 0
        ppid_host = int(st.get("PPid") or 0)
        pst = _status(ppid_host) if ppid_host else {}
        pns = pst.get("NStgid", "").split()
        ppid_inside = int(pns[-1]) if pns and len(pns) > 1 else 0
        return tgid, inside, ppid_inside

    def on_exec(self, host_tid: int, argv: tuple[str, ...], path: str) -> None:
        tgid, inside, ppid = self._identify(host_tid)
        if self._first_exec:
            self._first_exec = False
            hook = getattr(self.sb, "on_main_exec", None)
            if hook is not None:
                hook(tgid)
        cmd = argv or ((path,) if path else _cmdline(tgid))
        known = self.live.get(tgid)
        if known is not None:
            known["cmdline"] = cmd
            return
        self.live[tgid] = {"pid": inside, "ppid": ppid, "cmdline": cmd}
        self.sb.emit(ev.ProcessStarted(self.sb.id, self.sb.now(), pid=inside, host_pid=tgid,
                                       ppid=ppid, cmdline=cmd))

    def on_exit(self, host_tid: int, code: int) -> None:
        tgid, inside, ppid = self._identify(host_tid)
        info = self.live.pop(tgid, None)
        if info is None:  # forked and never exec'd: announce it now, it is still there
            cmd = _cmdline(tgid)
            info = {"pid": inside, "ppid": ppid, "cmdline": cmd}
            self.sb.emit(ev.ProcessStarted(self.sb.id, self.sb.now(), pid=inside, host_pid=tgid,
                                           ppid=ppid, cmdline=cmd))
        info["exited"] = True
        self._exited[tgid] = _starttime(tgid)
        self._cpu.pop(tgid, None)
        self.sb.emit(ev.ProcessExited(self.sb.id, self.sb.now(), pid=info["pid"], host_pid=tgid,
                                      cmdline=tuple(info["cmdline"]), exit_code=code))

    # --- polling -------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.poll(final=True)

    async def _run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval)

    def poll(self, final: bool = False) -> None:
        import psutil

        init = self.sb.init_pid
        rows: list[tuple[Any, ...]] = []
        current: set[int] = set()
        if init and not final:
            try:
                procs = psutil.Process(init).children(recursive=True)
            except psutil.Error:
                procs = []
            still_exiting: dict[int, int | None] = {}
            for p in procs:
                if p.pid in self._exited:
                    started = self._exited[p.pid]
                    if started is None or _starttime(p.pid) in (started, None):
                        still_exiting[p.pid] = started
                        continue
                p = self._cpu.get(p.pid, p)
                try:
                    with p.oneshot():
                        cpu = p.cpu_percent(None)
                        rss = p.memory_info().rss
                        cmd = tuple(p.cmdline()) or (p.name(),)
                        ppid_host = p.ppid()
                except psutil.Error:
                    continue
                current.add(p.pid)
                self._cpu[p.pid] = p
                st = _status(p.pid)
                ns = st.get("NStgid", "").split()
                inside = int(ns[-1]) if ns else 0
                pst = _status(ppid_host)
                pns = pst.get("NStgid", "").split()
                ppid_inside = int(pns[-1]) if len(pns) > 1 else 1
                rows.append((inside, p.pid, ppid_inside, " ".join(cmd), cpu, rss))
                if p.pid not in self.live:
                    self.live[p.pid] = {"pid": inside, "ppid": ppid_inside, "cmdline": cmd}
                    self.sb.emit(ev.ProcessStarted(self.sb.id, self.sb.now(), pid=inside,
                                                   host_pid=p.pid, ppid=ppid_inside,
                                                   cmdline=cmd))
            self._exited = still_exiting  # the others are gone: their pids may be reused
        for host_pid in [h for h in self.live if h not in current]:
            info = self.live.pop(host_pid)
            self._cpu.pop(host_pid, None)
            self.sb.emit(ev.ProcessExited(self.sb.id, self.sb.now(), pid=info["pid"],
                                          host_pid=host_pid, cmdline=tuple(info["cmdline"]),
                                          exit_code=None))
        for gone in [h for h in self._cpu if h not in current]:
            self._cpu.pop(gone, None)
        rows.sort()
        self.sb.emit(ev.ProcessTable(self.sb.id, self.sb.now(), rows=tuple(rows)))
