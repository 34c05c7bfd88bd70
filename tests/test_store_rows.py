"""Arrow columns the store builds from alerts: the same values pyarrow's own
conversion gives, for every kind of datetime and every alert field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.store.rows import TS, ArchivedEvent, alert_tables, id_keys, timestamps
from correlator.store.schema import ID_KEY
from zonewatch.models import Alert, Evidence, evidence_from_json

JST = timezone(timedelta(hours=9))
WHEN = datetime(2026, 11, 2, 9, 30, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [WHEN, WHEN + timedelta(microseconds=1)],
        [WHEN.astimezone(JST), None, WHEN],
        [None, None],
        [WHEN.replace(tzinfo=None), WHEN],  # naive: read as UTC
        [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
        # pydantic (the JSON edge) parses offsets into its own tzinfo class
        [evidence_from_json({"event_id": "x", "time": "2026-03-29T01:30:00.000001+09:00"}).time],
    ],
)
def test_timestamps_equal_pyarrows_conversion(values: list[datetime | None]) -> None:
    column = timestamps(values)
    assert column.type == TS
    assert column.equals(pa.array(values, TS))


def duckdb_key(alert_id: str) -> int:
    row = duckdb.execute(f"SELECT {ID_KEY.format(id='$id')}", {"id": alert_id}).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "ids",
    [
        [],
        ["a1", "", "f" * 32, "0" * 32],
        ["tanaka@city.example.lg.jp", "東京都:アラート", "x" * 1000, "\x00\n"],
    ],
)
def test_id_keys_equal_duckdbs_id_key(ids: list[str]) -> None:
    # The store looks alerts up by the keys computed here and by DuckDB alike.
    assert id_keys(ids).to_pylist() == [duckdb_key(i) for i in ids]


def test_alert_tables_carry_every_field() -> None:
    shared = Evidence(event_id="line:1", time=WHEN.replace(tzinfo=None), line=1, event={"a": 1})
    streamed = Evidence(
        event_id="t:2:7", time=WHEN.astimezone(JST), topic="t", partition=2, offset=7, event={}
    )
    full = Alert(
        id="a1",
        rule_id="r1",
        rule_title="title",
        level="high",
        tags=["x", "y"],
        type="temporal",
        rule_hash="h",
        group={"user.name": "u"},
        window_start=WHEN,
        window_end=WHEN + timedelta(minutes=5),
        first_seen=WHEN,
        last_seen=WHEN + timedelta(seconds=1),
        zone_crossing="core->internet",
        origin="hunt",
        evidence=[streamed, shared],
        late=True,
    )
    bare = Alert(id="a2", rule_id="r2", rule_title="t2", first_seen=WHEN, last_seen=WHEN)
    again = Alert(id="a3", rule_id="r1", rule_title="t", first_seen=WHEN, last_seen=WHEN,
                  evidence=[shared])  # fmt: skip
    raw = b'{"a": 1, "as": "archived"}'
    archived = [ArchivedEvent("line:1", None, None, 1, WHEN, shared.event, raw)]
    alerts, evidence = alert_tables([full, bare, again], WHEN, archived)
    assert alerts.to_pylist()[:2] == [
        {
            "ord": 0, "id": "a1", "rule_id": "r1", "rule_title": "title", "level": "high",
            "tags": ["x", "y"], "rule_hash": "h", "type": "temporal",
            "group_values": '{"user.name":"u"}', "window_start": WHEN,
            "window_end": WHEN + timedelta(minutes=5), "first_seen": WHEN,
            "last_seen": WHEN + timedelta(seconds=1), "ingest_time": WHEN,
            "zone_crossing": "core->internet", "origin": "hunt", "evidence_count": 2,
            "id_key": duckdb_key("a1"), "late": True,
        },
        {
            "ord": 1, "id": "a2", "rule_id": "r2", "rule_title": "t2", "level": "medium",
            "tags": [], "rule_hash": None, "type": "detection", "group_values": "{}",
            "window_start": None, "window_end": None, "first_seen": WHEN, "last_seen": WHEN,
            "ingest_time": WHEN, "zone_crossing": None, "origin": "stream",
            "evidence_count": 0, "id_key": duckdb_key("a2"), "late": False,
        },
    ]  # fmt: skip
    assert evidence.to_pylist() == [
        {"alert_id": "a1", "ordinal": 0, "event_id": "t:2:7", "topic": "t", "partition": 2,
         "offset": 7, "line": None, "event_time": WHEN, "event": "{}"},
        {"alert_id": "a1", "ordinal": 1, "event_id": "line:1", "topic": None,
         "partition": None, "offset": None, "line": 1, "event_time": WHEN,
         "event": raw.decode()},
        {"alert_id": "a3", "ordinal": 0, "event_id": "line:1", "topic": None,
         "partition": None, "offset": None, "line": 1, "event_time": WHEN,
         "event": raw.decode()},
    ]  # fmt: skip


def test_json_written_by_orjson_is_typed_json_and_raw_json_is_not() -> None:
    # DuckDB validates a string column on insert into a JSON column, and takes
    # Arrow's JSON type as is: only what orjson wrote skips the validation.
    shared = Evidence(event_id="line:1", time=WHEN, line=1, event={"a": 1})
    alert = Alert(id="a", rule_id="r", rule_title="t", first_seen=WHEN, last_seen=WHEN,
                  evidence=[shared])  # fmt: skip
    alerts, evidence = alert_tables([alert], WHEN)
    assert alerts.schema.field("group_values").type == pa.json_()
    assert evidence.schema.field("event").type == pa.json_()
    raw = [ArchivedEvent("line:1", None, None, 1, WHEN, shared.event, b'{"a": 1}')]
    _, evidence = alert_tables([alert], WHEN, raw)
    assert evidence.schema.field("event").type == pa.string()


def _python_text(event: dict, path: tuple[str, ...]) -> str | None:
    """An archive column as the store read it in Python before: the nested value,
    else (missing or null) the flat dotted key at the top; '' and objects no value."""
    node: object = event
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        node = event.get(".".join(path))
    if node is None or node == "" or isinstance(node, dict | list):
        return None
    return str(node)


_VALUES = st.one_of(
    st.none(),
    st.text(max_size=6),
    # strings that look like JSON objects, arrays or null: text, not values
    st.sampled_from(["{", "[", "{}", "[1]", '{"a": 1}', "null", "{x"]),
    st.integers(-(2**62), 2**62),
    st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=1),
    st.lists(st.text(max_size=2), max_size=1),
)
_PATHS = [("user", "name"), ("source", "user", "name"), ("source", "ip"), ("zone", "crossing")]


@st.composite
def _events(draw: st.DrawFn) -> dict:
    event: dict = {}
    for path in _PATHS:
        if draw(st.booleans()):
            node = event
            for part in path[:-1]:
                node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
            node[path[-1]] = draw(_VALUES)
        if draw(st.integers(0, 3)) == 0:
            event[".".join(path)] = draw(_VALUES)
    if draw(st.integers(0, 4)) == 0:
        event["source"] = draw(_VALUES)  # not an object: nothing nested under it
    return event


@settings(max_examples=200, deadline=None)
@given(events=st.lists(_events(), min_size=1, max_size=5))
def test_archive_columns_read_in_duckdb_equal_the_python_reading(
    events: list[dict], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from correlator.store import AlertStore

    db = tmp_path_factory.getbasetemp() / "archive-columns.duckdb"
    with AlertStore(db) as store:
        first = store.query("SELECT count(*) FROM events")[1][0][0]
        ids = [f"e{first + i:06d}" for i in range(len(events))]
        store.write(
            [],
            events=[
                ArchivedEvent(i, None, None, None, WHEN, e)
                for i, e in zip(ids, events, strict=True)
            ],
        )
        _, rows = store.query(
            f"SELECT user_name, source_ip, zone_crossing FROM events "
            f"WHERE event_id >= '{ids[0]}' ORDER BY event_id"
        )
    for event, (user, ip, crossing) in zip(events, rows, strict=True):
        name = _python_text(event, ("user", "name")) or _python_text(
            event, ("source", "user", "name")
        )
        assert user == (name.lower() if name else None)
        assert ip == _python_text(event, ("source", "ip"))
        assert crossing == _python_text(event, ("zone", "crossing"))
