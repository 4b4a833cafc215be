"""Review: sharing the host script shared its whole folder, dotfiles included.

`flue-tui -- python3 ~/agent.py` bound ~ read-only at /opt/host/<name>: ~/.ssh went to the
agent. Now only the script itself is bound (``--share-dir`` binds the folder, after a loud
question when it is the home folder or has dotfiles), the run's `flue run` equivalent is
shown, and a script the sandbox's user cannot read (as root it is uid 65534 on the host) is
caught before the launch with the reason, instead of a bare "Permission denied".
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from waits import settle

from flue_tui.app import make_app
from flue_tui.runspec import RunSpec, cli_command, prepare
from flue_tui.screens.modals import ConfirmModal, ErrorModal


@pytest.fixture
def project() -> Iterator[Path]:
    """A project folder every uid can reach (pytest's own tmp_path is under a 0700 folder,
    which is just what the sandbox's user could not get through)."""
    top = Path(tempfile.mkdtemp(prefix="flue-tui-test-", dir="/tmp"))
    top.chmod(0o755)
    d = top / "proj"
    d.mkdir(mode=0o755)
    (d / "agent.py").write_text("print('hi')\n")
    (d / "agent.py").chmod(0o644)
    (d / ".env").write_text("TOKEN=secret\n")
    (d / ".ssh").mkdir()
    try:
        yield d
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_only_the_script_is_bound(project: Path) -> None:
    spec = RunSpec(argv=("python3", "agent.py", "--flag"), cwd=str(project))
    p = prepare(spec)
    assert [(b.src, b.dst, b.rw) for b in p.binds] == [
        (str(project / "agent.py"), "/opt/host/proj/agent.py", False)]
    assert p.argv == ("python3", "/opt/host/proj/agent.py", "--flag")
    assert not p.warnings and not p.problems


def test_sharing_the_folder_says_what_else_goes(project: Path) -> None:
    p = prepare(RunSpec(argv=("python3", "agent.py"), cwd=str(project), share_dirs=True))
    assert [(b.src, b.dst) for b in p.binds] == [(str(project), "/opt/host/proj")]
    assert any(".env" in w and ".ssh" in w and "dotfiles" in w for w in p.warnings), p.warnings


def test_the_flue_run_equivalent(project: Path) -> None:
    spec = RunSpec(argv=("python3", "agent.py"), cwd=str(project), workspace=str(project))
    p = prepare(spec)
    line = cli_command(spec, p, "/x/my agent.toml")
    assert shlex.split(line) == [
        "flue", "run", "-p", "/x/my agent.toml", "--bind",
        f"{project}/agent.py:/opt/host/proj/agent.py:ro", "--workspace", str(project), "--",
        "python3", "/opt/host/proj/agent.py"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the 65534 mapping is root's")
def test_a_script_in_a_closed_folder_is_caught_before_the_launch(project: Path) -> None:
    project.chmod(0o700)
    p = prepare(RunSpec(argv=("python3", "agent.py"), cwd=str(project)))
    assert p.problems
    problem = p.problems[0]
    assert "65534" in problem.detail and str(project) in problem.detail
    assert f"chmod o+x {project}" in problem.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="the 65534 mapping is root's")
async def test_the_app_says_why_instead_of_launching(project: Path) -> None:
    project.chmod(0o700)
    app = make_app(["python3", "agent.py"], cwd=str(project), remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if isinstance(app.screen, ErrorModal):
                break
        assert isinstance(app.screen, ErrorModal)
        assert "cannot be read inside the sandbox" in app.screen.title_text
        assert not app.runs and not app.bridge.running


async def test_a_home_folder_shared_whole_asks_first(project: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(project))
    app = make_app(["python3", "agent.py"], cwd=str(project), remember=False, blink=False,
                   share_dirs=True)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if isinstance(app.screen, ConfirmModal):
                break
        assert isinstance(app.screen, ConfirmModal)
        assert "home folder" in app.screen.question and ".ssh" in app.screen.question
        await pilot.press("n")
        await settle(pilot)
        assert not app.runs


def test_a_profile_that_does_not_exist_fails_on_the_command_line() -> None:
    r = subprocess.run([sys.executable, "-m", "flue_tui", "-p", "no-such-profile", "--", "true"],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no profile named 'no-such-profile'" in r.stderr, r
