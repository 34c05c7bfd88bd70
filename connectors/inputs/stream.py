"""A finite byte stream read line by line (stdin, or any binary file object)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from connectors.inputs import Record


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


class StreamInput:
    """stdin or another finite stream; no checkpoint (nothing to resume)."""

    def __init__(self, stream: IO[bytes], name: str = "stdin", max_line_bytes: int = 65536):
        self.stream = stream
        self.name = name
        self.limit = max_line_bytes
        self._line = 0

    def __iter__(self) -> Iterator[Record | None]:
        for data, _offset, length, cut in read_lines(self.stream, self.limit):
            self._line += 1
            yield Record(data, self._line, length if cut else None, self.name)

    def checkpoint(self) -> dict[str, Any] | None:
        return None

    def restore(self, checkpoint: dict[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None
