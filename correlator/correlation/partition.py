"""What the engine holds per input partition: its clock and lateness buffer,
the windows of every (rule, group), open absence windows and suppressions."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from correlator.correlation.clock import LatenessBuffer
from correlator.correlation.compiled import CompiledCorrelation
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

    def newest_group_time(self) -> float:
        """The newest event time any window holds."""
        return max((st.last_t for table in self.groups for st in table.values()), default=-math.inf)

    def clamp_state(
        self, limit: float, rules: Sequence[CompiledCorrelation]
    ) -> tuple[int, list[int]]:
        """Drop what is dated after ``limit``: waiting events, absence windows,
        groups and suppressions (``CorrelationEngine.clamp_clock``). Returns
        the items dropped and the groups removed per rule index."""
        dropped = self.clamp(limit)
        for _, _, ri, gkey, p in self.pending:
            if not p.cancelled and p.start > limit:
                p.cancelled = True
                dropped += 1
                st = self.groups[ri].get(gkey)
                if st is not None and st.pend and st.pend.get(p.clause) is p:
                    del st.pend[p.clause]
                    if not st.pend:
                        st.pend = None
        removed = []
        for ri, table in enumerate(self.groups):
            future = [k for k, st in table.items() if st.last_t > limit]
            for k in future:
                del table[k]
            removed.append(len(future))
            dropped += len(future)
            rule = rules[ri]
            if self.suppress[ri] and rule.suppress is not None:
                window = rule.suppress.window
                self.suppress[ri] = {
                    k: u for k, u in self.suppress[ri].items() if u - window <= limit
                }
        return dropped, removed
