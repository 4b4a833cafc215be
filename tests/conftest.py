"""Fixtures for the real-sandbox tests.

``flue`` runs the real CLI (``python -m engine run ...``, what ``flue run`` is) in two modes:

- ``root``: as this process's user (root in CI), with this interpreter and the checkout;
- ``user``: as an unprivileged uid (``FLUE_TEST_UID``, default 4242), with the system's
  ``python3`` and a world-readable copy of the engine and its dependencies (see
  ``helpers/runtime.py``), started through ``helpers/dropprivs.py``. By default such a run
  starts inside a cgroup subtree delegated to the uid (``helpers/cgroups.py``), so the
  profile's limits are enforced exactly as for root; ``delegate=False`` runs it without one.

Every run has a timeout, its report file read back, and a check that it left no sandbox
cgroup behind. Tests are skipped only when a kernel feature is missing, with the reason
``flue doctor`` gives for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from helpers import cgroups as hcg
from helpers.runtime import REPO, make_runtime, system_python

SANDBOX_UID = int(os.environ.get("FLUE_TEST_UID", "4242"))
SANDBOX_GID = SANDBOX_UID
RUN_TIMEOUT = 60.0  # seconds for one `flue run`; the OOM and fork-bomb runs bound themselves
MODES = ("root", "user")
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    """One finished `flue run`."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    argv: list[str]
    mode: str
    pid: int = 0
    cgroup_leftovers: list[str] = field(default_factory=list)

    @property
    def flue_lines(self) -> list[str]:
        """The lines flue itself wrote to stderr (they start with ``flue:``)."""
        return [ln for ln in self.stderr.splitlines() if ln.startswith("flue:")]

    def __str__(self) -> str:
        return (f"[{self.mode}] exit {self.returncode}: {' '.join(self.argv[-6:])}\n"
                f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}")


class Handle:
    """A `flue run` started in the background (``Flue.start``)."""

    def __init__(self, flue: Flue, proc: subprocess.Popen[bytes], argv: list[str],
                 report: Path | None, dlg: hcg.Delegation | None) -> None:
        self.flue = flue
        self.proc = proc
        self.argv = argv
        self.report_path = report
        self.dlg = dlg
        self.pid = proc.pid

    def read_until(self, text: str, timeout: float = 20.0) -> str:
        """Read stdout (a pipe) until ``text`` appears; returns what was read."""
        import select
        import time

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        out = b""
        deadline = time.monotonic() + timeout
        while text.encode() not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never appeared; read so far: {out!r}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"stdout closed before {text!r}; read: {out!r}; "
                                         f"stderr: {self._stderr_now()!r}")
                out += chunk
        self._early = getattr(self, "_early", b"") + out
        return out.decode(errors="replace")

    def _stderr_now(self) -> bytes:
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return b""
        return self.proc.stderr.read() if self.proc.stderr else b""

    def finish(self, timeout: float = RUN_TIMEOUT) -> Run:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            out, err = self.proc.communicate()
            raise AssertionError(f"flue run did not end within {timeout} s: {self.argv}\n"
                                 f"stderr: {err.decode(errors='replace')}") from None
        early = getattr(self, "_early", b"")
        return self.flue._result(self.proc.returncode, early + (out or b""), err or b"",
                                 self.argv, self.report_path, self.dlg, self.pid)

    def kill_all(self) -> None:
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- the runner


class Flue:
    """Runs the flue CLI as root or as the unprivileged test uid."""

    def __init__(self, mode: str, session: Session) -> None:
        self.mode = mode
        self.s = session
        self.uid = 0 if mode == "root" else SANDBOX_UID
        self.gid = 0 if mode == "root" else SANDBOX_GID
        self.home = session.homes[mode]
        self._cleanup: list[Any] = []

    # --- files the sandboxed uid can use

    def tmpdir(self, name: str = "d", mode: int = 0o755, owner: int | None = None) -> Path:
        """A fresh directory owned by ``owner`` (default: the uid flue runs as)."""
        d = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.s.scratch))
        os.chmod(d, mode)
        uid = self.uid if owner is None else owner
        os.chown(d, uid, uid if owner is not None else self.gid)
        return d

    def write_profile(self, text: str, name: str = "p.toml", directory: Path | None = None) -> Path:
        d = directory or self.tmpdir("profile")
        p = d / name
        p.write_text(textwrap.dedent(text).lstrip())
        os.chmod(p, 0o644)
        return p

    # --- command lines

    def base_argv(self, sub: str = "run") -> list[str]:
        if self.mode == "root":
            return [sys.executable, "-m", "engine", sub]
        return [self.s.py, "-m", "engine", sub]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": HOST_PATH,
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO) if self.mode == "root" else str(self.s.runtime),
        }
        if self.mode == "user":
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(extra or {})
        return env

    def _wrap(self, argv: list[str], dlg: hcg.Delegation | None,
              wrap: Sequence[str] = ()) -> list[str]:
        argv = [*wrap, *argv]
        if self.mode == "root":
            return argv
        procs: list[str] = []
        for f in dlg.procs_files if dlg else ():
            procs += ["--procs", f]
        return [self.s.py, str(self.s.dropprivs), str(self.uid), str(self.gid), *procs, "--",
                *argv]

    def _prepare(self, command: Sequence[str], args: Sequence[str], profile: str | Path | None,
                 report: bool, delegate: bool | None, allow_unlimited: bool | None,
                 wrap: Sequence[str] = (), sub: str = "run",
                 ) -> tuple[list[str], Path | None, hcg.Delegation | None]:
        self.s.require(self.mode, "user namespaces")
        self.s.require(self.mode, "seccomp")
        argv = self.base_argv(sub)
        if profile is not None:
            argv += ["-p", str(profile)]
        rep = None
        if report:
            rep = self.tmpdir("report") / "report.json"
            argv += ["--report", str(rep)]
        dlg = None
        if self.mode == "user":
            if delegate is None:
                delegate = True
            if delegate:
                dlg = hcg.delegate(self.uid, self.gid)
                self._cleanup.append(dlg)
            elif allow_unlimited is None:
                allow_unlimited = True
        if allow_unlimited:
            argv.append("--allow-unlimited")
        argv += [*args, "--", *command]
        return self._wrap(argv, dlg, wrap), rep, dlg

    def run(self, command: Sequence[str], *args: str, profile: str | Path | None = None,
            report: bool = True, input: bytes | str | None = None, stdin: Any = None,
            timeout: float = RUN_TIMEOUT, env: dict[str, str] | None = None,
            pass_fds: Sequence[int] = (), delegate: bool | None = None,
            allow_unlimited: bool | None = None, cwd: str | Path | None = None,
            wrap: Sequence[str] = (), sub: str = "run") -> Run:
        """Run ``flue run [args] -- command`` to completion. ``wrap`` is a command that
        execs flue (its arguments follow), run as the same user: e.g. a shell opening an fd.
        ``sub`` runs another subcommand that takes a command the same way (``learn``)."""
        argv, rep, dlg = self._prepare(command, args, profile, report, delegate, allow_unlimited,
                                       wrap, sub)
        if isinstance(input, str):
            input = input.encode()
        if stdin is None and input is None:
            stdin = subprocess.DEVNULL
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.env(env), cwd=cwd or self.s.scratch,
                                pass_fds=tuple(pass_fds), start_new_session=True)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            out, err = proc.communicate()
            raise AssertionError(f"[{self.mode}] flue run did not end within {timeout} s: "
                                 f"{argv}\nstderr: {err.decode(errors='replace')}") from None
        run = self._result(proc.returncode, out, err, argv, rep, dlg, proc.pid)
        # a finished run leaves no sandbox cgroup behind, whatever it did
        assert not run.cgroup_leftovers, f"leftover cgroups {run.cgroup_leftovers}\n{run}"
        return run

    def start(self, command: Sequence[str], *args: str, profile: str | Path | None = None,
              report: bool = True, stdin: Any = None, env: dict[str, str] | None = None,
              delegate: bool | None = None, allow_unlimited: bool | None = None,
              new_session: bool = True, wrap: Sequence[str] = ()) -> Handle:
        """Start ``flue run`` in the background; its stdout and stderr are pipes."""
        argv, rep, dlg = self._prepare(command, args, profile, report, delegate, allow_unlimited,
                                       wrap)
        proc = subprocess.Popen(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.env(env), cwd=self.s.scratch,
                                start_new_session=new_session)
        h = Handle(self, proc, argv, rep, dlg)
        self._cleanup.append(h)
        return h

    def start_python(self, code: str, *args: str, delegate: bool | None = None,
                     env: dict[str, str] | None = None) -> Handle:
        """Start a Python program (that uses the engine's API) as this mode's user, in a
        delegated cgroup like ``flue run``; its stdout and stderr are pipes."""
        dlg = None
        if self.mode == "user" and delegate is not False:
            dlg = hcg.delegate(self.uid, self.gid)
            self._cleanup.append(dlg)
        py = sys.executable if self.mode == "root" else self.s.py
        argv = self._wrap([py, "-c", textwrap.dedent(code), *args], dlg)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env(env), cwd=self.s.scratch,
                                start_new_session=True)
        h = Handle(self, proc, argv, None, dlg)
        self._cleanup.append(h)
        return h

    def cli(self, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Any other flue subcommand (``doctor``, ``profiles ...``), as this mode's user."""
        argv = self._wrap([*self.base_argv(args[0]), *args[1:]], None)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=self.env(), cwd=self.s.scratch, stdin=subprocess.DEVNULL,
                              check=False)

    def _result(self, code: int, out: bytes, err: bytes, argv: list[str], rep: Path | None,
                dlg: hcg.Delegation | None, pid: int) -> Run:
        report = None
        if rep is not None and rep.exists():
            report = json.loads(rep.read_text())
        if dlg is not None:
            leftovers = dlg.leftovers()
        else:
            leftovers = self.s.root_leftovers(pid)
        return Run(code, out.decode(errors="replace"), err.decode(errors="replace"), report,
                   argv, self.mode, pid, leftovers)

    def close(self) -> None:
        errors = []
        for item in reversed(self._cleanup):
            try:
                if isinstance(item, Handle):
                    if item.proc.poll() is None:
                        _kill(item.proc)
                        item.proc.communicate(timeout=10)
                    else:
                        item.proc.communicate(timeout=10)
                else:
                    item.remove()
            except Exception as e:  # noqa: BLE001 - report every cleanup failure
                errors.append(repr(e))
        self._cleanup.clear()
        if errors:
            raise RuntimeError("cleanup failed: " + "; ".join(errors))


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- the session


class Session:
    """Per-session state: the scratch tree, the unprivileged runtime, what doctor says."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.scratch = base / "scratch"
        self.scratch.mkdir(mode=0o755)
        os.chmod(self.scratch, 0o755)
        self.homes: dict[str, Path] = {}
        for mode, uid in (("root", 0), ("user", SANDBOX_UID)):
            h = base / f"home-{mode}"
            h.mkdir(mode=0o700)
            os.chown(h, uid, uid)
            self.homes[mode] = h
        self.py = system_python(SANDBOX_UID, SANDBOX_GID)
        self.runtime = make_runtime(base / "runtime")
        self.dropprivs = self.runtime / "dropprivs.py"
        shutil.copy2(HERE / "helpers" / "dropprivs.py", self.dropprivs)
        os.chmod(self.dropprivs, 0o644)
        # byte-compile the copy once, as its owner: the unprivileged runs cannot write pycs
        subprocess.run([self.py, "-m", "compileall", "-q", str(self.runtime)], check=False,
                       capture_output=True, timeout=120)
        self._check_runtime()
        self._doctor: dict[str, dict[str, tuple[str, str]]] = {}
        self._parents: list[str] | None = None

    def _check_runtime(self) -> None:
        want = f"{sys.version_info.major}.{sys.version_info.minor}"
        probe = subprocess.run(
            [self.py, str(self.dropprivs), str(SANDBOX_UID), str(SANDBOX_GID), "--", self.py,
             "-c", ("import sys, engine.cli, engine.sandbox, pyseccomp; "
             "print('%d.%d' % sys.version_info[:2])")],
            capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": HOST_PATH, "PYTHONPATH": str(self.runtime), "HOME": str(self.homes["user"])},
            cwd=self.scratch)
        if probe.returncode != 0 or probe.stdout.strip() != want:
            raise RuntimeError(f"the unprivileged runtime does not work (need python {want} "
                               f"at {self.py}): {probe.stdout}{probe.stderr}")

    def doctor(self, mode: str) -> dict[str, tuple[str, str]]:
        """``flue doctor`` as ``mode``'s user: check name -> (status, the line it printed)."""
        if mode not in self._doctor:
            f = Flue(mode, self)
            out = f.cli("doctor").stdout
            checks: dict[str, tuple[str, str]] = {}
            for line in out.splitlines():
                if line.startswith("[") and "]" in line:
                    status, rest = line[1:].split("]", 1)
                    name = rest.strip().split(":", 1)[0]
                    checks[name] = (status.strip().lower(), rest.strip())
            self._doctor[mode] = checks
        return self._doctor[mode]

    def require(self, mode: str, check: str) -> None:
        """Skip when ``flue doctor`` (as ``mode``'s user) finds ``check`` failing: a kernel
        feature is missing, and the skip reason is doctor's own line."""
        status, line = self.doctor(mode).get(check, ("missing", ""))
        if status == "missing":
            raise AssertionError(f"flue doctor printed no {check!r} check")
        if status == "fail":
            pytest.skip(f"flue doctor ({mode}): {line}")

    def root_parents(self) -> list[str]:
        if self._parents is None:
            from engine import cgroups

            pr = cgroups.probe()
            self._parents = list(dict.fromkeys(pr.v1_parents.values()))
            if pr.v2_base:
                self._parents.append(pr.v2_base)
        return self._parents

    def root_leftovers(self, pid: int) -> list[str]:
        """Sandbox groups a root `flue run` with ``pid`` left below this process's cgroups."""
        out = []
        for parent in self.root_parents():
            try:
                names = os.listdir(parent)
            except OSError:
                continue
            out += [os.path.join(parent, n) for n in names if n.startswith(f"flue-{pid}-")]
        return out


@pytest.fixture(scope="session")
def session() -> Iterator[Session]:
    if os.geteuid() != 0:
        pytest.skip("the real-sandbox tests run as root (they also drop to an unprivileged uid)")
    base = Path(tempfile.mkdtemp(prefix="flue-tests-"))
    os.chmod(base, 0o755)
    try:
        yield Session(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _flue_as(mode: str, session: Session) -> Iterator[Flue]:
    f = Flue(mode, session)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(params=MODES)
def flue(request: pytest.FixtureRequest, session: Session) -> Iterator[Flue]:
    """The flue CLI, as root and as an unprivileged uid (each test runs in both modes)."""
    yield from _flue_as(request.param, session)


@pytest.fixture
def flue_root(session: Session) -> Iterator[Flue]:
    """The flue CLI as root only (for what only root can ask for, e.g. --host-uid)."""
    yield from _flue_as("root", session)


@pytest.fixture
def flue_user(session: Session) -> Iterator[Flue]:
    """The flue CLI as the unprivileged uid only (for what only concerns that case)."""
    yield from _flue_as("user", session)


@pytest.fixture
def marker() -> str:
    """A string unique to this test, to find its processes in the host's /proc."""
    return f"flue-marker-{uuid.uuid4().hex[:12]}"
