"""The streaming loop: consume -> detect -> correlate -> store -> commit.

One loop for both correlator modes, composed of parts chosen at wiring:

* the consumer (a Kafka group member, or the retro-hunt's replay of the
  archive: ``finite``) and the clocks are handed in;
* each event runs the one per-event step (``correlator/step.py``): detection
  alerts, and the correlation items it feeds;
* a correlation stage takes those items: the single member's merge and engine
  (``correlator/local.py``) or the scale-out shards (``correlator/scaleout/stage.py``);
* the :class:`~correlator.checkpointer.Checkpointer` decides what waits, when
  it is written, and when Kafka hears of it. Crash safety lives in its order
  (read it there, steps 1-8);
* one rebalance listener hands partitions over and takes them on through the
  checkpointer and the stage.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from correlator.checkpointer import Checkpointer
from correlator.correlation.clock import SourceClock
from correlator.intake import DEAD_LETTERS as DEAD_LETTERS  # (metrics, tests)
from correlator.intake import Intake
from correlator.intake import StreamStats as StreamStats  # the service returns them
from correlator.local import STATE_KEY as STATE_KEY  # the service opens the stored state
from correlator.local import LocalCorrelation
from correlator.ordering import late_watermark
from correlator.ports import Consumer, CorrelationStage, GroupConsumer, Store
from correlator.progress import ProgressPolicy
from correlator.rebalance import Rebalance
from correlator.step import alerts_of, correlated_ids
from correlator.store.rows import ArchivedEvent
from zonewatch.config import SOURCES, Settings, source_of_topic
from zonewatch.logs import get_logger
from zonewatch.models import Alert, Evidence
from zonewatch.offsets import LogBounds
from zonewatch.timebounds import TimeBounds

if TYPE_CHECKING:
    from correlator.correlation import CorrelationEngine
    from correlator.detection import RuleSet

log = get_logger(__name__)

# The least an idle exit of a scaled-out member waits for the shards it owns
# to be released (``--idle-exit`` waits as long as its own setting if longer).
EXIT_WAIT_S = 5.0

EVENTS_IN = Counter("zonewatch_correlator_events_total", "Events consumed", ["source"])
ALERTS_OUT = Counter("zonewatch_correlator_alerts_total", "Alerts stored", ["type", "level"])
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
LAG_SECONDS = Gauge(
    "zonewatch_correlator_event_lag_seconds",
    "Wall clock minus the newest event time seen within the time bounds",
)
CONSUMER_LAG = Gauge(
    "zonewatch_correlator_consumer_lag_records", "High watermark minus position", ["topic"]
)
BATCH_SECONDS = Gauge("zonewatch_correlator_last_batch_seconds", "Duration of the last batch")


# size: the loop proper (run, one batch, rebalance hand-over) over its parts: checkpointer.py,
# local.py / scaleout/stage.py, intake.py, rebalance.py.
class StreamCorrelator:
    """One consumer-group member running the whole per-event pipeline.

    ``consumer``: a Kafka group member, or with ``finite`` a replay without a
    group (the retro-hunt's archive): always assigned and caught up.
    ``stage``: the correlation stage (default: local merge and ``correlation``).
    ``clock`` (monotonic) and ``wall`` (epoch seconds) are injected."""

    def __init__(
        self,
        settings: Settings,
        ruleset: RuleSet,
        store: Store,
        *,
        consumer: Consumer,
        correlation: CorrelationEngine | None = None,
        stage: CorrelationStage | None = None,
        finite: bool = False,
        make_alert: Callable[[Any, Evidence], Alert] | None = None,
        event_time: Callable[[dict[str, Any]], datetime] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        from correlator.detection import detection_alert
        from correlator.detection import event_time as parse_event_time
        from correlator.detection.throttle import throttle_from_settings

        self.settings = settings
        self.ruleset = ruleset
        self.store = store
        self.clock = clock
        self.wall = wall
        self.make_alert = make_alert or detection_alert
        self.event_time = event_time or parse_event_time
        self.stats = StreamStats()
        cfg = settings.correlator
        # Which detection alerts ``suppress:`` drops; the service replaces it
        # with one rebuilt from the stored alerts (detection/throttle.py).
        self.throttle = throttle_from_settings(cfg)
        # Lateness and delivery delay per source (correlation/clock.py).
        self.source_clock = SourceClock.from_settings(cfg)
        self.time_bounds = TimeBounds.of(cfg.max_future_skew_s, cfg.max_past_horizon_days)
        self.intake = Intake(self.event_time, self.time_bounds, self.stats)
        self.policy = ProgressPolicy.from_settings(cfg)
        if stage is None:
            stage = LocalCorrelation(
                correlation, self.policy, clock=clock, wall=wall, source_clock=self.source_clock
            )
        self.stage: CorrelationStage = stage
        self.checkpointer = Checkpointer(
            store,
            stage,
            commit=self._commit,
            on_stored=self._count_stored,
            interval_s=cfg.checkpoint_interval_s,
            write_batch_events=cfg.write_batch_events,
            write_delay_s=cfg.write_delay_s,
            clock=clock,
        )
        engine = stage.engine
        self._late_reported = engine.stats.late_events if engine is not None else 0
        self._newest_t = -math.inf  # newest in-bounds event time seen (event_lag_seconds)
        kafka = settings.kafka
        self.topics = [kafka.events_topic(s) for s in SOURCES]
        self.consumer: Consumer = consumer
        self._group: GroupConsumer | None = None if finite else consumer  # type: ignore[assignment]
        self._stop = threading.Event()
        self._reload = threading.Event()
        self.reloader: Callable[[], tuple[Any, Any] | None] | None = None
        self._last_progress = clock()
        self._caught_up = False
        self._assigned_at: float | None = None
        # Between start-up (or a revocation) and the next assignment the
        # stage does not know every input: inputs restored from a snapshot
        # would be released ahead of partitions nobody reads yet.
        self._assigned = False
        if finite:
            self._assigned = self._caught_up = True
        stage.bind(self)
        topics = [*self.topics, *stage.extra_topics()]
        self.consumer.subscribe(topics, listener=None if finite else Rebalance(self))

    @property
    def correlation(self) -> CorrelationEngine | None:
        return self.stage.engine

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
        self.stage.replace_engine(correlation)
        if correlation is not None:
            self._late_reported = correlation.stats.late_events
        # The next checkpoint must store the new engine's state.
        self.checkpointer.dirty = True

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
        return self.clock() - self._last_progress < 60

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
        clock, stage, checkpointer = self.clock, self.stage, self.checkpointer
        idle_since = clock()
        idle_exit = False
        exiting_since: float | None = None  # an idle exit waiting for the stage
        try:
            while not self._stop.is_set():
                self._maybe_reload()
                checkpointer.settle(wait=False)
                batch = self.consumer.poll(timeout_ms=poll_ms, max_records=max_batch)
                self._last_progress = clock()
                stage.polled([(tp.topic, tp.partition) for tp in batch], self._behind())
                active = bool(batch) and stage.brings_input(batch)
                if batch:
                    self.process_batch(batch)
                    if active:
                        idle_since = clock()
                    if until is not None and until(self.stats):
                        break
                elif stage.idle_work_pending():
                    # Quiet inputs turn idle with time and stop holding the
                    # others back; absence windows resolve as time passes.
                    alerts = self._correlate()
                    self._report_time_metrics()
                    if alerts or checkpointer.due():
                        checkpointer.checkpoint(alerts, {})
                if not batch and checkpointer.waiting:
                    checkpointer.checkpoint([], {})  # the backlog ended: write what waits
                idle_exit = (
                    idle_timeout_s is not None
                    and bool(self.stats.consumed or self._assigned_at is not None)
                    and clock() - max(idle_since, self._assigned_at or 0.0) > idle_timeout_s
                )
                if exiting_since is not None:
                    # Scale-out: the shards wait for the other members to
                    # declare time caught up too (stage.begin_exit), or give up.
                    if stage.ready_to_exit() or clock() - exiting_since > max(
                        idle_timeout_s or 0.0, EXIT_WAIT_S
                    ):
                        idle_exit = True
                        break
                elif not active and idle_exit:
                    stage.begin_exit()
                    exiting_since = clock()
                    if stage.ready_to_exit():
                        break
                elif not active and until is not None and until(self.stats):
                    break
            if end_of_input:
                checkpointer.checkpoint(self._correlate(end=True), {}, force=True)
            elif idle_exit:
                # A run that ends idle (--idle-exit: a batch run over a day's
                # logs) ends as if time had caught up (local.py).
                checkpointer.checkpoint(self._correlate(to_wall_clock=True), {}, force=True)
            else:
                checkpointer.checkpoint([], {}, force=True)
        finally:
            self.close()
        return self.stats

    def checkpoint(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Write and store everything now, and wait for it (as at a stop)."""
        return self.checkpointer.checkpoint([], {}, force=True)

    def process_batch(self, batch: dict[TopicPartition, list[Any]]) -> list[Alert]:
        started = time.perf_counter()
        polled = sum(len(r) for r in batch.values())
        batch = self.stage.split(batch)
        alerts: list[Alert] = []
        next_offsets: dict[tuple[str, int], int] = {}
        archive: list[ArchivedEvent] = []
        keep = self.settings.correlator.archive_events
        stage, checkpointer = self.stage, self.checkpointer
        correlated = stage.correlated
        make_alert = self.make_alert
        intake = self.intake
        decode = intake.decode
        flagged = intake.flagged(make_alert)
        throttle = self.throttle.alerts
        # Event times are bounded against each record's Kafka timestamp (its
        # producer's clock when sent, a part of the input: a replay judges it
        # alike), capped at this clock in case the producer's runs ahead.
        now = self.wall()
        now_ms = now * 1000.0
        skew = self.time_bounds.max_future_skew_s
        horizon = self.time_bounds.max_past_horizon_s
        if horizon is None:
            horizon = math.inf
        for tp, records in batch.items():
            key = (tp.topic, tp.partition)
            source = source_of_topic(tp.topic)
            archived_upto = checkpointer.archived.get(key, 0) if keep else None
            label = checkpointer.labels.get(tp.topic, tp.topic)
            match = self._matcher(source)
            newest = stage.newest(key)
            lateness = self._lateness(source)
            for record in records:
                next_offsets[key] = record.offset + 1
                decoded = decode(record)
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
                    intake.out_of_bounds(record, t, ref)
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
                # Evidence only for events that matched something: most events
                # match nothing, and building one per event cost more than matching.
                evidence = evidence_of(
                    record.topic, record.partition, record.offset, when, event, label
                )
                if not bounded:
                    alerts.extend(alerts_of(hits, evidence, flagged))
                    continue
                alerts.extend(throttle(hits, evidence, make_alert))
                ids = correlated_ids(hits, correlated)
                if ids:
                    if late is not None:
                        outcome = self.source_clock.late_outcome(late - t)
                        LATE_BY_SOURCE.labels(source=source or "unknown", outcome=outcome).inc()
                    stage.offer(ids, record, event, evidence, when, t, late)
            stage.progressed(key, newest)
            if newest > self._newest_t:
                self._newest_t = newest
            self.stats.by_source[source or tp.topic] = self.stats.by_source.get(
                source or tp.topic, 0
            ) + len(records)
            EVENTS_IN.labels(source=source or "unknown").inc(len(records))
        alerts.extend(self._correlate())
        checkpointer.checkpoint(
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

    def _correlate(self, end: bool = False, to_wall_clock: bool = False) -> list[Alert]:
        return self.stage.correlate(end, self._assigned, self._caught_up, to_wall_clock)

    # -- rebalance -----------------------------------------------------------------
    def hand_over(self, revoked: list[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        """Revocation: whoever gets these partitions resumes from the store's
        offsets (and the stage's published state): make them current first.
        Returns the offsets the listener commits."""
        offsets = self.checkpointer.checkpoint([], {}, force=True, commit=False)
        self._assigned = False
        self.stage.hand_over(revoked)
        log.info("partitions_revoked", partitions=[f"{tp.topic}:{tp.partition}" for tp in revoked])
        return offsets

    def take_over(
        self,
        assigned: list[TopicPartition],
        committed: dict[TopicPartition, tuple[int, str]],
        bounds: dict[TopicPartition, LogBounds] | None = None,
    ) -> None:
        """Assignment: the stage resumes each partition (``Checkpointer.resume_at``)."""
        self._assigned_at = self.clock()
        self._assigned = True
        self._caught_up = False
        said = self.stage.take_over(assigned, committed, bounds)
        log.info(
            "partitions_assigned",
            partitions=[f"{tp.topic}:{tp.partition}" for tp in assigned],
            **said,
        )

    @property
    def group(self) -> GroupConsumer:
        """The consumer as a Kafka group member (rebalance listeners, scale-out)."""
        if self._group is None:
            raise TypeError("the stream's consumer is not a Kafka consumer group member")
        return self._group

    def _behind(self) -> list[tuple[str, int]] | None:
        """Assigned partitions with records not yet returned to us, or with
        no fetch answer yet. Uses the high watermark of fetch answers, which
        the embedded broker reports correctly (unlike ListOffsets).

        A partition without an answer holds the merge back however long that
        takes: letting it go after a while (as once done, after a grace
        period) made which of its events were late depend on how fast the
        broker answered, i.e. on timing (issue #20, point 5)."""
        if self._group is None:
            return None
        behind: list[tuple[str, int]] = []
        assigned = self._group.assignment()
        for tp in assigned:
            high = self._group.highwater(tp)
            if high is None or self._group.position(tp) < high:
                behind.append((tp.topic, tp.partition))
        self._caught_up = bool(assigned) and not behind
        return behind

    # -- event time ----------------------------------------------------------------
    def _lateness(self, source: str | None) -> float:
        """The allowed lateness of a source's events (``correlator.sources``)."""
        return self.source_clock.lateness(source)

    def _report_time_metrics(self) -> None:
        """event_lag_seconds and late_events_total, from what was read and
        what the engine counted late (it counts both kinds: late for their
        input, and behind its own watermark)."""
        if self._newest_t != -math.inf:
            LAG_SECONDS.set(max(0.0, self.wall() - self._newest_t))
        engine = self.stage.engine
        if engine is not None:
            late = engine.stats.late_events
            if late > self._late_reported:
                LATE_EVENTS.inc(late - self._late_reported)
            self._late_reported = late

    # -- steps -------------------------------------------------------------------
    def _matcher(self, source: str | None) -> Callable[[dict[str, Any]], list[Any]]:
        """The detection function for one topic's records (route resolved once)."""
        matcher = getattr(self.ruleset, "matcher", None)
        if matcher is not None:
            return matcher(source)
        return lambda event: self.ruleset.match(event, source)

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
        self.stage.close()
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
