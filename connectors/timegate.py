"""The ingest side of the event-time bounds: events stamped too far from this
connector's clock are dead-lettered, never produced (zonewatch/timebounds.py).

Applied by ``zonewatch ingest`` only: ``zonewatch parse`` converts logs of any
date offline, where the clock of the moment means nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from connectors.timeparse import format_utc
from zonewatch.config import ConnectorSettings
from zonewatch.timebounds import TimeBounds

# The form every parser writes (timeparse.format_utc): its text order is its
# time order, so most events are checked without parsing the stamp.
_CANONICAL_LEN = len("2026-11-26T01:02:03.456Z")
_YEAR_1 = -62135596800.0  # 0001-01-01T00:00:00Z in epoch seconds


class EventTimeGate:
    """Splits a record's events into those within the bounds and a reason
    for the others (``None`` when every event is within them)."""

    def __init__(self, bounds: TimeBounds, clock: Callable[[], float] = time.time):
        self.bounds = bounds
        self.clock = clock
        self._second = -1
        self._low = ""
        self._high = ""

    @classmethod
    def from_settings(cls, connectors: ConnectorSettings) -> EventTimeGate:
        return cls(TimeBounds.of(connectors.max_future_skew_s, connectors.max_past_horizon_days))

    def _window(self, now: float) -> tuple[str, str]:
        second = int(now)
        if second != self._second:
            # The stamps every moment of this second accepts, recomputed once
            # a second; the exact check decides anything outside them.
            self._second = second
            low = self.bounds.lowest(second + 1) + 0.001  # format_utc truncates to ms
            self._low = _stamp(low) if low > _YEAR_1 else ""
            self._high = _stamp(self.bounds.highest(second))
        return self._low, self._high

    def split(self, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
        if not events:
            return events, None
        now = self.clock()
        low, high = self._window(now)
        # One pass; the list of kept events is made only once one is dropped
        # (the common case drops none and returns the record's own list).
        kept: list[dict[str, Any]] | None = None
        first: str | None = None
        for i, event in enumerate(events):
            raw = event.get("@timestamp")
            in_window = (
                raw.__class__ is str
                and len(raw) == _CANONICAL_LEN
                and raw[-1] == "Z"
                and low <= raw <= high
            )
            if not in_window:
                # The exact check; no readable time is the correlator's to refuse.
                t = _epoch(raw)
                if t is not None and self.bounds.check(t, now) is not None:
                    if kept is None:
                        kept = events[:i]
                    if first is None:
                        first = self.bounds.reason(
                            t,
                            now,
                            clock="this connector's clock",
                            settings="ZONEWATCH_CONNECTORS__",
                        )
                    continue
            if kept is not None:
                kept.append(event)
        if first is None or kept is None:
            return events, None
        dropped = len(events) - len(kept)
        if len(events) > 1:
            first = f"{first} ({dropped} of the record's {len(events)} events)"
        return kept, first


def _stamp(t: float) -> str:
    try:
        return format_utc(datetime.fromtimestamp(t, UTC))
    except (OverflowError, OSError, ValueError):
        return "9999-12-31T23:59:59.999Z" if t > 0 else ""


def _epoch(raw: Any) -> float | None:
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
