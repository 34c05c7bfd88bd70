"""One line dated 9999 must not turn correlation off (issue #20, point 2),
through the embedded broker.

``zonewatch ingest`` dead-letters it. A producer that does not check (an
older connector, another tool) gets it into the events topic anyway: the
correlator flags it, keeps it out of correlation, and the correlations after
it still fire, also after a restart over a state written before the bounds
existed. ``/metrics`` tells the truth about lateness and lag meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition
from structlog.testing import capture_logs
from test_event_time import fortigate, fortigate_dated

from connectors.ingest import ingest_file
from connectors.inputs import Record
from connectors.pipeline import Pipeline
from zonewatch.config import KafkaSettings, Settings
from zonewatch.kafka import ensure_topics, make_producer
from zonewatch.zones import load_zone_map

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

RULES = """
title: Denied crossing into LGWAN
id: 7b1d2e3f-0000-4000-8000-000000000001
name: denied_into_lgwan
logsource: {product: zonewatch, service: firewall}
detection:
  sel: {zone.crossing: core->lgwan, event.outcome: failure}
  condition: sel
level: low
---
title: Repeated denied crossings into LGWAN
id: 7b1d2e3f-0000-4000-8000-000000000002
correlation:
  type: event_count
  rules: [denied_into_lgwan]
  group-by: [source.ip]
  timespan: 5m
  condition: {gte: 3}
level: high
---
title: SMB towards the LGWAN file server
id: 7b1d2e3f-0000-4000-8000-000000000003
logsource: {product: zonewatch, service: firewall}
detection:
  sel: {destination.ip: 10.200.8.15, destination.port: 445}
  condition: sel
level: medium
"""
BURST = "Repeated denied crossings into LGWAN"


def settings_for(kafka: KafkaSettings, tmp_path: Path, **correlator: object) -> Settings:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    return Settings().updated(
        kafka=kafka,
        correlator={
            "rules": [rules],
            "db_path": tmp_path / "alerts.duckdb",
            "group_id": f"{kafka.topic_prefix}-correlator",
            "metrics_port": 0,
            "checkpoint_interval_s": 0.5,
            **correlator,
        },
        connectors={
            "zones_file": ROOT / "rules" / "zones.yaml",
            "checkpoint_dir": tmp_path / "checkpoints",
        },
    )


def read_topic(kafka: KafkaSettings, topic: str, expect: int) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=None)
    consumer.assign([TopicPartition(topic, p) for p in range(kafka.partitions)])
    consumer.seek_to_beginning()
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < expect and time.monotonic() < deadline:
        values += [r.value for rs in consumer.poll(200).values() for r in rs]
    consumer.close()
    return values


@pytest.mark.parametrize("worker", [False, True], ids=["inline", "parse-worker"])
def test_ingest_sends_lines_dated_9999_and_0001_to_the_dead_letters(
    kafka_settings: KafkaSettings, tmp_path: Path, worker: bool
) -> None:
    settings = settings_for(kafka_settings, tmp_path)
    now = datetime.now(UTC)
    log = tmp_path / "fortigate.log"
    lines = [
        fortigate(now - timedelta(minutes=2)),
        fortigate_dated("9999-12-31"),
        fortigate(now),
        fortigate_dated("0001-01-01"),
    ]
    log.write_text("\n".join(lines) + "\n")
    stats = ingest_file(settings, "firewall", "fortigate", log, parse_worker=worker)
    assert (stats.read, stats.produced, stats.dead_lettered) == (4, 2, 2)
    letters = [
        orjson.loads(v) for v in read_topic(kafka_settings, settings.kafka.deadletter_topic, 2)
    ]
    assert sorted(letter["raw"] for letter in letters) == sorted([lines[1], lines[3]])
    reasons = sorted(letter["reason"] for letter in letters)
    assert "max_past_horizon_days=366" in reasons[0] and "0001-01-01" in reasons[0]
    assert "max_future_skew_s=300" in reasons[1] and "9999-12-31" in reasons[1]
    events = read_topic(kafka_settings, settings.kafka.events_topic("firewall"), 2)
    assert len(events) == 2


def events_of(lines: list[str]) -> list[dict[str, Any]]:
    """ECS events as a connector that does not bound event time sends them."""
    pipeline = Pipeline("firewall", "fortigate", zones=load_zone_map(ROOT / "rules" / "zones.yaml"))
    out = []
    for line in lines:
        events, letter = pipeline.handle(Record(line.encode()))
        assert letter is None
        out += events
    return out


def produce(kafka: KafkaSettings, events: list[dict[str, Any]]) -> None:
    producer = make_producer(kafka)
    for event in events:  # keyed by source IP, as the connectors do: one partition
        producer.send(
            kafka.events_topic("firewall"),
            key=event["source"]["ip"].encode(),
            value=orjson.dumps(event),
        )
    producer.flush()
    producer.close()


def wait_for(what: Callable[[], Any], timeout_s: float = 60, why: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting: {why}")


@contextmanager
def correlator(settings: Settings) -> Iterator[Any]:
    from correlator.service import CorrelatorService

    with CorrelatorService(settings) as service:
        service.start()
        assert service.loop is not None
        runner = threading.Thread(target=service.run, daemon=True)
        runner.start()
        try:
            yield service
        finally:
            service.loop.stop()
            runner.join(30)


def metric(service: Any, name: str) -> float:
    text = httpx.get(f"{service.metrics.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def titles(service: Any) -> list[str]:
    return [r[0] for r in service.store.query("SELECT rule_title FROM alerts ORDER BY 1")[1]]


def test_an_event_dated_9999_is_flagged_and_correlation_goes_on(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    # A short lateness: a quiet input moves the watermark on from its newest
    # event at the wall clock's pace, so the burst below (delivered minutes
    # after its time) is applied once its input has been quiet that long.
    settings = settings_for(kafka_settings, tmp_path, allowed_lateness_s=5)
    ensure_topics(kafka_settings)
    oob = 'zonewatch_correlator_out_of_bounds_events_total{bound="future"}'
    late_total = "zonewatch_correlator_late_events_total"
    lag = "zonewatch_correlator_event_lag_seconds"
    now = datetime.now(UTC).replace(microsecond=0)
    with correlator(settings) as service:
        before = metric(service, oob), metric(service, late_total)
        # The attacker's lines, through a producer that does not check. Year
        # 1 moves no watermark (the correlator has no past horizon unless
        # asked), year 9999 would.
        produce(
            kafka_settings, events_of([fortigate_dated(d) for d in ("0001-01-01", "9999-12-31")])
        )
        wait_for(lambda: metric(service, oob) == before[0] + 1, why="the 9999 event flagged")
        wait_for(lambda: len(titles(service)) == 2, why="their own detection alerts")
        # Then a burst of denies from one host, and one more 10 minutes old
        # (late for its partition: the burst came first).
        start = now - timedelta(minutes=3)
        lines = [fortigate(start + timedelta(seconds=20 * i)) for i in range(3)]
        lines.append(fortigate(start - timedelta(minutes=10)))
        produce(kafka_settings, events_of(lines))
        wait_for(lambda: BURST in titles(service), why="the burst correlated")
        wait_for(lambda: metric(service, late_total) == before[1] + 1, why="one late event counted")
        # Lag: the wall clock less the newest in-bounds event (start + 40 s).
        expected = time.time() - (start + timedelta(seconds=40)).timestamp()
        assert expected - 5 <= metric(service, lag) <= expected + 5
        rows = service.store.query(
            "SELECT rule_title, tags, first_seen FROM alerts ORDER BY first_seen DESC"
        )[1]
    far = [r for r in rows if r[2].year == 9999]
    assert [r[0] for r in far] == ["SMB towards the LGWAN file server"]
    assert "zonewatch.event_time_out_of_bounds" in far[0][1]
    assert [r[0] for r in rows if r[2].year == 1] == ["SMB towards the LGWAN file server"]
    assert all("zonewatch.event_time_out_of_bounds" not in r[1] for r in rows if r[2].year != 9999)
    assert sum(1 for r in rows if r[0] == BURST) == 1

    # After a restart the next burst correlates too (applied once the wall
    # clock is the allowed lateness past it: every input caught up and quiet);
    # with a past horizon set, year 1 is flagged as well.
    past = 'zonewatch_correlator_out_of_bounds_events_total{bound="past"}'
    restarted = settings_for(
        kafka_settings, tmp_path, max_past_horizon_days=30, allowed_lateness_s=5
    )
    with correlator(restarted) as service:
        flagged = metric(service, past)
        # Newer than what the first run read: the restarted correlator may
        # find every input caught up and quiet before they arrive, and time
        # moves its watermark on from there.
        later = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=45)
        lines = [fortigate_dated("0001-01-01")]
        lines += [fortigate(later + timedelta(seconds=i)) for i in range(3)]
        produce(kafka_settings, events_of(lines))
        wait_for(lambda: titles(service).count(BURST) == 2, why="correlation after the restart")
        wait_for(lambda: metric(service, past) == flagged + 1, why="year 1 flagged")


def test_a_stored_clock_in_year_9999_is_cut_back_at_restart(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    ensure_topics(kafka_settings)
    # A correlator with no effective bound stores what one before the fix
    # stored: its state's clock in year 9999.
    unbounded = settings_for(kafka_settings, tmp_path, max_future_skew_s=1e12)
    with correlator(unbounded) as service:
        produce(kafka_settings, events_of([fortigate_dated("9999-12-31")]))
        wait_for(lambda: titles(service), why="the 9999 event consumed")
        wait_for(lambda: not len(service.loop.stage.merger), why="the 9999 event correlated")
        # One more record, so that the stop stores the engine's state with it.
        produce(kafka_settings, events_of([fortigate(datetime.now(UTC), action="accept")]))
        wait_for(lambda: service.loop.stats.consumed == 2, why="the second record consumed")
    settings = settings_for(kafka_settings, tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    with capture_logs() as logs, correlator(settings) as service:
        produce(
            kafka_settings,
            events_of([fortigate(now - timedelta(seconds=90 + i)) for i in range(3)]),
        )
        wait_for(
            lambda: BURST in titles(service), timeout_s=90, why="correlation after the restart"
        )
    clamped = [e for e in logs if e["event"] == "correlation_clock_clamped"]
    assert clamped and clamped[0]["log_level"] == "warning", [e["event"] for e in logs]
    assert clamped[0]["clock_was"].startswith("9999-12-31")
