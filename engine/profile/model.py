"""The resolved profile: what a sandbox is allowed to do, after ``extends`` is applied.

These records are what the rest of the engine consumes. The loader (``engine.profile.loader``)
turns TOML files into them; nothing else parses TOML.
"""

from __future__ import annotations

from engine._record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    _T = TypeVar("_T")
    _U = TypeVar("_U")

# bumped when a record gains or loses a field: cached profiles of another shape are stale
MODEL_VERSION = 4

# what one sandbox may take of the inotify budget of the host uid that created its user
# namespace (for a root-run sandbox, root's: the kernel charges a namespace's usage to its
# creator); fanotify groups and marks are bounded alike
DEFAULT_INOTIFY_INSTANCES = 32
DEFAULT_INOTIFY_WATCHES = 32768


@record(frozen=True, slots=True)
class Bind:
    """A host path made visible inside the sandbox."""

    src: str  # absolute host path, as written (never resolved through symlinks)
    dst: str  # absolute path inside the sandbox
    rw: bool = False
    optional: bool = False  # skip silently when the source does not exist


@record(frozen=True, slots=True)
class FilesystemPolicy:
    root_size: int = 64 << 20  # bytes, the tmpfs that holds the new root
    tmp_size: int = 256 << 20  # /tmp
    workspace_size: int = 512 << 20  # /work when no host workspace is bound
    home_size: int = 64 << 20  # the sandbox user's HOME
    shm_size: int = 64 << 20  # /dev/shm
    workdir: str = "/work"
    # host system directories bound read-only (nosuid, nodev); symlinks such as a merged
    # /usr's /bin -> usr/bin are recreated as symlinks, not bound.
    system: tuple[str, ...] = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
    # host files or directories under /etc bound read-only when present, as absolute paths
    # ("/etc/ssl"; profiles may write just "ssl"); never the files flue generates itself
    etc: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    # extra tmpfs mounts: path inside -> size in bytes
    tmpfs: tuple[tuple[str, int], ...] = ()


@record(frozen=True, slots=True)
class NetworkPolicy:
    mode: str = "none"  # "none" | "loopback" | "allowlist"
    # allowlist mode: normalised rules ("pypi.org", "*.example.com", "api.example.org:8443")
    allow: tuple[str, ...] = ()
    # the resolver map: name (or "*.domain") -> address, used instead of the system resolver
    hosts: tuple[tuple[str, str], ...] = ()


@record(frozen=True, slots=True)
class SeccompPolicy:
    # fully expanded syscall names (groups resolved), deny already subtracted
    allow: frozenset[str] = frozenset()
    # explicitly denied names (for display; they are absent from ``allow``)
    deny: frozenset[str] = frozenset()
    default_errno: int = 1  # EPERM
    errno: tuple[tuple[str, int], ...] = ()  # per-syscall errno overrides
    kill: frozenset[str] = frozenset()  # syscalls that kill the process
    # the raw entries as written (e.g. "@file-system", "ptrace"), for display and editing
    allow_spec: tuple[str, ...] = ()
    deny_spec: tuple[str, ...] = ()
    # argument filters
    allow_namespaces: bool = False  # clone/unshare with CLONE_NEW* flags
    # openat2, whose mode (set-uid/set-gid bits included) is in memory, out of the filter's
    # reach: answered ENOSYS unless this is set (libc does not use it)
    allow_openat2: bool = False
    socket_families: tuple[str, ...] = ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK")

    def errno_for(self, name: str) -> int:
        for n, e in self.errno:
            if n == name:
                return e
        return self.default_errno


@record(frozen=True, slots=True)
class Limits:
    memory: int | None = None  # bytes
    cpus: float | None = None  # CPUs (0.5 = half a CPU)
    pids: int | None = None
    timeout: float | None = None  # seconds of wall clock
    # per sandbox, written into its user namespace's /proc/sys/user; None: the host's only
    inotify_instances: int | None = DEFAULT_INOTIFY_INSTANCES
    inotify_watches: int | None = DEFAULT_INOTIFY_WATCHES


@record(frozen=True, slots=True)
class EnvPolicy:
    # host variables copied in when set; an entry ending in "*" is a prefix ("LC_*")
    passthrough: tuple[str, ...] = ("TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "COLORTERM")
    set: tuple[tuple[str, str], ...] = ()  # applied after passthrough: these win

    def passes(self, name: str) -> bool:
        """Whether the host variable ``name`` is copied into the sandbox."""
        return any(
            name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in self.passthrough
        )


@record(frozen=True, slots=True)
class UserPolicy:
    name: str = "agent"
    uid: int = 0  # uid inside the sandbox
    gid: int = 0
    home: str = ""  # defaults to /home/<name>

    @property
    def home_dir(self) -> str:
        return self.home or ("/root" if self.name == "root" else f"/home/{self.name}")


@record(frozen=True, slots=True)
class Profile:
    name: str
    source: str | None = None  # file the profile was read from (None: built in code)
    chain: tuple[str, ...] = ()  # files in extends order, base first
    description: str = ""
    hostname: str = "flue"
    filesystem: FilesystemPolicy = field(default_factory=FilesystemPolicy)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    seccomp: SeccompPolicy = field(default_factory=SeccompPolicy)
    limits: Limits = field(default_factory=Limits)
    env: EnvPolicy = field(default_factory=EnvPolicy)
    user: UserPolicy = field(default_factory=UserPolicy)


# --------------------------------------------------------------------------- as plain data


def to_data(obj: Any) -> Any:
    """A record as JSON-able data: records as dicts, tuples and frozensets as lists."""
    if hasattr(obj, "__record_fields__") and not isinstance(obj, type):
        names: tuple[str, ...] = type(obj).__match_args__
        return {name: to_data(getattr(obj, name)) for name in names}
    if isinstance(obj, tuple):
        return [to_data(x) for x in obj]
    if isinstance(obj, frozenset):
        return sorted(to_data(x) for x in obj)
    return obj


def profile_from_data(data: Any) -> Profile:
    """The inverse of ``to_data`` for a ``Profile``: every field checked against its declared
    type (exactly the fields each record has, no more, no fewer); ``TypeError`` or
    ``ValueError`` otherwise.
    Plain data only: nothing here can run code, whoever wrote it. (Written out by hand: a
    converter derived from the type hints costs more to build than ``flue run`` may spend.)"""
    d = _fields(data, Profile)
    return Profile(
        name=_str(d["name"]), source=_opt(_str, d["source"]), chain=_tuple(_str, d["chain"]),
        description=_str(d["description"]), hostname=_str(d["hostname"]),
        filesystem=_filesystem(d["filesystem"]), network=_network(d["network"]),
        seccomp=_seccomp(d["seccomp"]), limits=_limits(d["limits"]), env=_env(d["env"]),
        user=_user(d["user"]))


def _bind(v: Any) -> Bind:
    d = _fields(v, Bind)
    return Bind(src=_str(d["src"]), dst=_str(d["dst"]), rw=_bool(d["rw"]),
                optional=_bool(d["optional"]))


def _filesystem(v: Any) -> FilesystemPolicy:
    d = _fields(v, FilesystemPolicy)
    return FilesystemPolicy(
        root_size=_int(d["root_size"]), tmp_size=_int(d["tmp_size"]),
        workspace_size=_int(d["workspace_size"]), home_size=_int(d["home_size"]),
        shm_size=_int(d["shm_size"]), workdir=_str(d["workdir"]),
        system=_tuple(_str, d["system"]), etc=_tuple(_str, d["etc"]),
        binds=_tuple(_bind, d["binds"]), tmpfs=_tuple(_pair(_str, _int), d["tmpfs"]))


def _network(v: Any) -> NetworkPolicy:
    d = _fields(v, NetworkPolicy)
    return NetworkPolicy(mode=_str(d["mode"]), allow=_tuple(_str, d["allow"]),
                         hosts=_tuple(_pair(_str, _str), d["hosts"]))


def _seccomp(v: Any) -> SeccompPolicy:
    d = _fields(v, SeccompPolicy)
    return SeccompPolicy(
        allow=frozenset(_tuple(_str, d["allow"])), deny=frozenset(_tuple(_str, d["deny"])),
        default_errno=_int(d["default_errno"]), errno=_tuple(_pair(_str, _int), d["errno"]),
        kill=frozenset(_tuple(_str, d["kill"])), allow_spec=_tuple(_str, d["allow_spec"]),
        deny_spec=_tuple(_str, d["deny_spec"]), allow_namespaces=_bool(d["allow_namespaces"]),
        allow_openat2=_bool(d["allow_openat2"]),
        socket_families=_tuple(_str, d["socket_families"]))


def _limits(v: Any) -> Limits:
    d = _fields(v, Limits)
    return Limits(memory=_opt(_int, d["memory"]), cpus=_opt(_float, d["cpus"]),
                  pids=_opt(_int, d["pids"]), timeout=_opt(_float, d["timeout"]),
                  inotify_instances=_opt(_int, d["inotify_instances"]),
                  inotify_watches=_opt(_int, d["inotify_watches"]))


def _env(v: Any) -> EnvPolicy:
    d = _fields(v, EnvPolicy)
    return EnvPolicy(passthrough=_tuple(_str, d["passthrough"]),
                     set=_tuple(_pair(_str, _str), d["set"]))


def _user(v: Any) -> UserPolicy:
    d = _fields(v, UserPolicy)
    return UserPolicy(name=_str(d["name"]), uid=_int(d["uid"]), gid=_int(d["gid"]),
                      home=_str(d["home"]))


_NAMES: dict[type, frozenset[str]] = {}


def _names(cls: type) -> frozenset[str]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = frozenset(cls.__match_args__)  # type: ignore[attr-defined]
    return names


def _fields(v: Any, cls: type) -> dict[str, Any]:
    if not isinstance(v, dict) or v.keys() != _names(cls):
        raise ValueError(f"{cls.__name__}: expected an object with exactly its fields")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("expected a string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("expected a boolean")
    return v


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("expected an integer")
    return v


def _float(v: Any) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise TypeError("expected a number")
    return float(v)


def _opt(conv: Callable[[Any], _T], v: Any) -> _T | None:
    return None if v is None else conv(v)


def _tuple(conv: Callable[[Any], _T], v: Any) -> tuple[_T, ...]:
    if not isinstance(v, list):
        raise TypeError("expected a list")
    return tuple(conv(x) for x in v)


def _pair(a: Callable[[Any], _T],
          b: Callable[[Any], _U]) -> Callable[[Any], tuple[_T, _U]]:
    def pair(v: Any) -> tuple[_T, _U]:
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError("expected a pair")
        return a(v[0]), b(v[1])
    return pair
