"""Which forensic statements may run: one SELECT (or EXPLAIN of one), reading
only through functions known to be pure.

This is the first of several fences. Here, with DuckDB's own parser:

1. the statement type: one SELECT or EXPLAIN, nothing else;
2. every table function the query calls, wherever it sits (FROM, subquery,
   CTE, lateral join, lambda, SUMMARIZE ...), must be on an allow-list of
   pure ones (``range``, ``unnest``, ``duckdb_tables`` ...). A statement type
   check alone let ``SELECT * FROM enable_logging(...)``, ``checkpoint()`` and
   friends change global settings or the file from inside a SELECT, and one
   of them aborted the whole correlator (issue 20);
3. a few scalar functions that change state (``nextval``, ``setseed``,
   ``write_log`` ...) are refused;
4. table names that look like files or URLs (replacement scans) are refused.

The query then runs inside a ``READ ONLY`` transaction on a database whose
external access is disabled and whose configuration is locked
(``AlertStore``), with a timeout and caps on the result.

The function list comes from ``json_serialize_sql``, DuckDB's serialized
parse tree, so the check sees exactly what DuckDB will bind, including
functions nested in expressions.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import duckdb
import orjson

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
    "MULTI": "PIVOT and other multi-step statements are disabled; use GROUP BY or FILTER",
}

# Table functions that only read the alert store's data or DuckDB's catalog
# (and generate rows): nothing else may appear where a table can.
PURE_TABLE_FUNCTIONS = frozenset(
    {
        "range",
        "generate_series",
        "unnest",
        "repeat",
        "repeat_row",
        "json_each",
        "json_tree",
        "summary",
        "histogram",
        "histogram_values",
        "test_all_types",
        "icu_calendar_names",
        "pg_timezone_names",
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_memory",
        "duckdb_optimizers",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_types",
        "duckdb_views",
        "pragma_database_size",
        "pragma_metadata_info",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_version",
    }
)

# Scalar functions with an effect beyond their result.
_STATEFUL_SCALARS = {
    "nextval": "it advances a sequence; the alert store is read-only for queries",
    "setval": "it sets a sequence; the alert store is read-only for queries",
    "setseed": "it changes the random seed of the connection",
    "write_log": "it writes to DuckDB's log",
}

_READS_FILES = re.compile(
    r"^(read_|parquet_|sniff_|glob$|.*_scan$|.*_scan_|iceberg|delta_|sqlite_|postgres_|mysql_)"
)
_RUNS_TEXT = {"query", "query_table", "json_execute_serialized_sql"}
_LOOKS_LIKE_A_FILE = re.compile(r"[/\\:.*?]")

# Leading comments and an EXPLAIN [ANALYZE] or EXPLAIN (options) prefix.
_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_EXPLAIN = re.compile(r"\AEXPLAIN(?:\s+ANALY[SZ]E)?(?:\s*\([^()]*\))?\s+", re.I)

_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None


def check_statement(sql: str) -> str:
    """Return the single statement in ``sql`` or raise :class:`QueryError`."""
    if not sql.strip():
        raise QueryError("empty query: give one SELECT statement")
    statement = _single_statement(sql)
    kind = _kind(statement)
    if kind == "EXPLAIN":
        inner = _explained(statement.query)
        check_functions(inner)
    else:
        check_functions(statement.query)
    return sql


def check_functions(select: str) -> None:
    """Refuse a SELECT that calls a table function not known to be pure, a
    scalar function that changes state, or reads a table that is a file."""
    for node in _nodes(_parse_tree(select)):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            if function.get("class") != "FUNCTION":
                raise QueryError("refused: a table expression that is not a plain function call")
            _check_table_function(str(function.get("function_name", "")))
        elif kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if _LOOKS_LIKE_A_FILE.search(name):
                raise QueryError(
                    f"refused table {name!r}: queries cannot read files or the network; "
                    "the tables are alerts, alert_evidence, events, rules, outbox, "
                    "consumer_offsets and state"
                )
        if node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            why = _STATEFUL_SCALARS.get(name)
            if why:
                raise QueryError(f"refused {name}(): {why}")


def _check_table_function(name: str) -> None:
    lowered = name.lower()
    if lowered in PURE_TABLE_FUNCTIONS:
        return
    if _READS_FILES.match(lowered):
        why = "queries cannot read files or the network"
    elif lowered in _RUNS_TEXT:
        why = "it runs SQL given as text; write that query itself"
    else:
        why = (
            "it is not on the list of table functions known to only read "
            "(range, unnest, generate_series, json_each, duckdb_tables, duckdb_columns, ...)"
        )
    raise QueryError(f"refused table function {name}(): {why}")


def _single_statement(sql: str) -> Any:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"bad SQL: {_first_line(exc)}") from exc
    except ValueError as exc:
        # The Python enum lags DuckDB's statement types (UPDATE EXTENSIONS ...).
        raise QueryError(f"refused {_first_words(sql)} statement: only SELECT can run") from exc
    if not statements:
        raise QueryError("empty query: give one SELECT statement")
    if len(statements) != 1:
        raise QueryError(
            f"one statement per query, got {len(statements)}: split them into separate queries"
        )
    return statements[0]


def _kind(statement: Any) -> str:
    try:
        kind = statement.type
    except ValueError as exc:  # a statement type the Python enum does not know
        raise QueryError(
            f"refused {_first_words(statement.query)} statement: only SELECT can run"
        ) from exc
    if kind not in _ALLOWED:
        name = kind.name
        why = _WHY.get(name, "the alert store is read-only for queries")
        raise QueryError(f"refused {name} statement: {why}")
    return str(kind.name)


def _explained(text: str) -> str:
    """The SELECT under an EXPLAIN; EXPLAIN of anything else is refused."""
    body = _COMMENTS.sub("", text, count=1)
    match = _EXPLAIN.match(body)
    inner = body[match.end() :] if match else ""
    if inner:
        try:
            statements = duckdb.extract_statements(inner)
            if len(statements) == 1 and statements[0].type == duckdb.StatementType.SELECT:
                return str(statements[0].query)
            if len(statements) == 1:
                name = statements[0].type.name
                why = _WHY.get(name, "the alert store is read-only for queries")
                raise QueryError(f"refused {name} statement: {why}")
        except (duckdb.Error, ValueError):
            pass
    raise QueryError("EXPLAIN works on one SELECT: EXPLAIN [ANALYZE] SELECT ...")


def _parse_tree(select: str) -> Any:
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:", config={"enable_external_access": "false"})
        row = _parser.execute("SELECT json_serialize_sql(?::VARCHAR)", [select]).fetchone()
    tree = orjson.loads(row[0]) if row and row[0] else {"error": True}
    if tree.get("error"):
        message = str(tree.get("error_message") or "cannot be parsed")
        if "Only SELECT" in message:
            raise QueryError("refused: only a plain SELECT can run")
        raise QueryError(f"bad SQL: {message.splitlines()[0]}")
    return tree


def _nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object in the parse tree, depth first, without recursion (a
    deeply nested query must not exhaust Python's stack)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _first_words(sql: str) -> str:
    words = _COMMENTS.sub("", sql, count=1).split()[:2]
    return " ".join(w.upper() for w in words) or "this"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
