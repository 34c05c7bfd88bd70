"""Microsoft Entra ID sign-in logs -> ECS (source ``identity``).

Three deliveries of the same record, all normalised to one reading:

* Graph ``auditLogs/signIns`` objects (v1.0 or beta), one per line or whole
  pages (``{"value": [...]}``): camelCase, ``status.errorCode`` an integer.
* Diagnostic settings as Event Hub (or storage) deliver them: an envelope
  (``time``, ``category``, ``resultType``, ``callerIpAddress``, ``tenantId``)
  around ``properties`` = the Graph object; batches ``{"records": [...]}``.
  Categories ``SignInLogs``, ``NonInteractiveUserSignInLogs``,
  ``ServicePrincipalSignInLogs``, ``ManagedIdentitySignInLogs``.
* Log Analytics rows (tables ``SigninLogs``, ``AADNonInteractiveUserSignInLogs``,
  ``AADServicePrincipalSignInLogs``, ``AADManagedIdentitySignInLogs``):
  PascalCase columns; ``DeviceDetail``, ``LocationDetails`` and ``Status``
  may be JSON text (they are in the non-interactive table).

Mapping (connectors/FIELDS.md, "Identity"): ``event.outcome`` is ``success``
for error code 0 and ``failure`` for any other documented code (interrupts
such as 50074 "strong authentication required" included: the sign-in did not
complete); no code at all is ``unknown``. ``event.action`` names the sign-in
type: ``signin`` (interactive user), ``signin-noninteractive``,
``signin-service-principal``, ``signin-managed-identity``. The device the
user signed in from is ``device.id`` (the Entra device id) and ``host.name``;
``entra.device_posture`` is ``compliant``, ``noncompliant`` (managed but not
compliant) or ``unmanaged`` (registered but not MDM-managed, or no registered
device at all), and ``entra.device_trust`` ``joined``, ``hybrid_joined``,
``registered`` or ``none``.

Sign-ins also keep a little state per user (``identity.signins`` in the
parser state, persisted per source): the last successful sign-ins with a
position, so a sign-in from far away too soon after the previous one carries
``entra.travel`` (distance, hours, speed) for the impossible-travel rule.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson

from connectors.base import ParseContext
from connectors.ecs import new_event, to_int, to_ip
from connectors.jsonrecords import boolean, dict_at, list_at, put
from connectors.timeparse import format_utc, parse_iso
from zonewatch.errors import ParseError

SOURCE = "identity"
MODULE = "signins"

# Event Hub category / Log Analytics table -> sign-in type
_CATEGORY_TYPE = {
    "signinlogs": "interactive",
    "noninteractiveusersigninlogs": "noninteractive",
    "aadnoninteractiveusersigninlogs": "noninteractive",
    "serviceprincipalsigninlogs": "service_principal",
    "aadserviceprincipalsigninlogs": "service_principal",
    "managedidentitysigninlogs": "managed_identity",
    "aadmanagedidentitysigninlogs": "managed_identity",
}
# Graph beta signInEventTypes -> sign-in type
_EVENT_TYPE = {
    "interactiveuser": "interactive",
    "noninteractiveuser": "noninteractive",
    "serviceprincipal": "service_principal",
    "managedidentity": "managed_identity",
}
_ACTION = {
    "interactive": "signin",
    "noninteractive": "signin-noninteractive",
    "service_principal": "signin-service-principal",
    "managed_identity": "signin-managed-identity",
}
# deviceDetail.trustType, old and new (2023 "Microsoft Entra") spellings
_TRUST = {
    "azure ad joined": "joined",
    "microsoft entra joined": "joined",
    "azuread": "joined",
    "hybrid azure ad joined": "hybrid_joined",
    "microsoft entra hybrid joined": "hybrid_joined",
    "serverad": "hybrid_joined",
    "azure ad registered": "registered",
    "microsoft entra registered": "registered",
    "workplace": "registered",
}
# Log Analytics columns whose Graph name is not the camelCase of the column
_LA_RENAMES = {
    "LocationDetails": "location",
    "IPAddress": "ipAddress",
    "ResourceIdentity": "resourceId",
    "ConditionalAccessPolicies": "appliedConditionalAccessPolicies",
    "Id": "id",
}
# Log Analytics columns that belong to the envelope, not to the Graph object
_LA_ENVELOPE = frozenset(
    {"TimeGenerated", "Type", "Category", "OperationName", "ResultType", "ResultDescription",
     "ResultSignature", "Location", "TenantId", "SourceSystem", "Level", "Identity",
     "OperationVersion", "DurationMs", "Resource", "ResourceGroup", "ResourceProvider",
     "_ResourceId", "_BilledSize", "_IsBillable"}
)  # fmt: skip
# Travel: how many recent sign-ins to keep per user, and how many users.
TRAVEL_KEEP = 3
TRAVEL_USERS = 50_000
TRAVEL_STATE = "identity.signins"


def _json_field(value: Any) -> Any:
    """Log Analytics writes dynamic columns as JSON text in some tables."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _from_log_analytics(row: dict[str, Any]) -> dict[str, Any]:
    """A Log Analytics row as the Graph object it was made from."""
    props: dict[str, Any] = {}
    for key, value in row.items():
        if key in _LA_ENVELOPE:
            continue
        props[_LA_RENAMES.get(key, _camel(key))] = _json_field(value)
    return props


def _shape(rec: dict[str, Any]) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """(Graph-shaped properties, category or table, envelope) of one record."""
    if isinstance(rec.get("properties"), (dict, str)) and (
        "category" in rec or "operationName" in rec
    ):
        props = _json_field(rec["properties"])
        if not isinstance(props, dict):
            raise ParseError("sign-in record: properties is not an object")
        return props, str(rec.get("category") or ""), rec
    table = rec.get("Category") or rec.get("Type")
    if "TimeGenerated" in rec or "UserPrincipalName" in rec or "ResultType" in rec:
        return _from_log_analytics(rec), str(table or "SigninLogs"), rec
    if "createdDateTime" in rec and ("userPrincipalName" in rec or "appId" in rec):
        return rec, None, {}
    raise ParseError(
        "not an Entra sign-in record (expected a Graph signIn object, a diagnostic "
        "SignInLogs record or a SigninLogs row)"
    )


def _signin_type(props: dict[str, Any], category: str | None) -> str:
    if category:
        known = _CATEGORY_TYPE.get(category.lower())
        if known is None:
            raise ParseError(f"category {category!r} is not a sign-in log")
        return known
    types = props.get("signInEventTypes")
    if isinstance(types, list) and types:
        return _EVENT_TYPE.get(str(types[0]).lower(), "interactive")
    if props.get("isInteractive") is False:
        return "noninteractive"
    return "interactive"


def _error_code(props: dict[str, Any], env: dict[str, Any]) -> int | None:
    status = _json_field(props.get("status"))
    if isinstance(status, dict):
        code = status.get("errorCode")
        if isinstance(code, int) and not isinstance(code, bool):
            return code
        parsed = to_int(code) if isinstance(code, str) else None
        if parsed is not None:
            return parsed
    result = env.get("resultType", env.get("ResultType"))
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return to_int(result) if isinstance(result, str) else None


def device_posture(detail: dict[str, Any]) -> tuple[str, str]:
    """(posture, trust) of a sign-in's ``deviceDetail``."""
    trust_text = str(detail.get("trustType") or "").strip().lower()
    trust = _TRUST.get(trust_text, "none" if not trust_text else "registered")
    registered = bool(detail.get("deviceId")) or trust != "none"
    managed, compliant = boolean(detail.get("isManaged")), boolean(detail.get("isCompliant"))
    if registered and managed:
        posture = "compliant" if compliant else "noncompliant"
    else:
        posture = "unmanaged"
    return posture, trust


def _device(ev: dict[str, Any], entra: dict[str, Any], detail: dict[str, Any]) -> None:
    kept = {
        "device_id": detail.get("deviceId"),
        "display_name": detail.get("displayName"),
        "operating_system": detail.get("operatingSystem"),
        "browser": detail.get("browser"),
        "is_compliant": boolean(detail.get("isCompliant")),
        "is_managed": boolean(detail.get("isManaged")),
        "trust_type": detail.get("trustType"),
    }
    # Raw copies keep empty strings: SigmaHQ tests DeviceDetail.deviceId: ''.
    entra["device_detail"] = {k: v for k, v in kept.items() if v is not None}
    if detail.get("deviceId"):
        ev["device"] = {"id": detail["deviceId"]}
    host: dict[str, Any] = {}
    put(host, "name", detail.get("displayName"))
    if detail.get("operatingSystem"):
        host["os"] = {"full": detail["operatingSystem"]}
    if host:
        ev["host"] = host


def _geo(ev: dict[str, Any], location: dict[str, Any], asn: Any) -> tuple[float, float] | None:
    geo: dict[str, Any] = {}
    put(geo, "city_name", location.get("city"))
    put(geo, "region_name", location.get("state"))
    put(geo, "country_iso_code", location.get("countryOrRegion"))
    coords = dict_at(location, "geoCoordinates")
    lat, lon = coords.get("latitude"), coords.get("longitude")
    point = None
    if isinstance(lat, (int, float)) and isinstance(lon, (int, float)) and (lat or lon):
        point = (float(lat), float(lon))
        geo["location"] = {"lat": point[0], "lon": point[1]}
    source = ev.setdefault("source", {})
    if geo:
        source["geo"] = geo
    number = to_int(asn) if not isinstance(asn, int) else asn
    if number:
        source["as"] = {"number": number}
    if not source:
        del ev["source"]
    return point


def _policies(props: dict[str, Any]) -> dict[str, Any]:
    """Conditional Access: which policies failed or only reported."""
    out: dict[str, list[str]] = {}
    for policy in list_at(props, "appliedConditionalAccessPolicies"):
        if not isinstance(policy, dict):
            continue
        result = str(policy.get("result") or "")
        name = policy.get("displayName") or policy.get("id")
        if not name:
            continue
        if result == "failure":
            out.setdefault("failed", []).append(str(name))
        elif result == "success":
            out.setdefault("succeeded", []).append(str(name))
        elif result.startswith("reportOnly") and result not in (
            "reportOnlyNotApplied",
            "reportOnlyNotEnabled",
        ):
            out.setdefault("report_only", []).append(f"{name}: {result}")
    return out


def _utc(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ParseError(f"sign-in record has no {what}")
    return parse_iso(value, UTC)


def signin_event(rec: dict[str, Any], original: str, ctx: ParseContext) -> dict[str, Any]:
    """One sign-in record (any delivery) -> ECS."""
    props, category, env = _shape(rec)
    kind = _signin_type(props, category)
    when = (
        props.get("createdDateTime")
        or env.get("time")
        or env.get("TimeGenerated")
        or props.get("timeGenerated")
    )
    ts = _utc(when, "createdDateTime/time")
    code = _error_code(props, env)
    outcome = "unknown" if code is None else ("success" if code == 0 else "failure")
    ev = new_event(original, SOURCE, MODULE, "Microsoft", "Entra ID", ts)
    event = ev["event"]
    event.update(category=["authentication"], type=["start"], action=_ACTION[kind], outcome=outcome)
    put(event, "id", props.get("id"))
    status = _json_field(props.get("status"))
    status = status if isinstance(status, dict) else {}
    reason = status.get("failureReason") or env.get("resultDescription")
    if outcome == "failure":
        ev["error"] = {"code": str(code)}
        put(event, "reason", reason)
    entra: dict[str, Any] = {"signin_type": kind}
    if category:
        entra["category"] = category
    entra["status"] = {
        k: v
        for k, v in (
            ("error_code", code),
            ("failure_reason", status.get("failureReason") or env.get("resultDescription")),
            ("additional_details", status.get("additionalDetails")),
        )
        if v is not None and v != ""
    }
    user: dict[str, Any] = {}
    upn = props.get("userPrincipalName")
    if isinstance(upn, str) and upn:
        user["name"] = upn
        if "@" in upn:
            user["domain"] = upn.rpartition("@")[2]
    put(user, "id", props.get("userId"))
    put(user, "full_name", props.get("userDisplayName"))
    if user:
        ev["user"] = user
    ip = to_ip(str(props.get("ipAddress") or env.get("callerIpAddress") or ""))
    if ip:
        ev["source"] = {"ip": ip}
    point = _geo(ev, _json_field(props.get("location")) or {}, props.get("autonomousSystemNumber"))
    agent = props.get("userAgent")
    if isinstance(agent, str) and agent:
        ev["user_agent"] = {"original": agent}
    detail = _json_field(props.get("deviceDetail"))
    detail = detail if isinstance(detail, dict) else {}
    _device(ev, entra, detail)
    if kind in ("interactive", "noninteractive"):
        entra["device_posture"], entra["device_trust"] = device_posture(detail)
    tenant = env.get("tenantId") or env.get("TenantId") or props.get("resourceTenantId")
    if tenant:
        ev["cloud"] = {"account": {"id": tenant}}
    for key, field in (
        ("appId", "app_id"),
        ("appDisplayName", "app_display_name"),
        ("resourceDisplayName", "resource_display_name"),
        ("resourceId", "resource_id"),
        ("clientAppUsed", "client_app_used"),
        ("conditionalAccessStatus", "conditional_access_status"),
        ("authenticationRequirement", "authentication_requirement"),
        ("authenticationProtocol", "authentication_protocol"),
        ("riskState", "risk_state"),
        ("riskLevelDuringSignIn", "risk_level_during_signin"),
        ("riskLevelAggregated", "risk_level_aggregated"),
        ("riskDetail", "risk_detail"),
        ("userType", "user_type"),
        ("correlationId", "correlation_id"),
        ("sessionId", "session_id"),
        ("servicePrincipalName", "service_principal_name"),
        ("tokenIssuerType", "token_issuer_type"),
    ):
        value = props.get(key)
        if isinstance(value, (str, int)) and value != "":
            entra[field] = value
    risks = props.get("riskEventTypes_v2") or props.get("riskEventTypes")
    if isinstance(risks, list) and risks:
        entra["risk_event_types"] = [str(r) for r in risks]
    interactive = boolean(props.get("isInteractive"))
    if interactive is not None:
        entra["is_interactive"] = interactive
    ca = _policies(props)
    if ca:
        entra["conditional_access"] = ca
    if kind == "service_principal" or kind == "managed_identity":
        name = props.get("servicePrincipalName") or props.get("appDisplayName")
        if name:
            ev["service"] = {"name": name}
    ev["entra"] = entra
    if outcome == "success" and point is not None and "name" in user:
        travel = _travel(ctx, user["name"].lower(), ts, point, ev)
        if travel:
            entra["travel"] = travel
    return ev


# --- impossible travel --------------------------------------------------------

_EARTH_KM = 6371.0088


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine) between two (lat, lon) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _travel(
    ctx: ParseContext, user: str, ts: str, point: tuple[float, float], ev: dict[str, Any]
) -> dict[str, Any] | None:
    """Distance and speed from the nearest earlier successful sign-in of ``user``.

    The state keeps the last ``TRAVEL_KEEP`` positions per user (least recently
    seen users are dropped beyond ``TRAVEL_USERS``), so a record that arrives
    late is measured against the sign-in just before it, not the newest one.
    """
    state: dict[str, list[list[Any]]] = ctx.state.setdefault(TRAVEL_STATE, {})
    now = _epoch(ts)
    geo = ev.get("source", {}).get("geo", {})
    mine = [now, point[0], point[1], ev.get("source", {}).get("ip"), geo.get("country_iso_code"),
            geo.get("city_name")]  # fmt: skip
    history = state.pop(user, [])
    earlier = [h for h in history if h[0] < now]
    previous = max(earlier, key=lambda h: h[0]) if earlier else None
    if not any(h[0] == now and h[1:3] == mine[1:3] for h in history):
        history.append(mine)
        history.sort(key=lambda h: h[0])
        del history[:-TRAVEL_KEEP]
    state[user] = history  # re-inserted: most recently seen users last
    while len(state) > TRAVEL_USERS:
        del state[next(iter(state))]
    if previous is None:
        return None
    km = distance_km((previous[1], previous[2]), point)
    hours = (now - previous[0]) / 3600.0
    travel: dict[str, Any] = {
        "distance_km": round(km, 1),
        "hours": round(hours, 3),
        # timestamps are whole milliseconds apart at least; one second is the floor
        "speed_kmh": round(km / max(hours, 1 / 3600), 1),
        "previous": {
            k: v
            for k, v in (
                ("@timestamp", format_utc(datetime.fromtimestamp(previous[0], UTC))),
                ("ip", previous[3]),
                ("country_iso_code", previous[4]),
                ("city_name", previous[5]),
            )
            if v
        },
    }
    return travel
