"""Helpers for sources that deliver JSON records (Intune, Citrix, AVD, Horizon).

One line may hold one record, a Graph/OData page (``{"value": [...]}``), an
Event Hub batch (``{"records": [...]}``) or a plain array; each record keeps
its own text as ``event.original``.

A batch member that is not an object cannot be a record. It used to vanish
without a trace (issue 20); now the pipeline collects such members while it
parses a line (:func:`skipped_members`) and dead-letters the line with them
named, while the batch's objects still become events. Parsed outside that
collector, such a batch is refused whole (``ParseError``): never dropped.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Any

import orjson

from zonewatch.errors import ParseError

_SLUG_RE = re.compile(r"[^a-z0-9]+")
_skipped: ContextVar[list[str] | None] = ContextVar("zonewatch_skipped_members", default=None)


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
                return _objects(batch, key)
        return [(doc, raw)]
    if isinstance(doc, list):
        return _objects(doc, "")
    raise ParseError("JSON line is neither an object nor an array of objects")


class skipped_members:
    """While active, :func:`unwrap` lists here the batch members it skipped
    (``"records[2] is a string"``) instead of refusing their line.

    A class rather than ``@contextmanager``: the pipeline enters it for every
    line, and the generator machinery cost about a microsecond each time."""

    __slots__ = ("_token", "found")

    def __enter__(self) -> list[str]:
        self.found: list[str] = []
        self._token = _skipped.set(self.found)
        return self.found

    def __exit__(self, *exc: object) -> None:
        _skipped.reset(self._token)


def _objects(batch: list[Any], key: str) -> list[tuple[dict[str, Any], str]]:
    records = [(r, orjson.dumps(r).decode()) for r in batch if isinstance(r, dict)]
    if len(records) == len(batch):
        return records
    skipped = [f"{key}[{i}] is {_kind(r)}" for i, r in enumerate(batch) if not isinstance(r, dict)]
    collector = _skipped.get()
    if collector is None:
        raise ParseError("JSON batch members that are not objects: " + ", ".join(skipped[:5]))
    collector.extend(skipped)
    return records


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "an array"


def dict_at(record: dict[str, Any], key: str) -> dict[str, Any]:
    """``record[key]`` when it is an object, else an empty one."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def list_at(record: dict[str, Any], key: str) -> list[Any]:
    """``record[key]`` when it is an array, else an empty one."""
    value = record.get(key)
    return value if isinstance(value, list) else []


def boolean(value: Any) -> bool | None:
    """A JSON boolean or its text (``"True"``, ``"false"``); None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def put(node: dict[str, Any], key: str, value: Any) -> None:
    """``node[key] = value`` unless the value is empty (None, "", [] or {})."""
    if value is not None and value != "" and value != [] and value != {}:
        node[key] = value


def scalars(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` without its object and array values: what a field may be
    copied from (a nested structure where a name or an id belongs is left out,
    not shipped)."""
    return {k: v for k, v in record.items() if not isinstance(v, dict | list)}
