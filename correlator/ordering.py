"""Merge several Kafka partitions into one stream in event-time order (pure).

Correlations join events of different sources (an Intune compliance change
and a VDI login), which arrive on different topics. Kafka orders records only
within a partition, and a consumer catching up on a backlog fetches partitions
in chunks: it may read all of today's firewall log before the first VDI
event. Fed to the correlation engine in arrival order, the VDI events would
then look hours late and miss their windows.

So, like Kafka Streams' record selection, the stream loop buffers records per
input partition and releases them in event-time order, but only up to the
*frontier*: the smallest "newest event time seen" among inputs that are still
active. An input stops holding the others back (is idle) only once the
consumer knows it is read to its end (no fetch answer yet counts as unread)
and it has delivered nothing for a while: the idle rule of
``correlator/progress.py``, which the scale-out loop applies too.

Lateness is decided per input, in the input's own (offset) order, before
anything is merged: an event is late when it is older than the input's
newest event time so far less the allowed lateness (:func:`late_watermark`).
That verdict depends on the input and the stored state alone, never on how
polls cut the input or when the merge released what (``polled``, the wall
clock); and an on-time event is never behind what the merge has released,
as long as its input was active at every release. The one rule that cannot
be made so: an input that turned idle (read to its end and quiet) and then
receives an event older than the frontier (a live source that was silent)
finds the others gone ahead; the correlation engine counts it late.

When every input is idle, time moves the watermark on (absence windows must
close without new records), but from where the inputs stopped, not to the
wall clock (``progress.idle_progress``): a replay of a past day that pauses for a
moment (a busy producer, a slow relay) would otherwise jump the watermark days
ahead, and every later event of the replay would be late.

The buffer and each input's newest time are part of the checkpointed state:
offsets are committed past buffered records, and a restart must judge
lateness as the run before it would have.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from correlator.progress import IDLE_POLLS, IdleRule

T = TypeVar("T")


def late_watermark(newest: float, lateness: float) -> float:
    """An event of an input is late when its time is below this: the
    newest event time seen before it on the same input, less the allowed
    lateness (per source, so the caller passes it in)."""
    return newest - lateness


@dataclass
class _Input:
    newest: float = float("-inf")  # newest event time seen on this input
    assigned: bool = True  # revoked inputs keep their newest time, and wait for nothing
    buffered: int = 0
    last_arrival: float = 0.0  # wall clock (monotonic) of the last record
    quiet_polls: int = 0  # polls since the last record
    # The consumer knows of records beyond what it returned (or has had no
    # fetch answer yet): such an input is never idle, however long a poll
    # takes, or its backlog would arrive behind the others' watermark.
    behind: bool = False


@dataclass(order=True)
class _Entry(Generic[T]):
    time: float
    seq: int
    source: Hashable = field(compare=False)
    item: T = field(compare=False)


class EventTimeMerger(Generic[T]):
    """Buffers items per input; :meth:`release` yields them in event-time order."""

    def __init__(
        self,
        idle_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        idle_polls: int = IDLE_POLLS,
        rule_of: Callable[[Hashable], IdleRule] | None = None,
        hold: Callable[[Hashable, float, float, bool], float | None] | None = None,
    ):
        """``rule_of`` gives an input's idle rule (``ProgressPolicy.rule`` of
        its source); by default every input has ``idle_s`` and ``idle_polls``.
        ``hold(input, newest, quiet_for, empty)``: where an input still holds the
        frontier (a source's delivery delay, correlation/clock.py
        SourceClock.idle_hold); None: it holds nothing once idle."""
        default = IdleRule(idle_s, idle_polls)
        self.rule_of: Callable[[Hashable], IdleRule] = rule_of or (lambda _source: default)
        self.hold = hold
        self.clock = clock
        self._inputs: dict[Hashable, _Input] = {}
        self._heap: list[_Entry[T]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, source: Hashable, event_time: float, item: T) -> None:
        state = self._inputs.get(source)
        if state is None:
            state = self._inputs[source] = _Input()
        state.newest = max(state.newest, event_time)
        state.buffered += 1
        state.last_arrival = self.clock()
        state.quiet_polls = 0
        heapq.heappush(self._heap, _Entry(event_time, next(self._seq), source, item))

    def observe(self, source: Hashable, newest: float) -> None:
        """The input delivered records up to event time ``newest`` (all of
        them, not only those added): its part of the frontier moves on."""
        state = self._inputs.get(source)
        if state is None:
            state = self._inputs[source] = _Input()
        if newest > state.newest:
            state.newest = newest
        state.last_arrival = self.clock()
        state.quiet_polls = 0

    def newest(self, source: Hashable) -> float:
        """The newest event time the input has delivered (-inf: nothing yet)."""
        state = self._inputs.get(source)
        return state.newest if state is not None else float("-inf")

    def polled(
        self, delivered: Iterable[Hashable] = (), behind: Iterable[Hashable] | None = None
    ) -> None:
        """One consumer poll ended; inputs not in ``delivered`` were quiet.

        ``behind``, when given, names the inputs with records the consumer has
        not returned yet; the others are caught up. Without it (no lag
        information) idleness is decided by polls and wall time alone."""
        got = set(delivered)
        lagging = None if behind is None else set(behind)
        for source, state in self._inputs.items():
            if source not in got:
                state.quiet_polls += 1
            state.behind = False if lagging is None else source in lagging

    def _active(self, source: Hashable, state: _Input, now: float) -> bool:
        return state.assigned and not self.rule_of(source).idle(
            quiet_s=now - state.last_arrival,
            quiet_polls=state.quiet_polls,
            behind=state.behind,
            buffered=state.buffered,
        )

    def expect(self, source: Hashable) -> None:
        """An input was assigned: until the consumer reports it caught up (see
        :meth:`polled`), or it delivers and turns idle, nothing newer than
        what it may hold is released."""
        state = self._inputs.get(source)
        if state is None:
            state = self._inputs[source] = _Input(last_arrival=self.clock())
        state.assigned = True
        state.behind = True

    def forget(self, source: Hashable) -> None:
        """An input went away (partition revoked): stop waiting for it. Its
        newest time stays: if it comes back, lateness is judged as before."""
        state = self._inputs.get(source)
        if state is not None:
            state.assigned = False
            state.behind = False

    def frontier(self) -> float:
        """Event time up to which every active input has been read."""
        now = self.clock()
        active = [s.newest for k, s in self._inputs.items() if self._active(k, s, now)]
        if self.hold is not None:
            # An input that has delivered nothing yet holds from the furthest
            # any input has read (it is no older than the others' present).
            furthest = max((s.newest for s in self._inputs.values()), default=float("-inf"))
            for key, s in self._inputs.items():
                base = s.newest if s.newest != float("-inf") else furthest
                if s.assigned and base != float("-inf"):
                    empty = s.newest == float("-inf")
                    held = self.hold(key, base, now - s.last_arrival, empty)
                    if held is not None:
                        active.append(held)
        return min(active) if active else float("inf")

    def idle_frontier(self) -> float:
        """Where time alone moves the frontier once every input is idle
        (``frontier()`` is infinite): the furthest
        :meth:`IdleRule.progress` of any input; -inf when nothing was read."""
        now = self.clock()
        return max(
            (
                self.rule_of(k).progress(s.newest, now - s.last_arrival)
                for k, s in self._inputs.items()
                if s.newest != float("-inf")
            ),
            default=float("-inf"),
        )

    def release(self) -> list[T]:
        """Items no active input can precede any more, oldest first."""
        limit = self.frontier()
        out: list[T] = []
        while self._heap and self._heap[0].time <= limit:
            entry = heapq.heappop(self._heap)
            state = self._inputs.get(entry.source)
            if state is not None:
                state.buffered -= 1
            out.append(entry.item)
            if state is not None and state.buffered == 0 and entry.time >= limit:
                # The input that defined the frontier is empty now; recompute,
                # it may have been the only one holding the others back.
                limit = self.frontier()
        return out

    def drain(self) -> list[T]:
        """Everything, oldest first (end of a finite input)."""
        out = [heapq.heappop(self._heap).item for _ in range(len(self._heap))]
        for state in self._inputs.values():
            state.buffered = 0
        return out

    def snapshot(self, encode: Callable[[T], Any]) -> list[tuple[Any, float, Any]]:
        return [(e.source, e.time, encode(e.item)) for e in sorted(self._heap)]

    def restore(
        self,
        rows: list[tuple[Any, float, Any]],
        decode: Callable[[Any], T],
        limit: float = float("inf"),
    ) -> int:
        """Put back a snapshot's buffer; items stamped after ``limit`` are
        dropped (see ``restore_progress``). Returns how many were dropped."""
        dropped = 0
        for source, event_time, payload in rows:
            if event_time > limit:
                dropped += 1
                continue
            key = tuple(source) if isinstance(source, list) else source
            self.add(key, event_time, decode(payload))
        return dropped

    def progress(self) -> list[tuple[Any, float]]:
        """Each input's newest event time, for the checkpoint."""
        return [(s, i.newest) for s, i in self._inputs.items() if i.newest != float("-inf")]

    def restore_progress(self, rows: list[tuple[Any, float]], limit: float = float("inf")) -> int:
        """Put back ``progress()``. A time after ``limit`` (a state written
        before event times were bounded, holding year 9999) is not restored:
        it would make every later event of its input late. Returns how many
        inputs were cut back so."""
        cut = 0
        for source, newest in rows:
            key = tuple(source) if isinstance(source, list) else source
            if newest > limit:
                cut += 1
                continue
            state = self._inputs.get(key)
            if state is None:
                # Quiet since now, not since the clock's epoch.
                state = self._inputs[key] = _Input(last_arrival=self.clock())
            state.newest = max(state.newest, float(newest))
        return cut
