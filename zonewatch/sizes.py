"""Memory sizes as DuckDB and our settings write them (``512MB``, ``2GiB``)."""

from __future__ import annotations

import re

# DuckDB's units: decimal (KB = 1000 bytes) and binary (KiB = 1024 bytes).
_UNITS = {
    "": 1,
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    "pib": 1 << 50,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512MB``, ``1.5 GB`` or ``256MiB``.

    Raises ValueError with the forms accepted."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size: write a number and a unit, e.g. 512MB, 2GB or 256MiB"
        )
    return int(float(match.group(1)) * _UNITS[unit])
