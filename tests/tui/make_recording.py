"""Record the demo agent's event stream from a real sandbox, for the snapshot tests.

    .venv/bin/python tests/tui/make_recording.py            # writes tests/tui/recordings/

    .venv/bin/python tests/tui/make_recording.py learn      # only learn.jsonl, fail.jsonl

Three recordings: ``demo.jsonl`` (the default profile) and ``demo-ptrace.jsonl`` (the default
profile with ptrace allowed, as the workbench's `a` would do), so the history snapshot has a
denial that went away; and ``net.jsonl``, ``programs/net_agent.py`` in allowlist mode reaching
one allowlisted name and two others (refused), all served by an HTTP server this script starts
on 127.0.0.1 and named through the resolver map (no name goes to the system resolver).
With ``learn``: ``learn.jsonl``, a learn run of ``programs/needs_ptrace.py`` on the default
profile (its ``LearnSummary`` feeds the Learn screen), and ``fail.jsonl``, the same program
under the default profile, where ptrace is refused and it fails (the Explain screen).
Timestamps are shifted to start at 1000.0 s so the files do not depend on this machine's
uptime.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from engine import events as ev
from engine.profile import load_profile
from engine.profile.edit import ProfileDocument
from flue_tui.runspec import RunSpec, prepare

HERE = Path(__file__).resolve().parent
OUT = HERE / "recordings"
NET_PORT = 18080  # the test server's port when free (the snapshots then stay the same)
NET_NAMES = ("pkgs.example.test", "tracker.example.test", "telemetry.example.test")


async def record(profile, path: Path, argv=("python3", "examples/demo_agent.py"),
                 hosts=None, learn: bool = False) -> None:
    from engine.sandbox import Sandbox

    spec = RunSpec(argv=tuple(argv), cwd=str(ROOT))
    prep = prepare(spec)
    got: list[ev.Event] = []
    sb = Sandbox(list(prep.argv), profile, binds=prep.binds, capture_output=True,
                 watch_files=True, name="flue-demo-1",
                 env=(("FLUE_SANDBOX_ID", "flue-demo-1"),), hosts=hosts, learn=learn)
    sb.subscribe(got.append)
    await sb.run()
    t0 = got[0].ts
    lines = []
    for e in got:
        changes = {"ts": round(e.ts - t0 + 1000.0, 6)}
        if isinstance(e, ev.SyscallDenied):
            changes["first_ts"] = round(e.first_ts - t0 + 1000.0, 6) if e.first_ts else 0.0
            changes["host_pid"] = 0
            changes["tid"] = 0
        if isinstance(e, ev.Started):
            changes["pid"] = 0
            src = getattr(e, "profile_source", "")
            if src and src.startswith(str(ROOT) + os.sep):  # no path of this machine
                changes["profile_source"] = os.path.relpath(src, ROOT)
        if isinstance(e, (ev.ProcessStarted, ev.ProcessExited)):
            changes["host_pid"] = 0
        if isinstance(e, ev.ProcessTable):
            changes["rows"] = tuple((r[0], 0, *r[2:]) for r in e.rows)
        lines.append(dataclasses.replace(e, **changes).to_json())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{path.relative_to(ROOT)}: {len(lines)} events")


def main() -> int:
    if os.geteuid() != 0 and not os.environ.get("FLUE_ALLOW_UNPRIVILEGED"):
        print("note: recording as an unprivileged user", file=sys.stderr)
    OUT.mkdir(exist_ok=True)
    if sys.argv[1:] == ["learn"]:
        record_learn()
        return 0
    asyncio.run(record(load_profile("default"), OUT / "demo.jsonl"))
    doc = ProfileDocument.open("default")
    doc.allow_syscall("ptrace")
    asyncio.run(record(doc.resolve(), OUT / "demo-ptrace.jsonl"))
    record_network()
    return 0


def record_learn() -> None:
    from engine.learn import learn_profile

    argv = ("python3", "tests/tui/programs/needs_ptrace.py")
    base = load_profile("default")
    asyncio.run(record(learn_profile(base), OUT / "learn.jsonl", argv, learn=True))
    asyncio.run(record(base, OUT / "fail.jsonl", argv))


def record_network() -> None:
    sys.path.insert(0, str(HERE))
    from conftest import WebServer

    try:
        web = WebServer(NET_PORT)
    except OSError:
        web = WebServer()
    try:
        doc = ProfileDocument.open("default")
        doc.allow_domain(f"{NET_NAMES[0]}:{web.port}")
        argv = ("python3", "tests/tui/programs/net_agent.py", str(web.port), *NET_NAMES)
        asyncio.run(record(doc.resolve(), OUT / "net.jsonl", argv,
                           hosts={n: "127.0.0.1" for n in NET_NAMES}))
    finally:
        web.close()


if __name__ == "__main__":
    sys.exit(main())
