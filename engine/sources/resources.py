"""Resource samples: the sandbox's cgroup every ``interval`` seconds (4 Hz by default), or the
process tree via psutil when no cgroup is available (marked ``source="psutil"``: CPU time of
the whole tree, resident memory of the program's processes -- not of flue's PID 1 -- and
the number of processes).

Counters that jump (an OOM kill, a fork refused by pids.max, the memory limit reached) also
produce a ``LimitHit`` event the moment they are seen.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from engine import events as ev


class ResourceSampler:
    def __init__(self, sb: Any, interval: float = 0.25) -> None:
        self.sb = sb
        self.interval = max(0.02, interval)
        self._task: asyncio.Task[None] | None = None
        self._prev_cpu: int | None = None
        self._prev_t = 0.0
        self._prev_counts: dict[str, int] = {}
        self.peak_memory = 0
        self.last: ev.ResourceSample | None = None
        self._psutil_procs: dict[int, Any] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.sample_once()  # the final reading, while the group still exists

    async def _run(self) -> None:
        while True:
            self.sample_once()
            await asyncio.sleep(self.interval)

    def sample_once(self) -> ev.ResourceSample | None:
        cg = self.sb._cgroup
        try:
            rec = self._from_cgroup(cg) if cg is not None else self._from_psutil()
        except OSError:
            return None
        if rec is None:
            return None
        self.last = rec
        self.sb.emit(rec)
        self._limit_hits(rec)
        return rec

    def _cpu_percent(self, usage_ns: int | None) -> float | None:
        now = time.monotonic()
        pct = None
        if usage_ns is not None and self._prev_cpu is not None and now > self._prev_t:
            pct = round(100.0 * (usage_ns - self._prev_cpu) / 1e9 / (now - self._prev_t), 1)
            pct = max(0.0, pct)
        if usage_ns is not None:
            self._prev_cpu, self._prev_t = usage_ns, now
        return pct

    def _from_cgroup(self, cg: Any) -> ev.ResourceSample:
        s = cg.sample()
        mode = getattr(self.sb, "_cgroup_mode", "v1")
        mem = s.memory_current
        if mem is not None:
            self.peak_memory = max(self.peak_memory, mem)
        peak = s.memory_peak if s.memory_peak is not None else (self.peak_memory or None)
        lim = self.sb._limits()
        return ev.ResourceSample(
            self.sb.id, self.sb.now(), source=f"cgroup-{mode}",
            cpu_usage_ns=s.cpu_usage_ns, cpu_percent=self._cpu_percent(s.cpu_usage_ns),
            cpu_throttled_ns=s.cpu_throttled_ns, cpu_nr_throttled=s.cpu_nr_throttled,
            cpu_limit=lim.cpus, memory_current=mem, memory_peak=peak,
            memory_limit=s.memory_limit, memory_limit_hits=s.memory_limit_hits,
            oom_kills=s.oom_kills, pids_current=s.pids_current, pids_limit=s.pids_limit,
            pids_limit_hits=s.pids_limit_hits,
        )

    def _from_psutil(self) -> ev.ResourceSample | None:
        import psutil

        pid = self.sb.init_pid
        if not pid:
            return None
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        cpu_ns = 0
        rss = 0
        seen = {}
        for p in procs:
            p = self._psutil_procs.get(p.pid, p)
            seen[p.pid] = p
            try:
                t = p.cpu_times()
                cpu_ns += int((t.user + t.system + t.children_user + t.children_system) * 1e9)
                if p.pid != pid:
                    # not PID 1's: a fork of the supervisor, its resident pages are mostly
                    # the supervisor's, shared copy-on-write (15 MB of Python beside a
                    # `sleep`); what is its own (USS) cannot be read unprivileged, as it is
                    # not dumpable. The program's processes are what this measures.
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
        self._psutil_procs = seen
        self.peak_memory = max(self.peak_memory, rss)
        return ev.ResourceSample(
            self.sb.id, self.sb.now(), source="psutil", cpu_usage_ns=cpu_ns,
            # no cgroup, so no limit is enforced: say so rather than echo the profile's
            cpu_percent=self._cpu_percent(cpu_ns), cpu_limit=None, memory_current=rss,
            memory_peak=self.peak_memory, memory_limit=None, pids_current=len(procs),
            pids_limit=None,
        )

    def _limit_hits(self, rec: ev.ResourceSample) -> None:
        for what, val in (("oom_kill", rec.oom_kills), ("pids", rec.pids_limit_hits),
                          ("memory", rec.memory_limit_hits)):
            if val is None:
                continue
            prev = self._prev_counts.get(what, 0)
            if val > prev:
                detail = {
                    "oom_kill": f"the OOM killer killed a process at the memory limit "
                                f"({rec.memory_limit} bytes)",
                    "pids": f"forks refused at the pids limit ({rec.pids_limit})",
                    "memory": f"memory usage reached the limit ({rec.memory_limit} bytes)",
                }[what]
                self.sb.emit(ev.LimitHit(self.sb.id, rec.ts, limit=what, count=val,
                                         delta=val - prev, detail=detail))
            self._prev_counts[what] = val
