"""The sandbox's file system on real kernels: binds, the workspace, a read-only root and
system directories mounted read-only, nosuid, nodev."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

pytestmark = pytest.mark.sandbox

# the host uid the sandbox's user writes host files as: the workspace owner (root mode maps
# the sandbox to the owner of a non-root workspace) or the unprivileged caller
WS_OWNER = 4242

MOUNTS = textwrap.dedent("""
    import json
    out = {}
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        sep = f.index("-")
        out[f[4]] = {"opts": f[5].split(","), "fstype": f[sep + 1]}
    print(json.dumps(out))
""")


def _host_dir(flue, name: str, mode: int = 0o755):
    return flue.tmpdir(name, mode=mode, owner=WS_OWNER)


def test_bind_ro_is_read_only_inside(flue):
    src = _host_dir(flue, "ro")
    (src / "data").write_text("host data\n")
    r = flue.run(["sh", "-c", ("cat /mnt/ro/data; echo new > /mnt/ro/new; echo rc=$?; "
                  "rm -f /mnt/ro/data; echo rm=$?")], "--bind", f"{src}:/mnt/ro:ro")
    assert r.returncode == 0, r
    assert r.stdout.splitlines()[0] == "host data"
    assert "rc=0" not in r.stdout and "rm=1" in r.stdout, r
    assert "Read-only file system" in r.stderr, r
    assert not (src / "new").exists()
    assert (src / "data").read_text() == "host data\n"


def test_bind_without_mode_is_read_only(flue):
    src = _host_dir(flue, "ro")
    r = flue.run(["sh", "-c", "touch /mnt/x/f"], "--bind", f"{src}:/mnt/x")
    assert r.returncode != 0, r
    assert "Read-only file system" in r.stderr, r
    assert not (src / "f").exists()


def test_bind_rw_is_writable_and_seen_by_the_host(flue):
    src = _host_dir(flue, "rw")
    ws = _host_dir(flue, "ws")
    r = flue.run(["sh", "-c", "echo from-inside > /mnt/rw/out && cat /mnt/rw/out"],
                 "--bind", f"{src}:/mnt/rw:rw", "--workspace", str(ws))
    assert r.returncode == 0, r
    assert (src / "out").read_text() == "from-inside\n"
    assert (src / "out").stat().st_uid == WS_OWNER


def test_bind_source_through_a_symlink_is_refused(flue, marker):
    real = _host_dir(flue, "real")
    (real / "sub").mkdir()
    link_parent = _host_dir(flue, "links")
    (link_parent / "link").symlink_to(real)
    for src in (link_parent / "link", link_parent / "link" / "sub"):
        r = flue.run(["sh", "-c", f"echo LAUNCHED {marker}"], "--bind", f"{src}:/mnt/x")
        assert r.returncode == 125, r
        assert "LAUNCHED" not in r.stdout, r
        assert len(r.flue_lines) == 1, r
        line = r.flue_lines[0]
        assert str(src) in line and "symlink" in line, r


def test_workspace_is_the_writable_cwd(flue):
    ws = _host_dir(flue, "ws")
    (ws / "input.txt").write_text("hello\n")
    r = flue.run(["sh", "-c", ("pwd; cat input.txt; echo out > output.txt; mkdir -p a/b; "
                  "touch a/b/c; echo $PWD")], "--workspace", str(ws))
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == ["/work", "hello", "/work"], r
    assert (ws / "output.txt").read_text() == "out\n"
    assert (ws / "a" / "b" / "c").is_file()
    assert (ws / "output.txt").stat().st_uid == WS_OWNER


def test_root_is_read_only(flue):
    r = flue.run(["sh", "-c", "touch /newfile; echo rc=$?; mkdir /newdir; echo rc=$?"])
    assert r.returncode == 0, r
    assert r.stdout.split() == ["rc=1", "rc=1"], r
    assert "Read-only file system" in r.stderr, r


def test_system_dirs_are_read_only_nosuid_nodev(flue):
    r = flue.run(["python3", "-c", MOUNTS])
    assert r.returncode == 0, r
    mounts = json.loads(r.stdout)
    assert set(mounts["/"]["opts"]) >= {"ro", "nosuid", "nodev"}, mounts["/"]
    checked = 0
    for d in ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc/ssl", "/etc/ld.so.cache"):
        if d not in mounts:
            continue  # a symlink into /usr on merged-/usr hosts, or absent on this host
        checked += 1
        assert set(mounts[d]["opts"]) >= {"ro", "nosuid", "nodev"}, (d, mounts[d])
    assert "/usr" in mounts and checked >= 2, sorted(mounts)
    for d in ("/tmp", "/work", "/home/agent", "/dev/shm"):
        assert mounts[d]["fstype"] == "tmpfs", (d, mounts[d])
        assert {"nosuid", "nodev"} <= set(mounts[d]["opts"]) and "ro" not in mounts[d]["opts"]


def test_system_dirs_refuse_writes(flue):
    r = flue.run(["sh", "-c", ("for d in /usr /usr/bin /etc /lib; do touch $d/x 2>/dev/null "
                  "&& echo wrote $d; done; echo done")])
    assert r.returncode == 0, r
    assert r.stdout.strip() == "done", r


def test_dev_is_minimal(flue):
    r = flue.run(["sh", "-c", ("ls /dev | sort | tr '\\n' ' '; echo; "
                  "head -c 4 /dev/zero | wc -c; echo x > /dev/null && echo null-ok")])
    assert r.returncode == 0, r
    names = set(r.stdout.splitlines()[0].split())
    assert {"null", "zero", "urandom", "random", "shm", "pts"} <= names, names
    for absent in ("sda", "vda", "mem", "kmsg", "kvm", "loop0"):
        assert absent not in names, names
    assert r.stdout.splitlines()[1:] == ["4", "null-ok"], r


def test_bind_destination_through_a_sandbox_symlink_is_refused_clearly(flue):
    src = _host_dir(flue, "src")
    # /var/tmp is a symlink to /tmp in every sandbox
    r = flue.run(["true"], "--bind", f"{src}:/var/tmp/x")
    assert r.returncode == 125, r
    assert len(r.flue_lines) == 1, r
    assert "/var/tmp is a symlink inside the sandbox" in r.flue_lines[0], r
    assert "Errno" not in r.stderr, r


def test_bind_destination_under_a_read_only_dir_is_refused_clearly(flue):
    src = _host_dir(flue, "src")
    r = flue.run(["true"], "--bind", f"{src}:/usr/flue-test-nowhere/x")
    assert r.returncode == 125, r
    assert len(r.flue_lines) == 1, r
    line = r.flue_lines[0]
    assert "/usr/flue-test-nowhere" in line and "read-only" in line, r


def test_ro_bind_makes_its_submounts_read_only_too(flue):
    # a tree with a mount inside it: a tmpfs the test mounts below a host directory
    top = _host_dir(flue, "tree")
    (top / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M,mode=0777", "flue-test", str(top / "sub")],
                   check=True, timeout=10)
    try:
        r = flue.run(["python3", "-c", MOUNTS + textwrap.dedent("""
            for p in ("/mnt/t/sub/f", "/mnt/t/f"):
                try:
                    open(p, "w").write("x")
                    print("WROTE", p)
                except OSError as e:
                    print("refused", p, e.errno)
        """)], "--bind", f"{top}:/mnt/t:ro")
        assert r.returncode == 0, r
        mounts = json.loads(r.stdout.splitlines()[0])
        assert set(mounts["/mnt/t/sub"]["opts"]) >= {"ro", "nosuid", "nodev"}, mounts["/mnt/t/sub"]
        assert "WROTE" not in r.stdout, r
        assert not (top / "sub" / "f").exists()
    finally:
        subprocess.run(["umount", str(top / "sub")], check=False, timeout=10)


def _user_dirs(flue, *paths):
    """Make ``paths`` (below flue's HOME) as the user flue runs as would: a directory of
    root's in the unprivileged user's cache would make that cache untrusted for later tests."""
    for p in paths:
        p.mkdir(parents=True, exist_ok=True)
        while p != flue.home:
            os.chown(p, flue.uid, flue.gid)
            p = p.parent


@pytest.mark.parametrize("what", ["cache", "config", "home-as-workspace"])
def test_rw_bind_of_flues_own_state_is_refused(flue, what, marker):
    home = flue.home
    _user_dirs(flue, home / ".cache" / "flue")
    if what == "cache":
        args = ["--bind", f"{home / '.cache'}:/home/agent/.cache:rw"]
    elif what == "config":
        args = ["--bind", f"{home / '.config'}:/mnt/config:rw"]
        _user_dirs(flue, home / ".config")
    else:
        args = ["--workspace", str(home)]
    r = flue.run(["sh", "-c", f"echo LAUNCHED {marker}"], *args)
    assert r.returncode == 125, r
    assert "LAUNCHED" not in r.stdout
    assert r.flue_lines and "flue's own state" in r.flue_lines[0], r
    assert "fix:" in r.stderr


def test_rw_bind_beside_flues_state_is_fine(flue_user):
    # the control: a sibling of flue's cache (pip's) may be shared read-write
    pip = flue_user.home / ".cache" / "pip"
    pip.mkdir(parents=True, exist_ok=True)
    os.chown(pip, flue_user.uid, flue_user.gid)
    os.chown(pip.parent, flue_user.uid, flue_user.gid)
    r = flue_user.run(["sh", "-c", "echo cached > /home/agent/.cache/pip/x"],
                      "--bind", f"{pip}:/home/agent/.cache/pip:rw")
    assert r.returncode == 0, r
    assert (pip / "x").read_text() == "cached\n"


def _tree_with_a_submount(flue):
    top = _host_dir(flue, "tree")
    (top / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M,mode=0777", "flue-test", str(top / "sub")],
                   check=True, timeout=10)
    return top


def test_rw_bind_gives_its_submounts_nosuid_nodev(flue):
    top = _tree_with_a_submount(flue)
    try:
        r = flue.run(["sh", "-c", "python3 -c '" + MOUNTS.replace("'", '"') + "'; "
                      "echo x > /mnt/t/sub/f && echo wrote"], "--bind", f"{top}:/mnt/t:rw")
        assert r.returncode == 0, r
        mounts = json.loads(r.stdout.splitlines()[0])
        sub = set(mounts["/mnt/t/sub"]["opts"])
        assert {"nosuid", "nodev"} <= sub and "ro" not in sub, mounts["/mnt/t/sub"]
        assert r.stdout.splitlines()[1] == "wrote", r
    finally:
        subprocess.run(["umount", str(top / "sub")], check=False, timeout=10)


def test_ro_bind_submounts_without_mount_setattr_use_the_mountinfo_fallback(flue):
    """Before Linux 5.12 (or where mount_setattr is refused) each submount is remounted on
    its own, found through mountinfo: the same result."""
    top = _tree_with_a_submount(flue)
    code = f"""
        import errno, json
        from engine._linux import libc
        def missing(*args, **kw):
            raise OSError(errno.ENOSYS, "mount_setattr: Function not implemented")
        libc.mount_setattr = missing   # what PID 1 finds on an older kernel
        from engine.profile import load_profile
        from engine.rootfs import parse_bind
        from engine.sandbox import run_sync
        probe = ("import json\\nfor line in open('/proc/self/mountinfo'):\\n"
                 "    f = line.split()\\n"
                 "    if f[4].startswith('/mnt/t'): print(json.dumps([f[4], f[5]]))\\n"
                 "try:\\n    open('/mnt/t/sub/f', 'w')\\n    print('WROTE')\\n"
                 "except OSError as e:\\n    print('refused', e.errno)\\n")
        r = run_sync(["python3", "-c", probe], load_profile("default"),
                     binds=(parse_bind("{top}:/mnt/t:ro"),), allow_unlimited=True, live=False)
        print("EXIT", r.exit_code)
    """
    try:
        h = flue.start_python(code)
        r = h.finish()
        assert "EXIT 0" in r.stdout, r
        seen = dict(json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("["))
        assert set(seen["/mnt/t/sub"].split(",")) >= {"ro", "nosuid", "nodev"}, seen
        assert "WROTE" not in r.stdout and "refused 30" in r.stdout, r  # EROFS
        assert not (top / "sub" / "f").exists()
    finally:
        subprocess.run(["umount", str(top / "sub")], check=False, timeout=10)


@pytest.mark.parametrize("src", ["/", "/dev", "/dev/shm", "/proc/self", "/sys", "proc-inside"])
def test_bind_sources_that_expose_kernel_interfaces_are_refused(flue, src, marker):
    mounted = None
    if src == "proc-inside":  # a tree that holds a procfs mount somewhere below
        top = _host_dir(flue, "chroot")
        (top / "proc").mkdir()
        subprocess.run(["mount", "-t", "proc", "proc", str(top / "proc")], check=True, timeout=10)
        mounted, src = top / "proc", str(top)
    try:
        for args in (["--bind", f"{src}:/mnt/x:ro"], ["--bind", f"{src}:/mnt/x:rw"]):
            r = flue.run(["sh", "-c", f"echo LAUNCHED {marker}"], *args)
            assert r.returncode == 125, r
            assert "LAUNCHED" not in r.stdout, r
            assert len(r.flue_lines) == 1 and f"bind {src}:/mnt/x" in r.flue_lines[0], r
            assert "fix: bind a directory of ordinary files" in r.stderr, r
    finally:
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=False, timeout=10)


def test_workspace_on_a_kernel_interface_is_refused(flue, marker):
    r = flue.run(["sh", "-c", f"echo LAUNCHED {marker}"], "--workspace", "/dev/shm")
    assert r.returncode == 125, r
    assert "LAUNCHED" not in r.stdout, r
    assert r.flue_lines and "workspace" in r.flue_lines[0] and "/dev" in r.flue_lines[0], r


def test_rw_bind_of_flues_state_through_another_mount_of_it_is_refused(flue, marker):
    # the same directories under another path: a bind mount of the home elsewhere
    home = flue.home
    _user_dirs(flue, home / ".cache" / "flue" / "bpf")
    alias = flue.tmpdir("alias")
    subprocess.run(["mount", "--bind", str(home), str(alias)], check=True, timeout=10)
    try:
        for src in (alias / ".cache", alias / ".cache" / "flue" / "bpf", alias):
            r = flue.run(["sh", "-c", f"echo LAUNCHED {marker}"], "--bind", f"{src}:/mnt/c:rw")
            assert r.returncode == 125, r
            assert "LAUNCHED" not in r.stdout
            assert r.flue_lines and "flue's own state" in r.flue_lines[0], r
    finally:
        subprocess.run(["umount", str(alias)], check=False, timeout=10)
