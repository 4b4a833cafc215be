"""Runs inside a sandbox: make one call each of mount, ptrace, socket(AF_INET), unshare and
keyctl straight through syscall(2), and print what each returned as one JSON line:
{"mount": errno, ...} (0 when a call succeeded).

    python3 -c SOURCE '{"mount": 165, "ptrace": 101, ...}'

The syscall numbers come from the caller (they differ between architectures). Standalone:
imports nothing of flue or of the tests.
"""

import ctypes
import json
import sys

NR = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

MS_NOSUID, MS_NODEV = 0x2, 0x4
PTRACE_ATTACH = 16
AF_INET, SOCK_STREAM = 2, 1
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING = 0, -3
L = ctypes.c_long

CALLS = {
    "mount": (ctypes.c_char_p(b"flue-src"), ctypes.c_char_p(b"/mnt/flue-target"),
              ctypes.c_char_p(b"tmpfs"), L(MS_NOSUID | MS_NODEV), ctypes.c_void_p(None)),
    "ptrace": (L(PTRACE_ATTACH), L(1), L(0), L(0)),
    "socket": (L(AF_INET), L(SOCK_STREAM), L(0)),
    "unshare": (L(CLONE_NEWNS | CLONE_NEWUSER),),
    "keyctl": (L(KEYCTL_GET_KEYRING_ID), L(KEY_SPEC_SESSION_KEYRING), L(0)),
}

seen = {}
for name, args in CALLS.items():
    ctypes.set_errno(0)
    ret = libc.syscall(L(NR[name]), *args)
    seen[name] = ctypes.get_errno() if ret == -1 else 0
print(json.dumps(seen), flush=True)
