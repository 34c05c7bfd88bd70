# size: the engine's public API, snapshot/restore included, is one class; its hot path
# reads the engine's own attributes (splitting it further cost speed, bench_correlation).
"""The correlation engine: Sigma correlation rules over detection hits, in event time.

Pure: no Kafka, no DuckDB, no clock. The caller hands in, for each event, the
ids of the detection rules it matched, and gets alerts back; it snapshots the
state with the alerts it stores (see README.md in this package).

The semantics (windows, watermarks and lateness, absence windows, chains,
``suppress``) are written down once, in README.md of this package. The
engine proper applies contributions to windows, fires and feeds chains; its
parts live beside it: ``clock.py`` (watermark and lateness buffer),
``routing.py`` (what an event gives each rule), ``eviction.py`` (caps and
expiry), ``temporal.py`` (temporal rules, absence windows), ``state_codec.py``
and ``snapshot.py`` (snapshots, every format version).
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from sigma.correlations import SigmaCorrelationRule

from correlator.correlation import snapshot as snapshot_codec
from correlator.correlation.clock import late_applies
from correlator.correlation.compiled import CompiledCorrelation, compile_rules
from correlator.correlation.eviction import Eviction
from correlator.correlation.evidence import crossing, evidence_of
from correlator.correlation.partition import Partition
from correlator.correlation.records import (
    EVENT_ID,
    I_T,
    P_DEADLINE,
    P_WINDOW,
    TIME,
    Contrib,
    Mode,
    Rec,
    T,
    make_rec,
)
from correlator.correlation.routing import PIN_KEY, Routing, pinned_rules
from correlator.correlation.settings import BaseRuleInfo, CorrelationSettings
from correlator.correlation.state_codec import StateCodec
from correlator.correlation.stats import CorrelationStats
from correlator.correlation.steps import Spec, spec, window_factory
from correlator.correlation.temporal import TemporalPath
from zonewatch.logs import get_logger
from zonewatch.models import Alert, Evidence, alert_id

__all__ = ["PIN_KEY", "CorrelationEngine", "CorrelationStats", "pinned_rules"]

log = get_logger(__name__)

_METRIC = Mode.METRIC
_TEMPORAL_PLAIN = Mode.TEMPORAL_PLAIN


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def _iso_or_none(t: float) -> str | None:
    if not math.isfinite(t):
        return None
    try:
        return datetime.fromtimestamp(t, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


class CorrelationEngine:
    """Evaluates Sigma correlation rules; see the module docstring for semantics.
    Over 400 lines: the hot path (process_many, _apply, _fire) reads the
    engine's attributes directly; splitting it further cost speed."""

    def __init__(
        self,
        rules: Sequence[SigmaCorrelationRule],
        resolve: Callable[[str], BaseRuleInfo | None],
        settings: CorrelationSettings | None = None,
    ) -> None:
        self.settings = settings or CorrelationSettings()
        self._sigma = list(rules)
        self._resolve = resolve
        self.rules: list[CompiledCorrelation] = compile_rules(self._sigma, resolve)
        self.stats = CorrelationStats()
        self._lateness = float(self.settings.allowed_lateness_s)
        self._keep_event = self.settings.keep_event_in_evidence
        self._seq = itertools.count()
        self._parts: dict[int, Partition] = {}
        routing = Routing(self.rules)
        self._readers = routing.readers
        self._extract = routing.extract
        self.pinned = routing.pinned
        self.group_keys = routing.group_keys
        self._max_groups = self.settings.max_groups_per_rule
        self._factory = [window_factory(c) for c in self.rules]
        self._kinds: list[Any] = [type(make()) for make in self._factory]  # window class per rule
        self._specs: list[Spec] = [
            spec(c, kind) for c, kind in zip(self.rules, self._kinds, strict=True)
        ]
        self._evict = Eviction(self.rules, self.settings, self.stats, self._parts)
        self._temporal = TemporalPath(
            self.rules, self.settings.max_evidence_per_alert, self._seq, self._fire
        )
        self._apply_temporal = self._temporal.apply
        self._codec = StateCodec(self.rules, self._kinds, self._factory, self._lateness, self._seq)

    def _part(self, partition: int) -> Partition:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = Partition(len(self.rules), self._lateness, self._seq)
        return part

    # ------------------------------------------------------------------ rules

    @property
    def referenced_rule_ids(self) -> set[str]:
        """Detection rule ids some correlation reads."""
        return set(self._extract)

    @property
    def generated_rule_ids(self) -> set[str]:
        """Detection rules referenced by a ``generate: true`` correlation: they
        alert on their own as well."""
        return {
            slot.rule_id
            for c in self.rules
            if c.generate
            for slot in c.slots
            if not slot.is_correlation
        }

    @property
    def correlation_only_rule_ids(self) -> set[str]:
        """Detection rules that only feed correlations (no alert of their own)."""
        return self.referenced_rule_ids - self.generated_rule_ids

    # -------------------------------------------------------------- the input

    def process(
        self,
        hits: Sequence[str],
        event: dict[str, Any],
        evidence: Evidence,
        partition: int = 0,
        accept_key: Callable[[tuple[Any, ...]], bool] | None = None,
        t: float | None = None,
    ) -> list[Alert]:
        """One event and the ids of the detection rules it matched. Returns the
        alerts whose windows this event (through the watermark) completed.

        ``accept_key`` keeps only the groups it accepts: a repartitioned
        correlator (correlator/scaleout.py) receives an event on the shard of
        each of its group keys and applies here only that shard's keys.
        ``t`` is ``evidence.time.timestamp()`` when the caller has it already
        (the stream orders events by it): converting a datetime costs more
        than any other step of an event here."""
        return self.process_many(((hits, event, evidence, t),), partition, accept_key)

    def process_many(
        self,
        items: Iterable[tuple[Sequence[str], dict[str, Any], Evidence, float | None]],
        partition: int = 0,
        accept_key: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> list[Alert]:
        """``process()`` for several events of one partition, in arrival order:
        each ``(hits, event, evidence, t or None)``. The stream hands over what
        a poll released at once, which spares a call and its set-up per event."""
        stats = self.stats
        part = self._part(partition)
        part.dirty = True
        extract = self._extract
        lateness = part.lateness
        keep_event = self._keep_event
        buf = part.buffer
        pending = part.pending
        out: list[Alert] = []
        for hits, event, evidence, t in items:
            stats.events += 1
            dt = evidence.time
            if t is None:
                try:
                    t = (dt - _EPOCH) / _SECOND  # dt.timestamp(), bit for bit
                except TypeError:  # naive: UTC
                    dt = dt.replace(tzinfo=UTC)
                    t = (dt - _EPOCH) / _SECOND
            contribs: list[Contrib] | None = None
            for hit in hits:
                read = extract.get(hit)
                if read is not None:
                    if contribs is None:
                        contribs = read(event, stats, accept_key)
                    else:
                        contribs += read(event, stats, accept_key)
            # The clock (LatenessBuffer.observe, inline): an event without
            # contributions still moves it, when it is the newest.
            if t > part.max_t:
                wm = t - lateness
                part.max_t = t
            elif not contribs:
                continue
            else:
                wm = part.max_t - lateness
            if contribs:
                stats.correlated_events += 1
                stats.contributions += len(contribs)
                # make_rec, inline
                rec = (
                    evidence.event_id,
                    t,
                    dt,
                    evidence.topic,
                    evidence.partition,
                    evidence.offset,
                    evidence.line,
                    event if keep_event else None,
                    None,
                )
                if t < part.frontier:
                    self._late(part, partition, rec, contribs, out)
                    continue
                part.hold(t, evidence.event_id, rec, contribs)
            if wm > part.frontier:
                part.frontier = wm
            if (
                part.unordered
                or (pending and pending[0][P_DEADLINE] < wm)
                or part.frontier >= part.next_scan
            ):
                self._release(part, out)
                continue
            # The common case: in-order arrivals, nothing due but the FIFO's head.
            while buf and buf[0][I_T] <= wm:
                t, _, _, rec, contribs = buf.popleft()
                self._apply(part, t, rec, contribs, out)
                if pending and pending[0][P_DEADLINE] < wm:
                    self._release(part, out)  # an absence window this event opened is due
                    break
        return out

    def process_late(
        self,
        items: Iterable[tuple[Sequence[str], dict[str, Any], Evidence, float, float]],
        partition: int = 0,
        accept_key: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> list[Alert]:
        """Events the caller found late: ``(hits, event, evidence, t, watermark)``,
        each behind ``watermark``, its input's watermark when it arrived.

        The stream decides lateness per input partition, in the partition's
        own order, so that the verdict depends on the input alone and not on
        when the merge of partitions released what (correlator/ordering.py).
        Such an event is counted and logged as late, applied out of order only
        if ``late_events_update_windows``, and never buffered: it moves no
        watermark."""
        stats = self.stats
        part = self._part(partition)
        keep_event = self._keep_event
        out: list[Alert] = []
        for hits, event, evidence, t, watermark in items:
            stats.events += 1
            contribs: list[Contrib] = []
            for hit in hits:
                read = self._extract.get(hit)
                if read is not None:
                    contribs += read(event, stats, accept_key)
            if not contribs:
                continue
            stats.correlated_events += 1
            part.dirty = True
            rec = make_rec(evidence, t, evidence.time, event if keep_event else None)
            self._late(part, partition, rec, contribs, out, watermark)
        return out

    def advance_watermark(self, partition: int, event_time: datetime | float) -> list[Alert]:
        """Declare that ``partition`` has seen everything up to ``event_time``
        (e.g. wall clock when it is caught up and idle); returns what resolves."""
        t = event_time if isinstance(event_time, float | int) else _utc(event_time).timestamp()
        part = self._part(partition)
        out: list[Alert] = []
        if t > part.max_t:
            part.dirty = True
            part.max_t = float(t)
            self._release(part, out)
        return out

    def flush(self) -> list[Alert]:
        """End of a finite input: apply every buffered event and resolve the
        absence windows the input covers; windows reaching past the last event
        stay open and are counted as ``incomplete_windows``."""
        out: list[Alert] = []
        horizon = max((p.max_t for p in self._parts.values()), default=-math.inf)
        for part in self._parts.values():
            part.dirty = True
            self._release(part, out, watermark=math.inf)
            self._temporal.resolve_pending(part, horizon, out, inclusive=True)
            part.frontier = max(part.frontier, part.max_t)
            self.stats.incomplete_windows = sum(
                1 for q in self._parts.values() for e in q.pending if not e[P_WINDOW].cancelled
            )
        return out

    def clamp_clock(self, limit: float) -> int:
        """Undo what events stamped after ``limit`` (epoch seconds) left in
        the state; call after restoring a snapshot.

        A snapshot taken before event times were bounded may hold a watermark
        in year 9999: every later event would be late, and correlation off for
        good. Buffered events, absence windows, groups and suppressions dated
        after ``limit`` are dropped, and each such partition's clock goes back
        to the newest time it still holds (events older than that stay late).
        Logs a warning per partition changed; returns how many items went."""
        dropped_total = 0
        for key, part in self._parts.items():
            if part.max_t <= limit and part.frontier <= limit:
                continue
            dropped, removed = part.clamp_state(limit, self.rules)
            for ri, n in enumerate(removed):
                self._evict.drop(ri, n)
            held = max(part.newest_held(), part.newest_group_time())
            was = part.max_t
            part.rewind(held, self._evict.scan_every)
            part.dirty = True
            self.stats.clock_clamped += dropped
            dropped_total += dropped
            log.warning(
                "correlation_clock_clamped",
                partition=key,
                clock_was=_iso_or_none(was),
                clock_now=_iso_or_none(part.max_t),
                limit=_iso_or_none(limit),
                dropped=dropped,
                reason="the stored state held event times beyond the bound into the future "
                "(written before event times were bounded); left as it was, every later "
                "event would be late and correlation would stay off",
            )
        return dropped_total

    # --------------------------------------------------------- the hot path

    def _late(
        self,
        part: Partition,
        partition: int,
        rec: Rec,
        contribs: list[Contrib],
        out: list[Alert],
        watermark: float | None = None,
    ) -> None:
        self.stats.late_events += 1
        part.late_logged += 1
        behind = (part.frontier if watermark is None else watermark) - rec[T]
        settings = self.settings
        applied = late_applies(behind, settings.late_horizon_s, settings.late_events_update_windows)
        if part.late_logged == 1 or part.late_logged % 1000 == 0:
            log.warning(
                "correlation_late_event",
                partition=partition,
                event_id=rec[EVENT_ID],
                behind_s=round(behind, 3),
                late_in_partition=part.late_logged,
                applied=applied,
            )
        if applied:
            self.stats.late_applied += 1
            self._apply(part, rec[T], (*rec, True), contribs, out)
        else:
            self.stats.late_dropped += 1

    def _release(self, part: Partition, out: list[Alert], watermark: float | None = None) -> None:
        if watermark is None:
            wm = part.max_t - part.lateness
            if wm > part.frontier:
                part.frontier = wm
        else:
            wm = watermark
        pending = part.pending
        pop_due = part.pop_due
        while (item := pop_due(wm)) is not None:
            t, _, _, rec, contribs = item
            if pending and pending[0][P_DEADLINE] < t:
                self._temporal.resolve_pending(part, t, out)
            self._apply(part, t, rec, contribs, out)
        if pending and pending[0][P_DEADLINE] < wm and watermark is None:
            self._temporal.resolve_pending(part, wm, out)
        if part.frontier >= part.next_scan and part.frontier > -math.inf:
            self._evict.scan(part)

    def _apply(
        self, part: Partition, t: float, rec: Rec, contribs: list[Contrib], out: list[Alert]
    ) -> None:
        specs = self._specs
        tables = part.groups
        evict = self._evict
        for ri, s, key, value, carry in contribs:
            st = tables[ri].get(key)
            if st is None:
                count = evict.count
                if count[ri] < self._max_groups and evict.total + 1 < evict.check_at:
                    # Eviction.admit without the call: no cap reached, no check due
                    count[ri] += 1
                    evict.total += 1
                else:
                    evict.admit(ri)
                st = tables[ri][key] = self._factory[ri]()
            span, check, mode, step = specs[ri]
            if mode is _METRIC:
                if step(st, rec, t, value):  # type: ignore[misc]  # a metric rule has a step
                    recs = st.take()
                    self._fire(
                        part, self.rules[ri], key, recs, recs[0][TIME], rec[TIME], t, carry, out
                    )
            elif mode is _TEMPORAL_PLAIN:
                # TemporalPath.apply's first steps for a plain temporal rule; it
                # runs only when the rule holds (repeating them changes nothing).
                last = st.last
                old = last[s]
                if old is None or old[T] <= t:
                    last[s] = rec
                if t > st.last_t:
                    st.last_t = t
                floor = t - span
                metric = 0
                for r in last:
                    if r is not None and r[T] >= floor:
                        metric += 1
                if check(metric):
                    self._apply_temporal(part, self.rules[ri], st, key, s, rec, t, carry, out)
            else:
                self._apply_temporal(part, self.rules[ri], st, key, s, rec, t, carry, out)

    def _fire(
        self,
        part: Partition,
        rule: CompiledCorrelation,
        key: tuple[Any, ...],
        recs: list[Rec],
        start: datetime,
        end: datetime,
        end_t: float,
        carry: dict[str, Any] | None,
        out: list[Alert],
    ) -> None:
        suppressed = False
        if rule.suppress is not None:
            skey = tuple(key[i] for i in rule.suppress.positions)
            table = part.suppress[rule.index]
            until = table.get(skey)
            if until is not None and end_t < until:
                suppressed = True
                self.stats.suppressed += 1
            else:
                table[skey] = end_t + rule.suppress.window
        if suppressed and not rule.parents:
            return
        evidence, late = evidence_of(recs, self.settings.max_evidence_per_alert)
        group = dict(zip(rule.group_by, key, strict=True))
        aid = alert_id(rule.id, group, start, end, [e.event_id for e in evidence])
        if rule.output and not suppressed:
            self.stats.alerts += 1
            out.append(
                Alert(
                    id=aid,
                    rule_id=rule.id,
                    rule_title=rule.title,
                    level=rule.level,
                    tags=rule.tags,
                    type=rule.type,
                    rule_hash=rule.rule_hash,
                    group=group,
                    window_start=start,
                    window_end=end,
                    first_seen=evidence[0].time if evidence else start,
                    last_seen=evidence[-1].time if evidence else end,
                    zone_crossing=crossing(evidence),
                    origin=self.settings.origin,
                    evidence=evidence,
                    late=late,
                )
            )
        if rule.parents:
            self._feed_parents(part, rule, aid, group, carry, recs, end_t, end, out)

    def _feed_parents(
        self,
        part: Partition,
        rule: CompiledCorrelation,
        aid: str,
        group: dict[str, Any],
        carry: dict[str, Any] | None,
        recs: list[Rec],
        end_t: float,
        end: datetime,
        out: list[Alert],
    ) -> None:
        """Feed an alert to the correlations referring to its rule, as a hit
        at its window end whose record holds the alert's records."""
        fields = dict(carry) if carry else {}
        fields.update(group)
        rec = ("correlation:" + aid, end_t, end, None, None, None, None, None, tuple(recs))
        for pi, ps in rule.parents:
            read_key, read_value, pcarry = self._readers[pi][ps]
            key = read_key(fields)
            if key is None:
                self.stats.missing_group_field += 1
                continue
            value = None
            if read_value is not None:
                value = read_value(fields)
                if value is None:
                    self.stats.missing_value += 1
                    continue
            carried = {f: g(fields) for f, g in pcarry} if pcarry else None
            self._apply(part, end_t, rec, [(pi, ps, key, value, carried)], out)

    # ----------------------------------------------------------- eviction

    def state_bytes_estimate(self) -> int:
        """Bytes the state takes, roughly (``Eviction.state_bytes_estimate``)."""
        return self._evict.state_bytes_estimate()

    def shed(self, fraction: float) -> dict[str, int]:
        """Evict ``fraction`` of the groups (``Eviction.shed``): for a caller
        that could not store the state. Returns the groups evicted per rule id."""
        return self._evict.shed(fraction)

    # ------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, Any]:
        """Counters and live gauges, for Prometheus and ``zonewatch correlate``."""
        data: dict[str, Any] = asdict(self.stats)
        count = self._evict.count
        data["groups"] = sum(count)
        data["groups_by_rule"] = {c.id: count[c.index] for c in self.rules}
        data["buffered_events"] = sum(len(p) for p in self._parts.values())
        data["open_absence_windows"] = sum(
            1 for p in self._parts.values() for e in p.pending if not e[P_WINDOW].cancelled
        )
        data["watermarks"] = {str(k): _iso_or_none(p.frontier) for k, p in self._parts.items()}
        return data

    # ----------------------------------------------------- snapshot/restore
    #
    # state_codec.py turns partitions into rows and back (a reader per format
    # version); snapshot.py turns rows into bytes (a pickle) and back, on a
    # binary file, so a large state is never one bytes object.

    def snapshot(self) -> bytes:
        """The whole state as bytes (format 2): restore() continues identically.
        Raises pickle.PicklingError if the state holds a value restore() would
        refuse (see snapshot._Pickler)."""
        with snapshot_codec.no_gc():
            return snapshot_codec.encode(self._codec.payload(self._parts, asdict(self.stats)))

    def write_snapshot(self, out: BinaryIO) -> None:
        """``snapshot()`` written to ``out`` as it is pickled (frames of at
        most 64 KiB), never held whole: what the stream hands the store."""
        with snapshot_codec.no_gc():
            snapshot_codec.write(self._codec.payload(self._parts, asdict(self.stats)), out)

    @classmethod
    def restore(
        cls,
        data: bytes | BinaryIO,
        rules: Sequence[SigmaCorrelationRule],
        resolve: Callable[[str], BaseRuleInfo | None],
        settings: CorrelationSettings | None = None,
    ) -> CorrelationEngine:
        """An engine for ``rules`` continuing from a snapshot (format 2, or
        format 1 of the previous release), as bytes or a binary file read as
        it goes (the store's ``open_state``). State of rules that are new or
        changed starts empty; state of removed rules is dropped."""
        engine = cls(rules, resolve, settings)
        what = "correlation snapshot"
        payload = engine._codec.read(data, what)
        for key, part in engine._codec.partitions(payload, what).items():
            engine._adopt(key, part)
        stats = payload.get("stats", {})
        for name, value in stats.items() if isinstance(stats, dict) else ():
            if hasattr(engine.stats, name):
                setattr(engine.stats, name, value)
        return engine

    def _adopt(self, partition: int, part: Partition) -> None:
        old = self._parts.pop(partition, None)
        if old is not None:
            self._evict.removed(old)
        part.dirty = True
        self._parts[partition] = part
        self._evict.added(part)

    def export_partition(self, partition: int) -> bytes | None:
        """State of one partition, and forget it: call on revocation and store
        the bytes where the next owner finds them (import_partition)."""
        part = self._parts.pop(partition, None)
        if part is None:
            return None
        self._evict.removed(part)
        return self._codec.encode_partition(part)

    def import_partition(self, partition: int, data: bytes) -> None:
        """Take over a partition's state (on assignment)."""
        what = f"partition {partition} state"
        payload = self._codec.read(data, what, "start it empty")
        self._adopt(partition, self._codec.partition(payload, what, "start it empty"))

    def snapshot_partitions(self, only_changed: bool = True) -> dict[int, bytes]:
        """Per-partition state, by default only of partitions changed since
        the last call: store each under its own key in the checkpoint
        transaction, so a checkpoint costs what changed, not all the state."""
        out = {
            p: self._codec.encode_partition(part)
            for p, part in sorted(self._parts.items())
            if part.dirty or not only_changed
        }
        for part in self._parts.values():
            part.dirty = False
        return out

    @classmethod
    def restore_partitions(
        cls,
        parts: dict[int, bytes],
        rules: Sequence[SigmaCorrelationRule],
        resolve: Callable[[str], BaseRuleInfo | None],
        settings: CorrelationSettings | None = None,
    ) -> CorrelationEngine:
        """An engine continuing from per-partition states (snapshot_partitions)."""
        engine = cls(rules, resolve, settings)
        for partition, data in parts.items():
            engine.import_partition(partition, data)
        for part in engine._parts.values():
            part.dirty = False
        return engine

    def reload(
        self,
        rules: Sequence[SigmaCorrelationRule],
        resolve: Callable[[str], BaseRuleInfo | None] | None = None,
    ) -> CorrelationEngine:
        """Hot reload: an engine for the new rules that keeps the state of
        unchanged rules (same content hash), starts new ones empty and drops
        removed ones. The state goes through a temporary file, not memory."""
        with tempfile.TemporaryFile(prefix="zonewatch-reload-") as spool:
            self.write_snapshot(spool)
            spool.seek(0)
            return CorrelationEngine.restore(spool, rules, resolve or self._resolve, self.settings)
