"""The DuckDB alert store: schema, atomic idempotent batches, state, rules."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from correlator.store import AlertStore, ArchivedEvent
from correlator.store.schema import SCHEMA_VERSION, TABLES
from zonewatch.errors import StoreError
from zonewatch.models import Alert, Evidence, alert_id

T0 = datetime(2026, 11, 2, 0, 30, tzinfo=UTC)  # 09:30 JST


def fw_event(i: int, user: str = "tanaka@city.example.lg.jp") -> dict:
    return {
        "@timestamp": (T0 + timedelta(seconds=i)).isoformat(),
        "event": {"dataset": "firewall.panos", "action": "allow", "outcome": "success"},
        "user": {"name": user},
        "source": {"ip": "10.20.1.15", "port": 50000 + i},
        "destination": {"ip": "203.0.113.80", "port": 443},
        "zone": {"source": "core", "destination": "internet", "crossing": "core->internet"},
    }


def evidence(i: int, user: str = "tanaka@city.example.lg.jp") -> Evidence:
    return Evidence(
        event_id=f"zonewatch.events.firewall:0:{i}",
        time=T0 + timedelta(seconds=i),
        topic="zonewatch.events.firewall",
        partition=0,
        offset=i,
        event=fw_event(i, user),
    )


def make_alert(n: int, evidence_count: int = 2, origin: str = "stream") -> Alert:
    evs = [evidence(n * 10 + k) for k in range(evidence_count)]
    group = {"user.name": "tanaka@city.example.lg.jp"}
    return Alert(
        id=alert_id("zw-core-direct-internet", group, None, None, [e.event_id for e in evs]),
        rule_id="zw-core-direct-internet",
        rule_title="基幹系端末からインターネットへの直接通信",
        level="high",
        tags=["attack.exfiltration", "zone.core"],
        rule_hash="a" * 64,
        group=group,
        first_seen=evs[0].time,
        last_seen=evs[-1].time,
        zone_crossing="core->internet",
        origin=origin,  # type: ignore[arg-type]
        evidence=evs,
    )


@pytest.fixture()
def store(tmp_path: Path):
    with AlertStore(tmp_path / "var" / "zonewatch.duckdb") as s:
        yield s


def count(store: AlertStore, table: str) -> int:
    return store.query(f"SELECT count(*) FROM {table}")[1][0][0]


def test_new_store_has_versioned_schema(store: AlertStore) -> None:
    _, rows = store.query("SELECT table_name FROM duckdb_tables() ORDER BY 1")
    assert set(TABLES) <= {r[0] for r in rows}
    assert store.query("SELECT max(version) FROM schema_version")[1][0][0] == SCHEMA_VERSION


def test_batch_stores_alert_evidence_and_one_outbox_row(store: AlertStore) -> None:
    alert = make_alert(1, evidence_count=3)
    assert store.write([alert]) == [alert.id]
    _, rows = store.query(
        "SELECT rule_title, level, tags, zone_crossing, evidence_count, origin, status, "
        "json_extract_string(group_values, '$.\"user.name\"') FROM alerts"
    )
    assert rows == [
        (
            "基幹系端末からインターネットへの直接通信",
            "high",
            ["attack.exfiltration", "zone.core"],
            "core->internet",
            3,
            "stream",
            "new",
            "tanaka@city.example.lg.jp",
        )
    ]
    _, ev = store.query(
        "SELECT ordinal, event_id, \"offset\", json_extract_string(event, '$.source.ip') "
        "FROM alert_evidence ORDER BY ordinal"
    )
    assert ev == [
        (k, f"zonewatch.events.firewall:0:{10 + k}", 10 + k, "10.20.1.15") for k in range(3)
    ]
    _, out = store.query("SELECT alert_id, destination, state FROM outbox")
    assert out == [(alert.id, "default", "pending")]


def test_replayed_alerts_are_not_stored_or_sent_twice(store: AlertStore) -> None:
    first = [make_alert(1), make_alert(2)]
    assert store.write(first) == [a.id for a in first]
    # A replay after a crash: same alerts plus one new one, and a duplicate in the batch.
    again = [make_alert(2), make_alert(3), make_alert(3), make_alert(1)]
    assert store.write(again) == [make_alert(3).id]
    assert count(store, "alerts") == 3
    assert count(store, "alert_evidence") == 6
    assert count(store, "outbox") == 3


def test_outbox_keeps_alert_order_within_and_across_batches(store: AlertStore) -> None:
    batches = [[make_alert(i) for i in range(b * 5, b * 5 + 5)] for b in range(3)]
    for batch in batches:
        store.write(batch)
    _, rows = store.query("SELECT alert_id FROM outbox ORDER BY seq")
    assert [r[0] for r in rows] == [a.id for batch in batches for a in batch]


def test_each_destination_gets_its_outbox_rows_in_alert_order(tmp_path: Path) -> None:
    # Several destinations per alert, in varying router order and repeated:
    # every webhook's rows (what its sender reads, ORDER BY seq) follow the
    # alerts of each batch, once each, and the whole outbox follows the
    # alerts, then each alert's router order. Batches span several DuckDB
    # vectors (2048 rows), and the second replays part of the first.
    names = ["soc", "ciso", "it", "noc"]

    def router(alert: Alert) -> list[str]:
        k = int(alert.rule_id.rsplit("-", 1)[1])
        picked = [names[(k + j) % 4] for j in range(k % 4)]
        return [*picked, *picked[:1]]  # a repeat must not send twice

    def alert(k: int) -> Alert:
        return Alert(id=f"alert-{k:05d}", rule_id=f"rule-{k}", rule_title="r", first_seen=T0,
                     last_seen=T0)  # fmt: skip

    batches = [[alert(k) for k in range(0, 3000)], [alert(k) for k in range(2500, 6000)]]
    with AlertStore(tmp_path / "o.duckdb", router=router) as s:
        for batch in batches:
            s.write(batch)
        _, stored = s.query("SELECT alert_id, destination FROM outbox ORDER BY seq")
    expected = [
        (a.id, d) for a in [alert(k) for k in range(6000)] for d in dict.fromkeys(router(a))
    ]
    assert stored == expected
    for name in names:
        mine = [a for a, d in stored if d == name]
        assert mine == sorted(set(mine)), name


def test_router_decides_destinations_and_hunt_hits_stay_quiet(tmp_path: Path) -> None:
    def router(alert: Alert) -> list[str]:
        return ["soc", "ciso"] if alert.level == "high" else ["soc"]

    with AlertStore(tmp_path / "r.duckdb", router=router) as s:
        s.write([make_alert(1)])
        assert s.query("SELECT destination FROM outbox ORDER BY seq")[1] == [("soc",), ("ciso",)]
    with AlertStore(tmp_path / "d.duckdb") as s:
        s.write([make_alert(1, origin="hunt"), make_alert(2)])
        assert count(s, "alerts") == 2
        assert s.query("SELECT alert_id FROM outbox")[1] == [(make_alert(2).id,)]


def test_batch_is_all_or_nothing(store: AlertStore) -> None:
    events = [ArchivedEvent("e1", "zonewatch.events.firewall", 0, 1, T0, fw_event(1))]
    with pytest.raises(StoreError, match="nothing stored"):
        # A partition number DuckDB cannot hold fails the last part of the batch.
        store.write(
            [make_alert(1)],
            events=events,
            state={"correlation": b"snapshot"},
            offsets={("zonewatch.events.firewall", 2**40): 5},
        )
    for table in (
        "alerts",
        "alert_evidence",
        "outbox",
        "events",
        "state_chunks",
        "consumer_offsets",
    ):
        assert count(store, table) == 0, table


def test_state_and_offsets_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "zw.duckdb"
    with AlertStore(path) as s:
        s.write([], state={"correlation": b"\x00snap1"}, offsets={("t.fw", 0): 10, ("t.fw", 1): 4})
        s.write([], state={"correlation": b"snap2"}, offsets={("t.fw", 0): 12})
    with AlertStore(path) as s:
        assert s.load_state("correlation") == b"snap2"
        assert s.load_state("missing") is None
        assert s.load_offsets() == {("t.fw", 0): 12, ("t.fw", 1): 4}


def test_events_archive_extracts_timeline_columns(store: AlertStore) -> None:
    event = fw_event(5, user="Tanaka@City.Example.LG.JP")
    event["host"] = {"name": "PC-KIKAN-0042"}
    store.write(
        [],
        events=[
            ArchivedEvent(
                "zonewatch.events.firewall:1:7", "zonewatch.events.firewall", 1, 7, T0, event
            )
        ],
    )
    _, rows = store.query(
        "SELECT source, user_name, host_name, source_ip, destination_ip, zone_crossing, action, "
        "json_extract_string(event, '$.event.dataset') FROM events"
    )
    assert rows == [
        (
            "firewall",
            "tanaka@city.example.lg.jp",
            "PC-KIKAN-0042",
            "10.20.1.15",
            "203.0.113.80",
            "core->internet",
            "allow",
            "firewall.panos",
        )
    ]


def test_events_retention_prunes_old_events(store: AlertStore) -> None:
    old = ArchivedEvent("a", None, None, None, T0 - timedelta(days=40), fw_event(1))
    new = ArchivedEvent("b", None, None, None, T0, fw_event(2))
    store.write([], events=[old, new])
    assert store.prune_events(T0 - timedelta(days=30)) == 1
    assert store.query("SELECT event_id FROM events")[1] == [("b",)]


def test_rule_versions_are_numbered_by_text_change(store: AlertStore) -> None:
    def rule(text: str, sha: str) -> SimpleNamespace:
        return SimpleNamespace(
            id="zw-core-direct-internet", title="直接通信", level="high",
            tags=["zone.core"], sha256=sha, text=text, path="rules/firewall.yml",
        )  # fmt: skip

    store.register_rules([rule("title: v1", "1" * 64)])
    store.register_rules([rule("title: v1", "1" * 64), rule("title: v2", "2" * 64)])
    _, rows = store.query("SELECT version, sha256, text FROM rules ORDER BY version")
    assert rows == [(1, "1" * 64, "title: v1"), (2, "2" * 64, "title: v2")]
    alert = replace(make_alert(1), rule_hash="2" * 64)
    store.write([alert])
    assert store.query("SELECT rule_version FROM alerts")[1] == [(2,)]
    # The store remembers versions between writes, and forgets them when
    # rules are registered: a text seen only later, an unknown one, no hash.
    later = replace(make_alert(2), rule_hash="3" * 64)
    unknown = replace(make_alert(3), rule_hash="4" * 64)
    unhashed = replace(make_alert(4), rule_hash=None)
    store.write([later])
    store.register_rules([rule("title: v3", "3" * 64)])
    store.write([replace(make_alert(2), rule_hash="3" * 64, id="again")])
    store.write([unknown, unhashed])
    _, rows = store.query("SELECT id, rule_version FROM alerts ORDER BY rowid")
    assert rows == [(alert.id, 2), (later.id, None), ("again", 3), (unknown.id, None),
                    (unhashed.id, None)]  # fmt: skip


def test_read_only_store_refuses_writes_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "zw.duckdb"
    with pytest.raises(StoreError, match="no alert store"):
        AlertStore(path, read_only=True)
    AlertStore(path).close()
    with AlertStore(path, read_only=True) as ro:
        with pytest.raises(StoreError, match="read-only"):
            ro.write([make_alert(1)])
        assert count(ro, "alerts") == 0


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zw.duckdb"
    AlertStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version (version) VALUES (99)")
    con.close()
    with pytest.raises(StoreError, match="upgrade zonewatch"):
        AlertStore(path)


def test_store_in_use_by_another_process_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "zw.duckdb"
    AlertStore(path).close()
    hold = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="in use by another process") as err:
            AlertStore(path)
        assert err.value.exit_code == 3
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


def test_commit_listeners_hear_only_batches_with_new_alerts(store: AlertStore) -> None:
    heard: list[int] = []
    store.on_commit(lambda: heard.append(1))
    store.write([make_alert(1)])
    store.write([make_alert(1)])
    store.write([], state={"k": b"v"})
    assert heard == [1]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(st.integers(0, 30), max_size=12), min_size=1, max_size=6))
def test_any_sequence_of_replayed_batches_stores_each_alert_once(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[int]]
) -> None:
    path = tmp_path_factory.mktemp("prop") / "zw.duckdb"
    seen: set[str] = set()
    with AlertStore(path) as s:
        for batch in batches:
            alerts = [make_alert(n, evidence_count=1 + n % 3) for n in batch]
            new = s.write(alerts)
            expected = list(dict.fromkeys(a.id for a in alerts if a.id not in seen))
            assert new == expected
            seen.update(new)
        assert count(s, "alerts") == len(seen)
        assert count(s, "outbox") == len(seen)
        assert count(s, "alert_evidence") == sum(1 + n % 3 for n in {n for b in batches for n in b})


def test_archive_columns_come_from_nested_or_flat_fields(store: AlertStore) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    nested = {
        "event": {"dataset": "vdi", "action": "vdi-login", "outcome": "success"},
        "user": {"name": "Sato.Kenji@city.example.lg.jp"},
        "source": {"ip": "10.10.22.51"},
        "url": {"domain": ""},
        "destination": {"ip": "10.50.10.23", "domain": "vdi-mn-03"},
        "zone": {"source": "core", "destination": "vdi", "crossing": "core->vdi"},
    }
    flat = {
        "source.user.name": "ysuzuki",
        "host.name": "LT-0203",
        "zone.crossing": "core->lgwan",
        "zone": {"crossing": None},  # null nested: the flat key answers
        "event": {"dataset": "gateway.squid", "action": 7, "outcome": ["x"]},
    }
    store.write(
        [],
        events=[
            ArchivedEvent("zonewatch.events.vdi:0:1", "zonewatch.events.vdi", 0, 1, when, nested),
            ArchivedEvent("line:2", None, None, None, when, flat),
        ],
    )
    _, rows = store.query(
        "SELECT source, user_name, destination_domain, zone_crossing, outcome, host_name, "
        "action FROM events ORDER BY event_id DESC"
    )
    assert rows[0][:5] == (
        "vdi",
        "sato.kenji@city.example.lg.jp",
        "vdi-mn-03",  # an empty url.domain does not win
        "core->vdi",
        "success",
    )
    # Offline (no topic) the dataset names the source; numbers read as JSON
    # spells them, arrays are no value.
    assert rows[1] == ("gateway", "ysuzuki", None, "core->lgwan", None, "LT-0203", "7")


@pytest.mark.parametrize("raw_parsed", [True, False], ids=["parsed-by-orjson", "unchecked"])
def test_evidence_keeps_the_event_json_and_shared_events_are_stored_for_each_alert(
    store: AlertStore, raw_parsed: bool
) -> None:
    # The stream gives the alerts of every rule an event matched (and its
    # correlations) the same event object, and archives the record's raw JSON
    # (which its decode parsed: it goes in unchecked; other raw JSON is checked).
    shared = evidence(1)
    own = evidence(2)
    raw = '{"event": {"dataset": "firewall.panos"}, "note": "as it arrived, 受付"}'.encode()
    archived = ArchivedEvent(
        shared.event_id, shared.topic, 0, 1, shared.time, shared.event, raw, raw_parsed
    )
    group = {"user.name": "tanaka@city.example.lg.jp"}
    alerts = [
        Alert(
            id=alert_id(rule, group, None, None, [e.event_id for e in evs]),
            rule_id=rule,
            rule_title=rule,
            first_seen=T0,
            last_seen=T0,
            evidence=evs,
        )
        for rule, evs in (("rule-a", [shared]), ("rule-b", [own, shared]))
    ]
    store.write(alerts, events=[archived])
    _, ev = store.query(
        "SELECT r.rule_id, e.event_id, e.event::VARCHAR FROM alert_evidence e "
        "JOIN alerts r ON r.id = e.alert_id ORDER BY r.rule_id, e.ordinal"
    )
    assert ev == [
        ("rule-a", shared.event_id, raw.decode()),
        ("rule-b", own.event_id, orjson.dumps(own.event).decode()),
        ("rule-b", shared.event_id, raw.decode()),
    ]
    assert store.query("SELECT event::VARCHAR FROM events")[1] == [(raw.decode(),)]
    assert store.query("SELECT event->>'$.note' FROM events")[1] == [("as it arrived, 受付",)]


# What the store trusts of the stream's raw JSON: a document orjson parses is
# one DuckDB reads as JSON (orjson is the stricter of the two).
_JSONISH = st.text(alphabet='{}[]":,. 0123456789eE+-truefalsn\\u0dD8aé受', max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_JSONISH, _JSONISH.map(lambda t: f'{{"k": "{t}"}}')))
def test_json_orjson_parses_is_json_duckdb_reads(text: str) -> None:
    try:
        orjson.loads(text.encode())
    except orjson.JSONDecodeError:
        return
    assert duckdb.execute("SELECT json_valid($1::VARCHAR)", [text]).fetchone() == (True,)


def test_json_columns_take_any_python_value(store: AlertStore) -> None:
    when = datetime(2026, 11, 2, 9, 30)  # naive: UTC by convention
    odd = {1: "int key", "when": when, "ip": ipaddress.ip_address("10.0.0.1")}
    alert = replace(make_alert(1), group=odd)
    event = ArchivedEvent("line:1", None, None, None, when, {"user": {"name": "X"}, "n": odd})
    store.write([alert], events=[event])
    _, rows = store.query(
        "SELECT group_values->>'$.\"1\"', group_values->>'$.when', group_values->>'$.ip' "
        "FROM alerts"
    )
    assert rows == [("int key", "2026-11-02T09:30:00", "10.0.0.1")]
    _, rows = store.query("SELECT user_name, time, event->>'$.n.ip' FROM events")
    assert rows == [("x", when.replace(tzinfo=UTC), "10.0.0.1")]


def test_raw_event_json_is_still_validated(store: AlertStore) -> None:
    # Only JSON orjson wrote goes in unchecked; raw record values are parsed.
    shared = evidence(1)
    bad = ArchivedEvent(shared.event_id, shared.topic, 0, 1, shared.time, shared.event, b"{oops")
    alert = replace(make_alert(1), evidence=[shared])
    with pytest.raises(StoreError, match="nothing stored"):
        store.write([alert], events=[bad])
    for table in ("alerts", "alert_evidence", "outbox", "events"):
        assert count(store, table) == 0, table


def test_submitted_batches_are_stored_in_order_and_flush_waits_for_them(
    store: AlertStore,
) -> None:
    # The correlator submits a batch and goes on; DuckDB stores it on the
    # store's writer thread.
    stored = [store.submit([make_alert(n)], offsets={("t.fw", 0): n + 1}) for n in range(6)]
    store.flush()
    assert all(s.done() for s in stored)
    assert [s.result() for s in stored] == [[make_alert(n).id] for n in range(6)]
    assert store.load_offsets() == {("t.fw", 0): 6}
    _, outbox = store.query("SELECT alert_id FROM outbox ORDER BY seq")
    assert outbox == [(make_alert(n).id,) for n in range(6)]


def test_after_a_failed_write_later_batches_are_refused(store: AlertStore) -> None:
    # A batch whose offsets come after a lost batch must not be stored: a
    # restart resumes from the offsets of the last batch stored.
    shared = evidence(20)
    bad = ArchivedEvent(shared.event_id, shared.topic, 0, 1, shared.time, shared.event, b"{oops")
    first = store.submit([make_alert(1)], offsets={("t.fw", 0): 1})
    failed = store.submit([make_alert(2)], events=[bad], offsets={("t.fw", 0): 2})
    later = store.submit([make_alert(3)], offsets={("t.fw", 0): 3})
    assert first.result() == [make_alert(1).id]
    with pytest.raises(StoreError, match="nothing stored"):
        failed.result()
    with pytest.raises(StoreError, match="an earlier write failed"):
        later.result()
    with pytest.raises(StoreError, match="an earlier write failed"):
        store.write([make_alert(4)])
    assert store.load_offsets() == {("t.fw", 0): 1}
    assert count(store, "alerts") == 1 and count(store, "outbox") == 1
