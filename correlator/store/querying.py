"""Read-only queries on a cursor of the store: a timeout, cancellation from
another thread, results read in batches and cut at the caller's caps
(``limits.py``), DuckDB's errors as ``QueryError`` messages that say what to do.
``AlertStore.query_arrow`` checks the statement (``guard.py``) and calls ``run``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from correlator.store.limits import QueryCancel, QueryLimits, collect
from zonewatch.errors import QueryError

# Rows per Arrow batch of a query result: DuckDB's vector size. The result
# caps are checked per batch, so a batch must stay small.
_RESULT_BATCH_ROWS = 2048


def run(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Mapping[str, Any] | Sequence[Any] | None,
    timeout_s: float,
    limits: QueryLimits,
    cancel: QueryCancel | None = None,
) -> pa.Table:
    """Run one statement on ``cur`` (closed afterwards) in a READ ONLY
    transaction; the result as an Arrow table (``AlertStore.query_arrow``)."""
    timeout = limits.timeout(timeout_s)
    control = cancel or QueryCancel()
    finished = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(cur, control, timeout, finished), daemon=True)
    try:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        watchdog.start()
        try:
            relation = cur.sql(sql, params=_params(params))
            if relation is None:  # only SELECT/EXPLAIN get here, but be explicit
                return pa.table({})
            table = collect(relation.to_arrow_reader(_RESULT_BATCH_ROWS), limits, control)
            if control.cancelled:
                raise duckdb.InterruptException("cancelled between batches")
            return table
        except duckdb.InterruptException as exc:
            if control.reason == "timeout":
                if timeout < float(timeout_s):
                    raise QueryError(
                        f"query cancelled after {timeout:g} s, the server's maximum "
                        "(correlator.query_max_timeout_s): narrow it (--since/--until, LIMIT)"
                    ) from exc
                raise QueryError(
                    f"query cancelled after {timeout:g} s: narrow it (--since/--until, "
                    "LIMIT) or raise --timeout"
                ) from exc
            raise QueryError(f"query cancelled: {control.reason or 'interrupted'}") from exc
        except duckdb.Error as exc:
            raise QueryError(_query_message(exc)) from exc
        finally:
            finished.set()
            control.cancel("finished")  # wakes the watchdog
            watchdog.join()
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")
    finally:
        cur.close()
        # Arrow keeps freed buffers for reuse; a large result must not
        # stay in the correlator's memory once it is sent.
        pa.default_memory_pool().release_unused()


def _watch(
    cur: duckdb.DuckDBPyConnection,
    control: QueryCancel,
    timeout_s: float,
    finished: threading.Event,
) -> None:
    """Interrupt ``cur`` when the query is cancelled or out of time.

    Again and again until it ends: DuckDB clears the interrupt flag when a
    statement starts, so an interrupt that lands just before (the client
    went away at once) would be lost.
    """
    if not control.wait(timeout_s):
        control.cancel("timeout")
    while not finished.is_set():
        cur.interrupt()
        finished.wait(0.05)


def table_rows(table: pa.Table) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = table.column_names
    data = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return columns, list(zip(*data, strict=True)) if data else []


def _params(params: Mapping[str, Any] | Sequence[Any] | None) -> Any:
    if params is None:
        return None
    if isinstance(params, Mapping):
        return dict(params)
    return list(params)


def _query_message(exc: duckdb.Error) -> str:
    text = str(exc).strip()
    if isinstance(exc, duckdb.PermissionException):
        return f"refused: {text.splitlines()[0]} (queries cannot read files or the network)"
    if "read-only" in text and isinstance(
        exc, duckdb.TransactionException | duckdb.InvalidInputException
    ):
        # a write hidden in EXPLAIN ANALYZE, nextval(), ...: the READ ONLY
        # transaction (or the read-only file) stopped it
        return "refused: the alert store is read-only for queries"
    return text
