"""The Network panel without a kernel: the model's folding of network events, the command
line's --net allowlist / --allow-domain / --resolve, and the panel's keys on a recorded run
(recordings/net.jsonl, made by make_recording.py from a real sandbox)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from conftest import AGENT_PROFILE, RECORDINGS, ROOT
from waits import settle

from engine import events as ev
from engine.profile.model import NetworkPolicy, Profile
from flue_tui.__main__ import _parser, quick_limits
from flue_tui.app import make_app
from flue_tui.model import MAX_NET, RunModel, diff_runs
from flue_tui.runspec import QuickLimits, RunSpec

NET = RECORDINGS / "net.jsonl"


def req(id: int, state: str, host: str = "a.example.test", port: int = 443,
        **kw: Any) -> ev.NetworkRequest:
    allowed = state != "refused"
    return ev.NetworkRequest("sb", float(id), id=id, state=state, host=host, port=port,
                             allowed=allowed, rule=kw.pop("rule", "a.example.test" if allowed
                                                          else "no-match"), **kw)


# --------------------------------------------------------------------------- the model


def test_a_request_is_one_row_from_open_to_closed() -> None:
    m = RunModel()
    changed = m.apply([req(1, "open"), req(1, "closed", bytes_up=10, bytes_down=200,
                                           duration=0.5)])
    assert changed == {"network", "status"}
    assert list(m.net) == [1] and m.net[1].state == "closed" and m.net[1].bytes_down == 200
    assert m.net_counts == {"open": 0, "closed": 1, "refused": 0, "failed": 0}
    assert m.net_bytes == [10, 200] and m.net_requests == 1 and m.net_refused == 0


def test_refusals_are_counted_per_target_and_per_dns_name() -> None:
    m = RunModel()
    m.apply([req(1, "refused", "evil.test"), req(2, "refused", "evil.test"),
             req(3, "refused", "evil.test", 8080),
             ev.DnsQuery("sb", 4.0, name="evil.test", rcode="NXDOMAIN"),
             ev.DnsQuery("sb", 5.0, name="ok.test", allowed=True, rule="ok.test",
                         answers=("127.100.0.1",))])
    assert m.net_refusals == {"evil.test:443": 2, "evil.test:8080": 1, "evil.test (dns)": 1}
    assert m.net_refused == 4 and m.dns_total == 2 and m.net_counts["refused"] == 3


def test_diff_runs_names_the_network_refusals_that_went_away() -> None:
    before, after = RunModel(1), RunModel(2)
    before.apply([req(1, "refused", "evil.test"), req(2, "refused", "kept.test"),
                  ev.DnsQuery("sb", 3.0, name="evil.test", rcode="NXDOMAIN")])
    after.apply([req(1, "open", "evil.test"), req(2, "refused", "kept.test"),
                 req(3, "refused", "new.test")])
    d = diff_runs(before, after)
    assert d.net_gone == ("evil.test (dns)", "evil.test:443")
    assert d.net_new == ("new.test:443",) and d.net_kept == ("kept.test:443",)
    assert d.gone == d.new == d.kept == ()


def test_the_requests_kept_are_bounded() -> None:
    m = RunModel()
    m.apply(req(i, "refused", f"h{i}.test") for i in range(1, MAX_NET + 502))
    assert len(m.net) <= MAX_NET + 500 and m.net_requests == MAX_NET + 501
    assert MAX_NET + 501 in m.net and 1 not in m.net  # the oldest went first


def test_network_mode_and_rules_from_started() -> None:
    m = RunModel()
    m.apply([ev.Started("sb", 0.0, isolation={"network": "allowlist (3 rules; no route out)"})])
    assert m.network_mode == "allowlist" and m.network_rules == 3
    m = RunModel()
    m.apply([ev.Started("sb", 0.0, isolation={"network": "none (an empty namespace)"})])
    assert m.network_mode == "none" and m.network_rules is None


# --------------------------------------------------------------------------- the command line


def profile_with(**net: Any) -> Profile:
    return dataclasses.replace(Profile(name="x"), network=NetworkPolicy(**net))


def test_allow_domain_implies_allowlist_and_adds_to_the_profiles_list() -> None:
    a = _parser().parse_args(["--allow-domain", "pkgs.example.test", "--allow-domain",
                              "*.cdn.example.test:8443", "--resolve",
                              "pkgs.example.test=127.0.0.1", "--", "true"])
    lim = quick_limits(a)
    assert lim.allow == ("pkgs.example.test", "*.cdn.example.test:8443")
    p = lim.apply(profile_with(mode="none", allow=("mirror.example.test",),
                               hosts=(("mirror.example.test", "127.0.0.2"),)))
    assert p.network.mode == "allowlist"
    assert p.network.allow == ("mirror.example.test", "pkgs.example.test",
                               "*.cdn.example.test:8443")
    assert p.network.hosts == (("mirror.example.test", "127.0.0.2"),
                               ("pkgs.example.test", "127.0.0.1"))


def test_net_mode_alone_keeps_the_profiles_list() -> None:
    p = QuickLimits(network="allowlist").apply(profile_with(mode="none", allow=("a.test",)))
    assert p.network.mode == "allowlist" and p.network.allow == ("a.test",)
    p = QuickLimits(network="none").apply(profile_with(mode="allowlist", allow=("a.test",)))
    assert p.network.mode == "none" and p.network.allow == ("a.test",)


@pytest.mark.parametrize(("limits", "needle"), [
    (QuickLimits(network="none", allow=("a.test",)), "needs network allowlist"),
    (QuickLimits(allow=("10.0.0.1",)), "IP address"),
    (QuickLimits(allow=("*",)), "every name"),
    (QuickLimits(resolve=("a.test",)), "NAME=ADDRESS"),
    (QuickLimits(resolve=("a.test=nowhere",)), "not an IP address"),
    (QuickLimits(network="wifi"), "not one of"),
])
def test_bad_network_overrides_are_explained(limits: QuickLimits, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        limits.apply(Profile(name="x"))


def test_main_refuses_a_bad_domain(capsys: pytest.CaptureFixture[str]) -> None:
    from flue_tui.__main__ import main

    assert main(["--allow-domain", "https://x.test/", "--", "true"]) == 2
    assert "is a URL" in capsys.readouterr().err


def test_recent_runs_keep_their_domains() -> None:
    spec = RunSpec(argv=("curl", "x"), limits=QuickLimits(allow=("a.test",),
                                                          resolve=("a.test=127.0.0.1",)))
    again = RunSpec.from_json(spec.to_json())
    assert again.limits == spec.limits
    assert "allow a.test" in again.limits.describe()
    old = RunSpec.from_json({"argv": ["true"], "limits": {"memory": "1G", "network": ""}})
    assert old.limits == QuickLimits(memory="1G")


# --------------------------------------------------------------------------- the panel's keys


def recorded_argv() -> list[str]:
    import json

    with NET.open(encoding="utf-8") as f:
        return ["python3", "tests/tui/programs/net_agent.py", *json.loads(f.readline())["argv"][2:]]


async def run_recorded(pilot: Any) -> None:
    app = pilot.app
    for _ in range(50):
        if app.run_model is not None and app.run_model.state == "exited":
            break
        await pilot.pause(0.1)
    await settle(pilot)


def select(app: Any, host: str, state: str = "refused") -> Any:
    screen = app.screen
    row = next(r for r in app.run_model.net.values() if r.host == host and r.state == state)
    table = screen.query_one("#network-table")
    table.focus()
    table.move_cursor(row=screen.panel("network")._rows.index(str(row.id)), animate=False)
    return row


@pytest.fixture
def net_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    import shutil

    monkeypatch.chdir(ROOT)
    profile = tmp_path / "agent.toml"
    shutil.copy(AGENT_PROFILE, profile)
    return make_app(recorded_argv(), profile=str(profile), replay=[NET], remember=False,
                    blink=False)


async def test_the_panel_shows_itself_and_w_allows_the_parent_domain(net_app: Any) -> None:
    async with net_app.run_test(size=(120, 40)) as pilot:
        await run_recorded(pilot)
        app = pilot.app
        assert app.screen.panel("network").display
        row = select(app, "tracker.example.test")
        await pilot.press("w")
        await settle(pilot)
        assert app.draft.resolve().network.allow == (f"*.example.test:{row.port}",)
        assert app.draft.resolve().network.mode == "allowlist"
        # d takes out what lets it through: here the wildcard just added
        await pilot.press("d")
        await settle(pilot)
        assert app.draft.resolve().network.allow == ()
        await pilot.press("d")
        await settle(pilot)
        assert any("nothing to take out" in n.message for n in app._notifications)


async def test_a_dns_question_allows_the_name_on_the_default_ports(net_app: Any) -> None:
    async with net_app.run_test(size=(120, 40)) as pilot:
        await run_recorded(pilot)
        app = pilot.app
        select(app, "tracker.example.test")
        await pilot.press("right_square_bracket")  # the DNS tab
        await settle(pilot)
        dns = app.screen.query_one("#network-dns")
        assert [line.split()[2] for line in dns.visible_plain()] == [
            "pkgs.example.test", "tracker.example.test", "telemetry.example.test"]
        dns.focus()
        dns.action_cursor(-1)  # tracker
        await pilot.press("a")
        await settle(pilot)
        assert app.draft.resolve().network.allow == ("tracker.example.test",)


async def test_an_ip_address_is_never_allowed(net_app: Any) -> None:
    async with net_app.run_test(size=(120, 40)) as pilot:
        await run_recorded(pilot)
        app = pilot.app
        from flue_tui.model import NetRow

        app.edit_network("allow", NetRow(9, "192.0.2.1", 443, rule="ip-address"))
        await pilot.pause(0.1)
        assert not app.draft.dirty
        assert any("IP address" in n.message for n in app._notifications)


async def test_the_panel_stays_hidden_outside_allowlist_until_6(monkeypatch: Any) -> None:
    from conftest import DEMO

    monkeypatch.chdir(ROOT)
    app = make_app(["python3", "examples/demo_agent.py"], profile=str(AGENT_PROFILE),
                   replay=[DEMO], remember=False, blink=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await run_recorded(pilot)
        panel = app.screen.panel("network")
        assert not panel.display and not app.screen.query_one("#row-net").display
        await pilot.press("6")
        await pilot.pause(0.1)
        assert panel.display and app.screen.query_one("#row-net").display
        assert "6 Network" in str(panel.border_title)
