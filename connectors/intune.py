"""Microsoft Intune: Graph audit events, diagnostic-settings records, device snapshots.

Formats:

``graph``
    ``deviceManagement/auditEvents`` objects, one per line, or whole Graph
    pages (``{"value": [...], "@odata.nextLink": ...}``).
``diagnostic``
    Intune diagnostic-settings records as Event Hub delivers them
    (``{"time", "category", "operationName", "properties"}``, or a batch
    ``{"records": [...]}``) or as a Log Analytics export writes them
    (``IntuneAuditLogs`` / ``IntuneOperationalLogs`` / ``IntuneDevices``
    rows with ``TimeGenerated`` and ``Properties``). Device rows come out as
    one informational event each, like Elastic's ``managed_device`` stream.
``devices``
    The same device rows (or Graph ``managedDevice`` objects) read as
    periodic snapshots: a device's first sighting emits ``device-observed``,
    later snapshots emit only changes (``device-compliance-changed``,
    ``device-ownership-changed``, ``device-user-changed``). The previous
    state per device lives in ``ctx.state["intune.devices"]``, which the
    pipeline persists under ``checkpoint_dir`` so a restart does not
    re-announce the whole estate.

Normalized values: ``intune.compliance`` is one of ``compliant``,
``noncompliant``, ``in_grace_period``, ``not_evaluated``, ``conflict``,
``error``, ``config_manager``, ``unknown``; ``intune.ownership`` is
``corporate``, ``personal`` (BYOD) or ``unknown``; a grace period of
``9999-12-31`` means none and is left out.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC
from typing import Any

import orjson

from connectors.base import ParseContext, register
from connectors.jsonrecords import dict_at, list_at, loads, slug, unwrap
from connectors.timeparse import now_stamp, parse_iso, parse_timestamp
from zonewatch.errors import ParseError

SOURCE = "intune"
_NO_GRACE = "9999-12-31"
# Set by connectors/inputs/cloud.py on the Graph pages it fetches: when it asked.
RETRIEVED_ANNOTATION = "@zonewatch.retrievedDateTime"

_COMPLIANCE = {
    "compliant": "compliant",
    "1": "compliant",
    "noncompliant": "noncompliant",
    "non-compliant": "noncompliant",
    "not compliant": "noncompliant",
    "2": "noncompliant",
    "ingraceperiod": "in_grace_period",
    "in grace period": "in_grace_period",
    "notevaluated": "not_evaluated",
    "not evaluated": "not_evaluated",
    "conflict": "conflict",
    "error": "error",
    "configmanager": "config_manager",
    "config manager": "config_manager",
    "unknown": "unknown",
}
_OWNERSHIP = {
    "corporate": "corporate",
    "company": "corporate",
    "personal": "personal",
    "unknown": "unknown",
}
_OUTCOME = {
    "success": "success",
    "succeeded": "success",
    "failure": "failure",
    "failed": "failure",
    "fail": "failure",
    "timeout": "failure",
}
_TABLE_CATEGORY = {
    "intuneauditlogs": "AuditLogs",
    "intuneoperationallogs": "OperationalLogs",
    "intunedevices": "Devices",
    "intunedevicecomplianceorg": "DeviceComplianceOrg",
}


def _utc(value: Any, ctx: ParseContext, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ParseError(f"missing {what}")
    try:
        return parse_iso(value, UTC)
    except ParseError:
        # Intune's ActivityDate "2/12/2026 6:43:08 AM" is the only odd shape seen.
        return parse_timestamp(value, UTC, ctx.now)


def _base(ts: str, original: str, ctx: ParseContext) -> dict[str, Any]:
    return {
        "@timestamp": ts,
        "event": {"kind": "event", "original": original, "dataset": SOURCE, "module": ctx.format},
        "observer": {"vendor": "Microsoft", "product": "Intune"},
    }


def compliance(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _COMPLIANCE.get(str(value).strip().lower(), "unknown")


def ownership(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _OWNERSHIP.get(str(value).strip().lower(), "unknown")


def _outcome(value: Any) -> str:
    if isinstance(value, str):
        return _OUTCOME.get(value.strip().lower(), "unknown")
    return "unknown"


# --- Graph auditEvents ---------------------------------------------------------


def graph_audit_event(item: dict[str, Any], original: str, ctx: ParseContext) -> dict[str, Any]:
    """One Graph ``auditEvent`` object -> ECS."""
    ts = _utc(item.get("activityDateTime"), ctx, "activityDateTime")
    ev = _base(ts, original, ctx)
    activity = item.get("activity") or item.get("displayName") or ""
    ev["event"].update(
        {
            "action": slug(str(activity)) or "audit",
            "category": ["configuration"],
            "type": ["change"],
            "outcome": _outcome(item.get("activityResult")),
        }
    )
    if item.get("id"):
        ev["event"]["id"] = item["id"]
    actor = dict_at(item, "actor")
    user: dict[str, Any] = {}
    upn = actor.get("userPrincipalName")
    if upn:
        user["name"] = upn
        user["email"] = upn
    if actor.get("userId"):
        user["id"] = actor["userId"]
    if user:
        ev["user"] = user
    if actor.get("ipAddress"):
        ev["source"] = {"ip": actor["ipAddress"]}
    if actor.get("applicationDisplayName"):
        ev["service"] = {"name": actor["applicationDisplayName"]}
    resources = list_at(item, "resources")
    ev["intune"] = {
        k: v
        for k, v in {
            "activity": activity or None,
            "activity_type": item.get("activityType"),
            "operation_type": item.get("activityOperationType"),
            "component": item.get("componentName"),
            "category": item.get("category"),
            "correlation_id": item.get("correlationId"),
            "targets": [r.get("displayName") for r in resources if isinstance(r, dict)] or None,
        }.items()
        if v is not None
    }
    return ev


@register(
    SOURCE,
    "graph",
    "Microsoft Graph deviceManagement/auditEvents (objects or whole pages)",
    sniff=lambda line: '"activityDateTime"' in line,
)
def parse_graph(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    doc = loads(raw)
    out = []
    for item, original in unwrap(doc, raw):
        out.append(graph_audit_event(item, original, ctx))
    return out


# --- diagnostic-settings records -------------------------------------------------


def _record_shape(rec: dict[str, Any]) -> tuple[str, str, dict[str, Any], Any]:
    """(category, operation, properties, time) of an Event Hub or Log Analytics record."""
    if "properties" in rec or "operationName" in rec:
        category = rec.get("category") or ""
        operation = rec.get("operationName") or ""
        props = rec.get("properties")
        when = rec.get("time")
    else:
        table = str(rec.get("Type") or "")
        category = rec.get("Category") or _TABLE_CATEGORY.get(table.lower(), table)
        operation = rec.get("OperationName") or category
        props = rec.get("Properties")
        when = rec.get("TimeGenerated")
        if props is None and category in ("Devices", "DeviceComplianceOrg"):
            props = rec  # IntuneDevices rows carry the device columns at top level
    if isinstance(props, str):
        try:
            props = orjson.loads(props)
        except orjson.JSONDecodeError:
            props = {"raw": props}
    if not isinstance(props, dict):
        props = {}
    if not category:
        raise ParseError("record has no category/Type: not an Intune diagnostic record")
    return str(category), str(operation), props, when


def _audit(rec: dict[str, Any], props: dict[str, Any], operation: str, ev: dict[str, Any]) -> None:
    actor = dict_at(props, "Actor")
    ev["event"].update(
        {
            "action": slug(operation) or "audit",
            "category": ["configuration"],
            "type": ["change"],
            "outcome": _outcome(rec.get("resultType") or rec.get("ResultType")),
        }
    )
    if props.get("AuditEventId"):
        ev["event"]["id"] = props["AuditEventId"]
    reason = rec.get("resultDescription") or rec.get("ResultDescription")
    if reason:
        ev["event"]["reason"] = reason
    upn = actor.get("UPN") or rec.get("identity") or rec.get("Identity")
    user: dict[str, Any] = {}
    if upn:
        user["name"] = upn
        user["email"] = upn
    if actor.get("ObjectId"):
        user["id"] = actor["ObjectId"]
    if user:
        ev["user"] = user
    if actor.get("ApplicationName"):
        ev["service"] = {"name": actor["ApplicationName"]}
    targets = props.get("TargetDisplayNames")
    if isinstance(targets, list) and targets:
        ev["destination"] = {"domain": targets}
        ev["intune"]["targets"] = targets


def _operational(
    rec: dict[str, Any], props: dict[str, Any], operation: str, ev: dict[str, Any]
) -> None:
    ev["event"].update(
        {
            "action": slug(operation) or "operational",
            "category": ["host"],
            "type": ["info"],
            "outcome": _outcome(rec.get("resultType") or rec.get("ResultType")),
        }
    )
    device_id = props.get("IntuneDeviceId") or props.get("DeviceId")
    if device_id:
        ev["device"] = {"id": device_id}
    if props.get("DeviceName"):
        ev["host"] = {"name": props["DeviceName"]}
    upn = props.get("UPN") or props.get("UserPrincipalName")
    user_id = props.get("UserId") or props.get("IntuneUserId")
    if upn or user_id:
        ev["user"] = {k: v for k, v in (("name", upn), ("id", user_id)) if v}
    for key, field in (
        ("FailureCategory", "failure_category"),
        ("FailureReason", "failure_reason"),
        ("EnrollmentType", "enrollment_type"),
        ("Os", "os"),
    ):
        if props.get(key):
            ev["intune"][field] = props[key]


def device_fields(props: dict[str, Any]) -> dict[str, Any]:
    """Normalized device attributes of a Devices / DeviceComplianceOrg row or a
    Graph managedDevice object."""
    grace = props.get("InGracePeriodUntil") or props.get("complianceGracePeriodExpirationDateTime")
    if isinstance(grace, str) and grace.startswith(_NO_GRACE):
        grace = None
    elif isinstance(grace, str):
        with contextlib.suppress(ParseError):
            grace = parse_iso(grace, UTC)
    state = (
        props.get("CompliantState")
        or props.get("ComplianceState_loc")
        or props.get("complianceState")
        or props.get("ComplianceState")
    )
    owner = (
        props.get("Ownership") or props.get("OwnerType_loc") or props.get("managedDeviceOwnerType")
    )
    return {
        "device_id": props.get("DeviceId") or props.get("id"),
        "name": props.get("DeviceName") or props.get("deviceName"),
        "upn": props.get("UPN") or props.get("userPrincipalName") or props.get("UserEmail"),
        "user_id": props.get("PrimaryUser") or props.get("UserId") or props.get("userId"),
        "compliance": compliance(state),
        "ownership": ownership(owner),
        "grace_until": grace,
        "os": props.get("OS") or props.get("operatingSystem"),
        "os_version": props.get("OSVersion") or props.get("osVersion"),
        "serial": props.get("SerialNumber") or props.get("serialNumber"),
        "model": props.get("Model") or props.get("model"),
        "managed_by": props.get("ManagedBy") or props.get("managementAgent"),
        "join_type": props.get("JoinType") or props.get("joinType"),
        "jailbroken": props.get("JailBroken") or props.get("jailBroken"),
        "mac": props.get("WifiMacAddress") or props.get("wiFiMacAddress"),
    }


def _mac(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    hexes = re.sub(r"[^0-9A-Fa-f]", "", value)
    if len(hexes) != 12:
        return None
    return "-".join(hexes[i : i + 2] for i in range(0, 12, 2)).upper()


def _apply_device(ev: dict[str, Any], d: dict[str, Any]) -> None:
    if d["device_id"]:
        device: dict[str, Any] = {"id": d["device_id"]}
        if d["serial"]:
            device["serial_number"] = d["serial"]
        if d["model"]:
            device["model"] = {"name": d["model"]}
        ev["device"] = device
    host: dict[str, Any] = {}
    if d["name"]:
        host["name"] = d["name"]
    if d["os"] or d["os_version"]:
        host["os"] = {k: v for k, v in (("name", d["os"]), ("version", d["os_version"])) if v}
    mac = _mac(d["mac"])
    if mac:
        host["mac"] = [mac]
    if host:
        ev["host"] = host
    user = {k: v for k, v in (("name", d["upn"]), ("email", d["upn"]), ("id", d["user_id"])) if v}
    if user:
        ev["user"] = user
    intune = ev["intune"]
    for key in ("compliance", "ownership", "managed_by", "join_type", "jailbroken"):
        if d[key]:
            intune[key] = d[key]
    if d["grace_until"]:
        intune["grace_period_until"] = d["grace_until"]


def diagnostic_record(rec: dict[str, Any], original: str, ctx: ParseContext) -> dict[str, Any]:
    category, operation, props, when = _record_shape(rec)
    ts = _utc(when, ctx, "time/TimeGenerated")
    ev = _base(ts, original, ctx)
    ev["intune"] = {"category": category, "operation": operation}
    tenant = rec.get("tenantId") or rec.get("TenantId")
    if tenant:
        ev["cloud"] = {"account": {"id": tenant}}
    corr = rec.get("correlationId") or rec.get("CorrelationId")
    if corr:
        ev["intune"]["correlation_id"] = corr
    if category == "AuditLogs":
        _audit(rec, props, operation, ev)
    elif category in ("Devices", "DeviceComplianceOrg"):
        ev["event"].update({"action": slug(operation), "category": ["host"], "type": ["info"]})
        _apply_device(ev, device_fields(props))
    else:
        _operational(rec, props, operation, ev)
    return ev


@register(
    SOURCE,
    "diagnostic",
    "Intune diagnostic settings (Event Hub records or Log Analytics rows)",
    sniff=lambda line: (
        ('"operationName"' in line or '"OperationName"' in line)
        and '"activityDateTime"' not in line
    ),
)
def parse_diagnostic(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    doc = loads(raw)
    return [diagnostic_record(rec, original, ctx) for rec, original in unwrap(doc, raw)]


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


@register(
    SOURCE,
    "devices",
    "Intune device snapshots -> device change events (stateful, per source)",
    shared_state=(DEVICES_STATE, SNAPSHOT_STATE),
    finish=finish_devices,
)
def parse_devices(raw: str, ctx: ParseContext) -> list[dict[str, Any]]:
    doc = loads(raw)
    listing = _is_listing_page(doc)
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
