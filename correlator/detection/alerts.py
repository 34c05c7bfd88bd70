"""Detection hits -> ``zonewatch.models.Alert``, and event times."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from correlator.detection.ruleset import DetectionRule
from zonewatch.errors import ZonewatchError
from zonewatch.models import Alert, AlertOrigin, Evidence, alert_to_json


def trusted_evidence(event_id: str, time: datetime, line: int, event: dict[str, Any]) -> Evidence:
    """Offline evidence (``line:N``)."""
    return Evidence(event_id=event_id, time=time, line=line, event=event)


class EventTimeError(ZonewatchError):
    """An event has no usable ``@timestamp`` (RFC 3339)."""

    exit_code = 65


_fromisoformat = datetime.fromisoformat
# The last ``Z`` stamp parsed and its datetime (one tuple: replaced atomically).
# Consecutive records of a partition often share a stamp (firewalls write whole
# seconds), and a string comparison costs a fifth of a parse.
_last_stamp: tuple[str, datetime] = ("", datetime(1970, 1, 1, tzinfo=UTC))


def event_time(event: dict[str, Any]) -> datetime:
    """The event's ``@timestamp`` as an aware UTC datetime.

    Called for every event of the stream. The form the connectors emit
    (``2025-04-01T09:30:00.123Z``) takes one ``fromisoformat``; anything else,
    and every error, goes through ``parse_event_time``, which gives the same
    datetime for every string the fast path accepts.
    """
    global _last_stamp
    raw = event.get("@timestamp")
    if raw.__class__ is str and raw[-1:] == "Z":
        last = _last_stamp
        if raw == last[0]:
            return last[1]
        try:
            moment = _fromisoformat(raw)
        except ValueError:
            return parse_event_time(raw)
        if moment.tzinfo is UTC:
            _last_stamp = (raw, moment)
            return moment
    return parse_event_time(raw)


def parse_event_time(raw: Any) -> datetime:
    """``@timestamp`` value -> aware UTC datetime, or ``EventTimeError`` saying what to fix."""
    if raw is None:
        raise EventTimeError("event has no @timestamp; connectors must set it (RFC 3339, UTC)")
    if not isinstance(raw, str):
        raise EventTimeError(f"@timestamp must be an RFC 3339 string, got {raw!r}")
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError as exc:
        raise EventTimeError(
            f"@timestamp {raw!r} is not RFC 3339 (e.g. 2025-04-01T09:30:00Z)"
        ) from exc
    if moment.tzinfo is None:
        raise EventTimeError(f"@timestamp {raw!r} has no time zone; add Z or an offset")
    return moment.astimezone(UTC)


def zone_crossing(event: dict[str, Any]) -> str | None:
    # get_field(event, "zone.crossing") (zonewatch.fieldpath), inlined: per alert.
    zone = event.get("zone")
    value = zone.get("crossing") if zone.__class__ is dict else event.get("zone.crossing")
    return value if isinstance(value, str) else None


def detection_alert_id(rule_id: str, event_id: str) -> str:
    """``zonewatch.models.alert_id(rule_id, {}, None, None, [event_id])``, without the
    sorting and conversions a group and several events need (half its cost)."""
    payload = orjson.dumps([rule_id, [], None, None, [event_id]])
    return hashlib.sha256(payload).hexdigest()[:32]


def detection_alert(
    rule: DetectionRule, evidence: Evidence, origin: AlertOrigin = "stream"
) -> Alert:
    """The alert a single-event detection raises; its id is stable across replays."""
    return Alert(
        id=detection_alert_id(rule.id, evidence.event_id),
        rule_id=rule.id,
        rule_title=rule.title,
        level=rule.level,
        tags=list(rule.tags),
        type="detection",
        rule_hash=rule.sha256,
        group={},
        window_start=None,
        window_end=None,
        first_seen=evidence.time,
        last_seen=evidence.time,
        zone_crossing=zone_crossing(evidence.event),
        origin=origin,
        evidence=[evidence],
    )


def alert_json(alert: Alert) -> bytes:
    """One output line of ``zonewatch match``: the Alert, plus ``window`` for correlations."""
    data = alert_to_json(alert)
    if alert.type != "detection":
        data["window"] = {"start": data.get("window_start"), "end": data.get("window_end")}
    return orjson.dumps(data)
