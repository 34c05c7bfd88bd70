"""Microsoft 365 unified audit log (Office 365 Management Activity API) -> ECS.

Records as the API's content blobs hold them (a JSON array per blob), one
record per line, or batches (``{"records": [...]}``, ``{"value": [...]}``).
The common schema (``CreationTime``, ``Id``, ``Operation``, ``RecordType``,
``UserId``, ``UserKey``, ``Workload``, ``ResultStatus``, ``ClientIP``,
``ObjectId``) plus what the service schemas add that a rule needs:
SharePoint/OneDrive file and sharing operations, Exchange mailbox and admin
records, Azure AD (STS logon and directory) records and Teams.

Mapping (connectors/FIELDS.md, "Identity"):

* ``event.action`` is the ``Operation`` as a lower-case slug that keeps word
  boundaries (``FileDownloaded`` -> ``file-downloaded``, ``Add member to
  role.`` -> ``add-member-to-role``); ``m365.operation`` keeps it verbatim.
* ``event.outcome``: ``Succeeded``/``Success``/``True`` -> success,
  ``Failed``/``False`` -> failure, ``PartiallySucceeded`` and no status ->
  unknown. For STS logons the schema says ``ResultStatus`` only reports the
  HTTP call, so ``UserLoginFailed`` (or a non-zero ``ErrorCode``) is a
  failure and ``UserLoggedIn`` a success.
* ``source.ip`` from ``ClientIP`` (else ``ClientIPAddress``, ``ActorIpAddress``),
  without the port Exchange appends; ``user.name`` is ``UserId`` as given.
* Sharing: ``m365.sharing.external`` is true for anonymous ("Anyone") links and
  for targets of type Guest or Partner, or whose name is a guest account
  (``#ext#``).
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from connectors.base import ParseContext
from connectors.ecs import new_event, to_int, to_ip
from connectors.jsonrecords import boolean, list_at, put
from connectors.timeparse import parse_iso
from zonewatch.errors import ParseError

SOURCE = "identity"
MODULE = "m365-audit"

# AuditLogRecordType (schema), the members a rule here may ask about
RECORD_TYPES = {
    1: "ExchangeAdmin", 2: "ExchangeItem", 3: "ExchangeItemGroup", 4: "SharePoint",
    6: "SharePointFileOperation", 7: "OneDrive", 8: "AzureActiveDirectory",
    9: "AzureActiveDirectoryAccountLogon", 10: "DataCenterSecurityCmdlet",
    11: "ComplianceDLPSharePoint", 13: "ComplianceDLPExchange",
    14: "SharePointSharingOperation", 15: "AzureActiveDirectoryStsLogon",
    18: "SecurityComplianceCenterEOPCmdlet", 20: "PowerBIAudit", 25: "MicrosoftTeams",
    28: "ThreatIntelligence", 40: "SecurityComplianceAlerts", 50: "ExchangeItemAggregated",
}  # fmt: skip
# UserType (schema)
USER_TYPES = {
    0: "Regular", 1: "Reserved", 2: "Admin", 3: "DcAdmin", 4: "System", 5: "Application",
    6: "ServicePrincipal", 7: "CustomPolicy", 8: "SystemPolicy",
}  # fmt: skip
_CATEGORY = {
    2: "email", 3: "email", 50: "email", 4: "file", 6: "file", 7: "file", 14: "file",
    8: "iam", 9: "authentication", 15: "authentication", 1: "configuration",
}  # fmt: skip
_OUTCOME = {
    "succeeded": "success",
    "success": "success",
    "true": "success",
    "failed": "failure",
    "failure": "failure",
    "false": "failure",
}
_LOGON_OUTCOME = {"userloggedin": "success", "userloginfailed": "failure"}
_ANONYMOUS = frozenset({"anonymouslinkcreated", "anonymouslinkupdated", "anonymouslinkused"})
_EXTERNAL_TYPES = frozenset({"guest", "partner"})
_WORDS_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def action_slug(operation: str) -> str:
    """``FileDownloaded`` -> ``file-downloaded``, ``Add member to role.`` ->
    ``add-member-to-role``: the operation as a slug that keeps its words."""
    return "-".join(w.lower() for w in _WORDS_RE.findall(operation))


def _pairs(value: Any, key: str = "Name", val: str = "Value") -> dict[str, Any]:
    """``[{"Name": n, "Value": v}, ...]`` -> ``{n: v}`` (the schema's NameValuePair lists)."""
    out: dict[str, Any] = {}
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item.get(key):
                out[str(item[key])] = item.get(val)
    return out


def _client_ip(value: Any) -> str | None:
    """``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]:443`` or a bare IPv6 address."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    return to_ip(text)


def _outcome(rec: dict[str, Any], operation: str) -> str:
    logon = _LOGON_OUTCOME.get(operation.lower())
    if logon is not None:
        code = rec.get("ErrorCode")
        if logon == "success" and code not in (None, "", "0", 0):
            return "failure"
        return logon
    status = rec.get("ResultStatus")
    if isinstance(status, bool):
        return "success" if status else "failure"
    if isinstance(status, str):
        return _OUTCOME.get(status.strip().lower(), "unknown")
    return "unknown"


def _sharing(rec: dict[str, Any], operation: str, m365: dict[str, Any], ev: dict[str, Any]) -> None:
    target = rec.get("TargetUserOrGroupName") or rec.get("UserSharedWith")
    target_type = rec.get("TargetUserOrGroupType")
    anonymous = operation.lower() in _ANONYMOUS
    if not (target or target_type or anonymous or rec.get("SharingType")):
        return
    sharing: dict[str, Any] = {}
    put(sharing, "target", target)
    put(sharing, "target_type", target_type)
    put(sharing, "type", rec.get("SharingType"))
    put(sharing, "unique_sharing_id", rec.get("UniqueSharingId"))
    external = anonymous or str(target_type or "").lower() in _EXTERNAL_TYPES
    if isinstance(target, str) and "#ext#" in target.lower():
        external = True
    sharing["external"] = external
    m365["sharing"] = sharing
    if isinstance(target, str) and "@" in target:
        ev.setdefault("destination", {})["user"] = {"name": target}


def _file(rec: dict[str, Any], ev: dict[str, Any], m365: dict[str, Any]) -> None:
    name = rec.get("SourceFileName")
    if isinstance(name, str) and name:
        file: dict[str, Any] = {"name": name}
        put(file, "extension", rec.get("SourceFileExtension"))
        put(file, "directory", rec.get("SourceRelativeUrl"))
        ev["file"] = file
    obj = rec.get("ObjectId")
    if isinstance(obj, str) and obj.startswith(("https://", "http://")):
        ev["url"] = {"full": obj}
    put(m365, "site_url", rec.get("SiteUrl"))
    put(m365, "item_type", rec.get("ItemType"))
    put(m365, "event_source", rec.get("EventSource"))
    managed = boolean(rec.get("IsManagedDevice"))
    if managed is not None:
        m365["is_managed_device"] = managed
    if rec.get("DeviceDisplayName"):
        ev.setdefault("host", {})["name"] = rec["DeviceDisplayName"]


def _sts_logon(rec: dict[str, Any], ev: dict[str, Any], m365: dict[str, Any]) -> None:
    device = _pairs(rec.get("DeviceProperties"))
    extended = _pairs(rec.get("ExtendedProperties"))
    if device:
        m365["device_properties"] = device
        if device.get("Id"):
            ev["device"] = {"id": device["Id"]}
        if device.get("DisplayName"):
            ev.setdefault("host", {})["name"] = device["DisplayName"]
    if extended:
        m365["extended_properties"] = extended
        agent = extended.get("UserAgent")
        if isinstance(agent, str) and agent and "user_agent" not in ev:
            ev["user_agent"] = {"original": agent}
    put(m365, "application_id", rec.get("ApplicationId"))
    put(m365, "error_code", rec.get("ErrorCode"))
    if rec.get("LogonError"):
        ev["event"]["reason"] = rec["LogonError"]


def _directory(rec: dict[str, Any], m365: dict[str, Any]) -> None:
    targets = [t.get("ID") for t in list_at(rec, "Target") if isinstance(t, dict) and t.get("ID")]
    put(m365, "targets", targets)
    changed = [p.get("Name") for p in list_at(rec, "ModifiedProperties") if isinstance(p, dict)]
    put(m365, "modified_properties", [c for c in changed if c])


def _exchange(rec: dict[str, Any], m365: dict[str, Any]) -> None:
    put(m365, "mailbox_owner_upn", rec.get("MailboxOwnerUPN"))
    put(m365, "client_info", rec.get("ClientInfoString"))
    external = boolean(rec.get("ExternalAccess"))
    if external is not None:
        m365["external_access"] = external
    params = _pairs(rec.get("Parameters"))
    if params:
        m365["parameters"] = params
    put(m365, "modified_object", rec.get("ModifiedObjectResolvedName"))


def _teams(rec: dict[str, Any], m365: dict[str, Any]) -> None:
    teams: dict[str, Any] = {}
    put(teams, "team_name", rec.get("TeamName"))
    put(teams, "channel_name", rec.get("ChannelName"))
    put(teams, "communication_type", rec.get("CommunicationType"))
    members = [m.get("UPN") for m in list_at(rec, "Members") if isinstance(m, dict)]
    put(teams, "members", [m for m in members if m])
    if teams:
        m365["teams"] = teams


def _alert(rec: dict[str, Any], ev: dict[str, Any], m365: dict[str, Any]) -> None:
    alert: dict[str, Any] = {}
    for key in ("Name", "Severity", "Status", "Category", "AlertType", "Source"):
        put(alert, key.lower(), rec.get(key))
    if alert:
        m365["alert"] = alert
        ev["event"]["kind"] = "alert"


def audit_event(rec: dict[str, Any], original: str, ctx: ParseContext) -> dict[str, Any]:
    """One Management Activity API record -> ECS."""
    operation = rec.get("Operation")
    created = rec.get("CreationTime")
    if not isinstance(operation, str) or not operation or not isinstance(created, str):
        raise ParseError(
            "not an Office 365 Management Activity record (needs CreationTime and Operation)"
        )
    ts = parse_iso(created, UTC)  # the schema's times are UTC, often without a zone
    raw_type = rec.get("RecordType")
    record_type = raw_type if isinstance(raw_type, int) else to_int(raw_type)
    workload = rec.get("Workload")
    ev = new_event(original, SOURCE, MODULE, "Microsoft", "Microsoft 365", ts)
    event = ev["event"]
    event.update(
        category=[_CATEGORY.get(record_type or -1, "web")],
        type=["info"],
        action=action_slug(operation) or "audit",
        outcome=_outcome(rec, operation),
    )
    put(event, "id", rec.get("Id"))
    put(event, "provider", workload)
    m365: dict[str, Any] = {"operation": operation}
    put(m365, "workload", workload)
    if record_type is not None:
        m365["record_type"] = record_type
        put(m365, "record_type_name", RECORD_TYPES.get(record_type))
    put(m365, "result_status", rec.get("ResultStatus"))
    put(m365, "object_id", rec.get("ObjectId"))
    user_type = rec.get("UserType")
    if isinstance(user_type, int) and not isinstance(user_type, bool):
        m365["user_type"] = USER_TYPES.get(user_type, str(user_type))
    user: dict[str, Any] = {}
    put(user, "name", rec.get("UserId"))
    put(user, "id", rec.get("UserKey"))
    if user:
        ev["user"] = user
    ip = (
        _client_ip(rec.get("ClientIP"))
        or _client_ip(rec.get("ClientIPAddress"))
        or _client_ip(rec.get("ActorIpAddress"))
    )
    if ip:
        ev["source"] = {"ip": ip}
    agent = rec.get("UserAgent")
    if isinstance(agent, str) and agent:
        ev["user_agent"] = {"original": agent}
    tenant = rec.get("OrganizationId")
    if tenant:
        ev["cloud"] = {"account": {"id": tenant}}
    context = rec.get("AppAccessContext")
    if isinstance(context, dict):
        put(m365, "aad_session_id", context.get("AADSessionId"))
        put(m365, "client_app_name", context.get("ClientAppName"))
    if record_type in (9, 15) or "DeviceProperties" in rec:
        _sts_logon(rec, ev, m365)
    if record_type == 8 or "Target" in rec:
        _directory(rec, m365)
    if workload in ("SharePoint", "OneDrive") or "SourceFileName" in rec:
        _file(rec, ev, m365)
        _sharing(rec, operation, m365, ev)
    if workload == "Exchange" or "MailboxOwnerUPN" in rec:
        _exchange(rec, m365)
    if workload == "MicrosoftTeams" or record_type == 25:
        _teams(rec, m365)
    if workload == "SecurityComplianceCenter" and rec.get("AlertId"):
        _alert(rec, ev, m365)
    ev["m365"] = m365
    return ev
