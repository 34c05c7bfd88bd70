"""Where records come from: files (followed, checkpointed), syslog, Graph, stdin.

An input is an iterator of :class:`Record` (or ``None`` when it is idle, so
the pipeline can commit and notice a stop request) with ``checkpoint()``
returning the position after the last record it yielded and ``restore()``
taking such a position back after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Record:
    """One input record: a line, a syslog message or one JSON document."""

    data: bytes
    position: int | None = None  # byte offset or sequence number where it starts
    size: int | None = None  # full size when ``data`` was cut at the line limit
    peer: str | None = None  # syslog sender, file path...


class Input(Protocol):
    name: str

    def __iter__(self) -> Any: ...

    def checkpoint(self) -> dict[str, Any] | None: ...

    def restore(self, checkpoint: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
