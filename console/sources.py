"""What the rule-health page knows beyond the store: the correlator's late and
undecodable event counters (its Prometheus endpoint, when
``correlator.metrics_port`` is set) and the dead-letter topic (read from
Kafka, when ``kafka.bootstrap_servers`` is set), counted per source with the
last few raw lines of each.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import orjson

from zonewatch.config import Settings
from zonewatch.logs import get_logger

log = get_logger(__name__)

LAST_LINES = 5
_METRICS = {
    "zonewatch_correlator_late_events_total": "late events (behind the watermark)",
    "zonewatch_correlator_dead_letters_total": "undecodable records (correlator)",
}


class DeadLetterTail:
    """Reads the dead-letter topic from its start in a background thread and
    keeps per-source counts and the last lines (no consumer group: it
    commits nothing and takes no partitions from anyone)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.counts: dict[str, int] = {}
        self.last: dict[str, deque[dict[str, str]]] = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="zonewatch-deadletters", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kafka import TopicPartition

        from zonewatch.kafka import make_consumer

        kafka = self.settings.kafka
        try:
            consumer = make_consumer(kafka, None)
            topic = kafka.deadletter_topic
            parts = consumer.partitions_for_topic(topic) or set()
            consumer.assign([TopicPartition(topic, p) for p in parts])
            consumer.seek_to_beginning()
            while True:
                for records in consumer.poll(timeout_ms=1000).values():
                    for record in records:
                        self._add(record.value)
        except Exception as exc:  # shown on the page; the console keeps running
            self.error = f"{type(exc).__name__}: {str(exc)[:200]}"

    def _add(self, value: bytes) -> None:
        try:
            letter = orjson.loads(value)
            source = str(letter.get("source", "?"))
            line = {
                "reason": str(letter.get("reason", ""))[:300],
                "raw": str(letter.get("raw", ""))[:2000],
            }
        except (orjson.JSONDecodeError, AttributeError):
            source, line = (
                "?",
                {
                    "reason": "not a dead-letter record",
                    "raw": value[:200].decode("utf-8", "replace"),
                },
            )
        with self._lock:
            self.counts[source] = self.counts.get(source, 0) + 1
            self.last.setdefault(source, deque(maxlen=LAST_LINES)).append(line)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                source: {"count": n, "last": list(reversed(self.last.get(source, [])))}
                for source, n in sorted(self.counts.items())
            }


class HealthSources:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tail: DeadLetterTail | None = None

    def metrics(self) -> tuple[dict[str, float], str]:
        cfg = self.settings.correlator
        if cfg.metrics_port is None:
            return {}, "(correlator.metrics_port is not set)"
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(
                f"http://{cfg.metrics_host}:{cfg.metrics_port}/metrics", timeout=1
            ).text
        except httpx.HTTPError as exc:
            return {}, f"(correlator metrics: {type(exc).__name__})"
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in _METRICS:
                    label = _METRICS[sample.name]
                    reason = sample.labels.get("reason")
                    key = f"{label}: {reason}" if reason else label
                    out[key] = out.get(key, 0) + sample.value
        return out, ""

    def __call__(self) -> dict[str, Any]:
        metrics, metrics_note = self.metrics()
        if not self.settings.kafka.bootstrap_servers:
            return {
                "metrics": metrics,
                "metrics_note": metrics_note,
                "dead_letters": {},
                "dead_letters_note": "(kafka.bootstrap_servers is not set)",
            }
        if self._tail is None:
            self._tail = DeadLetterTail(self.settings)
        return {
            "metrics": metrics,
            "metrics_note": metrics_note,
            "dead_letters": self._tail.snapshot(),
            "dead_letters_note": f"({self._tail.error})" if self._tail.error else "",
        }
