"""The correlation engine: Sigma correlation rules over detection hits, in event time.

Pure: no Kafka, no DuckDB, no clock. The caller hands in, for each event, the
ids of the detection rules it matched, and gets alerts back; it snapshots the
state with the alerts it stores (see README.md in this package).

Semantics, in one place:

- A window is any span of ``timespan`` seconds, both ends inclusive, anchored
  at each event of a group as it is applied; a rule fires as soon as its
  condition holds over such a span, with the events of that span since the
  group last fired as evidence, and the group then starts afresh.
- Events are applied in event-time order. Each partition keeps a watermark,
  its newest event time minus ``allowed_lateness_s``; an event waits in a
  buffer until the watermark reaches it, so arrival order within the
  lateness never changes the result. Ties are broken by event id.
- An event behind its partition's watermark is late: counted, logged, and
  applied out of order only if ``late_events_update_windows``.
- ``a and not b`` (extended temporal conditions): once the present rules hold
  over a span starting at ``s``, the alert waits until the watermark passes
  ``s + timespan`` and is dropped if an event of ``b`` falls in
  [s, s + timespan]. Present-rule events inside an open absence window join
  its evidence instead of opening another window.
- Group values compare case-insensitively (strings are lowered); an event
  lacking a group field joins no group and is counted.
- Correlations of correlations: an alert is fed to the rules referring to
  it as a hit at its window end, in the same partition.
- ``suppress`` (custom attribute, README.md): after an alert, alerts of the
  same rule and suppression key ending within the window are counted and
  dropped (they still feed chains).
"""

from __future__ import annotations

import heapq
import itertools
import math
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, BinaryIO

import orjson
from sigma.correlations import SigmaCorrelationRule

from correlator.correlation import snapshot as snapshot_codec
from correlator.correlation.compiled import (
    NUMERIC_TYPES,
    TEMPORAL_TYPES,
    CompiledCorrelation,
    Slot,
    compile_rules,
)
from correlator.correlation.errors import CorrelationStateError
from correlator.correlation.fields import (
    NAMESPACE,
    Getter,
    getter,
    key_getter,
    key_lines,
    norm,
    number,
    value_getter,
    value_lines,
)
from correlator.correlation.settings import BaseRuleInfo, CorrelationSettings
from correlator.correlation.snapshot import UNREADABLE, no_gc
from correlator.correlation.snapshot import VERSION as SNAPSHOT_VERSION
from correlator.correlation.steps import Step, step_function
from correlator.correlation.windows import (
    AvgWindow,
    CountWindow,
    DistinctWindow,
    Pending,
    QuantileWindow,
    Rec,
    SumWindow,
    TemporalWindow,
    load_rec,
)
from zonewatch.logs import get_logger
from zonewatch.models import Alert, Evidence, alert_id

log = get_logger(__name__)

# Rough sizes for the memory cap, measured with tracemalloc on CPython 3.11
# (bench/bench_correlation.py prints the real figure).
GROUP_BYTES = 420
REC_BYTES = 200
# An event body kept in evidence (``keep_event_in_evidence``, the stream's
# setting) takes about this many times its JSON size as Python dicts and
# strings: a parsed FortiGate event 1.4 KB of JSON and 6.1 KB in memory, a
# small one 272 B and 1.5 KB. Bodies are most of the state then; an estimate
# without them let a flood of distinct sources grow the process to three
# times max_state_bytes before any cap applied (issue 20, point 3).
_BODY_BYTES_PER_JSON_BYTE = 4.5
_BODY_SAMPLE = 64  # bodies serialized per estimate to learn their size
_BODY_GUESS = 4000  # bytes per group before the first estimate has learned it

Contrib = tuple[int, int, tuple[Any, ...], Any, dict[str, Any] | None]
_Item = tuple[float, str, int, Rec, list[Contrib]]


@dataclass
class CorrelationStats:
    """Counters since start (or restore); ``metrics()`` adds live gauges."""

    events: int = 0
    correlated_events: int = 0
    contributions: int = 0  # (rule, group) updates by those events
    late_events: int = 0
    late_applied: int = 0
    missing_group_field: int = 0
    missing_value: int = 0
    alerts: int = 0
    suppressed: int = 0
    evicted_expired: int = 0
    evicted_cap: int = 0
    evicted_store: int = 0  # shed() when the store could not write the state
    cap_hits: int = 0
    incomplete_windows: int = 0
    clock_clamped: int = 0


class _Partition:
    __slots__ = (
        "buffer",
        "dirty",
        "frontier",
        "groups",
        "late_logged",
        "max_t",
        "next_scan",
        "pending",
        "suppress",
        "unordered",
    )

    def __init__(self, n_rules: int) -> None:
        self.max_t = -math.inf
        self.frontier = -math.inf  # every buffered event at or before it is applied
        self.next_scan = -math.inf
        # Waiting events, sorted by (time, event id): arrivals in order go to
        # the FIFO (O(1)), the few out of order to a heap; release merges both.
        self.buffer: deque[_Item] = deque()
        self.unordered: list[_Item] = []
        self.pending: list[tuple[float, int, int, tuple[Any, ...], Pending]] = []
        self.groups: list[dict[tuple[Any, ...], Any]] = [{} for _ in range(n_rules)]
        self.suppress: list[dict[tuple[Any, ...], float]] = [{} for _ in range(n_rules)]
        self.late_logged = 0
        self.dirty = True  # changed since the last snapshot_partitions()


_Readers = tuple[Getter, Getter | None, tuple[tuple[str, Getter], ...]]
_Member = tuple[int, int, Getter | None, tuple[tuple[str, Getter], ...]]
_Route = tuple[tuple[str, ...], Getter, list[_Member]]


def _readers(rule: CompiledCorrelation, slot: Slot) -> _Readers:
    read_value = (
        value_getter(slot.value_fields, numeric=rule.type in NUMERIC_TYPES)
        if slot.value_fields
        else None
    )
    carry = tuple((name, getter(name)) for name in rule.carry)
    return key_getter(slot.group_fields), read_value, carry


_Extract = Callable[
    [dict[str, Any], "CorrelationStats", Callable[[tuple[Any, ...]], bool] | None], list[Contrib]
]


# The shard key of pinned rules (see ``pinned_rules``). It only picks a
# shard: a group key that happened to equal it would just share that shard.
PIN_KEY: tuple[Any, ...] = ("\x00pinned",)


def pinned_rules(rules: Sequence[CompiledCorrelation]) -> frozenset[int]:
    """Rules a repartitioned correlator must keep on one shard.

    A child correlation feeds its parent in the engine of the shard where
    the child's group lives. When the parent groups by other fields than its
    child, a parent group would need children from many shards; so every
    rule connected (through chains, in either direction) to such a link is
    filed under ``PIN_KEY`` instead of its group key: one shard sees them all.
    """
    by_id = {c.id: c for c in rules}
    root = list(range(len(rules)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    misaligned: set[int] = set()
    for parent in rules:
        for slot in parent.slots:
            if slot.is_correlation:
                child = by_id[slot.rule_id]
                root[find(parent.index)] = find(child.index)
                if tuple(slot.group_fields) != tuple(child.group_by):
                    misaligned.add(parent.index)
    components = {find(i) for i in misaligned}
    return frozenset(c.index for c in rules if find(c.index) in components)


def _extractor(
    route: list[_Route], rules: Sequence[CompiledCorrelation], pinned: frozenset[int]
) -> _Extract:
    """One function reading everything the correlations fed by a detection
    rule need from an event: each group key once, then each member's value
    and carried fields, as the contributions ``_apply`` takes. Generated,
    because looping over routes and members per event cost more than the
    reads themselves; the key and single-field values are read inline, as
    ``key_getter`` and ``value_getter`` would. ``accept_key`` (scale-out)
    is asked about the group key, or about ``PIN_KEY`` for pinned rules."""
    names: dict[str, Any] = {
        **NAMESPACE,  # the field readers' names (zonewatch.fieldpath)
        "norm": norm,
        "number": number,
        "PIN_KEY": PIN_KEY,
    }
    lines = ["def extract(event, stats, accept_key):", "    out = []"]
    for k, (fields, _read_key, members) in enumerate(route):
        lines += [
            *key_lines(fields, "    "),
            "    if key is None:",
            f"        stats.missing_group_field += {len(members)}",
        ]
        pins = [ri in pinned for ri, _, _, _ in members]
        if not any(pins):
            lines.append("    elif accept_key is None or accept_key(key):")
        else:  # members ask by their own key, in the members' order
            lines.append("    else:")
            if not all(pins):
                lines.append("        free = accept_key is None or accept_key(key)")
            lines.append("        pin = accept_key is None or accept_key(PIN_KEY)")
        for m, (ri, s, read_value, carry) in enumerate(members):
            ind = "        "
            if any(pins):
                lines.append(f"        if {'pin' if pins[m] else 'free'}:")
                ind = "            "
            tag = f"{k}_{m}"
            if carry:
                for c, (_, g) in enumerate(carry):
                    names[f"carry{tag}_{c}"] = g
                items = ", ".join(f"{f!r}: carry{tag}_{c}(event)" for c, (f, _) in enumerate(carry))
                carried = "{" + items + "}"
            else:
                carried = "None"
            if read_value is None:
                lines.append(f"{ind}out.append(({ri}, {s}, key, None, {carried}))")
            else:
                slot = rules[ri].slots[s]
                inline = value_lines(slot.value_fields, rules[ri].type in NUMERIC_TYPES, ind)
                if inline is None:
                    names[f"value{tag}"] = read_value
                    inline = [f"{ind}value = value{tag}(event)"]
                lines += [
                    *inline,
                    f"{ind}if value is None:",
                    f"{ind}    stats.missing_value += 1",
                    f"{ind}else:",
                    f"{ind}    out.append(({ri}, {s}, key, value, {carried}))",
                ]
    lines.append("    return out")
    exec(compile("\n".join(lines) + "\n", "<correlation extract>", "exec"), names)
    fn: _Extract = names["extract"]
    return fn


def _bodies(windows: Iterable[Any]) -> list[Any]:
    """Event bodies held by some windows (the last record of each)."""
    out = []
    for st in windows:
        recs = getattr(st, "recs", None) or getattr(st, "last", None) or ()
        for rec in reversed(recs):
            if rec is not None and rec[7] is not None:
                out.append(rec[7])
                break
    return out


def _body_bytes(sample: list[Any]) -> float:
    """Bytes one held event body takes in memory, from a sample of them."""
    sizes = []
    for body in sample[:_BODY_SAMPLE]:
        if body is not None:
            try:
                sizes.append(len(orjson.dumps(body, default=str)))
            except (TypeError, orjson.JSONEncodeError):
                continue
    return _BODY_BYTES_PER_JSON_BYTE * sum(sizes) / len(sizes) if sizes else 0.0


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _crossing(evidence: list[Evidence]) -> str | None:
    """The zone crossings the evidence shows, in order of first appearance."""
    seen: dict[str, None] = {}
    for item in evidence:
        zone = item.event.get("zone") if item.event else None
        crossing = zone.get("crossing") if isinstance(zone, dict) else None
        if isinstance(crossing, str):
            seen.setdefault(crossing, None)
    return ", ".join(seen) if seen else None


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
    """Evaluates Sigma correlation rules; see the module docstring for semantics."""

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
        self._parts: dict[int, _Partition] = {}
        self._group_count = [0] * len(self.rules)
        self._scan_every = max(1.0, min((c.span for c in self.rules), default=2.0) / 2)
        # Per (rule, slot): readers of the group key, the value and carried fields.
        self._readers: list[list[_Readers]] = [
            [_readers(c, slot) for slot in c.slots] for c in self.rules
        ]
        # detection rule id -> what every correlation reading it extracts
        routes: dict[str, list[_Route]] = {}
        for c in self.rules:
            for s, slot in enumerate(c.slots):
                if not slot.is_correlation:
                    read_key, read_value, carry = self._readers[c.index][s]
                    route = routes.setdefault(slot.rule_id, [])
                    # Rules grouping by the same fields read the key once and
                    # share the tuple (and its memory).
                    for fields, _, members in route:
                        if fields == slot.group_fields:
                            members.append((c.index, s, read_value, carry))
                            break
                    else:
                        route.append(
                            (slot.group_fields, read_key, [(c.index, s, read_value, carry)])
                        )
        self.pinned = pinned_rules(self.rules)
        self._extract: dict[str, _Extract] = {
            rid: _extractor(route, self.rules, self.pinned) for rid, route in routes.items()
        }
        # detection rule id -> per group key reader: does it file any unpinned
        # rule under the group key, any pinned one under PIN_KEY (group_keys)
        self._shard_keys: dict[str, list[tuple[Getter, bool, bool]]] = {
            rid: [
                (
                    read_key,
                    any(m[0] not in self.pinned for m in members),
                    any(m[0] in self.pinned for m in members),
                )
                for _, read_key, members in route
            ]
            for rid, route in routes.items()
        }
        self._max_groups = self.settings.max_groups_per_rule
        self._factory = [self._window_factory(c) for c in self.rules]
        self._kinds: list[Any] = [type(make()) for make in self._factory]  # window class per rule
        # Per rule, what the hot path reads: (span, check, mode, step). The mode
        # is 0 for a metric window (``step`` adds and tests, steps.py), 1 for a
        # plain temporal rule (unordered, no clauses: _apply counts its slots
        # inline), 2 for other temporal rules.
        self._specs: list[tuple[float, Callable[[Any], bool], int, Step | None]] = [
            (
                c.span,
                c.check,
                (1 if not c.ordered and c.clauses is None else 2) if c.temporal else 0,
                None if c.temporal else step_function(c, kind),
            )
            for c, kind in zip(self.rules, self._kinds, strict=True)
        ]
        # What a group costs, bodies included (learned by each estimate): the
        # checks of the state cap are scheduled with it.
        self._bytes_per_group = GROUP_BYTES + REC_BYTES + (_BODY_GUESS if self._keep_event else 0)
        self._memory_check_at = self.settings.max_state_bytes // (2 * self._bytes_per_group)
        self._groups_total = 0  # sum(self._group_count), kept for the hot path

    # ------------------------------------------------------------------ rules

    @staticmethod
    def _window_factory(c: CompiledCorrelation) -> Callable[[], Any]:
        n = len(c.slots)
        if c.type == "event_count":
            return CountWindow
        if c.type == "value_count":
            return DistinctWindow
        if c.type == "value_sum":
            return SumWindow
        if c.type == "value_avg":
            return AvgWindow
        if c.type in ("value_percentile", "value_median"):
            p = c.percentile if c.percentile is not None else 50.0
            return lambda: QuantileWindow(p)
        if c.type in TEMPORAL_TYPES:
            # partial: a C call, where a lambda costs a Python frame per new group
            if not c.ordered:
                return partial(TemporalWindow, n, None)
            if c.clauses is None:
                return partial(TemporalWindow, n, [n])
            sizes = [len(cl.pos) for cl in c.clauses]
            return partial(TemporalWindow, n, sizes)
        raise ValueError(f"unknown correlation type {c.type}")

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
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition(len(self.rules))
        part.dirty = True
        extract = self._extract
        lateness = self._lateness
        keep_event = self._keep_event
        buf = part.buffer
        pending = part.pending
        # The FIFO's newest (time, event id), kept here rather than read back.
        tail_t, tail_id = (buf[-1][0], buf[-1][1]) if buf else (-math.inf, "")
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
                eid = evidence.event_id
                rec = (
                    eid,
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
                if buf and (t < tail_t or (t == tail_t and eid < tail_id)):
                    heapq.heappush(part.unordered, (t, eid, next(self._seq), rec, contribs))
                else:
                    # The FIFO is never heap-ordered: it needs no tie-breaking number.
                    buf.append((t, eid, 0, rec, contribs))
                    tail_t, tail_id = t, eid
            if wm > part.frontier:
                part.frontier = wm
            if (
                part.unordered
                or (pending and pending[0][0] < wm)
                or part.frontier >= part.next_scan
            ):
                self._release(part, out)
                continue
            # The common case: in-order arrivals, nothing due but the FIFO's head.
            while buf and buf[0][0] <= wm:
                t, _, _, rec, contribs = buf.popleft()
                self._apply(part, t, rec, contribs, out)
                if pending and pending[0][0] < wm:
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
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition(len(self.rules))
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
            rec = (
                evidence.event_id,
                t,
                evidence.time,
                evidence.topic,
                evidence.partition,
                evidence.offset,
                evidence.line,
                event if keep_event else None,
                None,
            )
            self._late(part, partition, rec, contribs, out, watermark)
        return out

    def advance_watermark(self, partition: int, event_time: datetime | float) -> list[Alert]:
        """Declare that ``partition`` has seen everything up to ``event_time``
        (e.g. wall clock when it is caught up and idle); returns what resolves."""
        t = event_time if isinstance(event_time, float | int) else _utc(event_time).timestamp()
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition(len(self.rules))
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
            self._resolve_pending(part, horizon, out, inclusive=True)
            part.frontier = max(part.frontier, part.max_t)
            self.stats.incomplete_windows = sum(
                1 for q in self._parts.values() for e in q.pending if not e[4].cancelled
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
            dropped = 0
            buffer = [e for e in part.buffer if e[0] <= limit]
            unordered = [e for e in part.unordered if e[0] <= limit]
            dropped += len(part.buffer) + len(part.unordered) - len(buffer) - len(unordered)
            part.buffer = deque(buffer)
            heapq.heapify(unordered)
            part.unordered = unordered
            for _, _, ri, gkey, p in part.pending:
                if not p.cancelled and p.start > limit:
                    p.cancelled = True
                    dropped += 1
                    st = part.groups[ri].get(gkey)
                    if st is not None and st.pend and st.pend.get(p.clause) is p:
                        del st.pend[p.clause]
                        if not st.pend:
                            st.pend = None
            held = max((e[0] for e in (*buffer, *unordered)), default=-math.inf)
            for ri, table in enumerate(part.groups):
                future = [k for k, st in table.items() if st.last_t > limit]
                for k in future:
                    del table[k]
                self._group_count[ri] -= len(future)
                dropped += len(future)
                held = max(held, max((st.last_t for st in table.values()), default=-math.inf))
                rule = self.rules[ri]
                if part.suppress[ri] and rule.suppress is not None:
                    window = rule.suppress.window
                    part.suppress[ri] = {
                        k: u for k, u in part.suppress[ri].items() if u - window <= limit
                    }
            self._groups_total = sum(self._group_count)
            was = part.max_t
            part.max_t = min(part.max_t, held)
            part.frontier = min(part.frontier, part.max_t - self._lateness)
            part.next_scan = min(part.next_scan, part.frontier + self._scan_every)
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

    def group_keys(self, hits: Iterable[str], event: dict[str, Any]) -> set[tuple[Any, ...]]:
        """The group keys (after aliases, normalized) under which the
        correlations reading these detection hits would file ``event``: what a
        repartitioned correlator hashes to pick the shard of each group.
        Pinned rules (``pinned_rules``) file it under ``PIN_KEY``."""
        keys: set[tuple[Any, ...]] = set()
        for hit in hits:
            for read_key, free, pin in self._shard_keys.get(hit, ()):
                key = read_key(event)
                if key is not None:
                    if free:
                        keys.add(key)
                    if pin:
                        keys.add(PIN_KEY)
        return keys

    def _late(
        self,
        part: _Partition,
        partition: int,
        rec: Rec,
        contribs: list[Contrib],
        out: list[Alert],
        watermark: float | None = None,
    ) -> None:
        self.stats.late_events += 1
        part.late_logged += 1
        if part.late_logged == 1 or part.late_logged % 1000 == 0:
            log.warning(
                "correlation_late_event",
                partition=partition,
                event_id=rec[0],
                behind_s=round((part.frontier if watermark is None else watermark) - rec[1], 3),
                late_in_partition=part.late_logged,
                applied=self.settings.late_events_update_windows,
            )
        if self.settings.late_events_update_windows:
            self.stats.late_applied += 1
            self._apply(part, rec[1], rec, contribs, out)

    def _release(self, part: _Partition, out: list[Alert], watermark: float | None = None) -> None:
        if watermark is None:
            wm = part.max_t - self._lateness
            if wm > part.frontier:
                part.frontier = wm
        else:
            wm = watermark
        buf = part.buffer
        unordered = part.unordered
        pending = part.pending
        while True:
            if unordered and (
                not buf
                or unordered[0][0] < buf[0][0]
                or (unordered[0][0] == buf[0][0] and unordered[0][1] < buf[0][1])
            ):
                if unordered[0][0] > wm:
                    break
                t, _, _, rec, contribs = heapq.heappop(unordered)
            elif buf and buf[0][0] <= wm:
                t, _, _, rec, contribs = buf.popleft()
            else:
                break
            if pending and pending[0][0] < t:
                self._resolve_pending(part, t, out)
            self._apply(part, t, rec, contribs, out)
        if pending and pending[0][0] < wm and watermark is None:
            self._resolve_pending(part, wm, out)
        if part.frontier >= part.next_scan and part.frontier > -math.inf:
            self._scan(part)

    def _apply(
        self, part: _Partition, t: float, rec: Rec, contribs: list[Contrib], out: list[Alert]
    ) -> None:
        specs = self._specs
        tables = part.groups
        for ri, s, key, value, carry in contribs:
            st = tables[ri].get(key)
            if st is None:
                count = self._group_count
                if count[ri] < self._max_groups and self._groups_total + 1 < self._memory_check_at:
                    # _new_group without the call: no cap reached, no check due
                    count[ri] += 1
                    self._groups_total += 1
                    st = tables[ri][key] = self._factory[ri]()
                else:
                    st = self._new_group(part, ri, key)
            span, check, mode, step = specs[ri]
            if not mode:
                if step(st, rec, t, value):  # type: ignore[misc]  # mode 0 has a step
                    recs = st.take()
                    self._fire(part, self.rules[ri], key, recs, recs[0][2], rec[2], t, carry, out)
            elif mode == 1:
                # _apply_temporal's first steps for a plain temporal rule; it
                # runs only when the rule holds (repeating them changes nothing).
                last = st.last
                old = last[s]
                if old is None or old[1] <= t:
                    last[s] = rec
                if t > st.last_t:
                    st.last_t = t
                floor = t - span
                metric = 0
                for r in last:
                    if r is not None and r[1] >= floor:
                        metric += 1
                if check(metric):
                    self._apply_temporal(part, self.rules[ri], st, key, s, rec, t, carry, out)
            else:
                self._apply_temporal(part, self.rules[ri], st, key, s, rec, t, carry, out)

    def _new_group(self, part: _Partition, ri: int, key: tuple[Any, ...]) -> Any:
        count = self._group_count
        if count[ri] >= self._max_groups:
            self._cap(ri)
        count[ri] += 1
        self._groups_total += 1
        if self._groups_total >= self._memory_check_at:
            self._check_memory()
        st = part.groups[ri][key] = self._factory[ri]()
        return st

    def _apply_temporal(
        self,
        part: _Partition,
        rule: CompiledCorrelation,
        st: TemporalWindow,
        key: tuple[Any, ...],
        s: int,
        rec: Rec,
        t: float,
        carry: dict[str, Any] | None,
        out: list[Alert],
    ) -> None:
        span = rule.span
        last = st.last
        old = last[s]
        if old is None or old[1] <= t:
            last[s] = rec
        if t > st.last_t:
            st.last_t = t
        floor = t - span
        if rule.clauses is None:
            if st.chains is not None:
                metric, chain = st.chains[0].add(s, t, rec, span)
                recs = list(chain[2])
            else:
                metric = 0
                for r in last:
                    if r is not None and r[1] >= floor:
                        metric += 1
                if not rule.check(metric):
                    return
                recs = [r for r in last if r is not None and r[1] >= floor]
            if st.chains is None or rule.check(metric):
                st.last = [None] * len(last)
                st.reset_chains()
                first = min(recs, key=lambda r: r[1])
                self._fire(part, rule, key, recs, first[2], rec[2], t, carry, out)
            return

        fired: list[Rec] | None = None
        for ci, clause in enumerate(rule.clauses):
            if s in clause.neg:
                p = st.pend.get(ci) if st.pend else None
                if p is not None and p.start <= t <= p.deadline:
                    p.cancelled = True
                    del st.pend[ci]  # type: ignore[union-attr]
                continue
            if s not in clause.pos:
                continue
            if clause.neg:
                p = st.pend.get(ci) if st.pend else None
                if p is not None and t <= p.deadline:
                    if len(p.recs) < self.settings.max_evidence_per_alert:
                        p.recs.append(rec)
                    p.carry = carry
                    continue
            if st.chains is not None:
                n, chain = st.chains[ci].add(clause.pos.index(s), t, rec, span)
                if n < len(clause.pos):
                    continue
                recs = list(chain[2])
                start = chain[0]
            else:
                recs = []
                for i in clause.pos:
                    r = last[i]
                    if r is None or r[1] < floor:
                        break
                    recs.append(r)
                if len(recs) < len(clause.pos):
                    continue
                start = min(r[1] for r in recs)
            if clause.neg:
                if any(last[i] is not None and last[i][1] >= start for i in clause.neg):  # type: ignore[index]
                    continue
                p = Pending(ci, start, start + span, recs, carry)
                if st.pend is None:
                    st.pend = {}
                st.pend[ci] = p
                heapq.heappush(part.pending, (p.deadline, next(self._seq), rule.index, key, p))
            elif fired is None:
                fired = recs
            else:
                fired.extend(r for r in recs if r not in fired)
        if fired:
            st.last = [None] * len(last)
            st.reset_chains()
            first = min(fired, key=lambda r: r[1])
            self._fire(part, rule, key, fired, first[2], rec[2], t, carry, out)

    def _resolve_pending(
        self, part: _Partition, upto: float, out: list[Alert], inclusive: bool = False
    ) -> None:
        """Fire absence windows whose deadline the applied events have passed."""
        pending = part.pending
        while pending and (pending[0][0] < upto or (inclusive and pending[0][0] <= upto)):
            deadline, _, ri, key, p = heapq.heappop(pending)
            if p.cancelled:
                continue
            rule = self.rules[ri]
            st = part.groups[ri].get(key)
            clause = rule.clauses[p.clause]  # type: ignore[index]
            if st is not None:
                if st.pend and st.pend.get(p.clause) is p:
                    del st.pend[p.clause]
                    if not st.pend:
                        st.pend = None
                for i in clause.pos:
                    st.last[i] = None
                if st.chains is not None:
                    st.chains[p.clause] = type(st.chains[p.clause])(len(clause.pos))
            first = min(p.recs, key=lambda r: r[1])
            end_dt = first[2] + timedelta(seconds=rule.span)
            self._fire(part, rule, key, p.recs, first[2], end_dt, deadline, p.carry, out)

    def _fire(
        self,
        part: _Partition,
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
        evidence = self._evidence(recs)
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
                    zone_crossing=_crossing(evidence),
                    origin=self.settings.origin,
                    evidence=evidence,
                )
            )
        if rule.parents:
            self._feed_parents(part, rule, aid, group, carry, recs, end_t, end, out)

    def _feed_parents(
        self,
        part: _Partition,
        rule: CompiledCorrelation,
        aid: str,
        group: dict[str, Any],
        carry: dict[str, Any] | None,
        recs: list[Rec],
        end_t: float,
        end: datetime,
        out: list[Alert],
    ) -> None:
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

    def _evidence(self, recs: list[Rec]) -> list[Evidence]:
        flat: dict[str, Rec] = {}
        stack = list(recs)
        while stack:
            rec = stack.pop()
            if rec[8] is not None:
                stack.extend(rec[8])
            elif rec[0] not in flat:
                flat[rec[0]] = rec
        ordered = sorted(flat.values(), key=lambda r: (r[1], r[0]))
        cap = self.settings.max_evidence_per_alert
        if len(ordered) > cap:
            ordered = ordered[: cap - cap // 2] + ordered[len(ordered) - cap // 2 :]
        return [
            Evidence(
                event_id=r[0],
                time=r[2],
                topic=r[3],
                partition=r[4],
                offset=r[5],
                line=r[6],
                event=r[7] if r[7] is not None else {},
            )
            for r in ordered
        ]

    # ----------------------------------------------------------- eviction

    def _scan(self, part: _Partition) -> None:
        """Drop groups no future on-time event can join, and stale suppressions."""
        wm = part.frontier
        part.next_scan = wm + self._scan_every
        for rule in self.rules:
            groups = part.groups[rule.index]
            cut = wm - rule.span
            if groups:
                if rule.type in TEMPORAL_TYPES:
                    keep = {k: st for k, st in groups.items() if st.last_t >= cut or st.pend}
                else:
                    keep = {k: st for k, st in groups.items() if st.last_t >= cut}
                removed = len(groups) - len(keep)
                if removed:
                    part.groups[rule.index] = keep
                    self._group_count[rule.index] -= removed
                    self._groups_total = sum(self._group_count)
                    self.stats.evicted_expired += removed
            table = part.suppress[rule.index]
            if table:
                part.suppress[rule.index] = {k: u for k, u in table.items() if u > wm}
        if sum(self._group_count) * self._bytes_per_group > self.settings.max_state_bytes // 2:
            self._check_memory()

    def _check_memory(self) -> None:
        cap = self.settings.max_state_bytes
        estimate = self.state_bytes_estimate()
        if estimate > cap:
            self._evict_oldest(None, estimate, cap * 9 // 10)
            estimate = self.state_bytes_estimate()
        # The next full estimate when new groups could have filled the room left.
        room = max(0, cap - estimate) // self._bytes_per_group
        self._memory_check_at = sum(self._group_count) + max(1, room)

    def state_bytes_estimate(self) -> int:
        """Bytes the state takes, roughly: groups, the records they hold and
        the lateness buffer's, and (``keep_event_in_evidence``) the event
        bodies of those records, each counted once however many groups share
        it, at the size of a sample of them."""
        groups = 0
        held = 0
        sample: list[Any] = []
        for part in self._parts.values():
            buffered = len(part.buffer) + len(part.unordered)
            held += buffered
            if self._keep_event and buffered:
                sample += [e[3][7] for e in itertools.islice(part.buffer, _BODY_SAMPLE)]
            for table in part.groups:
                groups += len(table)
                held += sum(st.held() for st in table.values())
                if self._keep_event and len(sample) < _BODY_SAMPLE:
                    sample += _bodies(itertools.islice(table.values(), 8))
        estimate = groups * GROUP_BYTES + held * REC_BYTES
        if self._keep_event and held:
            stats = self.stats
            shared = stats.contributions / stats.correlated_events if stats.contributions else 1.0
            estimate += int(held / max(1.0, shared) * _body_bytes(sample))
        if groups:
            self._bytes_per_group = max(GROUP_BYTES, estimate // groups)
        return estimate

    def _cap(self, ri: int) -> None:
        for part in self._parts.values():
            cut = part.frontier - self.rules[ri].span
            groups = part.groups[ri]
            keep = {
                k: st for k, st in groups.items() if st.last_t >= cut or getattr(st, "pend", None)
            }
            removed = len(groups) - len(keep)
            part.groups[ri] = keep
            self._group_count[ri] -= removed
            self._groups_total = sum(self._group_count)
            self.stats.evicted_expired += removed
        cap = self.settings.max_groups_per_rule
        if self._group_count[ri] >= cap:
            self.stats.cap_hits += 1
            evicted = self._evict_oldest(
                ri, self._group_count[ri], cap - max(1, cap // 10), count=True
            )
            log.warning(
                "correlation_group_cap_reached",
                rule_id=self.rules[ri].id,
                rule=self.rules[ri].title,
                cap=cap,
                evicted=evicted,
                hint="raise max_groups_per_rule or narrow the rule's group-by",
            )

    def shed(self, fraction: float) -> dict[str, int]:
        """Evict ``fraction`` of the groups, least recently updated first, for
        a caller that could not store the state (the stream loop, when DuckDB
        had no memory for it). Rules give in proportion to what they hold
        above a common level: the rules with the most groups (a flood of
        distinct sources) lose them, a rule with fewer groups than that level
        keeps all of its own (the slow chains that took hours to build).
        Returns the groups evicted per rule id; counted as ``evicted_store``."""
        counts = list(self._group_count)
        keep = sum(counts) - math.ceil(sum(counts) * fraction)
        # The highest level L with sum(min(c, L)) <= keep.
        lo, hi = 0, max(counts, default=0)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if sum(min(c, mid) for c in counts) <= keep:
                lo = mid
            else:
                hi = mid - 1
        evicted: dict[str, int] = {}
        for rule in self.rules:
            n = counts[rule.index]
            evicted[rule.id] = (
                self._evict_oldest(rule.index, n, lo, count=True, counter="evicted_store")
                if n > lo
                else 0
            )
        return evicted

    def _evict_oldest(
        self,
        ri: int | None,
        size: int,
        target: int,
        count: bool = False,
        counter: str = "evicted_cap",
    ) -> int:
        """Evict least recently updated groups (of one rule, or all) until the
        group count (count=True) or the byte estimate drops to ``target``;
        ``counter`` names the stat that counts them."""
        entries = []
        for part in self._parts.values():
            for idx, table in enumerate(part.groups):
                if ri is not None and idx != ri:
                    continue
                for k, st in table.items():
                    entries.append((st.last_t, idx, k, part))
        entries.sort(key=lambda e: e[0])
        per_group = 1 if count else max(1, size // max(1, len(entries)))
        evicted = 0
        for _last_t, idx, k, part in entries:
            if size <= target:
                break
            st = part.groups[idx].pop(k)
            for p in (getattr(st, "pend", None) or {}).values():
                p.cancelled = True  # its negative evidence would go with the state
            part.dirty = True
            self._group_count[idx] -= 1
            self._groups_total -= 1
            size -= per_group
            evicted += 1
        setattr(self.stats, counter, getattr(self.stats, counter) + evicted)
        if ri is None and evicted:
            self.stats.cap_hits += 1
            log.warning(
                "correlation_state_cap_reached",
                max_state_bytes=self.settings.max_state_bytes,
                evicted=evicted,
                hint="raise max_state_bytes or shorten timespans",
            )
        return evicted

    # ------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, Any]:
        """Counters and live gauges, for Prometheus and ``zonewatch correlate``."""
        data: dict[str, Any] = asdict(self.stats)
        data["groups"] = sum(self._group_count)
        data["groups_by_rule"] = {c.id: self._group_count[c.index] for c in self.rules}
        data["buffered_events"] = sum(
            len(p.buffer) + len(p.unordered) for p in self._parts.values()
        )
        data["open_absence_windows"] = sum(
            1 for p in self._parts.values() for e in p.pending if not e[4].cancelled
        )
        data["watermarks"] = {str(k): _iso_or_none(p.frontier) for k, p in self._parts.items()}
        return data

    # ----------------------------------------------------- snapshot/restore
    #
    # The rows are built and consumed by comprehensions, one step per group;
    # ``snapshot.py`` turns them into bytes (format 2, a pickle) and back, on
    # a binary file, so a large state is never one bytes object.
    # Format 1 (JSON, one dict per group) is still read, so a checkpoint
    # taken before an upgrade restores.

    def _dump_part(self, part: _Partition) -> tuple[Any, ...]:
        buffer = sorted((*part.buffer, *part.unordered), key=lambda e: (e[0], e[1], e[2]))
        pending = sorted(
            (e for e in part.pending if not e[4].cancelled), key=lambda e: (e[0], e[1])
        )
        groups = {ri: self._kinds[ri].rows(table) for ri, table in enumerate(part.groups) if table}
        suppress = {ri: table for ri, table in enumerate(part.suppress) if table}
        return (part.max_t, part.frontier, part.next_scan, buffer, pending, groups, suppress)

    def _load_part(self, hashes: list[str], state: tuple[Any, ...]) -> _Partition:
        max_t, frontier, next_scan, buffer, pending, groups, suppress = state
        index = {c.rule_hash: c.index for c in self.rules}
        remap = [index.get(h) for h in hashes]  # index in the snapshot -> here (None: gone)
        same = remap == list(range(len(self.rules)))
        part = _Partition(len(self.rules))
        part.max_t, part.frontier, part.next_scan = max_t, frontier, next_scan
        for old, rows in groups.items():
            ri = remap[old]
            if ri is None:
                continue  # the rule was removed or changed: its state goes
            table = part.groups[ri] = self._kinds[ri].from_rows(rows)
            self._group_count[ri] += len(table)
        self._groups_total = sum(self._group_count)
        seq = self._seq
        for deadline, _, old, key, p in pending:
            ri = remap[old]
            if ri is None:
                continue
            st = part.groups[ri].get(key)
            if st is None:  # evicted while its absence window stayed open
                st = part.groups[ri][key] = self._factory[ri]()
                self._group_count[ri] += 1
                self._groups_total += 1
            if st.pend is None:
                st.pend = {}
            st.pend[p.clause] = p
            # Fresh sequence numbers: this engine's counter is not the dumper's.
            heapq.heappush(part.pending, (deadline, next(seq), ri, key, p))
        fifo = part.buffer
        for t, eid, _, rec, contribs in buffer:  # dumped in order: all back to the FIFO
            if not same:
                contribs = [
                    (remap[ri], s, key, value, carry)
                    for ri, s, key, value, carry in contribs
                    if remap[ri] is not None
                ]
                if not contribs:
                    continue
            fifo.append((t, eid, next(seq), rec, contribs))
        for old, table in suppress.items():
            ri = remap[old]
            if ri is not None:
                part.suppress[ri] = table
        return part

    def _load_partition_v1(self, data: dict[str, Any]) -> _Partition:
        """A partition from format 1 (JSON): a checkpoint of the previous release."""
        index = {c.rule_hash: c.index for c in self.rules}
        part = _Partition(len(self.rules))
        part.max_t = data["max_t"] if data["max_t"] is not None else -math.inf
        part.frontier = data["frontier"] if data["frontier"] is not None else -math.inf
        part.next_scan = data["next_scan"] if data["next_scan"] is not None else -math.inf
        for h, entries in data["groups"].items():
            ri = index.get(h)
            if ri is None:
                continue  # the rule was removed or changed: its state goes
            load = self._kinds[ri].load
            table = part.groups[ri]
            for key, state in entries:
                table[_tuples(key)] = load(state)
            self._group_count[ri] += len(table)
            self._groups_total = sum(self._group_count)
        for h, key, pdata in data["pending"]:
            ri = index.get(h)
            if ri is None:
                continue
            key = _tuples(key)
            p = Pending.load(pdata)
            st = part.groups[ri].get(key)
            if st is None:
                st = part.groups[ri][key] = self._factory[ri]()
                self._group_count[ri] += 1
                self._groups_total = sum(self._group_count)
            if st.pend is None:
                st.pend = {}
            st.pend[p.clause] = p
            heapq.heappush(part.pending, (p.deadline, next(self._seq), ri, key, p))
        for t, eid, rec, contribs in data["buffer"]:
            kept = [
                (index[h], s, _tuples(key), _tuples(value), carry)
                for h, s, key, value, carry in contribs
                if h in index
            ]
            if kept:
                # Dumped in order, so every item goes back to the FIFO.
                part.buffer.append((t, eid, next(self._seq), load_rec(rec), kept))
        for h, entries in data["suppress"].items():
            ri = index.get(h)
            if ri is not None:
                part.suppress[ri] = {_tuples(k): u for k, u in entries}
        return part

    def _hashes(self) -> list[str]:
        return [c.rule_hash for c in self.rules]

    def _payload(self) -> dict[str, Any]:
        return {
            "version": SNAPSHOT_VERSION,
            "rules": self._hashes(),
            "partitions": {k: self._dump_part(p) for k, p in self._parts.items()},
            "stats": asdict(self.stats),
        }

    def snapshot(self) -> bytes:
        """The whole state as bytes (format 2): restore() continues identically.
        Raises pickle.PicklingError if the state holds a value restore() would
        refuse (see snapshot._Pickler)."""
        with no_gc():
            return snapshot_codec.encode(self._payload())

    def write_snapshot(self, out: BinaryIO) -> None:
        """``snapshot()`` written to ``out`` as it is pickled (frames of at
        most 64 KiB), never held whole: what the stream hands the store."""
        with no_gc():
            snapshot_codec.write(self._payload(), out)

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
        try:
            with no_gc():
                payload = snapshot_codec.decode(data, "correlation snapshot")
                if payload["version"] == 1:
                    for key, pdata in payload["partitions"].items():
                        engine._parts[int(key)] = engine._load_partition_v1(pdata)
                else:
                    for key, state in payload["partitions"].items():
                        engine._parts[key] = engine._load_part(payload["rules"], state)
            for name, value in payload.get("stats", {}).items():
                if hasattr(engine.stats, name):
                    setattr(engine.stats, name, value)
        except CorrelationStateError:
            raise
        except UNREADABLE as exc:
            raise CorrelationStateError(
                f"correlation snapshot is unreadable ({type(exc).__name__}: {exc}); "
                "start without it"
            ) from exc
        for part in engine._parts.values():
            part.dirty = True
        return engine

    def export_partition(self, partition: int) -> bytes | None:
        """State of one partition, and forget it: call on revocation and store
        the bytes where the next owner finds them (import_partition)."""
        part = self._parts.pop(partition, None)
        if part is None:
            return None
        for ri, table in enumerate(part.groups):
            self._group_count[ri] -= len(table)
        self._groups_total = sum(self._group_count)
        return self._partition_bytes(part)

    def import_partition(self, partition: int, data: bytes) -> None:
        """Take over a partition's state (on assignment)."""
        old = self._parts.pop(partition, None)
        if old is not None:
            for ri, table in enumerate(old.groups):
                self._group_count[ri] -= len(table)
            self._groups_total = sum(self._group_count)
        try:
            with no_gc():
                payload = snapshot_codec.decode(data, f"partition {partition} state")
                if payload["version"] == 1:
                    part = self._load_partition_v1(payload)
                else:
                    part = self._load_part(payload["rules"], payload["partition"])
        except CorrelationStateError:
            raise
        except UNREADABLE as exc:
            raise CorrelationStateError(
                f"partition {partition} state is unreadable ({type(exc).__name__}); start it empty"
            ) from exc
        part.dirty = True
        self._parts[partition] = part

    def _partition_bytes(self, part: _Partition) -> bytes:
        with no_gc():
            return snapshot_codec.encode(
                {
                    "version": SNAPSHOT_VERSION,
                    "rules": self._hashes(),
                    "partition": self._dump_part(part),
                }
            )

    def snapshot_partitions(self, only_changed: bool = True) -> dict[int, bytes]:
        """Per-partition state, by default only of partitions changed since
        the last call: store each under its own key in the checkpoint
        transaction, so a checkpoint costs what changed, not all the state."""
        out = {
            p: self._partition_bytes(part)
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
            return CorrelationEngine.restore(
                spool,
                rules,
                resolve or self._resolve,
                self.settings,
            )
