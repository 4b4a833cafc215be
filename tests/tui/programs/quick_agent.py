"""The demo agent's refusals in about a second, for the unprivileged tmux tests.

    python3 quick_agent.py

``examples/demo_agent.py`` spends ~5 s on workers, files and pauses; the tests that drive the
workbench as the unprivileged uid need only what the person acts on: the same refused calls
(a raw packet socket, a mount, a ptrace, a nested user namespace), their lines in the output
(ptrace's "allowed: the worker can now be debugged" once it is allowed), some memory held long
enough for the resource panel to sample it, and the demo's closing "done in" line. Like the
demo it touches nothing of the caller's outside a sandbox: the mount is tried on a fresh
directory of its own (and undone at once if it succeeds).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
import tempfile
import time

T0 = time.monotonic()
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def say(msg: str) -> None:
    print(f"[agent {time.monotonic() - T0:5.2f}s] {msg}", flush=True)


def err_text(e: int) -> str:
    return f"{errno.errorcode.get(e, e)} ({os.strerror(e)})"


def in_child(call) -> int:  # type: ignore[no-untyped-def]
    """Run ``call`` in a forked child; its errno (0: allowed)."""
    pid = os.fork()
    if pid == 0:
        rc = call()
        os._exit(0 if rc == 0 else ctypes.get_errno() or 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> int:
    refused = 0
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        say("  ok      socket(AF_PACKET, SOCK_RAW): opened (and closed)")
    except OSError as e:
        refused += 1
        say(f"  refused socket(AF_PACKET, SOCK_RAW): {err_text(e.errno or 0)}")
    target = tempfile.mkdtemp(prefix="quick-agent-")  # a directory of its own, never /tmp
    rc = libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, b"size=1m")
    got = ctypes.get_errno()
    if rc == 0:
        libc.umount2(target.encode(), 0)
        say("  ok      mount tmpfs: mounted (and unmounted)")
    else:
        refused += 1
        say(f"  refused mount tmpfs: {err_text(got)}")
    os.rmdir(target)
    code = in_child(lambda: libc.ptrace(0, 0, None, None))  # PTRACE_TRACEME
    if code == 0:  # unprefixed: the line's start stays visible beside the workbench's toasts
        print("allowed: the worker can now be debugged (ptrace)", flush=True)
    else:
        refused += 1
        say(f"  refused ptrace(PTRACE_TRACEME): {err_text(code)}")
    code = in_child(lambda: libc.syscall(272, 0x10000000, 0, 0, 0, 0, 0))  # unshare(NEWUSER)
    refused += code != 0
    say(f"  {'ok     ' if code == 0 else 'refused'} unshare(CLONE_NEWUSER): "
        f"{'allowed' if code == 0 else err_text(code)}")
    held = bytearray(32 << 20)  # touched, so it is resident while the panel samples
    for i in range(0, len(held), 4096):
        held[i] = 1
    time.sleep(1.0)
    say(f"done in {time.monotonic() - T0:.1f}s: {4 - refused} ok, {refused} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
