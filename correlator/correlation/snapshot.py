"""The byte format of a correlation state snapshot, written and read as a stream.

Format 2 (current): ``MAGIC`` + a pickle (protocol 5) of plain rows: tuples,
lists, dicts, floats, strings, datetimes and absence windows. Pickle keeps
shared records shared (an event feeding three rules is stored once and
restored once, as in memory) and runs in C. Loading goes through an
unpickler that resolves only the few names the format uses, so a blob from
elsewhere cannot call anything else. Format 1 (the JSON of an earlier
release, one dict per group) is still read.

Both directions work on binary files, so the state never has to be one
``bytes`` object: ``write`` hands the pickler's frames (64 KiB at most) to
the file as it goes, and ``read`` takes them back from a file that may fetch
them chunk by chunk (the store's ``open_state``). ``encode`` / ``decode``
are the same on bytes. What the payload holds (rows per window class, the
partition tuple) is the engine's business; this module only moves it.
"""

from __future__ import annotations

import gc
import io
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO

import orjson

from correlator.correlation.errors import CorrelationStateError
from correlator.correlation.windows import Pending, _pending

VERSION = 2  # 1: JSON (still read), 2: pickle of rows
MAGIC = b"zonewatch-correlation\x00"

# The only names a format-2 snapshot may load (find_class refuses the rest).
_ALLOWED = {
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("correlator.correlation.windows", "_pending"),
}
# What a corrupt or foreign snapshot raises while it is read.
UNREADABLE = (
    orjson.JSONDecodeError,
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    KeyError,
    TypeError,
    ValueError,
    IndexError,
)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a correlation snapshot")
        return super().find_class(module, name)


@contextmanager
def no_gc() -> Iterator[None]:
    """Dumping or loading the state allocates an object per group and record;
    the collector would rescan the whole (long-lived, acyclic) state over and
    over meanwhile, which cost more than the work itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# What _Pickler writes as it is: instances of these classes, and these names.
_PLAIN_TYPES = (timezone, timedelta, Pending)
_NAMES = (datetime, timezone, timedelta, _pending)


class _Pickler(pickle.Pickler):
    """Writes only what _Unpickler reads, so a snapshot always restores.

    Datetimes whose tzinfo is not a ``datetime.timezone`` are written with
    the fixed offset they have (what format 1's RFC 3339 strings kept): an
    event's time is not always the stdlib's UTC; the stream's merger restores
    its buffered events through pydantic, whose datetimes carry
    ``pydantic_core.TzInfo``. Anything else the unpickler would refuse fails
    here, at the checkpoint, rather than at the restart that needs the state.
    Only objects that are not plain builtins get here, once each (pickle's
    memo comes first): datetimes, absence windows and the names above."""

    def reducer_override(self, obj: Any) -> Any:
        cls = obj.__class__
        if cls is datetime:
            tz = obj.tzinfo
            if tz is None or tz.__class__ is timezone:
                return NotImplemented
            offset = obj.utcoffset()
            fixed = obj.replace(tzinfo=timezone(offset) if offset is not None else None)
            return fixed.__reduce_ex__(5)
        if cls in _PLAIN_TYPES:
            return NotImplemented
        for name in _NAMES:
            if obj is name:
                return NotImplemented
        raise pickle.PicklingError(
            f"{cls.__module__}.{cls.__qualname__} cannot be part of a correlation snapshot "
            "(state holds JSON values, datetimes and absence windows only)"
        )


def write(payload: dict[str, Any], out: BinaryIO) -> None:
    """Write ``payload`` (format 2) to ``out`` as the pickler goes: ``out``
    sees the magic, then frames of at most 64 KiB, never the whole."""
    out.write(MAGIC)
    _Pickler(out, protocol=5).dump(payload)


def encode(payload: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    write(payload, out)
    return out.getvalue()


def _refuse(what: str, version: Any) -> CorrelationStateError:
    return CorrelationStateError(
        f"{what} has format {version}, this release reads {VERSION} and 1; start without it "
        "(the input since the last checkpoint will be correlated from an empty state)"
    )


def read(source: BinaryIO, what: str) -> dict[str, Any]:
    """Format 2 or 1 from a binary file; anything else is refused with
    ``CorrelationStateError``. A corrupt stream raises one of ``UNREADABLE``."""
    head = source.read(len(MAGIC))
    if head == MAGIC:
        payload = _Unpickler(source).load()
        if not isinstance(payload, dict) or payload.get("version") != VERSION:
            raise _refuse(what, payload.get("version") if isinstance(payload, dict) else "?")
        return payload
    if head[:1] != b"{":
        raise CorrelationStateError(f"{what} is not a correlation state; start without it")
    payload = orjson.loads(head + source.read())
    if not isinstance(payload, dict) or payload.get("version") != 1:
        raise _refuse(what, payload.get("version") if isinstance(payload, dict) else "?")
    return dict(payload)


def decode(data: bytes | BinaryIO, what: str) -> dict[str, Any]:
    """``read`` from bytes or a binary file."""
    if isinstance(data, bytes | bytearray | memoryview):
        return read(io.BytesIO(data), what)
    return read(data, what)
