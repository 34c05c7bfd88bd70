"""Per-group window state, one class per kind of metric (pure, no I/O).

Events reach a window in event-time order (the engine's watermark sees to
that), so a window is a list sorted by time that is cut at ``t - span`` as
each event arrives: a sliding window [t - span, t], both ends inclusive,
anchored at every event. Each class holds only what its metric needs:

- CountWindow: the evidence records (event_count).
- DistinctWindow: records, their values and a value -> multiplicity map
  (value_count).
- SumWindow: records, values and the running sum (value_sum, value_avg).
- QuantileWindow: records, values and the same values kept sorted
  (value_percentile, value_median); exact, bounded by the window.
- TemporalWindow: the last record per referenced rule, the best ordered
  chains (temporal_ordered) and the open absence windows.

A record is the tuple ``(event_id, t, time, topic, partition, offset, line,
event, children)`` with ``t`` in epoch seconds; ``children`` holds the
records of a correlation alert fed into a chain.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from datetime import datetime
from operator import itemgetter
from typing import Any

from correlator.correlation.records import CHILDREN, TIME, Rec, T

_time = itemgetter(T)


def load_rec(data: list[Any]) -> Rec:
    """A record back from its JSON form (times as RFC 3339, tuples as lists)."""
    rec = list(data)
    rec[TIME] = datetime.fromisoformat(data[TIME])
    children = data[CHILDREN]
    rec[CHILDREN] = tuple(load_rec(c) for c in children) if children is not None else None
    return tuple(rec)


def _load_recs(data: list[Any]) -> list[Rec]:
    return [load_rec(r) for r in data]


def _cut(recs: list[Rec], cut: float) -> int:
    """Number of leading records older than ``cut`` (usually 0 or 1)."""
    n = 0
    size = len(recs)
    while n < size and recs[n][T] < cut:
        n += 1
    return n


def _insert_at(recs: list[Rec], t: float) -> int:
    """Where a record of time t goes; past the end in the in-order case."""
    if not recs or recs[-1][T] <= t:
        return len(recs)
    return bisect_right(recs, t, key=_time)


class CountWindow:
    __slots__ = ("last_t", "recs")

    def __init__(self) -> None:
        self.recs: list[Rec] = []
        self.last_t = -math.inf

    def add(self, rec: Rec, t: float, value: Any, span: float) -> float:
        recs = self.recs
        if recs:
            if recs[0][T] < t - span:
                del recs[: _cut(recs, t - span)]
            if recs and recs[-1][T] > t:
                recs.insert(_insert_at(recs, t), rec)
            else:
                recs.append(rec)
        else:
            recs.append(rec)
        if t > self.last_t:
            self.last_t = t
        return len(recs)

    def take(self) -> list[Rec]:
        recs = self.recs
        self.recs = []
        return recs

    def held(self) -> int:
        return len(self.recs)

    def dump(self) -> dict[str, Any]:
        return {"r": self.recs, "l": self.last_t}

    @classmethod
    def load(cls, data: dict[str, Any]) -> CountWindow:
        w = cls()
        w.recs = _load_recs(data["r"])
        w.last_t = data["l"]
        return w

    @staticmethod
    def rows(table: dict[Any, Any]) -> list[Any]:
        """A table of windows as plain rows (snapshot format 2, pickled)."""
        return [(k, w.recs, w.last_t) for k, w in table.items()]

    @classmethod
    def from_rows(cls, rows: list[Any]) -> dict[Any, Any]:
        new = cls.__new__
        table = {}
        for k, recs, last_t in rows:
            w = table[k] = new(cls)
            w.recs = recs
            w.last_t = last_t
        return table


class _ValuedWindow:
    """Records with one value each, kept in two aligned lists."""

    __slots__ = ("last_t", "recs", "vals")

    def __init__(self) -> None:
        self.recs: list[Rec] = []
        self.vals: list[Any] = []
        self.last_t = -math.inf

    def _drop(self, values: list[Any]) -> None:
        """Forget values leaving the window (subclasses keep aggregates)."""

    def _keep(self, value: Any) -> None:
        """Account for a value entering the window."""

    def metric(self) -> float | None:
        raise NotImplementedError

    def add(self, rec: Rec, t: float, value: Any, span: float) -> float | None:
        recs = self.recs
        if recs and recs[0][T] < t - span:
            n = _cut(recs, t - span)
            self._drop(self.vals[:n])
            del recs[:n]
            del self.vals[:n]
        if recs and recs[-1][T] > t:
            at = _insert_at(recs, t)
            recs.insert(at, rec)
            self.vals.insert(at, value)
        else:
            recs.append(rec)
            self.vals.append(value)
        self._keep(value)
        if t > self.last_t:
            self.last_t = t
        return self.metric()

    def take(self) -> list[Rec]:
        recs = self.recs
        self.recs = []
        self.vals = []
        self._reset()
        return recs

    def _reset(self) -> None:
        pass

    def held(self) -> int:
        return len(self.recs)

    def dump(self) -> dict[str, Any]:
        return {"r": self.recs, "v": self.vals, "l": self.last_t}

    @classmethod
    def load(cls, data: dict[str, Any]) -> Any:
        w = cls()
        w.last_t = data["l"]
        w.recs = _load_recs(data["r"])
        w.vals = [tuple(v) if isinstance(v, list) else v for v in data["v"]]
        for value in w.vals:
            w._keep(value)
        return w


class DistinctWindow(_ValuedWindow):
    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.recs: list[Rec] = []
        self.vals: list[Any] = []
        self.last_t = -math.inf
        self.counts: dict[Any, int] = {}

    def _drop(self, values: list[Any]) -> None:
        counts = self.counts
        for value in values:
            left = counts[value] - 1
            if left:
                counts[value] = left
            else:
                del counts[value]

    def _keep(self, value: Any) -> None:
        self.counts[value] = self.counts.get(value, 0) + 1

    def _reset(self) -> None:
        self.counts = {}

    def metric(self) -> float:
        return len(self.counts)

    @staticmethod
    def rows(table: dict[Any, Any]) -> list[Any]:
        return [(k, w.recs, w.vals, w.last_t, w.counts) for k, w in table.items()]

    @classmethod
    def from_rows(cls, rows: list[Any]) -> dict[Any, Any]:
        new = cls.__new__
        table = {}
        for k, recs, vals, last_t, counts in rows:
            w = table[k] = new(cls)
            w.recs = recs
            w.vals = vals
            w.last_t = last_t
            w.counts = counts
        return table


class SumWindow(_ValuedWindow):
    __slots__ = ("total",)

    def __init__(self) -> None:
        self.recs: list[Rec] = []
        self.vals: list[Any] = []
        self.last_t = -math.inf
        self.total: float = 0

    def _drop(self, values: list[Any]) -> None:
        # A window emptied by the cut restarts from an exact zero, so float
        # rounding never accumulates across windows.
        if len(values) == len(self.vals):
            self.total = 0
        else:
            self.total -= sum(values)

    def _keep(self, value: Any) -> None:
        self.total += value

    def _reset(self) -> None:
        self.total = 0

    @staticmethod
    def rows(table: dict[Any, Any]) -> list[Any]:
        # The running total as it is: summing again could round differently.
        return [(k, w.recs, w.vals, w.last_t, w.total) for k, w in table.items()]

    @classmethod
    def from_rows(cls, rows: list[Any]) -> dict[Any, Any]:
        new = cls.__new__
        table = {}
        for k, recs, vals, last_t, total in rows:
            w = table[k] = new(cls)
            w.recs = recs
            w.vals = vals
            w.last_t = last_t
            w.total = total
        return table

    def metric(self) -> float | None:
        return self.total


class AvgWindow(SumWindow):
    __slots__ = ()

    def metric(self) -> float | None:
        return self.total / len(self.vals) if self.vals else None


class QuantileWindow(_ValuedWindow):
    __slots__ = ("fraction", "ordered")

    def __init__(self, percentile: float = 50.0) -> None:
        super().__init__()
        self.ordered: list[float] = []
        self.fraction = percentile / 100.0

    def _drop(self, values: list[Any]) -> None:
        ordered = self.ordered
        for value in values:
            del ordered[bisect_left(ordered, value)]

    def _keep(self, value: Any) -> None:
        insort(self.ordered, value)

    def _reset(self) -> None:
        self.ordered = []

    def metric(self) -> float | None:
        ordered = self.ordered
        if not ordered:
            return None
        # Linear interpolation between closest ranks, as SQL's PERCENTILE_CONT.
        pos = (len(ordered) - 1) * self.fraction
        low = int(pos)
        frac = pos - low
        if frac == 0 or low + 1 >= len(ordered):
            return ordered[low]
        return ordered[low] + (ordered[low + 1] - ordered[low]) * frac

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["q"] = self.fraction * 100.0
        return data

    @classmethod
    def load(cls, data: dict[str, Any]) -> QuantileWindow:
        w = cls(data["q"])
        w.last_t = data["l"]
        w.recs = _load_recs(data["r"])
        w.vals = data["v"]
        w.ordered = sorted(w.vals)
        return w

    @staticmethod
    def rows(table: dict[Any, Any]) -> list[Any]:
        return [(k, w.recs, w.vals, w.last_t, w.ordered, w.fraction) for k, w in table.items()]

    @classmethod
    def from_rows(cls, rows: list[Any]) -> dict[Any, Any]:
        new = cls.__new__
        table = {}
        for k, recs, vals, last_t, ordered, fraction in rows:
            w = table[k] = new(cls)
            w.recs = recs
            w.vals = vals
            w.last_t = last_t
            w.ordered = ordered
            w.fraction = fraction
        return table


class Pending:
    """An absence window: positive rules seen at ``start``; alert at
    ``deadline`` unless an absent rule's event falls in [start, deadline]."""

    __slots__ = ("cancelled", "carry", "clause", "deadline", "recs", "start")

    def __init__(
        self, clause: int, start: float, deadline: float, recs: list[Rec], carry: Any
    ) -> None:
        self.clause = clause
        self.start = start
        self.deadline = deadline
        self.recs = recs
        self.carry = carry
        self.cancelled = False

    def dump(self) -> list[Any]:
        return [self.clause, self.start, self.deadline, self.recs, self.carry, self.cancelled]

    @classmethod
    def load(cls, data: list[Any]) -> Pending:
        p = cls(data[0], data[1], data[2], _load_recs(data[3]), data[4])
        p.cancelled = data[5]
        return p

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled once per absence window and shared by its group and the
        # engine's deadline heap (pickle keeps the identity).
        return _pending, (
            self.clause,
            self.start,
            self.deadline,
            self.recs,
            self.carry,
            self.cancelled,
        )


def _pending(
    clause: int, start: float, deadline: float, recs: list[Rec], carry: Any, cancelled: bool
) -> Pending:
    p = Pending(clause, start, deadline, recs, carry)
    p.cancelled = cancelled
    return p


Chain = tuple[float, float, tuple[Rec, ...]]  # (start, last time, records in order)


class OrderedChains:
    """Best in-order chains over a sequence of rules (temporal_ordered).

    ``best[p][c]`` is the chain of ``c + 1`` distinct rules in sequence order
    ending with the rule at position ``p`` that starts latest: the latest
    start leaves the most room for the rest of the sequence, so one chain per
    (position, length) is enough to decide every later window exactly.
    """

    __slots__ = ("best",)

    def __init__(self, size: int) -> None:
        self.best: list[list[Chain | None]] = [[None] * (p + 1) for p in range(size)]

    def add(self, p: int, t: float, rec: Rec, span: float) -> tuple[int, Chain]:
        """Record an event of the rule at position p; return the longest chain
        ending with it (length, chain). Ties in time are not an order."""
        best = self.best
        floor = t - span
        new: list[Chain | None] = [None] * (p + 1)
        new[0] = (t, t, (rec,))
        length = 1
        for c in range(1, p + 1):
            pick: Chain | None = None
            for i in range(c - 1, p):
                ch = best[i][c - 1]
                if (
                    ch is not None
                    and ch[1] < t
                    and ch[0] >= floor
                    and (pick is None or ch[0] > pick[0])
                ):
                    pick = ch
            if pick is None:
                break
            new[c] = (pick[0], t, (*pick[2], rec))
            length = c + 1
        row = best[p]
        for c in range(length):
            old = row[c]
            cand = new[c]
            if old is None or old[0] < floor or (cand is not None and cand[0] >= old[0]):
                row[c] = cand
        chain = new[length - 1]
        assert chain is not None
        return length, chain

    def dump(self) -> list[Any]:
        return self.best

    @classmethod
    def load(cls, data: list[Any]) -> OrderedChains:
        oc = cls(0)
        oc.best = [
            [(c[0], c[1], tuple(load_rec(r) for r in c[2])) if c is not None else None for c in row]
            for row in data
        ]
        return oc


class TemporalWindow:
    """State of temporal and temporal_ordered rules for one group."""

    __slots__ = ("chains", "last", "last_t", "pend")

    def __init__(self, slots: int, sequences: list[int] | None) -> None:
        self.last: list[Rec | None] = [None] * slots
        # One OrderedChains per ordered sequence (the rules list, or each
        # clause's present rules); None for unordered rules.
        self.chains: list[OrderedChains] | None = (
            [OrderedChains(n) for n in sequences] if sequences is not None else None
        )
        self.pend: dict[int, Pending] | None = None
        self.last_t = -math.inf

    def held(self) -> int:
        n = sum(1 for rec in self.last if rec is not None)
        if self.pend:
            n += sum(len(p.recs) for p in self.pend.values())
        return n

    def reset_chains(self) -> None:
        if self.chains is not None:
            self.chains = [OrderedChains(len(c.best)) for c in self.chains]

    def dump(self) -> dict[str, Any]:
        return {
            "s": self.last,
            "c": [c.dump() for c in self.chains] if self.chains is not None else None,
            "p": {str(k): p.dump() for k, p in self.pend.items()} if self.pend else None,
            "l": self.last_t,
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> TemporalWindow:
        w = cls(0, None)
        w.last = [load_rec(r) if r is not None else None for r in data["s"]]
        w.chains = [OrderedChains.load(c) for c in data["c"]] if data["c"] is not None else None
        w.pend = {int(k): Pending.load(p) for k, p in data["p"].items()} if data["p"] else None
        w.last_t = data["l"]
        return w

    @staticmethod
    def rows(table: dict[Any, Any]) -> list[Any]:
        return [
            (
                k,
                w.last,
                [c.best for c in w.chains] if w.chains is not None else None,
                w.pend,
                w.last_t,
            )
            for k, w in table.items()
        ]

    @classmethod
    def from_rows(cls, rows: list[Any]) -> dict[Any, Any]:
        new = cls.__new__
        chains_new = OrderedChains.__new__
        table = {}
        for k, last, chains, pend, last_t in rows:
            w = table[k] = new(cls)
            w.last = last
            if chains is None:
                w.chains = None
            else:
                w.chains = []
                for best in chains:
                    oc = chains_new(OrderedChains)
                    oc.best = best
                    w.chains.append(oc)
            w.pend = pend
            w.last_t = last_t
        return table
