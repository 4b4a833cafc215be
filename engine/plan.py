"""The launch plan: everything the sandbox's processes need, computed in the supervisor.

A plan is plain, picklable data: the fork server receives it over a socket, the inline
spawner hands it to the forked child directly. Nothing in here touches the kernel.
"""

from __future__ import annotations

from engine._record import field, record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import Any

# where the new root is assembled inside the sandbox's private mount namespace
STAGE = "/tmp"


@record(frozen=True, slots=True)
class MountOp:
    """One step of building the root, executed in order by the sandbox's PID 1.

    kind:
      - "bind":    bind host ``src`` at ``dst`` (``rw`` or read-only), ``is_dir`` tells what to create
      - "symlink": create symlink ``dst`` -> ``target``
      - "tmpfs":   mount a tmpfs of ``size`` bytes at ``dst`` with ``mode``
      - "file":    write ``data`` to ``dst`` with ``mode`` (into the root tmpfs)
      - "dir":     create directory ``dst`` with ``mode``
      - "proc", "devpts", "mqueue": mount those filesystems at ``dst``
      - "readonly": bind ``dst`` (already in the new root, e.g. /proc/sys) onto itself
        read-only, nosuid, nodev, noexec; ``optional``: skip it when absent
    """

    kind: str
    dst: str
    src: str = ""
    target: str = ""
    rw: bool = False
    is_dir: bool = True
    size: int = 0
    mode: int = 0o755
    data: bytes = b""
    optional: bool = False
    dev: bool = False  # a device node: keep it usable (no nodev), but noexec


@record(frozen=True, slots=True)
class LaunchPlan:
    sandbox_id: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str
    hostname: str
    uid: int  # inside
    gid: int
    host_uid: int  # what the sandbox's uid maps to on the host
    host_gid: int
    privileged_maps: bool  # True: the spawner (root) writes the id maps; False: the child does
    root_size: int
    mounts: tuple[MountOp, ...]
    net_mode: str  # "none" | "loopback" | "allowlist"
    seccomp_bpf: bytes
    seccomp_notify: bool
    cgroup_procs: tuple[str, ...] = ()  # cgroup.procs files to join before unsharing
    cgroup_dirs: tuple[str, ...] = ()  # directories A removes on cleanup
    # the supervisor makes the groups only once A exists (so that a SIGKILL of the supervisor
    # at any moment leaves someone to remove them): A waits for their procs files and dirs on
    # ctrl, and removes these candidates if the supervisor dies first
    cgroup_wait: bool = False
    cgroup_candidates: tuple[str, ...] = ()
    # the cgroup.procs of the supervisor's own groups, where A came from (known to the v1
    # backend: its groups are made right below them); empty: A reads them from /proc
    cgroup_origins: tuple[str, ...] = ()
    pass_fds: tuple[int, ...] = ()  # fds (numbers in the sandbox) passed on purpose
    ns_flags: int = 0
    # allowlist mode: the ports PID 1 listens on (0.0.0.0:PORT) for captured connections
    net_capture_ports: tuple[int, ...] = ()
    # (file in /proc/sys/user, value) PID 1 writes into its user namespace's limits
    userns_limits: tuple[tuple[str, int], ...] = ()
    # a pty of the sandbox's own (engine/terminal.py): PID 1 makes it, puts its slave on these
    # of fds 0-2 with these modes (termios.tcgetattr's list) and size, and sends the master
    # to the supervisor; the main process makes it its controlling terminal
    tty_fds: tuple[int, ...] = ()
    tty_attrs: tuple[Any, ...] = ()
    tty_winsize: tuple[int, int] = (0, 0)
    extra: dict[str, str] = field(default_factory=dict)
