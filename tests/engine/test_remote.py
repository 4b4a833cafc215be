"""The engine host (engine/remote.py): sandboxes supervised in a helper process of flue's own,
as flue-tui runs them. A run's Result comes back whole, nothing a sandbox prints can forge a
frame, a host killed under a run fails that run, and a SIGKILL of the caller takes the host
and its sandboxes down with nothing left."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from helpers import host

from engine import events as ev
from engine.remote import (
    HEADER,
    KIND_JSON,
    KIND_PICKLE,
    MAX_PENDING_TEXT,
    FrameReader,
    ProtocolError,
    _Collector,
    frame,
)

CALLER = r'''
import asyncio, json, os, sys, threading
from engine.profile import load_profile
from engine.remote import EngineHost, RunHandlers

threading.Thread(target=threading.Event().wait, daemon=True).start()  # threaded, like a TUI
marker = sys.argv[1]
# what a frame of the host's would look like, printed by the sandbox to both streams, then a
# header that claims a huge frame, invalid UTF-8 and a NUL
forged = json.dumps({"t": "result", "run": 1, "result": {"exit_code": 0, "message": "forged"}})
hdr = len(forged).to_bytes(4, "big") + b"j"
octal = "".join("\\%03o" % b for b in hdr + forged.encode())
script = (f"printf '{octal}'; printf '{octal}' >&2; printf '\\377\\377\\377\\377j\\377\\000';"
          "echo; echo last line; exit 7")

async def main():
    h = EngineHost()
    events = []
    r = await h.run(1, {"argv": ["sh", "-c", script], "profile": load_profile("default"),
                        "name": f"flue-{os.getpid()}-hostile"}, RunHandlers(events.extend))
    out = {s: "".join(e.data for e in events if e.kind == "output" and e.stream == s)
           for s in ("stdout", "stderr")}
    t = await h.run(2, {"argv": ["sleep", "100"], "name": f"flue-{os.getpid()}-timeout",
                        "profile": load_profile("default", overrides={"limits": {"timeout": 1}})},
                    RunHandlers(events.extend))
    # a host that dies under a run: the run fails with why, and a new host serves the next
    lost = EngineHost()
    started = asyncio.get_running_loop().create_future()
    doomed = asyncio.ensure_future(lost.run(9, {
        "argv": ["sh", "-c", "echo up; sleep 1000 # " + marker], "profile": load_profile("default"),
        "name": f"flue-{os.getpid()}-lost"},
        RunHandlers(lambda b: started.done() or started.set_result(None))))
    await started
    os.kill(lost.pid, 9)
    try:
        await doomed
        died = "no error"
    except Exception as err:
        died = f"{type(err).__name__}: {err}"
    print(json.dumps({"host": h.pid, "result": r.to_dict(), "out": out, "died": died,
                      "kinds": [e.kind for e in events], "timeout": t.to_dict()}), flush=True)
    seen = asyncio.get_running_loop().create_future()

    def watch(batch):
        if any(e.kind == "output" and "ready" in e.data for e in batch) and not seen.done():
            seen.set_result(None)

    run = asyncio.ensure_future(h.run(3, {
        "argv": ["sh", "-c", "sleep 1000 & sleep 1000 & echo ready; wait # " + marker],
        "profile": load_profile("default"), "name": f"flue-{os.getpid()}-kept"},
        RunHandlers(watch)))
    await seen
    print("ready", flush=True)
    await run

asyncio.run(main())
'''


@pytest.mark.sandbox
def test_engine_host_result_hostile_output_and_sigkill(flue, marker: str) -> None:
    tmp = flue.tmpdir("tmp")  # the caller's (and the host's) TMPDIR: nothing may stay there
    before = host.mounts()
    h = flue.start_python(CALLER, marker, env={"TMPDIR": str(tmp)})
    first = json.loads(h.read_until("\n", timeout=60).splitlines()[0])
    r, out = first["result"], first["out"]
    # the Result came back whole, and the forged frame stayed the sandbox's output
    assert r["exit_code"] == 7 and r["signal"] is None and not r["timed_out"], r
    assert r["message"] != "forged" and r["isolation"]["namespaces"], r
    assert r["limits"] and isinstance(r["degraded"], list), r
    for stream in ("stdout", "stderr"):
        assert '{"t": "result", "run": 1' in out[stream], out
    assert out["stdout"].endswith("\nlast line\n") and "\ufffd" in out["stdout"], out
    assert first["kinds"][0] == "started" and first["kinds"].count("exited") == 2, first
    t = first["timeout"]
    assert t["timed_out"] and t["signal"] == signal.SIGKILL and t["exit_code"] == 137, t
    assert "timed out" in t["message"], t
    assert first["died"] == "LaunchError: the engine host exited (killed by signal 9)", first

    # a sandbox still running when the caller is SIGKILLed: nothing of it stays
    h.read_until("ready", timeout=60)
    tree = host.descendants(h.pid)
    assert first["host"] in tree, host.describe(list(tree))
    assert host.pids_with_marker(marker)
    cgroups = h.dlg.leftovers() if h.dlg else flue.s.root_leftovers(h.pid)
    assert cgroups, "the sandbox was not in a cgroup"
    os.kill(h.pid, signal.SIGKILL)
    h.proc.wait(timeout=10)
    survivors = host.wait_marker_gone(marker, timeout=15) + host.still_alive(tree)
    assert not survivors, host.describe(survivors)
    deadline = time.monotonic() + 10
    while any(os.path.exists(d) for d in cgroups) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [d for d in cgroups if os.path.exists(d)], "the sandbox's cgroup survived"
    assert not host.mounts() - before
    assert not list(tmp.iterdir()), list(tmp.iterdir())


def test_frames_split_anywhere_and_bad_headers_are_refused() -> None:
    data = frame({"t": "events", "s": "x\0\n%end"}) + frame({"t": "result"})
    r = FrameReader((KIND_JSON,))
    got = [m for i in range(len(data)) for m in r.feed(data[i:i + 1])]
    assert got == [{"t": "events", "s": "x\0\n%end"}, {"t": "result"}]
    with pytest.raises(ProtocolError):  # the UI never unpickles what the host sends
        FrameReader((KIND_JSON,)).feed(frame({"t": "run"}, KIND_PICKLE))
    with pytest.raises(ProtocolError):
        FrameReader((KIND_JSON,)).feed(HEADER.pack(1 << 31, KIND_JSON))


def test_collector_merges_output_keeps_order_and_stays_bounded() -> None:
    c = _Collector()
    c.add(ev.Started("s", 1.0))
    for i in range(100):
        c.add(ev.Output("s", 2.0 + i, stream="stdout", data=f"line {i}\n"))
        c.add(ev.SyscallDenied("s", 2.0 + i, name="keyctl"))
        c.add(ev.ProcessTable("s", 2.0 + i, rows=((1, 2, 0, "sh", 0.0, i),)))
    c.add(ev.Exited("s", 300.0))
    c.add(ev.Output("s", 301.0, stream="stdout", data="after\n"))
    got = [ev.Event.from_dict(d) for d in c.take()]
    kinds = [e.kind for e in got]
    assert kinds == ["started", "output", *["syscall_denied"] * 100, "exited", "output",
                     "process_table"], kinds
    assert got[1].data == "".join(f"line {i}\n" for i in range(100)) and got[1].ts == 2.0
    assert got[-1].rows[0][5] == 99  # the latest table only
    assert c.take() == []
    # a reader that does not read: the text held stays bounded, what was left out counted
    line = "x" * 99 + "\n"
    n = 3 * MAX_PENDING_TEXT // len(line) // 10 * 10
    c.add(ev.Output("s", 1.0, stream="stdout", data="partial"))
    for _ in range(n // 10):  # 10 lines each
        c.add(ev.Output("s", 1.0, stream="stdout", data=line * 10))
    assert c.text <= MAX_PENDING_TEXT
    (out,) = [ev.Event.from_dict(d) for d in c.take()]
    assert out.skipped_lines + out.data.count("\n") == n and out.data.startswith("x"), out
    # a display's last lines only (flue-tui keeps 5 000), the others counted
    c = _Collector(keep_lines=3)
    c.add(ev.Output("s", 1.0, stream="stderr", data="a\nb\nc"))
    c.add(ev.Output("s", 1.0, stream="stderr", data="d\ne\nf\ntail"))
    (out,) = [ev.Event.from_dict(d) for d in c.take()]
    assert (out.data, out.skipped_lines) == ("cd\ne\nf\ntail", 2), out
    c.add(ev.Output("s", 1.0, stream="stderr", data="g\n"))
    (out,) = [ev.Event.from_dict(d) for d in c.take()]
    assert (out.data, out.skipped_lines) == ("g\n", 0), out
