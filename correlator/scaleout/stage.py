"""N correlators in one consumer group: the repartitioned correlation stage.

``zonewatch correlate --scale-out`` gives the stream loop
(``correlator/stream.py``) this stage instead of the single member's merge
and engine (``correlator/local.py``). Every member is both stages at once, in
one consumer of one group:

* **Detection stage** (source partitions the group gave this member):
  decode, archive, detect, store detection alerts: the loop does it, as
  in the single-member mode. A hit some correlation reads is not merged locally but sent to
  the hits topic, once per shard its group keys hash to
  (``records.key_partition``). After each batch, and every
  ``WATERMARK_INTERVAL_S`` while quiet, the member tells every shard how far
  it has read each of its source partitions (a watermark record; idle
  sources move on with the wall clock, ``correlator/progress.py``). Hits are
  flushed before the batch's source offsets are stored
  (``correlator/checkpointer.py``, step 2), so a crash can repeat hits (the
  shard drops replays) but never lose one.
* **Correlation stage** (hits partitions the group gave this member): each
  hits partition is one engine partition. Its :class:`ShardInput` merges the
  hits back into event-time order; the engine windows them. Alerts are
  stored with every batch (deterministic ids, so a replay's are ignored);
  the shard's whole state goes to the changelog topic every
  ``checkpoint_interval_s`` and on revocation, once the alerts it fired are
  stored (checkpointer step 6), and only then is the hits offset committed.
  A new owner reads the changelog and resumes there.

What it gives: the alerts of one member, from any number of members
(``tests/test_scale_out.py``), a batch run with ``--idle-exit`` included: an
exiting member declares time caught up for its sources and waits for its
shards to hear the same from the others (``begin_exit``). What it costs: every
correlated hit makes a round trip through Kafka. Limits: a correlation of
correlations must group by exactly its children's fields (otherwise one parent
group would span shards), checked at start; a member killed with ``kill -9``
whose shard moves to another member leaves the alerts it raised after its last
changelog snapshot in its own store, and the new owner raises them again in
its store (the same ids: a union of the stores has each once, but Teams may
hear twice).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from kafka import OffsetAndMetadata, TopicPartition

from correlator.correlation.clock import SourceClock
from correlator.intake import DEAD_LETTERS
from correlator.local import CHECKPOINTS_NOT_STORED
from correlator.ports import GroupConsumer, Producer, StageHost, Store
from correlator.progress import ProgressPolicy
from correlator.resume import resume_offsets
from correlator.scaleout.changelog import (
    ScaleOutError,
    Shard,
    read_changelog,
    restore_shard,
    write_changelog,
)
from correlator.scaleout.outgoing import HitsOut, SourceProgress, declared_progress
from correlator.scaleout.records import (
    Hit,
    RecordError,
    SourcePartition,
    Watermark,
    carries_hits,
    decode,
    encode_hit,
    encode_watermark,
    key_partition,
)
from correlator.store.state import CheckpointNotStoredError
from correlator.stream import StreamCorrelator, evidence_of
from zonewatch.config import KafkaSettings, Settings
from zonewatch.logs import get_logger
from zonewatch.models import Alert, Evidence
from zonewatch.offsets import LogBounds

if TYPE_CHECKING:
    from correlator.correlation import CorrelationEngine
    from correlator.detection import RuleSet

log = get_logger(__name__)

WATERMARK_INTERVAL_S = 0.2
# The store's copy of each source partition's newest event time, written with
# its offsets: the per-partition lateness verdicts continue after a restart.
SOURCE_PROGRESS_KEY = "scaleout-source-progress"


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


def RepartitionedStream(
    settings: Settings,
    ruleset: RuleSet,
    store: Store,
    *,
    correlation: CorrelationEngine | None = None,
    consumer: GroupConsumer,
    producer: Producer | None = None,
) -> StreamCorrelator:
    """The stream loop with the repartitioned correlation stage."""
    log_pinned_rules(correlation)
    if producer is None:
        from zonewatch.kafka import make_producer

        producer = make_producer(settings.kafka, linger_ms=5)
    stage = RepartitionedCorrelation(
        correlation,
        producer,
        settings.kafka,
        ProgressPolicy.from_settings(settings.correlator),
        settings.scale_out_topics,
        source_clock=SourceClock.from_settings(settings.correlator),
    )
    return StreamCorrelator(settings, ruleset, store, consumer=consumer, stage=stage)


# size: the stage is one Kafka protocol (hits out, shard inputs in, watermarks, changelog
# hand-over) whose parts share the shard table; changelog I/O is in changelog.py.
class RepartitionedCorrelation:
    """Hits out to the shards, shard inputs in, each shard's state in the changelog."""

    offsets_every_write = True  # the correlation state is not in DuckDB

    def __init__(
        self,
        engine: CorrelationEngine | None,
        producer: Producer,
        kafka: KafkaSettings,
        policy: ProgressPolicy,
        topics: tuple[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        source_clock: SourceClock | None = None,
    ):
        self.engine = engine
        # Delivery delays per source (correlation/clock.py): an idle source
        # partition of a delayed source holds the shards back that long.
        self.source_clock = source_clock
        self.correlated: frozenset[str] = frozenset(engine.referenced_rule_ids if engine else ())
        self.producer = producer
        self.kafka = kafka
        self.policy = policy
        self.clock = clock
        self.wall = wall
        self.hits_topic, self.state_topic = topics
        self.shards: dict[int, Shard] = {}
        self._sources: dict[SourcePartition, SourceProgress] = {}
        self._engine_bytes: dict[int, bytes | None] = {}
        self._hit_partitions: int | None = None
        self._last_watermark = 0.0
        self._progress_store: dict[SourcePartition, float] = {}
        # A batch's hits, one record per shard (``offer`` gathers them).
        self.hits_out = HitsOut(producer, self.hits_topic)
        # An idle exit in progress: the wall clock when it began (begin_exit).
        self._exiting_at: float | None = None
        self.loop: StageHost | None = None

    def bind(self, loop: StageHost) -> None:
        self.loop = loop
        stored_progress = loop.store.load_state(SOURCE_PROGRESS_KEY)
        # Newest event time per source partition as of its stored offset (all
        # this member ever read, owned now or not).
        if stored_progress:
            self._progress_store = {
                (str(t), int(p)): float(v) for t, p, v in orjson.loads(stored_progress)
            }

    @property
    def _loop(self) -> StageHost:
        assert self.loop is not None, "bind() first"
        return self.loop

    @property
    def stateless(self) -> bool:
        return self.engine is None

    @property
    def publishes(self) -> bool:
        return self.engine is not None

    def extra_topics(self) -> list[str]:
        return [self.hits_topic]

    def replace_engine(self, engine: CorrelationEngine | None) -> None:
        self.engine = engine
        self.correlated = frozenset(engine.referenced_rule_ids if engine else ())

    def _n_hits(self) -> int:
        if self._hit_partitions is None:
            found = self._loop.group.partitions_for_topic(self.hits_topic)
            if not found:
                raise ScaleOutError(
                    f"topic {self.hits_topic} does not exist: `zonewatch topics` (or "
                    "`zonewatch correlate --scale-out`, which creates it) first"
                )
            self._hit_partitions = len(found)
        return self._hit_partitions

    # -- input ------------------------------------------------------------------------
    def split(self, batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """Take the hits of a poll into the shards; the source records go on."""
        sources: dict[TopicPartition, list[Any]] = {}
        for tp, records in batch.items():
            if tp.topic == self.hits_topic:
                self._take_hits(tp.partition, records)
            else:
                sources[tp] = records
        return sources

    def brings_input(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        # Watermarks arrive all the time; only events count as input.
        return any(tp.topic != self.hits_topic for tp in batch) or any(
            carries_hits(record.value) for records in batch.values() for record in records
        )

    def polled(
        self, delivered: Iterable[tuple[str, int]], behind: list[tuple[str, int]] | None
    ) -> None:
        got = {key for key in delivered if key[0] != self.hits_topic}
        now = self.clock()
        for source, progress in self._sources.items():
            if source in got:
                progress.last_arrival, progress.quiet_polls = now, 0
            else:
                progress.quiet_polls += 1
        for source in got - self._sources.keys():
            self._sources[source] = SourceProgress(now)

    def idle_work_pending(self) -> bool:
        # Quiet or not, shards wait for this member's watermarks.
        return self.engine is not None

    # -- idle exit ------------------------------------------------------------------
    def begin_exit(self) -> None:
        """An idle exit (``--idle-exit``: a batch run over past logs) ends as if
        time had caught up, as the single member's does (``local.py``); but
        the shards wait for every member's sources. So this member declares
        the wall clock (less the idle window) for its idle sources from now
        on, and stays until its shards have heard the same from the other
        members (:meth:`ready_to_exit`): a member exiting too declares it; a
        member that left hands its sources to the ones staying, which
        declare them in turn. A member that keeps working holds the shards
        back as it should; the loop stops waiting after a while and the
        shards' state goes to the changelog for their next owner."""
        self._exiting_at = self.wall()
        self._emit_watermarks(force=True)

    def ready_to_exit(self) -> bool:
        """Whether every shard of this member has been released up to the
        moment its idle exit began (less the idle window, and as much again
        for other members' clocks)."""
        if self._exiting_at is None:
            return True
        target = self._exiting_at - 2 * self.policy.default.idle_s
        return all(shard.frontier >= target for shard in self.shards.values())

    def newest(self, key: tuple[str, int]) -> float:
        progress = self._sources.get(key)
        return progress.newest if progress is not None else -math.inf

    def progressed(self, key: tuple[str, int], newest: float) -> None:
        progress = self._sources.get(key)
        if progress is None:
            progress = self._sources[key] = SourceProgress(self.clock())
        if newest > progress.newest:
            progress.newest = newest

    # -- detection stage: hits out --------------------------------------------------
    def offer(
        self,
        ids: list[str],
        record: Any,
        event: dict[str, Any],
        evidence: Evidence,
        when: datetime,
        t: float,
        late: float | None,
    ) -> None:
        """A correlation hit to every shard its group keys hash to."""
        if self.engine is None:
            return
        keys = self.engine.group_keys(ids, event)
        if not keys:
            return
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
            self.hits_out.add(p, value)

    def _emit_watermarks(self, force: bool = False) -> None:
        # A source's watermark follows its hits on every shard.
        self.hits_out.send()
        now = self.clock()
        if not force and now - self._last_watermark < WATERMARK_INTERVAL_S:
            return
        self._last_watermark = now
        group = self._loop.group
        sources: dict[SourcePartition, tuple[SourceProgress, bool]] = {}
        for tp in group.assignment():
            if tp.topic == self.hits_topic:
                continue
            source = (tp.topic, tp.partition)
            state = self._sources.get(source)
            if state is None:
                state = self._sources[source] = SourceProgress(now)
            # Read to the end, by the fetch answers' high watermark (after a
            # long pause, e.g. a rebalance, it is stale: hence the wall time too).
            high = group.highwater(tp)
            sources[source] = (state, high is None or group.position(tp) < high)
        progress = declared_progress(
            sources,
            self.policy,
            now,
            self.wall(),
            delays=self.source_clock,
            exiting=self._exiting_at is not None,
        )
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
                self._loop.stats.dead_letters += 1
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
                for hit in item:
                    shard.input.offer(hit)
        self._loop.checkpointer.dirty = True

    def correlate(
        self, end: bool, assigned: bool, caught_up: bool, to_wall_clock: bool = False
    ) -> list[Alert]:
        # to_wall_clock (an idle exit) is the local stage's: here the member's
        # idle sources declare the wall clock to the shards (begin_exit).
        engine = self.engine
        if engine is None:
            return []
        self.hits_out.send()
        if not end:
            self._emit_watermarks()
        n = self._n_hits() if self.shards else 0
        out: list[Alert] = []
        for p, shard in self.shards.items():

            def accept(key: tuple[Any, ...], p: int = p) -> bool:
                return key_partition(key, n) == p

            items = []
            for hit in shard.input.release():
                evidence = _evidence(hit)
                items.append((hit.ids, hit.event, evidence, hit.time))
            out.extend(engine.process_many(items, p, accept))
            late = []
            for hit in shard.input.take_late():
                evidence = _evidence(hit)
                late.append((hit.ids, hit.event, evidence, hit.time, hit.late or 0.0))
            if late:
                shard.dirty = True
                out.extend(engine.process_late(late, p, accept))
            frontier = shard.input.frontier()
            if frontier > shard.frontier and frontier != float("inf"):
                shard.frontier = frontier
                shard.dirty = True
                self._loop.checkpointer.dirty = True
                out.extend(engine.advance_watermark(p, frontier))
        if end:
            out.extend(engine.flush())
        return out

    # -- checkpoint (correlator/checkpointer.py) -----------------------------------
    def flush(self) -> None:
        """Hits out first: the offsets written next lie past their records."""
        self.hits_out.send()
        self.producer.flush()

    def write_state(self, offsets: Mapping[tuple[str, int], int]) -> dict[str, bytes]:
        """Each source partition's newest event time, with its stored offset."""
        if not offsets:
            return {}
        for key in offsets:
            progress = self._sources.get(key)
            if progress is not None and progress.newest != -math.inf:
                self._progress_store[key] = progress.newest
        return {
            SOURCE_PROGRESS_KEY: orjson.dumps(
                [[t, p, v] for (t, p), v in self._progress_store.items()]
            )
        }

    def snapshot(self) -> dict[str, Any]:
        return {}  # the shards' state goes to the changelog (``publish``)

    def commit_metadata(self, key: tuple[str, int]) -> str:
        """A source offset is committed with its partition's newest event time:
        a member taking the partition over judges lateness from there as this
        one would have (``take_over``)."""
        newest = self._progress_store.get(key)
        return orjson.dumps({"newest": newest}).decode() if newest is not None else ""

    def publish(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Each changed shard to the changelog; the hits offsets it covers."""
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        if not self.shards:
            return out
        self._write_changelog()
        for p, shard in self.shards.items():
            if shard.next_offset is not None:
                out[TopicPartition(self.hits_topic, p)] = OffsetAndMetadata(
                    shard.next_offset, "", -1
                )
        return out

    def checkpointed(self) -> None:
        pass

    def not_stored(self, exc: CheckpointNotStoredError) -> None:
        CHECKPOINTS_NOT_STORED.inc()

    def _write_changelog(self) -> None:
        if self.engine is not None:
            self._engine_bytes.update(self.engine.snapshot_partitions(only_changed=True))
        write_changelog(self.producer, self.state_topic, self.shards, self._engine_bytes)

    # -- rebalance ------------------------------------------------------------------
    def hand_over(self, revoked: list[TopicPartition]) -> None:
        """Forget the revoked shards (the loop has just published their state
        for the next owner) and source partitions."""
        for tp in revoked:
            if tp.topic == self.hits_topic:
                self.shards.pop(tp.partition, None)
                self._engine_bytes.pop(tp.partition, None)
                if self.engine is not None:
                    self.engine.export_partition(tp.partition)
            else:
                self._sources.pop((tp.topic, tp.partition), None)

    def take_over(
        self,
        assigned: list[TopicPartition],
        committed: dict[TopicPartition, tuple[int, str]],
        bounds: dict[TopicPartition, LogBounds] | None,
    ) -> dict[str, Any]:
        loop = self._loop
        stored = loop.store.load_offsets()
        hits = [tp.partition for tp in assigned if tp.topic == self.hits_topic]
        sources = [tp for tp in assigned if tp.topic != self.hits_topic]
        wanted: dict[TopicPartition, int] = {}
        now = self.clock()
        for tp in sources:
            source = (tp.topic, tp.partition)
            progress = self._sources[source] = SourceProgress(now)
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
        seek = loop.checkpointer.resume_at(loop.settings.kafka, sources, wanted, bounds)
        for tp, offset in seek.items():
            loop.group.seek(tp, offset)
            if wanted.get(tp) != offset:
                self._sources[(tp.topic, tp.partition)].newest = -math.inf
        restored = self._restore_shards(hits, bounds) if hits else {}
        return {
            "shards": sorted(hits),
            "shards_restored": sorted(p for p, ok in restored.items() if ok),
        }

    def _all_sources(self) -> list[SourcePartition]:
        group = self._loop.group
        out: list[SourcePartition] = []
        for topic in self._loop.topics:
            for partition in group.partitions_for_topic(topic) or ():
                out.append((topic, partition))
        return out

    def _restore_shards(
        self, partitions: list[int], bounds: dict[TopicPartition, LogBounds] | None = None
    ) -> dict[int, bool]:
        loop = self._loop
        readers = read_changelog(self.kafka, self.state_topic, partitions)
        sources = self._all_sources()
        restored: dict[int, bool] = {}
        # A state written before event times were bounded may hold year 9999.
        limit = self.wall() + loop.time_bounds.max_future_skew_s
        for p in partitions:
            reader = readers[p]
            shard, engine_bytes = restore_shard(p, reader, sources, limit)
            if self.engine is not None:
                self.engine.export_partition(p)  # whatever was here is stale
                if engine_bytes is not None:
                    self.engine.import_partition(p, engine_bytes)
                    self.engine.clamp_clock(limit)
            self._engine_bytes[p] = engine_bytes
            self.shards[p] = shard
            restored[p] = reader.latest is not None
        # The hits offsets of the changelog, checked against the hits log too.
        tps = [TopicPartition(self.hits_topic, p) for p in partitions]
        stored = {tp: self.shards[tp.partition].next_offset for tp in tps}
        checked = resume_offsets(
            self.kafka,
            tps,
            {tp: o for tp, o in stored.items() if o is not None},
            {},
            bounds,
        ).seek
        for tp in tps:
            if tp in checked:
                loop.group.seek(tp, checked[tp])
            else:
                loop.group.seek_to_beginning(tp)
        return restored

    def close(self) -> None:
        try:
            self.hits_out.send()
            self.producer.flush()
            self.producer.close()
        except Exception as exc:  # best effort: hits not flushed are re-sent on replay
            log.warning("producer_close_failed", error=str(exc))


def _evidence(hit: Hit) -> Evidence:
    topic, partition = hit.source
    return evidence_of(topic, partition, hit.offset, datetime.fromisoformat(hit.when), hit.event)


def _committed_newest(metadata: str) -> float:
    """The newest event time a member committed with a source offset."""
    try:
        newest = orjson.loads(metadata).get("newest") if metadata else None
        return float(newest) if newest is not None else -math.inf
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return -math.inf
