# size: RepartitionedStream specialises correlator/stream.py; both are recomposed (issue 18 part 1).
"""N correlators in one consumer group: the repartitioned stream loop.

``zonewatch correlate --scale-out`` runs this instead of the single-member
loop of ``correlator/stream.py``. Every member is both stages at once, in one
consumer of one group:

* **Detection stage** (source partitions the group gave this member):
  decode, archive, detect, store detection alerts, exactly as the single
  loop does. A hit some correlation reads is not merged locally but sent to
  the hits topic, once per shard its group keys hash to
  (``records.key_partition``). After each batch, and every
  ``WATERMARK_INTERVAL_S`` while quiet, the member tells every shard how far
  it has read each of its source partitions (a watermark record). Hits are
  flushed before the batch's source offsets are stored, so a crash can
  repeat hits (the shard drops replays) but never lose one.
* **Correlation stage** (hits partitions the group gave this member): each
  hits partition is one engine partition. Its :class:`ShardInput` merges the
  hits back into event-time order; the engine windows them. Alerts are
  stored with every batch (deterministic ids, so a replay's are ignored);
  the shard's whole state goes to the changelog topic every
  ``checkpoint_interval_s`` and on revocation, and only then is the hits
  offset committed. A new owner reads the changelog and resumes there.

What it gives: the alerts of one member, from any number of members
(``tests/test_scale_out.py``). What it costs: every correlated hit makes a
round trip through Kafka. Limits: a correlation of correlations must group
by exactly its children's fields (otherwise one parent group would span
shards), checked at start; a member killed with ``kill -9`` whose shard moves
to another member leaves the alerts it raised after its last changelog
snapshot in its own store, and the new owner raises them again in its store
(the same ids: a union of the stores has each once, but Teams may hear twice).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

from correlator.ordering import idle_progress
from correlator.ports import GroupConsumer, Producer, Store
from correlator.resume import BOUNDS_TIMEOUT_S, resume_offsets
from correlator.scaleout.records import (
    ChangelogReader,
    Hit,
    RecordError,
    SourcePartition,
    Watermark,
    changelog_records,
    decode,
    encode_hit,
    encode_watermark,
    key_partition,
    pack_state,
    stale_keys,
    unpack_state,
)
from correlator.scaleout.shard import ShardInput
from correlator.store.rows import ArchivedEvent
from correlator.stream import DEAD_LETTERS, StreamCorrelator, evidence_of
from zonewatch.config import KafkaSettings, Settings
from zonewatch.errors import ZonewatchError
from zonewatch.kafka import (
    commit_in_listener,
    committed_in_listener,
    log_bounds,
    off_the_io_thread,
)
from zonewatch.logs import get_logger
from zonewatch.models import Alert
from zonewatch.offsets import LogBounds

if TYPE_CHECKING:
    from correlator.correlation import CorrelationEngine
    from correlator.detection import RuleSet

log = get_logger(__name__)

WATERMARK_INTERVAL_S = 0.2
IDLE_POLLS = 3  # as correlator/ordering.py: quiet this many polls, and idle_s
CHANGELOG_READ_TIMEOUT_S = 30.0
STATE_VERSION = 1
# The store's copy of each source partition's newest event time, written with
# its offsets: the per-partition lateness verdicts continue after a restart.
SOURCE_PROGRESS_KEY = "scaleout-source-progress"


class ScaleOutError(ZonewatchError):
    """The rules or the cluster do not allow a repartitioned correlator."""


def log_pinned_rules(engine: CorrelationEngine | None) -> None:
    """Say which correlations run on one shard only: chains whose parent
    groups by other fields than its child (``engine.pinned``, see
    ``correlation.engine.pinned_rules``) cannot be split by group key, so
    all their hits go to the shard of ``PIN_KEY``. Correct, not scaled."""
    if engine is None or not engine.pinned:
        return
    log.warning(
        "correlations_on_one_shard",
        rules=sorted(engine.rules[i].title for i in engine.pinned),
        reason="a parent groups by other fields than its child correlation",
        advice="group the parent by exactly its children's fields to spread them",
    )


@dataclass
class _Shard:
    input: ShardInput
    next_offset: int | None = None  # next hits offset to read
    generation: int = 0  # of its newest changelog state
    chunks: int = 0
    dirty: bool = False
    frontier: float = float("-inf")


@dataclass
class _SourceProgress:
    newest: float = float("-inf")
    last_arrival: float = field(default_factory=time.monotonic)
    quiet_polls: int = 0  # polls since its last record


class _Rebalance(AsyncConsumerRebalanceListener):
    """Async: kafka-python runs listeners on the consumer's IO thread, where
    its blocking commit()/committed() are refused (zonewatch/kafka.py)."""

    def __init__(self, loop: RepartitionedStream):
        self.loop = loop

    # kafka-python replaces an exception raised here by "User rebalance
    # callback throws an error": log the real one first.
    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        try:
            await commit_in_listener(self.loop.consumer, self.loop.hand_over(list(revoked)))
        except Exception as exc:
            log.exception("hand_over_failed", error=f"{type(exc).__name__}: {exc}")
            raise

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        try:
            assigned = list(assigned)
            sources = [tp for tp in assigned if tp.topic != self.loop.hits_topic]
            committed = await committed_in_listener(self.loop.consumer, sources)
            kafka = self.loop.settings.kafka
            bounds = await off_the_io_thread(
                self.loop.consumer, lambda: log_bounds(kafka, assigned), BOUNDS_TIMEOUT_S + 5
            )
            self.loop.take_over(assigned, committed, bounds)
        except Exception as exc:
            log.exception("take_over_failed", error=f"{type(exc).__name__}: {exc}")
            raise


class RepartitionedStream(StreamCorrelator):
    def __init__(
        self,
        settings: Settings,
        ruleset: RuleSet,
        store: Store,
        *,
        correlation: CorrelationEngine | None = None,
        consumer: GroupConsumer | None = None,
        producer: Producer | None = None,
    ):
        log_pinned_rules(correlation)
        kafka = settings.kafka
        self.hits_topic, self.state_topic = settings.scale_out_topics
        self.shards: dict[int, _Shard] = {}
        self._sources: dict[SourcePartition, _SourceProgress] = {}
        self._engine_bytes: dict[int, bytes | None] = {}
        self._hit_partitions: int | None = None
        self._last_watermark = 0.0
        stored_progress = store.load_state(SOURCE_PROGRESS_KEY)
        # Newest event time per source partition as of its stored offset (all
        # this member ever read, owned now or not).
        self._progress_store: dict[SourcePartition, float] = (
            {(str(t), int(p)): float(v) for t, p, v in orjson.loads(stored_progress)}
            if stored_progress
            else {}
        )
        if producer is None:
            from zonewatch.kafka import make_producer

            producer = make_producer(kafka, linger_ms=5)
        self.producer: Producer = producer
        super().__init__(settings, ruleset, store, correlation=correlation, consumer=consumer)

    # -- wiring into the base loop ------------------------------------------------
    def _input_topics(self) -> list[str]:
        return [*self.topics, self.hits_topic]

    def _rebalance_listener(self) -> ConsumerRebalanceListener | AsyncConsumerRebalanceListener:
        return _Rebalance(self)

    def _brings_input(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        # Watermarks arrive all the time; only events count as input.
        return any(tp.topic != self.hits_topic for tp in batch) or any(
            b'"h"' in record.value[:8] for tp, records in batch.items() for record in records
        )

    def _idle_work_pending(self) -> bool:
        # Quiet or not, shards wait for this member's watermarks.
        return self.correlation is not None

    def _n_hits(self) -> int:
        if self._hit_partitions is None:
            found = self.group.partitions_for_topic(self.hits_topic)
            if not found:
                raise ScaleOutError(
                    f"topic {self.hits_topic} does not exist: `zonewatch topics` (or "
                    "`zonewatch correlate --scale-out`, which creates it) first"
                )
            self._hit_partitions = len(found)
        return self._hit_partitions

    def process_batch(self, batch: dict[TopicPartition, list[Any]]) -> list[Alert]:
        sources: dict[TopicPartition, list[Any]] = {}
        for tp, records in batch.items():
            if tp.topic == self.hits_topic:
                self._take_hits(tp.partition, records)
            else:
                sources[tp] = records
                progress = self._sources.setdefault((tp.topic, tp.partition), _SourceProgress())
                progress.last_arrival = time.monotonic()
                progress.quiet_polls = 0
        return super().process_batch(sources)

    def _behind(self) -> list[tuple[str, int]] | None:
        # Called once per poll, before the batch is processed.
        for progress in self._sources.values():
            progress.quiet_polls += 1
        return super()._behind()

    def _input_newest(self, key: tuple[str, int]) -> float:
        progress = self._sources.get(key)
        return progress.newest if progress is not None else -math.inf

    def _input_progressed(self, key: tuple[str, int], newest: float) -> None:
        progress = self._sources.setdefault(key, _SourceProgress())
        if newest > progress.newest:
            progress.newest = newest

    # -- detection stage: hits out --------------------------------------------------
    def _evaluate(
        self,
        hits: list[Any],
        record: Any,
        event: dict[str, Any],
        when: datetime,
        tp: TopicPartition,
        t: float,
        late: float | None,
    ) -> list[Alert]:
        out: list[Alert] = []
        generated = [rule for rule in hits if rule.generate]
        if generated:
            evidence = evidence_of(
                record.topic,
                record.partition,
                record.offset,
                when,
                event,
                self._labels.get(record.topic),
            )
            out = self.throttle.alerts(generated, evidence, self.make_alert)
        if self._correlated and self.correlation is not None:
            ids = [r.id for r in hits if r.id in self._correlated]
            if ids:
                keys = self.correlation.group_keys(ids, event)
                if keys:
                    n = self._n_hits()
                    value = encode_hit(
                        Hit(
                            (record.topic, record.partition),
                            record.offset,
                            t,
                            when.isoformat(),
                            ids,
                            event,
                            late,
                        )
                    )
                    for p in {key_partition(k, n) for k in keys}:
                        self.producer.send(self.hits_topic, value=value, partition=p)
        return out

    def _emit_watermarks(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_watermark < WATERMARK_INTERVAL_S:
            return
        self._last_watermark = now
        idle_s = self.settings.correlator.input_idle_s
        progress: dict[SourcePartition, float] = {}
        idle: list[SourcePartition] = []
        for tp in self.group.assignment():
            if tp.topic == self.hits_topic:
                continue
            source = (tp.topic, tp.partition)
            state = self._sources.setdefault(source, _SourceProgress())
            high = self.group.highwater(tp)
            if (
                high is not None
                and state.quiet_polls >= IDLE_POLLS
                and now - state.last_arrival >= idle_s
                and self.group.position(tp) >= high
            ):
                # Read to the end and quiet, for polls AND wall time (after a
                # long pause, e.g. a rebalance, the high watermark is stale):
                # like the single loop, time itself moves it on from where the
                # input stopped (correlator/ordering.py idle_progress).
                idle.append(source)
                if state.newest != float("-inf"):
                    progress[source] = idle_progress(state.newest, now - state.last_arrival, idle_s)
            elif state.newest != float("-inf"):
                progress[source] = state.newest
        # An idle input that never delivered anything (an empty partition)
        # must not hold the shards back: it goes as far as this member's
        # furthest input, or, when this member has read nothing at all, the
        # wall clock less the idle window.
        furthest = max(progress.values(), default=time.time() - idle_s)
        for source in idle:
            progress.setdefault(source, furthest)
        if progress:
            value = encode_watermark(progress)
            for p in range(self._n_hits()):
                self.producer.send(self.hits_topic, value=value, partition=p)

    # -- correlation stage: hits in -------------------------------------------------
    def _take_hits(self, partition: int, records: list[Any]) -> None:
        shard = self.shards.get(partition)
        if shard is None:  # not ours (any more): the owner reads it
            return
        for record in records:
            shard.next_offset = record.offset + 1
            shard.dirty = True
            try:
                item = decode(record.value)
            except RecordError as exc:
                DEAD_LETTERS.labels(reason="RecordError").inc()
                self.stats.dead_letters += 1
                log.warning(
                    "undecodable_hit",
                    partition=partition,
                    offset=record.offset,
                    reason=str(exc)[:200],
                )
                continue
            if isinstance(item, Watermark):
                shard.input.declare(item.progress)
            else:
                shard.input.offer(item)
        self._dirty = True

    def _correlate(self, end: bool = False, to_wall_clock: bool = False) -> list[Alert]:
        # to_wall_clock (an idle exit) is the single loop's: here each member's
        # idle sources declare their progress to the shards (_emit_watermarks).
        if self.correlation is None:
            return []
        if not end:
            self._emit_watermarks()
        engine = self.correlation
        n = self._n_hits() if self.shards else 0
        out: list[Alert] = []
        for p, shard in self.shards.items():

            def accept(key: tuple[Any, ...], p: int = p) -> bool:
                return key_partition(key, n) == p

            items = []
            for hit in shard.input.release():
                topic, partition = hit.source
                when = datetime.fromisoformat(hit.when)
                evidence = evidence_of(topic, partition, hit.offset, when, hit.event)
                items.append((hit.ids, hit.event, evidence, hit.time))
            out.extend(engine.process_many(items, p, accept))
            late = []
            for hit in shard.input.take_late():
                topic, partition = hit.source
                when = datetime.fromisoformat(hit.when)
                evidence = evidence_of(topic, partition, hit.offset, when, hit.event)
                late.append((hit.ids, hit.event, evidence, hit.time, hit.late or 0.0))
            if late:
                shard.dirty = True
                out.extend(engine.process_late(late, p, accept))
            frontier = shard.input.frontier()
            if frontier > shard.frontier and frontier != float("inf"):
                shard.frontier = frontier
                shard.dirty = True
                self._dirty = True
                out.extend(engine.advance_watermark(p, frontier))
        if end:
            out.extend(engine.flush())
        return out

    # -- checkpoints --------------------------------------------------------------
    def _checkpoint(
        self,
        alerts: list[Alert],
        offsets: dict[tuple[str, int], int],
        archive: list[ArchivedEvent] | None = None,
        force: bool = False,
        commit: bool = True,
        more_coming: bool = False,
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Hits out first (flush), then the batch in DuckDB (alerts, archive,
        source offsets), then, every ``checkpoint_interval_s``, each changed
        shard to the changelog and the Kafka commit of what it covers (left
        to the caller when ``commit`` is false: a rebalance listener)."""
        self.producer.flush()
        self._resume.update(offsets)
        state = self._archive_state(archive)
        if offsets:
            for key in offsets:
                progress = self._sources.get(key)
                if progress is not None and progress.newest != -math.inf:
                    self._progress_store[key] = progress.newest
            state[SOURCE_PROGRESS_KEY] = orjson.dumps(
                [[t, p, v] for (t, p), v in self._progress_store.items()]
            )
        if alerts or archive or state or offsets:
            new_ids = self.store.write(
                alerts, events=archive or (), state=state or None, offsets=offsets or None
            )
            self._count_stored(alerts, new_ids)
        if not (force or self._checkpoint_due()):
            return {}
        offsets_out = self._source_commits()
        if self.shards:
            self._write_changelog()
            for p, shard in self.shards.items():
                if shard.next_offset is not None:
                    offsets_out[TopicPartition(self.hits_topic, p)] = OffsetAndMetadata(
                        shard.next_offset, "", -1
                    )
        self._last_full = time.monotonic()
        self._dirty = False
        if offsets_out and commit:
            self._commit(offsets_out)
        return offsets_out

    def _source_commits(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """The source offsets to commit, each with its partition's newest
        event time as metadata: a member taking the partition over judges
        lateness from there as this one would have (``take_over``)."""
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for (topic, partition), offset in self._resume.items():
            newest = self._progress_store.get((topic, partition))
            meta = orjson.dumps({"newest": newest}).decode() if newest is not None else ""
            out[TopicPartition(topic, partition)] = OffsetAndMetadata(offset, meta, -1)
        return out

    def _write_changelog(self) -> None:
        engine = self.correlation
        if engine is not None:
            self._engine_bytes.update(engine.snapshot_partitions(only_changed=True))
        stale: list[tuple[int, list[bytes]]] = []
        for p, shard in self.shards.items():
            if not shard.dirty:
                continue
            meta = {
                "version": STATE_VERSION,
                "hits_offset": shard.next_offset,
                "frontier": shard.frontier if shard.frontier != float("-inf") else None,
                "input": shard.input.snapshot(),
            }
            data = pack_state(meta, self._engine_bytes.get(p))
            generation = shard.generation + 1
            count = 0
            for key, value in changelog_records(p, generation, data):
                self.producer.send(self.state_topic, key=key, value=value, partition=p)
                count += 1
            if shard.generation:
                stale.append((p, stale_keys(p, shard.generation, shard.chunks)))
            shard.generation, shard.chunks, shard.dirty = generation, count - 1, False
        self.producer.flush()
        for p, keys in stale:  # tombstones: compaction frees the old generation
            for key in keys:
                self.producer.send(self.state_topic, key=key, value=None, partition=p)

    # -- rebalance ------------------------------------------------------------------
    def hand_over(self, revoked: list[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """Revocation: make everything durable, then forget the revoked shards
        (their state is in the changelog for the next owner). Returns the
        offsets the listener commits."""
        offsets = self._checkpoint([], {}, force=True, commit=False)
        self._assigned = False
        for tp in revoked:
            if tp.topic == self.hits_topic:
                self.shards.pop(tp.partition, None)
                self._engine_bytes.pop(tp.partition, None)
                if self.correlation is not None:
                    self.correlation.export_partition(tp.partition)
            else:
                self._sources.pop((tp.topic, tp.partition), None)
        log.info("partitions_revoked", partitions=[f"{tp.topic}:{tp.partition}" for tp in revoked])
        return offsets

    def take_over(
        self,
        assigned: list[TopicPartition],
        committed: dict[TopicPartition, tuple[int, str]],
        bounds: dict[TopicPartition, LogBounds] | None = None,
    ) -> None:
        self._assigned_at = time.monotonic()
        self._assigned = True
        self._caught_up = False
        stored = self.store.load_offsets()
        hits = [tp.partition for tp in assigned if tp.topic == self.hits_topic]
        sources = [tp for tp in assigned if tp.topic != self.hits_topic]
        wanted: dict[TopicPartition, int] = {}
        for tp in sources:
            source = (tp.topic, tp.partition)
            progress = self._sources[source] = _SourceProgress()
            # Another member may have moved this partition on since this store
            # last saw it: resume from the further of the two (hits already
            # sent again are dropped by the shards), with the newest event
            # time that goes with it (lateness is judged from there).
            mine = stored.get(source)
            theirs, meta = committed.get(tp, (None, ""))
            if theirs is not None and (mine is None or theirs > mine):
                wanted[tp] = theirs
                progress.newest = _committed_newest(meta)
            elif mine is not None:
                wanted[tp] = mine
                progress.newest = self._progress_store.get(source, -math.inf)
        # Each resume point checked against its log (truncated, recreated,
        # ahead of its end); a partition that moves starts its lateness afresh.
        seek = self.resume_at(sources, wanted, bounds)
        for tp, offset in seek.items():
            self.group.seek(tp, offset)
            if wanted.get(tp) != offset:
                self._sources[(tp.topic, tp.partition)].newest = -math.inf
        restored = self._restore_shards(hits, bounds) if hits else {}
        log.info(
            "partitions_assigned",
            partitions=[f"{tp.topic}:{tp.partition}" for tp in assigned],
            shards=sorted(hits),
            shards_restored=sorted(p for p, ok in restored.items() if ok),
        )

    def _all_sources(self) -> list[SourcePartition]:
        out: list[SourcePartition] = []
        for topic in self.topics:
            for partition in self.group.partitions_for_topic(topic) or ():
                out.append((topic, partition))
        return out

    def _restore_shards(
        self, partitions: list[int], bounds: dict[TopicPartition, LogBounds] | None = None
    ) -> dict[int, bool]:
        readers = read_changelog(self.settings.kafka, self.state_topic, partitions)
        sources = self._all_sources()
        restored: dict[int, bool] = {}
        # A state written before event times were bounded may hold year 9999.
        limit = time.time() + self.time_bounds.max_future_skew_s
        for p in partitions:
            reader = readers[p]
            tp = TopicPartition(self.hits_topic, p)
            shard = _Shard(ShardInput(sources), generation=reader.generation, chunks=reader.chunks)
            engine_bytes: bytes | None = None
            if reader.latest is not None:
                meta, engine_bytes = unpack_state(reader.latest)
                if meta.get("version") != STATE_VERSION:
                    raise ScaleOutError(
                        f"changelog state of shard {p} has version {meta.get('version')}, "
                        f"this correlator reads {STATE_VERSION}"
                    )
                shard.input = ShardInput.restore(meta["input"], limit)
                shard.input.expect(sources)
                shard.next_offset = meta["hits_offset"]
                if meta.get("frontier") is not None and float(meta["frontier"]) <= limit:
                    shard.frontier = float(meta["frontier"])
            if self.correlation is not None:
                self.correlation.export_partition(p)  # whatever was here is stale
                if engine_bytes is not None:
                    self.correlation.import_partition(p, engine_bytes)
                    self.correlation.clamp_clock(limit)
            self._engine_bytes[p] = engine_bytes
            self.shards[p] = shard
            restored[p] = reader.latest is not None
        # The hits offsets of the changelog, checked against the hits log too.
        tps = [TopicPartition(self.hits_topic, p) for p in partitions]
        stored = {tp: self.shards[tp.partition].next_offset for tp in tps}
        checked = resume_offsets(
            self.settings.kafka,
            tps,
            {tp: o for tp, o in stored.items() if o is not None},
            {},
            bounds,
        ).seek
        for tp in tps:
            if tp in checked:
                self.group.seek(tp, checked[tp])
            else:
                self.group.seek_to_beginning(tp)
        return restored

    def close(self) -> None:
        try:
            self.producer.flush()
            self.producer.close()
        except Exception as exc:  # best effort: hits not flushed are re-sent on replay
            log.warning("producer_close_failed", error=str(exc))
        super().close()


def _committed_newest(metadata: str) -> float:
    """The newest event time a member committed with a source offset."""
    try:
        newest = orjson.loads(metadata).get("newest") if metadata else None
        return float(newest) if newest is not None else -math.inf
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return -math.inf


def read_changelog(
    kafka: KafkaSettings, topic: str, partitions: list[int]
) -> dict[int, ChangelogReader]:
    """Read the changelog partitions to their end (high watermark)."""
    from zonewatch.kafka import make_consumer

    readers = {p: ChangelogReader(p) for p in partitions}
    consumer = make_consumer(kafka, None, isolation_level="read_uncommitted")
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + CHANGELOG_READ_TIMEOUT_S
        while True:
            for tp, records in consumer.poll(timeout_ms=200).items():
                readers[tp.partition].feed((r.key, r.value) for r in records)
            ends = [consumer.highwater(tp) for tp in tps]
            if all(
                h is not None and consumer.position(tp) >= h
                for tp, h in zip(tps, ends, strict=True)
            ):
                return readers
            if time.monotonic() > deadline:
                raise ScaleOutError(
                    f"could not read the correlation state changelog {topic} to its end "
                    f"within {CHANGELOG_READ_TIMEOUT_S:.0f}s; is the broker healthy?"
                )
    finally:
        consumer.close(autocommit=False)
