"""Forensic SQL: the read-only guard, saved queries, output formats, exit
codes, and querying through a running correlator's endpoint."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import structlog

from correlator.store import AlertStore, ArchivedEvent, query_endpoint
from correlator.store.output import to_timeline
from correlator.store.saved import parse_saved_query, referenced_params, saved_queries
from correlator.store.server import serve_queries
from correlator.store.timerange import parse_time
from tests.test_store import T0, fw_event, make_alert
from zonewatch.app.cli import main
from zonewatch.errors import QueryError

USER = "tanaka@city.example.lg.jp"


def intune_event(i: int, compliance: str) -> dict:
    return {
        "@timestamp": (T0 + timedelta(hours=i)).isoformat(),
        "event": {"dataset": "intune.managed_device", "action": "compliance-changed"},
        "host": {"name": "PC-KIKAN-0042", "os": {"name": "Windows"}},
        "device": {"id": "6f1d2c34-aaaa-4bbb-8ccc-0123456789ab"},
        "user": {"name": USER},
        "intune": {"compliance": compliance, "ownership": "corporate"},
    }


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    """A store with a day of one user's events from three sources and two alerts."""
    path = tmp_path / "zonewatch.duckdb"
    events = []
    for i in range(6):
        e = fw_event(i * 600)  # every 10 minutes from 09:30 JST
        events.append(
            ArchivedEvent(f"zonewatch.events.firewall:0:{i}", "zonewatch.events.firewall", 0, i,
                          T0 + timedelta(seconds=i * 600), e)
        )  # fmt: skip
    vdi = {
        "@timestamp": T0.isoformat(),
        "event": {"dataset": "vdi.horizon", "action": "session-start"},
        "user": {"name": USER},
        "source": {"ip": "10.20.1.15"},
        "destination": {"ip": "10.50.0.10"},
        "zone": {"source": "core", "destination": "vdi", "crossing": "core->vdi"},
    }
    events.append(ArchivedEvent("zonewatch.events.vdi:0:0", "zonewatch.events.vdi", 0, 0, T0, vdi))
    other = fw_event(1, user="suzuki@city.example.lg.jp")
    events.append(ArchivedEvent("zonewatch.events.firewall:1:0", "zonewatch.events.firewall", 1, 0,
                                T0, other))  # fmt: skip
    for i, state in enumerate(["compliant", "noncompliant", "compliant"]):
        events.append(
            ArchivedEvent(f"zonewatch.events.intune:0:{i}", "zonewatch.events.intune", 0, i,
                          T0 + timedelta(hours=i), intune_event(i, state))
        )  # fmt: skip
    with AlertStore(path) as store:
        store.write([make_alert(1), make_alert(2, evidence_count=3)], events=events)
    return path


def run_cli(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, bytes, str]:
    capsysbinary.readouterr()  # drop what fixtures logged
    try:
        main(["query", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        # main() points structlog at this test's captured stderr; do not leak it.
        structlog.reset_defaults()
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


# -- the read-only guard --------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("COPY alerts TO '/tmp/stolen.csv'", "refused COPY"),
        ("ATTACH '/tmp/other.duckdb' AS o", "refused ATTACH"),
        ("INSTALL httpfs", "refused LOAD"),
        ("LOAD httpfs", "refused LOAD"),
        ("SELECT * FROM read_csv('/etc/passwd')", "cannot read files"),
        ("SELECT * FROM read_text('/etc/hostname')", "cannot read files"),
        ("SELECT * FROM read_json('https://example.com/x.json')", "refused"),
        ("DELETE FROM alerts", "refused DELETE"),
        ("UPDATE outbox SET state = 'delivered'", "refused UPDATE"),
        ("DROP TABLE alerts", "refused DROP"),
        ("CREATE TABLE x AS SELECT 1", "refused CREATE"),
        ("SET enable_external_access = true", "refused SET"),
        ("PRAGMA database_list", "refused PRAGMA"),
        ("SELECT 1; DELETE FROM alerts", "one statement per query"),
        ("EXPLAIN ANALYZE DELETE FROM alerts", "read-only for queries"),
        ("SELECT nextval('outbox_seq')", "read-only for queries"),
        ("SELECT * FROM glob('/etc/*')", "cannot read files"),
        ("SELECT * FROM read_blob('/etc/hostname')", "cannot read files"),
        ("", "empty query"),
    ],
)
def test_queries_that_could_change_or_leak_are_refused(db: Path, sql: str, message: str) -> None:
    with AlertStore(db, read_only=True) as store, pytest.raises(QueryError, match=message):
        store.query(sql)


def test_a_write_hidden_in_a_select_still_cannot_change_the_store(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb") as store:
        store.write([make_alert(1)])
        with pytest.raises(QueryError):
            # A CTE with a data-modifying statement is parsed as DELETE, and the
            # READ ONLY transaction would refuse it anyway.
            store.query("WITH d AS (DELETE FROM alerts RETURNING id) SELECT * FROM d")
        assert store.query("SELECT count(*) FROM alerts")[1] == [(1,)]


def test_slow_query_is_cancelled_with_a_hint(db: Path) -> None:
    with AlertStore(db, read_only=True) as store, pytest.raises(QueryError, match="cancelled"):
        store.query("SELECT sum(hash(i)) FROM range(10000000000) t(i)", timeout_s=0.2)


def test_named_and_positional_parameters(db: Path) -> None:
    with AlertStore(db, read_only=True) as store:
        assert store.query("SELECT count(*) FROM events WHERE source = $s", {"s": "intune"})[1] == [
            (3,)
        ]
        assert store.query("SELECT count(*) FROM events WHERE source = ?", ["vdi"])[1] == [(1,)]


# -- saved queries ----------------------------------------------------------


def test_shipped_saved_queries_parse_and_declare_their_parameters() -> None:
    queries = saved_queries()
    for name in ("user-timeline", "alerts-by-rule-and-crossing", "device-compliance-history",
                 "alert-evidence", "recent-alerts", "outbox-status"):  # fmt: skip
        assert name in queries, name
        assert queries[name].description
        declared = {p.name for p in queries[name].params} | {"since", "until"}
        assert referenced_params(queries[name].sql) <= declared, name
    assert [p.name for p in queries["user-timeline"].params if p.required] == ["user"]


def test_user_folder_overrides_and_adds_queries(tmp_path: Path) -> None:
    (tmp_path / "vip.sql").write_text(
        "-- name: vip-logins\n-- description: logins of one VIP\n"
        "-- param: who (required) user\n-- param: n = 5  rows\n"
        "SELECT * FROM events WHERE user_name = $who LIMIT $n::INT\n",
        encoding="utf-8",
    )
    query = saved_queries([tmp_path])["vip-logins"]
    assert query.bind({"who": "x"}) == {"who": "x", "n": "5"}
    with pytest.raises(QueryError, match="needs --param who"):
        query.bind({})
    with pytest.raises(QueryError, match="has no parameter color"):
        query.bind({"who": "x", "color": "red"})


def test_parameter_names_inside_strings_and_comments_are_not_parameters() -> None:
    assert referenced_params("SELECT '$no' -- $nope\n, $yes, $yes2 FROM t") == {"yes", "yes2"}


def test_user_timeline_spans_sources_in_time_order(db: Path, capsysbinary) -> None:
    code, out, _ = run_cli(capsysbinary, "--db", str(db), "user-timeline",
                           "--param", "user=TANAKA@city.example.lg.jp", "-f", "jsonl")  # fmt: skip
    assert code == 0
    rows = [orjson.loads(line) for line in out.splitlines()]
    times = [r["datetime"] for r in rows]
    assert times == sorted(times)
    assert {r["source"] for r in rows} == {"firewall", "vdi", "intune"}
    # archive events plus alert evidence not archived, nobody else's events
    assert all("suzuki" not in r["message"] for r in rows)
    evidence_ids = {f"zonewatch.events.firewall:0:{n}" for n in (10, 11, 20, 21, 22)}
    assert evidence_ids <= {r["event_id"] for r in rows}
    first_fw = next(r for r in rows if r["event_id"] == "zonewatch.events.firewall:0:10")
    assert first_fw["alerts"] == [make_alert(1).id]
    assert rows[0]["timestamp_desc"] == "Event Time"


def test_since_and_until_bound_saved_queries_in_jst(db: Path, capsysbinary) -> None:
    # 09:35-09:55 JST holds the firewall events of 09:40 and 09:50 only.
    code, out, _ = run_cli(capsysbinary, "--db", str(db), "user-timeline", "-p", f"user={USER}",
                           "--since", "2026-11-02T09:35", "--until", "2026-11-02T09:55",
                           "-f", "csv")  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.decode())))
    assert [r["datetime"] for r in rows] == [
        "2026-11-02T00:40:00+00:00",
        "2026-11-02T00:50:00+00:00",
    ]


def test_device_compliance_history(db: Path, capsysbinary) -> None:
    code, out, _ = run_cli(capsysbinary, "--db", str(db), "device-compliance-history",
                           "-p", "device=pc-kikan-0042", "-f", "json")  # fmt: skip
    assert code == 0
    assert [r["compliance"] for r in orjson.loads(out)] == [
        "compliant",
        "noncompliant",
        "compliant",
    ]


def test_alert_evidence_by_id_prefix(db: Path, capsysbinary) -> None:
    alert = make_alert(2, evidence_count=3)
    code, out, _ = run_cli(capsysbinary, "--db", str(db), "alert-evidence",
                           "-p", f"alert_id={alert.id[:10]}", "-f", "jsonl")  # fmt: skip
    assert code == 0
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [r["event_id"] for r in rows] == [e.event_id for e in alert.evidence]
    assert orjson.loads(rows[0]["event"])["source"]["ip"] == "10.20.1.15"


def test_alerts_by_rule_and_crossing(db: Path, capsysbinary) -> None:
    code, out, _ = run_cli(
        capsysbinary, "--db", str(db), "alerts-by-rule-and-crossing", "-f", "json"
    )
    assert code == 0
    (row,) = orjson.loads(out)
    assert (row["zone_crossing"], row["alerts"], row["evidence"]) == ("core->internet", 2, 5)
    assert row["users"] == [USER]


# -- output and exit codes -------------------------------------------------------


def test_parquet_export_round_trips(db: Path, tmp_path: Path, capsysbinary) -> None:
    out = tmp_path / "alerts.parquet"
    code, _, _ = run_cli(
        capsysbinary, "--db", str(db), "recent-alerts", "-f", "parquet", "--out", str(out)
    )
    assert code == 0
    table = pq.read_table(out)
    assert table.num_rows == 2
    assert set(table.column("rule_title").to_pylist()) == {make_alert(1).rule_title}


def test_parquet_to_stdout_is_a_usage_error(db: Path, capsysbinary) -> None:
    code, _, err = run_cli(capsysbinary, "--db", str(db), "SELECT 1", "-f", "parquet")
    assert code == 2 and "--out" in err


def test_piped_output_defaults_to_csv_and_table_is_plain_text(db: Path, capsysbinary) -> None:
    code, out, _ = run_cli(
        capsysbinary, "--db", str(db), "SELECT level, count(*) AS n FROM alerts GROUP BY 1"
    )
    assert code == 0 and out.decode().splitlines() == ["level,n", "high,2"]
    code, out, _ = run_cli(
        capsysbinary, "--db", str(db), "SELECT rule_title FROM alerts LIMIT 1", "-f", "table"
    )
    text = out.decode()
    assert "基幹系端末からインターネットへの直接通信" in text and "\x1b[" not in text


def test_exit_codes(db: Path, tmp_path: Path, capsysbinary) -> None:
    code, _, err = run_cli(capsysbinary, "--db", str(db), "SELEC * FROM alerts")
    assert code == 2 and "syntax error" in err
    code, _, err = run_cli(capsysbinary, "--db", str(db), "DELETE FROM alerts")
    assert code == 2 and "refused DELETE" in err
    code, _, err = run_cli(capsysbinary, "--db", str(db), "SELECT * FROM no_such_table")
    assert code == 2 and "no_such_table" in err
    code, _, err = run_cli(capsysbinary, "--db", str(tmp_path / "missing.duckdb"), "SELECT 1")
    assert code == 3 and "no alert store" in err
    code, _, err = run_cli(capsysbinary, "--db", str(db), "no-such-query")
    assert code == 2 and "user-timeline" in err
    code, _, err = run_cli(capsysbinary, "--db", str(db), "SELECT 1", "--since", "24h")
    assert code == 2 and "$since" in err


def test_timeline_export_has_timesketch_fields(db: Path, capsysbinary) -> None:
    sql = "SELECT event_time, event_id, topic FROM alert_evidence ORDER BY 1"
    code, out, _ = run_cli(capsysbinary, "--db", str(db), "--timeline", "-f", "jsonl", sql)
    assert code == 0
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert len(rows) == 5
    first = rows[0]
    assert list(first)[:3] == ["message", "datetime", "timestamp_desc"]
    assert datetime.fromisoformat(first["datetime"]) == T0 + timedelta(seconds=10)
    assert "event_id=zonewatch.events.firewall:0:10" in first["message"]


def test_timeline_without_time_column_is_refused() -> None:
    import pyarrow as pa

    with pytest.raises(QueryError, match="time column"):
        to_timeline(pa.table({"a": [1]}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-02", "2026-11-01T15:00:00+00:00"),  # midnight JST
        ("2026-11-02T09:30:00+09:00", "2026-11-02T00:30:00+00:00"),
        ("2026-11-02T00:30:00Z", "2026-11-02T00:30:00+00:00"),
        ("90m", "2026-11-02T02:00:00+00:00"),
        ("1d", "2026-11-01T03:30:00+00:00"),
    ],
)
def test_time_bounds(text: str, expected: str) -> None:
    assert parse_time(text, now=datetime(2026, 11, 2, 3, 30, tzinfo=UTC)) == expected


def test_bad_time_bound_says_how_to_write_it() -> None:
    with pytest.raises(QueryError, match="ISO 8601"):
        parse_time("yesterday")


def test_saved_query_file_header_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "x.sql"
    path.write_text("-- param: !bad\nSELECT 1\n", encoding="utf-8")
    with pytest.raises(QueryError, match="bad '-- param:' line"):
        parse_saved_query(path)


# -- the query endpoint of a running correlator ----------------------------------


def _writer(store: AlertStore, batches: int, stop: threading.Event, pace_s: float = 0) -> None:
    for b in range(batches):
        if stop.wait(pace_s):  # pacing leaves the CPU to the querying process
            return
        store.write([make_alert(100 + b * 4 + k, evidence_count=3) for k in range(4)])


def test_endpoint_answers_consistent_snapshots_while_the_store_writes(tmp_path: Path) -> None:
    db = tmp_path / "zonewatch.duckdb"
    with AlertStore(db) as store:
        serve_queries(store)
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(store, 60, stop))
        writer.start()
        snapshots = []
        try:
            while writer.is_alive() or not snapshots:
                table = query_endpoint(
                    db,
                    "SELECT (SELECT count(*) FROM alerts) AS a, "
                    "(SELECT count(*) FROM alert_evidence) AS e, "
                    "(SELECT count(*) FROM outbox) AS o",
                )
                assert table is not None
                snapshots.append(table.to_pylist()[0])
        finally:
            stop.set()
            writer.join()
        assert all(s["e"] == 3 * s["a"] and s["o"] == s["a"] for s in snapshots)
        assert len({s["a"] for s in snapshots}) > 1  # we really read while it wrote
        final = query_endpoint(db, "SELECT count(*) AS n FROM alerts")
        assert final is not None and final.to_pylist() == [{"n": 240}]
        with pytest.raises(QueryError, match="refused DELETE"):
            query_endpoint(db, "DELETE FROM alerts")


def test_zonewatch_query_in_another_process_goes_through_the_endpoint(tmp_path: Path) -> None:
    db = tmp_path / "zonewatch.duckdb"
    with AlertStore(db) as store:
        serve_queries(store)
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(store, 100_000, stop, 0.005))
        writer.start()
        try:
            env = {**os.environ, "ZONEWATCH_LOG_LEVEL": "warning"}
            sql = (
                "SELECT (SELECT count(*) FROM alerts) AS a, "
                "(SELECT count(*) FROM alert_evidence) AS e"
            )
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "zonewatch",
                    "query",
                    "--db",
                    str(db),
                    "-f",
                    "jsonl",
                    sql,
                ],
                capture_output=True,
                timeout=60,
                env=env,
            )
        finally:
            stop.set()
            writer.join()
        final = store.query("SELECT count(*) FROM alerts")[1][0][0]
    assert done.returncode == 0, done.stderr.decode()
    row = orjson.loads(done.stdout)
    assert row["e"] == 3 * row["a"]
    assert 0 < row["a"] < final  # it answered mid-stream, not before or after


def test_tcp_endpoint_needs_its_token_and_stale_endpoint_falls_back(tmp_path: Path) -> None:
    import socket

    db = tmp_path / "zonewatch.duckdb"
    with AlertStore(db) as store:
        store.write([make_alert(1)])
        server = serve_queries(store, host="127.0.0.1")
        address = orjson.loads(server.endpoint_path.read_bytes())
        assert oct(server.endpoint_path.stat().st_mode & 0o777) == "0o600"
        result = query_endpoint(db, "SELECT count(*) AS n FROM alerts")
        assert result is not None and result.to_pylist() == [{"n": 1}]
        with socket.create_connection((address["host"], address["port"])) as sock:
            sock.sendall(orjson.dumps({"sql": "SELECT 1", "token": "guess"}) + b"\n")
            answer = sock.makefile("rb").readline()
        assert b"bad or missing token" in answer
    # The correlator stopped; an endpoint file left by a kill -9 must not hang us.
    stale = tmp_path / "zonewatch.duckdb.query.json"
    stale.write_bytes(orjson.dumps({"host": "127.0.0.1", "port": 9, "token": "x"}))
    stale.chmod(0o600)
    assert query_endpoint(db, "SELECT 1") is None


def test_table_output_shows_brackets_in_data_literally(db: Path, capsysbinary) -> None:
    code, out, _ = run_cli(
        capsysbinary, "--db", str(db), "SELECT '[gateway] [bold]x' AS m", "-f", "table"
    )
    assert code == 0 and "[gateway] [bold]x" in out.decode()
