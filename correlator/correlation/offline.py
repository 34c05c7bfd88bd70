"""Correlations for a finite input (``zonewatch match``, retro-hunts).

``offline_hooks`` returns the ``on_hit`` / ``on_end`` pair that
``correlator.detection.run_offline`` accepts. By default every event that
feeds a correlation waits until the end of the input (infinite lateness), so
correlations are evaluated in event-time order whatever the order of the
lines; give ``lateness_s`` to bound the memory for long, nearly sorted input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Literal

from correlator.correlation.engine import CorrelationEngine
from correlator.correlation.settings import CorrelationSettings
from correlator.step import correlated_ids
from zonewatch.models import Alert, Evidence

OnHit = Callable[[int, dict[str, Any], list[Any]], Iterable[Alert]]
OnEnd = Callable[[], Iterable[Alert]]


def offline_hooks(
    ruleset: Any,
    event_time: Callable[[dict[str, Any]], datetime],
    lateness_s: float = math.inf,
    origin: Literal["stream", "hunt", "match"] = "match",
) -> tuple[OnHit, OnEnd, CorrelationEngine] | None:
    """(on_hit, on_end, engine) for ``ruleset.correlations``; None without any.

    ``ruleset`` needs ``correlations`` (pySigma correlation rules) and
    ``rule(ref)`` (id or name -> object with ``id``); ``event_time`` gives an
    event's time (the detection engine's ``evidence_time``).
    """
    if not getattr(ruleset, "correlations", None):
        return None
    settings = CorrelationSettings(allowed_lateness_s=lateness_s, origin=origin)
    engine = CorrelationEngine(ruleset.correlations, ruleset.rule, settings)
    wanted = engine.referenced_rule_ids

    def on_hit(line: int, event: dict[str, Any], hits: list[Any]) -> list[Alert]:
        ids = correlated_ids(hits, wanted)  # the step every mode runs
        if not ids:
            return []
        evidence = Evidence(event_id=f"line:{line}", time=event_time(event), line=line, event=event)
        return engine.process(ids, event, evidence)

    def on_end() -> list[Alert]:
        return engine.flush()

    return on_hit, on_end, engine
