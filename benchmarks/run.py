#!/usr/bin/env python3
"""``make bench``: flue measured side by side with bubblewrap, in one run, as ratios.

The machine this runs on is usually shared and noisy, so absolute numbers mean little on
their own: every section measures flue and its reference in the same invocation and reports
medians (p50), p95 and the ratio between them.

Sections (``--only NAME``, repeatable or comma-separated):

  cold-start  ``flue run -- /bin/true`` (default profile: every namespace, tmpfs root,
              seccomp with user notification, cgroup) vs ``bwrap --unshare-all`` running
              ``/bin/true``, with hyperfine (-N, warmup, >= 30 runs); p50/p95 and the ratio,
              and whether the cold-start target (p50 <= 50 ms) is met.
  memory      MemAvailable drop per idle sandbox with N concurrent ``sleep`` sandboxes
              (default 200), flue vs bubblewrap.
  denials     cost per denied syscall: a small C program makes K denied ``keyctl`` calls
              under flue (seccomp user notification, answered by the supervisor) and under
              ``flue run --no-observe`` (a plain errno filter); an allowed ``getppid`` for
              reference.
  supervisor  the ``flue run`` process's own CPU time (children excluded) per 100k denials
              while one sandbox floods denials, and its peak RSS.
  network     the allowlist proxy vs a direct connection to a local server: throughput of a
              100 MB download and new-connection set-up latency (p50/p95), through the proxy
              and through a captured connection (benchmarks/netbench.py), as ratios.
  tui         the installed ``flue-tui`` in tmux while its sandbox floods 20k denials/s and
              10 MB/s of stdout: keypress-to-repaint latency (p50/p95, target p95 < 100 ms)
              and the TUI process's RSS over the run (start, peak, end, still growing?).
  learn       ``flue learn`` against ``flue run``: the cost of one observed syscall (a plain
              one, continued by the helper; a path lookup, read and resolved inside) beside
              nsjail's published 88-147 µs per traced call, and the slowdown of a ``git clone``
              of a local repository and a ``pip install`` of a local wheel, as ratios.

Results: a table on stdout and ``bench-results/latest.json``. Nothing is installed here:
missing tools are named with the command that installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import platform
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench-results"
SECTIONS = ("cold-start", "memory", "denials", "supervisor", "network", "tui", "learn")
COLD_START_TARGET_MS = 50.0
NSJAIL_US_PER_TRACED_CALL = (88.0, 147.0)  # google/nsjail pull request #308, "Cost" table
BENCH_MOUNT = "/opt/flue-bench"  # where the flood program is bound inside the sandbox
MERGED_USR = ("/bin", "/lib", "/lib64", "/sbin")
INSTALL_HINT = {
    "bwrap": "apt-get install bubblewrap hyperfine",
    "hyperfine": "apt-get install bubblewrap hyperfine",
    "gcc": "apt-get install gcc",
    "tmux": "apt-get install tmux",
}
NEEDS = {
    "cold-start": ("bwrap", "hyperfine"),
    "memory": ("bwrap",),
    "denials": ("gcc",),
    "supervisor": ("gcc",),
    "network": (),
    "tui": ("gcc", "tmux"),
    "learn": ("gcc", "git"),
}


# ------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks (numpy's
    default), so p50 is the median."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


# ------------------------------------------------------------------------------- commands


def flue_cmd() -> list[str]:
    """The installed ``flue`` next to this interpreter (what ``make bench`` uses), else
    ``python -m engine`` from the checkout (the same CLI)."""
    script = Path(sys.executable).parent / "flue"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "engine"]


def bench_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment flue runs with: PYTHONDONTWRITEBYTECODE removed, so the byte-compiled
    package is used instead of recompiling every module on every start."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def bwrap_argv(cmd: Sequence[str], *, bwrap: str = "bwrap", extra: Sequence[str] = (),
               lexists: Callable[[str], bool] = os.path.lexists,
               islink: Callable[[str], bool] = os.path.islink,
               readlink: Callable[[str], str] = os.readlink) -> list[str]:
    """bubblewrap with every namespace, /usr read-only, the merged-/usr symlinks recreated
    (or bound when they are real directories), /proc, /dev and a /tmp tmpfs."""
    argv = [bwrap, "--unshare-all", "--ro-bind", "/usr", "/usr"]
    for path in MERGED_USR:
        if not lexists(path):
            continue
        if islink(path):
            argv += ["--symlink", readlink(path), path]
        else:
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", *extra, *cmd]
    return argv


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) \
        else "unknown"


def missing_tools(sections: Sequence[str], which: Callable[[str], str | None] | None = None
                  ) -> dict[str, str]:
    """tool -> the command that installs it, for the tools the chosen sections need."""
    which = which or shutil.which
    out: dict[str, str] = {}
    for sec in sections:
        for tool in NEEDS[sec]:
            if which(tool) is None:
                out[tool] = INSTALL_HINT[tool]
    return out


def machine() -> dict[str, Any]:
    mem = meminfo()
    flags = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = line
                break
    return {
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "mem_total_kib": mem.get("MemTotal"),
        "virtualized": " hypervisor" in flags,
        "python": platform.python_version(),
        "bwrap": tool_version(["bwrap", "--version"]) if shutil.which("bwrap") else None,
        "hyperfine": tool_version(["hyperfine", "--version"]) if shutil.which("hyperfine")
        else None,
        "euid": os.geteuid(),
        "loadavg": list(os.getloadavg()),
    }


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB."""
    out: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0])
    return out


def say(msg: str = "") -> None:
    print(msg, flush=True)


class BenchError(Exception):
    """A section could not be measured; the message says why."""


def preflight(label: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Run ``argv`` once; a failure here is reported as such, not as a timing."""
    try:
        p = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, env=env,
                           cwd=REPO, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"{label} did not finish within 60 s: {shlex.join(argv)}") from err
    if p.returncode != 0:
        raise BenchError(f"{label} failed (exit {p.returncode}): {shlex.join(argv)}\n"
                         f"{p.stderr.strip()}")


# ------------------------------------------------------------------------------- cold start


def parse_hyperfine(data: dict[str, Any], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """hyperfine's --export-json, one result per command in order, as label -> stats in ms
    (p50/p95 from the individual run times)."""
    return merge_hyperfine([(data, labels)])


def merge_hyperfine(chunks: Sequence[tuple[dict[str, Any], Sequence[str]]]
                    ) -> dict[str, dict[str, Any]]:
    """Several hyperfine exports (each with its commands' labels, in its order) merged into
    label -> stats in ms over every run of every chunk."""
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # user ms * runs, system ms * runs
    failed: dict[str, int] = {}
    commands: dict[str, str] = {}
    for data, labels in chunks:
        results = data.get("results") or []
        if len(results) != len(labels):
            raise BenchError(f"hyperfine reported {len(results)} results for {len(labels)} "
                             "commands")
        for label, res in zip(labels, results, strict=True):
            ts = [t * 1000.0 for t in res.get("times") or []]
            if not ts:
                raise BenchError(f"hyperfine reported no run times for {label}")
            times.setdefault(label, []).extend(ts)
            acc = cpu.setdefault(label, [0.0, 0.0])
            acc[0] += res.get("user", 0.0) * 1000.0 * len(ts)
            acc[1] += res.get("system", 0.0) * 1000.0 * len(ts)
            failed[label] = failed.get(label, 0) + sum(
                1 for c in res.get("exit_codes") or [] if c not in (0, None))
            commands[label] = res.get("command", "")
    out: dict[str, dict[str, Any]] = {}
    for label, ts in times.items():
        stats: dict[str, Any] = summarize(ts)
        stats["user_ms"] = cpu[label][0] / len(ts)
        stats["system_ms"] = cpu[label][1] / len(ts)
        stats["failed_runs"] = failed[label]
        stats["command"] = commands[label]
        out[label] = stats
    return out


def cold_start_summary(stats: dict[str, dict[str, Any]],
                       target_ms: float = COLD_START_TARGET_MS) -> dict[str, Any]:
    flue, bw = stats["flue"], stats["bwrap"]
    out: dict[str, Any] = {
        "stats_ms": stats,
        "ratio_p50": ratio(flue["p50"], bw["p50"]),
        "ratio_p95": ratio(flue["p95"], bw["p95"]),
        "target_p50_ms": target_ms,
        "target_met": flue["p50"] <= target_ms,
    }
    if "python" in stats:
        out["flue_minus_python_p50_ms"] = flue["p50"] - stats["python"]["p50"]
    return out


def run_cold_start(cfg: Config) -> dict[str, Any]:
    env = bench_env()
    say("cold start: byte-compiling the package first (python -m compileall -q engine) and "
        "running flue without PYTHONDONTWRITEBYTECODE"
        + (" (it is set in this environment and would make every start recompile)"
           if "PYTHONDONTWRITEBYTECODE" in os.environ else ""))
    subprocess.run([sys.executable, "-m", "compileall", "-q", "engine"], cwd=REPO, env=env,
                   check=True)
    flue = [*flue_cmd(), "run", "--", "/bin/true"]
    bw = bwrap_argv(["/bin/true"])
    python = [sys.executable, "-c", "pass"]
    preflight("flue run -- /bin/true", flue, env)
    preflight("bwrap ... /bin/true", bw, env)
    cmds = {"flue": flue, "bwrap": bw, "python": python}
    # the machine's load changes over a minute: two hyperfine invocations in opposite orders,
    # so no command gets only the quiet (or the busy) part of the run; exports are merged
    n_chunks = max(1, min(cfg.chunks, cfg.runs))
    per_chunk = math.ceil(cfg.runs / n_chunks)
    say(f"cold start: hyperfine -N, {n_chunks} chunk(s) of {cfg.warmup} warmup + {per_chunk} "
        "runs of each command, in alternating order: flue, bwrap, and `python -c pass` (the "
        "interpreter's own floor)")
    chunks = []
    for i in range(n_chunks):
        labels = ("flue", "bwrap", "python") if i % 2 == 0 else ("python", "bwrap", "flue")
        raw = RESULTS_DIR / f"cold-start-hyperfine-{i + 1}.json"
        argv = ["hyperfine", "-N", "--style", "basic", "--warmup", str(cfg.warmup),
                "--runs", str(per_chunk), "--export-json", str(raw),
                *(shlex.join(cmds[label]) for label in labels)]
        p = subprocess.run(argv, check=False, cwd=REPO, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"hyperfine failed (exit {p.returncode}):\n{p.stderr.strip()}")
        chunks.append((json.loads(raw.read_text()), labels))
    stats = merge_hyperfine(chunks)
    out = cold_start_summary(stats)
    out["runs"], out["warmup"] = per_chunk * n_chunks, cfg.warmup
    out["chunks"] = n_chunks
    out["pythondontwritebytecode_removed"] = True
    out["commands"] = {"flue": "flue run -- /bin/true",
                       "bwrap": shlex.join(bwrap_argv(["/bin/true"])),
                       "python": "python -c pass"}
    return out


def print_cold_start(r: dict[str, Any]) -> None:
    s = r["stats_ms"]
    say()
    say("== cold start (ms, lower is better) ==")
    say(f"{'':28}{'p50':>9}{'p95':>9}{'mean':>9}{'min':>9}{'runs':>6}")
    names = {"flue": "flue run -- /bin/true", "bwrap": "bwrap --unshare-all /bin/true",
             "python": "python -c pass (floor)"}
    for key in ("flue", "bwrap", "python"):
        if key in s:
            v = s[key]
            say(f"{names[key]:28}{v['p50']:9.1f}{v['p95']:9.1f}{v['mean']:9.1f}{v['min']:9.1f}"
                f"{v['n']:6d}")
    say(f"ratio flue/bwrap: p50 {fmt_ratio(r['ratio_p50'])}, p95 {fmt_ratio(r['ratio_p95'])}")
    if "flue_minus_python_p50_ms" in r:
        say(f"flue p50 above a bare Python start: {r['flue_minus_python_p50_ms']:.1f} ms")
    verdict = "MET" if r["target_met"] else "NOT MET"
    say(f"target p50 <= {r['target_p50_ms']:g} ms: {verdict} "
        f"(flue p50 = {s['flue']['p50']:.1f} ms)")


# ------------------------------------------------------------------------------- processes


@dataclass
class Launched:
    popen: subprocess.Popen[bytes]
    kind: str


class Fleet:
    """Processes this benchmark started, each in its own session (so its process group can
    be signalled as a whole); ``close`` ends every one of them, also on Ctrl-C."""

    def __init__(self, marker: bytes | None = None) -> None:
        self.members: list[Launched] = []
        self.marker = marker  # exact /proc/PID/cmdline of our sandboxed sleeps

    def start(self, argv: Sequence[str], kind: str, *, stderr: Any = subprocess.DEVNULL,
              stdout: Any = subprocess.DEVNULL, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                             start_new_session=True, env=env, cwd=REPO)
        self.members.append(Launched(p, kind))
        return p

    def alive(self) -> int:
        return sum(1 for m in self.members if m.popen.poll() is None)

    def close(self, grace: float = 15.0) -> None:
        for m in self.members:
            if m.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(m.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.05)
        for m in self.members:
            if m.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(m.popen.pid, signal.SIGKILL)
        for m in self.members:
            with contextlib.suppress(subprocess.TimeoutExpired):
                m.popen.wait(timeout=5)
        # a sandboxed sleep in its own session outlived its launcher: ours by its marker
        if self.marker is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                left = find_by_cmdline(self.marker)
                if not left:
                    break
                for pid in left:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
        self.members.clear()


def find_by_cmdline(exact: bytes) -> list[int]:
    """PIDs whose /proc/PID/cmdline is exactly ``exact``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if f.read(len(exact) + 1) == exact:
                    out.append(int(name))
        except OSError:
            continue
    return out


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, so ``finally`` blocks clean up."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def read_kib(path: str, key: str) -> int | None:
    """A ``Key:   123 kB`` line of a /proc file (status, smaps_rollup), in KiB."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


# ------------------------------------------------------------------------------- memory


def mem_available_kib(samples: int = 3, gap: float = 0.3) -> int:
    vals = []
    for i in range(samples):
        if i:
            time.sleep(gap)
        vals.append(meminfo()["MemAvailable"])
    return int(statistics.median(vals))


def memory_per_sandbox(before_kib: int, after_kib: int, n: int) -> float:
    """KiB of MemAvailable each sandbox took."""
    if n <= 0:
        raise ValueError("no sandboxes")
    return (before_kib - after_kib) / n


def tree_pss_kib(pid: int) -> int | None:
    """Proportional set size of a process and all its descendants (the supervisor or
    bwrap, and every process of its sandbox), in KiB."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return None
    total = 0
    for pr in procs:
        v = read_kib(f"/proc/{pr.pid}/smaps_rollup", "Pss")
        if v is not None:
            total += v
    return total


def measure_fleet(kind: str, argv: Sequence[str], n: int, marker: bytes, cfg: Config,
                  env: dict[str, str], log: Any) -> dict[str, Any]:
    fleet = Fleet(marker)
    try:
        time.sleep(cfg.settle)
        before = mem_available_kib()
        t0 = time.monotonic()
        deadline = t0 + 60 + n * 1.0
        up = 0
        while len(fleet.members) < n or up < n:
            up = len(find_by_cmdline(marker))
            if len(fleet.members) < n and len(fleet.members) - up < cfg.inflight:
                fleet.start(argv, kind, stderr=log, env=env)
                continue
            if time.monotonic() > deadline:
                raise BenchError(f"{kind}: only {up} of {n} sandboxes came up within "
                                 f"{deadline - t0:.0f} s (log: bench-results/memory.log)")
            dead = len(fleet.members) - fleet.alive()
            if dead:
                raise BenchError(f"{kind}: {dead} sandbox(es) exited early "
                                 "(log: bench-results/memory.log)")
            time.sleep(0.02)
        startup = time.monotonic() - t0
        time.sleep(cfg.settle)
        after = mem_available_kib()
        if len(find_by_cmdline(marker)) != n or fleet.alive() != n:
            raise BenchError(f"{kind}: sandboxes exited while being measured")
        pss = [v for v in (tree_pss_kib(m.popen.pid) for m in fleet.members) if v is not None]
        sup_rss = [v for v in (read_kib(f"/proc/{m.popen.pid}/status", "VmRSS")
                               for m in fleet.members) if v is not None]
    finally:
        fleet.close()
    time.sleep(cfg.settle)
    recovered = mem_available_kib()
    return {
        "n": n,
        "mem_available_before_kib": before,
        "mem_available_loaded_kib": after,
        "mem_available_after_teardown_kib": recovered,
        "per_sandbox_kib": memory_per_sandbox(before, after, n),
        # how far MemAvailable moved for reasons of its own (other work on the machine):
        # the per-sandbox figure is only meaningful well above this
        "noise_per_sandbox_kib": abs(before - recovered) / n,
        "tree_pss_kib": summarize(pss) if pss else None,
        "launcher_rss_kib": summarize(sup_rss) if sup_rss else None,
        "startup_seconds": startup,
    }


def run_memory(cfg: Config) -> dict[str, Any]:
    env = bench_env()
    n = cfg.sandboxes
    # the sleep's duration is its own deadline (and the marker we count sandboxes by)
    marker_arg = f"{cfg.sleep_timeout}.{os.getpid() % 1000000:06d}"
    marker = b"/bin/sleep\0" + marker_arg.encode() + b"\0"
    sleep = ["/bin/sleep", marker_arg]
    flue = [*flue_cmd(), "run", "--timeout", str(cfg.sleep_timeout), "--", *sleep]
    bw = bwrap_argv(sleep, extra=["--die-with-parent"])
    preflight("flue run -- /bin/true", [*flue_cmd(), "run", "--", "/bin/true"], env)
    preflight("bwrap ... /bin/true", bwrap_argv(["/bin/true"]), env)
    say(f"memory: {n} idle sandboxes at a time, at most {cfg.inflight} starting at once; "
        "bubblewrap first, then flue (default profile, --timeout "
        f"{cfg.sleep_timeout})")
    out: dict[str, Any] = {"sandboxes": n}
    with open(RESULTS_DIR / "memory.log", "wb") as log:
        for kind, argv in (("bwrap", bw), ("flue", flue)):
            say(f"memory: starting {n} {kind} sandboxes ...")
            out[kind] = measure_fleet(kind, argv, n, marker, cfg, env, log)
            say(f"memory: {kind}: {out[kind]['per_sandbox_kib']:.0f} KiB per sandbox "
                f"(all up in {out[kind]['startup_seconds']:.1f} s); torn down")
    out["ratio"] = ratio(out["flue"]["per_sandbox_kib"], out["bwrap"]["per_sandbox_kib"])
    pf, pb = out["flue"]["tree_pss_kib"], out["bwrap"]["tree_pss_kib"]
    out["ratio_tree_pss_p50"] = ratio(pf and pf["p50"], pb and pb["p50"])
    return out


def print_memory(r: dict[str, Any]) -> None:
    say()
    say(f"== memory per idle sandbox ({r['sandboxes']} concurrent `sleep`, KiB, lower is "
        "better) ==")
    say(f"{'':12}{'MemAvailable drop':>19}{'tree PSS p50':>14}{'launcher RSS p50':>18}"
        "   (MemAvailable drift over the round, per sandbox)")
    for key in ("flue", "bwrap"):
        v = r[key]
        pss = v["tree_pss_kib"]["p50"] if v["tree_pss_kib"] else float("nan")
        rss = v["launcher_rss_kib"]["p50"] if v["launcher_rss_kib"] else float("nan")
        say(f"{key:12}{v['per_sandbox_kib']:19.0f}{pss:14.0f}{rss:18.0f}"
            f"   (noise +-{v['noise_per_sandbox_kib']:.0f})")
    say(f"ratio flue/bwrap: MemAvailable {fmt_ratio(r['ratio'])}, "
        f"tree PSS {fmt_ratio(r['ratio_tree_pss_p50'])}")


# ------------------------------------------------------------------------------- denials

FLOOD_C = r"""
/* flue benchmark: K denied (keyctl) or allowed (getppid) syscalls, timed. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    int deny = argc > 1 && strcmp(argv[1], "deny") == 0;
    long k = argc > 2 ? atol(argv[2]) : 100000;
    long expected = 0, unexpected = 0;
    int first = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < k; i++) {
        long r = deny ? syscall(SYS_keyctl, 0L /* KEYCTL_GET_KEYRING_ID */, -1L, 0L, 0L, 0L)
                      : syscall(SYS_getppid);
        int good = deny ? (r == -1 && errno == EPERM) : r >= 0;
        if (good) expected++;
        else if (unexpected++ == 0) first = r == -1 ? errno : 0;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("{\"mode\": \"%s\", \"calls\": %ld, \"ns\": %.0f, \"expected\": %ld, "
           "\"unexpected\": %ld, \"first_unexpected_errno\": %d}\n",
           deny ? "deny" : "allow", k, ns, expected, unexpected, first);
    return unexpected ? 3 : 0;
}
"""


@contextlib.contextmanager
def flood_program() -> Iterator[Path]:
    """The flood program, compiled with gcc into a temporary directory the sandbox's user
    can read (it is bound read-only at BENCH_MOUNT)."""
    tmp = Path(tempfile.mkdtemp(prefix="flue-bench-"))
    try:
        tmp.chmod(0o755)
        src = tmp / "flood.c"
        src.write_text(FLOOD_C)
        p = subprocess.run(["gcc", "-O2", "-o", str(tmp / "flood"), str(src)],
                           check=False, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"gcc could not compile the flood program:\n{p.stderr.strip()}")
        (tmp / "flood").chmod(0o755)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_flood(stdout: str) -> dict[str, Any]:
    """The flood program's one JSON line (the last line that parses)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                data: dict[str, Any] = json.loads(line)
                return data
    raise BenchError(f"the flood program printed no result: {stdout[-300:]!r}")


def us_per_call(res: dict[str, Any]) -> float:
    return float(res["ns"]) / float(res["calls"]) / 1000.0


@dataclass(frozen=True)
class FloodMode:
    name: str  # key in the results
    label: str  # table row
    sandbox: str  # "flue", "flue-no-observe" or "host"
    syscall: str  # "deny" or "allow"


FLOOD_MODES = (
    FloodMode("notify_deny", "flue, denied keyctl (user notification)", "flue", "deny"),
    FloodMode("errno_deny", "flue --no-observe, denied keyctl (errno)", "flue-no-observe",
              "deny"),
    FloodMode("notify_allow", "flue, allowed getppid", "flue", "allow"),
    FloodMode("errno_allow", "flue --no-observe, allowed getppid", "flue-no-observe", "allow"),
    FloodMode("host_allow", "no sandbox, getppid", "host", "allow"),
)


def flood_argv(mode: FloodMode, bindir: Path, calls: int, report: Path | None) -> list[str]:
    prog = [f"{BENCH_MOUNT}/flood", mode.syscall, str(calls)]
    if mode.sandbox == "host":
        return [str(bindir / "flood"), mode.syscall, str(calls)]
    argv = [*flue_cmd(), "run", "--timeout", "300", "--bind", f"{bindir}:{BENCH_MOUNT}:ro"]
    if mode.sandbox == "flue-no-observe":
        argv.append("--no-observe")
    if report is not None:
        argv += ["--report", str(report)]
    return [*argv, "--", *prog]


def report_denials(report: Path) -> int | None:
    """How many keyctl denials flue's report counted."""
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return None
    return int((data.get("denials") or {}).get("keyctl", {}).get("count", 0))


def run_flood_once(mode: FloodMode, bindir: Path, calls: int, env: dict[str, str],
                   watch: bool = False) -> dict[str, Any]:
    """One run of the flood program; with ``watch``, the ``flue run`` process's own CPU
    time (children excluded) and peak RSS as well."""
    report = bindir.parent / f"{bindir.name}-report.json" if mode.sandbox != "host" else None
    argv = flood_argv(mode, bindir, calls, report)
    fleet = Fleet()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = fleet.start(argv, mode.name, stdout=out, stderr=err, env=env)
            sup = None
            if watch:
                sup = watch_supervisor(p)
            else:
                wait_child(p)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
        if p.returncode != 0:
            raise BenchError(f"{mode.label}: exit {p.returncode}: {stderr.strip()[-500:]}")
        res = parse_flood(stdout)
        if res.get("unexpected"):
            raise BenchError(f"{mode.label}: {res['unexpected']} of {res['calls']} calls did not "
                             f"return what they should (first errno "
                             f"{res['first_unexpected_errno']})")
        res["us_per_call"] = us_per_call(res)
        if report is not None and mode.syscall == "deny" and mode.sandbox == "flue":
            res["counted_by_flue"] = report_denials(report)
        if sup is not None:
            res["supervisor"] = sup
        return res
    finally:
        fleet.close(grace=2)
        if report is not None:
            with contextlib.suppress(OSError):
                report.unlink()


def wait_child(p: subprocess.Popen[bytes], timeout: float = 600) -> None:
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"pid {p.pid} did not finish in {timeout:.0f} s") from err


def watch_supervisor(p: subprocess.Popen[bytes], interval: float = 0.01,
                     timeout: float = 600) -> dict[str, Any]:
    """Poll a child until it exits; read its own CPU time from the zombie (waitid WNOWAIT
    keeps it), so nothing is lost at the end, then reap it. Peak RSS: VmHWM, last read while
    it was alive."""
    import psutil

    pid = p.pid
    proc = psutil.Process(pid)
    hwm = 0
    t0 = time.monotonic()
    while True:
        res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if res is not None:
            break
        v = read_kib(f"/proc/{pid}/status", "VmHWM")
        if v:
            hwm = max(hwm, v)
        if time.monotonic() - t0 > timeout:
            raise BenchError(f"pid {pid} did not finish in {timeout:.0f} s")
        time.sleep(interval)
    wall = time.monotonic() - t0
    ct = proc.cpu_times()  # the zombie's own user+system (children are separate fields)
    p.wait()
    return {"cpu_seconds": ct.user + ct.system, "user_seconds": ct.user,
            "system_seconds": ct.system, "peak_rss_kib": hwm, "wall_seconds": wall}


def run_denials(cfg: Config) -> dict[str, Any]:
    env = bench_env()
    k, runs = cfg.calls, cfg.flood_runs
    say(f"denials: {k} calls per run, {runs} runs of each mode, interleaved")
    per: dict[str, list[dict[str, Any]]] = {m.name: [] for m in FLOOD_MODES}
    with flood_program() as bindir:
        for _ in range(runs):
            for mode in FLOOD_MODES:
                per[mode.name].append(run_flood_once(mode, bindir, k, env))
    out: dict[str, Any] = {"calls": k, "runs": runs, "modes": {}}
    for mode in FLOOD_MODES:
        vals = [r["us_per_call"] for r in per[mode.name]]
        entry: dict[str, Any] = {"label": mode.label, "us_per_call": summarize(vals)}
        counted = [r.get("counted_by_flue") for r in per[mode.name] if "counted_by_flue" in r]
        if counted:
            entry["counted_by_flue"] = counted
        out["modes"][mode.name] = entry
    m = out["modes"]
    out["ratio_notify_vs_errno"] = ratio(m["notify_deny"]["us_per_call"]["p50"],
                                         m["errno_deny"]["us_per_call"]["p50"])
    out["notify_extra_us_per_call"] = (m["notify_deny"]["us_per_call"]["p50"]
                                       - m["errno_deny"]["us_per_call"]["p50"])
    out["nsjail_us_per_traced_call"] = list(NSJAIL_US_PER_TRACED_CALL)
    out["ratio_vs_nsjail"] = [ratio(m["notify_deny"]["us_per_call"]["p50"], v)
                              for v in NSJAIL_US_PER_TRACED_CALL]
    return out


def print_denials(r: dict[str, Any]) -> None:
    say()
    say(f"== cost per syscall ({r['calls']} calls a run, {r['runs']} runs, µs per call, lower "
        "is better) ==")
    say(f"{'':46}{'p50':>9}{'p95':>9}{'min':>9}")
    for mode in FLOOD_MODES:
        e = r["modes"][mode.name]
        v = e["us_per_call"]
        say(f"{mode.label:46}{v['p50']:9.3f}{v['p95']:9.3f}{v['min']:9.3f}")
    m = r["modes"]
    counted = m["notify_deny"].get("counted_by_flue")
    if counted:
        ok = all(c == r["calls"] for c in counted)
        say(f"denials counted in flue's report: {counted} "
            f"({'all' if ok else 'NOT all'} of {r['calls']} per run)")
    say(f"ratio user notification / plain errno: {fmt_ratio(r['ratio_notify_vs_errno'])} "
        f"(+{r['notify_extra_us_per_call']:.1f} µs per denied call)")
    lo, hi = r["nsjail_us_per_traced_call"]
    rl, rh = r["ratio_vs_nsjail"]
    say(f"nsjail's published cost per traced call (user notification): {lo:g}-{hi:g} µs; "
        f"flue's p50 is {fmt_ratio(rh)}-{fmt_ratio(rl)} of that")


# ------------------------------------------------------------------------------- supervisor


def supervisor_per_100k(flood_cpu: float, idle_cpu: float, denials: int) -> float:
    """Supervisor CPU seconds per 100k denials, net of what the same run costs it without
    denials."""
    if denials <= 0:
        raise ValueError("no denials")
    return (flood_cpu - idle_cpu) / denials * 100_000


def run_supervisor(cfg: Config) -> dict[str, Any]:
    env = bench_env()
    k, runs = cfg.calls, cfg.flood_runs
    flood = next(m for m in FLOOD_MODES if m.name == "notify_deny")
    calm = next(m for m in FLOOD_MODES if m.name == "notify_allow")
    say(f"supervisor: {runs} runs of {k} denied calls (and, as baseline, {k} allowed calls), "
        "the `flue run` process's own CPU time and VmHWM")
    rows: dict[str, list[dict[str, Any]]] = {"flood": [], "baseline": []}
    with flood_program() as bindir:
        for _ in range(runs):
            for key, mode in (("flood", flood), ("baseline", calm)):
                rows[key].append(run_flood_once(mode, bindir, k, env, watch=True))
    def col(key: str, field: str) -> list[float]:
        return [float(r["supervisor"][field]) for r in rows[key]]
    flood_cpu = statistics.median(col("flood", "cpu_seconds"))
    base_cpu = statistics.median(col("baseline", "cpu_seconds"))
    flood_s = statistics.median(float(r["ns"]) / 1e9 for r in rows["flood"])  # its own clock
    out = {
        "calls": k,
        "runs": runs,
        "flood": {f: summarize(col("flood", f))
                  for f in ("cpu_seconds", "user_seconds", "system_seconds", "peak_rss_kib",
                            "wall_seconds")},
        "baseline": {f: summarize(col("baseline", f))
                     for f in ("cpu_seconds", "peak_rss_kib", "wall_seconds")},
        "cpu_seconds_per_100k_denials": supervisor_per_100k(flood_cpu, base_cpu, k),
        "cpu_seconds_per_100k_gross": flood_cpu / k * 100_000,
        # the supervisor's extra CPU over the flood's duration (as the flood timed itself)
        "supervisor_busy_share": ratio(flood_cpu - base_cpu, flood_s),
        "denials_per_second": k / flood_s if flood_s else None,
        "counted_by_flue": [r.get("counted_by_flue") for r in rows["flood"]],
        "rows": rows,
    }
    return out


def print_supervisor(r: dict[str, Any]) -> None:
    f, b = r["flood"], r["baseline"]
    say()
    say(f"== supervisor (`flue run` process, children excluded) while one sandbox floods "
        f"{r['calls']} denials ==")
    say(f"{'':34}{'p50':>10}{'p95':>10}")
    say(f"{'CPU s, flood run':34}{f['cpu_seconds']['p50']:10.3f}{f['cpu_seconds']['p95']:10.3f}")
    say(f"{'CPU s, same run without denials':34}{b['cpu_seconds']['p50']:10.3f}"
        f"{b['cpu_seconds']['p95']:10.3f}")
    say(f"{'peak RSS KiB, flood run':34}{f['peak_rss_kib']['p50']:10.0f}"
        f"{f['peak_rss_kib']['p95']:10.0f}")
    say(f"{'peak RSS KiB, without denials':34}{b['peak_rss_kib']['p50']:10.0f}"
        f"{b['peak_rss_kib']['p95']:10.0f}")
    say(f"supervisor CPU per 100k denials: {r['cpu_seconds_per_100k_denials']:.2f} s net "
        f"({r['cpu_seconds_per_100k_gross']:.2f} s gross, start-up included), i.e. "
        f"{r['cpu_seconds_per_100k_denials'] * 10:.1f} µs of supervisor CPU per denial")
    say(f"during the flood the supervisor was busy {100 * (r['supervisor_busy_share'] or 0):.0f}% "
        f"of the time; {r['denials_per_second'] or 0:,.0f} denials/s (p50 run)")
    counted = r["counted_by_flue"]
    say(f"denials counted in flue's report: {counted}")


# ------------------------------------------------------------------------------- tui

TUI_TARGET_P95_MS = 100.0
TUI_SIZE = (120, 40)
TUI_PROBE_TIMEOUT = 10.0  # a keypress whose change never shows within this is a freeze
TUI_FLOOD_C = r"""
/* flue benchmark (tui): a rate-paced flood of denied keyctl calls and of stdout lines.
 * usage: tuiflood DENIALS_PER_S BYTES_PER_S SECONDS DELAY RESULT_FILE
 * One ptrace (denied: a second row in the denial table), a header line, DELAY seconds of
 * quiet, then every millisecond (absolute deadlines, clock_nanosleep) its share of keyctl
 * calls and of 100-byte lines; more than 100 ms behind it resynchronises instead of
 * bursting. The result, with CLOCK_MONOTONIC start and end, goes to RESULT_FILE as JSON. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#define TICK_NS 1000000L
#define MAX_SECONDS 3600
#define LINE 100

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int write_all(const char *buf, long n) {
    long done = 0;
    while (done < n) {
        ssize_t w = write(1, buf + done, (size_t)(n - done));
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        done += w;
    }
    return 0;
}

static long per_sec_denials[MAX_SECONDS + 1], per_sec_bytes[MAX_SECONDS + 1];
static char buf[1 << 20];

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: tuiflood DENIALS_PER_S BYTES_PER_S SECONDS DELAY RESULT\n");
        return 2;
    }
    double rate = atof(argv[1]), bps = atof(argv[2]), seconds = atof(argv[3]);
    double delay = atof(argv[4]);
    if (seconds > MAX_SECONDS) seconds = MAX_SECONDS;
    long r0 = syscall(SYS_ptrace, 0L /* PTRACE_TRACEME */, 0L, 0L, 0L);
    int ptrace_errno = r0 == -1 ? errno : 0;
    printf("tuiflood: %.0f denials/s and %.0f bytes/s for %.0f s, in %.1f s\n",
           rate, bps, seconds, delay);
    fflush(stdout);
    struct timespec d = {(time_t)delay, (long)((delay - (double)(long)delay) * 1e9)};
    while (nanosleep(&d, &d) == -1 && errno == EINTR) {}

    const char *tail = " flood line: the quick brown fox jumps over the lazy dog while the "
                       "sandbox counts every refusal ...........................";
    long denials = 0, unexpected = 0, bytes = 0, lines = 0, resyncs = 0, write_errors = 0;
    double den_acc = 0, byte_acc = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    double t0 = now_s(), end = t0 + seconds;
    long tick = 0;
    for (;;) {
        double t = now_s();
        if (t >= end) break;
        int sec = (int)(t - t0);
        den_acc += rate / 1000.0;
        long nd = (long)den_acc;
        den_acc -= (double)nd;
        for (long i = 0; i < nd; i++) {
            long r = syscall(SYS_keyctl, 0L /* KEYCTL_GET_KEYRING_ID */, -1L, 0L, 0L, 0L);
            if (r == -1 && errno == EPERM) denials++;
            else unexpected++;
        }
        per_sec_denials[sec] += nd;
        byte_acc += bps / 1000.0;
        long n = 0;
        while (n + LINE <= (long)byte_acc && n + LINE <= (long)sizeof(buf)) {
            char head[32];
            int k = snprintf(head, sizeof head, "%09ld %07ld", lines, tick);
            memset(buf + n, '.', LINE);
            memcpy(buf + n, head, (size_t)k);
            size_t tl = strlen(tail);
            if ((size_t)k + tl > LINE - 1) tl = LINE - 1 - (size_t)k;
            memcpy(buf + n + k, tail, tl);
            buf[n + LINE - 1] = '\n';
            n += LINE;
            lines++;
        }
        byte_acc -= (double)n;
        if (n) {
            if (write_all(buf, n) < 0) write_errors++;
            else { bytes += n; per_sec_bytes[sec] += n; }
        }
        tick++;
        next.tv_nsec += TICK_NS;
        if (next.tv_nsec >= 1000000000L) { next.tv_sec++; next.tv_nsec -= 1000000000L; }
        if (now_s() - ((double)next.tv_sec + (double)next.tv_nsec / 1e9) > 0.1) {
            clock_gettime(CLOCK_MONOTONIC, &next);  /* far behind: no burst to catch up */
            resyncs++;
            continue;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {}
    }
    double t1 = now_s();
    FILE *f = fopen(argv[5], "w");
    if (!f) { perror(argv[5]); return 3; }
    fprintf(f, "{\"t0\": %.6f, \"t1\": %.6f, \"seconds\": %.6f, \"target_denials_per_s\": %.0f, "
               "\"target_bytes_per_s\": %.0f, \"denials\": %ld, \"unexpected\": %ld, "
               "\"bytes\": %ld, \"lines\": %ld, \"line_bytes\": %d, \"ticks\": %ld, "
               "\"resyncs\": %ld, \"write_errors\": %ld, \"ptrace_errno\": %d, "
               "\"per_second_denials\": [",
            t0, t1, t1 - t0, rate, bps, denials, unexpected, bytes, lines, LINE, tick, resyncs,
            write_errors, ptrace_errno);
    int full = (int)(t1 - t0);
    if (full > MAX_SECONDS) full = MAX_SECONDS;
    for (int i = 0; i < full; i++) fprintf(f, "%s%ld", i ? ", " : "", per_sec_denials[i]);
    fprintf(f, "], \"per_second_bytes\": [");
    for (int i = 0; i < full; i++) fprintf(f, "%s%ld", i ? ", " : "", per_sec_bytes[i]);
    fprintf(f, "]}\n");
    fclose(f);
    printf("tuiflood: done\n");
    return unexpected ? 4 : 0;
}
"""


@contextlib.contextmanager
def tui_flood_program() -> Iterator[Path]:
    """``tuiflood`` compiled with gcc into a fresh 0755 directory; yields the binary (flue-tui
    binds its directory read-only into the sandbox, at /opt/host/<name>)."""
    tmp = Path(tempfile.mkdtemp(prefix="flue-bench-tui-"))
    try:
        tmp.chmod(0o755)
        src = tmp / "tuiflood.c"
        src.write_text(TUI_FLOOD_C)
        p = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(tmp / "tuiflood"), str(src)],
                           check=False, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"gcc could not compile the tui flood program:\n{p.stderr.strip()}")
        (tmp / "tuiflood").chmod(0o755)
        yield tmp / "tuiflood"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ControlParser:
    """What a tmux control-mode client (``tmux -C``) reads: command replies between
    ``%begin`` and ``%end``/``%error`` with the same time and number, and notifications, of
    which ``%output`` (the pane wrote something) is counted."""

    def __init__(self) -> None:
        self._buf = b""
        self._open: tuple[bytes, bytes] | None = None
        self._lines: list[str] = []
        self.replies: list[tuple[bool, list[str]]] = []
        self.outputs = 0
        self.exited = False

    def feed(self, data: bytes) -> None:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            if self._open is not None:
                if raw.startswith((b"%end ", b"%error ")) and \
                        tuple(raw.split()[1:3]) == self._open:
                    self.replies.append((raw.startswith(b"%end "), self._lines))
                    self._open, self._lines = None, []
                else:
                    self._lines.append(raw.decode("utf-8", "replace"))
            elif raw.startswith(b"%output "):
                self.outputs += 1
            elif raw.startswith(b"%begin "):
                parts = raw.split()
                self._open = (parts[1], parts[2]) if len(parts) >= 3 else (b"", b"")
            elif raw.startswith(b"%exit"):
                self.exited = True


class TmuxControl:
    """A private tmux server (its own ``-L`` socket, no config file) running one session,
    driven through a control-mode client: commands and screen captures go over one pipe, no
    process per capture, and ``%output`` notifications say when the pane has drawn."""

    def __init__(self, command: str, *, size: tuple[int, int] = TUI_SIZE,
                 env: dict[str, str] | None = None) -> None:
        self.sock = f"flue-bench-{os.getpid()}"
        self.name = "tui"
        self.env = env
        self.client: subprocess.Popen[bytes] | None = None
        self.parser = ControlParser()
        w, h = size
        p = self._tmux("new-session", "-d", "-s", self.name, "-x", str(w), "-y", str(h),
                       command)
        if p.returncode != 0:
            raise BenchError(f"tmux new-session failed: {p.stderr.strip()}")
        # asked now: once the app quits the server is gone (and its socket file stays)
        self.socket_path = self._tmux("display-message", "-p", "#{socket_path}").stdout.strip()
        try:
            self._attach()
        except BaseException:
            self.close()  # the server (and the app in it) goes with a failed attach
            raise

    def _attach(self) -> None:
        self._tmux("set-option", "-g", "window-size", "manual")
        self.client = subprocess.Popen(
            ["tmux", "-L", self.sock, "-f", "/dev/null", "-C", "attach-session", "-t",
             self.name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=self.env, start_new_session=True)
        assert self.client.stdout is not None
        os.set_blocking(self.client.stdout.fileno(), False)
        deadline = time.monotonic() + 10  # the first reply is the attach-session's own
        while not self.parser.replies and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        if not self.parser.replies or not self.parser.replies[0][0]:
            raise BenchError("the tmux control client could not attach")

    def _tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args],
                              check=False, capture_output=True, text=True, env=self.env,
                              stdin=subprocess.DEVNULL)

    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting up to ``timeout``); False when nothing came."""
        assert self.client is not None and self.client.stdout is not None
        fd = self.client.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return False
        if not data:
            raise BenchError("the tmux control client exited")
        self.parser.feed(data)
        return True

    def send(self, cmd: str) -> None:
        assert self.client is not None and self.client.stdin is not None
        self.client.stdin.write(cmd.encode() + b"\n")
        self.client.stdin.flush()

    def command(self, cmd: str, timeout: float = 10.0) -> list[str]:
        """Run one tmux command through the control client; its output lines."""
        want = len(self.parser.replies) + 1
        self.send(cmd)
        deadline = time.monotonic() + timeout
        while len(self.parser.replies) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"tmux did not answer {cmd!r} within {timeout:.0f} s")
            self._read(left)
        ok, lines = self.parser.replies[want - 1]
        if not ok:
            raise BenchError(f"tmux {cmd!r} failed: {' '.join(lines)}")
        return lines

    def screen(self) -> str:
        return "\n".join(self.command(f"capture-pane -p -t {self.name}"))

    def keys(self, *keys: str) -> None:
        self.command(f"send-keys -t {self.name} " + " ".join(keys))

    def wait_output(self, since: int, timeout: float) -> bool:
        """Wait until the pane has written something after ``since`` outputs were counted."""
        deadline = time.monotonic() + timeout
        while self.parser.outputs <= since:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._read(left)
        return True

    def pane_pid(self) -> int:
        return int(self.command(f"display-message -p -t {self.name} '#{{pane_pid}}'")[0])

    def wait_for(self, pred: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            seen = self.parser.outputs
            text = self.screen()
            if pred(text):
                return text
            self.wait_output(seen, min(0.2, max(0.0, deadline - time.monotonic())))
        raise BenchError(f"flue-tui never showed {what} within {timeout:.0f} s; the screen:\n"
                         f"{text}")

    def close(self) -> None:
        path = self.socket_path
        if self.client is not None:
            with contextlib.suppress(OSError, ValueError):
                assert self.client.stdin is not None
                self.client.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.client.wait(timeout=5)
            if self.client.poll() is None:
                self.client.kill()
                self.client.wait()
            self.client = None
        self._tmux("kill-server")
        if path.endswith(self.sock):  # the server leaves its socket file behind
            with contextlib.suppress(OSError):
                os.unlink(path)


@dataclass(frozen=True)
class Probe:
    """One keypress and what the screen must show once it has been handled."""

    kind: str  # "show output" | "hide output" | "cursor down" | "cursor up"
    key: str  # tmux send-keys name
    done: Callable[[str], bool]


OUTPUT_TITLE = "5 Output"
ROW_KEYCTL = "keyctl @keyring"  # the denial detail line, for the keyctl row
ROW_PTRACE = "ptrace @debug"


def next_probe(screen: str, step: int) -> Probe:
    """The probe to send given what the screen shows now: even steps toggle the Output panel
    (5), odd steps move the denial table's cursor between its two rows (down/up) once both
    are there."""
    two_rows = "keyctl" in screen and "ptrace" in screen
    if step % 2 == 0 or not two_rows:
        if OUTPUT_TITLE in screen:
            return Probe("hide output", "5", lambda s: OUTPUT_TITLE not in s)
        return Probe("show output", "5", lambda s: OUTPUT_TITLE in s)
    if ROW_PTRACE in screen:
        return Probe("cursor up", "Up", lambda s: ROW_KEYCTL in s and ROW_PTRACE not in s)
    return Probe("cursor down", "Down", lambda s: ROW_PTRACE in s and ROW_KEYCTL not in s)


def screen_counts(screen: str) -> dict[str, int | None]:
    """What flue-tui's screen says it received: ``1 Denials · N`` and ``5 Output · N lines``
    (or ``showing last K of N lines``) in the panels' titles (None when not shown)."""
    import re

    den = re.search(r"1 Denials · (\d+)", screen)
    out = re.search(r"5 Output · (?:showing last \d+ of )?(\d+) lines?\b", screen)
    return {"denials": int(den.group(1)) if den else None,
            "output_lines": int(out.group(1)) if out else None}


def rss_summary(samples: Sequence[tuple[float, int]], t0: float, t1: float) -> dict[str, Any]:
    """RSS samples (monotonic time, KiB) against the flood's window [t0, t1]: at its start
    (the last sample before it), its peak, at its end, and whether it stopped growing: the
    late half's peak exceeds the early half's (after a 10% warm-up) by at most
    max(4 MiB, 5%)."""
    if not samples:
        raise BenchError("no RSS samples of the flue-tui process")
    before = [v for t, v in samples if t <= t0]
    during = [(t, v) for t, v in samples if t0 <= t <= t1]
    if not during:
        raise BenchError("no RSS sample during the flood")
    start = before[-1] if before else during[0][1]
    dur = t1 - t0
    early = [v for t, v in during if t0 + 0.1 * dur <= t < t0 + 0.5 * dur] or [during[0][1]]
    late = [v for t, v in during if t >= t0 + 0.5 * dur] or [during[-1][1]]
    growth = max(late) - max(early)
    after = [v for t, v in samples if t > t1]
    return {
        "start_kib": start,
        "peak_kib": max(v for _, v in during),
        "end_kib": during[-1][1],
        "after_exit_kib": after[-1] if after else None,
        "early_peak_kib": max(early),
        "late_peak_kib": max(late),
        "late_growth_kib": growth,
        "bounded": growth <= max(4096, 0.05 * max(early)),
        "samples": len(samples),
    }


def tui_rates(res: dict[str, Any]) -> dict[str, Any]:
    """Achieved rates from the flood program's result (its own clock)."""
    secs = float(res["seconds"])
    if secs <= 0:
        raise BenchError("the flood ran for no time")
    per_den = res.get("per_second_denials") or []
    per_bytes = res.get("per_second_bytes") or []
    return {
        "seconds": secs,
        "denials_per_s": res["denials"] / secs,
        "bytes_per_s": res["bytes"] / secs,
        "lines_per_s": res["lines"] / secs,
        "target_denials_per_s": res["target_denials_per_s"],
        "target_bytes_per_s": res["target_bytes_per_s"],
        "min_second_denials": min(per_den) if per_den else None,
        "min_second_bytes": min(per_bytes) if per_bytes else None,
        "resyncs": res.get("resyncs", 0),
    }


def latency_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per kind and overall: stats of the latencies (ms) and how many never showed."""
    out: dict[str, Any] = {}
    kinds = sorted({r["kind"] for r in rows})
    for kind in [*kinds, "all"]:
        sel = [r for r in rows if kind in ("all", r["kind"])]
        ok = [r["ms"] for r in sel if r["ms"] is not None]
        out[kind] = {"presses": len(sel), "timeouts": len(sel) - len(ok),
                     **(summarize(ok) if ok else {})}
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process (its threads included), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float | None:
    """CPU seconds per wall second of a process over [t0, t1], from (time, cpu s) samples."""
    inside = [(t, c) for t, c in samples if t0 <= t <= t1]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def sample_rss(pid: int, stop: Any, out: list[tuple[float, int]], interval: float = 0.25,
               cpu: list[tuple[float, float]] | None = None) -> None:
    while not stop.is_set():
        v = read_kib(f"/proc/{pid}/status", "VmRSS")
        c = proc_cpu_seconds(pid)
        if v is None:
            return
        now = time.monotonic()
        out.append((now, v))
        if cpu is not None and c is not None:
            cpu.append((now, c))
        stop.wait(interval)


def engine_host_pid(ui: int, timeout: float = 10.0) -> int | None:
    """The engine host flue-tui started (``python -m engine.remote``, a child of the UI
    process that supervises its sandboxes), or None when there is none (an older flue-tui
    with the supervisor in the UI process)."""
    deadline = time.monotonic() + timeout
    while True:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != ui:
                    continue
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if b"engine.remote" in f.read():
                        return int(name)
            except (OSError, IndexError, ValueError):
                continue
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def flue_tui_bin() -> Path:
    """The installed ``flue-tui`` next to this interpreter (what a person runs)."""
    script = Path(sys.executable).parent / "flue-tui"
    if not (script.is_file() and os.access(script, os.X_OK)):
        raise BenchError(f"flue-tui is not installed next to {sys.executable} "
                         "(make bench installs it: pip install -e .)")
    return script


def probe_once(t: TmuxControl, probe: Probe, timeout: float = TUI_PROBE_TIMEOUT
               ) -> float | None:
    """Press the key; ms until a capture of the pane shows its effect (captured right after
    each time the pane writes), or None when it never does within ``timeout``."""
    start = time.perf_counter()
    t.keys(probe.key)
    deadline = start + timeout
    while True:
        seen = t.parser.outputs
        if probe.done(t.screen()):
            return (time.perf_counter() - start) * 1000.0
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        t.wait_output(seen, min(0.05, left))


def run_tui(cfg: Config) -> dict[str, Any]:
    import random
    import threading

    tui = flue_tui_bin()
    rate, bps, secs, delay = cfg.tui_denials, cfg.tui_bytes, cfg.tui_seconds, cfg.tui_delay
    say(f"tui: the installed flue-tui in tmux ({TUI_SIZE[0]}x{TUI_SIZE[1]}), driven by a tmux "
        f"control-mode client; one sandbox floods {rate:,} denials/s and {bps / 1e6:g} MB/s of "
        f"stdout for {secs} s (after {delay:g} s quiet); keypress -> capture showing the change")
    rng = random.Random(1)
    with tui_flood_program() as prog, contextlib.ExitStack() as stack:
        base = Path(tempfile.mkdtemp(prefix="flue-bench-tui-run-"))
        stack.callback(shutil.rmtree, base, True)
        base.chmod(0o755)  # the sandbox's user must reach the workspace below it
        ws = base / "work"
        ws.mkdir()
        ws.chmod(0o777)
        env = bench_env()
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
            d = base / var.lower()
            d.mkdir()
            env[var] = str(d)
        env.update(TERM="xterm-256color", COLORTERM="truecolor", LANG="C.UTF-8")
        env.pop("TMUX", None)
        argv = [str(tui), "--workspace", str(ws), "--", str(prog), str(rate), str(bps),
                str(secs), str(delay), "tuiflood-result.json"]
        cmd = f"sleep 0.5; cd {shlex.quote(str(REPO))} && exec {shlex.join(argv)}"
        t = TmuxControl(cmd, env=env)
        stack.callback(t.close)
        t.wait_for(lambda s: "tuiflood: " in s and "1 Denials" in s, 60, "the flood's header")
        pid = t.pane_pid()
        header_at = time.monotonic()
        host_pid = engine_host_pid(pid, timeout=2.0)
        rss: list[tuple[float, int]] = []
        cpu: list[tuple[float, float]] = []
        host_rss: list[tuple[float, int]] = []
        host_cpu: list[tuple[float, float]] = []
        load: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, stop, rss, 0.25, cpu),
                                   daemon=True)
        sampler.start()
        host_sampler = None
        if host_pid is not None:
            host_sampler = threading.Thread(target=sample_rss, daemon=True,
                                            args=(host_pid, stop, host_rss, 0.25, host_cpu))
            host_sampler.start()
        stack.callback(stop.set)
        rows: list[dict[str, Any]] = []

        def probes(until: float, phase: str) -> None:
            step = 0
            while time.monotonic() < until:
                probe = next_probe(t.screen(), step)
                at = time.monotonic()
                ms = probe_once(t, probe)
                rows.append({"phase": phase, "kind": probe.kind, "ms": ms, "at": at})
                step += 1
                time.sleep(rng.uniform(0.05, 0.25))

        # idle reference: the same app and sandbox, before the flood begins
        probes(header_at + delay - 1.0, "idle")
        flood_at = header_at + delay
        time.sleep(max(0.0, flood_at + 1.0 - time.monotonic()))  # 1 s into the flood
        load.append(os.getloadavg()[0])
        probes(flood_at + secs - 1.5, "flood")
        load.append(os.getloadavg()[0])
        screen = t.wait_for(lambda s: "exited" in s or "failed" in s, secs + 120,
                            "the end of the run")
        if OUTPUT_TITLE not in screen:  # the Output panel hidden by the last probe
            t.keys("5")
            screen = t.wait_for(lambda s: OUTPUT_TITLE in s, 30, "the Output panel")
        time.sleep(2.0)  # RSS after the run, settled
        screen = t.screen()
        stop.set()
        sampler.join(timeout=2)
        if host_sampler is not None:
            host_sampler.join(timeout=2)
        result_file = ws / "tuiflood-result.json"
        try:
            res = json.loads(result_file.read_text())
        except (OSError, ValueError) as err:
            raise BenchError(f"the flood program left no result ({err}); the screen:\n"
                             f"{screen}") from err
        if "exited 0" not in screen:
            raise BenchError(f"the flood program did not exit 0; the screen:\n{screen}")
        t.keys("q")
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
    rates = tui_rates(res)
    flood_rows = [r for r in rows if r["phase"] == "flood"
                  and res["t0"] <= r["at"] <= res["t1"]]
    idle_rows = [r for r in rows if r["phase"] == "idle"]
    lat = latency_summary(flood_rows)
    overall = lat.get("all", {})
    out: dict[str, Any] = {
        "method": "tmux control mode: send-keys, then capture-pane after each %output until "
                  "the change shows",
        "terminal": f"{TUI_SIZE[0]}x{TUI_SIZE[1]}",
        "rates": rates,
        "flood_result": {k: v for k, v in res.items() if not k.startswith("per_second")},
        "per_second_denials": res.get("per_second_denials"),
        "per_second_bytes": res.get("per_second_bytes"),
        "screen_counts": screen_counts(screen),
        "latency_ms": lat,
        "idle_latency_ms": latency_summary(idle_rows),
        "target_p95_ms": TUI_TARGET_P95_MS,
        "target_met": bool(overall.get("p95") is not None and overall["timeouts"] == 0
                           and overall["p95"] < TUI_TARGET_P95_MS),
        "rss_kib": rss_summary(rss, res["t0"], res["t1"]),
        # the flue-tui process (the UI; with no engine host, the supervisor too) in CPUs
        # during the flood: on a loaded machine it gets what the scheduler leaves
        "tui_cpu_share": cpu_share(cpu, res["t0"], res["t1"]),
        # the engine host (the sandbox's supervisor, a child process of flue-tui's)
        "engine_host": None if host_pid is None else {
            "cpu_share": cpu_share(host_cpu, res["t0"], res["t1"]),
            "rss_kib": rss_summary(host_rss, res["t0"], res["t1"]) if host_rss else None,
            "rss_series": [(round(t - res["t0"], 2), v) for t, v in host_rss],
        },
        "loadavg_flood_start_end": load,
        "rss_series": [(round(t - res["t0"], 2), v) for t, v in rss],
        "presses": rows,
        "final_screen": screen,
    }
    return out


def print_tui(r: dict[str, Any]) -> None:
    rt = r["rates"]
    say()
    say(f"== tui: keypress to repaint while one sandbox floods ({r['method']}) ==")
    say(f"achieved: {rt['denials_per_s']:,.0f} denials/s (target {rt['target_denials_per_s']:,.0f}),"
        f" {rt['bytes_per_s'] / 1e6:.2f} MB/s = {rt['lines_per_s']:,.0f} lines/s of stdout "
        f"(target {rt['target_bytes_per_s'] / 1e6:g} MB/s), over {rt['seconds']:.1f} s; "
        f"slowest second: {rt['min_second_denials']} denials, "
        f"{(rt['min_second_bytes'] or 0) / 1e6:.2f} MB")
    sc = r["screen_counts"]
    say(f"flue-tui showed: denials {sc['denials']}, output lines {sc['output_lines']} "
        f"(the program made {r['flood_result']['denials'] + 1} denials incl. one ptrace, "
        f"wrote {r['flood_result']['lines'] + 2} lines incl. its own two)")
    say(f"{'ms':26}{'presses':>8}{'p50':>9}{'p95':>9}{'max':>9}{'timeouts':>9}")
    for label, table in (("flood", r["latency_ms"]), ("idle (before the flood)",
                                                     r["idle_latency_ms"])):
        for kind, v in table.items():
            if "p50" in v:
                say(f"{label + ': ' + kind:26}{v['presses']:8d}{v['p50']:9.1f}{v['p95']:9.1f}"
                    f"{v['max']:9.1f}{v['timeouts']:9d}")
            else:
                say(f"{label + ': ' + kind:26}{v['presses']:8d}{'':27}{v['timeouts']:9d}")
    share = r.get("tui_cpu_share")
    la = r.get("loadavg_flood_start_end") or []
    host = r.get("engine_host")
    hshare = (host or {}).get("cpu_share")
    say(f"flue-tui process (UI) CPU during the flood: "
        f"{'n/a' if share is None else f'{share:.2f} CPUs'}; engine host: "
        + ("none (the supervisor runs in the UI process)" if host is None else
           "n/a" if hshare is None else f"{hshare:.2f} CPUs")
        + f"; load average at the flood's start and end: "
        f"{', '.join(f'{v:.1f}' for v in la) or 'n/a'}")
    for label, m in (("flue-tui (UI)", r["rss_kib"]), ("engine host", (host or {}).get("rss_kib"))):
        if m:
            say(f"{label} RSS KiB: start {m['start_kib']}, peak {m['peak_kib']}, end "
                f"{m['end_kib']}, after exit {m['after_exit_kib']}; late-half growth "
                f"{m['late_growth_kib']} KiB: {'bounded' if m['bounded'] else 'GROWING'}")
    p95 = r["latency_ms"].get("all", {}).get("p95")
    verdict = "MET" if r["target_met"] else "NOT MET"
    say(f"target p95 < {r['target_p95_ms']:g} ms: {verdict}"
        + (f" (p95 = {p95:.1f} ms)" if p95 is not None else ""))


# ------------------------------------------------------------------------------- main


@dataclass
class Config:
    quick: bool
    only: tuple[str, ...]
    runs: int
    warmup: int
    chunks: int
    sandboxes: int
    inflight: int
    settle: float
    sleep_timeout: int
    calls: int
    flood_runs: int
    output: Path
    tui_seconds: int = 60
    tui_delay: float = 8.0
    tui_denials: int = 20_000
    tui_bytes: int = 10_000_000


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description="flue vs bubblewrap, side by side, as ratios.")
    p.add_argument("--quick", action="store_true", help="fewer runs: a smoke check, not figures")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help=f"run only these sections ({', '.join(SECTIONS)}); repeatable or a,b")
    p.add_argument("--runs", type=int,
                   help="cold-start runs per command, over 2 hyperfine invocations in "
                   "alternating order (default 60; quick 5, one invocation)")
    p.add_argument("--sandboxes", type=int, metavar="N",
                   help="concurrent idle sandboxes for the memory section (default 200; quick 10)")
    p.add_argument("--calls", type=int, metavar="K",
                   help="syscalls per flood run (default 100000; quick 10000)")
    p.add_argument("--flood-runs", type=int, help="runs per flood mode (default 5; quick 2)")
    p.add_argument("--inflight", type=int, default=max(2, os.cpu_count() or 2),
                   help="sandboxes starting at once in the memory section")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    p.add_argument("--tui-seconds", type=int, metavar="S",
                   help="length of the tui section's flood (default 60; quick 15)")
    p.add_argument("--tui-denials", type=int, default=20_000, metavar="N",
                   help="denials per second of the tui section's flood (default 20000)")
    p.add_argument("--tui-bytes", type=int, default=10_000_000, metavar="B",
                   help="stdout bytes per second of the tui section's flood (default 10 MB)")
    a = p.parse_args(argv)
    only: list[str] = []
    for item in a.only:
        for name in item.split(","):
            name = name.strip()
            if name not in SECTIONS:
                p.error(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
            if name not in only:
                only.append(name)
    q = a.quick
    cfg = Config(
        quick=q,
        only=tuple(only) or SECTIONS,
        runs=_given(a.runs, 5 if q else 60),
        warmup=1 if q else 3,
        chunks=1 if q else 2,
        sandboxes=_given(a.sandboxes, 10 if q else 200),
        inflight=a.inflight,
        settle=0.5 if q else 2.0,
        sleep_timeout=900,
        calls=_given(a.calls, 10_000 if q else 100_000),
        flood_runs=_given(a.flood_runs, 2 if q else 5),
        output=a.output,
        tui_seconds=_given(a.tui_seconds, 15 if q else 60),
        tui_delay=4.0 if q else 8.0,
        tui_denials=a.tui_denials,
        tui_bytes=a.tui_bytes,
    )
    for name in ("runs", "sandboxes", "calls", "flood_runs", "inflight", "tui_seconds"):
        if getattr(cfg, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return cfg


def _netbench() -> Any:
    spec = importlib.util.spec_from_file_location("flue_netbench", Path(__file__).with_name(
        "netbench.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_network(cfg: Config) -> dict[str, Any]:
    try:
        result: dict[str, Any] = _netbench().run(cfg.quick, flue_cmd(), bench_env(), say)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        raise BenchError(str(err)) from err
    return result


def print_network(r: dict[str, Any]) -> None:
    _netbench().show(r, say)


# ------------------------------------------------------------------------------- learn

LEARN_C = r"""
/* flue benchmark (learn): K allowed calls learn mode observes, timed: getppid (reported and
 * continued), or newfstatat of an existing path (also read from memory and resolved inside). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    int stat_mode = argc > 1 && strcmp(argv[1], "stat") == 0;
    long k = argc > 2 ? atol(argv[2]) : 10000, bad = 0;
    struct stat st;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < k; i++) {
        long r = stat_mode ? fstatat(AT_FDCWD, "/usr/bin/env", &st, 0) : syscall(SYS_getppid);
        if (r < 0) bad++;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("{\"mode\": \"%s\", \"calls\": %ld, \"ns\": %.0f, \"unexpected\": %ld}\n",
           stat_mode ? "stat" : "getppid", k, ns, bad);
    return bad ? 3 : 0;
}
"""

LEARN_MODES = (("getppid", "a call reported and continued (getppid)"),
               ("stat", "a path lookup, read and resolved inside (newfstatat)"))


def _learn_wheel(dest: Path) -> Path:
    """A pure-Python wheel, zipped by hand (a wheel is a zip with a dist-info)."""
    import base64
    import hashlib
    import zipfile

    files = {"benchpkg/__init__.py": b"VALUE = 42\n",
             "benchpkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: benchpkg\n"
                                                b"Version: 1.0\n",
             "benchpkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                             b"Tag: py3-none-any\n"}
    rec = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rec.append(f"{name},sha256={digest},{len(data)}")
    files["benchpkg-1.0.dist-info/RECORD"] = ("\n".join(rec)
                                              + "\nbenchpkg-1.0.dist-info/RECORD,,\n").encode()
    path = dest / "benchpkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _learn_repo(dest: Path, files: int = 300, commits: int = 10) -> Path:
    repo = dest / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@e",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@e"}
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    for c in range(commits):
        for i in range(files // commits):
            d = repo / f"d{i % 10}"
            d.mkdir(exist_ok=True)
            (d / f"f{c}-{i}.txt").write_text(f"{c} {i}\n" * 20)
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", f"c{c}"], check=True, env=env)
    return repo


@contextlib.contextmanager
def learn_inputs() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="flue-bench-learn-"))
    try:
        tmp.chmod(0o755)
        src = tmp / "learn.c"
        src.write_text(LEARN_C)
        p = subprocess.run(["gcc", "-O2", "-o", str(tmp / "learncalls"), str(src)],
                           check=False, capture_output=True, text=True)
        if p.returncode != 0:
            raise BenchError(f"gcc could not compile the learn program:\n{p.stderr.strip()}")
        _learn_wheel(tmp)
        _learn_repo(tmp)
        for dirpath, _dirs, names in os.walk(tmp):
            os.chmod(dirpath, 0o755)
            for n in names:
                f = os.path.join(dirpath, n)
                os.chmod(f, 0o755 if os.access(f, os.X_OK) else 0o644)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


LEARN_JOBS = {
    # the source repository belongs to another uid: git would refuse it as "dubious"
    "git clone": ["sh", "-c", ("git config --global --add safe.directory '*' && git clone -q "
                               f"{BENCH_MOUNT}/repo /work/clone")],
    "pip install": ["sh", "-c", ("python3 -m venv --without-pip --system-site-packages "
                                 "/work/venv && /work/venv/bin/python -m pip install -q "
                                 "--no-index --no-deps --no-cache-dir "
                                 f"{BENCH_MOUNT}/benchpkg-1.0-py3-none-any.whl")],
}


def _timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, str]:
    fleet = Fleet()
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            t0 = time.monotonic()
            p = fleet.start(argv, "learn", stdout=out, stderr=err, env=env)
            wait_child(p)
            wall = time.monotonic() - t0
            out.seek(0)
            err.seek(0)
            if p.returncode != 0:
                raise BenchError(f"exit {p.returncode}: {' '.join(argv[-4:])}: "
                                 f"{err.read().decode()[-400:]}")
            return wall, out.read().decode()
    finally:
        fleet.close(grace=2)


def _flue(sub: str, inputs: Path, cmd: Sequence[str], out: Path) -> list[str]:
    argv = [*flue_cmd(), sub, "--bind", f"{inputs}:{BENCH_MOUNT}:ro"]
    if sub == "learn":
        argv += ["-o", str(out / "learned.toml")]
    return [*argv, "--", *cmd]


def run_learn(cfg: Config) -> dict[str, Any]:
    env = bench_env()
    k = max(1000, cfg.calls // 5)
    runs = cfg.flood_runs
    job_runs = 1 if cfg.quick else 3
    say(f"learn: {k} observed calls per run, {runs} runs per mode; {job_runs} runs of each job")
    out: dict[str, Any] = {"calls": k, "runs": runs, "modes": {}, "jobs": {}}
    with learn_inputs() as inputs:
        scratch = Path(tempfile.mkdtemp(prefix="flue-bench-out-"))
        try:
            for mode, label in LEARN_MODES:
                per: dict[str, list[float]] = {"run": [], "learn": []}
                for _ in range(runs):
                    for sub in ("run", "learn"):
                        argv = _flue(sub, inputs, [f"{BENCH_MOUNT}/learncalls", mode, str(k)],
                                     scratch)
                        _wall, stdout = _timed(argv, env)
                        res = parse_flood(stdout)
                        per[sub].append(float(res["ns"]) / float(res["calls"]) / 1000.0)
                plain, learned = summarize(per["run"]), summarize(per["learn"])
                out["modes"][mode] = {"label": label, "run_us": plain, "learn_us": learned,
                                      "overhead_us": learned["p50"] - plain["p50"]}
            for job, cmd in LEARN_JOBS.items():
                walls: dict[str, list[float]] = {"run": [], "learn": []}
                for _ in range(job_runs):
                    for sub in ("run", "learn"):
                        wall, _ = _timed(_flue(sub, inputs, cmd, scratch), env)
                        walls[sub].append(wall)
                plain_w, learn_w = summarize(walls["run"]), summarize(walls["learn"])
                out["jobs"][job] = {"run_s": plain_w, "learn_s": learn_w,
                                    "ratio": ratio(learn_w["p50"], plain_w["p50"])}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    out["nsjail_us_per_traced_call"] = list(NSJAIL_US_PER_TRACED_CALL)
    return out


def print_learn(r: dict[str, Any]) -> None:
    say()
    say(f"== learn mode: cost per observed syscall ({r['calls']} calls a run, {r['runs']} runs, "
        "µs per call) ==")
    say(f"{'':56}{'run':>9}{'learn':>9}{'extra':>9}")
    for mode, _label in LEARN_MODES:
        e = r["modes"][mode]
        say(f"{e['label']:56}{e['run_us']['p50']:9.2f}{e['learn_us']['p50']:9.2f}"
            f"{e['overhead_us']:9.2f}")
    lo, hi = r["nsjail_us_per_traced_call"]
    say(f"nsjail's published cost per traced call (its user-notification tracer): {lo:g}-{hi:g} µs")
    say()
    say("== learn mode: slowdown of whole jobs (wall seconds, p50) ==")
    say(f"{'':16}{'flue run':>10}{'flue learn':>12}{'ratio':>9}")
    for job, e in r["jobs"].items():
        say(f"{job:16}{e['run_s']['p50']:10.2f}{e['learn_s']['p50']:12.2f}"
            f"{fmt_ratio(e['ratio']):>9}")


RUNNERS: dict[str, tuple[Callable[[Config], dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "cold-start": (run_cold_start, print_cold_start),
    "memory": (run_memory, print_memory),
    "denials": (run_denials, print_denials),
    "supervisor": (run_supervisor, print_supervisor),
    "network": (run_network, print_network),
    "tui": (run_tui, print_tui),
    "learn": (run_learn, print_learn),
}


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    missing = missing_tools(cfg.only)
    if missing:
        for tool, hint in missing.items():
            sys.stderr.write(f"bench: `{tool}` is not installed; install it with: {hint}\n")
        sys.stderr.write("bench: nothing was measured (make bench installs nothing itself)\n")
        return 2
    RESULTS_DIR.mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "quick": cfg.quick,
        "sections": list(cfg.only),
        "results": {},
        "errors": {},
    }
    m = doc["machine"]
    say(f"flue benchmarks, {doc['date']}: kernel {m['kernel']}, {m['cpus']} CPUs, "
        f"{(m['mem_total_kib'] or 0) / 1048576:.1f} GiB"
        f"{', virtualized' if m['virtualized'] else ''}; {m['bwrap'] or 'no bwrap'}, "
        f"{m['hyperfine'] or 'no hyperfine'}; load average {m['loadavg'][0]:.2f}"
        + ("; QUICK (smoke check)" if cfg.quick else ""))
    failed = False
    with terminate_as_interrupt():
        try:
            for name in cfg.only:
                run, show = RUNNERS[name]
                t0 = time.monotonic()
                try:
                    res = run(cfg)
                except BenchError as err:
                    failed = True
                    doc["errors"][name] = str(err)
                    say(f"\n== {name}: FAILED ==\n{err}")
                    continue
                res["seconds"] = round(time.monotonic() - t0, 1)
                doc["results"][name] = res
                show(res)
        except KeyboardInterrupt:
            say("\nbench: interrupted; every process it started has been stopped")
            return 130
        finally:
            doc["loadavg_at_end"] = list(os.getloadavg())
            cfg.output.parent.mkdir(parents=True, exist_ok=True)
            cfg.output.write_text(json.dumps(doc, indent=2) + "\n")
    say(f"\nload average at the end: {doc['loadavg_at_end'][0]:.2f}; "
        f"results: {os.path.relpath(cfg.output, REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
