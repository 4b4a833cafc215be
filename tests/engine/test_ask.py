"""Ask mode at the engine level, on real sandboxes (root and unprivileged): a refused syscall
waits inside the kernel while the handler decides; allow-once, allow-always, deny and the
timeout do what they say; decisions are per syscall and register-valued argument (the
socket family), and can come from another thread."""

from __future__ import annotations

import json
import textwrap

import pytest
from helpers import observe as ob

pytestmark = pytest.mark.sandbox

EPERM = 1

INNER = textwrap.dedent("""
    import ctypes, json, os, socket, sys, time
    libc = ctypes.CDLL(None, use_errno=True)
    def kcmp():
        r = libc.syscall(int(sys.argv[1]), os.getpid(), os.getpid(), 0, 0, 0)
        return [r, ctypes.get_errno() if r < 0 else 0]
    def sock(fam):
        try:
            socket.socket(fam, socket.SOCK_SEQPACKET, 0).close()
            return 0
        except OSError as e:
            return e.errno
    out = {"k1": kcmp(), "k2": kcmp()}
    t = time.monotonic()
    out["k3"] = kcmp()
    out["k3_wait"] = time.monotonic() - t
    out["alg1"] = sock(38)     # AF_ALG: not in default's socket families
    out["alg2"] = sock(38)
    out["vsock"] = sock(40)    # AF_VSOCK: another family, another question
    print(json.dumps(out), flush=True)
""")

OUTER = textwrap.dedent("""
    import asyncio, json, sys, threading
    from engine.profile import load_profile
    from engine.sandbox import Sandbox
    from engine.sources.ask import Ask
    plan, inner, nr = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    decided = json.loads(sys.argv[4])
    asked = []
    def handler(req):
        asked.append([req.key, req.name, req.decoded, req.comm])
        todo = plan.get(req.key, [])
        d = todo.pop(0) if todo else "none"
        if d == "none":
            return  # never answered: the timeout decides
        if d.startswith("thread:"):
            threading.Timer(0.05, req.answer, args=(d.split(":", 1)[1],)).start()
            return
        req.answer(d)
    async def go():
        sb = Sandbox(["python3", "-c", inner, nr], load_profile("default"),
                     ask=Ask(handler, timeout=0.4, decided=decided), capture_output=True)
        events, out = [], []
        sb.subscribe(lambda e: events.append(e.to_dict()) if e.kind.startswith("ask") else None)
        sb.subscribe(lambda e: out.append(e.data)
                     if e.kind == "output" and e.stream == "stdout" else None)
        r = await sb.run()
        print(json.dumps({"exit": r.exit_code, "out": "".join(out), "events": events,
                          "asked": asked, "denials": r.denials}))
    asyncio.run(go())
""")


def _ask(flue, plan: dict[str, list[str]], decided: dict[str, str] | None = None) -> dict:
    h = flue.start_python(OUTER, json.dumps(plan), INNER, str(ob.nr("kcmp")),
                          json.dumps(decided or {}))
    r = h.finish(timeout=60)
    assert r.returncode == 0, r
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["exit"] == 0, res
    res["inner"] = json.loads(res["out"])
    return res


def test_allow_once_deny_and_timeout_each_do_what_they_say(flue):
    res = _ask(flue, {"kcmp": ["allow-once", "deny", "none"],
                      "socket AF_ALG": ["allow-always"], "socket AF_VSOCK": ["deny"]})
    inner = res["inner"]
    assert inner["k1"] == [0, 0], "allowed once: the kernel ran it (same fd: 0)"
    assert inner["k2"] == [-1, EPERM], "denied: the profile's errno"
    assert inner["k3"] == [-1, EPERM], "unanswered: denied at the timeout"
    assert inner["k3_wait"] >= 0.3, "the call waited for the answer"
    assert inner["alg1"] != EPERM and inner["alg2"] != EPERM, "allowed (the kernel answered)"
    assert inner["vsock"] == EPERM, "another family is another key"
    keys = [a[0] for a in res["asked"]]
    assert keys == ["kcmp", "kcmp", "kcmp", "socket AF_ALG", "socket AF_VSOCK"], keys
    answered = [(e["key"], e["decision"], e["by"]) for e in res["events"]
                if e["kind"] == "ask_answered"]
    assert answered == [("kcmp", "allow-once", "user"), ("kcmp", "deny", "user"),
                        ("kcmp", "deny", "timeout"), ("socket AF_ALG", "allow-always", "user"),
                        ("socket AF_VSOCK", "deny", "user")], answered
    requested = [e for e in res["events"] if e["kind"] == "ask_requested"]
    assert requested[0]["name"] == "kcmp" and requested[0]["timeout"] == 0.4
    assert requested[3]["decoded"]["family"] == "AF_ALG"
    # what was denied is a denial like any other; what was allowed is not
    assert res["denials"]["kcmp"]["count"] == 2
    assert res["denials"]["socket"]["count"] == 1


def test_an_answer_from_another_thread_and_decisions_known_in_advance(flue):
    res = _ask(flue, {"kcmp": ["thread:allow-always"]}, decided={"socket AF_ALG": "deny",
                                                              "socket AF_VSOCK": "allow"})
    inner = res["inner"]
    assert inner["k1"] == [0, 0] and inner["k2"] == [0, 0] and inner["k3"] == [0, 0]
    assert [a[0] for a in res["asked"]] == ["kcmp"], "always: asked once"
    assert inner["alg1"] == EPERM and inner["alg2"] == EPERM, "decided deny: no question"
    assert inner["vsock"] != EPERM, "decided allow: continued without a question"
    assert res["denials"]["socket"]["count"] == 2
