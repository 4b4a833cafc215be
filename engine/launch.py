"""The sandbox's own processes, from fork to exec.

Three processes make a sandbox:

- **A, the keeper** (forked by the spawner, before the sandbox's cgroups exist: the
  supervisor makes them once A does and sends their paths, so that whenever the supervisor
  is killed someone is there to remove them): joins the cgroup, unshares the user, PID, network,
  IPC, UTS and cgroup namespaces, gets its id maps, forks B, then waits. It stays on the
  host's mount namespace so it can remove the cgroup when the supervisor cannot: if the
  supervisor vanishes (its control socket reaches EOF, even after a SIGKILL) it kills B, steps
  back into the cgroup it came from and removes the sandbox's. After a normal end ("done")
  it just exits and the supervisor removes the group. Unsharing the user namespace costs it its
  capabilities on the host: when removing the group needs them (root below a 0555
  hierarchy root), A forks beforehand a small helper, outside the group, that removes it
  once A is gone.
- **B, PID 1 inside**: unshares the mount namespace, builds the tmpfs root, pivots into it,
  forks C, hands C's seccomp listener to the supervisor, then reaps orphans and forwards
  signals; when C exits it kills whatever is left and reports C's status.
- **C, the main process**: new session, drops every capability, sets no_new_privs, closes
  stray fds, loads the seccomp filter and execs the command.

Everything here runs between fork and exec in a single-threaded process; errors are reported
as one JSON message on the control socket and the process exits with 125.
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import gc
import os
import stat
import struct
import sys
import termios
import time

from engine._lean import dumps, loads, send_fds, signal
from engine._linux import libc
from engine.plan import STAGE, LaunchPlan, MountOp

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import NoReturn

FORWARDED_SIGNALS = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
    signal.SIGUSR2, signal.SIGWINCH,
)


# forwarded signals that ask the process to end: a stopped main process gets SIGCONT after
# them, or they would stay pending and flue run would never end
_ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class _Stage(Exception):
    def __init__(self, stage: str, err: BaseException) -> None:
        super().__init__(stage)
        self.stage = stage
        self.err = err


def _send(ctrl: int, msg: dict[str, object], fds: list[int] | None = None) -> None:
    data = dumps(msg).encode()
    try:
        if fds:
            sock = _socket.socket(fileno=os.dup(ctrl))
            try:
                send_fds(sock, data, fds)
            finally:
                sock.close()
        else:
            os.write(ctrl, data)
    except OSError:
        pass  # the supervisor is gone; the keeper will notice and clean up


def _fail(ctrl: int, stage: str, err: BaseException) -> NoReturn:
    eno = getattr(err, "errno", None) or 0
    msg = str(err)
    if isinstance(err, OSError) and err.strerror:  # not "[Errno 40] ...": the text says it
        msg = err.strerror + (f": {err.filename}" if err.filename else "")
    _send(ctrl, {"t": "error", "stage": stage, "errno": eno, "msg": msg})
    os._exit(125)


# --- A: the keeper -------------------------------------------------------------------------

def keeper_main(plan: LaunchPlan, ctrl: int, stdio: tuple[int, int, int],
                pass_map: tuple[tuple[int, int], ...], map_sync: tuple[int, int] | None) -> NoReturn:
    """Entry point in the freshly forked child. Never returns."""
    # no cyclic garbage collection in the sandbox's own processes (B and C inherit this): a
    # collection writes to every object's header, which would copy each page of the heap
    # shared with the supervisor (megabytes per idle sandbox); they allocate next to nothing
    gc.disable()
    # a fork server's SIGCHLD handler reaps any child (waitpid(-1)): inherited, it could take
    # PID 1's exit status before _keeper_wait asks for it, and report 0
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        _keeper(plan, ctrl, stdio, pass_map, map_sync)
    except _Stage as st:
        _fail(ctrl, st.stage, st.err)
    except BaseException as err:  # noqa: BLE001 - never unwind into the parent's code
        _fail(ctrl, "keeper", err)
    os._exit(125)


def _arrange_fds(ctrl: int, stdio: tuple[int, int, int], pass_map: tuple[tuple[int, int], ...],
                 keep: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Put stdio at 0-2 and passed fds at their numbers; close everything else.
    Returns the new ctrl fd and the new numbers of ``keep``."""
    base = 1000
    plan: list[tuple[int, int]] = [(stdio[0], 0), (stdio[1], 1), (stdio[2], 2)]
    plan += [(src, dst) for src, dst in pass_map]
    moved: dict[int, int] = {}
    wanted = [ctrl, *keep] + [src for src, _ in plan]
    for i, fd in enumerate(dict.fromkeys(wanted)):
        moved[fd] = os.dup2(fd, base + i, inheritable=False) if fd >= 0 else -1
    libc.close_range(0, base - 1)
    for src, dst in plan:
        if src >= 0:
            os.dup2(moved[src], dst, inheritable=True)
    new_ctrl = os.dup2(moved[ctrl], base - 1, inheritable=False)
    new_keep = tuple(os.dup2(moved[k], base - 2 - i, inheritable=False) for i, k in enumerate(keep))
    libc.close_range(base, 0xFFFFFFFF)
    return new_ctrl, new_keep


def _keeper(plan: LaunchPlan, ctrl: int, stdio: tuple[int, int, int],
            pass_map: tuple[tuple[int, int], ...], map_sync: tuple[int, int] | None) -> None:
    keep: tuple[int, ...] = map_sync if map_sync else ()
    try:
        ctrl, keep = _arrange_fds(ctrl, stdio, pass_map, keep)
        os.setsid()
    except OSError as err:
        raise _Stage("fds", err) from err
    # (the two steps below need only the groups' planned paths, so they run while the
    # supervisor makes the groups, on the other CPU: off a start's critical path)
    dirs = plan.cgroup_candidates if plan.cgroup_wait else plan.cgroup_dirs
    # where we come from in each hierarchy, opened now (before joining and unsharing: on v2
    # the write is checked against the opener's cgroup namespace and credentials), so that at
    # the end we can step out of the sandbox's group and remove it
    origin = _open_procs(plan.cgroup_origins) if plan.cgroup_origins else _origin_procs(dirs)
    # unsharing the user namespace costs us every capability on the host: when removing the
    # groups needs one (root under a 0555 hierarchy root), a helper that keeps them does it
    # (it removes whichever of the planned groups exist, once this process is gone)
    remover = _start_remover(dirs) if _needs_host_privilege(dirs) else -1
    if plan.cgroup_wait:
        plan = _await_cgroups(plan, ctrl)
    # join the cgroup before unsharing: the cgroup namespace's root becomes this group
    try:
        for procs in plan.cgroup_procs:
            _join_cgroup(procs)
    except OSError as err:
        raise _Stage("cgroup", err) from err
    try:
        if os.geteuid() == 0:
            os.setgroups([])
        libc.unshare(plan.ns_flags & ~libc.CLONE_NEWNS)
    except OSError as err:
        raise _Stage("unshare", err) from err
    try:
        if plan.privileged_maps and keep:
            to_parent, from_parent = keep
            os.write(to_parent, b"u")
            if os.read(from_parent, 1) != b"m":
                raise OSError(errno.EPERM, "the spawner could not write the id maps")
        else:
            _write_maps("self", plan)
        for fd in keep:
            os.close(fd)
    except OSError as err:
        raise _Stage("idmap", err) from err

    pid = os.fork()
    if pid == 0:
        try:
            for fd in (*origin, remover):
                if fd >= 0:
                    os.close(fd)
            init_main(plan, ctrl)
        finally:
            os._exit(125)
    _send(ctrl, {"t": "init", "pid": pid})
    for fd in (0, 1, 2, *(dst for _, dst in pass_map)):
        try:
            os.close(fd)
        except OSError:
            pass
    _keeper_wait(plan, ctrl, pid, origin)


def _join_cgroup(procs: str) -> None:
    """Move this (single-threaded) process into the group whose ``cgroup.procs`` is ``procs``.

    On a v1 hierarchy it writes ``0`` to the group's ``tasks`` instead: moving the calling
    thread alone skips the kernel's threadgroup lock, whose writer waits for an RCU grace
    period (10-20 ms on a small VM, the largest single cost of a start); writing a pid to
    ``cgroup.procs`` takes that lock even for a one-thread process. This process was just
    forked, so its one thread is all of it. v2 has no ``tasks`` (ENOENT): the pid goes to
    ``cgroup.procs``, as it does when ``tasks`` refuses us (a delegation that chowned only
    ``cgroup.procs``)."""
    tasks = os.path.join(os.path.dirname(procs), "tasks")
    try:
        fd = os.open(tasks, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            os.write(fd, b"0")
            return
        except OSError:
            pass
        finally:
            os.close(fd)
    with open(procs, "w") as f:
        f.write(str(os.getpid()))


def _open_procs(files: tuple[str, ...]) -> list[int]:
    fds: list[int] = []
    for f in files:
        try:
            fds.append(os.open(f, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            continue  # best effort, as below
    return fds


def _origin_procs(dirs: tuple[str, ...]) -> list[int]:
    """Open (write-only) this process's own ``cgroup.procs`` in the hierarchy of each sandbox
    group in ``dirs``. Best effort: a hierarchy we cannot place is skipped."""
    if not dirs:
        return []
    from engine._linux import cgroupfs

    try:
        mounts = [m for m in cgroupfs.parse_mountinfo(
            cgroupfs.read_proc_file("/proc", "self", "mountinfo"))
            if m.fstype in ("cgroup", "cgroup2")]
        lines = cgroupfs.parse_proc_cgroup(cgroupfs.read_proc_file("/proc", "self", "cgroup"))
    except OSError:
        return []

    files: list[str] = []
    for d in dirs:
        best: tuple[int, str] | None = None
        for m in mounts:
            mp = m.mountpoint.rstrip("/")
            if not d.startswith(mp + "/"):
                continue
            for ln in lines:
                if m.fstype == "cgroup2":
                    match = ln.hierarchy_id == 0 and not ln.controllers
                else:
                    match = bool(ln.controllers) and set(ln.controllers) <= set(m.super_options)
                if not match:
                    continue
                home = cgroupfs.map_to_mount(m, ln.path)
                if home is not None and (best is None or len(mp) > best[0]):
                    best = (len(mp), home)
        if best is not None:
            files.append(os.path.join(best[1], "cgroup.procs"))
    return _open_procs(tuple(files))


def _needs_host_privilege(dirs: tuple[str, ...]) -> bool:
    """Whether removing ``dirs`` takes more than this uid's own permission bits on their
    parents (root relies on CAP_DAC_OVERRIDE there, which it loses in the user namespace)."""
    euid, egid = os.geteuid(), os.getegid()
    for d in dirs:
        try:
            st = os.stat(os.path.dirname(d))
        except OSError:
            return True
        if st.st_uid == euid:
            bits = (st.st_mode >> 6) & 0o3
        elif st.st_gid == egid:
            bits = (st.st_mode >> 3) & 0o3
        else:
            bits = st.st_mode & 0o3
        if bits != 0o3:  # write and search
            return True
    return False


def _start_remover(dirs: tuple[str, ...]) -> int:
    """Fork the helper that removes ``dirs`` once the keeper is gone (its pipe reaches EOF,
    even when the keeper is killed). It is forked before the keeper joins the groups and
    holds nothing of the sandbox. Returns the pipe's write end, which only the keeper keeps."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the helper
        try:
            for sig in FORWARDED_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            os.close(w)
            if r > 0:
                libc.close_range(0, r - 1)
            libc.close_range(r + 1, 0xFFFFFFFF)
            while True:
                try:
                    if not os.read(r, 64):
                        break
                except InterruptedError:
                    continue
            _cleanup_cgroups(dirs)
        finally:
            os._exit(0)
    os.close(r)
    return w


def _await_cgroups(plan: LaunchPlan, ctrl: int) -> LaunchPlan:
    """The supervisor makes the sandbox's groups once this process exists; wait for what it
    made. If it dies (EOF) or gives up first, remove whatever of the candidates it got to
    make, and end: nothing is left behind whenever the supervisor is killed."""
    while True:
        try:
            msg = os.read(ctrl, 65536)
            break
        except InterruptedError:
            continue
        except OSError:
            msg = b""
            break
    try:
        got = loads(msg) if msg.startswith(b"{") else None
    except ValueError:
        got = None
    if not isinstance(got, dict) or got.get("t") != "cgroup":
        _cleanup_cgroups(plan.cgroup_candidates)
        os._exit(0 if msg in (b"", b"abort") else 125)
    # this process's own copy of the (frozen) plan, filled in place: dataclasses.replace
    # would import dataclasses on every sandbox's start
    object.__setattr__(plan, "cgroup_procs", tuple(str(p) for p in got.get("procs", ())))
    object.__setattr__(plan, "cgroup_dirs", tuple(str(d) for d in got.get("dirs", ())))
    return plan


def _leave_cgroups(origin: list[int]) -> None:
    """Move this process back to where it came from, so its sandbox groups can be removed."""
    me = str(os.getpid()).encode()
    for fd in origin:
        try:
            os.write(fd, me)
        except OSError:
            pass
        os.close(fd)


def write_maps(pid: int, plan: LaunchPlan) -> None:
    """Called by a privileged spawner for child ``pid`` (root: map to an unprivileged uid)."""
    _write_maps(str(pid), plan)


def _write_maps(who: str, plan: LaunchPlan) -> None:
    if not plan.privileged_maps:
        with open(f"/proc/{who}/setgroups", "w") as f:
            f.write("deny")
    with open(f"/proc/{who}/uid_map", "w") as f:
        f.write(f"{plan.uid} {plan.host_uid} 1\n")
    with open(f"/proc/{who}/gid_map", "w") as f:
        f.write(f"{plan.gid} {plan.host_gid} 1\n")


def _keeper_wait(plan: LaunchPlan, ctrl: int, init_pid: int, origin: list[int]) -> NoReturn:
    import select

    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wfd)
    for sig in FORWARDED_SIGNALS:  # the supervisor forwards signals; ignore the terminal's
        signal.signal(sig, signal.SIG_IGN)
    init_done = False
    supervisor_gone = False
    while True:
        if not init_done:
            try:
                pid, status = os.waitpid(init_pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = init_pid, 0
            if pid == init_pid:
                init_done = True
                _send(ctrl, {"t": "init_exit", "status": status})
                if supervisor_gone:
                    break
        watch = [rfd] if supervisor_gone else [ctrl, rfd]  # EOF stays readable: once is enough
        try:
            ready, _, _ = select.select(watch, [], [], None if not init_done else 30)
        except InterruptedError:
            continue
        if not ready:
            break  # nobody said "done" in 30 s after the sandbox ended: clean up anyway
        if rfd in ready:
            try:
                os.read(rfd, 512)
            except BlockingIOError:
                pass
        if ctrl in ready:
            try:
                msg = os.read(ctrl, 4096)
            except OSError:
                msg = b""
            if not msg:  # the supervisor died (maybe by SIGKILL): take the sandbox down
                supervisor_gone = True
                try:
                    os.kill(init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if init_done:
                    break
                continue
            if msg == b"kill":
                try:
                    os.kill(init_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            elif msg == b"done" and init_done:
                # the supervisor is alive and removes the groups once we are gone (it waits
                # for our EOF): stepping out first would cost a cgroup migration, on v1 an RCU
                # grace period (~10 ms), for nothing
                os._exit(0)
    _leave_cgroups(origin)
    _cleanup_cgroups(plan.cgroup_dirs)
    os._exit(0)


def _cleanup_cgroups(dirs: tuple[str, ...]) -> None:
    deadline = time.monotonic() + 3.0
    for d in dirs:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if err.errno == errno.EBUSY and time.monotonic() < deadline:
                    _kill_cgroup(d)
                    time.sleep(0.01)
                    continue
                break


def _kill_cgroup(d: str) -> None:
    try:
        with open(os.path.join(d, "cgroup.procs")) as f:
            pids = [int(x) for x in f.read().split()]
    except OSError:
        return
    me = os.getpid()
    for pid in pids:
        if pid == me:  # still a member (we could not step out): never kill ourselves
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- B: PID 1 ----------------------------------------------------------------------------------

def init_main(plan: LaunchPlan, ctrl: int) -> NoReturn:
    try:
        _init(plan, ctrl)
    except _Stage as st:
        _fail(ctrl, st.stage, st.err)
    except BaseException as err:  # noqa: BLE001
        _fail(ctrl, "init", err)
    os._exit(125)


INIT_TITLE = b"flue-init"


def _scrub_args_and_env() -> None:
    """Blank PID 1's command line and environment in its own memory: PID 1 is a fork of
    flue, and /proc/1/cmdline (readable by everyone inside) would show flue's command line
    with its host paths; the environment holds the caller's (secrets included), which
    non-dumpability already hides -- this makes it gone, not just unreadable. Python's
    sys.argv and os.environ are copies and stay as they were. Best effort."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # fields after the comm: state is field 3, arg_start is field 48 (see proc(5))
        arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            if arg_end > arg_start:
                mem.seek(arg_start)
                mem.write(INIT_TITLE[: arg_end - arg_start - 1].ljust(arg_end - arg_start, b"\0"))
            if env_end > env_start:
                mem.seek(env_start)
                mem.write(bytes(env_end - env_start))
    except (OSError, ValueError, IndexError):
        pass


def _init(plan: LaunchPlan, ctrl: int) -> None:
    _scrub_args_and_env()
    # imported now: after pivot_root the code is out of sight, and before the uid change,
    # since the interpreter's own files may be readable by the invoking user only (a Python
    # under root's 0700 home)
    if plan.net_mode == "allowlist":
        from engine.network.inside import make_sockets
    try:
        os.setresgid(plan.gid, plan.gid, plan.gid)
        os.setresuid(plan.uid, plan.uid, plan.uid)
        libc.set_pdeathsig(signal.SIGKILL)  # after the uid change, which clears it
    except OSError as err:
        raise _Stage("setuid", err) from err
    try:
        libc.unshare(libc.CLONE_NEWNS)
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        # after our own unshare (the limits may allow no more mount namespaces), while the
        # host's /proc is still in sight
        _set_userns_limits(ctrl, plan.userns_limits)
        build_root(plan)
    except OSError as err:
        raise _Stage("rootfs", err) from err
    try:
        libc.sethostname(plan.hostname)
        if plan.net_mode in ("loopback", "allowlist"):
            _loopback_up()
        if plan.net_mode == "allowlist":
            # the proxy's, the DNS stub's and the captured ports' listening sockets, made in
            # this namespace and handed to the supervisor; the command inherits none of them
            names, fds = make_sockets(plan.net_capture_ports)
            _send(ctrl, {"t": "net", "names": names}, fds)
            for fd in fds:
                os.close(fd)
    except OSError as err:
        raise _Stage("network", err) from err
    if plan.tty_fds:
        try:
            _make_tty(plan, ctrl)
        except OSError as err:
            raise _Stage("tty", err) from err

    all_sigs = set(FORWARDED_SIGNALS) | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, all_sigs)
    to_init_r, to_init_w = os.pipe2(os.O_CLOEXEC)  # C -> B: listener fd number
    go_r, go_w = os.pipe2(os.O_CLOEXEC)  # B -> C: go ahead and exec
    exec_r, exec_w = os.pipe2(os.O_CLOEXEC)  # C -> B: errno if exec failed; EOF on success
    main_pid = os.fork()
    if main_pid == 0:
        os.close(to_init_r)
        os.close(go_w)
        os.close(exec_r)
        try:
            main_process(plan, ctrl, to_init_w, go_r, exec_w)
        finally:
            os._exit(127)
    os.close(to_init_w)
    os.close(go_r)
    os.close(exec_w)
    try:
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
    except OSError:
        pass
    _handoff(plan, ctrl, main_pid, to_init_r, go_w, exec_r)
    for fd in range(3):
        try:
            os.close(fd)
        except OSError:
            pass
    libc.close_range(3, ctrl - 1) if ctrl > 3 else None
    libc.close_range(ctrl + 1, 0xFFFFFFFF)
    _reap(ctrl, main_pid, all_sigs)


def _set_userns_limits(ctrl: int, limits: tuple[tuple[str, int], ...]) -> None:
    """Write the sandbox's own limits into its user namespace: /proc/sys/user shows the
    writer's namespace, and PID 1 holds every capability there. The kernel charges inotify
    instances and watches, fanotify groups and marks, and namespaces to each namespace level
    up to the host, where a root-run sandbox's count is root's: these bound one sandbox's part
    of it. A file this kernel lacks is skipped; a refused write is a warning in the report."""
    refused = []
    for name, value in limits:
        try:
            fd = os.open(f"/proc/sys/user/{name}", os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as err:
            refused.append(f"{name} ({err.strerror})")
            continue
        try:
            os.write(fd, b"%d\n" % value)
        except OSError as err:
            refused.append(f"{name} ({err.strerror})")
        finally:
            os.close(fd)
    if refused:
        _send(ctrl, {"t": "warning", "msg": "the sandbox's inotify and namespace limits could "
                     "not all be set: " + ", ".join(refused)})


TIOCGPTPEER = 0x5441  # _IO('T', 0x41): open the slave of a master (Linux 4.13)
TIOCSPTLCK = 0x40045431  # _IOW('T', 0x31, int): (un)lock the slave
TIOCGPTN = 0x80045430  # _IOR('T', 0x30, unsigned int): the slave's number


def _make_tty(plan: LaunchPlan, ctrl: int) -> None:
    """A pty in the sandbox's own devpts: its slave on ``plan.tty_fds`` (for the main process
    to inherit), with the caller's modes and size; its master to the supervisor, which relays
    it to the caller's terminal (engine/terminal.py). The sandbox never holds that terminal."""
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        try:
            slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:  # older kernel: by name, in the devpts we just mounted
            (num,) = struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))
            slave = os.open(f"/dev/pts/{num}", os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW
                            | os.O_CLOEXEC)
        try:
            try:
                if plan.tty_attrs:
                    a = list(plan.tty_attrs)
                    termios.tcsetattr(slave, termios.TCSANOW, [*a[:6], list(a[6])])
                if plan.tty_winsize != (0, 0):
                    termios.tcsetwinsize(slave, plan.tty_winsize)
            except termios.error as err:
                raise OSError(err.args[0], f"the sandbox's terminal: {err.args[-1]}") from None
            for fd in plan.tty_fds:
                os.dup2(slave, fd, inheritable=True)
        finally:
            os.close(slave)
        _send(ctrl, {"t": "pty"}, [master])
    finally:
        os.close(master)


def _handoff(plan: LaunchPlan, ctrl: int, main_pid: int, to_init_r: int, go_w: int,
             exec_r: int) -> None:
    raw = _read_exact(to_init_r, 4)
    if len(raw) == 4:
        (num,) = struct.unpack("i", raw)
        if num >= 0:
            try:
                pidfd = libc.pidfd_open(main_pid)
                lfd = libc.pidfd_getfd(pidfd, num)
                os.close(pidfd)
            except OSError as err:
                # the filter is loaded and sends every denial to a listener nobody holds:
                # the command could install its own and answer (or CONTINUE) them itself
                try:
                    os.kill(main_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                why = OSError(err.errno, "the seccomp listener could not be handed to flue "
                              f"({err.strerror or err}); not running the command unobserved "
                              "(run with --no-observe to use a plain errno filter)")
                raise _Stage("seccomp", why) from err
        try:
            os.write(go_w, b"g")
        except OSError:
            pass
        if num >= 0:
            # (after the go: the command's first denials wait in the kernel for the listener
            # either way, and a supervisor too gone to take it ends the sandbox)
            _send(ctrl, {"t": "listener"}, [lfd])
            os.close(lfd)
    os.close(go_w)
    os.close(to_init_r)
    res = _read_exact(exec_r, 8)
    os.close(exec_r)
    if len(res) == 8:
        eno, stage = struct.unpack("ii", res)
        _send(ctrl, {"t": "exec_error", "errno": eno, "stage": stage})
    else:
        _send(ctrl, {"t": "started", "pid": main_pid})


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        try:
            chunk = os.read(fd, n - len(out))
        except InterruptedError:
            continue
        if not chunk:
            break
        out += chunk
    return out


def _reap(ctrl: int, main_pid: int, sigs: set[signal.Signals]) -> NoReturn:
    main_status: int | None = None
    while True:
        info = signal.sigwaitinfo(sigs)
        if info.si_signo != signal.SIGCHLD:
            if main_status is None:
                try:
                    os.kill(main_pid, info.si_signo)
                    if info.si_signo in _ENDING_SIGNALS:  # a stopped process would keep it
                        os.kill(main_pid, signal.SIGCONT)  # pending forever, as kill(1) knows
                except ProcessLookupError:
                    pass
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
                break
            if pid == 0:
                break
            if pid == main_pid:
                main_status = status
        if main_status is not None:
            break
    # the main process is gone: nothing else may outlive it
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    _send(ctrl, {"t": "main_exit", "status": main_status})
    os._exit(0)


def _loopback_up() -> None:
    import fcntl

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)  # (no `with`: that is socket.py's)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), siocgifflags, ifr))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
    finally:
        s.close()


# --- the root filesystem -----------------------------------------------------------------------

_O_PATH = getattr(os, "O_PATH", 0o10000000)


def _open_source(src: str) -> int:
    """Open a host path without following any symlink in it."""
    try:
        return libc.openat2(-100, src, _O_PATH | os.O_CLOEXEC, 0, libc.RESOLVE_NO_SYMLINKS)
    except OSError as err:
        if err.errno == errno.ENOSYS:  # pre-5.6 kernel: last component only
            return os.open(src, _O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
        raise


def _path_error(err: OSError, path: str) -> OSError:
    """``err`` on sandbox path ``path``, said in words a user can act on."""
    eno = err.errno or errno.EIO
    if eno == errno.ELOOP:
        why = (f"{path} is a symlink inside the sandbox; use the path it points to "
               "(e.g. under /usr)")
    elif eno == errno.EROFS:
        why = (f"cannot create {path}: its parent is read-only inside the sandbox; "
               "choose a path that exists there or lies under a writable directory")
    elif eno == errno.ENOTDIR:
        why = f"{path}: a component is not a directory inside the sandbox"
    else:
        why = f"{path}: {err.strerror or err}"
    return OSError(eno, why)


def _open_beneath(fd: int, name: str, flags: int) -> int:
    return libc.openat2(fd, name, flags | _O_PATH | os.O_CLOEXEC, 0,
                        libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_BENEATH)


def _mkdirs_beneath(root_fd: int, rel: str, mode: int = 0o755) -> int:
    """Create ``rel`` below ``root_fd`` one component at a time, never following symlinks.
    Returns an O_PATH fd of the final directory."""
    fd = os.dup(root_fd)
    done = ""
    for part in [p for p in rel.split("/") if p and p != "."]:
        done += "/" + part
        try:
            if part == "..":
                raise OSError(errno.EINVAL, f"'..' in a sandbox path: {rel}")
            try:
                nfd = _open_beneath(fd, part, os.O_DIRECTORY)
            except FileNotFoundError:
                os.mkdir(part, mode, dir_fd=fd)
                nfd = _open_beneath(fd, part, os.O_DIRECTORY)
        except OSError as err:
            os.close(fd)
            if err.errno == errno.EINVAL:
                raise
            raise _path_error(err, done) from err
        os.close(fd)
        fd = nfd
    return fd


def _target(root_fd: int, dst: str, is_dir: bool) -> int:
    """An O_PATH fd for mount point ``dst`` (created if missing), resolved beneath the root."""
    parent, _, name = dst.rstrip("/").rpartition("/")
    if not name:
        return os.dup(root_fd)
    pfd = _mkdirs_beneath(root_fd, parent)
    try:
        if is_dir:
            try:
                os.mkdir(name, 0o755, dir_fd=pfd)
            except FileExistsError:
                pass
        else:
            try:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 0o644, dir_fd=pfd))
            except FileExistsError:
                pass
        return _open_beneath(pfd, name, 0)
    except OSError as err:
        raise _path_error(err, dst.rstrip("/")) from err
    finally:
        os.close(pfd)


def _fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


_LOCKED = (
    (os.ST_NOEXEC, libc.MS_NOEXEC), (os.ST_NOATIME, libc.MS_NOATIME),
    (os.ST_NODIRATIME, libc.MS_NODIRATIME), (os.ST_RELATIME, libc.MS_RELATIME),
    (os.ST_NOSUID, libc.MS_NOSUID), (os.ST_NODEV, libc.MS_NODEV), (os.ST_RDONLY, libc.MS_RDONLY),
)


def _bind(root_fd: int, dst: str, src_fd: int, tgt_fd: int, rw: bool, dev: bool = False,
          nested: bool = False) -> None:
    libc.mount(_fdpath(src_fd), _fdpath(tgt_fd), None, libc.MS_BIND | libc.MS_REC)
    # reopen the path: the old fd names the directory under the new mount, not the mount
    top = libc.openat2(root_fd, dst.lstrip("/"), _O_PATH | os.O_CLOEXEC, 0,
                       libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_BENEATH)
    try:
        if _SETATTR[0]:
            # MS_REC brought the source's submounts along: one call gives the whole tree the
            # bind's flags, adding them only (flags a mount has, locked or not, stay)
            libc.mount_setattr(top, "", libc.AT_EMPTY_PATH | libc.AT_RECURSIVE,
                               _tree_attrs(rw, dev))
        else:  # before Linux 5.12: a plain remount changes one mount only, so each of them
            _remount(top, rw, dev)
            if nested:
                _remount_submounts(root_fd, top, rw, dev)
    finally:
        os.close(top)


# whether mount_setattr(2) works here (probed once per launch in build_root)
_SETATTR = [True]


def _probe_setattr() -> bool:
    """mount_setattr exists (Linux 5.12) and is not refused (a container's seccomp profile)."""
    try:
        libc.mount_setattr(-1, "", libc.AT_EMPTY_PATH, 0)
    except OSError as err:
        return err.errno not in (errno.ENOSYS, errno.EPERM)
    return True


def _tree_attrs(rw: bool, dev: bool) -> int:
    """A bind's flags: nosuid always; nodev, or noexec for a device node; read-only unless rw."""
    attrs = libc.MOUNT_ATTR_NOSUID | (libc.MOUNT_ATTR_NOEXEC if dev else libc.MOUNT_ATTR_NODEV)
    return attrs if rw else attrs | libc.MOUNT_ATTR_RDONLY


def _mount_id(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.ENOENT, "no mnt_id in fdinfo")


def _host_mountpoints() -> list[str]:
    from engine._linux import cgroupfs

    with open("/proc/self/mountinfo") as f:
        return [m.mountpoint for m in cgroupfs.parse_mountinfo(f.read())]


def _has_submounts(src: str, mountpoints: list[str]) -> bool:
    base = os.path.normpath(src).rstrip("/") + "/"
    return any(mp.startswith(base) for mp in mountpoints)


def _remount_submounts(root_fd: int, top: int, rw: bool, dev: bool) -> None:
    """Give every mount below the bind at ``top`` the bind's flags (read-only, nosuid,
    nodev): a plain remount changes one mount only, and a ':ro' bind of a tree with mounts
    in it (/dev with its /dev/shm) would leave those writable."""
    from engine._linux import cgroupfs

    with open("/proc/self/mountinfo") as f:
        mounts = cgroupfs.parse_mountinfo(f.read())
    children: dict[int, list[cgroupfs.Mount]] = {}
    for m in mounts:
        children.setdefault(m.parent_id, []).append(m)
    todo = list(children.get(_mount_id(top), []))
    prefix = STAGE.rstrip("/") + "/"
    while todo:
        m = todo.pop(0)
        todo.extend(children.get(m.mount_id, []))
        if not m.mountpoint.startswith(prefix):
            continue
        try:
            fd = _open_beneath(root_fd, m.mountpoint[len(prefix):], 0)
        except OSError:
            continue  # hidden under another mount: out of reach inside too
        try:
            _remount(fd, rw, dev)
        finally:
            os.close(fd)


def _remount(top: int, rw: bool, dev: bool) -> None:
    """Remount with our flags, keeping the ones the kernel locks in a user namespace."""
    tgt_fd = top
    st = os.statvfs(_fdpath(tgt_fd))
    flags = libc.MS_BIND | libc.MS_REMOUNT | libc.MS_NOSUID
    for st_flag, ms_flag in _LOCKED:
        if st.f_flag & st_flag:
            flags |= ms_flag
    if dev:
        flags |= libc.MS_NOEXEC
    else:
        flags |= libc.MS_NODEV
    if not rw:
        flags |= libc.MS_RDONLY
    libc.mount(None, _fdpath(tgt_fd), None, flags)


def build_root(plan: LaunchPlan) -> None:
    # open every host source first: the staging tmpfs may hide some of them
    _SETATTR[0] = _probe_setattr()
    host_mps = [] if _SETATTR[0] else _host_mountpoints()  # for the fallback only
    sources: dict[int, int] = {}
    for i, op in enumerate(plan.mounts):
        if op.kind == "bind":
            try:
                sources[i] = _open_source(op.src)
            except OSError as err:
                if op.optional and err.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                if err.errno == errno.ELOOP:
                    raise OSError(err.errno, f"bind source {op.src} goes through a symlink; "
                                  "give its real path") from err
                raise OSError(err.errno, f"bind source {op.src}: {err.strerror}") from err
    libc.mount("flue", STAGE, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
               f"size={plan.root_size},mode=0755")
    root_fd = os.open(STAGE, os.O_DIRECTORY | os.O_CLOEXEC | _O_PATH)
    for i, op in enumerate(plan.mounts):
        nested = (not _SETATTR[0] and op.kind == "bind" and i in sources
                  and _has_submounts(op.src, host_mps))
        _apply(root_fd, op, sources.get(i), nested)
    for fd in sources.values():
        os.close(fd)
    os.chdir(STAGE)
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)  # detach the old root stacked under the new one
    os.chdir("/")
    os.close(root_fd)
    libc.mount(None, "/", None, libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | libc.MS_NOSUID
               | libc.MS_NODEV)


def _apply(root_fd: int, op: MountOp, src_fd: int | None, nested: bool = False) -> None:
    if op.kind == "bind":
        if src_fd is None:
            return  # optional and absent
        is_dir = stat.S_ISDIR(os.stat(_fdpath(src_fd)).st_mode)
        tgt = _target(root_fd, op.dst, is_dir)
        try:
            _bind(root_fd, op.dst, src_fd, tgt, op.rw, op.dev, nested)
        finally:
            os.close(tgt)
    elif op.kind == "symlink":
        parent, _, name = op.dst.rpartition("/")
        pfd = _mkdirs_beneath(root_fd, parent)
        try:
            os.symlink(op.target, name, dir_fd=pfd)
        except FileExistsError:
            pass
        finally:
            os.close(pfd)
    elif op.kind == "dir":
        os.close(_mkdirs_beneath(root_fd, op.dst, op.mode))
    elif op.kind == "file":
        parent, _, name = op.dst.rpartition("/")
        pfd = _mkdirs_beneath(root_fd, parent)
        try:
            dfd = os.open(_fdpath(pfd), os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW
                             | os.O_CLOEXEC, op.mode, dir_fd=dfd)
                try:
                    os.write(fd, op.data)
                    os.fchmod(fd, op.mode)
                finally:
                    os.close(fd)
            finally:
                os.close(dfd)
        finally:
            os.close(pfd)
    elif op.kind == "tmpfs":
        tgt = _target(root_fd, op.dst, True)
        try:
            libc.mount("tmpfs", _fdpath(tgt), "tmpfs", libc.MS_NOSUID | libc.MS_NODEV,
                       f"size={max(op.size, 4096)},mode={op.mode:o}")
        finally:
            os.close(tgt)
    elif op.kind == "proc":
        tgt = _target(root_fd, op.dst, True)
        try:
            libc.mount("proc", _fdpath(tgt), "proc",
                       libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
        finally:
            os.close(tgt)
    elif op.kind == "devpts":
        tgt = _target(root_fd, op.dst, True)
        try:
            libc.mount("devpts", _fdpath(tgt), "devpts", libc.MS_NOSUID | libc.MS_NOEXEC,
                       "newinstance,ptmxmode=0666,mode=620")
        finally:
            os.close(tgt)
    elif op.kind == "mqueue":
        tgt = _target(root_fd, op.dst, True)
        try:
            libc.mount("mqueue", _fdpath(tgt), "mqueue",
                       libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC)
        except OSError:
            pass  # optional
        finally:
            os.close(tgt)
    elif op.kind == "readonly":
        # a path of what is already mounted (the sandbox's own /proc/sys): bound onto itself
        # and made read-only, nosuid, nodev, noexec
        try:
            top = _open_beneath(root_fd, op.dst.lstrip("/"), 0)
        except FileNotFoundError:
            if op.optional:
                return
            raise
        try:
            libc.mount(_fdpath(top), _fdpath(top), None, libc.MS_BIND | libc.MS_REC)
        finally:
            os.close(top)
        top = _open_beneath(root_fd, op.dst.lstrip("/"), 0)
        try:
            _remount(top, False, True)
        finally:
            os.close(top)
    else:
        raise OSError(errno.EINVAL, f"unknown mount step {op.kind}")


# --- C: the main process -----------------------------------------------------------------------

EXEC_STAGE_RESOLVE = 1
EXEC_STAGE_EXEC = 2
EXEC_STAGE_SETUP = 3


def _resolve(argv0: str, path: str) -> tuple[str | None, int]:
    if "/" in argv0:
        return (argv0, 0) if os.path.exists(argv0) else (None, errno.ENOENT)
    first_err = errno.ENOENT
    for d in (path or "/usr/bin:/bin").split(":"):
        cand = os.path.join(d or ".", argv0)
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(cand, os.X_OK):
            return cand, 0
        first_err = errno.EACCES
    return None, first_err


def main_process(plan: LaunchPlan, ctrl: int, to_init_w: int, go_r: int, exec_w: int) -> NoReturn:
    def die(eno: int, stage: int) -> NoReturn:
        try:
            os.write(exec_w, struct.pack("ii", eno, stage))
        finally:
            os._exit(127 if eno == errno.ENOENT else 126)

    try:
        os.setsid()
        if plan.tty_fds:  # the sandbox's own pty becomes our controlling terminal
            fcntl.ioctl(plan.tty_fds[0], termios.TIOCSCTTY, 0)
        for sig in range(1, signal.NSIG):
            try:
                if signal.getsignal(sig) == signal.SIG_IGN:
                    signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        env = dict(plan.env)
        os.chdir(plan.cwd)
        exe, eno = _resolve(plan.argv[0], env.get("PATH", ""))
        if exe is None:
            die(eno, EXEC_STAGE_RESOLVE)
        keep = sorted({0, 1, 2, *plan.pass_fds})
        hi = max(keep)
        for fd in (ctrl,):
            os.close(fd)
        # close every fd that was not passed on purpose (the pipes below are close-on-exec)
        prev = -1
        for fd in keep:
            if fd - prev > 1:
                _close_gap(prev + 1, fd - 1, (to_init_w, go_r, exec_w))
            prev = fd
        _close_gap(hi + 1, 0xFFFFFFFF, (to_init_w, go_r, exec_w))
        for fd in plan.pass_fds:
            os.set_inheritable(fd, True)
        libc.drop_all_capabilities()
        libc.set_no_new_privs()
        # the uid change in PID 1 made us non-dumpable; PID 1 must be able to take the seccomp
        # listener from us (pidfd_getfd), and exec resets dumpability for the new program
        libc.prctl(libc.PR_SET_DUMPABLE, 1)
        envb = {k.encode(): v.encode() for k, v in env.items()}
        argvb = [a.encode() for a in plan.argv]
        flags = libc.SECCOMP_FILTER_FLAG_NEW_LISTENER if plan.seccomp_notify else 0
        if flags:
            try:
                listener = libc.seccomp_load_bpf(
                    plan.seccomp_bpf, flags | libc.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
            except OSError as err:
                if err.errno != errno.EINVAL:  # older than 5.19: without it
                    raise
                listener = libc.seccomp_load_bpf(plan.seccomp_bpf, flags)
        else:
            listener = libc.seccomp_load_bpf(plan.seccomp_bpf, flags)
    except OSError as err:
        die(err.errno or errno.EPERM, EXEC_STAGE_SETUP)
    # from here on the filter applies: only read, write, close and execve
    os.write(to_init_w, struct.pack("i", listener if plan.seccomp_notify else -1))
    os.read(go_r, 1)
    if plan.seccomp_notify:
        os.close(listener)
    try:
        os.execve(exe, argvb, envb)
    except OSError as err:
        die(err.errno or errno.EACCES, EXEC_STAGE_EXEC)
    os._exit(127)


def _close_gap(first: int, last: int, spare: tuple[int, ...]) -> None:
    """close_range over [first, last] except the fds in ``spare``."""
    start = first
    for fd in sorted(s for s in spare if first <= s <= last):
        if fd > start:
            libc.close_range(start, fd - 1)
        start = fd + 1
    if start <= last:
        libc.close_range(start, last)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("engine.launch is not a program")
