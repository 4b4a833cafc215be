"""What allowing a refused call can and cannot do in a flue sandbox.

The profile's seccomp filter is only the first thing a call meets. Behind it:

- **capabilities**: nothing in a flue sandbox has one (the bounding set is emptied, no_new_privs
  is set), so a call the kernel reserves for a capability (mount, a raw packet socket, loading a
  module ...) fails with EPERM however the profile is edited. Allowing it changes who refuses,
  not the program's result; ``a`` says so instead of widening the profile.
- **namespaces**: clone/unshare may create namespaces only with ``[seccomp] allow_namespaces =
  true`` (their flags are checked by the filter, clone3 answers ENOSYS without it). Allowing
  the syscall alone changes nothing; ``a`` offers both, with what that lets the agent do.
- **expected refusals**: a call answered ENOSYS on purpose so that libc falls back to an older
  one the filter can check (clone3 -> clone, openat2 -> openat). The program works; the row is
  shown dimmed as "expected" and ``a`` does nothing unless pressed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# the kernel refuses these without the capability named, whatever seccomp says
CAPABILITY: dict[str, str] = {
    **dict.fromkeys(("mount", "umount", "umount2", "pivot_root", "fsopen", "fsmount", "fspick",
                     "move_mount", "open_tree", "mount_setattr", "swapon", "swapoff",
                     "sethostname", "setdomainname"), "CAP_SYS_ADMIN"),
    "chroot": "CAP_SYS_CHROOT",
    **dict.fromkeys(("init_module", "finit_module", "delete_module"), "CAP_SYS_MODULE"),
    **dict.fromkeys(("reboot", "kexec_load", "kexec_file_load"), "CAP_SYS_BOOT"),
    **dict.fromkeys(("settimeofday", "clock_settime", "stime"), "CAP_SYS_TIME"),
    **dict.fromkeys(("iopl", "ioperm"), "CAP_SYS_RAWIO"),
    "acct": "CAP_SYS_PACCT",
    "vhangup": "CAP_SYS_TTY_CONFIG",
    "open_by_handle_at": "CAP_DAC_READ_SEARCH",
}
# socket() families the kernel reserves for a capability
FAMILY_CAPABILITY: dict[str, str] = {"AF_PACKET": "CAP_NET_RAW"}
# answered ENOSYS by the engine so that libc falls back to a call the filter can check
EXPECTED_ENOSYS: dict[str, str] = {
    "clone3": "glibc then falls back to clone, whose flags the filter checks",
    "openat2": "callers then fall back to openat, whose mode the filter checks",
}
NAMESPACE_CALLS = ("unshare", "clone", "clone3")


@dataclass(frozen=True)
class Advice:
    kind: str  # capability | namespaces | expected
    tag: str  # the table's short word for it (shown in the group column)
    text: str  # what to tell the user


def _flags(row: Any) -> str:
    return str((row.decoded or {}).get("flags", ""))


def advise(row: Any, *, allow_namespaces: bool = False) -> Advice | None:
    """What allowing ``row`` (a ``DenialRow``) would really do, when it is not just "the call
    goes through". ``allow_namespaces``: the draft has it already."""
    name = row.name
    family = row.family
    if family in FAMILY_CAPABILITY:
        cap = FAMILY_CAPABILITY[family]
        return Advice("capability", "needs cap", (
            f"{family} sockets need {cap}, and nothing in a flue sandbox has a capability: "
            f"allowing {family} would only move the EPERM from seccomp to the kernel"))
    if name in CAPABILITY and not family:
        cap = CAPABILITY[name]
        return Advice("capability", "needs cap", (
            f"{name} needs {cap}, and nothing in a flue sandbox has a capability: allowing it "
            "would only move the EPERM from seccomp to the kernel"))
    if name in EXPECTED_ENOSYS and row.errno_name == "ENOSYS":
        return Advice("expected", "expected", (
            f"{name} answered ENOSYS is expected: {EXPECTED_ENOSYS[name]}, and the program "
            "carries on"))
    if name in NAMESPACE_CALLS and not allow_namespaces and (
            name != "clone" or "CLONE_NEW" in _flags(row)):
        return Advice("namespaces", row.group or "namespaces", (
            f"creating namespaces also needs [seccomp] allow_namespaces = true: without it "
            f"the filter refuses {name}'s CLONE_NEW* flags"
            + (" (clone3 always: its flags are out of the filter's reach)"
               if name == "clone3" else "")))
    return None


NAMESPACES_WARNING = (
    "Yes sets it too. The agent may then create user "
    "namespaces, and in one of its own it holds every capability over what it creates there: "
    "nested containers and sandboxes work, and so do most kernel privilege-escalation "
    "exploits, which start from there. Leave it off unless the program needs namespaces.")
