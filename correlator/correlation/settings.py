"""Settings of the correlation engine and the rule information it is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


class BaseRuleInfo(Protocol):
    """What ``resolve(reference)`` returns for a rule a correlation refers to.

    Only ``id`` is required: it is the string the detection engine reports as
    a hit. Whether a reference is itself a correlation is decided by the engine
    from the correlation rules it was given, so a plain ``DetectionRule`` fits.
    """

    @property
    def id(self) -> str: ...


@dataclass(frozen=True)
class CorrelationSettings:
    """Knobs of the engine. Defaults suit a live stream.

    allowed_lateness_s: the watermark of a partition trails its newest event
        time by this much; events are applied in event-time order once the
        watermark passes them, so out-of-order arrival within this bound gives
        exactly the alerts of ordered input. 0 applies events on arrival.
    late_events_update_windows: whether an event behind the watermark may
        still update windows (best effort, out of order). Either way it is
        counted and logged.
    late_horizon_s: a late event at most this far behind the watermark is
        still applied (out of order) to its windows, which are kept this much
        longer so that it finds them open or re-opens them; alerts it
        completes are flagged ``late``. Further behind it is dropped. 0: off.
    max_groups_per_rule: live groups per correlation rule (all partitions);
        at the cap the least recently updated tenth is evicted.
    max_state_bytes: estimated bytes of all state; checked at eviction scans,
        the least recently updated groups go first.
    max_evidence_per_alert: evidence kept per window; a window above it keeps
        the first half and the last half (counts stay exact).
    keep_event_in_evidence: keep the event body in held evidence; False keeps
        ids, times and positions only (the events archive has the bodies).
    origin: the ``origin`` of the alerts made ("stream", "match", "hunt").
    """

    allowed_lateness_s: float = 60.0
    late_events_update_windows: bool = False
    late_horizon_s: float = 0.0
    max_groups_per_rule: int = 1_000_000
    max_state_bytes: int = 1 << 30
    max_evidence_per_alert: int = 200
    keep_event_in_evidence: bool = True
    origin: Literal["stream", "hunt", "match"] = "stream"
