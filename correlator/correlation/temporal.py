"""Temporal correlations (temporal, temporal_ordered, extended conditions):
one event applied to a group's ``TemporalWindow``, and the absence windows
(``a and not b``) resolved as the watermark passes their deadlines (pure).

``TemporalPath`` fires through the engine's ``fire`` (suppression, alerts,
chains), so a temporal rule fires exactly as a metric rule does.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from correlator.correlation.compiled import CompiledCorrelation
from correlator.correlation.partition import Partition
from correlator.correlation.records import P_DEADLINE, TIME, Rec, T
from correlator.correlation.windows import Pending, TemporalWindow
from zonewatch.models import Alert

# engine._fire: (part, rule, key, recs, start, end, end_t, carry, out)
Fire = Callable[
    [
        Partition,
        CompiledCorrelation,
        tuple[Any, ...],
        list[Rec],
        datetime,
        datetime,
        float,
        dict[str, Any] | None,
        list[Alert],
    ],
    None,
]


class TemporalPath:
    """Applies events to temporal windows and fires through ``fire``."""

    def __init__(
        self,
        rules: Sequence[CompiledCorrelation],
        max_evidence: int,
        seq: itertools.count[int],
        fire: Fire,
    ) -> None:
        self.rules = rules
        self.max_evidence = max_evidence  # records an open absence window keeps
        self.seq = seq  # the engine's: heap entries stay unique
        self.fire = fire

    def apply(
        self,
        part: Partition,
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
        if old is None or old[T] <= t:
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
                    if r is not None and r[T] >= floor:
                        metric += 1
                if not rule.check(metric):
                    return
                recs = [r for r in last if r is not None and r[T] >= floor]
            if st.chains is None or rule.check(metric):
                st.last = [None] * len(last)
                st.reset_chains()
                first = min(recs, key=lambda r: r[T])
                self.fire(part, rule, key, recs, first[TIME], rec[TIME], t, carry, out)
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
                    if len(p.recs) < self.max_evidence:
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
                    if r is None or r[T] < floor:
                        break
                    recs.append(r)
                if len(recs) < len(clause.pos):
                    continue
                start = min(r[T] for r in recs)
            if clause.neg:
                if any(last[i] is not None and last[i][T] >= start for i in clause.neg):  # type: ignore[index]
                    continue
                p = Pending(ci, start, start + span, recs, carry)
                if st.pend is None:
                    st.pend = {}
                st.pend[ci] = p
                heapq.heappush(part.pending, (p.deadline, next(self.seq), rule.index, key, p))
            elif fired is None:
                fired = recs
            else:
                fired.extend(r for r in recs if r not in fired)
        if fired:
            st.last = [None] * len(last)
            st.reset_chains()
            first = min(fired, key=lambda r: r[T])
            self.fire(part, rule, key, fired, first[TIME], rec[TIME], t, carry, out)

    def resolve_pending(
        self, part: Partition, upto: float, out: list[Alert], inclusive: bool = False
    ) -> None:
        """Fire absence windows whose deadline the applied events have passed."""
        pending = part.pending
        while pending and (
            pending[0][P_DEADLINE] < upto or (inclusive and pending[0][P_DEADLINE] <= upto)
        ):
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
            first = min(p.recs, key=lambda r: r[T])
            end_dt = first[TIME] + timedelta(seconds=rule.span)
            self.fire(part, rule, key, p.recs, first[TIME], end_dt, deadline, p.carry, out)
