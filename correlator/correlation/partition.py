"""What the engine holds per input partition: its clock and lateness buffer,
the windows of every (rule, group), open absence windows and suppressions."""

from __future__ import annotations

import itertools
from typing import Any

from correlator.correlation.clock import LatenessBuffer
from correlator.correlation.records import PendingEntry


class Partition(LatenessBuffer):
    """A lateness buffer with the window state it feeds. A subclass, not a
    member, because the hot path reads the clock's fields on every event."""

    __slots__ = ("dirty", "groups", "pending", "suppress")

    def __init__(self, n_rules: int, lateness: float, seq: itertools.count[int]) -> None:
        super().__init__(lateness, seq)
        # open absence windows, a heap by deadline
        self.pending: list[PendingEntry] = []
        # per rule index: group key -> window
        self.groups: list[dict[tuple[Any, ...], Any]] = [{} for _ in range(n_rules)]
        # per rule index: suppression key -> suppressed until (epoch seconds)
        self.suppress: list[dict[tuple[Any, ...], float]] = [{} for _ in range(n_rules)]
        self.dirty = True  # changed since the last snapshot_partitions()
