"""Learn mode: run a command observed, then write the least-privilege profile it needs.

- ``learn_profile(base)``: the profile a learn run uses: the base's filesystem, user,
  environment and limits; its syscalls widened to every one outside ``LEARN_NEVER`` (so what
  the program *would* use is seen, not refused), every socket family, and a loopback network
  instead of none (so local servers run). The filter is compiled in learn mode
  (``engine.seccomp``): every allowed syscall outside a small core set is reported to the
  supervisor and continued. That is observation only; what stays refused is refused by the
  filter itself.
- ``engine.sources.observe.Observer`` records what the program did into an
  ``Observation`` (``engine.learn.observation``).
- ``engine.learn.writer.write_profile`` turns observations (one run or several, merged) into
  a TOML profile that ``extends`` the base, every line commented with why it is there.
"""

from __future__ import annotations

import dataclasses
import socket

from engine.profile import groups as _groups
from engine.profile.model import Profile

# never allowed while learning, whatever the program tries: these reconfigure the host, reach
# state that is not namespaced (the kernel keyring is per host uid), or are kernel attack
# surface with a fallback everywhere (io_uring). A program that tries them gets the base's
# errno, and the learned profile says so.
LEARN_NEVER_GROUPS = ("@privileged", "@mount", "@io-uring", "@keyring", "@obsolete",
                      "@cpu-emulation")
LEARN_NEVER = ("perf_event_open", "lookup_dcookie")


def learn_never() -> frozenset[str]:
    out = set(LEARN_NEVER)
    for g in LEARN_NEVER_GROUPS:
        out |= set(_groups.syscall_groups()[g].syscalls)
    return frozenset(out)


def _all_families() -> tuple[str, ...]:
    names = sorted({name for name in dir(socket)
                    if name.startswith("AF_") and isinstance(getattr(socket, name), int)
                    and 0 <= int(getattr(socket, name)) < 64})
    return tuple(names)


def learn_profile(base: Profile) -> Profile:
    """The profile a learn run of ``base`` uses (see the module docstring)."""
    sc = base.seccomp
    known = _groups.native_syscalls() or _groups.known_syscalls()
    # what the base allows stays allowed; what it refuses is allowed unless it is one of
    # the never-while-learning calls (its explicit deny included: ptrace for strace, say)
    allow = (frozenset(sc.allow) | (frozenset(known) - learn_never())) - sc.kill
    # (clone3 stays refused with ENOSYS unless the base allows namespaces: the compiler sees to
    # it, since its flags are out of the filter's reach)
    seccomp = dataclasses.replace(sc, allow=allow, deny=frozenset(),
                                  socket_families=_all_families())
    net = base.network
    if net.mode == "none":
        net = dataclasses.replace(net, mode="loopback")
    return dataclasses.replace(base, seccomp=seccomp, network=net)


__all__ = ["LEARN_NEVER", "LEARN_NEVER_GROUPS", "learn_never", "learn_profile"]
