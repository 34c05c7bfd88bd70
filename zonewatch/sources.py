"""The event sources zonewatch knows, and the topic each one's events go to.

Light on purpose (no pydantic): command-line choices import it at start-up.
"""

from __future__ import annotations

SOURCES = ("intune", "gateway", "firewall", "vdi", "identity")


def source_of_topic(topic: str | None) -> str | None:
    """``zonewatch.events.firewall`` -> ``firewall`` (the inverse of
    ``KafkaSettings.events_topic``); None for any other topic."""
    if not topic or ".events." not in topic:
        return None
    tail = topic.rsplit(".", 1)[-1]
    return tail if tail in SOURCES else None
