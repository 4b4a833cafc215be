"""The Network panel against a real sandbox in allowlist mode.

The "internet" is an HTTP server this test starts on 127.0.0.1 (``web_server``); the sandbox
reaches it by a test name that ``--resolve`` maps to that address, so nothing leaves the
machine and the system resolver is never asked about the name. A refused domain shows up
highlighted, ``a`` allows it in the draft (the Tune diff shows it), a re-run reaches it, the
history says the refusal went away, and ctrl+s writes ``allow`` into the profile file with
its comments kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_real_sandbox import output_text, wait_exit
from waits import settle

from flue_tui.__main__ import _parser, quick_limits
from flue_tui.app import make_app
from flue_tui.widgets.panels import NetworkPanel

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

NAME = "web.flue-tui.test"  # only ever mapped by --resolve; .test is never delegated
PROFILE = """\
# An agent that may use the network, but only where we say.
extends = "default"                      # syscalls, mounts and env from flue's default

[network]
mode = "allowlist"                       # outbound only to the names below
allow = [
    "pkgs.example.test",                 # the package mirror (not used by this test)
]
"""


def app_for(profile: Path, port: int) -> Any:
    a = _parser().parse_args(["-p", str(profile), "--resolve", f"{NAME}=127.0.0.1", "--",
                              "python3", "tests/tui/programs/net_agent.py", str(port), NAME])
    return make_app(a.command[1:], profile=a.profile, limits=quick_limits(a), remember=False,
                    blink=False)


def row_for(app: Any, host: str, state: str) -> Any:
    model = app.run_model
    rows = [r for r in model.net.values() if r.host == host and r.state == state]
    assert rows, [(r.host, r.state) for r in model.net.values()]
    return rows[0]


async def test_refused_domain_allowed_rerun_saved(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path, web_server: Any) -> None:
    monkeypatch.chdir(ROOT)
    profile = tmp_path / "profiles" / "netagent.toml"
    profile.parent.mkdir()
    profile.write_text(PROFILE)
    port = web_server.port
    target = f"{NAME}:{port}"
    app = app_for(profile, port)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_exit(pilot, app, 1)
        model = app.run_model
        assert model is not None and model.error == "", model.error
        assert model.network_mode == "allowlist" and model.network_rules == 1
        out = output_text(app)
        assert f"http {NAME}: refused 403" in out, out
        assert f"dns  {NAME}: refused" in out, out
        refused = row_for(app, NAME, "refused")
        assert refused.port == port and refused.rule == "no-match" and refused.via == "http"
        assert model.net_refusals == {target: 1, f"{NAME} (dns)": 1}
        # the panel showed itself (allowlist mode) with the refusal highlighted
        screen = app.screen
        panel = screen.panel("network")
        assert isinstance(panel, NetworkPanel) and panel.display
        table = screen.query_one("#network-table")
        state_cell, host_cell = table.get_row(str(refused.id))[:2]
        bad = panel._styles()["refused"]
        assert state_cell.plain == "✗ refused" and state_cell.style == bad
        assert host_cell.plain == NAME and host_cell.style == bad and bad.bold
        status = str(screen.query_one("#status").render())
        assert "net allowlist 1 rule" in status and "net refused 2" in status, status

        # allow it from its row: a, with the Network panel focused
        table.focus()
        table.move_cursor(row=panel._rows.index(str(refused.id)), animate=False)
        await pilot.pause(0.1)
        await pilot.press("a")
        await settle(pilot)
        assert target in app.draft.resolve().network.allow
        assert f'+    "{target}",' in app.draft.diff()
        await pilot.press("t")
        await settle(pilot)
        diff = str(app.screen.query_one("#tune-diff").render())
        assert f'"{target}"' in diff, diff
        assert target in str(app.screen.query_one("#tune-allowlist").render())
        await pilot.press("escape")
        await settle(pilot)

        # re-run: the name is reached now, and the refusal is gone
        await pilot.press("r")
        await wait_exit(pilot, app, 2)
        second = app.run_model
        assert second is not None and second.number == 2
        out = output_text(app)
        assert f"http {NAME}: 200 hello from {NAME}" in out, out
        assert f"tcp  {NAME}: HTTP/1.0 200 OK" in out, out  # the captured connection too
        closed = row_for(app, NAME, "closed")
        assert closed.allowed and closed.rule == target and closed.bytes_down > 0
        assert second.net_refusals == {}
        assert second.network_rules == 2
        await pilot.press("h")
        await settle(pilot)
        detail = str(app.screen.query_one("#history-detail").render())
        assert "network: 2 refusal(s) gone" in detail and target in detail, detail
        await pilot.press("escape")
        await settle(pilot)

        # save: the file gets the rule, beside its comments
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert not app.draft.dirty
    text = profile.read_text()
    assert "# An agent that may use the network, but only where we say." in text
    assert '"pkgs.example.test",                 # the package mirror' in text
    assert 'mode = "allowlist"                       # outbound only' in text
    assert f'"{target}",' in text and "# added in flue-tui" in text
    from engine.profile import load_profile

    assert load_profile(str(profile)).network.allow == ("pkgs.example.test", target)


async def test_deny_takes_the_rule_out_and_the_rerun_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, web_server: Any) -> None:
    monkeypatch.chdir(ROOT)
    port = web_server.port
    target = f"{NAME}:{port}"
    profile = tmp_path / "netagent.toml"
    profile.write_text(PROFILE.replace('    "pkgs.example.test",',
                                       f'    "pkgs.example.test",\n    "{target}",  # ours'))
    app = app_for(profile, port)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_exit(pilot, app, 1)
        closed = row_for(app, NAME, "closed")
        assert closed.rule == target
        table = app.screen.query_one("#network-table")
        table.focus()
        table.move_cursor(row=app.screen.panel("network")._rows.index(str(closed.id)),
                          animate=False)
        await pilot.press("d")
        await settle(pilot)
        assert app.draft.resolve().network.allow == ("pkgs.example.test",)
        assert f'-    "{target}",  # ours' in app.draft.diff()
        await pilot.press("r")
        await wait_exit(pilot, app, 2)
        assert f"http {NAME}: refused 403" in output_text(app)
        assert target in app.run_model.net_refusals
