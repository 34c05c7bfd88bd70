"""Where each assigned partition resumes: the stored offset, checked against the log.

Called on every (re)assignment by both loops (``correlator/stream.py`` and
``correlator/scaleout/stage.py``). The decision itself is
``zonewatch.offsets.decide_start_offset`` (pure); this module asks the
broker for the log bounds, logs one warning per kind of reset, counts it in
``zonewatch_correlator_offset_resets_total`` and returns the offsets to seek
to. When the broker does not say (timeout), the stored offsets are used as
before: a check that cannot run must not stop the correlator.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson
from kafka import TopicPartition
from prometheus_client import Counter

from zonewatch.config import KafkaSettings
from zonewatch.logs import get_logger
from zonewatch.offsets import EXPLAIN, LogBounds, OffsetReset, decide_start_offset, same_topic

log = get_logger(__name__)

OFFSET_RESETS = Counter(
    "zonewatch_correlator_offset_resets_total",
    "Partitions whose stored offset no longer fit the log (see docs/deploy.md)",
    ["reason"],
)

# The store's state key of the input topics' ids as of the stored offsets.
TOPIC_IDS_KEY = "input-topic-ids"
BOUNDS_TIMEOUT_S = 10.0

Key = tuple[str, int]


@dataclass
class Resume:
    """Offsets to seek to (validated), the partitions moved away from their
    stored offset and why, and the topic ids the offsets now refer to."""

    seek: dict[TopicPartition, int] = field(default_factory=dict)
    moved: dict[TopicPartition, tuple[int, int, OffsetReset]] = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def topic_label(topic: str, topic_id: str | None, old_end: int) -> str:
    """How event ids name a topic read again from its start after it was
    recreated (or lost by the broker): ``topic@<8 hex>``. Alert ids derive
    from event ids (``topic:partition:offset``), and the new log reuses the
    old one's offsets: without the label, a new event's alert would have the
    id of an old one and be dropped as a replay."""
    seed = topic_id if topic_id is not None else f"{old_end}/{time.time_ns()}"
    return f"{topic}@{zlib.crc32(seed.encode()):08x}"


def load_topic_ids(blob: bytes | None) -> tuple[dict[str, str], dict[str, str]]:
    """The stored topic ids and labels (``TOPIC_IDS_KEY``)."""
    if not blob:
        return {}, {}
    doc = orjson.loads(blob)
    return dict(doc.get("ids", {})), dict(doc.get("labels", {}))


def dump_topic_ids(ids: Mapping[str, str], labels: Mapping[str, str]) -> bytes:
    return orjson.dumps({"ids": dict(ids), "labels": dict(labels)})


def resume_offsets(
    kafka: KafkaSettings,
    assigned: Iterable[TopicPartition],
    stored: Mapping[TopicPartition, int],
    known_ids: Mapping[str, str],
    bounds: Mapping[TopicPartition, LogBounds] | None = None,
    timeout_s: float = BOUNDS_TIMEOUT_S,
) -> Resume:
    """Check each stored offset of ``assigned`` against its log's bounds and
    topic id; log and count every offset that has to move. ``bounds`` None:
    ask the broker (``zonewatch.kafka.log_bounds``; from a rebalance
    listener, ask it with ``off_the_io_thread`` first and pass them)."""
    from zonewatch.kafka import log_bounds

    assigned = list(assigned)
    wanted = set(assigned)
    out = Resume(seek={tp: o for tp, o in stored.items() if tp in wanted})
    if not assigned:
        return out
    if bounds is None:
        bounds = log_bounds(kafka, assigned, timeout_s=timeout_s)
    unknown = [tp for tp in out.seek if tp not in bounds]
    if unknown:
        log.warning(
            "offsets_not_checked",
            partitions=[f"{tp.topic}:{tp.partition}" for tp in unknown],
            reason=f"the broker gave no log bounds within {timeout_s:.0f}s",
            consequence="resuming at the stored offsets unchecked",
        )
    for tp, b in bounds.items():
        if tp not in wanted:
            continue
        if b.topic_id is not None:
            out.topic_ids[tp.topic] = b.topic_id
        offset = out.seek.get(tp)
        start, reason = decide_start_offset(
            offset,
            b.start,
            b.end,
            same_topic=same_topic(known_ids.get(tp.topic), b.topic_id),
        )
        if reason is not None and start is not None and offset is not None:
            out.seek[tp] = start
            out.moved[tp] = (offset, start, reason)
            if reason is not OffsetReset.LOG_TRUNCATED and tp.topic not in out.labels:
                out.labels[tp.topic] = topic_label(tp.topic, b.topic_id, b.end)
    for reason in OffsetReset:
        moved = {tp: m for tp, m in out.moved.items() if m[2] is reason}
        if not moved:
            continue
        OFFSET_RESETS.labels(reason=reason.value).inc(len(moved))
        fields: dict[str, object] = {
            "partitions": {
                f"{tp.topic}:{tp.partition}": f"{old} -> {new}"
                for tp, (old, new, _) in moved.items()
            },
            "what_happened": EXPLAIN[reason],
        }
        if reason is OffsetReset.LOG_TRUNCATED:
            fields["records_lost"] = sum(new - old for old, new, _ in moved.values())
        log.warning("stored_offsets_reset", reason=reason.value, **fields)
    return out
