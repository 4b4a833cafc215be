"""The commands that answer "why does my tool break, and what is the least I must allow":

    flue learn [-p BASE] [-o OUT.toml] [--report FILE] [--events FILE] [run options] -- CMD
    flue explain REPORT.json|EVENTS.jsonl [-p PROFILE]
    flue profiles relax PROFILE --from REPORT.json|EVENTS.jsonl... [--write]
    flue profiles tighten PROFILE --from RUN... [--write]

``engine.cli`` parses the options and calls these. The work is in the library
(``engine.learn``, ``engine.diagnose``, ``engine.profile.tune``), which flue-tui calls too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any


def _err(msg: str) -> None:
    sys.stderr.write(msg.rstrip("\n") + "\n")


def add_learn_parser(sub: Any) -> None:
    le = sub.add_parser("learn", help="run a command observed and write the least-privilege "
                        "profile it needs", usage="flue learn [-p BASE] [-o OUT.toml] [options] "
                        "-- CMD [ARG...]")
    le.add_argument("-p", "--profile", default=None,
                    help="the base the learned profile extends (default: default; when OUT "
                    "exists, the base it was learned on)")
    le.add_argument("-o", "--output", metavar="OUT.toml",
                    help="write the profile here; when it exists, this run is merged into it "
                    "(default: print it)")
    le.add_argument("--report", metavar="FILE", help="write a JSON report of the run (with "
                    "what was observed: flue profiles tighten reads it)")
    le.add_argument("--events", metavar="FILE", help="write the event stream as JSON lines")
    le.add_argument("--workspace", metavar="DIR", help="bind DIR read-write as /work")
    le.add_argument("--bind", action="append", default=[], metavar="SRC[:DST][:ro|:rw]",
                    help="bind a host path (read-only unless :rw)")
    le.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="set an environment variable inside")
    le.add_argument("--timeout", help="wall-clock timeout of the learn run")
    le.add_argument("--memory", help="memory limit of the learn run")
    le.add_argument("--host-uid", type=int, help="as root: host uid the sandbox's user maps to")
    le.add_argument("--allow-unlimited", action="store_true",
                    help="run even when the profile's limits cannot be enforced here")
    le.add_argument("command", nargs=argparse.REMAINDER)


def add_explain_parser(sub: Any) -> None:
    ex = sub.add_parser("explain", help="why a run failed: causes and fixes, most likely first")
    ex.add_argument("run", metavar="REPORT.json|EVENTS.jsonl")
    ex.add_argument("-p", "--profile", help="the profile the run used (default: the one the "
                    "run names)")
    ex.add_argument("--json", action="store_true", help="the causes as JSON")
    ex.add_argument("--all", action="store_true", help="also the unlikely causes")


def add_tune_parsers(psub: Any) -> None:
    for name, helptext in (("relax", "propose the smallest change that fixes a failed run"),
                           ("tighten", "propose removing what recorded runs never used")):
        t = psub.add_parser(name, help=helptext)
        t.add_argument("profile")
        t.add_argument("--from", dest="runs", action="append", default=[], required=True,
                       metavar="RUN", help="a report or events file (tighten: of learn runs, "
                       "or a .learn.json); repeatable")
        t.add_argument("--write", action="store_true",
                       help="apply every hunk and save (atomically, the old file kept as "
                       ".bak; a built-in is saved as the user's copy)")
        t.add_argument("--only", metavar="N,N", help="apply only these hunks (numbers as "
                       "listed)")
        t.add_argument("--json", action="store_true", help="the hunks as JSON")


# --------------------------------------------------------------------------- learn


def _previous(out: str | None) -> tuple[Any, str | None]:
    """(the observations already behind OUT, its base) or (None, None)."""
    from engine.errors import ProfileError
    from engine.learn.writer import previous_observations

    if not out:
        return None, None
    try:
        return previous_observations(out)
    except (ProfileError, OSError, ValueError) as err:
        _err(f"flue: learn: {out} cannot be read ({err}); writing it anew")
        return None, None


def cmd_learn(a: argparse.Namespace) -> int:
    import asyncio

    from engine.profile_cache import load_profile_cached as load_profile
    from engine.rootfs import parse_bind

    argv = list(a.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        _err("flue: no command given\n  fix: flue learn [options] -- CMD [ARG...]")
        return 125
    env = []
    for item in a.env:
        if "=" not in item:
            _err(f"flue: bad --env {item!r}\n  fix: write --env KEY=VALUE")
            return 125
        k, v = item.split("=", 1)
        env.append((k, v))
    previous, prev_base = _previous(a.output)
    base_ref = a.profile or prev_base or "default"
    if previous is not None and a.profile and prev_base and a.profile != prev_base:
        from engine.errors import ProfileError

        raise ProfileError(f"{a.output} was learned on {prev_base!r}, not {a.profile!r}",
                           fix=f"learn with -p {prev_base}, or write to another -o file")
    overrides: dict[str, Any] = {}
    limits = {k: getattr(a, k) for k in ("timeout", "memory") if getattr(a, k)}
    if limits:
        overrides["limits"] = limits
    base = load_profile(base_ref, overrides=overrides or None)
    binds = tuple(parse_bind(b) for b in a.bind)
    result = asyncio.run(_learn_run(a, argv, base, binds, env))
    from engine.learn.observation import Observation

    if result.error or not result.observed:
        _err(result.message or "flue: learn: the run could not be observed")
        return int(result.exit_code)
    obs = Observation.from_dict(result.observed)
    merged = previous.merge(obs) if previous is not None else obs
    merged.base = base_ref
    text = _write_learned(a.output, merged, base_ref, base)
    _summary(obs, merged, result, a.output, previous is not None)
    if a.report:
        from engine.cli import _write_atomically

        report = result.to_dict()
        report["command"] = argv
        report["profile"] = base.name
        report["profile_source"] = base.source or ""
        _write_atomically(a.report, json.dumps(report, indent=2) + "\n")
    if not a.output:
        sys.stdout.write(text)
    return int(result.exit_code)


async def _learn_run(a: argparse.Namespace, argv: list[str], base: Any, binds: Any,
                     env: list[tuple[str, str]]) -> Any:
    import asyncio
    import signal

    from engine.learn import learn_profile
    from engine.sandbox import Sandbox

    sb = Sandbox(argv, learn_profile(base), workspace=a.workspace, binds=binds, env=env,
                 host_uid=a.host_uid, allow_unlimited=a.allow_unlimited, learn=True,
                 sample_interval=0.1, live=True)
    events_file = None
    if a.events:
        from engine.cli import _open_output, event_sink

        events_file = _open_output(a.events)
        sb.subscribe(event_sink(events_file))
    loop = asyncio.get_running_loop()
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    for sig in forwarded:
        loop.add_signal_handler(sig, sb.send_signal, sig)
    try:
        await sb.start()
        return await sb.wait()
    finally:
        for sig in forwarded:
            loop.remove_signal_handler(sig)
        if events_file is not None:
            events_file.close()


def _write_learned(out: str | None, obs: Any, base_ref: str, base: Any) -> str:
    from engine.learn.writer import save_learned, write_profile
    from engine.profile.edit import load_text

    if out:
        return save_learned(out, obs, base_ref, base)
    text = write_profile(obs, base_ref, base)
    load_text(text, name="learned", origin=os.path.abspath("learned.toml"))  # validates
    return text


def _summary(obs: Any, merged: Any, result: Any, out: str | None, merged_in: bool) -> None:
    n_sys = len(obs.syscalls)
    miss = len(obs.missing)
    peak = obs.peaks.get("memory")
    where = f"wrote {out}" if out else "the profile follows on stdout"
    if merged_in:
        where += f" ({len(merged.runs)} runs merged)"
    mem = f", peak memory {peak >> 20} MiB" if peak else ""
    _err(f"flue: learn: {n_sys} syscalls traced, {len(obs.paths)} paths, {miss} missing "
         f"inside{mem}; exit {result.exit_code}; {where}")
    if result.exit_code:
        _err("flue: learn: the command failed while learning: the profile may lack what a "
             "successful run needs")


# --------------------------------------------------------------------------- explain


def _profile_for(run: Any, ref: str | None) -> Any:
    from engine.profile import load_profile

    for cand in (ref, run.profile_source, run.profile):
        if not cand:
            continue
        try:
            return load_profile(cand)
        except Exception:  # noqa: BLE001, S112 - try the next way of naming it
            continue
    return None


def cmd_explain(a: argparse.Namespace) -> int:
    from engine import diagnose, runrecord
    from engine.profile import tune

    run = runrecord.load(a.run)
    profile = _profile_for(run, a.profile)
    causes = diagnose.diagnose(run, profile)
    shown = causes if a.all else [c for c in causes if c.likelihood >= 0.2]
    doc = None
    ref = a.profile or run.profile_source or run.profile
    if ref:
        try:
            doc = tune.open_profile(ref)
        except Exception:  # noqa: BLE001 - explain without diffs
            doc = None
    if a.json:
        json.dump([{"kind": c.kind, "title": c.title, "detail": c.detail,
                    "likelihood": round(c.likelihood, 2), "advice": c.advice,
                    "changes": [{"op": ch.op, "arg": ch.arg, "value": ch.value,
                                 "title": ch.title} for ch in c.changes],
                    "diff": _change_diff(doc, c.changes[0]) if doc and c.changes else ""}
                   for c in shown], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    import shlex

    cmd = shlex.join(run.command).replace("\n", "\\n") or "the command"
    if len(cmd) > 100:
        cmd = cmd[:97] + "..."
    how = (f"exited {run.exit_code}" if run.signal is None else f"was killed by signal "
           f"{run.signal}")
    print(f"{cmd} {how} under the profile {run.profile or '?'}")
    if not shown:
        print("  nothing went wrong that flue can see")
        return 0
    for i, c in enumerate(shown, 1):
        print(f"\n{i}. [{c.label}] {c.title}")
        if c.detail:
            print(f"   {c.detail}")
        if c.changes:
            ch = c.changes[0]
            diff = _change_diff(doc, ch) if doc else ""
            print(f"   fix: {ch.title}")
            for line in _diff_body(diff):
                print(f"        {line}")
        if c.advice:
            print(f"   {'or: ' if c.changes else 'what to do: '}{c.advice}")
    if any(c.changes for c in shown) and ref:
        shown_ref = ref
        if doc is not None and doc.builtin:
            shown_ref = doc.name
        print(f"\nflue profiles relax {shown_ref} --from {a.run}   # the fixes as one diff; "
              "--write applies it")
    return 0


def _change_diff(doc: Any, change: Any) -> str:
    from engine.profile.tune import _copy

    try:
        one = _copy(doc)
        change.apply(one)
        return str(one.diff(0))
    except Exception:  # noqa: BLE001 - the line cannot be shown; the fix's title still is
        return ""


def _diff_body(diff: str) -> list[str]:
    return [ln for ln in diff.splitlines()
            if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))][:8]


# --------------------------------------------------------------------------- relax, tighten


def cmd_tune(a: argparse.Namespace) -> int:
    from engine.profile import tune

    if a.pcmd == "relax":
        prop = tune.relax(a.profile, a.runs)
    else:
        prop = tune.tighten(a.profile, a.runs)
    accepted = None
    if a.only:
        accepted = {int(x) for x in a.only.replace(" ", "").split(",") if x}
    if a.json:
        json.dump({"profile": str(prop.doc.path), "notes": prop.notes,
                   "hunks": [{"id": h.id, "title": h.title, "why": h.why, "kind": h.kind,
                              "op": h.change.op, "arg": h.change.arg, "value": h.change.value,
                              "diff": h.diff} for h in prop.hunks]}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    for note in prop.notes:
        _err(f"flue: {a.pcmd}: no profile change for: {note}")
    if not prop.hunks:
        _err(f"flue: {a.pcmd}: nothing to change in {prop.doc.path}")
        return 0
    for h in prop.hunks:
        mark = "" if accepted is None or h.id in accepted else " (not applied)"
        _err(f"flue: {a.pcmd}: [{h.id}] {h.title}: {h.why}{mark}")
    doc = prop.apply(accepted)
    sys.stdout.write(doc.diff())
    if a.write:
        saved = doc.save()
        _err(f"flue: {a.pcmd}: saved {saved.path}"
             + (f" (previous version: {saved.backup})" if saved.backup else ""))
    return 0
