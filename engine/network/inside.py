"""The sockets PID 1 creates inside the sandbox's network namespace (``allowlist`` mode).

They are made right after ``lo`` is up, sent to the supervisor over the control socket
(SCM_RIGHTS) and closed here before the main process is forked, so no relay of ours runs in
the sandbox and the command inherits none of them. Binding port 53 and the allowlist's
ports below 1024 works because PID 1 holds CAP_NET_BIND_SERVICE in the user namespace that
owns this network namespace. Raises OSError only.
"""

from __future__ import annotations

import socket

from engine.network.policy import DNS_HOST, DNS_PORT, PROXY_HOST, PROXY_PORT


def _listener(host: str, port: int, backlog: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
    except OSError as err:
        s.close()
        raise OSError(err.errno, f"cannot listen on {host}:{port} in the sandbox: "
                      f"{err.strerror}") from err
    return s


def make_sockets(capture_ports: tuple[int, ...]) -> tuple[list[str], list[int]]:
    """(names, fds): the proxy, the DNS stub (UDP and TCP) and one wildcard listener per
    captured port. The caller sends the fds and closes them."""
    socks: list[tuple[str, socket.socket]] = []
    try:
        socks.append(("proxy", _listener(PROXY_HOST, PROXY_PORT, 512)))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(("dns-udp", udp))
        udp.bind((DNS_HOST, DNS_PORT))
        socks.append(("dns-tcp", _listener(DNS_HOST, DNS_PORT, 64)))
        for port in capture_ports:
            socks.append((f"capture:{port}", _listener("0.0.0.0", port, 512)))
    except BaseException:
        for _, s in socks:
            s.close()
        raise
    return [n for n, _ in socks], [s.detach() for _, s in socks]
