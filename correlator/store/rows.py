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

from zonewatch.config import source_of_topic
from zonewatch.ecs import get_field
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


def _source_from_dataset(event: dict[str, Any]) -> str | None:
    # Offline (no topic), the dataset's first part names the source.
    dataset = _text(get_field(event, "event.dataset"))
    return dataset.split(".", 1)[0] if dataset else None


def _lower(value: Any) -> str | None:
    text = _text(value)
    return text.lower() if text else None


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


# Archive columns read from the event: (column, candidate paths, lower-case).
_EVENT_FIELDS: tuple[tuple[str, tuple[tuple[str, ...], ...], bool], ...] = (
    ("dataset", (("event", "dataset"),), False),
    ("user_name", (("user", "name"), ("source", "user", "name")), True),
    ("host_name", (("host", "name"),), False),
    ("device_id", (("device", "id"),), False),
    ("source_ip", (("source", "ip"),), False),
    ("destination_ip", (("destination", "ip"),), False),
    ("destination_domain", (("url", "domain"), ("destination", "domain")), False),
    ("zone_source", (("zone", "source"),), False),
    ("zone_destination", (("zone", "destination"),), False),
    ("zone_crossing", (("zone", "crossing"),), False),
    ("action", (("event", "action"),), False),
    ("outcome", (("event", "outcome"),), False),
)


def _pick(event: dict[str, Any], path: tuple[str, ...], dotted: str, flat: bool) -> Any:
    """A field by nested path, else by flat dotted key (as zonewatch.ecs does;
    written out because it runs a dozen times per archived event). ``flat``
    says whether the event has dotted top-level keys at all."""
    node: Any = event
    for part in path:
        if type(node) is not dict:
            return event.get(dotted) if flat else None
        node = node.get(part)
        if node is None:
            return event.get(dotted) if flat else None
    return node


def events_table(events: Sequence[ArchivedEvent], ingest_time: datetime) -> pa.Table:
    cols: dict[str, list[Any]] = {k: [] for k in EVENT_COLUMNS}
    fields = [
        (cols[name], [(path, ".".join(path)) for path in paths], lower)
        for name, paths, lower in _EVENT_FIELDS
    ]
    sources: dict[str | None, str | None] = {}
    for ev in events:
        e = ev.event
        cols["event_id"].append(ev.event_id)
        cols["topic"].append(ev.topic)
        cols["partition"].append(ev.partition)
        cols["offset"].append(ev.offset)
        cols["time"].append(utc(ev.time))
        cols["ingest_time"].append(ingest_time)
        if ev.topic not in sources:
            sources[ev.topic] = source_of_topic(ev.topic)
        cols["source"].append(sources[ev.topic] or _source_from_dataset(e))
        flat = any("." in key for key in e)
        for column, paths, lower in fields:
            value = None
            for path, dotted in paths:
                found = _pick(e, path, dotted, flat)
                if found is None:
                    continue
                value = _lower(found) if lower else _text(found)
                if value:
                    break
            column.append(value)
        cols["event"].append(ev.raw.decode("utf-8") if ev.raw is not None else to_json(e))
    types = {"partition": pa.int32(), "offset": pa.int64(), "time": TS, "ingest_time": TS}
    return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in cols.items()})
