"""What one run looks like, aggregated from its event stream.

Pure Python and cheap per event, so it always keeps up even when panels are hidden; widgets
read from it only when they are shown. Every collection is bounded.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from engine import events as ev

MAX_STREAM = 5000  # denial records kept for the stream view
MAX_SAMPLES = 720  # resource samples (3 minutes at 0.25 s)
MAX_FILE_LOG = 2000
MAX_OUTPUT = 5000  # output lines
MAX_NET = 2000  # network requests kept (beyond it the oldest finished ones go, 500 at a time)
MAX_DNS = 2000  # DNS questions kept for the stream view
MAX_RECORD = 20000  # events kept for ``RunModel.record()`` (relax, tighten, explain)
RECORD_SAMPLES = 3  # denial events kept per syscall; later ones add to the last one's count
# the kinds engine.runrecord.from_events reads (resource samples: only their peaks count)
RECORD_KINDS = frozenset({"started", "syscall_denied", "path_missing", "network_request",
                          "limit_hit", "output", "learn_summary", "exited"})

# which panels an event kind touches
PANEL_OF = {
    "syscall_denied": "denials",
    "resource_sample": "resources",
    "file_changed": "files",
    "workspace_manifest": "files",
    "process_started": "processes",
    "process_exited": "processes",
    "process_table": "processes",
    "output": "output",
    "network_request": "network",
    "dns_query": "network",
}


@lru_cache(maxsize=512)
def group_of(name: str) -> str:
    try:
        from engine.profile import group_of as _group_of

        return _group_of(name) or ""
    except Exception:  # noqa: BLE001 - display only: a missing groups file must not crash
        return ""


def denial_key(e: ev.SyscallDenied) -> str:
    """Rows of the aggregated table: one per syscall, and per family for socket()."""
    fam = e.decoded.get("family") if isinstance(e.decoded, dict) else None
    if e.name in ("socket", "socketpair") and fam:
        return f"{e.name}:{fam}"
    return e.name


def format_args(decoded: dict[str, Any] | None, args: Iterable[int] = ()) -> str:
    if decoded:
        return ", ".join(f"{k}={v}" for k, v in decoded.items())
    return ", ".join(hex(a) for a in list(args)[:4])


@dataclass
class DenialRow:
    key: str
    name: str
    group: str
    count: int = 0
    errno: int = 0
    errno_name: str = ""
    decoded: dict[str, Any] = field(default_factory=dict)
    args: tuple[int, ...] = ()
    pid: int = 0
    comm: str = ""
    exe: str = ""
    first_ts: float = 0.0
    last_ts: float = 0.0
    last: ev.SyscallDenied | None = None

    @property
    def family(self) -> str | None:
        fam = self.decoded.get("family")
        return str(fam) if fam and self.name in ("socket", "socketpair") else None


@dataclass
class NetRow:
    """One connection attempt (``NetworkRequest`` events share its ``id``: open, then closed
    or failed; a refused one comes once). ``id`` 0 with ``port`` 0 stands for a DNS question
    (a name, whatever the port) when the DNS tab's entry is the selection."""

    id: int
    host: str
    port: int
    state: str = "refused"  # open | closed | refused | failed
    allowed: bool = False
    rule: str = ""
    reason: str = ""
    via: str = ""
    address: str = ""
    sni: str = ""
    bytes_up: int = 0
    bytes_down: int = 0
    duration: float = 0.0
    ts: float = 0.0  # when it was first seen
    version: int = 0  # RunModel.net_version when it last changed
    last: ev.Event | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


def net_row_of_dns(e: ev.DnsQuery) -> NetRow:
    """A DNS question as a selection for the allow/deny keys (no port: the rule's default)."""
    return NetRow(0, e.name, 0, state="refused" if not e.allowed else "answered",
                  allowed=e.allowed, rule=e.rule, reason=f"DNS {e.qtype} {e.rcode}",
                  via="dns", ts=e.ts, last=e)


@dataclass
class FileState:
    path: str
    change: str  # added | modified | deleted | present (from the manifest)
    size: int | None = None
    is_dir: bool = False
    ts: float = 0.0


@dataclass
class ProcRow:
    pid: int
    ppid: int
    command: str
    cpu: float | None = None
    rss: int | None = None
    alive: bool = True
    exit_code: int | None = None
    host_pid: int = 0


class OutputLine(NamedTuple):
    """A tuple, not a dataclass: a tuple of strings and a float stops being tracked by the
    garbage collector at the first collection that sees it, so the thousands of lines a
    flood keeps (up to MAX_OUTPUT) are not scanned again by every older-generation
    collection (each a pause of the UI: 10-20 ms at the 5000-line bound)."""

    stream: str
    text: str
    ts: float


class OutputBuffer:
    """Lines of stdout/stderr; a partial last line per stream until its newline arrives."""

    def __init__(self, maxlen: int = MAX_OUTPUT) -> None:
        self.lines: deque[OutputLine] = deque(maxlen=maxlen)
        self.partial: dict[str, OutputLine] = {}
        self.total = 0
        self.bytes = 0

    def add(self, stream: str, data: str, ts: float, skipped: int = 0) -> int:
        """Returns how many complete lines were added (``skipped``: complete lines before
        ``data`` that were left out, counted only; they ended the partial line)."""
        self.bytes += len(data)
        head = self.partial.pop(stream, None)
        self.total += skipped
        if head is not None and not skipped:
            data = head.text + data
        parts = data.split("\n")
        done = len(parts) - 1
        self.total += done
        # a flood's chunk (the engine host merges a stream's output between two batches):
        # only the lines the bounded buffer keeps become lines
        keep = parts[max(0, done - (self.lines.maxlen or done)):done]
        self.lines.extend([OutputLine(stream, line, ts) for line in keep])
        if parts[-1]:
            self.partial[stream] = OutputLine(stream, parts[-1], ts)
        return len(parts) - 1

    def flush(self) -> None:
        for stream in list(self.partial):
            line = self.partial.pop(stream)
            self.lines.append(line)
            self.total += 1


@dataclass
class Marker:
    ts: float
    kind: str  # oom | memory-limit | pids-limit | cpu-throttled
    detail: str = ""


class RunModel:
    """Everything the monitor shows about one run."""

    def __init__(self, number: int = 1, argv: tuple[str, ...] = (), profile: str = "") -> None:
        self.number = number
        self.argv = argv
        self.profile = profile
        self.changes: list[str] = []  # profile edits made since the previous run
        self.state = "starting"  # starting | running | exited | failed
        self.sandbox_id = ""
        self.started: ev.Started | None = None
        self.exited: ev.Exited | None = None
        self.error = ""
        self.replaced = False  # killed by r (or a new run) so that the next run could start
        self.t0: float | None = None
        self.last_ts: float | None = None
        self.denials: dict[str, DenialRow] = {}
        self.denial_stream: deque[ev.SyscallDenied] = deque(maxlen=MAX_STREAM)
        self.denial_total = 0  # calls refused (coalesced records count for many)
        self.denial_records = 0  # records received
        self.file_events = 0
        self.samples: deque[ev.ResourceSample] = deque(maxlen=MAX_SAMPLES)
        self.markers: list[Marker] = []
        self._hits: dict[str, int] = {}
        self.files: dict[str, FileState] = {}
        self.file_log: deque[ev.FileChanged] = deque(maxlen=MAX_FILE_LOG)
        self.manifest: ev.WorkspaceManifest | None = None
        self.processes: dict[int, ProcRow] = {}
        self.output = OutputBuffer()
        self.notices: list[ev.Notice] = []
        self.net: dict[int, NetRow] = {}  # by request id, in the order first seen
        self.net_version = 0  # bumped by every network request event
        self.net_requests = 0  # connection attempts seen (refused ones included)
        self.net_counts = {"open": 0, "closed": 0, "refused": 0, "failed": 0}  # by last state
        self.net_bytes = [0, 0]  # up, down (finished requests)
        self.net_refusals: dict[str, int] = {}  # "host:port" / "name (dns)" -> times refused
        self.dns: deque[ev.DnsQuery] = deque(maxlen=MAX_DNS)
        self.dns_total = 0
        # learn mode and the Explain screen (flue_tui/screens/learn.py, screens/explain.py)
        self.learn = False  # a learn run: observed, refused only what learning never allows
        self.profile_used: Any = None  # the resolved Profile the run was started with
        self.learn_summary: dict[str, Any] | None = None  # LearnSummary.observed
        self.profile_ref = ""  # the profile's name or file as the run was started with it
        # what ``record()`` reads: the events engine.runrecord needs, bounded (a denial
        # flood keeps a few events per syscall, the rest counted into the last one)
        self.record_events: list[ev.Event] = []
        self._record_denials: dict[str, list[int]] = {}  # denial key -> indexes kept
        self._record_peak: ev.ResourceSample | None = None

    # --- applying events ---------------------------------------------------------------

    def apply(self, events: Iterable[ev.Event]) -> set[str]:
        """Fold events in; returns the panels (and "status") that changed."""
        changed: set[str] = set()
        for e in events:
            self.last_ts = e.ts
            if self.t0 is None:
                self.t0 = e.ts
            handler = getattr(self, f"_on_{e.kind}", None)
            if handler is not None:
                handler(e)
            if e.kind in RECORD_KINDS:
                self._keep(e)
            elif isinstance(e, ev.ResourceSample):
                self._record_peak = e
            changed.add(PANEL_OF.get(e.kind, "status"))
        if changed & {"denials", "resources", "network"}:
            changed.add("status")
        return changed

    def _keep(self, e: ev.Event) -> None:
        if isinstance(e, ev.Output) and e.stream != "stderr":
            return
        if isinstance(e, ev.SyscallDenied):
            kept = self._record_denials.setdefault(denial_key(e), [])
            if len(kept) >= RECORD_SAMPLES:
                i = kept[-1]
                last = self.record_events[i]
                assert isinstance(last, ev.SyscallDenied)
                self.record_events[i] = dataclasses.replace(
                    last, count=max(last.count, 1) + max(e.count, 1), ts=e.ts)
                return
            kept.append(len(self.record_events))
        elif len(self.record_events) >= MAX_RECORD and not isinstance(
                e, (ev.Exited, ev.LearnSummary, ev.Started)):
            return
        self.record_events.append(e)

    def record(self) -> Any:
        """This run as an ``engine.runrecord.RunRecord`` (what relax, tighten and explain
        read), from the events kept; ``RunRecordError`` when it holds none yet."""
        from engine import runrecord

        events = list(self.record_events)
        peak = self._record_peak
        if peak is None and self.samples:
            peak = self.samples[-1]
        if peak is not None:
            events.append(peak)
        rec = runrecord.from_events(events, source=f"run #{self.number}")
        if self.profile_ref and not rec.profile_source:
            rec.profile_source = self.profile_ref
        return rec

    def _on_started(self, e: ev.Started) -> None:
        self.started = e
        self.sandbox_id = e.sandbox
        self.t0 = e.ts
        self.state = "running"
        if not self.argv:
            self.argv = tuple(e.argv)
        if not self.profile:
            self.profile = e.profile

    def _on_exited(self, e: ev.Exited) -> None:
        self.exited = e
        self.state = "exited"
        self.output.flush()
        for p in self.processes.values():
            p.alive = False

    def _on_notice(self, e: ev.Notice) -> None:
        self.notices.append(e)
        del self.notices[:-50]

    def _on_syscall_denied(self, e: ev.SyscallDenied) -> None:
        key = denial_key(e)
        row = self.denials.get(key)
        if row is None:
            row = self.denials[key] = DenialRow(key=key, name=e.name, group=group_of(e.name),
                                                first_ts=e.first_ts or e.ts)
        row.count += max(e.count, 1)
        row.errno, row.errno_name = e.errno, e.errno_name
        row.decoded = dict(e.decoded or {})
        row.args = tuple(e.args)
        row.pid, row.comm, row.exe = e.pid, e.comm, e.exe
        row.last_ts = e.ts
        row.last = e
        self.denial_stream.append(e)
        self.denial_records += 1
        self.denial_total += max(e.count, 1)

    def _on_resource_sample(self, e: ev.ResourceSample) -> None:
        self.samples.append(e)
        for attr, kind, what in (("oom_kills", "oom", "OOM kill"),
                                 ("memory_limit_hits", "memory-limit", "memory limit hit"),
                                 ("pids_limit_hits", "pids-limit", "pids limit hit")):
            n = getattr(e, attr) or 0
            if n > self._hits.get(attr, 0):
                self.markers.append(Marker(e.ts, kind, f"{what} ×{n - self._hits.get(attr, 0)}"))
                self._hits[attr] = n
        del self.markers[:-200]

    def _on_file_changed(self, e: ev.FileChanged) -> None:
        prev = self.files.get(e.path)
        change = e.change
        if prev is not None and prev.change == "added" and change == "modified":
            change = "added"  # still new to this run
        self.files[e.path] = FileState(e.path, change, e.size, e.is_dir, e.ts)
        self.file_log.append(e)
        self.file_events += 1
        if len(self.files) > 20000:  # bounded: forget the oldest deletions first
            for path in [p for p, f in self.files.items() if f.change == "deleted"][:5000]:
                del self.files[path]

    def _on_workspace_manifest(self, e: ev.WorkspaceManifest) -> None:
        self.manifest = e
        for entry in e.entries:
            path, size, mode = entry[0], entry[1], entry[2] if len(entry) > 2 else ""
            if path not in self.files:
                self.files[path] = FileState(path, "present", size,
                                             str(mode).startswith("d"), e.ts)

    def _on_process_started(self, e: ev.ProcessStarted) -> None:
        self.processes[e.pid] = ProcRow(e.pid, e.ppid, " ".join(e.cmdline), host_pid=e.host_pid)
        self._bound_processes()

    def _on_process_exited(self, e: ev.ProcessExited) -> None:
        row = self.processes.get(e.pid)
        if row is None:
            row = self.processes[e.pid] = ProcRow(e.pid, 0, " ".join(e.cmdline),
                                                  host_pid=e.host_pid)
        row.alive = False
        row.exit_code = e.exit_code
        row.cpu = None

    def _on_process_table(self, e: ev.ProcessTable) -> None:
        seen = set()
        for r in e.rows:
            pid, host_pid, ppid, cmd = int(r[0]), int(r[1]), int(r[2]), str(r[3])
            cpu = r[4] if len(r) > 4 else None
            rss = r[5] if len(r) > 5 else None
            seen.add(pid)
            row = self.processes.get(pid)
            if row is None:
                row = self.processes[pid] = ProcRow(pid, ppid, cmd, host_pid=host_pid)
            row.ppid, row.command, row.cpu, row.rss, row.alive = ppid, cmd, cpu, rss, True
            row.exit_code = None
        for pid, row in self.processes.items():
            if pid not in seen and row.alive:
                row.alive = False
                row.cpu = None
        self._bound_processes()

    def _bound_processes(self) -> None:
        if len(self.processes) > 2000:
            for pid in [p for p, r in self.processes.items() if not r.alive][:500]:
                del self.processes[pid]

    def _on_output(self, e: ev.Output) -> None:
        self.output.add(e.stream, e.data, e.ts, e.skipped_lines)

    def _on_network_request(self, e: ev.NetworkRequest) -> None:
        self.net_version += 1
        row = self.net.get(e.id)
        if row is None:
            row = self.net[e.id] = NetRow(e.id, e.host, e.port, ts=e.ts)
            self.net_requests += 1
        else:
            self.net_counts[row.state] = self.net_counts.get(row.state, 1) - 1
        row.state, row.allowed, row.rule, row.reason = e.state, e.allowed, e.rule, e.reason
        row.via, row.address, row.sni = e.via, e.address, e.sni
        row.bytes_up, row.bytes_down, row.duration = e.bytes_up, e.bytes_down, e.duration
        row.version, row.last = self.net_version, e
        self.net_counts[e.state] = self.net_counts.get(e.state, 0) + 1
        if e.state in ("closed", "failed"):
            self.net_bytes[0] += e.bytes_up
            self.net_bytes[1] += e.bytes_down
        if e.state == "refused":
            key = f"{e.host}:{e.port}"
            self.net_refusals[key] = self.net_refusals.get(key, 0) + 1
        if len(self.net) > MAX_NET + 500:  # bounded: the oldest finished requests go
            done = [i for i, r in self.net.items() if r.state != "open"][:500]
            for i in done:
                del self.net[i]

    def _on_learn_summary(self, e: ev.LearnSummary) -> None:
        self.learn_summary = dict(e.observed)

    def _on_dns_query(self, e: ev.DnsQuery) -> None:
        self.dns.append(e)
        self.dns_total += 1
        if not e.allowed:
            key = f"{e.name} (dns)"
            self.net_refusals[key] = self.net_refusals.get(key, 0) + 1

    # --- derived values ----------------------------------------------------------------

    def elapsed(self, now: float) -> float:
        if self.exited is not None:
            return self.exited.wall_seconds
        if self.t0 is None:
            return 0.0
        return max(0.0, now - self.t0)

    @property
    def network_mode(self) -> str:
        """The run's network mode as the sandbox reported it ("" before it started)."""
        iso = (self.started.isolation if self.started else None) or {}
        return str(iso.get("network", "")).split(" ", 1)[0]

    @property
    def network_rules(self) -> int | None:
        """How many allowlist rules the run had (None outside allowlist mode)."""
        import re

        iso = (self.started.isolation if self.started else None) or {}
        m = re.match(r"allowlist \((\d+) rule", str(iso.get("network", "")))
        return int(m.group(1)) if m else None

    @property
    def net_refused(self) -> int:
        """Connections and DNS questions refused."""
        return sum(self.net_refusals.values())

    def latest_sample(self) -> ev.ResourceSample | None:
        return self.samples[-1] if self.samples else None

    def process_tree(self) -> list[tuple[int, ProcRow]]:
        """(depth, row) in tree order; running processes first within siblings."""
        kids: dict[int, list[ProcRow]] = {}
        for row in self.processes.values():
            kids.setdefault(row.ppid, []).append(row)
        out: list[tuple[int, ProcRow]] = []
        roots = [r for r in self.processes.values() if r.ppid not in self.processes]
        seen: set[int] = set()

        def walk(row: ProcRow, depth: int) -> None:
            if row.pid in seen:
                return
            seen.add(row.pid)
            out.append((depth, row))
            for child in sorted(kids.get(row.pid, ()), key=lambda r: (not r.alive, r.pid)):
                walk(child, depth + 1)

        for r in sorted(roots, key=lambda r: (not r.alive, r.pid)):
            walk(r, 0)
        return out

    def status_word(self) -> str:
        if self.state != "exited" or self.exited is None:
            return "replaced" if self.replaced else self.state
        if self.replaced:
            return "replaced"  # killed to start the next run
        x = self.exited
        if x.oom_killed:
            return "OOM-killed"
        if x.timed_out:
            return "timed out"
        if x.signal:
            return "killed"
        return f"exited {x.exit_code}"


@dataclass(frozen=True)
class RunDiff:
    gone: tuple[str, ...]  # denial rows of the previous run that did not come back
    new: tuple[str, ...]  # rows this run has that the previous did not
    kept: tuple[str, ...]
    # the same for network refusals ("host:port", "name (dns)")
    net_gone: tuple[str, ...] = ()
    net_new: tuple[str, ...] = ()
    net_kept: tuple[str, ...] = ()


def diff_runs(before: RunModel, after: RunModel) -> RunDiff:
    a, b = set(before.denials), set(after.denials)
    na, nb = set(before.net_refusals), set(after.net_refusals)
    return RunDiff(tuple(sorted(a - b)), tuple(sorted(b - a)), tuple(sorted(a & b)),
                   tuple(sorted(na - nb)), tuple(sorted(nb - na)), tuple(sorted(na & nb)))


def short_path(path: str, root: str = "/work") -> str:
    if path == root:
        return "."
    if path.startswith(root + "/"):
        return path[len(root) + 1:]
    return path


def parent_dirs(path: str) -> list[str]:
    parts = []
    d = os.path.dirname(path)
    while d and d not in ("/", "."):
        parts.append(d)
        d = os.path.dirname(d)
    return list(reversed(parts))


def fresh(items: Any, total: int, seen: int) -> list[Any]:
    """The entries of a bounded deque that arrived after ``seen`` of ``total`` ever added."""
    new = total - seen
    if new <= 0:
        return []
    items = list(items)
    return items[-new:] if new < len(items) else items
