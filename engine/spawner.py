"""Forking sandboxes safely.

Forking a multi-threaded process (a Textual app, a test runner with helper threads) and
running Python before exec is unsafe: another thread may hold a lock the child needs. So:

- ``InlineSpawner`` forks from the calling process. Used only when that process has a single
  thread (``flue run``): the fastest path, no extra process.
- ``ForkServer`` is a small single-threaded process started once (``python -m engine.spawner``)
  that forks each sandbox on request; plans go over a Unix socket, fds with SCM_RIGHTS.
  It dies with its parent (PR_SET_PDEATHSIG), so it never outlives the supervisor.

Both run the same code (the fork server's modules, pickle and subprocess, are imported only
when one is made: ``flue run`` never needs them): ``fork_keeper`` forks the sandbox's keeper process and, when flue runs
as root, writes its uid/gid maps (an unprivileged process writes its own).
"""

from __future__ import annotations

import _socket
import os
import sys

from engine._lean import recv_fds, send_fds, signal, socketpair
from engine.errors import LaunchError
from engine.plan import LaunchPlan

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol
else:
    Protocol = object


def fork_keeper(plan: LaunchPlan, ctrl_fd: int, stdio: tuple[int, int, int],
                pass_map: tuple[tuple[int, int], ...],
                after_fork: Callable[[int], None] | None = None) -> int:
    """Fork the keeper. ``after_fork(pid)`` runs once it exists and before its id maps are
    written (the supervisor makes the sandbox's cgroups there: the keeper waits for them
    before it joins and unshares, and removes them if the supervisor dies); if it raises,
    the keeper (told to give up by the caller) is reaped and the error goes on."""
    from engine import launch

    sync_child: tuple[int, int] | None = None
    fds: list[int] = []
    if plan.privileged_maps:
        a2p_r, a2p_w = os.pipe()
        p2a_r, p2a_w = os.pipe()
        sync_child = (a2p_w, p2a_r)
        fds = [a2p_r, p2a_w]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            launch.keeper_main(plan, ctrl_fd, stdio, pass_map, sync_child)
        finally:
            os._exit(125)
    if sync_child:
        os.close(sync_child[0])
        os.close(sync_child[1])
    if after_fork is not None:
        try:
            after_fork(pid)
        except BaseException:
            for fd in fds:
                os.close(fd)
            _reap_child(pid)
            raise
    if sync_child:
        a2p_r, p2a_w = fds
        try:
            if os.read(a2p_r, 1) == b"u":
                try:
                    launch.write_maps(pid, plan)
                    os.write(p2a_w, b"m")
                except OSError:
                    os.write(p2a_w, b"x")
        finally:
            os.close(a2p_r)
            os.close(p2a_w)
    return pid


def _reap_child(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def single_threaded() -> bool:
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        import threading

        return threading.active_count() == 1


class Spawner(Protocol):
    def spawn(self, plan: LaunchPlan, ctrl_fd: int, stdio: tuple[int, int, int],
              pass_map: tuple[tuple[int, int], ...],
              after_fork: Callable[[int], None] | None = None) -> int: ...

    def reap(self, pid: int) -> None: ...


class InlineSpawner:
    """Fork from this process. Only valid while it has a single thread."""

    def spawn(self, plan: LaunchPlan, ctrl_fd: int, stdio: tuple[int, int, int],
              pass_map: tuple[tuple[int, int], ...],
              after_fork: Callable[[int], None] | None = None) -> int:
        if not single_threaded():
            raise LaunchError("internal: inline spawn from a multi-threaded process",
                              fix="use the fork server (engine.spawner.ForkServer)")
        return fork_keeper(plan, ctrl_fd, stdio, pass_map, after_fork)

    def reap(self, pid: int) -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


class ForkServer:
    """A single-threaded helper process that forks sandboxes for a multi-threaded caller.

    It ends when its socket reaches EOF, i.e. when the caller's process is gone. When it is
    started from the main thread it also gets a parent-death signal; not from another
    thread: the kernel ties that signal to the creating thread, and the server would die
    with a short-lived worker. A server found dead is started again on the next spawn.
    """

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        import subprocess
        import threading

        parent, child = socketpair()
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "engine.spawner", str(child.fileno())]
        if threading.current_thread() is threading.main_thread():
            argv.append("--pdeathsig")
        self._proc = subprocess.Popen(
            argv, pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        child.close()
        self._sock = parent

    def spawn(self, plan: LaunchPlan, ctrl_fd: int, stdio: tuple[int, int, int],
              pass_map: tuple[tuple[int, int], ...],
              after_fork: Callable[[int], None] | None = None) -> int:
        import pickle

        fds = [ctrl_fd, *stdio, *(src for src, _ in pass_map)]
        msg = pickle.dumps((plan, tuple(dst for _, dst in pass_map)))
        with self._lock:
            if self._proc.poll() is not None:  # died (killed, or an old parent-death signal)
                self._sock.close()
                self._start()
            try:
                send_fds(self._sock, msg, fds)
                reply = self._sock.recv(65536)
            except OSError as err:
                reply = b""
                detail = str(err)
            else:
                detail = ""
        if not reply:
            raise LaunchError("the fork server died", detail=detail,
                              fix="see the error above; rerun")
        res = pickle.loads(reply)
        if "error" in res:
            raise LaunchError(f"fork server: {res['error']}")
        pid = int(res["pid"])
        if after_fork is not None:  # the server replied before writing the id maps
            after_fork(pid)  # (if this raises, the keeper gives up; the server reaps it)
        return pid

    def reap(self, pid: int) -> None:
        pass  # the fork server reaps its own children

    def close(self) -> None:
        import subprocess

        try:
            self._sock.close()
        finally:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _serve(fd: int, pdeathsig: bool = True) -> None:  # pragma: no cover - the server
    import pickle

    from engine._linux import libc

    if pdeathsig:
        libc.set_pdeathsig(signal.SIGKILL)
        if os.getppid() == 1:
            return
    sock = _socket.socket(fileno=fd)

    def reap(*_: object) -> None:
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            msg, fds = recv_fds(sock, 1 << 20, 64)
        except InterruptedError:
            continue
        if not msg:
            return
        replied = False
        try:
            plan, dsts = pickle.loads(msg)
            ctrl, stdio, srcs = fds[0], (fds[1], fds[2], fds[3]), fds[4:]

            def reply_now(pid: int) -> None:
                # before the id maps: a keeper that waits for its cgroups only asks for
                # them once the caller, told the pid, has made the groups
                nonlocal replied
                sock.send(pickle.dumps({"pid": pid}))
                replied = True

            pid = fork_keeper(plan, ctrl, stdio, tuple(zip(srcs, dsts)), reply_now)
            reply: dict[str, object] = {"pid": pid}
        except Exception as err:  # noqa: BLE001
            reply = {"error": str(err)}
        finally:
            for f in fds:
                try:
                    os.close(f)
                except OSError:
                    pass
        if not replied:
            sock.send(pickle.dumps(reply))


if __name__ == "__main__":  # pragma: no cover
    _serve(int(sys.argv[1]), "--pdeathsig" in sys.argv[2:])
