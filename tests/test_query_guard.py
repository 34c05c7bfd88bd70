"""The query guard's allow-list (issue 20, point 1): a SELECT may call only
table functions known to be pure, wherever they hide, and the store's
configuration is locked. The live suite (`test_query_hostile.py`) sends the
same hostile queries to a running correlator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from correlator.store import AlertStore
from correlator.store.guard import PURE_TABLE_FUNCTIONS, check_statement
from tests.hostile_sql import WRAPPERS, side_effect_calls, unlisted_table_functions
from tests.test_store import make_alert
from zonewatch.errors import QueryError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertStore]:
    path = tmp_path_factory.mktemp("guard") / "zonewatch.duckdb"
    with AlertStore(path) as writer:
        writer.write([make_alert(1)])
    with AlertStore(path, read_only=True) as reader:
        yield reader


def test_every_allowed_table_function_exists_and_only_reads() -> None:
    # A name on the list that DuckDB does not know would be a typo hiding a gap.
    with duckdb.connect(":memory:") as con:
        known = {
            r[0]
            for r in con.execute(
                "SELECT function_name FROM duckdb_functions() "
                "WHERE function_type IN ('table', 'table_macro')"
            ).fetchall()
        }
    assert known >= PURE_TABLE_FUNCTIONS
    forbidden = {"checkpoint", "enable_logging", "query", "read_csv", "glob", "duckdb_secrets"}
    assert not forbidden & PURE_TABLE_FUNCTIONS


@pytest.mark.parametrize("name", unlisted_table_functions())
def test_each_table_function_not_on_the_list_is_refused_before_it_runs(name: str) -> None:
    with pytest.raises(QueryError, match=f"refused table function {name}"):
        check_statement(f"SELECT * FROM {name}()")


CALLS = side_effect_calls(Path("/nonexistent"))


def _nest(call: str, wrappers: list[str]) -> str:
    """``call`` inside each wrapper in turn, each query a subquery of the next."""
    table = call
    for wrapper in wrappers:
        table = "(" + wrapper.format(f=table) + ")"
    return table[1:-1]


INNER = [w for w in WRAPPERS if not w.startswith(("EXPLAIN", "SUMMARIZE", "DESCRIBE", "/*"))]


@settings(max_examples=150, deadline=None)
@given(
    call=st.sampled_from(CALLS),
    wrappers=st.lists(st.sampled_from(INNER), min_size=1, max_size=4),
    outer=st.sampled_from(["", "EXPLAIN ", "EXPLAIN ANALYZE ", "SUMMARIZE ", "DESCRIBE "]),
)
def test_a_side_effect_function_is_refused_however_deep_it_hides(
    call: str, wrappers: list[str], outer: str
) -> None:
    sql = outer + _nest(call, wrappers)
    with pytest.raises(QueryError):
        check_statement(sql)


# DuckDB's parser takes no window inside a window definition.
VALID_NESTED = [w for w in INNER if "OVER" not in w]


@settings(max_examples=100, deadline=None)
@given(wrappers=st.lists(st.sampled_from(VALID_NESTED), min_size=1, max_size=4))
def test_the_same_shapes_around_a_pure_function_pass(wrappers: list[str]) -> None:
    check_statement(_nest("range(3)", wrappers))


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE EXTENSIONS", "refused UPDATE EXTENSIONS statement"),
        ("EXPLAIN ANALYZE DELETE FROM alerts", "refused DELETE"),
        ("EXPLAIN", "bad SQL"),
        ("-- a comment only", "empty query"),
        ("SELECT * FROM '/etc/passwd'", "cannot read files"),
        ('SELECT * FROM "https://example.com/a.csv"', "cannot read files"),
        ("SELECT setseed(0.1)", "refused setseed()"),
        ("SELECT * FROM query('SELECT 1')", "runs SQL given as text"),
        ("PIVOT alerts ON level", "refused MULTI"),
    ],
)
def test_refusals_say_why(sql: str, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        check_statement(sql)


def test_the_store_configuration_is_locked_and_external_access_off(store: AlertStore) -> None:
    # The second fence: even a call that got past the guard could not change
    # a setting of the running store.
    cur = store.cursor()
    try:
        with pytest.raises(duckdb.Error, match="locked"):
            cur.execute("SELECT * FROM enable_logging(level='trace')")
        with pytest.raises(duckdb.Error, match="locked"):
            cur.execute("SET enable_external_access = true")
    finally:
        cur.close()
    row = store.query(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access')"
    )[1]
    assert row == [(True, False)]


def test_the_writer_still_writes_after_the_lock(tmp_path: Path) -> None:
    with AlertStore(tmp_path / "zw.duckdb") as s:
        s.write([make_alert(1)])
        s.write([make_alert(2)])
        assert s.query("SELECT count(*) FROM alerts")[1] == [(2,)]
