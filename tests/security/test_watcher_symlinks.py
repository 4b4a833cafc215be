"""The file watcher and symlinks planted in the workspace: ``ws/u -> /usr``, ``ws/hostroot ->
/``, ``ws/peek -> a host directory``, ``ws/up -> ../..``. Watching through /proc/PID/root
resolved them against the supervisor's root: tens of thousands of inotify watches on host
directories (root's budget) and host files reported as workspace changes. Now the watching
runs in a helper inside the sandbox's user and mount namespaces that follows no symlink: the
supervisor holds no watch, the helper holds one per real directory of the workspace and
/tmp, no host file appears in the events, and workspace changes still do -- also after the
sandbox swaps a directory for a symlink to /usr mid-run.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from helpers import observe as ob
from helpers.host import file_watcher_of, inotify_watches

from engine import events as ev

pytestmark = pytest.mark.sandbox

NOBODY = 65534
SCRIPT = """
echo ready
read go < /work/go.fifo
echo new > /work/sub/inner/made.txt
mkdir /work/late && echo x > /work/late/f
mkdir /work/swap && sleep 0.3 && rmdir /work/swap && ln -s /usr /work/swap
ln -s / /work/late/root
sleep 0.5
echo swapped
read go < /work/go2.fifo
echo done
"""


def _host_dirs(*tops: str) -> set[tuple[int, int]]:
    """(device, inode) of ``tops`` and the directories right below them."""
    out = set()
    for top in tops:
        st = os.stat(top)
        out.add((st.st_dev, st.st_ino))
        for e in os.scandir(top):
            if e.is_dir(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                out.add((st.st_dev, st.st_ino))
    return out


def test_workspace_symlinks_to_the_host_are_neither_watched_nor_reported(flue):
    ws = flue.tmpdir("ws", owner=NOBODY if flue.mode == "root" else None)
    uid = os.stat(ws).st_uid
    outside = flue.tmpdir("outside", mode=0o755)
    (ws / "sub" / "inner").mkdir(parents=True)
    for name, target in (("u", "/usr"), ("hostroot", "/"), ("peek", str(outside)),
                         ("up", "../..")):
        os.symlink(target, ws / name)
    for fifo in ("go.fifo", "go2.fifo"):
        os.mkfifo(ws / fifo, 0o666)
    for p in (ws / "sub", ws / "sub" / "inner", ws / "go.fifo", ws / "go2.fifo"):
        os.chown(p, uid, uid)
    for name in ("u", "hostroot", "peek", "up"):
        os.lchown(ws / name, uid, uid)
    events = ob.events_path(flue)
    h = flue.start(["sh", "-c", SCRIPT], "--workspace", str(ws), "--events", str(events))
    h.read_until("ready")
    helper = file_watcher_of(h.pid)
    # the helper is where the sandbox is: its mount namespace is not the supervisor's
    assert os.readlink(f"/proc/{helper}/ns/mnt") != os.readlink(f"/proc/{h.pid}/ns/mnt")
    assert os.readlink(f"/proc/{helper}/ns/user") != os.readlink(f"/proc/{h.pid}/ns/user")

    host = _host_dirs("/usr", "/", str(outside))
    real_ws_dirs = {(os.stat(p).st_dev, os.stat(p).st_ino)
                    for p in (ws, ws / "sub", ws / "sub" / "inner")}

    def check_watches(phase: str) -> None:
        assert inotify_watches(h.pid) == [], f"{phase}: the supervisor itself holds inotify watches"
        held = inotify_watches(helper)
        assert len(held) <= 12, f"{phase}: {len(held)} watches: symlinks were followed"
        assert not set(held) & host, f"{phase}: host directories are watched"
        assert real_ws_dirs <= set(held), f"{phase}: the workspace is not watched: {held}"

    check_watches("start")
    with open(ws / "go.fifo", "w") as f:
        f.write("go\n")
    h.read_until("swapped")
    name = f"host-only-{uuid.uuid4().hex[:8]}.txt"
    (outside / name).write_text("not the sandbox's\n")
    time.sleep(0.3)
    check_watches("after the swap")
    with open(ws / "go2.fifo", "w") as f:
        f.write("go\n")
    r = h.finish()
    assert r.returncode == 0 and "done" in r.stdout, r
    assert not [d for d in r.report["degraded"] if "file" in d], r.report["degraded"]

    evs = ob.read_events(events)
    changes = ob.of(evs, ev.FileChanged)
    paths = {c.path for c in changes}
    assert not [p for p in paths if name in p], f"a host file was reported: {paths}"
    below_links = [p for p in paths if any(p.startswith(f"/work/{ln}/") for ln in
                                           ("u", "hostroot", "peek", "up", "swap"))]
    assert not below_links, f"changes reported through a symlink: {below_links}"
    assert not [p for p in paths if p.startswith(("/usr", "/etc", "/work/late/root/"))]
    seen = {(c.change, c.path) for c in changes}
    for want in (("added", "/work/sub/inner/made.txt"), ("added", "/work/late"),
                 ("added", "/work/late/f"), ("added", "/work/swap"),
                 ("added", "/work/late/root")):
        assert want in seen, f"{want} missing: {sorted(seen)}"
    # the swapped entry is a symlink now, not a directory with /usr's contents
    assert [c.is_dir for c in changes if c.path == "/work/swap"][-1] is False
    manifest = ob.one(evs, ev.WorkspaceManifest)
    listed = {p: mode for p, _s, mode in manifest.entries}
    for link in ("u", "hostroot", "peek", "up", "swap"):
        assert listed[f"/work/{link}"].startswith("l"), listed
        assert not [p for p in listed if p.startswith(f"/work/{link}/")], listed
    assert Path(ws / "sub" / "inner" / "made.txt").read_text() == "new\n"
