"""The engine's rows, named: evidence records, contributions, buffered items,
open absence windows, and how a rule is evaluated (``Mode``).

The rows stay plain tuples read by index: they are made and read once or
more per event on the hot path, where a tuple costs a third of a NamedTuple
to build, and the snapshot (``snapshot.py``) pickles them as builtins. The
constants below are the indices; read ``rec[TIME]``, never ``rec[2]``.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

# A record: one event (or one correlation alert fed to a chain) as evidence.
# ``(event_id, t, time, topic, partition, offset, line, event, children)``
Rec = tuple[Any, ...]
EVENT_ID: Final = 0  # str; "correlation:<alert id>" for a child alert
T: Final = 1  # float, epoch seconds
TIME: Final = 2  # datetime, as the event gave it
TOPIC: Final = 3
PARTITION: Final = 4
OFFSET: Final = 5
LINE: Final = 6
EVENT: Final = 7  # the event body, or None (keep_event_in_evidence off, or a child alert)
CHILDREN: Final = 8  # tuple of the child alert's records, or None
# A record of an event applied behind the watermark has a tenth field, True
# (``CorrelationEngine._late``): alerts it is evidence of say ``late``.
LATE: Final = 9

# A contribution: what one event gives one (rule, slot) of one group.
# ``(rule index, slot index, group key, value or None, carried fields or None)``
Contrib = tuple[int, int, tuple[Any, ...], Any, dict[str, Any] | None]
C_RULE: Final = 0
C_SLOT: Final = 1
C_KEY: Final = 2
C_VALUE: Final = 3
C_CARRY: Final = 4

# An event waiting in the lateness buffer, sorted by (t, event id, seq).
# ``(t, event id, seq, rec, contributions)``; seq breaks ties in the heap.
Item = tuple[float, str, int, Rec, list[Contrib]]
I_T: Final = 0
I_ID: Final = 1
I_SEQ: Final = 2
I_REC: Final = 3
I_CONTRIBS: Final = 4

# An open absence window in a partition's heap.
# ``(deadline, seq, rule index, group key, Pending)``
PendingEntry = tuple[float, int, int, tuple[Any, ...], Any]
P_DEADLINE: Final = 0
P_SEQ: Final = 1
P_RULE: Final = 2
P_KEY: Final = 3
P_WINDOW: Final = 4


class Mode(IntEnum):
    """How ``CorrelationEngine._apply`` evaluates a rule."""

    METRIC = 0  # count/sum/...: a generated step adds and tests (steps.py)
    TEMPORAL_PLAIN = 1  # temporal, unordered, no clauses: slots counted inline
    TEMPORAL = 2  # temporal_ordered or extended conditions: _apply_temporal


def make_rec(evidence: Any, t: float, time: Any, event: dict[str, Any] | None) -> Rec:
    """The record of an event (``evidence`` a ``zonewatch.models.Evidence``)."""
    return (
        evidence.event_id,
        t,
        time,
        evidence.topic,
        evidence.partition,
        evidence.offset,
        evidence.line,
        event,
        None,
    )
