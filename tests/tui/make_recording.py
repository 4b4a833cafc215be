"""Record the demo agent's event stream from a real sandbox, for the snapshot tests.

    .venv/bin/python tests/tui/make_recording.py            # writes tests/tui/recordings/

Two recordings: ``demo.jsonl`` (the default profile) and ``demo-ptrace.jsonl`` (the default
profile with ptrace allowed, as the workbench's `a` would do), so the history snapshot has a
denial that went away. Timestamps are shifted to start at 1000.0 s so the files do not depend
on this machine's uptime.
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

OUT = Path(__file__).resolve().parent / "recordings"


async def record(profile, path: Path) -> None:
    from engine.sandbox import Sandbox

    spec = RunSpec(argv=("python3", "examples/demo_agent.py"), cwd=str(ROOT))
    prep = prepare(spec)
    got: list[ev.Event] = []
    sb = Sandbox(list(prep.argv), profile, binds=prep.binds, capture_output=True,
                 watch_files=True, name="flue-demo-1",
                 env=(("FLUE_SANDBOX_ID", "flue-demo-1"),))
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
    asyncio.run(record(load_profile("default"), OUT / "demo.jsonl"))
    doc = ProfileDocument.open("default")
    doc.allow_syscall("ptrace")
    asyncio.run(record(doc.resolve(), OUT / "demo-ptrace.jsonl"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
