"""Late events within ``late_horizon_s`` still correlate, and say so (issue #17).

An event behind its watermark by at most the horizon is applied to its
windows out of order (the windows are kept that much longer); an alert it
completes carries ``late: true`` into the store (``alerts.late``) and the
Teams card. Further behind it is counted (``late_dropped``) and dropped.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from correlator.alerting.card import teams_card
from correlator.correlation import CorrelationEngine, CorrelationSettings
from correlator.correlation.yaml_rules import load_rules_text
from correlator.store import AlertStore
from correlator.store.read import load_alerts
from zonewatch.models import Alert, Evidence

RULES = """
title: Denied crossing
id: 6d1f2a90-0000-4000-8000-000000000001
name: denied
logsource: {product: zonewatch, service: firewall}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Three denied crossings
id: 6d1f2a90-0000-4000-8000-000000000002
correlation: {type: event_count, rules: [denied], group-by: [source.ip], timespan: 10m,
              condition: {gte: 3}}
level: high
"""
DENIED = "6d1f2a90-0000-4000-8000-000000000001"
BASE = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _item(i: int, at: datetime, ip: str = "10.0.0.1"):
    event = {"source": {"ip": ip}, "event": {"outcome": "failure"}}
    return ([DENIED], event, Evidence(event_id=f"fw:0:{i}", time=at, offset=i), at.timestamp())


def _engine(horizon: float) -> CorrelationEngine:
    loaded = load_rules_text(RULES)
    return CorrelationEngine(
        loaded.correlations,
        loaded.resolve,
        CorrelationSettings(allowed_lateness_s=0, late_horizon_s=horizon),
    )


def _run(engine: CorrelationEngine, behind_s: float) -> list[Alert]:
    """Two on-time denials 1 min apart, the clock 30 min on (another host),
    then a third denial of the first host, late: 1 min after the second, and
    ``behind_s`` behind the watermark when it arrives."""
    out = engine.process_many(
        [
            _item(0, BASE),
            _item(1, BASE + timedelta(minutes=1)),
            _item(2, BASE + timedelta(minutes=2) + timedelta(seconds=behind_s), ip="10.9.9.9"),
        ]
    )
    late_at = BASE + timedelta(minutes=2)
    hits, event, evidence, t = _item(3, late_at)
    watermark = t + behind_s
    return out + engine.process_late([(hits, event, evidence, t, watermark)])


def test_a_late_event_within_the_horizon_completes_its_window_and_the_alert_says_late():
    engine = _engine(horizon=3600)
    alerts = _run(engine, behind_s=1800)  # its window expired 20 min ago: kept open
    (alert,) = alerts
    assert alert.late is True
    assert [e.event_id for e in alert.evidence] == ["fw:0:0", "fw:0:1", "fw:0:3"]
    assert engine.stats.late_events == engine.stats.late_applied == 1
    assert engine.stats.late_dropped == 0


def test_a_late_event_beyond_the_horizon_is_counted_and_dropped():
    engine = _engine(horizon=600)
    assert _run(engine, behind_s=1800) == []
    assert engine.stats.late_events == engine.stats.late_dropped == 1
    assert engine.stats.late_applied == 0


def test_without_a_horizon_late_events_are_dropped_as_before():
    engine = _engine(horizon=0)
    assert _run(engine, behind_s=1800) == []
    assert engine.stats.late_dropped == 1


def test_on_time_alerts_are_not_late_and_a_late_record_survives_a_snapshot():
    engine = _engine(horizon=3600)
    on_time = engine.process_many([_item(i, BASE + timedelta(seconds=i)) for i in range(3)])
    assert [a.late for a in on_time] == [False]
    # A late record held in a window restores as late.
    engine.process_many([_item(9, BASE + timedelta(hours=1))])
    hits, event, evidence, t = _item(10, BASE + timedelta(minutes=5))
    assert engine.process_late([(hits, event, evidence, t, t + 60)]) == []
    loaded = load_rules_text(RULES)
    back = CorrelationEngine.restore(
        engine.snapshot(), loaded.correlations, loaded.resolve, engine.settings
    )
    more = [
        _item(11 + i, BASE + timedelta(minutes=5, seconds=1 + i)) for i in range(2)
    ]  # late too: the watermark is at BASE + 1 h
    out = back.process_late([(*item, item[3] + 60) for item in more])
    assert [a.late for a in out] == [True]


def test_the_store_keeps_the_late_flag_and_the_card_shows_it(tmp_path: Path):
    (alert,) = _run(_engine(horizon=3600), behind_s=1800)
    on_time = replace(alert, id="on-time", late=False)
    with AlertStore(tmp_path / "alerts.duckdb") as store:
        store.write([alert, on_time])
        rows = store.query("SELECT id, late FROM alerts ORDER BY id")[1]
        assert sorted(rows) == sorted([(alert.id, True), ("on-time", False)])
        back = load_alerts(store._con.cursor(), [alert.id])
        assert back[alert.id][0].late is True
    card = str(teams_card(alert, locale="en"))
    assert "arrived late" in card
    assert "arrived late" not in str(teams_card(on_time, locale="en"))
