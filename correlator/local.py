"""The single member's correlation stage: merge the inputs, window them here.

One correlator process keeps one correlation state shard: the event-time
merger (``correlator/ordering.py``) puts the correlation hits of all its
partitions into event-time order, and the engine windows them. Both are
checkpointed in DuckDB with the resume offsets (``correlator/checkpointer.py``):
offsets are committed past buffered hits, so a restart must find them.
The scale-out alternative is ``correlator/scaleout/stage.py``; the loop
(``correlator/stream.py``) is given one of the two at wiring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from kafka import OffsetAndMetadata, TopicPartition
from prometheus_client import Counter, Gauge

from correlator.ordering import EventTimeMerger
from correlator.progress import IdleRule, ProgressPolicy
from correlator.store.state import CheckpointNotStoredError
from zonewatch.config import source_of_topic
from zonewatch.logs import get_logger
from zonewatch.models import Alert, Evidence, evidence_from_json, evidence_to_json
from zonewatch.offsets import LogBounds

if TYPE_CHECKING:
    from correlator.correlation import CorrelationEngine
    from correlator.correlation.clock import SourceClock
    from correlator.ports import StageHost

log = get_logger(__name__)

# What waits in the event-time merger, as the correlation engine takes it.
Pending = tuple[list[str], dict[str, Any], Evidence, float]  # hits, event, evidence, time
# A late event, as ``engine.process_late`` takes it: the same and the
# watermark of its input it fell behind.
Late = tuple[list[str], dict[str, Any], Evidence, float, float]

ENGINE_STATE = Gauge(
    "zonewatch_correlation_engine",
    "Correlation engine figures (groups, late events, caps)",
    ["name"],
)
PARTIAL_ASSIGNMENT = Gauge(
    "zonewatch_correlator_partitions_elsewhere",
    "Input partitions assigned to another group member while correlations are loaded",
)
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
# What share of the correlation groups goes when the store could not write
# the state (``not_stored``): the snapshot shrinks about as much.
SHED_FRACTION = 0.5
# The merger has already put the inputs of all partitions into event-time
# order: one engine partition.
SHARD = 0


class LocalCorrelation:
    """Merger + engine, checkpointed with the offsets in DuckDB."""

    offsets_every_write = False
    publishes = False

    def __init__(
        self,
        engine: CorrelationEngine | None,
        policy: ProgressPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        source_clock: SourceClock | None = None,
    ):
        self.engine = engine
        self.wall = wall

        def by_source(key: Hashable) -> IdleRule:
            topic = key[0] if isinstance(key, tuple) else None
            return policy.rule(source_of_topic(topic) if isinstance(topic, str) else None)

        def one_rule(_key: Hashable) -> IdleRule:
            return policy.default

        # One rule for all (today's settings): no lookup per input.
        rule_of = by_source if policy.sources else one_rule

        hold = None
        if source_clock is not None and source_clock.delay_by_source:

            def hold(key: Hashable, newest: float, quiet_for: float, empty: bool) -> float | None:
                # Where a quiet input holds the merge: its source's delivery delay.
                topic = key[0] if isinstance(key, tuple) else None
                source = source_of_topic(topic) if isinstance(topic, str) else None
                wall = self.wall() if empty else None
                return source_clock.idle_hold(source, newest, quiet_for, wall)

        self.merger: EventTimeMerger[Pending] = EventTimeMerger(
            clock=clock, rule_of=rule_of, hold=hold
        )
        self.correlated: frozenset[str] = frozenset(engine.referenced_rule_ids if engine else ())
        # Correlated events found late this batch (engine.process_late).
        self._late: list[Late] = []
        self.loop: StageHost | None = None

    def bind(self, loop: StageHost) -> None:
        """The loop this stage runs in (its store, consumer, resume offsets)."""
        self.loop = loop
        if self.engine is not None:
            self.restore(loop.store.load_state, loop.time_bounds.max_future_skew_s)

    @property
    def stateless(self) -> bool:
        return self.engine is None

    def extra_topics(self) -> list[str]:
        return []

    def replace_engine(self, engine: CorrelationEngine | None) -> None:
        self.engine = engine
        if engine is None:
            self.correlated = frozenset()
            self.merger.drain()  # nothing will correlate what is buffered
            self._late = []
        else:
            self.correlated = frozenset(engine.referenced_rule_ids)

    # -- input ------------------------------------------------------------------------
    def split(self, batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The source records of a poll (all of them: no internal topic here)."""
        return batch

    def brings_input(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        return True

    def polled(
        self, delivered: Iterable[tuple[str, int]], behind: list[tuple[str, int]] | None
    ) -> None:
        self.merger.polled(delivered, behind)

    def idle_work_pending(self) -> bool:
        """Buffered input to release as inputs turn idle, state to
        checkpoint, absence windows the wall clock may resolve."""
        if self.engine is None:
            return False
        dirty = self.loop is not None and self.loop.checkpointer.dirty
        return bool(len(self.merger) or dirty or self.engine.stats.events)

    def newest(self, key: tuple[str, int]) -> float:
        """The newest in-bounds event time read on an input partition so far."""
        return self.merger.newest(key)

    def progressed(self, key: tuple[str, int], newest: float) -> None:
        if newest != -math.inf:
            self.merger.observe(key, newest)

    def offer(
        self,
        ids: list[str],
        record: Any,
        event: dict[str, Any],
        evidence: Evidence,
        when: Any,
        t: float,
        late: float | None,
    ) -> None:
        """A correlation hit to the merge (or, ``late`` behind its input's watermark, aside)."""
        if late is not None:
            self._late.append((ids, event, evidence, t, late))
        else:
            # As the engine takes it (process_many): hits, event, evidence, time.
            self.merger.add((record.topic, record.partition), t, (ids, event, evidence, t))

    def begin_exit(self) -> None:
        pass  # the idle exit's last correlate moves time on (to_wall_clock)

    def ready_to_exit(self) -> bool:
        return True

    def correlate(
        self, end: bool, assigned: bool, caught_up: bool, to_wall_clock: bool = False
    ) -> list[Alert]:
        """Feed the engine what the merger releases, oldest first."""
        engine = self.engine
        if engine is None or (not end and not assigned):
            return []
        released = self.merger.drain() if end else self.merger.release()
        if released and self.loop is not None:
            # Input moved from the merge buffer into the windows: the next
            # due checkpoint must snapshot both, even with no new offsets.
            self.loop.checkpointer.dirty = True
        out = engine.process_many(released, partition=SHARD)
        if self._late:
            out.extend(engine.process_late(self._late, partition=SHARD))
            self._late = []
        if end:
            out.extend(engine.flush())
            return out
        frontier = self.merger.frontier()
        if to_wall_clock and caught_up:
            # An idle exit (--idle-exit: a batch run over a day's logs) ends
            # as if time had caught up, delivery delays included: the
            # watermark goes to the wall clock less the idle window.
            idle_s = self.merger.rule_of(None).idle_s
            frontier = max(self.merger.idle_frontier(), self.wall() - idle_s)
        elif frontier == float("inf"):
            if not caught_up:
                # No assignment yet (start-up, rebalance) or no fetch
                # answer: the wall clock would jump the watermark past a
                # backlog we have not read, and its events would be late.
                return out
            # Every input is caught up and idle: nothing older can still come,
            # so time itself moves the watermark on (absence windows), from
            # where the inputs stopped (progress.idle_progress).
            frontier = self.merger.idle_frontier()
        if frontier != float("-inf"):
            out.extend(engine.advance_watermark(SHARD, frontier))
        return out

    # -- rebalance ------------------------------------------------------------------
    def hand_over(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.merger.forget((tp.topic, tp.partition))

    def take_over(
        self,
        assigned: list[TopicPartition],
        committed: Mapping[TopicPartition, tuple[int, str]],
        bounds: dict[TopicPartition, LogBounds] | None,
    ) -> dict[str, Any]:
        """Resume each assigned partition where DuckDB says we got to, else
        where the group committed; either checked against the log first."""
        loop = self.loop
        assert loop is not None
        stored = loop.store.load_offsets()
        known = {
            tp: stored[(tp.topic, tp.partition)]
            for tp in assigned
            if (tp.topic, tp.partition) in stored
        }
        theirs = {tp: offset for tp, (offset, _meta) in committed.items() if tp not in known}
        for tp in assigned:
            self.merger.expect((tp.topic, tp.partition))
        for tp, offset in loop.checkpointer.resume_at(
            loop.settings.kafka, assigned, {**theirs, **known}, bounds
        ).items():
            loop.group.seek(tp, offset)
        self._check_whole_assignment(assigned)
        return {"resumed_from_store": len(known)}

    def _check_whole_assignment(self, assigned: Iterable[TopicPartition]) -> None:
        """Correlation state lives in this process only (one shard, one DuckDB
        file): another member of the group taking partitions means their
        windows are lost here and missed there. Say so loudly."""
        loop = self.loop
        if self.engine is None or loop is None:
            return
        whole: set[tuple[str, int]] = set()
        for topic in loop.topics:
            for partition in loop.group.partitions_for_topic(topic) or ():
                whole.add((topic, partition))
        missing = sorted(whole - {(tp.topic, tp.partition) for tp in assigned})
        PARTIAL_ASSIGNMENT.set(len(missing))
        if missing:
            log.error(
                "correlation_needs_the_whole_group",
                group=loop.settings.correlator.group_id,
                partitions_elsewhere=[f"{t}:{p}" for t, p in missing],
                consequence=(
                    "another correlator joined this consumer group: correlation windows "
                    "of these partitions are not handed over and correlations across them "
                    "are missed; run one correlator per group while correlation rules are "
                    "loaded (correlator/correlation/README.md, Scale-out)"
                ),
            )

    # -- checkpoint (correlator/checkpointer.py) -----------------------------------
    def flush(self) -> None:
        pass  # nothing goes downstream

    def write_state(self, offsets: Mapping[tuple[str, int], int]) -> dict[str, bytes]:
        return {}

    def snapshot(self) -> dict[str, Any]:
        """The engine's state and the merge buffer, with each input's newest
        time. Written into the store as they are serialised (the store calls
        them on the loop's thread before ``submit`` returns): a large state is
        never one object."""
        if self.engine is None:
            return {}
        merger = self.merger.snapshot(_encode_pending)
        return {
            STATE_KEY: self.engine.write_snapshot,
            MERGER_KEY: lambda out: out.write(orjson.dumps(merger)),
            PROGRESS_KEY: orjson.dumps(self.merger.progress()),
        }

    def publish(self) -> dict[TopicPartition, OffsetAndMetadata]:
        return {}

    def commit_metadata(self, key: tuple[str, int]) -> str:
        return ""

    def checkpointed(self) -> None:
        if self.engine is not None:
            for name, value in self.engine.metrics().items():
                if isinstance(value, int | float):
                    ENGINE_STATE.labels(name=name).set(value)

    def not_stored(self, exc: CheckpointNotStoredError) -> None:
        """Evict the least recently updated correlation groups
        (``engine.shed``), say so, count it. Detection and single-event alerts
        go on; so do correlations whose groups stay."""
        CHECKPOINTS_NOT_STORED.inc()
        engine = self.engine
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

    def restore(self, load_state: Callable[[str], bytes | None], future_skew_s: float) -> None:
        """The merge buffer and each input's newest time, as checkpointed.
        Anything stamped beyond the future bound from now (a state written
        before event times were bounded) is left out, with a warning."""
        limit = self.wall() + future_skew_s
        stored = load_state(MERGER_KEY)
        dropped = self.merger.restore(orjson.loads(stored), _decode_pending, limit) if stored else 0
        progress = load_state(PROGRESS_KEY)
        cut = self.merger.restore_progress(orjson.loads(progress), limit) if progress else 0
        if dropped or cut:
            log.warning(
                "correlation_input_clock_clamped",
                dropped_events=dropped,
                inputs_reset=cut,
                reason="the stored merge state held event times beyond the bound into the "
                "future (written before event times were bounded)",
            )

    def close(self) -> None:
        pass


def _encode_pending(item: Pending) -> Any:
    ids, _event, evidence, _t = item  # the evidence holds the event and its time
    return [ids, evidence_to_json(evidence)]


def _decode_pending(payload: Any) -> Pending:
    ids, data = payload
    evidence = evidence_from_json(data)
    return list(ids), evidence.event, evidence, evidence.time.timestamp()
