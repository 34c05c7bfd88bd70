"""Keyed, acknowledged delivery of events and dead letters to Kafka.

Events go to ``zonewatch.events.<source>`` keyed by ``user.name``, else
``device.id``, else ``source.ip`` (so one entity's events share a partition
and stay in order); dead letters go to ``zonewatch.deadletter`` as
:class:`zonewatch.models.DeadLetter` JSON keyed by source.

The producer runs with acks=all and idempotence. kafka-python 3 no longer
bounds its own buffer (``buffer_memory`` is ignored), so the sink counts the
bytes it has handed over and not yet seen acknowledged, and ``emit`` blocks
while that exceeds ``max_in_flight_bytes``: a slow broker slows the input
instead of growing memory.

Exactly-once for inputs with a position (files, the Graph high-water mark):
with a ``transactional_id`` every batch of events is sent in one Kafka
transaction together with a checkpoint record (input position and parser
state) on ``zonewatch.checkpoints``. A crash aborts the open transaction, so
Kafka holds exactly the lines up to the last committed checkpoint, which
:meth:`KafkaSink.recover_checkpoint` reads back on restart. Consumers must
read with ``isolation_level="read_committed"`` to skip aborted batches.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from zonewatch.config import KafkaSettings
from zonewatch.errors import ZonewatchError
from zonewatch.kafka import ensure_topics, make_producer
from zonewatch.logs import get_logger
from zonewatch.models import DeadLetter

log = get_logger(__name__)

KEY_FIELDS = (("user", "name"), ("device", "id"), ("source", "ip"))


class DeliveryFailedError(ZonewatchError):
    """Kafka did not acknowledge some records; the input position was not advanced."""

    exit_code = 69


def event_key(event: dict[str, Any]) -> bytes | None:
    """``user.name``, else ``device.id``, else ``source.ip``; None lets Kafka spread."""
    for section, name in KEY_FIELDS:
        node = event.get(section)
        if isinstance(node, dict):
            value = node.get(name)
            if value:
                return str(value).encode()
    return None


def checkpoint_topic(settings: KafkaSettings) -> str:
    return settings.topic("checkpoints")


@dataclass
class DeliveryCounts:
    produced: int = 0
    dead_lettered: int = 0
    failed: int = 0
    commits: int = 0


class KafkaSink:
    """Sends events and dead letters; see the module docstring for guarantees."""

    def __init__(
        self,
        settings: KafkaSettings,
        source: str,
        *,
        transactional_id: str | None = None,
        max_in_flight_bytes: int = 16 * 1024 * 1024,
        producer: KafkaProducer | None = None,
        create_topics: bool = True,
    ):
        self.settings = settings
        self.source = source
        self.topic = settings.events_topic(source)
        self.deadletter_topic = settings.deadletter_topic
        self.transactional_id = transactional_id
        self.max_in_flight_bytes = max_in_flight_bytes
        self.counts = DeliveryCounts()
        if create_topics:
            topics = [self.topic, self.deadletter_topic]
            ensure_topics(settings, topics)
            if transactional_id:
                # one partition: a single ordered log to read the latest checkpoint from
                ensure_topics(settings, [checkpoint_topic(settings)], partitions=1)
        overrides: dict[str, Any] = {}
        if transactional_id:
            overrides["transactional_id"] = transactional_id
        self.producer = producer or make_producer(settings, **overrides)
        self._cond = threading.Condition()
        self._in_flight = 0
        self._errors: list[BaseException] = []
        self._in_txn = False
        self._checkpoint_offset: int | None = None
        if transactional_id:
            # Fences any older incarnation and aborts its open transaction.
            self.producer.init_transactions()

    # -- sending ------------------------------------------------------------------
    def _done(self, size: int, result: Any) -> None:
        with self._cond:
            self._in_flight -= size
            if isinstance(result, BaseException):
                self._errors.append(result)
                self.counts.failed += 1
            self._cond.notify_all()

    def _wait_for_room(self) -> None:
        if self._in_flight <= self.max_in_flight_bytes:
            return
        with self._cond:
            while self._in_flight > self.max_in_flight_bytes // 2:
                if not self._cond.wait(timeout=1.0):
                    self.producer.flush(timeout=0)  # nudge linger-held batches out

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._wait_for_room()
        if self.transactional_id and not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True
        size = len(value) + (len(key) if key else 0)
        with self._cond:
            self._in_flight += size
        try:
            future = self.producer.send(topic, value=value, key=key)
        except KafkaError as exc:
            with self._cond:
                self._in_flight -= size
            raise DeliveryFailedError(f"Kafka refused a record for {topic}: {exc}") from exc
        future.add_both(self._done, size)

    def emit(self, event: dict[str, Any]) -> None:
        self._send(self.topic, event_key(event), orjson.dumps(event))
        self.counts.produced += 1

    def dead_letter(self, letter: DeadLetter) -> None:
        self._send(self.deadletter_topic, self.source.encode(), letter.model_dump_json().encode())
        self.counts.dead_lettered += 1

    # -- committing -----------------------------------------------------------------
    def _raise_errors(self) -> None:
        with self._cond:
            errors, self._errors = self._errors, []
        if errors:
            raise DeliveryFailedError(
                f"{len(errors)} record(s) were not acknowledged by Kafka "
                f"(first: {errors[0]!r}); the checkpoint was not advanced"
            )

    def commit(self, checkpoint: dict[str, Any] | None = None, timeout_s: float = 60.0) -> None:
        """Make everything sent so far durable, together with ``checkpoint``.

        Without a transactional id this is a flush; the caller saves the
        checkpoint afterwards (at-least-once).
        """
        if not self.transactional_id:
            self.producer.flush(timeout=timeout_s)
            self._raise_errors()
            return
        if checkpoint is None and not self._in_txn:
            return
        if not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True
        if checkpoint is not None:
            record = {"id": self.transactional_id, "checkpoint": checkpoint}
            fut = self.producer.send(
                checkpoint_topic(self.settings),
                key=self.transactional_id.encode(),
                value=orjson.dumps(record),
            )
        self.producer.flush(timeout=timeout_s)
        self._raise_errors()
        if checkpoint is not None:
            self._checkpoint_offset = fut.get(timeout=timeout_s).offset
        self.producer.commit_transaction()
        self._in_txn = False
        self.counts.commits += 1

    @property
    def checkpoint_offset(self) -> int | None:
        """Offset of the last committed checkpoint record (a hint for the next start)."""
        return self._checkpoint_offset

    def recover_checkpoint(
        self, hint_offset: int | None = None, timeout_s: float = 30.0
    ) -> dict[str, Any] | None:
        """The latest committed checkpoint of this transactional id, read from Kafka.

        Writes a fence record first and reads until it appears, so "latest"
        never depends on end offsets (which the embedded broker answers in
        batches, not records).
        """
        if not self.transactional_id:
            return None
        nonce = uuid.uuid4().hex
        topic = checkpoint_topic(self.settings)
        self.producer.begin_transaction()
        self.producer.send(
            topic,
            key=self.transactional_id.encode(),
            value=orjson.dumps({"id": self.transactional_id, "fence": nonce}),
        )
        self.producer.flush(timeout=timeout_s)
        self.producer.commit_transaction()
        consumer = KafkaConsumer(
            **self.settings.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        tp = TopicPartition(topic, 0)
        latest: dict[str, Any] | None = None
        try:
            consumer.assign([tp])
            if hint_offset is not None and hint_offset >= 0:
                consumer.seek(tp, hint_offset)
            else:
                consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for rec in records:
                        if rec.key != self.transactional_id.encode():
                            continue
                        body = orjson.loads(rec.value)
                        if body.get("fence") == nonce:
                            return latest
                        if "checkpoint" in body:
                            latest = body["checkpoint"]
                            self._checkpoint_offset = rec.offset
            raise DeliveryFailedError(
                f"could not read back the checkpoint fence from {topic} within {timeout_s:.0f}s"
            )
        finally:
            consumer.close()

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            if self._in_txn:
                self.producer.abort_transaction()
                self._in_txn = False
        finally:
            self.producer.close(timeout=timeout_s)
