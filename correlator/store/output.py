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
    if isinstance(value, pa.MonthDayNano):
        months, days, nanoseconds = value
        return f"P{months}M{days}DT{nanoseconds / 1e9:g}S"  # ISO 8601 duration
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return orjson.dumps(value, default=_plain).decode()
    return str(_plain(value))


def records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as dicts. Dates and times Python cannot hold (years past 9999,
    DuckDB's infinity) come out as text rather than failing the output."""
    try:
        return table.to_pylist()
    except (OverflowError, ValueError):
        return _readable(table).to_pylist()


def _readable(table: pa.Table) -> pa.Table:
    """``table`` with every date and time column (also inside lists, structs
    and maps) as ISO 8601 text computed from the raw numbers, which have no
    year limit; DuckDB's infinite dates read ``infinity``/``-infinity``."""
    for i, field in enumerate(table.schema):
        as_text = _temporal_as(field.type, _text)
        if as_text == field.type:
            continue
        raw = pc.cast(table.column(i), _temporal_as(field.type, _raw)).to_pylist()
        texts = [_render(v, field.type) for v in raw]
        table = table.set_column(i, field.name, pa.array(texts, as_text))
    return table


def _text(kind: pa.DataType) -> pa.DataType:
    return pa.string()


def _raw(kind: pa.DataType) -> pa.DataType:
    return pa.int32() if kind.bit_width == 32 else pa.int64()


def _is_temporal(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind)


def _temporal_as(kind: pa.DataType, leaf: Any) -> pa.DataType:
    """``kind`` with each date/time leaf replaced by ``leaf(kind)``."""
    if _is_temporal(kind):
        replaced: pa.DataType = leaf(kind)
        return replaced
    if pa.types.is_map(kind):
        return pa.map_(_temporal_as(kind.key_type, leaf), _temporal_as(kind.item_type, leaf))
    if pa.types.is_large_list(kind):
        return pa.large_list(_temporal_as(kind.value_type, leaf))
    if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind):
        return pa.list_(_temporal_as(kind.value_type, leaf))
    if pa.types.is_struct(kind):
        return pa.struct(
            [pa.field(f.name, _temporal_as(f.type, leaf), f.nullable) for f in kind.fields]
        )
    return kind


_UNIT_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_INT64_MAX = (1 << 63) - 1
_INT32_MAX = (1 << 31) - 1


def _render(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_timestamp(kind):
        if abs(value) == _INT64_MAX:
            return "infinity" if value > 0 else "-infinity"
        per_second = _UNIT_PER_SECOND[kind.unit]
        seconds, fraction = divmod(value, per_second)
        days, second_of_day = divmod(seconds, 86_400)
        text = f"{_civil_date(days)}T{_clock(second_of_day, fraction, per_second)}"
        return text + "+00:00" if kind.tz else text
    if pa.types.is_date32(kind):
        if abs(value) == _INT32_MAX:
            return "infinity" if value > 0 else "-infinity"
        return _civil_date(value)
    if pa.types.is_date64(kind):
        return _civil_date(value // 86_400_000)
    if pa.types.is_time(kind):
        per_second = _UNIT_PER_SECOND[kind.unit]
        seconds, fraction = divmod(value, per_second)
        return _clock(seconds, fraction, per_second)
    if pa.types.is_map(kind):
        return [(_render(k, kind.key_type), _render(v, kind.item_type)) for k, v in value]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_render(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        return {f.name: _render(value.get(f.name), f.type) for f in kind.fields}
    return value


def _clock(seconds: int, fraction: int, per_second: int) -> str:
    hours, rest = divmod(seconds, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    if per_second > 1 and fraction:
        digits = len(str(per_second)) - 1
        text += f".{fraction:0{digits}d}"
    return text


def _civil_date(days: int) -> str:
    """Days since 1970-01-01 as a proleptic Gregorian date, any year
    (H. Hinnant's ``civil_from_days``)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (month <= 2)
    return f"{year:04d}-{month:02d}-{day:02d}"


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
        table = table.set_column(
            table.column_names.index("datetime"), "datetime", pa.array(_iso(column), pa.string())
        )
    first = ["message", "datetime", "timestamp_desc"]
    return table.select(first + [c for c in table.column_names if c not in first])


def _iso(column: pa.ChunkedArray) -> list[str | None]:
    try:
        return [v.isoformat() if v is not None else None for v in column.to_pylist()]
    except (OverflowError, ValueError):  # years past 9999, DuckDB's infinity
        raw = pc.cast(column, pa.int64()).to_pylist()
        return [_render(v, column.type) for v in raw]


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
