"""flue's on-disk caches are trusted only when nobody else could have written them, and hold
plain data: the resolved-profile cache is JSON checked field by field (never a pickle), a
compiled filter is used only with a digest of itself and of the inputs it was compiled from.
Unit tests of the rules first, then real sandboxes started after the caches were tampered
with (as root and as the unprivileged uid)."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from engine import cachedir
from engine.profile import load_profile
from engine.profile.model import profile_from_data, to_data

OTHER_UID = 4343  # someone else


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "cache" / "flue"


# --------------------------------------------------------------------------- the rules


def test_store_creates_private_directories_and_files(cache: Path) -> None:
    assert cachedir.store("bpf", "x.bin", b"data")
    for d in (cache, cache / "bpf"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    f = cache / "bpf" / "x.bin"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert cachedir.load("bpf", "x.bin") == b"data"
    assert not [p for p in (cache / "bpf").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("how", ["group-writable", "world-writable", "someone-elses",
                                 "symlink", "fifo"])
def test_a_file_anyone_else_could_have_written_is_not_trusted(cache: Path, how: str) -> None:
    assert cachedir.store("bpf", "x.bin", b"ours")
    f = cache / "bpf" / "x.bin"
    if how == "group-writable":
        os.chmod(f, 0o620)
    elif how == "world-writable":
        os.chmod(f, 0o602)
    elif how == "someone-elses":
        if os.geteuid() != 0:
            pytest.skip("chown needs root")
        os.chown(f, OTHER_UID, OTHER_UID)
    elif how == "symlink":
        real = cache / "real.bin"
        real.write_bytes(b"elsewhere")
        f.unlink()
        f.symlink_to(real)
    else:
        f.unlink()
        os.mkfifo(f, 0o600)
    assert cachedir.load("bpf", "x.bin") is None


@pytest.mark.parametrize("level", ["flue", "kind"])
@pytest.mark.parametrize("how", ["group-writable", "someone-elses", "symlink"])
def test_a_directory_anyone_else_could_write_is_not_trusted(cache: Path, level: str,
                                                            how: str) -> None:
    assert cachedir.store("bpf", "x.bin", b"ours")
    d = cache if level == "flue" else cache / "bpf"
    if how == "group-writable":
        os.chmod(d, 0o770)
    elif how == "someone-elses":
        if os.geteuid() != 0:
            pytest.skip("chown needs root")
        os.chown(d, OTHER_UID, OTHER_UID)
    else:
        moved = d.with_name(d.name + "-real")
        d.rename(moved)
        d.symlink_to(moved)
    assert cachedir.load("bpf", "x.bin") is None
    assert not cachedir.store("bpf", "y.bin", b"new"), "an untrusted cache is not written"


# --------------------------------------------------------------------------- the profile cache


@pytest.mark.parametrize("name", ["default", "strict", "permissive", "python", "node"])
def test_every_builtin_profile_round_trips_through_plain_data(name: str) -> None:
    try:
        p = load_profile(name)
    except Exception:  # noqa: BLE001 - a built-in this checkout does not have
        pytest.skip(f"no built-in profile {name}")
    assert profile_from_data(json.loads(json.dumps(to_data(p)))) == p


@pytest.mark.parametrize("change", ["extra-field", "missing-field", "wrong-type", "bool-as-int"])
def test_malformed_profile_data_is_refused(change: str) -> None:
    d = to_data(load_profile("default"))
    if change == "extra-field":
        d["limits"]["evil"] = 1
    elif change == "missing-field":
        del d["seccomp"]["allow"]
    elif change == "wrong-type":
        d["seccomp"]["allow_namespaces"] = "yes"
    else:
        d["limits"]["pids"] = True
    with pytest.raises((TypeError, ValueError)):
        profile_from_data(d)


def test_the_profile_cache_is_json_and_is_used(cache: Path) -> None:
    from engine.profile_cache import load_profile_cached

    first = load_profile_cached("default")
    files = list((cache / "profiles").iterdir())
    assert [f.suffix for f in files] == [".json"], files
    doc = json.loads(files[0].read_bytes())
    doc["profile"]["description"] = "from the cache"
    files[0].write_text(json.dumps(doc))
    assert load_profile_cached("default").description == "from the cache"
    assert first.description != "from the cache"


@pytest.mark.parametrize("how", ["pickle", "garbage", "wrong-shape", "group-writable"])
def test_a_tampered_profile_cache_is_read_from_the_profile_again(cache: Path, how: str) -> None:
    import pickle

    from engine.profile_cache import load_profile_cached

    want = load_profile_cached("default")
    (f,) = (cache / "profiles").iterdir()
    marker = cache.parent / "ran"

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    doc = json.loads(f.read_bytes())
    if how == "pickle":
        f.write_bytes(pickle.dumps(Boom()))
    elif how == "garbage":
        f.write_bytes(b"\x80\x04not json at all")
    elif how == "wrong-shape":
        doc["profile"]["seccomp"]["allow"] = "everything"
        f.write_text(json.dumps(doc))
    else:
        doc["profile"]["seccomp"]["allow_namespaces"] = True
        f.write_text(json.dumps(doc))
        os.chmod(f, 0o664)
    got = load_profile_cached("default")
    assert got == want
    assert not marker.exists()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600  # rewritten, ours again


# --------------------------------------------------------------------------- real sandboxes

UNSHARE = ["unshare", "-U", "-r", "true"]


def _cache_files(flue, kind: str) -> list[Path]:
    d = flue.home / ".cache" / "flue" / kind
    return sorted(p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


@pytest.mark.sandbox
def test_a_profile_cache_written_by_someone_else_is_not_used(flue, tmp_path: Path) -> None:
    """Someone else's (or a group-writable) cache entry saying `allow_namespaces = true`
    changes nothing: the next sandbox still may not create a user namespace."""
    first = flue.run(["true"])
    assert first.returncode == 0, first
    files = _cache_files(flue, "profiles")
    assert files, "no profile was cached"
    for f in files:
        try:
            doc = json.loads(f.read_bytes())
        except ValueError:
            continue  # left by another test (a pickle): a miss anyway
        doc["profile"]["seccomp"]["allow_namespaces"] = True
        doc["profile"]["seccomp"]["allow"] = sorted({*doc["profile"]["seccomp"]["allow"],
                                                     "unshare", "mount"})
        f.write_text(json.dumps(doc))
        if flue.mode == "user":
            os.chown(f, 0, 0)  # root's file: not the user's to trust
        else:
            os.chmod(f, 0o666)  # anyone's
    r = flue.run(UNSHARE)
    assert r.returncode != 0, f"a tampered profile cache let the sandbox unshare\n{r}"


@pytest.mark.sandbox
def test_a_rw_bind_of_the_cache_is_refused_and_a_pickle_there_runs_nothing(flue) -> None:
    first = flue.run(["true"])
    assert first.returncode == 0, first
    cache = flue.home / ".cache"
    marker = flue.tmpdir("marker") / "ran-in-the-supervisor"
    r = flue.run(["true"], "--bind", f"{cache}:/home/agent/.cache:rw")
    assert r.returncode == 125 and "flue's own state" in r.stderr, r
    # whoever writes there anyway (here: as the owner, the worst case) gets no code run
    poison = textwrap.dedent(f"""
        import glob, os, pickle
        class P:
            def __reduce__(self):
                return (os.system, ({f"touch {marker}"!r},))
        for f in glob.glob({str(cache / "flue" / "profiles" / "*")!r}):
            open(f, "wb").write(pickle.dumps(P()))
    """)
    exec(poison, {})  # noqa: S102 - the test plays the attacker
    again = flue.run(["true"])
    assert again.returncode == 0, again
    assert not marker.exists(), "a pickle in the profile cache ran in the next flue run"


@pytest.mark.sandbox
@pytest.mark.parametrize("how", ["cut", "nested"])
def test_a_cut_or_mangled_json_cache_is_read_again_not_a_crash(flue, how: str) -> None:
    """The resolved profiles and the syscall table, cut in the middle of a value (a disk
    full, a crash while someone copied them) or nested deeper than Python recurses: the run
    reads the profile and the table again and rewrites them, with nothing said."""
    first = flue.run(["true"])
    assert first.returncode == 0, first
    files = _cache_files(flue, "profiles") + [
        p for p in _cache_files(flue, "bpf") if p.name.startswith("syscalls-")]
    assert len(files) >= 2, files
    for f in files:
        data = f.read_bytes()
        f.write_bytes(data[:len(data) // 2] if how == "cut" else b"[" * 100_000)
    r = flue.run(["sh", "-c", "echo ran"])
    assert r.returncode == 0 and r.stdout == "ran\n" and not r.flue_lines, r
    for f in files:
        assert isinstance(json.loads(f.read_bytes()), dict), f  # written whole again


# --------------------------------------------------------------------------- compiled filters

ALLOW_ALL_BPF = bytes.fromhex("0600000000007fff")  # BPF_RET|BPF_K SECCOMP_RET_ALLOW


def _compile(monkeypatch: pytest.MonkeyPatch, profile: str = "default",
             expect_build: bool = True) -> bytes:
    from engine import seccomp

    built = []
    real = seccomp._build

    def build(*args, **kw):  # type: ignore[no-untyped-def]
        built.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(seccomp, "_build", build)
    f = seccomp.compile_filter(load_profile(profile).seccomp, notify=True)
    assert bool(built) == expect_build, "compiled" if built else "taken from the cache"
    return f.bpf


def _entries(cache: Path, suffix: str) -> list[Path]:
    return sorted((cache / "bpf").glob(f"*{suffix}"))


def test_a_compiled_filter_is_cached_with_its_digest_and_used(cache: Path, monkeypatch) -> None:
    first = _compile(monkeypatch)
    (bpf,) = _entries(cache, ".bpf")
    (sha,) = _entries(cache, ".sha256")
    assert sha.stem == bpf.stem
    for f in (bpf, sha):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert _compile(monkeypatch, expect_build=False) == first


@pytest.mark.parametrize("how", ["allow-all", "no-digest", "other-policy", "group-writable"])
def test_a_tampered_compiled_filter_is_compiled_again(cache: Path, monkeypatch, how: str) -> None:
    import hashlib

    first = _compile(monkeypatch)
    (bpf,) = _entries(cache, ".bpf")
    sha = bpf.with_suffix(".sha256")
    if how == "allow-all":  # the program replaced, the digest left alone
        bpf.write_bytes(ALLOW_ALL_BPF)
    elif how == "no-digest":
        sha.unlink()
    elif how == "other-policy":
        # a genuine entry of a more permissive profile, renamed to this policy's key
        _compile(monkeypatch, "permissive")
        other = next(p for p in _entries(cache, ".bpf") if p != bpf)
        os.replace(other, bpf)
        os.replace(other.with_suffix(".sha256"), sha)
    else:  # a digest that matches, in a file anyone in the group could have written
        bpf.write_bytes(ALLOW_ALL_BPF)
        sha.write_text(hashlib.sha256(b"whatever" + ALLOW_ALL_BPF).hexdigest())
        os.chmod(bpf, 0o660)
    again = _compile(monkeypatch, expect_build=True)
    assert again == first


def test_a_program_compiled_from_other_tables_is_not_loaded(cache: Path, monkeypatch) -> None:
    """The cache outlives an upgrade: a flue whose verdict tables changed (here the learn
    core, as when pipe2 left the traced calls) must compile again, not load the old program
    whose NOTIFY rules no longer match the listener's table (it would answer them errno)."""
    from engine import seccomp
    from engine.learn import learn_profile

    policy = learn_profile(load_profile("default")).seccomp
    old = seccomp.compile_filter(policy, notify=True, learn=True)
    monkeypatch.setattr(seccomp, "LEARN_CORE", tuple(n for n in seccomp.LEARN_CORE if n != "pipe2"))
    new = seccomp.compile_filter(policy, notify=True, learn=True)
    fresh = seccomp.compile_filter(policy, notify=True, learn=True, use_cache=False)
    pipe2 = {v.name: v for v in new.table.values()}["pipe2"]
    assert pipe2.action == "trace"
    assert new.bpf == fresh.bpf != old.bpf


def test_a_tampered_syscall_table_is_not_used(cache: Path, monkeypatch) -> None:
    from engine import seccomp

    monkeypatch.setattr(seccomp, "_NATIVE", None)
    real = seccomp.native_syscalls()
    (table,) = (cache / "bpf").glob("syscalls-*.json")
    swapped = dict(real, mount=real["getpid"], getpid=real["mount"])
    table.write_text(json.dumps(swapped))
    os.chmod(table, 0o666)
    monkeypatch.setattr(seccomp, "_NATIVE", None)
    assert seccomp.native_syscalls() == real


@pytest.mark.sandbox
def test_a_filter_cache_written_by_someone_else_is_not_used(flue) -> None:
    """An allow-everything program with a digest that matches it, in the cache but written by
    someone else (root, for the unprivileged user) or group-writable: not used."""
    import hashlib

    first = flue.run(["true"])
    assert first.returncode == 0, first
    programs = [p for p in _cache_files(flue, "bpf") if p.suffix == ".bpf"]
    assert programs, "no filter was cached"
    for p in programs:
        p.write_bytes(ALLOW_ALL_BPF)
        p.with_suffix(".sha256").write_text(hashlib.sha256(b"x" + ALLOW_ALL_BPF).hexdigest())
        for f in (p, p.with_suffix(".sha256")):
            if flue.mode == "user":
                os.chown(f, 0, 0)
            else:
                os.chmod(f, 0o664)
    r = flue.run(UNSHARE)
    assert r.returncode != 0, f"a filter in the cache that is not ours was loaded\n{r}"
