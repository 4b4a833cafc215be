"""The sandbox lifecycle, seen from the supervisor: plan, spawn, watch, answer, clean up.

``Sandbox`` is async (fd-driven on the running event loop); ``run_sync`` is the blocking
facade for scripts. The supervisor holds the sandbox's control socket, the seccomp listener
and a pidfd of its PID 1; the sandbox's keeper process holds the other end of the control
socket, so the sandbox dies and its cgroup is removed even if the supervisor is SIGKILLed.
"""

from __future__ import annotations

import errno as _errno
import itertools
import os
import time

from engine._lean import dumps, loads, recv_fds, signal_name, socketpair
from engine._lean import signal as _signal
from engine._record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import _socket
    from collections.abc import AsyncIterator, Callable, Mapping, Sequence
    from typing import Any

    from engine import events as ev
    from engine.terminal import TtyPlan
from engine._linux import libc
from engine.errors import EngineError, LaunchError
from engine.plan import LaunchPlan
from engine.profile.model import Bind, Limits, Profile
from engine.rootfs import plan_mounts
from engine.seccomp import CompiledFilter, compile_filter

NS_FLAGS = (libc.CLONE_NEWUSER | libc.CLONE_NEWPID | libc.CLONE_NEWNS | libc.CLONE_NEWNET
            | libc.CLONE_NEWIPC | libc.CLONE_NEWUTS | libc.CLONE_NEWCGROUP)
NAMESPACES = ("user", "pid", "mount", "network", "ipc", "uts", "cgroup")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
NOBODY = 65534

_seq = itertools.count(1)


@record
class Result:
    """What happened, as ``flue run --report`` writes it."""

    exit_code: int = 125
    signal: int | None = None
    oom_killed: bool = False
    timed_out: bool = False
    seccomp_killed: bool = False
    pids_limit_hit: bool = False
    memory_limit_hit: bool = False
    wall_seconds: float = 0.0
    cpu_seconds: float | None = None
    peak_memory: int | None = None
    limits: dict[str, Any] = field(default_factory=dict)
    isolation: dict[str, Any] = field(default_factory=dict)
    degraded: list[str] = field(default_factory=list)
    message: str = ""  # the one `flue:` line, if any
    error: str = ""  # flue's own failure, rendered
    denials: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> count, errno
    network: dict[str, Any] = field(default_factory=dict)  # the mode; allowlist: what went out
    # observed runs (learn, observe_paths): lookups that failed where the host has something
    paths_missing: list[dict[str, Any]] = field(default_factory=list)
    denied_args: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # decoded samples
    observed: dict[str, Any] = field(default_factory=dict)  # learn mode: what the run used

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


# namespaces of each kind a sandbox may create when its profile allows namespaces at all
NESTED_NAMESPACES = 128
_NS_KINDS = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup", "time")


def userns_limits(limits: Limits, allow_namespaces: bool) -> tuple[tuple[str, int], ...]:
    """The limits PID 1 writes into its user namespace (/proc/sys/user): the kernel charges
    what the sandbox uses to the namespace's creator on the host (root, for a root-run
    sandbox), so these bound what one sandbox can take of that budget."""
    out: list[tuple[str, int]] = []
    if limits.inotify_instances is not None:
        out += [("max_inotify_instances", limits.inotify_instances),
                ("max_fanotify_groups", limits.inotify_instances)]
    if limits.inotify_watches is not None:
        out += [("max_inotify_watches", limits.inotify_watches),
                ("max_fanotify_marks", limits.inotify_watches)]
    nested = NESTED_NAMESPACES if allow_namespaces else 0  # else seccomp refuses them too
    out += [(f"max_{kind}_namespaces", nested) for kind in _NS_KINDS]
    return tuple(out)


def build_env(profile: Profile, extra: Sequence[tuple[str, str]] = (),
              source: dict[str, str] | None = None) -> dict[str, str]:
    """The sandbox's environment: an allowlist of the caller's plus what the profile and the
    command line set. Nothing else of the caller's environment goes in."""
    source = dict(os.environ) if source is None else source
    env: dict[str, str] = {}
    for key in profile.env.passthrough:
        if key.endswith("*"):
            for k, v in source.items():
                if k.startswith(key[:-1]):
                    env[k] = v
        elif key in source:
            env[key] = source[key]
    u = profile.user
    env.update({"HOME": u.home_dir, "USER": u.name, "LOGNAME": u.name, "SHELL": "/bin/sh",
                "PATH": DEFAULT_PATH, "PWD": profile.filesystem.workdir})
    env.setdefault("TERM", "dumb")
    env.update(dict(profile.env.set))
    env.update(dict(extra))
    return env


class Sandbox:
    """One sandboxed command.

    >>> sb = Sandbox(["python3", "-c", "print(1)"], load_profile("default"))
    >>> result = await sb.run()
    """

    def __init__(
        self,
        argv: Sequence[str],
        profile: Profile,
        *,
        workspace: str | None = None,
        binds: Sequence[Bind] = (),
        env: Sequence[tuple[str, str]] = (),
        stdio: tuple[int, int, int] = (0, 1, 2),
        pass_fds: Sequence[int] = (),
        observe: bool = True,
        host_uid: int | None = None,
        allow_unlimited: bool = False,
        sample_interval: float = 0.25,
        watch_files: bool = False,
        spawner: Any = None,
        name: str | None = None,
        capture_output: bool = False,
        live: bool = True,
        hosts: Mapping[str, str] | None = None,
        learn: bool = False,
        observe_paths: bool = False,
        ask: Any = None,
        tty: TtyPlan | None = None,
    ) -> None:
        if not argv:
            raise LaunchError("no command given", fix="put the command after --")
        self.argv = tuple(argv)
        self.profile = profile
        self.workspace = workspace
        self.binds = tuple(binds)
        self.extra_env = tuple(env)
        self.stdio = stdio
        self.pass_fds = tuple(pass_fds)
        self.observe = observe
        self.host_uid = host_uid
        self.allow_unlimited = allow_unlimited
        self.sample_interval = sample_interval
        self.watch_files = watch_files
        self.id = name or f"flue-{os.getpid()}-{next(_seq)}"
        self.capture_output = capture_output
        self.live = live  # False: no periodic samples or process polling (the report only)
        # the resolver hook: name (or "*.domain") -> address, used by the allowlist proxy
        # instead of the system resolver; wins over the profile's [network] hosts
        self.hosts = _check_hosts(hosts) if hosts else {}
        # learn: trace every allowed syscall outside a small core (engine.learn); observe_paths:
        # resolve path lookups inside and report the ones missing here but on the host;
        # ask: an engine.sources.ask.Ask, refused syscalls held for a decision
        self.learn = learn
        self.observe_paths = observe_paths or learn
        self.ask = ask
        self.observer: Any = None
        # a pty of the sandbox's own for the fds of stdio that are terminals, relayed to the
        # caller's (engine/terminal.py); None: stdio is passed as it is
        self.tty = tty
        self._relay: Any = None
        self.network: Any = None  # engine.network.service.NetworkService in allowlist mode
        self._out_fds: dict[int, tuple[str, Any]] = {}
        self._spawner = spawner
        self.result = Result()
        self.degraded: list[str] = []
        self.init_pid: int | None = None
        self.main_pid_inside: int | None = None
        self._keeper_pid: int | None = None
        self._pidfd: int | None = None
        self._ctrl: _socket.socket | None = None
        self._listener: int | None = None
        self._filter: CompiledFilter | None = None
        self._cgroup: Any = None
        self._cg_make: Any = None  # (backend, limits, support): what _make_cgroup makes
        self._cg_candidates: tuple[str, ...] = ()  # the dirs it may make (for the keeper)
        self._cgroup_mode = "none"
        self._queue: Any = None  # an asyncio.Queue, made by start() (the async path only)
        self._loop: Any = None  # the asyncio loop, or a MiniLoop on the blocking path
        self._subscribers: list[Callable[[ev.Event], None]] = []
        self._done: Any = None  # asyncio.Future[Result] on the async path
        self._finished = False
        self._await_eof = False
        self._eof_guard: Any = None
        self._t0 = 0.0
        self._main_status: int | None = None
        self._exec_error: tuple[int, int] | None = None
        self._setup_error: str = ""
        self._timed_out = False
        self._timeout_handle: Any = None
        self._closing = False
        self._denials: Any = None
        self._sources: list[Any] = []
        self._last_sample: Any = None
        self.processes: Any = None
        self.resources: Any = None
        self.files: Any = None
        self._started_sent = False
        self._events_used = False
        self._pending_signals: list[int] = []
        self._early: list[ev.Event] = []
        self.main_host_pid: int | None = None

    # --- events -----------------------------------------------------------------------------

    def _wants_events(self) -> bool:
        return self.live or bool(self._subscribers) or self._events_used

    def emit(self, event: ev.Event) -> None:
        from engine import events as ev

        if not self._started_sent:
            if not isinstance(event, ev.Started | ev.Exited):
                self._early.append(event)  # e.g. the main process's own exec, seen first
                return
            self._started_sent = True
            if self._queue is not None and self._events_used:
                self._queue.put_nowait(event)
            for cb in self._subscribers:
                cb(event)
            early, self._early = self._early, []
            for e in early:
                self.emit(e)
            return
        # only a consumer of events() drains the queue: without one, nothing is kept
        if self._queue is not None and self._events_used:
            self._queue.put_nowait(event)
        for cb in self._subscribers:
            cb(event)

    def subscribe(self, cb: Callable[[ev.Event], None]) -> None:
        self._subscribers.append(cb)

    def events(self) -> AsyncIterator[ev.Event]:
        """Every event in time order, ending after ``Exited``. Call it before ``start()`` or
        right after: events are kept for a consumer from the moment it is asked for."""
        self._events_used = True
        return self._iter_events()

    async def _iter_events(self) -> AsyncIterator[ev.Event]:
        if self._queue is None:
            import asyncio

            self._queue = asyncio.Queue()
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    def now(self) -> float:
        return time.monotonic()

    # --- setup ----------------------------------------------------------------------------------

    def _limits(self) -> Limits:
        return self.profile.limits

    def _setup_cgroup(self) -> None:
        from engine import cgroups

        limits = self._limits()
        probe = cgroups.probe()
        support = probe.support
        backend = cgroups.backend_from(probe)
        if backend is not None:
            # groups left by supervisors that were killed before their keeper existed
            # (older flue: now the keeper exists before the groups do)
            try:
                cgroups.sweep_stale(backend)
            except (OSError, EngineError):
                pass
        self._cg_make = (backend, limits, support)
        if backend is None:
            self._cg_candidates = ()
            self._make_cgroup()  # nothing to make: decide now whether to run without one
        else:
            # made once the keeper exists (spawn's after_fork): it removes them if we die
            self._cg_candidates = backend.planned_dirs(self.id)

    def _cg_origins(self) -> tuple[str, ...]:
        backend = self._cg_make[0] if self._cg_make else None
        return backend.origin_procs() if backend is not None else ()

    def _make_cgroup(self) -> None:
        from engine import cgroups
        from engine.errors import LimitUnavailable

        backend, limits, support = self._cg_make
        try:
            self._cgroup = cgroups.create_optional(backend, self.id, limits, support=support)
        except LimitUnavailable as err:
            if not self.allow_unlimited:
                err.fix = (err.fix + "; " if err.fix else "") + (
                    "or accept running without it: flue run --allow-unlimited "
                    "(flue-tui --allow-unlimited)")
                raise
            self.degraded.append(f"running without resource limits: {err.title}")
            self._cgroup = None
        if self._cgroup is not None:
            self._cgroup_mode = getattr(backend, "mode", support.mode)
        else:
            self._cgroup_mode = "none"
            if support.mode == "none" or not any(
                    (limits.memory, limits.cpus, limits.pids)):
                self.degraded.append("no cgroup: resource samples come from the process tree")

    def _plan(self) -> LaunchPlan:
        p = self.profile
        if self.workspace and not os.path.isdir(self.workspace):
            raise LaunchError(f"workspace {self.workspace} is not a directory",
                              fix="create it first, or leave --workspace out for a tmpfs one")
        euid = os.geteuid()
        if euid == 0:
            host_uid = self.host_uid
            if host_uid is not None and not 0 < host_uid < 0xFFFFFFFF:
                from engine.errors import PrivilegeError

                raise PrivilegeError(
                    f"--host-uid {host_uid} is not allowed",
                    detail="the sandbox's user must map to an unprivileged host uid; uid 0 "
                    "would make it host root for everything root owns (/proc/sys among them)",
                    fix="give an unprivileged uid (1 to 4294967294), e.g. the owner of the "
                    "workspace; leave it out to use 65534")
            if host_uid is None and self.workspace:
                owner = os.stat(self.workspace).st_uid
                host_uid = owner if owner != 0 else None
                if owner == 0:
                    self.degraded.append(
                        f"workspace {self.workspace} is owned by root, so the sandbox's user "
                        f"(host uid {NOBODY}) cannot write it; chown it to an unprivileged "
                        "user, or pass --host-uid N")
            host_uid = NOBODY if host_uid is None else host_uid
            host_gid = host_uid if host_uid != NOBODY else NOBODY
            if self.workspace:
                st = os.stat(self.workspace)
                if st.st_uid == host_uid:
                    host_gid = st.st_gid
            privileged = True
        else:
            if self.host_uid is not None and self.host_uid != euid:
                from engine.errors import PrivilegeError

                raise PrivilegeError(
                    "--host-uid needs root",
                    detail=f"unprivileged, the sandbox's user is always you (uid {euid})",
                    fix="leave --host-uid out")
            host_uid, host_gid, privileged = euid, os.getegid(), False
        notify = self.observe
        allowlist = p.network.mode == "allowlist"
        if notify and not libc.seccomp_action_available(libc.SECCOMP_RET_USER_NOTIF):
            notify = False
            self.degraded.append(libc.NO_USER_NOTIF_REASON)
        from engine.seccomp import TRACE_PROCESS

        traced: tuple[str, ...] = ()
        if self._observing():
            from engine.sources.observe import traced_calls

            traced = traced_calls(self, notify)
        self._filter = compile_filter(p.seccomp, notify=notify, learn=self.learn,
                                      trace=(TRACE_PROCESS if notify and self.live else ())
                                      + (("connect",) if notify and allowlist else ())
                                      + traced)
        net = p.network.mode
        mounts = plan_mounts(p, workspace=self.workspace, extra_binds=self.binds, net_mode=net)
        env = build_env(p, self.extra_env)
        capture: tuple[int, ...] = ()
        if allowlist:
            from engine.network.policy import capture_ports, proxy_env

            capture = capture_ports(p.network.allow)
            explicit = dict(p.env.set) | dict(self.extra_env)
            env.update({k: v for k, v in proxy_env().items() if k not in explicit})
        cg = self._cgroup
        return LaunchPlan(
            sandbox_id=self.id,
            argv=self.argv,
            env=tuple(env.items()),
            cwd=p.filesystem.workdir,
            hostname=p.hostname,
            uid=p.user.uid,
            gid=p.user.gid,
            host_uid=host_uid,
            host_gid=host_gid,
            privileged_maps=privileged,
            root_size=p.filesystem.root_size,
            mounts=tuple(mounts),
            net_mode=net,
            seccomp_bpf=self._filter.bpf,
            seccomp_notify=notify,
            cgroup_procs=tuple(cg.procs_files) if cg else (),
            cgroup_dirs=tuple(cg.paths) if cg else (),
            cgroup_wait=bool(self._cg_candidates),
            cgroup_candidates=self._cg_candidates,
            cgroup_origins=self._cg_origins(),
            pass_fds=self.pass_fds,
            ns_flags=NS_FLAGS,
            net_capture_ports=capture,
            userns_limits=userns_limits(p.limits, p.seccomp.allow_namespaces),
            tty_fds=self.tty.fds if self.tty else (),
            tty_attrs=self.tty.attrs if self.tty else (),
            tty_winsize=self.tty.winsize if self.tty else (0, 0),
        )

    def _isolation(self, plan: LaunchPlan) -> dict[str, Any]:
        return {
            "namespaces": list(NAMESPACES),
            "root": f"tmpfs {plan.root_size} bytes, pivot_root, old root detached",
            "uid_map": f"{plan.uid} -> host {plan.host_uid}",
            "seccomp": ("allowlist, denials observed (user notification)" if plan.seccomp_notify
                        else "allowlist, errno (denials not observed)"),
            "capabilities": "none (bounding set emptied)",
            "no_new_privs": True,
            "network": self._network_isolation(plan.net_mode),
            "cgroup": self._cgroup_mode,
            "workspace": self.workspace or f"tmpfs {self.profile.filesystem.workspace_size} bytes",
        }

    def _network_isolation(self, mode: str) -> str:
        if mode == "none":
            return "none (an empty network namespace, loopback down)"
        if mode == "loopback":
            return "loopback (a private lo, nothing beyond it)"
        n = len(self.profile.network.allow)
        return (f"allowlist ({n} rule{'s' if n != 1 else ''}; no route out, proxy "
                "127.0.0.1:3128 and DNS stub 127.0.0.1:53 served by the supervisor)")

    def _limits_dict(self) -> dict[str, Any]:
        lim = self._limits()
        applied = getattr(self._cgroup, "limits", None) if self._cgroup else None
        out: dict[str, Any] = {"timeout": lim.timeout}
        for key in ("memory", "cpus", "pids"):
            val = getattr(applied, key, None) if applied else None
            out[key] = val
        return out

    # --- run ------------------------------------------------------------------------------------

    async def start(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._start(loop)

    def run_blocking(self) -> Result:
        """Run to completion without asyncio (the fast path of ``flue run``). Live sources
        need asyncio, so this path observes denials and the final report only."""
        from engine._miniloop import MiniLoop

        self.live = False
        loop = MiniLoop()
        try:
            self._start(loop)
            loop.run_until(lambda: self._finished)
        finally:
            self.restore_terminal()
            loop.close()
        return self.result

    def _start(self, loop: Any) -> None:
        self._loop = loop
        self._t0 = time.monotonic()
        ctrl_parent, ctrl_child = socketpair()
        child_ends: list[int] = []
        stdio = self.stdio
        if self.capture_output:
            import codecs

            devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            child_ends = [devnull, out_w, err_w]
            stdio = (devnull, out_w, err_w)
            for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
                os.set_blocking(fd, False)
                self._out_fds[fd] = (stream, codecs.getincrementaldecoder("utf-8")("replace"))
        elif self.tty is not None:
            # the caller's terminal never goes in: PID 1 puts the sandbox's own pty there
            from engine.terminal import TerminalRelay

            devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            child_ends = [devnull]
            on = self.tty.fds
            stdio = (devnull if 0 in on else stdio[0], devnull if 1 in on else stdio[1],
                     devnull if 2 in on else stdio[2])
            self._relay = TerminalRelay(loop, self.tty)
        try:
            self._setup_cgroup()
            plan = self._plan()
            spawner = self._spawner or _default_spawner()
            self._spawner = spawner
            pass_map = tuple((fd, fd) for fd in self.pass_fds)

            def make_cgroups(_pid: int) -> None:
                """The keeper exists (and waits): make the groups, tell it what they are."""
                if not plan.cgroup_wait:
                    return
                try:
                    self._make_cgroup()
                except BaseException:
                    try:
                        ctrl_parent.send(b"abort")  # it removes what was made, and ends
                    except OSError:
                        pass
                    raise
                cg = self._cgroup
                ctrl_parent.send(dumps({
                    "t": "cgroup", "procs": list(cg.procs_files) if cg else [],
                    "dirs": list(cg.paths) if cg else []}).encode())

            self._keeper_pid = spawner.spawn(plan, ctrl_child.fileno(), stdio, pass_map,
                                             make_cgroups)
        except BaseException:
            ctrl_parent.close()
            for fd in list(self._out_fds):
                os.close(fd)
            self._out_fds.clear()
            self._remove_cgroup()
            raise
        finally:
            ctrl_child.close()
            for fd in child_ends:
                os.close(fd)
        for fd in self._out_fds:
            loop.add_reader(fd, self._on_output, fd)
        self._ctrl = ctrl_parent
        ctrl_parent.setblocking(False)
        self._plan_obj = plan
        loop.add_reader(ctrl_parent.fileno(), self._on_ctrl)
        if self.profile.limits.timeout:
            self._timeout_handle = loop.call_later(self.profile.limits.timeout, self._on_timeout)
        if self.watch_files:
            from engine.sources import prewarm_file_watcher

            prewarm_file_watcher(self)  # its helper starts while the sandbox is set up

    async def wait(self) -> Result:
        import asyncio

        assert self._done is not None, "start() first"
        return await asyncio.shield(self._done)

    async def run(self) -> Result:
        await self.start()
        return await self.wait()

    def send_signal(self, sig: int) -> None:
        """Deliver ``sig`` to the sandbox's PID 1, which forwards it to the main process.
        A signal that comes before the main process runs is held and delivered then (SIGKILL
        goes at once when PID 1 exists), so nothing sent early is lost."""
        if sig == _signal.SIGWINCH and self._relay is not None:
            self._relay.resize()  # the kernel tells the sandbox's foreground job
            return
        if self.main_pid_inside is None and not (sig == _signal.SIGKILL and self._pidfd):
            if not self._closing:
                self._pending_signals.append(sig)
            return
        if self._pidfd is not None:
            try:
                libc.pidfd_send_signal(self._pidfd, sig)
            except OSError:
                pass

    def restore_terminal(self) -> None:
        """With a pty: relay its last output and give the caller's terminal its modes back.
        Called at the end of every run; callers that may leave early call it too."""
        if self._relay is not None:
            self._relay.close()

    def kill(self) -> None:
        self.send_signal(_signal.SIGKILL)

    def _on_timeout(self) -> None:
        self._timed_out = True
        self.kill()

    # --- output -----------------------------------------------------------------------------------

    def _on_output(self, fd: int, final: bool = False) -> None:
        stream, dec = self._out_fds[fd]
        for _ in range(16):
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                text = dec.decode(b"", final=True)
                if text:
                    from engine import events as ev

                    self.emit(ev.Output(self.id, self.now(), stream=stream, data=text))
                self._loop.remove_reader(fd)
                os.close(fd)
                del self._out_fds[fd]
                return
            text = dec.decode(chunk)
            if text:
                from engine import events as ev

                self.emit(ev.Output(self.id, self.now(), stream=stream, data=text))
            if not final and len(chunk) < 65536:
                return

    def _drain_output(self) -> None:
        for fd in list(self._out_fds):
            self._on_output(fd, final=True)
        for fd in list(self._out_fds):  # still open (a descendant escaped? impossible): close
            self._loop.remove_reader(fd)
            os.close(fd)
            del self._out_fds[fd]

    # --- control messages ------------------------------------------------------------------------

    def _on_ctrl(self) -> None:
        assert self._ctrl is not None
        while True:
            try:
                data, fds = recv_fds(self._ctrl, 65536, 64)
            except BlockingIOError:
                return
            except OSError:
                data, fds = b"", []
            if not data:
                self._on_eof()
                return
            msg = loads(data)
            self._handle(msg, fds)

    def _handle(self, msg: dict[str, Any], fds: list[int]) -> None:
        t = msg.get("t")
        if t == "init":
            self.init_pid = int(msg["pid"])
            try:
                self._pidfd = libc.pidfd_open(self.init_pid)
            except OSError:
                self._pidfd = None
        elif t == "net":
            self._start_network(msg, fds)
            fds = []
        elif t == "pty" and fds and self._relay is not None:
            self._relay.start(fds.pop(0))
        elif t == "listener" and fds:
            self._listener = fds[0]
            self._start_listener()
        elif t == "started":
            self.main_pid_inside = int(msg["pid"])
            pending, self._pending_signals = self._pending_signals, []
            for sig in pending:
                self.send_signal(sig)
            plan = self._plan_obj
            self.result.isolation = self._isolation(plan)
            self.result.limits = self._limits_dict()
            self.result.degraded = list(self.degraded)
            if self._wants_events():
                from engine import events as ev

                # stamped no later than what it reports first (the main process's exec)
                ts = min([e.ts for e in self._early], default=self.now())
                self.emit(ev.Started(self.id, ts, argv=self.argv, profile=self.profile.name,
                                     pid=self.init_pid or 0, isolation=self.result.isolation,
                                     limits=self.result.limits, degraded=tuple(self.degraded),
                                     profile_source=self.profile.source or ""))
            self._start_sources()
        elif t == "exec_error":
            self._exec_error = (int(msg["errno"]), int(msg["stage"]))
        elif t == "error":
            self._setup_error = f"{msg.get('stage')}: {msg.get('msg')}"
        elif t == "warning":
            self.degraded.append(str(msg.get("msg")))
        elif t == "main_exit":
            self._main_status = msg.get("status")
        elif t == "init_exit":
            self._on_init_exit(int(msg["status"]))
        for fd in fds[1:] if t == "listener" else fds:
            os.close(fd)

    def _on_eof(self) -> None:
        if self._ctrl is not None:
            self._loop.remove_reader(self._ctrl.fileno())
            self._ctrl.close()
            self._ctrl = None
        if self._await_eof:
            self._await_eof = False
            if self._eof_guard is not None:
                self._eof_guard.cancel()
            self._finish_last()
        elif not self._closing:
            # the keeper died without saying goodbye: treat as a setup failure
            self._on_init_exit(None)

    # --- denials (seccomp user notification) ------------------------------------------------------

    def _start_listener(self) -> None:
        from engine.sources.denials import DenialListener

        assert self._listener is not None and self._filter is not None
        self._denials = DenialListener(self, self._listener, self._filter)
        if self.live:
            from engine.sources.processes import ProcessTracker

            self.processes = ProcessTracker(self, self.sample_interval)
            self._denials.tracker = self.processes
        if self._observing():
            from engine.sources.observe import attach

            attach(self, self._denials)
        self._denials.start()

    def _observing(self) -> bool:
        """Whether engine.sources.observe has anything to add: it traces and reports only
        for learn, observed paths, ask, or a live run (connection attempts)."""
        return bool(self.learn or self.observe_paths or self.live or self.ask is not None)

    def _start_network(self, msg: dict[str, Any], fds: list[int]) -> None:
        """PID 1 sent the sockets it made in the sandbox's namespace: serve them."""
        from engine.network.policy import HostsMap
        from engine.network.service import NetworkService, adopt_sockets

        socks = adopt_sockets([str(n) for n in msg.get("names", [])], fds)
        hosts = HostsMap([*self.profile.network.hosts, *self.hosts.items()])
        self.network = NetworkService(self, self.profile.network.allow, hosts, socks)
        self.network.start()

    def on_main_exec(self, host_pid: int) -> None:
        """The main process is about to exec (it waits for our answer): snapshot the
        workspace now, so everything the program creates counts as added."""
        self.main_host_pid = host_pid
        if self.watch_files:
            from engine.sources import make_file_watcher

            make_file_watcher(self, host_pid).snapshot()

    def _start_sources(self) -> None:
        if not self.live:
            return
        from engine.sources import start_sources

        self._sources = start_sources(self)

    # --- the end ----------------------------------------------------------------------------------

    def _on_init_exit(self, init_status: int | None) -> None:
        """PID 1 is gone: stop the sources, take the last reading, tell the keeper to clean
        up, and finish when it says goodbye (EOF on the control socket)."""
        if self._closing:
            return
        self._closing = True
        if self._timeout_handle:
            self._timeout_handle.cancel()
        if self._sources:
            import asyncio

            asyncio.get_running_loop().create_task(self._stop_sources(init_status))
        else:
            self._finish_report(init_status)

    async def _stop_sources(self, init_status: int | None) -> None:
        for src in self._sources:
            try:
                await src.stop()
            except Exception as err:  # noqa: BLE001
                self.degraded.append(f"{type(src).__name__}: {err}")
        self._finish_report(init_status)

    def _finish_report(self, init_status: int | None) -> None:
        if self._denials is not None:
            self._denials.stop()
        self._drain_output()
        self.restore_terminal()  # the last of the pty's output, and the caller's modes back
        sample = None
        if self._cgroup is not None:
            try:
                sample = self._cgroup.sample()
            except OSError:
                sample = None
        if self.network is not None:
            self.network.stop()  # open connections end now: their last events come first
        self._compute_result(init_status, sample)
        self.result.network = (self.network.summary() if self.network is not None
                               else {"mode": self.profile.network.mode})
        if self._denials is not None:
            self.result.denials = self._denials.summary()
            self.result.denied_args = dict(self._denials.samples)
        if self.observer is not None:
            self.observer.finish(self.result)
        if self._ctrl is None:
            self._finish_last()
            return
        # tell the keeper it may clean up, then wait for its goodbye (EOF)
        self._await_eof = True
        try:
            self._ctrl.send(b"done")
        except OSError:
            pass
        self._eof_guard = self._loop.call_later(5.0, self._on_eof)

    def _finish_last(self) -> None:
        from engine.spawner import InlineSpawner

        if self._keeper_pid is not None and isinstance(self._spawner, InlineSpawner):
            _reap(self._keeper_pid)
        self._remove_cgroup()
        if self.files is not None:
            self.files.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self._listener is not None:
            os.close(self._listener)
            self._listener = None
        r = self.result
        if self._wants_events():
            self._emit_exited(r)
        if self._queue is not None:
            self._queue.put_nowait(None)
        self._finished = True
        if self._done is not None and not self._done.done():
            self._done.set_result(r)

    def _emit_exited(self, r: Result) -> None:
        from engine import events as ev

        self.emit(ev.Exited(self.id, self.now(), exit_code=r.exit_code, signal=r.signal,
                            oom_killed=r.oom_killed, timed_out=r.timed_out,
                            seccomp_killed=r.seccomp_killed, pids_limit_hit=r.pids_limit_hit,
                            memory_limit_hit=r.memory_limit_hit, wall_seconds=r.wall_seconds,
                            cpu_seconds=r.cpu_seconds, peak_memory=r.peak_memory,
                            reason=r.message))

    def _remove_cgroup(self) -> None:
        if self._cgroup is not None:
            try:
                self._cgroup.remove()
            except (OSError, EngineError) as err:
                self.degraded.append(f"cgroup removal: {err}")

    def _compute_result(self, init_status: int | None, sample: Any) -> None:
        r = self.result
        r.wall_seconds = round(time.monotonic() - self._t0, 6)
        if not r.isolation and hasattr(self, "_plan_obj"):
            r.isolation = self._isolation(self._plan_obj)
            r.limits = self._limits_dict()
        r.degraded = list(self.degraded)
        if sample is not None:
            if sample.cpu_usage_ns is not None:
                r.cpu_seconds = round(sample.cpu_usage_ns / 1e9, 6)
            r.peak_memory = sample.memory_peak
            r.oom_killed = bool(sample.oom_kills)
            r.pids_limit_hit = bool(sample.pids_limit_hits)
            r.memory_limit_hit = bool(sample.memory_limit_hits)
        lim = self._limits()
        status = self._main_status
        if self._setup_error and status is None:
            r.exit_code = 125
            r.error = self._setup_error
            r.message = f"flue: could not set up the sandbox: {self._setup_error}"
            r.oom_killed = False
            return
        if self._exec_error is not None:
            eno, _stage = self._exec_error
            r.exit_code = 127 if eno == _errno.ENOENT else 126
            what = "command not found" if eno == _errno.ENOENT else "cannot execute"
            r.message = f"flue: {what}: {self.argv[0]} ({os.strerror(eno)})"
            return
        if status is None:
            # PID 1 died before reporting: killed from outside (timeout, kill, OOM of init)
            sig = os.WTERMSIG(init_status) if init_status and os.WIFSIGNALED(init_status) else 9
            r.signal = sig
            r.exit_code = 128 + sig
        elif os.WIFSIGNALED(status):
            r.signal = os.WTERMSIG(status)
            r.exit_code = 128 + r.signal
        else:
            r.exit_code = os.WEXITSTATUS(status)
        r.timed_out = self._timed_out
        r.seccomp_killed = r.signal == _signal.SIGSYS
        if r.timed_out:
            r.message = f"flue: timed out after {lim.timeout:g} s; the sandbox was killed"
        elif r.signal == _signal.SIGKILL and r.oom_killed:
            r.message = (f"flue: out of memory: killed by the OOM killer at the memory limit "
                         f"({_fmt_bytes(lim.memory)})")
        elif r.seccomp_killed:
            r.message = ("flue: killed by seccomp (SIGSYS): a syscall of another ABI (x32, "
                         "i386) or one the profile's `kill` list names")
        elif r.pids_limit_hit:
            r.message = (f"flue: pids limit hit: the sandbox tried to exceed {lim.pids} processes "
                         "(forks were refused)")
        elif r.oom_killed:
            r.message = (f"flue: out of memory: a process was killed at the memory limit "
                         f"({_fmt_bytes(lim.memory)})")
        elif r.signal is not None:
            r.message = f"flue: the command was killed by {signal_name(r.signal)}"


def _check_hosts(hosts: Mapping[str, str]) -> dict[str, str]:
    from engine.network.policy import RuleError, check_address, check_name

    out = {}
    for name, addr in hosts.items():
        try:
            wild = name.startswith("*.")
            key = ("*." if wild else "") + check_name(name[2:] if wild else name)
            out[key] = check_address(addr)
        except RuleError as err:
            raise LaunchError(f"hosts: {err}", fix=err.fix) from None
    return out


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "none"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


def _reap(pid: int) -> None:
    """The keeper exits right after its goodbye; wait for it (bounded: 2 s), woken by its
    pidfd the moment it is gone rather than polling."""
    import select

    try:
        pidfd = libc.pidfd_open(pid)
    except OSError:
        pidfd = -1
    try:
        deadline = time.monotonic() + 2.0
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            left = deadline - time.monotonic()
            if done or left <= 0:
                return
            if pidfd >= 0:
                select.select([pidfd], [], [], left)
            else:
                time.sleep(0.001)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


_fork_server: Any = None


def _default_spawner() -> Any:
    from engine.spawner import ForkServer, InlineSpawner, single_threaded

    global _fork_server
    if _fork_server is not None:
        return _fork_server
    if single_threaded():
        return InlineSpawner()
    _fork_server = ForkServer()
    return _fork_server


def run_sync(argv: Sequence[str], profile: Profile, **kw: Any) -> Result:
    """Blocking facade: run one sandbox to completion."""

    if kw.get("live") is False and not kw.get("capture_output"):
        return Sandbox(argv, profile, **kw).run_blocking()
    import asyncio

    async def go() -> Result:
        return await Sandbox(argv, profile, **kw).run()

    return asyncio.run(go())
