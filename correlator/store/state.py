"""State values in the store: written in small rows, read back row by row.

A correlation snapshot can be hundreds of megabytes. Stored as one BLOB it
needed four to five times its size in DuckDB's buffer pool, and a write above
``correlator.store_memory_limit`` failed every time (issue 20). So a value
goes to ``state_chunks`` in rows of ``state_chunk_bytes(limit)`` bytes, which
DuckDB spills to ``<db>.tmp`` like any insert, and it need not exist as one
object on our side either: the caller writes it into a ``StateSpool`` (a
binary file, on disk past a few megabytes) and the store's writer thread
inserts it a megabyte at a time in the batch's transaction. ``ChunkReader``
reads it back a window of rows at a time.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import duckdb

from zonewatch.errors import StoreError
from zonewatch.sizes import parse_size

# A state value written while the store stores it: called with a binary file.
StateWriter = Callable[[BinaryIO], None]

# DuckDB commits a vector of 2048 rows at a time and pins their strings
# together: measured with 2.0.1, rows whose vector took a quarter of the
# memory limit committed, half of it failed (``failed to pin block``), so
# 16 KiB rows need 64MB and 64 KiB rows 512MB. Rows of limit / 16384 keep a
# vector at an eighth of it.
_VECTOR_ROWS = 2048
MIN_CHUNK = 1 << 10
MAX_CHUNK = 64 << 10
# The smallest memory limit with which the store writes its state (measured:
# alerts, archive and a 300 MB state at 32MB, which DuckDB makes 30.5 MiB;
# 16MB failed to commit).
MIN_MEMORY_LIMIT = 30 << 20
# What the writer thread inserts at once, and how much of a value stays in
# memory before its spool goes to disk.
_BATCH = 1 << 20
_IN_MEMORY = 4 << 20
# Rows read back per query.
_READ_WINDOW = 4 << 20


def state_chunk_bytes(memory_limit: str | None) -> int:
    """Bytes per ``state_chunks`` row for a store with this memory limit
    (None: DuckDB's default, 80% of RAM)."""
    if not memory_limit:
        return MAX_CHUNK
    return max(MIN_CHUNK, min(MAX_CHUNK, parse_size(memory_limit) // (8 * _VECTOR_ROWS)))


def is_out_of_memory(exc: BaseException) -> bool:
    """A DuckDB error that says the buffer pool was full. A fatal error is
    never one: the database instance is gone, whatever the cause."""
    if isinstance(exc, duckdb.FatalException):
        return False
    if isinstance(exc, duckdb.OutOfMemoryException):
        return True
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and (
        "out of memory" in text or "failed to pin block" in text
    )


class CheckpointNotStoredError(StoreError):
    """The store ran out of memory writing a batch's checkpoint (its streamed
    state and its offsets); it stored the batch without them: the alerts in
    ``new_ids``, their evidence and outbox rows, archived events and state
    given as bytes. The previous checkpoint stays in force. The store takes
    later batches as before."""

    def __init__(self, message: str, new_ids: list[str]) -> None:
        super().__init__(message)
        self.new_ids = new_ids


class StateSpool:
    """One state value, written by the caller's thread and read back by the
    store's writer thread ``_BATCH`` bytes at a time.

    The first ``_IN_MEMORY`` bytes stay in memory, the rest goes to an
    unnamed temporary file beside the store (gone with the process, however
    it ends): a large state costs its writer's time to serialize it and the
    page cache, not resident memory, and the caller goes on while DuckDB
    stores it."""

    def __init__(self, directory: Path) -> None:
        self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115  # closed by close()
            max_size=_IN_MEMORY, mode="w+b", dir=str(directory), prefix="zonewatch-state-"
        )
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = self._file.write(data)
        self.size += n
        return n

    def batches(self) -> Iterator[bytes]:
        self._file.seek(0)
        while data := self._file.read(_BATCH):
            yield data

    def close(self) -> None:
        self._file.close()


def spool(write: StateWriter, directory: Path) -> StateSpool:
    """The value ``write`` writes, spooled (``StateSpool``); a writer that
    fails leaves nothing behind."""
    out = StateSpool(directory)
    try:
        write(out)  # type: ignore[arg-type]  # a binary file as far as writers go
    except BaseException:
        out.close()
        raise
    return out


class ChunkReader(io.RawIOBase):
    """A stored value read as a binary file, ``_READ_WINDOW`` bytes of rows
    per query (wrap it in ``io.BufferedReader``)."""

    def __init__(
        self,
        fetch: Callable[[int, int], list[tuple[int, bytes]]],
        rows: int,
        size: int,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._fetch = fetch
        self._on_close = on_close
        self._rows = rows
        self._window = max(1, _READ_WINDOW * rows // max(1, size))
        self._next = 0
        self._cur = memoryview(b"")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            self._on_close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        while not self._cur:
            if self._next >= self._rows:
                return 0
            hi = min(self._rows, self._next + self._window)
            got = self._fetch(self._next, hi)
            if [seq for seq, _ in got] != list(range(self._next, hi)):
                raise StoreError("a stored state value is missing rows; start without it")
            self._cur = memoryview(b"".join(value for _, value in got))
            self._next = hi
        n = min(len(buffer), len(self._cur))
        buffer[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n
