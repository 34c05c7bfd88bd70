"""Prometheus counters of the connectors (served by ``zonewatch.metrics``).

The hot loop counts in plain integers (``IngestStats``); :func:`observe`
moves the difference into the counters at each commit, so a line costs no
lock or label lookup.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Protocol

from prometheus_client import Counter

RECORDS = Counter("zonewatch_connector_records_total", "Input records read", ["source", "format"])
EVENTS = Counter("zonewatch_connector_events_total", "Events produced", ["source", "format"])
DEAD = Counter(
    "zonewatch_connector_deadletters_total", "Records dead-lettered", ["source", "format", "reason"]
)


class Counts(Protocol):
    """What a pipeline has counted so far (``connectors.pipeline.IngestStats``)."""

    @property
    def read(self) -> int: ...
    @property
    def produced(self) -> int: ...
    @property
    def reasons(self) -> Mapping[str, int]: ...


class Counted(Protocol):
    """A pipeline as the counters see it (``connectors.pipeline.Pipeline``)."""

    @property
    def source(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def stats(self) -> Counts: ...


# What each live pipeline has already counted. Weak keys: a finished
# pipeline's entry goes with it, and a new one never inherits its figures.
_seen: weakref.WeakKeyDictionary[Counted, tuple[int, int, dict[str, int]]] = (
    weakref.WeakKeyDictionary()
)


def observe(pipeline: Counted) -> None:
    stats = pipeline.stats
    labels = (pipeline.source, pipeline.format)
    read, produced, reasons = _seen.get(pipeline, (0, 0, {}))
    RECORDS.labels(*labels).inc(stats.read - read)
    EVENTS.labels(*labels).inc(stats.produced - produced)
    for reason, count in stats.reasons.items():
        delta = count - reasons.get(reason, 0)
        if delta:
            DEAD.labels(*labels, reason).inc(delta)
    _seen[pipeline] = (stats.read, stats.produced, dict(stats.reasons))
