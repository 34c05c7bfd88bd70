"""Replay a timeline of detection hits through the engine.

A timeline is a list of ``Hit(seconds, rules, fields)``: seconds after a base
time, the detection rule ids (or names) the event matched, and its fields
(dotted names). Used by tests, the benchmark and anyone checking a rule by
hand; the stream loop calls the engine directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from correlator.correlation.engine import CorrelationEngine
from correlator.correlation.settings import CorrelationSettings
from correlator.correlation.yaml_rules import LoadedRules, load_rules_text
from zonewatch.ecs import set_field
from zonewatch.models import Alert, Evidence

BASE = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Hit:
    seconds: float
    rules: Sequence[str]
    fields: dict[str, Any] = field(default_factory=dict)
    partition: int = 0
    event_id: str | None = None


def event_of(hit: Hit, base: datetime = BASE) -> dict[str, Any]:
    event: dict[str, Any] = {"@timestamp": (base + timedelta(seconds=hit.seconds)).isoformat()}
    for name, value in hit.fields.items():
        set_field(event, name, value)
    return event


def number(hits: Sequence[Hit]) -> list[Hit]:
    """Give each hit a stable event id by its position, so a shuffled copy
    keeps the ids of the original."""
    return [
        Hit(h.seconds, h.rules, h.fields, h.partition, h.event_id or f"line:{i + 1}")
        for i, h in enumerate(hits)
    ]


def feed(
    engine: CorrelationEngine,
    loaded: LoadedRules,
    hits: Iterable[Hit],
    base: datetime = BASE,
    with_time: bool = False,
    accept_key: Callable[[tuple[Any, ...]], bool] | None = None,
) -> list[Alert]:
    """Process hits in the given (arrival) order; rule names become ids.
    ``with_time`` hands the engine each event's epoch seconds, as the stream
    does; ``accept_key`` is the scale-out shard filter (``engine.process``)."""
    out: list[Alert] = []
    for i, hit in enumerate(hits):
        ids = []
        for ref in hit.rules:
            info = loaded.resolve(ref)
            ids.append(info.id if info is not None else ref)
        event = event_of(hit, base)
        event_id = hit.event_id or f"line:{i + 1}"
        evidence = Evidence(
            event_id=event_id,
            time=base + timedelta(seconds=hit.seconds),
            partition=hit.partition,
            event=event,
        )
        t = evidence.time.timestamp() if with_time else None
        out.extend(engine.process(ids, event, evidence, hit.partition, accept_key, t))
    return out


def run(
    rules_yaml: str,
    hits: Iterable[Hit],
    settings: CorrelationSettings | None = None,
    flush: bool = True,
) -> list[Alert]:
    """Load rules, replay hits, flush: the alerts, in the order produced."""
    loaded = load_rules_text(rules_yaml)
    engine = CorrelationEngine(loaded.correlations, loaded.resolve, settings)
    out = feed(engine, loaded, hits)
    if flush:
        out.extend(engine.flush())
    return out
