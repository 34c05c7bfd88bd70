"""Field access on ECS events held as nested dicts.

Events travel as nested JSON (``{"source": {"ip": ...}}``) but Sigma rules and
analysts name fields by dotted path (``source.ip``). How a dotted name reads an
event is defined once, in ``zonewatch.fieldpath`` (``get_field`` and ``MISSING``
are re-exported here for the connectors and their tests).
"""

from __future__ import annotations

from typing import Any

from zonewatch.fieldpath import MISSING, get_field

__all__ = ["MISSING", "flatten", "get_field", "set_field"]


def set_field(event: dict[str, Any], name: str, value: Any) -> None:
    """Set a dotted path, creating nested dicts on the way."""
    node = event
    parts = name.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def flatten(event: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": value}``; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
