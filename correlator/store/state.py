"""State values in the store: written in small rows as they are produced, read back row by row.

A correlation snapshot can be hundreds of megabytes. Stored as one BLOB it
needed four to five times its size in DuckDB's buffer pool, and a write above
``correlator.store_memory_limit`` failed every time (issue 20). So a value
goes to ``state_chunks`` in rows of ``state_chunk_bytes(limit)`` bytes, which
DuckDB spills to ``<db>.tmp`` like any insert, and it need not exist as one
object on our side either: the caller writes it into a ``StatePipe`` (a
binary file) while the store's writer thread inserts what arrived, a
megabyte at a time, in the batch's transaction. ``ChunkReader`` reads it
back a window of rows at a time.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
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
# What the writer thread inserts at once, and how much the producer may be
# ahead of it: the state held in Python while it is written.
_BATCH = 1 << 20
_DEPTH = 4
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


class _Abandoned(Exception):
    """The store stopped taking a pipe's data (its write failed)."""


class StatePipe:
    """One state value on its way from the caller's thread to the writer's.

    The caller writes bytes (a binary file for ``pickle``); the writer thread
    iterates ``batches()``: ``bytes`` of about ``_BATCH`` each, in order. At
    most ``_DEPTH`` batches wait: a producer ahead of DuckDB waits in
    ``write``. If the store gives up (``abandon``, or its future ends first),
    ``write`` raises ``_Abandoned`` so the producer stops early."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: deque[bytes] = deque()
        self._buf = bytearray()
        self._done = False
        self._error: BaseException | None = None
        self._abandoned = False
        self.future: Future[Any] | None = None  # the write taking this value
        self.size = 0

    # -- the producer -----------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(data) if isinstance(data, bytes | bytearray) else memoryview(data).nbytes
        self._buf += data
        if len(self._buf) >= _BATCH:
            self._put(bytes(self._buf))
            self._buf.clear()
        self.size += n
        return n

    def close(self) -> None:
        """The value is complete."""
        if self._buf:
            with contextlib.suppress(_Abandoned):  # the store's future says why
                self._put(bytes(self._buf))
            self._buf.clear()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The producer failed: the store rolls the batch back."""
        with self._cond:
            self._error = exc
            self._done = True
            self._cond.notify_all()

    def _put(self, item: bytes) -> None:
        with self._cond:
            while len(self._items) >= _DEPTH and not self._gone():
                self._cond.wait(0.5)
            if self._gone():
                raise _Abandoned
            self._items.append(item)
            self._cond.notify_all()

    def _gone(self) -> bool:
        return self._abandoned or (self.future is not None and self.future.done())

    # -- the writer thread ------------------------------------------------

    def batches(self) -> Iterator[bytes]:
        while True:
            with self._cond:
                while not self._items and not self._done:
                    self._cond.wait()
                if self._items:
                    item = self._items.popleft()
                    self._cond.notify_all()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield item

    def abandon(self) -> None:
        with self._cond:
            self._abandoned = True
            self._items.clear()
            self._cond.notify_all()


def fill(pipes: Sequence[tuple[StatePipe, StateWriter]]) -> None:
    """Run each writer into its pipe, in the caller's thread. A writer that
    fails fails its pipe (the store rolls the batch back) and is raised here,
    after the later pipes are failed too; a pipe the store abandoned ends its
    writer quietly (the batch's future says why)."""
    for i, (pipe, write) in enumerate(pipes):
        try:
            write(pipe)  # type: ignore[arg-type]  # a binary file as far as writers go
        except _Abandoned:
            pipe.close()
        except BaseException as exc:
            for later, _ in pipes[i:]:
                later.fail(exc)
            raise
        else:
            pipe.close()


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
