"""Pydantic models at the boundaries: alerts, their evidence, dead letters.

Events themselves stay plain dicts (ECS-shaped) on the hot path; they are
validated where they enter (connectors) and serialized with orjson.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

Level = Literal["informational", "low", "medium", "high", "critical"]
AlertOrigin = Literal["stream", "hunt", "match"]


class Evidence(BaseModel):
    """One event that contributed to an alert, and where it came from."""

    model_config = ConfigDict(frozen=True)

    event_id: str = Field(description="topic:partition:offset in a stream, line:N offline")
    time: datetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    line: int | None = None
    event: dict[str, Any] = Field(default_factory=dict)


class Alert(BaseModel):
    """A detection or correlation result, as stored and as sent to Teams."""

    model_config = ConfigDict(frozen=True)

    id: str
    rule_id: str
    rule_title: str
    level: str = "medium"
    tags: list[str] = Field(default_factory=list)
    type: str = "detection"  # or the correlation type, e.g. "event_count"
    rule_hash: str | None = None
    group: dict[str, Any] = Field(default_factory=dict)
    window_start: datetime | None = None
    window_end: datetime | None = None
    first_seen: datetime
    last_seen: datetime
    zone_crossing: str | None = None
    origin: AlertOrigin = "stream"
    evidence: list[Evidence] = Field(default_factory=list)


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
