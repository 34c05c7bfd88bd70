"""How far an event's own time may stray from the clock that receives it (pure).

An event's ``@timestamp`` is written by whoever sent the log line, and the
syslog listeners are open to the network. One line dated 9999 would carry a
correlation watermark past every real event to come (all of them late, for
good: the watermark is part of the stored state), and one dated year 1 is
garbage that breaks date arithmetic. So event time is checked against a
reference clock: at most ``max_future_skew_s`` ahead of it (device clocks
drift, a few minutes is normal) and at most ``max_past_horizon_s`` behind it
(logs buffered by a device or backfilled from a file arrive late; a year is
as far back as a year-less syslog date is ever read, see
``connectors.timeparse.nearest_year``).

Connectors dead-letter events outside the bounds (``connectors.timegate``);
the correlator, which may be fed by an older connector or another producer,
flags events beyond the future bound (the past one only when set: an old
event cannot move a watermark) and keeps them out of correlation
(``correlator/stream.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

DAY_S = 86_400.0
# Defaults of both the connectors' and the correlator's settings.
DEFAULT_FUTURE_SKEW_S = 300.0
DEFAULT_PAST_HORIZON_DAYS = 366.0

FUTURE = "future"
PAST = "past"


@dataclass(frozen=True)
class TimeBounds:
    """``[now - max_past_horizon_s, now + max_future_skew_s]``; no past bound
    when ``max_past_horizon_s`` is None (replays of recorded days)."""

    max_future_skew_s: float = DEFAULT_FUTURE_SKEW_S
    max_past_horizon_s: float | None = DEFAULT_PAST_HORIZON_DAYS * DAY_S

    @classmethod
    def of(cls, max_future_skew_s: float, max_past_horizon_days: float | None) -> TimeBounds:
        horizon = None if max_past_horizon_days is None else max_past_horizon_days * DAY_S
        return cls(float(max_future_skew_s), horizon)

    def lowest(self, now: float) -> float:
        """The oldest event time accepted at ``now`` (-inf: no past bound)."""
        if self.max_past_horizon_s is None:
            return float("-inf")
        return now - self.max_past_horizon_s

    def highest(self, now: float) -> float:
        """The newest event time accepted at ``now``."""
        return now + self.max_future_skew_s

    def check(self, t: float, now: float) -> str | None:
        """``FUTURE`` or ``PAST`` when epoch seconds ``t`` is out of bounds at ``now``."""
        if t > now + self.max_future_skew_s:
            return FUTURE
        if self.max_past_horizon_s is not None and t < now - self.max_past_horizon_s:
            return PAST
        return None

    def reason(self, t: float, now: float, *, clock: str, settings: str) -> str:
        """Why ``t`` is out of bounds, naming the bound and the setting that
        moves it (``settings``: e.g. ``ZONEWATCH_CONNECTORS__``)."""
        when = _iso(t)
        at = _iso(now)
        if self.check(t, now) == FUTURE:
            return (
                f"event time out of bounds: @timestamp {when} is {_span(t - now)} ahead of "
                f"{clock} ({at}); at most max_future_skew_s={self.max_future_skew_s:g} s "
                f"is accepted ({settings}MAX_FUTURE_SKEW_S)"
            )
        days = (self.max_past_horizon_s or 0.0) / DAY_S
        return (
            f"event time out of bounds: @timestamp {when} is {_span(now - t)} behind "
            f"{clock} ({at}); at most max_past_horizon_days={days:g} is accepted "
            f"({settings}MAX_PAST_HORIZON_DAYS; raise it to backfill older logs)"
        )


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return f"{t:.0f} s since 1970"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.0f} h"
    if seconds < 730 * DAY_S:
        return f"{seconds / DAY_S:.0f} days"
    return f"{seconds / (365.25 * DAY_S):.0f} years"
