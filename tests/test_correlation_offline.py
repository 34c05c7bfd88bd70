"""Detection and correlation together, offline, with lines out of time order;
and every shipped correlation rule compiles."""

from __future__ import annotations

import random
from pathlib import Path

from correlator.correlation import CorrelationEngine
from correlator.correlation.offline import offline_hooks
from correlator.detection import load_rules, rules_from_yaml, run_offline
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


RULES = """
title: Denied cross-zone connection
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e05
name: zw_fw_denied_crossing
logsource: {product: zonewatch, service: firewall}
detection:
  selection:
    zone.crossing: [core->lgwan, core->mynumber]
    event.outcome: failure
  condition: selection
level: low
---
title: Repeated denied cross-zone connections from one host
id: 4a8b1e77-2f6d-4c3a-a9e0-6c5d2b8f1e06
correlation:
  type: event_count
  rules: [zw_fw_denied_crossing]
  group-by: [source.ip, zone.crossing]
  timespan: 5m
  condition: {gte: 5}
level: high
---
title: Device non-compliant
id: 3c9a7d10-5e2b-4b8f-9f04-1d6e8a2c7b03
name: zw_intune_noncompliant
logsource: {product: zonewatch, service: intune}
detection:
  selection: {event.action: device-compliance-changed, intune.compliance: noncompliant}
  condition: selection
level: informational
---
title: Restricted VDI session
id: 8e3f5a22-1b7c-4d9e-8f61-2a4c6e8b0d07
name: zw_vdi_restricted_session
logsource: {product: zonewatch, service: vdi}
detection:
  selection:
    zone.destination_role: [vdi_pool_mynumber, vdi_pool_lgwan]
    event.action: [vdi-login, vdi-connect]
  condition: selection
level: informational
---
title: Non-compliant device then restricted VDI session
id: 8e3f5a22-1b7c-4d9e-8f61-2a4c6e8b0d08
correlation:
  type: temporal
  rules: [zw_intune_noncompliant, zw_vdi_restricted_session]
  group-by: [user]
  aliases:
    user: {zw_intune_noncompliant: user.name, zw_vdi_restricted_session: user.name}
  timespan: 15m
  generate: true
level: high
"""


def test_match_finds_cross_zone_correlations_in_shuffled_input():
    ruleset = rules_from_yaml(RULES)
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


def test_every_shipped_correlation_rule_compiles():
    ruleset = load_rules([ROOT / "rules"])
    engine = CorrelationEngine(ruleset.correlations, ruleset.rule)
    assert len(engine.rules) == len(ruleset.correlations) > 0


def test_a_bad_correlation_is_reported_and_the_others_still_run(tmp_path) -> None:
    from correlator.detection import load_rules

    (tmp_path / "rules.yml").write_text(
        """title: Denied
id: 5a1f0c3e-0d7b-4f5a-9c61-3e2b1d0a9f01
name: denied
logsource: {product: zonewatch, service: firewall}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Many denies
id: 5a1f0c3e-0d7b-4f5a-9c61-3e2b1d0a9f02
correlation: {type: event_count, rules: [denied], group-by: [source.ip], timespan: 5m,
              condition: {gte: 3}}
---
title: Denies to many ports
id: 5a1f0c3e-0d7b-4f5a-9c61-3e2b1d0a9f03
correlation: {type: value_count, rules: [denied], group-by: [source.ip], timespan: 5m,
              condition: {gte: 3}}
"""
    )
    ruleset = load_rules([tmp_path])
    assert [c.title for c in ruleset.correlations] == ["Many denies"]
    assert any("rules.yml:12" in str(e) and "field" in str(e) for e in ruleset.errors)


FLAT_SOURCE_RULES = """
title: Denied connection
id: 0d6c1b52-8f0e-4c55-9a57-3e1f2f7b9a01
name: flat_deny
logsource: {product: zonewatch}
detection: {selection: {source.ip|cidr: 10.0.0.0/8, event.outcome: failure}, condition: selection}
level: low
---
title: Repeated denies from one address
id: 0d6c1b52-8f0e-4c55-9a57-3e1f2f7b9a02
correlation:
  type: event_count
  rules: [flat_deny]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 3}
level: high
"""


def test_a_flat_dotted_key_reads_alike_in_detection_correlation_and_the_card():
    # A relay that keeps the sender's name in "source" and the address as a
    # flat "source.ip" key: every stage reads source.ip as 10.1.2.3
    # (zonewatch.fieldpath); the correlation and the card used to read None.
    from correlator.alerting.card import teams_card

    def event(second: int) -> dict:
        return {
            "@timestamp": f"2026-11-27T09:00:{second:02d}Z",
            "event": {"outcome": "failure"},
            "source": "fw-relay-01",
            "source.ip": "10.1.2.3",
        }

    ruleset = rules_from_yaml(FLAT_SOURCE_RULES)
    assert not ruleset.errors, ruleset.errors
    hooks = offline_hooks(ruleset, evidence_time)
    assert hooks is not None
    on_hit, on_end, engine = hooks
    lines = list(enumerate([event(s) for s in (1, 2, 3)], 1))
    alerts = list(run_offline(lines, ruleset, on_hit=on_hit, on_end=on_end))
    (corr,) = alerts  # the detection rule only feeds the correlation
    assert corr.group == {"source.ip": "10.1.2.3"}
    assert engine.stats.missing_group_field == 0
    card = teams_card(corr)["attachments"][0]["content"]
    (fact_set,) = [b for b in card["body"] if b["type"] == "FactSet"]
    shown = {f["title"]: f["value"] for f in fact_set["facts"]}
    assert shown["送信元IP"] == "10.1.2.3"
