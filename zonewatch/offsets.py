"""Where to resume reading a partition: a stored offset checked against the log (pure).

A stored offset (the correlator's in DuckDB, a connector's checkpoint hint)
is only a promise that the log still holds what it pointed at. Three things
break that promise, and each has its own policy (docs/deploy.md,
"Offsets and checkpoints"):

* ``log_truncated``: the offset lies before the log's start. Retention (or
  ``kafka-delete-records``) removed records nobody had read: they are lost.
  Resume at the log's start, and say how many records were skipped.
* ``ahead_of_end``: the offset lies beyond the log's end. The log is shorter
  than when the offset was stored: the topic was recreated, or the broker
  lost its data (the embedded broker keeps everything in memory). Every
  record in the log is new to us: read it from its start.
* ``topic_recreated``: the topic's id differs from the one stored with the
  offset. The same as above, caught even when the new log happens to be
  longer than the offset.

Kafka's own answer to an out-of-range offset is ``auto.offset.reset``,
applied silently (and the embedded broker does not even report the offset
as out of range: it just never returns a record). Ours is explicit: the
caller logs one warning naming the case and counts it in a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OffsetReset(StrEnum):
    LOG_TRUNCATED = "log_truncated"
    AHEAD_OF_END = "ahead_of_end"
    TOPIC_RECREATED = "topic_recreated"


# What happened, in words an operator can act on (logged with the warning).
EXPLAIN: dict[OffsetReset, str] = {
    OffsetReset.LOG_TRUNCATED: (
        "the stored offset lies before the start of the log: retention deleted records "
        "that were never read (they are lost); resuming at the log's start"
    ),
    OffsetReset.AHEAD_OF_END: (
        "the stored offset lies beyond the end of the log: the topic was recreated or the "
        "broker lost its data (e.g. a restarted embedded broker); reading the new log from "
        "its start"
    ),
    OffsetReset.TOPIC_RECREATED: (
        "the topic is not the one the offset was stored for: it was deleted and created "
        "again, or the broker lost its data (e.g. a restarted embedded broker); reading the "
        "new log from its start"
    ),
}


@dataclass(frozen=True, slots=True)
class LogBounds:
    """The first offset a partition still holds, the offset the next record
    will get (the high watermark), and its topic's id when the broker says."""

    start: int
    end: int
    topic_id: str | None = None


def decide_start_offset(
    stored: int | None, log_start: int, log_end: int, *, same_topic: bool = True
) -> tuple[int | None, OffsetReset | None]:
    """The offset to resume at, and why it is not ``stored`` (None when it is).

    ``stored`` None means nothing was stored: the answer is (None, None) and
    the consumer's own reset policy applies. ``same_topic`` False means the
    topic id changed since ``stored`` was written.
    """
    if stored is None:
        return None, None
    if not same_topic:
        return log_start, OffsetReset.TOPIC_RECREATED
    if stored > log_end:
        return log_start, OffsetReset.AHEAD_OF_END
    if stored < log_start:
        return log_start, OffsetReset.LOG_TRUNCATED
    return stored, None


def same_topic(stored_id: str | None, current_id: str | None) -> bool:
    """Whether a topic id stored earlier names the current topic (unknown
    on either side counts as the same: older stores and brokers have none)."""
    return stored_id is None or current_id is None or stored_id == current_id
