"""The event sources zonewatch knows, and the names of its topics.

Light on purpose (no pydantic): command-line choices import it at start-up.
Every topic is ``<settings.kafka.topic_prefix>.<name>``; ``KafkaSettings``
(zonewatch/config.py) builds the full names from the names below.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from zonewatch.errors import ConfigError

SOURCES = ("intune", "gateway", "firewall", "vdi", "identity")

# Topic names under the prefix.
EVENTS = "events"  # events.<source>: normalized events of one source
DEADLETTER = "deadletter"  # records a connector could not turn into events
CHECKPOINTS = "checkpoints"  # connector checkpoints (one partition)
ALERTS = "alerts"  # every stored alert and triage change, for a SIEM/SOAR
# Scale-out's internal topics, one pair per consumer group (like Kafka
# Streams' ``<application.id>-...-changelog``): correlation.<group>.hits
# (hits re-keyed by correlation group) and correlation.<group>.state (the
# shards' changelog, compacted). Before they were per group, every group on a
# prefix shared correlation.hits / correlation.state; a deployment that ran
# then may keep them (correlator.scale_out_legacy_topics).
CORRELATION = "correlation"
LEGACY_CORRELATION_HITS = "correlation.hits"
LEGACY_CORRELATION_STATE = "correlation.state"

# Kafka refuses topic names over 249 characters or with other characters
# than these; it also refuses a name that equals another one once '.' and
# '_' are taken for the same (they clash in its metric names), so a group's
# part of the name never holds a '.'.
MAX_TOPIC_CHARS = 249
_KEPT = re.compile(r"[A-Za-z0-9_-]+")
_OTHER = re.compile(r"[^A-Za-z0-9_-]")
# A readable group part; a longer group id is cut and told apart by its hash.
MAX_GROUP_CHARS = 80
_HASH_CHARS = 12
_SUFFIXES = (".hits", ".state")


class ScaleOutTopics(NamedTuple):
    """The internal topics of one ``correlate --scale-out`` consumer group."""

    hits: str
    state: str


def group_topic_part(group_id: str, room: int = MAX_GROUP_CHARS) -> str:
    """The consumer group's part of its internal topic names, at most
    ``room`` characters of ``[A-Za-z0-9_-]``.

    A group id made of those characters that fits is used as it is. Any
    other (a '.', a space, a letter outside ASCII, too long) has every other
    character replaced by '_', is cut to fit, and ends in '-' and the first
    12 hex digits of its SHA-256, so two group ids never share topics (the
    replacement alone would give ``soc.eu`` and ``soc_eu`` one name).
    """
    room = min(room, MAX_GROUP_CHARS)
    if not group_id.strip():
        raise ConfigError(
            "the consumer group id is empty: --scale-out names its internal topics "
            "after the group; set --group-id / correlator.group_id"
        )
    if len(group_id) <= room and _KEPT.fullmatch(group_id):
        return group_id
    readable = room - _HASH_CHARS - 1
    if readable < 1:
        raise ConfigError(
            f"no room for the consumer group {group_id!r} in its internal topic names "
            f"(Kafka allows {MAX_TOPIC_CHARS} characters): shorten kafka.topic_prefix"
        )
    digest = hashlib.sha256(group_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{_OTHER.sub('_', group_id)[:readable]}-{digest[:_HASH_CHARS]}"


def scale_out_topics(prefix: str, group_id: str, *, legacy: bool = False) -> ScaleOutTopics:
    """``<prefix>.correlation.<group>.hits`` and ``.state`` (see
    :func:`group_topic_part`), or with ``legacy`` the names every group on the
    prefix shared before: ``<prefix>.correlation.hits`` and ``.state``."""
    if legacy:
        return legacy_scale_out_topics(prefix)
    base = f"{prefix}.{CORRELATION}."
    part = group_topic_part(group_id, MAX_TOPIC_CHARS - len(base) - max(map(len, _SUFFIXES)))
    return ScaleOutTopics(f"{base}{part}.hits", f"{base}{part}.state")


def source_of_topic(topic: str | None) -> str | None:
    """``zonewatch.events.firewall`` -> ``firewall`` (the inverse of
    ``KafkaSettings.events_topic``); None for any other topic."""
    if not topic or f".{EVENTS}." not in topic:
        return None
    tail = topic.rsplit(".", 1)[-1]
    return tail if tail in SOURCES else None


def legacy_scale_out_topics(prefix: str) -> ScaleOutTopics:
    """The internal topics every scale-out group on ``prefix`` shared before
    they were per group."""
    return ScaleOutTopics(
        f"{prefix}.{LEGACY_CORRELATION_HITS}", f"{prefix}.{LEGACY_CORRELATION_STATE}"
    )
