"""The streaming loop: consume -> detect -> correlate -> store -> commit.

Order of a checkpoint, and why:

1. Alerts, their evidence, the outbox rows, the correlation state and the
   next offset of every partition are written to DuckDB in ONE transaction.
   DuckDB is therefore the source of truth for "how far have we got".
   The store's writer thread does it (``AlertStore.submit``) while the loop
   polls and correlates the next batch.
2. Only once that transaction is committed are the same offsets committed
   to Kafka. The Kafka commit is for operators (lag dashboards) and for a
   fresh store; it may trail.
3. On (re)assignment a partition is sought to the offset DuckDB holds, when
   it holds one. A crash between 1 and 2 replays nothing; a crash before 1
   replays the uncommitted batch, and deterministic alert ids make the
   replayed inserts no-ops. So no alert is lost and none is duplicated.
4. If DuckDB has no memory left for the state of a checkpoint, the store
   keeps the batch's alerts and archived events and leaves out the state AND
   the offsets (``CheckpointNotStoredError``): the previous checkpoint stays
   the pair a restart resumes from, and Kafka does not hear of those offsets.
   The loop then evicts the oldest correlation groups (logged, counted in
   ``zonewatch_correlation_state_evicted_total``) so the next checkpoint is
   smaller, and goes on detecting.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from correlator.correlation.clock import SourceClock
from correlator.ordering import EventTimeMerger, late_watermark
from correlator.ports import Consumer, GroupConsumer, Store
from correlator.resume import TOPIC_IDS_KEY, dump_topic_ids, load_topic_ids
from correlator.store.rows import ArchivedEvent
from correlator.store.state import CheckpointNotStoredError
from zonewatch.config import SOURCES, Settings, source_of_topic
from zonewatch.logs import get_logger
from zonewatch.models import Alert, Evidence, evidence_from_json, evidence_to_json
from zonewatch.offsets import LogBounds
from zonewatch.timebounds import TimeBounds

if TYPE_CHECKING:
    from correlator.correlation import CorrelationEngine
    from correlator.detection import RuleSet

log = get_logger(__name__)

# What waits in the event-time merger, as the correlation engine takes it.
Pending = tuple[list[str], dict[str, Any], Evidence, float]  # hits, event, evidence, time
# A late event, as ``engine.process_late`` takes it: the same and the
# watermark of its input it fell behind.
Late = tuple[list[str], dict[str, Any], Evidence, float, float]

EVENTS_IN = Counter("zonewatch_correlator_events_total", "Events consumed", ["source"])
ALERTS_OUT = Counter("zonewatch_correlator_alerts_total", "Alerts stored", ["type", "level"])
DEAD_LETTERS = Counter(
    "zonewatch_correlator_dead_letters_total", "Records the correlator could not decode", ["reason"]
)
LATE_EVENTS = Counter(
    "zonewatch_correlator_late_events_total",
    "Correlated events behind their input's watermark (kept out of correlation windows)",
)
LATE_BY_SOURCE = Counter(
    "zonewatch_correlator_late_events_by_source_total",
    "Correlated events behind their input's watermark, per source, applied within "
    "correlator.late_horizon_s or dropped",
    ["source", "outcome"],
)
OUT_OF_BOUNDS = Counter(
    "zonewatch_correlator_out_of_bounds_events_total",
    "Events stamped beyond the time bounds (flagged, kept out of correlation)",
    ["bound"],
)
LAG_SECONDS = Gauge(
    "zonewatch_correlator_event_lag_seconds",
    "Wall clock minus the newest event time seen within the time bounds",
)
CONSUMER_LAG = Gauge(
    "zonewatch_correlator_consumer_lag_records", "High watermark minus position", ["topic"]
)
ENGINE_STATE = Gauge(
    "zonewatch_correlation_engine",
    "Correlation engine figures (groups, late events, caps)",
    ["name"],
)
PARTIAL_ASSIGNMENT = Gauge(
    "zonewatch_correlator_partitions_elsewhere",
    "Input partitions assigned to another group member while correlations are loaded",
)
BATCH_SECONDS = Gauge("zonewatch_correlator_last_batch_seconds", "Duration of the last batch")
CHECKPOINTS_NOT_STORED = Counter(
    "zonewatch_correlator_checkpoints_not_stored_total",
    "Checkpoints (correlation state and offsets) the store had no memory for",
)
STATE_EVICTED = Counter(
    "zonewatch_correlation_state_evicted_total",
    "Correlation groups evicted because the store could not write the state",
    ["rule"],
)

STATE_KEY = "correlation"
MERGER_KEY = "correlation-input"
PROGRESS_KEY = "correlation-input-progress"
ARCHIVE_KEY = "archive-offsets"
# Detection alerts raised by an event stamped beyond the time bounds carry
# this tag: the event is real evidence of something, its time is not.
OUT_OF_BOUNDS_TAG = "zonewatch.event_time_out_of_bounds"
# What share of the correlation groups goes when the store could not write
# the state (``_checkpoint_not_stored``): the snapshot shrinks about as much.
SHED_FRACTION = 0.5
# One correlator process keeps one correlation state shard: the merger has
# already put the inputs of all its partitions into event-time order.
SHARD = 0


@dataclass
class StreamStats:
    consumed: int = 0
    alerts: int = 0
    new_alerts: int = 0
    dead_letters: int = 0
    out_of_bounds: int = 0
    batches: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


class _SeekToStoredOffsets(AsyncConsumerRebalanceListener):
    """Resume each assigned partition where DuckDB says we got to.

    Async: kafka-python calls listeners on the consumer's IO thread, where a
    blocking ``commit()`` is refused (zonewatch.kafka.commit_in_listener)."""

    def __init__(self, loop: StreamCorrelator):
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        from zonewatch.kafka import commit_in_listener

        # Whoever gets these partitions resumes from the store's offsets: make
        # them (and the state that goes with them) current first. A forced
        # checkpoint also waits for the batches still being stored.
        await commit_in_listener(
            self.loop.consumer, self.loop._checkpoint([], {}, force=True, commit=False)
        )
        self.loop._assigned = False
        for tp in revoked:
            self.loop.merger.forget((tp.topic, tp.partition))
        log.info("partitions_revoked", partitions=[f"{tp.topic}:{tp.partition}" for tp in revoked])

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        from correlator.resume import BOUNDS_TIMEOUT_S
        from zonewatch.kafka import committed_in_listener, log_bounds, off_the_io_thread

        assigned = list(assigned)
        stored = self.loop.store.load_offsets()
        # Where each partition resumes: the store's offset, else the group's;
        # either is checked against the log first (correlator/resume.py).
        known = {
            tp: stored[(tp.topic, tp.partition)]
            for tp in assigned
            if (tp.topic, tp.partition) in stored
        }
        committed = {
            tp: offset
            for tp, (offset, _metadata) in (
                await committed_in_listener(
                    self.loop.consumer, [tp for tp in assigned if tp not in known]
                )
            ).items()
        }
        kafka = self.loop.settings.kafka
        bounds = await off_the_io_thread(
            self.loop.consumer, lambda: log_bounds(kafka, assigned), BOUNDS_TIMEOUT_S + 5
        )
        self.loop._assigned_at = time.monotonic()
        self.loop._assigned = True
        self.loop._caught_up = False
        for tp in assigned:
            self.loop.merger.expect((tp.topic, tp.partition))
        for tp, offset in self.loop.resume_at(assigned, {**committed, **known}, bounds).items():
            self.loop.group.seek(tp, offset)
        log.info(
            "partitions_assigned",
            partitions=[f"{tp.topic}:{tp.partition}" for tp in assigned],
            resumed_from_store=sum(1 for tp in assigned if (tp.topic, tp.partition) in stored),
        )
        self.loop._check_whole_assignment(assigned)


class StreamCorrelator:
    """One consumer-group member running the whole per-event pipeline."""

    def __init__(
        self,
        settings: Settings,
        ruleset: RuleSet,
        store: Store,
        *,
        correlation: CorrelationEngine | None = None,
        consumer: Consumer | None = None,
        make_alert: Callable[[Any, Evidence], Alert] | None = None,
        event_time: Callable[[dict[str, Any]], datetime] | None = None,
    ):
        from correlator.detection import detection_alert
        from correlator.detection import event_time as parse_event_time
        from correlator.detection.throttle import throttle_from_settings

        self.settings = settings
        self.ruleset = ruleset
        self.store = store
        self.correlation = correlation
        self.make_alert = make_alert or detection_alert
        self.event_time = event_time or parse_event_time
        # Which detection alerts ``suppress:`` drops; the service replaces it
        # with one rebuilt from the stored alerts (detection/throttle.py).
        self.throttle = throttle_from_settings(settings.correlator)
        self.stats = StreamStats()
        # Lateness and delivery delay per source (correlation/clock.py).
        self.source_clock = SourceClock.from_settings(settings.correlator)
        self.merger: EventTimeMerger[Pending] = EventTimeMerger(
            idle_s=settings.correlator.input_idle_s, hold=self._idle_hold
        )
        cfg = settings.correlator
        self.time_bounds = TimeBounds.of(cfg.max_future_skew_s, cfg.max_past_horizon_days)
        # Correlated events found late this batch (engine.process_late).
        self._late: list[Late] = []
        self._late_reported = correlation.stats.late_events if correlation is not None else 0
        self._newest_t = -math.inf  # newest in-bounds event time seen (event_lag_seconds)
        self._correlated: frozenset[str] = frozenset()
        # Offsets consumed since start-up (resume points once checkpointed) and
        # how far the events archive got, so a replay never archives twice.
        self._resume: dict[tuple[str, int], int] = {}
        stored_archive = store.load_state(ARCHIVE_KEY)
        self._archived: dict[tuple[str, int], int] = (
            {(t, int(p)): o for t, p, o in orjson.loads(stored_archive)} if stored_archive else {}
        )
        # The input topics' ids as of the stored offsets, and the labels of
        # topics recreated since this store began (correlator/resume.py).
        self._topic_ids, self._labels = load_topic_ids(store.load_state(TOPIC_IDS_KEY))
        self._last_full = time.monotonic()
        self._dirty = False
        # Alerts and archived events waiting for the next write (_checkpoint).
        # Batches handed to the store and not yet accounted for (``_settle``):
        # each with its alerts and the Kafka offsets it covers.
        self._in_store: deque[
            tuple[Future[list[str]], list[Alert], dict[TopicPartition, OffsetAndMetadata]]
        ] = deque()
        self._pending_alerts: list[Alert] = []
        self._pending_archive: list[ArchivedEvent] = []
        self._pending_since = time.monotonic()
        if correlation is not None:
            self._correlated = frozenset(correlation.referenced_rule_ids)
            self._restore_merger(store)
        kafka = settings.kafka
        self.topics = [kafka.events_topic(s) for s in SOURCES]
        if consumer is None:
            from zonewatch.kafka import make_consumer

            consumer = make_consumer(
                kafka,
                settings.correlator.group_id,
                max_poll_records=settings.correlator.max_batch,
            )
        self.consumer: Consumer = consumer
        # Stand-ins for a consumer (the archive replay of ``zonewatch hunt``)
        # have no group membership and no lag: they feed the loop as before.
        self._group: GroupConsumer | None = (
            consumer if isinstance(consumer, GroupConsumer) else None
        )
        self.consumer.subscribe(self._input_topics(), listener=self._rebalance_listener())
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.reloader: Callable[[], tuple[Any, Any] | None] | None = None
        self._last_progress = time.monotonic()
        self._caught_up = False
        self._assigned_at: float | None = None
        # Between start-up (or a revocation) and the next assignment the
        # merger does not know every input: inputs restored from a snapshot
        # would be released ahead of partitions nobody reads yet.
        self._assigned = False
        self._group_member = self._group is not None
        if not self._group_member:
            self._assigned = self._caught_up = True

    # -- control -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish its current batch, checkpoint, and return."""
        self._stop.set()

    def request_reload(self) -> None:
        """Ask the loop to reload the rules between two batches (SIGHUP)."""
        self._reload.set()

    def replace_rules(self, ruleset: RuleSet, correlation: CorrelationEngine | None) -> None:
        """Continue with new rules; ``correlation`` is the engine that carries
        over the state of unchanged correlation rules (``engine.reload``)."""
        self.ruleset = ruleset
        self.correlation = correlation
        if correlation is None:
            self._correlated = frozenset()
            self.merger.drain()  # nothing will correlate what is buffered
            self._late = []
        else:
            self._correlated = frozenset(correlation.referenced_rule_ids)
            self._late_reported = correlation.stats.late_events
        # The next checkpoint must store the new engine's state.
        self._dirty = True

    def _maybe_reload(self) -> None:
        if not self._reload.is_set():
            return
        self._reload.clear()
        if self.reloader is None:
            log.warning("rules_reload_ignored", reason="no rule loader configured")
            return
        loaded = self.reloader()
        if loaded is not None:
            self.replace_rules(*loaded)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def healthy(self) -> bool:
        # A loop that has not come back from poll() for a minute is stuck.
        return time.monotonic() - self._last_progress < 60

    # -- the loop ----------------------------------------------------------------
    def run(
        self,
        until: Callable[[StreamStats], bool] | None = None,
        idle_timeout_s: float | None = None,
        end_of_input: bool = False,
    ) -> StreamStats:
        """Process batches until stopped, ``until(stats)`` is true, or no record
        arrived for ``idle_timeout_s`` seconds after the first one.

        ``end_of_input`` treats the input as finite when the loop ends (demo,
        batch runs): buffered correlation input is applied and windows the
        input covers are resolved, as ``zonewatch match`` does."""
        poll_ms = self.settings.correlator.poll_timeout_ms
        max_batch = self.settings.correlator.max_batch
        idle_since = time.monotonic()
        idle_exit = False
        try:
            while not self._stop.is_set():
                self._maybe_reload()
                self._settle(wait=False)
                batch = self.consumer.poll(timeout_ms=poll_ms, max_records=max_batch)
                self._last_progress = time.monotonic()
                behind = self._behind()
                self.merger.polled([(tp.topic, tp.partition) for tp in batch], behind)
                active = bool(batch) and self._brings_input(batch)
                if batch:
                    self.process_batch(batch)
                    if active:
                        idle_since = time.monotonic()
                    if until is not None and until(self.stats):
                        break
                elif self._idle_work_pending():
                    # Quiet inputs turn idle with time and stop holding the
                    # others back; absence windows resolve as time passes.
                    alerts = self._correlate()
                    self._report_time_metrics()
                    if alerts or self._checkpoint_due():
                        self._checkpoint(alerts, {})
                if not batch and (self._pending_alerts or self._pending_archive):
                    self._checkpoint([], {})  # the backlog ended: write what waits
                idle_exit = (
                    idle_timeout_s is not None
                    and bool(self.stats.consumed or self._assigned_at is not None)
                    and time.monotonic() - max(idle_since, self._assigned_at or 0.0)
                    > idle_timeout_s
                )
                if not active and (idle_exit or (until is not None and until(self.stats))):
                    break
            if end_of_input:
                self._checkpoint(self._correlate(end=True), {}, force=True)
            elif idle_exit:
                # A run that ends idle (--idle-exit: a batch run over a day's
                # logs) ends as if time had caught up: the watermark goes to
                # the wall clock less the idle window, as a live run's would
                # by now, and the windows it passes resolve.
                self._checkpoint(self._correlate(to_wall_clock=True), {}, force=True)
            else:
                self._checkpoint([], {}, force=True)
        finally:
            self.close()
        return self.stats

    def resume_at(
        self,
        assigned: list[TopicPartition],
        stored: dict[TopicPartition, int],
        bounds: dict[TopicPartition, LogBounds] | None = None,
    ) -> dict[TopicPartition, int]:
        """The offsets to seek ``assigned`` partitions to: ``stored`` checked
        against each log's ``bounds`` (truncated, recreated, ahead of its
        end). A partition that moves starts afresh in the archive watermark
        and resume offsets."""
        from correlator.resume import resume_offsets

        resume = resume_offsets(self.settings.kafka, assigned, stored, self._topic_ids, bounds)
        self._topic_ids.update(resume.topic_ids)
        self._labels.update(resume.labels)
        for tp, (_old, new, _reason) in resume.moved.items():
            key = (tp.topic, tp.partition)
            self._archived.pop(key, None)
            self._resume[key] = new
            self._dirty = True
        return resume.seek

    def _input_topics(self) -> list[str]:
        return list(self.topics)

    def _rebalance_listener(self) -> ConsumerRebalanceListener | AsyncConsumerRebalanceListener:
        return _SeekToStoredOffsets(self)

    def _brings_input(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        """Whether a non-empty poll counts as input for ``idle_timeout_s``."""
        return True

    def _idle_work_pending(self) -> bool:
        """Whether a poll that returned nothing still has work: buffered
        input to release as inputs turn idle, state to checkpoint, absence
        windows the wall clock may resolve."""
        return self.correlation is not None and bool(
            len(self.merger) or self._dirty or self.correlation.stats.events
        )

    def process_batch(self, batch: dict[TopicPartition, list[Any]]) -> list[Alert]:
        started = time.perf_counter()
        alerts: list[Alert] = []
        next_offsets: dict[tuple[str, int], int] = {}
        archive: list[ArchivedEvent] = []
        keep = self.settings.correlator.archive_events
        # Event times are bounded against each record's Kafka timestamp (its
        # producer's clock when sent, a part of the input: a replay judges it
        # alike), capped at this clock in case the producer's runs ahead.
        now = time.time()
        now_ms = now * 1000.0
        skew = self.time_bounds.max_future_skew_s
        horizon = self.time_bounds.max_past_horizon_s
        if horizon is None:
            horizon = math.inf
        for tp, records in batch.items():
            key = (tp.topic, tp.partition)
            source = source_of_topic(tp.topic)
            archived_upto = self._archived.get(key, 0) if keep else None
            label = self._labels.get(tp.topic, tp.topic)
            match = self._matcher(source)
            newest = self._input_newest(key)
            lateness = self._lateness(source)
            for record in records:
                next_offsets[key] = record.offset + 1
                decoded = self._decode(record)
                if decoded is None:
                    continue
                event, when = decoded
                t = when.timestamp()
                stamp = getattr(record, "timestamp", None)
                ref = stamp / 1000.0 if stamp is not None and 0 < stamp <= now_ms else now
                bounded = ref - horizon <= t <= ref + skew
                if bounded:
                    # Late or not, from this input's own order alone (ordering.py).
                    watermark = late_watermark(newest, lateness)
                    late = watermark if t < watermark else None
                    if t > newest:
                        newest = t
                else:
                    self._flag_out_of_bounds(record, t, ref)
                if archived_upto is not None and record.offset >= archived_upto:
                    archive.append(
                        ArchivedEvent(
                            f"{label}:{record.partition}:{record.offset}",
                            record.topic,
                            record.partition,
                            record.offset,
                            when,
                            event,
                            record.value,
                            raw_parsed=True,  # _decode parsed it with orjson
                        )
                    )
                hits = match(event)
                if not hits:
                    continue
                if bounded:
                    alerts.extend(self._evaluate(hits, record, event, when, tp, t, late))
                else:
                    alerts.extend(self._flagged_alerts(hits, record, event, when))
            self._input_progressed(key, newest)
            if newest > self._newest_t:
                self._newest_t = newest
            self.stats.by_source[source or tp.topic] = self.stats.by_source.get(
                source or tp.topic, 0
            ) + len(records)
            EVENTS_IN.labels(source=source or "unknown").inc(len(records))
        alerts.extend(self._correlate())
        polled = sum(len(r) for r in batch.values())
        self._checkpoint(
            alerts,
            next_offsets,
            archive,
            more_coming=polled >= self.settings.correlator.max_batch,
        )
        self.stats.batches += 1
        self.stats.consumed += sum(len(r) for r in batch.values())
        self._report_time_metrics()
        self._update_consumer_lag(batch)
        BATCH_SECONDS.set(time.perf_counter() - started)
        return alerts

    # -- event time ----------------------------------------------------------------
    def _lateness(self, source: str | None) -> float:
        """The allowed lateness of a source's events (``correlator.sources``)."""
        return self.source_clock.lateness(source)

    def _idle_hold(self, key: Any, newest: float, quiet_for: float) -> float | None:
        """Where a quiet input holds the merge: its source's delivery delay."""
        return self.source_clock.idle_hold(source_of_topic(key[0]), newest, quiet_for)

    def _input_newest(self, key: tuple[str, int]) -> float:
        """The newest in-bounds event time read on an input partition so far."""
        return self.merger.newest(key)

    def _input_progressed(self, key: tuple[str, int], newest: float) -> None:
        if newest != -math.inf:
            self.merger.observe(key, newest)

    def _flag_out_of_bounds(self, record: Any, t: float, ref: float) -> None:
        """Count and log an event stamped beyond the time bounds. It still
        goes to detection (alerts tagged) and the archive, but never to
        correlation, and it moves no watermark."""
        bound = self.time_bounds.check(t, ref) or "future"
        OUT_OF_BOUNDS.labels(bound=bound).inc()
        self.stats.out_of_bounds += 1
        if self.stats.out_of_bounds == 1 or self.stats.out_of_bounds % 1000 == 0:
            log.warning(
                "event_time_out_of_bounds",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=self.time_bounds.reason(
                    t, ref, clock="its Kafka record's time", settings="ZONEWATCH_CORRELATOR__"
                ),
                consequence=f"kept out of correlation; detection alerts tagged {OUT_OF_BOUNDS_TAG}",
                out_of_bounds_so_far=self.stats.out_of_bounds,
            )

    def _flagged_alerts(
        self, hits: list[Any], record: Any, event: dict[str, Any], when: datetime
    ) -> list[Alert]:
        generated = [rule for rule in hits if rule.generate]
        if not generated:
            return []
        evidence = evidence_of(record.topic, record.partition, record.offset, when, event)
        out = []
        for rule in generated:
            alert = self.make_alert(rule, evidence)
            tags = [*alert.tags, OUT_OF_BOUNDS_TAG]
            out.append(replace(alert, tags=tags))
        return out

    def _report_time_metrics(self) -> None:
        """event_lag_seconds and late_events_total, from what was read and
        what the engine counted late (it counts both kinds: late for their
        input, and behind its own watermark)."""
        if self._newest_t != -math.inf:
            LAG_SECONDS.set(max(0.0, time.time() - self._newest_t))
        if self.correlation is not None:
            late = self.correlation.stats.late_events
            if late > self._late_reported:
                LATE_EVENTS.inc(late - self._late_reported)
            self._late_reported = late

    def _restore_merger(self, store: Store) -> None:
        """The merge buffer and each input's newest time, as checkpointed.
        Anything stamped beyond the future bound from now (a state written
        before event times were bounded) is left out, with a warning."""
        limit = time.time() + self.time_bounds.max_future_skew_s
        stored = store.load_state(MERGER_KEY)
        dropped = self.merger.restore(orjson.loads(stored), _decode_pending, limit) if stored else 0
        progress = store.load_state(PROGRESS_KEY)
        cut = self.merger.restore_progress(orjson.loads(progress), limit) if progress else 0
        if dropped or cut:
            log.warning(
                "correlation_input_clock_clamped",
                dropped_events=dropped,
                inputs_reset=cut,
                reason="the stored merge state held event times beyond the bound into the "
                "future (written before event times were bounded)",
            )

    # -- steps -------------------------------------------------------------------
    def _matcher(self, source: str | None) -> Callable[[dict[str, Any]], list[Any]]:
        """The detection function for one topic's records (route resolved once)."""
        matcher = getattr(self.ruleset, "matcher", None)
        if matcher is not None:
            return matcher(source)
        return lambda event: self.ruleset.match(event, source)

    def _decode(self, record: Any) -> tuple[dict[str, Any], datetime] | None:
        try:
            event = orjson.loads(record.value)
            if not isinstance(event, dict):
                raise ValueError("event is not a JSON object")
            when = self.event_time(event)
        except Exception as exc:  # undecodable records are counted, never fatal
            reason = type(exc).__name__
            DEAD_LETTERS.labels(reason=reason).inc()
            self.stats.dead_letters += 1
            log.warning(
                "undecodable_event",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=str(exc)[:200],
            )
            return None
        return event, when

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
        """Detection alerts of an in-bounds event, and its correlation hits
        to the merge (or, ``late`` behind its input's watermark, aside)."""
        # Evidence only for events that matched something: most events match
        # nothing, and building a model per event cost more than matching it.
        evidence = evidence_of(
            record.topic, record.partition, record.offset, when, event, self._labels.get(tp.topic)
        )
        # Base rules of a correlation raise no alert of their own unless a
        # correlation says ``generate: true`` (Sigma spec); they still feed it.
        out = self.throttle.alerts(hits, evidence, self.make_alert)
        if self._correlated:
            ids = [r.id for r in hits if r.id in self._correlated]
            if ids:
                if late is not None:
                    self._late.append((ids, event, evidence, t, late))
                    outcome = self.source_clock.late_outcome(late - t)
                    source = source_of_topic(tp.topic) or "unknown"
                    LATE_BY_SOURCE.labels(source=source, outcome=outcome).inc()
                else:
                    # As the engine takes it (process_many): hits, event, evidence, time.
                    self.merger.add((tp.topic, tp.partition), t, (ids, event, evidence, t))
        return out

    def _correlate(self, end: bool = False, to_wall_clock: bool = False) -> list[Alert]:
        """Feed the correlation engine what the merger releases, oldest first."""
        if self.correlation is None:
            return []
        engine = self.correlation
        if not end and not self._assigned:
            return []
        released = self.merger.drain() if end else self.merger.release()
        if released:
            # Input moved from the merge buffer into the windows: the next
            # due checkpoint must snapshot both, even with no new offsets.
            self._dirty = True
        out = engine.process_many(released, partition=SHARD)
        if self._late:
            out.extend(engine.process_late(self._late, partition=SHARD))
            self._late = []
        if end:
            out.extend(engine.flush())
        else:
            frontier = self.merger.frontier()
            if to_wall_clock and self._caught_up:
                # An idle exit: time has caught up, delivery delays included.
                idle_s = self.settings.correlator.input_idle_s
                frontier = max(self.merger.idle_frontier(), time.time() - idle_s)
            elif frontier == float("inf"):
                if not self._caught_up:
                    # No assignment yet (start-up, rebalance) or no fetch
                    # answer: the wall clock would jump the watermark past a
                    # backlog we have not read, and its events would be late.
                    return out
                # Every input is caught up and quiet: nothing older can still
                # come, so time itself moves the watermark on (absence
                # windows), from where the inputs stopped (ordering.py).
                frontier = self.merger.idle_frontier()
            if frontier != float("-inf"):
                out.extend(engine.advance_watermark(SHARD, frontier))
        return out

    @property
    def group(self) -> GroupConsumer:
        """The consumer as a Kafka group member (rebalance listeners, scale-out)."""
        if self._group is None:
            raise TypeError("the stream's consumer is not a Kafka consumer group member")
        return self._group

    def _check_whole_assignment(self, assigned: Iterable[TopicPartition]) -> None:
        """Correlation state lives in this process only (one shard, one DuckDB
        file): another member of the group taking partitions means their
        windows are lost here and missed there. Say so loudly."""
        if self.correlation is None or self._group is None:
            return
        whole: set[tuple[str, int]] = set()
        for topic in self.topics:
            for partition in self._group.partitions_for_topic(topic) or ():
                whole.add((topic, partition))
        missing = sorted(whole - {(tp.topic, tp.partition) for tp in assigned})
        PARTIAL_ASSIGNMENT.set(len(missing))
        if missing:
            log.error(
                "correlation_needs_the_whole_group",
                group=self.settings.correlator.group_id,
                partitions_elsewhere=[f"{t}:{p}" for t, p in missing],
                consequence=(
                    "another correlator joined this consumer group: correlation windows "
                    "of these partitions are not handed over and correlations across them "
                    "are missed; run one correlator per group while correlation rules are "
                    "loaded (correlator/correlation/README.md, Scale-out)"
                ),
            )

    def _behind(self) -> list[tuple[str, int]] | None:
        """Assigned partitions with records not yet returned to us, or with
        no fetch answer yet. Uses the high watermark of fetch answers, which
        the embedded broker reports correctly (unlike ListOffsets).

        A partition without an answer holds the merge back however long that
        takes: letting it go after a while (as once done, after a grace
        period) made which of its events were late depend on how fast the
        broker answered, i.e. on timing (issue #20, point 5)."""
        behind: list[tuple[str, int]] = []
        if self._group is None:
            return None
        assigned = self._group.assignment()
        for tp in assigned:
            high = self._group.highwater(tp)
            if high is None or self._group.position(tp) < high:
                behind.append((tp.topic, tp.partition))
        self._caught_up = bool(assigned) and not behind
        return behind

    def _gather(
        self, alerts: list[Alert], archive: list[ArchivedEvent] | None
    ) -> tuple[list[Alert], list[ArchivedEvent]]:
        """Add to what waits for the next write; returns all of it."""
        if not (self._pending_alerts or self._pending_archive):
            self._pending_since = time.monotonic()
        self._pending_alerts.extend(alerts)
        if archive:
            self._pending_archive.extend(archive)
        return self._pending_alerts, self._pending_archive

    def _checkpoint_due(self) -> bool:
        interval = self.settings.correlator.checkpoint_interval_s
        return self._dirty and time.monotonic() - self._last_full >= interval

    def _checkpoint(
        self,
        alerts: list[Alert],
        offsets: dict[tuple[str, int], int],
        archive: list[ArchivedEvent] | None = None,
        force: bool = False,
        commit: bool = True,
        more_coming: bool = False,
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Store a batch; every so often also the state and the resume offsets.

        Alerts (with their outbox rows) and archived events are stored at
        once when the consumer is caught up, so Teams hears at once. While it
        works through a backlog (``more_coming``: the poll was full) they are
        gathered into bigger writes, up to ``write_batch_events`` rows or
        ``write_delay_s``: a DuckDB write has a fixed cost, and a commit per
        poll halved the throughput. The correlation state, which can be
        large, is snapshotted with the offsets it covers only every
        ``checkpoint_interval_s``; a crash replays from there, and the replay
        recreates the same alert ids (ignored) and skips what is archived.

        The store writes on its own thread (``AlertStore.submit``) while
        this loop goes on; a batch's offsets go to Kafka once it is stored
        (``_settle``), at once when ``force``d.

        Returns the offsets to commit to Kafka of the batches stored by now;
        commits them unless ``commit`` is false (a rebalance listener commits
        them its own way, and waits for every batch submitted).
        """
        self._resume.update(offsets)
        self._dirty = self._dirty or bool(offsets)
        alerts, archive = self._gather(alerts, archive)
        cfg = self.settings.correlator
        if (
            more_coming
            and not force
            and not self._checkpoint_due()
            and len(alerts) + len(archive) < cfg.write_batch_events
            and time.monotonic() - self._pending_since < cfg.write_delay_s
        ):
            return {}
        self._pending_alerts, self._pending_archive = [], []
        full = force or self.correlation is None or self._checkpoint_due()
        state: dict[str, Any] = self._archive_state(archive)
        resume: dict[tuple[str, int], int] | None = None
        if full and self._dirty:
            resume = dict(self._resume)
            state.update(self._resume_state())
            if self.correlation is not None:
                # Written into the store as they are serialized (the store
                # calls them in this thread, before ``submit`` returns): a
                # large state is never one object. They go with ``resume``.
                state[STATE_KEY] = self.correlation.write_snapshot
                merger = self.merger.snapshot(_encode_pending)
                state[MERGER_KEY] = lambda out: out.write(orjson.dumps(merger))
                state[PROGRESS_KEY] = orjson.dumps(self.merger.progress())
        if not (alerts or archive or state or resume):
            return self._settle(wait=force or not commit, commit=commit)
        # DuckDB stores the batch on the store's writer thread while this
        # loop polls and correlates the next one; Kafka hears of the offsets
        # once the batch holding them is stored (``_settle``).
        stored = self.store.submit(
            alerts, events=archive or (), state=state or None, offsets=resume
        )
        self._in_store.append((stored, alerts, to_commit(resume) if resume else {}))
        if resume:
            self._last_full = time.monotonic()
            self._dirty = False
            if self.correlation is not None:
                for name, value in self.correlation.metrics().items():
                    if isinstance(value, int | float):
                        ENGINE_STATE.labels(name=name).set(value)
        return self._settle(wait=force or not commit, commit=commit)

    def _settle(self, wait: bool, commit: bool = True) -> dict[TopicPartition, OffsetAndMetadata]:
        """Account for the batches the store has stored, in order, and commit
        their offsets to Kafka (unless ``commit`` is false: a rebalance
        listener commits them its own way). ``wait`` waits for all of them.
        A failed write raises here, and the loop stops: its offsets, and
        those of every later batch, are never committed.

        Returns the offsets the settled batches cover."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        while self._in_store:
            stored, alerts, covered = self._in_store[0]
            if not wait and not stored.done():
                break
            self._in_store.popleft()
            try:
                new_ids = stored.result()
            except CheckpointNotStoredError as exc:
                # Stored without its state and offsets: count its alerts,
                # keep its offsets from Kafka, make the next state smaller.
                self._count_stored(alerts, exc.new_ids)
                self._checkpoint_not_stored(exc)
                continue
            self._count_stored(alerts, new_ids)
            offsets.update(covered)  # each batch's resume offsets include the earlier ones
        if offsets and commit:
            self._commit(offsets)
        return offsets

    def _checkpoint_not_stored(self, exc: CheckpointNotStoredError) -> None:
        """The store had no memory for the last checkpoint: evict the least
        recently updated correlation groups (``engine.shed``), say so, count
        it, and let the next checkpoint store the smaller state. Detection
        and single-event alerts go on; so do correlations whose groups stay."""
        CHECKPOINTS_NOT_STORED.inc()
        self._dirty = True
        engine = self.correlation
        if engine is None:
            return
        evicted = engine.shed(SHED_FRACTION)
        for rule_id, n in evicted.items():
            STATE_EVICTED.labels(rule=rule_id).inc(n)
        log.warning(
            "correlation_state_evicted",
            reason=str(exc),
            evicted=sum(evicted.values()),
            evicted_by_rule={k: v for k, v in evicted.items() if v},
            groups_left=engine.metrics()["groups"],
            consequence="correlations whose windows were open in these groups may be missed",
            hint="raise correlator.store_memory_limit or lower correlator.max_state_bytes",
        )

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Commit to Kafka. A refusal (the group is rebalancing, this member
        was fenced) is logged, not fatal: the store holds the offsets that
        matter, and the next commit or owner moves on from them."""
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:
            log.warning(
                "offset_commit_failed",
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
                partitions=len(offsets),
            )

    def _resume_state(self) -> dict[str, bytes]:
        """Stored with the resume offsets: the topic ids they refer to, and the
        archive watermark (an offset reset moves it back)."""
        state = {TOPIC_IDS_KEY: dump_topic_ids(self._topic_ids, self._labels)}
        state[ARCHIVE_KEY] = orjson.dumps([[t, p, o] for (t, p), o in self._archived.items()])
        return state

    def _archive_state(self, archive: list[ArchivedEvent] | None) -> dict[str, bytes]:
        """How far the events archive got, stored with the archived rows so a
        replay never archives an event twice."""
        if not archive:
            return {}
        for event in archive:
            key = (event.topic or "", event.partition or 0)
            self._archived[key] = max(self._archived.get(key, 0), (event.offset or 0) + 1)
        return {ARCHIVE_KEY: orjson.dumps([[t, p, o] for (t, p), o in self._archived.items()])}

    def _count_stored(self, alerts: list[Alert], new_ids: list[str]) -> None:
        self.stats.alerts += len(alerts)
        self.stats.new_alerts += len(new_ids)
        new = set(new_ids)
        for alert in alerts:
            if alert.id in new:
                ALERTS_OUT.labels(type=alert.type, level=alert.level).inc()

    def _update_consumer_lag(self, batch: dict[TopicPartition, list[Any]]) -> None:
        per_topic: dict[str, int] = {}
        for tp in batch:
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            position = self.consumer.position(tp)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - position)
        for topic, lag in per_topic.items():
            CONSUMER_LAG.labels(topic=topic).set(lag)

    def close(self) -> None:
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:  # closing is best effort; offsets are already safe
            log.warning("consumer_close_failed", error=str(exc))


def evidence_of(
    topic: str,
    partition: int,
    offset: int,
    when: datetime,
    event: dict[str, Any],
    label: str | None = None,
) -> Evidence:
    """The evidence of one consumed record (the hot path builds one per
    matching event). ``label`` names a recreated topic in the event id
    (``correlator/resume.py``, ``topic_label``)."""
    return Evidence(
        event_id=f"{label or topic}:{partition}:{offset}",
        time=when,
        topic=topic,
        partition=partition,
        offset=offset,
        line=None,
        event=event,
    )


def to_commit(offsets: dict[tuple[str, int], int]) -> dict[TopicPartition, OffsetAndMetadata]:
    """Resume offsets in the form ``KafkaConsumer.commit`` takes."""
    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}


def _encode_pending(item: Pending) -> Any:
    ids, _event, evidence, _t = item  # the evidence holds the event and its time
    return [ids, evidence_to_json(evidence)]


def _decode_pending(payload: Any) -> Pending:
    ids, data = payload
    evidence = evidence_from_json(data)
    return list(ids), evidence.event, evidence, evidence.time.timestamp()
