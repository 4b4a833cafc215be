"""Workspace changes, observed live: files created, modified and deleted (some in nested
directories made the moment before) each appear exactly once with the right kind, and the
WorkspaceManifest at exit lists what remains. ``--events`` turns the watcher on."""

from __future__ import annotations

import collections
import os
import subprocess
import textwrap

import pytest
from helpers import observe as ob

from engine import events as ev

pytestmark = pytest.mark.sandbox

PAUSE = 0.4  # between the phases, so each phase's changes are news of their own
SCRIPT = textwrap.dedent(f"""
    import os, time

    def write(path, text, mode="w"):
        with open(path, mode) as f:
            f.write(text)

    os.chdir("/work")
    # phase 1: three files, and one in a directory tree made the moment before
    write("keep.txt", "kept\\n")
    write("mod.txt", "one\\n")
    write("del.txt", "doomed\\n")
    os.makedirs("nested/deep")
    write("nested/deep/f.txt", "deep\\n")
    write("/tmp/t.txt", "tmp\\n")
    time.sleep({PAUSE})
    # phase 2: modify, delete, and a new tree filled at once while the watch runs
    write("mod.txt", "two\\n", "a")
    os.unlink("del.txt")
    write("nested/deep/g.txt", "short-lived\\n")
    os.makedirs("late/inner")
    write("late/inner/h.txt", "late\\n")
    time.sleep({PAUSE})
    # phase 3: one more deletion
    os.unlink("nested/deep/g.txt")
    time.sleep({PAUSE})
    print("ok", flush=True)
""")

ADDED = {"/work/keep.txt": 5, "/work/mod.txt": 4, "/work/del.txt": 7, "/work/nested": 0,
         "/work/nested/deep": 0, "/work/nested/deep/f.txt": 5, "/work/nested/deep/g.txt": 12,
         "/work/late": 0, "/work/late/inner": 0, "/work/late/inner/h.txt": 5, "/tmp/t.txt": 4}
MODIFIED = {"/work/mod.txt": 8}
DELETED = {"/work/del.txt", "/work/nested/deep/g.txt"}
DIRS = {"/work/nested", "/work/nested/deep", "/work/late", "/work/late/inner"}
REMAINS = {  # path -> size, in the workspace at exit
    "/work/keep.txt": 5, "/work/mod.txt": 8, "/work/nested": 0, "/work/nested/deep": 0,
    "/work/nested/deep/f.txt": 5, "/work/late": 0, "/work/late/inner": 0,
    "/work/late/inner/h.txt": 5,
}


_RUNS: dict[str, list[ev.Event]] = {}  # mode -> the events of its run (shared by 3 tests)


@pytest.fixture
def run_events(flue):
    if flue.mode not in _RUNS:
        path = ob.events_path(flue)
        r = flue.run(["python3", "-c", SCRIPT], "--events", str(path))
        assert r.returncode == 0 and "ok" in r.stdout, r
        _RUNS[flue.mode] = ob.read_events(path)
    return _RUNS[flue.mode]


def test_each_change_appears_once_with_the_right_kind(run_events):
    changes = ob.of(run_events, ev.FileChanged)
    seen = collections.Counter((c.change, c.path) for c in changes)
    want = ([("added", p) for p in ADDED] + [("modified", p) for p in MODIFIED]
            + [("deleted", p) for p in DELETED])
    for key in want:
        assert seen[key] == 1, f"{key}: seen {seen[key]} times; all changes: {sorted(seen)}"
    extra = sorted(k for k in seen if k not in set(want))
    assert not extra, f"changes that did not happen: {extra}"


def test_changes_carry_sizes_kinds_and_order(run_events):
    changes = ob.of(run_events, ev.FileChanged)
    by = {(c.change, c.path): c for c in changes}
    for path, size in ADDED.items():
        c = by[("added", path)]
        assert c.is_dir == (path in DIRS), c
        if path not in MODIFIED:
            assert c.size == size, c
    for path, size in MODIFIED.items():
        c = by[("modified", path)]
        assert c.size == size and not c.is_dir, c
        assert by[("added", path)].ts <= c.ts
    for path in DELETED:
        c = by[("deleted", path)]
        assert c.size is None and not c.is_dir, c
        assert by[("added", path)].ts <= c.ts
    # a directory is announced before what is in it
    order = [c.path for c in changes if c.change == "added"]
    for path in ADDED:
        parent = path.rsplit("/", 1)[0]
        if parent in ADDED:
            assert order.index(parent) < order.index(path), order
    # every change belongs to the run: after Started, before Exited
    started, exited = ob.one(run_events, ev.Started), ob.one(run_events, ev.Exited)
    assert all(started.ts <= c.ts <= exited.ts for c in changes)


def test_the_manifest_at_exit_lists_what_remains(run_events):
    manifest = ob.one(run_events, ev.WorkspaceManifest)
    entries = {path: (size, mode) for path, size, mode in manifest.entries}
    assert {p: s for p, (s, _m) in entries.items()} == REMAINS, entries
    for path, (_size, mode) in entries.items():
        assert mode.startswith("d" if path in DIRS else "-"), (path, mode)
    assert [e[0] for e in manifest.entries] == sorted(entries), "sorted by path"
    # it comes after the last change and before the end
    kinds = [type(e) for e in run_events]
    assert kinds.index(ev.WorkspaceManifest) > max(
        i for i, k in enumerate(kinds) if k is ev.FileChanged)
    assert kinds[-1] is ev.Exited


BOUND_SCRIPT = textwrap.dedent(f"""
    import os, shutil, time
    os.chdir("/work")
    time.sleep({PAUSE})
    with open("a.txt", "a") as f:
        f.write("more\\n")
    os.unlink("b.txt")
    shutil.rmtree("sub")
    with open("c.txt", "w") as f:
        f.write("new\\n")
    time.sleep({PAUSE})
""")


def test_a_bound_workspace_s_existing_files_are_not_news_but_their_changes_are(flue):
    uid = int(os.environ.get("FLUE_TEST_UID", "4242"))
    ws = flue.tmpdir("ws", owner=uid)  # as root the sandbox's user maps to the owner
    for name, text in (("a.txt", "a\n"), ("b.txt", "b\n"), ("keep.txt", "k\n"),
                       ("sub/s.txt", "s\n")):
        p = ws / name
        p.parent.mkdir(exist_ok=True)
        p.write_text(text)
    for p in (ws, ws / "sub", *ws.rglob("*")):
        os.chown(p, uid, uid)
    path = ob.events_path(flue)
    r = flue.run(["python3", "-c", BOUND_SCRIPT], "--events", str(path),
                 "--workspace", str(ws))
    assert r.returncode == 0, r
    events = ob.read_events(path)
    seen = collections.Counter((c.change, c.path) for c in ob.of(events, ev.FileChanged))
    assert seen == collections.Counter({
        ("modified", "/work/a.txt"): 1, ("deleted", "/work/b.txt"): 1,
        ("deleted", "/work/sub"): 1, ("deleted", "/work/sub/s.txt"): 1,
        ("added", "/work/c.txt"): 1}), sorted(seen)
    manifest = ob.one(events, ev.WorkspaceManifest)
    assert [(p, s) for p, s, _m in manifest.entries] == [
        ("/work/a.txt", 7), ("/work/c.txt", 4), ("/work/keep.txt", 2)]
    assert sorted(os.listdir(ws)) == ["a.txt", "c.txt", "keep.txt"], "the host sees the same"


DEEP = 1200  # deeper than Python's recursion limit: os.fwalk/os.walk raise RecursionError
DEEP_SCRIPT = textwrap.dedent(f"""
    import os
    fd = os.open("/work", os.O_RDONLY | os.O_DIRECTORY)
    for i in range({DEEP}):
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("bottom.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    open("/work/top.txt", "w").write("top\\n")
    print("made", flush=True)
""")


@pytest.mark.parametrize("where", ["made-inside", "bound-before"])
def test_a_very_deep_tree_gives_a_manifest_cut_at_its_depth_bound(flue, where):
    from engine.sources.files import MAX_DEPTH

    args: list[str] = []
    if where == "bound-before":  # already there when the watches and the first scan start
        uid = int(os.environ.get("FLUE_TEST_UID", "4242"))
        ws = flue.tmpdir("ws", owner=uid)
        fd = os.open(ws, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(DEEP):
            os.mkdir("d", dir_fd=fd)
            os.chown("d", uid, uid, dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(fd)
        args = ["--workspace", str(ws)]
        command = ["sh", "-c", "echo hi > /work/top.txt; echo made"]
    else:
        command = ["python3", "-c", DEEP_SCRIPT]
    path = ob.events_path(flue)
    try:
        r = flue.run(command, "--events", str(path), *args)
    finally:
        if args:  # shutil.rmtree (the session's clean-up) recurses: rm(1) does not
            subprocess.run(["rm", "-rf", args[1]], check=False, timeout=60)
    assert r.returncode == 0 and "made" in r.stdout, r
    assert "RecursionError" not in r.stderr, r
    events = ob.read_events(path)
    manifest = ob.one(events, ev.WorkspaceManifest)
    assert manifest.truncated == "depth", manifest.truncated
    assert manifest.max_depth == MAX_DEPTH
    paths = [p for p, _s, _m in manifest.entries]
    assert "/work/top.txt" in paths
    deepest = max(p.count("/") - 1 for p in paths)  # "/work/d" is depth 1
    assert deepest == MAX_DEPTH, deepest
    assert ob.of(events, ev.Exited)


def test_a_complete_manifest_says_it_is_not_cut(run_events):
    manifest = ob.one(run_events, ev.WorkspaceManifest)
    assert manifest.truncated == ""


def test_a_wide_workspace_is_listed_whole_under_a_low_fd_limit(flue):
    """More subdirectories than the process may hold open fds (RLIMIT_NOFILE 1024, the usual
    default): the manifest walk holds one directory at a time, so nothing is left out."""
    uid = int(os.environ.get("FLUE_TEST_UID", "4242"))
    ws = flue.tmpdir("ws", owner=uid)
    n = 1500
    for i in range(n):
        d = ws / f"d{i:04}"
        d.mkdir()
        (d / "f").write_text("x\n")
        os.chown(d, uid, uid)
        os.chown(d / "f", uid, uid)
    path = ob.events_path(flue)
    r = flue.run(["true"], "--events", str(path), "--workspace", str(ws),
                 wrap=["sh", "-c", 'ulimit -n 1024 && exec "$@"', "sh"])
    assert r.returncode == 0, r
    manifest = ob.one(ob.read_events(path), ev.WorkspaceManifest)
    assert manifest.truncated == "", manifest.truncated
    assert len(manifest.entries) == 2 * n, len(manifest.entries)
