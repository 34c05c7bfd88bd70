"""Alerts, their evidence and dead letters.

``Alert`` and ``Evidence`` are built on the hot path (evidence for every
matching event, an alert for every hit), so they are slotted, frozen
dataclasses: built and read at the cost of a plain object. pydantic works
only at the edges, through the adapters below: JSON out (``zonewatch
match``, snapshots of the merger) and JSON in. ``DeadLetter`` is built from
untrusted input and stays a pydantic model.

Events themselves stay plain dicts (ECS-shaped) on the hot path; they are
validated where they enter (connectors) and serialized with orjson.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, TypeAdapter

Level = Literal["informational", "low", "medium", "high", "critical"]
AlertOrigin = Literal["stream", "hunt", "match"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """One event that contributed to an alert, and where it came from."""

    event_id: str  # topic:partition:offset in a stream, line:N offline
    time: datetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    line: int | None = None
    event: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """A detection or correlation result, as stored and as sent to Teams."""

    id: str
    rule_id: str
    rule_title: str
    level: str = "medium"
    tags: list[str] = field(default_factory=list)
    type: str = "detection"  # or the correlation type, e.g. "event_count"
    rule_hash: str | None = None
    group: dict[str, Any] = field(default_factory=dict)
    window_start: datetime | None = None
    window_end: datetime | None = None
    first_seen: datetime
    last_seen: datetime
    zone_crossing: str | None = None
    origin: AlertOrigin = "stream"
    evidence: list[Evidence] = field(default_factory=list)
    # Some evidence arrived behind the watermark and was applied late
    # (``correlator.late_horizon_s``): the alert came later than its window.
    late: bool = False


# pydantic at the edges: validation of JSON in, JSON-ready dicts out.
_ALERT: TypeAdapter[Alert] = TypeAdapter(Alert)
_EVIDENCE: TypeAdapter[Evidence] = TypeAdapter(Evidence)


def alert_to_json(alert: Alert) -> dict[str, Any]:
    """The alert as JSON-ready values (datetimes as RFC 3339 strings)."""
    data: dict[str, Any] = _ALERT.dump_python(alert, mode="json")
    return data


def alert_from_json(data: Any) -> Alert:
    """An alert from JSON values, validated (raises pydantic's ValidationError)."""
    return _ALERT.validate_python(data)


def evidence_to_json(evidence: Evidence) -> dict[str, Any]:
    data: dict[str, Any] = _EVIDENCE.dump_python(evidence, mode="json")
    return data


def evidence_from_json(data: Any) -> Evidence:
    return _EVIDENCE.validate_python(data)


def alert_id(
    rule_id: str,
    group: dict[str, Any] | None,
    window_start: datetime | None,
    window_end: datetime | None,
    evidence_ids: list[str],
) -> str:
    """Deterministic alert id: a replay of the same input yields the same id."""
    payload = orjson.dumps(
        [
            rule_id,
            sorted((str(k), str(v).lower()) for k, v in (group or {}).items()),
            window_start.isoformat() if window_start else None,
            window_end.isoformat() if window_end else None,
            sorted(evidence_ids),
        ]
    )
    return hashlib.sha256(payload).hexdigest()[:32]


class DeadLetter(BaseModel):
    """A line no parser could turn into an event; nothing is dropped silently."""

    source: str
    format: str
    reason: str
    raw: str = Field(description="the raw bytes, as UTF-8 text or base64 when not UTF-8")
    raw_encoding: Literal["utf-8", "base64"] = "utf-8"
    input: str | None = Field(default=None, description="file path, syslog peer, graph, stdin")
    position: int | None = Field(default=None, description="byte offset or line number")
    received_at: datetime
