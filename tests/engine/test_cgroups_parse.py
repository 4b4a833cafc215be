"""The private cgroupfs layer: mountinfo, /proc/PID/cgroup and interface-file parsers."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from engine._linux import cgroupfs
from engine.cgroups.detect import v1_controllers

# /proc/self/mountinfo of a hybrid host (cpu and cpuacct in separate hierarchies)
HYBRID_MOUNTINFO = """\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/99ab2497305bcb40196f060cf2f1490d
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


def test_parse_mountinfo_cgroup_mounts() -> None:
    mounts = cgroupfs.parse_mountinfo(HYBRID_MOUNTINFO)
    assert len(mounts) == 12
    v1 = [m for m in mounts if m.fstype == "cgroup"]
    assert [v1_controllers(m) for m in v1] == [
        ("cpu",),
        ("cpuacct",),
        ("cpuset",),
        ("memory",),
        ("devices",),
        ("freezer",),
        ("blkio",),
        ("pids",),
        (),
    ]
    (v2,) = [m for m in mounts if m.fstype == "cgroup2"]
    assert v2.mountpoint == "/sys/fs/cgroup/unified"
    assert v2.root == "/"
    assert not v2.read_only


def test_parse_mountinfo_optional_fields_escapes_and_ro() -> None:
    text = (
        "30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime shared:4 master:1 - "
        "cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
        "50 23 0:40 /docker/abc /mnt/my\\040cgroups rw,relatime shared:9 - cgroup cgroup "
        "rw,xattr,cpu,cpuacct\n"
        "garbage line\n"
    )
    a, b = cgroupfs.parse_mountinfo(text)
    assert a.fstype == "cgroup2" and a.read_only
    assert a.super_options == ("rw", "nsdelegate", "memory_recursiveprot")
    assert b.mountpoint == "/mnt/my cgroups"
    assert b.root == "/docker/abc"
    assert v1_controllers(b) == ("cpu", "cpuacct")


def test_parse_proc_cgroup() -> None:
    lines = cgroupfs.parse_proc_cgroup(HYBRID_CGROUP + "bad\n")
    assert lines[0].controllers == ("name=systemd",)
    mem = next(ln for ln in lines if "memory" in ln.controllers)
    assert mem.path == "/process_api/99ab2497305bcb40196f060cf2f1490d"
    uni = lines[-1]
    assert uni.hierarchy_id == 0 and uni.controllers == () and uni.path == "/"
    co = cgroupfs.parse_proc_cgroup("4:cpu,cpuacct:/user.slice\n")[0]
    assert co.controllers == ("cpu", "cpuacct")


def test_map_to_mount() -> None:
    (m,) = cgroupfs.parse_mountinfo(
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    )
    assert cgroupfs.map_to_mount(m, "/") == "/sys/fs/cgroup/memory"
    assert cgroupfs.map_to_mount(m, "/a/b") == "/sys/fs/cgroup/memory/a/b"
    (d,) = cgroupfs.parse_mountinfo(
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    )
    assert cgroupfs.map_to_mount(d, "/docker/abc") == "/sys/fs/cgroup/memory"
    assert cgroupfs.map_to_mount(d, "/docker/abc/x") == "/sys/fs/cgroup/memory/x"
    assert cgroupfs.map_to_mount(d, "/docker/abcd") is None
    assert cgroupfs.map_to_mount(d, "/other") is None
    # a cgroup namespace shows paths outside it as /..
    assert cgroupfs.map_to_mount(m, "/../../x") is None


def test_parse_keyed_and_pids() -> None:
    ev = cgroupfs.parse_keyed("low 0\nhigh 3\nmax 12\noom 1\noom_kill 1\nweird x\n\n")
    assert ev == {"low": 0, "high": 3, "max": 12, "oom": 1, "oom_kill": 1}
    assert cgroupfs.parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")["oom_kill"] == 2
    assert cgroupfs.parse_pids("1\n22\n333\n") == [1, 22, 333]
    assert cgroupfs.parse_pids("") == []


def test_read_proc_file_uses_root(tmp_path: Path) -> None:
    d = os.path.join(str(tmp_path), "self")
    os.makedirs(d)
    with open(os.path.join(d, "cgroup"), "w") as f:
        f.write("0::/x\n")
    assert cgroupfs.read_proc_file(str(tmp_path), "self", "cgroup") == "0::/x\n"
    with pytest.raises(OSError) as ei:
        cgroupfs.read_proc_file(str(tmp_path), "self", "mountinfo")
    assert ei.value.errno == errno.ENOENT


def test_write_never_creates(tmp_path: Path) -> None:
    fs = cgroupfs.CgroupFS()
    with pytest.raises(FileNotFoundError):
        fs.write(os.path.join(str(tmp_path), "memory.max"), "1\n")
    assert not os.path.exists(os.path.join(str(tmp_path), "memory.max"))
