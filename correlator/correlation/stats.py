"""The correlation engine's counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CorrelationStats:
    """Counters since start (or restore); ``metrics()`` adds live gauges."""

    events: int = 0
    correlated_events: int = 0
    contributions: int = 0  # (rule, group) updates by those events
    late_events: int = 0
    late_applied: int = 0
    late_dropped: int = 0  # late and beyond late_horizon_s (not applied)
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
