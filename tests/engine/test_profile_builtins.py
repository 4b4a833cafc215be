"""The built-in profiles: they load, say why every line is there, and keep their promises."""

from __future__ import annotations

import errno
import re

import pytest

from engine.profile import (
    LAUNCHER_SYSCALLS,
    builtin_profile_dir,
    expand_syscalls,
    list_profiles,
    load_profile,
)

pytest.importorskip("pyseccomp")

BUILTINS = ("default", "strict", "python", "node", "permissive", "debug")


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    assert p.description
    assert set(LAUNCHER_SYSCALLS) <= p.seccomp.allow
    assert not p.seccomp.allow & p.seccomp.deny
    assert not p.seccomp.allow & p.seccomp.kill
    assert p.seccomp.default_errno == errno.EPERM


def test_builtins_are_listed() -> None:
    listed = {i.name: i for i in list_profiles(search_path=[]) if i.builtin}
    assert set(BUILTINS) <= set(listed)
    assert all(i.path.parent == builtin_profile_dir() for i in listed.values())
    assert all(not i.error for i in listed.values())


@pytest.mark.parametrize("name", BUILTINS)
def test_every_line_says_why(name: str) -> None:
    """Each setting and list entry carries a comment; headers and closing brackets need none."""
    text = (builtin_profile_dir() / f"{name}.toml").read_text()
    bare = [
        (n, line) for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and "#" not in line
        and not re.fullmatch(r"\s*(\[[a-z.]+\]|\])\s*", line)
    ]
    assert not bare, f"{name}.toml lines without a comment: {bare}"


def test_default_allows_what_real_tools_need() -> None:
    allow = load_profile("default").seccomp.allow
    needed = {
        # libc start-up and threads
        "rseq", "set_robust_list", "set_tid_address", "prlimit64", "arch_prctl", "futex",
        "clone", "vfork", "fork", "wait4", "execve", "execveat",
        # event loops
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "poll", "ppoll", "select",
        "pselect6", "inotify_init1", "inotify_add_watch", "eventfd2", "timerfd_create",
        "signalfd4",
        # memory
        "mmap", "mprotect", "madvise", "mremap", "membarrier", "memfd_create", "brk",
        "pkey_alloc", "pkey_mprotect",
        # files and data
        "getrandom", "sendfile", "copy_file_range", "splice", "statx", "faccessat2", "openat2",
        "close_range", "pidfd_open", "fsync", "fdatasync", "flock", "getdents64",
        # sockets
        "socket", "connect", "bind", "listen", "accept4", "sendmsg", "recvmsg", "socketpair",
        # scheduling, process control, nested filters
        "sched_getaffinity", "sched_setaffinity", "sched_yield", "prctl", "personality",
        "seccomp", "uname", "sysinfo", "getuid", "capget", "setpgid", "setsid", "kill",
    }
    assert needed <= allow, sorted(needed - allow)


def test_default_denies_the_host_interfaces() -> None:
    p = load_profile("default")
    denied = {
        "mount", "umount2", "pivot_root", "move_mount", "fsopen", "fsmount", "fsconfig",
        "fspick", "open_tree", "mount_setattr", "chroot", "ptrace", "process_vm_readv",
        "process_vm_writev", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "reboot", "swapon", "swapoff", "setns", "unshare", "acct", "quotactl",
        "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "iopl", "ioperm",
        "userfaultfd", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "kcmp",
        "syslog", "vhangup", "sethostname", "setdomainname", "io_uring_setup",
        "io_uring_enter", "io_uring_register", "clone3",
    }
    assert denied <= p.seccomp.deny, sorted(denied - p.seccomp.deny)
    assert not denied & p.seccomp.allow
    assert p.seccomp.errno_for("clone3") == errno.ENOSYS  # glibc falls back to clone
    assert not p.seccomp.allow_namespaces


def test_default_limits_and_environment() -> None:
    p = load_profile("default")
    assert p.limits.memory == 2 << 30 and p.limits.pids == 1024
    assert p.limits.cpus is None and p.limits.timeout is None
    assert {"TERM", "LANG", "LC_*", "TZ", "COLORTERM", "NO_COLOR"} <= set(p.env.passthrough)
    assert dict(p.env.set)["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    for generated in ("passwd", "group", "hosts", "hostname", "resolv.conf", "nsswitch.conf"):
        assert f"/etc/{generated}" not in p.filesystem.etc
    assert all(e.startswith("/etc/") for e in p.filesystem.etc)
    assert {"/etc/ld.so.cache", "/etc/ssl", "/etc/alternatives"} <= set(p.filesystem.etc)
    assert p.network.mode == "none"


def test_strict_is_small() -> None:
    strict, default = load_profile("strict"), load_profile("default")
    assert strict.seccomp.allow < default.seccomp.allow
    assert strict.seccomp.socket_families == ("AF_UNIX",)
    assert (strict.limits.memory, strict.limits.pids, strict.limits.timeout) == (512 << 20, 64, 60)
    assert not strict.seccomp.allow_namespaces
    assert strict.network.mode == "none"
    assert "setuid" not in strict.seccomp.allow and "chown" not in strict.seccomp.allow
    assert strict.chain == (str(builtin_profile_dir() / "strict.toml"),)


@pytest.mark.parametrize("name", ["python", "node"])
def test_language_profiles_extend_default(name: str) -> None:
    p, default = load_profile(name), load_profile("default")
    assert [c.rsplit("/", 1)[-1] for c in p.chain] == ["default.toml", f"{name}.toml"]
    assert p.seccomp.allow == default.seccomp.allow
    assert p.limits.memory is not None and p.limits.memory > (default.limits.memory or 0)
    assert dict(p.env.set)["PATH"] == dict(default.env.set)["PATH"]


def test_permissive_keeps_the_host_safe() -> None:
    p = load_profile("permissive")
    host_breaking = expand_syscalls(["@module", "@reboot", "@swap", "@raw-io", "@clock"])
    assert not host_breaking & p.seccomp.allow
    assert {"kexec_load", "kexec_file_load", "open_by_handle_at"} <= p.seccomp.deny
    assert {"ptrace", "mount", "unshare", "bpf", "clone3", "io_uring_setup"} <= p.seccomp.allow
    assert p.seccomp.allow_namespaces
    assert p.seccomp.allow > load_profile("default").seccomp.allow


def test_env_prefix_entries_match_by_prefix() -> None:
    env = load_profile("default").env
    assert env.passes("LC_ALL") and env.passes("LC_MESSAGES") and env.passes("TERM")
    assert not env.passes("HOME") and not env.passes("LC") and not env.passes("SSH_AUTH_SOCK")


def test_the_documented_example_loads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    doc = (builtin_profile_dir().parent / "docs" / "profiles.md")
    if not doc.is_file():  # an installed wheel has no docs
        pytest.skip("docs/profiles.md is not beside the profiles")
    text = doc.read_text()
    example = text[text.index("```toml\n") + 8 :]
    example = example[: example.index("```")]
    path = tmp_path / "example.toml"
    path.write_text(example)
    p = load_profile(str(path))
    assert "keyctl" in p.seccomp.allow and p.limits.timeout == 1800
