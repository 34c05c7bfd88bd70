"""Helpers for sources that deliver JSON records (Intune, Citrix, AVD, Horizon).

One line may hold one record, a Graph/OData page (``{"value": [...]}``), an
Event Hub batch (``{"records": [...]}``) or a plain array; each record keeps
its own text as ``event.original``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from zonewatch.errors import ParseError

_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """An activity name as an ``event.action``: ``"Delete Policy"`` -> ``"delete-policy"``."""
    return _SLUG_RE.sub("-", text.lower()).strip("-")


def loads(raw: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc}") from None


def unwrap(doc: Any, raw: str) -> list[tuple[dict[str, Any], str]]:
    """(record, original text) pairs of a line holding one record or a batch."""
    if isinstance(doc, dict):
        for key in ("records", "value"):
            batch = doc.get(key)
            if isinstance(batch, list):
                return [(r, orjson.dumps(r).decode()) for r in batch if isinstance(r, dict)]
        return [(doc, raw)]
    if isinstance(doc, list):
        return [(r, orjson.dumps(r).decode()) for r in doc if isinstance(r, dict)]
    raise ParseError("JSON line is neither an object nor an array of objects")


def dict_at(record: dict[str, Any], key: str) -> dict[str, Any]:
    """``record[key]`` when it is an object, else an empty one."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def list_at(record: dict[str, Any], key: str) -> list[Any]:
    """``record[key]`` when it is an array, else an empty one."""
    value = record.get(key)
    return value if isinstance(value, list) else []


def scalars(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without its object and array values: what a field may be
    copied from (a nested structure where a name or an id belongs is left out,
    not shipped)."""
    return {k: v for k, v in record.items() if not isinstance(v, dict | list)}
