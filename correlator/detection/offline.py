"""The offline runner behind ``zonewatch match``: events in order -> alerts.

The correlation engine plugs in through ``on_hit`` (called with the input
line, the event and every rule that matched it, including rules that only
feed correlations) and ``on_end`` (flush open windows at end of input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from correlator.detection.alerts import (
    EventTimeError,
    detection_alert,
    event_time,
    trusted_evidence,
)
from correlator.detection.evtx import flatten_evtx
from correlator.detection.ruleset import DetectionRule, RuleSet, _dataset
from correlator.step import alerts_of
from zonewatch.errors import ParseError
from zonewatch.models import Alert, Evidence

OnHit = Callable[[int, dict[str, Any], list[DetectionRule]], Iterable[Alert]]
OnEnd = Callable[[], Iterable[Alert]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_ndjson(
    lines: Iterable[bytes | str],
    flatten: str | None = None,
    on_error: Callable[[ParseError], None] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line, event) for each JSON object line; blank lines are skipped.

    A line that is not a JSON object is reported to ``on_error`` (or raised).
    """
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            err = ParseError(f"line {number}: not JSON: {exc}")
            if on_error is None:
                raise err from exc
            on_error(err)
            continue
        if not isinstance(event, dict):
            err = ParseError(f"line {number}: expected a JSON object, got {type(event).__name__}")
            if on_error is None:
                raise err
            on_error(err)
            continue
        yield number, (flatten_evtx(event) if flatten == "evtx" else event)


def evidence_time(event: dict[str, Any]) -> datetime:
    """``@timestamp``, else an evtx ``TimeCreated_SystemTime``, else the epoch
    (so ids stay deterministic for timeless regression events)."""
    try:
        return event_time(event)
    except EventTimeError:
        raw = event.get("TimeCreated_SystemTime")
        if isinstance(raw, str):
            try:
                moment = datetime.fromisoformat(raw.strip())
                return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            except ValueError:
                pass
        return _EPOCH


def run_offline(
    events: Iterable[tuple[int, dict[str, Any]]],
    ruleset: RuleSet,
    source: str | None = None,
    on_hit: OnHit | None = None,
    on_end: OnEnd | None = None,
    origin: str = "match",
) -> Iterator[Alert]:
    """Detection alerts (of rules that generate them) and the hooks' alerts, in input order."""

    def make_alert(rule: Any, evidence: Evidence) -> Alert:
        return detection_alert(rule, evidence, origin)  # type: ignore[arg-type]

    for line, event in events:
        src = source if source is not None else _dataset(event)
        hits = ruleset.match(event, src)
        if not hits and on_hit is None:
            continue
        if hits:
            # The per-event step every mode runs (correlator/step.py); the
            # correlation hooks take the hits on.
            yield from alerts_of(
                hits,
                lambda line=line, event=event: trusted_evidence(  # type: ignore[misc]
                    f"line:{line}", evidence_time(event), line, event
                ),
                make_alert,
            )
        if on_hit is not None:
            yield from on_hit(line, event, hits)
    if on_end is not None:
        yield from on_end()
