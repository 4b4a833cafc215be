"""The syscall groups data file (profiles/syscalls.toml) against libseccomp's tables."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from engine.errors import ProfileError
from engine.profile import (
    builtin_profile_dir,
    expand_syscalls,
    group_of,
    known_syscalls,
    syscall_groups,
)
from engine.profile.groups import _load, groups_file, native_syscalls

pyseccomp = pytest.importorskip("pyseccomp")


def _raw() -> dict:
    return tomllib.loads(groups_file().read_text())


def test_groups_file_ships_with_the_profiles() -> None:
    assert groups_file() == builtin_profile_dir() / "syscalls.toml"
    assert groups_file().is_file()


def test_every_native_syscall_is_in_a_group() -> None:
    native = native_syscalls()
    assert len(native) > 300  # libseccomp answered
    grouped = {s for g in syscall_groups().values() for s in g.syscalls}
    ungrouped = set(_raw().get("ungrouped", ()))
    missing = sorted(native - grouped - ungrouped)
    assert not missing, f"add these to a group in syscalls.toml (or to `ungrouped`): {missing}"


def test_every_name_is_a_real_syscall_somewhere() -> None:
    """Names from other architectures are fine; names no architecture has are typos."""
    arch = pyseccomp.system_arch()
    raw = _raw()
    recent = set(raw["recent"])
    bad = []
    for name, table in raw.items():
        if not name.startswith("@"):
            continue
        for member in table["syscalls"]:
            if member.startswith("@"):
                assert member in raw, f"{name} includes undefined group {member}"
            elif member not in recent and pyseccomp.resolve_syscall(arch, member) == -1:
                bad.append(member)
    assert not bad


def test_recent_names_are_used_and_not_already_known_everywhere() -> None:
    raw = _raw()
    members = {m for k, t in raw.items() if k.startswith("@") for m in t["syscalls"]}
    assert set(raw["recent"]) <= members


def test_every_group_has_a_one_line_description() -> None:
    for group in syscall_groups().values():
        assert group.description and "\n" not in group.description, group.name
        assert group.syscalls, group.name
        assert group.name.startswith("@")


def test_systemd_style_vocabulary_is_present() -> None:
    expected = {
        "@aio", "@basic-io", "@chown", "@clock", "@cpu-emulation", "@debug", "@file-system",
        "@io-event", "@ipc", "@keyring", "@memlock", "@module", "@mount", "@network-io",
        "@obsolete", "@pkey", "@privileged", "@process", "@raw-io", "@reboot", "@resources",
        "@sandbox", "@setuid", "@signal", "@swap", "@sync", "@system-service", "@timer",
    }
    assert expected <= set(syscall_groups())


def test_groups_expand_nested_groups() -> None:
    groups = syscall_groups()
    assert set(groups["@clock"].syscalls) <= set(groups["@privileged"].syscalls)
    assert "kexec_load" in groups["@privileged"].syscalls
    assert "@clock" in groups["@privileged"].members
    assert set(groups["@basic-io"].syscalls) <= set(groups["@system-service"].syscalls)


def test_expand_syscalls_mixes_names_and_groups() -> None:
    names = expand_syscalls(["@swap", "getrandom"])
    assert names == {"swapon", "swapoff", "getrandom"}


def test_expand_syscalls_unknown_has_did_you_mean() -> None:
    with pytest.raises(ValueError, match="'ptrace'"):
        expand_syscalls(["ptrac"])
    with pytest.raises(ValueError, match="'@network-io'"):
        expand_syscalls(["@network"])


def test_known_syscalls_covers_native_and_group_names() -> None:
    known = known_syscalls()
    assert native_syscalls() <= known
    assert "arm_fadvise64_64" in known  # an arm name used in @file-system
    assert "not_a_syscall" not in known


def test_group_of_names_the_most_specific_group() -> None:
    assert group_of("ptrace") == "@debug"
    assert group_of("clock_settime") == "@clock"  # not the larger @privileged
    assert group_of("read") == "@basic-io"  # not @system-service
    assert group_of("getrandom") == "@random"
    assert group_of("nonexistent") is None


def _write_groups(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syscalls.toml"
    path.write_text(text)
    return path


def test_groups_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = _write_groups(
        tmp_path,
        'recent = []\n["@a"]\ndescription = "x"\nsyscalls = [\n  "read",\n  "raed",\n]\n',
    )
    with pytest.raises(ProfileError) as info:
        _load(path)
    assert info.value.line == 6
    assert "'raed'" in str(info.value) and "'read'" in info.value.fix


def test_groups_file_unknown_group_reference(tmp_path: Path) -> None:
    path = _write_groups(tmp_path, '["@a"]\ndescription = "x"\nsyscalls = ["@bsic"]\n["@basic"]\n'
                                   'description = "y"\nsyscalls = ["read"]\n')
    with pytest.raises(ProfileError, match="unknown group @bsic") as info:
        _load(path)
    assert info.value.line == 3 and "@basic" in info.value.fix


def test_groups_file_cycle(tmp_path: Path) -> None:
    path = _write_groups(tmp_path, '["@a"]\ndescription = "x"\nsyscalls = ["@b"]\n["@b"]\n'
                                   'description = "y"\nsyscalls = ["@a"]\n')
    with pytest.raises(ProfileError, match="cycle"):
        _load(path)


def test_recent_syscall_unknown_to_libseccomp_is_dropped(tmp_path: Path) -> None:
    path = _write_groups(tmp_path, 'recent = ["zz_future_call"]\n["@a"]\ndescription = "x"\n'
                                   'syscalls = ["read", "zz_future_call"]\n')
    tables = _load(path)
    assert tables.groups["@a"].syscalls == ("read",)
    assert "zz_future_call" in tables.recent_unsupported
