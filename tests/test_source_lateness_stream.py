"""Sources that deliver minutes late still correlate (issue #17, late logs),
through the embedded broker.

A VDI export reaches Kafka up to 10 minutes after its events happened. With
``correlator.sources.vdi.max_delivery_delay_s: 600`` the quiet VDI input holds
the watermark at wall clock less 10 minutes, so a firewall event waits for
it, and a VDI event delivered 9 minutes late joins its window. Without the
setting the quiet input holds nothing back: the watermark follows the
firewall, whose traffic is in the present, and the same VDI event is late,
counted and dropped.

The price is latency: the VDI topic's other partition is quiet too and holds
the watermark as well, so the alert comes when the VDI event's delivery
delay is over (its time + 600 s): about 50 s into the test.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_event_time_stream import correlator, wait_for

from zonewatch.config import KafkaSettings, Settings
from zonewatch.kafka import ensure_topics, make_producer

pytestmark = pytest.mark.integration

RULES = """
title: Denied crossing
id: 5c0e7a61-0000-4000-8000-000000000001
name: denied
logsource: {product: zonewatch, service: firewall}
detection: {sel: {event.outcome: failure}, condition: sel}
level: low
---
title: Restricted VDI session
id: 5c0e7a61-0000-4000-8000-000000000002
name: vdi
logsource: {product: zonewatch, service: vdi}
detection: {sel: {vdi.pool: mynumber}, condition: sel}
level: low
---
title: Denied then VDI
id: 5c0e7a61-0000-4000-8000-000000000003
correlation: {type: temporal, rules: [denied, vdi], group-by: [source.ip], timespan: 5m}
level: high
"""
ALERT = "Denied then VDI"
# Event times, seconds before the test starts: the firewall event just inside
# the VDI delay (the watermark, wall clock less 600 s, holds it for 40 s), the
# VDI session 10 s later, read within its delay.
FIREWALL_AGO = 560
VDI_AGO = 550


def _settings(kafka: KafkaSettings, tmp_path: Path, delay: float) -> Settings:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    sources = {"vdi": {"max_delivery_delay_s": delay}} if delay else {}
    return Settings().updated(
        kafka=kafka,
        correlator={
            "rules": [rules],
            "db_path": tmp_path / "alerts.duckdb",
            "group_id": f"{kafka.topic_prefix}-late-{int(delay)}",
            "checkpoint_interval_s": 0.5,
            # Applied as soon as released: the alert comes when the VDI event
            # is read, not a minute later.
            "allowed_lateness_s": 0,
            "sources": sources,
        },
    )


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _produce(kafka: KafkaSettings, source: str, event: dict[str, Any]) -> None:
    producer = make_producer(kafka)
    producer.send(kafka.events_topic(source), key=b"10.10.23.90", value=orjson.dumps(event))
    producer.flush()
    producer.close()


def _titles(service: Any) -> list[str]:
    return [r[0] for r in service.store.query("SELECT rule_title FROM alerts ORDER BY 1")[1]]


def _watermark(service: Any) -> float:
    """The engine's watermark (epoch seconds; -inf before the first)."""
    stamp = service.loop.correlation.metrics()["watermarks"].get("0")
    return datetime.fromisoformat(stamp).timestamp() if stamp else float("-inf")


@pytest.mark.parametrize("delay", [600.0, 0.0], ids=["vdi-delay-10m", "no-delay"])
def test_a_source_with_a_delivery_delay_holds_the_watermark_and_its_late_events_correlate(
    kafka_settings: KafkaSettings, tmp_path: Path, delay: float
) -> None:
    settings = _settings(kafka_settings, tmp_path, delay)
    ensure_topics(kafka_settings)
    now = datetime.now(UTC)
    with correlator(settings) as service:
        loop = service.loop
        _produce(
            kafka_settings,
            "firewall",
            {
                "@timestamp": _stamp(now - timedelta(seconds=FIREWALL_AGO)),
                "source": {"ip": "10.10.23.90"},
                "event": {"outcome": "failure"},
            },
        )
        # The firewall's traffic goes on: its input's time is the present.
        _produce(
            kafka_settings,
            "firewall",
            {
                "@timestamp": _stamp(now),
                "source": {"ip": "10.10.23.90"},
                "event": {"outcome": "success"},
            },
        )
        # Every input read and quiet: the watermark moves to where the quiet
        # inputs let it, the wall clock less 10 minutes (the VDI delay: the
        # VDI inputs have delivered nothing yet) or the firewall's present
        # (no delay).
        floor = time.time() - (delay or 60) - 5
        wait_for(lambda: _watermark(service) > floor, why="the watermark moved with the clock")
        assert loop.stats.consumed == 2
        merger = loop.stage.merger
        if delay:
            assert _watermark(service) < now.timestamp() - FIREWALL_AGO  # held before it
            assert len(merger) == 1  # the denied event waits for the VDI inputs
        else:
            assert len(merger) == 0  # applied: the window is already behind

        # The VDI session 550 s ago, delivered only now (within the 600 s).
        _produce(
            kafka_settings,
            "vdi",
            {
                "@timestamp": _stamp(now - timedelta(seconds=VDI_AGO)),
                "source": {"ip": "10.10.23.90"},
                "vdi": {"pool": "mynumber"},
            },
        )
        wait_for(lambda: loop.stats.consumed == 3, why="the VDI event read")
        if delay:
            # Applied once the watermark reaches it: when its delivery delay
            # is over for every VDI partition (the other one is quiet too).
            wait_for(
                lambda: ALERT in _titles(service),
                why="the late VDI event correlated",
                timeout_s=120,
            )
            assert loop.correlation.stats.late_events == 0
        else:
            wait_for(lambda: loop.correlation.stats.late_events == 1, why="counted late")
            assert ALERT not in _titles(service)
