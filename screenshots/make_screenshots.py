"""Screenshots of flue-tui from real runs of the demo agent (`make screenshots`).

Writes screenshots/monitor.svg (the monitor after the demo ran), screenshots/tune.svg (the
Tune screen with the diff after allowing ptrace from its denial row), screenshots/save.svg (the
save dialog) and screenshots/rerun.svg (the monitor after the re-run, ptrace gone). Needs a
machine where real sandboxes run (root, or unprivileged user namespaces).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

SIZE = (120, 40)
# the checkout's own path shows in the `flue run` line (the demo script is bound from it):
# the screenshots show it as a home-relative path of the same length, so every column stays
# where the real run put it
HOME_LIKE = ("~/flue", "~/src/flue", "~/code/flue", "~/work/flue", "~/projects/flue",
             "/home/you/flue", "/home/you/src/flue", "/home/you/code/flue")


def neutral_root() -> str:
    root = str(ROOT)
    same = [h for h in HOME_LIKE if len(h) == len(root)]
    return same[0] if same else "~/flue"


def save(app, name: str) -> None:  # type: ignore[no-untyped-def]
    path = OUT / f"{name}.svg"
    app.save_screenshot(str(path))
    path.write_text(path.read_text(encoding="utf-8").replace(str(ROOT), neutral_root()),
                    encoding="utf-8")


async def wait_exit(app, pilot, number: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(400):
        m = app.run_model
        if m is not None and m.number == number and m.state in ("exited", "failed") \
                and not app.bridge.running:
            break
        await pilot.pause(0.1)
    await pilot.pause(0.5)
    app.clear_notifications()
    await pilot.pause(0.2)


async def main() -> int:
    from flue_tui.app import make_app

    os.chdir(ROOT)
    app = make_app(["python3", "examples/demo_agent.py"], remember=False, blink=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_exit(app, pilot, 1)
        if app.run_model is None or app.run_model.error:
            print("the demo did not run:", app.run_model and app.run_model.error,
                  file=sys.stderr)
            return 1
        screen = app.screen
        rows = screen.panel("denials")._rows
        screen.query_one("#denials-table").move_cursor(row=rows.index("ptrace"), animate=False)
        await pilot.pause(0.2)
        save(app, "monitor")
        await pilot.press("a")
        await pilot.pause(0.2)
        await pilot.press("t")
        await pilot.pause(0.5)
        app.clear_notifications()
        await pilot.pause(0.2)
        save(app, "tune")
        await pilot.press("ctrl+s")
        await pilot.pause(0.5)
        save(app, "save")
        await pilot.press("escape")
        await pilot.pause(0.2)
        await pilot.press("r")
        await wait_exit(app, pilot, 2)
        save(app, "rerun")
    for name in ("monitor", "tune", "save", "rerun"):
        print(f"screenshots/{name}.svg")
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as state:
        # the save dialog shows where a user profile goes: show the usual place, write nothing
        os.environ["XDG_CONFIG_HOME"] = os.path.join(os.sep, "home", "you", ".config")
        os.environ["XDG_STATE_HOME"] = state
        sys.exit(asyncio.run(main()))
