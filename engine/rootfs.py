"""Plan the sandbox's root filesystem from a profile: the steps PID 1 executes, in order.

The plan follows the host's layout: on a merged-/usr host, /bin, /lib, ... are symlinks into
/usr and are recreated as symlinks; elsewhere they are bound read-only like /usr.
"""

from __future__ import annotations

import os
import stat

from engine.errors import LaunchError
from engine.plan import MountOp
from engine.profile.model import Bind, Profile

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# parts of the sandbox's /proc made read-only: sysctls, the sysrq trigger, IRQ and bus settings
PROC_READONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")


def _etc_files(profile: Profile, hostname: str, net_mode: str) -> list[MountOp]:
    u = profile.user
    home = u.home_dir
    passwd = [f"{u.name}:x:{u.uid}:{u.gid}:flue sandbox user:{home}:/bin/sh"]
    group = [f"{u.name}:x:{u.gid}:"]
    if u.uid != 0:
        passwd.append("root:x:0:0:root:/root:/usr/sbin/nologin")
    if u.gid != 0:
        group.append("root:x:0:")
    passwd.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin")
    group.append("nogroup:x:65534:")
    hosts = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    if net_mode == "none":
        resolv = "# flue: networking is off in this sandbox (network.mode = \"none\")\n"
    elif net_mode == "allowlist":
        from engine.network.policy import DNS_HOST

        resolv = ("# flue: the sandbox's DNS stub; it answers only names the network allowlist "
                  f"allows\nnameserver {DNS_HOST}\noptions timeout:2 attempts:2\n")
    else:
        resolv = "# flue: loopback only; no name server is reachable\n"
    ops = [
        MountOp("dir", "/etc", mode=0o755),
        MountOp("file", "/etc/passwd", data=("\n".join(passwd) + "\n").encode(), mode=0o644),
        MountOp("file", "/etc/group", data=("\n".join(group) + "\n").encode(), mode=0o644),
        MountOp("file", "/etc/hosts", data=hosts.encode(), mode=0o644),
        MountOp("file", "/etc/hostname", data=(hostname + "\n").encode(), mode=0o644),
        MountOp("file", "/etc/resolv.conf", data=resolv.encode(), mode=0o644),
        MountOp("file", "/etc/nsswitch.conf",
                data=b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                b"networks: files\nprotocols: files\nservices: files\n", mode=0o644),
    ]
    generated = {op.dst for op in ops}
    for path in profile.filesystem.etc:
        if path in generated:
            continue
        ops.extend(_host_entry(path))
    return ops


def _host_entry(path: str) -> list[MountOp]:
    """A host file or directory, bound read-only; a symlink is recreated as a symlink."""
    try:
        st = os.lstat(path)
    except OSError:
        return []
    if stat.S_ISLNK(st.st_mode):
        return [MountOp("symlink", path, target=os.readlink(path))]
    return [MountOp("bind", path, src=path, is_dir=stat.S_ISDIR(st.st_mode), optional=True)]


def plan_mounts(
    profile: Profile,
    *,
    workspace: str | None = None,
    extra_binds: tuple[Bind, ...] = (),
    net_mode: str = "none",
) -> list[MountOp]:
    fs = profile.filesystem
    ops: list[MountOp] = []
    for path in fs.system:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            ops.append(MountOp("symlink", path, target=os.readlink(path)))
        elif stat.S_ISDIR(st.st_mode):
            ops.append(MountOp("bind", path, src=path))
    ops += _etc_files(profile, profile.hostname, net_mode)
    ops.append(MountOp("proc", "/proc"))
    # the kernel's knobs: read-only even for a sandbox user that is someone on the host
    for knob in PROC_READONLY:
        ops.append(MountOp("readonly", knob, optional=True))
    # a minimal /dev
    ops.append(MountOp("tmpfs", "/dev", size=1 << 20, mode=0o755))
    for dev in DEVICES:
        ops.append(MountOp("bind", f"/dev/{dev}", src=f"/dev/{dev}", is_dir=False, rw=True,
                           dev=True, optional=dev == "tty"))
    ops.append(MountOp("devpts", "/dev/pts"))
    ops.append(MountOp("symlink", "/dev/ptmx", target="pts/ptmx"))
    ops.append(MountOp("tmpfs", "/dev/shm", size=fs.shm_size, mode=0o1777))
    ops.append(MountOp("mqueue", "/dev/mqueue"))
    ops.append(MountOp("symlink", "/dev/fd", target="/proc/self/fd"))
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        ops.append(MountOp("symlink", f"/dev/{name}", target=f"/proc/self/fd/{i}"))
    ops.append(MountOp("tmpfs", "/tmp", size=fs.tmp_size, mode=0o1777))
    ops.append(MountOp("dir", "/var", mode=0o755))
    ops.append(MountOp("symlink", "/var/tmp", target="/tmp"))
    ops.append(MountOp("dir", "/run", mode=0o755))
    home = profile.user.home_dir
    ops.append(MountOp("tmpfs", home, size=fs.home_size, mode=0o700))
    ws_dst = fs.workdir if fs.workdir.startswith("/work") else "/work"
    if workspace:
        ws = os.path.abspath(workspace)
        if not os.path.isdir(ws):
            raise LaunchError(f"workspace {workspace} is not a directory",
                              fix="create it first, or leave --workspace out for a tmpfs one")
        _refuse_kernel_interfaces(ws, "/work", "workspace")
        ops.append(MountOp("bind", "/work", src=ws, rw=True))
    else:
        ops.append(MountOp("tmpfs", "/work", size=fs.workspace_size, mode=0o755))
    del ws_dst
    for dst, size in fs.tmpfs:
        ops.append(MountOp("tmpfs", dst, size=size, mode=0o1777))
    for b in (*fs.binds, *extra_binds):
        if not os.path.isabs(b.src) or not os.path.isabs(b.dst):
            raise LaunchError(f"bind {b.src}:{b.dst} needs absolute paths",
                              fix="write both sides of a bind as absolute paths")
        if not b.optional and not os.path.lexists(b.src):
            raise LaunchError(f"bind source {b.src} does not exist",
                              fix="create it, or mark the bind optional in the profile")
        _refuse_kernel_interfaces(b.src, b.dst, f"bind {b.src}:{b.dst}")
        ops.append(MountOp("bind", b.dst, src=b.src, rw=b.rw, optional=b.optional))
    for op in ops:
        if op.kind == "bind" and op.rw and not op.dev:
            _refuse_flue_state(op)
    return ops


# host trees that are the kernel's interfaces, not files: never a bind source (flue gives the
# sandbox its own /proc and /dev, and binds the few device nodes it needs itself)
KERNEL_TREES = ("/proc", "/sys", "/dev")
# filesystems that are such interfaces wherever they are mounted
KERNEL_FSTYPES = frozenset((
    "proc", "sysfs", "devtmpfs", "devpts", "debugfs", "tracefs", "securityfs", "cgroup",
    "cgroup2", "bpf", "configfs", "efivarfs", "pstore", "fusectl", "binfmt_misc", "selinuxfs",
    "nsfs", "mqueue",
))
_KERNEL_FIX = ("bind a directory of ordinary files (a project, a cache) instead; the sandbox "
               "has its own /proc, a minimal /dev and no /sys")
_mounts_cache: list[tuple[str, str]] | None = None


def _host_mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of the supervisor's mounts, read once."""
    global _mounts_cache
    if _mounts_cache is None:
        from engine._linux import cgroupfs

        try:
            with open("/proc/self/mountinfo") as f:
                _mounts_cache = [(m.mountpoint, m.fstype)
                                 for m in cgroupfs.parse_mountinfo(f.read())]
        except OSError:
            _mounts_cache = []
    return _mounts_cache


def _refuse_kernel_interfaces(src: str, dst: str, what: str) -> None:
    """A bind (or the workspace) must not bring the host's kernel interfaces in: the root
    directory, anything under /proc, /sys or /dev, or a tree that is or holds a mount of
    procfs, sysfs, devtmpfs and the like (the host's /dev/shm, sysctls, cgroups ...)."""
    path = os.path.normpath(src)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    if path == "/":
        raise LaunchError(f"the {what} would bring the host's whole root in, /proc, /sys "
                          "and /dev included", fix=_KERNEL_FIX)
    for tree in KERNEL_TREES:
        if _within(path, tree):
            raise LaunchError(f"the {what} would expose the host's {tree} (a kernel "
                              "interface, not files) to the sandbox", fix=_KERNEL_FIX)
    real = os.path.realpath(path)
    best, fstype = "", ""
    for mp, fs in _host_mounts():
        if _within(real, mp) and len(mp) >= len(best):
            best, fstype = mp, fs  # the mount that holds the source (the last one on top)
        elif fs in KERNEL_FSTYPES and _within(mp, real):
            raise LaunchError(f"the {what} would expose the host's {fs} mounted at {mp} to "
                              "the sandbox", fix=_KERNEL_FIX)
    if fstype in KERNEL_FSTYPES:
        raise LaunchError(f"the {what} is on the host's {fstype} at {best} (a kernel "
                          "interface, not files)", fix=_KERNEL_FIX)


def flue_state_dirs() -> tuple[str, ...]:
    """Where flue keeps what later runs trust: the compiled-filter and profile caches, the
    user's profiles, the TUI's state (the XDG locations flue reads them from)."""
    home = os.path.expanduser("~")
    env = os.environ
    return (
        os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "flue"),
        os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "flue"),
        os.path.join(env.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state"), "flue"),
    )


def _within(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _ids_up(path: str) -> list[tuple[int, int]]:
    """(st_dev, st_ino) of ``path`` and of each directory above it that exists."""
    out = []
    while True:
        try:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino))
        except OSError:
            pass
        parent = os.path.dirname(path)
        if parent == path:
            return out
        path = parent


def _same_tree(src: str, state: str) -> bool:
    """Whether ``src`` is ``state``, holds it or lies inside it, told by inode: another
    mount of the same directories (a bind alias such as /mnt/home for /home) has other paths
    but the same device and inode numbers."""
    try:
        st = os.stat(src)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) in _ids_up(state):
        return True  # src is the state directory or one above it
    try:
        top = os.stat(state)
    except OSError:
        return False
    return (top.st_dev, top.st_ino) in _ids_up(os.path.dirname(src))


def _refuse_flue_state(op: MountOp) -> None:
    """A read-write bind must not reach flue's own state: a sandbox that can write the
    filter cache or the profiles decides what the next sandbox may do. (Masking the state
    with a read-only bind is not enough: renaming a parent directory moves the mask away.)"""
    src = os.path.realpath(op.src)
    for state in flue_state_dirs():
        real = os.path.realpath(state)
        if _within(real, src) or _within(src, real) or _same_tree(src, real):
            what = "workspace" if op.dst == "/work" else f"bind {op.src}:{op.dst}:rw"
            raise LaunchError(
                f"the {what} would let the sandbox write flue's own state in {state}",
                detail="a sandbox that can change flue's caches or profiles controls the "
                "next sandbox's filter",
                fix="bind a directory that does not contain it (e.g. ~/.cache/pip rather than "
                "~/.cache), or bind it read-only (:ro)",
            )


def parse_bind(spec: str) -> Bind:
    """``SRC[:DST][:ro|:rw]`` as on the command line."""
    parts = spec.split(":")
    mode = "ro"
    if parts[-1] in ("ro", "rw"):
        mode = parts.pop()
    if not parts or not parts[0] or len(parts) > 2:
        raise LaunchError(f"bad --bind {spec!r}", fix="write --bind SRC[:DST][:ro|:rw]")
    src = parts[0]
    dst = parts[1] if len(parts) == 2 and parts[1] else src
    return Bind(src=os.path.abspath(src), dst=dst, rw=mode == "rw")
