"""Retro-hunt: run rules over the ``events`` archive with the streaming code.

The archive is replayed through :class:`correlator.stream.StreamCorrelator`
(the loop ``zonewatch correlate`` runs) in batches shaped like Kafka polls,
so detections and correlations behave exactly as they did live. What differs
is only where results go: hits are stored as alerts with origin ``hunt``;
the live consumer offsets and correlation state are never touched. Alert ids
are deterministic, so a hunt over a day the stream already saw finds the
same ids and stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
from kafka.structs import TopicPartition

from correlator.detection import detection_alert
from correlator.detection.pipelines import configured_pipeline
from correlator.service import load_ruleset, make_correlation_engine
from correlator.store.alert_store import AlertStore, written_now
from correlator.store.rows import ArchivedEvent
from correlator.store.state import StateWriter
from correlator.stream import StreamCorrelator
from zonewatch.config import Settings
from zonewatch.errors import StoreError
from zonewatch.logs import get_logger
from zonewatch.models import Alert

log = get_logger(__name__)


@dataclass
class HuntResult:
    events: int
    rules: int
    alerts: int
    new_alerts: int
    new_ids: list[str]


@dataclass(frozen=True)
class _Record:
    """The parts of a Kafka ConsumerRecord the stream loop reads."""

    topic: str
    partition: int
    offset: int
    value: bytes


class _ArchiveConsumer:
    """Stands in for KafkaConsumer: ``poll`` hands out batches read from the
    archive; when they run out it stops the loop, which then treats the input
    as finite (buffered correlation input applied, covered windows resolved)."""

    def __init__(
        self, batches: Iterator[dict[TopicPartition, list[_Record]]] | None = None
    ) -> None:
        self._batches = batches if batches is not None else iter(())
        self.loop: StreamCorrelator | None = None

    def poll(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[_Record]]:
        batch = next(self._batches, None)
        if batch is None:
            if self.loop is not None:
                self.loop.stop()
            return {}
        return batch

    def subscribe(self, topics: Sequence[str], listener: Any = None) -> None:
        pass

    def commit(self, offsets: Mapping[TopicPartition, Any] | None = None) -> None:
        pass

    def highwater(self, tp: TopicPartition) -> None:
        return None

    def position(self, tp: TopicPartition) -> int:
        return 0

    def close(self, autocommit: bool = False) -> None:
        pass


class _HuntSink:
    """The stream loop's store, for a hunt: alerts only, marked ``hunt``."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store
        self.alerts = 0
        self.new_ids: list[str] = []

    def write(
        self,
        alerts: Sequence[Alert],
        *,
        events: Sequence[ArchivedEvent] = (),
        state: Mapping[str, bytes | StateWriter] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> list[str]:
        marked = [a if a.origin == "hunt" else replace(a, origin="hunt") for a in alerts]
        self.alerts += len(marked)
        new = self.store.write(marked) if marked else []
        self.new_ids.extend(new)
        return new

    def submit(
        self,
        alerts: Sequence[Alert],
        *,
        events: Sequence[ArchivedEvent] = (),
        state: Mapping[str, bytes | StateWriter] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
    ) -> Future[list[str]]:
        """``write``, done at once (a hunt has no Kafka to keep polling)."""
        return written_now(lambda: self.write(alerts, events=events, state=state, offsets=offsets))

    def load_state(self, key: str) -> bytes | None:
        return None

    def load_offsets(self) -> dict[tuple[str, int], int]:
        return {}


def run_hunt(
    db_path: Path | str,
    rule_paths: Sequence[Path],
    *,
    since: str = "-infinity",
    until: str = "infinity",
    pipeline: str | None = None,
    placeholders: Path | str | None = None,
    settings: Settings | None = None,
    batch_size: int = 5000,
    progress: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> HuntResult:
    """Hunt ``rule_paths`` over archived events in [since, until).

    ``pipeline`` and ``placeholders`` (a placeholder file) default to the
    settings' (``correlator.pipeline``, ``correlator.placeholders_file``)."""
    # A retro-hunt reads the past on purpose: no past horizon (the future
    # bound still keeps an event stamped in year 9999 out of correlation).
    settings = (settings or Settings()).updated(correlator={"max_past_horizon_days": None})
    ruleset = load_ruleset(
        list(rule_paths), configured_pipeline(settings.correlator, pipeline, placeholders)
    )
    try:
        store = AlertStore(db_path)
    except StoreError as exc:
        raise StoreError(
            f"{exc}. A hunt writes alerts, so it needs the store to itself: stop "
            "`zonewatch correlate`, or hunt a copy of the file (--db COPY)"
        ) from exc
    with store:
        store.register_rules(ruleset.detections)
        sink = _HuntSink(store)
        total = _count(store, since, until)
        counted = [0]
        with _progress(progress, total) as advance:

            def batches() -> Iterator[dict[TopicPartition, list[_Record]]]:
                for batch in _batches(store, settings, since, until, batch_size):
                    done = sum(len(r) for r in batch.values())
                    counted[0] += done
                    advance(done)
                    if on_batch:
                        on_batch(counted[0])
                    yield batch

            consumer = _ArchiveConsumer(batches())
            loop = StreamCorrelator(
                settings,
                ruleset,
                sink,
                correlation=make_correlation_engine(ruleset, settings, None),
                consumer=consumer,
                finite=True,
                make_alert=lambda rule, evidence: detection_alert(rule, evidence, origin="hunt"),
            )
            consumer.loop = loop
            loop.run(end_of_input=True)
        events = counted[0]
    log.info("hunt_done", events=events, alerts=sink.alerts, new_alerts=len(sink.new_ids))
    return HuntResult(events, len(ruleset.detections), sink.alerts, len(sink.new_ids), sink.new_ids)


_SELECT = """
    SELECT topic, "partition", "offset", source, event_id, event
    FROM events
    WHERE time >= ?::TIMESTAMPTZ AND time < ?::TIMESTAMPTZ
    ORDER BY time, topic, "partition", "offset", event_id
"""


def _count(store: AlertStore, since: str, until: str) -> int:
    cur = store.cursor()
    try:
        row = cur.execute(
            "SELECT count(*) FROM events WHERE time >= ?::TIMESTAMPTZ AND time < ?::TIMESTAMPTZ",
            [since, until],
        ).fetchone()
    finally:
        cur.close()
    return int(row[0]) if row else 0


def _batches(
    store: AlertStore, settings: Settings, since: str, until: str, size: int
) -> Iterator[dict[TopicPartition, list[_Record]]]:
    cur = store.cursor()
    try:
        cur.execute(_SELECT, [since, until])
        offline = 0
        while rows := cur.fetchmany(size):
            batch: dict[TopicPartition, list[_Record]] = {}
            for topic, partition, offset, source, _event_id, event in rows:
                if topic is None or offset is None:
                    # Archived offline (no Kafka position): number them locally.
                    topic = settings.kafka.events_topic(source or "unknown")
                    partition, offset = -1, offline
                    offline += 1
                value = event.encode() if isinstance(event, str) else orjson.dumps(event)
                batch.setdefault(TopicPartition(topic, int(partition or 0)), []).append(
                    _Record(topic, int(partition or 0), int(offset), value)
                )
            yield batch
    finally:
        cur.close()


class _progress:
    """A rich progress bar on a terminal, nothing otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda _n: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.start()
        task = self._bar.add_task("hunting", total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
