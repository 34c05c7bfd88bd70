"""``<prefix>.alerts``: every stored alert and triage change, once, as JSON
keyed by alert id, through the embedded broker; after repeated ``kill -9``
the topic holds exactly the alerts the store holds."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from correlator.alerting.publish import HEADER_SEQ, HEADER_STORE, AlertPublisher
from correlator.store import AlertStore
from tests.test_crash_recovery import (
    RULES,
    SEED,
    Correlator,
    kill_at_random_moments,
    make_workload,
    produce,
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

    records = of_store(topic_records(kafka_settings), store_id)
    bodies = [orjson.loads(r.value) for r in records]
    assert all(r.key == b["id"].encode() for r, b in zip(records, bodies, strict=True))
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


def _stored_ids(db: Path) -> tuple[list[str], str]:
    with AlertStore(db, read_only=True) as store:
        _cols, rows = store.query("SELECT id FROM alerts")
        found = store.load_state("alerts-publisher-store-id")
    assert found is not None
    return sorted(r[0] for r in rows), found.decode()


@pytest.mark.slow
def test_after_repeated_kill_9_the_topic_holds_exactly_the_stored_alerts(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES + NOISY)
    workload = make_workload(30_000)
    produce(kafka_settings, workload)
    db, log = tmp_path / "crashed.duckdb", tmp_path / "crashed.log"
    group = f"{kafka_settings.topic_prefix}-crashed"
    kills = kill_at_random_moments(
        lambda: Correlator(kafka_settings, rules, db, group, log),
        8,
        random.Random(SEED),
        most_s=2.5,
    )
    assert kills >= 6
    run_to_end(kafka_settings, rules, db, group, log, len(workload.records))

    stored, store_id = _stored_ids(db)
    assert Counter(stored) and len(stored) == len(set(stored))
    published = [
        orjson.loads(r.value)["id"] for r in of_store(topic_records(kafka_settings), store_id)
    ]
    duplicates = [i for i, n in Counter(published).items() if n > 1]
    assert not duplicates, f"{len(duplicates)} alerts on the topic twice"
    assert sorted(published) == stored
    # The kills left the publisher part way: restarts resumed after what the
    # topic held, never from the start.
    resumed = [line for line in log.read_text().splitlines() if "alerts_publisher_ready" in line]
    assert len(resumed) >= kills
    assert any("published_through=0" not in line for line in resumed)
