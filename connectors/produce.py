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

import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from zonewatch.config import KafkaSettings
from zonewatch.errors import ZonewatchError
from zonewatch.kafka import ensure_topics, make_producer
from zonewatch.logs import get_logger
from zonewatch.models import DeadLetter
from zonewatch.offsets import OffsetReset

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


@dataclass
class Recovery:
    """What :meth:`KafkaSink.recover_checkpoint` found: a checkpoint, a reset
    (``zonewatch checkpoints reset``) as the last word, and why the local
    copy's hint did not fit the topic (``zonewatch.offsets.OffsetReset``)."""

    found: bool = False
    reset: bool = False
    reason: OffsetReset | None = None


@dataclass
class DeliveryCounts:
    produced: int = 0
    dead_lettered: int = 0
    failed: int = 0
    commits: int = 0


class KeyPartitioner:
    """Kafka's default keyed partitioning (murmur2 of the key), cached per key.

    kafka-python hashes every key in pure Python; logs repeat a few thousand
    user names, so a cache makes the choice a dict lookup. The partition lists
    are fixed when the sink starts; records without a key are left to the
    producer (``None``).
    """

    def __init__(self, partitions: dict[str, list[int]], cache_size: int = 65536):
        self.partitions = {topic: sorted(parts) for topic, parts in partitions.items()}
        self._pick = lru_cache(maxsize=cache_size)(self._uncached)

    def _uncached(self, topic: str, key: bytes) -> int:
        parts = self.partitions[topic]
        return parts[(murmur2(key) & 0x7FFFFFFF) % len(parts)]

    def __call__(self, topic: str, key: bytes | None) -> int | None:
        if key is None or topic not in self.partitions:
            return None
        return self._pick(topic, key)


# Producer batches: below the 1 MiB default request and message size limits.
BATCH_BYTES = 512 * 1024
LINGER_MS = 25

# Records sent since the last commit are tracked in groups of this many, so
# the in-flight bound and the error check cost a list append per record.
_GROUP = 1024
# How long a restart may take to read its checkpoint back (a bounded wait).
RECOVER_TIMEOUT_S = 30.0
# How long back-pressure waits for one record's acknowledgement before moving on.
_ACK_WAIT_S = 120.0


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
                ensure_topics(settings, [settings.checkpoints_topic], partitions=1)
        # Fewer, larger produce requests: the sender thread's cost is per
        # request, and it shares the GIL with the loop that sends records.
        overrides: dict[str, Any] = {"batch_size": BATCH_BYTES, "linger_ms": LINGER_MS}
        if transactional_id:
            overrides["transactional_id"] = transactional_id
        self.producer = producer or make_producer(settings, **overrides)
        self.partitioner = KeyPartitioner(self._partition_lists())
        self._dead_key = self.source.encode()
        # futures of records sent and not yet known to be acknowledged, in groups
        self._groups: deque[tuple[list[Any], int]] = deque()
        self._group: list[Any] = []
        self._group_bytes = 0
        self._in_flight = 0  # bytes in self._groups and self._group
        self._errors: list[BaseException] = []
        self._in_txn = False
        self._checkpoint_offset: int | None = None
        self._checkpoint_topic_id: str | None = None
        self.recovery = Recovery()
        if transactional_id:
            # Fences any older incarnation and aborts its open transaction.
            self.producer.init_transactions()

    def _partition_lists(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for topic in (self.topic, self.deadletter_topic):
            try:
                parts = self.producer.partitions_for(topic)
            except KafkaError:
                parts = None  # left to the producer's own partitioner
            if parts:
                found[topic] = sorted(parts)
        return found

    # -- sending ------------------------------------------------------------------
    def _settle(self, futures: list[Any], wait_s: float | None) -> bool:
        """Collect the failures of ``futures``; False if some are still open."""
        for fut in futures:
            if not fut.is_done:
                if wait_s is None:
                    return False
                with contextlib.suppress(KafkaError):  # a failure is recorded below
                    fut.get(timeout=wait_s)
            if not fut.is_done:
                self._errors.append(TimeoutError(f"no acknowledgement within {wait_s:.0f}s"))
                self.counts.failed += 1
            elif fut.failed():
                self._errors.append(fut.exception)
                self.counts.failed += 1
        return True

    def _close_group(self) -> None:
        if self._group:
            self._groups.append((self._group, self._group_bytes))
            self._group, self._group_bytes = [], 0
        # forget groups the broker has acknowledged, oldest first
        while self._groups and self._groups[0][0][-1].is_done:
            futures, size = self._groups[0]
            if not self._settle(futures, None):
                break
            self._groups.popleft()
            self._in_flight -= size

    def _wait_for_room(self) -> None:
        """Back-pressure: block the input while too many bytes await acknowledgement."""
        self._close_group()
        self.producer.flush(timeout=0)  # nudge linger-held batches out
        while self._groups and self._in_flight > self.max_in_flight_bytes // 2:
            futures, size = self._groups.popleft()
            self._settle(futures, _ACK_WAIT_S)
            self._in_flight -= size

    def _begin(self) -> None:
        if self.transactional_id and not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True

    def _refused(self, topic: str, exc: KafkaError) -> DeliveryFailedError:
        return DeliveryFailedError(f"Kafka refused a record for {topic}: {exc}")

    def _send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._begin()
        try:
            fut = self.producer.send(
                topic, value=value, key=key, partition=self.partitioner(topic, key)
            )
        except KafkaError as exc:
            raise self._refused(topic, exc) from exc
        self._group.append(fut)
        size = len(value)
        self._group_bytes += size
        self._in_flight += size
        if len(self._group) >= _GROUP:
            self._close_group()
            if self._in_flight > self.max_in_flight_bytes:
                self._wait_for_room()

    def emit(self, event: dict[str, Any], value: bytes | None = None) -> None:
        """Send one event; ``value`` is its JSON when the caller has it already."""
        self._send(self.topic, event_key(event), orjson.dumps(event) if value is None else value)
        self.counts.produced += 1

    def dead_letter(self, letter: DeadLetter) -> None:
        self._send(self.deadletter_topic, self._dead_key, letter.model_dump_json().encode())
        self.counts.dead_lettered += 1

    def send_prepared(self, records: list[tuple[bool, bytes | None, int | None, bytes]]) -> None:
        """Send records serialized elsewhere: (dead letter?, key, partition, value).

        The partition comes from :attr:`partitioner` on the side that built
        the record, so this loop is only the producer's own work.
        """
        if not records:
            return
        self._begin()
        send = self.producer.send
        topic, dead_topic = self.topic, self.deadletter_topic
        group = self._group
        size = 0
        dead = 0
        try:
            for is_dead, key, partition, value in records:
                if is_dead:
                    dead += 1
                    group.append(send(dead_topic, value=value, key=key, partition=partition))
                else:
                    group.append(send(topic, value=value, key=key, partition=partition))
                size += len(value)
        except KafkaError as exc:
            raise self._refused(dead_topic if is_dead else topic, exc) from exc
        finally:
            self._group_bytes += size
            self._in_flight += size
        self.counts.produced += len(records) - dead
        self.counts.dead_lettered += dead
        self._close_group()
        if self._in_flight > self.max_in_flight_bytes:
            self._wait_for_room()

    # -- committing -----------------------------------------------------------------
    def _raise_errors(self) -> None:
        """After a flush: fail if any record sent since the last commit was refused."""
        self._close_group()
        while self._groups:
            futures, _ = self._groups.popleft()
            self._settle(futures, _ACK_WAIT_S)
        self._in_flight = 0
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
                self.settings.checkpoints_topic,
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

    @property
    def checkpoint_topic_id(self) -> str | None:
        """Id of the checkpoint topic as of the last recovery (stored with the
        local copy, so a recreated topic is recognised)."""
        return self._checkpoint_topic_id

    def recover_checkpoint(
        self,
        hint_offset: int | None = None,
        timeout_s: float = RECOVER_TIMEOUT_S,
        hint_topic_id: str | None = None,
    ) -> dict[str, Any] | None:
        """The latest committed checkpoint of this transactional id, read from Kafka.

        Writes a fence record first and reads up to it, so "latest" never
        depends on end offsets (which the embedded broker answers in batches,
        not records). The hint (where the local copy says the checkpoint
        was) is checked against the log first: a hint beyond the fence or
        before the log's start, or a changed topic id, means the topic lost
        what the hint points at (``recovery.reason`` says which), and the
        whole log is read instead. ``recovery`` also says whether a
        ``zonewatch checkpoints reset`` was the last word.
        """
        self.recovery = Recovery()
        if not self.transactional_id:
            return None
        from zonewatch.kafka import log_bounds
        from zonewatch.offsets import decide_start_offset, same_topic

        nonce = uuid.uuid4().hex
        topic = self.settings.checkpoints_topic
        tid = self.transactional_id.encode()
        self.producer.begin_transaction()
        fence = self.producer.send(
            topic, key=tid, value=orjson.dumps({"id": self.transactional_id, "fence": nonce})
        )
        self.producer.flush(timeout=timeout_s)
        self.producer.commit_transaction()
        fence_offset = fence.get(timeout=timeout_s).offset
        tp = TopicPartition(topic, 0)
        bounds = log_bounds(self.settings, [tp], timeout_s=min(timeout_s, 10.0)).get(tp)
        start = bounds.start if bounds is not None else 0
        self._checkpoint_topic_id = bounds.topic_id if bounds is not None else None
        begin, reason = decide_start_offset(
            hint_offset,
            start,
            fence_offset,
            same_topic=same_topic(hint_topic_id, self._checkpoint_topic_id),
        )
        self.recovery.reason = reason
        consumer = KafkaConsumer(
            **self.settings.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        latest: dict[str, Any] | None = None
        try:
            consumer.assign([tp])
            consumer.seek(tp, begin if begin is not None else start)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=200, max_records=5000)
                for records in batch.values():
                    for rec in records:
                        if rec.key != tid:
                            continue
                        body = orjson.loads(rec.value)
                        if body.get("fence") == nonce:
                            return latest
                        if "checkpoint" in body:
                            latest = body["checkpoint"]
                            self._checkpoint_offset = rec.offset
                            self.recovery.found, self.recovery.reset = True, False
                        elif body.get("reset"):
                            latest, self._checkpoint_offset = None, None
                            self.recovery.found, self.recovery.reset = False, True
            position = consumer.position(tp)
            raise DeliveryFailedError(
                f"could not read the checkpoint topic {topic} up to this connector's fence "
                f"(offset {fence_offset}) within {timeout_s:.0f}s; read up to offset {position}. "
                "A transaction left open on that topic by a killed connector holds "
                "read_committed readers back until it times out (60 s) or that connector "
                "restarts: start this one again then. If the broker is unhealthy, fix it first"
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
