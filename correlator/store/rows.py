"""Pure conversion of alerts and events into Arrow batches for the store.

One Arrow batch per table per write: DuckDB ingests a 1k-row Arrow batch in
about the time ``executemany`` needs for a dozen rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from zonewatch.models import Alert

TS = pa.timestamp("us", tz="UTC")


class ArchivedEvent(NamedTuple):
    """One normalized event for the ``events`` archive (retro-hunts)."""

    event_id: str
    topic: str | None
    partition: int | None
    offset: int | None
    time: datetime
    event: dict[str, Any]
    # The event's JSON as it arrived (a Kafka record value): stored as is,
    # which spares re-serializing every event of the archive.
    raw: bytes | None = None


def utc(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC, the event schema's convention."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _text(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, dict | list):
        return None
    return str(value)


# pyarrow converts aware datetimes to UTC and reads naive ones as UTC, so the
# builders hand datetimes over as they are (no per-value conversion).


def alerts_table(alerts: Sequence[Alert], ingest_time: datetime) -> pa.Table:
    n = len(alerts)
    return pa.table(
        {
            "ord": pa.array(range(n), pa.int32()),
            "id": pa.array([a.id for a in alerts], pa.string()),
            "rule_id": pa.array([a.rule_id for a in alerts], pa.string()),
            "rule_title": pa.array([a.rule_title for a in alerts], pa.string()),
            "level": pa.array([a.level for a in alerts], pa.string()),
            "tags": pa.array([a.tags for a in alerts], pa.list_(pa.string())),
            "rule_hash": pa.array([a.rule_hash for a in alerts], pa.string()),
            "type": pa.array([a.type for a in alerts], pa.string()),
            "group_values": pa.array([_dumps(a.group) for a in alerts], pa.string()),
            "window_start": pa.array([a.window_start for a in alerts], TS),
            "window_end": pa.array([a.window_end for a in alerts], TS),
            "first_seen": pa.array([a.first_seen for a in alerts], TS),
            "last_seen": pa.array([a.last_seen for a in alerts], TS),
            "ingest_time": pa.array([ingest_time] * n, TS),
            "zone_crossing": pa.array([a.zone_crossing for a in alerts], pa.string()),
            "origin": pa.array([a.origin for a in alerts], pa.string()),
            "evidence_count": pa.array([len(a.evidence) for a in alerts], pa.int32()),
        }
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def evidence_table(alerts: Sequence[Alert]) -> pa.Table:
    pairs = [(a.id, i, ev) for a in alerts for i, ev in enumerate(a.evidence)]
    evs = [p[2] for p in pairs]
    return pa.table(
        {
            "alert_id": pa.array([p[0] for p in pairs], pa.string()),
            "ordinal": pa.array([p[1] for p in pairs], pa.int32()),
            "event_id": pa.array([e.event_id for e in evs], pa.string()),
            "topic": pa.array([e.topic for e in evs], pa.string()),
            "partition": pa.array([e.partition for e in evs], pa.int32()),
            "offset": pa.array([e.offset for e in evs], pa.int64()),
            "line": pa.array([e.line for e in evs], pa.int64()),
            "event_time": pa.array([e.time for e in evs], TS),
            "event": pa.array([_dumps(e.event) for e in evs], pa.string()),
        }
    )


EVENT_COLUMNS = (
    "event_id",
    "topic",
    "partition",
    "offset",
    "time",
    "ingest_time",
    "source",
    "dataset",
    "user_name",
    "host_name",
    "device_id",
    "source_ip",
    "destination_ip",
    "destination_domain",
    "zone_source",
    "zone_destination",
    "zone_crossing",
    "action",
    "outcome",
    "event",
)


# Archive columns read from the event JSON: (column, candidate paths,
# lower-case). DuckDB extracts them inside the INSERT, vectorized, instead of
# Python walking a dozen paths per event; a path is tried nested first, then
# as a flat dotted key, as zonewatch.ecs.get_field does.
_EVENT_FIELDS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("dataset", ("event.dataset",), False),
    ("user_name", ("user.name", "source.user.name"), True),
    ("host_name", ("host.name",), False),
    ("device_id", ("device.id",), False),
    ("source_ip", ("source.ip",), False),
    ("destination_ip", ("destination.ip",), False),
    ("destination_domain", ("url.domain", "destination.domain"), False),
    ("zone_source", ("zone.source",), False),
    ("zone_destination", ("zone.destination",), False),
    ("zone_crossing", ("zone.crossing",), False),
    ("action", ("event.action",), False),
    ("outcome", ("event.outcome",), False),
)


def _scalar_sql(json_path: str) -> str:
    # Objects and arrays are not values of these columns; '' is no value.
    return (
        f"CASE WHEN json_type(event, '{json_path}') IN ('OBJECT', 'ARRAY') THEN NULL "
        f"ELSE nullif(json_extract_string(event, '{json_path}'), '') END"
    )


def _field_sql(column: str, paths: tuple[str, ...], lower: bool) -> str:
    candidates = []
    for path in paths:
        candidates.append(_scalar_sql("$." + path))
        candidates.append(_scalar_sql(f'$."{path}"'))
    expr = f"coalesce({', '.join(candidates)})"
    return f"{'lower(' + expr + ')' if lower else expr} AS {column}"


# SELECT list turning the staged batch into ``events`` rows, in EVENT_COLUMNS order.
EVENTS_SELECT = ", ".join(
    [
        "event_id",
        "topic",
        '"partition"',
        '"offset"',
        "time",
        "ingest_time",
        # The topic names the source; offline, the dataset's first part does.
        "coalesce(source, split_part("
        + _field_sql("dataset", ("event.dataset",), False).removesuffix(" AS dataset")
        + ", '.', 1)) AS source",
    ]
    + [_field_sql(column, paths, lower) for column, paths, lower in _EVENT_FIELDS]
    + ["event"]
)


def events_table(events: Sequence[ArchivedEvent], ingest_time: datetime) -> pa.Table:
    """The staged batch: ids, position, time, the source when the topic names
    it, and the event JSON (as it arrived when the raw bytes are known)."""
    topics: dict[str | None, str | None] = {}
    source = []
    for ev in events:
        if ev.topic not in topics:
            topics[ev.topic] = (
                ev.topic.rsplit(".", 1)[-1] if ev.topic and ".events." in ev.topic else None
            )
        source.append(topics[ev.topic])
    return pa.table(
        {
            "event_id": pa.array([ev.event_id for ev in events], pa.string()),
            "topic": pa.array([ev.topic for ev in events], pa.string()),
            "partition": pa.array([ev.partition for ev in events], pa.int32()),
            "offset": pa.array([ev.offset for ev in events], pa.int64()),
            "time": pa.array([utc(ev.time) for ev in events], TS),
            "ingest_time": pa.array([ingest_time] * len(events), TS),
            "source": pa.array(source, pa.string()),
            "event": pa.array(
                [
                    ev.raw.decode("utf-8") if ev.raw is not None else to_json(ev.event)
                    for ev in events
                ],
                pa.string(),
            ),
        }
    )
