"""The event sources zonewatch knows, and the names of its topics.

Light on purpose (no pydantic): command-line choices import it at start-up.
Every topic is ``<settings.kafka.topic_prefix>.<name>``; ``KafkaSettings``
(zonewatch/config.py) builds the full names from the names below.
"""

from __future__ import annotations

SOURCES = ("intune", "gateway", "firewall", "vdi", "identity")

# Topic names under the prefix.
EVENTS = "events"  # events.<source>: normalized events of one source
DEADLETTER = "deadletter"  # records a connector could not turn into events
CHECKPOINTS = "checkpoints"  # connector checkpoints (one partition)
CORRELATION_HITS = "correlation.hits"  # scale-out: hits re-keyed by group
CORRELATION_STATE = "correlation.state"  # scale-out: shard state changelog (compacted)


def source_of_topic(topic: str | None) -> str | None:
    """``zonewatch.events.firewall`` -> ``firewall`` (the inverse of
    ``KafkaSettings.events_topic``); None for any other topic."""
    if not topic or f".{EVENTS}." not in topic:
        return None
    tail = topic.rsplit(".", 1)[-1]
    return tail if tail in SOURCES else None
