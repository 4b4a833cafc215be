"""Review: a recent command whose profile is a file path comes back with `default`.

In tmux: `flue-tui -p ./my-agent.toml -- echo A`, quit, `flue-tui`, pick "echo A   .../my-agent.toml"
in Recent, ctrl+r: the status said "profile default (built-in)". The launch form's Select
listed only named profiles; `_recent_chosen` set a value it did not have, and the error was
suppressed, so the form kept whatever it showed. The picker also had no way to open a profile
by path; it now has a field for one.
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Input, OptionList, Select, Static
from waits import settle

from flue_tui.app import make_app
from flue_tui.runspec import RunSpec
from flue_tui.screens.launch import LaunchScreen
from flue_tui.state import remember


async def launch_form(pilot, app) -> LaunchScreen:  # type: ignore[no-untyped-def]
    """The launch form once it has mounted (seconds on a loaded machine)."""
    for _ in range(200):
        await pilot.pause(0.05)
        screen = app.screen
        if isinstance(screen, LaunchScreen) and screen.query("#launch-recent") and \
                screen.query_one("#launch-recent", OptionList).option_count:
            await pilot.pause(0.1)
            return screen
    raise AssertionError(f"no launch form: {app.screen}")


async def test_recent_entry_keeps_its_profile_path(agent_profile: Path) -> None:
    remember(RunSpec(argv=("echo", "A"), profile=str(agent_profile)))
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await launch_form(pilot, app)
        ol = app.screen.query_one("#launch-recent", OptionList)
        ol.focus()
        ol.highlighted = 0
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.query_one("#launch-cmd", Input).value == "echo A"
        assert app.screen.query_one("#launch-profile", Select).value == str(agent_profile)
        spec = app.screen.build()
        assert spec is not None and spec.profile == str(agent_profile)


async def test_recent_entry_whose_profile_is_gone_says_so(tmp_path: Path) -> None:
    remember(RunSpec(argv=("echo", "B"), profile=str(tmp_path / "gone.toml")))
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await launch_form(pilot, app)
        ol = app.screen.query_one("#launch-recent", OptionList)
        ol.focus()
        ol.highlighted = 0
        await pilot.press("enter")
        await settle(pilot)
        error = str(app.screen.query_one("#launch-error", Static).content)
        assert "gone.toml" in error and "cannot be opened" in error, error


async def test_the_picker_opens_a_profile_by_path(agent_profile: Path) -> None:
    app = make_app(None, remember=False, blink=False, cwd=str(agent_profile.parent))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await launch_form(pilot, app)
        screen.query_one("#launch-cmd", Input).value = "echo C"
        box = screen.query_one("#launch-profile-path", Input)
        box.focus()
        box.value = "./agent.toml"  # relative to the form's directory
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, LaunchScreen), "enter in the file field must not run"
        assert screen.query_one("#launch-profile", Select).value == str(agent_profile)
        box.focus()
        box.value = "./nothing-here.toml"
        await pilot.press("enter")
        await settle(pilot)
        assert "nothing-here.toml" in str(screen.query_one("#launch-error", Static).content)
        assert screen.build() is None  # a typed profile that does not exist stops the run
