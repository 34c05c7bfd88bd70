"""A stand-in for the parse worker's control pipe, for running
``connectors.parse_worker._run`` in-process (worker_cpu.py, compare_trees.py).
No imports: compare_trees.py loads it beside another tree's connectors."""

from __future__ import annotations

from typing import Any


class StartControl:
    """The parent's control pipe: "start" from the beginning, never "stop"."""

    def __init__(self, partitions: dict[str, list[int]]):
        self.partitions = partitions

    def recv(self) -> tuple[Any, ...]:
        return ("start", None, self.partitions)

    def poll(self) -> bool:
        return False
