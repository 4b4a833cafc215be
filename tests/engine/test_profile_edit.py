"""engine.profile.edit: comment-preserving edits, validation, atomic saves with a backup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import ProfileError
from engine.profile import load_profile
from engine.profile.edit import EditConflict, ProfileDocument, SaveError, load_text
from engine.profile.paths import builtin_profile_dir

USER_PROFILE = """\
# my agent's profile: keep this comment
description = "tuned for my agent"   # one line
extends = "default"                  # everything else from default

[limits]
memory = "1G"                        # plenty
"""


@pytest.fixture(autouse=True)
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cfg))
    return cfg / "flue" / "profiles"


def _user(xdg: Path, text: str = USER_PROFILE, name: str = "mine") -> Path:
    xdg.mkdir(parents=True, exist_ok=True)
    p = xdg / f"{name}.toml"
    p.write_text(text)
    return p


def test_allow_denied_syscall_keeps_comments_and_order() -> None:
    doc = ProfileDocument.open("default")
    before = doc.text()
    assert doc.allow_syscall("ptrace").startswith("allow ptrace")
    after = doc.text()
    # every comment line of the original survives, in the same order
    comments = [ln for ln in before.splitlines() if ln.lstrip().startswith("#")]
    assert comments == [ln for ln in after.splitlines() if ln.lstrip().startswith("#")]
    assert "# no debugging of other processes" not in after  # the removed entry's own comment
    prof = doc.resolve()
    assert "ptrace" in prof.seccomp.allow and "ptrace" not in prof.seccomp.deny
    diff = doc.diff()
    assert '-    "ptrace",' in diff and '+    "ptrace",' in diff
    assert doc.diff_stat() == (1, 1)


def test_allow_member_of_denied_group_splits_the_group() -> None:
    doc = ProfileDocument.open("default")
    doc.allow_syscall("mount")
    prof = doc.resolve()
    assert "mount" in prof.seccomp.allow
    assert {"umount2", "pivot_root", "chroot"} <= prof.seccomp.deny
    assert "@mount without mount" in doc.text()


def test_allow_through_inherited_deny(xdg: Path) -> None:
    _user(xdg)
    doc = ProfileDocument.open("mine")
    doc.allow_syscall("ptrace")
    text = doc.text()
    assert '"!ptrace"' in text and "# my agent's profile: keep this comment" in text
    assert "ptrace" in doc.resolve().seccomp.allow


def test_deny_with_errno_and_group_allow() -> None:
    doc = ProfileDocument.open("default")
    doc.deny_syscall("ptrace", "EACCES")
    assert doc.resolve().seccomp.errno_for("ptrace") == 13
    assert 'clone3 = "ENOSYS", ptrace = "EACCES"' in doc.text()
    doc.allow_group("@debug")
    prof = doc.resolve()
    assert "ptrace" in prof.seccomp.allow  # errno entry dropped with it: still valid


def test_network_limits_binds_env() -> None:
    doc = ProfileDocument.open("default")
    doc.set_network("loopback")
    doc.set_limit("memory", "256M")
    doc.set_limit("pids", "64")
    doc.set_limit("timeout", "30s")
    doc.set_limit("cpus", None)
    doc.add_bind("/usr/share", "/data", "ro")
    doc.set_env("AGENT_MODE", "demo")
    prof = doc.resolve()
    assert prof.network.mode == "loopback"
    assert prof.limits.memory == 256 << 20 and prof.limits.pids == 64
    assert prof.limits.timeout == 30 and prof.limits.cpus is None
    assert any(b.dst == "/data" for b in prof.filesystem.binds)
    assert ("AGENT_MODE", "demo") in prof.env.set
    # the trailing comment stays in its column
    line = next(ln for ln in doc.text().splitlines() if ln.startswith("memory ="))
    orig = next(ln for ln in doc.saved_text.splitlines() if ln.startswith("memory ="))
    assert line.index("#") == orig.index("#")
    doc.remove_bind("/data")
    assert not doc.resolve().filesystem.binds


def test_save_user_profile_atomic_with_backup(xdg: Path) -> None:
    path = _user(xdg)
    doc = ProfileDocument.open("mine")
    doc.set_limit("memory", "2G")
    res = doc.save()
    assert res.path == path and res.backup == path.with_name("mine.toml.bak")
    assert res.backup.read_text() == USER_PROFILE
    saved = path.read_text()
    assert 'memory = "2G"' in saved and "# my agent's profile: keep this comment" in saved
    assert not [p for p in xdg.iterdir() if p.name.endswith(".tmp")]  # no temporaries left
    assert load_profile("mine").limits.memory == 2 << 30
    assert not doc.dirty


def test_invalid_edit_writes_nothing(xdg: Path) -> None:
    path = _user(xdg)
    doc = ProfileDocument.open("mine")
    doc.doc["limits"]["memory"] = "lots"  # what a hand edit in the diff editor might do
    err = doc.validate()
    assert isinstance(err, ProfileError)
    assert err.file == str(path) and err.line == 6 and "bad size" in err.title
    with pytest.raises(ProfileError):
        doc.save()
    assert path.read_text() == USER_PROFILE
    assert sorted(p.name for p in xdg.iterdir()) == ["mine.toml"]


def test_builtin_is_never_modified(xdg: Path) -> None:
    builtin = builtin_profile_dir() / "default.toml"
    original = builtin.read_bytes()
    doc = ProfileDocument.open("default")
    assert doc.builtin
    doc.allow_syscall("ptrace")
    with pytest.raises(SaveError):
        doc.save(builtin)
    res = doc.save()  # the user copy
    assert res.created and res.path == xdg / "default.toml"
    assert builtin.read_bytes() == original
    text = res.path.read_text()
    assert "# flue's default profile" in text and '"ptrace",' in text
    assert "ptrace" in load_profile("default").seccomp.allow  # the user copy shadows
    named = doc.save("agent-x")
    assert named.path == xdg / "agent-x.toml"


def test_conflict_when_file_changed_on_disk(xdg: Path) -> None:
    path = _user(xdg)
    doc = ProfileDocument.open("mine")
    doc.set_network("loopback")
    path.write_text(USER_PROFILE + "# edited elsewhere\n")
    with pytest.raises(EditConflict):
        doc.save()
    assert path.read_text().endswith("# edited elsewhere\n")
    doc.save(force=True)
    assert 'mode = "loopback"' in path.read_text()


def test_failed_write_leaves_file_and_no_temporaries(xdg: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = _user(xdg)
    doc = ProfileDocument.open("mine")
    doc.set_limit("memory", "3G")
    real_replace = os.replace

    def failing(src: str, dst: str) -> None:
        if str(dst) == str(path):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(SaveError):
        doc.save()
    assert path.read_text() == USER_PROFILE
    assert not [p for p in xdg.iterdir() if p.name.endswith(".tmp")]


def test_load_text_names_the_origin(tmp_path: Path) -> None:
    origin = tmp_path / "draft.toml"
    prof = load_text('extends = "default"\n[network]\nmode = "loopback"\n', name="draft",
                     origin=origin)
    assert prof.name == "draft" and prof.source == str(origin)
    assert prof.network.mode == "loopback"
    with pytest.raises(ProfileError) as info:
        load_text('[network]\nmode = "wifi"\n', name="draft", origin=origin)
    assert info.value.file == str(origin) and info.value.line == 2
    assert str(origin) in str(info.value)


def test_allow_and_remove_domains(xdg: Path) -> None:
    doc = ProfileDocument.open(str(_user(xdg)))
    assert doc.allow_domain("PyPI.org") == "allow pypi.org (network mode allowlist)"
    assert doc.allow_domain("*.pythonhosted.org") == "allow *.pythonhosted.org"
    assert doc.allow_domain("pypi.org.") == "pypi.org is already allowed"
    prof = doc.resolve()
    assert prof.network.mode == "allowlist"
    assert prof.network.allow == ("pypi.org", "*.pythonhosted.org")
    assert "# my agent's profile: keep this comment" in doc.text()
    assert doc.remove_domain("pypi.org") == "no longer allow pypi.org"
    assert doc.resolve().network.allow == ("*.pythonhosted.org",)
    with pytest.raises(ProfileError, match="not in the network allowlist"):
        doc.remove_domain("pypi.org")
    with pytest.raises(ProfileError, match="IP address"):
        doc.allow_domain("10.0.0.1")


def test_remove_an_inherited_domain(xdg: Path) -> None:
    _user(xdg, 'extends = "default"\n[network]\nmode = "allowlist"\nallow = ["pypi.org"]\n',
          name="base")
    doc = ProfileDocument.open(str(_user(xdg, 'extends = "base"\n', name="child")))
    assert doc.remove_domain("pypi.org") == "no longer allow inherited pypi.org"
    assert doc.resolve().network.allow == ()
    assert doc.allow_domain("pypi.org") == "allow pypi.org"  # drops the "!pypi.org" again
    assert "!pypi.org" not in doc.text()
    assert doc.resolve().network.allow == ("pypi.org",)


def _line(doc: ProfileDocument, key: str) -> str:
    return next(ln for ln in doc.text().splitlines() if ln.startswith(f"{key} ="))


def test_a_changed_value_does_not_keep_a_comment_that_now_lies() -> None:
    doc = ProfileDocument.open("default")
    saved_mode = _line(doc, "mode")
    doc.set_network("loopback")
    line = _line(doc, "mode")
    assert "not even loopback" not in line
    assert line.endswith('# changed in flue-tui (was "none")')
    assert line.index("#") == saved_mode.index("#")  # still in its column
    doc.allow_namespaces()
    line = _line(doc, "allow_namespaces")
    assert line.startswith("allow_namespaces = true") and "may not create" not in line
    assert doc.resolve().seccomp.allow_namespaces
    doc.set_network("none")  # back to the saved value: the saved comment comes back
    doc.allow_namespaces(False)
    assert _line(doc, "mode") == saved_mode and not doc.dirty


def test_an_errno_table_losing_the_entry_its_comment_explains() -> None:
    doc = ProfileDocument.open("default")
    doc.deny_syscall("ptrace", "EACCES")  # an entry added: the comment on clone3 still holds
    assert "glibc then falls back to clone" in _line(doc, "errno")
    doc.allow_syscall("clone3")
    line = _line(doc, "errno")
    assert "glibc" not in line and '(was { clone3 = "ENOSYS" })' in line
