"""The resolved profile: what a sandbox is allowed to do, after ``extends`` is applied.

These records are what the rest of the engine consumes. The loader (``engine.profile.loader``)
turns TOML files into them; nothing else parses TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# bumped when a record gains or loses a field: pickled profiles of another shape are stale
MODEL_VERSION = 3

# what one sandbox may take of the inotify budget of the host uid that created its user
# namespace (for a root-run sandbox, root's: the kernel charges a namespace's usage to its
# creator); fanotify groups and marks are bounded alike
DEFAULT_INOTIFY_INSTANCES = 32
DEFAULT_INOTIFY_WATCHES = 32768


@dataclass(frozen=True, slots=True)
class Bind:
    """A host path made visible inside the sandbox."""

    src: str  # absolute host path, as written (never resolved through symlinks)
    dst: str  # absolute path inside the sandbox
    rw: bool = False
    optional: bool = False  # skip silently when the source does not exist


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    mode: str = "none"  # "none" | "loopback" | "allowlist"
    # allowlist mode: normalised rules ("pypi.org", "*.example.com", "api.example.org:8443")
    allow: tuple[str, ...] = ()
    # the resolver map: name (or "*.domain") -> address, used instead of the system resolver
    hosts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
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
    socket_families: tuple[str, ...] = ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK")

    def errno_for(self, name: str) -> int:
        for n, e in self.errno:
            if n == name:
                return e
        return self.default_errno


@dataclass(frozen=True, slots=True)
class Limits:
    memory: int | None = None  # bytes
    cpus: float | None = None  # CPUs (0.5 = half a CPU)
    pids: int | None = None
    timeout: float | None = None  # seconds of wall clock
    # per sandbox, written into its user namespace's /proc/sys/user; None: the host's only
    inotify_instances: int | None = DEFAULT_INOTIFY_INSTANCES
    inotify_watches: int | None = DEFAULT_INOTIFY_WATCHES


@dataclass(frozen=True, slots=True)
class EnvPolicy:
    # host variables copied in when set; an entry ending in "*" is a prefix ("LC_*")
    passthrough: tuple[str, ...] = ("TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "COLORTERM")
    set: tuple[tuple[str, str], ...] = ()  # applied after passthrough: these win

    def passes(self, name: str) -> bool:
        """Whether the host variable ``name`` is copied into the sandbox."""
        return any(
            name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in self.passthrough
        )


@dataclass(frozen=True, slots=True)
class UserPolicy:
    name: str = "agent"
    uid: int = 0  # uid inside the sandbox
    gid: int = 0
    home: str = ""  # defaults to /home/<name>

    @property
    def home_dir(self) -> str:
        return self.home or ("/root" if self.name == "root" else f"/home/{self.name}")


@dataclass(frozen=True, slots=True)
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
