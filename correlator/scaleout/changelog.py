"""Each correlation shard's state in the changelog topic (scale-out).

A shard's whole state (its input merge, the hits offset it covers, its
frontier, and the engine's bytes for its partition) is written as one
generation of chunked records every full checkpoint
(``correlator/checkpointer.py``, step 6), followed by tombstones for the
generation before so that compaction frees it. A member given the shard reads
the changelog partition to its end and resumes from the newest complete
generation (``records.ChangelogReader``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kafka import TopicPartition

from correlator.ports import Producer
from correlator.scaleout.records import (
    ChangelogReader,
    SourcePartition,
    changelog_records,
    pack_state,
    stale_keys,
    unpack_state,
)
from correlator.scaleout.shard import ShardInput
from zonewatch.config import KafkaSettings
from zonewatch.errors import ZonewatchError

CHANGELOG_READ_TIMEOUT_S = 30.0
STATE_VERSION = 1


class ScaleOutError(ZonewatchError):
    """The rules or the cluster do not allow a repartitioned correlator."""


@dataclass
class Shard:
    input: ShardInput
    next_offset: int | None = None  # next hits offset to read
    generation: int = 0  # of its newest changelog state
    chunks: int = 0
    dirty: bool = False
    frontier: float = float("-inf")


def write_changelog(
    producer: Producer,
    topic: str,
    shards: dict[int, Shard],
    engine_bytes: dict[int, bytes | None],
) -> None:
    """Each changed shard as a new generation, flushed; then tombstones for
    the generation before (compaction frees it)."""
    stale: list[tuple[int, list[bytes]]] = []
    for p, shard in shards.items():
        if not shard.dirty:
            continue
        meta = {
            "version": STATE_VERSION,
            "hits_offset": shard.next_offset,
            "frontier": shard.frontier if shard.frontier != float("-inf") else None,
            "input": shard.input.snapshot(),
        }
        data = pack_state(meta, engine_bytes.get(p))
        generation = shard.generation + 1
        count = 0
        for key, value in changelog_records(p, generation, data):
            producer.send(topic, key=key, value=value, partition=p)
            count += 1
        if shard.generation:
            stale.append((p, stale_keys(p, shard.generation, shard.chunks)))
        shard.generation, shard.chunks, shard.dirty = generation, count - 1, False
    producer.flush()
    for p, keys in stale:
        for key in keys:
            producer.send(topic, key=key, value=None, partition=p)


def restore_shard(
    p: int, reader: ChangelogReader, sources: list[SourcePartition], limit: float
) -> tuple[Shard, bytes | None]:
    """Shard ``p`` as its newest changelog generation left it (an empty one
    without any), and its engine bytes. ``limit``: event times beyond it (a
    state written before event times were bounded) are left out."""
    shard = Shard(ShardInput(sources), generation=reader.generation, chunks=reader.chunks)
    if reader.latest is None:
        return shard, None
    meta, engine_bytes = unpack_state(reader.latest)
    if meta.get("version") != STATE_VERSION:
        raise ScaleOutError(
            f"changelog state of shard {p} has version {meta.get('version')}, "
            f"this correlator reads {STATE_VERSION}"
        )
    shard.input = ShardInput.restore(meta["input"], limit)
    shard.input.expect(sources)
    shard.next_offset = meta["hits_offset"]
    if meta.get("frontier") is not None and float(meta["frontier"]) <= limit:
        shard.frontier = float(meta["frontier"])
    return shard, engine_bytes


def read_changelog(
    kafka: KafkaSettings, topic: str, partitions: list[int]
) -> dict[int, ChangelogReader]:
    """Read the changelog partitions to their end (high watermark)."""
    from zonewatch.kafka import make_consumer

    readers = {p: ChangelogReader(p) for p in partitions}
    consumer = make_consumer(kafka, None, isolation_level="read_uncommitted")
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + CHANGELOG_READ_TIMEOUT_S
        while True:
            for tp, records in consumer.poll(timeout_ms=200).items():
                readers[tp.partition].feed((r.key, r.value) for r in records)
            ends = [consumer.highwater(tp) for tp in tps]
            if all(
                h is not None and consumer.position(tp) >= h
                for tp, h in zip(tps, ends, strict=True)
            ):
                return readers
            if time.monotonic() > deadline:
                raise ScaleOutError(
                    f"could not read the correlation state changelog {topic} to its end "
                    f"within {CHANGELOG_READ_TIMEOUT_S:.0f}s; is the broker healthy?"
                )
    finally:
        consumer.close(autocommit=False)
