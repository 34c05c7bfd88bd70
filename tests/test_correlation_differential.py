"""Differential test: the engine against pySigma's SQLite backend correlation queries.

pysigma-backend-sqlite 2.x compiles every correlation type into one SQL
query that anchors a window [ts - timespan, ts] at each matching event and
reports every anchor whose window satisfies the condition. The engine fires
once per satisfied window and then restarts the group, so it reports a
subset of those anchors. What must agree, on any timeline:

1. the groups that alert at all;
2. the end of each group's first alert (before any restart both evaluate
   exactly the same windows);
3. for conditions that only grow as events join a window (gte on counts,
   distinct counts, presence and non-negative sums), every engine alert ends
   at an anchor the SQL query also reports.

Timestamps are distinct so "the window at ts" means the same in both.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

from correlator.correlation import CorrelationEngine, CorrelationSettings
from correlator.correlation.yaml_rules import load_rules_text
from zonewatch.models import Evidence

BASES = "".join(
    f"""
title: Rule {k}
id: 00000000-0000-4000-8000-00000000000{i}
name: rule_{k}
logsource: {{product: zonewatch, service: test}}
detection: {{sel: {{kind: {k}}}, condition: sel}}
---"""
    for i, k in enumerate("abc", 1)
)

CORRELATIONS = {
    "event_count": ("rules: [rule_a]", "condition: {gte: 3}", "60s", True),
    "value_count": ("rules: [rule_a, rule_b]", "condition: {field: dom, gte: 2}", "60s", True),
    "temporal": ("rules: [rule_a, rule_b]", "", "60s", True),
    "temporal_ordered": ("rules: [rule_a, rule_b, rule_c]", "", "90s", True),
    "value_sum": ("rules: [rule_a]", "condition: {field: bytes, gte: 100}", "60s", True),
    "value_avg": ("rules: [rule_a, rule_b]", "condition: {field: bytes, gt: 40}", "60s", False),
}


def rule_text(ctype: str) -> str:
    rules, condition, span, _ = CORRELATIONS[ctype]
    return (
        BASES
        + f"""
title: Differential {ctype}
id: 11111111-0000-4000-8000-000000000001
correlation:
  type: {ctype}
  {rules}
  group-by: [user]
  timespan: {span}
  {condition}
"""
    )


_SQL: dict[str, str] = {}


def sql_query(ctype: str) -> str:
    if ctype not in _SQL:
        queries = sqliteBackend(timestamp_format="unix").convert(
            SigmaCollection.from_yaml(rule_text(ctype))
        )
        # Base rules the correlation does not use come out as plain queries.
        (query,) = [q for q in queries if q.startswith("WITH ")]
        _SQL[ctype] = query
    return _SQL[ctype]


def sql_ends(ctype: str, events: list[dict]) -> dict[str, set[float]]:
    con = sqlite3.connect(":memory:")
    try:
        con.execute(
            "CREATE TABLE logs (timestamp REAL, kind TEXT, user TEXT, dom TEXT, bytes INTEGER)"
        )
        con.executemany(
            "INSERT INTO logs VALUES (?, ?, ?, ?, ?)",
            [(e["t"], e["kind"], e["user"], e["dom"], e["bytes"]) for e in events],
        )
        ends: dict[str, set[float]] = defaultdict(set)
        for group_keys, end in con.execute(
            f"SELECT group_keys, window_end FROM ({sql_query(ctype)})"
        ):
            ends[orjson.loads(group_keys)["user"]].add(float(end))
        return ends
    finally:
        con.close()


def engine_ends(ctype: str, events: list[dict]) -> dict[str, list[float]]:
    loaded = load_rules_text(rule_text(ctype))
    engine = CorrelationEngine(
        loaded.correlations, loaded.resolve, CorrelationSettings(allowed_lateness_s=0)
    )
    alerts = []
    for i, e in enumerate(sorted(events, key=lambda e: e["t"])):
        event = {"kind": e["kind"], "user": e["user"], "dom": e["dom"], "bytes": e["bytes"]}
        evidence = Evidence(event_id=f"line:{i}", time=datetime.fromtimestamp(e["t"], UTC), line=i)
        hits = [loaded.resolve(f"rule_{e['kind']}").id]
        alerts += engine.process(hits, event, evidence)
    alerts += engine.flush()
    ends: dict[str, list[float]] = defaultdict(list)
    for alert in alerts:
        ends[alert.group["user"]].append(alert.window_end.timestamp())
    return ends


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 60).map(lambda x: x * 10),  # multiples of 10: spans end exactly on events
        st.sampled_from("abc"),
        st.sampled_from(["u1", "U1", "u2", "u3"]),
        st.sampled_from(["x.example", "X.EXAMPLE", "y.example", "z.example"]),
        st.integers(0, 60),
    ),
    max_size=60,
    unique_by=lambda row: row[0],
).map(
    lambda rows: [
        dict(zip(("t", "kind", "user", "dom", "bytes"), row, strict=True)) for row in rows
    ]
)


@pytest.mark.parametrize("ctype", list(CORRELATIONS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy)
def test_engine_agrees_with_the_sqlite_backend(ctype, events):
    sql = sql_ends(ctype, events)
    ours = engine_ends(ctype, events)
    assert set(ours) == set(sql), "groups that alert"
    for user, ends in ours.items():
        assert ends[0] == min(sql[user]), f"first alert of {user}"
        assert ends == sorted(ends)
        if CORRELATIONS[ctype][3]:
            assert set(ends) <= sql[user], f"every alert of {user} is a window SQL reports"


def test_a_known_timeline_alerts_in_both():
    events = [
        {"t": 0, "kind": "a", "user": "u1", "dom": "x.example", "bytes": 50},
        {"t": 10, "kind": "b", "user": "U1", "dom": "y.example", "bytes": 50},
        {"t": 20, "kind": "c", "user": "u1", "dom": "z.example", "bytes": 50},
        {"t": 30, "kind": "a", "user": "u1", "dom": "x.example", "bytes": 50},
        {"t": 40, "kind": "a", "user": "u1", "dom": "x.example", "bytes": 50},
    ]
    for ctype in CORRELATIONS:
        assert engine_ends(ctype, events)["u1"], ctype
        assert sql_ends(ctype, events)["u1"], ctype


ABSENCE = (
    BASES
    + """
title: Differential absence
id: 11111111-0000-4000-8000-000000000002
correlation:
  type: temporal
  rules: [rule_a, rule_b]
  group-by: [user]
  timespan: 60s
  condition: rule_a and not rule_b
"""
)


dense_events = st.lists(
    st.tuples(
        st.integers(0, 30).map(lambda x: x * 10),  # 5 minutes: absence windows overlap
        st.sampled_from("ab"),
        st.sampled_from(["u1", "U1", "u2"]),
        st.just("x.example"),
        st.just(1),
    ),
    max_size=31,
    unique_by=lambda row: row[0],
).map(
    lambda rows: [
        dict(zip(("t", "kind", "user", "dom", "bytes"), row, strict=True)) for row in rows
    ]
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=dense_events)
def test_absence_agrees_with_the_sqlite_backend(events):
    """SQL reports every `a` with no `b` in [a, a + 60 s]; the engine folds
    the `a`s inside an open window into it. So each engine window is one SQL
    reports, and each SQL window starts inside an engine window."""
    _SQL.setdefault("absence", _absence_query())
    sql: dict[str, set[float]] = defaultdict(set)
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE logs (timestamp REAL, kind TEXT, user TEXT, dom TEXT, bytes INTEGER)")
    con.executemany(
        "INSERT INTO logs VALUES (?, ?, ?, ?, ?)",
        [(e["t"], e["kind"], e["user"], e["dom"], e["bytes"]) for e in events],
    )
    for group_keys, start in con.execute(
        f"SELECT group_keys, window_start FROM ({_SQL['absence']})"
    ):
        sql[orjson.loads(group_keys)["user"]].add(float(start))
    con.close()
    ours = engine_starts(ABSENCE, events)
    assert set(ours) == set(sql)
    for user, starts in ours.items():
        assert set(starts) <= sql[user]
        for start in sql[user]:
            assert any(s <= start <= s + 60 for s in starts)


def _absence_query() -> str:
    queries = sqliteBackend(timestamp_format="unix").convert(SigmaCollection.from_yaml(ABSENCE))
    (query,) = [q for q in queries if q.startswith("WITH ")]
    return query


def engine_starts(text: str, events: list[dict]) -> dict[str, list[float]]:
    loaded = load_rules_text(text)
    engine = CorrelationEngine(
        loaded.correlations, loaded.resolve, CorrelationSettings(allowed_lateness_s=0)
    )
    alerts = []
    for i, e in enumerate(sorted(events, key=lambda e: e["t"])):
        event = {"kind": e["kind"], "user": e["user"], "dom": e["dom"], "bytes": e["bytes"]}
        evidence = Evidence(event_id=f"line:{i}", time=datetime.fromtimestamp(e["t"], UTC), line=i)
        alerts += engine.process([loaded.resolve(f"rule_{e['kind']}").id], event, evidence)
    alerts += engine.flush()
    starts: dict[str, list[float]] = defaultdict(list)
    for alert in alerts:
        assert alert.window_end.timestamp() - alert.window_start.timestamp() == 60
        starts[alert.group["user"]].append(alert.window_start.timestamp())
    return starts
