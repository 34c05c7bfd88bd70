"""``suppress:`` on detection rules: one alert per rule, key and window of
event time, in ``match`` as in the stream, and exact across a restart that
rebuilds the throttle from the stored alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlator.detection import load_rules, rules_from_yaml, run_offline
from correlator.detection.throttle import Throttle, throttle_from_settings
from zonewatch.config import CorrelatorSettings
from zonewatch.errors import RuleError

ROOT = Path(__file__).resolve().parents[1]
BASE = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)  # 11:00 JST

RULE = """
title: SMB From Core Into LGWAN
id: 5b0c1d2e-3f40-4a51-8c62-7d8e9fa0b1c2
status: test
level: high
{suppress}
logsource: {{product: zonewatch, service: firewall}}
detection:
  selection:
    zone.crossing: core->lgwan
    event.outcome: success
    destination.port: 445
  condition: selection
"""


def rule(suppress: str) -> str:
    return RULE.format(suppress=suppress)


def connection(minutes: float, src: str = "10.10.23.90", **extra: Any) -> dict[str, Any]:
    """A FortiGate accept of SMB from a core laptop to the LGWAN file server,
    as the firewall connector emits it."""
    when = BASE + timedelta(minutes=minutes)
    event: dict[str, Any] = {
        "@timestamp": when.isoformat().replace("+00:00", "Z"),
        "event": {
            "dataset": "firewall",
            "kind": "event",
            "category": ["network"],
            "action": "accept",
            "outcome": "success",
        },
        "observer": {"vendor": "Fortinet", "product": "FortiGate", "name": "FGT-CITY-CORE"},
        "source": {"ip": src, "port": 51544},
        "destination": {"ip": "10.20.1.15", "port": 445},
        "network": {"transport": "tcp"},
        "rule": {"id": "77", "name": "core-lgwan-temp"},
        "user": {"name": "watanabe"},
        "zone": {"source": "core", "destination": "lgwan", "crossing": "core->lgwan"},
    }
    event.update(extra)
    return event


def load(text: str) -> Any:
    """Rules from YAML text; the first rule error raised."""
    ruleset = rules_from_yaml(text, pipeline="none")
    if ruleset.errors:
        raise ruleset.errors[0]
    return ruleset


def match(
    rules: str | list[Path],
    events: list[dict[str, Any]],
    throttle: Throttle | None = None,
) -> list[Any]:
    ruleset = load_rules(rules) if isinstance(rules, list) else load(rules)
    return list(run_offline(list(enumerate(events, 1)), ruleset, throttle=throttle))


# -- the attribute --------------------------------------------------------------


def test_without_suppress_every_match_alerts() -> None:
    alerts = match(rule(""), [connection(m) for m in range(5)])
    assert len(alerts) == 5
    assert all(a.group == {} for a in alerts)


def test_suppress_per_field_keeps_one_alert_per_host_and_window() -> None:
    events = [
        connection(0),
        connection(1),
        connection(2, src="10.10.23.91"),  # another laptop: its own alert
        connection(9.9),
        connection(10),  # exactly one window after the first: alerts again
        connection(12),
        connection(25),
    ]
    alerts = match(rule("suppress: {window: 10m, fields: [source.ip]}"), events)
    assert [(a.evidence[0].line, a.group) for a in alerts] == [
        (1, {"source.ip": "10.10.23.90"}),
        (3, {"source.ip": "10.10.23.91"}),
        (5, {"source.ip": "10.10.23.90"}),
        (7, {"source.ip": "10.10.23.90"}),
    ]


def test_suppress_timespan_alone_throttles_the_rule_as_a_whole() -> None:
    events = [connection(0), connection(1, src="10.10.23.91"), connection(30)]
    alerts = match(rule("suppress: 10m"), events)
    assert [a.evidence[0].line for a in alerts] == [1, 3]
    assert alerts[0].group == {}


def test_keys_compare_case_insensitively_as_correlation_groups_do() -> None:
    events = [
        connection(0, user={"name": "Watanabe"}),
        connection(1, user={"name": "WATANABE"}),
    ]
    alerts = match(rule("suppress: {window: 10m, fields: [user.name]}"), events)
    assert len(alerts) == 1
    assert alerts[0].group == {"user.name": "watanabe"}


def test_an_event_lacking_a_key_field_is_never_suppressed() -> None:
    events = [connection(0), connection(1), connection(2)]
    alerts = match(rule("suppress: {window: 10m, fields: [host.name]}"), events)
    assert len(alerts) == 3


def test_decided_in_event_time_before_and_after_an_alert() -> None:
    """An event read after a newer alert of its key (a slow partition) is
    judged against it: no second alert seconds before the first."""
    events = [connection(5), connection(0), connection(-6)]
    alerts = match(rule("suppress: {window: 10m, fields: [source.ip]}"), events)
    assert [a.evidence[0].line for a in alerts] == [1, 3]


def test_suppressed_alerts_are_counted_per_rule() -> None:
    seen: list[str] = []
    throttle = Throttle(on_suppress=seen.append)
    match(rule("suppress: 1h"), [connection(m) for m in range(5)], throttle)
    assert throttle.suppressed == {"5b0c1d2e-3f40-4a51-8c62-7d8e9fa0b1c2": 4}
    assert seen == ["5b0c1d2e-3f40-4a51-8c62-7d8e9fa0b1c2"] * 4


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("suppress: soon", "suppress window 'soon' is not a timespan like 30s, 10m, 1h"),
        (
            "suppress: {window: 10 minutes, fields: [source.ip]}",
            "suppress window '10 minutes' is not a timespan like 30s, 10m, 1h",
        ),
        ("suppress: [10m]", "suppress must be a timespan ('10m') or {window: 10m, fields: [...]}"),
        ("suppress: {fields: [source.ip]}", "suppress must be a timespan ('10m') or {window"),
        ("suppress: {window: 10m, fields: 5}", "suppress fields must be a list of field names"),
    ],
)
def test_a_bad_suppress_is_the_error_a_correlation_gets(attribute: str, message: str) -> None:
    with pytest.raises(RuleError) as detection:
        load(rule(attribute))
    assert message in str(detection.value)
    assert ":6: " in str(detection.value)  # the line of the attribute
    correlation = f"""
title: Repeated SMB
name: repeated_smb
{attribute}
correlation:
  type: event_count
  rules: [smb]
  group-by: [source.ip]
  timespan: 5m
  condition: {{gte: 2}}
---
title: SMB
name: smb
logsource: {{product: zonewatch, service: firewall}}
detection:
  selection: {{destination.port: 445}}
  condition: selection
"""
    ruleset = rules_from_yaml(correlation, pipeline="none")
    assert any(message in str(e) for e in ruleset.errors), ruleset.errors


# -- the zone-policy default ------------------------------------------------------

GENERATED = [ROOT / "rules" / "generated"]


def test_generated_zone_policy_rules_alert_once_per_host_and_zone_by_default() -> None:
    """Five identical forbidden core -> LGWAN connections: one critical alert."""
    alerts = match(GENERATED, [connection(m) for m in range(5)])
    policy = [a for a in alerts if a.rule_title.startswith("Zone Policy: Direct Traffic")]
    assert len(policy) == 1
    assert policy[0].level == "critical"
    assert policy[0].group == {"source.ip": "10.10.23.90", "zone.destination": "lgwan"}


def test_the_zone_policy_default_is_a_setting() -> None:
    events = [connection(m) for m in range(0, 50, 5)]

    def policy_alerts(cfg: CorrelatorSettings) -> int:
        alerts = match(GENERATED, events, throttle_from_settings(cfg))
        return sum(1 for a in alerts if a.rule_title.startswith("Zone Policy: Direct Traffic"))

    assert policy_alerts(CorrelatorSettings()) == 5  # 0, 10, 20, 30, 40
    assert policy_alerts(CorrelatorSettings(zone_policy_suppress="30m")) == 2
    assert policy_alerts(CorrelatorSettings(zone_policy_suppress="off")) == 10
    by_port = CorrelatorSettings(zone_policy_suppress_fields=["destination.port"])
    assert policy_alerts(by_port) == 5


def test_a_rules_own_suppress_wins_over_the_zone_policy_default() -> None:
    text = (ROOT / "rules" / "generated" / "policy_core_to_lgwan.yml").read_text()
    own = text.replace("level: critical", "level: critical\nsuppress: 1h")
    alerts = match(own, [connection(m) for m in range(0, 50, 5)], throttle_from_settings())
    assert [a.evidence[0].line for a in alerts] == [1]


def test_a_bad_zone_policy_setting_says_what_to_write() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a timespan like 30s, 10m, 1h, nor off"):
        CorrelatorSettings(zone_policy_suppress="10 minutes")


# -- exact across restarts ---------------------------------------------------------


def _decide(throttle: Throttle, events: list[tuple[str, float]], window: float) -> list[int]:
    """Indices of ``events`` (key, time) that alert."""
    return [i for i, (key, t) in enumerate(events) if throttle.admit("r", window, (key,), t)]


class _Rule:
    id = "r"
    generate = True
    zone_policy = False

    def __init__(self, window: float, fields: tuple[str, ...]) -> None:
        from correlator.detection.throttle import Suppression

        self.suppress = Suppression(window, fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gaps=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 400)), min_size=1, max_size=40),
    cut=st.data(),
)
def test_a_crash_anywhere_leaves_the_alerts_of_a_run_without_one(
    gaps: list[tuple[str, int]], cut: st.DataObject
) -> None:
    """The stream stores alerts batch by batch and its resume offsets less
    often. Crash after storing the alerts of the first ``stored`` events,
    restart from the resume point ``resume`` <= ``stored`` with a throttle
    rebuilt from every stored alert: the store ends as an uninterrupted run's."""
    window = 600.0
    events, t = [], 0.0
    for key, gap in gaps:
        t += gap
        events.append((key, t))
    clean = _decide(Throttle(), events, window)
    stored_upto = cut.draw(st.integers(0, len(events)), label="stored")
    resume = cut.draw(st.integers(0, stored_upto), label="resume")
    first = Throttle()
    stored = [i for i in _decide(first, events[:stored_upto], window)]
    rebuilt = Throttle()
    rows = [("r", {"k": events[i][0]}, float(events[i][1])) for i in stored]
    rebuilt.restore([_Rule(window, ("k",))], rows)
    replayed = [resume + i for i in _decide(rebuilt, events[resume:], window)]
    assert sorted(set(stored) | set(replayed)) == clean


def test_rebuild_reads_stored_groups_as_the_alerts_carry_them() -> None:
    """Through JSON, as the store keeps them: lists come back as lists."""
    text = rule("suppress: {window: 10m, fields: [source.ip, event.category]}")
    ruleset = load(text)
    first = list(run_offline([(1, connection(0))], ruleset, throttle=Throttle()))
    group = orjson.loads(orjson.dumps(first[0].group))
    assert group == {"source.ip": "10.10.23.90", "event.category": ["network"]}
    rebuilt = Throttle()
    assert rebuilt.restore(ruleset.detections, [(first[0].rule_id, group, BASE)]) == 1
    assert list(run_offline([(2, connection(5))], ruleset, throttle=rebuilt)) == []
    assert len(list(run_offline([(3, connection(10))], ruleset, throttle=rebuilt))) == 1


def test_memory_forgets_alerts_a_horizon_behind_the_rules_newest() -> None:
    throttle = Throttle(horizon_s=3600)
    for n in range(1000):
        throttle.admit("r", 60, (f"10.0.{n // 250}.{n % 250}",), n * 10.0)
    # 1000 keys over 10 000 s: only those of the last hour are remembered.
    assert 360 <= throttle.entries() <= 720
    # An event within the window of a forgotten alert alerts again.
    assert throttle.admit("r", 60, ("10.0.0.0",), 1.0)


def test_the_zone_policy_fields_take_a_comma_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zonewatch.config import Settings

    monkeypatch.setenv("ZONEWATCH_CORRELATOR__ZONE_POLICY_SUPPRESS", "30m")
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__ZONE_POLICY_SUPPRESS_FIELDS", "source.ip, user.name")
    cfg = Settings().correlator
    assert (cfg.zone_policy_suppress, cfg.zone_policy_suppress_fields) == (
        "30m",
        ["source.ip", "user.name"],
    )


def test_the_correlator_rebuilds_its_throttle_from_the_stream_alerts_it_stored(
    tmp_path: Path,
) -> None:
    """What ``correlate`` does on start (``service.restored_throttle``): the
    stream's stored alerts suppress what follows, hunt alerts do not, and
    what is suppressed is counted in Prometheus."""
    from dataclasses import replace

    from prometheus_client import REGISTRY

    from correlator.detection import detection_alert
    from correlator.service import restored_throttle
    from correlator.store import AlertStore
    from zonewatch.config import Settings
    from zonewatch.models import Evidence

    ruleset = load(rule("suppress: {window: 10m, fields: [source.ip]}"))

    def evidence(offset: int, minutes: float, src: str) -> Evidence:
        event = connection(minutes, src=src)
        when = BASE + timedelta(minutes=minutes)
        topic = "zonewatch.events.firewall"
        return Evidence(
            event_id=f"{topic}:0:{offset}", time=when, topic=topic, partition=0,
            offset=offset, line=None, event=event,
        )  # fmt: skip

    first = Throttle().alerts(ruleset.detections, evidence(1, 0, "10.10.23.90"), detection_alert)
    hunted = Throttle().alerts(ruleset.detections, evidence(2, 0, "10.10.23.91"), detection_alert)
    with AlertStore(tmp_path / "zonewatch.duckdb") as store:
        store.register_rules(ruleset.detections)
        store.write([*first, *(replace(a, origin="hunt") for a in hunted)])
        throttle = restored_throttle(Settings(), ruleset, store)
    rule_id = ruleset.detections[0].id

    def counted() -> float:
        value = REGISTRY.get_sample_value("zonewatch_detection_suppressed_total", {"rule": rule_id})
        return value or 0.0

    before = counted()
    later = [
        evidence(3, 4, "10.10.23.90"),  # within 10 min of the stored stream alert
        evidence(4, 5, "10.10.23.91"),  # only a hunt alert before: alerts
        evidence(5, 11, "10.10.23.90"),
    ]
    raised = [a for e in later for a in throttle.alerts(ruleset.detections, e, detection_alert)]
    assert [a.evidence[0].offset for a in raised] == [4, 5]
    assert counted() == before + 1
