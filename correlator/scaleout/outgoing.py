"""What a scaled-out member tells the correlation shards: its hits, gathered
per shard, and how far it has read each of its source partitions.

* :class:`HitsOut`: a batch's hits for one shard go in one record (kafka-python
  costs tens of µs per record to send and as much to read, whatever its
  size), up to ``HITS_RECORD_BYTES``.
* :func:`declared_progress` (pure): the watermark the member declares for
  each source partition it owns, from what it has read and how long each has
  been quiet (``correlator/progress.py``), a source's delivery delay
  (``correlation/clock.py``), and whether the member is on its way out of an
  idle exit (time caught up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from correlator.correlation.clock import SourceClock
from correlator.ports import Producer
from correlator.progress import ProgressPolicy
from correlator.scaleout.records import SourcePartition, encode_hits
from zonewatch.config import source_of_topic

# A shard's hits of a batch go in one record up to about this size (Kafka's
# default record limit is 1 MB).
HITS_RECORD_BYTES = 256 * 1024


class HitsOut:
    """Encoded hits per hits partition, sent one record each, in the order given."""

    def __init__(self, producer: Producer, topic: str, record_bytes: int = HITS_RECORD_BYTES):
        self.producer = producer
        self.topic = topic
        self.record_bytes = record_bytes
        self._hits: dict[int, list[bytes]] = {}
        self._bytes: dict[int, int] = {}

    def add(self, partition: int, hit: bytes) -> None:
        self._hits.setdefault(partition, []).append(hit)
        size = self._bytes[partition] = self._bytes.get(partition, 0) + len(hit) + 1
        if size >= self.record_bytes:
            self.send(partition)

    def send(self, only: int | None = None) -> None:
        """What was gathered (for every shard, or ``only`` that one) to the topic."""
        for p in list(self._hits) if only is None else [only]:
            hits = self._hits.pop(p)
            self._bytes.pop(p, None)
            value = hits[0] if len(hits) == 1 else encode_hits(hits)
            self.producer.send(self.topic, value=value, partition=p)


@dataclass
class SourceProgress:
    """What the member knows of one source partition it reads."""

    last_arrival: float  # the member's clock at its last record
    newest: float = -math.inf  # its newest event time
    quiet_polls: int = 0  # polls since its last record


def declared_progress(
    sources: Mapping[SourcePartition, tuple[SourceProgress, bool]],
    policy: ProgressPolicy,
    now: float,
    wall: float,
    *,
    delays: SourceClock | None = None,
    exiting: bool = False,
) -> dict[SourcePartition, float]:
    """The event time up to which the member has sent every hit of each of
    its source partitions (``sources``: each one's progress, and whether the
    consumer has not read it to its end yet), at ``now`` on the member's
    clock and ``wall`` on the wall clock."""
    progress: dict[SourcePartition, float] = {}
    idle: list[SourcePartition] = []
    for source, (state, behind) in sources.items():
        rule = policy.rule(source_of_topic(source[0]))
        quiet_s = now - state.last_arrival
        if rule.idle(quiet_s=quiet_s, quiet_polls=state.quiet_polls, behind=behind):
            # Time moves it on from where it stopped (progress.idle_progress).
            idle.append(source)
            if state.newest != -math.inf:
                progress[source] = rule.progress(state.newest, quiet_s)
        elif state.newest != -math.inf:
            progress[source] = state.newest
    # An idle input that never delivered anything (an empty partition) must
    # not hold the shards back: it goes as far as this member's furthest
    # input, or, when this member has read nothing at all, the wall clock
    # less the idle window.
    furthest = max(progress.values(), default=wall - policy.default.idle_s)
    for source in idle:
        progress.setdefault(source, furthest)
    if exiting:
        # An idle exit: time has caught up, delivery delays included.
        for source in idle:
            progress[source] = max(progress[source], wall - policy.default.idle_s)
    elif delays is not None and delays.delay_by_source:
        for source in idle:
            state = sources[source][0]
            empty = state.newest == -math.inf
            held = delays.idle_hold(
                source_of_topic(source[0]),
                furthest if empty else state.newest,
                now - state.last_arrival,
                wall if empty else None,
            )
            if held is not None:
                progress[source] = min(progress[source], held)
    return progress
