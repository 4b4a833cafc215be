"""Terminal injection: TIOCSTI (and TIOCLINUX) on the sandbox's stdin, a pty whose master the
test holds, must fail and push nothing into the caller's terminal -- also when the request
carries high bits the kernel ignores but a naive filter compares."""

from __future__ import annotations

import fcntl
import json
import platform
import termios
import textwrap

import pytest
from helpers.terminal import open_pty

pytestmark = pytest.mark.sandbox

SYS_IOCTL = {"x86_64": 16, "aarch64": 29}
TIOCSTI = 0x5412
PAYLOAD = "echo INJECTED\n"
REQUESTS = {
    "plain": TIOCSTI,
    "bit32": (1 << 32) | TIOCSTI,
    "high": 0xFFFFFFFF00000000 | TIOCSTI,
}

INJECT = textwrap.dedent("""
    import ctypes, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    nr, requests, payload = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    out = {}
    for name, req in requests.items():
        results = []
        for ch in payload.encode():
            c = ctypes.c_char(bytes([ch]))
            ctypes.set_errno(0)
            rc = libc.syscall(ctypes.c_long(nr), ctypes.c_long(0), ctypes.c_ulong(req),
                              ctypes.byref(c))
            results.append([rc, ctypes.get_errno()])
        out[name] = results
    out["isatty"] = os.isatty(0)
    print(json.dumps(out))
""")


def _syscall_nr() -> int:
    nr = SYS_IOCTL.get(platform.machine())
    assert nr is not None, f"add the ioctl syscall number for {platform.machine()}"
    return nr


def _host_can_inject(pty) -> bool:
    """The control: root on the host can inject into this pty (CAP_SYS_ADMIN), and the
    checks below see it. False when the kernel refuses TIOCSTI to everyone."""
    try:
        fcntl.ioctl(pty.slave, TIOCSTI, b"Q")
    except OSError:
        return False
    seen = pty.pending_input()
    termios.tcflush(pty.slave, termios.TCIFLUSH)
    pty.read_master(0.1)
    assert seen == 1, "the pending-input check does not see an injected byte"
    return True


def test_tiocsti_on_stdin_fails_and_injects_nothing(flue):
    pty = open_pty()
    try:
        _host_can_inject(pty)
        assert pty.pending_input() == 0
        r = flue.run(["python3", "-c", INJECT, str(_syscall_nr()), json.dumps(REQUESTS),
                      PAYLOAD], stdin=pty.slave)
        assert r.returncode == 0, r
        got = json.loads(r.stdout)
        assert got["isatty"] is True  # the pty really is the sandbox's stdin
        for name in REQUESTS:
            for rc, eno in got[name]:
                assert rc == -1, (name, got[name])
                assert eno != 0
        echoed = pty.read_master()
        assert b"INJECTED" not in echoed, echoed
        assert pty.pending_input() == 0, "bytes were injected into the caller's terminal"
        # the filter refused them (not only the kernel's own controlling-tty check)
        attempts = len(REQUESTS) * len(PAYLOAD.encode())
        denials = r.report["denials"]
        assert denials.get("ioctl", {}).get("count", 0) == attempts, denials
    finally:
        pty.close()


def test_tioclinux_is_refused(flue):
    pty = open_pty()
    try:
        code = ("import fcntl, sys\n"
                "try:\n    fcntl.ioctl(0, 0x541C, bytes([2]) + bytes(5))\n"
                "except OSError as e:\n    print(e.errno)\n")
        r = flue.run(["python3", "-c", code], stdin=pty.slave)
        assert r.returncode == 0, r
        assert r.stdout.strip() == str(1), r  # EPERM, the profile's answer
        assert r.report["denials"].get("ioctl", {}).get("count", 0) >= 1, r.report["denials"]
    finally:
        pty.close()


def test_ordinary_terminal_ioctls_still_work(flue):
    # the control: the ioctl filter lets the everyday terminal requests through
    pty = open_pty()
    try:
        code = ("import os, termios, shutil\n"
                "print(os.isatty(0), termios.tcgetattr(0)[3] & termios.ECHO != 0)\n")
        r = flue.run(["python3", "-c", code], stdin=pty.slave)
        assert r.returncode == 0, r
        assert r.stdout.split() == ["True", "True"], r
        assert "ioctl" not in r.report["denials"], r.report["denials"]
    finally:
        pty.close()
