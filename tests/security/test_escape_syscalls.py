"""The seccomp filter against escape attempts: the x32 ABI, namespace creation through
unshare and clone flags, ptrace, and the privileges the main process is left with."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers.report import check_report
from helpers.terminal import open_pty

pytestmark = pytest.mark.sandbox

X32_BIT = 0x40000000
GETPID, WRITE, CLONE = 39, 1, 56  # x86_64 numbers

SYSCALL = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    args = [ctypes.c_long(int(a, 0)) for a in sys.argv[1:]]
    print("calling", flush=True)
    rc = libc.syscall(*args)
    print("returned", rc, ctypes.get_errno(), flush=True)
""")


@pytest.fixture
def x86_64():
    if platform.machine() != "x86_64":
        pytest.skip("the x32 ABI exists only on x86_64")  # not a kernel feature: an arch


@pytest.mark.parametrize("nr", [GETPID, WRITE], ids=["getpid", "write"])
def test_x32_syscall_kills_the_process(flue, x86_64, nr):
    r = flue.run(["python3", "-c", SYSCALL, hex(X32_BIT | nr), "1", "0", "0"])
    assert "calling" in r.stdout, r
    assert "returned" not in r.stdout, r
    assert r.returncode == 128 + signal.SIGSYS, r
    check_report(r, seccomp_killed=True, signal=signal.SIGSYS)
    assert len(r.flue_lines) == 1 and "seccomp" in r.flue_lines[0], r


def test_native_syscall_of_the_same_number_works(flue, x86_64):
    # the control: without the x32 bit the same call returns
    r = flue.run(["python3", "-c", SYSCALL, hex(GETPID)])
    assert r.returncode == 0, r
    assert "returned 2 0" in r.stdout, r  # the main process is PID 2 of its namespace


I386 = textwrap.dedent("""
    import ctypes, mmap
    code = bytes([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20 (getpid); int 0x80; ret
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    m.write(code)
    f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    print("calling", flush=True)
    print("returned", f(), flush=True)
""")


def test_i386_abi_through_int80_kills_the_process(flue, x86_64):
    # the control: on the host the 32-bit entry point answers (the kernel has IA32 emulation)
    host = subprocess.run([sys.executable, "-c", I386], capture_output=True, text=True,
                          timeout=30, check=False)
    emulation = "returned" in host.stdout
    r = flue.run(["python3", "-c", I386])
    assert "calling" in r.stdout and "returned" not in r.stdout, r
    if emulation:
        assert r.returncode == 128 + signal.SIGSYS, r
        assert r.report["seccomp_killed"] is True, r.report
    else:  # no IA32 emulation: the kernel itself refuses (SIGSEGV)
        assert r.returncode in (128 + signal.SIGSYS, 128 + signal.SIGSEGV), r


NS = textwrap.dedent("""
    import ctypes, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    out = {}
    for name, flag in (("user", 0x10000000), ("mount", 0x00020000), ("net", 0x40000000),
                       ("pid", 0x20000000)):
        ctypes.set_errno(0)
        rc = libc.unshare(flag)
        out["unshare_" + name] = [rc, ctypes.get_errno()]
        ctypes.set_errno(0)
        # clone(flags | SIGCHLD) with the namespace flag: the filter checks clone's flags
        rc = libc.syscall(ctypes.c_long(56), ctypes.c_long(flag | 17), 0, 0, 0, 0)
        if rc == 0:
            os._exit(0)
        out["clone_" + name] = [rc, ctypes.get_errno()]
    ctypes.set_errno(0)
    out["ptrace"] = [libc.ptrace(0, 0, 0, 0), ctypes.get_errno()]  # PTRACE_TRACEME
    ctypes.set_errno(0)
    out["setns"] = [libc.setns(0, 0), ctypes.get_errno()]
    ctypes.set_errno(0)
    out["mount"] = [libc.mount(b"none", b"/tmp", b"tmpfs", 0, None), ctypes.get_errno()]
    print(json.dumps(out))
""")


def test_namespaces_ptrace_and_mount_are_refused(flue):
    r = flue.run(["python3", "-c", NS])
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    for name, (rc, eno) in got.items():
        assert rc == -1 and eno == 1, (name, rc, eno)  # EPERM, the profile's default errno
    denials = r.report["denials"]
    for call in ("unshare", "clone", "ptrace", "setns", "mount"):
        assert call in denials, (call, denials)


def test_shell_tools_cannot_create_namespaces(flue):
    r = flue.run(["sh", "-c", "unshare -U true; echo u=$?; unshare -n true; echo n=$?"])
    assert r.returncode == 0, r
    assert "u=0" not in r.stdout and "n=0" not in r.stdout, r


STATUS = textwrap.dedent("""
    import json, os
    st = dict(line.split(":", 1) for line in open("/proc/self/status"))
    st = {k: v.strip() for k, v in st.items()}
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
        tty = os.fstat(fd).st_rdev  # the controlling terminal's device
    except OSError as e:
        tty = -e.errno
    print(json.dumps({
        "caps": {k: st[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "nnp": st["NoNewPrivs"], "seccomp": st["Seccomp"],
        "sid": os.getsid(0), "pid": os.getpid(), "pgid": os.getpgid(0), "tty": tty,
        "isatty": os.isatty(0),
    }))
""")


def test_every_capability_dropped_no_new_privs_new_session(flue):
    r = flue.run(["python3", "-c", STATUS])
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert set(got["caps"].values()) == {"0000000000000000"}, got["caps"]
    assert got["nnp"] == "1" and got["seccomp"] == "2", got
    # the main process leads a session of its own, without a controlling terminal
    assert got["sid"] == got["pid"] == got["pgid"], got
    assert got["tty"] == -6, got  # ENXIO: no controlling terminal


def test_the_callers_terminal_is_never_the_sandboxs_controlling_terminal(flue):
    pty = open_pty()
    try:
        caller_tty = os.fstat(pty.slave).st_rdev
        r = flue.run(["python3", "-c", STATUS], stdin=pty.slave)
    finally:
        pty.close()
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert got["sid"] == got["pid"] == got["pgid"], got
    assert got["isatty"] is True
    # none at all, or a terminal of the sandbox's own -- never the caller's
    assert got["tty"] == -6 or got["tty"] != caller_tty, (got, caller_tty)


def test_setuid_binaries_give_nothing(flue):
    # su/mount are setuid root on most hosts; nosuid and no_new_privs make them harmless
    r = flue.run(["sh", "-c", ("id -u; su -c id root </dev/null; echo su=$?; "
                  "python3 -c \"import os; print(os.geteuid())\"")])
    assert r.returncode == 0, r
    lines = r.stdout.split()
    assert lines[0] == "1000" and lines[-1] == "1000", r
    assert "su=0" not in r.stdout, r


KNOBS = textwrap.dedent("""
    import json
    opts = {}
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        opts[f[4]] = f[5].split(",")
    res = {}
    for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches"):
        try:
            with open(p, "w") as fh:
                fh.write("x")
            res[p] = "written"
        except OSError as e:
            res[p] = e.errno
    print(json.dumps({"opts": {k: v for k, v in opts.items() if k.startswith("/proc")},
                      "writes": res}))
""")


def test_kernel_knobs_in_proc_are_read_only(flue):
    r = flue.run(["python3", "-c", KNOBS])
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert "ro" in got["opts"]["/proc/sys"], got["opts"]
    assert "ro" not in got["opts"]["/proc"], got["opts"]  # /proc/self/... stays usable
    for p, res in got["writes"].items():
        assert res != "written", (p, got)
