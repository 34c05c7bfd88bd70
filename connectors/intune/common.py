"""What every Intune format shares: normalized compliance, ownership and outcome
values, the event skeleton, the shape of a diagnostic record and the checks
that refuse records of other products.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson

from connectors.base import ParseContext
from connectors.timeparse import parse_iso, parse_timestamp
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
