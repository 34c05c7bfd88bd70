"""The event clock of one input partition and its lateness buffer (pure).

The watermark trails the newest event time seen by ``allowed_lateness_s``.
An event waits here until the watermark passes it and is then released in
(time, event id) order, so arrival order within the lateness never changes
what the engine computes. An event behind the frontier (everything at or
before it has been released) is late: the engine decides what to do with it.

Arrivals in order go to a FIFO (O(1)); the few out of order go to a heap;
``pop_due`` merges both. ``snapshot()`` / ``restore()`` give the clock and
the waiting items as plain rows (``snapshot.py`` writes them).

``SourceClock`` is the stream's side: allowed lateness and delivery delay per
source (``correlator.sources``), which inputs are late and where a quiet one
holds the watermark.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from correlator.correlation.records import I_ID, I_T, Contrib, Item, Rec
from correlator.correlation.settings import CorrelationSettings

if TYPE_CHECKING:
    from zonewatch.config import CorrelatorSettings

ClockRows = tuple[float, float, float, list[Item]]


class LatenessBuffer:
    """Clock and waiting events of one partition; see the module docstring."""

    __slots__ = (
        "buffer",
        "frontier",
        "late_logged",
        "lateness",
        "max_t",
        "next_scan",
        "seq",
        "unordered",
    )

    def __init__(self, lateness: float, seq: itertools.count[int] | None = None) -> None:
        self.lateness = float(lateness)
        self.max_t = -math.inf  # newest event time seen
        self.frontier = -math.inf  # every buffered event at or before it is released
        self.next_scan = -math.inf  # when the owner sweeps expired state next
        self.buffer: deque[Item] = deque()
        self.unordered: list[Item] = []
        self.late_logged = 0
        # Tie-breaker of the heap; shared by an engine's partitions.
        self.seq = seq if seq is not None else itertools.count()

    @classmethod
    def from_settings(cls, settings: CorrelationSettings) -> LatenessBuffer:
        return cls(settings.allowed_lateness_s)

    # ------------------------------------------------------------- the clock

    @property
    def watermark(self) -> float:
        return self.max_t - self.lateness

    def observe(self, t: float) -> float:
        """Note an event time; returns the watermark after it."""
        if t > self.max_t:
            self.max_t = t
        return self.max_t - self.lateness

    def is_late(self, t: float) -> bool:
        return t < self.frontier

    def advance(self, wm: float) -> None:
        """Move the frontier to ``wm`` (never back)."""
        if wm > self.frontier:
            self.frontier = wm

    # ------------------------------------------------------------ the buffer

    def hold(self, t: float, eid: str, rec: Rec, contribs: list[Contrib]) -> None:
        """Buffer an event that is not late."""
        buf = self.buffer
        if buf:
            tail = buf[-1]
            if t < tail[I_T] or (t == tail[I_T] and eid < tail[I_ID]):
                heapq.heappush(self.unordered, (t, eid, next(self.seq), rec, contribs))
                return
        # The FIFO is never heap-ordered: it needs no tie-breaking number.
        buf.append((t, eid, 0, rec, contribs))

    def pop_due(self, wm: float) -> Item | None:
        """The oldest waiting event at or before ``wm``, or None."""
        buf = self.buffer
        unordered = self.unordered
        if unordered:
            u = unordered[0]
            if (
                not buf
                or u[I_T] < buf[0][I_T]
                or (u[I_T] == buf[0][I_T] and u[I_ID] < buf[0][I_ID])
            ):
                return heapq.heappop(unordered) if u[I_T] <= wm else None
        if buf and buf[0][I_T] <= wm:
            return buf.popleft()
        return None

    def __len__(self) -> int:
        return len(self.buffer) + len(self.unordered)

    def items(self) -> list[Item]:
        """The waiting events in release order."""
        return sorted((*self.buffer, *self.unordered), key=lambda e: (e[0], e[1], e[2]))

    def newest_held(self) -> float:
        return max((e[I_T] for e in (*self.buffer, *self.unordered)), default=-math.inf)

    def clamp(self, limit: float) -> int:
        """Drop waiting events after ``limit``; returns how many went. The
        owner then calls ``rewind`` once it knows the newest time it holds."""
        buffer = [e for e in self.buffer if e[I_T] <= limit]
        unordered = [e for e in self.unordered if e[I_T] <= limit]
        dropped = len(self.buffer) + len(self.unordered) - len(buffer) - len(unordered)
        self.buffer = deque(buffer)
        heapq.heapify(unordered)
        self.unordered = unordered
        return dropped

    def rewind(self, held: float, scan_every: float) -> None:
        """Set the clock back to ``held``, the newest time still held."""
        self.max_t = min(self.max_t, held)
        self.frontier = min(self.frontier, self.max_t - self.lateness)
        self.next_scan = min(self.next_scan, self.frontier + scan_every)

    # ------------------------------------------------------------- snapshot

    def snapshot(self) -> ClockRows:
        """The clock and the waiting events, in release order."""
        return (self.max_t, self.frontier, self.next_scan, self.items())

    def restore(self, rows: ClockRows) -> None:
        """Take back ``snapshot()`` rows (items in order: all to the FIFO)."""
        self.max_t, self.frontier, self.next_scan, items = rows
        fifo = self.buffer
        for t, eid, _, rec, contribs in items:
            fifo.append((t, eid, next(self.seq), rec, contribs))


def late_applies(behind: float, horizon: float, always: bool = False) -> bool:
    """Whether an event ``behind`` seconds behind its watermark is still
    applied to its windows: within ``late_horizon_s``, or always with
    ``late_events_update_windows``."""
    return always or behind <= horizon


@dataclass(frozen=True)
class SourceClock:
    """Lateness and delivery delay per source (``correlator.sources``), and
    the two rules the stream applies with them (pure: times are passed in).

    - An event is late when it is behind its input's newest event time less
      its source's allowed lateness (``late_watermark``).
    - A quiet input of a source with a delivery delay ``d`` holds the merge's
      watermark at its newest event time for ``d`` seconds of quiet, then
      lets it move on at the wall clock's pace (``idle_hold``): its events may
      still come up to ``d`` after their time, and must find their windows
      open. For a live source that is the wall clock less ``d``; a replay of a
      past day keeps its own time (``ordering.idle_progress``). Without a
      delay a quiet input holds nothing back, as before.

    The engine buffers what the stream releases for the largest lateness of
    all (``max_lateness``), so a source allowed more lateness than the
    others is still applied in event-time order.
    """

    default_lateness: float = 60.0
    lateness_by_source: Mapping[str, float] = field(default_factory=dict)
    delay_by_source: Mapping[str, float] = field(default_factory=dict)
    late_horizon: float = 0.0
    apply_all_late: bool = False

    @classmethod
    def from_settings(cls, cfg: CorrelatorSettings) -> SourceClock:
        return cls(
            default_lateness=cfg.allowed_lateness_s,
            lateness_by_source={
                name: timing.allowed_lateness_s
                for name, timing in cfg.sources.items()
                if timing.allowed_lateness_s is not None
            },
            delay_by_source={
                name: timing.max_delivery_delay_s
                for name, timing in cfg.sources.items()
                if timing.max_delivery_delay_s > 0
            },
            late_horizon=cfg.late_horizon_s,
            apply_all_late=cfg.late_events_update_windows,
        )

    def lateness(self, source: str | None) -> float:
        if source is None:
            return self.default_lateness
        return self.lateness_by_source.get(source, self.default_lateness)

    def delay(self, source: str | None) -> float:
        return self.delay_by_source.get(source, 0.0) if source is not None else 0.0

    @property
    def max_lateness(self) -> float:
        """What the engine must buffer for: the largest lateness of all."""
        return max((self.default_lateness, *self.lateness_by_source.values()))

    def late_watermark(self, source: str | None, newest: float) -> float:
        """An event of an input is late when its time is below this."""
        return newest - self.lateness(source)

    def late_outcome(self, behind: float) -> str:
        """``applied`` or ``dropped``: what the engine does with a late event."""
        if late_applies(behind, self.late_horizon, self.apply_all_late):
            return "applied"
        return "dropped"

    def idle_hold(
        self, source: str | None, newest: float, quiet_for: float, wall: float | None = None
    ) -> float | None:
        """Where an input quiet for ``quiet_for`` seconds holds the watermark,
        or None when its source has no delivery delay. ``wall`` (epoch
        seconds) is given for an input that has delivered nothing yet
        (``newest`` is then the furthest of the others): its events may still
        come up to the delay behind the wall clock, so it holds there too."""
        delay = self.delay(source)
        if delay <= 0:
            return None
        held = newest + max(0.0, quiet_for - delay)
        return held if wall is None else min(held, wall - delay)
