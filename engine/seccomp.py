"""Compile a profile's seccomp policy into a classic-BPF program with libseccomp.

The program is exported once (and cached on disk, keyed by its inputs) and loaded in the
sandbox's main process with ``seccomp(2)`` directly, so the hot path never imports libseccomp.

Actions, in the filter:
- a syscall the profile allows: ALLOW (a few with argument filters, see below);
- a syscall the profile kills on: KILL_PROCESS;
- a known syscall the profile does not allow: USER_NOTIF when the sandbox is observed (the
  supervisor answers with exactly the errno the profile prescribes), else ERRNO(errno);
- a number the tables do not know at all: ERRNO(ENOSYS), so libc falls back (clone3 -> clone);
- a non-native ABI (x32 numbers, other architectures): KILL_PROCESS.

Argument filters: namespace flags on clone/unshare, socket address families, the terminal
injection ioctls TIOCSTI/TIOCLINUX compared on the low 32 bits of the request (the kernel
ignores the high bits, so they cannot dodge the rule), personality values, and set-id
mode bits: chmod, fchmod, fchmodat, fchmodat2, creat, mknod, mknodat with S_ISUID or
S_ISGID in the mode, and open/openat creating a file (O_CREAT, O_TMPFILE) with them, are
refused like a denied syscall (EPERM by default), so a sandbox cannot leave a set-uid or
set-gid program in a bound workspace. openat2 passes its mode in memory, out of the
filter's reach: it answers ENOSYS (libc never needs it; callers fall back to openat)
unless the profile sets ``allow_openat2``.

Learn mode (``compile_filter(..., learn=True)``, for ``flue learn``): every allowed syscall
outside ``LEARN_CORE`` is TRACE (reported, then continued: observation only). An
argument-filtered one is reported only for the argument values its filter allows; the values
it refuses are answered ERRNO in the filter itself, so what the supervisor continues is never
a decision of its own.
"""

from __future__ import annotations

import _socket
import errno as _errno
import io
import os

from engine._lean import dumps, loads, sha256

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

from engine import cachedir
from engine._record import field, record
from engine.errors import LaunchError
from engine.profile.model import SeccompPolicy

CLONE_NS_FLAGS = (
    0x00000080,  # CLONE_NEWTIME
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
CLONE_NS_MASK = sum(CLONE_NS_FLAGS)
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
# PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query
PERSONALITY_ALLOWED = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
S_ISUID, S_ISGID = 0o4000, 0o2000
O_CREAT, O_TMPFILE_BIT = 0o100, 0o20000000  # the same on x86_64 and aarch64
# the syscalls that set a mode: name -> (index of the mode argument, of the open flags or
# -1 when the call always sets the mode)
SETID_MODE_ARGS = {
    "chmod": (1, -1), "fchmod": (1, -1), "fchmodat": (2, -1), "fchmodat2": (2, -1),
    "creat": (1, -1), "mknod": (1, -1), "mknodat": (2, -1),
    "open": (2, 1), "openat": (3, 2),
}
# checked first: the calls every program makes most
HOT_SYSCALLS = ("read", "write", "futex", "mmap", "munmap", "close", "openat", "newfstatat",
                "fstat", "lseek", "brk", "rt_sigprocmask", "epoll_wait", "poll", "getdents64",
                "statx", "mprotect", "readv", "writev", "pread64", "pwrite64", "recvfrom",
                "sendto", "rt_sigaction", "getpid", "clock_gettime")

ACT_ALLOW = "allow"
ACT_ERRNO = "errno"
ACT_NOTIFY = "notify"
ACT_KILL = "kill"
ACT_TRACE = "trace"  # allowed, but reported to the supervisor first (notify + continue)

# allowed syscalls the supervisor observes to report processes (exec and exit), when notified
TRACE_PROCESS = ("execve", "execveat", "exit_group")
# learn mode: the calls every program makes all the time, left unobserved (counted as used):
# reporting them would cost a round trip to the supervisor each and tell nothing new
LEARN_CORE = ("read", "write", "close", "futex", "mmap", "munmap", "mprotect", "brk", "madvise",
              "lseek", "fstat", "readv", "writev", "pread64", "pwrite64", "rt_sigprocmask",
              "rt_sigaction", "rt_sigreturn", "restart_syscall", "sched_yield", "getpid",
              "gettid", "clock_gettime", "gettimeofday", "exit",
              # calls no program expects EINTR from (a signal reaching a caller whose
              # notification was not received yet makes one: dash's SIGCHLD handler has no
              # SA_RESTART, so a child exiting while its shell waits in pipe2 failed one learn
              # run in thirty), which every program that makes processes or pipelines uses
              "clone", "fork", "vfork", "pipe", "pipe2", "dup", "dup2", "dup3", "fcntl",
              "getppid", "getuid", "geteuid", "getgid", "getegid", "getpgrp", "getpgid",
              "getsid", "getresuid", "getresgid", "getgroups", "umask", "uname", "getcwd",
              "set_robust_list", "set_tid_address", "rseq", "arch_prctl", "sigaltstack",
              "prlimit64", "getrlimit")


@record(frozen=True, slots=True)
class SyscallVerdict:
    name: str
    action: str  # allow | errno | notify | kill  (allow may still be argument-filtered)
    errno: int = 0  # the errno answered when denied
    filtered: str = ""  # "namespace flags", "socket family", "terminal ioctls", "personality"


@record(frozen=True, slots=True)
class CompiledFilter:
    bpf: bytes
    notify: bool
    arch: str
    # syscall number -> verdict, for every known syscall (the supervisor uses it to answer)
    table: dict[int, SyscallVerdict] = field(default_factory=dict)
    unknown_errno: int = _errno.ENOSYS

    def name_of(self, nr: int) -> str:
        v = self.table.get(nr)
        return v.name if v else f"syscall_{nr}"

    def errno_for(self, nr: int) -> int:
        v = self.table.get(nr)
        return v.errno if v else self.unknown_errno


def _seccomp() -> Any:
    try:
        import pyseccomp
    except (ImportError, OSError) as err:  # OSError: libseccomp.so missing
        raise LaunchError(
            "libseccomp is not available",
            detail=str(err),
            fix="install the system libseccomp (Debian/Ubuntu: apt install libseccomp2; "
            "Fedora: dnf install libseccomp) and `pip install pyseccomp`",
        ) from err
    return pyseccomp


_NATIVE: dict[str, int] | None = None
_NATIVE_SHA = ""  # SHA-256 of _NATIVE as stored, part of what a cached program is checked with
CACHE_KIND = "bpf"  # $XDG_CACHE_HOME/flue/bpf: programs and the syscall table


def native_syscalls() -> dict[str, int]:
    """Every syscall libseccomp knows for the native architecture: name -> number.
    Cached on disk next to the compiled filters (keyed by the libseccomp library file)."""
    global _NATIVE, _NATIVE_SHA
    if _NATIVE is not None:
        return _NATIVE
    lib = "libseccomp.so.2"
    key = sha256(f"{lib}:{os.uname().machine}".encode()).hexdigest()[:16]
    name = f"syscalls-{key}.json"
    raw = cachedir.load(CACHE_KIND, name)
    if raw is not None:
        try:
            table = loads(raw)
            if isinstance(table, dict) and len(table) > 100 and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in table.values()):
                _NATIVE = {str(k): int(v) for k, v in table.items()}
                _NATIVE_SHA = sha256(raw).hexdigest()
                return _NATIVE
        except ValueError:
            pass
    _NATIVE = _resolve_native()
    data = dumps(_NATIVE).encode()
    _NATIVE_SHA = sha256(data).hexdigest()
    cachedir.store(CACHE_KIND, name, data)
    return _NATIVE


def _resolve_native() -> dict[str, int]:
    sc = _seccomp()
    arch = sc.system_arch()
    out: dict[str, int] = {}
    for nr in range(1024):
        try:
            name = sc.resolve_syscall(arch, nr)
        except Exception:  # noqa: BLE001, S112 - libseccomp raises for unknown numbers
            continue
        if name:
            out[name.decode()] = nr
    return out


def _family_numbers(names: tuple[str, ...]) -> set[int]:
    out = set()
    for n in names:
        val = getattr(_socket, n, None)
        if val is None and n == "AF_NETLINK":
            val = 16
        if val is None:
            raise LaunchError(f"unknown socket family {n}", fix="use names like AF_UNIX, AF_INET")
        out.add(int(val))
    return out


def _cache_key(policy: SeccompPolicy, notify: bool, arch: str,
               trace: tuple[str, ...] = (), learn: bool = False,
               table: dict[int, SyscallVerdict] | None = None) -> str:
    blob = dumps(
        {
            "v": 7,
            # the verdicts themselves: a flue whose tables changed (LEARN_CORE, the traced
            # calls, an argument filter) never loads a program an older one compiled
            "table": sorted((nr, v.action, v.errno, v.filtered)
                            for nr, v in (table or {}).items()),
            "learn": learn,
            "allow": sorted(policy.allow),
            "kill": sorted(policy.kill),
            "errno": sorted(policy.errno),
            "default": policy.default_errno,
            "ns": policy.allow_namespaces,
            "openat2": policy.allow_openat2,
            "fam": sorted(policy.socket_families),
            "notify": notify,
            "trace": sorted(trace),
            "arch": arch,
        },
        sort_keys=True,
    )
    return sha256(blob.encode()).hexdigest()[:32]


def compile_filter(policy: SeccompPolicy, *, notify: bool, use_cache: bool = True,
                   trace: tuple[str, ...] = (), learn: bool = False) -> CompiledFilter:
    """Build the BPF program for ``policy``. ``notify`` routes denials to a listener;
    ``trace`` names allowed syscalls that are reported to it first, then continued;
    ``learn`` (with ``notify``) traces every allowed syscall outside ``LEARN_CORE``."""
    arch = os.uname().machine  # platform.machine(), without importing platform
    known = native_syscalls()
    learn = learn and notify
    table = _verdicts(policy, known, notify, trace if notify else (), learn)
    key = _cache_key(policy, notify, arch, trace if notify else (), learn, table)
    # the compiled program is kept with a digest of itself and of what it was compiled from
    # (the key, re-derived from the policy, and this kernel's syscall numbers: together they
    # determine the verdict table): a program that does not belong to exactly this policy is
    # compiled again
    digest = _digest(key, policy)
    if use_cache:
        cached = _cached_program(key, digest)
        if cached is not None:
            return CompiledFilter(bpf=cached, notify=notify, arch=arch, table=table)
    bpf = _build(policy, known, table, notify)
    if use_cache:  # a read-only or untrusted cache directory only costs the cache
        cachedir.store(CACHE_KIND, f"{key}.bpf", bpf)
        cachedir.store(CACHE_KIND, f"{key}.sha256",
                       sha256(digest + bpf).hexdigest().encode())
    return CompiledFilter(bpf=bpf, notify=notify, arch=arch, table=table)


def _digest(key: str, policy: SeccompPolicy) -> bytes:
    """What a cached program must have been compiled from, as bytes to hash with it."""
    native_syscalls()
    return dumps([key, sorted(policy.socket_families), _NATIVE_SHA]).encode()


def _cached_program(key: str, digest: bytes) -> bytes | None:
    """The cached program for ``key`` if the cache is trusted (engine.cachedir) and its
    stored SHA-256 is that of ``digest`` and the program; else None (compile again)."""
    fd = cachedir.open_dir(CACHE_KIND)
    if fd is None:
        return None
    try:
        bpf = cachedir.read(fd, f"{key}.bpf")
        stored = cachedir.read(fd, f"{key}.sha256")
    finally:
        os.close(fd)
    if not bpf or len(bpf) % 8 or stored is None:
        return None
    # (a plain comparison: the digest is no secret, anyone can compute it; it tells a
    # program that is not this policy's, while cachedir tells who could have written it)
    if stored.strip() != sha256(digest + bpf).hexdigest().encode():
        return None
    return bpf


def _verdicts(policy: SeccompPolicy, known: dict[str, int], notify: bool,
              trace: tuple[str, ...] = (), learn: bool = False) -> dict[int, SyscallVerdict]:
    table: dict[int, SyscallVerdict] = {}
    deny_action = ACT_NOTIFY if notify else ACT_ERRNO
    for name, nr in known.items():
        err = policy.errno_for(name)
        if name in policy.kill:
            table[nr] = SyscallVerdict(name, ACT_KILL)
        elif name in policy.allow:
            filt = ""
            if name in ("clone", "unshare") and not policy.allow_namespaces:
                filt = "namespace flags"
            elif name == "clone3" and not policy.allow_namespaces:
                # clone3 passes its flags in memory, out of the filter's reach: refuse it with
                # ENOSYS so libc falls back to clone, whose flags are checked.
                table[nr] = SyscallVerdict(name, deny_action, _errno.ENOSYS, "namespace flags")
                continue
            elif name == "socket":
                filt = "socket family"
            elif name == "ioctl":
                filt = "terminal ioctls"
            elif name == "personality":
                filt = "personality"
            elif name in SETID_MODE_ARGS:
                filt = "set-id modes"
            elif name == "openat2" and not policy.allow_openat2:
                # its mode is in memory, out of the filter's reach: ENOSYS, and callers fall
                # back to openat, whose mode is checked
                table[nr] = SyscallVerdict(name, deny_action, _errno.ENOSYS, "set-id modes")
                continue
            if learn and name not in LEARN_CORE:
                table[nr] = SyscallVerdict(name, ACT_TRACE, err, filt)
                continue
            if name in trace:  # (an argument filter's refusals then answer in the kernel)
                table[nr] = SyscallVerdict(name, ACT_TRACE, err, filt)
                continue
            table[nr] = SyscallVerdict(name, ACT_ALLOW, err, filt)
        else:
            table[nr] = SyscallVerdict(name, deny_action, err)
    return table


def _plain_errno(sc: Any) -> Any:
    def refuse(v: SyscallVerdict) -> int:
        return int(sc.ERRNO(v.errno or _errno.EPERM))
    return refuse


def _build(policy: SeccompPolicy, known: dict[str, int], table: dict[int, SyscallVerdict],
           notify: bool) -> bytes:
    sc = _seccomp()
    f = sc.SyscallFilter(sc.ERRNO(_errno.ENOSYS))
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    try:
        f.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # binary tree: O(log n) lookups
    except OSError:
        pass

    def deny(v: SyscallVerdict) -> int:
        if notify:
            return int(sc.NOTIFY)
        return int(sc.ERRNO(v.errno))

    A = sc.Arg
    for nr, v in table.items():
        # an argument-filtered syscall: what its filter allows is ALLOW, or NOTIFY when it is
        # traced (learn mode); what it refuses is the usual denial, except when traced: then
        # plain ERRNO, so every notification of that number is one to continue
        ok = sc.ALLOW
        refuse = deny
        if v.action == ACT_TRACE:
            ok = sc.NOTIFY
            refuse = _plain_errno(sc)
        if v.action == ACT_KILL:
            f.add_rule(sc.KILL_PROCESS, nr)
        elif v.action == ACT_TRACE and not v.filtered:
            f.add_rule(sc.NOTIFY, nr)
        elif v.action in (ACT_ERRNO, ACT_NOTIFY):
            if v.errno == _errno.ENOSYS and not notify:
                continue  # that is the default action already
            f.add_rule(deny(v), nr)
        elif not v.filtered:
            f.add_rule(sc.ALLOW, nr)
        elif v.filtered == "namespace flags":
            f.add_rule(ok, nr, A(0, sc.MASKED_EQ, CLONE_NS_MASK, 0))
            for flag in CLONE_NS_FLAGS:
                f.add_rule(refuse(v), nr, A(0, sc.MASKED_EQ, flag, flag))
        elif v.filtered == "socket family":
            allowed = _family_numbers(policy.socket_families)
            for fam in range(64):
                f.add_rule(ok if fam in allowed else refuse(v), nr, A(0, sc.EQ, fam))
            f.add_rule(refuse(v), nr, A(0, sc.GT, 63))
        elif v.filtered == "terminal ioctls":
            f.add_rule(ok, nr, A(1, sc.LT, TIOCSTI))
            f.add_rule(ok, nr, A(1, sc.GT, TIOCLINUX))
            for req in range(TIOCSTI + 1, TIOCLINUX):
                f.add_rule(ok, nr, A(1, sc.EQ, req))
            # checked on the low 32 bits: the kernel truncates the request to an int
            f.add_rule(refuse(v), nr, A(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
            f.add_rule(refuse(v), nr, A(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCLINUX))
        elif v.filtered == "personality":
            for val in PERSONALITY_ALLOWED:
                f.add_rule(ok, nr, A(0, sc.EQ, val))
        elif v.filtered == "set-id modes":
            # allowed: no set-id bit in the mode (or, for open, no file created); refused: a
            # set-id bit in the mode of a call that sets it. The rules partition every value.
            mode_arg, flags_arg = SETID_MODE_ARGS[v.name]
            f.add_rule(ok, nr, A(mode_arg, sc.MASKED_EQ, S_ISUID | S_ISGID, 0))
            if flags_arg < 0:
                for bit in (S_ISUID, S_ISGID):
                    f.add_rule(refuse(v), nr, A(mode_arg, sc.MASKED_EQ, bit, bit))
            else:
                f.add_rule(ok, nr, A(flags_arg, sc.MASKED_EQ, O_CREAT | O_TMPFILE_BIT, 0))
                for bit in (S_ISUID, S_ISGID):
                    for create in (O_CREAT, O_TMPFILE_BIT):
                        f.add_rule(refuse(v), nr, A(mode_arg, sc.MASKED_EQ, bit, bit),
                                   A(flags_arg, sc.MASKED_EQ, create, create))
    for name in HOT_SYSCALLS:
        hot = known.get(name)
        if hot is not None and hot in table:
            try:
                f.syscall_priority(hot, 255)
            except OSError:
                pass
    buf = io.BytesIO()
    import tempfile

    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        buf.write(tmp.read())
    return buf.getvalue()
