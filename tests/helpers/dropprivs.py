"""Run a command as another uid, optionally inside given cgroups.

    python3 dropprivs.py UID GID [--procs FILE]... -- CMD [ARG...]

Run as root. Writes its own pid into each ``--procs`` file (the cgroups delegated to UID),
drops every supplementary group, then the gid and the uid, and execs CMD in place, so the
caller's pid, stdio and inherited fds are CMD's. Standalone: imports nothing of the tests.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    uid, gid = int(argv[0]), int(argv[1])
    rest = argv[2:]
    procs: list[str] = []
    while rest and rest[0] == "--procs":
        procs.append(rest[1])
        rest = rest[2:]
    if not rest or rest[0] != "--" or len(rest) < 2:
        sys.exit("usage: dropprivs.py UID GID [--procs FILE]... -- CMD [ARG...]")
    cmd = rest[1:]
    for f in procs:
        with open(f, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
        sys.exit("dropprivs: privileges were not dropped")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
