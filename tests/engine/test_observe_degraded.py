"""Without seccomp user notification (kernels before 5.0, or a filter that cannot use it) the
sandbox falls back to the plain errno filter: denials still get their errno, and the stream
says they are not observable and why, in the words ``flue doctor`` prints for the same
machine. The kernel is simulated by making ``seccomp_action_available`` deny USER_NOTIF."""

from __future__ import annotations

import asyncio
import errno
import os
import textwrap

import pytest
from helpers import observe as ob

from engine import events as ev
from engine._linux import libc
from engine.profile import load_profile

# what the sandbox and flue doctor must both say
REASON_WORDS = ("seccomp user notification", "not supported", "errno", "not observable")


@pytest.fixture
def no_user_notif(monkeypatch: pytest.MonkeyPatch) -> None:
    real = libc.seccomp_action_available

    def available(action: int) -> bool:
        if action == libc.SECCOMP_RET_USER_NOTIF:
            return False
        return bool(real(action))

    monkeypatch.setattr(libc, "seccomp_action_available", available)


def _says_why(text: str) -> bool:
    return all(w in text for w in REASON_WORDS)


def test_the_sandbox_plans_the_errno_filter_and_marks_itself_degraded(no_user_notif):
    from engine.sandbox import Sandbox

    sb = Sandbox(["true"], load_profile("default"))
    plan = sb._plan()
    assert plan.seccomp_notify is False
    assert sb._filter is not None and sb._filter.notify is False
    notes = [d for d in sb.degraded if _says_why(d)]
    assert len(notes) == 1, sb.degraded
    assert "not observed" in sb._isolation(plan)["seccomp"]


def test_observing_still_plans_notification_when_the_kernel_has_it():
    if not libc.seccomp_action_available(libc.SECCOMP_RET_USER_NOTIF):
        pytest.skip("this kernel has no seccomp user notification")
    from engine.sandbox import Sandbox

    sb = Sandbox(["true"], load_profile("default"))
    plan = sb._plan()
    assert plan.seccomp_notify is True
    assert not any("notification" in d for d in sb.degraded), sb.degraded


def test_flue_doctor_prints_the_same_reason(no_user_notif, capsys: pytest.CaptureFixture[str]):
    from engine import cli, doctor
    from engine.sandbox import Sandbox

    check = next(c for c in doctor.seccomp_checks() if c.name == "seccomp user notification")
    assert check.status == "warn", check
    assert check.fix, "doctor says what to do about it"
    cli.main(["doctor"])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "] seccomp user notification:" in ln)
    assert line.startswith("[warn]"), line
    assert _says_why(line), line
    sb = Sandbox(["true"], load_profile("default"))
    sb._plan()
    note = next(d for d in sb.degraded if "notification" in d)
    assert _says_why(note) and _says_why(line), (note, line)


def test_a_real_sandbox_without_notification_answers_errnos_and_says_why(no_user_notif):
    """In this process (the monkeypatch must reach the supervisor), as root."""
    if os.geteuid() != 0:
        pytest.skip("runs a sandbox in this process, as root")
    from engine.sandbox import Sandbox

    code = textwrap.dedent("""
        import ctypes, sys
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.syscall(int(sys.argv[1]), 0, 0, 0, 0, 0, 0)
        print(r, ctypes.get_errno(), flush=True)
        import time
        time.sleep(0.3)  # long enough to be polled: no exec/exit reports without the listener
    """)
    seen: list[ev.Event] = []

    async def go():
        sb = Sandbox(["python3", "-c", code, str(ob.nr("keyctl"))], load_profile("default"),
                     capture_output=True, watch_files=True, sample_interval=0.05)
        sb.subscribe(seen.append)
        return await sb.run()

    result = asyncio.run(go())
    assert result.exit_code == 0, result
    out = "".join(e.data for e in ob.of(seen, ev.Output) if e.stream == "stdout")
    assert out.split() == ["-1", str(errno.EPERM)], out
    started = ob.one(seen, ev.Started)
    assert [d for d in started.degraded if _says_why(d)], started.degraded
    assert "not observed" in started.isolation["seccomp"], started.isolation
    assert not ob.of(seen, ev.SyscallDenied)
    assert result.denials == {}
    assert [d for d in result.degraded if _says_why(d)], result.degraded
    # the rest of the observation still works without the listener
    assert ob.of(seen, ev.ResourceSample)
    assert any(e.cmdline[:1] == ("python3",) for e in ob.of(seen, ev.ProcessStarted))
    assert isinstance(seen[-1], ev.Exited)
