"""A consumed record's way in: decoded, its event time judged against the bounds.

An undecodable record is counted and logged (a dead letter), never fatal.
An event stamped beyond the time bounds (``zonewatch.timebounds``) still goes
to detection (its alerts tagged) and to the archive, but never to
correlation, and it moves no watermark: the event is real evidence of
something, its time is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import Counter

from zonewatch.logs import get_logger
from zonewatch.models import Alert, Evidence
from zonewatch.timebounds import TimeBounds

log = get_logger(__name__)

DEAD_LETTERS = Counter(
    "zonewatch_correlator_dead_letters_total", "Records the correlator could not decode", ["reason"]
)
OUT_OF_BOUNDS = Counter(
    "zonewatch_correlator_out_of_bounds_events_total",
    "Events stamped beyond the time bounds (flagged, kept out of correlation)",
    ["bound"],
)
# Detection alerts raised by an event stamped beyond the time bounds carry
# this tag: the event is real evidence of something, its time is not.
OUT_OF_BOUNDS_TAG = "zonewatch.event_time_out_of_bounds"


@dataclass
class StreamStats:
    consumed: int = 0
    alerts: int = 0
    new_alerts: int = 0
    dead_letters: int = 0
    out_of_bounds: int = 0
    batches: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


class Intake:
    """Decodes records and flags events stamped beyond the time bounds."""

    def __init__(
        self,
        event_time: Callable[[dict[str, Any]], datetime],
        time_bounds: TimeBounds,
        stats: StreamStats,
    ):
        self.event_time = event_time
        self.time_bounds = time_bounds
        self.stats = stats

    def decode(self, record: Any) -> tuple[dict[str, Any], datetime] | None:
        try:
            event = orjson.loads(record.value)
            if not isinstance(event, dict):
                raise ValueError("event is not a JSON object")
            when = self.event_time(event)
        except Exception as exc:  # undecodable records are counted, never fatal
            reason = type(exc).__name__
            DEAD_LETTERS.labels(reason=reason).inc()
            self.stats.dead_letters += 1
            log.warning(
                "undecodable_event",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=str(exc)[:200],
            )
            return None
        return event, when

    def out_of_bounds(self, record: Any, t: float, ref: float) -> None:
        """Count and log an event stamped beyond the time bounds. It still
        goes to detection (alerts tagged) and the archive, but never to
        correlation, and it moves no watermark."""
        bound = self.time_bounds.check(t, ref) or "future"
        OUT_OF_BOUNDS.labels(bound=bound).inc()
        self.stats.out_of_bounds += 1
        if self.stats.out_of_bounds == 1 or self.stats.out_of_bounds % 1000 == 0:
            log.warning(
                "event_time_out_of_bounds",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=self.time_bounds.reason(
                    t, ref, clock="its Kafka record's time", settings="ZONEWATCH_CORRELATOR__"
                ),
                consequence=f"kept out of correlation; detection alerts tagged {OUT_OF_BOUNDS_TAG}",
                out_of_bounds_so_far=self.stats.out_of_bounds,
            )

    @staticmethod
    def flagged(make_alert: Callable[[Any, Evidence], Alert]) -> Callable[[Any, Evidence], Alert]:
        """``make_alert`` for an event stamped beyond the time bounds: tagged."""

        def make(rule: Any, evidence: Evidence) -> Alert:
            alert = make_alert(rule, evidence)
            return replace(alert, tags=[*alert.tags, OUT_OF_BOUNDS_TAG])

        return make
