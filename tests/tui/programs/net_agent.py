"""A program that reaches for the network the way an agent does, for flue-tui's network tests.

    python3 net_agent.py PORT NAME...

For every NAME: resolve it (the sandbox's DNS stub answers only allowlisted names), GET
``http://NAME:PORT/`` through the proxy the environment names (urllib), and, when the name
resolved, GET it once more over a plain socket to the address the stub gave (as a program
that ignores the proxy variables would). Prints one line per attempt and carries on when
refused. Only names the test maps to its own server on 127.0.0.1 are used.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request


def main() -> int:
    port = int(sys.argv[1])
    for name in sys.argv[2:]:
        addr = ""
        try:
            infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)
            addr = infos[0][4][0]
            print(f"dns  {name}: {addr}", flush=True)
        except OSError as err:
            print(f"dns  {name}: refused ({err.strerror or err})", flush=True)
        try:
            with urllib.request.urlopen(f"http://{name}:{port}/", timeout=10) as r:
                body = r.read().decode(errors="replace").strip()
            print(f"http {name}: {r.status} {body}", flush=True)
        except urllib.error.HTTPError as err:
            reason = err.read().decode(errors="replace").strip()
            print(f"http {name}: refused {err.code} {reason}", flush=True)
        except OSError as err:
            print(f"http {name}: failed {err}", flush=True)
        if addr:
            try:
                with socket.create_connection((addr, port), timeout=10) as s:
                    s.sendall(f"GET / HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                status = data.split(b"\r\n", 1)[0].decode(errors="replace")
                print(f"tcp  {name}: {status}", flush=True)
            except OSError as err:
                print(f"tcp  {name}: failed {err}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
