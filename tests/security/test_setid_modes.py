"""No set-uid or set-gid file can be made inside a sandbox, least of all in a bound workspace
(it would be a set-id program of the workspace's owner on the host, runnable by anyone).

The seccomp filter refuses S_ISUID/S_ISGID in the mode of chmod, fchmod, fchmodat,
fchmodat2, creat, mknod and mknodat, and in the mode of open/openat when they create a file
(O_CREAT, O_TMPFILE); openat2, whose mode the filter cannot see, answers ENOSYS. Ordinary
modes, and tools that set them (install -m, cp -p, git, pip), keep working."""

from __future__ import annotations

import json
import os
import stat
import textwrap

import pytest
from helpers import observe as ob

pytestmark = pytest.mark.sandbox

NOBODY = 65534

PROBE = textwrap.dedent("""
    import ctypes, errno, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    NR = json.loads(sys.argv[1])
    L = ctypes.c_long
    AT_FDCWD, O_WRONLY, O_CREAT, O_TMPFILE = -100, 0o1, 0o100, 0o20200000
    S_IFREG = 0o100000
    os.chdir("/work")
    out = {}

    def call(label, name, *args):
        if name not in NR:
            out[label] = "absent"
            return -1
        ctypes.set_errno(0)
        res = libc.syscall(L(NR[name]), *[L(a) if isinstance(a, int) else a for a in args])
        out[label] = "ok" if res >= 0 else errno.errorcode[ctypes.get_errno()]
        return res

    def fresh(name):
        with open(name, "w"):
            pass
        os.chmod(name, 0o644)
        return name.encode()

    for mode in (0o755, 0o644, 0o1755, 0o4755, 0o2755, 0o6755, 0o4000, 0o10004755):
        m = oct(mode)
        call(f"chmod {m}", "chmod", fresh(f"c{m}"), mode)
        fd = os.open(fresh(f"f{m}"), os.O_RDONLY)
        call(f"fchmod {m}", "fchmod", fd, mode)
        os.close(fd)
        call(f"fchmodat {m}", "fchmodat", AT_FDCWD, fresh(f"a{m}"), mode)
        call(f"fchmodat2 {m}", "fchmodat2", AT_FDCWD, fresh(f"b{m}"), mode, 0)
        fd = call(f"creat {m}", "creat", f"cr{m}".encode(), mode)
        if fd >= 0: os.close(fd)
        fd = call(f"open-creat {m}", "open", f"o{m}".encode(), O_WRONLY | O_CREAT, mode)
        if fd >= 0: os.close(fd)
        fd = call(f"openat-creat {m}", "openat", AT_FDCWD, f"oa{m}".encode(),
                  O_WRONLY | O_CREAT, mode)
        if fd >= 0: os.close(fd)
        fd = call(f"openat-tmpfile {m}", "openat", AT_FDCWD, b".", O_WRONLY | O_TMPFILE, mode)
        if fd >= 0: os.close(fd)
        # an existing file opened without O_CREAT: the mode argument means nothing
        fd = call(f"openat-existing {m}", "openat", AT_FDCWD, fresh(f"e{m}"), O_WRONLY, mode)
        if fd >= 0: os.close(fd)
        call(f"mknod {m}", "mknod", f"n{m}".encode(), S_IFREG | mode, 0)
        call(f"mknodat {m}", "mknodat", AT_FDCWD, f"na{m}".encode(), S_IFREG | mode, 0)
    how = (ctypes.c_uint64 * 3)(O_WRONLY | O_CREAT, 0o4755, 0)
    fd = call("openat2", "openat2", AT_FDCWD, b"o2", ctypes.byref(how), 24)
    print(json.dumps(out))
""")

ALWAYS_SET = ("chmod", "fchmod", "fchmodat", "fchmodat2", "creat", "open-creat", "openat-creat",
              "openat-tmpfile", "mknod", "mknodat")


def _ws(flue):
    # as root the sandbox maps to the workspace's owner: make it someone unprivileged
    return flue.tmpdir("ws", owner=NOBODY if flue.mode == "root" else None)


def _setid_files(ws) -> list[str]:
    found = []
    for root, dirs, files in os.walk(ws):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                found.append(f"{name} {oct(st.st_mode)}")
    return found


def test_set_id_modes_are_refused_and_ordinary_modes_work(flue):
    ws = _ws(flue)
    r = flue.run(["python3", "-c", PROBE, json.dumps(ob.syscall_numbers())],
                 "--workspace", str(ws))
    assert r.returncode == 0, r
    got = ob.last_json_line(r.stdout)
    wrong = []
    for label, result in got.items():
        call, _, m = label.partition(" ")
        if result == "absent" or call == "openat2":
            continue
        setid = int(m, 8) & 0o6000
        want = "EPERM" if setid and call in ALWAYS_SET else "ok"
        if call == "openat-tmpfile" and result == "EOPNOTSUPP":
            continue  # a file system without O_TMPFILE
        if result != want:
            wrong.append(f"{label}: {result}, expected {want}")
    assert not wrong, "\n".join(wrong) + f"\n{r}"
    assert got["openat2"] == "ENOSYS", got
    assert not _setid_files(ws), _setid_files(ws)
    # the host sees the ordinary modes the sandbox set
    assert stat.S_IMODE((ws / "c0o755").stat().st_mode) == 0o755
    assert stat.S_IMODE((ws / "c0o1755").stat().st_mode) == 0o1755


def test_chmod_u_s_g_s_and_create_with_04755_fail_with_eperm_and_are_reported(flue):
    ws = _ws(flue)
    script = textwrap.dedent("""
        set -u
        cp /bin/true /work/x
        chmod u+s /work/x; echo "u+s=$?"
        chmod g+s /work/x; echo "g+s=$?"
        chmod 6755 /work/x; echo "6755=$?"
        chmod 755 /work/x; echo "755=$?"
        chmod 644 /work/x; echo "644=$?"
        python3 -c 'import os
        try:
            os.close(os.open("/work/y", os.O_CREAT | os.O_WRONLY, 0o4755)); print("created")
        except OSError as e:
            print("open", e.errno)'
    """)
    r = flue.run(["sh", "-c", script], "--workspace", str(ws))
    assert r.returncode == 0, r
    lines = r.stdout.split()
    assert lines[:5] == ["u+s=1", "g+s=1", "6755=1", "755=0", "644=0"], r
    assert lines[5:] == ["open", "1"], r  # EPERM
    assert "Operation not permitted" in r.stderr, r
    assert stat.S_IMODE((ws / "x").stat().st_mode) == 0o644
    assert not (ws / "y").exists()
    assert not _setid_files(ws)
    denied = set(r.report["denials"]) if r.report else set()
    assert denied & {"chmod", "fchmodat", "fchmodat2"}, r.report
    assert denied & {"open", "openat"}, r.report


def test_the_review_case_cp_id_and_chmod_6755_leaves_no_set_id_program(flue):
    ws = _ws(flue)
    r = flue.run(["sh", "-c", "cp /usr/bin/id /work/x; chmod 6755 /work/x; echo rc=$?"],
                 "--workspace", str(ws))
    assert r.returncode == 0 and "rc=1" in r.stdout, r
    mode = (ws / "x").stat().st_mode
    assert not mode & 0o6000, oct(mode)


def test_tools_that_set_ordinary_modes_still_work(flue):
    ws = _ws(flue)
    script = textwrap.dedent("""
        set -e
        cd /work
        printf '#!/bin/sh\\necho hi\\n' > tool.sh
        install -m 755 tool.sh bin-tool
        install -d -m 750 made
        cp -p bin-tool copied
        mkdir -p keep && chmod 1777 keep
        umask 002 && mkdir -m 2775 shared 2>/dev/null || echo "no-setgid-dir"
        ./copied
        stat -c '%a %n' bin-tool copied made keep
    """)
    r = flue.run(["sh", "-c", script], "--workspace", str(ws))
    assert r.returncode == 0, r
    out = r.stdout.split("\n")
    assert "hi" in out, r
    assert "755 bin-tool" in out and "755 copied" in out and "750 made" in out, r
    assert "1777 keep" in out, r
    assert not _setid_files(ws)


def test_openat2_can_be_allowed_by_the_profile(flue):
    prof = flue.write_profile('extends = "default"\n[seccomp]\nallow_openat2 = true\n')
    code = textwrap.dedent("""
        import ctypes, errno, json, sys
        libc = ctypes.CDLL(None, use_errno=True)
        nr = json.loads(sys.argv[1])["openat2"]
        how = (ctypes.c_uint64 * 3)(0o1 | 0o100, 0o644, 0)
        fd = libc.syscall(ctypes.c_long(nr), ctypes.c_long(-100), b"/tmp/o2", ctypes.byref(how),
                          ctypes.c_long(24))
        print("ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
    """)
    r = flue.run(["python3", "-c", code, json.dumps(ob.syscall_numbers())], profile=prof)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r
