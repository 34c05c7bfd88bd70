"""What a query may cost (issue 20, point 1): the server's maximum timeout,
cancellation when the client goes away, a cap on queries at once, row and
byte caps with a message, and results a client can always print."""

from __future__ import annotations

import select
import socket
import time
from datetime import date, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from correlator.store import AlertStore, query_endpoint
from correlator.store.limits import QueryLimits, truncation
from correlator.store.output import _civil_date, records, to_timeline
from correlator.store.server import serve_queries
from tests.conftest import wait_until
from tests.test_query import run_cli
from tests.test_store import make_alert
from zonewatch.errors import QueryError

SLOW = "SELECT sum(hash(i)) FROM range(10000000000000) t(i)"


def send_raw(sock_path: str, request: dict) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sock_path)
    sock.sendall(orjson.dumps(request) + b"\n")
    return sock


def ask(sock_path: str, sql: str) -> bytes:
    """The first line of the endpoint's answer to ``sql``."""
    with send_raw(sock_path, {"sql": sql}) as sock, sock.makefile("rb") as answer:
        return answer.readline()


def hold_the_only_slot(sock_path: str, timeout_s: float = 30) -> socket.socket:
    """Start the slow query and wait until a second query is turned away; the
    slow query's socket. The probe may be served first and take the slot
    itself (a busy machine): then the slow query is the one turned away,
    and is sent again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        client = send_raw(sock_path, {"sql": SLOW, "timeout_s": 300})
        while time.monotonic() < deadline:
            if b"already running 1 queries" in ask(sock_path, "SELECT 1"):
                return client
            if select.select([client], [], [], 0)[0]:  # answered: turned away
                client.close()
                break
    raise AssertionError("timed out waiting for the slow query to hold the only slot")


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -1.0, 0.0, "soon", None])
def test_a_timeout_must_be_a_positive_number(bad: object) -> None:
    with pytest.raises(QueryError, match="give a number of seconds above 0, at most 300"):
        QueryLimits().timeout(bad)


def test_a_timeout_above_the_maximum_is_cut_to_it(tmp_path: Path) -> None:
    assert QueryLimits(max_timeout_s=2).timeout(1e9) == 2
    with (
        AlertStore(tmp_path / "zw.duckdb", query_limits=QueryLimits(max_timeout_s=0.3)) as store,
        pytest.raises(QueryError, match=r"after 0.3 s, the server's maximum"),
    ):
        store.query(SLOW, timeout_s=3600)


def test_the_query_stops_when_its_client_goes_away(tmp_path: Path) -> None:
    limits = QueryLimits(max_concurrent=1)
    with AlertStore(tmp_path / "zw.duckdb", query_limits=limits) as store:
        server = serve_queries(store)
        sock_path = str(server.socket_path)
        with structlog.testing.capture_logs() as logs:
            # The only slot is taken: a second query is turned away at once.
            client = hold_the_only_slot(sock_path)
            client.close()  # Ctrl-C of `zonewatch query`, a killed client
            wait_until(
                lambda: any(e["event"] == "query_cancelled" for e in logs),
                10,
                "the query to be cancelled",
            )
        # The slot is free again well before the 300 s the query asked for.
        answer = query_endpoint(tmp_path / "zw.duckdb", "SELECT 42 AS n")
        assert answer is not None and answer.to_pylist() == [{"n": 42}]


def test_rows_above_the_cap_are_cut_with_a_message(
    tmp_path: Path, capsysbinary, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "zw.duckdb"
    with AlertStore(db, query_limits=QueryLimits(max_rows=1000)) as store:
        store.write([make_alert(1)])
        table = store.query_arrow("SELECT i FROM range(300000000) t(i)")
        whole = store.query_arrow("SELECT i FROM range(1000) t(i)")
    assert table.num_rows == 1000 and table.column("i").to_pylist() == list(range(1000))
    assert "truncated at 1,000 rows" in (truncation(table) or "")
    assert truncation(whole) is None
    # The CLI prints the rows and says on stderr that they are not all.
    monkeypatch.setenv("ZONEWATCH_CORRELATOR__QUERY_MAX_ROWS", "10")
    code, out, err = run_cli(capsysbinary, "--db", str(db), "SELECT i FROM range(50) t(i)")
    assert code == 0 and out.decode().split() == ["i", *map(str, range(10))]
    assert "warning: result truncated at 10 rows" in err and "query_max_rows" in err


def test_bytes_above_the_cap_are_cut_with_a_message(tmp_path: Path) -> None:
    limits = QueryLimits(max_bytes=4 << 20)
    with AlertStore(tmp_path / "zw.duckdb", query_limits=limits) as store:
        table = store.query_arrow("SELECT repeat('x', 10000) AS s FROM range(100000)")
    assert 0 < table.num_rows < 100_000
    assert table.nbytes <= 4 << 20
    assert "4 MB" in (truncation(table) or "")


EXTREMES = (
    "SELECT 'infinity'::TIMESTAMP AS t, '-infinity'::DATE AS d, "
    "'10000-01-01 12:00:00'::TIMESTAMPTZ AS tz, ['294247-01-01'::TIMESTAMP] AS l, "
    "{'x': '10000-02-29'::DATE} AS s, MAP {'12000-01-01'::DATE: 1} AS m, "
    "'24:00:00'::TIME AS c, INTERVAL '1 month 2 days 3 seconds' AS i, "
    "'0001-01-01'::TIMESTAMP AS first_seen"
)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "table"])
def test_dates_python_cannot_hold_are_printed_not_a_traceback(
    tmp_path: Path, capsysbinary, fmt: str
) -> None:
    db = tmp_path / "zw.duckdb"
    AlertStore(db).close()
    code, out, err = run_cli(capsysbinary, "--db", str(db), "-f", fmt, EXTREMES)
    assert code == 0, err
    text = out.decode()
    for shown in ("infinity", "-infinity", "10000-01-01T12:00:00+00:00", "294247-01-01T00:00:00",
                  "10000-02-29", "12000-01-01", "24:00:00", "P1M2DT3S", "0001-01-01"):  # fmt: skip
        assert shown in text, (shown, text)


def test_a_timeline_of_far_future_times_is_printed(tmp_path: Path) -> None:
    table = pa.table(
        {"time": pa.array([253402300800 * 10**6, None], pa.timestamp("us")), "x": [1, 2]}
    )
    rows = records(to_timeline(table))
    assert rows[0]["datetime"] == "10000-01-01T00:00:00+00:00"
    assert rows[1]["datetime"] is None


@given(st.integers(min_value=-719_162, max_value=2_932_896))
def test_dates_are_computed_like_python_where_python_can(days: int) -> None:
    assert _civil_date(days) == (date(1970, 1, 1) + timedelta(days=days)).isoformat()
