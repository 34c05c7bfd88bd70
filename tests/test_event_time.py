"""Event time bounded against the clock (issue #20, point 2), without a broker.

The connector side: ``zonewatch ingest`` dead-letters lines stamped beyond
``max_future_skew_s`` ahead of its clock or ``max_past_horizon_days`` behind
it, naming the bound. The engine side: a restored state whose clock is in
year 9999 (written before the bounds existed) is cut back, and events the
stream found late for their input are counted and move no watermark.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from connectors.inputs import Record
from connectors.pipeline import make_pipeline
from connectors.timegate import EventTimeGate
from connectors.timeparse import format_utc
from correlator.correlation import CorrelationEngine, CorrelationSettings
from correlator.correlation.timeline import Hit, event_of
from correlator.correlation.yaml_rules import load_rules_text
from zonewatch.config import Settings
from zonewatch.models import Evidence
from zonewatch.timebounds import DAY_S, TimeBounds

ROOT = Path(__file__).resolve().parent.parent
JST = timezone(timedelta(hours=9))


def fortigate(at: datetime, action: str = "deny") -> str:
    """A FortiOS 7.x traffic log as the device sends it (key=value, local
    date and time with the device's tz offset, eventtime in nanoseconds)."""
    local = at.astimezone(JST)
    return (
        f'date={local:%Y-%m-%d} time={local:%H:%M:%S} devname="city-fw01" '
        f'devid="FG200FTK23004711" eventtime={int(at.timestamp()) * 10**9} tz="+0900" '
        'logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" '
        'srcip=10.10.23.90 srcport=51544 srcintf="core" srcintfrole="lan" '
        'dstip=10.200.8.15 dstport=445 dstintf="lgwan" dstintfrole="lan" '
        f'sessionid=81723 proto=6 action="{action}" policyid=77 policytype="policy" '
        'service="SMB" duration=0 sentbyte=0 rcvdbyte=0'
    )


def fortigate_dated(day: str) -> str:
    """A FortiOS line with a literal date (years a datetime cannot hold)."""
    return fortigate(datetime(2026, 1, 1, tzinfo=UTC)).replace("date=2026-01-01", f"date={day}")


def ingest_pipeline(tmp_path: Path, source: str, fmt: str, **connectors: object):
    settings = Settings().updated(
        connectors={
            "zones_file": ROOT / "rules" / "zones.yaml",
            "checkpoint_dir": tmp_path,
            **connectors,
        }
    )
    return make_pipeline(settings, source, fmt, bounded=True)


# -- connectors --------------------------------------------------------------------


def test_ingest_dead_letters_lines_dated_9999_and_0001_naming_the_bound(tmp_path: Path) -> None:
    pipeline = ingest_pipeline(tmp_path, "firewall", "fortigate")
    for day, bound, setting in (
        ("9999-12-31", "max_future_skew_s=300 s", "ZONEWATCH_CONNECTORS__MAX_FUTURE_SKEW_S"),
        ("0001-01-01", "max_past_horizon_days=366", "ZONEWATCH_CONNECTORS__MAX_PAST_HORIZON_DAYS"),
    ):
        line = fortigate_dated(day)
        events, letter = pipeline.handle(Record(line.encode(), position=7))
        assert events == []
        assert letter is not None and letter.raw == line and letter.position == 7
        assert letter.reason.startswith("event time out of bounds: @timestamp ")
        assert bound in letter.reason and setting in letter.reason
    assert pipeline.stats.dead_lettered == 2
    assert pipeline.stats.reasons["event time out of bounds"] == 2


def test_ingest_accepts_device_clock_skew_and_backfills_within_the_horizon(
    tmp_path: Path,
) -> None:
    pipeline = ingest_pipeline(tmp_path, "firewall", "fortigate")
    now = datetime.now(UTC)
    kept = {
        "now": now,
        "4 min ahead": now + timedelta(minutes=4),
        "yesterday": now - timedelta(days=1),
        "300 days ago": now - timedelta(days=300),
    }
    for name, at in kept.items():
        events, letter = pipeline.handle(Record(fortigate(at).encode()))
        assert letter is None, name
        assert len(events) == 1 and events[0]["event"]["outcome"] == "failure", name
    for name, at in {
        "7 min ahead": now + timedelta(minutes=7),
        "400 days ago": now - timedelta(days=400),
    }.items():
        events, letter = pipeline.handle(Record(fortigate(at).encode()))
        assert events == [] and letter is not None, name


def test_the_bounds_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZONEWATCH_CONNECTORS__MAX_PAST_HORIZON_DAYS", "off")
    monkeypatch.setenv("ZONEWATCH_CONNECTORS__MAX_FUTURE_SKEW_S", "3600")
    settings = Settings()
    assert settings.connectors.max_past_horizon_days is None
    gate = EventTimeGate.from_settings(settings.connectors)
    now = datetime.now(UTC)
    old = [{"@timestamp": "0001-01-01T00:00:00.000Z"}]
    assert gate.split(old) == (old, None)  # a replay of old logs, asked for
    soon = [{"@timestamp": format_utc(now + timedelta(minutes=50))}]
    assert gate.split(soon) == (soon, None)
    later = [{"@timestamp": format_utc(now + timedelta(minutes=70))}]
    assert gate.split(later)[0] == []


def test_a_graph_page_keeps_its_records_in_bounds_and_dead_letters_the_line(
    tmp_path: Path,
) -> None:
    """One Graph page (deviceManagement/auditEvents) holds several records."""
    now = datetime.now(UTC)

    def audit(i: int, at: str) -> dict[str, object]:
        return {
            "id": f"8d3c6f1e-5b1a-4c1e-9f7a-00000000000{i}",
            "displayName": "Patch DeviceCompliancePolicy",
            "componentName": "DeviceCompliancePolicy",
            "activity": "Patch DeviceCompliancePolicy",
            "activityDateTime": at,
            "activityType": "Patch DeviceCompliancePolicy",
            "activityOperationType": "Patch",
            "activityResult": "Success",
            "correlationId": "2b4f4a6c-1d1c-4a5e-8f6e-3c2d1b0a9e8f",
            "category": "Compliance",
            "actor": {"userPrincipalName": "admin@city.example.lg.jp", "ipAddress": "10.10.5.20"},
            "resources": [{"displayName": "Windows minimum build", "type": "Policy"}],
        }

    page = {
        "value": [
            audit(1, (now - timedelta(minutes=3)).isoformat()),
            audit(2, "9999-12-31T23:59:59Z"),
            audit(3, now.isoformat()),
        ]
    }
    pipeline = ingest_pipeline(tmp_path, "intune", "graph")
    events, letter = pipeline.handle(Record(orjson.dumps(page)))
    assert [e["event"]["id"] for e in events] == [page["value"][0]["id"], page["value"][2]["id"]]
    assert letter is not None and "(1 of the record's 3 events)" in letter.reason
    assert (pipeline.stats.produced, pipeline.stats.dead_lettered) == (2, 1)


NOW = datetime(2026, 12, 6, 4, 0, 0, 123456, tzinfo=UTC).timestamp()
BOUNDS = TimeBounds(max_future_skew_s=300.0, max_past_horizon_s=366 * DAY_S)


@given(
    st.one_of(
        st.datetimes(
            min_value=datetime(1, 1, 1),
            max_value=datetime(9999, 12, 31, 23, 59, 59),
            timezones=st.just(UTC),
        ),
        # near the edges, where the quick text comparison must agree exactly
        st.sampled_from([NOW + 300, NOW - 366 * DAY_S]).flatmap(
            lambda edge: st.floats(-2.0, 2.0).map(lambda d: datetime.fromtimestamp(edge + d, UTC))
        ),
    ),
    st.sampled_from([UTC, JST, timezone(timedelta(hours=-5))]),
    st.booleans(),
    st.floats(0.0, 0.999),
)
@example(datetime.fromtimestamp(NOW + 300, UTC), UTC, True, 0.0)
@example(datetime.fromtimestamp(NOW - 366 * DAY_S + 1, UTC), UTC, True, 0.999)
def test_the_gate_agrees_with_the_exact_bound(
    at: datetime, tz: timezone, canonical: bool, fraction: float
) -> None:
    now = int(NOW) + fraction
    stamp = format_utc(at) if canonical else at.astimezone(tz).isoformat()
    gate = EventTimeGate(BOUNDS, clock=lambda: now)
    kept, reason = gate.split([{"@timestamp": stamp}])
    exact = datetime.fromisoformat(stamp).timestamp()
    assert (kept != []) == (BOUNDS.check(exact, now) is None)
    assert (reason is None) == (kept != [])


# -- the engine ----------------------------------------------------------------------

RULES = """
title: Denied crossing
id: 6a0c1f2e-0000-4000-8000-000000000001
name: denied
logsource: {product: zonewatch, service: firewall}
detection: {sel: {event.outcome: failure}, condition: sel}
---
title: Repeated denied crossings
id: 6a0c1f2e-0000-4000-8000-000000000002
correlation:
  type: event_count
  rules: [denied]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 3}
level: high
"""
LOADED = load_rules_text(RULES)
DENIED = LOADED.resolve("denied").id  # type: ignore[union-attr]


def denied(at: datetime, n: int, ip: str = "10.10.23.90") -> tuple:
    base = datetime(1970, 1, 1, tzinfo=UTC)
    hit = Hit((at - base).total_seconds(), [DENIED], {"source.ip": ip}, event_id=f"fw:0:{n}")
    event = event_of(hit, base)
    evidence = Evidence(event_id=hit.event_id or "", time=at, event=event)
    return [DENIED], event, evidence, at.timestamp()


def burst(engine: CorrelationEngine, start: datetime, first: int) -> list:
    alerts = engine.process_many(
        [denied(start + timedelta(seconds=10 * i), first + i) for i in range(3)]
    )
    return alerts + engine.advance_watermark(0, start + timedelta(minutes=5))


def test_a_restored_clock_in_year_9999_is_cut_back_and_correlation_resumes() -> None:
    settings = CorrelationSettings(allowed_lateness_s=60)
    engine = CorrelationEngine(LOADED.correlations, LOADED.resolve, settings)
    now = datetime.now(UTC).replace(microsecond=0)
    assert len(burst(engine, now - timedelta(hours=1), 0)) == 1
    # What an unbounded stream let through before the fix: one event in 9999.
    engine.process_many([denied(datetime(9999, 12, 31, 23, 59, tzinfo=UTC), 10)])
    stuck = CorrelationEngine.restore(
        engine.snapshot(), LOADED.correlations, LOADED.resolve, settings
    )
    assert burst(stuck, now - timedelta(minutes=30), 20) == []  # every event late
    assert stuck.stats.late_events == 3

    restored = CorrelationEngine.restore(
        engine.snapshot(), LOADED.correlations, LOADED.resolve, settings
    )
    with capture_logs() as logs:
        dropped = restored.clamp_clock(now.timestamp() + 300)
    assert dropped == 1 and restored.stats.clock_clamped == 1
    clamped = [e for e in logs if e["event"] == "correlation_clock_clamped"]
    assert len(clamped) == 1 and clamped[0]["log_level"] == "warning"
    assert clamped[0]["clock_was"].startswith("9999-12-31")
    alerts = burst(restored, now - timedelta(minutes=30), 20)
    assert [a.rule_title for a in alerts] == ["Repeated denied crossings"]
    assert restored.stats.late_events == 0
    # A clock within the bound is left alone.
    assert restored.clamp_clock(now.timestamp() + 300) == 0


def test_events_late_for_their_input_are_counted_and_move_no_watermark() -> None:
    for update, fired in ((False, 0), (True, 1)):
        settings = CorrelationSettings(allowed_lateness_s=60, late_events_update_windows=update)
        engine = CorrelationEngine(LOADED.correlations, LOADED.resolve, settings)
        start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        engine.process_many([denied(start + timedelta(seconds=s), s) for s in (0, 10)])
        before = engine.metrics()["watermarks"]
        hits, event, evidence, t = denied(start + timedelta(seconds=20), 99)
        with capture_logs() as logs:
            alerts = engine.process_late([(hits, event, evidence, t, t + 500.0)])
        assert engine.stats.late_events == 1
        assert engine.metrics()["watermarks"] == before
        assert [e["behind_s"] for e in logs if e["event"] == "correlation_late_event"] == [500.0]
        alerts += engine.advance_watermark(0, start + timedelta(minutes=10))
        assert len(alerts) == fired
