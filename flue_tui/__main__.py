"""``flue-tui [-p PROFILE] [limits] [-- CMD ...]``: the workbench. With a command it launches at
once; without one it opens the launch form."""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flue_tui.runspec import QuickLimits


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flue-tui", usage="flue-tui [-p PROFILE] [options] [-- CMD [ARG...]]",
        description="flue's terminal workbench: run a command in a sandbox, watch what it "
        "does and what is refused, tune the profile, re-run, save.")
    p.add_argument("-p", "--profile", default="default", help="profile name or path")
    p.add_argument("--memory", default="", help="memory limit for this run, e.g. 512M")
    p.add_argument("--cpus", default="", help="CPU quota for this run, e.g. 0.5")
    p.add_argument("--pids", default="", help="process limit for this run")
    p.add_argument("--timeout", default="", help="wall-clock timeout, e.g. 30s")
    p.add_argument("--net", default="", choices=("", "none", "loopback", "allowlist"),
                   metavar="MODE", help="network mode for this run: none, loopback or "
                   "allowlist (default: the profile's)")
    p.add_argument("--allow-domain", action="append", default=[], metavar="D",
                   help="also allow D for this run (NAME, *.DOMAIN, NAME:PORT); implies "
                   "--net allowlist; repeatable")
    p.add_argument("--resolve", action="append", default=[], metavar="NAME=ADDRESS",
                   help="the proxy reaches NAME at ADDRESS instead of asking the system "
                   "resolver; repeatable")
    p.add_argument("--workspace", default="", metavar="DIR",
                   help="host directory bound read-write as /work (default: a private tmpfs)")
    p.add_argument("--allow-unlimited", action="store_true",
                   help="run even when the profile's limits cannot be enforced here (e.g. "
                   "unprivileged without a delegated cgroup); the status line then says so")
    p.add_argument("--share-dir", action="store_true",
                   help="bind each script's whole folder read-only, not only the script (for "
                   "a script that imports its neighbours); asks first when the folder is "
                   "your home or has dotfiles")
    p.add_argument("--ask", action="store_true",
                   help="ask mode: each refused syscall waits while you answer allow once, "
                   "allow always (into the draft profile), deny or deny always")
    p.add_argument("--ask-timeout", type=float, default=None, metavar="SECONDS",
                   help="an unanswered question is denied after this long (default: 30)")
    p.add_argument("--record", metavar="FILE", help="append every event as JSON lines to FILE")
    p.add_argument("--replay", metavar="FILE", help="play a recorded event stream instead of "
                   "running anything")
    p.add_argument("--replay-speed", type=float, default=1.0, metavar="X",
                   help="replay speed (0: all at once)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    return p


def quick_limits(a: argparse.Namespace) -> QuickLimits:
    """The per-run overrides the command line asked for."""
    from flue_tui.runspec import QuickLimits

    return QuickLimits(a.memory, a.cpus, a.pids, a.timeout, a.net,
                       allow=tuple(a.allow_domain), resolve=tuple(a.resolve))


# the cyclic garbage collector while flue-tui runs: a flood makes a batch of thousands of
# short-lived objects every 75 ms (output lines, strips, segments), which the default
# thresholds (700, 10, 10) promote and then scan in full-heap collections of 40-120 ms
# several times a second on a small machine -- a pause any keypress waits behind. Young
# collections are rarer (most of a batch is freed by reference counting before one runs)
# and a full collection waits for this many young-generation ones instead of 10; what
# exists once the app has started (modules, the screens, styles) is frozen out of them
# (``FlueApp.freeze_after_start``).
GC_THRESHOLDS = (5000, 10, 50)


@contextlib.contextmanager
def steady_gc() -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    command = list(a.command)
    if command and command[0] == "--":
        command = command[1:]
    from flue_tui.app import make_app

    limits = quick_limits(a)
    if a.ask_timeout is not None and not 0 < a.ask_timeout < float("inf"):
        print("flue-tui: --ask-timeout must be a number of seconds above 0", file=sys.stderr)
        return 2
    try:
        limits.apply(__import__("engine.profile.model", fromlist=["Profile"]).Profile("x"))
    except ValueError as err:
        print(f"flue-tui: {err}", file=sys.stderr)
        return 2
    if not a.replay:  # a profile that does not exist fails here, like `flue run -p`
        from engine.errors import EngineError
        from engine.profile.edit import locate

        try:
            locate(a.profile)
        except EngineError as err:
            print(f"flue-tui: {err.render()}", file=sys.stderr)
            return 2
    app = make_app(command or None, profile=a.profile, workspace=a.workspace, limits=limits,
                   replay=a.replay, replay_speed=a.replay_speed, record_to=a.record,
                   allow_unlimited=a.allow_unlimited, share_dirs=a.share_dir, ask=a.ask,
                   ask_timeout=a.ask_timeout)
    if a.replay and not command:
        from flue_tui.runspec import RunSpec

        first = app.bridge.events[0] if getattr(app.bridge, "events", None) else None
        argv0 = tuple(getattr(first, "argv", ()) or ("replay",))
        app.spec = RunSpec(argv=argv0, profile=a.profile)
    app.freeze_after_start = True
    with steady_gc():
        result = app.run()
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
