#!/usr/bin/env python3
"""A pretend AI-agent step, for flue-tui's demo (`make run`).

It does in about seven seconds what a coding agent does in a minute: plans, writes and deletes
files in its workspace, runs subprocesses, burns CPU, grows its memory, and tries a few things
a sandbox should refuse -- a raw network socket, a network connection, a mount, a ptrace, a
nested namespace. It prints every step and what it got back, and carries on when it is
refused, so every panel of the workbench has something to show in the first seconds.

Run inside flue it works in its workspace (the current directory, /work). Run anywhere else it
works in a fresh temporary directory and touches nothing of yours: the mount it tries is a
tmpfs on a directory of its own (undone at once if it succeeds), the connections go to this
machine's loopback only, the raw socket sends nothing.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

T0 = time.monotonic()
RESULTS: list[tuple[str, bool]] = []
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def say(msg: str) -> None:
    print(f"[agent {time.monotonic() - T0:5.2f}s] {msg}", flush=True)


def warn(msg: str) -> None:
    print(f"[agent {time.monotonic() - T0:5.2f}s] warning: {msg}", file=sys.stderr, flush=True)


def outcome(what: str, ok: bool, detail: str) -> None:
    RESULTS.append((what, ok))
    say(f"  {'ok     ' if ok else 'refused'} {what}: {detail}")


def err_text(e: int) -> str:
    return f"{errno.errorcode.get(e, e)} ({os.strerror(e)})"


def in_sandbox() -> bool:
    return "FLUE_SANDBOX_ID" in os.environ or (os.getpid() == 2 and os.getppid() == 1)


def workspace() -> str:
    if in_sandbox() and os.access(os.getcwd(), os.W_OK):
        return os.getcwd()
    return tempfile.mkdtemp(prefix="demo-agent-")


# --------------------------------------------------------------------------- the steps


def step_plan(ws: str) -> None:
    say(f"task: tidy the project notes and benchmark the parser (workspace {ws})")
    say(f"python {sys.version.split()[0]}, pid {os.getpid()}, uid {os.getuid()}, "
        f"host {socket.gethostname()}")


def step_files(ws: str) -> None:
    say("writing files")
    os.makedirs(os.path.join(ws, "notes"), exist_ok=True)
    os.makedirs(os.path.join(ws, "build"), exist_ok=True)
    with open(os.path.join(ws, "notes", "plan.md"), "w") as f:
        f.write("# plan\n1. read the notes\n2. benchmark\n3. report\n")
    time.sleep(0.25)
    with open(os.path.join(ws, "build", "scratch.tmp"), "wb") as f:
        f.write(os.urandom(64 << 10))
    with open(os.path.join(ws, "notes", "plan.md"), "a") as f:
        f.write("4. clean up\n")
    time.sleep(0.25)
    outcome("write notes/plan.md, build/scratch.tmp", True, "2 files")


def step_subprocesses(ws: str) -> list[subprocess.Popen[bytes]]:
    say("starting 2 benchmark workers and a shell")
    me = os.path.abspath(__file__)
    workers = [subprocess.Popen([sys.executable, me, "--worker", "3.0"], stdout=subprocess.PIPE)
               for _ in range(2)]
    shell = subprocess.run(["sh", "-c", "ls -1 notes build | wc -l; sleep 0.3"], cwd=ws,
                           capture_output=True, text=True, check=False)
    outcome("sh -c 'ls | wc -l'", shell.returncode == 0,
            f"exit {shell.returncode}, {shell.stdout.strip()} entries")
    return workers


def step_memory() -> list[bytearray]:
    say("loading the corpus into memory (growing to ~160 MiB)")
    chunks = []
    for _ in range(16):
        chunks.append(bytearray(10 << 20))  # touched: zero-filled pages are really allocated
        for i in range(0, len(chunks[-1]), 4096):
            chunks[-1][i] = 1
        time.sleep(0.1)
    outcome("allocate 160 MiB", True, f"{sum(map(len, chunks)) >> 20} MiB resident")
    return chunks


def step_network() -> None:
    say("checking the network")
    # a raw packet socket: what a sniffer or a spoofing tool opens first (sends nothing here)
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.close()
        outcome("socket(AF_PACKET, SOCK_RAW)", True, "opened (and closed)")
    except OSError as e:
        outcome("socket(AF_PACKET, SOCK_RAW)", False, err_text(e.errno or 0))
    # an ordinary TCP connection, to this machine's loopback only
    server = None
    try:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def answer() -> None:
            try:
                conn, _ = server.accept()
                conn.sendall(conn.recv(64).upper())
                conn.close()
            except OSError:
                pass  # nobody came: the connection below was refused

        server.settimeout(2.0)
        listener = threading.Thread(target=answer, daemon=True)
        listener.start()
    except OSError as e:
        port = 9  # discard: nothing listens there
        warn(f"cannot listen on 127.0.0.1: {err_text(e.errno or 0)}")
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(1.0)
    try:
        c.connect(("127.0.0.1", port))
        c.sendall(b"ping")
        outcome(f"connect 127.0.0.1:{port}", True, f"echo says {c.recv(64).decode()!r}")
    except OSError as e:
        outcome(f"connect 127.0.0.1:{port}", False, err_text(e.errno or errno.ETIMEDOUT))
    finally:
        c.close()
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            server.close()


def step_mount(ws: str) -> None:
    say("mounting a scratch tmpfs for the build cache")
    target = os.path.join(ws, "build", "cache")
    os.makedirs(target, exist_ok=True)
    last = 0
    for attempt in range(3):
        rc = libc.mount(b"tmpfs", target.encode(), b"tmpfs", 0, b"size=16m")
        last = ctypes.get_errno()
        if rc == 0:
            libc.umount2(target.encode(), 0)
            outcome("mount tmpfs build/cache", True, "mounted (and unmounted)")
            break
        if attempt < 2:
            warn(f"mount failed ({err_text(last)}), retrying")
            time.sleep(0.1)
    else:
        outcome("mount tmpfs build/cache", False, err_text(last) + " after 3 tries")
    os.rmdir(target)


def step_ptrace() -> None:
    say("attaching a debugger to a crashed worker (ptrace)")
    pid = os.fork()
    if pid == 0:  # the worker asks to be traced; its exit code is the errno it got
        rc = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
        os._exit(0 if rc == 0 else ctypes.get_errno() or 1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        outcome("ptrace(PTRACE_TRACEME)", True, "allowed: the worker can now be debugged")
    else:
        outcome("ptrace(PTRACE_TRACEME)", False, err_text(code))


def step_namespace() -> None:
    say("trying a nested sandbox (unshare a user namespace)")
    pid = os.fork()
    if pid == 0:
        rc = libc.syscall(272, 0x10000000, 0, 0, 0, 0, 0)  # unshare(CLONE_NEWUSER), x86_64
        os._exit(0 if rc == 0 else ctypes.get_errno() or 1)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    outcome("unshare(CLONE_NEWUSER)", code == 0, "allowed" if code == 0 else err_text(code))


def step_report(ws: str, workers: list[subprocess.Popen[bytes]],
                chunks: list[bytearray]) -> None:
    counts = []
    for w in workers:
        out, _ = w.communicate()
        counts.append(int(out.strip() or 0))
    outcome("benchmark", True, f"{sum(counts):,} iterations in 2 workers")
    chunks.clear()
    report = {"refused": [w for w, ok in RESULTS if not ok], "ok": [w for w, ok in RESULTS if ok]}
    with open(os.path.join(ws, "notes", "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    os.remove(os.path.join(ws, "build", "scratch.tmp"))
    os.rename(os.path.join(ws, "notes", "plan.md"), os.path.join(ws, "notes", "plan-done.md"))
    say("wrote notes/report.json, removed build/scratch.tmp")


def worker(seconds: float) -> int:
    """A benchmark worker: spin for ``seconds`` and print how many loops it made."""
    t, n = time.monotonic(), 0
    while time.monotonic() - t < seconds:
        n += 1
    print(n)
    return 0


def think(seconds: float) -> None:
    time.sleep(seconds)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker(float(sys.argv[2]))
    ws = workspace()
    step_plan(ws)
    think(0.6)
    step_files(ws)
    workers = step_subprocesses(ws)
    think(0.4)
    step_network()
    think(0.4)
    step_mount(ws)
    chunks = step_memory()
    think(0.4)
    step_ptrace()
    step_namespace()
    think(0.5)
    step_report(ws, workers, chunks)
    refused = sum(1 for _, ok in RESULTS if not ok)
    say(f"done in {time.monotonic() - T0:.1f}s: {len(RESULTS) - refused} ok, {refused} refused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
