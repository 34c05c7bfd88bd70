"""What one forensic query may cost: time, rows and bytes of result.

The limits are the server's (``correlator.query_*`` settings): a client asks
for a timeout, and gets at most the server's maximum. A result above the row
or byte cap is cut there and marked, so the analyst sees a partial answer
with the reason instead of a correlator that grew by gigabytes (issue 20: a
3e8-row result took it from 0.22 to 2.6 GB, and it stayed there).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from zonewatch.errors import QueryError

if TYPE_CHECKING:
    from zonewatch.config import CorrelatorSettings

# Arrow schema metadata key a cut result carries; its value says why.
TRUNCATED_KEY = b"zonewatch.truncated"


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_timeout_s: float = 300.0
    max_rows: int = 1_000_000
    max_bytes: int = 256 << 20
    # Queries the endpoint runs at once; the worst case in memory is about
    # this many results at the byte cap.
    max_concurrent: int = 4

    @classmethod
    def from_settings(cls, correlator: CorrelatorSettings) -> QueryLimits:
        return cls(
            max_timeout_s=correlator.query_max_timeout_s,
            max_rows=correlator.query_max_rows,
            max_bytes=int(correlator.query_max_result_mb * (1 << 20)),
            max_concurrent=correlator.query_max_concurrent,
        )

    def timeout(self, requested: object) -> float:
        """The timeout to use for a client's ``requested`` seconds: a finite
        number above 0, at most ``max_timeout_s``."""
        try:
            seconds = float(requested)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise QueryError(
                f"timeout {requested!r}: give a number of seconds above 0, at most "
                f"{self.max_timeout_s:g} (the server's maximum)"
            )
        return min(seconds, self.max_timeout_s)


class QueryCancel:
    """Stops one running query from another thread: the query endpoint
    cancels when its client goes away, the timeout when time is up."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        return self._event.wait(timeout_s)


def collect(
    batches: pa.RecordBatchReader, limits: QueryLimits, cancel: QueryCancel | None = None
) -> pa.Table:
    """Read ``batches`` into a table of at most ``limits.max_rows`` rows and
    about ``limits.max_bytes`` bytes; a cut table names why in its schema
    metadata (``TRUNCATED_KEY``)."""
    kept: list[pa.RecordBatch] = []
    rows = size = 0
    why = None
    for batch in batches:
        if cancel is not None and cancel.cancelled:
            break
        if rows + batch.num_rows > limits.max_rows:
            batch = batch.slice(0, limits.max_rows - rows)
            why = (
                f"result truncated at {limits.max_rows:,} rows (the server's limit, "
                "correlator.query_max_rows): narrow the query with WHERE, LIMIT or "
                "--since/--until, or aggregate"
            )
        if size + batch.nbytes > limits.max_bytes:
            fits = int(batch.num_rows * (limits.max_bytes - size) / max(batch.nbytes, 1))
            batch = batch.slice(0, max(fits, 0))
            why = (
                f"result truncated at {rows + batch.num_rows:,} rows, "
                f"{limits.max_bytes / (1 << 20):g} MB (the server's limit, "
                "correlator.query_max_result_mb): select fewer or smaller columns, "
                "or narrow the query"
            )
        if batch.num_rows:
            kept.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
        if why:
            break
    table = pa.Table.from_batches(kept, schema=batches.schema)
    if why:
        metadata = dict(table.schema.metadata or {})
        metadata[TRUNCATED_KEY] = why.encode()
        table = table.replace_schema_metadata(metadata)
    return table


def truncation(table: pa.Table) -> str | None:
    """Why the server cut ``table``, or None for a whole result."""
    metadata = table.schema.metadata or {}
    why = metadata.get(TRUNCATED_KEY)
    return why.decode() if why else None
