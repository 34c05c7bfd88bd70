"""What the detection stage and the correlation stage say to each other (pure).

Two internal topics carry it (see correlator/correlation/README.md, Scale-out;
one pair per consumer group, names in ``zonewatch/sources.py``, created by
``zonewatch topics``):

``<prefix>.correlation.<group>.hits``
    *Hit* records: events some correlation reads, with the detection rules
    they matched, sent to the partition of their group key (after aliases),
    so every event of one group reaches one correlation shard whatever
    source partition it came from; a batch's hits for one shard go in one
    record (``encode_hits``). *Watermark* records: how far the sender has read
    each source partition it owns, sent to every partition, so a shard knows
    when no older hit can come (windows close, absences resolve).

``<prefix>.correlation.<group>.state``
    The changelog: a shard's whole state (engine windows, buffered hits,
    progress per source) as of a hits offset, chunked under keys
    ``p/gen/i`` and committed by a header under key ``p``. A new owner of hits
    partition ``p`` reads changelog partition ``p`` and continues from there.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

# Kafka's default record limit is 1 MB (message.max.bytes); stay well under it.
CHUNK_BYTES = 512 * 1024

SourcePartition = tuple[str, int]


class RecordError(ValueError):
    """A record on an internal topic that this version cannot read."""


def key_partition(key: tuple[Any, ...], partitions: int) -> int:
    """The hits partition of a normalized group key: the same in every process
    (CRC32 of its JSON form, not Python's salted ``hash``)."""
    return zlib.crc32(orjson.dumps(key, default=str)) % partitions


@dataclass(slots=True)
class Hit:
    source: SourcePartition
    offset: int
    time: float  # event time, epoch seconds
    when: str  # the same, as the RFC 3339 text it was parsed from (exact)
    ids: list[str]  # detection rules the event matched that correlations read
    event: dict[str, Any]
    # Late for its source partition: the watermark of that partition it fell
    # behind (decided by the sender, in the partition's order); None: on time.
    late: float | None = None

    @property
    def event_id(self) -> str:
        return f"{self.source[0]}:{self.source[1]}:{self.offset}"


@dataclass(slots=True)
class Watermark:
    # source partition -> event time up to which its hits have all been sent
    progress: dict[SourcePartition, float]


def encode_hit(hit: Hit) -> bytes:
    doc = {
        "h": [hit.source[0], hit.source[1], hit.offset],
        "t": hit.time,
        "w": hit.when,
        "ids": hit.ids,
        "e": hit.event,
    }
    if hit.late is not None:
        doc["l"] = hit.late
    return orjson.dumps(doc)


def encode_hits(hits: list[bytes]) -> bytes:
    """Several encoded hits (``encode_hit``) for one shard as one record: a
    Kafka record costs kafka-python tens of µs to send and to read, whatever
    its size, so a batch's hits for a shard travel together."""
    return b'{"hs":[' + b",".join(hits) + b"]}"


def encode_watermark(progress: dict[SourcePartition, float]) -> bytes:
    return orjson.dumps({"wm": [[t, p, v] for (t, p), v in sorted(progress.items())]})


def _hit(doc: dict[str, Any]) -> Hit:
    topic, partition, offset = doc["h"]
    return Hit(
        (str(topic), int(partition)),
        int(offset),
        float(doc["t"]),
        str(doc["w"]),
        [str(i) for i in doc["ids"]],
        doc["e"],
        float(doc["l"]) if doc.get("l") is not None else None,
    )


def decode(value: bytes) -> list[Hit] | Watermark:
    """A hits record: its hits in the order sent (one, or ``encode_hits``'
    several), or a watermark."""
    try:
        doc = orjson.loads(value)
        if "hs" in doc:
            return [_hit(d) for d in doc["hs"]]
        if "h" in doc:
            return [_hit(doc)]
        if "wm" in doc:
            return Watermark({(str(t), int(p)): float(v) for t, p, v in doc["wm"]})
    except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise RecordError(f"unreadable hits record ({type(exc).__name__}: {exc})") from exc
    raise RecordError("hits record is neither a hit nor a watermark")


def carries_hits(value: bytes) -> bool:
    """Whether a hits record holds hits (not a watermark), from its first bytes."""
    return value[:4] in (b'{"h"', b'{"hs')


# -- the changelog ----------------------------------------------------------------

_HEADER = struct.Struct(">I")


def pack_state(meta: dict[str, Any], engine: bytes | None) -> bytes:
    """One shard's state: JSON metadata (length-prefixed) then the engine's
    own bytes for the partition, whatever their format."""
    head = orjson.dumps(meta)
    return _HEADER.pack(len(head)) + head + (engine or b"")


def unpack_state(data: bytes) -> tuple[dict[str, Any], bytes | None]:
    try:
        (size,) = _HEADER.unpack_from(data)
        meta = orjson.loads(data[_HEADER.size : _HEADER.size + size])
    except (struct.error, orjson.JSONDecodeError) as exc:
        raise RecordError(f"unreadable shard state ({type(exc).__name__})") from exc
    engine = data[_HEADER.size + size :]
    return meta, engine or None


def changelog_records(
    partition: int, generation: int, data: bytes, chunk: int = CHUNK_BYTES
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) records that store ``data`` as generation ``generation``
    of a shard: the chunks first, then the header that makes them current."""
    count = max(1, -(-len(data) // chunk))
    for i in range(count):
        yield f"{partition}/{generation}/{i}".encode(), data[i * chunk : (i + 1) * chunk]
    header = {"gen": generation, "chunks": count, "size": len(data), "crc": zlib.crc32(data)}
    yield str(partition).encode(), orjson.dumps(header)


def stale_keys(partition: int, generation: int, chunks: int) -> list[bytes]:
    """Keys of an older generation, to tombstone once a newer one is current
    (log compaction then frees them)."""
    return [f"{partition}/{generation}/{i}".encode() for i in range(chunks)]


class ChangelogReader:
    """Replays one changelog partition; :attr:`latest` is the newest complete state."""

    def __init__(self, partition: int):
        self.partition = partition
        self.generation = 0
        self.chunks = 0
        self.latest: bytes | None = None
        self._pending: dict[int, dict[int, bytes]] = {}

    def feed(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
        own = str(self.partition)
        for key, value in records:
            if key is None:
                continue
            name = key.decode()
            if name == own:
                if value is None:
                    continue
                header = orjson.loads(value)
                gen, count = int(header["gen"]), int(header["chunks"])
                parts = self._pending.pop(gen, {})
                if len(parts) != count:
                    raise RecordError(
                        f"changelog of shard {own} generation {gen} has "
                        f"{len(parts)} of {count} chunks"
                    )
                data = b"".join(parts[i] for i in range(count))
                if zlib.crc32(data) != header["crc"] or len(data) != header["size"]:
                    raise RecordError(f"changelog of shard {own} generation {gen} is corrupt")
                self.latest, self.generation, self.chunks = data, gen, count
                # Older generations can never become current any more.
                self._pending = {g: c for g, c in self._pending.items() if g > gen}
            elif name.startswith(own + "/") and value is not None:
                _, gen_text, index = name.split("/")
                gen = int(gen_text)
                if gen > self.generation:
                    self._pending.setdefault(gen, {})[int(index)] = value
