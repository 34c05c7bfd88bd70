"""The evidence and zone crossing of an alert, from the records that fired it."""

from __future__ import annotations

from correlator.correlation.records import (
    CHILDREN,
    EVENT,
    EVENT_ID,
    LATE,
    LINE,
    OFFSET,
    PARTITION,
    TIME,
    TOPIC,
    Rec,
    T,
)
from zonewatch.models import Evidence


def crossing(evidence: list[Evidence]) -> str | None:
    """The zone crossings the evidence shows, in order of first appearance."""
    seen: dict[str, None] = {}
    for item in evidence:
        zone = item.event.get("zone") if item.event else None
        crossing = zone.get("crossing") if isinstance(zone, dict) else None
        if isinstance(crossing, str):
            seen.setdefault(crossing, None)
    return ", ".join(seen) if seen else None


def evidence_of(recs: list[Rec], cap: int) -> tuple[list[Evidence], bool]:
    """The events behind ``recs`` (child alerts' records flattened), each
    once, in time order; above ``cap`` the first half and the last half. And
    whether any of them was applied late (``records.LATE``)."""
    flat: dict[str, Rec] = {}
    stack = list(recs)
    while stack:
        rec = stack.pop()
        if rec[CHILDREN] is not None:
            stack.extend(rec[CHILDREN])
        elif rec[EVENT_ID] not in flat:
            flat[rec[EVENT_ID]] = rec
    ordered = sorted(flat.values(), key=lambda r: (r[T], r[EVENT_ID]))
    late = any(len(r) > LATE for r in ordered)
    if len(ordered) > cap:
        ordered = ordered[: cap - cap // 2] + ordered[len(ordered) - cap // 2 :]
    return [
        Evidence(
            event_id=r[EVENT_ID],
            time=r[TIME],
            topic=r[TOPIC],
            partition=r[PARTITION],
            offset=r[OFFSET],
            line=r[LINE],
            event=r[EVENT] if r[EVENT] is not None else {},
        )
        for r in ordered
    ], late
