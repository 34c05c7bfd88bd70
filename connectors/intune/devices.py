"""Device rows or Graph ``managedDevice`` listings read as periodic snapshots and
emitted as change events.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from connectors.base import ParseContext
from connectors.intune.common import _base, _record_shape, _utc
from connectors.intune.diagnostic import _apply_device, device_fields
from connectors.jsonrecords import dict_at, list_at
from connectors.timeparse import now_stamp
from zonewatch.errors import ParseError

# --- device snapshots -> change events -------------------------------------------
#
# State (ctx.state, kept per source by ``zonewatch ingest``, connectors/state.py):
#   "intune.devices":  Intune device id -> last known compliance, ownership,
#                      user, grace period, name, Entra device id
#   "intune.snapshot": the snapshot being read: {"key", "seen": [ids], "time"}
#
# A snapshot is complete when a Graph listing ends (a managedDevices page
# without "@odata.nextLink") or when rows of a new export batch (IntuneDevices
# "BatchId") begin; known devices the complete snapshot did not contain are
# reported removed. A row whose DeviceState (managementState) says retired,
# wiped or deleted is reported removed at once. Rows without either (partial
# exports) never remove anything: absence from them proves nothing.

DEVICES_STATE = "intune.devices"
SNAPSHOT_STATE = "intune.snapshot"
_TRACKED = (
    ("compliance", "device-compliance-changed"),
    ("ownership", "device-ownership-changed"),
    ("upn", "device-user-changed"),
)
_GONE = frozenset({"retired", "wiped", "deleted"})
_LISTING = "graph-listing"


def _snapshot_time(rec: dict[str, Any], ctx: ParseContext) -> str:
    when = rec.get("time") or rec.get("TimeGenerated") or rec.get("lastSyncDateTime")
    return _utc(when, ctx, "snapshot time (time/TimeGenerated/lastSyncDateTime)")


def _extra(props: dict[str, Any]) -> dict[str, Any]:
    """What the change events carry beyond ``device_fields``: the Entra device id
    (joins sign-ins to the device), addresses (Graph beta hardwareInformation)
    and the management state."""
    hardware = dict_at(props, "hardwareInformation")
    ips = [
        ip
        for ip in (
            *list_at(hardware, "wiredIPv4Addresses"),
            hardware.get("ipAddressV4"),
        )
        if isinstance(ip, str) and ip
    ]
    state = props.get("DeviceState") or props.get("managementState") or ""
    return {
        "azure_ad_device_id": props.get("ReferenceId") or props.get("azureADDeviceId") or None,
        "ips": list(dict.fromkeys(ips)),
        "gone": re.sub(r"[^a-z]", "", str(state).lower()) in _GONE,
    }


def _device_event(
    action: str, ts: str, original: str, ctx: ParseContext, d: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    kind = {"device-observed": "info", "device-removed": "deletion"}.get(action, "change")
    ev = _base(ts, original, ctx)
    ev["event"].update({"action": action, "category": ["host"], "type": [kind]})
    ev["intune"] = {}
    _apply_device(ev, d)
    if extra.get("azure_ad_device_id"):
        ev["intune"]["azure_ad_device_id"] = extra["azure_ad_device_id"]
    if extra.get("ips"):
        ev.setdefault("host", {})["ip"] = extra["ips"]
    return ev


def _removed(
    device_id: str, known: dict[str, Any], ts: str, ctx: ParseContext, original: str | None = None
) -> dict[str, Any]:
    last = known.pop(device_id)
    d: dict[str, Any] = dict.fromkeys(
        ("serial", "model", "os", "os_version", "mac", "user_id", "grace_until", "managed_by",
         "join_type", "jailbroken")
    )  # fmt: skip
    d.update(
        device_id=device_id,
        name=last.get("name"),
        upn=last.get("upn"),
        compliance=last.get("compliance"),
        ownership=last.get("ownership"),
    )
    record = original or orjson.dumps({"id": device_id, "removed": True}).decode()
    extra = {"azure_ad_device_id": last.get("azure_ad_device_id")}
    return _device_event("device-removed", ts, record, ctx, d, extra)


def _close_snapshot(ctx: ParseContext, ts: str | None) -> list[dict[str, Any]]:
    """Removal events for the known devices the finished snapshot did not contain."""
    snap = ctx.state.pop(SNAPSHOT_STATE, None)
    known: dict[str, dict[str, Any]] = ctx.state.setdefault(DEVICES_STATE, {})
    if not snap:
        return []
    seen = set(snap.get("seen", []))
    when = ts or snap.get("time") or now_stamp(ctx.now)
    return [
        _removed(device_id, known, when, ctx) for device_id in list(known) if device_id not in seen
    ]


def _snapshot_key(rec: dict[str, Any], props: dict[str, Any], page: str | None) -> str | None:
    if page is not None:
        return page
    batch = props.get("BatchId") or rec.get("BatchId")
    return f"batch:{batch}" if batch else None


def device_changes(
    rec: dict[str, Any], original: str, ctx: ParseContext, page: str | None = None
) -> list[dict[str, Any]]:
    if "properties" in rec or "Properties" in rec or "operationName" in rec:
        _, _, props, _ = _record_shape(rec)
    else:
        props = rec
    d = device_fields(props)
    if not d["device_id"]:
        raise ParseError("device record has no DeviceId/id")
    extra = _extra(props)
    ts = _snapshot_time(rec, ctx)
    out: list[dict[str, Any]] = []
    key = _snapshot_key(rec, props, page)
    snap = ctx.state.get(SNAPSHOT_STATE)
    if key is not None and snap and snap.get("key") != key:
        out.extend(_close_snapshot(ctx, snap.get("time")))  # a new export batch began
        snap = None
    known: dict[str, dict[str, Any]] = ctx.state.setdefault(DEVICES_STATE, {})
    if key is not None:
        if not snap:
            snap = ctx.state[SNAPSHOT_STATE] = {"key": key, "seen": []}
        if d["device_id"] not in snap["seen"]:
            snap["seen"].append(d["device_id"])
        snap["time"] = max(snap.get("time") or ts, ts)
    if extra["gone"]:
        if d["device_id"] in known:
            out.append(_removed(d["device_id"], known, ts, ctx, original))
        return out
    current = {
        "compliance": d["compliance"],
        "ownership": d["ownership"],
        "upn": d["upn"],
        "grace_until": d["grace_until"],
        "name": d["name"],
        "azure_ad_device_id": extra["azure_ad_device_id"],
    }
    previous = known.get(d["device_id"])
    known[d["device_id"]] = current
    changes: list[tuple[str, str | None]] = []
    if previous is None:
        changes.append(("device-observed", None))
    else:
        for key, change in _TRACKED:
            if previous.get(key) != current[key]:
                changes.append((change, key))
    for change, tracked in changes:
        ev = _device_event(change, ts, original, ctx, d, extra)
        if tracked is not None and previous is not None:
            field = "user" if tracked == "upn" else tracked
            ev["intune"]["previous"] = {field: previous.get(tracked)}
            if tracked == "compliance":
                ev["intune"]["previous"]["grace_period_until"] = previous.get("grace_until")
        out.append(ev)
    return out


def finish_devices(ctx: ParseContext) -> list[dict[str, Any]]:
    """An export file read to its end closes its batch: known devices it did not
    list are removed. An unfinished Graph listing stays open (its last page
    decides)."""
    snap = ctx.state.get(SNAPSHOT_STATE)
    if not snap or not str(snap.get("key", "")).startswith("batch:"):
        return []
    return _close_snapshot(ctx, snap.get("time"))


def _is_listing_page(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("value"), list)
        and "managedDevices" in str(doc.get("@odata.context") or "")
    )
