"""The ``intune/diagnostic`` and ``intune/devices`` formats: sniffing, and
``--format auto``, which reads an Event Hub batch's device rows as snapshots
and the rest as diagnostic records.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from connectors.base import ParseContext, register
from connectors.intune.common import _DEVICE_CATEGORIES, RETRIEVED_ANNOTATION, SOURCE, _utc
from connectors.intune.devices import (
    _LISTING,
    DEVICES_STATE,
    SNAPSHOT_STATE,
    _close_snapshot,
    _is_listing_page,
    device_changes,
    finish_devices,
)
from connectors.intune.diagnostic import diagnostic_record
from connectors.jsonrecords import loads, unwrap
from zonewatch.errors import ParseError

# --- reading records: sniffing, --format auto, the registered formats ---------

# Device rows: the Devices / DeviceComplianceOrg categories or tables, and Graph
# managedDevice objects (which have no category at all).
_DEVICE_ROW_RE = re.compile(
    r'"(?:category|Category|Type|type)"\s*:\s*"(?:Intune)?(?:Devices|DeviceComplianceOrg)"'
)


def _sniff_devices(line: str) -> bool:
    if _DEVICE_ROW_RE.search(line) is not None:
        return True
    return '"complianceState"' in line and '"deviceName"' in line


def _sniff_diagnostic(line: str) -> bool:
    return (
        ('"operationName"' in line or '"OperationName"' in line)
        and '"activityDateTime"' not in line
        and _DEVICE_ROW_RE.search(line) is None
    )


def _is_device_row(rec: dict[str, Any]) -> bool:
    category = rec.get("category") or rec.get("Category") or rec.get("Type") or rec.get("type")
    if isinstance(category, str):
        return category.removeprefix("Intune") in _DEVICE_CATEGORIES
    return "complianceState" in rec and "deviceName" in rec


def _auto_records(doc: Any, raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    """Under ``--format auto`` either Intune reader takes a whole Event Hub
    batch, which mixes categories: device rows are read as snapshots
    (``devices``), the others as diagnostic records, each event naming the
    format that read it."""
    out: list[dict[str, Any]] = []
    for rec, original in unwrap(doc, raw):
        if _is_device_row(rec):
            found = device_changes(rec, original, ctx)
            module = "devices"
        else:
            found = [diagnostic_record(rec, original, ctx)]
            module = "diagnostic"
        for ev in found:
            ev["event"]["module"] = module
        out.extend(found)
    return out


@register(
    SOURCE,
    "diagnostic",
    "Intune diagnostic settings (Event Hub records or Log Analytics rows)",
    sniff=_sniff_diagnostic,
)
def parse_diagnostic(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    if ctx.auto:
        return _auto_records(loads(raw), raw, ctx)
    doc = loads(raw)
    return [diagnostic_record(rec, original, ctx) for rec, original in unwrap(doc, raw)]


@register(
    SOURCE,
    "devices",
    "Intune device snapshots -> device change events (stateful, per source)",
    sniff=_sniff_devices,
    shared_state=(DEVICES_STATE, SNAPSHOT_STATE),
    finish=finish_devices,
)
def parse_devices(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    doc = loads(raw)
    listing = _is_listing_page(doc)
    if ctx.auto and not listing:
        return _auto_records(doc, raw, ctx)
    out: list[dict[str, Any]] = []
    for rec, original in unwrap(doc, raw):
        out.extend(device_changes(rec, original, ctx, _LISTING if listing else None))
    if listing and not doc.get("@odata.nextLink"):
        # the last page of a Graph listing: the snapshot is complete
        when = None
        with contextlib.suppress(ParseError):  # without it: the latest sync seen
            when = _utc(doc.get(RETRIEVED_ANNOTATION), ctx, RETRIEVED_ANNOTATION)
        # An empty listing removes nothing: more likely a glitch than an empty estate.
        out.extend(_close_snapshot(ctx, when))
    return out
