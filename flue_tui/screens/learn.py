"""Learn: the least-privilege profile proposed from learn runs, and what it changes.

A learn run (the launch form's "learn" box, ``L`` in the monitor, "Run: Learn" in the palette)
runs the command under ``engine.learn.learn_profile(base)``: every syscall outside a small
core set is reported and let through, paths and sockets are recorded. When it ends, this
screen shows the profile ``engine.learn.writer`` writes from every learn run of the session
merged (``LearnSession``): the TOML with the comment on each line that says why it is there,
and its changes against the base it ``extends``. From here:

- ``l`` learns again (the same command, or ``n`` for another one first): the next run merges
  in, as ``flue learn -o OUT.toml`` does with an existing OUT;
- ``a`` makes it the draft profile: Tune, Save and Re-run then work on it, and ``r`` runs the
  command under it, enforced, which is the proof that it is enough;
- ``ctrl+s`` saves it (accepting it first), with its observations beside it
  (``NAME.learn.json``), so ``flue learn -o NAME.toml`` and ``flue profiles tighten`` can go on
  from the file.

Everything shown comes from what the sandboxed program did (its command line, the paths it
looked up), so it is drawn as plain ``Text``, never markup.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from flue_tui.sanitize import plain


@dataclass
class LearnSession:
    """The learn runs of one base, merged; the profile they make; the draft, once accepted."""

    base_ref: str  # what the learned profile extends: a profile's name or file
    base: Any  # its Profile, as loaded (no quick limits)
    obs: Any = None  # engine.learn.observation.Observation, every run merged
    runs: list[int] = field(default_factory=list)  # the workbench's run numbers
    text: str = ""  # the learned profile
    doc: Any = None  # the ProfileDocument made from it by accept()
    last_exit: int | None = None

    def add(self, observed: dict[str, Any], run: int, exit_code: int | None) -> str:
        """Merge one learn run's observations in; returns the profile's new text (validated:
        ``ProfileError`` when it is not a profile flue can load)."""
        from engine.learn.observation import Observation
        from engine.learn.writer import plan_profile, render
        from engine.profile.edit import load_text

        obs = Observation.from_dict(observed)
        before = self.obs
        merged = before.merge(obs) if before is not None else obs
        merged.base = self.base_ref
        self.obs = merged  # the file's name comes from the first run's command
        try:
            path = self.save_path()
            text = render(plan_profile(merged, self.base), merged, self.base_ref, self.base,
                          sidecar=sidecar_name(path))
            load_text(text, name=path.stem, origin=path)
        except Exception:
            self.obs = before
            raise
        self.text, self.last_exit = text, exit_code
        self.runs.append(run)
        if self.doc is not None:  # accepted already: the draft follows the new runs
            self.doc.doc = _parse(text)
        return text

    @property
    def command(self) -> str:
        runs = self.obs.runs if self.obs is not None else []
        return " ".join(str(a) for a in (runs[0].get("command", []) if runs else []))

    def save_path(self) -> Path:
        """Where the profile is saved unless the user says otherwise: a user profile named
        after the command (``learned-python3-agent``)."""
        if self.doc is not None:
            return Path(self.doc.path)
        from engine.profile.paths import user_profile_dir

        words = [os.path.basename(w) for w in self.command.split()[:2]] or ["run"]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", "-".join(words)).strip("-").lower()[:40]
        return user_profile_dir() / f"learned-{slug or 'run'}.toml"

    def accept(self) -> Any:
        """The learned profile as a ``ProfileDocument``: not saved yet (it is all one edit),
        extending the base."""
        from engine.profile.edit import ProfileDocument

        if self.doc is None:
            path = self.save_path()
            doc = ProfileDocument(self.text, name=path.stem, path=path)
            # the edit is against what is on disk at that path: nothing yet (the whole
            # profile is the edit), or an earlier learned profile of the same command, which
            # saving then replaces (kept as .bak) instead of failing as "changed on disk"
            try:
                doc.saved_text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                doc.saved_text = ""
            doc.log.append(f"learned from {len(self.runs)} learn run"
                           f"{'s' if len(self.runs) != 1 else ''}")
            self.doc = doc
        return self.doc

    def retarget(self, dest: Path) -> None:
        """Before the accepted profile is saved at ``dest``: its header names the
        observations file beside ``dest`` (``NAME.learn.json``), not the one beside the
        default path."""
        if self.doc is None:
            return
        old, new = sidecar_name(self.save_path()), sidecar_name(dest)
        if old == new:
            return
        self.doc.doc = _parse(_renamed(self.doc.text(), old, new))
        self.text = _renamed(self.text, old, new)  # so the draft has no edit of its own

    def edited(self) -> bool:
        """The accepted draft has edits of its own (Tune, allow, relax): learning again,
        which writes the profile anew from the runs, would lose them."""
        return self.doc is not None and self.doc.text() != self.text

    def write_sidecar(self, profile_path: Path) -> Path | None:
        """The observations beside a saved learned profile (``NAME.learn.json``), as
        ``flue learn -o`` keeps them: later learn runs merge into them."""
        import json

        from engine.learn.writer import sidecar_of
        from engine.profile.edit import _atomic_write

        if self.obs is None:
            return None
        side = Path(sidecar_of(profile_path))
        _atomic_write(side, json.dumps(self.obs.to_dict(), indent=1) + "\n")
        return side


def _renamed(text: str, old: str, new: str) -> str:
    """``text`` with the header comment that names the sidecar ``old`` naming ``new``."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("#") and old in line:  # the header's comment, once
            lines[i] = line.replace(old, new)
            break
    return "".join(lines)


def sidecar_name(path: Path) -> str:
    from engine.learn.writer import sidecar_of

    return os.path.basename(sidecar_of(path))


def _parse(text: str) -> Any:
    import tomlkit

    return tomlkit.parse(text)


def profile_text(text: str, width: int = 0) -> Text:
    """The TOML, comments dimmed, tables bold; every line neutralised (it holds the
    program's command line and the paths it looked up). With ``width``, a line longer than
    that is wrapped, its comment going on under itself (``#`` again, at the same column),
    so the why of every line stays readable at 80 columns."""
    out = Text(no_wrap=True)
    for line in text.splitlines():
        for piece, dim_from in _wrapped(plain(line, 300), width):
            indent = len(piece) - len(piece.lstrip(" "))
            shown = "\u00a0" * indent + piece[indent:]  # kept: leading spaces would be dropped
            start = len(out.plain)
            if shown.startswith("[") and dim_from:
                out.append(shown + "\n", "bold")
            else:
                out.append(shown + "\n")
            if dim_from < len(shown):  # the comment that says why the line is there, dimmed
                out.stylize("dim", start + dim_from, start + len(shown))
    return out


def _wrapped(line: str, width: int) -> list[tuple[str, int]]:
    """``line`` as lines of at most ``width`` columns (0: as it is), each with where its
    comment starts (its length when it has none)."""
    import textwrap

    stripped = line.lstrip(" ")
    if stripped.startswith("#"):
        code, col, comment = "", len(line) - len(stripped), stripped[1:].strip()
    else:
        code, sep, comment = line.partition("  #")
        col = len(code) + 2 if sep else len(line)
        comment = comment.strip()
    if width <= 0 or len(line) <= width:
        return [(line, col)]
    if code and not comment:  # a long value: cut where it must be, the rest indented
        first, rest = line[:width], line[width:]
        pad = min(len(code) - len(code.lstrip(" ")) + 4, width // 2)
        more = textwrap.wrap(rest, max(10, width - pad), break_on_hyphens=False)
        return [(first, len(first))] + [(" " * pad + m, pad + len(m)) for m in more]
    if col > width - 24:  # the comment column is too far right: under the code instead
        col = min(len(code) - len(code.lstrip(" ")) + 4, width // 2) if code else 0
        head = [(code.rstrip(), len(code.rstrip()))] if code else []
        body = textwrap.wrap(comment, max(10, width - col - 2), break_on_hyphens=False)
        return head + [(" " * col + "# " + b, col) for b in body]
    body = textwrap.wrap(comment, max(10, width - col - 2), break_on_hyphens=False) or [""]
    first = (code + "  " if code else " " * col) + "# " + body[0]
    return [(first, col)] + [(" " * col + "# " + b, col) for b in body[1:]]


def _fmt(v: Any, key: str) -> str:
    from engine.profile.sizes import format_duration, format_size

    if v is None:
        return "none"
    if key == "memory":
        return format_size(int(v))
    if key == "timeout":
        return format_duration(float(v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def _mib(n: float) -> str:
    """A peak as a person reads it: 6.3 MiB, 360 KiB (not 0 MiB)."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{int(n) >> 10} KiB"


def changes_against(base: Any, learned: Any) -> list[tuple[str, str]]:
    """What the learned profile changes against its base, as (sign, line) pairs: ``+`` what
    it allows that the base does not, ``-`` what it takes away, ``~`` what it sets."""
    from engine.profile import groups as _groups

    out: list[tuple[str, str]] = []
    b, s = base.seccomp, learned.seccomp
    native = _groups.native_syscalls() or _groups.known_syscalls()  # this architecture's
    allowed, base_allowed = s.allow & native, b.allow & native
    added = sorted(allowed - base_allowed)
    removed = sorted(base_allowed - allowed)
    out.append(("~", f"syscalls: {len(allowed)} allowed (the base: {len(base_allowed)})"))
    for name in added:
        g = _groups.group_of(name) or "no group"
        why = "refused by the base" if name in b.deny or name not in b.allow else ""
        out.append(("+", f"allow {name} ({g}{'; ' + why if why else ''})"))
    if removed:
        by_group: dict[str, list[str]] = {}
        for name in removed:
            by_group.setdefault(_groups.group_of(name) or "no group", []).append(name)
        for g, names in sorted(by_group.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            shown = ", ".join(names[:6]) + (f" … {len(names) - 6} more" if len(names) > 6
                                            else "")
            out.append(("-", f"no longer allowed, {g} ({len(names)}): {shown}"))
    for fam in sorted(set(s.socket_families) - set(b.socket_families)):
        out.append(("+", f"socket family {fam}"))
    for fam in sorted(set(b.socket_families) - set(s.socket_families)):
        out.append(("-", f"socket family {fam}"))
    for e in sorted(set(learned.filesystem.etc) - set(base.filesystem.etc)):
        out.append(("+", f"shows /etc entry {e}"))
    for e in sorted(set(base.filesystem.etc) - set(learned.filesystem.etc)):
        out.append(("-", f"/etc entry {e}"))
    base_binds = {(x.src, x.dst, x.rw) for x in base.filesystem.binds}
    for x in learned.filesystem.binds:
        if (x.src, x.dst, x.rw) not in base_binds:
            out.append(("+", f"bind {x.src}" + (f" at {x.dst}" if x.dst != x.src else "")
                        + (" read-write" if x.rw else " read-only")))
    if learned.network.mode != base.network.mode:
        out.append(("~", f"network {base.network.mode} -> {learned.network.mode}"))
    for key in ("memory", "pids", "timeout", "cpus"):
        bv, lv = getattr(base.limits, key), getattr(learned.limits, key)
        if bv != lv:
            out.append(("~", f"{key} limit {_fmt(bv, key)} -> {_fmt(lv, key)}"))
    return out


def changes_text(rows: list[tuple[str, str]], width: int = 0) -> Text:
    """The changes, one a line; with ``width``, a longer one wrapped under itself."""
    import textwrap

    style = {"+": "green", "-": "red", "~": "yellow"}
    t = Text(no_wrap=True)
    for sign, line in rows:
        shown = plain(line, 600)
        parts = textwrap.wrap(shown, max(20, width - 2), break_on_hyphens=False) \
            if width > 0 and len(shown) > width - 2 else [shown]
        t.append(f"{sign} " + "\n\u00a0\u00a0".join(parts) + "\n", style.get(sign, ""))
    return t


class LearnScreen(Screen[None]):
    """The proposed profile of the session's learn runs (see the module docstring)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "accept", "Accept", id="learn.accept",
                tooltip="make the learned profile the draft (Tune, Save and Re-run use it)"),
        Binding("r", "rerun", "Re-run", id="learn.rerun",
                tooltip="accept it and run the command under it, enforced: the proof that "
                "it is enough"),
        Binding("l", "again", "Re-learn", id="learn.again",
                tooltip="run the command in learn mode again; the run merges into this "
                "profile"),
        Binding("left_square_bracket", "tab(-1)", "Previous tab", show=False,
                id="learn.tab_prev"),
        Binding("right_square_bracket", "tab(1)", "Next tab", show=False,
                id="learn.tab_next"),
        Binding("escape", "app.pop_screen", "Back", id="learn.back",
                tooltip="back to the monitor (the learned profile stays: ctrl+p, Run: Show "
                "the learned profile)"),
    ]

    def __init__(self, session: LearnSession) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        yield Static(id="learn-title")
        with TabbedContent(id="learn-tabs"):
            with TabPane("Profile", id="learn-profile-tab"), \
                    VerticalScroll(id="learn-profile-scroll"):
                yield Static(id="learn-profile")
            with TabPane("Changes against the base", id="learn-changes-tab"), \
                    VerticalScroll(id="learn-changes-scroll"):
                yield Static(id="learn-changes")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_session()
        self.query_one("#learn-profile-scroll").focus()

    def on_resize(self) -> None:
        self.refresh_session()  # the long lines wrap at the new width

    def _width(self) -> int:
        """The columns a line of the profile has (the scroll bar's taken off)."""
        scroll = self.query_one("#learn-profile-scroll")
        width = scroll.size.width or self.app.size.width
        return max(20, width - 2)

    @on(TabbedContent.TabActivated, "#learn-tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        """The shown tab's text takes the keys (up/down, pageup/pagedown, home/end): with the
        other tab's scroll hidden, nothing had focus and they did nothing."""
        pane = "learn-changes-scroll" if event.pane.id == "learn-changes-tab" \
            else "learn-profile-scroll"
        self.query_one(f"#{pane}").focus()

    def refresh_session(self) -> None:
        from engine.errors import EngineError
        from engine.profile.edit import load_text

        s = self.session
        runs = len(s.runs)
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" learned ", "reverse bold")
        t.append(f" {runs} learn run{'s' if runs != 1 else ''} on {plain(s.base_ref, 40)}: ")
        t.append(plain(s.command, 60))
        obs = s.obs
        t.append("\n ")
        if s.doc is not None:
            t.append("the draft (r runs it, ctrl+s saves) · ", "green")
        if obs is not None:
            peak = obs.peaks.get("memory")
            t.append(f"{len(obs.syscalls)} syscalls traced, {len(obs.paths)} paths, "
                     f"{len(obs.missing)} missing inside"
                     + (f", peak memory {_mib(peak)}" if peak else ""), "dim")
        if s.last_exit:  # a line of its own: the warning must not be cut off
            t.append(f"\n last learn run exited {s.last_exit}: the profile may lack what a "
                     "successful run needs", "bold red")
        self.query_one("#learn-title", Static).update(t)
        width = self._width()
        self.query_one("#learn-profile", Static).update(profile_text(s.text, width))
        try:
            learned = load_text(s.text, name=s.save_path().stem, origin=s.save_path())
            rows = changes_against(s.base, learned)
        except EngineError as err:
            rows = [("-", f"the learned profile does not load: {err.render()}")]
        self.query_one("#learn-changes", Static).update(changes_text(rows, width))

    def action_tab(self, step: int) -> None:
        tc = self.query_one(TabbedContent)
        ids = ["learn-profile-tab", "learn-changes-tab"]
        tc.active = ids[(ids.index(tc.active) + step) % len(ids)] if tc.active in ids \
            else ids[0]
        # (focus follows in _tab_shown)

    def action_accept(self) -> None:
        self.app.accept_learned()  # type: ignore[attr-defined]
        self.refresh_session()

    def action_rerun(self) -> None:
        if self.app.accept_learned(quiet=True):  # type: ignore[attr-defined]
            self.app.action_rerun()  # type: ignore[attr-defined]

    def action_again(self) -> None:
        self.app.action_learn()  # type: ignore[attr-defined]
