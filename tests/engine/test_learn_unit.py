"""Learn, explain, relax and tighten without a sandbox: observations as the learn recorder
makes them, reports and events files as flue run writes them, profiles as files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from engine import diagnose, runrecord
from engine import events as ev
from engine.learn import learn_never, learn_profile
from engine.learn.observation import Observation, merge_all
from engine.learn.writer import choose_groups, plan_profile, write_profile
from engine.profile import groups as _groups
from engine.profile import load_profile
from engine.profile.edit import ProfileDocument, load_text
from engine.profile.tune import Change, change_for_key, relax, tighten
from engine.seccomp import LEARN_CORE, compile_filter

CORE = sorted(LEARN_CORE)


def _obs(**kw: object) -> Observation:
    o = Observation(base="default", core=CORE,
                    runs=[{"command": ["tool", "x"], "exit_code": 0, "wall_seconds": 1.5}])
    for k, v in kw.items():
        setattr(o, k, v)
    return o


def _learned(obs: Observation, base: str = "default", tmp: Path | None = None) -> tuple[str, object]:
    text = write_profile(obs, base, load_profile(base))
    origin = (tmp / "learned.toml") if tmp else Path("/nonexistent/learned.toml")
    return text, load_text(text, name="learned", origin=origin)


# --------------------------------------------------------------------------- learn mode


def test_the_learn_profile_widens_syscalls_but_never_the_host_reconfiguring_ones():
    base = load_profile("default")
    p = learn_profile(base)
    assert "ptrace" in p.seccomp.allow, "what the base denies is seen, not refused"
    assert not (learn_never() & p.seccomp.allow)
    for name in ("keyctl", "mount", "init_module", "io_uring_setup", "bpf", "perf_event_open"):
        assert name not in p.seccomp.allow, name
    assert p.network.mode == "loopback", "none becomes loopback so local servers run"
    assert p.seccomp.allow_namespaces is False, "namespace flags stay filtered"
    assert p.filesystem == base.filesystem and p.limits == base.limits


def test_the_learn_filter_traces_all_but_the_core_and_keeps_filters_in_the_kernel():
    p = learn_profile(load_profile("default"))
    f = compile_filter(p.seccomp, notify=True, learn=True, use_cache=False)
    by_name = {v.name: v for v in f.table.values()}
    for name in CORE:
        if name in by_name:
            assert by_name[name].action == "allow", name
    assert by_name["openat"].action == "trace"
    assert by_name["execve"].action == "trace"
    assert by_name["keyctl"].action == "notify", "refused while learning: a recorded denial"
    # argument-filtered calls are traced for what their filter allows only
    assert by_name["ioctl"].action == "trace" and by_name["ioctl"].filtered == "terminal ioctls"
    assert by_name["clone"].filtered == "namespace flags"
    assert by_name["clone3"].action == "notify" and by_name["clone3"].errno == 38
    plain = compile_filter(p.seccomp, notify=True, use_cache=False)
    assert plain.bpf != f.bpf


# --------------------------------------------------------------------------- the writer


def test_a_group_only_when_more_than_half_of_it_was_used():
    ipc = set(_groups.syscall_groups()["@ipc"].syscalls) & _groups.native_syscalls()
    half = sorted(ipc)[: len(ipc) // 2]
    chosen, singles = choose_groups(half)
    assert "@ipc" not in {g for g, _, _ in chosen}
    assert set(half) <= set(singles)
    more = sorted(ipc)[: len(ipc) // 2 + 1]
    chosen, singles = choose_groups(more)
    assert "@ipc" in {g for g, _, _ in chosen}
    assert not set(more) & set(singles), "a chosen group's members are not listed again"
    chosen, _ = choose_groups(["getrandom"])
    assert ("@random", 1, 1) in chosen, "a one-member group used in full is the group"


def test_the_learned_profile_is_least_privilege_over_the_base(tmp_path):
    obs = _obs(syscalls={"openat": 40, "execve": 2, "ptrace": 3, "pipe2": 1, "wait4": 2,
                         "exit_group": 2, "socket": 1},
               families={"AF_UNIX SOCK_STREAM": 1})
    text, prof = _learned(obs, tmp=tmp_path)
    allow = prof.seccomp.allow  # type: ignore[attr-defined]
    assert obs.used() <= allow | {"exit"}, obs.used() - allow
    assert "ptrace" in allow, "a used syscall the base denies is lifted"
    assert "process_vm_readv" not in allow, "the rest of what the base denied stays denied"
    assert "@aio" not in "".join(prof.seccomp.allow_spec)  # type: ignore[attr-defined]
    assert "io_setup" not in allow, "unused inherited groups are taken back"
    assert prof.seccomp.socket_families == ("AF_UNIX",)  # type: ignore[attr-defined]
    assert prof.network.mode == "none"  # type: ignore[attr-defined]
    assert '"!@aio",' in text and "never used in 1 run" in text
    assert '"!ptrace",' in text
    assert prof.limits.timeout == 60  # type: ignore[attr-defined]


def test_every_line_of_a_learned_profile_says_why(tmp_path):
    host = tmp_path / "opt" / "tool"
    (host / "bin").mkdir(parents=True)
    (host / "lib").mkdir()
    (host / "bin" / "run").write_text("x")
    (host / "lib" / "x.so").write_text("x")
    missing = {str(host.parent): {"place": str(host.parent), "path": str(host / "bin" / "run"),
                                  "op": "exec", "write": False, "count": 2,
                                  "lookups": [str(host / "bin" / "run"), str(host / "lib" / "x.so")]},
               "/etc/gai.conf": {"place": "/etc/gai.conf", "path": "/etc/gai.conf",
                                 "op": "open-read", "count": 1, "lookups": ["/etc/gai.conf"]},
               "/etc/selinux": {"place": "/etc/selinux", "path": "/etc/selinux/config",
                                "op": "access", "count": 1, "lookups": ["/etc/selinux/config"]},
               "/dev/kvm": {"place": "/dev/kvm", "path": "/dev/kvm", "op": "open-write",
                            "count": 1, "lookups": ["/dev/kvm"]}}
    obs = _obs(syscalls={"openat": 4, "execve": 1, "bind": 1, "socket": 1},
               missing=missing, families={"AF_INET SOCK_STREAM": 1},
               endpoints=[{"op": "bind", "family": "AF_INET", "address": "127.0.0.1",
                           "port": 8080, "count": 1}],
               peaks={"memory": 100 << 20, "pids": 7, "cpu_percent": 80.0})
    text, prof = _learned(obs, tmp=tmp_path)
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", "[")) or s == "]":
            continue
        assert "#" in s, f"no comment on: {line!r}"
    binds = {b.src: b for b in prof.filesystem.binds}  # type: ignore[attr-defined]
    assert list(binds) == [str(host)], "one bind: the directory the lookups share"
    assert not binds[str(host)].rw
    assert "/etc/gai.conf" in prof.filesystem.etc  # type: ignore[attr-defined]
    assert "/etc/selinux" not in prof.filesystem.etc, "a probe is listed, not bound"  # type: ignore[attr-defined]
    assert "/etc/selinux: only probed" in text and "/dev/kvm" in text
    assert prof.network.mode == "loopback"  # type: ignore[attr-defined]
    assert prof.limits.memory == 256 << 20  # type: ignore[attr-defined]
    assert prof.limits.pids == 64  # type: ignore[attr-defined]


def test_a_write_makes_a_read_write_bind(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    obs = _obs(missing={str(d): {"place": str(d), "path": str(d / "out"), "op": "create",
                                 "write": True, "count": 1, "lookups": [str(d / "out")]}})
    _text, prof = _learned(obs, tmp=tmp_path)
    (b,) = prof.filesystem.binds  # type: ignore[attr-defined]
    assert b.src == str(d) and b.rw


def test_runs_merge_counts_and_peaks_and_the_union_of_what_was_used():
    a = _obs(syscalls={"openat": 2, "pipe2": 1}, peaks={"memory": 10, "pids": 3})
    b = _obs(syscalls={"openat": 5, "ptrace": 1}, peaks={"memory": 30, "pids": 2},
             denied={"keyctl": {"count": 2, "errno": "EPERM"}})
    m = merge_all([a, b])
    assert m.syscalls == {"openat": 7, "pipe2": 1, "ptrace": 1}
    assert m.peaks == {"memory": 30, "pids": 3}
    assert len(m.runs) == 2 and m.denied["keyctl"]["count"] == 2
    again = Observation.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.to_dict() == m.to_dict()


def test_a_denial_while_learning_is_noted_not_allowed(tmp_path):
    obs = _obs(denied={"keyctl": {"count": 3, "errno": "EPERM"},
                       "clone3": {"count": 4, "errno": "ENOSYS"}})
    text, prof = _learned(obs, tmp=tmp_path)
    assert "keyctl" not in prof.seccomp.allow  # type: ignore[attr-defined]
    assert "# keyctl: refused while learning (EPERM, 3 calls)" in text
    assert "clone3:" not in text, "clone3's ENOSYS is on purpose"


def test_plan_lists_chosen_groups_with_counts():
    fs = sorted(set(_groups.syscall_groups()["@file-system"].syscalls)
                & _groups.native_syscalls())
    obs = _obs(syscalls={n: 3 for n in fs[: len(fs) // 2 + 2]})
    plan = plan_profile(obs, load_profile("default"))
    assert "@file-system" in plan.groups
    line = next(ln for ln in plan.allow if ln.value == '"@file-system"')
    assert "most of the group" in line.why


# --------------------------------------------------------------------------- run records


def _report(tmp: Path, **kw: object) -> Path:
    d = {"exit_code": 1, "signal": None, "oom_killed": False, "timed_out": False,
         "seccomp_killed": False, "pids_limit_hit": False, "memory_limit_hit": False,
         "wall_seconds": 0.5, "peak_memory": 5 << 20, "limits": {"memory": 64 << 20,
                                                                 "pids": 32, "timeout": None},
         "denials": {}, "network": {"mode": "none"}, "command": ["tool"], "profile": "default",
         "profile_source": "", "message": ""}
    d.update(kw)
    p = tmp / "report.json"
    p.write_text(json.dumps(d))
    return p


def test_explain_puts_how_the_run_ended_first(tmp_path):
    p = _report(tmp_path, exit_code=137, signal=9, oom_killed=True,
                denials={"keyctl": {"count": 1, "errno": 1, "errno_name": "EPERM"}})
    causes = diagnose.diagnose(runrecord.load(p), load_profile("default"))
    assert causes[0].kind == "oom"
    assert "64M" in causes[0].title and "peak 5M" in causes[0].title
    assert causes[0].changes == (Change("set_limit", "memory", "256M",
                                        why="relax: OOM at 64M"),)
    assert [c.kind for c in causes][:2] == ["oom", "syscall"]


def test_explain_names_the_group_and_what_it_is_for(tmp_path):
    p = _report(tmp_path, denials={"keyctl": {"count": 3, "errno": 1, "errno_name": "EPERM"},
                                   "clone3": {"count": 1, "errno": 38, "errno_name": "ENOSYS"}})
    causes = diagnose.diagnose(runrecord.load(p))
    top = causes[0]
    assert top.kind == "syscall" and top.title.startswith("keyctl refused (EPERM, 3 times")
    assert "@keyring" in top.detail and "key retention" in top.detail
    assert top.changes[0].op == "allow_syscall" and top.changes[0].arg == "keyctl"
    assert causes[-1].title.startswith("clone3"), "the on-purpose ENOSYS ranks last"


@pytest.mark.parametrize("kind", ["pids", "timeout"])
def test_explain_limits(tmp_path, kind):
    kw = {"pids_limit_hit": True} if kind == "pids" else {
        "timed_out": True, "limits": {"timeout": 5.0}, "signal": 9, "exit_code": 137}
    causes = diagnose.diagnose(runrecord.load(_report(tmp_path, **kw)))
    assert causes[0].kind == kind
    assert causes[0].changes[0].op == "set_limit"
    assert causes[0].changes[0].value == ("128" if kind == "pids" else "60s")


def test_explain_from_an_events_file_with_paths_network_and_families(tmp_path):
    sid = "s"
    lines = [
        ev.Started(sid, 1.0, argv=("tool",), profile="default", limits={"memory": None},
                   isolation={"network": "none (an empty network namespace)"}),
        ev.SyscallDenied(sid, 1.1, name="socket", nr=41, decoded={"family": "AF_PACKET"},
                         errno=1, errno_name="EPERM", comm="tool"),
        ev.PathMissing(sid, 1.2, path="/usr/bin/cc", place="/etc/alternatives", syscall="execve",
                       op="exec", kind_on_host="dir", comm="make"),
        ev.PathMissing(sid, 1.25, path="/dev/kvm", place="/dev/kvm", syscall="openat",
                       op="open-write", write=True, kind_on_host="device"),
        ev.NetworkRequest(sid, 1.3, state="refused", host="192.0.2.1", port=443,
                          rule="network-none", via="direct", address="192.0.2.1"),
        ev.Exited(sid, 1.5, exit_code=2),
    ]
    p = tmp_path / "events.jsonl"
    p.write_text("".join(e.to_json() + "\n" for e in lines))
    run = runrecord.load(p)
    assert run.kind == "events" and run.network_mode == "none"
    causes = {c.kind: c for c in diagnose.diagnose(run, load_profile("default"))}
    assert causes["socket-family"].changes[0] == Change(
        "allow_socket_family", "AF_PACKET", why="relax: AF_PACKET refused 1 time")
    assert causes["path"].changes[0].op == "add_etc"
    assert causes["path"].changes[0].arg == "alternatives"
    assert causes["dev"].title == "/dev/kvm is not available inside" and not causes["dev"].changes
    assert "192.0.2.1:443" in causes["network"].title
    assert "allowlist" in causes["network"].advice


def test_explain_reads_a_missing_user_from_captured_stderr(tmp_path):
    lines = [ev.Started("s", 1.0, argv=("id",), profile="default"),
             ev.Output("s", 1.1, stream="stderr", data="whoami: cannot find name for user ID 7\n"),
             ev.Exited("s", 1.2, exit_code=1)]
    p = tmp_path / "e.jsonl"
    p.write_text("".join(e.to_json() + "\n" for e in lines))
    causes = diagnose.diagnose(runrecord.load(p))
    assert causes[0].kind == "user"


def test_a_file_that_is_neither_is_refused(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"hello": 1}')
    with pytest.raises(runrecord.RunRecordError):
        runrecord.load(p)


# --------------------------------------------------------------------------- relax, tighten


def _user_profile(tmp: Path, text: str) -> Path:
    p = tmp / "mine.toml"
    p.write_text(text)
    return p


def test_relax_proposes_one_hunk_per_cause_and_applies_a_chosen_few(tmp_path):
    prof = _user_profile(tmp_path, 'extends = "default"  # base\n')
    rep = _report(tmp_path, denials={"keyctl": {"count": 1, "errno": 1, "errno_name": "EPERM"},
                                     "kcmp": {"count": 2, "errno": 1, "errno_name": "EPERM"}},
                  pids_limit_hit=True)
    prop = relax(prof, [rep])
    titles = [h.title for h in prop.hunks]
    assert titles[0].startswith("pids limit"), titles
    assert "allow keyctl" in titles and "allow kcmp" in titles
    for h in prop.hunks:
        assert h.diff.startswith("--- a/mine.toml"), h.diff
    keyctl = next(h for h in prop.hunks if h.title == "allow keyctl")
    doc = prop.apply([keyctl.id])
    resolved = doc.resolve()
    assert "keyctl" in resolved.seccomp.allow and "kcmp" not in resolved.seccomp.allow
    assert "add_key" not in resolved.seccomp.allow, "a single syscall, not its group"
    saved = doc.save()
    assert saved.path == prof and saved.backup is not None and saved.backup.exists()
    assert "keyctl" in load_profile(str(prof)).seccomp.allow


def test_relax_prefers_a_read_only_bind_and_never_touches_a_builtin(tmp_path):
    d = tmp_path / "srv" / "data"
    d.mkdir(parents=True)
    (d / "in.csv").write_text("1\n")
    rep = _report(tmp_path, paths_missing=[{"place": str(tmp_path / "srv"),
                                            "path": str(d / "in.csv"), "op": "open-read",
                                            "write": False, "lookups": [str(d / "in.csv")]}])
    prop = relax("default", [rep])
    (h,) = [h for h in prop.hunks if h.change.op == "add_bind"]
    assert h.change.arg == str(d / "in.csv") and h.change.value == "ro"
    doc = prop.apply()
    assert doc.builtin and doc.default_save_path() != doc.path


def test_tighten_removes_what_learn_runs_never_used(tmp_path):
    prof = _user_profile(tmp_path, 'extends = "default"  # base\n[network]\nmode = "loopback"  # x\n'
                         '[filesystem]\nbinds = ["/usr/share/doc"]  # docs\n')
    obs = _obs(syscalls={"openat": 3, "pipe2": 1}, paths={"/usr/lib/x": {"ops": {"open-read"},
                                                                        "count": 1,
                                                                        "exists": True}},
               families={"AF_UNIX SOCK_STREAM": 1})
    side = tmp_path / "runs.learn.json"
    side.write_text(json.dumps(obs.to_dict()))
    prop = tighten(prof, [side])
    by_op: dict[str, list[str]] = {}
    for h in prop.hunks:
        by_op.setdefault(h.change.op, []).append(h.change.arg or h.change.value)
    assert "@aio" in by_op["remove_allow"]
    assert "@ipc" in by_op["replace_group"], "pipe2 alone: the group goes, pipe2 stays"
    assert by_op["remove_bind"] == ["/usr/share/doc"]
    assert by_op["set_network"] == ["none"]
    assert "AF_INET" in by_op["remove_socket_family"]
    doc = prop.apply()
    p = doc.resolve()
    assert "pipe2" in p.seccomp.allow and "shmget" not in p.seccomp.allow
    assert "io_setup" not in p.seccomp.allow and p.network.mode == "none"
    assert not p.filesystem.binds and p.seccomp.socket_families == ("AF_UNIX",)
    assert obs.used() <= p.seccomp.allow | {"exit"}


def test_tighten_refuses_runs_that_were_not_learned(tmp_path):
    from engine.errors import ProfileError

    with pytest.raises(ProfileError, match="not recorded in learn mode"):
        tighten("default", [_report(tmp_path)])


def test_ask_keys_become_profile_changes():
    assert change_for_key("socket AF_ALG") == Change("allow_socket_family", "AF_ALG")
    assert change_for_key("clone CLONE_NEWUSER").op == "allow_namespaces"
    assert change_for_key("kcmp") == Change("allow_syscall", "kcmp")


def test_a_learned_profile_written_twice_is_the_same(tmp_path):
    obs = _obs(syscalls={"openat": 3})
    a, _ = _learned(obs, tmp=tmp_path)
    b, _ = _learned(Observation.from_dict(obs.to_dict()), tmp=tmp_path)
    assert a == b


def test_the_document_keeps_comments_when_relaxed(tmp_path):
    prof = _user_profile(tmp_path, '# my notes\nextends = "default"  # base\n\n[seccomp]\n'
                         'allow = [\n    "getrandom",   # mine\n]\n')
    doc = ProfileDocument.open(str(prof))
    Change("allow_syscall", "kcmp", why="relax: kcmp refused").apply(doc)
    text = doc.text()
    assert "# my notes" in text and "# mine" in text and "relax: kcmp refused" in text
    assert os.path.basename(str(prof)) in doc.diff()


def test_learn_into_merges_runs_in_the_file_and_its_observations(tmp_path):
    from engine.errors import ProfileError
    from engine.learn.writer import learn_into, previous_observations, sidecar_of

    out = tmp_path / "tool.toml"
    text1, all1 = learn_into(out, _obs(syscalls={"openat": 2}), "default")
    assert len(all1.runs) == 1 and out.read_text() == text1
    assert Path(sidecar_of(out)).name == "tool.learn.json"
    text2, all2 = learn_into(out, _obs(syscalls={"ptrace": 1}))  # the base it was learned on
    assert len(all2.runs) == 2 and all2.syscalls == {"openat": 2, "ptrace": 1}
    assert "from 2 runs" in text2 and '"!ptrace"' in text2
    with pytest.raises(ProfileError, match="was learned on 'default'"):
        learn_into(out, _obs(), "python")
    os.unlink(sidecar_of(out))
    stand_in, base = previous_observations(out)
    assert base == "default" and stand_in is not None
    assert {"openat", "ptrace"} <= set(stand_in.kept), "the profile stands in for its runs"


def test_a_run_record_from_the_event_records_themselves():
    records = [ev.Started("s", 1.0, argv=("x",), profile="default"),
               ev.SyscallDenied("s", 1.1, name="kcmp", errno=1, errno_name="EPERM"),
               ev.Exited("s", 1.2, exit_code=1)]
    run = runrecord.from_events(records)
    assert run.exit_code == 1 and run.denials["kcmp"].count == 1
