"""Field access on ECS events held as nested dicts.

Events travel as nested JSON (``{"source": {"ip": ...}}``) but Sigma rules and
analysts name fields by dotted path (``source.ip``). A field is looked up as a
nested path first and as a flat key containing dots second, so both shapes
work and names with ``-``, ``_`` or spaces are never mangled.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = object()


def get_field(event: dict[str, Any], name: str, default: Any = None) -> Any:
    """Value of ``name`` in ``event``: the nested path first, else a flat key
    holding the (rest of the) dotted name, as the detection engine reads it."""
    if "." not in name:
        return event.get(name, default)
    node: Any = event
    parts = name.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return default
        if part in node:
            node = node[part]
            continue
        # A flat key holding the rest of the path ("url" -> {"full.path": x}).
        rest = ".".join(parts[i:])
        return node.get(rest, default)
    return node


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
