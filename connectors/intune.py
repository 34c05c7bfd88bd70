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
from connectors.ecs import section
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
# The categories an Intune diagnostic setting can send (Microsoft.Intune/diagnosticSettings).
INTUNE_CATEGORIES = frozenset(
    {"AuditLogs", "OperationalLogs", "Devices", "DeviceComplianceOrg", "Windows365AuditLogs"}
)
_DEVICE_CATEGORIES = frozenset({"Devices", "DeviceComplianceOrg"})
# Categories and tables of other Microsoft services that reach the same Event
# Hubs and workspaces; named in the refusal so the user knows where they belong.
_FOREIGN = {
    "signinlogs": "Entra ID sign-in",
    "noninteractiveusersigninlogs": "Entra ID sign-in",
    "serviceprincipalsigninlogs": "Entra ID sign-in",
    "managedidentitysigninlogs": "Entra ID sign-in",
    "aadnoninteractiveusersigninlogs": "Entra ID sign-in",
    "aadserviceprincipalsigninlogs": "Entra ID sign-in",
    "aadmanagedidentitysigninlogs": "Entra ID sign-in",
    "adfssigninlogs": "AD FS sign-in",
    "provisioninglogs": "Entra ID provisioning",
    "riskyusers": "Entra ID Protection",
    "userriskevents": "Entra ID Protection",
    "auditlogs": "Entra ID audit",
    "officeactivity": "Microsoft 365 audit",
}
# Keys by which Entra ID records are recognised when no category says it.
_ENTRA_SIGNIN_KEYS = ("createdDateTime", "appDisplayName", "conditionalAccessStatus")
_ENTRA_AUDIT_KEYS = ("activityDisplayName", "loggedByService", "initiatedBy", "targetResources")
_INTUNE_AUDIT_KEYS = ("Actor", "AuditEventId", "TargetDisplayNames", "TargetObjectIds")


def _s(record: dict[str, Any], *keys: str) -> Any:
    """The first of ``keys`` whose value is a scalar worth a field (text,
    number or flag): an object or array where a name or id belongs is left
    out rather than shipped."""
    for key in keys:
        value = record.get(key)
        if value:
            kind = type(value)
            if kind is str or (kind is not dict and kind is not list):
                return value
    return None


def _foreign(what: str, hint: str) -> ParseError:
    return ParseError(
        f"not an Intune record: {what} ({hint}); Intune reads audit events, "
        "operational logs and device records only"
    )


def _refuse_graph_record(item: dict[str, Any]) -> None:
    """ParseError unless ``item`` is a Graph ``auditEvent`` of Intune."""
    if "actor" in item or "componentName" in item or "activityType" in item:
        return
    if "operationName" in item or "OperationName" in item or "TimeGenerated" in item:
        category, *_ = _record_shape(item)  # refuses records of other services
        raise ParseError(
            f"an Intune diagnostic-settings record ({category}), not a Graph auditEvent: "
            "read it with --format diagnostic"
        )
    if any(key in item for key in _ENTRA_SIGNIN_KEYS):
        raise _foreign("an Entra ID sign-in (Graph signIn)", "createdDateTime, appDisplayName")
    if any(key in item for key in _ENTRA_AUDIT_KEYS):
        raise _foreign(
            "an Entra ID directory audit (Graph directoryAudit)", "initiatedBy, loggedByService"
        )
    raise ParseError(
        "not a Graph deviceManagement auditEvent: no actor, activityType or componentName"
    )


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
    _refuse_graph_record(item)
    resources = list_at(item, "resources")
    actor = dict_at(item, "actor")
    ts = _utc(item.get("activityDateTime"), ctx, "activityDateTime")
    ev = _base(ts, original, ctx)
    activity = _s(item, "activity", "displayName") or ""
    ev["event"].update(
        {
            "action": slug(str(activity)) or "audit",
            "category": ["configuration"],
            "type": ["change"],
            "outcome": _outcome(item.get("activityResult")),
        }
    )
    event_id = _s(item, "id")
    if event_id:
        ev["event"]["id"] = event_id
    user: dict[str, Any] = {}
    upn = _s(actor, "userPrincipalName")
    if upn:
        user["name"] = upn
        user["email"] = upn
    user_id = _s(actor, "userId")
    if user_id:
        user["id"] = user_id
    if user:
        ev["user"] = user
    ip = _s(actor, "ipAddress")
    if ip:
        ev["source"] = {"ip": ip}
    app = _s(actor, "applicationDisplayName")
    if app:
        ev["service"] = {"name": app}
    ev["intune"] = {
        k: v
        for k, v in {
            "activity": activity or None,
            "activity_type": _s(item, "activityType"),
            "operation_type": _s(item, "activityOperationType"),
            "component": _s(item, "componentName"),
            "category": _s(item, "category"),
            "correlation_id": _s(item, "correlationId"),
            "targets": [
                r["displayName"]
                for r in resources
                if isinstance(r, dict) and isinstance(r.get("displayName"), str)
            ]
            or None,
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


def _refuse_foreign(rec: dict[str, Any], category: str, props: dict[str, Any]) -> None:
    """ParseError when a diagnostic record comes from another service than Intune.

    Entra ID sends ``AuditLogs`` too: Intune's carry ``Actor``/``AuditEventId``
    properties; otherwise the resource id (``microsoft.intune`` versus
    ``microsoft.aadiam``) or Entra's own property names tell them apart.
    """
    if category in INTUNE_CATEGORIES:
        if category != "AuditLogs" or "Actor" in props or "AuditEventId" in props:
            return
        resource = rec.get("resourceId") or rec.get("ResourceId") or rec.get("_ResourceId")
        if isinstance(resource, str) and "/providers/" in resource.lower():
            provider = resource.lower().split("/providers/", 1)[1].split("/", 1)[0]
            if provider != "microsoft.intune":
                raise _foreign(f"resourceId names {provider}", _FOREIGN.get("auditlogs", provider))
            return
        if not any(k in props for k in _INTUNE_AUDIT_KEYS) and any(
            k in props for k in _ENTRA_AUDIT_KEYS
        ):
            raise _foreign("category AuditLogs with Entra ID properties", "Entra ID audit")
        return
    other = _FOREIGN.get(category.lower())
    if other is not None:
        raise _foreign(f"category {category}", other)
    raise ParseError(
        f"unknown Intune diagnostic category {category[:60]!r}: expected one of "
        + ", ".join(sorted(INTUNE_CATEGORIES))
    )


def _record_shape(rec: dict[str, Any]) -> tuple[str, str, dict[str, Any], Any]:
    """(category, operation, properties, time) of an Event Hub or Log Analytics record;
    ParseError for records of other services."""
    if "properties" in rec or "operationName" in rec:
        category = rec.get("category") or ""
        operation = rec.get("operationName") or ""
        props = rec.get("properties")
        when = rec.get("time")
    else:
        table = str(rec.get("Type") or rec.get("type") or "")
        if table and not table.lower().startswith("intune"):
            service = _FOREIGN.get(table.lower(), "not an Intune table")
            raise _foreign(f"Log Analytics table {table[:60]}", service)
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
    if not category or not isinstance(category, str):
        if any(key in rec for key in _ENTRA_SIGNIN_KEYS):
            raise _foreign("an Entra ID sign-in", "createdDateTime, appDisplayName")
        if any(key in rec for key in _ENTRA_AUDIT_KEYS):
            raise _foreign("an Entra ID directory audit", "initiatedBy, loggedByService")
        raise ParseError("record has no category/Type: not an Intune diagnostic record")
    _refuse_foreign(rec, category, props)
    return category, str(operation), props, when


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
    # the hot path of an audit stream: plain gets, kept only when text
    event_id = props.get("AuditEventId")
    if event_id and type(event_id) is str:
        ev["event"]["id"] = event_id
    reason = rec.get("resultDescription") or rec.get("ResultDescription")
    if reason and type(reason) is str:
        ev["event"]["reason"] = reason
    upn = actor.get("UPN") or rec.get("identity") or rec.get("Identity")
    user: dict[str, Any] = {}
    if upn and type(upn) is str:
        user["name"] = upn
        user["email"] = upn
    object_id = actor.get("ObjectId")
    if object_id and type(object_id) is str:
        user["id"] = object_id
    if user:
        ev["user"] = user
    app = actor.get("ApplicationName")
    if app and type(app) is str:
        ev["service"] = {"name": app}
    targets = props.get("TargetDisplayNames")
    if isinstance(targets, list) and targets:
        if len(targets) == 1:  # the usual case, without building a new list
            names = targets if type(targets[0]) is str else []
        else:
            names = [t for t in targets if type(t) is str]
        if names:
            ev["destination"] = {"domain": names}
            ev["intune"]["targets"] = names


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
    device_id = _s(props, "IntuneDeviceId", "DeviceId")
    if device_id:
        ev["device"] = {"id": device_id}
    # DeviceHostName is the machine's own name, the one firewalls and VDI
    # brokers log; DeviceName is Intune's display name, which users and
    # enrollment profiles rename ("tanaka_Windows_2/3/2026_9:01 AM").
    hostname = _s(props, "DeviceHostName")
    display = _s(props, "DeviceName")
    if hostname:
        ev["host"] = {"name": hostname, "hostname": hostname}
    elif display:
        ev["host"] = {"name": display}
    if display:
        ev["intune"]["device_name"] = display
    upn = _s(props, "UPN", "UserPrincipalName")
    user_id = _s(props, "UserId", "IntuneUserId")
    if upn or user_id:
        ev["user"] = {k: v for k, v in (("name", upn), ("id", user_id)) if v}
    os_name = _s(props, "Os", "OS")
    os_version = _s(props, "OsVersion", "OSVersion")
    if os_name or os_version:
        host = section(ev, "host")
        host["os"] = {k: v for k, v in (("name", os_name), ("version", os_version)) if v}
    for key, field in (
        ("FailureCategory", "failure_category"),
        ("FailureReason", "failure_reason"),
        ("EnrollmentType", "enrollment_type"),
        ("Os", "os"),
        ("ScenarioName", "scenario"),
    ):
        value = _s(props, key)
        if value:
            ev["intune"][field] = value


def device_fields(props: dict[str, Any]) -> dict[str, Any]:
    """Normalized device attributes of a Devices / DeviceComplianceOrg row or a
    Graph managedDevice object."""
    grace = _s(props, "InGracePeriodUntil", "complianceGracePeriodExpirationDateTime")
    if isinstance(grace, str) and grace.startswith(_NO_GRACE):
        grace = None
    elif isinstance(grace, str):
        with contextlib.suppress(ParseError):
            grace = parse_iso(grace, UTC)
    state = _s(props, "CompliantState", "ComplianceState_loc", "complianceState", "ComplianceState")
    owner = _s(props, "Ownership", "OwnerType_loc", "managedDeviceOwnerType")
    return {
        "device_id": _s(props, "DeviceId", "id"),
        "name": _s(props, "DeviceName", "deviceName"),
        "upn": _s(props, "UPN", "userPrincipalName", "UserEmail"),
        "user_id": _s(props, "PrimaryUser", "UserId", "userId"),
        "compliance": compliance(state),
        "ownership": ownership(owner),
        "grace_until": grace,
        "os": _s(props, "OS", "operatingSystem"),
        "os_version": _s(props, "OSVersion", "osVersion"),
        "serial": _s(props, "SerialNumber", "serialNumber"),
        "model": _s(props, "Model", "model"),
        "managed_by": _s(props, "ManagedBy", "managementAgent"),
        "join_type": _s(props, "JoinType", "joinType"),
        "jailbroken": _s(props, "JailBroken", "jailBroken"),
        "mac": _s(props, "WifiMacAddress", "wiFiMacAddress"),
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
    if tenant and type(tenant) is str:
        ev["cloud"] = {"account": {"id": tenant}}
    corr = rec.get("correlationId") or rec.get("CorrelationId")
    if corr and type(corr) is str:
        ev["intune"]["correlation_id"] = corr
    if category == "AuditLogs":
        _audit(rec, props, operation, ev)
    elif category in ("Devices", "DeviceComplianceOrg"):
        ev["event"].update({"action": slug(operation), "category": ["host"], "type": ["info"]})
        _apply_device(ev, device_fields(props))
    else:
        _operational(rec, props, operation, ev)
    return ev


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
