"""Reading, layering and validating TOML profiles."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from engine.errors import ProfileError
from engine.profile import Bind, list_profiles, load_profile

pytest.importorskip("pyseccomp")


@pytest.fixture()
def write(tmp_path: Path):  # type: ignore[no-untyped-def]
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
        return path

    return _write


def _error(path: Path | str, **kwargs: object) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        load_profile(str(path), **kwargs)  # type: ignore[arg-type]
    return info.value


# --------------------------------------------------------------------------- layering

BASE = """
description = "base"
hostname = "base"
[filesystem]
system = ["/usr", "/lib"]
etc = ["ssl", "localtime"]
binds = ["/opt/a:/opt/a:ro", {src = "/data", dst = "/data", mode = "rw", optional = true}]
tmpfs = { "/var/tmp" = "64M", "/cache" = "1G" }
[seccomp]
allow = ["@basic-io", "@process", "@signal", "@memory", "@file-system", "ptrace", "getrandom"]
deny = ["clone3", "mount"]
errno = { clone3 = "ENOSYS", mount = "EACCES" }
[limits]
memory = "1G"
pids = 100
timeout = "10m"
[env]
pass = ["TERM", "LANG"]
set = { PATH = "/bin", EDITOR = "vi" }
"""


def test_child_scalars_win_and_inherit(write) -> None:  # type: ignore[no-untyped-def]
    write("base.toml", BASE)
    child = write("child.toml", 'extends = "base.toml"\nhostname = "child"\n[limits]\npids = 5\n')
    p = load_profile(str(child))
    assert p.name == "child"
    assert p.hostname == "child"
    assert p.description == "base"  # not set in the child: inherited
    assert p.limits.pids == 5
    assert p.limits.memory == 1 << 30
    assert p.limits.timeout == 600
    assert [Path(c).name for c in p.chain] == ["base.toml", "child.toml"]
    assert p.source == str(child)


def test_lists_append_with_dedup_and_bang_removes(write) -> None:  # type: ignore[no-untyped-def]
    write("base.toml", BASE)
    child = write("child.toml", """
extends = "base.toml"
[filesystem]
system = ["/lib", "/opt", "!/usr"]
etc = ["/etc/pki", "!localtime"]
binds = ["!/opt/a", "/srv:/srv:rw"]
[seccomp]
allow = ["!ptrace", "@timer", "getrandom"]
deny = ["!mount"]
[env]
pass = ["LC_*", "!LANG"]
""")
    p = load_profile(str(child))
    assert p.filesystem.system == ("/lib", "/opt")
    assert p.filesystem.etc == ("/etc/ssl", "/etc/pki")
    assert p.filesystem.binds == (
        Bind(src="/data", dst="/data", rw=True, optional=True),
        Bind(src="/srv", dst="/srv", rw=True),
    )
    assert p.seccomp.allow_spec == ("@basic-io", "@process", "@signal", "@memory",
                                    "@file-system", "getrandom", "@timer")
    assert "ptrace" not in p.seccomp.allow
    assert "nanosleep" in p.seccomp.allow
    assert p.seccomp.deny_spec == ("clone3",)
    assert p.env.passthrough == ("TERM", "LC_*")


def test_tables_merge_key_by_key(write) -> None:  # type: ignore[no-untyped-def]
    write("base.toml", BASE)
    child = write("child.toml", """
extends = "base.toml"
[filesystem]
tmpfs = { "/cache" = "2G", "/scratch" = "8M" }
[seccomp]
deny = ["!mount", "ptrace"]
errno = { "!mount" = "", ptrace = 3 }
[env]
set = { EDITOR = "nano", "!PATH" = "" , LESS = "-R" }
""")
    p = load_profile(str(child))
    assert dict(p.filesystem.tmpfs) == {"/var/tmp": 64 << 20, "/cache": 2 << 30, "/scratch": 8 << 20}
    assert dict(p.seccomp.errno) == {"clone3": errno.ENOSYS, "ptrace": 3}
    assert p.seccomp.errno_for("ptrace") == 3
    assert p.seccomp.errno_for("mount") == errno.EPERM
    assert dict(p.env.set) == {"EDITOR": "nano", "LESS": "-R"}


def test_deep_chains_and_names_in_the_search_path(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write("profiles/one.toml", 'extends = "default"\n[limits]\npids = 11\n')
    write("profiles/two.toml", 'extends = "one"\n[limits]\nmemory = "256M"\n')
    write("profiles/three.toml", 'extends = "two"\nhostname = "three"\n')
    p = load_profile("three", search_path=[tmp_path / "profiles"])
    assert (p.hostname, p.limits.pids, p.limits.memory) == ("three", 11, 256 << 20)
    assert [Path(c).stem for c in p.chain] == ["default", "one", "two", "three"]
    assert "read" in p.seccomp.allow  # from default, three levels down


def test_user_profile_can_shadow_and_extend_a_builtin(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write("profiles/default.toml", 'extends = "default"\n[limits]\nmemory = "3G"\n')
    p = load_profile("default", search_path=[tmp_path / "profiles"])
    assert p.limits.memory == 3 << 30
    assert len(p.chain) == 2
    assert "read" in p.seccomp.allow


def test_limits_can_be_unset(write) -> None:  # type: ignore[no-untyped-def]
    write("base.toml", BASE)
    child = write("child.toml", 'extends = "base.toml"\n[limits]\nmemory = "none"\n'
                                'pids = "none"\ntimeout = 0\n')
    p = load_profile(str(child))
    assert (p.limits.memory, p.limits.pids, p.limits.timeout) == (None, None, None)


def test_deny_wins_over_allow(write) -> None:  # type: ignore[no-untyped-def]
    path = write("p.toml", """
extends = "default"
[seccomp]
allow = ["@debug"]
""")
    p = load_profile(str(path))
    assert "ptrace" not in p.seccomp.allow  # default denies it; a wider allow does not undo that
    assert "ptrace" in p.seccomp.deny
    assert "process_madvise" in p.seccomp.allow  # in @debug, not denied by default


def test_kill_removes_from_allow(write) -> None:  # type: ignore[no-untyped-def]
    path = write("p.toml", 'extends = "default"\n[seccomp]\nkill = ["getrandom"]\n')
    p = load_profile(str(path))
    assert "getrandom" in p.seccomp.kill and "getrandom" not in p.seccomp.allow


def test_errno_names_and_numbers(write) -> None:  # type: ignore[no-untyped-def]
    path = write("p.toml", """
extends = "default"
[seccomp]
default_errno = 38
errno = { ptrace = "ESRCH", "@keyring" = "ENOSYS", keyctl = "EACCES" }
""")
    p = load_profile(str(path))
    assert p.seccomp.default_errno == errno.ENOSYS
    assert p.seccomp.errno_for("ptrace") == errno.ESRCH
    assert p.seccomp.errno_for("add_key") == errno.ENOSYS  # from the group
    assert p.seccomp.errno_for("keyctl") == errno.EACCES  # the plain name beats its group


def test_binds_forms(write) -> None:  # type: ignore[no-untyped-def]
    path = write("p.toml", """
extends = "default"
[filesystem]
binds = ["/opt/x", "/a:/b", "/c:/d:rw", {src = "/e", optional = true}]
""")
    p = load_profile(str(path))
    assert p.filesystem.binds == (
        Bind("/opt/x", "/opt/x"), Bind("/a", "/b"), Bind("/c", "/d", rw=True),
        Bind("/e", "/e", optional=True),
    )


# --------------------------------------------------------------------------- overrides


def test_overrides_are_layered_and_validated() -> None:
    p = load_profile("default", overrides={"limits": {"memory": "64M", "timeout": "30s"},
                                           "network": {"mode": "loopback"},
                                           "seccomp": {"deny": ["getrandom"]}})
    assert p.limits.memory == 64 << 20
    assert p.limits.timeout == 30
    assert p.network.mode == "loopback"
    assert "getrandom" not in p.seccomp.allow
    assert not any(c == "<overrides>" for c in p.chain)


def test_bad_override_names_the_key() -> None:
    err = _error("default", overrides={"limits": {"memory": "12Q"}})
    assert err.file == "<overrides>" and err.key == "limits.memory"
    assert "12Q" in str(err) and "like 64M" in err.fix
    err = _error("default", overrides={"limits": {"memroy": "1G"}})
    assert "'memory'" in err.fix


# --------------------------------------------------------------------------- errors


def test_bad_size_names_file_line_and_key(write) -> None:  # type: ignore[no-untyped-def]
    path = write("bad.toml", """
# a profile with a typo in a size
# (memory is on line 7)
description = "typo"
extends = "default"

[limits]
memory = "12Q"
""")
    err = _error(path)
    assert err.file == str(path) and err.line == 7 and err.key == "limits.memory"
    rendered = err.render()
    assert "bad.toml:7:" in rendered and "'12Q'" in rendered and "(key 'limits.memory')" in rendered
    assert err.fix == "sizes are a number with an optional k, M, G or T suffix, like 64M"


def test_misspelt_syscall_did_you_mean(write) -> None:  # type: ignore[no-untyped-def]
    path = write("p.toml", """
extends = "default"
[seccomp]
deny = [
    "kcmp",
    "ptrac",
]
""")
    err = _error(path)
    assert err.line == 5 and err.key == "seccomp.deny"
    assert "unknown syscall 'ptrac'" in str(err) and "'ptrace'" in err.fix


def test_misspelt_group_did_you_mean(write) -> None:  # type: ignore[no-untyped-def]
    path = write("p.toml", 'extends = "default"\n[seccomp]\nallow = ["@netwrk-io"]\n')
    err = _error(path)
    assert err.line == 3 and "'@network-io'" in err.fix


def test_unknown_keys_did_you_mean(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("a.toml", 'extends = "default"\ndescripton = "x"\n'))
    assert err.line == 2 and err.key == "descripton" and "'description'" in err.fix
    err = _error(write("b.toml", 'extends = "default"\n[limits]\nmemroy = "1G"\n'))
    assert err.line == 3 and err.key == "limits.memroy" and "'memory'" in err.fix
    err = _error(write("c.toml", 'extends = "default"\n[filesystem]\nmemory = "1G"\n'))
    assert "belongs in [limits]" in err.fix
    err = _error(write("d.toml", 'extends = "default"\n[seccom]\nallow = []\n'))
    assert err.line == 2 and "'seccomp'" in err.fix
    err = _error(write("e.toml", 'extends = "default"\nseccomp.alow = ["read"]\n'))
    assert err.line == 2 and err.key == "seccomp.alow" and "'allow'" in err.fix
    err = _error(write("f.toml", 'extends = "default"\n[filesystem]\n'
                                 'binds = [{src = "/a", mode = "ro", optinal = true}]\n'))
    assert err.line == 3 and "'optional'" in err.fix


def test_bad_errno_name(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n[seccomp]\n\ndefault_errno = "EPRM"\n'))
    assert err.line == 4 and err.key == "seccomp.default_errno" and "'EPERM'" in err.fix
    err = _error(write("q.toml", 'extends = "default"\n[seccomp]\nerrno = { clone3 = "enosys" }\n'))
    assert err.line == 3 and err.key == "seccomp.errno.clone3" and "'ENOSYS'" in err.fix
    err = _error(write("r.toml", 'extends = "default"\n[seccomp]\ndefault_errno = 0\n'))
    assert "succeeded" in str(err)


@pytest.mark.parametrize(
    ("body", "line", "key", "says"),
    [
        ('[limits]\npids = "many"', 3, "limits.pids", "whole number"),
        ("[limits]\ncpus = true", 3, "limits.cpus", "number of CPUs"),
        ('[limits]\ntimeout = "soon"', 3, "limits.timeout", "bad duration"),
        ("[limits]\nmemory = 0", 3, "limits.memory", "0"),
        ('[limits]\ninotify_instances = "lots"', 3, "limits.inotify_instances", "whole number"),
        ("[limits]\ninotify_watches = 0", 3, "limits.inotify_watches", "out of range"),
        ('[seccomp]\nallow_namespaces = "yes"', 3, "seccomp.allow_namespaces", "true or false"),
        ('[seccomp]\nallow = "read"', 3, "seccomp.allow", "expected a list"),
        ("[seccomp]\nallow = [1]", 3, "seccomp.allow", "expected a string"),
        ('[seccomp]\nsocket_families = ["AF_UNX"]', 3, "seccomp.socket_families", "AF_UNIX"),
        ('[user]\nuid = "1000"', 3, "user.uid", "whole number"),
        ('[user]\nuid = -1', 3, "user.uid", "out of range"),
        ('[user]\nname = "Bad Name"', 3, "user.name", "user name"),
        ('hostname = "no_underscores!"', 2, "hostname", "hostname"),
        ("user = 5", 2, "user", "expected a table"),
        ('[env]\npass = ["*"]', 3, "env.pass", "defeats"),
        ('[env]\nset = { "1X" = "y" }', 3, "env.set.1X", "environment variable"),
        ('[env]\nset = { X = 1 }', 3, "env.set.X", "quote"),
    ],
)
def test_wrong_types_and_values(write, body: str, line: int, key: str, says: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n' + body + "\n"))
    assert err.line == line, err.render()
    assert err.key == key
    assert says in err.render()
    assert err.fix


def test_unknown_network_mode_lists_the_valid_ones(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n[network]\nmode = "bridge"\n'))
    assert err.line == 3 and err.key == "network.mode"
    assert '"none"' in err.fix and '"loopback"' in err.fix


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('[filesystem]\nworkdir = "work"', "filesystem.workdir"),
        ('[filesystem]\nsystem = ["usr"]', "filesystem.system"),
        ('[filesystem]\nbinds = ["data:/data"]', "filesystem.binds"),
        ('[filesystem]\nbinds = [{src = "/a", dst = "b"}]', "filesystem.binds"),
        ('[filesystem]\ntmpfs = { "var/tmp" = "1M" }', "filesystem.tmpfs.var/tmp"),
        ('[user]\nhome = "home/agent"', "user.home"),
    ],
)
def test_relative_paths_are_refused(write, body: str, key: str) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n' + body + "\n"))
    assert err.line == 3 and err.key == key
    assert "absolute" in err.fix


def test_etc_entries(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("a.toml", 'extends = "default"\n[filesystem]\netc = ["/opt/x"]\n'))
    assert err.line == 3 and "not under /etc" in str(err)
    err = _error(write("b.toml", 'extends = "default"\n[filesystem]\netc = ["passwd"]\n'))
    assert "writes /etc/passwd" in str(err)
    err = _error(write("b2.toml", 'extends = "default"\n[filesystem]\netc = ["/etc/nsswitch.conf"]\n'))
    assert "writes /etc/nsswitch.conf" in str(err)
    err = _error(write("c.toml", 'extends = "default"\n[filesystem]\netc = ["../shadow"]\n'))
    assert err.line == 3


def test_bad_bind_mode(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n[filesystem]\nbinds = ["/a:/b:rx"]\n'))
    assert err.line == 3 and '"rw"' in err.fix


def test_extends_not_found_lists_the_names(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", '# mine\n\nextends = "defualt"\n'))
    assert err.line == 3 and err.key == "extends"
    assert "'default'" in err.fix and "strict" in err.fix and "permissive" in err.fix
    err = _error(write("q.toml", 'extends = "../nowhere.toml"\n'))
    assert err.line == 1 and "relative to this file" in err.fix


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError) as info:
        load_profile("strcit")
    assert "'strict'" in info.value.fix and "default" in info.value.fix


def test_cycle_names_the_files(write) -> None:  # type: ignore[no-untyped-def]
    write("a.toml", 'extends = "b.toml"\n')
    write("b.toml", 'description = "b"\nextends = "c.toml"\n')
    write("c.toml", 'extends = "a.toml"\n')
    err = _error(write("start.toml", 'extends = "a.toml"\n'))
    assert "cycle" in str(err)
    for name in ("a.toml", "b.toml", "c.toml"):
        assert name in str(err)
    assert err.file is not None and err.file.endswith("c.toml") and err.line == 1
    assert err.key == "extends"


def test_self_extension_is_a_cycle(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("me.toml", 'extends = "me.toml"\n'))
    assert "cycle" in str(err)


def test_toml_syntax_error_keeps_line_and_column(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n[limits]\nmemory = 2G\n'))
    assert err.line == 3 and "line 3, column" in str(err)
    assert err.fix


def test_launcher_syscalls_cannot_be_refused(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n[seccomp]\ndeny = [\n  "execve",\n]\n'))
    assert err.line == 4 and err.key == "seccomp.deny"
    assert "execve" in str(err) and "nothing could run" in str(err)
    err = _error(write("q.toml", 'extends = "default"\n[seccomp]\ndeny = ["@basic-io"]\n'))
    assert "nothing could run" in str(err) and err.line == 3
    err = _error(write("r.toml", 'extends = "default"\n[seccomp]\nkill = ["exit_group"]\n'))
    assert "kills on exit_group" in str(err)
    err = _error(write("s.toml", '[seccomp]\nallow = ["@file-system"]\n'))
    assert "nothing could run" in str(err) and err.line == 2 and err.fix


def test_errno_for_an_allowed_syscall_is_refused(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n[seccomp]\nerrno = { getrandom = "ENOSYS" }\n'))
    assert err.line == 3 and err.key == "seccomp.errno.getrandom"
    assert "never be used" in str(err) and "seccomp.deny" in err.fix


def test_bang_that_removes_nothing(write) -> None:  # type: ignore[no-untyped-def]
    err = _error(write("p.toml", 'extends = "default"\n[seccomp]\nallow = ["!ptrace"]\n'))
    assert err.line == 3 and "removes nothing" in str(err) and "add it to deny" in err.fix
    err = _error(write("q.toml", 'extends = "default"\n[env]\nset = { "!PTH" = "" }\n'))
    assert "removes nothing" in str(err) and "'PATH'" in err.fix


# --------------------------------------------------------------------------- listing


def test_list_profiles(write, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write("profiles/mine.toml", 'description = "my own"\nextends = "default"\n')
    write("profiles/strict.toml", 'extends = "strict"\n')
    write("profiles/broken.toml", "description = \n")
    infos = list_profiles(search_path=[tmp_path / "profiles"])
    by = {(i.name, i.builtin): i for i in infos}
    assert by[("mine", False)].description == "my own"
    assert by[("broken", False)].error
    assert not by[("strict", False)].shadowed and by[("strict", True)].shadowed
    assert {"default", "strict", "python", "node", "permissive"} <= {
        i.name for i in infos if i.builtin
    }
    assert "syscalls" not in {i.name for i in infos}
    assert [i.builtin for i in infos] == sorted(i.builtin for i in infos)  # user dirs first


def test_default_search_path_is_xdg_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "flue" / "profiles").mkdir(parents=True)
    (tmp_path / "flue" / "profiles" / "xdg.toml").write_text('extends = "strict"\nhostname = "x"\n')
    assert load_profile("xdg").hostname == "x"
    assert any(i.name == "xdg" and not i.builtin for i in list_profiles())


def test_inotify_limits_default_and_none(write) -> None:  # type: ignore[no-untyped-def]
    from engine.profile.model import DEFAULT_INOTIFY_INSTANCES, DEFAULT_INOTIFY_WATCHES

    p = load_profile("default")
    assert (p.limits.inotify_instances, p.limits.inotify_watches) == (
        DEFAULT_INOTIFY_INSTANCES, DEFAULT_INOTIFY_WATCHES)
    q = load_profile(str(write("n.toml", 'extends = "default"\n[limits]\n'
                                         'inotify_instances = 7\ninotify_watches = "none"\n')))
    assert (q.limits.inotify_instances, q.limits.inotify_watches) == (7, None)
