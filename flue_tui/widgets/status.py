"""The status line: state, command, elapsed time, exit status, and what is really in effect."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.widgets import Static

from flue_tui.model import RunModel
from flue_tui.sanitize import plain
from flue_tui.widgets import format as fmt

# how the engine reports limits dropped by allow_unlimited (Sandbox.degraded)
UNLIMITED = "running without resource limits: "

STATE_STYLE = {
    "idle": "status--idle",
    "starting": "status--starting",
    "running": "status--running",
    "exited": "status--ok",
    "failed": "status--bad",
    "stopped": "status--bad",  # ended without an exit status (killed while starting)
}


class StatusLine(Static):
    COMPONENT_CLASSES: ClassVar[set[str]] = {"status--idle", "status--starting", "status--running", "status--ok",
                         "status--bad", "status--warn", "status--dim", "status--key"}
    DEFAULT_CSS = """
    StatusLine { height: 2; }
    """

    def show(self, run: RunModel | None, now: float, *, profile_label: str,
             edits: tuple[int, int] = (0, 0), shared: tuple[tuple[str, str], ...] = ()) -> None:
        style = self.get_component_rich_style
        t = Text(no_wrap=True, overflow="ellipsis", end="")
        if run is None:
            t.append(" idle ", style("status--idle"))
            t.append("  no command yet: ", style("status--dim"))
            t.append("n", style("status--key"))
            t.append(" starts one", style("status--dim"))
            t.append(f"   profile {profile_label}")
            self.update(t, layout=False)  # a fixed height: no layout pass per update
            return
        word = run.status_word()
        key = run.state
        if run.state == "exited" and run.exited is not None:
            x = run.exited
            bad = x.oom_killed or x.timed_out or x.signal or x.exit_code != 0
            key = "failed" if bad else "exited"
        t.append(f" {word} ", style(STATE_STYLE.get(key, "status--idle")))
        t.append(f" #{run.number} ", style("status--dim"))
        if run.learn:
            t.append("learning ", style("status--warn"))
        tail = Text(no_wrap=True, end="")
        tail.append("  " + fmt.seconds(run.elapsed(now)).strip())
        tail.append(f"  profile {profile_label}")
        a, r = edits
        if a or r:
            tail.append(f" (edited +{a} −{r})", style("status--warn"))
        tail.append(f"  denials {run.denial_total}", style("status--warn") if run.denial_total
                    else None)
        if run.net_refused:
            tail.append(f"  net refused {run.net_refused}", style("status--warn"))
        x = run.exited
        if x is not None:
            flags = [f for f, on in (("OOM", x.oom_killed), ("TIMEOUT", x.timed_out),
                                     ("SECCOMP-KILL", x.seccomp_killed),
                                     ("PIDS-LIMIT", x.pids_limit_hit),
                                     ("MEM-LIMIT", x.memory_limit_hit)) if on]
            if flags:
                tail.append("  " + " ".join(flags), style("status--bad"))
        # the command gets what the counts and flags leave of the line (60 at most)
        room = (self.size.width or 120) - t.cell_len - tail.cell_len
        t.append(plain(" ".join(run.argv), max(16, min(60, room))))
        t.append_text(tail)
        t.append("\n")
        t.append(self._effective(run, shared))
        self.update(t, layout=False)

    def _effective(self, run: RunModel, shared: tuple[tuple[str, str], ...]) -> Text:
        style = self.get_component_rich_style
        t = Text(no_wrap=True, overflow="ellipsis", end="", style=style("status--dim"))
        s = run.started
        if run.error:
            t.append(" " + plain(run.error, 200), style("status--bad"))
            return t
        if s is None:
            if run.exited is not None:  # it never started: say why, not "starting"
                t.append(" " + plain(run.exited.reason or "the sandbox could not be set up",
                                     200), style("status--bad"))
            else:
                t.append(" starting the sandbox…")
            return t
        iso = s.isolation or {}
        lim = s.limits or {}
        ns = iso.get("namespaces") or []
        seccomp = str(iso.get("seccomp", ""))
        net = str(iso.get("network", "?")).split(" (", 1)[0]  # the mode; Tune has the rest
        rules = run.network_rules
        if rules is not None:  # allowlist: how long the list is (6 shows the requests)
            net += f" {rules} rule" + ("s" if rules != 1 else "")
        parts = [f"{len(ns)} namespaces" if ns else "no namespaces",
                 "seccomp " + ("observed" if "observed" in seccomp else
                               "errno-only" if seccomp else "off"),
                 f"net {net}",
                 f"cgroup {iso.get('cgroup', 'none')}"]
        limits = [f"mem {fmt.size(lim.get('memory'))}" if lim.get("memory") else "mem none",
                  f"pids {lim['pids']}" if lim.get("pids") else "pids none",
                  f"cpu {lim['cpus']:g}" if lim.get("cpus") else "cpu none",
                  f"timeout {lim['timeout']:g}s" if lim.get("timeout") else "no timeout"]
        degraded = list(s.degraded)
        off = next((d for d in degraded if d.startswith(UNLIMITED)), None)
        if off is not None:  # --allow-unlimited dropped the profile's limits: say so first
            degraded.remove(off)
            t.append(" ⚠ limits off (--allow-unlimited): " + plain(off[len(UNLIMITED):], 90),
                     style("status--warn"))
            t.append(" │ ", style("status--key"))
        t.append(" " + ", ".join(parts) if off is None else ", ".join(parts))
        t.append(" │ ", style("status--key"))
        if off is not None:
            t.append(f"timeout {lim['timeout']:g}s" if lim.get("timeout") else "no timeout")
        else:
            t.append(", ".join(limits))
        if shared:
            t.append(" │ ", style("status--key"))
            t.append("ro " + ", ".join(plain(inside, 40) for _, inside in shared))
        if degraded:
            t.append("   ⚠ degraded: " + "; ".join(plain(d, 80) for d in degraded),
                     style("status--warn"))
        if run.exited is not None and run.exited.reason:
            t.append("   " + plain(run.exited.reason, 120), style("status--bad"))
        return t
