"""flue's on-disk caches (``$XDG_CACHE_HOME/flue/<kind>/``), trusted only when nobody else
could have written them.

What is in them decides what later sandboxes may do (the compiled seccomp filters, the
syscall table, the resolved profiles), so a file is used only when it, its directory and
``flue/`` above it are owned by the effective uid and writable by nobody else (no group or
world write bit), and neither the directories nor the file are symlinks. Everything is opened
relative to the directory fds checked before, so nothing can be swapped in between. Directories
are created 0700 and files 0600 (written to a temporary name, then renamed). Anything that does
not pass is ignored as if it were absent; a cache that cannot be trusted is not written either.

Keeping sandboxes from writing these directories at all is rootfs's job (a read-write bind that
reaches them is refused); this is the check for everyone else who could.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def root() -> Path:
    """``$XDG_CACHE_HOME/flue``, by default ``~/.cache/flue``."""
    from pathlib import Path

    return Path(_base()) / "flue"


def _base() -> str:
    """``$XDG_CACHE_HOME``, by default ``~/.cache`` (a string: pathlib costs its import on
    ``flue run``'s path)."""
    return os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def _ours(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_dir(kind: str, *, create: bool = False) -> int | None:
    """An fd of ``flue/<kind>`` when both levels are directories of ours that nobody else can
    write (made 0700 when missing and ``create``); None otherwise. The caller closes it."""
    base = _base()
    try:
        if create:
            os.makedirs(base, mode=0o700, exist_ok=True)
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    for name in ("flue", kind):
        try:
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:  # absent, a symlink (ELOOP), not a directory
            os.close(fd)
            return None
        os.close(fd)
        fd = nfd
        if not _ours(os.fstat(fd)):
            os.close(fd)
            return None
    return fd


def read(dir_fd: int, name: str) -> bytes | None:
    """The contents of the regular file ``name`` in ``dir_fd`` if it is ours and nobody
    else can write it; None otherwise (absent included)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _ours(st):
            return None
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, max(st.st_size, 1 << 16))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


def write(dir_fd: int, name: str, data: bytes) -> bool:
    """Replace ``name`` in ``dir_fd`` with ``data`` (mode 0600, via a temporary file and a
    rename, so a reader never sees half of it). False when that failed."""
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
    except FileExistsError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)  # left by a process of ours that died
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except OSError:
            return False
    except OSError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.close(fd)
        fd = -1
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        return False
    finally:
        if fd >= 0:
            os.close(fd)


def load(kind: str, name: str) -> bytes | None:
    """``read`` of ``flue/<kind>/<name>``, the directories checked too."""
    fd = open_dir(kind)
    if fd is None:
        return None
    try:
        return read(fd, name)
    finally:
        os.close(fd)


def store(kind: str, name: str, data: bytes) -> bool:
    """``write`` into ``flue/<kind>/`` (created 0700 when missing), unless it is not ours."""
    fd = open_dir(kind, create=True)
    if fd is None:
        return False
    try:
        return write(fd, name, data)
    finally:
        os.close(fd)
