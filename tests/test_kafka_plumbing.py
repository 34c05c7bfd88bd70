"""Kafka plumbing against the real broker: topics, keyed delivery, clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zonewatch.app.broker import free_port
from zonewatch.config import KafkaSettings
from zonewatch.errors import BrokerUnavailableError
from zonewatch.kafka import all_topics, ensure_topics, make_consumer, make_producer

pytestmark = pytest.mark.integration


def test_topics_are_created_once_and_reported_as_existing_after(
    kafka_settings: KafkaSettings,
) -> None:
    first = ensure_topics(kafka_settings)
    assert sorted(first) == sorted(all_topics(kafka_settings))
    assert ensure_topics(kafka_settings) == []


def test_events_with_the_same_key_stay_in_one_partition_and_in_order(
    kafka_settings: KafkaSettings,
) -> None:
    topic = kafka_settings.events_topic("firewall")
    ensure_topics(kafka_settings, [topic])
    producer = make_producer(kafka_settings)
    users = ["tanaka.hanako@city.example.lg.jp", "sato.kenji@city.example.lg.jp"]
    for i in range(200):
        producer.send(topic, key=users[i % 2].encode(), value=str(i).encode())
    producer.flush()
    producer.close()
    consumer = make_consumer(kafka_settings, "plumbing-test", [topic])
    seen: dict[str, list[tuple[int, int]]] = {u: [] for u in users}
    try:
        while sum(len(v) for v in seen.values()) < 200:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for r in records:
                    seen[r.key.decode()].append((tp.partition, int(r.value)))
    finally:
        consumer.close()
    for user, items in seen.items():
        assert len({p for p, _ in items}) == 1, f"{user} spread over partitions"
        values = [v for _, v in items]
        assert values == sorted(values)


def test_an_unreachable_broker_fails_fast_with_one_clear_line() -> None:
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(
        BrokerUnavailableError, match=r"no Kafka broker answers at .*connection refused"
    ):
        make_producer(dead)
    proc = subprocess.run(
        [sys.executable, "-m", "zonewatch", "topics"],
        env={"KAFKA_BOOTSTRAP_SERVERS": dead.bootstrap_servers or "", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 69
    assert proc.stderr.strip().splitlines()[-1].startswith("zonewatch: error: no Kafka broker")
    assert "Traceback" not in proc.stderr
