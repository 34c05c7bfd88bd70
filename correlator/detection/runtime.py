"""Helpers the generated matcher code calls at match time.

Everything here is on the hot path: plain functions, no logging, no
allocation beyond what a lookup needs. The compiler inlines the common cases
(equality, substring, prefix, suffix on a lowered string) and falls back to
these helpers for lists, numbers, networks and times.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import re2

from zonewatch.ecs import MISSING
from zonewatch.netranges import AddressSet

_NUMERIC = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def flatten_event(event: dict[str, Any]) -> dict[str, Any]:
    """Nested ECS dict -> ``{"dotted.name": value}``, built once per event.

    Keys already holding dots at the top level keep their value when a nested
    path spells the same name, as in ``zonewatch.ecs.get_field``. Lists are
    kept as values (a rule value matches when any element matches); empty
    dicts stay as values so ``|exists`` sees them.
    """
    out: dict[str, Any] = {}
    dotted_top = False
    for key, value in event.items():
        if value.__class__ is dict and value:
            for key2, value2 in value.items():
                if value2.__class__ is dict and value2:
                    _walk(value2, f"{key}.{key2}.", out)
                else:
                    out[f"{key}.{key2}"] = value2
        else:
            out[key] = value
            if "." in key:
                dotted_top = True
    if dotted_top:
        for key, value in event.items():
            if "." in key and not (value.__class__ is dict and value):
                out[key] = value
    return out


def _walk(node: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in node.items():
        if value.__class__ is dict and value:
            _walk(value, f"{prefix}{key}.", out)
        else:
            out[prefix + key] = value


def get_path(event: dict[str, Any], name: str) -> Any:
    """``name`` in ``event``: nested path first, then a flat key holding the rest
    of the path at any level; ``MISSING`` when absent (see zonewatch.ecs)."""
    if "." in name:
        node: Any = event
        parts = name.split(".")
        for i, part in enumerate(parts):
            if node.__class__ is not dict:
                break
            if part in node:
                node = node[part]
                continue
            rest = ".".join(parts[i:])
            return node.get(rest, MISSING)
        else:
            return node
    return event.get(name, MISSING)


def exists(event: dict[str, Any], name: str) -> bool:
    """``|exists``: the field is present, even when its value is null."""
    return get_path(event, name) is not MISSING


def exists_nested(event: dict[str, Any], name: str) -> bool:
    """True when ``name`` names a non-empty object (not a leaf) inside ``event``."""
    node: Any = event
    for part in name.split("."):
        if node.__class__ is not dict or part not in node:
            return False
        node = node[part]
    return True


def text(value: Any) -> Any:
    """The string form rules compare against: str as is, numbers and booleans
    as JSON spells them, lists as tuples of those; None for null and objects."""
    cls = value.__class__
    if cls is str:
        return value
    if value is None or cls is dict:
        return None
    if cls is bool:
        return "true" if value else "false"
    if cls is int or cls is float:
        return str(value)
    if cls is list or cls is tuple:
        return tuple(t for t in map(text, value) if t.__class__ is str)
    return str(value)


def lower(value: Any) -> Any:
    """``text`` lowered, for case-insensitive comparison."""
    cls = value.__class__
    if cls is str:
        return value.lower()
    t = text(value)
    if t.__class__ is tuple:
        return tuple(s.lower() for s in t)
    return t.lower() if t is not None else None


def any_of(values: Any, predicate: Callable[[str], bool]) -> bool:
    """Used for list-valued fields: a value matches when one element does."""
    return values.__class__ is tuple and any(map(predicate, values))


def wildcard_seq(value: str, parts: tuple[str, ...], start: bool, end: bool) -> bool:
    """Match ``a*b*c`` patterns in linear time with successive ``find`` calls.

    ``parts`` are the literals between ``*``; ``start``/``end`` say whether the
    pattern is anchored at either end (no leading/trailing ``*``).
    """
    if start and end and len(parts) == 1:
        return value == parts[0]
    pos = 0
    first, last = 0, len(parts)
    if start:
        if not value.startswith(parts[0]):
            return False
        pos = len(parts[0])
        first = 1
    if end:
        tail = parts[-1]
        last -= 1
        limit = len(value) - len(tail)
        if limit < pos or not value.endswith(tail):
            return False
    else:
        limit = len(value)
    for part in parts[first:last]:
        found = value.find(part, pos, limit)
        if found < 0:
            return False
        pos = found + len(part)
    return True


def as_number(value: Any) -> int | float | None:
    """A number from a JSON number or a numeric string; None otherwise."""
    cls = value.__class__
    if cls is int or cls is float:
        return value
    if cls is str and _NUMERIC.fullmatch(value):
        number = float(value)
        return int(number) if number.is_integer() and "." not in value else number
    return None


def num_eq(value: Any, number: int | float) -> bool:
    if value.__class__ is list:
        return any(num_eq(v, number) for v in value)
    got = as_number(value)
    return got is not None and got == number


def num_in(value: Any, numbers: frozenset[int | float]) -> bool:
    """A list of number values: ``num_eq`` against any of them."""
    if value.__class__ is list:
        return any(num_in(v, numbers) for v in value)
    got = as_number(value)
    return got is not None and got in numbers


def compare(value: Any, op: str, number: int | float) -> bool:
    """Numeric comparison; text that is not a number never matches."""
    if value.__class__ is list:
        return any(compare(v, op, number) for v in value)
    got = as_number(value)
    if got is None:
        return False
    if op == "lt":
        return got < number
    if op == "lte":
        return got <= number
    if op == "gt":
        return got > number
    if op == "gte":
        return got >= number
    return got != number


def in_networks(value: Any, networks: AddressSet) -> bool:
    """``|cidr``: IP semantics, so any spelling of an IPv6 address matches, and an
    IPv4-mapped IPv6 address (::ffff:10.0.0.1) matches as the IPv4 address too.
    Each address string is parsed once (``zonewatch.netranges``), whatever the
    number of rules and networks testing it."""
    if value.__class__ is str:
        return networks.match(value)
    if value.__class__ is list:
        return any(in_networks(v, networks) for v in value)
    return False


def _datetime(value: Any) -> datetime | None:
    cls = value.__class__
    if cls is int or cls is float:
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if cls is str:
        try:
            parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def time_part(value: Any, part: str, number: int) -> bool:
    """``|minute`` ... ``|year``: the part of a timestamp as the event spells it."""
    if value.__class__ is list:
        return any(time_part(v, part, number) for v in value)
    moment = _datetime(value)
    if moment is None:
        return False
    got = moment.isocalendar().week if part == "week" else getattr(moment, part)
    return bool(got == number)


def field_ref(value: Any, other: Any, starts: bool, ends: bool) -> bool:
    """``|fieldref``: compare two lowered fields of the same event."""
    if value is None or other is None:
        return False
    if value.__class__ is tuple:
        return any(field_ref(v, other, starts, ends) for v in value)
    if other.__class__ is tuple:
        return any(field_ref(value, o, starts, ends) for o in other)
    if starts and ends:
        return other in value
    if starts:
        return value.startswith(other)
    if ends:
        return value.endswith(other)
    return bool(value == other)


def keyword_values(flat: dict[str, Any]) -> tuple[str, ...]:
    """Every string form in the event, for keyword (unbound value) searches."""
    out: list[str] = []
    for value in flat.values():
        t = text(value)
        if t.__class__ is str:
            out.append(t)
        elif t is not None:
            out.extend(t)
    return tuple(out)


_RE2_ANCHOR = re2._re2.RE2.Anchor


def re2_tester(compiled: Any, whole: bool = False) -> Callable[[str], bool]:
    """``text -> bool``: does ``compiled`` match somewhere in (``whole``: all of) text.

    Calls RE2 directly: the binding's ``search`` wrapper converts byte offsets
    back to characters and builds match objects, costing 3x the match itself.
    """
    match = compiled._regexp.Match
    anchor = _RE2_ANCHOR.ANCHOR_BOTH if whole else _RE2_ANCHOR.UNANCHORED

    def test(text: str) -> bool:
        # surrogatepass: lone surrogates from JSON match as their own code points.
        data = text.encode("utf-8", "surrogatepass")
        return bool(match(anchor, data, 0, len(data))[0][0] >= 0)

    return test


class Keywords:
    """An event's strings for keyword (full-text) tests, gathered on first use."""

    __slots__ = ("_event", "_joined", "_lowered", "_raw", "_raw_joined")

    def __init__(self, event: dict[str, Any]):
        self._event = event
        self._raw: tuple[str, ...] | None = None
        self._lowered: tuple[str, ...] | None = None
        self._joined: str | None = None
        self._raw_joined: str | None = None

    @property
    def raw(self) -> tuple[str, ...]:
        if self._raw is None:
            self._raw = keyword_values(flatten_event(self._event))
        return self._raw

    @property
    def lowered(self) -> tuple[str, ...]:
        if self._lowered is None:
            self._lowered = tuple(x.lower() for x in self.raw)
        return self._lowered

    @property
    def joined(self) -> str:
        """Lowered strings joined by NUL: one ``in`` finds a NUL-free substring."""
        if self._joined is None:
            self._joined = "\0".join(self.lowered)
        return self._joined

    @property
    def raw_joined(self) -> str:
        if self._raw_joined is None:
            self._raw_joined = "\0".join(self.raw)
        return self._raw_joined


def compile_re2(pattern: str) -> Any:
    """Compile with RE2 (linear time); raises ``re2.error`` for constructs it rejects."""
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True
    return re2.compile(pattern, options)
