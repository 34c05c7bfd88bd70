"""Which forensic statements may run: one SELECT (or EXPLAIN), nothing else.

This is the first of three fences. The statement type is checked here with
DuckDB's own parser; the query then runs inside a ``READ ONLY`` transaction
(so a write hidden anywhere fails), on a database whose external access is
disabled (no files, no network, no extension downloads).
"""

from __future__ import annotations

import duckdb

from zonewatch.errors import QueryError

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}

_WHY = {
    "COPY": "COPY reads or writes files; use `zonewatch query --format csv|parquet --out FILE`",
    "ATTACH": "ATTACH opens other databases; queries see only the alert store",
    "DETACH": "DETACH changes the attached databases",
    "LOAD": "INSTALL/LOAD of extensions is disabled for queries",
    "EXPORT": "EXPORT DATABASE writes files; use --out",
    "SET": "settings cannot be changed from a query",
    "VARIABLE_SET": "settings cannot be changed from a query",
    "PRAGMA": "PRAGMA is disabled; use SELECT * FROM duckdb_tables() and friends",
    "CALL": "CALL is disabled; use SELECT * FROM table_function(...)",
}


def check_statement(sql: str) -> str:
    """Return the single statement in ``sql`` or raise :class:`QueryError`."""
    if not sql.strip():
        raise QueryError("empty query: give one SELECT statement")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"bad SQL: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise QueryError(
            f"one statement per query, got {len(statements)}: split them into separate queries"
        )
    kind = statements[0].type
    if kind not in _ALLOWED:
        name = kind.name
        why = _WHY.get(name, "the alert store is read-only for queries")
        raise QueryError(f"refused {name} statement: {why}")
    return sql


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
