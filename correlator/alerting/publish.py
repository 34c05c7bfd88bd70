"""Every stored alert and triage change to ``<prefix>.alerts``, exactly once.

The store is the source of truth. Each alert it stores and each triage
change it records gets the next number of one gapless sequence, ``pub_seq``,
in the same transaction (``correlator/store/schema.py``, version 6): what is
numbered is committed, with its offsets. The publisher produces the numbered
rows in that order, as JSON keyed by alert id, with the store's id and the
number in two headers, in Kafka transactions of a few thousand records.

How far it got is read back from the topic itself, never kept beside it, so
producing and "marking as published" are one Kafka transaction and there is
no second commit to lose:

1. ``init_transactions`` with this store's transactional id fences a
   previous incarnation (killed with ``kill -9``) and aborts its open
   transaction.
2. For each partition, the last record a ``read_committed`` consumer sees
   with this store's header gives the highest number published to that
   partition. Records of one partition arrive in the order sent, so every
   lower number of that partition is there too, and none above it. The
   partition of an alert is always computed the same way (``partition_of``:
   murmur2 of the key, as Kafka's default partitioner; by the producer
   process, or here while recovered records are skipped), so the same
   alert always goes to the same one.
3. Rows are produced from the lowest of those numbers on, skipping those of
   a partition at or below its own number.

The store also remembers, every ``FLOOR_EVERY_S`` and on stop, a number the
topic was seen to hold (``FLOOR_KEY``, written after the Kafka commit, so it
can only trail). It is a floor under step 2: a partition whose records of
this store retention has deleted (or a recreated topic) does not bring the
store's old alerts back.

On Apache Kafka an aborted transaction is invisible, so its records are
produced again; on the embedded broker (tansu) a ``read_committed`` consumer
sees aborted records, and step 2 sees them too, so they are not. Either way
the topic holds each stored alert and triage change once.

Steady state works from memory: the store hands over what it committed
(``AlertStore.on_stored``) and the publisher produces it at once; after a
restart, or when it fell behind further than ``MAX_QUEUED`` rows, it reads the
store from its number on.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from correlator.store.alert_store import AlertStore, TriageChange
from correlator.store.read import load_alerts
from zonewatch.config import KafkaSettings
from zonewatch.logs import get_logger
from zonewatch.models import Alert, alert_to_json
from zonewatch.producer_process import (
    InProcessProducer,
    ProducerProcess,
    Record,
    TransactionalProducer,
    partition_of,
)

log = get_logger(__name__)

PUBLISHED = Counter(
    "zonewatch_alerts_published_total",
    "Alerts and triage changes produced to the alerts topic",
    ["kind"],
)
PUBLISH_FAILURES = Counter(
    "zonewatch_alerts_publish_failures_total",
    "Failed attempts to produce to the alerts topic (retried from the topic's own position)",
)
BEHIND = Gauge(
    "zonewatch_alerts_publish_behind",
    "Stored alerts and triage changes not yet on the alerts topic",
)

STORE_ID_KEY = "alerts-publisher-store-id"
FLOOR_KEY = "alerts-published-through"
FLOOR_EVERY_S = 30.0
HEADER_STORE = "zonewatch.store"
HEADER_SEQ = "zonewatch.seq"
# Evidence events carried in an alert's record (the store keeps them all;
# ``evidence_count`` says how many there are).
EVIDENCE_LIMIT = 20
# Below the producer's max_request_size (1 MB): a larger record goes with its
# evidence reduced to references (``evidence_truncated``).
MAX_RECORD_BYTES = 900_000
MAX_QUEUED = 10_000  # handed-over rows kept in memory; beyond, read the store
RECOVER_TIMEOUT_S = 60.0
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)

Item = tuple[int, Alert | TriageChange]


def alert_record(alert: Alert, evidence_count: int | None = None) -> bytes:
    """An alert as the alerts topic carries it: ``kind: alert``, the alert's
    JSON (as ``zonewatch match`` prints it: ``alert_to_json``), its first
    ``EVIDENCE_LIMIT`` evidence events and how many it has.

    orjson writes the slotted dataclass itself, byte for byte what pydantic
    writes (``tests/test_alerts_topic.py``) in half the time: the publisher
    shares the stream loop's interpreter."""
    count = len(alert.evidence) if evidence_count is None else evidence_count
    if len(alert.evidence) > EVIDENCE_LIMIT:
        alert = replace(alert, evidence=alert.evidence[:EVIDENCE_LIMIT])
    body = orjson.dumps(alert, option=orjson.OPT_UTC_Z)
    record = b'{"kind":"alert",' + body[1:-1] + b',"evidence_count":%d}' % count
    if len(record) <= MAX_RECORD_BYTES:
        return record
    data = alert_to_json(alert)
    for ev in data["evidence"]:
        ev.pop("event", None)
    return orjson.dumps(
        {"kind": "alert", **data, "evidence_count": count, "evidence_truncated": True}
    )


def triage_record(change: TriageChange) -> bytes:
    """A triage change: ``kind: triage``, the alert's ``id`` and the change."""
    return orjson.dumps(
        {
            "kind": "triage",
            "id": change.alert_id,
            "changed_at": change.changed_at,
            "actor": change.actor,
            "via": change.via,
            "from_status": change.from_status,
            "status": change.to_status,
            "from_assignee": change.from_assignee,
            "assignee": change.to_assignee,
            "note": change.note,
        }
    )


def store_id(store: AlertStore) -> str:
    """This store's id (the alerts topic header and transactional id), made
    and stored on first use."""
    found = store.load_state(STORE_ID_KEY)
    if found:
        return found.decode()
    made = uuid.uuid4().hex
    store.write([], state={STORE_ID_KEY: made.encode()})
    return made


class AlertPublisher:
    """A daemon thread producing the store's alerts and triage changes to the
    alerts topic in store order, once each (see the module docstring)."""

    def __init__(
        self,
        store: AlertStore,
        kafka: KafkaSettings,
        *,
        transaction_records: int = 2_000,
        make_producer: Callable[..., KafkaProducer] | None = None,
        in_child: bool = True,
    ) -> None:
        self.store = store
        self.kafka = kafka
        self.topic = kafka.alerts_topic
        self.store_id = store_id(store)
        self.transactional_id = f"zonewatch-alerts-{self.store_id}"
        # The producer runs in a child process (zonewatch/producer_process.py):
        # kafka-python's would cost the stream loop's GIL 35-50 us per record.
        # In-process with ``in_child=False`` or an injected ``make_producer``.
        self._make_producer = make_producer
        self.in_child = in_child
        self.transaction_records = transaction_records
        self.published = 0  # highest pub_seq known to be on the topic
        self._skip: dict[int, int] = {}  # partition -> published through, after recovery
        self._queue: deque[Item] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._producer: TransactionalProducer | None = None
        self._partitions = 0
        self._ready = False
        self._floor_at = time.monotonic()
        self._floor = 0
        store.on_stored(self._handed_over)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> AlertPublisher:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="zonewatch-alerts-publisher", daemon=True
            )
            self._thread.start()
        return self

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything stored so far is on the topic."""
        deadline = time.monotonic() + timeout_s
        target = self.store.last_seq
        self._wake.set()
        with self._progress:
            while not (self._ready and self.published >= target):
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._progress.wait(min(left, 0.1))
        return True

    def stop(self, drain: bool = True, timeout_s: float = 10.0) -> bool:
        drained = self.drain(timeout_s) if drain and self._thread is not None else False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        self._close_producer()
        self._keep_floor(force=True)
        return drained

    def _keep_floor(self, force: bool = False) -> None:
        """Store how far the topic is known to hold this store's rows (a
        state-only write on the store's writer thread, not waited for)."""
        if self.published <= self._floor or self.store.read_only:
            return
        if not force and time.monotonic() - self._floor_at < FLOOR_EVERY_S:
            return
        self._floor, self._floor_at = self.published, time.monotonic()
        try:
            self.store.submit([], state={FLOOR_KEY: str(self._floor).encode()})
        except Exception as exc:  # only an optimisation of the next start
            log.warning("alerts_publish_floor_not_stored", error=str(exc)[:200])

    # -- hand-over from the store's writer thread ------------------------------

    def _handed_over(self, items: list[Item]) -> None:
        with self._lock:
            if len(self._queue) + len(items) > MAX_QUEUED:
                # Far behind (Kafka away?): forget them, the store has them.
                self._queue.clear()
            else:
                self._queue.extend(items)
        self._wake.set()

    # -- the thread ---------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if not self._ready:
                    self._connect()
                    failures = 0
                # Cleared before looking: a hand-over from now on wakes the wait.
                self._wake.clear()
                if not self._publish_some():
                    self._wake.wait(1.0)
            except Exception as exc:  # never let the thread die: alerts would stall
                PUBLISH_FAILURES.inc()
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.warning(
                    "alerts_publish_failed",
                    topic=self.topic,
                    error=f"{type(exc).__name__}: {str(exc)[:300]}",
                    retry_in_s=delay,
                    published_through=self.published,
                )
                self._close_producer()
                self._stop.wait(delay)

    def _connect(self) -> None:
        """Fence the previous incarnation, then find how far it got (steps 1-3)."""
        producer = self._new_producer()
        self._producer = producer
        self._partitions = producer.open()
        partitions = list(range(self._partitions))
        stored_floor = self.store.load_state(FLOOR_KEY)
        self._floor = max(self._floor, int(stored_floor) if stored_floor else 0)
        if self.store.last_seq == 0 and self._floor == 0:
            # Nothing numbered yet, so nothing of this store can be on the
            # topic: skip reading back through other stores' records (every
            # record of the topic, for a new store beside busy ones).
            found = dict.fromkeys(partitions, 0)
        else:
            found = self._recover(partitions)
        self._skip = {p: max(seq, self._floor) for p, seq in found.items()}
        self.published = min(self._skip.values(), default=0)
        self._ready = True
        BEHIND.set(max(0, self.store.last_seq - self.published))
        log.info(
            "alerts_publisher_ready",
            topic=self.topic,
            store=self.store_id,
            published_through=max(self._skip.values(), default=0),
            stored_through=self.store.last_seq,
            producer_pid=producer.pid,
        )

    def _new_producer(self) -> TransactionalProducer:
        headers = [(HEADER_STORE, self.store_id.encode())]
        # A child needs fd passing (POSIX); elsewhere the producer stays here.
        if self._make_producer is not None or not self.in_child or os.name != "posix":
            return InProcessProducer(
                self.kafka,
                self.transactional_id,
                self.topic,
                headers,
                HEADER_SEQ,
                make_producer=self._make_producer,
            )
        return ProducerProcess(self.kafka, self.transactional_id, self.topic, headers, HEADER_SEQ)

    @property
    def producer_pid(self) -> int | None:
        """The producer process's pid while one runs (None in-process)."""
        producer = self._producer
        return producer.pid if producer is not None else None

    def _close_producer(self) -> None:
        self._ready = False
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close()
            except Exception as exc:  # closing is best effort: the next start fences it
                log.warning("alerts_producer_close_failed", error=str(exc)[:200])

    def _publish_some(self) -> bool:
        """One transaction of what is due; False when nothing was."""
        items, counts = self._next_items()
        if not items:
            return False
        producer = self._producer
        assert producer is not None
        records: list[Record] = []
        kinds = {"alert": 0, "triage": 0}
        for seq, item in items:
            if isinstance(item, TriageChange):
                key, value, kind = item.alert_id.encode(), triage_record(item), "triage"
            else:
                key, value, kind = item.id.encode(), alert_record(item, counts.get(seq)), "alert"
            partition: int | None = None  # the producer's to compute, off this GIL
            if self._skip:
                partition = partition_of(key, self._partitions)
                if seq <= self._skip.get(partition, 0):
                    continue  # on the topic already (recovered)
            records.append((seq, key, partition, value))
            kinds[kind] += 1
        last = items[-1][0]
        if records:
            producer.transact(records)
        with self._progress:
            self.published = last
            if self._skip and last >= max(self._skip.values()):
                self._skip = {}
            self._progress.notify_all()
        for kind, n in kinds.items():
            if n:
                PUBLISHED.labels(kind=kind).inc(n)
        BEHIND.set(max(0, self.store.last_seq - last))
        self._keep_floor()
        return True

    def _next_items(self) -> tuple[list[Item], dict[int, int]]:
        """The next rows after ``published``: from memory when the store's
        hand-over continues from there, else read from the store."""
        after = self.published
        with self._lock:
            while self._queue and self._queue[0][0] <= after:
                self._queue.popleft()
            if self._queue and self._queue[0][0] == after + 1:
                out: list[Item] = []
                while self._queue and len(out) < self.transaction_records:
                    out.append(self._queue.popleft())
                return out, {}
        if self.store.last_seq <= after:
            return [], {}
        return self._read_store(after)

    def _read_store(self, after: int) -> tuple[list[Item], dict[int, int]]:
        cur = self.store.cursor()
        try:
            rows = cur.execute(
                "SELECT pub_seq, id FROM alerts WHERE pub_seq > ? ORDER BY pub_seq LIMIT ?",
                [after, self.transaction_records],
            ).fetchall()
            changes = cur.execute(
                "SELECT pub_seq, alert_id, changed_at, actor, via, from_status, to_status, "
                "from_assignee, to_assignee, note FROM triage_history WHERE pub_seq > ? "
                "ORDER BY pub_seq LIMIT ?",
                [after, self.transaction_records],
            ).fetchall()
            alerts = load_alerts(cur, [r[1] for r in rows], evidence_limit=EVIDENCE_LIMIT)
        finally:
            cur.close()
        merged: list[Item] = []
        counts: dict[int, int] = {}
        for seq, alert_id in rows:
            found = alerts.get(alert_id)
            if found is not None:
                merged.append((int(seq), found[0]))
                counts[int(seq)] = found[1]
        for seq, *fields in changes:
            merged.append((int(seq), TriageChange(*fields)))
        merged.sort(key=lambda item: item[0])
        return merged[: self.transaction_records], counts

    # -- recovery -------------------------------------------------------------

    def _recover(self, partitions: list[int]) -> dict[int, int]:
        """The highest ``pub_seq`` of this store on each partition, read
        backwards from each partition's end in growing windows."""
        from zonewatch.kafka import log_bounds

        tps = [TopicPartition(self.topic, p) for p in partitions]
        bounds = log_bounds(self.kafka, tps, timeout_s=RECOVER_TIMEOUT_S)
        missing = [tp.partition for tp in tps if tp not in bounds]
        if missing:
            raise KafkaError(f"no log bounds for {self.topic} partitions {missing}")
        consumer = KafkaConsumer(
            **self.kafka.client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        ours = self.store_id.encode()
        found: dict[int, int] = {}
        try:
            for tp in tps:
                b = bounds[tp]
                found[tp.partition] = _last_seq(consumer, tp, b.start, b.end, ours)
        finally:
            consumer.close(autocommit=False)
        return found


def _last_seq(
    consumer: KafkaConsumer,
    tp: TopicPartition,
    start: int,
    end: int,
    ours: bytes,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """The ``pub_seq`` of the last record of store ``ours`` in [start, end).

    However many other stores' records lie after ours (a store that was
    stopped for a day beside busy ones), the search goes on while it reads:
    it gives up only when no record came for ``RECOVER_TIMEOUT_S`` (an open
    transaction holding read_committed readers back, a broker gone)."""
    consumer.assign([tp])
    hi, width = end, 256
    last_read = clock()
    read = 0
    while hi > start:
        lo = max(start, hi - width)
        consumer.seek(tp, lo)
        best: int | None = None
        while consumer.position(tp) < hi:
            if clock() - last_read > RECOVER_TIMEOUT_S:
                raise KafkaError(
                    f"could not read {tp.topic}:{tp.partition} up to offset {hi}: nothing "
                    f"came for {RECOVER_TIMEOUT_S:.0f}s (an open transaction holds "
                    "read_committed readers back until it ends)"
                )
            records = consumer.poll(timeout_ms=200, max_records=5000).get(tp, [])
            if records:
                last_read = clock()
                read += len(records)
            for record in records:
                if record.offset >= hi:
                    break
                seq = _seq_of(record, ours)
                if seq is not None:
                    best = seq
        if best is not None:
            return best
        if read:
            log.info(
                "alerts_topic_read_back",
                partition=tp.partition,
                records_read=read,
                from_offset=lo,
                to_offset=end,
            )
        hi, width = lo, width * 4
    return 0


def _seq_of(record: Any, ours: bytes) -> int | None:
    headers = dict(record.headers or ())
    if headers.get(HEADER_STORE) != ours:
        return None
    try:
        return int(headers[HEADER_SEQ])
    except (KeyError, ValueError):
        return None
