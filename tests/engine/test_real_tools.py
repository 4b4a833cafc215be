"""The real tools agents use, offline, from inputs the tests make (helpers/tools.py), as root
and unprivileged. For each tool:

- the profile flue ships for it runs it;
- ``flue learn`` on that profile writes a profile that runs it too (under enforcement: the
  learned profile, no observation beyond the usual);
- with a syscall it needs refused, the run fails and ``flue explain`` names that syscall as
  the most likely cause (and for make, with an /etc entry it needs removed, that entry).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import tools as th

pytestmark = pytest.mark.sandbox

M = th.MOUNT


@dataclass(frozen=True)
class Tool:
    profile: str
    script: str
    marker: str
    breaks: tuple[str, ...]  # syscalls the tool cannot do without (any of them may be named)
    needs: tuple[str, ...] = ()  # host programs


TOOLS: dict[str, Tool] = {
    "shell": Tool(
        "default",
        "cd /work && seq 1 200 > n.txt && sort -rn n.txt | head -n 5 | tr '\\n' ' ' "
        "| cut -c1-20 > top.txt && wc -w < top.txt && sha256sum n.txt | cut -c1-8 "
        "&& grep -c 1 n.txt | xargs printf 'ones=%s\\n' && echo shell ok",
        "shell ok", ("pipe", "pipe2")),
    "python": Tool("python", f"python3 {M}/py/mp.py", "python ok threads=8 sum=285",
                   ("pipe2", "pipe")),
    "pip": Tool(
        "python",
        "python3 -m venv --without-pip --system-site-packages /work/venv && /work/venv/bin/python"
        f" -m pip install -q --no-index --no-deps --no-cache-dir {M}/wheel/{th.WHEEL} && "
        "/work/venv/bin/python -c 'import flue_demo; print(flue_demo.hello())'",
        "pip ok", ("rename", "renameat", "renameat2")),
    "node": Tool("node", f"node {M}/node/script.js", "node ok", ("epoll_create1", "epoll_create"),
                 ("node",)),
    "npm": Tool(
        "node",
        "mkdir /work/app && cd /work/app && echo '{\"name\":\"app\",\"version\":\"1.0.0\"}' > "
        f"package.json && npm install --offline --no-audit --no-fund --loglevel=error "
        f"{M}/npm/{th.TARBALL} && node -e 'console.log(require(\"flue-demo\").hello())'",
        "npm ok", ("epoll_create1", "epoll_create"), ("node", "npm")),
    "git": Tool(
        "default",
        "cd /work && git init -q -b main a && cd a && git config user.email t@e && "
        "git config user.name t && echo one > f && git add f && git commit -qm one && "
        "echo two >> f && git commit -qam two && git log --oneline | wc -l && cd .. && "
        "git clone -q a b && cd b && echo three >> f && "
        "git -c user.email=t@e -c user.name=t commit -qam three && "
        "git push -q origin HEAD:side && git -C ../a log --oneline side | wc -l && echo git ok",
        "git ok", ("rename", "renameat", "renameat2"), ("git",)),
    "make": Tool("default", f"cp -r {M}/c /work/c && make -s -C /work/c && /work/c/hello",
                 "c ok 42", ("wait4", "waitid"), ("make", "gcc")),
    "tar": Tool(
        "default",
        "cd /work && mkdir -p src/d && seq 1 500 > src/d/n && echo hi > src/h && "
        "tar czf t.tgz src && gzip -t t.tgz && mkdir out && tar xzf t.tgz -C out && "
        "diff -r src out/src && gzip -k src/h && gunzip -c src/h.gz && echo tar ok",
        "tar ok", ("utimensat",)),
    "strace": Tool(
        "debug",
        "strace -f -qq -o /work/t.txt sh -c 'echo hi | cat' && grep -c execve /work/t.txt && "
        "! strace -p 1 2>/work/attach.txt && grep -q 'Operation not permitted' /work/attach.txt"
        " && echo strace ok",
        "strace ok", ("ptrace",), ("strace",)),
}


@pytest.fixture(scope="session")
def tools_dir(session) -> Path:  # type: ignore[no-untyped-def]
    return th.build_all(session.base / "tools")


def _need(tool: Tool, tools_dir: Path, name: str) -> None:
    for prog in tool.needs:
        if shutil.which(prog) is None:
            pytest.skip(f"{prog} is not installed")
    if name == "npm" and not (tools_dir / "npm" / th.TARBALL).exists():
        pytest.skip("npm pack made no tarball")


def _run(flue, tools_dir: Path, tool: Tool, *args: str, profile: str | Path | None = None,
         sub: str = "run"):
    return flue.run(["sh", "-c", tool.script], "--bind", f"{tools_dir}:{M}", *args,
                    profile=profile or tool.profile, sub=sub, timeout=120)


@pytest.mark.parametrize("name", list(TOOLS))
def test_the_shipped_profile_runs_it(flue, tools_dir, name):
    tool = TOOLS[name]
    _need(tool, tools_dir, name)
    r = _run(flue, tools_dir, tool)
    assert r.returncode == 0, r
    assert tool.marker in r.stdout, r


@pytest.mark.parametrize("name", list(TOOLS))
def test_a_learned_profile_runs_it(flue, tools_dir, name):
    tool = TOOLS[name]
    _need(tool, tools_dir, name)
    out = flue.tmpdir("learned") / f"{name}.toml"
    r = _run(flue, tools_dir, tool, "-o", str(out), "-p", tool.profile, sub="learn",
             profile=None)
    assert r.returncode == 0, r
    assert tool.marker in r.stdout, r
    text = out.read_text()
    assert f'extends = "{tool.profile}"' in text
    enforced = _run(flue, tools_dir, tool, profile=out)
    assert enforced.returncode == 0, f"{enforced}\n--- the learned profile\n{text}"
    assert tool.marker in enforced.stdout, enforced


# half the tools as root, the other half unprivileged: both modes are covered, and the suite
# stays fast (the shipped and learned profiles run every tool in both modes)
_EXPLAIN_CASES = [("root" if i % 2 == 0 else "user", name) for i, name in enumerate(TOOLS)]


@pytest.mark.parametrize(("flue", "name"), _EXPLAIN_CASES, indirect=["flue"])
def test_explain_names_a_syscall_removed_from_the_profile(flue, tools_dir, name):
    tool = TOOLS[name]
    _need(tool, tools_dir, name)
    d = flue.tmpdir("broken")
    deny = ", ".join(f'"{s}"' for s in tool.breaks)
    base = tool.profile
    prof = flue.write_profile(f'extends = "{base}"  # the shipped one\n[seccomp]\n'
                              f"deny = [{deny}]  # what this test takes away\n", "broken.toml", d)
    r = _run(flue, tools_dir, tool, profile=prof)
    assert r.returncode != 0, f"the tool ran without {tool.breaks}: {r}"
    report = d / "report.json"
    report.write_text(json.dumps(r.report))
    ex = flue.cli("explain", str(report), "--json")
    assert ex.returncode == 0, ex.stderr
    causes = json.loads(ex.stdout)
    assert causes, ex.stdout
    top = causes[0]
    named = [c["title"].split()[0] for c in causes if c["kind"] == "syscall"]
    assert top["kind"] == "syscall" and named[0] in tool.breaks, json.dumps(causes, indent=1)
    assert top["changes"][0]["op"] == "allow_syscall"


def test_explain_names_an_etc_entry_removed_from_the_profile(flue, tools_dir):
    tool = TOOLS["make"]
    _need(tool, tools_dir, "make")
    cc = Path("/usr/bin/cc")
    if not (cc.is_symlink() and os.readlink(cc).startswith("/etc/alternatives/")):
        pytest.skip("cc is not an /etc/alternatives link here")
    d = flue.tmpdir("broken")
    prof = flue.write_profile('extends = "default"  # the shipped one\n[filesystem]\n'
                              'etc = ["!alternatives"]  # what this test takes away\n',
                              "noalt.toml", d)
    r = _run(flue, tools_dir, tool, "--observe-paths", profile=prof)
    assert r.returncode != 0, r
    report = d / "report.json"
    report.write_text(json.dumps(r.report))
    causes = json.loads(flue.cli("explain", str(report), "--json").stdout)
    top = causes[0]
    assert top["kind"] == "path" and top["title"].startswith("/etc/alternatives"), causes
    assert top["changes"][0] == {"op": "add_etc", "arg": "alternatives", "value": "",
                                 "title": "show /etc/alternatives"}
    fixed = flue.cli("profiles", "relax", str(prof), "--from", str(report), "--write")
    assert fixed.returncode == 0, fixed.stderr
    again = _run(flue, tools_dir, tool, profile=prof)
    assert again.returncode == 0 and tool.marker in again.stdout, again


@pytest.fixture
def host_data():  # type: ignore[no-untyped-def]
    """A world-readable host directory outside everything the sandbox mounts of its own."""
    for parent in ("/srv", "/opt", "/mnt"):
        if os.path.isdir(parent) and os.access(parent, os.W_OK):
            d = Path(parent) / f"flue-test-{uuid.uuid4().hex[:8]}"
            d.mkdir(mode=0o755)
            (d / "input.txt").write_text("3\n1\n2\n")
            os.chmod(d / "input.txt", 0o644)
            try:
                yield d
            finally:
                shutil.rmtree(d, ignore_errors=True)
            return
    pytest.skip("no writable /srv, /opt or /mnt for a host directory")


def test_explain_names_a_bind_removed_from_the_profile(flue, host_data):
    d = flue.tmpdir("broken")
    script = f"sort -n {host_data}/input.txt > /work/s && head -n 1 /work/s && echo sorted"
    good = flue.write_profile(f'extends = "default"  # base\n[filesystem]\n'
                              f'binds = ["{host_data}"]  # the data\n', "good.toml", d)
    ok = flue.run(["sh", "-c", script], profile=good)
    assert ok.returncode == 0 and "sorted" in ok.stdout, ok
    bad = flue.write_profile('extends = "default"  # base, without the bind\n', "bad.toml", d)
    r = flue.run(["sh", "-c", script], "--observe-paths", profile=bad)
    assert r.returncode != 0, r
    report = d / "report.json"
    report.write_text(json.dumps(r.report))
    causes = json.loads(flue.cli("explain", str(report), "--json").stdout)
    top = causes[0]
    assert top["kind"] == "path" and top["title"].startswith(str(host_data.parent)), causes
    assert top["changes"][0]["op"] == "add_bind"
    assert top["changes"][0]["arg"] == f"{host_data}/input.txt"
    assert top["changes"][0]["value"] == "ro", "read-only first"
    assert flue.cli("profiles", "relax", str(bad), "--from", str(report),
                    "--write").returncode == 0
    again = flue.run(["sh", "-c", script], profile=bad)
    assert again.returncode == 0 and "sorted" in again.stdout, again


def test_strace_cannot_attach_to_anything_outside(flue):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    outside = os.getpid()  # this test process: a host pid, outside the sandbox
    script = (f"strace -p {outside} -e trace=none 2>&1; echo rc=$?; "
              "strace -p 1 -e trace=none 2>&1; echo rc=$?")
    r = flue.run(["sh", "-c", script], profile="debug")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    # the host's pids do not exist in the sandbox's PID namespace; its PID 1 is not dumpable
    assert any("No such process" in ln for ln in lines), r.stdout
    assert any("Operation not permitted" in ln for ln in lines), r.stdout
    assert lines.count("rc=1") == 2, r.stdout
