"""What ordinary programs need works inside a real sandbox (as root and as an unprivileged uid):
threads, node, multiprocessing, randomness, /proc, the user database, HOME, git."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap

import pytest

pytestmark = pytest.mark.sandbox


def py(code: str) -> list[str]:
    return ["python3", "-c", textwrap.dedent(code)]


def test_python_threads_clone3_falls_back_and_rseq_registers(flue):
    r = flue.run(py("""
        import ctypes, json, threading
        out = []
        ts = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]
        for t in ts: t.start()
        for t in ts: t.join()
        libc = ctypes.CDLL(None)
        size = ctypes.c_uint.in_dll(libc, "__rseq_size").value
        print(json.dumps({"threads": sorted(out), "rseq_size": size}))
    """))
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    assert got["threads"] == list(range(8))
    # glibc sets __rseq_size to 0 when its rseq registration failed
    assert got["rseq_size"] > 0, r
    denials = r.report["denials"]
    # glibc tried clone3 first, got ENOSYS and fell back to clone
    assert denials.get("clone3", {}).get("errno_name") == "ENOSYS", denials
    assert "rseq" not in denials and "clone" not in denials, denials


def test_rseq_check_can_fail(flue):
    # the same probe reports 0 when glibc is told not to register rseq: the check above means it
    r = flue.run(py("""
        import ctypes
        print(ctypes.c_uint.in_dll(ctypes.CDLL(None), "__rseq_size").value)
    """), "--env", "GLIBC_TUNABLES=glibc.pthread.rseq=0")
    assert r.returncode == 0, r
    assert r.stdout.strip() == "0", r


def test_node_runs_with_worker_threads(flue):
    script = (
        "const { Worker } = require('worker_threads');"
        "const w = new Worker('require(\"worker_threads\").parentPort.postMessage(6*7)', "
        "{ eval: true });"
        "w.on('message', (m) => { console.log('answer', m); });"
        "w.on('error', (e) => { console.error(e); process.exit(3); });"
    )
    r = flue.run(["node", "-e", script])
    assert r.returncode == 0, r
    assert r.stdout.strip() == "answer 42", r
    assert r.report["denials"].get("clone3", {}).get("errno_name") == "ENOSYS", r.report


def test_multiprocessing_queue_and_shared_memory_on_private_dev_shm(flue, marker):
    r = flue.run(py(f"""
        import json, multiprocessing as mp, os
        from multiprocessing import shared_memory

        def child(q, name):
            shm = shared_memory.SharedMemory(name=name)
            q.put(bytes(shm.buf[:5]).decode())
            shm.buf[:5] = b"world"
            shm.close()

        if __name__ == "__main__":
            mp.set_start_method("fork")
            shm = shared_memory.SharedMemory(create=True, size=4096)
            shm.buf[:5] = b"hello"
            q = mp.Queue()
            p = mp.Process(target=child, args=(q, shm.name))
            p.start()
            seen = q.get(timeout=20)
            p.join(20)
            back = bytes(shm.buf[:5]).decode()
            shm.close(); shm.unlink()
            with mp.Pool(2) as pool:
                squares = pool.map(abs, [-1, -2, -3])
            # left behind on purpose: the host's /dev/shm must not get it
            open("/dev/shm/{marker}", "w").write("x")
            st = os.statvfs("/dev/shm")
            print(json.dumps({{"seen": seen, "back": back, "exit": p.exitcode,
                              "pool": squares}}))
    """))
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {"seen": "hello", "back": "world", "exit": 0,
                                    "pool": [1, 2, 3]}
    assert not os.path.exists(f"/dev/shm/{marker}"), "the sandbox's /dev/shm is the host's"


def test_urandom_and_getrandom(flue):
    r = flue.run(py("""
        import os
        a = open("/dev/urandom", "rb").read(32)
        b = os.getrandom(32)
        c = os.getrandom(32, os.GRND_NONBLOCK)
        assert len(a) == len(b) == len(c) == 32 and len({a, b, c}) == 3
        print("ok")
    """))
    assert r.returncode == 0, r
    assert r.stdout.strip() == "ok"
    assert "getrandom" not in r.report["denials"], r.report["denials"]


def test_proc_lists_only_the_sandbox_and_self_exe_resolves(flue):
    r = flue.run(py("""
        import json, os
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        cmd = {p: open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")[0].decode()
               for p in pids}
        print(json.dumps({"pids": pids, "self": os.getpid(), "ppid": os.getppid(),
                          "exe": os.readlink("/proc/self/exe"), "cmd": cmd}))
    """))
    assert r.returncode == 0, r
    got = json.loads(r.stdout)
    # PID 1 is flue's init; the command is its only child; nothing of the host is listed
    assert got["pids"] == [1, got["self"]], got
    assert got["ppid"] == 1
    assert os.path.basename(got["exe"]).startswith("python3"), got
    assert os.path.isabs(got["exe"])


def test_readlink_proc_self_exe_for_a_shell_tool(flue):
    r = flue.run(["readlink", "/proc/self/exe"])
    assert r.returncode == 0, r
    assert r.stdout.strip().endswith("/readlink"), r


def test_whoami_pwd_and_writable_home(flue):
    r = flue.run(["sh", "-c", ('whoami; id -un; echo "$HOME"; cd "$HOME" && echo hi > f && cat f; '
                  'python3 -c "import os, pwd; e = pwd.getpwuid(os.getuid()); '
                  'print(e.pw_name, e.pw_dir, os.path.expanduser(\'~\'))"')])
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines == ["agent", "agent", "/home/agent", "hi", "agent /home/agent /home/agent"], r


def test_git_init_commit_log_in_the_workspace(flue):
    ws = flue.tmpdir("ws", owner=4242 if flue.mode == "root" else None)
    script = (
        "set -e; git init -q; echo hello > README; git add README; "
        "git -c user.name=Agent -c user.email=agent@flue.invalid commit -q -m first; "
        "git log --format='%an %s'; git status --porcelain"
    )
    r = flue.run(["sh", "-c", script], "--workspace", str(ws))
    assert r.returncode == 0, r
    assert r.stdout.strip() == "Agent first", r
    assert (ws / ".git" / "HEAD").is_file()
    assert (ws / "README").read_text() == "hello\n"


def test_git_in_the_tmpfs_workspace(flue):
    script = (
        "set -e; git init -q repo; cd repo; echo x > f; git add f; "
        "git -c user.name=A -c user.email=a@flue.invalid commit -q -m one; git log --oneline | wc -l"
    )
    r = flue.run(["sh", "-c", script])
    assert r.returncode == 0, r
    assert r.stdout.strip() == "1"


def test_stdio_passes_through(flue):
    data = os.urandom(1 << 20).hex()  # 2 MB of text in, hashed inside, echoed back
    r = flue.run(["sh", "-c", ("tee /tmp/in | sha256sum | cut -d' ' -f1; wc -c < /tmp/in; "
                  "echo to-stderr >&2")], input=data)
    assert r.returncode == 0, r
    digest, size = r.stdout.split()
    assert digest == hashlib.sha256(data.encode()).hexdigest()
    assert int(size) == len(data)
    assert "to-stderr" in r.stderr
