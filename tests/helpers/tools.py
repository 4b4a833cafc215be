"""Inputs for the real-tools matrix, made by the tests themselves, offline, once per session:
a wheel (zipped by hand: a wheel is a zip with a dist-info), an npm tarball (``npm pack`` of
a package written here), a C program with its Makefile, a Python script with threads,
multiprocessing and sqlite3, and a node script. Everything lands in one world-readable
directory that the sandboxes see read-only at ``MOUNT``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import textwrap
import zipfile
from pathlib import Path

MOUNT = "/opt/flue-tools"  # where the tools' inputs appear inside the sandbox
WHEEL = "flue_demo-1.0-py3-none-any.whl"
TARBALL = "flue-demo-1.0.0.tgz"

PY_SCRIPT = textwrap.dedent('''
    import multiprocessing, sqlite3, threading

    def square(x):
        return x * x

    if __name__ == "__main__":
        out = []
        threads = [threading.Thread(target=out.append, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with multiprocessing.Pool(2) as pool:
            squares = pool.map(square, range(10))
        db = sqlite3.connect("/work/t.db")
        db.execute("create table t (x integer)")
        db.executemany("insert into t values (?)", [(s,) for s in squares])
        db.commit()
        (total,) = db.execute("select sum(x) from t").fetchone()
        db.close()
        print(f"python ok threads={len(out)} sum={total}")
''')

NODE_SCRIPT = textwrap.dedent('''
    const fs = require("fs"), crypto = require("crypto"), os = require("os");
    const { execFileSync } = require("child_process");
    fs.writeFileSync("/work/n.txt", "hello node\\n");
    const h = crypto.createHash("sha256").update(fs.readFileSync("/work/n.txt")).digest("hex");
    const echoed = execFileSync("sh", ["-c", "echo child"]).toString().trim();
    setTimeout(() => {
      Promise.resolve(os.cpus().length).then((n) =>
        console.log(`node ok ${h.slice(0, 8)} ${echoed} cpus=${n > 0}`));
    }, 10);
''')

C_SOURCE = textwrap.dedent('''
    #include <stdio.h>
    #include "greet.h"
    int main(void) { printf("%s %d\\n", greet(), 6 * 7); return 0; }
''')
C_GREET = 'const char *greet(void) { return "c ok"; }\n'
C_HEADER = "const char *greet(void);\n"
MAKEFILE = textwrap.dedent('''
    # make's default CC is cc: on Debian /usr/bin/cc -> /etc/alternatives/cc -> gcc
    hello: main.o greet.o
    \t$(CC) -o $@ main.o greet.o

    %.o: %.c greet.h
    \t$(CC) -O1 -c -o $@ $<

    clean:
    \trm -f hello *.o
''')

NPM_INDEX = 'exports.hello = () => "npm ok";\n'
NPM_PACKAGE = ('{"name": "flue-demo", "version": "1.0.0", "main": "index.js", '
               '"description": "a local package for flue tests", "license": "MIT"}\n')


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(dest: Path) -> Path:
    """A pure-Python wheel, zipped by hand."""
    files = {
        "flue_demo/__init__.py": b'def hello():\n    return "pip ok"\n',
        "flue_demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: flue-demo\n"
                                            b"Version: 1.0\nSummary: flue test wheel\n",
        "flue_demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: flue-tests\n"
                                         b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        "flue_demo-1.0.dist-info/top_level.txt": b"flue_demo\n",
    }
    record = [_record_line(n, d) for n, d in files.items()]
    record.append("flue_demo-1.0.dist-info/RECORD,,")
    files["flue_demo-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = dest / WHEEL
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def build_tarball(dest: Path, work: Path) -> Path | None:
    """``npm pack`` of a small package (no dependencies), or None without npm."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    pkg = work / "npm-src"
    pkg.mkdir()
    (pkg / "package.json").write_text(NPM_PACKAGE)
    (pkg / "index.js").write_text(NPM_INDEX)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
           "npm_config_cache": str(work / "npm-cache"), "npm_config_offline": "true",
           "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    subprocess.run([npm, "pack", "--silent", "--pack-destination", str(dest)], cwd=pkg,
                   env=env, check=True, capture_output=True, timeout=120)
    out = dest / TARBALL
    return out if out.exists() else None


def build_all(root: Path) -> Path:
    """Every input in ``root`` (made world-readable); returns it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "py").mkdir()
    (root / "py" / "mp.py").write_text(PY_SCRIPT)
    (root / "node").mkdir()
    (root / "node" / "script.js").write_text(NODE_SCRIPT)
    c = root / "c"
    c.mkdir()
    (c / "main.c").write_text(C_SOURCE)
    (c / "greet.c").write_text(C_GREET)
    (c / "greet.h").write_text(C_HEADER)
    (c / "Makefile").write_text(MAKEFILE)
    (root / "wheel").mkdir()
    build_wheel(root / "wheel")
    (root / "npm").mkdir()
    work = root.parent / "npm-work"
    work.mkdir(exist_ok=True)
    build_tarball(root / "npm", work)
    shutil.rmtree(work, ignore_errors=True)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return root
