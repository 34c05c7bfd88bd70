"""What keeps the correlation state bounded (pure).

``Eviction`` counts the live groups per rule and removes groups three ways:
expired ones no on-time event can join any more (``scan``, as the frontier
moves), the least recently updated at a rule's group cap (``cap``) or at the
state's byte cap (``check_memory``), and a share of all on request when the
store could not write the state (``shed``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from correlator.correlation.compiled import TEMPORAL_TYPES, CompiledCorrelation
from correlator.correlation.partition import Partition
from correlator.correlation.records import EVENT, I_REC
from correlator.correlation.settings import CorrelationSettings
from zonewatch.logs import get_logger

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


def _bodies(windows: Iterable[Any]) -> list[Any]:
    """Event bodies held by some windows (the last record of each)."""
    out = []
    for st in windows:
        recs = getattr(st, "recs", None) or getattr(st, "last", None) or ()
        for rec in reversed(recs):
            if rec is not None and rec[EVENT] is not None:
                out.append(rec[EVENT])
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


class Eviction:
    """Group counts and the sweeps; see the module docstring. The engine's
    hot path reads ``count``, ``total`` and ``check_at`` directly."""

    def __init__(
        self,
        rules: Sequence[CompiledCorrelation],
        settings: CorrelationSettings,
        stats: Any,
        parts: dict[int, Partition],
    ) -> None:
        self.rules = rules
        self.settings = settings
        self.stats = stats
        self.parts = parts  # the engine's, shared
        self.keep_event = settings.keep_event_in_evidence
        self.count = [0] * len(rules)  # live groups per rule index
        self.total = 0  # sum(count), kept for the hot path
        self.scan_every = max(1.0, min((c.span for c in rules), default=2.0) / 2)
        # Windows stay this much longer, for late events (late_horizon_s).
        self.keep_late = settings.late_horizon_s
        # What a group costs, bodies included (learned by each estimate): the
        # checks of the state cap are scheduled with it.
        self.bytes_per_group = GROUP_BYTES + REC_BYTES + (_BODY_GUESS if self.keep_event else 0)
        self.check_at = settings.max_state_bytes // (2 * self.bytes_per_group)

    def admit(self, ri: int) -> None:
        """Room for one more group of rule ``ri``: evicts at the caps."""
        count = self.count
        if count[ri] >= self.settings.max_groups_per_rule:
            self.cap(ri)
        count[ri] += 1
        self.total += 1
        if self.total >= self.check_at:
            self.check_memory()

    def added(self, part: Partition) -> None:
        """Count the groups of a partition taken in (restore, import)."""
        for ri, table in enumerate(part.groups):
            self.count[ri] += len(table)
        self.total = sum(self.count)

    def removed(self, part: Partition) -> None:
        """Forget the groups of a partition handed away (export)."""
        for ri, table in enumerate(part.groups):
            self.count[ri] -= len(table)
        self.total = sum(self.count)

    def drop(self, ri: int, n: int) -> None:
        self.count[ri] -= n
        self.total -= n

    # ------------------------------------------------------------- sweeps

    def scan(self, part: Partition) -> None:
        """Drop groups no future on-time event can join, and stale suppressions."""
        wm = part.frontier
        part.next_scan = wm + self.scan_every
        for rule in self.rules:
            groups = part.groups[rule.index]
            cut = wm - rule.span - self.keep_late
            if groups:
                if rule.type in TEMPORAL_TYPES:
                    keep = {k: st for k, st in groups.items() if st.last_t >= cut or st.pend}
                else:
                    keep = {k: st for k, st in groups.items() if st.last_t >= cut}
                removed = len(groups) - len(keep)
                if removed:
                    part.groups[rule.index] = keep
                    self.drop(rule.index, removed)
                    self.stats.evicted_expired += removed
            table = part.suppress[rule.index]
            if table:
                part.suppress[rule.index] = {k: u for k, u in table.items() if u > wm}
        if self.total * self.bytes_per_group > self.settings.max_state_bytes // 2:
            self.check_memory()

    def check_memory(self) -> None:
        cap = self.settings.max_state_bytes
        estimate = self.state_bytes_estimate()
        if estimate > cap:
            self.evict_oldest(None, estimate, cap * 9 // 10)
            estimate = self.state_bytes_estimate()
        # The next full estimate when new groups could have filled the room left.
        room = max(0, cap - estimate) // self.bytes_per_group
        self.check_at = self.total + max(1, room)

    def state_bytes_estimate(self) -> int:
        """Bytes the state takes, roughly: groups, the records they hold and
        the lateness buffer's, and (``keep_event_in_evidence``) the event
        bodies of those records, each counted once however many groups share
        it, at the size of a sample of them."""
        groups = 0
        held = 0
        sample: list[Any] = []
        for part in self.parts.values():
            buffered = len(part)
            held += buffered
            if self.keep_event and buffered:
                sample += [e[I_REC][EVENT] for e in itertools.islice(part.buffer, _BODY_SAMPLE)]
            for table in part.groups:
                groups += len(table)
                held += sum(st.held() for st in table.values())
                if self.keep_event and len(sample) < _BODY_SAMPLE:
                    sample += _bodies(itertools.islice(table.values(), 8))
        estimate = groups * GROUP_BYTES + held * REC_BYTES
        if self.keep_event and held:
            stats = self.stats
            shared = stats.contributions / stats.correlated_events if stats.contributions else 1.0
            estimate += int(held / max(1.0, shared) * _body_bytes(sample))
        if groups:
            self.bytes_per_group = max(GROUP_BYTES, estimate // groups)
        return estimate

    def cap(self, ri: int) -> None:
        for part in self.parts.values():
            cut = part.frontier - self.rules[ri].span
            groups = part.groups[ri]
            keep = {
                k: st for k, st in groups.items() if st.last_t >= cut or getattr(st, "pend", None)
            }
            removed = len(groups) - len(keep)
            part.groups[ri] = keep
            self.drop(ri, removed)
            self.stats.evicted_expired += removed
        cap = self.settings.max_groups_per_rule
        if self.count[ri] >= cap:
            self.stats.cap_hits += 1
            evicted = self.evict_oldest(ri, self.count[ri], cap - max(1, cap // 10), count=True)
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
        counts = list(self.count)
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
                self.evict_oldest(rule.index, n, lo, count=True, counter="evicted_store")
                if n > lo
                else 0
            )
        return evicted

    def evict_oldest(
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
        for part in self.parts.values():
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
            self.drop(idx, 1)
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
