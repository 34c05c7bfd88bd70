"""The demo's day at the city office (samples/), offline: parse every sample with
the demo's connectors, match the whole rule pack with correlations, and check
exactly which alerts the day raises and which near misses stay quiet.

``zonewatch demo`` runs the same files through Kafka and the stream loop
(tests/test_pipeline_integration.py); this test pins the story itself, fast.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from test_rule_pack import SCENARIOS

from console.demo_store import demo_events
from correlator.correlation.offline import offline_hooks
from correlator.detection import RuleSet, load_rules, run_offline
from correlator.detection.offline import evidence_time
from zonewatch.models import Alert
from zonewatch.samples import SAMPLES

JST = timezone(timedelta(hours=9))

# (rule name, first evidence JST, last evidence JST): every alert of the day.
EXPECTED = [
    ("zw_intune_policy_change", "09:30:04", "09:30:04"),
    ("zw_intune_change_then_untrusted_session", "09:30:04", "09:47:30"),
    ("zw_untrusted_device_restricted_session", "09:40:12", "09:47:30"),
    ("zw_untrusted_signin_then_restricted_session", "09:42:31", "09:47:30"),
    ("zw_impossible_travel", "10:05:12", "10:05:12"),
    ("zw_internet_signin_during_restricted_session", "10:05:12", "10:05:12"),
    ("zw_noncompliant_session_stays_connected", "08:31:21", "10:20:12"),
    ("zw_upload_after_mynumber_session", "10:35:42", "10:41:05"),
    ("zw_fw_change_then_violation", "10:48:12", "11:02:14"),
    ("zw_download_reaches_lgwan_unsanitized", "10:58:40", "11:02:14"),
    ("zw_policy_core_to_lgwan", "11:02:14", "11:02:14"),
    ("zw_repeated_denied_crossings", "11:05:03", "11:06:35"),
    ("zw_port_scan_across_zones", "11:05:03", "11:08:30"),
    ("zw_policy_vdi_to_mynumber", "11:20:33", "11:20:33"),
    ("zw_denies_then_allow", "12:40:02", "12:42:32"),
    ("zw_same_user_two_zones", "13:16:27", "13:20:44"),
    ("zw_untrusted_signin_then_restricted_session", "13:18:20", "13:21:03"),
    ("zw_m365_mass_download_personal_device", "13:18:20", "13:29:45"),
    ("zw_m365_external_share_personal_device", "13:18:20", "13:33:05"),
    ("zw_vdi_mynumber_from_outside_core", "13:21:03", "13:21:03"),
    ("zw_web_bypassing_gateway", "14:30:05", "14:30:05"),
    ("zw_vdi_failures_then_success", "15:03:12", "15:04:31"),
]


def parse_samples(root: Path = ROOT, fmt: str | None = None) -> list[dict[str, Any]]:
    """Every sample line as the demo's connectors emit it (no dead letters
    allowed); ``fmt="auto"`` lets each file be detected instead."""
    return demo_events(root, fmt)


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    ruleset = load_rules([ROOT / "rules"])
    assert ruleset.errors == []
    return ruleset


@pytest.fixture(scope="module")
def day() -> list[dict[str, Any]]:
    # The stream loop merges the topics' partitions in event time; so do we.
    return sorted(parse_samples(), key=lambda e: e["@timestamp"])


def run_day(pack: RuleSet, events: list[dict[str, Any]]) -> list[Alert]:
    hooks = offline_hooks(pack, evidence_time)
    assert hooks is not None
    on_hit, on_end, engine = hooks
    alerts = list(run_offline(list(enumerate(events, 1)), pack, on_hit=on_hit, on_end=on_end))
    assert engine.metrics()["incomplete_windows"] == 0  # the day ends after every window
    return alerts


def _names(pack: RuleSet) -> dict[str, str]:
    names = {r.id: r.name or r.id for r in pack.detections}
    names.update({str(c.id): c.name or str(c.id) for c in pack.correlations})
    return names


def _jst(moment: Any) -> str:
    return moment.astimezone(JST).strftime("%H:%M:%S")


def _summary(pack: RuleSet, alerts: list[Alert]) -> list[tuple[str, str, str]]:
    names = _names(pack)
    rows = [(names[a.rule_id], _jst(a.first_seen), _jst(a.last_seen)) for a in alerts]
    return sorted(rows, key=lambda r: (r[2], r[1], r[0]))


def test_every_sample_file_is_in_the_demo_and_parses_cleanly(day: list[dict[str, Any]]) -> None:
    on_disk = {p.name for p in (ROOT / "samples").iterdir() if p.is_file()}
    assert {s.path.name for s in SAMPLES} == on_disk
    sources = Counter(e["event"]["dataset"] for e in day)
    assert set(sources) == {"intune", "gateway", "firewall", "vdi", "identity"}
    assert all(e["@timestamp"].startswith("2026-11-2") for e in day)


def test_the_day_raises_exactly_the_expected_alerts(
    pack: RuleSet, day: list[dict[str, Any]]
) -> None:
    assert _summary(pack, run_day(pack, day)) == sorted(EXPECTED, key=lambda r: (r[2], r[1], r[0]))


def test_format_auto_everywhere_finds_the_same_alerts(pack: RuleSet) -> None:
    """A user who leaves --format at auto for every file gets the demo's
    alerts, and every event names the format that really parsed it."""
    auto = sorted(parse_samples(fmt="auto"), key=lambda e: e["@timestamp"])
    by_file = {(s.source, s.format) for s in SAMPLES}
    assert {(e["event"]["dataset"], e["event"]["module"]) for e in auto} == by_file
    assert _summary(pack, run_day(pack, auto)) == sorted(EXPECTED, key=lambda r: (r[2], r[1], r[0]))


def test_parse_reports_the_format_it_chose_for_each_sample(tmp_path: Path) -> None:
    import orjson
    from click.testing import CliRunner

    from zonewatch.app.cli import cli

    env = {"ZONEWATCH_CONNECTORS__ZONES_FILE": str(ROOT / "rules/zones.yaml")}
    for sample in SAMPLES:
        path = str(ROOT / sample.path)
        result = CliRunner().invoke(
            cli, ["parse", "--source", sample.source, "--format", "auto", path], env=env
        )
        assert result.exit_code == 0, result.output
        reports = [orjson.loads(x) for x in result.stderr.splitlines()]
        assert reports == [
            {"input": path, "format_detected": f"{sample.source}/{sample.format}", "line": 1}
        ]


def test_the_demo_exercises_every_scenario_of_the_issue(
    pack: RuleSet, day: list[dict[str, Any]]
) -> None:
    fired = {name for name, _, _ in _summary(pack, run_day(pack, day))}
    covered = {n for n, rules in SCENARIOS.items() if fired & set(rules)}
    assert covered == set(SCENARIOS), f"not exercised: {sorted(set(SCENARIOS) - covered)}"


def _evidence(alerts: list[Alert]) -> list[dict[str, Any]]:
    return [e.event for a in alerts for e in a.evidence]


def test_near_misses_of_the_day_stay_quiet(pack: RuleSet, day: list[dict[str, Any]]) -> None:
    alerts = run_day(pack, day)
    evidence = _evidence(alerts)
    firewall = {
        e.get("source", {}).get("ip") for e in evidence if e["event"]["dataset"] == "firewall"
    }
    gateway = {
        e.get("source", {}).get("ip") for e in evidence if e["event"]["dataset"] == "gateway"
    }
    hosts = {e.get("host", {}).get("name") for e in evidence}
    # Allowed flows: sanitizer delivery, My Number pool, 中間サーバー relay, the proxy.
    assert not firewall & {"203.0.113.50", "10.50.10.23", "172.16.1.20", "10.10.0.10"}
    # Two denies from Tanaka's laptop are not a pattern.
    assert "10.10.21.34" not in firewall
    # Suzuki's zip download never went on to LGWAN.
    assert not any(e.get("url", {}).get("path", "").endswith("setup_tool.zip") for e in evidence)
    # The security cloud logged 10.50.30.12's session: no bypass.
    assert "10.50.30.12" not in firewall | gateway
    # Watanabe's laptop turned non-compliant but his session ended within 20 minutes.
    assert "LT-0311" not in hosts
    # Tanaka's 2 MB form post after her My Number session is no exfiltration.
    users = Counter(
        a.group.get("user.name") for a in alerts if a.type == "temporal_ordered" and a.group
    )
    assert users["tanaka.hanako@city.example.lg.jp"] == 0
    # Her one mistyped VDI password before the 14:10 login is no password guessing.
    assert not any(
        e["event"].get("action") == "vdi-login-failed"
        and e["user"]["name"] == "tanaka.hanako@city.example.lg.jp"
        for e in evidence
    )
    identity = [e for e in evidence if e["event"]["dataset"] == "identity"]
    # Watanabe's lunchtime iPhone sign-in over mobile data: his LGWAN session had ended.
    assert not any(e["source"]["ip"] == "198.51.100.140" for e in identity)
    # Kondo's guest invitation came from his office laptop; Tanaka's three downloads are few.
    assert not any(e.get("user", {}).get("name", "").startswith("kondo") for e in identity)
    assert not any(
        e["event"]["action"] == "file-downloaded" and e["user"]["name"].startswith("tanaka")
        for e in identity
    )


def test_identities_learned_from_other_sources_name_the_user_behind_an_address(
    day: list[dict[str, Any]],
) -> None:
    """The forbidden core -> LGWAN connection of 11:02 carries only an address;
    the connectors learned from Watanabe's VDI login at 08:52 whose laptop held it."""
    [crossing] = [
        e for e in day
        if e["event"]["dataset"] == "firewall" and e["event"].get("outcome") == "success"
        and e.get("zone", {}).get("crossing") == "core->lgwan"
    ]  # fmt: skip
    assert crossing["source"]["ip"] == "10.10.23.90"
    assert crossing["user"]["name"] == "watanabe.taro@city.example.lg.jp"
    assert crossing["zonewatch"]["binding"]["origin"] == "vdi"
    # Tanaka's sign-in from Singapore knew her LGWAN session was open at her desk.
    [abroad] = [
        e for e in day
        if e["event"]["dataset"] == "identity" and e["event"]["outcome"] == "success"
        and e.get("source", {}).get("ip") == "198.51.100.77"
    ]  # fmt: skip
    assert abroad["zonewatch"]["vdi_session"]["target"] == "lgwan"
    assert abroad["zone"]["source"] == "internet"
    # Office sign-ins come through the city's egress: the core zone, and no binding
    # (every office user shares that address).
    office = [e for e in day if e.get("source", {}).get("ip") == "192.0.2.4"]
    assert office and {e["zone"]["source"] for e in office} == {"core"}


def test_arrival_order_does_not_change_the_alerts(pack: RuleSet, day: list[dict[str, Any]]) -> None:
    """Kafka delivers the sources' partitions in any interleaving; the engine
    orders by event time, so a shuffled day raises the same alerts."""
    shuffled = list(day)
    random.Random(26).shuffle(shuffled)
    assert _summary(pack, run_day(pack, shuffled)) == _summary(pack, run_day(pack, day))


def test_zonewatch_match_finds_the_same_alerts_from_ndjson(
    pack: RuleSet, day: list[dict[str, Any]], tmp_path: Path
) -> None:
    """What an analyst runs by hand: `zonewatch parse` output into `zonewatch match`."""
    import orjson
    from click.testing import CliRunner

    from zonewatch.app.cli import cli

    events = tmp_path / "day.ndjson"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in day))
    result = CliRunner().invoke(
        cli, ["match", "--rules", str(ROOT / "rules"), str(events)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    names = _names(pack)
    fired = Counter(names[orjson.loads(line)["rule_id"]] for line in result.stdout.splitlines())
    assert fired == Counter(name for name, _, _ in EXPECTED)


def test_the_demo_lists_alerts_by_level_and_counts_informational_ones() -> None:
    from zonewatch.app.demo import _print_alerts

    columns = ["jst", "level", "type", "rule_title", "zone_crossing", "evidence"]
    rows = [
        ("11:02:14", "critical", "detection", "Zone Policy: Direct Traffic", "core->lgwan", 1),
        ("11:03:00", "informational", "detection", "Restricted VDI Session", "core->vdi", 1),
        ("11:04:00", "informational", "detection", "Restricted VDI Session", "core->vdi", 1),
    ]
    lines: list[str] = []
    _print_alerts(columns, rows, lines.append)
    table, summary, totals = lines
    assert "Zone Policy: Direct Traffic" in table
    assert "Restricted VDI Session" not in table
    assert summary.strip() == "+ 2 informational alert(s): Restricted VDI Session x2"
    assert totals.strip() == "1 critical -- from 2 rules"
