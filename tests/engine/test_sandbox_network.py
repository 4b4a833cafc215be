"""Network modes in real sandboxes, as root and as an unprivileged uid.

The "internet" is HTTP and HTTPS servers on this machine's 127.0.0.1 (tests/helpers/internet.py);
flue reaches them by name through its resolver map (``--resolve NAME=127.0.0.1``), so no
traffic leaves the machine and the system resolver is never asked about a test name.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.internet import README, WHEEL, Internet, Listener

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def inet(session: Any) -> Iterator[Internet]:
    base = Path(session.scratch) / "internet"
    base.mkdir(mode=0o755)
    i = Internet(base)
    try:
        yield i
    finally:
        i.close()


def py(code: str) -> list[str]:
    return ["python3", "-c", textwrap.dedent(code)]


def allow(inet: Internet, *rules: str) -> list[str]:
    """flue run arguments: allowlist mode with ``rules`` ({http}/{https} stand for the
    servers' ports), every test name resolved to 127.0.0.1, the certificate at /certs."""
    args: list[str] = []
    for r in rules:
        args += ["--allow-domain", r.format(http=inet.http_port, https=inet.https_port)]
    args += inet.resolve_args()
    args += ["--bind", f"{inet.cert.parent}:/certs"]
    return args


def events_of(path: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["kind"] == kind]


def requests(run: Any) -> dict[str, Any]:
    return run.report["network"]["hosts"]


# --------------------------------------------------------------------------- tools that reach


def test_curl_https_and_http_through_the_proxy(flue, inet):
    r = flue.run(["sh", "-c",
                  (f"curl -sS --cacert /certs/cert.pem https://api.example.test:{inet.https_port}/hello"
                  f" && curl -sS http://web.example.test:{inet.http_port}/hello")],
                 *allow(inet, "api.example.test:{https}", "web.example.test:{http}"))
    assert r.returncode == 0, r
    assert f"hello from api.example.test:{inet.https_port}" in r.stdout, r
    assert f"hello from web.example.test:{inet.http_port}" in r.stdout, r
    hosts = requests(r)
    api = hosts[f"api.example.test:{inet.https_port}"]
    assert api["allowed"] and api["via"] == ["proxy"] and api["bytes_down"] > 0, hosts
    assert hosts[f"web.example.test:{inet.http_port}"]["via"] == ["http"], hosts
    assert r.report["network"]["requests"]["refused"] == 0, r.report["network"]


def test_python_urllib_https(flue, inet):
    r = flue.run(py(f"""
        import ssl, urllib.request
        ctx = ssl.create_default_context(cafile="/certs/cert.pem")
        print(urllib.request.urlopen("https://api.example.test:{inet.https_port}/hello",
                                     context=ctx, timeout=20).read().decode())
        print(urllib.request.urlopen("http://web.example.test:{inet.http_port}/hello",
                                     timeout=20).read().decode())
    """), *allow(inet, "api.example.test:{https}", "web.example.test:{http}"))
    assert r.returncode == 0, r
    assert "hello from api.example.test" in r.stdout and "hello from web.example.test" in r.stdout


def test_pip_download_from_a_local_index(flue, inet):
    r = flue.run(["python3", "-m", "pip", "download", "--no-deps", "--no-cache-dir",
                  "--disable-pip-version-check", "--cert", "/certs/cert.pem", "--index-url",
                  f"https://pypi.example.test:{inet.https_port}/simple/", "-d", "/tmp/dl",
                  "tinypkg"], *allow(inet, "pypi.example.test:{https}"), timeout=120)
    assert r.returncode == 0, r
    assert f"Saved /tmp/dl/{WHEEL}" in r.stdout or WHEEL in r.stdout, r
    assert requests(r)[f"pypi.example.test:{inet.https_port}"]["allowed"], r.report["network"]


def test_git_clone_over_http(flue, inet):
    r = flue.run(["sh", "-c", (f"git clone -q http://git.example.test:{inet.http_port}/git/repo.git "
                  "/tmp/repo && cat /tmp/repo/README")],
                 *allow(inet, "git.example.test:{http}"), timeout=120)
    assert r.returncode == 0, r
    assert r.stdout == README, r
    entry = requests(r)[f"git.example.test:{inet.http_port}"]
    assert entry["allowed"] and entry["requests"] >= 2, entry  # info/refs, then objects


def test_node_fetch_reaches_an_allowlisted_name(flue, inet):
    # node 20's fetch ignores the proxy variables: it resolves through the DNS stub and its
    # connection to the stand-in address is captured
    script = (f"fetch('https://api.example.test:{inet.https_port}/hello')"
              ".then(r => r.text()).then(t => process.stdout.write(t))"
              ".catch(e => { console.error(e.cause || e); process.exit(3); })")
    r = flue.run(["node", "-e", script], *allow(inet, "api.example.test:{https}"),
                 "--env", "NODE_EXTRA_CA_CERTS=/certs/cert.pem")
    assert r.returncode == 0, r
    assert r.stdout == f"hello from api.example.test:{inet.https_port}\n", r
    entry = requests(r)[f"api.example.test:{inet.https_port}"]
    assert entry["allowed"], entry


def test_wildcard_rule(flue, inet):
    r = flue.run(["curl", "-sS", "--cacert", "/certs/cert.pem",
                  f"https://sub.wild.example.test:{inet.https_port}/hello"],
                 *allow(inet, "*.wild.example.test:{https}"))
    assert r.returncode == 0, r
    assert requests(r)[f"sub.wild.example.test:{inet.https_port}"]["rule"] == \
        f"*.wild.example.test:{inet.https_port}"


# --------------------------------------------------------------------------- what is refused


def test_a_name_not_allowlisted_is_refused_with_a_message_and_an_event(flue, inet):
    ev = flue.tmpdir("events") / "events.jsonl"
    r = flue.run(["sh", "-c",
                  (f"curl -sS --cacert /certs/cert.pem https://evil.example.test:{inet.https_port}/hello;"
                  f" echo curl=$?; curl -sS http://evil.example.test:{inet.http_port}/hello")],
                 *allow(inet, "api.example.test:{https}"), "--events", str(ev))
    assert "curl=56" in r.stdout, r  # CONNECT refused
    assert "403" in r.stderr, r
    # the plain-HTTP refusal's body says why, in words
    assert (f"flue: evil.example.test:{inet.http_port} is not in the network allowlist"
            in r.stdout), r
    assert any("refused evil.example.test" in ln for ln in r.flue_lines), r
    refused = [e for e in events_of(ev, "network_request") if e["state"] == "refused"]
    assert {(e["host"], e["port"], e["rule"], e["via"]) for e in refused} == {
        ("evil.example.test", inet.https_port, "no-match", "proxy"),
        ("evil.example.test", inet.http_port, "no-match", "http")}, refused
    assert "evil.example.test" not in " ".join(inet.hosts_seen())


def test_a_port_not_allowlisted_is_refused(flue, inet):
    r = flue.run(["curl", "-sS", f"http://web.example.test:{inet.http_port}/hello"],
                 *allow(inet, "web.example.test"))  # ports 443 and 80 only
    assert (f"flue: web.example.test is allowlisted for port 80, 443, not {inet.http_port}"
            in r.stdout), r
    entry = requests(r)[f"web.example.test:{inet.http_port}"]
    assert entry["rule"] == "port" and not entry["allowed"], entry


def test_direct_ip_connections_fail_at_once_and_are_events(flue, inet):
    ev = flue.tmpdir("events") / "events.jsonl"
    r = flue.run(py(f"""
        import socket, time
        for addr in [("192.0.2.1", 443), ("127.0.0.1", {inet.https_port})]:
            t = time.monotonic()
            try:
                socket.create_connection(addr, timeout=20)
                print(addr, "connected")
            except OSError as e:
                print(addr, e.errno, round(time.monotonic() - t, 3))
    """), *allow(inet, "api.example.test:{https}"), "--events", str(ev))
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    # 192.0.2.1 (TEST-NET-1): no route, ENETUNREACH; 127.0.0.1 on a captured port: refused
    assert lines[0].startswith("('192.0.2.1', 443) 101 "), r
    assert lines[1].startswith(f"('127.0.0.1', {inet.https_port}) 111 "), r
    assert all(float(ln.rsplit(" ", 1)[1]) < 1.0 for ln in lines), r
    refused = [(e["host"], e["port"], e["rule"], e["via"]) for e in events_of(ev, "network_request")
               if e["state"] == "refused"]
    assert ("192.0.2.1", 443, "ip-address", "direct") in refused, refused
    assert ("127.0.0.1", inet.https_port, "ip-address", "direct") in refused, refused
    # and through the proxy an address is refused as well
    r2 = flue.run(["curl", "-sS", "--noproxy", "", "http://192.0.2.1/"], *allow(inet, "api.example.test"))
    assert "is an IP address" in r2.stdout, r2


def test_dns_for_names_not_allowlisted_fails_fast(flue, inet):
    ev = flue.tmpdir("events") / "events.jsonl"
    r = flue.run(py("""
        import socket, time
        for name in ("evil.example.test", "api.example.test"):
            t = time.monotonic()
            try:
                addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, 443)})
                print(name, addrs, round(time.monotonic() - t, 3))
            except socket.gaierror as e:
                print(name, "gaierror", e.errno, round(time.monotonic() - t, 3))
    """), *allow(inet, "api.example.test"), "--events", str(ev))
    assert r.returncode == 0, r
    evil, api = r.stdout.splitlines()
    assert evil.startswith(f"evil.example.test gaierror {-2} "), r  # EAI_NONAME: NXDOMAIN
    assert float(evil.rsplit(" ", 1)[1]) < 1.0, r
    assert api.startswith("api.example.test ['127.100."), r
    q = events_of(ev, "dns_query")
    assert {(e["name"], e["qtype"], e["rcode"]) for e in q} >= {
        ("evil.example.test", "A", "NXDOMAIN"), ("api.example.test", "A", "NOERROR")}, q


def test_a_program_ignoring_proxy_variables_reaches_only_allowlisted_names(flue, inet):
    r = flue.run(py(f"""
        import os, socket
        for k in list(os.environ):
            if "proxy" in k.lower():
                del os.environ[k]
        s = socket.create_connection(("web.example.test", {inet.http_port}), timeout=20)
        s.sendall(b"GET /hello HTTP/1.0\\r\\nHost: web.example.test\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        print(data.decode().splitlines()[-1])
        for name, port in (("evil.example.test", {inet.http_port}), ("web.example.test", 9)):
            try:
                socket.create_connection((name, port), timeout=20)
                print(name, port, "connected")
            except OSError as e:
                print(name, port, type(e).__name__, e.errno)
    """), *allow(inet, "web.example.test:{http}"))
    assert r.returncode == 0, r
    out = r.stdout.splitlines()
    assert out[0] == "hello from web.example.test", r
    assert out[1] == f"evil.example.test {inet.http_port} gaierror -2", r
    assert out[2] == "web.example.test 9 ConnectionRefusedError 111", r
    hosts = requests(r)
    assert hosts[f"web.example.test:{inet.http_port}"]["via"] == ["capture"], hosts
    assert hosts["web.example.test:9"]["rule"] == "port", hosts


# --------------------------------------------------------------------------- isolation


@pytest.mark.parametrize("mode", ["none", "loopback", "allowlist"])
def test_the_host_loopback_is_out_of_reach_in_every_mode(flue, inet, mode):
    host_service = Listener()
    try:
        args = ["--net", mode] if mode != "allowlist" else allow(inet, "api.example.test")
        r = flue.run(["sh", "-c", textwrap.dedent(f"""
            python3 -c '
            import socket
            for host in ("127.0.0.1", "localhost"):
                try:
                    socket.create_connection((host, {host_service.port}), timeout=5)
                    print(host, "connected")
                except OSError as e:
                    print(host, "refused", e.errno)
            '
            curl -sS -m 5 --noproxy "" http://127.0.0.1:{host_service.port}/ || echo curl-failed
            curl -sS -m 5 --noproxy "" http://localhost:{host_service.port}/ || echo curl-failed
        """)], *args)
        assert r.returncode == 0, r
        assert "connected" not in r.stdout, r
        assert host_service.connections == 0, r
    finally:
        host_service.close()


def test_none_mode_has_loopback_down(flue):
    r = flue.run(py("""
        import fcntl, socket, struct
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), 0x8913,
                              struct.pack("16sH14x", b"lo", 0)))[1]
        print("up" if flags & 1 else "down")
        try:
            socket.create_connection(("127.0.0.1", 80), timeout=5)
        except OSError as e:
            print(e.errno)
    """), "--net", "none")
    assert r.returncode == 0, r
    assert r.stdout.split() == ["down", "101"], r  # ENETUNREACH, at once
    assert r.report["network"] == {"mode": "none"}


def test_the_proxy_sockets_are_not_inherited_by_the_command(flue, inet):
    r = flue.run(["sh", "-c", "ls -l /proc/self/fd/ | grep -c socket || true"],
                 *allow(inet, "api.example.test"))
    assert r.returncode == 0, r
    assert r.stdout.strip() == "0", r


def test_profile_network_keys(flue, inet):
    prof = flue.write_profile(f"""
        extends = "default"
        [network]
        mode = "allowlist"
        allow = ["web.example.test:{inet.http_port}"]
        hosts = {{ "web.example.test" = "127.0.0.1" }}
    """)
    r = flue.run(["curl", "-sS", f"http://web.example.test:{inet.http_port}/hello"], profile=prof)
    assert r.returncode == 0, r
    assert r.stdout == f"hello from web.example.test:{inet.http_port}\n", r
    assert r.report["isolation"]["network"].startswith("allowlist"), r.report["isolation"]


def test_a_bad_rule_is_reported_with_file_line_and_key(flue):
    prof = flue.write_profile("""
        extends = "default"
        [network]
        mode = "allowlist"
        allow = [
            "pypi.org",
            "10.0.0.1",
        ]
    """)
    r = flue.run(["true"], profile=prof, report=False)
    assert r.returncode == 125, r
    assert f"{prof}:6: '10.0.0.1' is an IP address" in r.stderr, r
    assert "(key 'network.allow')" in r.stderr and "fix:" in r.stderr, r


def test_environment_points_tools_at_the_proxy(flue, inet):
    r = flue.run(["sh", "-c", "env | grep -i proxy | sort; cat /etc/resolv.conf"],
                 *allow(inet, "api.example.test"), "--env", "NO_PROXY=internal.test")
    assert r.returncode == 0, r
    env = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        assert env[k] == "http://127.0.0.1:3128", env
    assert env["NO_PROXY"] == "internal.test", env  # what the caller set wins
    assert env["no_proxy"] == "localhost,127.0.0.1,::1", env
    assert "nameserver 127.0.0.1" in r.stdout, r



def test_the_resolver_hook_as_a_sandbox_option(flue, inet):
    # the Python API: Sandbox(hosts=...) (here through run_sync), no --resolve anywhere
    h = flue.start_python(f"""
        from engine.profile import load_profile
        from engine.sandbox import run_sync
        p = load_profile("default", overrides={{"network": {{
            "mode": "allowlist", "allow": ["web.example.test:{inet.http_port}"]}}}})
        r = run_sync(["curl", "-sS", "http://web.example.test:{inet.http_port}/hello"], p,
                     hosts={{"web.example.test": "127.0.0.1"}}, live=False)
        print("exit", r.exit_code, sorted(r.network["hosts"]))
    """)
    run = h.finish()
    assert run.returncode == 0, run
    assert f"hello from web.example.test:{inet.http_port}" in run.stdout, run
    assert f"exit 0 ['web.example.test:{inet.http_port}']" in run.stdout, run


def test_allowlist_without_observation(flue, inet):
    # --no-observe: no seccomp listener, so no connect() reports; the proxy and the DNS stub
    # work the same, and a direct address still fails at once
    r = flue.run(["sh", "-c", (f"curl -sS http://web.example.test:{inet.http_port}/hello; "
                  "python3 -c 'import socket\ntry: socket.create_connection((\"192.0.2.1\", 80))\n"
                  "except OSError as e: print(e.errno)'")],
                 *allow(inet, "web.example.test:{http}"), "--no-observe")
    assert r.returncode == 0, r
    assert r.stdout.splitlines() == [f"hello from web.example.test:{inet.http_port}", "101"], r
    assert "192.0.2.1:80" not in requests(r), "no report of direct connects without observation"
