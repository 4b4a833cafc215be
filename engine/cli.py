"""``flue``: run commands in a sandbox, check the machine, manage profiles.

    flue run [-p PROFILE] [--memory SIZE] [--cpus N] [--pids N] [--timeout S] [--net MODE]
             [--allow-domain D]... [--resolve NAME=ADDRESS]...
             [--bind SRC[:DST][:ro|:rw]]... [--env K=V]... [--workspace DIR]
             [--report FILE] [--events FILE] -- CMD [ARG...]
    flue learn [-p BASE] [-o OUT.toml] [run options] -- CMD [ARG...]
    flue explain REPORT.json|EVENTS.jsonl
    flue doctor
    flue profiles list | show NAME | validate FILE
    flue profiles relax|tighten PROFILE --from RUN... [--write]
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

EXIT_FLUE = 125


def _err(msg: str) -> None:
    try:
        sys.stderr.write(msg.rstrip("\n") + "\n")
        sys.stderr.flush()
    except OSError:
        # nowhere to say it (a terminal that hung up: EIO; a closed pipe): the report and
        # the exit code still count. What stays buffered goes to /dev/null, or flushing it
        # at exit would fail again and make the exit status 120
        try:
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            os.dup2(null, sys.stderr.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass


def _fail(err: BaseException) -> int:
    from engine.errors import EngineError

    if isinstance(err, EngineError):
        lines = err.render().splitlines()
        _err("flue: " + lines[0])
        for line in lines[1:]:
            _err("  " + line)
        return err.exit_code
    _err(f"flue: {err}")
    return EXIT_FLUE


def _parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(prog="flue", description="Run a command in a lightweight sandbox.")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a command in a sandbox",
                       usage="flue run [options] -- CMD [ARG...]")
    r.add_argument("-p", "--profile", default="default", help="profile name or path (default: default)")
    r.add_argument("--memory", help="memory limit, e.g. 512M")
    r.add_argument("--cpus", help="CPU quota in CPUs, e.g. 0.5")
    r.add_argument("--pids", help="maximum number of processes")
    r.add_argument("--timeout", help="wall-clock timeout in seconds (or 30s, 10m)")
    r.add_argument("--net", choices=("none", "loopback", "allowlist"), help="network mode")
    r.add_argument("--allow-domain", action="append", default=[], metavar="D",
                   help="allow outbound connections to D (NAME, *.DOMAIN, NAME:PORT); "
                   "implies --net allowlist; repeatable")
    r.add_argument("--resolve", action="append", default=[], metavar="NAME=ADDRESS",
                   help="allowlist mode: connect to ADDRESS for NAME instead of asking the "
                   "system resolver; repeatable")
    r.add_argument("--bind", action="append", default=[], metavar="SRC[:DST][:ro|:rw]",
                   help="bind a host path (read-only unless :rw)")
    r.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable inside")
    r.add_argument("--workspace", metavar="DIR", help="bind DIR read-write as /work")
    r.add_argument("--report", metavar="FILE", help="write a JSON report of the run")
    r.add_argument("--events", metavar="FILE", help="write the event stream as JSON lines")
    r.add_argument("--host-uid", type=int, help="as root: host uid the sandbox's user maps to")
    r.add_argument("--allow-unlimited", action="store_true",
                   help="run even when the profile's limits cannot be enforced here")
    r.add_argument("--no-observe", action="store_true",
                   help="answer denials with a plain errno filter (no user notification)")
    r.add_argument("--sample-interval", type=float, default=0.25, metavar="S",
                   help="resource sample period in seconds (default 0.25)")
    r.add_argument("--observe-paths", action="store_true",
                   help="report path lookups that fail inside where the host has the path "
                   "(for flue explain; each lookup costs a round trip to the supervisor)")
    t = r.add_mutually_exclusive_group()
    t.add_argument("-t", "--tty", dest="tty", action="store_const", const="on", default="auto",
                   help="give the sandbox a terminal of its own (a pty relayed to flue's "
                   "stdio) even when none of stdin, stdout, stderr is a terminal; by default "
                   "it gets one for those that are")
    t.add_argument("--no-tty", dest="tty", action="store_const", const="off",
                   help="pass flue's stdio to the sandbox as it is, a terminal too (then the "
                   "sandbox reads the terminal even when flue is in the background)")
    r.add_argument("command", nargs=argparse.REMAINDER)  # as _parse_run_fast: keep in step

    from engine import cli_tools

    cli_tools.add_learn_parser(sub)
    cli_tools.add_explain_parser(sub)

    sub.add_parser("doctor", help="check what this machine supports, with fixes")

    pr = sub.add_parser("profiles", help="list, show or validate profiles")
    psub = pr.add_subparsers(dest="pcmd", required=True)
    psub.add_parser("list", help="built-in and user profiles")
    sh = psub.add_parser("show", help="the resolved profile")
    sh.add_argument("name")
    va = psub.add_parser("validate", help="check a profile file")
    va.add_argument("file")
    cli_tools.add_tune_parsers(psub)
    return p


# `flue run`'s options, for the fast parser below: name -> (dest, kind); kinds: "value",
# "append", "int", "float", a tuple of choices, or ("const", dest value)
_RUN_OPTS: dict[str, tuple[str, Any]] = {
    "-p": ("profile", "value"), "--profile": ("profile", "value"),
    "--memory": ("memory", "value"), "--cpus": ("cpus", "value"), "--pids": ("pids", "value"),
    "--timeout": ("timeout", "value"), "--net": ("net", ("none", "loopback", "allowlist")),
    "--allow-domain": ("allow_domain", "append"), "--resolve": ("resolve", "append"),
    "--bind": ("bind", "append"), "--env": ("env", "append"),
    "--workspace": ("workspace", "value"), "--report": ("report", "value"),
    "--events": ("events", "value"), "--host-uid": ("host_uid", "int"),
    "--sample-interval": ("sample_interval", "float"),
    "--allow-unlimited": ("allow_unlimited", ("const", True)),
    "--no-observe": ("no_observe", ("const", True)),
    "--observe-paths": ("observe_paths", ("const", True)),
    "-t": ("tty", ("const", "on")), "--tty": ("tty", ("const", "on")),
    "--no-tty": ("tty", ("const", "off")),
}


def _parse_run_fast(argv: list[str]) -> SimpleNamespace | None:
    """``flue run [options] -- CMD...`` parsed as argparse would, without importing argparse
    (it and what it pulls in cost a tenth of a cold start). Anything it is not sure of (help,
    abbreviations, bad values, no command, a value that looks like an option) returns None and
    argparse parses instead, with its messages."""
    if not argv or argv[0] != "run":
        return None
    a = SimpleNamespace(
        cmd="run", profile="default", memory=None, cpus=None, pids=None, timeout=None, net=None,
        allow_domain=[], resolve=[], bind=[], env=[], workspace=None, report=None, events=None,
        host_uid=None, allow_unlimited=False, no_observe=False, sample_interval=0.25,
        observe_paths=False, tty="auto", command=[])
    tty_set = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            a.command = argv[i:]
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        spec = _RUN_OPTS.get(name)
        if spec is None:
            return None
        dest, kind = spec
        if isinstance(kind, tuple) and kind[0] == "const":
            if eq or value:
                return None
            if dest == "tty":
                if tty_set:
                    return None  # -t and --no-tty exclude each other: argparse says so
                tty_set = True
            setattr(a, dest, kind[1])
            i += 1
            continue
        if not eq and not value:
            i += 1
            if i >= len(argv):
                return None
            value = argv[i]
        if value.startswith("-"):
            return None
        try:
            if kind == "append":
                getattr(a, dest).append(value)
            elif kind == "int":
                setattr(a, dest, int(value))
            elif kind == "float":
                setattr(a, dest, float(value))
            elif isinstance(kind, tuple) and value not in kind:
                return None
            else:
                setattr(a, dest, value)
        except ValueError:
            return None
        i += 1
    return a if a.command and a.command != ["--"] else None


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for key in ("memory", "cpus", "pids", "timeout"):
        val = getattr(a, key)
        if val is None:
            continue
        # numbers from the command line are typed like the TOML would be; anything else goes
        # to the loader as written, which explains what it expected
        if key == "pids" and val.isdigit():
            val = int(val)
        elif key in ("cpus", "timeout"):
            try:
                val = float(val) if key == "cpus" or val.replace(".", "", 1).isdigit() else val
            except ValueError:
                pass
        limits[key] = val
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = limits
    network: dict[str, Any] = {}
    if a.net:
        network["mode"] = a.net
    if a.allow_domain:
        network["mode"] = a.net or "allowlist"
        network["allow"] = list(a.allow_domain)
    if a.resolve:
        hosts = {}
        for item in a.resolve:
            name, sep, addr = item.partition("=")
            if not sep or not name or not addr:
                from engine.errors import LaunchError

                raise LaunchError(f"bad --resolve {item!r}", fix="write --resolve NAME=ADDRESS")
            hosts[name] = addr
        network["hosts"] = hosts
    if network:
        if a.allow_domain and network["mode"] != "allowlist":
            from engine.errors import LaunchError

            raise LaunchError(f"--allow-domain needs --net allowlist, not --net {a.net}",
                              fix="leave --net out (--allow-domain implies allowlist)")
        out["network"] = network
    return out


def cmd_run(a: argparse.Namespace) -> int:
    from engine.profile_cache import load_profile_cached as load_profile
    from engine.rootfs import parse_bind

    argv = list(a.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        _err("flue: no command given\n  fix: flue run [options] -- CMD [ARG...]")
        return EXIT_FLUE
    env = []
    for item in a.env:
        if "=" not in item:
            _err(f"flue: bad --env {item!r}\n  fix: write --env KEY=VALUE")
            return EXIT_FLUE
        k, v = item.split("=", 1)
        env.append((k, v))
    profile = load_profile(a.profile, overrides=_overrides(a) or None)
    binds = tuple(parse_bind(b) for b in a.bind)
    if not a.events:
        return _run_blocking(a, argv, profile, binds, env)
    import asyncio

    return asyncio.run(_run(a, argv, profile, binds, env))


FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")


def _run_blocking(a: argparse.Namespace, argv: list[str], profile: Any, binds: Any,
                  env: list[tuple[str, str]]) -> int:
    """The fast path: no live event stream, so no asyncio (its import alone costs more than
    setting up the sandbox)."""
    from engine._lean import signal
    from engine.sandbox import Sandbox

    sb = Sandbox(argv, profile, workspace=a.workspace, binds=binds, env=env,
                 host_uid=a.host_uid, allow_unlimited=a.allow_unlimited,
                 observe=not a.no_observe, sample_interval=a.sample_interval, live=False,
                 observe_paths=a.observe_paths, tty=_tty(a))
    sigs = [getattr(signal, name) for name in FORWARDED]
    old = {sig: signal.signal(sig, lambda signo, _frame: sb.send_signal(signo)) for sig in sigs}
    try:
        result = sb.run_blocking()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return _conclude(a, argv, profile, result)


async def _run(a: argparse.Namespace, argv: list[str], profile: Any, binds: Any,
               env: list[tuple[str, str]]) -> int:
    import asyncio
    import signal

    from engine.sandbox import Sandbox

    sb = Sandbox(argv, profile, workspace=a.workspace, binds=binds, env=env,
                 host_uid=a.host_uid, allow_unlimited=a.allow_unlimited,
                 observe=not a.no_observe, sample_interval=a.sample_interval,
                 watch_files=bool(a.events), live=bool(a.events),
                 observe_paths=a.observe_paths, tty=_tty(a))
    events_file = _open_output(a.events) if a.events else None
    if events_file is not None:
        sb.subscribe(event_sink(events_file))
    loop = asyncio.get_running_loop()
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                 signal.SIGUSR2, signal.SIGWINCH)
    # handlers first: a signal during set-up is held by the sandbox and delivered when its
    # main process runs, instead of killing flue half-way (which would leak the cgroup)
    for sig in forwarded:
        loop.add_signal_handler(sig, sb.send_signal, sig)
    try:
        await sb.start()
        result = await sb.wait()
    finally:
        sb.restore_terminal()
        for sig in forwarded:
            loop.remove_signal_handler(sig)
        if events_file is not None:
            events_file.close()
    return _conclude(a, argv, profile, result)


def _open_output(path: str) -> Any:
    """Open an output file without following a symlink at its name: the file may sit in a
    workspace the sandbox could write, and must not be redirected to another file."""
    from engine.errors import LaunchError

    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as err:
            if err.errno != 40:  # ELOOP: the name is a symlink (planted?): replace the link
                raise
            os.unlink(path)
            fd = os.open(path, flags | os.O_EXCL, 0o644)
    except OSError as err:
        raise LaunchError(f"cannot write {path}: {err.strerror}",
                          fix="check that the directory exists and is writable") from err
    return os.fdopen(fd, "w")


def event_sink(f: Any) -> Callable[[Any], None]:
    """A subscriber writing each event as a JSON line to ``f``, flushed once per turn of the
    running loop: whoever tails the file sees events as they happen (a flood's burst is one
    write), not a block at a time."""
    import asyncio

    loop = asyncio.get_running_loop()
    pending = False

    def flush() -> None:
        nonlocal pending
        pending = False
        try:
            f.flush()
        except (OSError, ValueError):  # closed at the end of the run; a full disk
            pass

    def write(event: Any) -> None:
        nonlocal pending
        f.write(event.to_json() + "\n")
        if not pending:
            pending = True
            loop.call_soon(flush)
    return write


def _write_atomically(path: str, text: str) -> None:
    """Write a new file next to ``path`` (O_EXCL: never through a planted name), fsync, and
    rename it over ``path`` (rename replaces a symlink, never its target)."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".flue-report-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _conclude(a: argparse.Namespace, argv: list[str], profile: Any, result: Any) -> int:
    """The `flue:` lines, the report file, and the exit code."""
    if result.message:
        _err(result.message)
    refused = [(k, v) for k, v in (result.network.get("hosts") or {}).items() if v["refused"]]
    if refused:
        why = {"no-match": "not in the allowlist", "port": "port not allowed",
               "ip-address": "an IP address"}
        shown = ", ".join(f"{k} ({why.get(v['rule'], v['rule'])})" for k, v in refused[:3])
        more = f" and {len(refused) - 3} more" if len(refused) > 3 else ""
        _err(f"flue: network: refused {shown}{more}")
    for note in result.degraded:
        if note.startswith("no cgroup"):
            continue
        _err(f"flue: degraded: {note}")
    if a.report:
        report = result.to_dict()
        report["command"] = argv
        report["profile"] = profile.name
        report["profile_source"] = profile.source or ""
        import json

        _write_atomically(a.report, json.dumps(report, indent=2) + "\n")
    return int(result.exit_code)


def cmd_doctor(a: argparse.Namespace) -> int:
    from engine.doctor import run_checks

    worst = 0
    for check in run_checks():
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check.status]
        print(f"[{mark}] {check.name}: {check.summary}")
        for line in check.details:
            print(f"       {line}")
        if check.fix and check.status != "ok":
            print(f"       fix: {check.fix}")
        worst = max(worst, {"ok": 0, "warn": 0, "fail": 1}[check.status])
    return worst


def cmd_profiles(a: argparse.Namespace) -> int:
    from engine import profile as prof

    if a.pcmd == "list":
        for info in prof.list_profiles():
            where = "built-in" if info.builtin else str(info.path)
            print(f"{info.name:<12} {where:<10} {info.description}")
        return 0
    if a.pcmd == "show":
        print(describe_profile(prof.load_profile(a.name)))
        return 0
    if a.pcmd == "validate":
        p = prof.load_profile(a.file)
        print(f"{a.file}: ok ({p.name}: {len(p.seccomp.allow)} syscalls allowed)")
        return 0
    return 2


def describe_profile(p: Any) -> str:
    """A resolved profile, for people: where it comes from and what it allows."""
    from engine.profile import format_size

    def size(n: int | None) -> str:
        return "none" if n is None else format_size(n)

    fs, sc, lim = p.filesystem, p.seccomp, p.limits
    lines = [f"profile {p.name}" + (f" — {p.description}" if p.description else "")]
    if p.chain:
        lines.append("from     " + " <- ".join(reversed(p.chain)))
    lines.append(f"user     {p.user.name} (uid {p.user.uid}, gid {p.user.gid}), "
                 f"HOME {p.user.home_dir}, hostname {p.hostname}")
    lines.append(f"files    root {size(fs.root_size)}, /tmp {size(fs.tmp_size)}, "
                 f"/work {size(fs.workspace_size)}, HOME {size(fs.home_size)}, "
                 f"/dev/shm {size(fs.shm_size)}; workdir {fs.workdir}")
    lines.append("system   " + ", ".join(fs.system) + " (read-only)")
    if fs.binds:
        lines.append("binds    " + ", ".join(
            f"{b.src} -> {b.dst} ({'rw' if b.rw else 'ro'}{', optional' if b.optional else ''})"
            for b in fs.binds))
    net = p.network.mode
    allow = getattr(p.network, "allow", ())
    lines.append("network  " + net + (f": {', '.join(allow)}" if allow else ""))
    lines.append(f"seccomp  {len(sc.allow)} syscalls allowed from: " + " ".join(sc.allow_spec))
    if sc.deny_spec:
        lines.append("         denied: " + " ".join(sc.deny_spec))
    import errno as _errno

    answers = ", ".join(f"{n} {_errno.errorcode.get(e, e)}" for n, e in sc.errno)
    lines.append(f"         answer {_errno.errorcode.get(sc.default_errno, sc.default_errno)}"
                 + (f"; {answers}" if answers else "")
                 + (f"; kill on {' '.join(sorted(sc.kill))}" if sc.kill else ""))
    lines.append("         sockets " + " ".join(sc.socket_families)
                 + ("; namespaces allowed" if sc.allow_namespaces else ""))
    cpus = "none" if lim.cpus is None else f"{lim.cpus:g}"
    timeout = "none" if not lim.timeout else f"{lim.timeout:g} s"
    lines.append(f"limits   memory {size(lim.memory)}, cpus {cpus}, pids {lim.pids or 'none'}, "
                 f"timeout {timeout}")
    lines.append("env      pass " + " ".join(p.env.passthrough)
                 + ("; set " + " ".join(f"{k}={v}" for k, v in p.env.set) if p.env.set else ""))
    return "\n".join(lines)


def _tty(a: argparse.Namespace) -> Any:
    if a.tty == "off" or (a.tty == "auto" and not any(_isatty(fd) for fd in (0, 1, 2))):
        return None  # what plan_tty says then, without importing the terminal relay
    from engine.terminal import plan_tty

    return plan_tty(a.tty)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _ensure_std_fds() -> None:
    """engine.terminal.ensure_std_fds, without importing the terminal relay: /dev/null on
    whichever of fds 0-2 is closed, so that nothing flue opens later (its event loop's epoll,
    a socket) lands there and is handed to the sandbox as stdio."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError as err:
            if err.errno != 9:  # EBADF
                continue
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _exit_now(code: int) -> None:
    """End the program here, after a blocking run, without the interpreter's finalisation:
    it collects and tears down every object, and each write to a page the sandbox's forks
    shared faults: 10 ms or more of a cold start spent on a process about to vanish. Nothing
    is left to finalise (the report is written and closed, no atexit handler of ours);
    stdio is flushed first. Only when main() is the program (argv None), never for callers."""
    for stream in (sys.stdout, sys.stderr):  # None when flue started with that fd closed
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    _ensure_std_fds()  # before anything opens an fd that would land on a closed 0, 1 or 2
    args = sys.argv[1:] if argv is None else argv
    a: Any = _parse_run_fast(args) or _parser().parse_args(args)
    try:
        if a.cmd == "run":
            code = cmd_run(a)
            if argv is None and not a.events:
                _exit_now(code)
            return code
        if a.cmd == "doctor":
            return cmd_doctor(a)
        if a.cmd == "profiles":
            if a.pcmd in ("relax", "tighten"):
                from engine.cli_tools import cmd_tune

                return cmd_tune(a)
            return cmd_profiles(a)
        if a.cmd == "learn":
            from engine.cli_tools import cmd_learn

            return cmd_learn(a)
        if a.cmd == "explain":
            from engine.cli_tools import cmd_explain

            return cmd_explain(a)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        from engine.errors import EngineError

        if not isinstance(err, EngineError) and os.environ.get("FLUE_DEBUG"):
            raise
        return _fail(err)
    return 2


if __name__ == "__main__":
    sys.exit(main())
