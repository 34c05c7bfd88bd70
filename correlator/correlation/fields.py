"""Fast readers for the event fields a correlation groups by and aggregates.

They run for every event and rule, so each reader is a function generated for
its paths: nested lookups inlined (events are nested ECS), falling back to
``zonewatch.fieldpath.get_field`` for flat dotted keys and odd shapes, and the
normalization of the common case (a string) inlined too. A generic closure
per field costs two or three Python calls per read; the generated code none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from zonewatch import fieldpath, pysource

Getter = Callable[[dict[str, Any]], Any]

# The names the generated readers use (``key_lines`` and ``value_lines`` for
# code generated elsewhere need them in scope too).
NAMESPACE: dict[str, Any] = fieldpath.NAMESPACE


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


def _read(name: str, var: str, indent: str) -> list[str]:
    """Source lines setting ``var`` to the field ``name`` of ``event``."""
    return fieldpath.inline_lines(name, var, indent)


def _build(name: str, lines: list[str]) -> Getter:
    source = f"def {name}(event):\n" + "\n".join(lines) + "\n"
    namespace: dict[str, Any] = {
        **fieldpath.NAMESPACE,
        "norm": norm,
        "number": number,
    }
    filename = pysource.unique_name(f"correlation {name}")
    exec(pysource.compile_source(source, filename), namespace)  # tracebacks show the line
    fn: Getter = namespace[name]
    pysource.forget_with(fn, filename)
    return fn


def getter(name: str) -> Getter:
    """event -> the raw value of ``name`` (None when missing)."""
    return _build("get", [*_read(name, "v", "    "), "    return v"])


def key_getter(names: Sequence[str]) -> Getter:
    """event -> normalized group key tuple, or None when a field is missing."""
    return _build("key", [*key_lines(names, "    "), "    return key"])


def key_lines(names: Sequence[str], indent: str) -> list[str]:
    """Source lines setting ``key`` to what ``key_getter(names)`` returns, to
    inline in generated code (``NAMESPACE`` and ``norm`` in scope)."""
    lines = [f"{indent}key = None"]
    for i, name in enumerate(names):
        v = f"k{i}"
        lines += _read(name, v, indent)
        lines += [
            f"{indent}if {v}.__class__ is str:",
            f"{indent}    {v} = {v}.lower()",
            f"{indent}elif {v}.__class__ is not int:",
            f"{indent}    {v} = norm({v})",
            f"{indent}if {v} is not None:",
        ]
        indent += "    "
    lines.append(f"{indent}key = ({''.join(f'k{i}, ' for i in range(len(names)))})")
    return lines


def value_lines(names: Sequence[str], numeric: bool, indent: str) -> list[str] | None:
    """Source lines setting ``value`` to what ``value_getter(names, numeric)``
    returns, for one field (None otherwise: call the getter)."""
    if len(names) != 1:
        return None
    lines = _read(names[0], "value", indent)
    if numeric:
        return [
            *lines,
            f"{indent}if value.__class__ is not int:",
            f"{indent}    value = number(value)",
        ]
    return [
        *lines,
        f"{indent}if value.__class__ is str:",
        f"{indent}    value = value.lower()",
        f"{indent}elif value.__class__ is not int:",  # ports, ids: norm() keeps ints
        f"{indent}    value = norm(value)",
    ]


def value_getter(names: Sequence[str], numeric: bool) -> Getter:
    """event -> the aggregated value (a number, or a normalized distinct
    value / tuple of them), or None when missing or not a number."""
    inline = value_lines(names, numeric, "    ")
    if inline is not None:
        return _build("value", [*inline, "    return value"])
    lines: list[str] = []
    for i, name in enumerate(names):
        lines += _read(name, f"v{i}", "    ")
    lines.append(f"    out = ({''.join(f'norm(v{i}), ' for i in range(len(names)))})")
    lines.append("    return None if None in out else out")
    return _build("values", lines)
