"""Schema migrations of the alert store, and its memory limit."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest
from structlog.testing import capture_logs

from correlator.store import AlertStore
from correlator.store.read import load_alerts
from correlator.store.rows import ArchivedEvent
from correlator.store.schema import MIGRATIONS, SCHEMA_VERSION
from tests.test_store import T0, count, fw_event, make_alert
from zonewatch.errors import StoreError
from zonewatch.models import Alert


def make_v1_store(path: Path, alerts: list[Alert]) -> None:
    """A store as zonewatch with schema version 1 left it: ``alerts`` keyed
    by id, each alert with its evidence and a pending outbox row."""
    con = duckdb.connect(str(path))
    v1 = MIGRATIONS[1]
    assert isinstance(v1, list)
    for statement in v1:
        con.execute(statement)
    con.execute("INSERT INTO schema_version (version) VALUES (1)")
    for a in alerts:
        con.execute(
            "INSERT INTO alerts (id, rule_id, rule_title, level, tags, rule_hash, type, "
            "group_values, first_seen, last_seen, ingest_time, zone_crossing, origin, "
            "status, evidence_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [a.id, a.rule_id, a.rule_title, a.level, a.tags, a.rule_hash, a.type,
             '{"user.name": "tanaka@city.example.lg.jp"}', a.first_seen, a.last_seen, T0,
             a.zone_crossing, a.origin, "acknowledged", len(a.evidence)],
        )  # fmt: skip
        for k, ev in enumerate(a.evidence):
            con.execute(
                "INSERT INTO alert_evidence (alert_id, ordinal, event_id, event_time, event) "
                "VALUES (?, ?, ?, ?, '{}')",
                [a.id, k, ev.event_id, ev.time],
            )
        con.execute(
            "INSERT INTO outbox (alert_id, destination, created_at) VALUES (?, 'default', ?)",
            [a.id, T0],
        )
    con.close()


def test_version_1_store_is_migrated_keeping_its_alerts(tmp_path: Path) -> None:
    path = tmp_path / "zw.duckdb"
    old = [make_alert(1), make_alert(2)]
    make_v1_store(path, old)
    with capture_logs() as logs, AlertStore(path) as store:
        assert [(e["event"], e["from_version"], e["to"]) for e in logs] == [
            ("store_migrated", 1, SCHEMA_VERSION)
        ]
        _, rows = store.query(
            "SELECT id, rule_title, tags, status, evidence_count, "
            "json_extract_string(group_values, '$.\"user.name\"') FROM alerts"
        )
        assert rows == [
            (a.id, a.rule_title, a.tags, "acknowledged", 2, "tanaka@city.example.lg.jp")
            for a in old
        ]
        assert count(store, "alert_evidence") == 4
        # A replay of alerts stored before the migration is still skipped.
        assert store.write([make_alert(2), make_alert(3), make_alert(1)]) == [make_alert(3).id]
        assert count(store, "alerts") == 3
        # The outbox keeps its rows and their order; new rows come after them.
        _, outbox = store.query("SELECT alert_id FROM outbox ORDER BY seq")
        assert outbox == [(make_alert(1).id,), (make_alert(2).id,), (make_alert(3).id,)]
        # The outbox sender reads old and new alerts back by id.
        found = load_alerts(store.cursor(), [make_alert(1).id, make_alert(3).id])
        assert {aid: n for aid, (_, n) in found.items()} == {
            make_alert(1).id: 2,
            make_alert(3).id: 2,
        }
    # Migrated once: reopening logs nothing and keeps everything.
    with capture_logs() as logs, AlertStore(path) as store:
        assert logs == []
        assert count(store, "alerts") == 3


def test_read_only_open_of_a_version_1_store_asks_for_a_migration(tmp_path: Path) -> None:
    path = tmp_path / "zw.duckdb"
    make_v1_store(path, [make_alert(1)])
    with pytest.raises(StoreError, match="open it once read-write"):
        AlertStore(path, read_only=True)


def test_load_alerts_returns_only_the_ids_asked_for(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb") as store:
        alerts = [make_alert(n) for n in range(50)]
        store.write(alerts)
        want = [alerts[3].id, alerts[40].id, "0" * 32, "not-a-hex-id"]
        assert set(load_alerts(store.cursor(), want)) == {alerts[3].id, alerts[40].id}


def test_alert_ids_that_are_not_hex_are_deduplicated_too(tmp_path: Path) -> None:
    # Alert ids are deterministic sha256 prefixes, but the store takes any text.
    odd = [replace(make_alert(1), id=i) for i in ("a", "b", "日本", "a")]
    with AlertStore(tmp_path / "zw.duckdb") as store:
        assert store.write(odd) == ["a", "b", "日本"]
        assert store.write(odd[::-1]) == []
        assert count(store, "alerts") == 3


def test_writes_and_queries_spill_beyond_the_memory_limit(tmp_path: Path) -> None:
    path = tmp_path / "zw.duckdb"
    with AlertStore(path, memory_limit="48MB") as store:
        store.write([make_alert(n) for n in range(200)])
        limit = store.query("SELECT current_setting('memory_limit')")[1][0][0]
        assert limit.endswith("MiB") and float(limit.split()[0]) <= 48
        # Grouping and sorting ~2M 32-character strings needs well over 48 MB.
        _, rows = store.query(
            "SELECT count(*), min(m) FROM (SELECT m FROM "
            "(SELECT md5(i::VARCHAR) AS m FROM range(2000000) t(i)) GROUP BY m)"
        )
        assert rows == [(2_000_000, "00000f7264c27ba6fea0c837ed6aa0aa")]
        _, rows = store.query(
            "SELECT m FROM (SELECT md5(i::VARCHAR) AS m FROM range(2000000) t(i)) "
            "ORDER BY m DESC LIMIT 1 OFFSET 1999999"
        )
        assert rows == [("00000f7264c27ba6fea0c837ed6aa0aa",)]
        store.write([make_alert(n) for n in range(200, 400)])
        assert count(store, "alerts") == 400


def test_invalid_memory_limit_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"invalid memory limit 'lots'.*512MB"):
        AlertStore(tmp_path / "zw.duckdb", memory_limit="lots")


def _archive(n: int) -> list[ArchivedEvent]:
    topic = "zonewatch.events.firewall"
    return [
        ArchivedEvent(f"{topic}:0:{k}", topic, 0, k, T0 + timedelta(seconds=k), fw_event(k))
        for k in range(n)
    ]


def _event_compression(store: AlertStore) -> set[str]:
    con = store.cursor()
    con.execute("CHECKPOINT")
    rows = con.execute(
        "SELECT DISTINCT compression FROM pragma_storage_info('events') "
        "WHERE column_name = 'event' AND segment_type <> 'VALIDITY'"
    ).fetchall()
    return {r[0].upper() for r in rows}


def _zstd_declared(store: AlertStore) -> bool:
    """Whether the archive's JSON column is declared zstd (DuckDB may also
    choose zstd for a segment by itself)."""
    row = (
        store.cursor()
        .execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'events'")
        .fetchone()
    )
    assert row is not None
    return "USING COMPRESSION ZSTD" in row[0].upper()


def test_a_new_store_compresses_the_archives_json_with_zstd(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb") as store:
        store.write([], events=_archive(3000))
        assert _zstd_declared(store)
        assert _event_compression(store) == {"ZSTD"}
        _, rows = store.query(
            "SELECT count(*), count(DISTINCT json_extract_string(event, '$.source.ip')) "
            "FROM events WHERE source = 'firewall'"
        )
        assert rows == [(3000, len({fw_event(k)["source"]["ip"] for k in range(3000)}))]


def test_an_archive_that_holds_events_keeps_them_and_its_format(tmp_path: Path) -> None:
    # A version 7 store with 3,000 archived events: version 8 does not copy
    # them over (that would cost a copy of the whole archive at start).
    path = tmp_path / "zw.duckdb"
    con = duckdb.connect(str(path))
    for version in range(1, 8):
        migration = MIGRATIONS[version]
        assert isinstance(migration, list)
        for statement in migration:
            con.execute(statement)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    con.execute(
        "INSERT INTO events (event_id, time, ingest_time, source, event) "
        "SELECT 'fw:0:' || i, now(), now(), 'firewall', json_object('n', i) "
        "FROM range(3000) t(i)"
    )
    con.close()
    with capture_logs() as logs, AlertStore(path) as store:
        assert [e["event"] for e in logs] == ["store_migrated"]
        assert not _zstd_declared(store)
        store.write([], events=_archive(100))
        assert count(store, "events") == 3100
        _, rows = store.query(
            "SELECT sum((event->>'n')::INT) FROM events WHERE event_id LIKE 'fw:%'"
        )
        assert rows == [(sum(range(3000)),)]


def test_a_file_of_an_older_storage_version_is_migrated_without_zstd(tmp_path: Path) -> None:
    # DuckDB refuses zstd for strings in files of storage versions before
    # 1.2: such a store migrates all the same, its archive as before.
    path = tmp_path / "zw.duckdb"
    duckdb.connect(str(path), config={"storage_compatibility_version": "v1.0.0"}).close()
    with AlertStore(path) as store:
        store.write([], events=_archive(3000))
        assert not _zstd_declared(store)
        assert "ZSTD" not in _event_compression(store)
        assert count(store, "events") == 3000
        assert store.query("SELECT max(version) FROM schema_version")[1] == [(SCHEMA_VERSION,)]
