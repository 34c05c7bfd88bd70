"""Fast readers for the event fields a correlation groups by and aggregates.

They run for every event and rule, so each field gets a function made for
its path: nested lookups first (events are nested ECS), falling back to
``zonewatch.ecs.get_field`` for flat dotted keys and odd shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from zonewatch.ecs import get_field

Getter = Callable[[dict[str, Any]], Any]


def norm(value: Any) -> Any:
    """Group/distinct value: strings lowered; None, {} and [] mean missing."""
    cls = value.__class__
    if cls is str:
        return value.lower()
    if value is None or cls is dict:
        return None
    if cls is list or cls is tuple:
        items = tuple(norm(v) for v in value)
        return items if items and None not in items else None
    return value


def number(value: Any) -> float | None:
    """A finite number from an int, float or numeric string; else None."""
    cls = value.__class__
    if cls is int:
        return value
    if cls is float:
        return value if math.isfinite(value) else None
    if cls is str:
        try:
            parsed = float(value)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def getter(name: str) -> Getter:
    parts = name.split(".")
    if len(parts) == 1:
        return lambda event: event.get(name)
    if len(parts) == 2:
        a, b = parts

        def get2(event: dict[str, Any]) -> Any:
            try:
                return event[a][b]
            except (KeyError, TypeError, IndexError):
                return get_field(event, name)

        return get2
    if len(parts) == 3:
        a, b, c = parts

        def get3(event: dict[str, Any]) -> Any:
            try:
                return event[a][b][c]
            except (KeyError, TypeError, IndexError):
                return get_field(event, name)

        return get3
    return lambda event: get_field(event, name)


def key_getter(names: tuple[str, ...]) -> Getter:
    """event -> normalized group key tuple, or None when a field is missing."""
    getters = [getter(n) for n in names]
    if len(getters) == 1:
        (g,) = getters

        def key1(event: dict[str, Any]) -> tuple[Any, ...] | None:
            v = g(event)
            if v.__class__ is str:
                return (v.lower(),)
            v = norm(v)
            return None if v is None else (v,)

        return key1

    def key_n(event: dict[str, Any]) -> tuple[Any, ...] | None:
        out = []
        for g in getters:
            v = norm(g(event))
            if v is None:
                return None
            out.append(v)
        return tuple(out)

    return key_n


def value_getter(names: tuple[str, ...], numeric: bool) -> Getter:
    """event -> the aggregated value (a number, or a normalized distinct
    value / tuple of them), or None when missing or not a number."""
    getters = [getter(n) for n in names]
    if numeric:
        (g,) = getters
        return lambda event: number(g(event))
    if len(getters) == 1:
        (g,) = getters
        return lambda event: norm(g(event))

    def values(event: dict[str, Any]) -> Any:
        out = tuple(norm(g(event)) for g in getters)
        return None if None in out else out

    return values
