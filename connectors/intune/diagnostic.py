"""Intune diagnostic-settings records (Event Hub or Log Analytics export) -> ECS:
audit, operational and device rows.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC
from typing import Any

from connectors.base import ParseContext
from connectors.ecs import section
from connectors.intune.common import (
    _NO_GRACE,
    _base,
    _outcome,
    _record_shape,
    _s,
    _utc,
    compliance,
    ownership,
)
from connectors.jsonrecords import dict_at, slug
from connectors.timeparse import parse_iso
from zonewatch.errors import ParseError

# --- diagnostic-settings records -------------------------------------------------


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
