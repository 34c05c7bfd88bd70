"""Pure conversion of alerts and events into Arrow batches for the store.

One Arrow batch per table per write: DuckDB ingests a 1k-row Arrow batch in
about the time ``executemany`` needs for a dozen rows. The builders work
column by column and hand JSON over as one buffer of bytes, because per-row
Python work (not DuckDB) was most of a write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import accumulate, chain
from operator import attrgetter
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from zonewatch.models import Alert
from zonewatch.sources import source_of_topic

try:
    # CPython's own md5, a third of the time of hashlib's (OpenSSL looks the
    # algorithm up on every call); hashlib's where a build leaves it out.
    from _md5 import md5
except ImportError:  # pragma: no cover
    from hashlib import md5

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
    # which spares re-serializing every event of the archive, and reused for
    # the evidence rows of the same event in the same batch.
    raw: bytes | None = None
    # True when ``raw`` is what orjson parsed into ``event`` (the stream's
    # decode). orjson accepts only valid JSON in valid UTF-8 (stricter than
    # DuckDB: no lone surrogates, no overflowing numbers), so such raw JSON
    # goes to DuckDB as JSON, unchecked; other raw JSON is validated.
    raw_parsed: bool = False


_event_of = attrgetter("event")


def _lenient(value: Any) -> bytes:
    # Keys that are not strings and values JSON cannot hold are written as text.
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def dumps(value: Any) -> bytes:
    """JSON of a normalized event or group."""
    try:
        # Events decoded from JSON need no options, and orjson is faster without.
        return orjson.dumps(value)
    except TypeError:
        return _lenient(value)


def _strings(
    data: bytes | bytearray, ends: list[int], *, check_utf8: bool, json: bool = False
) -> pa.Array:
    """A string column over one buffer; ``ends[i]`` is where row ``i`` ends.

    ``json`` marks it as Arrow's JSON type, for documents orjson wrote: DuckDB
    takes such a column into a JSON column as is, where it parses every
    string of a plain one to validate it."""
    large = len(data) >= 2**31
    storage = pa.large_string() if large else pa.string()
    offsets = pa.array([0, *ends], pa.int64() if large else pa.int32())
    array = pa.Array.from_buffers(
        storage, len(ends), [None, offsets.buffers()[1], pa.py_buffer(data)]
    )
    if check_utf8:  # bytes that orjson did not write
        array.validate(full=True)
    if json:
        return pa.ExtensionArray.from_storage(pa.json_(storage), array)
    return array


# The JSON builders write every document straight into one buffer: keeping
# a bytes object per row alive until the column is built cost four to five
# times the serializing itself (fresh allocations, not orjson).


def json_array(values: Sequence[Any]) -> pa.Array:
    """The JSON of each value, as a JSON column."""
    buf = bytearray()
    extend = buf.extend
    try:
        ends = [extend(orjson.dumps(v)) or len(buf) for v in values]
    except TypeError:
        buf.clear()
        ends = [extend(_lenient(v)) or len(buf) for v in values]
    return _strings(buf, ends, check_utf8=False, json=True)


def _json_once(
    values: Sequence[Any], known: dict[int, bytes], *, known_parsed: bool = False
) -> pa.Array:
    """``json_array`` for values that repeat (the same object) or whose JSON
    is ``known`` by object id: each is serialized once, or not at all. With
    ``known`` JSON (raw Kafka values) the column is a string column, which
    DuckDB validates as JSON on insert, unless all of it is ``known_parsed``
    (orjson parsed it: ``ArchivedEvent.raw_parsed``)."""
    buf = bytearray()
    ends: list[int] = []
    spans: dict[int, tuple[int, int]] = {}
    for value in values:
        key = id(value)
        span = spans.get(key)
        if span is not None:
            buf += buf[span[0] : span[1]]
        else:
            start = len(buf)
            doc = known.get(key)
            buf += doc if doc is not None else dumps(value)
            spans[key] = (start, len(buf))
        ends.append(len(buf))
    checked = not known or known_parsed
    return _strings(buf, ends, check_utf8=not checked, json=checked)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = pa.duration("us")


def timestamps(values: Sequence[datetime | None]) -> pa.Array:
    """A UTC timestamp column of datetimes, naive ones read as UTC (as
    pyarrow reads them). Each value minus the epoch goes to pyarrow as a
    duration: pyarrow's own conversion of an aware datetime calls its
    ``utcoffset()`` by name, about five times the cost."""
    try:
        deltas = [v - _EPOCH if v is not None else None for v in values]
    except TypeError:  # a naive datetime: pyarrow reads it as UTC
        return pa.array(values, TS)
    return pa.array(deltas, _US).view(TS)


def id_keys(ids: Sequence[str]) -> pa.Array:
    """``schema.ID_KEY`` of each id (the first 60 bits of its md5), computed
    here once per batch rather than by DuckDB in both the lookup and the
    insert of a write."""
    return pa.array([int.from_bytes(md5(i.encode()).digest()[:8]) >> 4 for i in ids], pa.int64())


def alert_tables(
    alerts: Sequence[Alert], ingest_time: datetime, archived: Iterable[ArchivedEvent] = ()
) -> tuple[pa.Table, pa.Table]:
    """The ``alerts`` rows of ``alerts`` and their ``alert_evidence`` rows.

    An event cited by several alerts (the stream shares one event object
    between the alerts of its rules and its correlations) is serialized once,
    and not at all when it is in ``archived`` with its raw JSON."""
    n = len(alerts)
    ids = [a.id for a in alerts]
    evidence = [a.evidence for a in alerts]
    counts = list(map(len, evidence))
    alerts_table = pa.table(
        {
            "ord": pa.array(range(n), pa.int32()),
            "id": pa.array(ids, pa.string()),
            "rule_id": pa.array([a.rule_id for a in alerts], pa.string()),
            "rule_title": pa.array([a.rule_title for a in alerts], pa.string()),
            "level": pa.array([a.level for a in alerts], pa.string()),
            "tags": pa.array([a.tags for a in alerts], pa.list_(pa.string())),
            "rule_hash": pa.array([a.rule_hash for a in alerts], pa.string()),
            "type": pa.array([a.type for a in alerts], pa.string()),
            "group_values": json_array([a.group for a in alerts]),
            "window_start": timestamps([a.window_start for a in alerts]),
            "window_end": timestamps([a.window_end for a in alerts]),
            "first_seen": timestamps([a.first_seen for a in alerts]),
            "last_seen": timestamps([a.last_seen for a in alerts]),
            "ingest_time": pa.repeat(pa.scalar(ingest_time, TS), n),
            "zone_crossing": pa.array([a.zone_crossing for a in alerts], pa.string()),
            "origin": pa.array([a.origin for a in alerts], pa.string()),
            "evidence_count": pa.array(counts, pa.int32()),
            "id_key": id_keys(ids),
            "late": pa.array([a.late for a in alerts], pa.bool_()),
        }
    )
    evs = [ev for cited in evidence for ev in cited]
    events = [e.event for e in evs]
    known = {id(e.event): e.raw for e in archived if e.raw is not None}
    if known or len(set(map(id, events))) < len(events):
        parsed = all(e.raw_parsed for e in archived if e.raw is not None)
        event_json = _json_once(events, known, known_parsed=parsed)
    else:
        event_json = json_array(events)
    evidence_table = pa.table(
        {
            "alert_id": pa.array(
                [i for i, count in zip(ids, counts, strict=True) for _ in range(count)],
                pa.string(),
            ),
            "ordinal": pa.array([k for count in counts for k in range(count)], pa.int32()),
            "event_id": pa.array([e.event_id for e in evs], pa.string()),
            "topic": pa.array([e.topic for e in evs], pa.string()),
            "partition": pa.array([e.partition for e in evs], pa.int32()),
            "offset": pa.array([e.offset for e in evs], pa.int64()),
            "line": pa.array([e.line for e in evs], pa.int64()),
            "event_time": timestamps([e.time for e in evs]),
            "event": event_json,
        }
    )
    return alerts_table, evidence_table


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


def _json_path(parts: tuple[str, ...]) -> str:
    return "$." + ".".join(parts)


def _column_sql(
    paths: tuple[tuple[str, ...], ...], slot: dict[str, int], lower: bool, flat: bool
) -> str:
    """SQL reading one archive column from ``_x`` (the text of the event's
    value at every path) and ``_s`` (``json_extract_string`` at every path):
    per candidate path the nested value, else (missing or null; with
    ``flat``) the flat dotted key at the top; the first candidate with text
    wins."""
    candidates = []
    for path in paths:
        nested = slot[_json_path(path)]
        if flat:
            candidates.append(
                f"CASE WHEN _s[{nested}] IS NULL "
                f"THEN _x[{slot[_flat_path(path)]}] ELSE _x[{nested}] END"
            )
        else:
            candidates.append(f"_x[{nested}]")
    found = candidates[0] if len(candidates) == 1 else f"coalesce({', '.join(candidates)})"
    return f"lower({found})" if lower else found


def _flat_path(parts: tuple[str, ...]) -> str:
    return '$."' + ".".join(parts) + '"'


def _events_insert_sql(flat: bool) -> str:
    paths = [
        p(path)
        for _, candidates, _ in _EVENT_FIELDS
        for path in candidates
        for p in ((_json_path, _flat_path) if flat else (_json_path,))
    ]
    slot = {path: i + 1 for i, path in enumerate(paths)}  # DuckDB lists count from 1
    listed = ", ".join(f"'{path}'" for path in paths)
    columns = {name: _column_sql(c, slot, lower, flat) for name, c, lower in _EVENT_FIELDS}
    derived = ",\n           ".join(f"{sql} AS {name}" for name, sql in columns.items())
    # The topic names the source; offline, the dataset's first part does.
    chosen = [
        "coalesce(source, split_part(dataset, '.', 1)) AS source" if c == "source" else f'"{c}"'
        for c in EVENT_COLUMNS
    ]
    # The text of a value: a string as it is ('' is no value), a number or
    # boolean as JSON spells it, no value for objects, arrays and null.
    # json_extract_string already gives no value for null, and the JSON of
    # an object or array: only a text starting with { or [ can be one, so
    # only then is the value's type asked for (a second parse of the event).
    # CASE runs each branch on the elements the ones before left, so most
    # events are parsed once. (``{{``: the statement is a template for
    # ``str.format``.) One lambda over the list, not an expression per
    # column: DuckDB plans every statement, and per-column expressions
    # doubled that (~5 -> ~11 ms per statement, more than they saved).
    text = (
        "list_transform(_s, lambda v, i: CASE WHEN v IS NULL THEN NULL "
        "WHEN NOT (starts_with(v, '{{') OR starts_with(v, '[')) THEN nullif(v, '') "
        f"WHEN json_type(event, [{listed}][i]) IN ('OBJECT', 'ARRAY') THEN NULL ELSE v END)"
    )
    return (
        f"INSERT INTO events SELECT {', '.join(chosen)} FROM (\n"
        f"    SELECT * EXCLUDE (_s, _x),\n           {derived}\n"
        f"    FROM (SELECT *, {text} AS _x FROM (\n"
        f"        SELECT *, json_extract_string(event, [{listed}]) AS _s FROM {{table}})))"
    )


# Archive columns come from the stored JSON, in DuckDB on the store's writer
# thread: two parses per event there cost less than reading twelve fields of
# every event in Python on the stream's thread (a quarter of its time). The
# flat dotted keys (``"zone.crossing": ...`` at the top) are read only for
# batches where some event has one (``has_flat_keys``).
EVENTS_INSERT_SQL = _events_insert_sql(flat=True)
EVENTS_INSERT_NESTED_SQL = _events_insert_sql(flat=False)


def has_flat_keys(events: Sequence[ArchivedEvent]) -> bool:
    """Whether some event has a dotted key at its top (the events table's SQL
    then reads flat keys too).

    The keys of all events joined into one string and searched once: a third
    of the time of a generator over every key, on the stream's thread."""
    try:
        return "." in "".join(chain.from_iterable(map(_event_of, events)))
    except TypeError:  # a key that is not a string
        return any(isinstance(key, str) and "." in key for e in events for key in e.event)


def events_table(events: Sequence[ArchivedEvent], ingest_time: datetime) -> pa.Table:
    """What ``EVENTS_INSERT_SQL`` stores as ``events`` rows: ids, times, the
    source when the topic names one, and the event's JSON (the rest of the
    columns are read from it there)."""
    if not events:
        columns: list[tuple[Any, ...]] = [()] * len(ArchivedEvent._fields)
    else:
        columns = list(zip(*events, strict=True))
    event_id, topic, partition, offset, when, event, raw, parsed = columns
    sources = {t: source_of_topic(t) for t in set(topic)}
    if None in raw:
        buf = bytearray()
        extend = buf.extend
        ends = [
            extend(r if r is not None else dumps(e)) or len(buf)
            for r, e in zip(raw, event, strict=True)
        ]
        by_orjson = all(r is None or p for r, p in zip(raw, parsed, strict=True))
        event_json = _strings(buf, ends, check_utf8=not by_orjson, json=by_orjson)
    else:
        # Raw bytes orjson did not parse may be anything: check their UTF-8,
        # and let DuckDB validate the JSON.
        by_orjson = all(parsed)
        event_json = _strings(
            b"".join(raw),
            list(accumulate(map(len, raw))),
            check_utf8=not by_orjson,
            json=by_orjson,
        )
    n = len(events)
    return pa.table(
        {
            "event_id": pa.array(event_id, pa.string()),
            "topic": pa.array(topic, pa.string()),
            "partition": pa.array(partition, pa.int32()),
            "offset": pa.array(offset, pa.int64()),
            "time": timestamps(when),
            "ingest_time": pa.repeat(pa.scalar(ingest_time, TS), n),
            "source": pa.array([sources[t] for t in topic], pa.string()),
            "event": event_json,
        }
    )
