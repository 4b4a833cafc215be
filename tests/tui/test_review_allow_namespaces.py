"""Review: "allow" reported success where it could not work.

In tmux with the demo: select `unshare  EPERM  @namespaces  flags=CLONE_NEWUSER`, press `a`
("allow unshare (@namespaces in deny split)"), `r`: the same denial again, the toast says
"same denials as before". Creating namespaces also needs `[seccomp] allow_namespaces = true`
(docs/profiles.md), which neither `a` nor Tune set, and nothing said so. Same for clone3,
which stays ENOSYS after `a` ("removed from deny; dropped its errno ENOSYS") -- and clone3
answered ENOSYS is glibc's normal fallback anyway. `mount` and AF_PACKET sockets still fail
after `a`: nothing in the sandbox has a capability.

Now `a` on unshare asks to set allow_namespaces too (saying what that lets the agent do);
`a` on mount or AF_PACKET explains and changes nothing unless pressed again; clone3 ENOSYS is
shown as "expected".
"""

from __future__ import annotations

from typing import Any

from waits import settle

from flue_tui.app import FlueApp, make_app
from flue_tui.model import DenialRow
from flue_tui.screens.modals import ConfirmModal
from flue_tui.widgets.panels import DenialsPanel

UNSHARE = DenialRow(key="unshare", name="unshare", group="@namespaces", count=1, errno=1,
                    errno_name="EPERM", decoded={"flags": "CLONE_NEWUSER"})
MOUNT = DenialRow(key="mount", name="mount", group="@mount", count=3, errno=1,
                  errno_name="EPERM", decoded={"flags": "0"})
PACKET = DenialRow(key="socket:AF_PACKET", name="socket", group="@network-io", count=1,
                   errno=1, errno_name="EPERM", decoded={"family": "AF_PACKET"})
CLONE3 = DenialRow(key="clone3", name="clone3", group="@process", count=1, errno=38,
                   errno_name="ENOSYS")


async def monitor(pilot: Any, app: FlueApp) -> None:
    for _ in range(100):
        await pilot.pause(0.05)
        if app.draft is not None and app.screen_stack[-1].__class__.__name__ == "LaunchScreen":
            break
    await pilot.press("escape")
    await settle(pilot)


def told(app: FlueApp, *words: str) -> bool:
    return any(all(w in str(n.message) for w in words) for n in app._notifications)


async def test_allowing_unshare_lifts_the_namespace_filter_or_says_why_not() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await monitor(pilot, app)
        app.edit_profile("allow", UNSHARE)
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        question = app.screen.question
        assert "allow_namespaces = true" in question and "exploits" in question, question
        await pilot.press("n")
        await settle(pilot)
        assert not app.draft.dirty and told(app, "unshare stays refused")
        app.edit_profile("allow", UNSHARE)
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        prof = app.draft.resolve()
        assert prof.seccomp.allow_namespaces and "unshare" in prof.seccomp.allow
        line = next(ln for ln in app.draft.text().splitlines()
                    if ln.startswith("allow_namespaces"))
        assert "may not create namespaces" not in line, line  # no comment that now lies


async def test_allowing_what_needs_a_capability_explains_instead() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await monitor(pilot, app)
        for row, cap in ((MOUNT, "CAP_SYS_ADMIN"), (PACKET, "CAP_NET_RAW")):
            app.edit_profile("allow", row)
            await settle(pilot)
            assert not app.draft.dirty, f"a on {row.key} widened the profile"
            assert told(app, cap, "a again"), [str(n.message) for n in app._notifications]
        app.edit_profile("allow_group", MOUNT)
        await settle(pilot)
        assert not app.draft.dirty
        app.edit_profile("allow", PACKET)
        await settle(pilot)
        assert not app.draft.dirty
        app.edit_profile("allow", PACKET)  # the same key on the same row again: do it
        await settle(pilot)
        assert "AF_PACKET" in app.draft.resolve().seccomp.socket_families


async def test_clone3_enosys_is_expected() -> None:
    app = make_app(None, remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await monitor(pilot, app)
        cells = DenialsPanel._cells(CLONE3)
        assert cells[3].plain == "expected" and all("dim" in str(c.style) for c in cells)
        assert DenialsPanel._cells(MOUNT)[3].plain == "needs cap"
        app.edit_profile("allow", CLONE3)
        await settle(pilot)
        assert not app.draft.dirty and told(app, "glibc then falls back to clone")
        assert "clone3" in app.draft.text()  # its deny entry and comment are kept
