"""``intune/graph``: Graph ``deviceManagement/auditEvents`` objects or pages."""

from __future__ import annotations

from typing import Any

from connectors.base import ParseContext, register
from connectors.intune.common import SOURCE, _base, _outcome, _refuse_graph_record, _s, _utc
from connectors.jsonrecords import dict_at, list_at, loads, slug, unwrap

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
