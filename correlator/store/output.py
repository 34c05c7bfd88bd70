"""Writing query results: rich tables, CSV, JSON, JSON lines, Parquet, and
the Timesketch timeline shape (``message``, ``datetime``, ``timestamp_desc``).

Pure functions over Arrow tables plus one ``write_result`` that picks the
destination; nothing here knows about DuckDB.
"""

from __future__ import annotations

import csv
import io
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from zonewatch.errors import QueryError

FORMATS = ("table", "csv", "json", "jsonl", "parquet")
_TIME_COLUMNS = ("datetime", "@timestamp", "time", "event_time", "first_seen", "created_at")


def _plain(value: Any) -> Any:
    """A value as JSON/CSV would show it: times ISO 8601, nested as JSON text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=_plain).decode()
    return str(_plain(value))


def records(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def to_csv(table: pa.Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in records(table):
        writer.writerow([_cell(v) for v in row.values()])
    return out.getvalue()


def to_jsonl(table: pa.Table) -> bytes:
    return b"".join(
        orjson.dumps(row, default=_plain, option=orjson.OPT_NON_STR_KEYS) + b"\n"
        for row in records(table)
    )


def to_json(table: pa.Table) -> bytes:
    return (
        orjson.dumps(
            records(table),
            default=_plain,
            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2,
        )
        + b"\n"
    )


def to_timeline(table: pa.Table, description: str = "Event Time") -> pa.Table:
    """Put Timesketch's three import fields first, deriving what is missing.

    ``datetime`` comes from the first time-like column, ``message`` from the
    remaining columns as ``key=value`` text, ``timestamp_desc`` defaults to
    ``description``.
    """
    names = table.column_names
    if "datetime" not in names:
        source = next((c for c in _TIME_COLUMNS if c in names), None)
        if source is None:
            raise QueryError(
                "a timeline needs a time column (datetime, time, event_time or first_seen) "
                "in the query result"
            )
        table = table.append_column("datetime", table.column(source))
    if "timestamp_desc" not in table.column_names:
        table = table.append_column(
            "timestamp_desc", pa.array([description] * table.num_rows, pa.string())
        )
    if "message" not in table.column_names:
        rest = [c for c in table.column_names if c not in ("datetime", "timestamp_desc")]
        messages = [
            " ".join(f"{k}={_cell(v)}" for k, v in row.items() if k in rest and v is not None)
            for row in records(table)
        ]
        table = table.append_column("message", pa.array(messages, pa.string()))
    column = table.column("datetime")
    if pa.types.is_timestamp(column.type):
        if column.type.tz is None:
            column = pc.assume_timezone(column, "UTC")
        iso = [v.isoformat() if v is not None else None for v in column.to_pylist()]
        table = table.set_column(
            table.column_names.index("datetime"), "datetime", pa.array(iso, pa.string())
        )
    first = ["message", "datetime", "timestamp_desc"]
    return table.select(first + [c for c in table.column_names if c not in first])


def _short(value: Any) -> str:
    # Tables are read by people: seconds are enough, the offset stays.
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return _cell(value)


def render_table(table: pa.Table, stream: IO[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Piped or written to a file: no terminal width to respect, so do not fold.
    width = None if stream.isatty() else 10_000
    console = Console(file=stream, soft_wrap=False, width=width)
    view = Table(title=title, title_justify="left", show_lines=False)
    for name in table.column_names:
        view.add_column(name, overflow="fold")
    for row in records(table):
        # Text, not markup: "[gateway]" in data must not be taken for a style.
        view.add_row(*(Text(_short(v)) for v in row.values()))
    console.print(view)
    console.print(f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}", style="dim")


def write_result(
    table: pa.Table, fmt: str, out: Path | None = None, title: str | None = None
) -> None:
    """Write ``table`` as ``fmt`` to ``out`` or stdout."""
    if fmt == "parquet":
        if out is None:
            raise QueryError("--format parquet needs --out FILE (Parquet is binary)")
        import pyarrow.parquet as pq

        pq.write_table(table, out)
        return
    if fmt == "table":
        if out is None:
            render_table(table, sys.stdout, title)
            return
        with out.open("w", encoding="utf-8") as fh:
            render_table(table, fh, title)
        return
    data: bytes
    if fmt == "csv":
        data = to_csv(table).encode("utf-8")
    elif fmt == "json":
        data = to_json(table)
    elif fmt == "jsonl":
        data = to_jsonl(table)
    else:
        raise QueryError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out.write_bytes(data)
