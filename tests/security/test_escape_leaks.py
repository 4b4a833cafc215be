"""What the caller has must not leak in: open fds, secrets in the environment, host files
outside the binds, servers on the host's loopback, abstract unix sockets."""

from __future__ import annotations

import json
import os
import socket
import textwrap

import pytest

pytestmark = pytest.mark.sandbox

FDS = textwrap.dedent("""
    import json, os
    fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
    try:
        os.fstat(3)
        fd3 = "open"
    except OSError as e:
        fd3 = e.errno
    try:
        os.listdir("/proc/self/fd/3")
        via_proc = "listed"
    except OSError as e:
        via_proc = e.errno
    print(json.dumps({"fds": fds, "fd3": fd3, "via_proc": via_proc}))
""")


def test_callers_fd_is_not_usable_inside(flue):
    secret_dir = flue.tmpdir("fd3", mode=0o700)
    (secret_dir / "secret").write_text("s3cr3t\n")
    # a shell that opens the host directory on fd 3, checks it, then execs flue run
    opener = ["sh", "-c", 'exec 3<"$0" && ls /proc/self/fd/3/secret >/dev/null && exec "$@"',
              str(secret_dir)]
    r = flue.run(["python3", "-c", FDS], wrap=opener)
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert got["fd3"] == 9, got  # EBADF
    assert got["via_proc"] == 2, got  # ENOENT
    # 0-2, and the descriptor listdir itself held open
    assert got["fds"][:3] == [0, 1, 2] and len(got["fds"]) <= 4, got


def test_fd_precondition_flue_itself_had_fd3(flue):
    # the control for the test above: the wrapper really hands flue an fd 3 on the directory
    d = flue.tmpdir("fd3", mode=0o700)
    opener = ["sh", "-c", 'exec 3<"$0" && exec "$@"', str(d)]
    h = flue.start(["sh", "-c", "echo ready; sleep 30"], wrap=opener)
    try:
        h.read_until("ready")
        assert os.readlink(f"/proc/{h.pid}/fd/3") == str(d)
    finally:
        h.kill_all()
        h.proc.wait(timeout=10)


SCAN = textwrap.dedent("""
    import json, os, sys
    needle = sys.argv[1][::-1].encode()  # given reversed: our own argv must not match
    found, unreadable = [], []
    for k, v in os.environ.items():
        if needle in (k + "=" + v).encode():
            found.append("environ:" + k)
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        for what in ("environ", "cmdline"):
            try:
                data = open(f"/proc/{p}/{what}", "rb").read()
            except OSError as e:
                unreadable.append(f"{p}/{what}:{e.errno}")
                continue
            if needle in data:
                found.append(f"/proc/{p}/{what}")
    print(json.dumps({"found": found, "unreadable": unreadable,
                      "keys": sorted(os.environ)}))
""")


def test_api_key_in_callers_environment_is_not_visible(flue, marker):
    key = f"sk-test-{marker}"
    r = flue.run(["python3", "-c", SCAN, key[::-1]], env={"OPENAI_API_KEY": key})
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert got["found"] == [], got
    assert "OPENAI_API_KEY" not in got["keys"]
    # PID 1 is a fork of flue and still holds flue's environment: it must be unreadable
    assert any(u.startswith("1/environ:") for u in got["unreadable"]), got


def test_api_key_given_on_purpose_is_visible(flue, marker):
    # the control: the scan finds the key when the caller passes it with --env
    key = f"sk-test-{marker}"
    r = flue.run(["python3", "-c", SCAN, key[::-1]], "--env", f"OPENAI_API_KEY={key}")
    assert r.returncode == 0, r
    assert "environ:OPENAI_API_KEY" in json.loads(r.stdout)["found"], r


ENV_ALLOWED = {"HOME", "USER", "LOGNAME", "SHELL", "PATH", "PWD", "TERM", "COLORTERM",
               "NO_COLOR", "LANG", "LANGUAGE", "TZ"}


def test_environment_comes_only_from_the_allowlist(flue):
    host_env = {"LANG": "C.UTF-8", "LC_PAPER": "en_GB.UTF-8", "TERM": "xterm-256color",
                "SECRET_TOKEN": "nope", "AWS_SECRET_ACCESS_KEY": "nope", "SSH_AUTH_SOCK":
                "/tmp/agent.sock", "LD_PRELOAD": "/tmp/evil.so", "PYTHONSTARTUP": "/tmp/x.py"}
    r = flue.run(["env"], "--env", "EXTRA=given", env=host_env)
    assert r.returncode == 0, r
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    extra = {k for k in env if k not in ENV_ALLOWED and not k.startswith("LC_")}
    assert extra == {"EXTRA"}, env
    assert env["EXTRA"] == "given"
    assert env["LANG"] == "C.UTF-8" and env["LC_PAPER"] == "en_GB.UTF-8"
    assert env["TERM"] == "xterm-256color"
    assert env["HOME"] == "/home/agent" and env["USER"] == "agent"
    assert "nope" not in r.stdout and "/tmp/evil.so" not in r.stdout


HOST_FILE = textwrap.dedent("""
    import json, os, sys
    path = sys.argv[1]
    out = {}
    for p in (path, "/proc/1/root" + path, "/proc/self/root" + path, "/proc/1/cwd" + path):
        try:
            out[p] = open(p).read()
        except OSError as e:
            out[p] = e.errno
    out["parent_listing"] = os.path.exists(os.path.dirname(path))
    print(json.dumps(out))
""")


def test_host_file_outside_the_binds_cannot_be_read(flue):
    private = flue.tmpdir("private", mode=0o700)
    secret = private / "secret.txt"
    secret.write_text("TOP-SECRET\n")
    os.chown(secret, flue.uid, flue.gid)
    assert secret.read_text() == "TOP-SECRET\n"
    r = flue.run(["python3", "-c", HOST_FILE, str(secret)])
    assert r.returncode == 0, r
    assert "TOP-SECRET" not in r.stdout, r
    got = json.loads(r.stdout)
    for p, res in got.items():
        if p != "parent_listing":
            assert isinstance(res, int), (p, res)
    assert got["parent_listing"] is False


def test_host_file_is_readable_through_a_bind(flue):
    # the control: the same file, bound, is read (so the test above can fail)
    private = flue.tmpdir("private", mode=0o755)
    (private / "secret.txt").write_text("TOP-SECRET\n")
    r = flue.run(["cat", "/mnt/p/secret.txt"], "--bind", f"{private}:/mnt/p:ro")
    assert r.returncode == 0, r
    assert r.stdout == "TOP-SECRET\n"


CONNECT = textwrap.dedent("""
    import json, socket, sys
    port = int(sys.argv[1])
    out = {}
    for host in ("127.0.0.1", "localhost"):
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect((host, port))
            out[host] = "connected"
        except OSError as e:
            out[host] = e.errno or str(e)
        finally:
            s.close()
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        u.connect(b"\\0" + sys.argv[2].encode())
        out["abstract"] = "connected"
    except OSError as e:
        out["abstract"] = e.errno
    print(json.dumps(out))
""")


@pytest.mark.parametrize("net", ["none", "loopback"])
def test_host_loopback_server_is_unreachable(flue, net, marker):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(b"\0" + marker.encode())
    abstract.listen(8)
    abstract.setblocking(False)
    try:
        # the control: the servers accept connections from the host
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            pass
        server.accept()[0].close()
        r = flue.run(["python3", "-c", CONNECT, str(port), marker], "--net", net)
        assert r.returncode == 0, r
        got = json.loads(r.stdout)
        assert got["127.0.0.1"] != "connected" and got["localhost"] != "connected", got
        assert got["abstract"] != "connected", got
        for s in (server, abstract):
            with pytest.raises(BlockingIOError):
                s.accept()
        assert r.report["isolation"]["network"].split()[0] == net
    finally:
        server.close()
        abstract.close()


def test_loopback_mode_has_a_working_private_loopback(flue):
    # the control for the test above: in loopback mode a server inside is reachable inside
    code = textwrap.dedent("""
        import socket
        s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
        c = socket.create_connection(s.getsockname(), timeout=3)
        a, _ = s.accept(); c.sendall(b"ping"); print(a.recv(4).decode())
    """)
    r = flue.run(["python3", "-c", code], "--net", "loopback")
    assert r.returncode == 0, r
    assert r.stdout.strip() == "ping"


PID1 = textwrap.dedent("""
    import json, os
    out = {}
    for what in ("fd", "environ", "mem", "maps", "root", "cwd", "exe", "fdinfo"):
        p = "/proc/1/" + what
        try:
            if what in ("root", "cwd", "exe"):
                out[what] = os.readlink(p)
            elif os.path.isdir(p) and what in ("fd", "fdinfo"):
                out[what] = os.listdir(p)
            else:
                with open(p, "rb") as f:
                    out[what] = len(f.read(64))
        except OSError as e:
            out[what] = e.errno
    print(json.dumps(out))
""")


def test_pid1_is_opaque_to_the_sandbox(flue):
    # PID 1 is a fork of flue: it holds the control socket, flue's memory and environment
    r = flue.run(["python3", "-c", PID1])
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    for what, res in got.items():
        assert res == 13, (what, res)  # EACCES


def test_pid1_command_line_shows_no_host_paths(flue, marker):
    ws = flue.tmpdir(f"ws-{marker}", owner=4242)
    code = "print(open('/proc/1/cmdline', 'rb').read().rstrip(b'\\0').decode())"
    r = flue.run(["python3", "-c", code], "--workspace", str(ws), "--env", f"MARK={marker}")
    assert r.returncode == 0, r
    assert r.stdout.strip() == "flue-init", r
    assert marker not in r.stdout
