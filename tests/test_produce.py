"""KafkaSink and the ingest path against the session broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from connectors.ingest import ingest_file
from connectors.produce import event_key
from zonewatch.config import KafkaSettings, Settings
from zonewatch.models import DeadLetter

ROOT = Path(__file__).resolve().parent.parent


def test_key_is_user_then_device_then_source_ip() -> None:
    assert event_key({"user": {"name": "a@b"}, "device": {"id": "d"}}) == b"a@b"
    assert event_key({"device": {"id": "d"}, "source": {"ip": "10.0.0.1"}}) == b"d"
    assert event_key({"source": {"ip": "10.0.0.1"}}) == b"10.0.0.1"
    assert event_key({"event": {}}) is None


def consume_topic(settings: KafkaSettings, topic: str, n: int) -> list:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    parts = consumer.partitions_for_topic(topic) or {0}
    consumer.assign([TopicPartition(topic, p) for p in parts])
    consumer.seek_to_beginning()
    out = []
    for rec in consumer:
        out.append(rec)
        if len(out) >= n:
            break
    consumer.close()
    return out


@pytest.mark.integration
@pytest.mark.parametrize("worker", [False, True], ids=["inline", "parse-worker"])
def test_ingest_file_produces_keyed_events_and_dead_letters(
    tmp_path: Path, kafka_settings: KafkaSettings, worker: bool
) -> None:
    log = tmp_path / "horizon.log"
    good = (
        '<14>1 2026-03-02T09:15:00+09:00 cs01 View - 73 [View@6876 Severity="INFO" '
        'Module="Agent" EventType="AGENT_CONNECTED" '
        'UserSID="S-1-5-21-1004336348-1177238915-682003330-1107" ClientIpAddress="10.10.8.8"]'
    )
    log.write_bytes(
        good.encode() + b"\n" + b"\xff\xfe not utf-8\n" + b"x" * 400 + b"\nnot horizon\n"
    )
    settings = Settings(
        kafka=kafka_settings,
        connectors={"zones_file": ROOT / "rules/zones.yaml", "checkpoint_dir": tmp_path / "cp",
                    "max_line_bytes": 256, "max_past_horizon_days": None},
    )  # fmt: skip
    stats = ingest_file(settings, "vdi", "horizon", log, parse_worker=worker)
    assert (stats.read, stats.produced, stats.dead_lettered) == (4, 1, 3)
    [event] = consume_topic(kafka_settings, kafka_settings.events_topic("vdi"), 1)
    assert event.key == b"sato.kenji@city.example.lg.jp"
    body = orjson.loads(event.value)
    assert body["zone"]["source"] == "core" and body["event"]["action"] == "vdi-connect"
    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in consume_topic(kafka_settings, kafka_settings.deadletter_topic, 3)
    ]
    by_pos = {d.position: d for d in letters}
    assert by_pos[len(good) + 1].raw_encoding == "base64"
    assert by_pos[len(good) + 1 + 13].reason.startswith("oversized: 401 bytes")
    assert "syslog" in by_pos[len(good) + 1 + 13 + 401].reason
    assert {d.source for d in letters} == {"vdi"}
    # a second run resumes after the checkpoint: nothing is read twice
    again = ingest_file(settings, "vdi", "horizon", log, parse_worker=worker)
    assert again.read == 0
