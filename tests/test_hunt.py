"""Retro-hunt over the events archive equals streaming the same day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from kafka.structs import TopicPartition

from correlator.hunt import _ArchiveConsumer, _Record, run_hunt
from correlator.store import AlertStore, ArchivedEvent
from tests.conftest import ROOT
from zonewatch.app.cli import main
from zonewatch.config import Settings

RULES = ROOT / "tests" / "rules"  # fixed rules: the shipped pack may evolve
DAY = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # 09:00 JST
TOPIC = "zonewatch.events.firewall"


def fw(minute: float, src: str, dst: str, crossing: str, outcome: str) -> dict[str, Any]:
    zsrc, zdst = crossing.split("->")
    return {
        "@timestamp": (DAY + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z"),
        "event": {"dataset": "firewall.panos", "outcome": outcome, "kind": "event",
                  "action": "allow" if outcome == "success" else "deny"},
        "source": {"ip": src, "port": 50000},
        "destination": {"ip": dst, "port": 445},
        "user": {"name": "suzuki@city.example.lg.jp"},
        "zone": {"source": zsrc, "destination": zdst, "crossing": crossing},
        "observer": {"vendor": "Palo Alto Networks", "product": "PAN-OS"},
    }  # fmt: skip


def day_of_events() -> list[tuple[int, int, dict[str, Any]]]:
    """(partition, offset, event): a direct core->LGWAN success, a burst of six
    denied crossings from one host (the correlation fires), quiet traffic."""
    events: list[tuple[int, int, dict[str, Any]]] = []
    offsets = {0: 0, 1: 0}

    def add(partition: int, event: dict[str, Any]) -> None:
        events.append((partition, offsets[partition], event))
        offsets[partition] += 1

    add(0, fw(1, "10.20.1.15", "10.40.0.8", "core->lgwan", "success"))
    for k in range(6):
        add(1, fw(10 + k * 0.5, "10.20.3.77", "10.60.0.2", "core->mynumber", "failure"))
    for k in range(4):  # four denies only: under the threshold
        add(0, fw(30 + k, "10.20.9.9", "10.40.0.9", "core->lgwan", "failure"))
    add(0, fw(50, "10.20.1.16", "203.0.113.10", "core->internet", "success"))
    return events


def stream(db: Path, events: list[tuple[int, int, dict[str, Any]]], batch: int = 4) -> set[str]:
    """What the stream loop stores for these records, polled in small batches
    (the records Kafka would hand over, without a broker)."""
    from correlator.service import load_ruleset, make_correlation_engine
    from correlator.stream import StreamCorrelator

    polls = []
    for start in range(0, len(events), batch):
        polled: dict[TopicPartition, list[_Record]] = {}
        for partition, offset, event in events[start : start + batch]:
            polled.setdefault(TopicPartition(TOPIC, partition), []).append(
                _Record(TOPIC, partition, offset, orjson.dumps(event))
            )
        polls.append(polled)
    settings = Settings()
    ruleset = load_ruleset([RULES], "ecs")
    with AlertStore(db) as store:
        consumer = _ArchiveConsumer(iter(polls))
        loop = StreamCorrelator(
            settings, ruleset, store,
            correlation=make_correlation_engine(ruleset, settings, None),
            consumer=consumer, finite=True,
        )  # fmt: skip
        consumer.loop = loop
        loop.run(end_of_input=True)
        return {r[0] for r in store.query("SELECT id FROM alerts")[1]}


def archive(db: Path, events: list[tuple[int, int, dict[str, Any]]]) -> None:
    with AlertStore(db) as store:
        store.write(
            [],
            events=[
                ArchivedEvent(f"{TOPIC}:{p}:{o}", TOPIC, p, o,
                              datetime.fromisoformat(e["@timestamp"]), e)
                for p, o, e in events
            ],
        )  # fmt: skip


def test_hunting_a_day_equals_streaming_it(tmp_path: Path) -> None:
    events = day_of_events()
    streamed = stream(tmp_path / "streamed.duckdb", events)
    hunted_db = tmp_path / "hunted.duckdb"
    archive(hunted_db, events)
    result = run_hunt(hunted_db, [RULES], pipeline="ecs")
    assert result.events == len(events)
    with AlertStore(hunted_db, read_only=True) as store:
        _, rows = store.query("SELECT id, rule_title, origin, type FROM alerts ORDER BY first_seen")
    assert {r[0] for r in rows} == streamed
    assert {r[2] for r in rows} == {"hunt"}
    titles = [r[1] for r in rows]
    assert "Direct Traffic From Core Into LGWAN or My Number Zone" in titles
    assert "Repeated Denied Cross-Zone Connections From One Host" in titles
    assert result.new_alerts == len(rows) > 0


def test_hunt_over_a_streamed_day_stores_nothing_twice_and_sends_nothing(tmp_path: Path) -> None:
    db = tmp_path / "zonewatch.duckdb"
    events = day_of_events()
    streamed = stream(db, events)  # the stream loop archives what it consumes
    with AlertStore(db, read_only=True) as store:
        assert store.query("SELECT count(DISTINCT event_id), count(*) FROM events")[1] == [
            (len(events), len(events))
        ]
    result = run_hunt(db, [RULES])
    assert result.alerts == len(streamed) and result.new_alerts == 0
    with AlertStore(db, read_only=True) as store:
        assert store.query("SELECT count(*) FROM alerts WHERE origin = 'hunt'")[1] == [(0,)]
        # the live correlator's offsets are untouched by a hunt
        expected = {}
        for partition, offset, _ in events:
            expected[(TOPIC, partition)] = max(expected.get((TOPIC, partition), 0), offset + 1)
        assert store.load_offsets() == expected


def test_hunt_window_limits_the_events(tmp_path: Path) -> None:
    db = tmp_path / "zonewatch.duckdb"
    archive(db, day_of_events())
    # 09:05-09:20 JST: only the burst of denies
    result = run_hunt(db, [RULES], since="2026-11-02T00:05:00Z", until="2026-11-02T00:20:00Z")
    assert result.events == 6
    with AlertStore(db, read_only=True) as store:
        titles = {r[0] for r in store.query("SELECT rule_title FROM alerts")[1]}
    assert titles == {"Repeated Denied Cross-Zone Connections From One Host"}


def test_hunt_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "zonewatch.duckdb"
    archive(db, day_of_events())
    try:
        main(["hunt", "--rules", str(RULES), "--db", str(db), "--since", "2026-11-02"])
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr().out
    assert f"hunted {len(day_of_events())} events" in out and "new alerts stored" in out


def test_hunt_needs_the_store_to_itself(tmp_path: Path) -> None:
    import subprocess
    import sys

    from zonewatch.errors import StoreError

    db = tmp_path / "zonewatch.duckdb"
    archive(db, day_of_events())
    hold = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="hunt a copy"):
            run_hunt(db, [RULES])
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


@pytest.mark.integration
def test_hunting_a_day_equals_streaming_it_from_kafka(tmp_path: Path, kafka_settings) -> None:
    import uuid

    from correlator.service import CorrelatorService
    from zonewatch.config import CorrelatorSettings
    from zonewatch.kafka import ensure_topics, make_producer

    events = day_of_events()
    ensure_topics(kafka_settings)
    topic = kafka_settings.events_topic("firewall")
    producer = make_producer(kafka_settings)
    for partition, _offset, event in events:
        producer.send(topic, value=orjson.dumps(event), partition=partition)
    producer.flush()
    producer.close()
    settings = Settings(
        kafka=kafka_settings,
        correlator=CorrelatorSettings(
            rules=[RULES], db_path=tmp_path / "live.duckdb", group_id=f"zw-{uuid.uuid4().hex[:8]}"
        ),
    )
    with CorrelatorService(settings) as service:
        service.start()
        service.run(until=lambda s: s.consumed >= len(events), end_of_input=True)
        streamed = {r[0] for r in service.store.query("SELECT id FROM alerts")[1]}
        # the archive of what was consumed, as the stream would keep it
        _, rows = service.store.query(
            'SELECT DISTINCT topic, "partition", "offset" FROM alert_evidence'
        )
    hunted_db = tmp_path / "hunted.duckdb"
    with AlertStore(hunted_db) as store:
        store.write(
            [],
            events=[
                ArchivedEvent(f"{topic}:{p}:{o}", topic, p, o,
                              datetime.fromisoformat(e["@timestamp"]), e)
                for p, o, e in events
            ],
        )  # fmt: skip
    run_hunt(hunted_db, [RULES], settings=settings)
    with AlertStore(hunted_db, read_only=True) as store:
        hunted = {r[0] for r in store.query("SELECT id FROM alerts")[1]}
    assert streamed and hunted == streamed
    assert {(t, p, o) for t, p, o in rows} <= {(topic, p, o) for p, o, _ in events}
