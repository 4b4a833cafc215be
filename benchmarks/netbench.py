"""The ``network`` section of ``make bench``: the allowlist proxy against a direct connection.

A local HTTP server on 127.0.0.1 (here, in this process) serves N bytes per request. The same
client program measures, on one machine:

- **direct**: on the host, connecting to 127.0.0.1:PORT itself;
- **proxy**: inside ``flue run --allow-domain bench.flue.test:PORT`` through the proxy
  (a forwarded ``GET http://bench.flue.test:PORT/...``, the way curl, pip and git go);
- **capture**: inside the same sandbox, connecting to the name itself (the DNS stub's
  stand-in address, captured by the supervisor: node's fetch, raw sockets).

For each: the throughput of one 100 MB download, and the connection set-up latency (a new
connection, a one-byte request, its first byte back; median and p95 of many), reported as
ratios to direct. The name resolves through flue's resolver map (``--resolve``): nothing
leaves this machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from typing import Any

NAME = "bench.flue.test"
CLIENT = textwrap.dedent(r'''
    import json, socket, sys, time
    mode, host, port, size, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])

    def fetch(nbytes):
        t0 = time.perf_counter()
        if mode == "proxy":
            s = socket.create_connection(("127.0.0.1", 3128))
            target = f"http://{host}:{port}/big/{nbytes}"
        else:
            s = socket.create_connection((host, port))
            target = f"/big/{nbytes}"
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        got = s.recv_into(view)
        first = time.perf_counter() - t0
        total = got
        while True:
            k = s.recv_into(view)
            if not k:
                break
            total += k
        s.close()
        return first, time.perf_counter() - t0, total

    out = {"mode": mode, "throughput": [], "setup": []}
    for _ in range(rounds):
        _, dt, total = fetch(size)
        if total < size:
            sys.exit(f"short read: {total} of {size}")
        out["throughput"].append(size / dt)
    for _ in range(n):
        out["setup"].append(fetch(1)[0])
    print(json.dumps(out))
''')


class Server:
    """GET /big/N answers N zero bytes, as fast as this machine sends them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.zeros = memoryview(bytes(4 << 20))
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        try:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = c.recv(4096)
                if not chunk:
                    return
                head += chunk
            n = int(head.split(b" ", 2)[1].rsplit(b"/", 1)[1])
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n)
            left = n
            while left > 0:
                k = min(left, len(self.zeros))
                c.sendall(self.zeros[:k])
                left -= k
        except (OSError, ValueError, IndexError):
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.sock.close()


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {}

    def q(p: float) -> float:
        k = (len(v) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (k - lo)

    return {"median": q(0.5), "p95": q(0.95), "min": v[0], "max": v[-1], "n": len(v)}


def run(quick: bool, flue: list[str], env: dict[str, str],
        say: Callable[[str], None] = print) -> dict[str, Any]:
    size = (20 if quick else 100) << 20
    setups = 30 if quick else 300
    rounds = 1 if quick else 5
    server = Server()
    try:
        say(f"network: {size >> 20} MB download x{rounds} and {setups} new connections, "
            "direct and through the allowlist proxy")
        args = ["python3", "-c", CLIENT]
        direct = subprocess.run([sys.executable, "-c", CLIENT, "direct", "127.0.0.1",
                                 str(server.port), str(size), str(setups), str(rounds)],
                                capture_output=True, text=True, timeout=600, check=False)
        if direct.returncode != 0:
            raise RuntimeError(f"the direct client failed: {direct.stderr.strip()}")
        results = {"direct": json.loads(direct.stdout)}
        for mode in ("proxy", "capture"):
            cmd = [*flue, "run", "--allow-domain", f"{NAME}:{server.port}", "--resolve",
                   f"{NAME}=127.0.0.1", "--", *args, mode, NAME, str(server.port), str(size),
                   str(setups), str(rounds)]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                                 check=False)
            if res.returncode != 0:
                raise RuntimeError(f"flue run ({mode}) failed ({res.returncode}): "
                                   f"{res.stderr.strip()[-2000:]}")
            results[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        server.close()
    out: dict[str, Any] = {"download_bytes": size, "rounds": rounds, "connections": setups,
                           "modes": {}}
    base_tp = _stats(results["direct"]["throughput"])["median"]
    base_setup = _stats(results["direct"]["setup"])
    for mode, r in results.items():
        tp = _stats(r["throughput"])
        st = _stats(r["setup"])
        out["modes"][mode] = {
            "throughput_mb_s": round(tp["median"] / 1e6, 1),
            "throughput_ratio": round(tp["median"] / base_tp, 3),
            "setup_ms_median": round(st["median"] * 1e3, 3),
            "setup_ms_p95": round(st["p95"] * 1e3, 3),
            "setup_ratio": round(st["median"] / base_setup["median"], 2),
        }
    return out


def show(r: dict[str, Any], say: Callable[[str], None] = print) -> None:
    say(f"\n== network: {r['download_bytes'] >> 20} MB download (median of {r['rounds']}), "
        f"{r['connections']} new connections ==")
    say(f"{'':10} {'MB/s':>9} {'vs direct':>10} {'set-up ms p50':>14} {'p95':>8} {'vs direct':>10}")
    for mode, m in r["modes"].items():
        say(f"{mode:10} {m['throughput_mb_s']:>9.1f} {m['throughput_ratio']:>9.2f}x "
            f"{m['setup_ms_median']:>14.3f} {m['setup_ms_p95']:>8.3f} {m['setup_ratio']:>9.2f}x")
    say("(throughput ratio: flue / direct, higher is better; set-up ratio: flue / direct, "
        "lower is better)")
