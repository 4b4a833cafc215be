"""A small "internet" on this machine's loopback, for the network tests and the benchmark.

``Internet`` serves, on 127.0.0.1 and ephemeral ports, one plain-HTTP and one HTTPS server
(a self-signed certificate made here with the ``openssl`` CLI, valid for the test names)
with:

- ``/hello``: ``hello from HOST`` (the Host header the server saw);
- ``/big/N``: N bytes;
- ``/simple/`` and ``/simple/tinypkg/``: a PEP 503 index with one wheel, ``/files/...``;
- ``/git/repo.git/...``: a bare git repository for git's dumb HTTP protocol.

Test names resolve only through the resolver map the tests hand to flue (``resolve_args``):
nothing here, and nothing in the tests, asks the system resolver about them.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import socket
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NAMES = ("pypi.example.test", "git.example.test", "api.example.test", "web.example.test",
         "evil.example.test", "sub.wild.example.test")
WHEEL = "tinypkg-1.0-py3-none-any.whl"
README = "flue test repository\n"


def make_cert(d: Path, names: tuple[str, ...] = NAMES) -> Path:
    """A self-signed certificate (its own CA) for ``names``; returns the PEM path. The key
    is written beside it as key.pem."""
    cert, key = d / "cert.pem", d / "key.pem"
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj",
         "/CN=flue test internet", "-addext", f"subjectAltName={san}",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=60)
    for p in (cert, key):
        os.chmod(p, 0o644)
    return cert


def make_wheel() -> bytes:
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: flue-tests\n"
                                       b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return buf.getvalue()


def make_git_repo(d: Path) -> Path:
    """A bare repository with one commit, prepared for dumb HTTP."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test",
           "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(d)}
    d.mkdir(parents=True, exist_ok=True)
    work, bare = d / "work", d / "repo.git"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, env=env, timeout=60)
    run("git", "init", "-q", "-b", "main", str(work))
    (work / "README").write_text(README)
    run("git", "-C", str(work), "add", "README")
    run("git", "-C", str(work), "commit", "-q", "-m", "first")
    run("git", "clone", "-q", "--bare", str(work), str(bare))
    run("git", "--git-dir", str(bare), "update-server-info")
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames:
            os.chmod(os.path.join(dirpath, n), 0o755)
        for n in filenames:
            os.chmod(os.path.join(dirpath, n), 0o644)
    return bare


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "flue-test-internet"
    protocol_version = "HTTP/1.1"
    internet: Internet

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        inet = self.internet
        host = self.headers.get("Host", "")
        with inet.lock:
            inet.requests.append((host, self.path))
        path = self.path.split("?", 1)[0]
        if path == "/hello":
            self._send(200, f"hello from {host}\n".encode())
        elif path.startswith("/big/"):
            n = int(path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"\0" * (1 << 20)
            left = n
            while left > 0:
                self.wfile.write(chunk[:min(left, len(chunk))])
                left -= min(left, len(chunk))
        elif path in ("/simple", "/simple/"):
            self._send(200, b'<!DOCTYPE html><html><body><a href="/simple/tinypkg/">tinypkg</a>'
                       b"</body></html>\n", "text/html")
        elif path == "/simple/tinypkg/":
            digest = hashlib.sha256(inet.wheel).hexdigest()
            self._send(200, (f'<!DOCTYPE html><html><body><a href="/files/{WHEEL}#sha256={digest}">'
                             f"{WHEEL}</a></body></html>\n").encode(), "text/html")
        elif path == f"/files/{WHEEL}":
            self._send(200, inet.wheel, "application/octet-stream")
        elif path.startswith("/git/") and inet.git_root is not None:
            rel = os.path.normpath(path[len("/git/"):]).lstrip("/")
            f = (inet.git_root / rel).resolve()
            if not str(f).startswith(str(inet.git_root.resolve())) or not f.is_file():
                self._send(404, b"not found\n")
            else:
                self._send(200, f.read_bytes(), "application/octet-stream")
        else:
            self._send(404, b"not found\n")

    def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Internet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.wheel = make_wheel()
        self.cert = make_cert(base)
        self.git_root: Path | None = make_git_repo(base / "git").parent
        handler = type("Handler", (_Handler,), {"internet": self})
        self.http = _Server(("127.0.0.1", 0), handler)
        self.https = _Server(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, base / "key.pem")
        self.https.socket = ctx.wrap_socket(self.https.socket, server_side=True)
        self.http_port = self.http.server_address[1]
        self.https_port = self.https.server_address[1]
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True)
                         for s in (self.http, self.https)]
        for t in self._threads:
            t.start()

    def resolve_args(self) -> list[str]:
        """Every test name mapped to the servers' address: flue never asks the system
        resolver about them, whatever the allowlist says."""
        out = []
        for n in NAMES:
            out += ["--resolve", f"{n}=127.0.0.1"]
        return out

    def hosts_seen(self) -> list[str]:
        with self.lock:
            return [h for h, _ in self.requests]

    def close(self) -> None:
        for s in (self.http, self.https):
            s.shutdown()
            s.server_close()


class Listener:
    """A host loopback service the sandbox must never reach: counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            c.close()

    def close(self) -> None:
        self._stop = True
        self._t.join(2)
        self.sock.close()


@contextmanager
def internet(base: Path) -> Iterator[Internet]:
    inet = Internet(base)
    try:
        yield inet
    finally:
        inet.close()
