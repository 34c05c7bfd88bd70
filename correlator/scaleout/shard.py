"""One correlation shard's input: hits from every source partition, put back
into event-time order (pure).

A hits partition interleaves the hits of many source partitions, each sent by
whichever detection member owns that source partition at the time. Per
source partition they arrive in offset order; across source partitions they
do not. So, like ``correlator/ordering.py`` does for Kafka partitions, the
shard buffers hits and releases them only up to its *frontier*: the smallest
progress among ALL source partitions, where a source's progress is the newest
of its hit times and of the watermarks its sender declared. A source
partition nobody has reported on yet holds the shard back: until then, hits
older than anything seen could still come from it.

A hit its sender found late (``Hit.late``: behind its source partition's
watermark, judged in that partition's order) is not ordered in: it waits in
``late`` for ``engine.process_late`` and moves no progress.

Replays are harmless: a detection member that crashed re-sends hits from its
last committed offset, and the shard drops every hit whose source offset it
has already received. The received offsets, the buffer and the progress are
part of the shard's checkpointed state.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable
from typing import Any

from correlator.scaleout.records import Hit, SourcePartition

_NONE = float("-inf")


class ShardInput:
    def __init__(self, sources: Iterable[SourcePartition] = ()):
        self.progress: dict[SourcePartition, float] = {s: _NONE for s in sources}
        self.received: dict[SourcePartition, int] = {}
        self.duplicates = 0
        self.late: list[Hit] = []
        self._heap: list[tuple[float, int, Hit]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def expect(self, sources: Iterable[SourcePartition]) -> None:
        """The source partitions that exist: each holds the shard back until
        something is heard from it."""
        for source in sources:
            self.progress.setdefault(source, _NONE)

    def offer(self, hit: Hit) -> bool:
        """Buffer a hit; False (and nothing buffered) when it is a replay."""
        if hit.offset <= self.received.get(hit.source, -1):
            self.duplicates += 1
            return False
        self.received[hit.source] = hit.offset
        if hit.late is not None:
            self.late.append(hit)
            return True
        if hit.time > self.progress.get(hit.source, _NONE):
            self.progress[hit.source] = hit.time
        heapq.heappush(self._heap, (hit.time, next(self._seq), hit))
        return True

    def declare(self, progress: dict[SourcePartition, float]) -> None:
        """A watermark: these sources have sent every hit up to these times."""
        for source, t in progress.items():
            if t > self.progress.get(source, _NONE):
                self.progress[source] = t

    def frontier(self) -> float:
        return min(self.progress.values(), default=_NONE)

    def release(self) -> list[Hit]:
        """Hits no source can precede any more, oldest first."""
        limit = self.frontier()
        out: list[Hit] = []
        heap = self._heap
        while heap and heap[0][0] <= limit:
            out.append(heapq.heappop(heap)[2])
        return out

    def take_late(self) -> list[Hit]:
        """The late hits offered since the last call, in arrival order."""
        late, self.late = self.late, []
        return late

    # -- checkpoint ------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "progress": [[t, p, v] for (t, p), v in self.progress.items() if v != _NONE],
            "sources": [[t, p] for t, p in self.progress],
            "received": [[t, p, o] for (t, p), o in self.received.items()],
            "buffer": [
                [h.source[0], h.source[1], h.offset, h.time, h.when, h.ids, h.event]
                for _, _, h in sorted(self._heap, key=lambda e: (e[0], e[1]))
            ],
            "late": [
                [h.source[0], h.source[1], h.offset, h.time, h.when, h.ids, h.event, h.late]
                for h in self.late
            ],
        }

    @classmethod
    def restore(cls, doc: dict[str, Any], limit: float = float("inf")) -> ShardInput:
        """``limit``: progress and hits stamped after it (a state written
        before event times were bounded) are left out."""
        shard = cls((str(t), int(p)) for t, p in doc.get("sources", ()))
        shard.declare(
            {(str(t), int(p)): float(v) for t, p, v in doc.get("progress", ()) if v <= limit}
        )
        shard.received = {(str(t), int(p)): int(o) for t, p, o in doc.get("received", ())}
        for topic, partition, offset, t, when, ids, event in doc.get("buffer", ()):
            if t > limit:
                continue
            hit = Hit((str(topic), int(partition)), int(offset), float(t), when, list(ids), event)
            heapq.heappush(shard._heap, (hit.time, next(shard._seq), hit))
        for topic, partition, offset, t, when, ids, event, late in doc.get("late", ()):
            source = (str(topic), int(partition))
            shard.late.append(Hit(source, int(offset), float(t), when, list(ids), event, late))
        return shard
