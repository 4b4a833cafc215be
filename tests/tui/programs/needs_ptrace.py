"""A program that needs a syscall the default profile refuses, for the learn and explain tests.

    python3 needs_ptrace.py

A debugger's first step: a child asks to be traced (``ptrace(PTRACE_TRACEME)``, in ``@debug``,
which the default profile denies). Prints what it got and exits with the errno the child got
(0 when allowed), so a refusal fails the run.
"""

from __future__ import annotations

import ctypes
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
pid = os.fork()
if pid == 0:
    rc = libc.ptrace(0, 0, None, None)  # PTRACE_TRACEME
    os._exit(0 if rc == 0 else (ctypes.get_errno() or 1))
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
print("ptrace(PTRACE_TRACEME):", "allowed" if code == 0 else f"refused ({os.strerror(code)})")
sys.exit(code)
