"""``flue doctor``: what this machine supports, each finding with a fix.

Every check here is also what the test suite consults before it skips anything, so a test
skipped for a missing kernel feature names the same reason ``flue doctor`` prints.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from dataclasses import dataclass, field

from engine._linux import libc


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    summary: str
    details: list[str] = field(default_factory=list)
    fix: str = ""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_check() -> Check:
    maxns = _read("/proc/sys/user/max_user_namespaces")
    if maxns == "0":
        return Check("user namespaces", "fail", "disabled (user.max_user_namespaces = 0)",
                     fix="sudo sysctl -w user.max_user_namespaces=15000")
    clone = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if clone == "0" and os.geteuid() != 0:
        return Check("user namespaces", "fail",
                     "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0)",
                     fix="sudo sysctl -w kernel.unprivileged_userns_clone=1")
    details = []
    apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if apparmor == "1":
        details.append("AppArmor restricts unprivileged user namespaces "
                       "(kernel.apparmor_restrict_unprivileged_userns=1)")
    ok, why = probe_userns()
    if not ok:
        fix = ("sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an AppArmor "
               "profile that allows userns for the python running flue" if apparmor == "1"
               else "check the kernel's CONFIG_USER_NS and the sysctls above")
        return Check("user namespaces", "fail", f"cannot create one: {why}", details, fix)
    who = "as root" if os.geteuid() == 0 else f"as uid {os.geteuid()}"
    return Check("user namespaces", "ok", f"work {who} (max {maxns})", details)


def probe_userns() -> tuple[bool, str]:
    """Fork a child that unshares a user namespace with the flags flue uses."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            libc.unshare(libc.CLONE_NEWUSER | libc.CLONE_NEWPID | libc.CLONE_NEWNET
                         | libc.CLONE_NEWIPC | libc.CLONE_NEWUTS | libc.CLONE_NEWCGROUP
                         | libc.CLONE_NEWNS)
            os.write(w, b"ok")
        except OSError as err:
            os.write(w, str(err).encode())
        os._exit(0)
    os.close(w)
    msg = os.read(r, 512).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return msg == "ok", msg


def libseccomp_version() -> str | None:
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError:
        return None

    class V(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]

    lib.seccomp_version.restype = ctypes.POINTER(V)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def seccomp_checks() -> list[Check]:
    out = []
    status = _read("/proc/self/status") or ""
    if "Seccomp:" not in status:
        out.append(Check("seccomp", "fail", "the kernel has no seccomp (CONFIG_SECCOMP_FILTER)",
                         fix="use a kernel built with CONFIG_SECCOMP_FILTER=y"))
    else:
        out.append(Check("seccomp", "ok", "seccomp-bpf filters are supported"))
    ver = libseccomp_version()
    try:
        import pyseccomp  # noqa: F401

        have_py = True
    except (ImportError, OSError):
        have_py = False
    if ver is None or not have_py:
        out.append(Check("libseccomp", "fail",
                         "libseccomp not found" if ver is None else "pyseccomp not importable",
                         fix="install libseccomp (Debian/Ubuntu: apt install libseccomp2; "
                         "Fedora: dnf install libseccomp) and pip install pyseccomp"))
    else:
        out.append(Check("libseccomp", "ok", f"version {ver} (pyseccomp)"))
    if libc.seccomp_action_available(libc.SECCOMP_RET_USER_NOTIF):
        out.append(Check("seccomp user notification", "ok",
                         "denials are observable live (kernel >= 5.0)"))
    else:
        out.append(Check("seccomp user notification", "warn",
                         libc.NO_USER_NOTIF_REASON,
                         fix="use Linux 5.0 or newer (5.9+ recommended)"))
    return out


def _probe_syscall(name: str, *args: int) -> bool:
    try:
        libc.syscall(name, *args)
    except OSError as err:
        return err.errno != errno.ENOSYS
    return True


def _mount_setattr_works() -> bool:
    """mount_setattr(2) exists and is not refused (EPERM: a container's seccomp profile)."""
    try:
        libc.mount_setattr(-1, "", libc.AT_EMPTY_PATH, 0)
    except OSError as err:
        return err.errno not in (errno.ENOSYS, errno.EPERM)
    return True


def kernel_checks() -> list[Check]:
    out = [Check("kernel", "ok", f"Linux {platform.release()} ({platform.machine()})")]
    missing = []
    if not _probe_syscall("pidfd_getfd", -1, 0, 0):
        missing.append("pidfd_getfd (5.6): the seccomp listener cannot be handed over")
    if not _probe_syscall("openat2", -1, 0, 0, 0):
        missing.append("openat2 (5.6): bind paths are checked only on their last component")
    if not _probe_syscall("pidfd_open", -1, 0):
        missing.append("pidfd_open (5.3)")
    if not _mount_setattr_works():
        missing.append("mount_setattr (5.12): each bind's submounts are made read-only, nosuid "
                       "and nodev one remount at a time, from /proc/self/mountinfo")
    if missing:
        out.append(Check("kernel features", "warn", "some are missing", missing,
                         fix="use Linux 5.6 or newer"))
    else:
        out.append(Check("kernel features", "ok",
                         "pidfd_open, pidfd_getfd, openat2, close_range, mount_setattr"))
    return out


def cgroup_check() -> Check:
    from engine import cgroups

    try:
        sup = cgroups.detect()
    except OSError as err:
        return Check("cgroups", "fail", f"cannot read cgroup state: {err}")
    details = []
    for c in sup.controllers:
        if c.available:
            details.append(f"{c.name}: available under {c.path}")
        else:
            details.append(f"{c.name}: unavailable: {c.reason}")
    details.extend(sup.notes)
    if sup.mode == "none":
        return Check("cgroups", "warn",
                     "no usable cgroup: memory, CPU and pids limits cannot be enforced "
                     f"({sup.reason})", details,
                     fix=sup.fix or "run as root, or under a delegated cgroup v2 subtree")
    missing = [c for c in sup.controllers if not c.available]
    who = "delegated to you" if sup.delegated else ("as root" if os.geteuid() == 0 else "")
    summary = f"cgroup {sup.mode} mode {who}".strip()
    if missing:
        fixes = "; ".join(c.fix for c in missing if c.fix)
        return Check("cgroups", "warn", summary + ", some controllers unavailable", details,
                     fix=fixes or sup.fix)
    return Check("cgroups", "ok", summary, details)


def run_checks() -> list[Check]:
    checks = kernel_checks()
    checks.append(userns_check())
    checks.extend(seccomp_checks())
    checks.append(cgroup_check())
    return checks
