"""A finite byte stream read line by line (stdin, or any binary file object)."""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from typing import IO, Any

from connectors.inputs import Record

# How long a descriptor may stay silent before the input reports itself idle
# (``None``), so whoever batches records hands on what it holds.
IDLE_S = 0.2
_READ = 1 << 16


def read_lines(
    stream: IO[bytes], limit: int, start: int = 0
) -> Iterator[tuple[bytes, int, int, bool]]:
    """(line without EOL, start offset, length with EOL, was cut) per line of ``stream``.

    A line longer than ``limit`` is returned cut to ``limit`` bytes with its
    full length, and the rest of it is skipped without being held in memory.
    A last line without a newline is returned too.
    """
    offset = start
    readline = stream.readline
    while True:
        line = readline(limit + 1)
        if not line:
            return
        length = len(line)
        if length > limit and not line.endswith(b"\n"):
            head = line[:limit]
            while not line.endswith(b"\n"):
                line = readline(1 << 16)
                if not line:
                    break
                length += len(line)
            yield head, offset, length, True
            offset += length
            continue
        yield line.rstrip(b"\r\n"), offset, length, False
        offset += length


def read_fd_lines(fd: int, limit: int) -> Iterator[tuple[bytes, int, bool] | None]:
    """``read_lines`` for a descriptor, as (line, length with EOL, was cut),
    with ``None`` whenever nothing arrived for ``IDLE_S`` (a pipe from a
    ``tail -f`` is quiet most of the time). Holds at most ``limit`` bytes of
    a line plus one read."""
    head = b""  # the current line so far, at most limit + 1 bytes of it
    seen = 0  # bytes of the current line so far
    while True:
        if not select.select([fd], [], [], IDLE_S)[0]:
            yield None
            continue
        chunk = os.read(fd, _READ)
        if not chunk:
            break
        pos = 0
        while True:
            nl = chunk.find(b"\n", pos)
            end = len(chunk) if nl < 0 else nl
            if len(head) <= limit:
                head += chunk[pos : min(end, pos + limit + 1 - len(head))]
            seen += end - pos
            if nl < 0:
                break
            if seen > limit:
                yield head[:limit], seen + 1, True
            else:
                yield head.rstrip(b"\r\n"), seen + 1, False
            head, seen, pos = b"", 0, nl + 1
    if seen:
        if seen > limit:
            yield head[:limit], seen, True
        else:
            yield head.rstrip(b"\r\n"), seen, False


class StreamInput:
    """stdin or another finite stream; no checkpoint (nothing to resume).

    Built on a descriptor (:meth:`stdin`), it opens nothing until read, so a
    parse worker process can read it, and reports idle moments.
    """

    def __init__(
        self,
        stream: IO[bytes] | None,
        name: str = "stdin",
        max_line_bytes: int = 65536,
        *,
        fd: int | None = None,
    ):
        if (stream is None) == (fd is None):
            raise ValueError("give a stream or a descriptor")
        self.stream = stream
        self.fd = fd
        self.name = name
        self.limit = max_line_bytes
        self._line = 0

    @classmethod
    def stdin(cls, max_line_bytes: int = 65536) -> StreamInput:
        return cls(None, "stdin", max_line_bytes, fd=0)

    def __iter__(self) -> Iterator[Record | None]:
        if self.fd is not None:
            for item in read_fd_lines(self.fd, self.limit):
                if item is None:
                    yield None
                    continue
                data, length, cut = item
                self._line += 1
                yield Record(data, self._line, length if cut else None, self.name)
            return
        assert self.stream is not None
        for data, _offset, length, cut in read_lines(self.stream, self.limit):
            self._line += 1
            yield Record(data, self._line, length if cut else None, self.name)

    def checkpoint(self) -> dict[str, Any] | None:
        return None

    def restore(self, checkpoint: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None
