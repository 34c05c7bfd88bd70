"""The shipped cross-zone rules through the detection engine and the
correlation engine, offline, with lines out of time order."""

from __future__ import annotations

import random
from pathlib import Path

from correlator.correlation.offline import offline_hooks
from correlator.detection import load_rules, run_offline
from correlator.detection.offline import evidence_time

ROOT = Path(__file__).resolve().parent.parent


def deny(second: int, ip: str = "10.10.4.17") -> dict:
    return {
        "@timestamp": f"2026-11-27T09:{second // 60:02d}:{second % 60:02d}Z",
        "event": {"dataset": "firewall", "outcome": "failure", "action": "deny"},
        "source": {"ip": ip},
        "destination": {"ip": "10.200.1.10", "port": 445},
        "zone": {"source": "core", "destination": "lgwan", "crossing": "core->lgwan"},
    }


def noncompliant(second: int, upn: str) -> dict:
    return {
        "@timestamp": f"2026-11-27T09:{second // 60:02d}:{second % 60:02d}Z",
        "event": {"dataset": "intune", "action": "device-compliance-changed"},
        "intune": {"compliance": "noncompliant"},
        "user": {"name": upn},
    }


def vdi_login(second: int, user: str) -> dict:
    return {
        "@timestamp": f"2026-11-27T09:{second // 60:02d}:{second % 60:02d}Z",
        "event": {"dataset": "vdi", "action": "vdi-login"},
        "zone": {"destination_role": "vdi_pool_mynumber"},
        "user": {"name": user},
    }


def test_match_finds_the_shipped_correlations_in_shuffled_input():
    ruleset = load_rules([ROOT / "rules"])
    assert not ruleset.errors, ruleset.errors
    events = (
        [deny(10 * i) for i in range(5)]  # five denies in 40 s: one alert
        + [deny(100 * i, "10.10.4.99") for i in range(5)]  # 400 s apart too: outside 5 min
        + [noncompliant(30, "ito@city.example.lg.jp"), vdi_login(400, "ITO@city.example.lg.jp")]
        + [noncompliant(30, "abe@city.example.lg.jp"), vdi_login(1000, "abe@city.example.lg.jp")]
    )
    lines = list(enumerate(events, 1))
    random.Random(7).shuffle(lines)
    hooks = offline_hooks(ruleset, evidence_time)
    assert hooks is not None
    on_hit, on_end, engine = hooks
    alerts = [
        a
        for a in run_offline(lines, ruleset, on_hit=on_hit, on_end=on_end)
        if a.type != "detection"
    ]
    by_rule = {a.rule_id: a for a in alerts}
    assert len(alerts) == 2
    scan = by_rule["4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e06"]
    assert scan.group == {"source.ip": "10.10.4.17", "zone.crossing": "core->lgwan"}
    assert sorted(e.line for e in scan.evidence) == [1, 2, 3, 4, 5]
    assert scan.origin == "match"
    pair = by_rule["8e3f5a22-1b7c-4d9e-8f61-2a4c6e8b0d08"]
    assert pair.group == {"user": "ito@city.example.lg.jp"}
    assert [e.line for e in pair.evidence] == [11, 12]
    assert engine.stats.late_events == 0
