"""Shared fixtures of the TUI tests: isolated XDG dirs, recordings, apps fed by replay."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RECORDINGS = HERE / "recordings"
DEMO = RECORDINGS / "demo.jsonl"
DEMO_PTRACE = RECORDINGS / "demo-ptrace.jsonl"
AGENT_PROFILE = HERE / "fixtures" / "agent.toml"
FIXED_TS = 1000.0


@pytest.fixture(autouse=True)
def isolated_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every TUI test gets its own config and state dirs (no user profiles, no history)."""
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        d = tmp_path / var.lower()
        d.mkdir()
        monkeypatch.setenv(var, str(d))
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    return tmp_path


@pytest.fixture
def agent_profile(tmp_path: Path) -> Path:
    """A user profile with comments, in a private directory (safe to save over)."""
    d = tmp_path / "profiles"
    d.mkdir()
    dst = d / "agent.toml"
    shutil.copy(AGENT_PROFILE, dst)
    return dst


def real_sandboxes_available() -> tuple[bool, str]:
    if os.geteuid() != 0 and not Path("/proc/sys/kernel/unprivileged_userns_clone").exists():
        return True, ""
    return True, ""


# --------------------------------------------------------------------------- the network tests


class WebServer:
    """The "internet" of the network tests: an HTTP server on this machine's 127.0.0.1 that
    answers every GET with ``hello from HOST``. Sandboxes reach it by name through the
    resolver map (``--resolve NAME=127.0.0.1``): the system resolver is never asked."""

    def __init__(self, port: int = 0) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
                body = f"hello from {host}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web_server():  # type: ignore[no-untyped-def]
    s = WebServer()
    try:
        yield s
    finally:
        s.close()
