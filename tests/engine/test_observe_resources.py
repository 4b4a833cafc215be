"""Resource samples of real sandboxes: a CPU burner uses about one CPU, and a quota of half a
CPU clips it (with throttling counted); a growing allocation shows memory rising up to the
limit, then an OOM kill (LimitHit and Exited.oom_killed). Without a cgroup (unprivileged, no
delegation, --allow-unlimited) the samples come from the process tree, marked "psutil".

The bands are wide on purpose (a noisy 2-core machine): they tell one CPU from half a CPU,
never how fast anything is. The burner also reports the CPU time it got itself (its
process_time over its busy stretch, on the same monotonic clock as the events), so the
samples are checked against that ground truth too: when other work on the machine keeps the
burner from a whole CPU, the samples must say so, not report one anyway.
"""

from __future__ import annotations

import itertools
import statistics

import pytest
from helpers import observe as ob

from engine import events as ev

pytestmark = pytest.mark.sandbox

BURN_SECONDS = 1.5
BURNER = ["python3", "-c", f"""
import json, time
time.sleep(0.3)  # let the sampler take its first readings
t0, c0 = time.monotonic(), time.process_time()
while time.monotonic() - t0 < {BURN_SECONDS}:
    pass
t1, c1 = time.monotonic(), time.process_time()
print(json.dumps({{"t0": t0, "t1": t1, "cpu": c1 - c0}}))
"""]
# 2 MiB of touched memory every 20 ms, forever: the OOM killer ends it
GROWER = ["python3", "-c", """
import time
chunks = []
while True:
    chunks.append(b"\\x01" * (2 << 20))
    time.sleep(0.02)
"""]
MEMORY_LIMIT = 96 << 20


def _samples(events: list[ev.Event]) -> list[ev.ResourceSample]:
    out = ob.of(events, ev.ResourceSample)
    assert out, "no resource samples"
    return out


class Burn:
    """One burner run: its samples, and the CPU share it measured itself."""

    def __init__(self, run, events: list[ev.Event]) -> None:
        self.run = run
        self.events = events
        own = ob.last_json_line(run.stdout)
        self.t0, self.t1 = own["t0"], own["t1"]
        self.own = 100.0 * own["cpu"] / (self.t1 - self.t0)  # percent of one CPU
        self.samples = _samples(events)
        # the samples whose interval lies entirely inside the busy stretch
        inside = [s for s in self.samples if self.t0 <= s.ts <= self.t1]
        self.busy_samples = inside[1:]
        assert len(self.busy_samples) >= 4, (f"too few samples inside the busy stretch: "
                                             f"{[s.ts for s in self.samples]}, {own}")
        self.busy = [s.cpu_percent for s in self.busy_samples if s.cpu_percent is not None]
        assert len(self.busy) == len(self.busy_samples), self.busy_samples

    @property
    def median(self) -> float:
        return statistics.median(self.busy)

    @property
    def average(self) -> float:
        """CPU use over the busy stretch, from the cumulative counter."""
        a, b = self.busy_samples[0], self.busy_samples[-1]
        assert a.cpu_usage_ns is not None and b.cpu_usage_ns is not None
        return 100.0 * (b.cpu_usage_ns - a.cpu_usage_ns) / 1e9 / (b.ts - a.ts)

    def __str__(self) -> str:
        return (f"own {self.own:.0f}%, sampled median {self.median:.0f}%, "
                f"average {self.average:.0f}%, busy samples {self.busy}")


def _burn(flue, *args: str, **kw) -> Burn:
    path = ob.events_path(flue)
    r = flue.run(BURNER, "--events", str(path), *args, **kw)
    assert r.returncode == 0, r
    return Burn(r, ob.read_events(path))


def _about_one_cpu(b: Burn) -> None:
    # the samples agree with what the burner got
    assert abs(b.average - b.own) <= 25, str(b)
    assert b.median <= 130, str(b)
    if b.own >= 70:  # it had a CPU to itself (else the machine is busy with other work)
        assert 50 <= b.median <= 130, str(b)
        assert 50 <= b.average <= 130, str(b)


def test_a_cpu_burner_shows_about_one_cpu(flue):
    b = _burn(flue, "--sample-interval", "0.1")
    sources = {s.source for s in b.samples}
    assert sources in ({"cgroup-v1"}, {"cgroup-v2"}), sources
    _about_one_cpu(b)
    usage = [s.cpu_usage_ns for s in b.samples]
    assert usage == sorted(usage), "the cumulative CPU counter never goes back"
    assert b.samples[-1].cpu_limit is None
    assert b.samples[-1].cpu_nr_throttled == 0, "no quota, no throttling"


def test_a_half_cpu_quota_clips_the_burner_and_counts_throttling(flue):
    b = _burn(flue, "--cpus", "0.5", "--sample-interval", "0.25")
    assert b.own <= 60, f"the quota held: {b}"
    assert b.median <= 62 and b.average <= 60, str(b)
    assert abs(b.average - b.own) <= 25, str(b)
    last = b.samples[-1]
    assert last.cpu_nr_throttled is not None and last.cpu_throttled_ns is not None, last
    if b.average >= 48:
        # the burner ran near its quota, so the quota must have clipped it; on a machine so
        # busy that it got far less than half a CPU the quota never bound (nothing to count)
        assert last.cpu_nr_throttled > 0, last
        assert last.cpu_throttled_ns > 0, last
    assert last.cpu_limit == 0.5
    assert b.run.report["limits"]["cpus"] == 0.5, b.run.report["limits"]


def test_growing_memory_rises_to_the_limit_then_the_oom_killer_ends_it(flue):
    path = ob.events_path(flue)
    r = flue.run(GROWER, "--events", str(path), "--memory", str(MEMORY_LIMIT),
                 "--sample-interval", "0.05")
    events = ob.read_events(path)
    assert r.returncode == 137, r
    samples = _samples(events)
    mem = [s.memory_current for s in samples if s.memory_current is not None]
    # rising: a run of at least four samples, each above the one before, reaching
    # well into the limit
    best = run = 1
    for a, b in itertools.pairwise(mem):
        run = run + 1 if b > a else 1
        best = max(best, run)
    assert best >= 4, mem
    assert max(mem) >= MEMORY_LIMIT // 2, mem
    assert all(m <= MEMORY_LIMIT for m in mem), mem
    assert all(s.memory_limit == MEMORY_LIMIT for s in samples), samples[-1]
    hits = [e for e in ob.of(events, ev.LimitHit) if e.limit == "oom_kill"]
    assert len(hits) == 1 and hits[0].count >= 1 and hits[0].delta >= 1, hits
    exited = events[-1]
    assert isinstance(exited, ev.Exited), exited
    assert exited.oom_killed and exited.signal == 9 and exited.exit_code == 137, exited
    assert hits[0].ts <= exited.ts
    assert r.report["oom_killed"] is True, r.report
    peak = exited.peak_memory
    assert peak is not None and max(mem) <= peak <= MEMORY_LIMIT, (peak, max(mem))


@pytest.mark.parametrize("flue", ["user"], indirect=True)
def test_without_a_cgroup_samples_come_from_the_process_tree(flue):
    b = _burn(flue, "--sample-interval", "0.1", delegate=False)
    events, samples = b.events, b.samples
    started = ob.one(events, ev.Started)
    assert started.isolation["cgroup"] == "none", started.isolation
    assert any("no cgroup" in d for d in started.degraded), started.degraded
    assert {s.source for s in samples} == {"psutil"}
    for s in samples:
        assert s.memory_current is not None and s.memory_current > 0, s
        assert s.pids_current is not None and s.pids_current >= 1, s
        assert s.cpu_usage_ns is not None, s
        # what a cgroup alone knows is absent, not made up
        assert s.cpu_nr_throttled is None and s.oom_kills is None, s
    _about_one_cpu(b)


@pytest.mark.parametrize("flue", ["user"], indirect=True)
def test_without_a_cgroup_memory_is_the_sandbox_s_own_not_flue_s(flue):
    """PID 1 is a fork of the supervisor: its resident Python pages are the supervisor's,
    shared copy-on-write; a `sleep` must not look like a 20 MB program."""
    path = ob.events_path(flue)
    r = flue.run(["sleep", "0.6"], "--events", str(path), "--sample-interval", "0.1",
                 delegate=False)
    assert r.returncode == 0, r
    samples = _samples(ob.read_events(path))
    assert {s.source for s in samples} == {"psutil"}
    mem = [s.memory_current for s in samples if s.memory_current]
    assert mem and max(mem) < 12 << 20, [m >> 10 for m in mem]
