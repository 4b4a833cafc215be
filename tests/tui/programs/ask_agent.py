"""Ask mode's test program: calls the default profile refuses, one after another, each
result printed (the TUI answers each question differently). kcmp is refused by default;
AF_ALG is not in its socket families."""

import ctypes
import json
import os
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
KCMP = 312 if os.uname().machine == "x86_64" else 272


def kcmp() -> int:
    r = libc.syscall(KCMP, os.getpid(), os.getpid(), 0, 0, 0)
    return ctypes.get_errno() if r < 0 else 0


def alg() -> int:
    try:
        socket.socket(38, socket.SOCK_SEQPACKET, 0).close()  # AF_ALG
        return 0
    except OSError as e:
        return e.errno or -1


mode = sys.argv[1] if len(sys.argv) > 1 else "ask"
if mode == "needs-kcmp":  # relax: fails without kcmp
    got = kcmp()
    alg()  # refused too, but not why it fails
    print(f"kcmp errno {got}", flush=True)
    sys.exit(3 if got else 0)
out = {"once": kcmp(), "deny": kcmp(), "alg": alg(), "alg_again": alg(), "unanswered": kcmp()}
print("ASK " + json.dumps(out), flush=True)
