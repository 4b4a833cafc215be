"""Pilot tests against real sandboxes: the demo agent, allow a denial, re-run, save."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from waits import settle

from flue_tui.app import FlueApp, make_app

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


async def wait_exit(pilot: Any, app: FlueApp, number: int, timeout: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        m = app.run_model
        if m is not None and m.number == number and m.state in ("exited", "failed") \
                and not app.bridge.running:
            await settle(pilot)
            return
        await pilot.pause(0.1)
    raise AssertionError(f"run {number} did not finish: {app.run_model and app.run_model.state}")


def output_text(app: FlueApp) -> str:
    assert app.run_model is not None
    return "\n".join(line.text for line in app.run_model.output.lines)


async def test_demo_allow_rerun_save(monkeypatch: pytest.MonkeyPatch,
                                     isolated_xdg: Path) -> None:
    monkeypatch.chdir(ROOT)
    app = make_app(["python3", "examples/demo_agent.py"], remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_exit(pilot, app, 1)
        model = app.run_model
        assert model is not None and model.error == "", model.error
        assert model.exited is not None and model.exited.exit_code == 0
        keys = set(model.denials)
        assert {"mount", "ptrace", "unshare", "socket:AF_PACKET"} <= keys, keys
        assert model.denials["mount"].count == 3  # three tries, counted
        assert model.denials["ptrace"].errno_name == "EPERM"
        assert model.denials["ptrace"].group == "@debug"
        assert "refused ptrace(PTRACE_TRACEME)" in output_text(app)
        # the other panels came alive too
        assert model.samples and model.processes and model.files
        assert any(f.path.endswith("report.json") for f in model.files.values())
        # the table shows the rows, with their syscall names
        panel = app.screen.panel("denials")
        assert "ptrace" in panel._rows and "mount" in panel._rows

        # allow ptrace from its row, re-run
        table = app.screen.query_one("#denials-table")
        table.move_cursor(row=panel._rows.index("ptrace"), animate=False)
        await pilot.press("a")
        await settle(pilot)
        assert app.draft.dirty and "ptrace" in app.draft.resolve().seccomp.allow
        await pilot.press("r")
        await wait_exit(pilot, app, 2)
        second = app.run_model
        assert second is not None and second.number == 2
        assert "ptrace" not in second.denials
        assert {"mount", "unshare"} <= set(second.denials)
        assert "ok      ptrace(PTRACE_TRACEME): allowed" in output_text(app)
        assert second.changes and "allow ptrace" in second.changes[0]

        # save: a built-in goes to a user profile; comments survive
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        saved = isolated_xdg / "xdg_config_home" / "flue" / "profiles" / "default.toml"
        assert saved.is_file(), list((isolated_xdg / "xdg_config_home").rglob("*"))
        text = saved.read_text()
        assert "# flue's default profile" in text
        assert "# no debugging of other processes" not in text  # the removed deny entry
        assert '"ptrace",' in text
        from engine.profile import load_profile

        assert "ptrace" in load_profile("default").seccomp.allow
        assert not app.draft.dirty


async def test_save_invalid_writes_nothing(monkeypatch: pytest.MonkeyPatch,
                                           agent_profile: Path) -> None:
    monkeypatch.chdir(ROOT)
    before = agent_profile.read_text()
    app = make_app(None, profile=str(agent_profile), remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("escape")  # leave the launch form
        app.draft.doc["limits"]["memory"] = "lots"  # as a bad hand edit would
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        from flue_tui.screens.save import SaveModal

        assert isinstance(app.screen, SaveModal)
        err = str(app.screen.query_one("#save-error").render())
        assert "not saved" in err and "bad size" in err
        assert agent_profile.read_text() == before
        assert sorted(p.name for p in agent_profile.parent.iterdir()) == ["agent.toml"]


# one mount, its errno printed: what this test needs of a run (the demo's, above, takes
# seconds of workers and pauses; the errno picker and the save do not depend on them)
MOUNT_ONCE = ("import ctypes, errno; libc = ctypes.CDLL(None, use_errno=True); "
              "rc = libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None); "
              "print('mount:', 'ok' if rc == 0 else errno.errorcode[ctypes.get_errno()])")


async def test_user_profile_save_keeps_comments(monkeypatch: pytest.MonkeyPatch,
                                                agent_profile: Path) -> None:
    monkeypatch.chdir(ROOT)
    app = make_app(["python3", "-c", MOUNT_ONCE], profile=str(agent_profile),
                   remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_exit(pilot, app, 1)
        panel = app.screen.panel("denials")
        app.screen.query_one("#denials-table").move_cursor(row=panel._rows.index("mount"))
        await pilot.press("e")
        await settle(pilot)
        from flue_tui.screens.modals import ErrnoPicker

        assert isinstance(app.screen, ErrnoPicker)
        await pilot.press("down", "enter")  # EACCES
        await settle(pilot)
        await pilot.press("r")
        await wait_exit(pilot, app, 2)
        assert app.run_model.denials["mount"].errno_name == "EACCES"
        assert "mount: EACCES" in output_text(app)
        await pilot.press("ctrl+s")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
    text = agent_profile.read_text()
    assert 'mount = "EACCES"' in text
    assert "# Comments like these must survive every save from the workbench." in text
    assert '# the agent never needs more; a runaway loop stops here' in text
    backup = agent_profile.with_name("agent.toml.bak")
    assert backup.is_file() and "EACCES" not in backup.read_text()
    assert os.stat(agent_profile).st_size > 0
