"""``<prefix>.alerts``: every stored alert and triage change, once, as JSON
keyed by alert id, through the embedded broker; after repeated ``kill -9``
the topic holds exactly the alerts the store holds."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from correlator.alerting.publish import (
    FLOOR_KEY,
    HEADER_SEQ,
    HEADER_STORE,
    AlertPublisher,
    partition_of,
)
from correlator.store import AlertStore
from tests.test_crash_recovery import (
    RULES,
    SEED,
    Correlator,
    make_workload,
    run_to_end,
)
from zonewatch.config import KafkaSettings
from zonewatch.models import Alert, Evidence

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)

# One alert per core -> VDI connection (a quarter of the noise): thousands of
# alerts, so kills land while the publisher has some to produce.
NOISY = """
---
title: Publish test core to VDI connection
id: 0c1e6a52-7d7e-4f0b-9f33-0000000000f1
logsource: {product: zonewatch, service: firewall}
detection:
  selection: {zone.crossing: core->vdi}
  condition: selection
level: informational
"""


def topic_records(kafka: KafkaSettings) -> list[Any]:
    """Every record of the alerts topic a read_committed consumer sees, read
    up to each partition's end (the high watermark of a fetch answer)."""
    from zonewatch.kafka import log_bounds

    consumer = KafkaConsumer(
        **kafka.client_kwargs(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    try:
        parts = consumer.partitions_for_topic(kafka.alerts_topic) or set()
        tps = [TopicPartition(kafka.alerts_topic, p) for p in sorted(parts)]
        ends = {tp: b.end for tp, b in log_bounds(kafka, tps).items()}
        assert len(ends) == len(tps)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        for _ in range(600):
            if all(consumer.position(tp) >= ends[tp] for tp in tps):
                return out
            for records in consumer.poll(timeout_ms=100).values():
                out.extend(records)
        raise AssertionError("could not read the alerts topic to its end")
    finally:
        consumer.close()


def of_store(records: list[Any], store_id: str) -> list[Any]:
    return [r for r in records if dict(r.headers).get(HEADER_STORE) == store_id.encode()]


def _alert(i: int) -> Alert:
    t = T0 + timedelta(seconds=i)
    evidence = [
        Evidence(event_id=f"t:0:{i}:{k}", time=t, topic="t", partition=0, offset=i, event={"k": k})
        for k in range(25)
    ]
    return Alert(
        id=f"alert-{i:04d}",
        rule_id="rule-1",
        rule_title="Publish test",
        level="high",
        first_seen=t,
        last_seen=t,
        zone_crossing="core->lgwan",
        evidence=evidence,
    )


def test_stored_alerts_and_triage_changes_reach_the_topic_once_as_json(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    from zonewatch.kafka import ensure_topics

    ensure_topics(kafka_settings)
    db = tmp_path / "alerts.duckdb"
    with AlertStore(db) as store:
        store.write([_alert(i) for i in range(30)])  # stored before the publisher runs
        publisher = AlertPublisher(store, kafka_settings).start()
        try:
            store.write([_alert(i) for i in range(20, 50)])  # 20 new; 10 replayed
            store.triage("alert-0003", "acknowledged", actor="kato", via="cli", note="looking")
            assert publisher.drain(60)
        finally:
            publisher.stop()
        store_id = publisher.store_id

        # A second publisher on the same store (a restart) finds it all there.
        again = AlertPublisher(store, kafka_settings).start()
        try:
            store.write([_alert(50)])
            assert again.drain(60)
        finally:
            again.stop()
        store.flush()
        # How far the topic holds this store's rows, kept for the next start.
        assert store.load_state(FLOOR_KEY) == b"52"

    records = of_store(topic_records(kafka_settings), store_id)
    bodies = [orjson.loads(r.value) for r in records]
    assert all(r.key == b["id"].encode() for r, b in zip(records, bodies, strict=True))
    # Each on the partition the publisher's recovery reads it back from.
    assert all(r.partition == partition_of(r.key, kafka_settings.partitions) for r in records)
    alerts = [b for b in bodies if b["kind"] == "alert"]
    assert sorted(b["id"] for b in alerts) == [f"alert-{i:04d}" for i in range(51)]
    first = next(b for b in alerts if b["id"] == "alert-0000")
    assert first["rule_title"] == "Publish test" and first["level"] == "high"
    assert first["evidence_count"] == 25 and len(first["evidence"]) == 20
    assert first["evidence"][0]["event"] == {"k": 0}
    (change,) = [b for b in bodies if b["kind"] == "triage"]
    assert change["id"] == "alert-0003"
    assert (change["status"], change["actor"], change["note"]) == (
        "acknowledged",
        "kato",
        "looking",
    )
    # In store order: each record's number is above the one before it.
    seqs = sorted((r.partition, r.offset, int(dict(r.headers)[HEADER_SEQ])) for r in records)
    for partition in {p for p, _, _ in seqs}:
        mine = [s for p, _, s in seqs if p == partition]
        assert mine == sorted(mine)


def test_an_alert_record_is_the_alerts_json_with_kind_and_evidence_count() -> None:
    from correlator.alerting.publish import alert_record
    from zonewatch.models import alert_to_json

    alert = _alert(7)
    body = orjson.loads(alert_record(alert))
    expected = alert_to_json(alert)
    expected["evidence"] = expected["evidence"][:20]
    assert body == {"kind": "alert", **expected, "evidence_count": 25}
    assert list(body)[:2] == ["kind", "id"]


def _stored_ids(db: Path) -> tuple[list[str], str]:
    with AlertStore(db, read_only=True) as store:
        _cols, rows = store.query("SELECT id FROM alerts")
        found = store.load_state("alerts-publisher-store-id")
    assert found is not None
    return sorted(r[0] for r in rows), found.decode()


def _produce_slice(kafka: KafkaSettings, records: list[tuple[str, str, bytes]]) -> None:
    from zonewatch.kafka import make_producer

    producer = make_producer(kafka, linger_ms=20)
    for source, key, value in records:
        producer.send(kafka.events_topic(source), key=key.encode(), value=value)
    producer.flush(timeout=120)
    producer.close()


def _restarts(log: Path) -> list[tuple[int, int]]:
    """(published through, stored through) as each start of the publisher found them."""
    found = []
    for line in log.read_text().splitlines():
        if "alerts_publisher_ready" in line:
            entry = orjson.loads(line)
            found.append((entry["published_through"], entry["stored_through"]))
    return found


class TopicCount:
    """How many records the alerts topic holds so far (read_committed), read
    as they come."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = KafkaConsumer(
            **kafka.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        parts = self.consumer.partitions_for_topic(kafka.alerts_topic) or set()
        self.consumer.assign([TopicPartition(kafka.alerts_topic, p) for p in parts])
        self.seen = 0

    def wait_beyond(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.seen <= count and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=50).values():
                self.seen += len(records)

    def settle(self) -> None:
        """Read what a killed run left on the topic (it writes no more)."""
        while records := self.consumer.poll(timeout_ms=500):
            self.seen += sum(len(r) for r in records.values())

    def close(self) -> None:
        self.consumer.close()


@pytest.mark.slow
def test_after_repeated_kill_9_the_topic_holds_exactly_the_stored_alerts(
    kafka_settings: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zonewatch.kafka import ensure_topics

    # Small transactions: a run's alerts take many, so a kill lands among them.
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__PUBLISH_TRANSACTION_RECORDS", "25")

    ensure_topics(kafka_settings)
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES + NOISY)
    workload = make_workload(40_000)
    db, log = tmp_path / "crashed.duckdb", tmp_path / "crashed.log"
    group = f"{kafka_settings.topic_prefix}-crashed"
    rng = random.Random(SEED)
    topic = TopicCount(kafka_settings)
    # New events before each start; each run is killed a moment after its
    # publisher's first transaction shows on the topic, while it stores and
    # publishes the rest of its slice.
    slices = [workload.records[i : i + 5000] for i in range(0, len(workload.records), 5000)]
    try:
        for part in slices[:-1]:
            _produce_slice(kafka_settings, part)
            run = Correlator(kafka_settings, rules, db, group, log)
            run.wait_assigned()
            topic.wait_beyond(topic.seen)
            time.sleep(rng.uniform(0, 0.05))
            run.kill()
            topic.settle()
    finally:
        topic.close()
    _produce_slice(kafka_settings, slices[-1])
    run_to_end(kafka_settings, rules, db, group, log, len(workload.records))

    stored, store_id = _stored_ids(db)
    assert len(stored) > 5000 and len(stored) == len(set(stored))
    records = of_store(topic_records(kafka_settings), store_id)
    published = [orjson.loads(r.value)["id"] for r in records]
    duplicates = [i for i, n in Counter(published).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} alerts on the topic twice"
    assert sorted(published) == stored
    # Kills left the publisher part way: those restarts resumed after what
    # the topic held, with more stored than that.
    restarts = _restarts(log)
    print("restarts (published, stored):", restarts)
    assert sum(0 < published < stored for published, stored in restarts) >= 2
