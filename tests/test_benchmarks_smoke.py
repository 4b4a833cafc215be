"""benchmarks/run.py without measuring anything: its parsing, statistics and ratios on fake
inputs, and ``--quick --only cold-start`` end to end with hyperfine faked. No timings are
asserted (speed is measured by ``make bench``, never in tests)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flue_bench_run", REPO / "benchmarks/run.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


bench = _load()


def fake_hyperfine(flue_s: list[float], bwrap_s: list[float], python_s: list[float]
                   ) -> dict[str, Any]:
    def result(cmd: str, times: list[float], codes: list[int] | None = None) -> dict[str, Any]:
        return {"command": cmd, "mean": sum(times) / len(times), "stddev": 0.0,
                "median": sorted(times)[len(times) // 2], "user": 0.01, "system": 0.002,
                "min": min(times), "max": max(times), "times": times,
                "exit_codes": codes if codes is not None else [0] * len(times)}
    return {"results": [result("flue run -- /bin/true", flue_s),
                        result("bwrap --unshare-all ... /bin/true", bwrap_s),
                        result("python -c pass", python_s)]}


def test_percentile_interpolates_like_numpy() -> None:
    assert bench.percentile([5, 1, 3, 2, 4], 50) == 3
    assert bench.percentile([0, 10], 95) == pytest.approx(9.5)
    assert bench.percentile([7], 95) == 7
    assert bench.percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    with pytest.raises(ValueError):
        bench.percentile([], 50)


def test_hyperfine_json_to_ms_stats_and_ratios() -> None:
    flue = [0.040, 0.050, 0.060, 0.045, 0.055]  # seconds, as hyperfine writes them
    bwrap = [0.004, 0.005, 0.006, 0.005, 0.005]
    data = fake_hyperfine(flue, bwrap, [0.02] * 5)
    data["results"][1]["exit_codes"] = [0, 0, 1, 0, 0]
    stats = bench.parse_hyperfine(data, ("flue", "bwrap", "python"))
    assert stats["flue"]["p50"] == pytest.approx(50.0)
    assert stats["flue"]["p95"] == pytest.approx(59.0)  # 55 + 0.8 * (60 - 55)
    assert stats["flue"]["n"] == 5
    assert stats["bwrap"]["p50"] == pytest.approx(5.0)
    assert stats["bwrap"]["failed_runs"] == 1
    assert stats["flue"]["user_ms"] == pytest.approx(10.0)

    s = bench.cold_start_summary(stats)
    assert s["ratio_p50"] == pytest.approx(10.0)
    assert s["ratio_p95"] == pytest.approx(59.0 / stats["bwrap"]["p95"])
    assert s["target_met"] is True  # 50.0 <= 50: met, exactly at the target
    assert s["flue_minus_python_p50_ms"] == pytest.approx(30.0)
    assert bench.cold_start_summary(stats, target_ms=49.9)["target_met"] is False


def test_hyperfine_json_with_the_wrong_number_of_results_is_an_error() -> None:
    data = fake_hyperfine([0.1], [0.1], [0.1])
    with pytest.raises(bench.BenchError):
        bench.parse_hyperfine(data, ("flue", "bwrap"))
    data["results"][0]["times"] = []
    with pytest.raises(bench.BenchError):
        bench.parse_hyperfine(data, ("flue", "bwrap", "python"))


def test_hyperfine_chunks_in_opposite_orders_are_merged_by_label() -> None:
    first = fake_hyperfine([0.10, 0.20], [0.001, 0.003], [0.01, 0.01])
    second = fake_hyperfine([0.01, 0.02], [0.002, 0.004], [0.30, 0.40])  # python, bwrap, flue
    stats = bench.merge_hyperfine([(first, ("flue", "bwrap", "python")),
                                   (second, ("python", "bwrap", "flue"))])
    assert stats["flue"]["n"] == 4
    assert stats["flue"]["p50"] == pytest.approx(250.0)  # of 100, 200, 300, 400 ms
    assert stats["bwrap"]["p50"] == pytest.approx(2.5)  # of 1, 3, 2, 4 ms
    assert stats["python"]["max"] == pytest.approx(20.0)
    assert stats["flue"]["user_ms"] == pytest.approx(10.0)


def test_ratio_and_its_formatting() -> None:
    assert bench.ratio(10, 4) == 2.5
    assert bench.ratio(1, 0) is None
    assert bench.ratio(None, 3) is None
    assert bench.fmt_ratio(2.5) == "2.50x"
    assert bench.fmt_ratio(38.04) == "38.0x"
    assert bench.fmt_ratio(None) == "n/a"


def test_bwrap_command_recreates_merged_usr_symlinks() -> None:
    links = {"/bin": "usr/bin", "/lib": "usr/lib", "/sbin": "usr/sbin"}
    dirs = {"/lib64"}
    argv = bench.bwrap_argv(["/bin/true"], lexists=lambda p: p in links or p in dirs,
                            islink=lambda p: p in links, readlink=lambda p: links[p])
    assert argv[:5] == ["bwrap", "--unshare-all", "--ro-bind", "/usr", "/usr"]
    joined = " ".join(argv)
    assert "--symlink usr/bin /bin" in joined
    assert "--symlink usr/lib /lib" in joined
    assert "--symlink usr/sbin /sbin" in joined
    assert "--ro-bind /lib64 /lib64" in joined  # a real directory on this fake host
    assert "--proc /proc --dev /dev --tmpfs /tmp" in joined
    assert argv[-1] == "/bin/true"
    none = bench.bwrap_argv(["x"], extra=["--die-with-parent"], lexists=lambda p: False)
    assert "--symlink" not in none and none[-2:] == ["--die-with-parent", "x"]


def test_flue_runs_without_pythondontwritebytecode() -> None:
    env = bench.bench_env({"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin"})
    assert env == {"PATH": "/usr/bin"}


def test_options() -> None:
    cfg = bench.parse_args(["--quick", "--only", "cold-start"])
    assert cfg.only == ("cold-start",) and cfg.quick and cfg.runs < 30
    full = bench.parse_args([])
    assert full.only == bench.SECTIONS
    assert full.runs >= 30 and full.sandboxes == 200 and full.calls == 100_000
    assert bench.parse_args(["--only", "memory,denials", "--only", "memory",
                             "--sandboxes", "7"]).only == ("memory", "denials")
    assert bench.parse_args(["--sandboxes", "7"]).sandboxes == 7
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "nope"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--sandboxes", "0"])


def test_missing_tools_are_named_with_how_to_install_them(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    miss = bench.missing_tools(["cold-start", "denials"], which=lambda t: None)
    assert miss["bwrap"] == miss["hyperfine"] == "apt-get install bubblewrap hyperfine"
    assert "gcc" in miss
    assert bench.missing_tools(["memory"], which=lambda t: "/usr/bin/" + t) == {}

    monkeypatch.setattr(bench.shutil, "which", lambda t: None)
    out = tmp_path / "latest.json"
    assert bench.main(["--quick", "--only", "cold-start", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "apt-get install bubblewrap hyperfine" in err
    assert not out.exists()


def test_memory_supervisor_and_flood_arithmetic() -> None:
    assert bench.memory_per_sandbox(1_000_000, 800_000, 200) == 1000
    assert bench.supervisor_per_100k(flood_cpu=1.2, idle_cpu=0.2, denials=200_000) == \
        pytest.approx(0.5)
    res = bench.parse_flood('noise\n{"mode": "deny", "calls": 1000, "ns": 2000000, '
                            '"expected": 1000, "unexpected": 0, "first_unexpected_errno": 0}\n')
    assert bench.us_per_call(res) == pytest.approx(2.0)
    with pytest.raises(bench.BenchError):
        bench.parse_flood("no json here")


def test_quick_cold_start_end_to_end_with_hyperfine_faked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        calls.append(argv)
        assert "PYTHONDONTWRITEBYTECODE" not in (kw.get("env") or {})
        if argv[0] == "hyperfine" and "--version" not in argv:
            assert "-N" in argv and "--warmup" in argv
            path = Path(argv[argv.index("--export-json") + 1])
            path.write_text(json.dumps(fake_hyperfine([0.2] * 5, [0.005] * 5, [0.015] * 5)))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr(bench.shutil, "which", lambda t: "/usr/bin/" + t)
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    out = tmp_path / "latest.json"
    assert bench.main(["--quick", "--only", "cold-start", "--output", str(out)]) == 0

    assert any(c[1:4] == ["-m", "compileall", "-q"] for c in calls)  # byte-compiled first
    doc = json.loads(out.read_text())
    r = doc["results"]["cold-start"]
    assert r["ratio_p50"] == pytest.approx(40.0)
    assert r["target_met"] is False
    assert r["pythondontwritebytecode_removed"] is True
    text = capsys.readouterr().out
    assert "NOT MET" in text and "40.0x" in text and "PYTHONDONTWRITEBYTECODE" in text


# --------------------------------------------------------------------------- tui section


def test_tui_options() -> None:
    full = bench.parse_args(["--only", "tui"])
    assert full.only == ("tui",) and full.tui_seconds == 60
    assert full.tui_denials == 20_000 and full.tui_bytes == 10_000_000
    assert bench.parse_args(["--quick", "--only", "tui"]).tui_seconds < 60
    assert bench.parse_args(["--tui-seconds", "5", "--tui-denials", "100"]).tui_denials == 100
    with pytest.raises(SystemExit):
        bench.parse_args(["--tui-seconds", "0"])
    assert bench.missing_tools(["tui"], which=lambda t: None) == {
        "gcc": "apt-get install gcc", "tmux": "apt-get install tmux"}


def test_tmux_control_mode_replies_and_output_notifications() -> None:
    p = bench.ControlParser()
    p.feed(b"%begin 1700000000 12 0\n%end 1700000000 12 0\n%session-changed $0 tui\n")
    p.feed(b"%output %0 \\033[1;1Hx\n%beg")  # a line split across reads
    p.feed(b"in 1700000001 13 1\n 1 Denials \n%end 1700000000 12 0\nnot the end\n")
    assert p.outputs == 1 and len(p.replies) == 1
    p.feed(b"%output %0 y\n")  # inside a block: part of the reply, not a notification
    p.feed(b"%end 1700000001 13 1\n%begin 1 14 1\nno such window\n%error 1 14 1\n%exit\n")
    assert p.replies[1] == (True, [" 1 Denials ", "%end 1700000000 12 0", "not the end",
                                   "%output %0 y"])
    assert p.replies[2] == (False, ["no such window"]) and p.exited and p.outputs == 1


def test_tui_probes_follow_what_the_screen_shows() -> None:
    both = "╭─ 1 Denials · 120 ─╮\n keyctl 119 \n ptrace 1 \n keyctl @keyring EPERM ×119\n"
    shown = both + "╭─ 5 Output · 12 lines ─╮\n"
    p = bench.next_probe(shown, 0)
    assert (p.kind, p.key) == ("hide output", "5")
    assert not p.done(shown) and p.done(both)
    p = bench.next_probe(both, 0)
    assert p.kind == "show output" and p.done(shown)
    p = bench.next_probe(shown, 1)
    assert (p.kind, p.key) == ("cursor down", "Down")
    moved = shown.replace("keyctl @keyring EPERM ×119", "ptrace @debug EPERM ×1")
    assert not p.done(shown) and p.done(moved)
    p = bench.next_probe(moved, 1)
    assert (p.kind, p.key) == ("cursor up", "Up") and p.done(shown) and not p.done(moved)
    # one row only (before the flood): the cursor cannot move, so the panel toggles
    only = "╭─ 1 Denials · 1 ─╮\n ptrace 1 \n ptrace @debug EPERM ×1\n"
    assert bench.next_probe(only, 1).kind == "show output"
    assert bench.screen_counts(shown) == {"denials": 120, "output_lines": 12}
    assert bench.screen_counts("nothing") == {"denials": None, "output_lines": None}


def test_tui_rss_summary_start_peak_end_and_growth() -> None:
    flat = [(t * 0.5, 50_000 if t < 4 else 60_000 + (t % 3) * 100) for t in range(60)]
    s = bench.rss_summary(flat, 1.9, 28.0)
    assert s["start_kib"] == 50_000 and s["peak_kib"] == 60_200
    assert s["end_kib"] == 60_000 + (56 % 3) * 100 and s["after_exit_kib"] == flat[-1][1]
    assert s["bounded"] and s["late_growth_kib"] == 0
    growing = [(t * 0.5, 50_000 + t * 1000) for t in range(60)]
    g = bench.rss_summary(growing, 0.0, 29.5)
    assert not g["bounded"] and g["late_growth_kib"] > 4096
    with pytest.raises(bench.BenchError):
        bench.rss_summary([], 0.0, 1.0)
    with pytest.raises(bench.BenchError):
        bench.rss_summary([(5.0, 1)], 0.0, 1.0)


def test_tui_cpu_share() -> None:
    samples = [(0.0, 1.0), (1.0, 1.2), (2.0, 1.9), (3.0, 2.5), (9.0, 9.0)]
    assert bench.cpu_share(samples, 1.0, 3.0) == pytest.approx(0.65)
    assert bench.cpu_share(samples, 5.0, 6.0) is None
    me = bench.proc_cpu_seconds(os.getpid())
    assert me is not None and me > 0
    assert bench.proc_cpu_seconds(2 ** 22 + 7) is None


def test_tui_rates_and_latency_summary() -> None:
    res = {"seconds": 2.0, "denials": 30_000, "bytes": 16_000_000, "lines": 160_000,
           "target_denials_per_s": 20_000, "target_bytes_per_s": 10_000_000,
           "per_second_denials": [20_000, 10_000], "per_second_bytes": [10_000_000, 6_000_000],
           "resyncs": 3}
    r = bench.tui_rates(res)
    assert r["denials_per_s"] == 15_000 and r["bytes_per_s"] == 8_000_000
    assert r["lines_per_s"] == 80_000 and r["min_second_denials"] == 10_000
    with pytest.raises(bench.BenchError):
        bench.tui_rates({**res, "seconds": 0})
    rows = [{"kind": "cursor up", "ms": 10.0}, {"kind": "cursor up", "ms": 30.0},
            {"kind": "hide output", "ms": None}, {"kind": "hide output", "ms": 50.0}]
    lat = bench.latency_summary(rows)
    assert lat["cursor up"]["p50"] == 20.0 and lat["cursor up"]["timeouts"] == 0
    assert lat["hide output"]["timeouts"] == 1 and lat["hide output"]["n"] == 1
    assert lat["all"]["presses"] == 4 and lat["all"]["max"] == 50.0
    assert bench.latency_summary([{"kind": "x", "ms": None}])["x"] == {"presses": 1,
                                                                       "timeouts": 1}


def test_tui_flood_program_compiles_and_paces(tmp_path: Path) -> None:
    """The flood program runs outside a sandbox too (its keyctl calls then succeed and
    count as unexpected): a short paced run writes its result with both rates."""
    import shutil

    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    with bench.tui_flood_program() as prog:
        out = tmp_path / "r.json"
        p = subprocess.run([str(prog), "2000", "100000", "0.3", "0", str(out)],
                           capture_output=True, text=True, timeout=30, check=False)
    res = json.loads(out.read_text())
    assert p.returncode == 4  # keyctl is allowed on the host: "unexpected"
    assert res["unexpected"] + res["denials"] > 0 and res["bytes"] == res["lines"] * 100
    assert p.stdout.startswith("tuiflood: ") and p.stdout.rstrip().endswith("tuiflood: done")
    assert len(p.stdout.splitlines()[1]) == 99
    r = bench.tui_rates(res)
    assert r["bytes_per_s"] > 0 and "t0" in res and res["t1"] > res["t0"]
